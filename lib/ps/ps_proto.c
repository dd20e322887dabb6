/*
 * ps_proto.c -- encoding and validating the PS layer's control messages
 * (see ps_proto.h).  The decoder trusts nothing: each read is bounds
 * checked, strings must be NUL-free and fit their field, counts must be
 * within the protocol's limits, and the body must be consumed exactly.
 */
#include "ps_proto.h"

#include <errno.h>
#include <stdarg.h>
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

static void put_u16(struct wbuf *w, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put_bytes(w, b, 2);
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

static void put_f32(struct wbuf *w, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put_u32(w, v);
}

static void put_str(struct wbuf *w, const char *s)
{
    size_t n = strlen(s);
    put_u16(w, (uint16_t)n);
    put_bytes(w, s, n);
}

static void put_blob(struct wbuf *w, const uint8_t *b, uint32_t n)
{
    put_u32(w, n);
    put_bytes(w, b, n);
}

struct rbuf {
    const uint8_t *p;
    size_t len, at;
    const char *err;   /* first problem */
};

static const uint8_t *take(struct rbuf *r, size_t n, const char *what)
{
    if (r->err)
        return NULL;
    if (r->len - r->at < n) {
        r->err = what;
        return NULL;
    }
    const uint8_t *q = r->p + r->at;
    r->at += n;
    return q;
}

static uint16_t get_u16(struct rbuf *r, const char *what)
{
    const uint8_t *b = take(r, 2, what);
    return b ? (uint16_t)(b[0] | b[1] << 8) : 0;
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

static float get_f32(struct rbuf *r, const char *what)
{
    uint32_t v = get_u32(r, what);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

static void get_str(struct rbuf *r, char *dst, size_t cap, const char *what)
{
    uint16_t n = get_u16(r, what);
    dst[0] = 0;
    if (r->err)
        return;
    if (n >= cap) {
        r->err = what;
        return;
    }
    const uint8_t *s = take(r, n, what);
    if (!s)
        return;
    if (memchr(s, 0, n)) {
        r->err = what;
        return;
    }
    memcpy(dst, s, n);
    dst[n] = 0;
}

static uint32_t get_blob(struct rbuf *r, uint8_t *dst, size_t cap, const char *what)
{
    uint32_t n = get_u32(r, what);
    if (r->err)
        return 0;
    if (n > cap || n == 0) {
        r->err = what;
        return 0;
    }
    const uint8_t *s = take(r, n, what);
    if (s)
        memcpy(dst, s, n);
    return s ? n : 0;
}

int ps_encode(const struct ps_msg *m, uint8_t *buf, size_t cap)
{
    struct wbuf w = {.p = buf, .cap = cap};
    put_u32(&w, PS_MAGIC);
    put_u16(&w, PS_VERSION);
    put_u16(&w, (uint16_t)m->type);
    put_u32(&w, 0); /* body length, filled below */
    size_t body = w.len;
    switch (m->type) {
    case PS_SERVER_REG:
        put_u32(&w, m->u.reg.rank);
        put_str(&w, m->u.reg.addr.host);
        put_u16(&w, m->u.reg.addr.port);
        break;
    case PS_TABLE_REQ:
    case PS_BYE:
    case PS_PING:
        break;
    case PS_TABLE:
        if (m->u.table.n > PS_MAX_SERVERS)
            return -EMSGSIZE;
        put_u32(&w, m->u.table.n);
        for (uint32_t i = 0; i < m->u.table.n; i++) {
            put_str(&w, m->u.table.addr[i].host);
            put_u16(&w, m->u.table.addr[i].port);
        }
        break;
    case PS_HELLO: {
        const struct ps_hello *h = &m->u.hello;
        const shoal_ps_job_t *j = &h->job;
        put_u32(&w, h->group);
        put_u32(&w, h->worker);
        put_u32(&w, (uint32_t)j->workers);
        put_u32(&w, h->servers);
        put_u32(&w, h->incarnation);
        put_u32(&w, h->clock);
        put_u32(&w, (uint32_t)j->mode);
        put_u32(&w, (uint32_t)j->staleness);
        put_u64(&w, h->nparams);
        put_u32(&w, j->batch);
        put_u32(&w, j->iters_per_epoch);
        put_u32(&w, j->epochs);
        put_u32(&w, (uint32_t)j->optimizer);
        put_f32(&w, j->lr);
        put_f32(&w, j->momentum);
        put_f32(&w, j->weight_decay);
        put_u32(&w, j->momentum_auto);
        put_f32(&w, j->beta1);
        put_f32(&w, j->beta2);
        put_f32(&w, j->eps);
        put_u32(&w, (uint32_t)j->schedule);
        put_u32(&w, (uint32_t)j->step_epochs);
        put_f32(&w, j->gamma);
        put_str(&w, j->label);
        put_u32(&w, (uint32_t)j->compress);
        put_f32(&w, j->topk_ratio);
        put_u32(&w, h->ntensors);
        put_u64(&w, h->layout);
        put_blob(&w, h->desc, h->desc_len);
        break;
    }
    case PS_WELCOME: {
        const struct ps_welcome *h = &m->u.welcome;
        put_u32(&w, h->server);
        put_u64(&w, h->offset);
        put_u64(&w, h->length);
        put_u32(&w, h->version);
        put_u32(&w, h->iteration);
        put_blob(&w, h->desc, h->desc_len);
        break;
    }
    case PS_ERROR:
        put_str(&w, m->u.error.text);
        break;
    case PS_CHECK:
        put_u32(&w, m->u.check.version);
        put_u32(&w, m->u.check.crc);
        break;
    case PS_PROBE:
    case PS_PROBE_ACK:
        put_u32(&w, m->u.probe.nonce);
        break;
    case PS_ROLLBACK:
        put_u32(&w, m->u.rollback.from);
        put_u32(&w, m->u.rollback.to);
        break;
    case PS_MEMBERS:
        if (m->u.members.workers == 0 || m->u.members.workers > PS_MAX_WORKERS)
            return -EINVAL;
        put_u32(&w, m->u.members.epoch);
        put_u32(&w, m->u.members.workers);
        put_blob(&w, m->u.members.live, (m->u.members.workers + 7) / 8);
        break;
    default:
        return -EINVAL;
    }
    if (w.over)
        return -EMSGSIZE;
    uint32_t blen = (uint32_t)(w.len - body);
    for (int i = 0; i < 4; i++)
        buf[8 + i] = (uint8_t)(blen >> (8 * i));
    return (int)w.len;
}

__attribute__((format(printf, 3, 4)))
static int bad(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
    return -EBADMSG;
}

int ps_decode(const void *buf, size_t len, struct ps_msg *m, char *why, size_t whylen)
{
    struct rbuf r = {.p = buf, .len = len};
    memset(m, 0, sizeof(*m));
    uint32_t magic = get_u32(&r, "header");
    uint16_t version = get_u16(&r, "header");
    uint16_t type = get_u16(&r, "header");
    uint32_t blen = get_u32(&r, "header");
    if (r.err)
        return bad(why, whylen, "message of %zu bytes is shorter than a header", len);
    if (magic != PS_MAGIC)
        return bad(why, whylen, "not a shoal-train message (magic 0x%08x)", magic);
    if (version != PS_VERSION) {
        snprintf(why, whylen, "protocol version %u, this build speaks %u", version,
                 PS_VERSION);
        return -EPROTO;
    }
    if (blen != len - r.at)
        return bad(why, whylen, "body length %u, but %zu bytes follow the header", blen,
                   len - r.at);
    m->type = (enum ps_type)type;
    switch (type) {
    case PS_SERVER_REG:
        m->u.reg.rank = get_u32(&r, "rank");
        get_str(&r, m->u.reg.addr.host, PS_HOST_MAX, "host");
        m->u.reg.addr.port = get_u16(&r, "port");
        if (!r.err && (!m->u.reg.addr.host[0] || !m->u.reg.addr.port))
            r.err = "address";
        break;
    case PS_TABLE_REQ:
    case PS_BYE:
    case PS_PING:
        break;
    case PS_TABLE:
        m->u.table.n = get_u32(&r, "server count");
        if (!r.err && (m->u.table.n == 0 || m->u.table.n > PS_MAX_SERVERS))
            r.err = "server count";
        for (uint32_t i = 0; !r.err && i < m->u.table.n; i++) {
            get_str(&r, m->u.table.addr[i].host, PS_HOST_MAX, "host");
            m->u.table.addr[i].port = get_u16(&r, "port");
            if (!r.err && (!m->u.table.addr[i].host[0] || !m->u.table.addr[i].port))
                r.err = "address";
        }
        break;
    case PS_HELLO: {
        struct ps_hello *h = &m->u.hello;
        shoal_ps_job_t *j = &h->job;
        h->group = get_u32(&r, "group");
        h->worker = get_u32(&r, "worker");
        uint32_t workers = get_u32(&r, "workers");
        h->servers = get_u32(&r, "servers");
        h->incarnation = get_u32(&r, "incarnation");
        h->clock = get_u32(&r, "clock");
        uint32_t mode = get_u32(&r, "mode");
        uint32_t staleness = get_u32(&r, "staleness");
        h->nparams = get_u64(&r, "nparams");
        j->batch = get_u32(&r, "batch");
        j->iters_per_epoch = get_u32(&r, "iterations per epoch");
        j->epochs = get_u32(&r, "epochs");
        uint32_t opt = get_u32(&r, "optimizer");
        j->lr = get_f32(&r, "lr");
        j->momentum = get_f32(&r, "momentum");
        j->weight_decay = get_f32(&r, "weight decay");
        j->momentum_auto = get_u32(&r, "momentum") != 0;
        j->beta1 = get_f32(&r, "beta1");
        j->beta2 = get_f32(&r, "beta2");
        j->eps = get_f32(&r, "eps");
        uint32_t sched = get_u32(&r, "schedule");
        uint32_t step = get_u32(&r, "schedule");
        j->gamma = get_f32(&r, "gamma");
        get_str(&r, j->label, PS_MODEL_MAX, "label");
        uint32_t comp = get_u32(&r, "compress");
        j->topk_ratio = get_f32(&r, "compress");
        j->compress = (shoal_ps_compress_t)(comp <= SHOAL_PS_COMPRESS_TOPK_NOEF ? comp : 0);
        h->ntensors = get_u32(&r, "tensors");
        h->layout = get_u64(&r, "layout");
        h->desc_len = get_blob(&r, h->desc, sizeof(h->desc), "descriptor");
        if (r.err)
            break;
        j->workers = (int)(workers <= PS_MAX_WORKERS ? workers : 0);
        j->mode = (shoal_ps_mode_t)(mode <= PS_SSP ? mode : 0);
        j->staleness = (int)(staleness <= 1000000 ? staleness : 0);
        j->optimizer = (shoal_ps_optimizer_t)(opt <= SHOAL_PS_AVERAGE ? opt : 0);
        j->schedule = (shoal_ps_schedule_t)(sched <= SHOAL_PS_LR_STEP ? sched : 0);
        j->step_epochs = (int)(step <= 1000000 ? step : 0);
        if (workers == 0 || workers > PS_MAX_WORKERS || h->worker >= workers)
            r.err = "worker rank";
        else if (h->group >= SHOAL_PS_MAX_GROUPS)
            r.err = "group";
        else if (h->servers == 0 || h->servers > PS_MAX_SERVERS)
            r.err = "server count";
        else if (mode > PS_SSP || staleness > 1000000)
            r.err = "mode";
        else if (j->batch == 0 || j->iters_per_epoch == 0 || j->epochs == 0 ||
                 sched > SHOAL_PS_LR_STEP || step > 1000000)
            r.err = "schedule";
        else if (opt > SHOAL_PS_AVERAGE || !(j->lr >= 0.0f && j->lr < 1e6f) ||
                 !(j->momentum >= 0.0f && j->momentum < 1.0f) ||
                 !(j->weight_decay >= 0.0f && j->weight_decay < 1e6f) ||
                 !(j->beta1 >= 0.0f && j->beta1 < 1.0f) ||
                 !(j->beta2 >= 0.0f && j->beta2 < 1.0f) || !(j->eps >= 0.0f && j->eps < 1.0f) ||
                 !(j->gamma >= 0.0f && j->gamma < 1e6f))
            r.err = "optimizer";
        else if (h->nparams == 0 || h->ntensors == 0 || h->ntensors > h->nparams)
            r.err = "parameters";
        else if (comp > SHOAL_PS_COMPRESS_TOPK_NOEF ||
                 (comp >= SHOAL_PS_COMPRESS_TOPK && !(j->topk_ratio > 0.0f && j->topk_ratio <= 1.0f)))
            r.err = "compress";
        break;
    }
    case PS_WELCOME: {
        struct ps_welcome *h = &m->u.welcome;
        h->server = get_u32(&r, "server");
        h->offset = get_u64(&r, "offset");
        h->length = get_u64(&r, "length");
        h->version = get_u32(&r, "version");
        h->iteration = get_u32(&r, "iteration");
        h->desc_len = get_blob(&r, h->desc, sizeof(h->desc), "descriptor");
        if (!r.err && (h->length == 0 || h->offset + h->length < h->offset))
            r.err = "shard";
        break;
    }
    case PS_ERROR:
        get_str(&r, m->u.error.text, sizeof(m->u.error.text), "text");
        break;
    case PS_CHECK:
        m->u.check.version = get_u32(&r, "version");
        m->u.check.crc = get_u32(&r, "crc");
        break;
    case PS_PROBE:
    case PS_PROBE_ACK:
        m->u.probe.nonce = get_u32(&r, "nonce");
        break;
    case PS_ROLLBACK:
        m->u.rollback.from = get_u32(&r, "from");
        m->u.rollback.to = get_u32(&r, "to");
        if (!r.err && m->u.rollback.to >= m->u.rollback.from)
            r.err = "to";
        break;
    case PS_MEMBERS: {
        struct ps_members *h = &m->u.members;
        h->epoch = get_u32(&r, "epoch");
        h->workers = get_u32(&r, "workers");
        if (!r.err && (h->workers == 0 || h->workers > PS_MAX_WORKERS))
            r.err = "workers";
        uint32_t n = get_blob(&r, h->live, sizeof(h->live), "members");
        if (r.err)
            break;
        if (n != (h->workers + 7) / 8) {
            r.err = "members";
            break;
        }
        /* No member past the last worker, and at least one member. */
        bool any = false;
        for (uint32_t i = 0; i < h->workers; i++)
            any |= ps_member(h->live, (int)i);
        if (!any || (h->workers % 8 && h->live[n - 1] >> (h->workers % 8)))
            r.err = "members";
        break;
    }
    default:
        return bad(why, whylen, "unknown message type %u", type);
    }
    if (r.err)
        return bad(why, whylen, "%s message: bad or truncated field '%s'", ps_type_name(m->type),
                   r.err);
    if (r.at != r.len)
        return bad(why, whylen, "%s message: %zu unexpected bytes at the end",
                   ps_type_name(m->type), r.len - r.at);
    return 0;
}

const char *ps_type_name(enum ps_type t)
{
    static const char *const names[] = {
        [PS_SERVER_REG] = "SERVER_REG", [PS_TABLE_REQ] = "TABLE_REQ", [PS_TABLE] = "TABLE",
        [PS_HELLO] = "HELLO", [PS_WELCOME] = "WELCOME", [PS_BYE] = "BYE",
        [PS_ERROR] = "ERROR", [PS_CHECK] = "CHECK", [PS_PING] = "PING",
        [PS_MEMBERS] = "MEMBERS", [PS_ROLLBACK] = "ROLLBACK",
        [PS_PROBE] = "PROBE", [PS_PROBE_ACK] = "PROBE_ACK"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) && names[t] ? names[t] : "unknown";
}
