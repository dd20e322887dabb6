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
 *
 * Failures.  A server whose endpoint fails, or that sends nothing (its
 * heartbeats included) for --fail-timeout, is lost.  The worker keeps its
 * state and reconnects to every server with backoff (re-reading the
 * rendezvous file, as a restarted server may listen elsewhere) for up to
 * --reconnect-timeout.  Each WELCOME says at which iteration to continue
 * (a resumed server may be behind); the batches are a function of the
 * iteration, so the worker redoes exactly the work the server lost.
 *
 * Data.  The worker holds only its data shard.  Before the first batch of
 * each epoch it needs server 0's MEMBERS for that epoch (sent before the
 * parameters that start it): the workers that share the training set
 * then.  When that moves its shard (a worker was lost for good, or one
 * came back), it frees the shard and reads its new one from the file,
 * keeping its heartbeats going meanwhile.  Without failures the shard is
 * always its own, index % workers == rank, and is never read again.
 */
#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
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
    bool failed;              /* the connection broke: reconnect */
    uint32_t start;           /* WELCOME: the iteration to continue from */
    double last_heard, last_sent;
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
    uint32_t incarnation;     /* this process's start, for the servers */
    bool finishing;           /* BYE sent: the servers close on us */
    double last_look;         /* last heartbeat check */
    uint32_t k;               /* iterations completed */
    int iters;
    /* data */
    struct ps_members members; /* server 0's last MEMBERS on this connection */
    bool have_members;
    uint32_t want_epoch;      /* the epoch whose membership is awaited */
    int shard, shards;        /* the data shard held: shard of shards */
    bool member;              /* among the workers that share the data this epoch */
    int tick_rc;              /* a failure met while pumping during a data load */
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
        p->start = h->iteration;
        p->version = h->version;
        return 0;
    }
    case PS_PING:
        return 0;
    case PS_MEMBERS:
        if (p->index != 0)
            break;
        if (m.u.members.workers != (uint32_t)w->c->workers ||
            m.u.members.epoch >= (uint32_t)w->c->epochs)
            return wfail(w, "server %s: membership of epoch %u among %u workers, but the job "
                         "has %d epochs and %d workers", p->addr, m.u.members.epoch,
                         m.u.members.workers, w->c->epochs, w->c->workers);
        w->members = m.u.members;
        w->have_members = true;
        return 0;
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

static void lose(struct worker *w, struct wpeer *p, const char *why)
{
    if (p->failed)
        return;
    p->failed = true;
    if (!w->finishing)
        fprintf(stderr, "shoal-train: worker %d: lost server %s: %s\n", w->index, p->addr,
            why ? why : "connection failed");
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
        if (!p || p->failed)
            continue;
        if (ev[i].type == SHOAL_EV_IMM || ev[i].type == SHOAL_EV_RECV)
            p->last_heard = now_s(); /* the server itself, not our completions */
        switch (ev[i].type) {
        case SHOAL_EV_PUT_DONE:
            p->puts--;
            if (ev[i].status)
                lose(w, p, ev[i].reason ? ev[i].reason : shoal_strerror(ev[i].status));
            break;
        case SHOAL_EV_SEND_DONE:
            if (ev[i].wr_id == PS_BYE)
                p->bye_done = true;
            if (ev[i].status)
                lose(w, p, ev[i].reason ? ev[i].reason : shoal_strerror(ev[i].status));
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
            lose(w, p, ev[i].reason);
            break;
        default:
            break;
        }
    }
    return n;
}

/* Heartbeats out, and silence in: a server heard of for --fail-timeout
 * is lost. */
static void heartbeats(struct worker *w)
{
    double now = now_s(), hb = w->c->fail_timeout_ms / 4000.0;
    /* A long computation or evaluation here is our silence, not theirs. */
    if ((now - w->last_look) * 1000 > w->c->fail_timeout_ms / 2)
        for (int s = 0; s < w->S; s++)
            w->peer[s].last_heard = now;
    w->last_look = now;
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (!p->ep || p->failed)
            continue;
        if ((now - p->last_heard) * 1000 > w->c->fail_timeout_ms) {
            char why[64];
            snprintf(why, sizeof(why), "silent for %.0f ms", (now - p->last_heard) * 1000);
            lose(w, p, why);
            continue;
        }
        if (now - p->last_sent >= hb) {
            struct ps_msg ping = {.type = PS_PING};
            if (net_send(p->ep, &ping) == 0)
                p->last_sent = now;
        }
    }
}

static bool any_failed(const struct worker *w)
{
    for (int s = 0; s < w->S; s++)
        if (w->peer[s].failed)
            return true;
    return false;
}

/* Pump until @done(w) holds.  -ECONNRESET when a server is lost (the
 * caller reconnects); bounded by the idle timeout. */
static int pump_until(struct worker *w, bool (*done)(const struct worker *), const char *what)
{
    double since = now_s();
    while (!done(w)) {
        int n = pump(w, 50);
        if (n < 0)
            return n;
        heartbeats(w);
        if (any_failed(w))
            return -ECONNRESET;
        if ((now_s() - since) * 1000 > w->c->idle_timeout_ms)
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
        if (!w->peer[s].bye_done && !w->peer[s].failed)
            return false;
    return true;
}

static int hello(struct worker *w, struct wpeer *p)
{
    int iters = w->iters;
    const struct train_cfg *c = w->c;
    struct ps_msg m = {.type = PS_HELLO};
    struct ps_hello *h = &m.u.hello;
    h->worker = (uint32_t)w->index;
    h->workers = (uint32_t)c->workers;
    h->servers = (uint32_t)c->servers;
    h->incarnation = w->incarnation;
    h->clock = w->k;
    h->mode = c->mode;
    h->staleness = (uint32_t)c->staleness;
    h->nparams = w->m.nparams;
    h->batch = (uint32_t)c->batch;
    h->iters_per_epoch = (uint32_t)iters;
    h->epochs = (uint32_t)c->epochs;
    model_describe(&w->m, h->model, sizeof(h->model));
    int rc;
    if (!p->pmr && (rc = shoal_mr_reg(w->ctx, w->params + p->off, p->len * sizeof(float),
                                      SHOAL_ACCESS_REMOTE_WRITE, &p->pmr)))
        return wfail(w, "registering %zu bytes of parameters: %s", p->len * sizeof(float),
                     shoal_ctx_errmsg(w->ctx));
    size_t dlen;
    rc = shoal_mr_pack(p->pmr, h->desc, sizeof(h->desc), &dlen);
    if (rc < 0)
        return wfail(w, "packing a descriptor: %s", shoal_strerror(rc));
    h->desc_len = (uint32_t)dlen;
    rc = net_send(p->ep, &m);
    if (rc) {
        lose(w, p, shoal_strerror(rc));
        return -ECONNRESET; /* try again */
    }
    p->last_sent = p->last_heard = now_s();
    return 0;
}

/* Forget every connection (keeping the registered parameter slices). */
static void disconnect_all(struct worker *w)
{
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (p->slot)
            shoal_rmr_destroy(p->slot);
        if (p->ep) /* a lost server may be stopped: do not wait on it */
            (p->failed ? shoal_ep_abort : shoal_ep_close)(p->ep);
        p->slot = NULL;
        p->ep = NULL;
        p->welcomed = p->fresh = p->check_due = p->failed = false;
        p->puts = 0;
    }
    w->have_table = false;
    w->have_members = false; /* a (re)started server 0 says it again */
}

static bool all_fresh(const struct worker *w)
{
    return all_welcomed(w) && round_done(w);
}

/*
 * Connect to every server: server 0 through the coordinator address (and
 * ask it for the table), the others from the table; HELLO each and wait
 * for the WELCOMEs and the first parameters.  Every server must name the
 * same iteration to continue from, which becomes w->k.  -ECONNRESET (or a
 * connect error) means "try again".
 */
static int connect_all(struct worker *w, int timeout_ms)
{
    const struct train_cfg *c = w->c;
    char host[PS_HOST_MAX];
    uint16_t port;
    disconnect_all(w);
    int rc = net_coordinator(c, host, sizeof(host), &port, w->err, sizeof(w->err));
    if (rc)
        return rc;
    struct wpeer *p0 = &w->peer[0];
    snprintf(p0->addr, sizeof(p0->addr), "%s:%u", host, port);
    rc = net_connect(w->ctx, host, port, timeout_ms, &p0->ep, w->err, sizeof(w->err));
    if (rc)
        return rc;
    shoal_ep_set_user(p0->ep, p0);
    p0->last_heard = p0->last_sent = now_s();
    struct ps_msg req = {.type = PS_TABLE_REQ};
    if ((rc = net_send(p0->ep, &req)))
        return -ECONNRESET;
    if ((rc = pump_until(w, have_table, "the server table")))
        return rc;
    if (w->table.u.table.n != (uint32_t)w->S)
        return wfail(w, "server 0 lists %u servers, this worker was started with %d",
                     w->table.u.table.n, w->S);
    for (int s = 1; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        const struct ps_addr *a = &w->table.u.table.addr[s];
        snprintf(p->addr, sizeof(p->addr), "%s:%u", a->host, a->port);
        rc = net_connect(w->ctx, a->host, a->port, timeout_ms, &p->ep, w->err, sizeof(w->err));
        if (rc)
            return rc;
        shoal_ep_set_user(p->ep, p);
    }
    for (int s = 0; s < w->S; s++)
        if ((rc = hello(w, &w->peer[s])))
            return rc;
    if ((rc = pump_until(w, all_fresh, "the servers' WELCOME and parameters")))
        return rc;
    for (int s = 1; s < w->S; s++)
        if (w->peer[s].start != w->peer[0].start)
            return wfail(w, "after reconnecting, server %s continues at iteration %u and "
                         "server %s at %u: servers restarted from different checkpoints "
                         "cannot be reconciled", w->peer[0].addr, w->peer[0].start,
                         w->peer[s].addr, w->peer[s].start);
    w->k = w->peer[0].start;
    return 0;
}

/* Network trouble is worth another try; a refusal or a protocol error
 * (-EPROTO from wfail) is not. */
static bool retryable(int rc)
{
    return rc != -EPROTO && rc != -EINVAL && rc != -ENOMEM && rc != -EACCES;
}

/* (Re)join the job, retrying for up to @timeout_ms. */
static int rejoin(struct worker *w, int timeout_ms, bool first)
{
    double t0 = now_s(), deadline = t0 + timeout_ms / 1000.0;
    uint32_t was = w->k;
    for (int attempt = 1;; attempt++) {
        /* Short attempts: a restarted server 0 may publish a new address
         * in the rendezvous file, which each attempt reads again. */
        int left = (int)((deadline - now_s()) * 1000);
        left = left < 100 ? 100 : left > 2000 ? 2000 : left;
        w->err[0] = 0;
        int rc = connect_all(w, left);
        if (rc == 0) {
            if (!first)
                fprintf(stderr, "shoal-train: worker %d: reconnected after %.0f ms (attempt "
                        "%d); continuing at iteration %u (was at %u)\n", w->index,
                        (now_s() - t0) * 1000, attempt, w->k, was);
            return 0;
        }
        if (!retryable(rc) || now_s() >= deadline) {
            if (retryable(rc) && !w->err[0])
                wfail(w, "could not reach the servers within %d ms", timeout_ms);
            return rc;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
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
            if (rc != -EAGAIN) {
                /* The connection broke (e.g. we were stopped and the server
                 * gave up on us): reconnect, as for any lost server. */
                lose(w, p, shoal_ctx_errmsg(w->ctx));
                return -ECONNRESET;
            }
            if ((rc = pump(w, 10)) < 0)
                return rc;
        }
        p->puts++;
    }
    return 0;
}

/* The MEMBERS message and the parameters that start an epoch travel
 * separately: either may arrive first. */
static bool members_known(const struct worker *w)
{
    return w->have_members && w->members.epoch >= w->want_epoch;
}

/* During a long data load: answer the servers' heartbeats and send ours.
 * A failure is kept for after the load (a lost server is found then). */
static void load_tick(void *arg)
{
    struct worker *w = arg;
    if (w->tick_rc == 0 && now_s() - w->last_look > 0.05) {
        int rc = pump(w, 0);
        if (rc < 0)
            w->tick_rc = rc;
        heartbeats(w);
    }
}

/*
 * Before the first batch of epoch e: wait for server 0's membership of e,
 * and when it moves this worker's data shard, free the old shard and read
 * the new one (the batcher follows).  -ECONNRESET: reconnect.
 */
static int enter_epoch(struct worker *w, int e, struct dataset *train, struct batcher *bt)
{
    const struct train_cfg *c = w->c;
    w->want_epoch = (uint32_t)e;
    int rc = pump_until(w, members_known, "the data membership of the epoch");
    if (rc)
        return rc;
    if (w->members.epoch != (uint32_t)e)
        return wfail(w, "server %s: membership of epoch %u, but this worker starts epoch %d",
                     w->peer[0].addr, w->members.epoch + 1, e + 1);
    int shard, shards, n = 0;
    bool member = train_data_shard(w->members.live, c->workers, w->index, &shard, &shards);
    for (int i = 0; i < c->workers; i++)
        n += ps_member(w->members.live, i);
    bool was = w->member;
    w->member = member;
    if (shard == w->shard && shards == w->shards) {
        if (!member)
            fprintf(stderr, "shoal-train: worker %d: epoch %d: not among the %d workers that "
                    "share the data (it rejoined after the epoch's membership was fixed); "
                    "its own shard %d of %d (%zu samples) for this epoch\n", w->index, e + 1, n,
                    shard, shards, train->n);
        else if (!was)
            fprintf(stderr, "shoal-train: worker %d: epoch %d: data shard %d of %d live "
                    "workers (%zu samples)\n", w->index, e + 1, shard, shards, train->n);
        return 0;
    }
    const int dim = train->dim, classes = train->classes;
    batcher_free(bt);
    data_free(train);
    w->shard = w->shards = -1; /* none until the new one is in */
    struct data_tick tick = {load_tick, w};
    double t0 = now_s();
    w->tick_rc = 0;
    char err[768];
    rc = train_load_data(c, shard, shards, train, NULL, &tick, err, sizeof(err));
    if (rc)
        return wfail(w, "epoch %d: reading data shard %d of %d: %s", e + 1, shard, shards, err);
    if (w->tick_rc)
        return w->tick_rc;
    if (train->dim != dim || train->classes != classes)
        return wfail(w, "epoch %d: the training data changed on disk: %d features and %d "
                     "classes now, %d and %d at the start", e + 1, train->dim, train->classes,
                     dim, classes);
    if (batcher_init(bt, train, c->seed, w->index))
        return wfail(w, "out of memory");
    w->shard = shard;
    w->shards = shards;
    if (member)
        fprintf(stderr, "shoal-train: worker %d: epoch %d: data shard %d of %d live workers "
                "(%zu samples; read in %.2f s)\n", w->index, e + 1, shard, shards, train->n,
                now_s() - t0);
    else
        fprintf(stderr, "shoal-train: worker %d: epoch %d: not among the %d workers that "
                "share the data (it rejoined after the epoch's membership was fixed); its own "
                "shard %d of %d (%zu samples; read in %.2f s) for this epoch\n", w->index, e + 1,
                n, shard, shards, train->n, now_s() - t0);
    return 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}


/* Peak resident memory and what it is made of: the data this worker holds,
 * the parameters and gradient, and the rest (libraries, transport buffers,
 * batch and model work space). */
static void report_memory(const struct worker *w, const struct dataset *train,
                          const struct dataset *test)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return;
    const double mb = 1e6;
    double peak = (double)ru.ru_maxrss * 1024.0 / mb;
    double shard = (double)data_bytes(train), tst = (double)data_bytes(test);
    double model = 2.0 * (double)w->m.nparams * sizeof(float);
    fprintf(stderr, "shoal-train: worker %d: peak memory %.0f MB = data shard %.0f MB (%zu "
            "samples) + test set %.0f MB + parameters and gradient %.1f MB + %.0f MB other\n",
            w->index, peak, shard / mb, train->n, tst / mb, model / mb,
            peak - (shard + tst + model) / mb);
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

    rc = train_load_data(c, w->index, c->workers, &train, w->index == 0 ? &test : NULL, NULL,
                         w->err, sizeof(w->err));
    if (rc)
        goto out;
    w->shard = w->index;
    w->shards = c->workers;
    w->member = true;
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
    w->params = train_alloc_floats(w->m.nparams);
    w->grad = train_alloc_floats(w->m.nparams);
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
    w->iters = iters;
    w->incarnation = (uint32_t)(((uint64_t)time(NULL) << 12) ^ (uint64_t)getpid()) | 1u;
    if ((rc = rejoin(w, c->connect_timeout_ms, true)))
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
    double acc = 0, tloss = 0;
    const uint32_t total = (uint32_t)iters * (uint32_t)c->epochs;
    uint32_t timed = 0;
    /* Worker 0 times every parameter round: push, update, fresh slice back. */
    rounds = w->index == 0 ? malloc((size_t)total * sizeof(float)) : NULL;
    int epoch = -1;
    while (w->k < total) {
        const uint32_t k = w->k;
        const int e = (int)(k / (uint32_t)iters), t = (int)(k % (uint32_t)iters);
        if (e != epoch) {
            rc = enter_epoch(w, e, &train, &bt);
            if (rc == -ECONNRESET) {
                if ((rc = rejoin(w, c->reconnect_timeout_ms, false)))
                    goto out;
                epoch = -1;
                continue;
            }
            if (rc)
                goto out;
            batcher_epoch(&bt, e);
            epoch = e;
        }
        float loss = 0;
        if (!c->bench_rounds) {
            batcher_fill(&bt, t, c->batch, x, y);
            loss = model_grad(&w->m, w->params, w->grad, x, y, c->batch, &ws);
        }
        uint32_t before[PS_MAX_SERVERS];
        for (int s = 0; s < w->S; s++)
            before[s] = w->peer[s].version;
        double t_push = now_s();
        rc = push(w, k);
        if (rc == 0)
            rc = pump_until(w, round_done, "fresh parameters");
        if (rc == -ECONNRESET) {
            /* Keep our state, find the servers again, and continue where
             * they say (the batches follow from the iteration). */
            if ((rc = rejoin(w, c->reconnect_timeout_ms, false)))
                goto out;
            epoch = -1; /* the epoch's membership again, from server 0 */
            continue;
        }
        if (rc)
            goto out;
        if (rounds && timed < total && (!c->bench_rounds || k >= TRAIN_BENCH_WARMUP))
            rounds[timed++] = (float)((now_s() - t_push) * 1e6);
        for (int s = 0; s < w->S; s++) {
            uint32_t v = w->peer[s].version;
            bool ok = c->mode == PS_BSP ? v == k + 1 : v > before[s];
            if (!ok) {
                rc = wfail(w, "server %s answered iteration %u with parameters of "
                           "version %u", w->peer[s].addr, k, v);
                goto out;
            }
        }
        w->k = k + 1;
        if (rep_open)
            report_step(&rep, e, t, loss, (long)(k + 1) * c->batch * c->workers);
        if (rep_open && w->k % (uint32_t)iters == 0 && !c->bench_rounds) {
            size_t ok = 0;
            tloss = train_eval(&w->m, w->params, &test, &ok, &ws);
            acc = test.n ? (double)ok / (double)test.n : 0.0;
            report_epoch(&rep, e, acc, tloss);
        }
    }
    struct ps_msg bye = {.type = PS_BYE};
    for (int s = 0; s < w->S; s++)
        if (net_send(w->peer[s].ep, &bye))
            w->peer[s].bye_done = true; /* nothing to wait for */
    /* Closing flushes, but waiting for the BYE to leave shows it did (a
     * server closing on us after it is as good). */
    w->finishing = true;
    if ((rc = pump_until(w, byes_sent, "the BYE messages to leave")) && rc != -ECONNRESET)
        goto out;
    rc = 0;
    if (rep_open) {
        if (rounds && timed > 0) {
            qsort(rounds, timed, sizeof(float), cmp_float);
            fprintf(stderr, "parameter round (push, update, parameters back; %zu bytes each "
                    "way): median %.0f us, p99 %.0f us over %u rounds\n",
                    w->m.nparams * sizeof(float), rounds[timed / 2],
                    rounds[(size_t)timed * 99 / 100], timed);
        }
        if (!c->bench_rounds)
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
    else
        report_memory(w, &train, &test);
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
