/*
 * verbs_ep.c -- verbs connections through librdmacm: listener, connect,
 * the hello handshake in rdma_cm private data, CM events, failure and
 * close.
 *
 * Handshake.  The client resolves the address and route, creates its QP,
 * and calls rdma_connect() with its shoal hello as private data.  The
 * server checks the hello on CONNECT_REQUEST (rdma_reject, logged, on a
 * mismatch, with the reason in the REJ's private data when it is about
 * authentication), creates its endpoint and QP, and rdma_accept()s with its
 * own hello.  ESTABLISHED finishes both sides: the client checks the
 * server's hello, the server hands the endpoint to the listener.  With
 * SHOAL_AUTH_FILE (lib/core/auth.c) the hellos carry nonces and the
 * server's proof, the client sends its proof as the first SEND on the QP,
 * and the server hands the endpoint over only once that proof verified
 * (verbs_hs_proof), whichever of it and ESTABLISHED comes first.
 *
 * Every CM event is copied and acknowledged before it is acted on, so an
 * rdma_cm id can always be destroyed afterwards.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verbs_int.h"

/* ---- QP setup and teardown ------------------------------------------------- */

int verbs_post_recv(struct verbs_ep *ve, unsigned slot)
{
    struct ibv_sge sge = {.addr = (uintptr_t)(ve->rbuf + (size_t)slot * VERBS_RECV_SIZE),
                          .length = VERBS_RECV_SIZE, .lkey = ve->rmr->lkey};
    struct ibv_recv_wr wr = {.wr_id = ((uint64_t)slot << 1) | 1, .sg_list = &sge,
                             .num_sge = 1}, *bad;
    int rc = ibv_post_recv(ve->qp, &wr, &bad);
    if (rc == 0)
        ve->recv_posted++;
    return rc;
}

/* Move the QP to the error state: every posted WR completes (flushed). */
void verbs_qp_error(struct verbs_ep *ve)
{
    if (!ve->qp || ve->qp_err)
        return;
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
    ibv_modify_qp(ve->qp, &a, IBV_QP_STATE);
    ve->qp_err = true;
}

/* CQ, QP, receive ring and bounce buffers for ve->id (device known). */
static int qp_setup(struct verbs_ep *ve)
{
    shoal_ctx_t *ctx = ve->ep->ctx;
    struct verbs_ctx *v = verbs_ctx(ctx);
    if (ve->id->verbs != v->verbs)
        return shoal__fail(ctx, -ENODEV,
                           "the address goes through device %s, this context uses %s",
                           ve->id->verbs ? ibv_get_device_name(ve->id->verbs->device) : "?",
                           v->devname);
    unsigned maxwr = (unsigned)v->dattr.max_qp_wr;
    ve->rq_depth = VERBS_RQ_DEPTH < maxwr ? VERBS_RQ_DEPTH : maxwr;
    /* Room for queue_depth ops, a split transfer, and the unsignaled WRs
     * a trailing run may still hold. */
    ve->sq_cap = (unsigned)ctx->cfg.queue_depth + VERBS_MAX_CHUNKS + VERBS_SIGNAL_EVERY;
    if (ve->sq_cap > maxwr)
        ve->sq_cap = maxwr;
    unsigned cqe = ve->sq_cap + ve->rq_depth;
    if (cqe > (unsigned)v->dattr.max_cqe) {
        cqe = (unsigned)v->dattr.max_cqe;
        ve->sq_cap = cqe - ve->rq_depth;
    }
    ve->sq = calloc(ve->sq_cap, sizeof(*ve->sq));
    ve->held = calloc(ve->rq_depth, sizeof(*ve->held));
    size_t rlen = (size_t)ve->rq_depth * VERBS_RECV_SIZE;
    size_t slen = (size_t)VERBS_NBOUNCE * VERBS_RECV_SIZE;
    ve->rbuf = aligned_alloc(4096, rlen);
    ve->sbuf = aligned_alloc(4096, slen);
    if (!ve->sq || !ve->held || !ve->rbuf || !ve->sbuf)
        return shoal__fail(ctx, -ENOMEM, "out of memory for a queue pair's rings");
    ve->rmr = ibv_reg_mr(v->pd, ve->rbuf, rlen, IBV_ACCESS_LOCAL_WRITE);
    ve->smr = ve->rmr ? ibv_reg_mr(v->pd, ve->sbuf, slen, IBV_ACCESS_LOCAL_WRITE) : NULL;
    if (!ve->rmr || !ve->smr)
        return shoal__fail(ctx, -ENOMEM, "registering %zu bytes of message buffers: %s "
                           "(check `ulimit -l`)", rlen + slen, strerror(errno));
    for (unsigned i = 0; i < VERBS_NBOUNCE; i++)
        ve->sfree[i] = VERBS_NBOUNCE - 1 - i;
    ve->nsfree = VERBS_NBOUNCE;
    ve->cq = ibv_create_cq(v->verbs, (int)cqe, ve, v->cch, 0);
    if (!ve->cq)
        return shoal__fail(ctx, -errno ? -errno : -ENOMEM, "ibv_create_cq(%u): %s", cqe,
                           strerror(errno));
    struct ibv_qp_init_attr qa = {
        .qp_context = ve,
        .send_cq = ve->cq,
        .recv_cq = ve->cq,
        .cap = {.max_send_wr = ve->sq_cap, .max_recv_wr = ve->rq_depth,
                .max_send_sge = 1, .max_recv_sge = 1,
                .max_inline_data = VERBS_INLINE_WANT},
        .qp_type = IBV_QPT_RC,
    };
    if (rdma_create_qp(ve->id, v->pd, &qa)) {
        qa.cap.max_inline_data = 0;
        if (rdma_create_qp(ve->id, v->pd, &qa))
            return shoal__fail(ctx, -errno, "rdma_create_qp (sq %u, rq %u): %s", ve->sq_cap,
                               ve->rq_depth, strerror(errno));
    }
    ve->qp = ve->id->qp;
    ve->max_inline = qa.cap.max_inline_data;
    if (qa.cap.max_send_wr < ve->sq_cap)
        ve->sq_cap = qa.cap.max_send_wr;
    for (unsigned i = 0; i < ve->rq_depth; i++)
        if (verbs_post_recv(ve, i))
            return shoal__fail(ctx, -EIO, "ibv_post_recv: cannot fill the receive ring");
    return 0;
}

static void set_ack_timeout(struct verbs_ep *ve)
{
    uint8_t t = VERBS_ACK_TIMEOUT;
    if (rdma_set_option(ve->id, RDMA_OPTION_ID, RDMA_OPTION_ID_ACK_TIMEOUT, &t, sizeof(t)))
        shoal__debug(ve->ep->ctx, "verbs: RDMA_OPTION_ID_ACK_TIMEOUT: %s", strerror(errno));
}

/* After the connection is up: shorten the receiver-not-ready delay the
 * peer waits when our receive ring is momentarily empty. */
static void set_rnr_timer(struct verbs_ep *ve)
{
    struct ibv_qp_attr a = {.min_rnr_timer = VERBS_MIN_RNR_TIMER};
    if (ibv_modify_qp(ve->qp, &a, IBV_QP_MIN_RNR_TIMER))
        shoal__debug(ve->ep->ctx, "verbs: setting min_rnr_timer: %s", strerror(errno));
}

/*
 * Once a connection is up: which GID and path MTU did rdma_cm give the QP?
 * rdma_cm takes the GID of the address the connection is bound to, with
 * the RoCE version from the kernel's configfs, and the path MTU as the
 * smaller of the port's active MTU and what the netdev's MTU allows.  Log
 * both; warn (once per context) when a RoCE v1 GID was used although the
 * port has a RoCE v2 one, since v1 does not cross an IP router.
 */
static void verbs_check_path(struct verbs_ep *ve)
{
    shoal_ctx_t *ctx = ve->ep->ctx;
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct ibv_qp_attr a;
    struct ibv_qp_init_attr ia;
    if (ibv_query_qp(ve->qp, &a, IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT,
                     &ia)) {
        shoal__debug(ctx, "verbs: ibv_query_qp: %s", strerror(errno));
        return;
    }
    unsigned mtu = a.path_mtu >= IBV_MTU_256 && a.path_mtu <= IBV_MTU_4096
                       ? 128u << a.path_mtu : 0;
    ve->path_mtu = mtu;
    const char *type = "InfiniBand";
    struct ibv_gid_entry ge;
    if (v->roce) {
        type = "RoCE ?";
        if (ibv_query_gid_ex(v->verbs, ve->id->port_num, a.ah_attr.grh.sgid_index, &ge, 0) == 0)
            type = ge.gid_type == IBV_GID_TYPE_ROCE_V2 ? "RoCE v2" : "RoCE v1";
        if (v->gid_v2 && strcmp(type, "RoCE v1") == 0 && !v->warned_gid) {
            v->warned_gid = true;
            shoal__warn(ctx, "verbs: rdma_cm used RoCE v1 GID index %u for %s although RoCE v2 "
                        "is available (index %d); set /sys/kernel/config/rdma_cm/%s/ports/%u/"
                        "default_roce_mode to \"RoCE v2\"", a.ah_attr.grh.sgid_index,
                        ve->ep->peer, v->gid_index, v->devname, ve->id->port_num);
        }
    }
    shoal__debug(ctx, "verbs: %s: source GID index %u (%s), path MTU %u (port active MTU %u), "
                 "ack timeout %u, retry count %u", ve->ep->peer, a.ah_attr.grh.sgid_index, type,
                 mtu, v->active_mtu, a.timeout, a.retry_cnt);
    if (mtu > v->active_mtu)
        shoal__warn(ctx, "verbs: %s: path MTU %u above the port's active MTU %u",
                    ve->ep->peer, mtu, v->active_mtu);
}

static struct verbs_ep *ve_new(shoal_ep_t *ep)
{
    struct verbs_ep *ve = calloc(1, sizeof(*ve));
    if (!ve)
        return NULL;
    ve->kind = VOBJ_EP;
    ve->ep = ep;
    shoal__list_init(&ve->pnode);
    shoal__list_add(&verbs_ctx(ep->ctx)->eps, &ve->node);
    ep->priv = ve;
    return ve;
}

static void conn_param(struct verbs_ctx *v, struct rdma_conn_param *p, const uint8_t *hello,
                       size_t hlen, int resp, int init)
{
    memset(p, 0, sizeof(*p));
    p->private_data = hello;
    p->private_data_len = (uint8_t)hlen;
    int rmax = v->dattr.max_qp_rd_atom, imax = v->dattr.max_qp_init_rd_atom;
    p->responder_resources = (uint8_t)(resp < rmax ? resp : rmax);
    p->initiator_depth = (uint8_t)(init < imax ? init : imax);
    p->retry_count = VERBS_RETRY_COUNT;
    p->rnr_retry_count = VERBS_RNR_RETRY;
}

/* ---- CM events ---------------------------------------------------------------- */

struct cm_ev {
    enum rdma_cm_event_type type;
    int status;
    struct rdma_cm_id *id, *listen_id;
    uint8_t pdata[256];  /* REQ carries at most 56 bytes, REP 196, REJ 148 */
    size_t pdlen;
    int resp, init;   /* the peer's rd_atomic numbers (CONNECT_REQUEST) */
};

static void drain_before_failure(struct verbs_ep *ve)
{
    uint64_t deadline = shoal__now_ms() + VERBS_DRAIN_MS;
    verbs_poll_ep(ve);
    while ((ve->recv_posted || verbs_ops_pending(ve)) && shoal__now_ms() < deadline)
        verbs_poll_ep(ve);
}

__attribute__((format(printf, 3, 4)))
static void cm_fail(struct verbs_ep *ve, int err, const char *fmt, ...)
{
    if (ve->cm_err)
        return;
    ve->cm_err = err;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ve->why, sizeof(ve->why), fmt, ap);
    va_end(ap);
}

/* Server side: the endpoint's handshake (and proof, with authentication)
 * is complete: hand it to its listener. */
static void server_ready(struct verbs_ep *ve)
{
    shoal_listener_t *l = ve->listener;
    shoal__list_del(&ve->pnode);
    ve->listener = NULL;
    shoal__ep_connected(ve->ep);
    shoal__listener_ready(l, ve->ep);
}

void verbs_hs_proof(struct verbs_ep *ve, const void *buf, size_t len)
{
    shoal_ep_t *ep = ve->ep;
    if (!ve->listener || ep->state != SHOAL_EP_CONNECTING)
        return;
    int rc = shoal__hs_proof(ep, buf, len);
    if (rc != 0) {
        /* verbs_sweep_half_open discards it, out of the CQ poll. */
        shoal__ep_failed(ep, rc, "authentication proof refused");
        verbs_qp_error(ve);
        return;
    }
    if (ve->established)
        server_ready(ve);
}

static void connect_request(shoal_ctx_t *ctx, const struct cm_ev *e,
                            struct rdma_cm_id **destroy)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct verbs_listener *vl = e->listen_id->context;
    char peer[96];
    shoal__addr_str(rdma_get_peer_addr(e->id), peer, sizeof(peer));
    if (e->id->verbs != v->verbs) {
        shoal__warn(ctx, "verbs: refused connection from %s: it arrived on device %s, this "
                    "context uses %s", peer,
                    e->id->verbs ? ibv_get_device_name(e->id->verbs->device) : "?",
                    v->devname);
        rdma_reject(e->id, NULL, 0);
        *destroy = e->id;
        return;
    }
    shoal_ep_t *ep = shoal__ep_new(ctx);
    struct verbs_ep *ve = ep ? ve_new(ep) : NULL;
    if (!ve) {
        shoal__warn(ctx, "verbs: out of memory: connection from %s rejected", peer);
        if (ep)
            shoal__ep_discard(ep);
        rdma_reject(e->id, NULL, 0);
        *destroy = e->id;
        return;
    }
    snprintf(ep->peer, sizeof(ep->peer), "%s", peer);
    ve->id = e->id;
    e->id->context = ve;
    ve->listener = vl->l;
    ve->deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    shoal__list_add(&vl->pending, &ve->pnode);
    /* The hello (and its refusal, with a reason in the REJ's private data,
     * when the two sides disagree about authentication). */
    uint8_t out[SHOAL_HELLO_MAX];
    size_t outlen = 0;
    int rc = shoal__hs_accept(ep, e->pdata, e->pdlen, ep->id, out, &outlen);
    if (rc) {
        rdma_reject(e->id, outlen ? out : NULL, (uint8_t)outlen);
        shoal__ep_failed(ep, rc, "handshake refused");
        return;
    }
    set_ack_timeout(ve);
    rc = qp_setup(ve);
    if (rc == 0) {
        struct rdma_conn_param p;
        conn_param(v, &p, out, outlen, e->init, e->resp);
        if (rdma_accept(e->id, &p))
            rc = shoal__fail(ctx, -errno, "rdma_accept: %s", strerror(errno));
    }
    if (rc) {
        shoal__warn(ctx, "verbs: accepting %s failed: %s", peer, shoal__last_error(ctx));
        if (!ve->qp)
            rdma_reject(e->id, NULL, 0);
        shoal__ep_failed(ep, rc, "accepting failed");
    }
}

/* Handle one event for a client or server endpoint.  Returns the endpoint
 * if it must be discarded (a server endpoint that never got established). */
static shoal_ep_t *ep_event(shoal_ctx_t *ctx, struct verbs_ep *ve, const struct cm_ev *e)
{
    shoal_ep_t *ep = ve->ep;
    struct verbs_ctx *v = verbs_ctx(ctx);
    char why[200];
    shoal__debug(ctx, "verbs: %s on %s (%s, status %d)", rdma_event_str(e->type), ep->peer,
                 ve->listener ? "pending" : "endpoint", e->status);
    switch (e->type) {
    case RDMA_CM_EVENT_ADDR_RESOLVED:
        set_ack_timeout(ve);
        if (rdma_resolve_route(ve->id, VERBS_RESOLVE_MS))
            cm_fail(ve, -EHOSTUNREACH, "rdma_resolve_route: %s", strerror(errno));
        break;
    case RDMA_CM_EVENT_ROUTE_RESOLVED: {
        int rc = qp_setup(ve);
        if (rc) {
            cm_fail(ve, rc, "%s", shoal__last_error(ctx));
            break;
        }
        uint8_t hello[SHOAL_HELLO_MAX];
        size_t hlen;
        rc = shoal__hs_hello(ep, ep->id, hello, &hlen);
        if (rc) {
            cm_fail(ve, rc, "%s", shoal__last_error(ctx));
            break;
        }
        struct rdma_conn_param p;
        conn_param(v, &p, hello, hlen, 16, 16);
        if (rdma_connect(ve->id, &p))
            cm_fail(ve, -errno, "rdma_connect: %s", strerror(errno));
        break;
    }
    case RDMA_CM_EVENT_ESTABLISHED:
        if (ve->listener) {
            if (ep->state != SHOAL_EP_CONNECTING) {
                shoal__list_del(&ve->pnode);
                ve->listener = NULL;
                return ep;
            }
            ve->established = true;
            set_rnr_timer(ve);
            verbs_check_path(ve);
            /* With authentication, ready once the client's proof came
             * (verbs_hs_proof; it may come first or after). */
            if (!ep->hs.need_proof)
                server_ready(ve);
            break;
        }
        if (ep->state != SHOAL_EP_CONNECTING)
            break;
        {
            uint8_t out[SHOAL_HELLO_MAX];
            size_t outlen = 0;
            int rc = shoal__hs_ack(ep, e->pdata, e->pdlen, out, &outlen);
            if (rc)
                snprintf(why, sizeof(why), "%s", shoal__last_error(ctx));
            ve->established = true; /* so close disconnects */
            if (outlen) {
                /* Our proof, or why we refuse the server: the first SEND. */
                int src = verbs_send_hs(ve, out, outlen);
                if (rc == 0 && src) {
                    rc = src;
                    snprintf(why, sizeof(why), "sending the authentication proof: %s",
                             shoal_strerror(src));
                }
            }
            if (rc) {
                cm_fail(ve, rc, "%s", why);
                break;
            }
        }
        set_rnr_timer(ve);
        verbs_check_path(ve);
        shoal__ep_connected(ep);
        break;
    case RDMA_CM_EVENT_REJECTED:
        if (e->pdlen && !ve->listener) {
            /* A shoal server says why in the private data. */
            uint8_t out[SHOAL_HELLO_MAX];
            size_t outlen;
            struct shoal_hello h;
            if (shoal__hello_decode(e->pdata, e->pdlen, SHOAL_TRANSPORT_VERBS, &h, why,
                                    sizeof(why)) == 0 && (h.flags & SHOAL_HELLO_REFUSE)) {
                int rc = shoal__hs_ack(ep, e->pdata, e->pdlen, out, &outlen);
                cm_fail(ve, rc, "%s", shoal__last_error(ctx));
                break;
            }
        }
        cm_fail(ve, -ECONNREFUSED, "connection refused (rdma_cm reject status %d%s)",
                e->status, e->status == 8 ? ": nothing listens on that port" : "");
        break;
    case RDMA_CM_EVENT_ADDR_ERROR:
    case RDMA_CM_EVENT_ROUTE_ERROR:
        snprintf(why, sizeof(why), "%s: %s", rdma_event_str(e->type), strerror(-e->status));
        cm_fail(ve, -EHOSTUNREACH, "%s", why);
        break;
    case RDMA_CM_EVENT_UNREACHABLE:
    case RDMA_CM_EVENT_CONNECT_ERROR:
        snprintf(why, sizeof(why), "%s: %s", rdma_event_str(e->type), strerror(-e->status));
        cm_fail(ve, e->status == -ETIMEDOUT ? -ETIMEDOUT : -ECONNREFUSED, "%s", why);
        break;
    case RDMA_CM_EVENT_DISCONNECTED:
    case RDMA_CM_EVENT_DEVICE_REMOVAL:
        verbs_qp_error(ve);
        /* A peer that closes right after sending: its last messages may
         * still sit in our CQ, behind this event on another channel.  The
         * error state flushes every posted receive, so polling until the
         * ring is flushed (briefly bounded) delivers what arrived before
         * the disconnect; the failure is reported after it. */
        drain_before_failure(ve);
        cm_fail(ve, -ECONNRESET, "%s", rdma_event_str(e->type));
        shoal__ep_failed(ep, e->type == RDMA_CM_EVENT_DISCONNECTED ? -ECONNRESET : -ENODEV,
                         "%s", e->type == RDMA_CM_EVENT_DISCONNECTED
                                   ? "peer disconnected"
                                   : "RDMA device removed");
        break;
    default:
        shoal__debug(ctx, "verbs: %s on %s", rdma_event_str(e->type), ep->peer);
        break;
    }
    if (ve->listener && (ve->cm_err || ep->state != SHOAL_EP_CONNECTING)) {
        shoal__list_del(&ve->pnode);
        ve->listener = NULL;
        return ep;
    }
    return NULL;
}

int verbs_cm_events(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct rdma_cm_event *ev;
    int n = 0;
    while (rdma_get_cm_event(v->ech, &ev) == 0) {
        struct cm_ev e = {.type = ev->event, .status = ev->status, .id = ev->id,
                          .listen_id = ev->listen_id};
        if (ev->param.conn.private_data && ev->param.conn.private_data_len) {
            e.pdlen = ev->param.conn.private_data_len;
            if (e.pdlen > sizeof(e.pdata))
                e.pdlen = sizeof(e.pdata);
            memcpy(e.pdata, ev->param.conn.private_data, e.pdlen);
        }
        e.resp = ev->param.conn.responder_resources;
        e.init = ev->param.conn.initiator_depth;
        n++;
        struct rdma_cm_id *destroy = NULL;
        shoal_ep_t *discard = NULL;
        if (e.type == RDMA_CM_EVENT_CONNECT_REQUEST) {
            /* Handled with the event held: accept/reject need it. */
            connect_request(ctx, &e, &destroy);
            rdma_ack_cm_event(ev);
            struct verbs_ep *ve = destroy ? NULL : e.id->context;
            if (ve && ve->ep->state == SHOAL_EP_FAILED) {
                shoal__list_del(&ve->pnode);
                ve->listener = NULL;
                discard = ve->ep;
            }
        } else {
            rdma_ack_cm_event(ev);
            uint32_t *kind = e.id ? e.id->context : NULL;
            if (kind && *kind == VOBJ_EP)
                discard = ep_event(ctx, (struct verbs_ep *)kind, &e);
            else
                shoal__debug(ctx, "verbs: %s on a listener", rdma_event_str(e.type));
        }
        if (destroy)
            rdma_destroy_id(destroy);
        if (discard)
            shoal__ep_discard(discard);
    }
    return n;
}

/*
 * Server side: a connection accepted (rdma_accept sent) but never
 * ESTABLISHED within the connect timeout is dropped, QP and all.  That is
 * a client that vanished between its request and its RTU: a crashed host
 * sends no reject, and rdma_cm itself gives up only after its own, much
 * longer, REP retries.  (A client process that dies is reported sooner:
 * its kernel rejects, and the REJECTED event discards the endpoint.)
 * Returns the earliest deadline still pending, or UINT64_MAX.
 */
uint64_t verbs_sweep_half_open(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    uint64_t now = shoal__now_ms(), next = UINT64_MAX;
    struct shoal_list *n = v->eps.next;
    while (n != &v->eps) {
        struct verbs_ep *ve = shoal__container_of(n, struct verbs_ep, node);
        n = n->next; /* discarding ve unlinks only ve */
        if (!ve->listener)
            continue;
        if (ve->ep->state == SHOAL_EP_FAILED) {
            /* Refused during the handshake (verbs_hs_proof). */
            shoal__list_del(&ve->pnode);
            ve->listener = NULL;
            shoal__ep_discard(ve->ep);
            continue;
        }
        if (now < ve->deadline) {
            next = ve->deadline < next ? ve->deadline : next;
            continue;
        }
        shoal__warn(ctx, "verbs: connection from %s %s within %d ms; dropped", ve->ep->peer,
                    ve->established ? "sent no authentication proof" : "not established",
                    ctx->cfg.connect_timeout_ms);
        shoal__list_del(&ve->pnode);
        ve->listener = NULL;
        shoal__ep_discard(ve->ep);
    }
    return next;
}

/* ---- listener ------------------------------------------------------------------ */

int verbs_listen(shoal_listener_t *l, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = l->ctx;
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct sockaddr_storage ss;
    int rc = shoal__resolve(ctx, host, port, true, &ss, NULL);
    if (rc)
        return rc;
    struct verbs_listener *vl = calloc(1, sizeof(*vl));
    if (!vl)
        return shoal__fail(ctx, -ENOMEM, "listen on %s:%u: out of memory", host ? host : "*",
                           port);
    vl->kind = VOBJ_LISTENER;
    vl->l = l;
    shoal__list_init(&vl->pending);
    if (rdma_create_id(v->ech, &vl->id, vl, RDMA_PS_TCP)) {
        rc = -errno;
        free(vl);
        return shoal__fail(ctx, rc, "rdma_create_id: %s", strerror(-rc));
    }
    const char *step = "rdma_bind_addr";
    if (rdma_bind_addr(vl->id, (struct sockaddr *)&ss) ||
        (step = "rdma_listen", rdma_listen(vl->id, 64))) {
        rc = -errno;
        rdma_destroy_id(vl->id);
        free(vl);
        return shoal__fail(ctx, rc, "listen on %s:%u: %s: %s", host ? host : "*", port, step,
                           strerror(-rc));
    }
    l->port = ntohs(rdma_get_src_port(vl->id));
    l->priv = vl;
    return 0;
}

void verbs_listener_close(shoal_listener_t *l)
{
    struct verbs_listener *vl = l->priv;
    while (!shoal__list_empty(&vl->pending)) {
        struct verbs_ep *ve = shoal__container_of(vl->pending.next, struct verbs_ep, pnode);
        shoal__list_del(&ve->pnode);
        ve->listener = NULL;
        shoal__ep_discard(ve->ep);
    }
    rdma_destroy_id(vl->id);
    free(vl);
    l->priv = NULL;
}

/* ---- connect ------------------------------------------------------------------ */

int verbs_connect(shoal_ep_t *ep, const char *host, uint16_t port)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct sockaddr_storage ss;
    int rc = shoal__resolve(ctx, host, port, false, &ss, NULL);
    if (rc)
        return rc;
    struct verbs_ep *ve = ve_new(ep);
    if (!ve)
        return shoal__fail(ctx, -ENOMEM, "connect to %s:%u: out of memory", host, port);
    if (rdma_create_id(v->ech, &ve->id, ve, RDMA_PS_TCP))
        return shoal__fail(ctx, -errno, "connect to %s:%u: rdma_create_id: %s", host, port,
                           strerror(errno));
    if (rdma_resolve_addr(ve->id, NULL, (struct sockaddr *)&ss, VERBS_RESOLVE_MS))
        return shoal__fail(ctx, -EHOSTUNREACH, "connect to %s:%u: rdma_resolve_addr: %s",
                           host, port, strerror(errno));
    uint64_t deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
    while (ep->state == SHOAL_EP_CONNECTING && !ve->cm_err) {
        verbs_progress(ctx);
        if (ep->state != SHOAL_EP_CONNECTING || ve->cm_err)
            break;
        uint64_t now = shoal__now_ms();
        if (now >= deadline)
            return shoal__fail(ctx, -ETIMEDOUT, "connect to %s:%u: no answer within %d ms",
                               host, port, ctx->cfg.connect_timeout_ms);
        shoal__sleep(ctx, (int)(deadline - now));
    }
    if (ve->cm_err || ep->state != SHOAL_EP_CONNECTED)
        return shoal__fail(ctx, ve->cm_err ? ve->cm_err : -ECONNRESET, "connect to %s:%u: %s",
                           host, port, ve->why[0] ? ve->why : "connection lost");
    return 0;
}

/* ---- close ---------------------------------------------------------------------- */

void verbs_ep_close(shoal_ep_t *ep)
{
    shoal_ctx_t *ctx = ep->ctx;
    struct verbs_ep *ve = verbs_ep(ep);
    if (!ve)
        return;
    shoal__list_del(&ve->pnode);
    if (ve->qp) {
        /* A healthy connection first lets its operations finish. */
        if (!ve->qp_err && verbs_ops_pending(ve) && !ep->abort) {
            uint64_t deadline = shoal__now_ms() + (uint64_t)ctx->cfg.connect_timeout_ms;
            while (verbs_ops_pending(ve) && !ve->qp_err && shoal__now_ms() < deadline)
                verbs_poll_ep(ve);
        }
        if (ve->established)
            rdma_disconnect(ve->id);
        verbs_qp_error(ve);
        /* Flush: every WR not yet executed completes, with
         * IBV_WC_WR_FLUSH_ERR.  (Unsignaled WRs that did execute leave no
         * completion; the mirror entries left at the end are theirs.) */
        uint64_t deadline = shoal__now_ms() + 2000;
        while ((verbs_ops_pending(ve) || ve->recv_posted) && shoal__now_ms() < deadline)
            verbs_poll_ep(ve);
        if (verbs_ops_pending(ve))
            shoal__warn(ctx, "verbs: %llu operations on %s did not flush; canceling them",
                        (unsigned long long)(ve->ops_posted - ve->ops_done), ep->peer);
        verbs_sq_cancel(ve, -ECANCELED, "endpoint closed");
        rdma_destroy_qp(ve->id);
        ve->qp = NULL;
    }
    if (ve->cq && ibv_destroy_cq(ve->cq))
        shoal__warn(ctx, "verbs: ibv_destroy_cq failed");
    if (ve->id)
        rdma_destroy_id(ve->id);
    if (ve->rmr)
        ibv_dereg_mr(ve->rmr);
    if (ve->smr)
        ibv_dereg_mr(ve->smr);
    free(ve->rbuf);
    free(ve->sbuf);
    free(ve->sq);
    free(ve->held);
    shoal__list_del(&ve->node);
    free(ve);
    ep->priv = NULL;
}
