/*
 * ps_ckpt.c -- saving and loading server checkpoints (see ps_ckpt.h).
 */
#include "ps_ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "ps_int.h"
#include "ps_proto.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoints store floats in little-endian order: port ckpt_save/ckpt_load"
#endif

#define MAGIC "SHOALCKP"
#define FORMAT 2
#define KEEP 3

struct buf {
    uint8_t *p;
    size_t len, cap;
    bool bad;
};

static void put(struct buf *b, const void *src, size_t n)
{
    if (b->bad)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->bad = true;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void putf(struct buf *b, float v) { put(b, &v, 4); }
static void put64(struct buf *b, uint64_t v) { put(b, &v, 8); }

static void prefix_of(char *out, size_t len, uint32_t server, uint32_t group)
{
    if (group == 0)
        snprintf(out, len, "server-%u.ckpt.", server);
    else
        snprintf(out, len, "server-%u-g%u.ckpt.", server, group);
}

static void file_name(char *out, size_t len, const char *dir, uint32_t server, uint32_t group,
                      uint32_t version)
{
    char prefix[64];
    prefix_of(prefix, sizeof(prefix), server, group);
    snprintf(out, len, "%s/%s%010u", dir, prefix, version);
}

/* Versions of this server's checkpoints in @dir, newest first. */
static int list_versions(const char *dir, uint32_t server, uint32_t group, uint32_t *v, int max)
{
    DIR *d = opendir(dir);
    if (!d)
        return -errno;
    char prefix[64];
    prefix_of(prefix, sizeof(prefix), server, group);
    int n = (int)strlen(prefix), k = 0;
    struct dirent *e;
    while ((e = readdir(d)) && k < max) {
        if (strncmp(e->d_name, prefix, (size_t)n) != 0)
            continue;
        char *end;
        unsigned long x = strtoul(e->d_name + n, &end, 10);
        if (*end || end == e->d_name + n || x > UINT32_MAX)
            continue; /* e.g. a leftover temporary file */
        v[k++] = (uint32_t)x;
    }
    closedir(d);
    for (int i = 1; i < k; i++) /* insertion sort, descending */
        for (int j = i; j > 0 && v[j] > v[j - 1]; j--) {
            uint32_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return k;
}

int ckpt_save(const char *dir, const struct ckpt *c, char *err, size_t errlen)
{
    struct buf b = {0};
    const shoal_ps_job_t *j = &c->job;
    put(&b, MAGIC, 8);
    put32(&b, FORMAT);
    put32(&b, c->server);
    put32(&b, c->servers);
    put32(&b, (uint32_t)j->workers);
    put32(&b, (uint32_t)j->mode);
    put32(&b, (uint32_t)j->staleness);
    put32(&b, j->iters_per_epoch);
    put32(&b, j->epochs);
    put32(&b, j->batch);
    put32(&b, (uint32_t)j->optimizer);
    putf(&b, j->lr);
    putf(&b, j->momentum);
    putf(&b, j->weight_decay);
    put32(&b, j->momentum_auto);
    putf(&b, j->beta1);
    putf(&b, j->beta2);
    putf(&b, j->eps);
    put32(&b, (uint32_t)j->schedule);
    put32(&b, (uint32_t)j->step_epochs);
    putf(&b, j->gamma);
    put(&b, j->label, PS_MODEL_MAX);
    put64(&b, c->nparams);
    put64(&b, c->layout);
    put32(&b, c->ntensors);
    put64(&b, c->off);
    put64(&b, c->len);
    put32(&b, c->version);
    put64(&b, c->grads);
    put32(&b, c->workers);
    put(&b, c->clock, (size_t)c->workers * 4);
    put(&b, c->done, c->workers);
    put32(&b, c->fixed);
    put32(&b, c->nrun);
    for (uint32_t i = 0; i < c->nrun; i++) {
        put32(&b, c->run[i].from);
        put(&b, c->run[i].live, (c->workers + 7) / 8);
    }
    put32(&b, c->opt_kind);
    put64(&b, c->opt_t);
    put32(&b, (c->m != NULL) | (c->v != NULL) << 1);
    put(&b, c->params, c->len * sizeof(float));
    if (c->m)
        put(&b, c->m, c->len * sizeof(float));
    if (c->v)
        put(&b, c->v, c->len * sizeof(float));
    uint32_t crc = b.bad ? 0 : (uint32_t)crc32(0L, b.p, (uInt)b.len);
    put32(&b, crc);
    if (b.bad) {
        free(b.p);
        snprintf(err, errlen, "checkpoint: out of memory");
        return -ENOMEM;
    }
    char path[4096 + 64];
    file_name(path, sizeof(path), dir, c->server, c->group, c->version);
    int rc = ps_atomic_write(path, b.p, b.len, err, errlen);
    free(b.p);
    if (rc)
        return rc;
    /* Keep the newest KEEP; older ones go only once this one is safe. */
    uint32_t v[64];
    int n = list_versions(dir, c->server, c->group, v, 64);
    for (int i = KEEP; i < n; i++) {
        file_name(path, sizeof(path), dir, c->server, c->group, v[i]);
        unlink(path);
    }
    return 0;
}

struct rd {
    const uint8_t *p;
    size_t len, at;
    bool bad;
};

static const void *take(struct rd *r, size_t n)
{
    if (r->bad || r->len - r->at < n) {
        r->bad = true;
        return NULL;
    }
    const void *q = r->p + r->at;
    r->at += n;
    return q;
}

static uint32_t get32(struct rd *r)
{
    uint32_t v = 0;
    const void *q = take(r, 4);
    if (q)
        memcpy(&v, q, 4);
    return v;
}

static float getf(struct rd *r)
{
    float v = 0;
    const void *q = take(r, 4);
    if (q)
        memcpy(&v, q, 4);
    return v;
}

static float *get_floats(struct rd *r, size_t n)
{
    const void *q = take(r, n * sizeof(float));
    float *f = q ? malloc(n * sizeof(float)) : NULL;
    if (!f) {
        r->bad = true;
        return NULL;
    }
    memcpy(f, q, n * sizeof(float));
    return f;
}

static uint64_t get64(struct rd *r)
{
    uint64_t v = 0;
    const void *q = take(r, 8);
    if (q)
        memcpy(&v, q, 8);
    return v;
}

/* Parse one file; a message in err when it is not a good checkpoint. */
static int load_one(const char *path, uint32_t server, struct ckpt *c, char *err,
                    size_t errlen)
{
    memset(c, 0, sizeof(*c));
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -errno;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    rewind(f);
    uint8_t *data = size > 12 && size < (1l << 34) ? malloc((size_t)size) : NULL;
    if (!data || fread(data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        free(data);
        snprintf(err, errlen, "%s: unreadable or too short (%ld bytes)", path, size);
        return -EINVAL;
    }
    fclose(f);
    int rc = -EINVAL;
    struct rd r = {.p = data, .len = (size_t)size - 4};
    uint32_t stored;
    memcpy(&stored, data + size - 4, 4);
    if (memcmp(data, MAGIC, 8) != 0) {
        snprintf(err, errlen, "%s: not a checkpoint (bad magic)", path);
        goto out;
    }
    if (stored != (uint32_t)crc32(0L, data, (uInt)(size - 4))) {
        snprintf(err, errlen, "%s: checksum mismatch (corrupt or truncated)", path);
        goto out;
    }
    take(&r, 8);
    c->format = get32(&r);
    if (c->format != 1 && c->format != 2) {
        snprintf(err, errlen, "%s: unknown checkpoint format %u", path, c->format);
        goto out;
    }
    shoal_ps_job_t *j = &c->job;
    c->server = get32(&r);
    c->servers = get32(&r);
    j->workers = (int)get32(&r);
    j->mode = (shoal_ps_mode_t)get32(&r);
    j->staleness = (int)get32(&r);
    if (c->format == 1) {
        c->nparams = get64(&r);
        j->batch = get32(&r);
        j->iters_per_epoch = get32(&r);
        j->epochs = get32(&r);
    } else {
        j->iters_per_epoch = get32(&r);
        j->epochs = get32(&r);
        j->batch = get32(&r);
        j->optimizer = (shoal_ps_optimizer_t)get32(&r);
        j->lr = getf(&r);
        j->momentum = getf(&r);
        j->weight_decay = getf(&r);
        j->momentum_auto = get32(&r) != 0;
        j->beta1 = getf(&r);
        j->beta2 = getf(&r);
        j->eps = getf(&r);
        j->schedule = (shoal_ps_schedule_t)get32(&r);
        j->step_epochs = (int)get32(&r);
        j->gamma = getf(&r);
    }
    const void *label = take(&r, PS_MODEL_MAX);
    if (label) {
        memcpy(j->label, label, PS_MODEL_MAX);
        j->label[PS_MODEL_MAX - 1] = 0;
    }
    if (c->format == 2) {
        c->nparams = get64(&r);
        c->layout = get64(&r);
        c->ntensors = get32(&r);
    }
    c->off = get64(&r);
    c->len = get64(&r);
    c->version = get32(&r);
    c->grads = get64(&r);
    c->workers = get32(&r);
    if (r.bad || c->server != server || c->workers != (uint32_t)j->workers ||
        c->workers == 0 || c->workers > PS_MAX_WORKERS || c->len == 0 ||
        c->len > c->nparams || (uint32_t)j->mode > SHOAL_PS_SSP ||
        (uint32_t)j->optimizer > SHOAL_PS_AVERAGE || j->iters_per_epoch == 0 ||
        j->epochs == 0) {
        snprintf(err, errlen, "%s: inconsistent header", path);
        goto out;
    }
    c->clock = malloc(c->workers * 4);
    c->done = malloc(c->workers);
    const void *q = take(&r, (size_t)c->workers * 4);
    if (!c->clock || !c->done || !q) {
        snprintf(err, errlen, "%s: truncated or out of memory", path);
        goto out;
    }
    memcpy(c->clock, q, (size_t)c->workers * 4);
    q = take(&r, c->workers);
    if (q)
        memcpy(c->done, q, c->workers);
    uint32_t has;
    if (c->format == 1) {
        c->opt_kind = SHOAL_PS_SGD;
        has = get32(&r) ? 1 : 0;
    } else {
        c->fixed = get32(&r);
        c->nrun = get32(&r);
        if (c->nrun > 1u << 20) {
            r.bad = true;
        } else if (c->nrun) {
            c->run = calloc(c->nrun, sizeof(*c->run));
            if (!c->run)
                r.bad = true;
            for (uint32_t i = 0; !r.bad && i < c->nrun; i++) {
                c->run[i].from = get32(&r);
                q = take(&r, (c->workers + 7) / 8);
                if (q)
                    memcpy(c->run[i].live, q, (c->workers + 7) / 8);
            }
        }
        c->opt_kind = get32(&r);
        c->opt_t = get64(&r);
        has = get32(&r);
    }
    c->params = get_floats(&r, c->len);
    if (has & 1)
        c->m = get_floats(&r, c->len);
    if (has & 2)
        c->v = get_floats(&r, c->len);
    if (r.bad || r.at != r.len || has > 3) {
        snprintf(err, errlen, "%s: sizes do not match the header", path);
        goto out;
    }
    rc = 0;
out:
    free(data);
    if (rc)
        ckpt_free(c);
    return rc;
}

int ckpt_load(const char *dir, uint32_t server, uint32_t group, struct ckpt *c, FILE *log,
              char *path, size_t pathlen, char *err, size_t errlen)
{
    uint32_t v[64];
    int n = list_versions(dir, server, group, v, 64);
    if (n < 0) {
        snprintf(err, errlen, "%s: %s", dir, strerror(-n));
        return n;
    }
    for (int i = 0; i < n; i++) {
        file_name(path, pathlen, dir, server, group, v[i]);
        char why[512];
        if (load_one(path, server, c, why, sizeof(why)) == 0) {
            c->group = group;
            return 0;
        }
        if (log)
            fprintf(log, "shoal-ps: server %u: skipping checkpoint %s\n", server, why);
    }
    snprintf(err, errlen, "%s: no valid checkpoint of server %u", dir, server);
    return -ENOENT;
}

int ckpt_load_version(const char *dir, uint32_t server, uint32_t group, uint32_t version,
                      struct ckpt *c, char *path, size_t pathlen, char *err, size_t errlen)
{
    file_name(path, pathlen, dir, server, group, version);
    int rc = load_one(path, server, c, err, errlen);
    if (rc == 0) {
        c->group = group;
        if (c->version != version) {
            snprintf(err, errlen, "%s holds update %u", path, c->version);
            ckpt_free(c);
            return -ENOENT;
        }
        return 0;
    }
    return -ENOENT;
}

void ckpt_path(char *out, size_t len, const char *dir, uint32_t server, uint32_t group,
               uint32_t version)
{
    file_name(out, len, dir, server, group, version);
}

void ckpt_free(struct ckpt *c)
{
    free(c->clock);
    free(c->done);
    free(c->run);
    free(c->params);
    free(c->m);
    free(c->v);
    memset(c, 0, sizeof(*c));
}
