/*
 * pipe_proto.c -- the stage-to-stage messages, encoded little-endian and
 * validated (see pipe_proto.h).  The decoder trusts nothing: every read
 * is bounds checked, counts must be within the protocol's limits and the
 * body must be consumed exactly.
 */
#include "pipe_proto.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool over;
};

static void put_bytes(struct wbuf *w, const void *src, size_t n)
{
    if (w->over || w->cap - w->len < n) {
        w->over = true;
        return;
    }
    memcpy(w->p + w->len, src, n);
    w->len += n;
}

static void put_u32(struct wbuf *w, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put_bytes(w, b, 4);
}

static void put_u64(struct wbuf *w, uint64_t v)
{
    put_u32(w, (uint32_t)v);
    put_u32(w, (uint32_t)(v >> 32));
}

struct rbuf {
    const uint8_t *p;
    size_t len, at;
    const char *err;
};

static const uint8_t *take(struct rbuf *r, size_t n, const char *what)
{
    if (r->err)
        return NULL;
    if (r->len - r->at < n) {
        r->err = what;
        return NULL;
    }
    const uint8_t *b = r->p + r->at;
    r->at += n;
    return b;
}

static uint32_t get_u32(struct rbuf *r, const char *what)
{
    const uint8_t *b = take(r, 4, what);
    return b ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
                   (uint32_t)b[3] << 24
             : 0;
}

static uint64_t get_u64(struct rbuf *r, const char *what)
{
    uint64_t lo = get_u32(r, what);
    return lo | (uint64_t)get_u32(r, what) << 32;
}

static const char *const names[] = {"?", "HELLO", "WELCOME", "RESET", "SYNC", "GO", "CREDIT",
                                     "STATS", "EVAL_END", "GATHER", "DONE", "EXIT", "ERROR"};

const char *pipe_type_name(int type)
{
    return type >= 1 && type <= PIPE_TYPE_MAX ? names[type] : "unknown";
}

static void put_desc(struct wbuf *w, const uint8_t *d, uint32_t n)
{
    if (n > SHOAL_DESC_MAX) {
        w->over = true;
        return;
    }
    put_u32(w, n);
    put_bytes(w, d, n);
}

int pipe_encode(const struct pipe_msg *m, uint8_t *buf, size_t cap)
{
    struct wbuf w = {.p = buf, .cap = cap};
    put_u32(&w, PIPE_MAGIC);
    uint8_t head[4] = {PIPE_VERSION, m->type, 0, 0};
    put_bytes(&w, head, 4);
    put_u32(&w, m->gen);
    switch (m->type) {
    case PIPE_HELLO:
    case PIPE_WELCOME: {
        const struct pipe_hello *h = &m->u.hello;
        put_u32(&w, h->worker);
        put_u32(&w, h->stage);
        put_u32(&w, h->replica);
        put_u64(&w, h->incarnation);
        if (m->type == PIPE_HELLO) {
            const struct pipe_job *j = &h->job;
            if (j->nlayers < 1 || j->nlayers > MODEL_MAX_LAYERS)
                return -EINVAL;
            put_u32(&w, j->stages);
            put_u32(&w, j->replicas);
            put_u32(&w, j->micro);
            put_u32(&w, j->batch);
            put_u32(&w, j->iters_per_epoch);
            put_u32(&w, j->epochs);
            put_u32(&w, j->nlayers);
            for (uint32_t l = 0; l <= j->nlayers; l++)
                put_u32(&w, j->dims[l]);
        }
        put_desc(&w, h->desc, h->desc_len);
        break;
    }
    case PIPE_SYNC:
    case PIPE_GO:
        put_u32(&w, m->u.iteration);
        break;
    case PIPE_CREDIT:
        put_u32(&w, m->u.kind);
        break;
    case PIPE_STATS:
        if (m->u.stats.n < 1 || m->u.stats.n > MODEL_MAX_LAYERS)
            return -EINVAL;
        put_u32(&w, m->u.stats.iteration);
        put_u32(&w, m->u.stats.n);
        for (uint32_t i = 0; i < m->u.stats.n; i++) {
            uint64_t v;
            memcpy(&v, &m->u.stats.busy[i], 8);
            put_u64(&w, v);
        }
        break;
    case PIPE_EVAL_END:
        put_u32(&w, m->u.chunks);
        break;
    case PIPE_GATHER:
        put_desc(&w, m->u.gather.desc, m->u.gather.desc_len);
        break;
    case PIPE_RESET:
    case PIPE_DONE:
    case PIPE_EXIT:
        break;
    case PIPE_ERROR: {
        size_t n = strnlen(m->u.text, sizeof(m->u.text));
        if (n == sizeof(m->u.text))
            return -EINVAL;
        put_u32(&w, (uint32_t)n);
        put_bytes(&w, m->u.text, n);
        break;
    }
    default:
        return -EINVAL;
    }
    return w.over ? -EINVAL : (int)w.len;
}

static void get_desc(struct rbuf *r, uint32_t *len, uint8_t *desc)
{
    *len = get_u32(r, "descriptor length");
    if (r->err)
        return;
    if (*len == 0 || *len > SHOAL_DESC_MAX) {
        r->err = "descriptor length out of range";
        return;
    }
    const uint8_t *b = take(r, *len, "descriptor");
    if (b)
        memcpy(desc, b, *len);
}

int pipe_decode(const void *buf, size_t len, struct pipe_msg *m, char *why, size_t whylen)
{
    struct rbuf r = {.p = buf, .len = len};
    memset(m, 0, sizeof(*m));
    if (get_u32(&r, "header") != PIPE_MAGIC && !r.err)
        r.err = "bad magic (not a pipeline message)";
    const uint8_t *head = take(&r, 4, "header");
    if (head && head[0] != PIPE_VERSION)
        r.err = "another protocol version";
    if (head && (head[1] < 1 || head[1] > PIPE_TYPE_MAX))
        r.err = "unknown message type";
    if (head && (head[2] || head[3]))
        r.err = "reserved header bytes are not zero";
    m->gen = get_u32(&r, "header");
    if (!r.err)
        m->type = head[1];
    switch (r.err ? 0 : m->type) {
    case PIPE_HELLO:
    case PIPE_WELCOME: {
        struct pipe_hello *h = &m->u.hello;
        h->worker = get_u32(&r, "worker");
        h->stage = get_u32(&r, "stage");
        h->replica = get_u32(&r, "replica");
        h->incarnation = get_u64(&r, "incarnation");
        if (m->type == PIPE_HELLO) {
            struct pipe_job *j = &h->job;
            j->stages = get_u32(&r, "job");
            j->replicas = get_u32(&r, "job");
            j->micro = get_u32(&r, "job");
            j->batch = get_u32(&r, "job");
            j->iters_per_epoch = get_u32(&r, "job");
            j->epochs = get_u32(&r, "job");
            j->nlayers = get_u32(&r, "job");
            if (!r.err && (j->nlayers < 1 || j->nlayers > MODEL_MAX_LAYERS))
                r.err = "layer count out of range";
            if (!r.err && (j->stages < 2 || j->stages > j->nlayers || j->replicas < 1 ||
                           j->micro < 1 || j->batch < 1 || j->batch % j->micro ||
                           j->iters_per_epoch < 1 || j->epochs < 1))
                r.err = "job values out of range";
            for (uint32_t l = 0; !r.err && l <= j->nlayers; l++) {
                j->dims[l] = get_u32(&r, "layer sizes");
                if (!r.err && (j->dims[l] < 1 || j->dims[l] > 1u << 26))
                    r.err = "layer size out of range";
            }
            if (!r.err && (h->stage >= j->stages || h->replica >= j->replicas))
                r.err = "stage or replica out of range";
        }
        get_desc(&r, &h->desc_len, h->desc);
        break;
    }
    case PIPE_SYNC:
    case PIPE_GO:
        m->u.iteration = get_u32(&r, "iteration");
        break;
    case PIPE_CREDIT:
        m->u.kind = get_u32(&r, "kind");
        if (!r.err && m->u.kind != PIPE_GRAD && m->u.kind != PIPE_EVAL)
            r.err = "credit for an unknown kind";
        break;
    case PIPE_STATS:
        m->u.stats.iteration = get_u32(&r, "iteration");
        m->u.stats.n = get_u32(&r, "count");
        if (!r.err && (m->u.stats.n < 1 || m->u.stats.n > MODEL_MAX_LAYERS))
            r.err = "stage count out of range";
        for (uint32_t i = 0; !r.err && i < m->u.stats.n; i++) {
            uint64_t v = get_u64(&r, "busy time");
            double d;
            memcpy(&d, &v, 8);
            if (!r.err && !(d >= 0 && d < 1e9))
                r.err = "busy time out of range";
            m->u.stats.busy[i] = d;
        }
        break;
    case PIPE_EVAL_END:
        m->u.chunks = get_u32(&r, "chunks");
        break;
    case PIPE_GATHER:
        get_desc(&r, &m->u.gather.desc_len, m->u.gather.desc);
        break;
    case PIPE_ERROR: {
        uint32_t n = get_u32(&r, "text length");
        if (!r.err && n >= sizeof(m->u.text))
            r.err = "text too long";
        const uint8_t *t = r.err ? NULL : take(&r, n, "text");
        if (t && memchr(t, 0, n))
            r.err = "NUL in text";
        if (t && !r.err)
            memcpy(m->u.text, t, n);
        break;
    }
    default:
        break;
    }
    if (!r.err && r.at != r.len)
        r.err = "bytes after the end of the message";
    if (r.err) {
        snprintf(why, whylen, "%s (%zu bytes)", r.err, len);
        return -EBADMSG;
    }
    return 0;
}

int pipe_send(shoal_ep_t *ep, const struct pipe_msg *m)
{
    uint8_t buf[SHOAL_MSG_MAX];
    int n = pipe_encode(m, buf, sizeof(buf));
    if (n < 0)
        return n;
    return shoal_send(ep, buf, (size_t)n, m->type);
}
