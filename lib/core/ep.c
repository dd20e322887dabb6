/*
 * ep.c -- listeners, endpoints, and the checks every operation passes
 * before a provider sees it.
 *
 * The core checks what it can know locally (state, ranges, access granted
 * in the descriptor, queue depth) so that a bad request fails with a clear
 * error at the call, the same way on every transport, instead of as a
 * remote fault later.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core.h"

shoal_ep_t *shoal__ep_new(shoal_ctx_t *ctx)
{
    shoal_ep_t *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return NULL;
    ep->ctx = ctx;
    ep->state = SHOAL_EP_CONNECTING;
    ep->id = ctx->next_ep_id++;
    if (ctx->next_ep_id == 0)
        ctx->next_ep_id = 1;
    shoal__list_init(&ep->rmrs);
    shoal__list_add(&ctx->eps, &ep->node);
    snprintf(ep->peer, sizeof(ep->peer), "?");
    return ep;
}

void shoal__ep_connected(shoal_ep_t *ep)
{
    if (ep->state == SHOAL_EP_CONNECTING)
        ep->state = SHOAL_EP_CONNECTED;
}

static void ep_free(shoal_ep_t *ep)
{
    shoal_ctx_t *ctx = ep->ctx;
    ep->state = SHOAL_EP_CLOSING;
    while (!shoal__list_empty(&ep->rmrs))
        shoal__rmr_detach(shoal__container_of(ep->rmrs.next, shoal_rmr_t, node));
    ctx->prov->ep_close(ep);
    if (ep->outstanding)
        shoal__warn(ctx, "endpoint %s closed with %u operations the provider did not complete",
                    ep->peer, ep->outstanding);
    shoal__list_del(&ep->node);
    shoal__evq_drop_ep(ctx, ep);
    free(ep);
}

void shoal__ep_discard(shoal_ep_t *ep)
{
    ep_free(ep);
}

void shoal_ep_close(shoal_ep_t *ep)
{
    if (!ep)
        return;
    shoal_ctx_t *ctx = ep->ctx;
    shoal__lock(ctx);
    ep_free(ep);
    shoal__unlock(ctx);
}

void shoal_ep_abort(shoal_ep_t *ep)
{
    if (!ep)
        return;
    shoal_ctx_t *ctx = ep->ctx;
    shoal__lock(ctx);
    ep->abort = true;
    ep_free(ep);
    shoal__unlock(ctx);
}

const char *shoal_ep_peer(const shoal_ep_t *ep) { return ep->peer; }
void shoal_ep_set_user(shoal_ep_t *ep, void *user) { ep->user = user; }
void *shoal_ep_user(const shoal_ep_t *ep) { return ep->user; }

static int listen_on(shoal_ctx_t *ctx, const char *host, uint16_t port,
                     shoal_listener_t **l_p)
{
    if (!l_p)
        return shoal__fail(ctx, -EINVAL, "listen: the listener pointer (l_p) is NULL");
    shoal_listener_t *l = calloc(1, sizeof(*l));
    if (!l)
        return shoal__fail(ctx, -ENOMEM, "listen on %s:%u: out of memory", host ? host : "*",
                           port);
    l->ctx = ctx;
    shoal__list_init(&l->ready);
    int rc = ctx->prov->listen(l, host, port);
    if (rc) {
        free(l);
        return rc;
    }
    shoal__list_add(&ctx->listeners, &l->node);
    shoal__info(ctx, "listening on %s:%u (%s)", host ? host : "*", l->port,
                ctx->prov->name);
    *l_p = l;
    return 0;
}

int shoal_listen(shoal_ctx_t *ctx, const char *host, uint16_t port,
                 shoal_listener_t **l_p)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    return shoal__leave(ctx, "listen", listen_on(ctx, host, port, l_p));
}

uint16_t shoal_listener_port(const shoal_listener_t *l) { return l->port; }

void shoal__listener_ready(shoal_listener_t *l, shoal_ep_t *ep)
{
    /* Move the endpoint from the ctx list to the listener's ready list. */
    shoal__list_del(&ep->node);
    shoal__list_add(&l->ready, &ep->node);
    ep->listener = l;
}

void shoal_listener_close(shoal_listener_t *l)
{
    if (!l)
        return;
    shoal_ctx_t *ctx = l->ctx;
    shoal__lock(ctx);
    /* Handshaken but unaccepted peers are closed with the listener. */
    while (!shoal__list_empty(&l->ready)) {
        shoal_ep_t *ep = shoal__container_of(l->ready.next, shoal_ep_t, node);
        shoal__list_del(&ep->node);
        shoal__list_add(&ctx->eps, &ep->node);
        ep_free(ep);
    }
    ctx->prov->listener_close(l);
    shoal__list_del(&l->node);
    free(l);
    shoal__unlock(ctx);
}

static int accept_one(shoal_listener_t *l, int timeout_ms, shoal_ep_t **ep_p)
{
    shoal_ctx_t *ctx = l->ctx;
    if (!ep_p)
        return shoal__fail(ctx, -EINVAL, "accept: the endpoint pointer (ep_p) is NULL");
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : shoal__now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        shoal__app_progressed(ctx);
        int rc = ctx->prov->progress(ctx);
        if (rc < 0)
            return rc;
        while (!shoal__list_empty(&l->ready)) {
            shoal_ep_t *ep = shoal__container_of(l->ready.next, shoal_ep_t, node);
            shoal__list_del(&ep->node);
            shoal__list_add(&ctx->eps, &ep->node);
            ep->listener = NULL;
            if (ep->state != SHOAL_EP_CONNECTED) {
                /* Died between handshake and accept: nobody saw it. */
                ep_free(ep);
                continue;
            }
            shoal__info(ctx, "accepted %s", ep->peer);
            *ep_p = ep;
            return 0;
        }
        uint64_t now = shoal__now_ms();
        if (timeout_ms == 0) /* a poll, not a failure: nothing logged */
            return shoal__fail(ctx, -EAGAIN, "accept: no peer is waiting");
        if (now >= deadline)
            return shoal__fail(ctx, -ETIMEDOUT, "accept: no peer within %d ms", timeout_ms);
        uint64_t left = deadline - now;
        rc = shoal__sleep(ctx, left > 1000000 ? 1000000 : (int)left);
        if (rc < 0)
            return rc;
    }
}

int shoal_accept(shoal_listener_t *l, int timeout_ms, shoal_ep_t **ep_p)
{
    if (!l)
        return -EINVAL;
    shoal__enter(l->ctx);
    return shoal__leave(l->ctx, "accept", accept_one(l, timeout_ms, ep_p));
}

/* Make @ep's connection to @host:@port (the provider's connect, then the
 * state check); on failure the provider's state stays for the caller to
 * drop. */
static int dial(shoal_ep_t *ep, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = ep->ctx;
    snprintf(ep->peer, sizeof(ep->peer), "%s:%u", host, port);
    shoal__app_progressed(ctx);
    int rc = ctx->prov->connect(ep, host, port);
    if (rc == 0 && ep->state != SHOAL_EP_CONNECTED)
        rc = shoal__fail(ctx, -ECONNRESET, "connect to %s:%u: connection lost in handshake",
                         host, port);
    return rc;
}

/* Check shoal_connect*()'s arguments. */
static int check_dial_args(shoal_ctx_t *ctx, const char *host, uint16_t port,
                           shoal_ep_t **ep_p)
{
    if (!host)
        return shoal__fail(ctx, -EINVAL, "connect: the host is NULL");
    if (!ep_p)
        return shoal__fail(ctx, -EINVAL, "connect to %s:%u: the endpoint pointer (ep_p) is "
                           "NULL", host, port);
    if (port == 0)
        return shoal__fail(ctx, -EINVAL, "connect to %s: port 0 is not a destination", host);
    return 0;
}

/* shoal_connect() with its arguments checked. */
static int connect_once(shoal_ctx_t *ctx, const char *host, uint16_t port,
                        shoal_ep_t **ep_p)
{
    shoal_ep_t *ep = shoal__ep_new(ctx);
    if (!ep)
        return shoal__fail(ctx, -ENOMEM, "connect to %s:%u: out of memory", host, port);
    if (strlen(host) < sizeof(ep->dial_host)) {
        strcpy(ep->dial_host, host);
        ep->dial_port = port; /* shoal_ep_reconnect() may dial it again */
    }
    int rc = dial(ep, host, port);
    if (rc) {
        ep_free(ep);
        return rc;
    }
    shoal__info(ctx, "connected to %s", ep->peer);
    *ep_p = ep;
    return 0;
}

int shoal_connect(shoal_ctx_t *ctx, const char *host, uint16_t port,
                  shoal_ep_t **ep_p)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    int rc = check_dial_args(ctx, host, port, ep_p);
    if (rc == 0)
        rc = connect_once(ctx, host, port, ep_p);
    return shoal__leave(ctx, "connect", rc);
}

/* A connect failure that may pass if we wait and try again. */
static bool may_pass(int rc)
{
    return rc == -ECONNREFUSED || rc == -ETIMEDOUT || rc == -EHOSTUNREACH ||
           rc == -ENETUNREACH || rc == -ECONNRESET || rc == -ECONNABORTED ||
           rc == -ENOTCONN || rc == -EAGAIN;
}

static void sleep_ms(int ms)
{
    struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) && errno == EINTR)
        ;
}

/* Backoff between tries: 20 ms, doubling, at most 1 s. */
#define BACKOFF_FIRST_MS 20
#define BACKOFF_MAX_MS 1000

/* After a failed try (@rc) of connecting to @to: if the failure may pass
 * and the next try still fits before @deadline, wait *@wait ms, double it
 * (up to BACKOFF_MAX_MS) and say yes. */
static bool try_again(shoal_ctx_t *ctx, const char *to, int rc, uint64_t deadline, int *wait)
{
    if (!may_pass(rc) || shoal__now_ms() + (uint64_t)*wait > deadline)
        return false;
    shoal__debug(ctx, "connect to %s: %s; again in %d ms", to, shoal_strerror(rc), *wait);
    /* The progress thread, if any, may progress the context meanwhile. */
    shoal__unlock(ctx);
    sleep_ms(*wait);
    shoal__lock(ctx);
    *wait = *wait * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *wait * 2;
    return true;
}

static int connect_retry(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                         shoal_ep_t **ep_p)
{
    uint64_t deadline = shoal__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    char to[128];
    snprintf(to, sizeof(to), "%s:%u", host, port);
    int wait = BACKOFF_FIRST_MS, tries = 0;
    for (;;) {
        int rc = connect_once(ctx, host, port, ep_p);
        tries++;
        if (rc == 0)
            return 0;
        if (!try_again(ctx, to, rc, deadline, &wait)) {
            if (tries > 1)
                shoal__info(ctx, "connect to %s: giving up after %d tries", to, tries);
            return rc;
        }
    }
}

int shoal_connect_retry(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                        shoal_ep_t **ep_p)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    int rc = check_dial_args(ctx, host, port, ep_p);
    if (rc == 0)
        rc = connect_retry(ctx, host, port, timeout_ms, ep_p);
    return shoal__leave(ctx, "connect", rc);
}

/* Drop @ep's connection as shoal_ep_abort() would, but keep the handle:
 * its operations in flight complete with an error (their events stay
 * queued), its remote regions are detached, and it can dial again.  A
 * queued EP_FAILED (of the connection just dropped) goes. */
static void drop_connection(shoal_ep_t *ep)
{
    shoal_ctx_t *ctx = ep->ctx;
    ep->state = SHOAL_EP_CLOSING;
    while (!shoal__list_empty(&ep->rmrs))
        shoal__rmr_detach(shoal__container_of(ep->rmrs.next, shoal_rmr_t, node));
    ep->abort = true;
    ctx->prov->ep_close(ep);
    ep->abort = false;
    ep->priv = NULL;
    if (ep->outstanding) {
        shoal__warn(ctx, "endpoint %s: %u operations the provider did not complete",
                    ep->peer, ep->outstanding);
        ep->outstanding = 0;
    }
    shoal__evq_drop_ep_type(ctx, ep, SHOAL_EV_EP_FAILED);
    memset(&ep->hs, 0, sizeof(ep->hs));
    ep->state = SHOAL_EP_CONNECTING;
}

static int reconnect(shoal_ep_t *ep, int timeout_ms)
{
    shoal_ctx_t *ctx = ep->ctx;
    if (!ep->dial_port || ep->listener)
        return shoal__fail(ctx, -EINVAL, "reconnect %s: only an endpoint this side connected "
                           "(shoal_connect) can be reconnected", ep->peer);
    uint64_t deadline = shoal__now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    int wait = BACKOFF_FIRST_MS, tries = 0, rc;
    drop_connection(ep);
    for (;;) {
        rc = dial(ep, ep->dial_host, ep->dial_port);
        tries++;
        if (rc == 0) {
            shoal__info(ctx, "reconnected to %s (%d tr%s)", ep->peer, tries,
                        tries == 1 ? "y" : "ies");
            return 0;
        }
        drop_connection(ep); /* what the failed try left */
        if (!try_again(ctx, ep->peer, rc, deadline, &wait))
            break;
    }
    ep->state = SHOAL_EP_FAILED;
    return rc;
}

int shoal_ep_reconnect(shoal_ep_t *ep, int timeout_ms)
{
    if (!ep)
        return -EINVAL;
    shoal__enter(ep->ctx);
    return shoal__leave(ep->ctx, "reconnect", reconnect(ep, timeout_ms));
}

/* Room for one more operation on @ep?  -EAGAIN (back-pressure: poll and
 * retry) at SHOAL_QUEUE_DEPTH outstanding. */
static int queue_room(shoal_ep_t *ep, const char *what)
{
    shoal_ctx_t *ctx = ep->ctx;
    if (ep->outstanding < (unsigned)ctx->cfg.queue_depth)
        return 0;
    return shoal__fail(ctx, -EAGAIN, "%s: %u operations outstanding on %s (SHOAL_QUEUE_DEPTH); "
                       "poll for completions and retry", what, ep->outstanding, ep->peer);
}

/* Checks common to put and get; returns 0 or a negative errno. */
static int check_rma(shoal_ep_t *ep, const shoal_mr_t *lmr, size_t loff,
                     const shoal_rmr_t *rmr, size_t roff, size_t len,
                     unsigned need, const char *what)
{
    shoal_ctx_t *ctx = ep->ctx;
    if (ep->state != SHOAL_EP_CONNECTED)
        return shoal__fail(ctx, -ENOTCONN, "%s: endpoint %s is not connected", what, ep->peer);
    if (rmr->ep != ep)
        return shoal__fail(ctx, -EINVAL, "%s: remote region belongs to another endpoint", what);
    if (lmr->ctx != ctx)
        return shoal__fail(ctx, -EINVAL, "%s: local region belongs to another context", what);
    if (len == 0)
        return shoal__fail(ctx, -EINVAL, "%s: zero length", what);
    if (loff > lmr->len || len > lmr->len - loff)
        return shoal__fail(ctx, -ERANGE, "%s: local range [%zu, +%zu) outside region of %zu bytes",
                           what, loff, len, lmr->len);
    if (roff > rmr->len || len > rmr->len - roff)
        return shoal__fail(ctx, -ERANGE,
                           "%s: remote range [%zu, +%zu) outside region of %llu bytes",
                           what, roff, len, (unsigned long long)rmr->len);
    if ((rmr->access & need) != need)
        return shoal__fail(ctx, -EACCES, "%s: remote region not registered for remote %s",
                           what, need == SHOAL_ACCESS_REMOTE_WRITE ? "write" : "read");
    return queue_room(ep, what);
}

static struct shoal_op *start_op(shoal_ep_t *ep, enum shoal_op_kind kind,
                                 size_t len, uint64_t wr_id)
{
    struct shoal_op *op = shoal__op_get(ep->ctx);
    if (!op)
        return NULL;
    op->kind = kind;
    op->ep = ep;
    op->len = len;
    op->wr_id = wr_id;
    op->pending = 1;
    ep->outstanding++;
    return op;
}

/* The provider refused to start @op: undo start_op. */
static int abort_op(shoal_ep_t *ep, struct shoal_op *op, int rc)
{
    ep->outstanding--;
    shoal__op_put(ep->ctx, op);
    return rc;
}

static int put(shoal_ep_t *ep, shoal_mr_t *lmr, size_t loff, shoal_rmr_t *rmr, size_t roff,
               size_t len, unsigned flags, uint32_t imm, uint64_t wr_id)
{
    if (!lmr || !rmr)
        return shoal__fail(ep->ctx, -EINVAL, "put: the %s region is NULL",
                           lmr ? "remote" : "local");
    if (flags & ~(unsigned)SHOAL_PUT_IMM)
        return shoal__fail(ep->ctx, -EINVAL, "put: unknown flags 0x%x", flags);
    int rc = check_rma(ep, lmr, loff, rmr, roff, len, SHOAL_ACCESS_REMOTE_WRITE, "put");
    if (rc)
        return rc;
    struct shoal_op *op = start_op(ep, SHOAL_OP_PUT, len, wr_id);
    if (!op)
        return shoal__fail(ep->ctx, -ENOMEM, "put: out of memory");
    rc = ep->ctx->prov->put(ep, op, lmr, loff, rmr, roff, len, flags, imm);
    return rc ? abort_op(ep, op, rc) : 0;
}

int shoal_put(shoal_ep_t *ep, shoal_mr_t *lmr, size_t loff, shoal_rmr_t *rmr,
              size_t roff, size_t len, unsigned flags, uint32_t imm,
              uint64_t wr_id)
{
    if (!ep)
        return -EINVAL;
    shoal__enter(ep->ctx);
    return shoal__leave(ep->ctx, "put", put(ep, lmr, loff, rmr, roff, len, flags, imm, wr_id));
}

static int get(shoal_ep_t *ep, shoal_mr_t *lmr, size_t loff, shoal_rmr_t *rmr, size_t roff,
               size_t len, uint64_t wr_id)
{
    if (!lmr || !rmr)
        return shoal__fail(ep->ctx, -EINVAL, "get: the %s region is NULL",
                           lmr ? "remote" : "local");
    int rc = check_rma(ep, lmr, loff, rmr, roff, len, SHOAL_ACCESS_REMOTE_READ, "get");
    if (rc)
        return rc;
    struct shoal_op *op = start_op(ep, SHOAL_OP_GET, len, wr_id);
    if (!op)
        return shoal__fail(ep->ctx, -ENOMEM, "get: out of memory");
    rc = ep->ctx->prov->get(ep, op, lmr, loff, rmr, roff, len);
    return rc ? abort_op(ep, op, rc) : 0;
}

int shoal_get(shoal_ep_t *ep, shoal_mr_t *lmr, size_t loff, shoal_rmr_t *rmr,
              size_t roff, size_t len, uint64_t wr_id)
{
    if (!ep)
        return -EINVAL;
    shoal__enter(ep->ctx);
    return shoal__leave(ep->ctx, "get", get(ep, lmr, loff, rmr, roff, len, wr_id));
}

static int send_msg(shoal_ep_t *ep, const void *buf, size_t len, uint64_t wr_id)
{
    shoal_ctx_t *ctx = ep->ctx;
    if (!buf && len)
        return shoal__fail(ctx, -EINVAL, "send: the buffer is NULL (length %zu)", len);
    if (len > SHOAL_MSG_MAX)
        return shoal__fail(ctx, -EMSGSIZE, "send: %zu bytes, at most %d", len, SHOAL_MSG_MAX);
    if (ep->state != SHOAL_EP_CONNECTED)
        return shoal__fail(ctx, -ENOTCONN, "send: endpoint %s is not connected", ep->peer);
    int rc = queue_room(ep, "send");
    if (rc)
        return rc;
    struct shoal_op *op = start_op(ep, SHOAL_OP_SEND, len, wr_id);
    if (!op)
        return shoal__fail(ctx, -ENOMEM, "send: out of memory");
    rc = ctx->prov->send(ep, op, buf, len);
    return rc ? abort_op(ep, op, rc) : 0;
}

int shoal_send(shoal_ep_t *ep, const void *buf, size_t len, uint64_t wr_id)
{
    if (!ep)
        return -EINVAL;
    shoal__enter(ep->ctx);
    return shoal__leave(ep->ctx, "send", send_msg(ep, buf, len, wr_id));
}
