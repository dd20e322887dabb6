/*
 * verbs_ctx.c -- the verbs provider's device choice, context, completion
 * processing, progress and blocking wait.  Connections are in verbs_ep.c,
 * operations and registration in verbs_ops.c; the design is described in
 * verbs_int.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "verbs_int.h"

/* ---- device choice ------------------------------------------------------- */

/*
 * The GID.  On InfiniBand it is index 0.  On RoCE each IP address of the
 * netdev appears as a GID, once per RoCE version; rdma_cm picks the one
 * matching the address a connection is bound to, with the version set in
 * the kernel's configfs (default_roce_mode, RoCE v2 on current kernels).
 * Here we choose, and report, the GID a port is usable with: type RoCE v2
 * (routable, UDP/IP) preferred over v1, an IPv4-mapped address preferred
 * over IPv6, link-local addresses skipped, and the address checked to be
 * on the GID's netdev right now (a GID table can briefly hold an address
 * that was removed).  Each connection then checks that rdma_cm used a GID
 * of that type (verbs_check_path in verbs_ep.c).
 */
struct dev_choice {
    char name[64];
    uint8_t port;
    unsigned mtu;                  /* the port's active MTU, bytes */
    bool roce, v2;
    int gid_index;
    char gid_addr[INET6_ADDRSTRLEN];
    char ndev[IF_NAMESIZE];
};

static unsigned mtu_bytes(enum ibv_mtu m)
{
    return m >= IBV_MTU_256 && m <= IBV_MTU_4096 ? 128u << m : 0;
}

/* Is @addr (an IPv4 or IPv6 address, in GID form) assigned to the netdev
 * with index @ifindex?  Writes it as text into @out. */
static bool gid_ip_on_netdev(const struct ifaddrs *ifs, const union ibv_gid *gid,
                             unsigned ifindex, bool *v4, char *out, size_t outlen)
{
    static const uint8_t v4_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    *v4 = memcmp(gid->raw, v4_prefix, 12) == 0;
    if (!*v4 && gid->raw[0] == 0xfe && (gid->raw[1] & 0xc0) == 0x80)
        return false; /* IPv6 link-local: not reachable by an IP address alone */
    inet_ntop(*v4 ? AF_INET : AF_INET6, *v4 ? gid->raw + 12 : gid->raw, out, (socklen_t)outlen);
    for (const struct ifaddrs *a = ifs; a; a = a->ifa_next) {
        if (!a->ifa_addr || if_nametoindex(a->ifa_name) != ifindex)
            continue;
        if (*v4 && a->ifa_addr->sa_family == AF_INET &&
            memcmp(&((const struct sockaddr_in *)a->ifa_addr)->sin_addr, gid->raw + 12, 4) == 0)
            return true;
        if (!*v4 && a->ifa_addr->sa_family == AF_INET6 &&
            memcmp(&((const struct sockaddr_in6 *)a->ifa_addr)->sin6_addr, gid->raw, 16) == 0)
            return true;
    }
    return false;
}

/* Choose the RoCE GID of @port (see above).  0, or -ENODEV with @why. */
static int choose_roce_gid(struct ibv_context *c, uint8_t port, const struct ibv_port_attr *pa,
                           struct dev_choice *dc, char *why, size_t whylen)
{
    size_t max = pa->gid_tbl_len > 0 ? (size_t)pa->gid_tbl_len * 4 : 16;
    struct ibv_gid_entry *ge = calloc(max, sizeof(*ge));
    struct ifaddrs *ifs = NULL;
    if (!ge || getifaddrs(&ifs)) {
        free(ge);
        snprintf(why, whylen, "out of memory reading the GID table");
        return -ENODEV;
    }
    ssize_t n = ibv_query_gid_table(c, ge, max, 0);
    if (n < 0) {
        /* Older kernels: one query per index. */
        size_t k = 0;
        for (int i = 0; i < pa->gid_tbl_len && k < max; i++)
            if (ibv_query_gid_ex(c, port, (uint32_t)i, &ge[k], 0) == 0)
                k++;
        n = (ssize_t)k;
    }
    int best = -1, best_score = 0;
    unsigned seen = 0;
    for (ssize_t i = 0; i < n; i++) {
        if (ge[i].port_num != port)
            continue;
        seen++;
        bool v4, v2 = ge[i].gid_type == IBV_GID_TYPE_ROCE_V2;
        char addr[INET6_ADDRSTRLEN];
        if (!gid_ip_on_netdev(ifs, &ge[i].gid, ge[i].ndev_ifindex, &v4, addr, sizeof(addr)))
            continue;
        int score = (v2 ? 2 : 0) + (v4 ? 1 : 0) + 1;
        if (score > best_score) {
            best = (int)i;
            best_score = score;
            snprintf(dc->gid_addr, sizeof(dc->gid_addr), "%s", addr);
        }
    }
    int rc = 0;
    if (best < 0) {
        snprintf(why, whylen, "port %u has %u GIDs, none with an IP address of its netdev "
                 "(give the netdev an address)", port, seen);
        rc = -ENODEV;
    } else {
        dc->gid_index = (int)ge[best].gid_index;
        dc->v2 = ge[best].gid_type == IBV_GID_TYPE_ROCE_V2;
        if (!if_indextoname(ge[best].ndev_ifindex, dc->ndev))
            snprintf(dc->ndev, sizeof(dc->ndev), "?");
    }
    freeifaddrs(ifs);
    free(ge);
    return rc;
}

/* Is @port of @c ACTIVE with a usable GID?  Fills @dc if so. */
static bool port_usable(struct ibv_context *c, uint8_t port, struct dev_choice *dc, char *why,
                        size_t whylen)
{
    struct ibv_port_attr pa;
    if (ibv_query_port(c, port, &pa) || pa.state != IBV_PORT_ACTIVE) {
        snprintf(why, whylen, "port %u is not ACTIVE", port);
        return false;
    }
    dc->roce = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
    if (dc->roce) {
        if (choose_roce_gid(c, port, &pa, dc, why, whylen))
            return false;
    } else {
        union ibv_gid g;
        static const uint8_t zero[16];
        if (ibv_query_gid(c, port, 0, &g) || memcmp(g.raw, zero, 16) == 0) {
            snprintf(why, whylen, "port %u has no GID", port);
            return false;
        }
        dc->gid_index = 0;
        inet_ntop(AF_INET6, g.raw, dc->gid_addr, sizeof(dc->gid_addr));
        dc->ndev[0] = '\0';
    }
    dc->port = port;
    dc->mtu = mtu_bytes(pa.active_mtu);
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
    char portwhy[160] = "";
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
                if (port_usable(c, (uint8_t)p, dc, portwhy, sizeof(portwhy))) {
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
            snprintf(why, whylen, "RDMA device '%s' has no usable port%s%s", cfg->device,
                     portwhy[0] ? ": " : "", portwhy);
        else
            snprintf(why, whylen, "%d RDMA device(s), none with an ACTIVE port and a usable "
                     "GID%s%s%s", num, portwhy[0] ? " (last: " : "", portwhy,
                     portwhy[0] ? ")" : "");
        return -ENODEV;
    }
    snprintf(why, whylen, "%s:%u active, GID index %d", dc->name, dc->port, dc->gid_index);
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
        return shoal__fail(ctx, -ENOMEM, "verbs: out of memory");
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
    /* librdmacm's device context: every rdma_cm id on the device uses it,
     * so our PD and CQs must too.  librdmacm keeps it open for the life of
     * the process, so the list is released at once: holding it would keep
     * librdmacm's own PD for the device allocated after the last rdma_cm
     * id is gone (rdma_free_devices drops the reference without freeing
     * it), one PD leaked per process as counted by `rdma resource`. */
    int n = 0;
    struct ibv_context **devs = rdma_get_devices(&n);
    for (int i = 0; devs && i < n; i++)
        if (strcmp(ibv_get_device_name(devs[i]->device), dc.name) == 0)
            v->verbs = devs[i];
    if (devs)
        rdma_free_devices(devs);
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
        const char *what = v->pd ? "ibv_create_comp_channel" : "ibv_alloc_pd";
        ctx_free(v);
        return shoal__fail(ctx, rc, "verbs: %s on %s: %s", what, dc.name, strerror(-rc));
    }
    if ((rc = set_nonblock(v->cch->fd))) {
        ctx_free(v);
        return shoal__fail(ctx, rc, "verbs: completion channel: %s", strerror(-rc));
    }
    /* Async events are read without blocking in progress().  (The device
     * context is librdmacm's, shared by every shoal context of the process;
     * each one checks that a QP event names one of its own QPs.) */
    (void)set_nonblock(v->verbs->async_fd);
    v->gid_index = dc.gid_index;
    v->roce = dc.roce;
    v->gid_v2 = dc.v2;
    v->active_mtu = dc.mtu;
    ctx->priv = v;
    snprintf(ctx->device, sizeof(ctx->device), "%s", dc.name);
    const char *kind = dc.roce ? (dc.v2 ? "RoCE v2" : "RoCE v1") : "InfiniBand";
    snprintf(ctx->describe, sizeof(ctx->describe), "verbs (%s:%u, %s GID %d %s%s%s, mtu %u)",
             dc.name, dc.port, kind, dc.gid_index, dc.gid_addr, dc.ndev[0] ? " on " : "",
             dc.ndev, dc.mtu);
    shoal__info(ctx, "verbs: %s port %u: %s GID index %d (%s%s%s), active MTU %u", dc.name,
                dc.port, kind, dc.gid_index, dc.gid_addr, dc.ndev[0] ? " on " : "", dc.ndev,
                dc.mtu);
    if (dc.roce && !dc.v2)
        shoal__warn(ctx, "verbs: %s port %u has no RoCE v2 GID with an IP address; RoCE v1 "
                    "is not routable beyond the local link", dc.name, dc.port);
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
    if (ep->hs.need_proof && ep->state == SHOAL_EP_CONNECTING)
        /* Server: the first arrival must be the client's proof. */
        verbs_hs_proof(ve, a->is_imm ? NULL : ve->rbuf + (size_t)a->slot * VERBS_RECV_SIZE,
                       a->is_imm ? 0 : a->len);
    else if (live && a->is_imm)
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
    while (ve->held_count && ve->ops_done >= ve->held[ve->held_head].barrier) {
        struct verbs_arrival a = ve->held[ve->held_head];
        ve->held_head = (ve->held_head + 1) % ve->rq_depth;
        ve->held_count--;
        deliver(ve, &a);
        n++;
    }
    return n;
}

/* A flush we did not cause: the device moved the QP to the error state
 * (e.g. after the peer's QP failed) without an error completion here. */
static void flushed_by_device(struct verbs_ep *ve)
{
    verbs_qp_error(ve);
    shoal__ep_failed(ve->ep, -ECONNRESET, "queue pair entered the error state");
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
        } else if (!ve->qp_err) {
            flushed_by_device(ve);
        }
        return;
    }
    struct verbs_arrival a = {.barrier = ve->ops_posted, .slot = (uint32_t)(wc->wr_id >> 1),
                              .len = wc->byte_len, .imm = ntohl(wc->imm_data),
                              .is_imm = wc->opcode == IBV_WC_RECV_RDMA_WITH_IMM};
    if (!ve->held_count && ve->ops_done >= a.barrier) {
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
            } else if (wc[i].status && !ve->qp_err) {
                flushed_by_device(ve);
            }
            verbs_sq_retire(ve, wc[i].wr_id >> 1, st, why);
        }
        total += n;
    } while (n == 32 && total < 1024);
    return total;
}

/* Act on an async event for one of our own QPs. */
static void qp_event(struct verbs_ep *ve, enum ibv_event_type type)
{
    if (type == IBV_EVENT_COMM_EST) {
        /* Data arrived on a QP whose connection rdma_cm has not yet seen
         * established (the RTU is late or lost): tell it, so it reports
         * ESTABLISHED now instead of timing the connection out. */
        if (ve->id && !ve->established)
            rdma_notify(ve->id, IBV_EVENT_COMM_EST);
        return;
    }
    verbs_qp_error(ve);
    shoal__ep_failed(ve->ep, -EIO, "queue pair error: %s", ibv_event_type_str(type));
}

static bool is_ours(struct verbs_ctx *v, const struct verbs_ep *ve)
{
    for (struct shoal_list *n = v->eps.next; n != &v->eps; n = n->next)
        if (shoal__container_of(n, struct verbs_ep, node) == ve)
            return true;
    return false;
}

/*
 * The async fd belongs to librdmacm's device context, shared by every
 * shoal context of the process: an event read here may concern another
 * context's QP.  Such an event is handed to its owner through flags in its
 * verbs_ep (read by the owner's progress), never acted on here: contexts
 * may run in different threads.  The verbs_ep is alive while we hold the
 * event: destroying its QP waits until the event is acknowledged.  Port
 * and device events reach only the context that reads them; the others'
 * connections then fail through their own completions or rdma_cm events.
 */
static void async_events(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    struct ibv_async_event ae;
    while (ibv_get_async_event(v->verbs, &ae) == 0) {
        switch (ae.event_type) {
        case IBV_EVENT_QP_FATAL:
        case IBV_EVENT_QP_REQ_ERR:
        case IBV_EVENT_QP_ACCESS_ERR:
        case IBV_EVENT_COMM_EST: {
            struct verbs_ep *ve = ae.element.qp ? ae.element.qp->qp_context : NULL;
            if (!ve || ve->kind != VOBJ_EP)
                break; /* not a shoal QP */
            if (is_ours(v, ve))
                qp_event(ve, ae.event_type);
            else if (ae.event_type == IBV_EVENT_COMM_EST)
                atomic_store(&ve->async_comm_est, true);
            else
                atomic_store(&ve->async_fatal, (int)ae.event_type + 1);
            break;
        }
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

/* Events another context read for our QPs (see async_events). */
static void handed_over_events(struct verbs_ep *ve)
{
    if (atomic_load_explicit(&ve->async_comm_est, memory_order_relaxed) &&
        atomic_exchange(&ve->async_comm_est, false))
        qp_event(ve, IBV_EVENT_COMM_EST);
    int t = atomic_load_explicit(&ve->async_fatal, memory_order_relaxed);
    if (t && (t = atomic_exchange(&ve->async_fatal, 0)))
        qp_event(ve, (enum ibv_event_type)(t - 1));
}

/* rdma_cm and async events, and the half-open sweep: each fd check is a
 * failing system call (a write on the rdma_cm fd, a read on the async fd)
 * when there is nothing, which is almost always. */
static int fd_events(shoal_ctx_t *ctx)
{
    int n = verbs_cm_events(ctx);
    async_events(ctx);
    verbs_sweep_half_open(ctx);
    return n;
}

/* Every pass polls the CQs (no system call) and the flags other contexts
 * may have set; the event fds are checked on every 32nd pass and before
 * every sleep (verbs_wait_fds): each check is a failing system call, which on
 * every pass would cost more than the pass itself (docs/PERFORMANCE.md). */
#define VERBS_EVENT_PACE 32

int verbs_progress(shoal_ctx_t *ctx)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    int n = 0;
    for (struct shoal_list *l = v->eps.next; l != &v->eps; l = l->next) {
        struct verbs_ep *ve = shoal__container_of(l, struct verbs_ep, node);
        handed_over_events(ve);
        n += verbs_poll_ep(ve);
    }
    if (++v->passes % VERBS_EVENT_PACE == 0)
        n += fd_events(ctx);
    return n;
}

/*
 * Before a sleep (shoal_wait has already spun on progress, or the progress
 * thread is idle): arm every CQ, check once more (a completion may have
 * landed before arming), and name the completion channel, the rdma_cm
 * channel and the async-event fd for the core's poll().
 */
static int verbs_wait_fds(shoal_ctx_t *ctx, struct pollfd *fds, int *timeout_ms)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    for (struct shoal_list *l = v->eps.next; l != &v->eps; l = l->next) {
        struct verbs_ep *ve = shoal__container_of(l, struct verbs_ep, node);
        if (ve->cq && !ve->cq_armed && ibv_req_notify_cq(ve->cq, 0) == 0)
            ve->cq_armed = true;
    }
    if (verbs_progress(ctx) || fd_events(ctx))
        return 0;
    /* Wake for the next half-open connection's deadline. */
    uint64_t next = verbs_sweep_half_open(ctx);
    if (next != UINT64_MAX) {
        uint64_t now = shoal__now_ms();
        int until = next > now ? (int)(next - now) + 1 : 0;
        if (*timeout_ms < 0 || until < *timeout_ms)
            *timeout_ms = until;
    }
    fds[0] = (struct pollfd){.fd = v->cch->fd, .events = POLLIN};
    fds[1] = (struct pollfd){.fd = v->ech->fd, .events = POLLIN};
    fds[2] = (struct pollfd){.fd = v->verbs->async_fd, .events = POLLIN};
    return 3;
}

/* After the sleep: take the completion channel's events (the channel is
 * non-blocking, so this is a no-op when another sleeper took them). */
static void verbs_wait_done(shoal_ctx_t *ctx, const struct pollfd *fds, int nfds)
{
    struct verbs_ctx *v = verbs_ctx(ctx);
    if (nfds < 1 || !(fds[0].revents & POLLIN))
        return;
    struct ibv_cq *cq;
    void *cqctx;
    while (ibv_get_cq_event(v->cch, &cq, &cqctx) == 0) {
        ibv_ack_cq_events(cq, 1);
        ((struct verbs_ep *)cqctx)->cq_armed = false;
    }
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
    .wait_fds = verbs_wait_fds,
    .wait_done = verbs_wait_done,
};
