/*
 * ps_util.c -- small helpers of the PS layer (see ps_int.h).
 */
#include "ps_int.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double ps_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int ps_atomic_write(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    char tmp[SHOAL_PS_PATH_MAX + 32];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        snprintf(err, errlen, "%s: cannot create: %s", tmp, strerror(e));
        return -e;
    }
    const char *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            close(fd);
            unlink(tmp);
            snprintf(err, errlen, "%s: write: %s", tmp, strerror(e));
            return -e;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) || close(fd)) {
        int e = errno;
        unlink(tmp);
        snprintf(err, errlen, "%s: fsync: %s", tmp, strerror(e));
        return -e;
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        snprintf(err, errlen, "%s: rename: %s", path, strerror(e));
        return -e;
    }
    char dir[SHOAL_PS_PATH_MAX + 32];
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

void ps_shard(size_t nparams, int servers, int s, size_t *off, size_t *len)
{
    size_t a = nparams * (size_t)s / (size_t)servers;
    size_t b = nparams * (size_t)(s + 1) / (size_t)servers;
    *off = a;
    *len = b - a;
}

uint64_t ps_layout_hash(const shoal_ps_tensor_t *t, int n)
{
    /* FNV-1a over "name\0count;" for each tensor */
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n; i++) {
        const char *s = t[i].name ? t[i].name : "";
        for (size_t j = 0; j <= strlen(s); j++)
            h = (h ^ (uint8_t)s[j]) * 1099511628211ull;
        uint64_t c = t[i].count;
        for (int j = 0; j < 8; j++)
            h = (h ^ (uint8_t)(c >> (8 * j))) * 1099511628211ull;
    }
    return h;
}

float *ps_alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, (n ? n : 1) * sizeof(float)))
        return NULL;
    memset(p, 0, n * sizeof(float));
    return p;
}

size_t ps_colo_copy(void *dst, const void *src, size_t len)
{
    size_t tail = len < PS_COLO_TAIL ? len : PS_COLO_TAIL;
    memcpy(dst, src, len - tail);
    /* The other thread reads these bytes after it sees the put's
     * immediate, which the put's own synchronisation orders after this. */
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return tail;
}
