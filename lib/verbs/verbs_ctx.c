/*
 * verbs_ctx.c -- the verbs provider's device choice, context, completion
 * processing, progress and blocking wait.  Connections are in verbs_ep.c,
 * operations and registration in verbs_ops.c; the design is described in
 * verbs_int.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "verbs_int.h"

/* ---- device choice ------------------------------------------------------- */

struct dev_choice {
    char name[64];
    uint8_t port;
    unsigned mtu;
    bool roce, v2;
};

static unsigned mtu_bytes(enum ibv_mtu m)
{
    return m >= IBV_MTU_256 && m <= IBV_MTU_4096 ? 128u << m : 0;
}

/* Does @port of @c have an ACTIVE state and a non-zero GID? */
static bool port_usable(struct ibv_context *c, uint8_t port, struct dev_choice *dc)
{
    struct ibv_port_attr pa;
    if (ibv_query_port(c, port, &pa) || pa.state != IBV_PORT_ACTIVE)
        return false;
    bool gid_ok = false, v2 = false;
    int n = pa.gid_tbl_len < 16 ? pa.gid_tbl_len : 16;
    for (int i = 0; i < n; i++) {
        struct ibv_gid_entry ge;
        if (ibv_query_gid_ex(c, port, (uint32_t)i, &ge, 0))
            continue;
        static const uint8_t zero[16];
        if (memcmp(ge.gid.raw, zero, 16) == 0)
            continue;
        gid_ok = true;
        v2 |= ge.gid_type == IBV_GID_TYPE_ROCE_V2;
    }
    if (!gid_ok)
        return false;
    dc->port = port;
    dc->mtu = mtu_bytes(pa.active_mtu);
    dc->roce = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
    dc->v2 = v2;
    return true;
}

/* Pick the device (SHOAL_DEVICE "name" or "name:port", else the first with
 * a usable port).  0, or -ENODEV with the reason in @why. */
static int choose_device(const shoal_config_t *cfg, struct dev_choice *dc, char *why,
                         size_t whylen)
{
    char want[SHOAL_DEVICE_MAX];
    unsigned want_port = 0;
    snprintf(want, sizeof(want), "%s", cfg->device);
    char *colon = strchr(want, ':');
    if (colon) {
        *colon = '\0';
        char *end;
        unsigned long p = strtoul(colon + 1, &end, 10);
        if (!colon[1] || *end || p == 0 || p > 255) {
            snprintf(why, whylen, "SHOAL_DEVICE '%s': bad port number", cfg->device);
            return -EINVAL;
        }
        want_port = (unsigned)p;
    }
    int num = 0;
    struct ibv_device **list = ibv_get_device_list(&num);
    if (!list || num == 0) {
        snprintf(why, whylen, "no RDMA devices on this host");
        if (list)
            ibv_free_device_list(list);
        return -ENODEV;
    }
    int rc = -ENODEV;
    bool named_found = false;
    for (int i = 0; i < num && rc; i++) {
        const char *name = ibv_get_device_name(list[i]);
        if (want[0] && strcmp(want, name) != 0)
            continue;
        named_found = true;
        struct ibv_context *c = ibv_open_device(list[i]);
        if (!c)
            continue;
        struct ibv_device_attr da;
        if (ibv_query_device(c, &da) == 0) {
            for (unsigned p = 1; p <= da.phys_port_cnt && rc; p++) {
                if (want_port && p != want_port)
                    continue;
                if (port_usable(c, (uint8_t)p, dc)) {
                    snprintf(dc->name, sizeof(dc->name), "%s", name);
                    rc = 0;
                }
            }
        }
        ibv_close_device(c);
    }
    ibv_free_device_list(list);
    if (rc) {
        if (want[0] && !named_found)
            snprintf(why, whylen, "SHOAL_DEVICE '%s': no such RDMA device", cfg->device);
        else if (want[0])
            snprintf(why, whylen, "RDMA device '%s' has no ACTIVE port with a GID",
                     cfg->device);
        else
            snprintf(why, whylen, "%d RDMA device(s), none with an ACTIVE port and a GID", num);
        return -ENODEV;
    }
    snprintf(why, whylen, "%s:%u active", dc->name, dc->port);
    return 0;
}

static int verbs_probe(const shoal_config_t *cfg, char *why, size_t whylen)
{
    struct dev_choice dc;
    return choose_device(cfg, &dc, why, whylen);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

/* ---- context --------------------------------------------------------------- */

static void ctx_free(struct verbs_ctx *v)
{
    if (v->cch)
        ibv_destroy_comp_channel(v->cch);
    if (v->pd)
        ibv_dealloc_pd(v->pd);
    if (v->devs)
        rdma_free_devices(v->devs);
    if (v->ech)
        rdma_destroy_event_channel(v->ech);
    free(v);
}

static int verbs_ctx_init(shoal_ctx_t *ctx)
{
    struct dev_choice dc;
    char why[200];
    int rc = choose_device(&ctx->cfg, &dc, why, sizeof(why));
    if (rc)
        return shoal__fail(ctx, rc, "verbs: %s", why);
    struct verbs_ctx *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    shoal__list_init(&v->eps);
    v->port = dc.port;
    snprintf(v->devname, sizeof(v->devname), "%s", dc.name);
    v->ech = rdma_create_event_channel();
    if (!v->ech) {
        rc = -errno;
        ctx_free(v);
        return shoal__fail(ctx, rc ? rc : -ENODEV,
                           "verbs: rdma_create_event_channel: %s (is rdma_ucm loaded?)",
                           strerror(-rc));
    }
    if ((rc = set_nonblock(v->ech->fd))) {
        ctx_free(v);
        return shoal__fail(ctx, rc, "verbs: rdma_cm channel: %s", strerror(-rc));
    }
    int n = 0;
    v->devs = rdma_get_devices(&n);
    for (int i = 0; v->devs && i < n; i++)
        if (strcmp(ibv_get_device_name(v->devs[i]->device), dc.name) == 0)
            v->verbs = v->devs[i];
    if (!v->verbs) {
        ctx_free(v);
        return shoal__fail(ctx, -ENODEV, "verbs: rdma_cm does not know device %s", dc.name);
    }
    struct ibv_port_attr pa;
    if (ibv_query_device(v->verbs, &v->dattr) || ibv_query_port(v->verbs, v->port, &pa)) {
        ctx_free(v);
        return shoal__fail(ctx, -ENODEV, "verbs: cannot query %s:%u", dc.name, dc.port);
    }
    v->max_msg_sz = pa.max_msg_sz;
    v->pd = ibv_alloc_pd(v->verbs);
    v->cch = v->pd ? ibv_create_comp_channel(v->verbs) : NULL;
    if (!v->pd || !v->cch) {
        rc = errno ? -errno : -ENOMEM;
        ctx_free(v);
        return shoal__fail(ctx, rc, "verbs: %s on %s: %s",
                           v->pd ? "ibv_create_comp_channel" : "ibv_alloc_pd", dc.name,
                           strerror(-rc));
    }
    if ((rc = set_nonblock(v->cch->fd))) {
        ctx_free(v);
        return shoal__fail(ctx, rc, "verbs: completion channel: %s", strerror(-rc));
    }
    /* Async events are read without blocking in progress().  (The device
     * context is librdmacm's, shared by every shoal context of the process;
     * each one checks that a QP event names one of its own QPs.) */
    (void)set_nonblock(v->verbs->async_fd);
    ctx->priv = v;
    snprintf(ctx->describe, sizeof(ctx->describe), "verbs (%s:%u, %s, mtu %u)", dc.name,
             dc.port, dc.roce ? (dc.v2 ? "RoCE v2" : "RoCE v1") : "InfiniBand", dc.mtu);
    return 0;
}

static void verbs_ctx_fini(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    if (!shoal__list_empty(&v->eps))
        shoal__warn(ctx, "verbs: context destroyed with queue pairs still open");
    ctx_free(v);
    ctx->priv = NULL;
}

/* ---- completions ------------------------------------------------------------ */

int verbs_wc_errno(enum ibv_wc_status st)
{
    switch (st) {
    case IBV_WC_SUCCESS: return 0;
    case IBV_WC_WR_FLUSH_ERR: return -ECANCELED;
    case IBV_WC_RETRY_EXC_ERR:
    case IBV_WC_RNR_RETRY_EXC_ERR: return -ETIMEDOUT;
    case IBV_WC_REM_ACCESS_ERR:
    case IBV_WC_LOC_PROT_ERR: return -EACCES;
    case IBV_WC_LOC_LEN_ERR:
    case IBV_WC_REM_INV_REQ_ERR: return -EMSGSIZE;
    default: return -EIO;
    }
}

static void deliver(struct verbs_ep *ve, const struct verbs_arrival *a)
{
    shoal_ep_t *ep = ve->ep;
    bool live = ep->state == SHOAL_EP_CONNECTED || ep->state == SHOAL_EP_CONNECTING;
    if (live && a->is_imm)
        shoal__ep_imm(ep, a->imm);
    else if (live)
        shoal__ep_recv(ep, ve->rbuf + (size_t)a->slot * VERBS_RECV_SIZE, a->len);
    if (!ve->qp_err && verbs_post_recv(ve, a->slot) != 0) {
        verbs_qp_error(ve);
        shoal__ep_failed(ep, -EIO, "cannot repost a receive");
    }
}

int verbs_deliver_held(struct verbs_ep *ve)
{
    int n = 0;
    while (ve->held_count && ve->sq_done >= ve->held[ve->held_head].barrier) {
        struct verbs_arrival a = ve->held[ve->held_head];
        ve->held_head = (ve->held_head + 1) % ve->rq_depth;
        ve->held_count--;
        deliver(ve, &a);
        n++;
    }
    return n;
}

static void recv_done(struct verbs_ep *ve, const struct ibv_wc *wc)
{
    shoal_ep_t *ep = ve->ep;
    ve->recv_posted--;
    if (wc->status != IBV_WC_SUCCESS) {
        if (wc->status != IBV_WC_WR_FLUSH_ERR) {
            verbs_qp_error(ve);
            shoal__ep_failed(ep, verbs_wc_errno(wc->status), "receive failed: %s",
                             ibv_wc_status_str(wc->status));
        }
        return;
    }
    struct verbs_arrival a = {.barrier = ve->sq_posted, .slot = (uint32_t)(wc->wr_id >> 1),
                              .len = wc->byte_len, .imm = ntohl(wc->imm_data),
                              .is_imm = wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM};
    if (!ve->held_count && ve->sq_done >= a.barrier) {
        deliver(ve, &a);
        return;
    }
    ve->held[(ve->held_head + ve->held_count) % ve->rq_depth] = a;
    ve->held_count++;
}

/* Poll one endpoint's CQ dry (bounded); returns completions handled. */
int verbs_poll_ep(struct verbs_ep *ve)
{
    struct ibv_wc wc[32];
    int total, n;
    if (!ve->cq)
        return 0;
    /* Arrivals held back by an earlier call go first: the completions that
     * released them have been reported by now. */
    total = verbs_deliver_held(ve);
    do {
        n = ibv_poll_cq(ve->cq, 32, wc);
        if (n < 0) {
            verbs_qp_error(ve);
            shoal__ep_failed(ve->ep, -EIO, "ibv_poll_cq failed");
            return total;
        }
        for (int i = 0; i < n; i++) {
            if (wc[i].wr_id & 1) {
                recv_done(ve, &wc[i]);
                continue;
            }
            int st = verbs_wc_errno(wc[i].status);
            const char *why = wc[i].status ? ibv_wc_status_str(wc[i].status) : NULL;
            if (wc[i].status && wc[i].status != IBV_WC_WR_FLUSH_ERR) {
                verbs_qp_error(ve);
                shoal__ep_failed(ve->ep, st, "operation failed: %s", why);
            }
            verbs_sq_complete(ve, st, why);
        }
        total += n;
    } while (n == 32 && total < 1024);
    return total;
}

static void async_events(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct ibv_async_event ae;
    while (ibv_get_async_event(v->verbs, &ae) == 0) {
        switch (ae.event_type) {
        case IBV_EVENT_QP_FATAL:
        case IBV_EVENT_QP_REQ_ERR:
        case IBV_EVENT_QP_ACCESS_ERR:
            for (struct shoal_list *n = v->eps.next; n != &v->eps; n = n->next) {
                struct verbs_ep *ve = shoal__container_of(n, struct verbs_ep, node);
                if (ve->qp == ae.element.qp) {
                    verbs_qp_error(ve);
                    shoal__ep_failed(ve->ep, -EIO, "queue pair error: %s",
                                     ibv_event_type_str(ae.event_type));
                }
            }
            break;
        case IBV_EVENT_PORT_ERR:
        case IBV_EVENT_DEVICE_FATAL:
            if (ae.event_type == IBV_EVENT_PORT_ERR && ae.element.port_num != v->port)
                break;
            shoal__warn(ctx, "verbs: %s on %s", ibv_event_type_str(ae.event_type), v->devname);
            for (struct shoal_list *n = v->eps.next; n != &v->eps; n = n->next) {
                struct verbs_ep *ve = shoal__container_of(n, struct verbs_ep, node);
                verbs_qp_error(ve);
                shoal__ep_failed(ve->ep, -ENETDOWN, "%s on %s",
                                 ibv_event_type_str(ae.event_type), v->devname);
            }
            break;
        default:
            shoal__debug(ctx, "verbs: async event %s", ibv_event_type_str(ae.event_type));
            break;
        }
        ibv_ack_async_event(&ae);
    }
}

/* rdma_cm and async events: each check is a failing system call (a
 * write on the rdma_cm fd, a read on the async fd) when there is nothing,
 * which is almost always. */
static int fd_events(shoal_ctx_t *ctx)
{
    int n = verbs_cm_events(ctx);
    async_events(ctx);
    return n;
}

/* Every pass polls the CQs (no system call); the event fds are checked
 * on every 32nd pass and before every sleep (verbs_wait).  Checking them
 * on each pass doubled the cost of a busy-poll pass and put two system
 * calls on the latency path (measured with strace -c in the soft-RoCE VM:
 * ~4.5 failing write+read pairs per put_lat iteration). */
#define VERBS_EVENT_PACE 32

int verbs_progress(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    int n = 0;
    for (struct shoal_list *l = v->eps.next; l != &v->eps; l = l->next)
        n += verbs_poll_ep(shoal__container_of(l, struct verbs_ep, node));
    if (++v->passes % VERBS_EVENT_PACE == 0)
        n += fd_events(ctx);
    return n;
}

/*
 * Blocking wait (shoal_wait has already spun on progress): arm every CQ,
 * check once more (a completion may have landed before arming), and sleep
 * in poll() on the completion channel, the rdma_cm channel and the
 * async-event fd.
 */
int verbs_wait(shoal_ctx_t *ctx, int timeout_ms)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    for (struct shoal_list *l = v->eps.next; l != &v->eps; l = l->next) {
        struct verbs_ep *ve = shoal__container_of(l, struct verbs_ep, node);
        if (ve->cq && !ve->cq_armed && ibv_req_notify_cq(ve->cq, 0) == 0)
            ve->cq_armed = true;
    }
    if (verbs_progress(ctx) || fd_events(ctx))
        return 0;
    struct pollfd pfd[3] = {{.fd = v->cch->fd, .events = POLLIN},
                            {.fd = v->ech->fd, .events = POLLIN},
                            {.fd = v->verbs->async_fd, .events = POLLIN}};
    int rc = poll(pfd, 3, timeout_ms);
    if (rc < 0 && errno != EINTR)
        return shoal__fail(ctx, -errno, "verbs: poll: %s", strerror(errno));
    if (rc > 0 && (pfd[0].revents & POLLIN)) {
        struct ibv_cq *cq;
        void *cqctx;
        while (ibv_get_cq_event(v->cch, &cq, &cqctx) == 0) {
            ibv_ack_cq_events(cq, 1);
            ((struct verbs_ep *)cqctx)->cq_armed = false;
        }
    }
    return 0;
}

const struct shoal_provider shoal_verbs_provider = {
    .name = "verbs",
    .transport = SHOAL_TRANSPORT_VERBS,
    .probe = verbs_probe,
    .ctx_init = verbs_ctx_init,
    .ctx_fini = verbs_ctx_fini,
    .mr_reg = verbs_mr_reg,
    .mr_dereg = verbs_mr_dereg,
    .rmr_init = verbs_rmr_init,
    .rmr_fini = verbs_rmr_fini,
    .listen = verbs_listen,
    .listener_close = verbs_listener_close,
    .connect = verbs_connect,
    .ep_close = verbs_ep_close,
    .put = verbs_put,
    .get = verbs_get,
    .send = verbs_send,
    .progress = verbs_progress,
    .wait = verbs_wait,
};
