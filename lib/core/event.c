/*
 * event.c -- the context's event queue, and shoal_poll()/shoal_wait().
 *
 * Providers never build public events themselves: they report completions
 * and arrivals through shoal__op_done(), shoal__ep_imm(), shoal__ep_recv()
 * and shoal__ep_failed(), which queue them here.  The queue is a growable
 * power-of-two ring; a poll moves up to `max` entries into the "batch",
 * whose storage (message copies, reason strings) stays valid until the
 * next poll, which is what the public contract promises.  shoal__sleep is
 * the one place a blocking call sleeps: on the fds the provider names.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

static const char *const event_names[] = {
    "none", "put_done", "get_done", "send_done", "imm", "recv", "ep_failed"};

const char *shoal_event_name(shoal_event_type_t type)
{
    if ((unsigned)type < sizeof(event_names) / sizeof(event_names[0]))
        return event_names[type];
    return "?";
}

void shoal__evq_fini(struct shoal_evq *q)
{
    for (unsigned i = 0; i < q->count; i++)
        free(q->ring[(q->head + i) & (q->cap - 1)].data);
    for (unsigned i = 0; i < q->batch_len; i++)
        free(q->batch[i].data);
    free(q->ring);
    free(q->batch);
    memset(q, 0, sizeof(*q));
}

/* Reserve the next slot; NULL only when memory runs out. */
static struct shoal_qev *evq_push(shoal_ctx_t *ctx)
{
    struct shoal_evq *q = &ctx->evq;
    if (q->count == q->cap) {
        unsigned ncap = q->cap ? q->cap * 2 : 256;
        struct shoal_qev *n = malloc(sizeof(*n) * ncap);
        if (!n) {
            shoal__error(ctx, "event queue: out of memory, dropping an event");
            return NULL;
        }
        for (unsigned i = 0; i < q->count; i++)
            n[i] = q->ring[(q->head + i) & (q->cap - 1)];
        free(q->ring);
        q->ring = n;
        q->cap = ncap;
        q->head = 0;
    }
    struct shoal_qev *e = &q->ring[(q->head + q->count) & (q->cap - 1)];
    q->count++;
    memset(e, 0, sizeof(*e));
    return e;
}

/* Drop @ep's queued events (of @type only, if @type is not 0). */
static void drop_ep(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_event_type_t type)
{
    struct shoal_evq *q = &ctx->evq;
    unsigned kept = 0;
    for (unsigned i = 0; i < q->count; i++) {
        struct shoal_qev *e = &q->ring[(q->head + i) & (q->cap - 1)];
        if (e->ev.ep == ep && (type == 0 || e->ev.type == type)) {
            free(e->data);
            continue;
        }
        q->ring[(q->head + kept) & (q->cap - 1)] = *e;
        kept++;
    }
    q->count = kept;
}

void shoal__evq_drop_ep_type(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_event_type_t type)
{
    drop_ep(ctx, ep, type);
}

void shoal__evq_drop_ep(shoal_ctx_t *ctx, shoal_ep_t *ep)
{
    struct shoal_evq *q = &ctx->evq;
    drop_ep(ctx, ep, 0);
    /* The batch already handed out may name ep too: clear the pointer. */
    for (unsigned i = 0; i < q->batch_len; i++)
        if (q->batch[i].ev.ep == ep)
            q->batch[i].ev.ep = NULL;
}

void shoal__queue_op_event(shoal_ctx_t *ctx, struct shoal_op *op,
                           const char *reason)
{
    static const shoal_event_type_t kind_ev[] = {
        [SHOAL_OP_PUT] = SHOAL_EV_PUT_DONE,
        [SHOAL_OP_GET] = SHOAL_EV_GET_DONE,
        [SHOAL_OP_SEND] = SHOAL_EV_SEND_DONE};
    struct shoal_qev *e = evq_push(ctx);
    if (!e)
        return;
    e->ev.type = kind_ev[op->kind];
    e->ev.status = op->status;
    e->ev.ep = op->ep;
    e->ev.wr_id = op->wr_id;
    e->ev.len = op->len;
    if (reason)
        snprintf(e->reason, sizeof(e->reason), "%s", reason);
}

void shoal__ep_imm(shoal_ep_t *ep, uint32_t imm)
{
    struct shoal_qev *e = evq_push(ep->ctx);
    if (!e)
        return;
    e->ev.type = SHOAL_EV_IMM;
    e->ev.ep = ep;
    e->ev.imm = imm;
}

void shoal__ep_recv(shoal_ep_t *ep, const void *buf, size_t len)
{
    void *copy = malloc(len ? len : 1);
    if (!copy) {
        shoal__ep_failed(ep, -ENOMEM, "out of memory receiving a %zu-byte message", len);
        return;
    }
    memcpy(copy, buf, len);
    struct shoal_qev *e = evq_push(ep->ctx);
    if (!e) {
        free(copy);
        return;
    }
    e->ev.type = SHOAL_EV_RECV;
    e->ev.ep = ep;
    e->ev.len = len;
    e->data = copy;
}

void shoal__ep_failed(shoal_ep_t *ep, int status, const char *fmt, ...)
{
    if (ep->state == SHOAL_EP_FAILED || ep->state == SHOAL_EP_CLOSING)
        return;
    bool was_connected = ep->state == SHOAL_EP_CONNECTED;
    ep->state = SHOAL_EP_FAILED;
    char reason[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    /* A connection the application never saw (handshake in progress) is
     * reported by the blocking call that waits for it, not as an event. */
    if (!was_connected || ep->listener)
        return;
    /* A peer that closed its end is normal at the end of a job: info, not
     * a warning; the event is the same. */
    if (status == -ECONNRESET)
        shoal__info(ep->ctx, "endpoint %s closed: %s", ep->peer, reason);
    else
        shoal__warn(ep->ctx, "endpoint %s failed: %s", ep->peer, reason);
    struct shoal_qev *e = evq_push(ep->ctx);
    if (!e)
        return;
    e->ev.type = SHOAL_EV_EP_FAILED;
    e->ev.status = status ? status : -ECONNRESET;
    e->ev.ep = ep;
    snprintf(e->reason, sizeof(e->reason), "%s", reason);
}

/*
 * Move up to max queued events into the batch and out to the caller.
 * Events of an endpoint still waiting for shoal_accept() stay queued (in
 * order) until it is accepted: the application cannot act on an endpoint
 * it has not been given yet, e.g. a message its peer sent right after
 * connecting.  So do those of an endpoint still CONNECTING: on verbs a
 * server's QP receives as soon as it is accepted by rdma_cm, and its CQ
 * (polled on every pass) can show a client's first message before the
 * rdma_cm ESTABLISHED event (read on every 32nd pass) has put the endpoint
 * on the listener's ready list; handed out then, the message would name
 * an endpoint the application has never seen.
 */
static int evq_take(shoal_ctx_t *ctx, shoal_event_t *evs, int max)
{
    struct shoal_evq *q = &ctx->evq;
    for (unsigned i = 0; i < q->batch_len; i++)
        free(q->batch[i].data);
    q->batch_len = 0;
    if (max <= 0 || q->count == 0)
        return 0;
    unsigned n = q->count < (unsigned)max ? q->count : (unsigned)max;
    if (n > q->batch_cap) {
        struct shoal_qev *b = realloc(q->batch, sizeof(*b) * n);
        if (!b)
            return shoal__fail(ctx, -ENOMEM, "poll: out of memory for %u events", n);
        q->batch = b;
        q->batch_cap = n;
    }
    unsigned taken = 0, kept = 0;
    const unsigned mask = q->cap - 1;
    for (unsigned i = 0; i < q->count; i++) {
        struct shoal_qev *e = &q->ring[(q->head + i) & mask];
        if (taken == n || (e->ev.ep && (e->ev.ep->listener ||
                                        e->ev.ep->state == SHOAL_EP_CONNECTING))) {
            if (kept != i)
                q->ring[(q->head + kept) & mask] = *e;
            kept++;
            continue;
        }
        struct shoal_qev *b = &q->batch[taken];
        *b = *e;
        b->ev.data = b->data;
        b->ev.reason = b->reason[0] ? b->reason : NULL;
        evs[taken++] = b->ev;
    }
    q->count = kept;
    q->batch_len = taken;
    return (int)taken;
}

/* shoal_poll() once its arguments are known good. */
static int poll_once(shoal_ctx_t *ctx, shoal_event_t *evs, int max)
{
    shoal__app_progressed(ctx);
    if (ctx->evq.count < (unsigned)max) {
        int rc = ctx->prov->progress(ctx);
        if (rc < 0)
            return rc;
    }
    return evq_take(ctx, evs, max);
}

int shoal_poll(shoal_ctx_t *ctx, shoal_event_t *evs, int max)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    int rc = !evs && max > 0 ? shoal__fail(ctx, -EINVAL, "poll: the event array is NULL")
                             : poll_once(ctx, evs, max);
    return shoal__leave(ctx, "poll", rc);
}

static long elapsed_ns(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0->tv_sec) * 1000000000L + (t.tv_nsec - t0->tv_nsec);
}

static int wait_events(shoal_ctx_t *ctx, shoal_event_t *evs, int max, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : shoal__now_ms() + (uint64_t)timeout_ms;
    struct timespec spin_start;
    clock_gettime(CLOCK_MONOTONIC, &spin_start);
    for (;;) {
        int n = poll_once(ctx, evs, max);
        if (n != 0)
            return n;
        uint64_t now = shoal__now_ms();
        if (now >= deadline)
            return 0;
        if (elapsed_ns(&spin_start) < ctx->spin_ns)
            continue;
        uint64_t left = deadline - now;
        int rc = shoal__sleep(ctx, left > 1000000 ? 1000000 : (int)left);
        if (rc < 0)
            return rc;
    }
}

int shoal__sleep(shoal_ctx_t *ctx, int timeout_ms)
{
    struct pollfd fds[SHOAL_WAIT_FDS];
    int n = ctx->prov->wait_fds(ctx, fds, &timeout_ms);
    if (n <= 0)
        return n; /* work is pending, or an error */
    if (poll(fds, (nfds_t)n, timeout_ms) < 0 && errno != EINTR)
        return shoal__fail(ctx, -errno, "poll on the %s provider's fds: %s", ctx->prov->name,
                           strerror(errno));
    if (ctx->prov->wait_done)
        ctx->prov->wait_done(ctx, fds, n);
    return 0;
}

int shoal_wait(shoal_ctx_t *ctx, shoal_event_t *evs, int max, int timeout_ms)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    int rc = !evs || max <= 0
                 ? shoal__fail(ctx, -EINVAL, "wait: %s", !evs ? "the event array is NULL"
                                                             : "max must be at least 1")
                 : wait_events(ctx, evs, max, timeout_ms);
    return shoal__leave(ctx, "wait", rc);
}
