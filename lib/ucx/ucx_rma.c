/*
 * ucx_rma.c -- put, get and control messages on UCX.
 *
 * put            over TCP only (UCX_TLS unset or "tcp"): a PUT active message
 *                (see put_am; UCX's own put is emulated on active messages
 *                there anyway, with one more copy).  Otherwise ucp_put_nbx from
 *                the registered source (its memh passed).
 * put + imm      over TCP only, or up to UCX_PUT_IMM_MAX bytes: a PUT_IMM
 *                active message, one message instead of two.  Otherwise
 *                ucp_put_nbx, ucp_worker_fence, then an IMM active message
 *                on the same endpoint.  The fence orders the IMM after the
 *                put's remote completion, so when the target's handler runs
 *                the data is in place: the same promise as verbs
 *                write-with-immediate.  The op completes when both have.
 * get            a request/response on active messages (see below): the
 *                target must progress.
 * send           an active message whose header is the peer's token; the
 *                payload is copied once into a buffer that lives until the
 *                send completes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ucx_int.h"

/* One of an op's references is done.  A send's copied payload, or a cut
 * put's headers, go with its last.  (A get's buf is the caller's.) */
static void ref_done(struct shoal_op *op, int status, const char *why)
{
    if (op->kind != SHOAL_OP_GET && op->buf && op->pending == 1) {
        free(op->buf);
        op->buf = NULL;
    }
    shoal__op_done(op, status, why);
}

/* Completion of one UCX request that holds one reference on an op. */
static void op_cb(void *request, ucs_status_t status, void *user_data)
{
    if (request)
        ucp_request_free(request);
    ref_done(user_data, ucx_status_errno(status),
             status == UCS_OK ? NULL : ucs_status_string(status));
}

/* Account for a request that ucp_*_nbx returned: completed in place,
 * failed in place (returns the error), or in flight (callback later). */
static int track(struct shoal_op *op, ucs_status_ptr_t r)
{
    if (r == NULL) {
        op_cb(NULL, UCS_OK, op);
        return 0;
    }
    if (UCS_PTR_IS_ERR(r))
        return ucx_status_errno(UCS_PTR_STATUS(r));
    /* In flight: the callback reports it and frees the request.  (Freeing
     * it here would suppress the callback: see ucp_request_free(3).) */
    return 0;
}

static ucp_request_param_t op_param(struct shoal_op *op, shoal_mr_t *lmr)
{
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
        .cb.send = op_cb,
        .user_data = op,
    };
    if (lmr) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        p.memh = ((struct ucx_mr *)lmr->priv)->memh;
    }
    return p;
}

/* A put as active messages (PUT, or PUT_IMM with an immediate) carrying
 * the target address, the immediate and the bytes, sent eagerly from the
 * registered source (UCX sends large ones zero-copy).  The target checks
 * the range against its writable regions, copies the bytes there and
 * raises the immediate, in that order, in one handler.  A put longer than
 * put_piece goes as several messages, each within one TCP segment, the
 * immediate on the last: active messages of one endpoint arrive in the
 * order sent (one TCP lane), so the data of every piece is in place when
 * the immediate is raised -- the order the 1,000-put test checks. */
static int put_am(shoal_ep_t *ep, struct shoal_op *op, unsigned id, shoal_mr_t *lmr,
                  size_t loff, shoal_rmr_t *rmr, size_t roff, size_t len, uint32_t imm)
{
    struct ucx_ep *e = ucx_ep(ep);
    size_t piece = ucx_ctx(ep->ctx)->put_piece;
    size_t n = piece && len > piece ? (len + piece - 1) / piece : 1;
    if (n > 1) /* equal pieces (1 MiB: two of 512 KiB, not 1020 + 4 KiB) */
        piece = (((len + n - 1) / n) + 63) & ~(size_t)63;
    uint8_t *hdrs = op->scratch;
    if (n > 1) {
        /* Every message's header must live until it is sent. */
        if (!(hdrs = malloc(n * UCX_PUT_IMM_HDR)))
            return shoal__fail(ep->ctx, -ENOMEM, "put to %s: out of memory", ep->peer);
        op->buf = hdrs;
    }
    op->pending = (int)n;
    for (size_t i = 0; i < n; i++) {
        size_t off = i * piece, l = n == 1 ? len : (len - off < piece ? len - off : piece);
        uint8_t *hdr = hdrs + i * UCX_PUT_IMM_HDR;
        shoal__put_le32(hdr, e->peer_token);
        shoal__put_le32(hdr + 4, imm);
        shoal__put_le64(hdr + 8, rmr->addr + roff + off);
        memcpy(hdr + 16, rmr->key, UCX_KEY_LEN);
        ucp_request_param_t p = op_param(op, lmr);
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        p.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
        ucs_status_ptr_t r = ucp_am_send_nbx(e->uep, i + 1 == n ? id : UCX_AM_PUT, hdr,
                                             UCX_PUT_IMM_HDR, (char *)lmr->addr + loff + off,
                                             l, &p);
        int rc = track(op, r);
        if (rc == 0)
            continue;
        if (i == 0) {
            /* Nothing went: fail the call, the op is not started. */
            op->pending = 1;
            if (op->buf) {
                free(op->buf);
                op->buf = NULL;
            }
            return shoal__fail(ep->ctx, rc, "put to %s: %s", ep->peer, shoal_strerror(rc));
        }
        /* Some pieces went: the op completes with the error once they
         * have (each unsent piece counts as done now). */
        for (size_t k = i; k < n; k++)
            ref_done(op, rc, shoal_strerror(rc));
        return 0;
    }
    return 0;
}

int ucx_put(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
            shoal_rmr_t *rmr, size_t roff, size_t len, unsigned flags, uint32_t imm)
{
    struct ucx_ep *e = ucx_ep(ep);
    bool with_imm = flags & SHOAL_PUT_IMM;
    if (!with_imm && ucx_ctx(ep->ctx)->put_by_am)
        return put_am(ep, op, UCX_AM_PUT, lmr, loff, rmr, roff, len, 0);
    if (with_imm && (len <= UCX_PUT_IMM_MAX || ucx_ctx(ep->ctx)->put_by_am)) {
        /* Earlier plain puts (by RMA) must land before this message's
         * handler runs: fence only if there are any since the last one. */
        if (e->unfenced) {
            ucs_status_t st = ucp_worker_fence(ucx_ctx(ep->ctx)->worker);
            if (st != UCS_OK)
                return shoal__fail(ep->ctx, ucx_status_errno(st), "put to %s: fence: %s",
                                   ep->peer, ucs_status_string(st));
            e->unfenced = false;
        }
        return put_am(ep, op, UCX_AM_PUT_IMM, lmr, loff, rmr, roff, len, imm);
    }
    ucp_request_param_t p = op_param(op, lmr);
    if (with_imm)
        op->pending = 2; /* the put and the IMM message */
    ucs_status_ptr_t r = ucp_put_nbx(e->uep, (char *)lmr->addr + loff, len, rmr->addr + roff,
                                     (ucp_rkey_h)rmr->priv, &p);
    if (UCS_PTR_IS_ERR(r)) {
        op->pending = 1;
        return shoal__fail(ep->ctx, ucx_status_errno(UCS_PTR_STATUS(r)), "put to %s: %s",
                           ep->peer, ucs_status_string(UCS_PTR_STATUS(r)));
    }
    if (!with_imm) {
        e->unfenced = true;
        return track(op, r);
    }
    /* From here the put is started: errors are reported on the op. */
    track(op, r);
    ucs_status_t st = ucp_worker_fence(ucx_ctx(ep->ctx)->worker);
    if (st != UCS_OK) {
        op_cb(NULL, st, op);
        return 0;
    }
    e->unfenced = false;
    /* The IMM header is tiny: send it from the op record itself. */
    uint8_t *hdr = op->scratch;
    shoal__put_le32(hdr, e->peer_token);
    shoal__put_le32(hdr + 4, imm);
    ucp_request_param_t ap = op_param(op, NULL);
    ap.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    ap.flags = UCP_AM_SEND_FLAG_REPLY;
    r = ucp_am_send_nbx(e->uep, UCX_AM_IMM, hdr, UCX_IMM_HDR, NULL, 0, &ap);
    if (UCS_PTR_IS_ERR(r))
        op_cb(NULL, UCS_PTR_STATUS(r), op);
    else
        track(op, r);
    return 0;
}

/* ---- get ----------------------------------------------------------------
 *
 * UCX 1.13 over TCP with peer error handling emulates RMA over active
 * messages ("rma_am" lanes), slowly and without checking any rights.  So
 * get is shoal's own request/response on active messages:
 *   GET_REQ  initiator -> target: which bytes (address, length) and a
 *            request id;
 *   GET_RESP target -> initiator: the bytes, sent straight from the
 *            target's registered region, or an error status.
 * The target serves only ranges inside a region it registered with
 * SHOAL_ACCESS_REMOTE_READ, so a peer cannot read anything else.  The
 * initiator receives large answers (UCX rendezvous) directly into the
 * destination buffer if UCX ever delivers them by rendezvous; the target
 * sends eagerly (rendezvous over TCP rides on the same emulation), so the
 * initiator copies the answer once out of UCX's receive buffer.
 */

static int get_slot(struct ucx_ctx *u, struct shoal_op *op, uint32_t *req)
{
    unsigned i;
    for (i = 0; i < u->ngets; i++)
        if (!u->gets[i])
            break;
    if (i == u->ngets) {
        if (u->ngets >= (1u << 20))
            return -EAGAIN;
        unsigned n = u->ngets ? u->ngets * 2 : 64;
        struct shoal_op **g = realloc(u->gets, n * sizeof(*g));
        if (!g)
            return -ENOMEM;
        memset(g + u->ngets, 0, (n - u->ngets) * sizeof(*g));
        u->gets = g;
        u->ngets = n;
    }
    u->gets[i] = op;
    *req = i | (++u->get_gen << 20);
    shoal__put_le32(op->scratch, *req);
    return 0;
}

static struct shoal_op *get_take(struct ucx_ctx *u, uint32_t req)
{
    unsigned i = req & 0xfffff;
    if (i >= u->ngets || !u->gets[i] || shoal__get_le32(u->gets[i]->scratch) != req)
        return NULL;
    struct shoal_op *op = u->gets[i];
    u->gets[i] = NULL;
    return op;
}

void ucx_fail_gets(shoal_ep_t *ep, int status, const char *why)
{
    struct ucx_ctx *u = ucx_ctx(ep->ctx);
    for (unsigned i = 0; i < u->ngets; i++) {
        struct shoal_op *op = u->gets[i];
        if (op && op->ep == ep) {
            u->gets[i] = NULL;
            shoal__op_done(op, status, why);
        }
    }
}

int ucx_get(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
            shoal_rmr_t *rmr, size_t roff, size_t len)
{
    struct ucx_ctx *u = ucx_ctx(ep->ctx);
    uint32_t req;
    int rc = get_slot(u, op, &req);
    if (rc)
        return shoal__fail(ep->ctx, rc, "get from %s: %s", ep->peer, rc == -EAGAIN
                           ? "2^20 gets in flight; poll for completions and retry"
                           : "out of memory");
    op->buf = (char *)lmr->addr + loff; /* where the answer goes */
    uint8_t hdr[UCX_GET_REQ_HDR];
    shoal__put_le32(hdr, ucx_ep(ep)->peer_token);
    shoal__put_le32(hdr + 4, req);
    shoal__put_le64(hdr + 8, rmr->addr + roff);
    shoal__put_le64(hdr + 16, len);
    memcpy(hdr + 24, rmr->key, UCX_KEY_LEN);
    rc = ucx_am_send_hdr(ep, UCX_AM_GET_REQ, hdr, sizeof(hdr));
    if (rc) {
        get_take(u, req);
        op->buf = NULL;
        return shoal__fail(ep->ctx, rc, "get from %s: %s", ep->peer, shoal_strerror(rc));
    }
    return 0;
}

/* The registered region of ours that holds [addr, addr+len) readably. */
static struct ucx_mr *readable(struct ucx_ctx *u, uint64_t addr, uint64_t len)
{
    for (struct shoal_list *n = u->mrs.next; n != &u->mrs; n = n->next) {
        struct ucx_mr *m = shoal__container_of(n, struct ucx_mr, node);
        uint64_t base = (uint64_t)(uintptr_t)m->mr->addr;
        if ((m->mr->access & SHOAL_ACCESS_REMOTE_READ) && addr >= base &&
            len <= m->mr->len && addr - base <= m->mr->len - len)
            return m;
    }
    return NULL;
}

/* The registered region of ours that holds [addr, addr+len) writably. */
static struct ucx_mr *writable(struct ucx_ctx *u, uint64_t addr, uint64_t len)
{
    for (struct shoal_list *n = u->mrs.next; n != &u->mrs; n = n->next) {
        struct ucx_mr *m = shoal__container_of(n, struct ucx_mr, node);
        uint64_t base = (uint64_t)(uintptr_t)m->mr->addr;
        if ((m->mr->access & SHOAL_ACCESS_REMOTE_WRITE) && addr >= base &&
            len <= m->mr->len && addr - base <= m->mr->len - len)
            return m;
    }
    return NULL;
}

static ucs_status_t am_put(shoal_ctx_t *ctx, bool with_imm, const void *header, size_t hlen,
                           void *data, size_t len, const ucp_am_recv_param_t *param)
{
    if (hlen != UCX_PUT_IMM_HDR) {
        shoal__warn(ctx, "ucx: malformed PUT message (%zu bytes of header) dropped", hlen);
        return UCS_OK;
    }
    const uint8_t *h = header;
    shoal_ep_t *ep = ucx_ep_lookup(ctx, shoal__get_le32(h), param, "PUT");
    if (!ep || ep->state != SHOAL_EP_CONNECTED)
        return UCS_OK;
    uint64_t addr = shoal__get_le64(h + 8);
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
        ucx_ep_abort(ep, -EPROTO, "peer sent a PUT by rendezvous");
        return UCS_OK;
    }
    struct ucx_mr *m = len ? writable(ucx_ctx(ctx), addr, len) : NULL;
    if (len && (!m || m->key != shoal__get_le64(h + 16))) {
        char why[160];
        snprintf(why, sizeof(why), "peer wrote [0x%llx, +%zu), %s; connection dropped",
                 (unsigned long long)addr, len,
                 m ? "with the key of another region (a descriptor it was not given)"
                   : "not in a region registered with SHOAL_ACCESS_REMOTE_WRITE");
        shoal__warn(ctx, "ucx: %s: %s", ep->peer, why);
        ucx_ep_abort(ep, -EACCES, why);
        return UCS_OK;
    }
    if (len)
        memcpy((void *)(uintptr_t)addr, data, len);
    if (with_imm) {
        shoal__ep_imm(ep, shoal__get_le32(h + 4));
        ucx_ctx(ctx)->arrived = true;
    }
    return UCS_OK;
}

ucs_status_t ucx_am_put_imm(void *arg, const void *header, size_t hlen, void *data,
                            size_t len, const ucp_am_recv_param_t *param)
{
    return am_put(arg, true, header, hlen, data, len, param);
}

ucs_status_t ucx_am_put(void *arg, const void *header, size_t hlen, void *data,
                        size_t len, const ucp_am_recv_param_t *param)
{
    return am_put(arg, false, header, hlen, data, len, param);
}

static void resp_free_cb(void *request, ucs_status_t status, void *user_data)
{
    (void)status;
    if (request)
        ucp_request_free(request);
    free(user_data);
}

ucs_status_t ucx_am_get_req(void *arg, const void *header, size_t hlen, void *data,
                            size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    (void)data;
    if (hlen != UCX_GET_REQ_HDR || len != 0) {
        shoal__warn(ctx, "ucx: malformed GET request (%zu+%zu bytes) dropped", hlen, len);
        return UCS_OK;
    }
    const uint8_t *h = header;
    shoal_ep_t *ep = ucx_ep_lookup(ctx, shoal__get_le32(h), param, "GET request");
    if (!ep || ep->state != SHOAL_EP_CONNECTED)
        return UCS_OK;
    uint64_t addr = shoal__get_le64(h + 8), glen = shoal__get_le64(h + 16);
    struct ucx_mr *m = glen ? readable(ucx_ctx(ctx), addr, glen) : NULL;
    int32_t status = 0;
    if (!m || m->key != shoal__get_le64(h + 24)) {
        shoal__warn(ctx, "ucx: %s asked to read [0x%llx, +%llu), %s; refused", ep->peer,
                    (unsigned long long)addr, (unsigned long long)glen,
                    m ? "with the key of another region" : "not in a readable region");
        m = NULL;
        status = -EACCES;
        glen = 0;
    }
    uint8_t *resp = malloc(UCX_GET_RESP_HDR);
    if (!resp)
        return UCS_OK;
    shoal__put_le32(resp, ucx_ep(ep)->peer_token);
    memcpy(resp + 4, h + 4, 4); /* the initiator's request id, verbatim */
    shoal__put_le32(resp + 8, (uint32_t)status);
    ucp_request_param_t p = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                        UCP_OP_ATTR_FIELD_FLAGS,
        .cb.send = resp_free_cb,
        .user_data = resp,
        /* Eager: UCX's rendezvous over TCP rides on the emulated RMA
         * that this request/answer exists to avoid. */
        .flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER,
    };
    if (m) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        p.memh = m->memh;
    }
    ucs_status_ptr_t r = ucp_am_send_nbx(ucx_ep(ep)->uep, UCX_AM_GET_RESP, resp,
                                         UCX_GET_RESP_HDR, (void *)(uintptr_t)addr, glen, &p);
    if (UCS_PTR_IS_ERR(r)) {
        shoal__ep_failed(ep, ucx_status_errno(UCS_PTR_STATUS(r)), "answering a GET: %s",
                         ucs_status_string(UCS_PTR_STATUS(r)));
        free(resp);
    } else if (r == NULL) {
        free(resp);
    }
    return UCS_OK;
}

static void get_recv_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
    struct shoal_op *op = user_data;
    if (request)
        ucp_request_free(request);
    if (status == UCS_OK && length != op->len)
        shoal__op_done(op, -EBADMSG, "GET answer of the wrong length");
    else
        shoal__op_done(op, ucx_status_errno(status),
                       status == UCS_OK ? NULL : ucs_status_string(status));
}

ucs_status_t ucx_am_get_resp(void *arg, const void *header, size_t hlen, void *data,
                             size_t len, const ucp_am_recv_param_t *param)
{
    shoal_ctx_t *ctx = arg;
    if (hlen != UCX_GET_RESP_HDR) {
        shoal__warn(ctx, "ucx: malformed GET answer (%zu bytes of header) dropped", hlen);
        return UCS_OK;
    }
    const uint8_t *h = header;
    shoal_ep_t *ep = ucx_ep_lookup(ctx, shoal__get_le32(h), param, "GET answer");
    if (!ep)
        return UCS_OK;
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct shoal_op *op = get_take(u, shoal__get_le32(h + 4));
    if (!op || op->ep != ep) {
        shoal__ep_failed(ep, -EPROTO, "peer answered a GET that was not asked");
        return UCS_OK;
    }
    int32_t status = (int32_t)shoal__get_le32(h + 8);
    if (status) {
        shoal__op_done(op, status < 0 && status > -4096 ? status : -EIO,
                       "the target refused the read");
        return UCS_OK;
    }
    if (len != op->len) {
        shoal__op_done(op, -EBADMSG, "GET answer of the wrong length");
        return UCS_OK;
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
        ucp_request_param_t p = {
            .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
            .cb.recv_am = get_recv_cb,
            .user_data = op,
        };
        ucs_status_ptr_t r = ucp_am_recv_data_nbx(u->worker, data, op->buf, len, &p);
        if (r == NULL)
            get_recv_cb(NULL, UCS_OK, len, op);
        else if (UCS_PTR_IS_ERR(r))
            get_recv_cb(NULL, UCS_PTR_STATUS(r), 0, op);
        return UCS_OK;
    }
    memcpy(op->buf, data, len);
    op->buf = NULL;
    shoal__op_done(op, 0, NULL);
    u->arrived = true; /* a get's answer: someone may be waiting for it */
    return UCS_OK;
}

int ucx_send(shoal_ep_t *ep, struct shoal_op *op, const void *buf, size_t len)
{
    struct ucx_ep *e = ucx_ep(ep);
    uint8_t *copy = malloc(UCX_MSG_HDR + len);
    if (!copy)
        return shoal__fail(ep->ctx, -ENOMEM, "send to %s: out of memory", ep->peer);
    shoal__put_le32(copy, e->peer_token);
    memcpy(copy + UCX_MSG_HDR, buf, len);
    op->buf = copy;
    ucp_request_param_t p = op_param(op, NULL);
    p.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t r = ucp_am_send_nbx(e->uep, UCX_AM_MSG, copy, UCX_MSG_HDR,
                                         copy + UCX_MSG_HDR, len, &p);
    int rc = track(op, r);
    if (rc) {
        free(copy);
        op->buf = NULL;
        return shoal__fail(ep->ctx, rc, "send to %s: %s", ep->peer, shoal_strerror(rc));
    }
    return 0;
}

int ucx_rmr_init(shoal_rmr_t *rmr)
{
    ucp_rkey_h rkey;
    if (rmr->keylen <= UCX_KEY_LEN)
        return shoal__fail(rmr->ep->ctx, -EBADMSG, "descriptor key of %u bytes: too short",
                           rmr->keylen);
    ucs_status_t st = ucp_ep_rkey_unpack(ucx_ep(rmr->ep)->uep, rmr->key + UCX_KEY_LEN, &rkey);
    if (st != UCS_OK)
        return shoal__fail(rmr->ep->ctx, -EBADMSG, "descriptor key rejected by UCX: %s",
                           ucs_status_string(st));
    rmr->priv = rkey;
    return 0;
}

void ucx_rmr_fini(shoal_rmr_t *rmr)
{
    ucp_rkey_destroy((ucp_rkey_h)rmr->priv);
}
