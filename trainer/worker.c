/*
 * worker.c -- a shoal-train worker: computes gradients on its data shard
 * and exchanges them with the servers.
 *
 * Memory: the parameter vector (P floats) and the gradient vector (P
 * floats), page aligned.  The slice of the parameters that server s owns
 * is registered on its own, for remote write, and its descriptor goes to
 * server s only: no other peer can write there.  The gradient vector is
 * registered for local use only; each server's slice is put straight from
 * it into this worker's slot at that server (zero copy).
 *
 * One iteration:
 *   compute the gradient on the next batch (model_grad, OpenBLAS)
 *   for each server s: put grad[off_s, off_s + len_s) -> slot, imm = k
 *   wait for every server's fresh slice (a put with imm = its version)
 *       and for the gradient puts to complete locally
 * A server writes this worker's parameters only in answer to a gradient,
 * and the worker reads them only after the immediate (which libshoal
 * delivers after the data): the slice is never written while it is read.
 * --verify checks that with a CRC-32 the server sends after each slice,
 * compared on arrival and again after the gradient was computed.
 */
#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "batch.h"
#include "modelfile.h"
#include "net.h"
#include "report.h"
#include "train.h"

struct wpeer {
    int index;
    shoal_ep_t *ep;
    shoal_mr_t *pmr;          /* our parameter slice, writable by this server only */
    shoal_rmr_t *slot;        /* our gradient slot at the server */
    size_t off, len;          /* the shard, in floats */
    char addr[PS_HOST_MAX + 8];
    bool welcomed;
    bool fresh;               /* new parameters arrived since our last push */
    uint32_t version;
    int puts;                 /* gradient puts not yet complete */
    bool check_due;           /* --verify: a CHECK follows the parameters */
    uint32_t crc;             /* --verify: the CRC of the slice we hold */
    bool bye_done;            /* our BYE left */
};

struct worker {
    const struct train_cfg *c;
    int index;
    shoal_ctx_t *ctx;
    struct model m;
    float *params, *grad;
    shoal_mr_t *gmr;
    int S;
    struct wpeer peer[PS_MAX_SERVERS];
    struct ps_msg table;
    bool have_table;
    char err[1024];
};

__attribute__((format(printf, 2, 3)))
static int wfail(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof(w->err), fmt, ap);
    va_end(ap);
    return -EPROTO;
}

static uint32_t slice_crc(const struct worker *w, const struct wpeer *p)
{
    return (uint32_t)crc32(0L, (const Bytef *)(w->params + p->off),
                           (uInt)(p->len * sizeof(float)));
}

static int on_message(struct worker *w, struct wpeer *p, const void *data, size_t len)
{
    struct ps_msg m;
    char why[256];
    if (ps_decode(data, len, &m, why, sizeof(why)))
        return wfail(w, "server %s sent a bad message: %s", p->addr, why);
    switch (m.type) {
    case PS_TABLE:
        if (p->index != 0 || w->have_table)
            break;
        w->table = m;
        w->have_table = true;
        return 0;
    case PS_WELCOME: {
        struct ps_welcome *h = &m.u.welcome;
        if (p->welcomed)
            break;
        if (h->server != (uint32_t)p->index || h->offset != p->off || h->length != p->len)
            return wfail(w, "server %s: shard [%llu, +%llu) of server %u, expected [%zu, +%zu) "
                         "of server %d (are all ranks running the same job?)",
                         p->addr, (unsigned long long)h->offset,
                         (unsigned long long)h->length, h->server, p->off, p->len, p->index);
        int rc = shoal_rmr_unpack(p->ep, h->desc, h->desc_len, &p->slot);
        if (rc)
            return wfail(w, "server %s: bad slot descriptor: %s", p->addr,
                         shoal_ctx_errmsg(w->ctx));
        if (shoal_rmr_length(p->slot) != p->len * sizeof(float) ||
            !(shoal_rmr_access(p->slot) & SHOAL_ACCESS_REMOTE_WRITE))
            return wfail(w, "server %s: the gradient slot it offers is %zu bytes (or not "
                         "writable), expected %zu", p->addr, shoal_rmr_length(p->slot),
                         p->len * sizeof(float));
        p->welcomed = true;
        return 0;
    }
    case PS_CHECK:
        if (!p->check_due)
            break;
        if (m.u.check.version != p->version)
            return wfail(w, "server %s: CHECK for version %u after parameters of version %u",
                         p->addr, m.u.check.version, p->version);
        p->crc = slice_crc(w, p);
        if (p->crc != m.u.check.crc)
            return wfail(w, "server %s: TORN PARAMETERS: version %u arrived with CRC %08x, "
                         "the server sent %08x", p->addr, p->version, p->crc, m.u.check.crc);
        p->check_due = false;
        return 0;
    case PS_ERROR:
        return wfail(w, "server %s refused this worker: %s", p->addr, m.u.error.text);
    default:
        break;
    }
    return wfail(w, "server %s sent an unexpected %s message", p->addr, ps_type_name(m.type));
}

/* Wait once for events and handle them.  Returns <0 (w->err says why) on
 * a failure, else the number of events. */
static int pump(struct worker *w, int timeout_ms)
{
    shoal_event_t ev[32];
    int n = shoal_wait(w->ctx, ev, 32, timeout_ms);
    if (n < 0)
        return wfail(w, "transport: %s", shoal_ctx_errmsg(w->ctx));
    for (int i = 0; i < n; i++) {
        struct wpeer *p = ev[i].ep ? shoal_ep_user(ev[i].ep) : NULL;
        if (!p)
            continue;
        switch (ev[i].type) {
        case SHOAL_EV_PUT_DONE:
            p->puts--;
            if (ev[i].status)
                return wfail(w, "gradient push to server %s failed: %s", p->addr,
                             ev[i].reason ? ev[i].reason : shoal_strerror(ev[i].status));
            break;
        case SHOAL_EV_SEND_DONE:
            if (ev[i].wr_id == PS_BYE)
                p->bye_done = true;
            if (ev[i].status)
                return wfail(w, "message to server %s failed: %s", p->addr,
                             ev[i].reason ? ev[i].reason : shoal_strerror(ev[i].status));
            break;
        case SHOAL_EV_IMM:
            if (!p->welcomed)
                return wfail(w, "server %s wrote parameters before the handshake", p->addr);
            if (p->fresh)
                return wfail(w, "server %s wrote parameters twice without a gradient between",
                             p->addr);
            p->version = ev[i].imm;
            p->fresh = true;
            p->check_due = w->c->verify;
            break;
        case SHOAL_EV_RECV: {
            int rc = on_message(w, p, ev[i].data, ev[i].len);
            if (rc)
                return rc;
            break;
        }
        case SHOAL_EV_EP_FAILED:
            return wfail(w, "lost server %s: %s", p->addr, ev[i].reason);
        default:
            break;
        }
    }
    return n;
}

/* Pump until @done(w) holds; bounded by the idle timeout. */
static int pump_until(struct worker *w, bool (*done)(const struct worker *), const char *what)
{
    double idle_since = now_s();
    while (!done(w)) {
        int n = pump(w, 200);
        if (n < 0)
            return n;
        if (n > 0)
            idle_since = now_s();
        else if ((now_s() - idle_since) * 1000 > w->c->idle_timeout_ms)
            return wfail(w, "no progress for %d ms while waiting for %s", w->c->idle_timeout_ms,
                         what);
    }
    return 0;
}

static bool have_table(const struct worker *w) { return w->have_table; }

static bool all_welcomed(const struct worker *w)
{
    for (int s = 0; s < w->S; s++)
        if (!w->peer[s].welcomed)
            return false;
    return true;
}

static bool round_done(const struct worker *w)
{
    for (int s = 0; s < w->S; s++) {
        const struct wpeer *p = &w->peer[s];
        if (!p->fresh || p->puts || p->check_due)
            return false;
    }
    return true;
}

static bool byes_sent(const struct worker *w)
{
    for (int s = 0; s < w->S; s++)
        if (!w->peer[s].bye_done)
            return false;
    return true;
}

static int hello(struct worker *w, struct wpeer *p, int iters)
{
    const struct train_cfg *c = w->c;
    struct ps_msg m = {.type = PS_HELLO};
    struct ps_hello *h = &m.u.hello;
    h->worker = (uint32_t)w->index;
    h->workers = (uint32_t)c->workers;
    h->servers = (uint32_t)c->servers;
    h->incarnation = 0;
    h->mode = c->mode;
    h->staleness = (uint32_t)c->staleness;
    h->nparams = w->m.nparams;
    h->batch = (uint32_t)c->batch;
    h->iters_per_epoch = (uint32_t)iters;
    h->epochs = (uint32_t)c->epochs;
    model_describe(&w->m, h->model, sizeof(h->model));
    int rc = shoal_mr_reg(w->ctx, w->params + p->off, p->len * sizeof(float),
                          SHOAL_ACCESS_REMOTE_WRITE, &p->pmr);
    if (rc)
        return wfail(w, "registering %zu bytes of parameters: %s", p->len * sizeof(float),
                     shoal_ctx_errmsg(w->ctx));
    size_t dlen;
    rc = shoal_mr_pack(p->pmr, h->desc, sizeof(h->desc), &dlen);
    if (rc < 0)
        return wfail(w, "packing a descriptor: %s", shoal_strerror(rc));
    h->desc_len = (uint32_t)dlen;
    rc = net_send(p->ep, &m);
    if (rc)
        return wfail(w, "HELLO to server %s: %s", p->addr, shoal_strerror(rc));
    return 0;
}

/* Connect to every server: server 0 through the coordinator address (and
 * ask it for the table), the others from the table. */
static int join(struct worker *w, int iters)
{
    const struct train_cfg *c = w->c;
    char host[PS_HOST_MAX];
    uint16_t port;
    int rc = net_coordinator(c, host, sizeof(host), &port, w->err, sizeof(w->err));
    if (rc)
        return rc;
    struct wpeer *p0 = &w->peer[0];
    snprintf(p0->addr, sizeof(p0->addr), "%s:%u", host, port);
    rc = net_connect(w->ctx, host, port, c->connect_timeout_ms, &p0->ep, w->err,
                     sizeof(w->err));
    if (rc)
        return rc;
    shoal_ep_set_user(p0->ep, p0);
    struct ps_msg req = {.type = PS_TABLE_REQ};
    if ((rc = net_send(p0->ep, &req)))
        return wfail(w, "TABLE_REQ to %s: %s", p0->addr, shoal_strerror(rc));
    if ((rc = pump_until(w, have_table, "the server table")))
        return rc;
    if (w->table.u.table.n != (uint32_t)w->S)
        return wfail(w, "server 0 lists %u servers, this worker was started with %d",
                     w->table.u.table.n, w->S);
    for (int s = 1; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        const struct ps_addr *a = &w->table.u.table.addr[s];
        snprintf(p->addr, sizeof(p->addr), "%s:%u", a->host, a->port);
        rc = net_connect(w->ctx, a->host, a->port, c->connect_timeout_ms, &p->ep, w->err,
                         sizeof(w->err));
        if (rc)
            return rc;
        shoal_ep_set_user(p->ep, p);
    }
    for (int s = 0; s < w->S; s++)
        if ((rc = hello(w, &w->peer[s], iters)))
            return rc;
    return pump_until(w, all_welcomed, "the servers' WELCOME");
}

static int push(struct worker *w, uint32_t k)
{
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (w->c->verify && slice_crc(w, p) != p->crc)
            return wfail(w, "TORN PARAMETERS: the slice of server %s changed while the "
                         "gradient was computed", p->addr);
        p->fresh = false;
        for (;;) {
            int rc = shoal_put(p->ep, w->gmr, p->off * sizeof(float), p->slot, 0,
                               p->len * sizeof(float), SHOAL_PUT_IMM, k, (uint64_t)s);
            if (rc == 0)
                break;
            if (rc != -EAGAIN)
                return wfail(w, "gradient push to server %s: %s", p->addr,
                             shoal_ctx_errmsg(w->ctx));
            if ((rc = pump(w, 10)) < 0)
                return rc;
        }
        p->puts++;
    }
    return 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, (n ? n : 1) * sizeof(float)))
        return NULL;
    memset(p, 0, n * sizeof(float));
    return p;
}

int worker_main(const struct train_cfg *c)
{
    struct worker W = {.c = c, .index = c->rank - c->servers, .S = c->servers};
    struct worker *w = &W;
    struct dataset train = {0}, test = {0};
    struct model_ws ws = {0};
    struct batcher bt = {0};
    struct report rep;
    bool rep_open = false;
    float *x = NULL, *rounds = NULL;
    int32_t *y = NULL;
    int rc;

    rc = train_load_data(c, w->index, c->workers, &train, w->index == 0 ? &test : NULL, w->err,
                         sizeof(w->err));
    if (rc)
        goto out;
    rc = model_init(&w->m, train.dim, c->hidden, c->nhidden, train.classes);
    if (rc) {
        wfail(w, "bad model shape");
        goto out;
    }
    int iters = train_iters_per_epoch(c, train.total / (size_t)c->workers);
    if (iters < 1) {
        rc = wfail(w, "a shard of %zu samples holds no batch of %d", train.total / c->workers,
                   c->batch);
        goto out;
    }
    w->params = alloc_floats(w->m.nparams);
    w->grad = alloc_floats(w->m.nparams);
    x = malloc((size_t)c->batch * (size_t)train.dim * sizeof(float));
    y = malloc((size_t)c->batch * sizeof(int32_t));
    if (!w->params || !w->grad || !x || !y || model_ws_init(&ws, &w->m, c->batch) ||
        batcher_init(&bt, &train, c->seed, w->index)) {
        rc = wfail(w, "out of memory");
        goto out;
    }
    for (int s = 0; s < w->S; s++) {
        w->peer[s].index = s;
        train_shard(w->m.nparams, w->S, s, &w->peer[s].off, &w->peer[s].len);
    }
    if ((rc = net_ctx(&w->ctx, w->err, sizeof(w->err))))
        goto out;
    net_place_compute(w->ctx, c);
    rc = shoal_mr_reg(w->ctx, w->grad, w->m.nparams * sizeof(float), 0, &w->gmr);
    if (rc) {
        wfail(w, "registering the gradient: %s", shoal_ctx_errmsg(w->ctx));
        goto out;
    }
    if ((rc = join(w, iters)))
        goto out;
    /* The first parameters come unasked, once the server has welcomed us. */
    if ((rc = pump_until(w, round_done, "the initial parameters")))
        goto out;

    char label[PS_MODEL_MAX + 64], desc[PS_MODEL_MAX];
    model_describe(&w->m, desc, sizeof(desc));
    snprintf(label, sizeof(label), "%s %s, %d workers", desc, ps_mode_name(c->mode),
             c->workers);
    if (w->index == 0) {
        if ((rc = report_open(&rep, c->metrics, c->log_interval, c->quiet,
                              shoal_ctx_describe(w->ctx), label, c->epochs, iters, c->workers,
                              c->batch, w->err, sizeof(w->err))))
            goto out;
        rep_open = true;
        fprintf(stderr, "shoal-train: %s, %zu parameters, %d servers, batch %d per worker, "
                "%d iterations per epoch, over %s (OpenBLAS %s, %d thread%s; placement: %s)\n",
                label, w->m.nparams, c->servers, c->batch, iters, shoal_ctx_describe(w->ctx),
                openblas_get_corename(), openblas_get_num_threads(),
                openblas_get_num_threads() == 1 ? "" : "s", net_placement(w->ctx));
    }
    uint32_t k = 0;
    double acc = 0, tloss = 0;
    /* Worker 0 times every parameter round: push, update, fresh slice back. */
    rounds = w->index == 0 ? malloc((size_t)iters * c->epochs * sizeof(float)) : NULL;
    for (int e = 0; e < c->epochs; e++) {
        batcher_epoch(&bt, e);
        for (int t = 0; t < iters; t++, k++) {
            batcher_fill(&bt, t, c->batch, x, y);
            float loss = model_grad(&w->m, w->params, w->grad, x, y, c->batch, &ws);
            uint32_t before[PS_MAX_SERVERS];
            for (int s = 0; s < w->S; s++)
                before[s] = w->peer[s].version;
            double t_push = now_s();
            if ((rc = push(w, k)) || (rc = pump_until(w, round_done, "fresh parameters")))
                goto out;
            if (rounds)
                rounds[k] = (float)((now_s() - t_push) * 1e6);
            for (int s = 0; s < w->S; s++) {
                uint32_t v = w->peer[s].version;
                bool ok = c->mode == PS_BSP ? v == k + 1 : v > before[s];
                if (!ok) {
                    rc = wfail(w, "server %s answered iteration %u with parameters of "
                               "version %u", w->peer[s].addr, k, v);
                    goto out;
                }
            }
            if (rep_open)
                report_step(&rep, e, t, loss, (long)(k + 1) * c->batch * c->workers);
        }
        if (rep_open) {
            size_t ok = 0;
            tloss = model_eval(&w->m, w->params, test.x, test.y, test.n, &ok, &ws);
            acc = test.n ? (double)ok / (double)test.n : 0.0;
            report_epoch(&rep, e, acc, tloss);
        }
    }
    struct ps_msg bye = {.type = PS_BYE};
    for (int s = 0; s < w->S; s++)
        if (net_send(w->peer[s].ep, &bye))
            w->peer[s].bye_done = true; /* nothing to wait for */
    /* Closing flushes, but waiting for the BYE to leave shows it did. */
    if ((rc = pump_until(w, byes_sent, "the BYE messages to leave")))
        goto out;
    if (rep_open) {
        if (rounds && k > 0) {
            qsort(rounds, k, sizeof(float), cmp_float);
            fprintf(stderr, "parameter round (push, update, parameters back; %zu bytes each "
                    "way): median %.0f us, p99 %.0f us over %u rounds\n",
                    w->m.nparams * sizeof(float), rounds[k / 2], rounds[(size_t)k * 99 / 100],
                    k);
        }
        fprintf(stderr, "final test accuracy: %.2f%%\n", 100.0 * acc);
        if (c->save[0] && (rc = modelfile_save(c->save, &w->m, w->params, w->err,
                                               sizeof(w->err))))
            goto out;
        if (c->save[0])
            fprintf(stderr, "model saved to %s\n", c->save);
    }
out:
    if (rep_open) {
        char e2[512];
        if (report_close(&rep, e2, sizeof(e2)) && !rc) {
            snprintf(w->err, sizeof(w->err), "%s", e2);
            rc = -EIO;
        }
    }
    if (rc)
        fprintf(stderr, "shoal-train: worker %d: %s\n", w->index, w->err);
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (p->slot)
            shoal_rmr_destroy(p->slot);
        if (p->ep)
            shoal_ep_close(p->ep);
        if (p->pmr)
            shoal_mr_dereg(p->pmr);
    }
    if (w->gmr)
        shoal_mr_dereg(w->gmr);
    if (w->ctx)
        shoal_ctx_destroy(w->ctx);
    free(rounds);
    batcher_free(&bt);
    model_ws_free(&ws);
    free(x);
    free(y);
    free(w->params);
    free(w->grad);
    data_free(&train);
    data_free(&test);
    return rc ? 1 : 0;
}
