/*
 * verbs_int.h -- private state of the rdma-core verbs provider (lib/verbs/
 * only).
 *
 * One rdma_cm event channel, one protection domain and one completion
 * channel per shoal context; one RC queue pair with its own completion
 * queue per endpoint (so closing an endpoint can drain exactly its own
 * completions).  All CQs share the context's completion channel, which
 * shoal_wait() sleeps on together with the rdma_cm channel and the
 * device's async-event fd.
 *
 * Receive side.  Each QP keeps VERBS_RQ_DEPTH receives posted, each of
 * SHOAL_MSG_MAX bytes in one registered ring.  A receive is consumed by a
 * control message (IBV_WC_RECV) or by an RDMA write with immediate
 * (IBV_WC_RECV_RDMA_WITH_IMM) and reposted at once.  Flow control is the
 * hardware's: rnr_retry_count 7 (retry forever on receiver-not-ready) with
 * a short min_rnr_timer, so a sender that outruns the ring is paused, not
 * failed.
 *
 * Send side.  A ring mirrors the send queue: one entry per posted WR (the
 * op it belongs to), retired in posting order, since an RC send queue
 * completes in order.  A send wr_id is the WR's sequence number << 1, so a
 * completion retires every earlier WR too: that is what lets most WRs go
 * unsignaled.  Signaled are the last WR of each put and get and of each
 * control message sent from a bounce buffer (each owes the application a
 * completion event), and at least every VERBS_SIGNAL_EVERY-th WR, and any
 * WR that fills the ring.  Unsignaled are the leading pieces of a split
 * transfer and inline control messages; an inline message completes at
 * post (its bytes are in the WR), like an eager send on UCX.  Errors and
 * flushes complete unsignaled WRs too.  A full ring is -EAGAIN (the core
 * passes it to the caller: poll and retry), never an overflowing post.
 * Receive wr_ids are (slot << 1) | 1, telling them apart even in error
 * completions, whose opcode is undefined.
 */
#ifndef SHOAL_VERBS_INT_H
#define SHOAL_VERBS_INT_H

#include <stdatomic.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#include "provider.h"

#define VERBS_RQ_DEPTH 512        /* receives posted per QP */
#define VERBS_RECV_SIZE SHOAL_MSG_MAX
#define VERBS_NBOUNCE 64          /* send bounce buffers per QP */
#define VERBS_SIGNAL_EVERY 16     /* at most 15 unsignaled WRs in a row */
#define VERBS_MAX_CHUNKS 64       /* WRs one put or get may be cut into */
#define VERBS_WR_BYTES (1u << 20) /* preferred WR size of a large put or get */
#define VERBS_INLINE_WANT 128     /* max_inline_data asked for */
#define VERBS_RETRY_COUNT 6       /* 7 = forever on rxe: a dead host is never found */
#define VERBS_RNR_RETRY 7         /* forever: RNR is our flow control */
#define VERBS_ACK_TIMEOUT 14      /* 4.096 us * 2^14 = 67 ms per try */
#define VERBS_MIN_RNR_TIMER 1     /* 0.01 ms */
#define VERBS_RESOLVE_MS 2000
#define VERBS_DRAIN_MS 200        /* flush wait when the peer disconnects */

enum { VOBJ_EP = 0x45505645, VOBJ_LISTENER = 0x4c535456 };

struct verbs_ctx {
    struct rdma_event_channel *ech;
    struct ibv_context *verbs;     /* the device in use (librdmacm's context) */
    struct ibv_pd *pd;
    struct ibv_comp_channel *cch;
    struct ibv_device_attr dattr;
    uint8_t port;
    int gid_index;                 /* the GID chosen for the port (see verbs_ctx.c) */
    bool roce, gid_v2;             /* Ethernet link layer; that GID is RoCE v2 */
    bool warned_gid;               /* warned once that rdma_cm used another type */
    unsigned active_mtu;           /* the port's active MTU, bytes */
    uint32_t max_msg_sz;
    char devname[64];
    struct shoal_list eps;         /* every verbs_ep */
    unsigned passes;               /* progress calls, to pace the event-fd checks */
};

struct verbs_ep {
    uint32_t kind;                 /* VOBJ_EP: cm_id context tag */
    shoal_ep_t *ep;
    struct rdma_cm_id *id;
    struct ibv_cq *cq;
    struct ibv_qp *qp;
    bool cq_armed;
    struct shoal_list node;        /* on verbs_ctx.eps */
    shoal_listener_t *listener;    /* server side, until established */
    uint64_t deadline;             /* ... which must happen before this (ms) */
    struct shoal_list pnode;       /* on verbs_listener.pending then */
    /* receive ring */
    uint8_t *rbuf;
    struct ibv_mr *rmr;
    unsigned rq_depth, recv_posted;
    /* send bounce buffers for messages that do not fit inline */
    uint8_t *sbuf;
    struct ibv_mr *smr;
    unsigned sfree[VERBS_NBOUNCE], nsfree;
    uint32_t max_inline;
    unsigned path_mtu;             /* bytes, as rdma_cm set it (verbs_check_path) */
    /* mirror of the send queue, one entry per WR not yet retired */
    struct verbs_swr {
        struct shoal_op *op;       /* NULL: completed at post (inline send) */
    } *sq;
    unsigned sq_cap, sq_head, sq_count;
    unsigned unsignaled;           /* WRs posted since the last signaled one */
    uint64_t sq_posted, sq_done;   /* WRs posted / retired, ever */
    uint64_t ops_posted, ops_done; /* ops owing a CQ completion / done */
    /* Arrivals held back until the operations posted before they arrived
     * have completed (so a peer's answer never overtakes the completion
     * of what it answers); each keeps its receive slot until delivered. */
    struct verbs_arrival {
        uint64_t barrier;          /* deliver once ops_done >= barrier */
        uint32_t slot, len, imm;
        bool is_imm;
    } *held;
    unsigned held_head, held_count;
    /* connection state */
    bool established, qp_err, timeout_set;
    /* Async events on this QP read by another context of the process
     * (they share librdmacm's device and its async fd): set there, acted
     * on by the owner's progress.  Event type + 1, or 0. */
    _Atomic int async_fatal;
    _Atomic bool async_comm_est;
    int cm_err;                    /* connect failed: negative errno */
    char why[160];
};

struct verbs_listener {
    uint32_t kind;                 /* VOBJ_LISTENER */
    shoal_listener_t *l;
    struct rdma_cm_id *id;
    struct shoal_list pending;     /* verbs_ep in handshake */
};

static inline struct verbs_ctx *verbs_ctx(const shoal_ctx_t *ctx) { return ctx->priv; }
static inline struct verbs_ep *verbs_ep(const shoal_ep_t *ep) { return ep->priv; }

/* verbs_ctx.c */
int verbs_progress(shoal_ctx_t *ctx);
int verbs_poll_ep(struct verbs_ep *ve);
int verbs_wc_errno(enum ibv_wc_status st);

/* verbs_ep.c */
int verbs_cm_events(shoal_ctx_t *ctx);
int verbs_listen(shoal_listener_t *l, const char *host, uint16_t port);
void verbs_listener_close(shoal_listener_t *l);
int verbs_connect(shoal_ep_t *ep, const char *host, uint16_t port);
void verbs_ep_close(shoal_ep_t *ep);
void verbs_qp_error(struct verbs_ep *ve);
int verbs_post_recv(struct verbs_ep *ve, unsigned slot);
uint64_t verbs_sweep_half_open(shoal_ctx_t *ctx);
/* Server: the first message on a connection that owes its proof. */
void verbs_hs_proof(struct verbs_ep *ve, const void *buf, size_t len);

/* verbs_ops.c */
int verbs_put(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
              shoal_rmr_t *rmr, size_t roff, size_t len, unsigned flags, uint32_t imm);
int verbs_get(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
              shoal_rmr_t *rmr, size_t roff, size_t len);
int verbs_send(shoal_ep_t *ep, struct shoal_op *op, const void *buf, size_t len);
/* Client: send a handshake message (proof or refusal) as the first SEND and
 * wait, bounded, for its completion. */
int verbs_send_hs(struct verbs_ep *ve, const void *buf, size_t len);
int verbs_rmr_init(shoal_rmr_t *rmr);
void verbs_rmr_fini(shoal_rmr_t *rmr);
int verbs_mr_reg(shoal_mr_t *mr);
void verbs_mr_dereg(shoal_mr_t *mr);
/* A completion for send WR number @seq: retire it and every earlier WR
 * (those completed successfully); @status is @seq's own. */
void verbs_sq_retire(struct verbs_ep *ve, uint64_t seq, int status, const char *reason);
/* Close: complete whatever the mirror still holds with @status. */
void verbs_sq_cancel(struct verbs_ep *ve, int status, const char *reason);
/* Operations still owing a completion. */
static inline bool verbs_ops_pending(const struct verbs_ep *ve)
{
    return ve->ops_done < ve->ops_posted;
}
/* Deliver the held arrivals whose barrier has passed; returns how many. */
int verbs_deliver_held(struct verbs_ep *ve);

#endif
