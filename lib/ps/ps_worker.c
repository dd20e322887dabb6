/*
 * ps_worker.c -- the worker side of the PS layer: join a job, push
 * gradients and pull parameters, keep the job alive while the caller
 * computes (see shoal_ps.h).
 *
 * Memory: the caller's parameter and gradient vectors (P floats each).
 * The slice of the parameters that server s owns is registered on its
 * own, writable (and readable, for the servers' first fetch) by a remote
 * peer, and its descriptor goes to server s only.  The gradient vector is
 * registered for local use only; each server's slice is put straight from
 * it into this worker's slot at that server (zero copy).
 *
 * One push-pull: for each server s put grad[off_s, off_s + len_s) into
 * the slot with immediate k (the iteration); then wait until every server
 * has put fresh parameters (immediate = its version) and the gradient
 * puts completed.  A server writes this worker's parameters only in answer
 * to a gradient, and the caller reads them only after the immediate (which
 * libshoal delivers after the data): the slice is never written while it
 * is read.  With verify, a CRC-32 the server sends after each slice is
 * compared on arrival and again before the next push.
 *
 * Failures.  A server whose endpoint fails, or that sends nothing (its
 * heartbeats included) for fail_timeout_ms, is lost.  The worker keeps the
 * caller's buffers and reconnects to every server with backoff (re-reading
 * the rendezvous file, as a restarted server may listen elsewhere) for up
 * to reconnect_timeout_ms.  Each WELCOME says at which iteration to
 * continue; every server must say the same.
 *
 * Threads.  A keeper thread wakes every quarter of fail_timeout_ms and,
 * under the handle's lock, handles what arrived, sends heartbeats and
 * reconnects a lost server; the caller's calls take the same lock.  The
 * transport itself progresses in libshoal's progress thread
 * (SHOAL_PROGRESS=thread) while nobody here is waiting.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "ps_compress.h"
#include "ps_int.h"
#include "ps_net.h"
#include "ps_optim.h"

struct wpeer {
    int index;
    shoal_ep_t *ep;
    shoal_mr_t *pmr;          /* our parameter slice (or its half-width copy), writable by
                                 this server only */
    uint16_t *half;           /* fp16/bf16 jobs: where the server puts the slice */
    size_t push_off;          /* this slice's place in the compressed push buffer */
    shoal_rmr_t *slot;        /* our gradient slot at the server */
    size_t off, len;          /* the shard, in floats */
    char addr[PS_HOST_MAX + 8];
    bool welcomed;
    bool fresh;               /* new parameters arrived since our last push */
    uint32_t version;
    int puts;                 /* gradient puts not yet complete */
    size_t early;             /* entries at the end of the slice pushed by
                                 shoal_ps_push_ready this round (no immediate) */
    bool check_due;           /* verify: a CHECK follows the parameters */
    uint32_t crc;             /* verify: the CRC of the slice we hold */
    bool bye_done;
    bool failed;              /* the connection broke: reconnect */
    bool probed;              /* shoal_ps_refresh: this server answered the probe */
    uint32_t start;           /* WELCOME: the iteration to continue from */
    uint32_t shift;           /* async/ssp: how far this server's clock for us is behind
                                 our iteration (it restarted from an older checkpoint) */
    double last_heard, last_sent;
};

struct shoal_ps {
    shoal_ps_config_t cfg;
    int index, S, W;
    size_t P;
    uint32_t ntensors;
    uint64_t layout;
    shoal_ctx_t *ctx;
    float *params, *grad;
    shoal_mr_t *gmr;          /* registers what is pushed: grad, or the compressed copy */
    void *wire;               /* compressed jobs: the pushed gradient, all slices */
    float *resid;             /* top-k with error feedback: what was not sent yet */
    float *mom;               /* top-k SGD: the momentum, kept here (DGC) */
    float mu;                 /* its factor */
    float *scratch;           /* top-k: the largest slice */
    size_t push_bytes, pull_bytes;
    struct wpeer peer[PS_MAX_SERVERS];
    struct ps_msg table;
    bool have_table;
    uint32_t incarnation;
    bool joined, finishing, finished;
    double last_look;
    uint32_t k;               /* iterations completed */
    struct ps_members members;
    bool have_members;
    uint32_t want_epoch;
    uint32_t probe_nonce;     /* shoal_ps_refresh: the probe being answered */
    /* the push-pull in flight */
    bool in_flight;
    uint32_t before[PS_MAX_SERVERS];
    double t_push, last_round_us;
    int sticky;               /* a failure the keeper met, for the next call */
    uint64_t bytes_pushed;    /* gradient bytes pushed (each slice once a round) */
    uint64_t bytes_early;     /* of which shoal_ps_push_ready sent ahead */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t keeper;
    bool keeper_up, keeper_stop;
    /* co-located: this process's server, in a thread of its own */
    pthread_t server;
    bool server_up;
    shoal_ps_config_t server_cfg;
    int server_rc;
    int server_stop;          /* set by destroy when this worker did not finish */
    struct ps_colo colo;      /* what the worker and its server share in memory */
    char server_err[512];
    char err[1024];
};

__attribute__((format(printf, 2, 3)))
static int wfail(struct shoal_ps *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof(w->err), fmt, ap);
    va_end(ap);
    return -EPROTO;
}

static uint32_t slice_crc(const struct shoal_ps *w, const struct wpeer *p)
{
    if (p->half)
        return (uint32_t)crc32(0L, (const Bytef *)p->half, (uInt)(p->len * 2));
    return (uint32_t)crc32(0L, (const Bytef *)(w->params + p->off),
                           (uInt)(p->len * sizeof(float)));
}

/* Fresh parameters of server p arrived at half width: into the caller's
 * fp32 vector. */
static void decode_params(struct shoal_ps *w, struct wpeer *p)
{
    if (p->half)
        ps_half_unpack(w->cfg.job.compress, w->params + p->off, p->half, p->len);
}

static void lose(struct shoal_ps *w, struct wpeer *p, const char *why)
{
    if (p->failed)
        return;
    p->failed = true;
    if (!w->finishing)
        fprintf(stderr, "shoal-ps: worker %d: lost server %s: %s\n", w->index, p->addr,
                why ? why : "connection failed");
}

static int on_message(struct shoal_ps *w, struct wpeer *p, const void *data, size_t len)
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
        if (shoal_rmr_unpack(p->ep, h->desc, h->desc_len, &p->slot))
            return wfail(w, "server %s: bad slot descriptor: %s", p->addr,
                         shoal_ctx_errmsg(w->ctx));
        if (shoal_rmr_length(p->slot) != ps_push_bytes(&w->cfg.job, p->len) ||
            !(shoal_rmr_access(p->slot) & SHOAL_ACCESS_REMOTE_WRITE))
            return wfail(w, "server %s: the gradient slot it offers is %zu bytes (or not "
                         "writable), expected %zu", p->addr, shoal_rmr_length(p->slot),
                         ps_push_bytes(&w->cfg.job, p->len));
        p->welcomed = true;
        p->start = h->iteration;
        p->version = h->version;
        return 0;
    }
    case PS_PING:
        return 0;
    case PS_PROBE_ACK:
        if (m.u.probe.nonce == w->probe_nonce) /* (an older probe's answer: ignored) */
            p->probed = true;
        return 0;
    case PS_MEMBERS:
        if (p->index != 0)
            break;
        if (m.u.members.workers != (uint32_t)w->W ||
            m.u.members.epoch >= w->cfg.job.epochs)
            return wfail(w, "server %s: membership of epoch %u among %u workers, but the job "
                         "has %u epochs and %d workers", p->addr, m.u.members.epoch,
                         m.u.members.workers, w->cfg.job.epochs, w->W);
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

/* Wait once for events and handle them.  <0 on a failure (w->err says
 * why), else the number of events. */
static int pump(struct shoal_ps *w, int timeout_ms)
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
            p->last_heard = ps_now(); /* the server itself, not our completions */
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
            p->check_due = w->cfg.verify;
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

/* Heartbeats out, and silence in: a server not heard of for
 * fail_timeout_ms is lost. */
static void heartbeats(struct shoal_ps *w)
{
    double now = ps_now(), hb = w->cfg.fail_timeout_ms / 4000.0;
    /* A long stretch in which nobody looked is our silence, not theirs. */
    if ((now - w->last_look) * 1000 > w->cfg.fail_timeout_ms / 2)
        for (int s = 0; s < w->S; s++)
            w->peer[s].last_heard = now;
    w->last_look = now;
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (!p->ep || p->failed)
            continue;
        if ((now - p->last_heard) * 1000 > w->cfg.fail_timeout_ms) {
            char why[64];
            snprintf(why, sizeof(why), "silent for %.0f ms", (now - p->last_heard) * 1000);
            lose(w, p, why);
            continue;
        }
        if (now - p->last_sent >= hb) {
            struct ps_msg ping = {.type = PS_PING};
            if (ps_net_send(p->ep, &ping) == 0)
                p->last_sent = now;
        }
    }
}

static bool any_failed(const struct shoal_ps *w)
{
    for (int s = 0; s < w->S; s++)
        if (w->peer[s].failed)
            return true;
    return false;
}

/* Pump until @done(w) holds, at most @timeout_ms (-1: the idle timeout).
 * -ECONNRESET when a server is lost (the caller reconnects), -ETIMEDOUT
 * past a caller's timeout. */
static int pump_until(struct shoal_ps *w, bool (*done)(const struct shoal_ps *), const char *what,
                      int timeout_ms)
{
    double since = ps_now();
    while (!done(w)) {
        int n = pump(w, 50);
        if (n < 0)
            return n;
        heartbeats(w);
        if (any_failed(w))
            return -ECONNRESET;
        double el = (ps_now() - since) * 1000;
        if (timeout_ms >= 0 && el > timeout_ms && !done(w))
            return -ETIMEDOUT;
        if (el > w->cfg.idle_timeout_ms)
            return wfail(w, "no progress for %d ms while waiting for %s",
                         w->cfg.idle_timeout_ms, what);
    }
    return 0;
}

static bool have_table(const struct shoal_ps *w) { return w->have_table; }

static bool all_welcomed(const struct shoal_ps *w)
{
    for (int s = 0; s < w->S; s++)
        if (!w->peer[s].welcomed)
            return false;
    return true;
}

static bool round_done(const struct shoal_ps *w)
{
    for (int s = 0; s < w->S; s++) {
        const struct wpeer *p = &w->peer[s];
        if (!p->fresh || p->puts || p->check_due)
            return false;
    }
    return true;
}

static bool all_fresh(const struct shoal_ps *w) { return all_welcomed(w) && round_done(w); }

static bool byes_sent(const struct shoal_ps *w)
{
    for (int s = 0; s < w->S; s++)
        if (!w->peer[s].bye_done && !w->peer[s].failed)
            return false;
    return true;
}

static bool members_known(const struct shoal_ps *w)
{
    return w->have_members && w->members.epoch >= w->want_epoch;
}

static int hello(struct shoal_ps *w, struct wpeer *p)
{
    struct ps_msg m = {.type = PS_HELLO};
    struct ps_hello *h = &m.u.hello;
    h->group = (uint32_t)w->cfg.group;
    h->worker = (uint32_t)w->index;
    h->servers = (uint32_t)w->S;
    h->incarnation = w->incarnation;
    h->clock = w->k;
    h->job = w->cfg.job;
    h->job.workers = w->W;
    h->nparams = w->P;
    h->ntensors = w->ntensors;
    h->layout = w->layout;
    size_t dlen;
    int rc = shoal_mr_pack(p->pmr, h->desc, sizeof(h->desc), &dlen);
    if (rc < 0)
        return wfail(w, "packing a descriptor: %s", shoal_strerror(rc));
    h->desc_len = (uint32_t)dlen;
    if ((rc = ps_net_send(p->ep, &m))) {
        lose(w, p, shoal_strerror(rc));
        return -ECONNRESET;
    }
    p->last_sent = p->last_heard = ps_now();
    return 0;
}

/* Forget every connection (keeping the registered parameter slices). */
static void disconnect_all(struct shoal_ps *w)
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
        p->early = 0;
    }
    w->have_table = false;
    w->have_members = false; /* a (re)started server 0 says it again */
}

static bool never(const struct shoal_ps *w)
{
    (void)w;
    return false;
}

/*
 * bsp: the servers continue at different updates (one restarted from its
 * checkpoint at update @to, the others went on).  Ask every server ahead
 * to roll back to its checkpoint of @to; they then close on every worker,
 * and everyone reconnects and continues at @to, redoing exactly the lost
 * work.  -ECONNRESET: connect again; a server that cannot roll back says
 * why (-EPROTO).
 */
static int reconcile(struct shoal_ps *w, uint32_t to)
{
    fprintf(stderr, "shoal-ps: worker %d: the servers continue at different updates:", w->index);
    for (int s = 0; s < w->S; s++)
        fprintf(stderr, " %s at %u%s", w->peer[s].addr, w->peer[s].start,
                s + 1 < w->S ? "," : "");
    fprintf(stderr, "; rolling the job back to update %u\n", to);
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (p->start == to)
            continue;
        struct ps_msg m = {.type = PS_ROLLBACK};
        m.u.rollback.from = p->start;
        m.u.rollback.to = to;
        if (ps_net_send(p->ep, &m))
            lose(w, p, "ROLLBACK could not be sent");
    }
    /* The servers that roll back close on us (or refuse, saying why). */
    int rc = pump_until(w, never, "the servers' rollback", 3000);
    return rc == -ETIMEDOUT ? -ECONNRESET : rc;
}

/*
 * Connect to every server: server 0 through the coordinator (and ask it
 * for the table), the others from the table; HELLO each and wait for the
 * WELCOMEs and the first parameters.  Every server must name the same
 * iteration to continue from, which becomes w->k.  -ECONNRESET (or a
 * connect error) means "try again".
 */
static int connect_all(struct shoal_ps *w, int timeout_ms)
{
    char host[PS_HOST_MAX];
    uint16_t port;
    disconnect_all(w);
    int rc = ps_net_coordinator(&w->cfg, host, sizeof(host), &port, w->err, sizeof(w->err));
    if (rc)
        return rc;
    struct wpeer *p0 = &w->peer[0];
    snprintf(p0->addr, sizeof(p0->addr), "%s:%u", host, port);
    rc = ps_net_connect(w->ctx, host, port, timeout_ms, &p0->ep, w->err, sizeof(w->err));
    if (rc)
        return rc;
    shoal_ep_set_user(p0->ep, p0);
    p0->last_heard = p0->last_sent = ps_now();
    struct ps_msg req = {.type = PS_TABLE_REQ};
    if (ps_net_send(p0->ep, &req))
        return -ECONNRESET;
    if ((rc = pump_until(w, have_table, "the server table", -1)))
        return rc;
    if (w->table.u.table.n != (uint32_t)w->S)
        return wfail(w, "server 0 lists %u servers, this worker was started with %d",
                     w->table.u.table.n, w->S);
    for (int s = 1; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        const struct ps_addr *a = &w->table.u.table.addr[s];
        snprintf(p->addr, sizeof(p->addr), "%s:%u", a->host, a->port);
        rc = ps_net_connect(w->ctx, a->host, a->port, timeout_ms, &p->ep, w->err,
                            sizeof(w->err));
        if (rc)
            return rc;
        shoal_ep_set_user(p->ep, p);
    }
    for (int s = 0; s < w->S; s++)
        if ((rc = hello(w, &w->peer[s])))
            return rc;
    if ((rc = pump_until(w, all_fresh, "the servers' WELCOME and parameters", -1)))
        return rc;
    for (int s = 0; s < w->S; s++)
        decode_params(w, &w->peer[s]);
    uint32_t lo = w->peer[0].start, hi = lo;
    for (int s = 1; s < w->S; s++) {
        lo = w->peer[s].start < lo ? w->peer[s].start : lo;
        hi = w->peer[s].start > hi ? w->peer[s].start : hi;
    }
    if (lo != hi && w->cfg.job.mode == SHOAL_PS_BSP)
        return reconcile(w, lo);
    /* async/ssp: each shard goes on from where its server is; a server that
     * restarted from an older checkpoint lost the gradients since, on its
     * shard only, and counts this worker's pushes from its own clock. */
    for (int s = 0; s < w->S; s++) {
        w->peer[s].shift = hi - w->peer[s].start;
        if (w->peer[s].shift)
            fprintf(stderr, "shoal-ps: worker %d: server %s continues at %u, %u behind the "
                    "others (it restarted from an older checkpoint): its shard lost those "
                    "gradients\n", w->index, w->peer[s].addr, w->peer[s].start,
                    w->peer[s].shift);
    }
    w->k = hi;
    return 0;
}

/* Network trouble is worth another try; a refusal or a protocol error
 * (-EPROTO from wfail) is not. */
static bool retryable(int rc)
{
    return rc != -EPROTO && rc != -EINVAL && rc != -ENOMEM && rc != -EACCES;
}

/* (Re)join the job, retrying for up to @timeout_ms. */
static int rejoin(struct shoal_ps *w, int timeout_ms, bool first)
{
    double t0 = ps_now(), deadline = t0 + timeout_ms / 1000.0;
    uint32_t was = w->k;
    for (int attempt = 1;; attempt++) {
        /* Short attempts: a restarted server 0 may publish a new address
         * in the rendezvous file, which each attempt reads again. */
        int left = (int)((deadline - ps_now()) * 1000);
        left = left < 100 ? 100 : left > 2000 ? 2000 : left;
        w->err[0] = 0;
        int rc = connect_all(w, left);
        if (rc == 0) {
            if (!first)
                fprintf(stderr, "shoal-ps: worker %d: reconnected after %.0f ms (attempt %d); "
                        "continuing at iteration %u (was at %u)\n", w->index,
                        (ps_now() - t0) * 1000, attempt, w->k, was);
            return 0;
        }
        if (!retryable(rc) || ps_now() >= deadline) {
            if (retryable(rc) && !w->err[0])
                wfail(w, "could not reach the servers within %d ms", timeout_ms);
            if (!w->err[0])
                wfail(w, "%s", shoal_strerror(rc));
            return rc;
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
}

/* A server was lost: reconnect; a push-pull in flight is void (the caller
 * redoes the iteration shoal_ps_iteration() names). */
static int recover(struct shoal_ps *w)
{
    int rc = rejoin(w, w->cfg.reconnect_timeout_ms, false);
    w->in_flight = false;
    return rc;
}

/* ---- the keeper thread -------------------------------------------------------- */

static void *keeper(void *arg)
{
    struct shoal_ps *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->keeper_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        long ns = until.tv_nsec + (long)(w->cfg.fail_timeout_ms / 4) * 1000000L;
        until.tv_sec += ns / 1000000000L;
        until.tv_nsec = ns % 1000000000L;
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
        if (w->keeper_stop || !w->joined || w->finishing || w->sticky)
            continue;
        /* The caller has not been here for a while: keep the job alive. */
        if ((ps_now() - w->last_look) * 1000 < w->cfg.fail_timeout_ms / 8.0)
            continue;
        int rc = pump(w, 0);
        if (rc >= 0) {
            heartbeats(w);
            if (any_failed(w))
                rc = recover(w);
        }
        if (rc < 0)
            w->sticky = rc;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

/* ---- co-located: the server thread ------------------------------------------------ */

static void *serve_thread(void *arg)
{
    struct shoal_ps *w = arg;
    w->server_rc = ps_serve(&w->server_cfg, &w->server_stop, &w->colo, w->server_err,
                            sizeof(w->server_err));
    if (w->server_rc)
        fprintf(stderr, "shoal-ps: server %d: %s\n", w->server_cfg.rank, w->server_err);
    return NULL;
}

/* ---- the API -------------------------------------------------------------------- */

int shoal_ps_create(const shoal_ps_config_t *cfg, const shoal_ps_tensor_t *t, int n,
                    float *params, float *grads, shoal_ps_t **ps_p, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    if (!cfg || !ps_p || !params || !grads) {
        snprintf(err, errlen, "shoal_ps_create: NULL config, handle, parameters or gradients");
        return -EINVAL;
    }
    int rc = shoal_ps_config_check(cfg, true, err, errlen);
    if (rc)
        return rc;
    shoal_ps_config_t split, scfg;
    bool colocated = cfg->colocated;
    if (colocated) {
        ps_config_split(cfg, &split, &scfg);
        cfg = &split;
    }
    if (shoal_ps_is_server(cfg)) {
        snprintf(err, errlen, "rank %d is a server's (ranks 0-%d serve): call shoal_ps_serve",
                 cfg->rank, cfg->servers - 1);
        return -EINVAL;
    }
    if (!t || n < 1) {
        snprintf(err, errlen, "no tensors declared (%d)", n);
        return -EINVAL;
    }
    size_t P = 0;
    for (int i = 0; i < n; i++) {
        if (t[i].count == 0 || !t[i].name || !*t[i].name) {
            snprintf(err, errlen, "tensor %d (%s) is empty or has no name", i,
                     t[i].name ? t[i].name : "NULL");
            return -EINVAL;
        }
        P += t[i].count;
    }
    if (P < (size_t)cfg->servers) {
        snprintf(err, errlen, "%zu parameters cannot be split over %d servers", P,
                 cfg->servers);
        return -EINVAL;
    }
    struct shoal_ps *w = calloc(1, sizeof(*w));
    if (!w) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    w->cfg = *cfg;
    w->S = cfg->servers;
    w->W = cfg->group_size > 0 ? cfg->group_size : cfg->size - cfg->servers;
    w->cfg.job.workers = w->W;
    w->index = cfg->group_rank >= 0 ? cfg->group_rank : cfg->rank - cfg->servers;
    w->P = P;
    w->ntensors = (uint32_t)n;
    w->layout = ps_layout_hash(t, n);
    w->params = params;
    w->grad = grads;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, NULL);
    for (int s = 0; s < w->S; s++) {
        w->peer[s].index = s;
        ps_shard(P, w->S, s, &w->peer[s].off, &w->peer[s].len);
    }
    if ((rc = ps_net_ctx(&w->ctx, true, colocated ? 2 : 1, err, errlen)))
        goto fail;
    const shoal_ps_job_t *j = &w->cfg.job;
    shoal_ps_wire_bytes(j, P, w->S, &w->push_bytes, &w->pull_bytes);
    bool half = ps_is_half(j->compress);
    size_t maxlen = 0, at = 0;
    for (int s = 0; s < w->S; s++) {
        w->peer[s].push_off = at;
        at += ps_push_bytes(j, w->peer[s].len);
        maxlen = w->peer[s].len > maxlen ? w->peer[s].len : maxlen;
    }
    if (j->compress != SHOAL_PS_COMPRESS_NONE) {
        /* the one copy compression costs: the gradient at its wire width */
        w->wire = ps_alloc_floats((w->push_bytes + 3) / 4);
        if (j->compress == SHOAL_PS_COMPRESS_TOPK)
            w->resid = ps_alloc_floats(P);
        if (j->compress >= SHOAL_PS_COMPRESS_TOPK)
            w->scratch = ps_alloc_floats(maxlen);
        if ((w->mu = ps_topk_momentum(j)) != 0.0f && !(w->mom = ps_alloc_floats(P))) {
            snprintf(err, errlen, "out of memory for the top-k momentum");
            rc = -ENOMEM;
            goto fail;
        }
        if (!w->wire || (j->compress == SHOAL_PS_COMPRESS_TOPK && !w->resid) ||
            (j->compress >= SHOAL_PS_COMPRESS_TOPK && !w->scratch)) {
            snprintf(err, errlen, "out of memory for the compressed gradient");
            rc = -ENOMEM;
            goto fail;
        }
    } else {
        for (int s = 0; s < w->S; s++)
            w->peer[s].push_off = w->peer[s].off * sizeof(float);
    }
    void *push_src = w->wire ? w->wire : (void *)grads;
    size_t push_len = w->wire ? w->push_bytes : P * sizeof(float);
    if ((rc = shoal_mr_reg(w->ctx, push_src, push_len, 0, &w->gmr))) {
        snprintf(err, errlen, "registering %zu bytes of gradients: %s", push_len,
                 shoal_ctx_errmsg(w->ctx));
        goto fail;
    }
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (half && !(p->half = (uint16_t *)ps_alloc_floats((p->len + 1) / 2))) {
            snprintf(err, errlen, "out of memory for the half-width parameters");
            rc = -ENOMEM;
            goto fail;
        }
        void *dst = p->half ? (void *)p->half : (void *)(params + p->off);
        size_t bytes = ps_pull_bytes(j, p->len);
        if ((rc = shoal_mr_reg(w->ctx, dst, bytes,
                               SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ,
                               &p->pmr))) {
            snprintf(err, errlen, "registering %zu bytes of parameters: %s", bytes,
                     shoal_ctx_errmsg(w->ctx));
            goto fail;
        }
    }
    w->incarnation = (uint32_t)(((uint64_t)time(NULL) << 12) ^ (uint64_t)getpid()) | 1u;
    w->last_look = ps_now();
    if (colocated) {
        /* its own thread and context: the server never waits on this
         * worker's computation */
        w->server_cfg = scfg;
        struct wpeer *p = &w->peer[w->index];
        w->colo.worker = w->index;
        w->colo.params = p->half ? (void *)p->half : (void *)(params + p->off);
        w->colo.params_bytes = ps_pull_bytes(j, p->len);
        w->colo.slot_bytes = ps_push_bytes(j, p->len);
        if (!(w->colo.slot = ps_alloc_floats((w->colo.slot_bytes + 3) / 4))) {
            snprintf(err, errlen, "out of memory for the co-located gradient slot");
            rc = -ENOMEM;
            goto fail;
        }
        if ((rc = pthread_create(&w->server, NULL, serve_thread, w))) {
            snprintf(err, errlen, "cannot start the co-located server: %s", strerror(rc));
            rc = -rc;
            goto fail;
        }
        w->server_up = true;
    }
    *ps_p = w;
    return 0;
fail:
    shoal_ps_destroy(w);
    return rc;
}

int shoal_ps_join(shoal_ps_t *w)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc;
    if (w->joined) {
        rc = -EALREADY;
        wfail(w, "shoal_ps_join: already joined");
    } else {
        for (int s = 0; s < w->S; s++)
            if (w->peer[s].half)
                ps_half_pack(w->cfg.job.compress, w->peer[s].half, w->params + w->peer[s].off,
                             w->peer[s].len);
        rc = rejoin(w, w->cfg.connect_timeout_ms, true);
    }
    if (rc == 0 && !w->joined) {
        w->joined = true;
        if (!w->keeper_up && pthread_create(&w->keeper, NULL, keeper, w) == 0)
            w->keeper_up = true;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* Calls that need a joined handle: the sticky failure of the keeper first. */
static int ready(struct shoal_ps *w, const char *what)
{
    if (w->sticky)
        return w->sticky;
    if (!w->joined) {
        wfail(w, "%s before shoal_ps_join", what);
        return -EINVAL;
    }
    if (w->finishing) {
        wfail(w, "%s after shoal_ps_finish", what);
        return -EINVAL;
    }
    return 0;
}

/* Calls that also need no push-pull in flight (-EBUSY). */
static int ready_idle(struct shoal_ps *w, const char *what)
{
    int rc = ready(w, what);
    if (rc == 0 && w->in_flight) {
        wfail(w, "%s while a push-pull is in flight", what);
        rc = -EBUSY;
    }
    return rc;
}

/* Top-k of server @p's slice into @dst; with momentum correction (DGC),
 * of u = mu u + g, and what is sent leaves u as well as the residual. */
static void topk_pack(struct shoal_ps *w, const struct wpeer *p, uint8_t *dst)
{
    size_t k = ps_topk_k(w->cfg.job.topk_ratio, p->len);
    const float *g = w->grad + p->off;
    float *u = w->mom ? w->mom + p->off : NULL;
    if (u) {
        for (size_t i = 0; i < p->len; i++)
            u[i] = w->mu * u[i] + g[i];
        g = u;
    }
    ps_topk_pack(dst, g, w->resid ? w->resid + p->off : NULL, p->len, k, w->scratch);
    for (size_t m = 0; u && m < k; m++) {
        uint32_t idx;
        memcpy(&idx, dst + 8 * m, 4);
        u[idx] = 0.0f;
    }
}

/* Is server @s this process's own, and has it adopted our slot (which
 * it does only if the sizes agree)? */
static bool colo_local(const struct shoal_ps *w, int s)
{
    return s == w->colo.worker && w->colo.slot &&
           __atomic_load_n(&w->colo.adopted, __ATOMIC_ACQUIRE);
}

/* What the gradient puts are sent from (registered as gmr). */
static const uint8_t *push_base(const struct shoal_ps *w)
{
    return (const uint8_t *)(w->wire ? w->wire : (void *)w->grad);
}

/* The end of server @s's slice, from entry @from on (a slice offset), is
 * final: send what of it has not gone yet, without an immediate.  Returns
 * false if it could not (the push then sends everything). */
static bool push_piece(struct shoal_ps *w, int s, size_t from)
{
    struct wpeer *p = &w->peer[s];
    size_t end = p->len - p->early; /* entries [end, len) went already */
    if (from >= end || !p->ep || p->failed || !p->welcomed)
        return true;
    shoal_ps_compress_t cz = w->cfg.job.compress;
    /* bytes per entry: fp32 or half width (top-k never goes early) */
    size_t ww = ps_push_bytes(&w->cfg.job, 1), boff = from * ww, blen = (end - from) * ww;
    if (ps_is_half(cz))
        ps_half_pack(cz, (uint16_t *)((uint8_t *)w->wire + p->push_off) + from,
                     w->grad + p->off + from, end - from);
    if (colo_local(w, s)) {
        memcpy((uint8_t *)w->colo.slot + boff, push_base(w) + p->push_off + boff, blen);
    } else {
        if (shoal_put(p->ep, w->gmr, p->push_off + boff, p->slot, boff, blen, 0, 0,
                      (uint64_t)s))
            return false; /* a full queue or a broken link: the push deals with it */
        p->puts++;
    }
    p->early = p->len - from;
    w->bytes_early += blen;
    return true;
}

int shoal_ps_push_ready(shoal_ps_t *w, size_t from)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = 0;
    if (from > w->P) {
        rc = -EINVAL;
        wfail(w, "shoal_ps_push_ready: entry %zu is past the %zu parameters", from, w->P);
    } else if (w->joined && !w->finishing && !w->sticky && !w->in_flight &&
               w->cfg.job.compress != SHOAL_PS_COMPRESS_TOPK &&
               w->k < w->cfg.job.iters_per_epoch * w->cfg.job.epochs) {
        /* Pieces smaller than this wait for the push (a put each costs
         * more than it hides). */
        const size_t min_piece = 16384 / sizeof(float);
        for (int s = w->S - 1; s >= 0; s--) {
            struct wpeer *p = &w->peer[s];
            if (from >= p->off + p->len)
                break; /* nothing of this slice (or any before it) is final */
            size_t f = from > p->off ? from - p->off : 0;
            if (p->len - p->early - f < min_piece && f > 0)
                break;
            if (!push_piece(w, s, f))
                break;
        }
    }
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    return rc;
}

static int push_locked(struct shoal_ps *w)
{
    int rc = ready_idle(w, "shoal_ps_push_start");
    if (rc)
        return rc;
    if (w->k >= w->cfg.job.iters_per_epoch * w->cfg.job.epochs) {
        wfail(w, "the job's %u iterations are done", w->cfg.job.iters_per_epoch *
              w->cfg.job.epochs);
        return -EINVAL;
    }
    w->t_push = ps_now();
    for (int s = 0; s < w->S; s++)
        w->before[s] = w->peer[s].version;
    shoal_ps_compress_t cz = w->cfg.job.compress;
    for (int s = 0; cz != SHOAL_PS_COMPRESS_NONE && s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        uint8_t *dst = (uint8_t *)w->wire + p->push_off;
        if (ps_is_half(cz))
            ps_half_pack(cz, (uint16_t *)dst, w->grad + p->off, p->len - p->early);
        else
            topk_pack(w, p, dst);
    }
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (w->cfg.verify && slice_crc(w, p) != p->crc)
            return wfail(w, "TORN PARAMETERS: the slice of server %s changed while the "
                         "gradient was computed", p->addr);
        p->fresh = false;
        const size_t whole = ps_push_bytes(&w->cfg.job, p->len);
        size_t off = 0, len = whole;
        if (p->early) {
            /* the end went ahead (push_ready): the rest, and at least the
             * last PS_COLO_TAIL bytes again, for the immediate */
            size_t rest = whole - p->early * ps_push_bytes(&w->cfg.job, 1);
            size_t last = whole < PS_COLO_TAIL ? whole : PS_COLO_TAIL;
            len = rest > last ? rest : last;
            off = rest > last ? 0 : whole - last;
            p->early = 0;
        }
        if (colo_local(w, s)) {
            /* our own server: copy, and put only the tail */
            size_t tail = ps_colo_copy((uint8_t *)w->colo.slot + off,
                                       push_base(w) + p->push_off + off, len);
            off += len - tail;
            len = tail;
        }
        for (;;) {
            rc = shoal_put(p->ep, w->gmr, p->push_off + off, p->slot, off, len, SHOAL_PUT_IMM,
                           w->k - p->shift, (uint64_t)s);
            if (rc == 0)
                break;
            if (rc != -EAGAIN) {
                /* The connection broke (e.g. we were stopped and the server
                 * gave up on us): reconnect, as for any lost server. */
                lose(w, p, shoal_ctx_errmsg(w->ctx));
                return recover(w);
            }
            if ((rc = pump(w, 10)) < 0)
                return rc;
        }
        p->puts++;
    }
    w->in_flight = true;
    w->bytes_pushed += w->push_bytes;
    return 0;
}

int shoal_ps_push_start(shoal_ps_t *w)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = push_locked(w);
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    return rc;
}

/* The round is complete: check the versions and move on. */
static int complete(struct shoal_ps *w)
{
    for (int s = 0; s < w->S; s++) {
        uint32_t v = w->peer[s].version;
        bool ok = w->cfg.job.mode == SHOAL_PS_BSP ? v == w->k + 1 : v > w->before[s];
        if (!ok)
            return wfail(w, "server %s answered iteration %u with parameters of version %u",
                         w->peer[s].addr, w->k, v);
    }
    for (int s = 0; s < w->S; s++)
        decode_params(w, &w->peer[s]);
    w->k++;
    w->in_flight = false;
    w->last_round_us = (ps_now() - w->t_push) * 1e6;
    return 1;
}

/* Wait up to @timeout_ms (-1: no bound but the idle timeout): 1 when the
 * push-pull is over (done, or void after a reconnection), 0 not yet. */
static int wait_locked(struct shoal_ps *w, int timeout_ms)
{
    if (w->sticky)
        return w->sticky;
    if (!w->in_flight) {
        wfail(w, "no push-pull in flight");
        return -EINVAL;
    }
    int rc = pump_until(w, round_done, "fresh parameters", timeout_ms);
    if (rc == -ETIMEDOUT)
        return 0;
    if (rc == -ECONNRESET)
        return (rc = recover(w)) ? rc : 1;
    if (rc)
        return rc;
    return complete(w);
}

int shoal_ps_push_test(shoal_ps_t *w)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = wait_locked(w, 0);
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int shoal_ps_push_wait(shoal_ps_t *w, int timeout_ms)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = wait_locked(w, timeout_ms);
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    if (rc == 0) {
        snprintf(w->err, sizeof(w->err), "push-pull not complete within %d ms", timeout_ms);
        return -ETIMEDOUT;
    }
    return rc < 0 ? rc : 0;
}

int shoal_ps_push_pull(shoal_ps_t *w)
{
    return shoal_ps_push_pull_at(w, UINT32_MAX);
}

int shoal_ps_push_pull_at(shoal_ps_t *w, uint32_t k)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    if (k != UINT32_MAX && w->k != k) {
        /* the keeper reconnected while the caller computed iteration k,
         * and the servers continue at another one */
        wfail(w, "the gradient is for iteration %u, but the servers continue at %u", k, w->k);
        pthread_mutex_unlock(&w->lock);
        return -ESTALE;
    }
    int rc = push_locked(w);
    if (rc == 0 && w->in_flight)
        rc = wait_locked(w, -1);
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    return rc < 0 ? rc : 0;
}

uint32_t shoal_ps_iteration(const shoal_ps_t *w) { return w ? w->k : 0; }

static bool all_probed(const struct shoal_ps *w)
{
    for (int s = 0; s < w->S; s++)
        if (!w->peer[s].probed)
            return false;
    return true;
}

/*
 * A round trip to every server: each one that answers is the incarnation
 * this handle knows, so w->k is its word.  One that does not (its endpoint
 * fails, or it stays silent for fail_timeout_ms: killed, restarted) is
 * lost, and the handle reconnects, which sets w->k from the servers.
 */
int shoal_ps_refresh(shoal_ps_t *w)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = ready_idle(w, "shoal_ps_refresh");
    if (rc == 0) {
        w->probe_nonce++;
        for (int s = 0; s < w->S; s++) {
            struct wpeer *p = &w->peer[s];
            struct ps_msg m = {.type = PS_PROBE, .u.probe.nonce = w->probe_nonce};
            p->probed = false;
            if (!p->ep || ps_net_send(p->ep, &m))
                lose(w, p, "PROBE could not be sent");
            else
                p->last_sent = ps_now();
        }
        rc = any_failed(w) ? -ECONNRESET : pump_until(w, all_probed, "the servers' answer", -1);
        if (rc == -ECONNRESET)
            rc = recover(w);
    }
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    return rc < 0 ? rc : 0;
}

bool ps_data_shard(const uint8_t *live, int workers, int worker, int *shard, int *shards)
{
    int n = 0, j = -1;
    for (int i = 0; i < workers; i++)
        if (ps_member(live, i)) {
            if (i == worker)
                j = n;
            n++;
        }
    if (j < 0) {
        *shard = worker;
        *shards = workers;
        return false;
    }
    *shard = j;
    *shards = n;
    return true;
}

int shoal_ps_data_shard(shoal_ps_t *w, uint32_t epoch, bool *member, int *shard, int *shards)
{
    if (!w || !member || !shard || !shards)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = ready(w, "shoal_ps_data_shard");
    if (rc == 0 && epoch >= w->cfg.job.epochs) {
        wfail(w, "epoch %u: the job has %u", epoch, w->cfg.job.epochs);
        rc = -EINVAL;
    }
    w->want_epoch = epoch;
    while (rc == 0) {
        rc = pump_until(w, members_known, "the data membership of the epoch", -1);
        if (rc == -ECONNRESET)
            rc = recover(w);
        else
            break;
    }
    if (rc == 0 && w->members.epoch != epoch) {
        wfail(w, "server %s: membership of epoch %u, but this worker asks for epoch %u",
              w->peer[0].addr, w->members.epoch + 1, epoch + 1);
        rc = -EPROTO;
    }
    if (rc == 0)
        *member = ps_data_shard(w->members.live, w->W, w->index, shard, shards);
    w->last_look = ps_now();
    pthread_mutex_unlock(&w->lock);
    return rc;
}

int shoal_ps_finish(shoal_ps_t *w)
{
    if (!w)
        return -EINVAL;
    pthread_mutex_lock(&w->lock);
    int rc = ready_idle(w, "shoal_ps_finish");
    if (rc == 0) {
        struct ps_msg bye = {.type = PS_BYE};
        for (int s = 0; s < w->S; s++)
            if (ps_net_send(w->peer[s].ep, &bye))
                w->peer[s].bye_done = true; /* nothing to wait for */
        /* Closing flushes, but waiting for the BYE to leave shows it did (a
         * server closing on us after it is as good). */
        w->finishing = true;
        rc = pump_until(w, byes_sent, "the BYE messages to leave", -1);
        if (rc == -ECONNRESET)
            rc = 0;
        w->finished = rc == 0;
    }
    pthread_mutex_unlock(&w->lock);
    return rc;
}

void shoal_ps_destroy(shoal_ps_t *w)
{
    if (!w)
        return;
    if (w->server_up) {
        /* it ends when every worker finished; if this one did not (a
         * failure), the job is over for this process's shard too */
        if (!w->finished)
            __atomic_store_n(&w->server_stop, 1, __ATOMIC_RELEASE);
        pthread_join(w->server, NULL);
        w->server_up = false;
    }
    if (w->keeper_up) {
        pthread_mutex_lock(&w->lock);
        w->keeper_stop = true;
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->keeper, NULL);
    }
    for (int s = 0; s < w->S; s++) {
        struct wpeer *p = &w->peer[s];
        if (p->slot)
            shoal_rmr_destroy(p->slot);
        if (p->ep)
            (p->failed ? shoal_ep_abort : shoal_ep_close)(p->ep);
        if (p->pmr)
            shoal_mr_dereg(p->pmr);
        free(p->half);
    }
    if (w->gmr)
        shoal_mr_dereg(w->gmr);
    free(w->wire);
    free(w->resid);
    free(w->mom);
    free(w->scratch);
    free(w->colo.slot); /* the server thread, which used it, has ended */
    if (w->ctx)
        shoal_ctx_destroy(w->ctx);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int shoal_ps_worker(const shoal_ps_t *w) { return w ? w->index : -1; }
int shoal_ps_workers(const shoal_ps_t *w) { return w ? w->W : 0; }
size_t shoal_ps_nparams(const shoal_ps_t *w) { return w ? w->P : 0; }
const char *shoal_ps_describe(const shoal_ps_t *w) { return w ? shoal_ctx_describe(w->ctx) : ""; }
struct shoal_ctx *shoal_ps_ctx(shoal_ps_t *w) { return w ? w->ctx : NULL; }
const char *shoal_ps_errmsg(const shoal_ps_t *w) { return w ? w->err : "no handle"; }
double shoal_ps_last_round_us(const shoal_ps_t *w) { return w ? w->last_round_us : 0.0; }

void shoal_ps_pushed_bytes(const shoal_ps_t *w, uint64_t *total, uint64_t *early)
{
    if (total)
        *total = w ? w->bytes_pushed : 0;
    if (early)
        *early = w ? w->bytes_early : 0;
}
