/*
 * modelfile.c -- saving and loading models (see modelfile.h).
 */
#include "modelfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAGIC "SHOALMDL"
#define FILE_VERSION 1

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

int atomic_write(const char *path, const void *data, size_t len, char *err, size_t errlen)
{
    char tmp[4096 + 32];
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp))
        return fail(err, errlen, "%s: path too long", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, errlen, "%s: cannot create: %s", tmp, strerror(errno)), -errno;
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
            return fail(err, errlen, "%s: write: %s", tmp, strerror(e)), -e;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) || close(fd)) {
        int e = errno;
        unlink(tmp);
        return fail(err, errlen, "%s: fsync: %s", tmp, strerror(e)), -e;
    }
    if (rename(tmp, path)) {
        int e = errno;
        unlink(tmp);
        return fail(err, errlen, "%s: rename: %s", path, strerror(e)), -e;
    }
    /* Make the rename itself durable. */
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

static void put32(uint8_t *b, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

int modelfile_save(const char *path, const struct model *m, const float *p, char *err,
                   size_t errlen)
{
    size_t head = 8 + 4 + 4 + 4 * ((size_t)m->nlayers + 1) + 8;
    size_t len = head + m->nparams * 4 + 4;
    uint8_t *buf = malloc(len);
    if (!buf)
        return fail(err, errlen, "%s: out of memory", path), -ENOMEM;
    uint8_t *q = buf;
    memcpy(q, MAGIC, 8);
    q += 8;
    put32(q, FILE_VERSION);
    put32(q + 4, (uint32_t)m->nlayers);
    q += 8;
    for (int l = 0; l <= m->nlayers; l++, q += 4)
        put32(q, (uint32_t)m->dims[l]);
    put32(q, (uint32_t)m->nparams);
    put32(q + 4, (uint32_t)((uint64_t)m->nparams >> 32));
    q += 8;
    for (size_t i = 0; i < m->nparams; i++, q += 4) {
        uint32_t bits;
        memcpy(&bits, &p[i], 4);
        put32(q, bits);
    }
    put32(q, (uint32_t)crc32(0L, buf, (uInt)(len - 4)));
    int rc = atomic_write(path, buf, len, err, errlen);
    free(buf);
    return rc;
}

int modelfile_load(const char *path, struct model *m, float **p_out, char *err,
                   size_t errlen)
{
    *p_out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return fail(err, errlen, "%s: cannot open: %s", path, strerror(errno)), -ENOENT;
    uint8_t *buf = NULL;
    int rc = -EINVAL;
    struct stat st;
    if (fstat(fileno(f), &st) || st.st_size < 8 + 8 + 8 + 8 + 4 || st.st_size > (1ll << 34)) {
        rc = fail(err, errlen, "%s: %lld bytes is not a model file", path,
                  (long long)st.st_size);
        goto out;
    }
    size_t len = (size_t)st.st_size;
    buf = malloc(len);
    if (!buf || fread(buf, 1, len, f) != len) {
        rc = fail(err, errlen, "%s: cannot read %zu bytes", path, len);
        goto out;
    }
    if (memcmp(buf, MAGIC, 8) != 0) {
        rc = fail(err, errlen, "%s: offset 0: not a shoal-train model (bad magic)", path);
        goto out;
    }
    if (get32(buf + 8) != FILE_VERSION) {
        rc = fail(err, errlen, "%s: offset 8: model file version %u, this build reads %u",
                  path, get32(buf + 8), FILE_VERSION);
        goto out;
    }
    uint32_t crc = get32(buf + len - 4);
    if (crc != (uint32_t)crc32(0L, buf, (uInt)(len - 4))) {
        rc = fail(err, errlen, "%s: checksum mismatch: the file is corrupt or truncated", path);
        goto out;
    }
    uint32_t nl = get32(buf + 12);
    if (nl < 1 || nl > MODEL_MAX_LAYERS || 16 + 4 * ((size_t)nl + 1) + 8 + 4 > len) {
        rc = fail(err, errlen, "%s: offset 12: %u layers is not valid", path, nl);
        goto out;
    }
    int dims[MODEL_MAX_LAYERS + 1];
    for (uint32_t l = 0; l <= nl; l++)
        dims[l] = (int)get32(buf + 16 + 4 * l);
    const uint8_t *q = buf + 16 + 4 * ((size_t)nl + 1);
    uint64_t np = (uint64_t)get32(q) | (uint64_t)get32(q + 4) << 32;
    q += 8;
    if (model_init(m, dims[0], dims + 1, (int)nl - 1, dims[nl]) || m->nparams != np ||
        (size_t)(q - buf) + np * 4 + 4 != len) {
        rc = fail(err, errlen, "%s: the header's layer sizes and parameter count (%llu) do "
                  "not match the file's %zu bytes", path, (unsigned long long)np, len);
        goto out;
    }
    float *p = malloc((size_t)np * sizeof(float));
    if (!p) {
        fail(err, errlen, "%s: out of memory", path);
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < np; i++) {
        uint32_t bits = get32(q + 4 * i);
        memcpy(&p[i], &bits, 4);
    }
    *p_out = p;
    rc = 0;
out:
    free(buf);
    fclose(f);
    return rc;
}
