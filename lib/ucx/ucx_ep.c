/*
 * ucx_ep.c -- UCX endpoints: the token table, the UCP endpoints made from
 * the peer's worker address once the bootstrap handshake is done
 * (ucx_boot.c), the BIND message that ties each side's token to the UCP
 * connection it arrives on, active-message dispatch, failure and close.
 *
 * Setting up.  When the handshake's addresses are exchanged, the client
 * makes its UCP endpoint from the server's address (peer error handling
 * on) and sends BIND (the server's token and cookie) as its first message;
 * the server makes its endpoint from the client's address when that BIND
 * arrives, and sends its own BIND; the client's connect() returns when the
 * server's BIND arrives.  UCP normally pairs the two endpoints into one
 * connection (its ep matching); a BIND that arrives on another UCP
 * endpoint than ours (they were not paired) binds that one too: it gets
 * our error handler and is closed with ours.  A server endpoint not ready
 * within the connect timeout is dropped.
 *
 * Closing.  A healthy endpoint sends CLOSE, is flushed, then force-closed:
 * UCX keeps an address-made endpoint with a remote connection alive until
 * the worker is destroyed when it is closed gracefully, and whether the
 * peer's endpoint then fails is up to the transport; CLOSE, ordered after
 * everything sent before it, tells the peer for sure: its endpoint fails
 * with -ECONNRESET ("the peer closed the connection"), SHOAL_EV_EP_FAILED.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ucx_int.h"

int ucx_status_errno(ucs_status_t st)
{
    switch (st) {
    case UCS_OK: return 0;
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED: return -ECONNREFUSED;
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_ENDPOINT_TIMEOUT: return -ECONNRESET;
    case UCS_ERR_TIMED_OUT: return -ETIMEDOUT;
    case UCS_ERR_CANCELED: return -ECANCELED;
    case UCS_ERR_NO_MEMORY: return -ENOMEM;
    case UCS_ERR_INVALID_PARAM: return -EINVAL;
    case UCS_ERR_MESSAGE_TRUNCATED: return -EMSGSIZE;
    default: return -EIO;
    }
}

/* ---- token table ---------------------------------------------------- */

static int slot_alloc(struct ucx_ctx *u, shoal_ep_t *ep, uint32_t *token)
{
    unsigned i;
    for (i = 0; i < u->nslots; i++)
        if (!u->slots[i])
            break;
    if (i == u->nslots) {
        if (u->nslots >= 65536)
            return -EMFILE;
        unsigned n = u->nslots ? u->nslots * 2 : 16;
        shoal_ep_t **s = realloc(u->slots, n * sizeof(*s));
        if (!s)
            return -ENOMEM;
        memset(s + u->nslots, 0, (n - u->nslots) * sizeof(*s));
        u->slots = s;
        u->nslots = n;
    }
    u->slots[i] = ep;
    *token = i | ((uint32_t)++u->gen << 16);
    return 0;
}

/* The endpoint a message names, if it arrived on that endpoint's
 * connection; NULL (and a warning) otherwise. */
shoal_ep_t *ucx_ep_lookup(shoal_ctx_t *ctx, uint32_t token,
                          const ucp_am_recv_param_t *param, const char *what)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    unsigned slot = token & 0xffff;
    shoal_ep_t *ep = slot < u->nslots ? u->slots[slot] : NULL;
    if (!ep || ucx_ep(ep)->token != token) {
        shoal__refusal(ctx, "ucx: %s for unknown endpoint token 0x%08x dropped", what, token);
        return NULL;
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) || !ucx_ep(ep)->rx_ep ||
        param->reply_ep != ucx_ep(ep)->rx_ep) {
        shoal__refusal(ctx, "ucx: %s naming endpoint %s came from another connection; "
                       "dropped", what, ep->peer);
        return NULL;
    }
    return ep;
}

/* ---- sending a control active message -------------------------------- */

static void am_free_cb(void *request, ucs_status_t status, void *user_data)
{
    (void)status;
    if (request)
        ucp_request_free(request);
    free(user_data);
}

/* Send a header-only active message (BIND, CLOSE, GET request); the
 * header is copied. */
int ucx_am_send_hdr(shoal_ep_t *ep, unsigned id, const void *hdr, size_t hlen)
{
    void *copy = malloc(hlen);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, hdr, hlen);
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                        UCP_OP_ATTR_FIELD_FLAGS,
        .cb.send = am_free_cb,
        .user_data = copy,
        .flags = UCP_AM_SEND_FLAG_REPLY,
    };
    ucs_status_ptr_t r = ucp_am_send_nbx(ucx_ep(ep)->uep, id, copy, hlen, NULL, 0, &p);
    if (r == NULL) {
        free(copy);
        return 0;
    }
    if (UCS_PTR_IS_ERR(r)) {
        free(copy);
        return ucx_status_errno(UCS_PTR_STATUS(r));
    }
    return 0; /* am_free_cb frees the request and the copy */
}

/* ---- failure ---------------------------------------------------------- */

static void ep_err_cb(void *arg, ucp_ep_h uep, ucs_status_t status)
{
    (void)uep;
    shoal_ep_t *ep = arg;
    struct ucx_ep *e = ucx_ep(ep);
    if (!e->fail_status)
        e->fail_status = status;
    if (e->listener) {
        /* Server side, still in handshake: nobody knows it; discard it
         * once we are out of UCX's progress loop. */
        shoal__ep_failed(ep, ucx_status_errno(status), "%s", ucs_status_string(status));
        ucx_ctx(ep->ctx)->sweep = true;
        return;
    }
    ucx_fail_gets(ep, ucx_status_errno(status), ucs_status_string(status));
    shoal__ep_failed(ep, ucx_status_errno(status), "%s", ucs_status_string(status));
    /* UCX does not promise to finish the requests of a failed endpoint
     * until it is closed: force-close it as soon as we are out of its
     * progress loop, so every outstanding op completes now.  (Unless it
     * is being closed already: this call comes from inside that close.) */
    if (ep->state != SHOAL_EP_CLOSING && shoal__list_empty(&e->fnode)) {
        shoal__list_add(&ucx_ctx(ep->ctx)->failed, &e->fnode);
        ucx_ctx(ep->ctx)->sweep = true;
    }
}

/* A peer broke the protocol on @ep (e.g. wrote where it may not): report
 * the endpoint failed here and drop the connection, so the peer learns it
 * too (its endpoint fails with a reset) instead of waiting forever. */
void ucx_ep_abort(shoal_ep_t *ep, int status, const char *why)
{
    struct ucx_ep *e = ucx_ep(ep);
    shoal__ep_failed(ep, status, "%s", why);
    if (!e->fail_status)
        e->fail_status = UCS_ERR_CONNECTION_RESET;
    if (e->uep && shoal__list_empty(&e->fnode)) {
        shoal__list_add(&ucx_ctx(ep->ctx)->failed, &e->fnode);
        ucx_ctx(ep->ctx)->sweep = true;
    }
}

/* ---- active message handlers ----------------------------------------- */

/* BIND: the peer's first message on the UCP connection our handshake set
 * up.  Its cookie (ours, given to the peer over the authenticated
 * handshake) proves which connection is that one; the rest is done after
 * progress (finish_bound). */
static ucs_status_t am_bind(void *arg, const void *header, size_t hlen, void *data,
                            size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    struct ucx_ctx *u = ucx_ctx(ctx);
    (void)data;
    if (hlen != UCX_BIND_HDR || len != 0 ||
        !(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP)) {
        shoal__refusal(ctx, "ucx: malformed BIND message (%zu+%zu bytes) dropped", hlen, len);
        return UCS_OK;
    }
    const uint8_t *h = header;
    uint32_t token = shoal__get_le32(h);
    unsigned slot = token & 0xffff;
    shoal_ep_t *ep = slot < u->nslots ? u->slots[slot] : NULL;
    struct ucx_ep *e = ep ? ucx_ep(ep) : NULL;
    if (!e || e->token != token || ep->state != SHOAL_EP_CONNECTING || e->rx_ep) {
        shoal__refusal(ctx, "ucx: BIND for %s endpoint token 0x%08x dropped",
                       !e || e->token != token ? "unknown" : "a bound", token);
        return UCS_OK;
    }
    if (shoal__get_le64(h + 4) != e->cookie) {
        shoal__refusal(ctx, "ucx: BIND for %s with the wrong cookie dropped (not the peer "
                       "that did the handshake)", ep->peer);
        return UCS_OK;
    }
    e->rx_ep = param->reply_ep;
    /* A client is connected now: the server's messages may follow in this
     * very progress call. */
    if (!e->listener)
        shoal__ep_connected(ep);
    shoal__list_add(&u->bound, &e->bnode);
    u->sweep = true;
    return UCS_OK;
}

/* CLOSE: the peer closed its end (the last message it sends).  Report it
 * now rather than wait for the transport to notice the connection is
 * gone, and force-close ours so what is still in flight completes. */
static ucs_status_t am_close(void *arg, const void *header, size_t hlen, void *data,
                             size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    (void)data;
    if (hlen != UCX_CLOSE_HDR || len != 0) {
        shoal__refusal(ctx, "ucx: malformed CLOSE message (%zu+%zu bytes) dropped", hlen, len);
        return UCS_OK;
    }
    shoal_ep_t *ep = ucx_ep_lookup(ctx, shoal__get_le32(header), param, "CLOSE");
    if (!ep || ep->state != SHOAL_EP_CONNECTED)
        return UCS_OK;
    struct ucx_ep *e = ucx_ep(ep);
    ucx_fail_gets(ep, -ECONNRESET, "the peer closed the connection");
    shoal__ep_failed(ep, -ECONNRESET, "the peer closed the connection");
    if (!e->fail_status)
        e->fail_status = UCS_ERR_CONNECTION_RESET;
    if (shoal__list_empty(&e->fnode)) {
        shoal__list_add(&ucx_ctx(ctx)->failed, &e->fnode);
        ucx_ctx(ctx)->sweep = true;
    }
    return UCS_OK;
}

static ucs_status_t am_imm(void *arg, const void *header, size_t hlen, void *data,
                           size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    (void)data;
    if (hlen != UCX_IMM_HDR || len != 0) {
        shoal__warn(ctx, "ucx: malformed IMM message (%zu+%zu bytes) dropped", hlen, len);
        return UCS_OK;
    }
    const uint8_t *h = header;
    shoal_ep_t *ep = ucx_ep_lookup(ctx, shoal__get_le32(h), param, "IMM");
    if (ep && ep->state == SHOAL_EP_CONNECTED) {
        shoal__ep_imm(ep, shoal__get_le32(h + 4));
        ucx_ctx(ctx)->arrived = true;
    }
    return UCS_OK;
}

static ucs_status_t am_msg(void *arg, const void *header, size_t hlen, void *data,
                           size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    if (hlen != UCX_MSG_HDR) {
        shoal__warn(ctx, "ucx: malformed control message header (%zu bytes) dropped", hlen);
        return UCS_OK;
    }
    shoal_ep_t *ep = ucx_ep_lookup(ctx, shoal__get_le32(header), param, "message");
    if (!ep || ep->state != SHOAL_EP_CONNECTED)
        return UCS_OK;
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV || len > SHOAL_MSG_MAX) {
        /* A shoal peer never sends these: it is broken or hostile. */
        shoal__ep_failed(ep, -EPROTO, "peer sent a %zu-byte control message (max %d)", len,
                         SHOAL_MSG_MAX);
        return UCS_OK;
    }
    shoal__ep_recv(ep, data, len);
    ucx_ctx(ctx)->arrived = true;
    return UCS_OK;
}

int ucx_am_init(shoal_ctx_t *ctx)
{
    static const ucp_am_recv_callback_t cbs[UCX_AM_COUNT] = {
        [UCX_AM_BIND] = am_bind, [UCX_AM_CLOSE] = am_close,
        [UCX_AM_IMM] = am_imm, [UCX_AM_MSG] = am_msg,
        [UCX_AM_GET_REQ] = ucx_am_get_req, [UCX_AM_GET_RESP] = ucx_am_get_resp,
        [UCX_AM_PUT_IMM] = ucx_am_put_imm, [UCX_AM_PUT] = ucx_am_put};
    for (unsigned id = 0; id < UCX_AM_COUNT; id++) {
        ucp_am_handler_param_t p = {
            .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                          UCP_AM_HANDLER_PARAM_FIELD_ARG | UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
            .id = id,
            .cb = cbs[id],
            .arg = ctx,
            .flags = UCP_AM_FLAG_WHOLE_MSG,
        };
        ucs_status_t st = ucp_worker_set_am_recv_handler(ucx_ctx(ctx)->worker, &p);
        if (st != UCS_OK)
            return -EIO;
    }
    return 0;
}

/* ---- endpoints -------------------------------------------------------- */

int ucx_ep_priv_new(shoal_ep_t *ep)
{
    struct ucx_ep *e = calloc(1, sizeof(*e));
    if (!e)
        return shoal__fail(ep->ctx, -ENOMEM, "ucx: out of memory for an endpoint");
    shoal__list_init(&e->pnode);
    shoal__list_init(&e->fnode);
    shoal__list_init(&e->bnode);
    if (getrandom(&e->cookie, sizeof(e->cookie), 0) != (ssize_t)sizeof(e->cookie)) {
        free(e);
        return shoal__fail(ep->ctx, -EIO, "ucx: getrandom: %s", strerror(errno));
    }
    int rc = slot_alloc(ucx_ctx(ep->ctx), ep, &e->token);
    if (rc) {
        free(e);
        return shoal__fail(ep->ctx, rc, "ucx: %s", rc == -EMFILE
                           ? "65536 endpoints open, the most one context can have"
                           : "out of memory for an endpoint");
    }
    ep->priv = e;
    return 0;
}

void ucx_pending_add(shoal_ep_t *ep, shoal_listener_t *l)
{
    struct ucx_ctx *u = ucx_ctx(ep->ctx);
    struct ucx_ep *e = ucx_ep(ep);
    e->listener = l;
    e->deadline = shoal__now_ms() + (uint64_t)ep->ctx->cfg.connect_timeout_ms;
    shoal__list_add(&u->pending, &e->pnode); /* at the tail: oldest first */
    u->npending++;
}

static void pending_del(struct ucx_ctx *u, struct ucx_ep *e)
{
    if (shoal__list_empty(&e->pnode))
        return;
    shoal__list_del(&e->pnode);
    u->npending--;
}

/* Make e->uep from the peer's worker address. */
static int uep_create(shoal_ep_t *ep, const uint8_t *addr, size_t len)
{
    struct ucx_ep *e = ucx_ep(ep);
    (void)len; /* UCX reads its own length from the address */
    ucp_ep_params_t p = {
        .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        .address = (const ucp_address_t *)addr,
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = ep_err_cb, .arg = ep},
    };
    ucs_status_t st = ucp_ep_create(ucx_ctx(ep->ctx)->worker, &p, &e->uep);
    if (st != UCS_OK) {
        e->uep = NULL;
        return shoal__fail(ep->ctx, ucx_status_errno(st), "ucp_ep_create from %s's address: %s",
                           ep->peer, ucs_status_string(st));
    }
    return 0;
}

static int send_bind(shoal_ep_t *ep)
{
    struct ucx_ep *e = ucx_ep(ep);
    uint8_t hdr[UCX_BIND_HDR];
    shoal__put_le32(hdr, e->peer_token);
    shoal__put_le64(hdr + 4, e->peer_cookie);
    int rc = ucx_am_send_hdr(ep, UCX_AM_BIND, hdr, sizeof(hdr));
    if (rc)
        return shoal__fail(ep->ctx, rc, "sending BIND to %s: %s", ep->peer, shoal_strerror(rc));
    return 0;
}

void ucx_boot_done(shoal_ep_t *ep, struct shoal_boot *b)
{
    struct ucx_ep *e = ucx_ep(ep);
    e->peer_token = ep->hs.peer_id;
    e->peer_cookie = b->peer_cookie;
    if (e->listener) {
        /* Server: make our endpoint when the client's BIND shows its own. */
        e->peer_addr = b->peer_addr;
        e->peer_addrlen = b->peer_addrlen;
        b->peer_addr = NULL;
        return;
    }
    int rc = uep_create(ep, b->peer_addr, b->peer_addrlen);
    if (rc == 0)
        rc = send_bind(ep);
    if (rc) {
        e->hs_err = rc;
        snprintf(e->hs_why, sizeof(e->hs_why), "%s", shoal__last_error(ep->ctx));
    }
}

/* The peer's BIND came on e->rx_ep: if UCP did not pair it with our own
 * endpoint, that one carries the peer's traffic: it gets our error
 * handler (a dead peer is reported through either) and is closed with
 * ours. */
static void adopt_rx(shoal_ep_t *ep)
{
    struct ucx_ep *e = ucx_ep(ep);
    if (e->rx_ep == e->uep)
        return;
    shoal__debug(ep->ctx, "ucx: %s: UCP did not pair the two endpoints; using both", ep->peer);
    ucp_ep_params_t p = {.field_mask = UCP_EP_PARAM_FIELD_ERR_HANDLER,
                         .err_handler = {.cb = ep_err_cb, .arg = ep}};
    ucs_status_ptr_t r = ucp_ep_modify_nb(e->rx_ep, &p);
    if (UCS_PTR_IS_PTR(r)) {
        while (ucp_request_check_status(r) == UCS_INPROGRESS)
            ucp_worker_progress(ucx_ctx(ep->ctx)->worker);
        ucp_request_free(r);
    } else if (UCS_PTR_IS_ERR(r)) {
        shoal__warn(ep->ctx, "ucx: %s: cannot watch its connection for failures: %s", ep->peer,
                    ucs_status_string(UCS_PTR_STATUS(r)));
    }
}

/* After progress: finish the endpoints whose peer's BIND arrived. */
static void finish_bound(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    while (!shoal__list_empty(&u->bound)) {
        struct ucx_ep *e = shoal__container_of(u->bound.next, struct ucx_ep, bnode);
        shoal__list_del(&e->bnode);
        shoal_ep_t *ep = u->slots[e->token & 0xffff];
        ucx_boot_free(ep); /* its socket is closed already */
        if (!e->listener) { /* client: connected in am_bind */
            if (ep->state == SHOAL_EP_CONNECTED)
                adopt_rx(ep);
            continue;
        }
        if (ep->state != SHOAL_EP_CONNECTING)
            continue;
        int rc = uep_create(ep, e->peer_addr, e->peer_addrlen);
        free(e->peer_addr);
        e->peer_addr = NULL;
        if (rc == 0)
            rc = send_bind(ep);
        if (rc) {
            shoal__refusal(ctx, "ucx: connection from %s: %s; dropped", ep->peer,
                           shoal__last_error(ctx));
            shoal__ep_failed(ep, rc, "%s", shoal__last_error(ctx));
            u->sweep = true;
            continue;
        }
        adopt_rx(ep);
        shoal_listener_t *l = e->listener;
        pending_del(u, e);
        e->listener = NULL;
        shoal__ep_connected(ep);
        shoal__listener_ready(l, ep);
    }
}

int ucx_connect(shoal_ep_t *ep, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = shoal__resolve(ctx, host, port, false, &ss, &sl);
    if (rc == 0)
        rc = ucx_ep_priv_new(ep);
    if (rc == 0)
        rc = ucx_boot_connect(ep, &ss, sl);
    if (rc)
        return rc;
    struct ucx_ep *e = ucx_ep(ep);
    uint64_t deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    while (ep->state == SHOAL_EP_CONNECTING && !e->hs_err) {
        ctx->prov->progress(ctx);
        if (ep->state != SHOAL_EP_CONNECTING || e->hs_err)
            break;
        uint64_t now = shoal__now_ms();
        if (now >= deadline)
            return shoal__fail(ctx, -ETIMEDOUT, "connect to %s:%u: %s within %d ms", host, port,
                               e->boot ? "no answer" : "the connection was not set up",
                               ctx->cfg.connect_timeout_ms);
        shoal__sleep(ctx, (int)(deadline - now));
    }
    if (e->hs_err)
        return shoal__fail(ctx, e->hs_err, "connect to %s:%u: %s", host, port, e->hs_why);
    if (ep->state != SHOAL_EP_CONNECTED) {
        int err = ucx_status_errno(e->fail_status);
        return shoal__fail(ctx, err ? err : -ECONNRESET, "connect to %s:%u: %s", host, port,
                           e->fail_status ? ucs_status_string(e->fail_status)
                                          : "connection lost while it was set up");
    }
    return 0;
}

static void uep_close(shoal_ctx_t *ctx, ucp_ep_h uep, const char *peer, bool force);

void ucx_sweep_pending(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    u->sweep = false;
    finish_bound(ctx);
    while (!shoal__list_empty(&u->failed)) {
        struct ucx_ep *e = shoal__container_of(u->failed.next, struct ucx_ep, fnode);
        shoal__list_del(&e->fnode);
        shoal_ep_t *ep = u->slots[e->token & 0xffff];
        if (e->rx_ep && e->rx_ep != e->uep)
            uep_close(ctx, e->rx_ep, ep->peer, true);
        e->rx_ep = NULL;
        if (e->uep)
            uep_close(ctx, e->uep, ep->peer, true);
        e->uep = NULL;
    }
    /* Pending server endpoints that failed (in their handshake, or
     * dropped for room) go; so do those past their deadline. */
    struct shoal_list *n = u->pending.next;
    while (n != &u->pending) {
        struct ucx_ep *e = shoal__container_of(n, struct ucx_ep, pnode);
        n = n->next;
        shoal_ep_t *ep = u->slots[e->token & 0xffff];
        if (ep->state == SHOAL_EP_FAILED || ep->state == SHOAL_EP_CLOSING)
            shoal__ep_discard(ep);
    }
    ucx_expire_pending(ctx);
}

/* Drop the pending endpoints past their deadline: the oldest only need
 * looking at. */
void ucx_expire_pending(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    uint64_t now = shoal__now_ms();
    while (!shoal__list_empty(&u->pending)) {
        struct ucx_ep *e = shoal__container_of(u->pending.next, struct ucx_ep, pnode);
        shoal_ep_t *ep = u->slots[e->token & 0xffff];
        if (now < e->deadline && ep->state == SHOAL_EP_CONNECTING)
            return;
        if (ep->state == SHOAL_EP_CONNECTING) {
            shoal__refusal(ctx, "ucx: connection from %s: handshake not finished within %d ms; "
                           "dropped", ep->peer, ctx->cfg.connect_timeout_ms);
            shoal__ep_failed(ep, -ETIMEDOUT, "handshake timed out");
        }
        shoal__ep_discard(ep);
    }
}

/* The earliest pending deadline (ms), or UINT64_MAX. */
uint64_t ucx_pending_deadline(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    if (shoal__list_empty(&u->pending))
        return UINT64_MAX;
    return shoal__container_of(u->pending.next, struct ucx_ep, pnode)->deadline;
}

/* Wait (bounded) for request @r of a close or flush to finish.  Must not
 * run inside ucp_worker_progress.  False if it had to be abandoned. */
static bool wait_request(shoal_ctx_t *ctx, ucs_status_ptr_t r, const char *what,
                         const char *peer)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    if (!r || UCS_PTR_IS_ERR(r))
        return true;
    uint64_t deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    bool canceled = false, ok = true;
    while (ucp_request_check_status(r) == UCS_INPROGRESS) {
        ucp_worker_progress(u->worker);
        if (shoal__now_ms() <= deadline)
            continue;
        if (canceled) {
            shoal__warn(ctx, "ucx: %s of %s is stuck; abandoning it", what, peer);
            ok = false;
            break;
        }
        shoal__warn(ctx, "ucx: %s of %s did not finish in %d ms; canceling", what, peer,
                    ctx->cfg.connect_timeout_ms);
        ucp_request_cancel(u->worker, r);
        canceled = true;
        deadline = shoal__now_ms() + 1000;
    }
    ucp_request_free(r);
    return ok;
}

/* Close one UCP endpoint: unless @force, flush it first (outstanding
 * operations finish), then force-close it, which releases it now and
 * resets the connection (see the top of this file); UCX calls back every
 * request on it meanwhile. */
static void uep_close(shoal_ctx_t *ctx, ucp_ep_h uep, const char *peer, bool force)
{
    if (!force) {
        ucp_request_param_t fp = {.op_attr_mask = 0};
        wait_request(ctx, ucp_ep_flush_nbx(uep, &fp), "flush", peer);
    }
    ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                             .flags = UCP_EP_CLOSE_FLAG_FORCE};
    wait_request(ctx, ucp_ep_close_nbx(uep, &p), "close", peer);
}

void ucx_ep_close(shoal_ep_t *ep)
{
    struct ucx_ctx *u = ucx_ctx(ep->ctx);
    struct ucx_ep *e = ucx_ep(ep);
    if (!e)
        return;
    pending_del(u, e);
    shoal__list_del(&e->fnode);
    shoal__list_del(&e->bnode);
    ucx_boot_free(ep);
    ucx_fail_gets(ep, -ECANCELED, "endpoint closed");
    /* A healthy endpoint tells the peer (CLOSE) and is flushed
     * (outstanding ops finish); a failed one is forced (they complete as
     * canceled). */
    bool force = e->fail_status != UCS_OK || ep->abort;
    if (e->uep && e->rx_ep && e->fail_status == UCS_OK) {
        uint8_t hdr[UCX_CLOSE_HDR];
        shoal__put_le32(hdr, e->peer_token);
        (void)ucx_am_send_hdr(ep, UCX_AM_CLOSE, hdr, sizeof(hdr));
    }
    if (e->uep)
        uep_close(ep->ctx, e->uep, ep->peer, force);
    if (e->rx_ep && e->rx_ep != e->uep)
        uep_close(ep->ctx, e->rx_ep, ep->peer, true);
    e->uep = e->rx_ep = NULL;
    /* Closing progressed the worker: callbacks may have listed it again. */
    shoal__list_del(&e->fnode);
    shoal__list_del(&e->bnode);
    free(e->peer_addr);
    u->slots[e->token & 0xffff] = NULL;
    free(e);
    ep->priv = NULL;
}
