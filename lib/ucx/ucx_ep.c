/*
 * ucx_ep.c -- UCX connections: listener, connect, the hello handshake,
 * active-message dispatch, failure and close.
 *
 * Handshake.  The client creates a UCP endpoint to host:port (client-server
 * mode, peer error handling on) and sends HELLO carrying its token; the
 * server, which made an endpoint from the connection request, answers
 * HELLO_ACK carrying its own token and becomes ready for accept().  The
 * client's connect() returns when HELLO_ACK arrives.  Every later active
 * message names the receiver's token, which is checked against the
 * connection it arrived on.  With SHOAL_AUTH_FILE the hellos carry nonces
 * and the server's proof, and the client sends its proof as a second HELLO;
 * the server's endpoint is ready only after it (lib/core/auth.c decides).
 * A server endpoint whose handshake is not done within the connect timeout
 * is dropped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

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
        shoal__warn(ctx, "ucx: %s for unknown endpoint token 0x%08x dropped", what, token);
        return NULL;
    }
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) ||
        param->reply_ep != ucx_ep(ep)->uep) {
        shoal__warn(ctx, "ucx: %s naming endpoint %s came from another connection; dropped",
                    what, ep->peer);
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

/* Send a header-only active message (hello, ack); the header is copied. */
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
     * progress loop, so every outstanding op completes now. */
    if (shoal__list_empty(&e->fnode)) {
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

static ucs_status_t am_hello(void *arg, const void *header, size_t hlen, void *data,
                             size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    struct ucx_ctx *u = ucx_ctx(ctx);
    (void)data;
    (void)len;
    if (!(param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP))
        return UCS_OK;
    /* Find the half-open server endpoint this connection belongs to. */
    shoal_ep_t *ep = NULL;
    for (struct shoal_list *n = u->pending.next; n != &u->pending; n = n->next) {
        struct ucx_ep *e = shoal__container_of(n, struct ucx_ep, pnode);
        if (e->uep == param->reply_ep) {
            ep = u->slots[e->token & 0xffff];
            break;
        }
    }
    if (!ep) {
        shoal__warn(ctx, "ucx: HELLO on a connection that is not in handshake; dropped");
        return UCS_OK;
    }
    struct ucx_ep *e = ucx_ep(ep);
    uint8_t out[SHOAL_HELLO_MAX];
    size_t outlen = 0;
    int rc;
    if (ep->hs.need_proof) {
        /* The third message of an authenticated handshake: the proof. */
        rc = shoal__hs_proof(ep, header, hlen);
    } else {
        rc = shoal__hs_accept(ep, header, hlen, e->token, out, &outlen);
        if (outlen) {
            int src = ucx_am_send_hdr(ep, UCX_AM_HELLO_ACK, out, outlen);
            rc = rc ? rc : src;
        }
        if (rc == 0 && ep->hs.need_proof) {
            e->peer_token = ep->hs.peer_id;
            return UCS_OK; /* stays pending until the proof */
        }
    }
    if (rc) {
        shoal__ep_failed(ep, rc, "handshake refused");
        u->sweep = true;
        return UCS_OK;
    }
    e->peer_token = ep->hs.peer_id;
    shoal_listener_t *l = e->listener;
    shoal__list_del(&e->pnode);
    shoal__ep_connected(ep);
    shoal__listener_ready(l, ep);
    e->listener = NULL;
    return UCS_OK;
}

static ucs_status_t am_hello_ack(void *arg, const void *header, size_t hlen, void *data,
                                 size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    (void)data;
    (void)len;
    struct shoal_hello h;
    char why[160];
    int rc = shoal__hello_decode(header, hlen, SHOAL_TRANSPORT_UCX, &h, why, sizeof(why));
    if (rc) {
        shoal__warn(ctx, "ucx: bad HELLO_ACK: %s", why);
        return UCS_OK;
    }
    shoal_ep_t *ep = ucx_ep_lookup(ctx, h.peer_id, param, "HELLO_ACK");
    if (!ep || ep->state != SHOAL_EP_CONNECTING || ucx_ep(ep)->hello_acked)
        return UCS_OK;
    struct ucx_ep *e = ucx_ep(ep);
    uint8_t out[SHOAL_HELLO_MAX];
    size_t outlen = 0;
    rc = shoal__hs_ack(ep, header, hlen, out, &outlen);
    if (rc)
        snprintf(e->hs_why, sizeof(e->hs_why), "%s", shoal__last_error(ctx));
    if (outlen) {
        /* Our proof, or why we refuse the server, on the HELLO id. */
        int src = ucx_am_send_hdr(ep, UCX_AM_HELLO, out, outlen);
        if (rc == 0 && src) {
            rc = src;
            snprintf(e->hs_why, sizeof(e->hs_why), "sending the proof: %s",
                     shoal_strerror(src));
        }
    }
    if (rc) {
        e->hs_err = rc;
        shoal__ep_failed(ep, rc, "%s", e->hs_why);
        return UCS_OK;
    }
    e->peer_token = ep->hs.peer_id;
    e->hello_acked = true;
    shoal__ep_connected(ep);
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
        [UCX_AM_HELLO] = am_hello, [UCX_AM_HELLO_ACK] = am_hello_ack,
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

static int ep_priv_new(shoal_ep_t *ep)
{
    struct ucx_ep *e = calloc(1, sizeof(*e));
    if (!e)
        return shoal__fail(ep->ctx, -ENOMEM, "ucx: out of memory for an endpoint");
    shoal__list_init(&e->pnode);
    shoal__list_init(&e->fnode);
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

int ucx_connect(shoal_ep_t *ep, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = shoal__resolve(ctx, host, port, false, &ss, &sl);
    if (rc == 0)
        rc = ep_priv_new(ep);
    if (rc)
        return rc;
    struct ucx_ep *e = ucx_ep(ep);
    ucp_ep_params_t p = {
        .field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
        .sockaddr = {.addr = (struct sockaddr *)&ss, .addrlen = sl},
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = ep_err_cb, .arg = ep},
    };
    ucs_status_t st = ucp_ep_create(u->worker, &p, &e->uep);
    if (st != UCS_OK) {
        e->uep = NULL;
        return shoal__fail(ctx, ucx_status_errno(st), "connect to %s:%u: %s", host, port,
                           ucs_status_string(st));
    }
    uint8_t buf[SHOAL_HELLO_MAX];
    size_t blen;
    rc = shoal__hs_hello(ep, e->token, buf, &blen);
    if (rc == 0)
        rc = ucx_am_send_hdr(ep, UCX_AM_HELLO, buf, blen);
    if (rc)
        return shoal__fail(ctx, rc, "connect to %s:%u: sending hello: %s", host, port,
                           shoal_strerror(rc));
    uint64_t deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    while (ep->state == SHOAL_EP_CONNECTING) {
        ctx->prov->progress(ctx);
        if (ep->state != SHOAL_EP_CONNECTING)
            break;
        uint64_t now = shoal__now_ms();
        if (now >= deadline)
            return shoal__fail(ctx, -ETIMEDOUT, "connect to %s:%u: no answer within %d ms",
                               host, port, ctx->cfg.connect_timeout_ms);
        shoal__sleep(ctx, (int)(deadline - now));
    }
    if (e->hs_err)
        return shoal__fail(ctx, e->hs_err, "connect to %s:%u: %s", host, port, e->hs_why);
    if (ep->state != SHOAL_EP_CONNECTED) {
        int err = ucx_status_errno(e->fail_status);
        if (!err)
            err = -ECONNREFUSED;
        return shoal__fail(ctx, err, "connect to %s:%u: %s", host, port,
                           e->fail_status ? ucs_status_string(e->fail_status)
                                          : "connection refused");
    }
    return 0;
}

static void conn_handler(ucp_conn_request_h req, void *arg)
{
    shoal_listener_t *l = arg;
    shoal_ctx_t *ctx = l->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    shoal_ep_t *ep = shoal__ep_new(ctx);
    if (!ep || ep_priv_new(ep)) {
        shoal__warn(ctx, "ucx: out of memory: connection request rejected");
        if (ep)
            shoal__ep_discard(ep);
        ucp_listener_reject(((struct ucx_listener *)l->priv)->ul, req);
        return;
    }
    struct ucx_ep *e = ucx_ep(ep);
    ucp_conn_request_attr_t attr = {.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR};
    bool known = ucp_conn_request_query(req, &attr) == UCS_OK;
    shoal__addr_str(known ? (const struct sockaddr *)&attr.client_address : NULL, ep->peer,
                    sizeof(ep->peer));
    e->listener = l;
    e->deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    shoal__list_add(&u->pending, &e->pnode);
    ucp_ep_params_t p = {
        .field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLER |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        .conn_request = req,
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = ep_err_cb, .arg = ep},
    };
    ucs_status_t st = ucp_ep_create(u->worker, &p, &e->uep);
    if (st != UCS_OK) {
        shoal__warn(ctx, "ucx: accepting %s: %s", ep->peer, ucs_status_string(st));
        e->uep = NULL;
        shoal__ep_failed(ep, ucx_status_errno(st), "%s", ucs_status_string(st));
        u->sweep = true;
    }
}

static void uep_close(shoal_ep_t *ep, bool force);

void ucx_sweep_pending(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    u->sweep = false;
    while (!shoal__list_empty(&u->failed)) {
        struct ucx_ep *e = shoal__container_of(u->failed.next, struct ucx_ep, fnode);
        shoal__list_del(&e->fnode);
        if (e->uep && !e->listener)
            uep_close(u->slots[e->token & 0xffff], true);
    }
    uint64_t now = shoal__now_ms();
    struct shoal_list *n = u->pending.next;
    while (n != &u->pending) {
        struct ucx_ep *e = shoal__container_of(n, struct ucx_ep, pnode);
        n = n->next;
        shoal_ep_t *ep = u->slots[e->token & 0xffff];
        if (ep->state == SHOAL_EP_CONNECTING && now >= e->deadline) {
            /* A client that connected and then said nothing (or never
             * proved itself): it must not hold a slot forever. */
            shoal__warn(ctx, "ucx: connection from %s: handshake not finished within %d ms; "
                        "dropped", ep->peer, ctx->cfg.connect_timeout_ms);
            shoal__ep_failed(ep, -ETIMEDOUT, "handshake timed out");
        }
        if (ep->state == SHOAL_EP_FAILED || ep->state == SHOAL_EP_CLOSING)
            shoal__ep_discard(ep);
    }
}

int ucx_listen(shoal_listener_t *l, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = l->ctx;
    struct sockaddr_storage ss;
    socklen_t sl;
    int rc = shoal__resolve(ctx, host, port, true, &ss, &sl);
    if (rc)
        return rc;
    struct ucx_listener *ul = calloc(1, sizeof(*ul));
    if (!ul)
        return shoal__fail(ctx, -ENOMEM, "listen on %s:%u: out of memory", host ? host : "*",
                           port);
    ucp_listener_params_t p = {
        .field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER,
        .sockaddr = {.addr = (struct sockaddr *)&ss, .addrlen = sl},
        .conn_handler = {.cb = conn_handler, .arg = l},
    };
    ucs_status_t st = ucp_listener_create(ucx_ctx(ctx)->worker, &p, &ul->ul);
    if (st != UCS_OK) {
        free(ul);
        return shoal__fail(ctx, st == UCS_ERR_BUSY ? -EADDRINUSE : ucx_status_errno(st),
                           "listen on %s:%u: %s", host ? host : "*", port,
                           ucs_status_string(st));
    }
    ucp_listener_attr_t attr = {.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR};
    st = ucp_listener_query(ul->ul, &attr);
    if (st != UCS_OK) {
        ucp_listener_destroy(ul->ul);
        free(ul);
        return shoal__fail(ctx, -EIO, "ucp_listener_query: %s", ucs_status_string(st));
    }
    l->port = shoal__addr_port((const struct sockaddr *)&attr.sockaddr);
    l->priv = ul;
    return 0;
}

void ucx_listener_close(shoal_listener_t *l)
{
    struct ucx_ctx *u = ucx_ctx(l->ctx);
    struct ucx_listener *ul = l->priv;
    /* Half-open connections of this listener go with it. */
    for (struct shoal_list *n = u->pending.next; n != &u->pending; n = n->next) {
        struct ucx_ep *e = shoal__container_of(n, struct ucx_ep, pnode);
        if (e->listener == l)
            shoal__ep_failed(u->slots[e->token & 0xffff], -ECANCELED, "listener closed");
    }
    ucx_sweep_pending(l->ctx);
    ucp_listener_destroy(ul->ul);
    free(ul);
}

/* Close the UCX endpoint of @ep and wait (bounded) until UCX has called
 * back every request on it.  Must not run inside ucp_worker_progress. */
static void uep_close(shoal_ep_t *ep, bool force)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct ucx_ep *e = ucx_ep(ep);
    ucp_request_param_t p = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                             .flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0};
    ucs_status_ptr_t r = ucp_ep_close_nbx(e->uep, &p);
    e->uep = NULL;
    if (!r || UCS_PTR_IS_ERR(r))
        return;
    uint64_t deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    bool canceled = false;
    while (ucp_request_check_status(r) == UCS_INPROGRESS) {
        ucp_worker_progress(u->worker);
        if (shoal__now_ms() <= deadline)
            continue;
        if (canceled) {
            shoal__warn(ctx, "ucx: close of %s is stuck; abandoning it", ep->peer);
            break;
        }
        shoal__warn(ctx, "ucx: close of %s did not finish in %d ms; canceling", ep->peer,
                    ctx->cfg.connect_timeout_ms);
        ucp_request_cancel(u->worker, r);
        canceled = true;
        deadline = shoal__now_ms() + 1000;
    }
    ucp_request_free(r);
}

void ucx_ep_close(shoal_ep_t *ep)
{
    struct ucx_ctx *u = ucx_ctx(ep->ctx);
    struct ucx_ep *e = ucx_ep(ep);
    if (!e)
        return;
    shoal__list_del(&e->pnode);
    shoal__list_del(&e->fnode);
    ucx_fail_gets(ep, -ECANCELED, "endpoint closed");
    /* A healthy endpoint is flushed (outstanding ops finish); a failed one
     * is forced (they complete as canceled). */
    if (e->uep)
        uep_close(ep, e->fail_status != UCS_OK || ep->abort);
    u->slots[e->token & 0xffff] = NULL;
    free(e);
    ep->priv = NULL;
}
