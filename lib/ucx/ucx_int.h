/*
 * ucx_int.h -- private state of the UCX provider (lib/ucx/ only).
 *
 * One UCP context and one UCP worker per shoal context, single-threaded.
 * Control traffic rides on UCP active messages; every active message
 * carries the receiver's endpoint token in its header and is sent with the
 * REPLY flag, so the receiver can check that the token belongs to the very
 * connection the message came in on before it trusts anything else.
 */
#ifndef SHOAL_UCX_INT_H
#define SHOAL_UCX_INT_H

#include <ucp/api/ucp.h>

#include "provider.h"

/* Active message ids. */
enum {
    UCX_AM_HELLO = 0, /* client -> server: struct shoal_hello (header); with
                         authentication also the client's proof after the ack */
    UCX_AM_HELLO_ACK, /* server -> client: struct shoal_hello (header) */
    UCX_AM_IMM,       /* header: token u32, imm u32 -- after a fence */
    UCX_AM_MSG,       /* header: token u32; data: the control message */
    UCX_AM_GET_REQ,   /* header: token u32, req u32, addr u64, len u64, key u64 */
    UCX_AM_GET_RESP,  /* header: token u32, req u32, status i32; data */
    UCX_AM_PUT_IMM,   /* header: token u32, imm u32, addr u64, key u64; data: the bytes */
    UCX_AM_PUT,       /* header: as PUT_IMM (imm unused); data: the bytes */
    UCX_AM_COUNT
};
#define UCX_IMM_HDR 8
#define UCX_MSG_HDR 4
#define UCX_GET_REQ_HDR 32
#define UCX_GET_RESP_HDR 12
#define UCX_PUT_IMM_HDR 24
/* Every region's descriptor key starts with 8 random bytes, its key: a
 * PUT or GET request must carry the key of the region it targets, so a
 * peer reaches only regions whose descriptor it was given (over TCP, UCX
 * checks no rkey itself). */
#define UCX_KEY_LEN 8
/* A put with immediate of at most this many bytes travels as one
 * PUT_IMM active message (data and immediate together) instead of
 * put + fence + IMM: one message per direction instead of two. */
#define UCX_PUT_IMM_MAX 8192
/* Bytes of a TCP segment left for headers when a put is cut into pieces. */
#define UCX_SEG_HEADROOM 4096

struct ucx_ctx {
    ucp_context_h context;
    ucp_worker_h worker;
    int efd;                   /* worker's event fd for blocking waits */
    shoal_ep_t **slots;        /* token -> ep lookup, index = token & 0xffff */
    unsigned nslots;
    uint16_t gen;              /* generation bits of the next token */
    struct shoal_list pending; /* server-side eps still in handshake */
    struct shoal_list failed;  /* connected eps whose UCX ep must be force-closed */
    bool sweep;                /* some pending ep failed: discard after progress */
    bool in_progress;          /* inside ucp_worker_progress */
    bool arrived;              /* an IMM or message arrived in this progress call */
    bool put_by_am;            /* TCP is the only transport: puts go as PUT messages */
    size_t put_piece;          /* ... each at most this long (fits one TCP segment) */
    struct shoal_list mrs;     /* registered regions, checked by GET_REQ */
    struct shoal_op **gets;    /* gets in flight, index = req & 0xfffff */
    unsigned ngets;
    uint32_t get_gen;
};

struct ucx_ep {
    ucp_ep_h uep;
    uint32_t token;            /* our id for this connection (slot | gen<<16) */
    uint32_t peer_token;       /* the peer's id, put in every AM we send */
    ucs_status_t fail_status;  /* why it failed, if it did */
    shoal_listener_t *listener;/* server side, until handshaken */
    struct shoal_list pnode;   /* on ucx_ctx.pending while handshaking */
    struct shoal_list fnode;   /* on ucx_ctx.failed until force-closed */
    bool hello_acked;          /* client: HELLO_ACK arrived */
    uint64_t deadline;         /* server: handshake must finish by then (ms) */
    int hs_err;                /* client: the handshake refused (negative errno) */
    char hs_why[256];          /* ... and why */
    bool unfenced;             /* plain puts issued since the last fence */
};

struct ucx_mr {
    ucp_mem_h memh;
    uint64_t key;              /* random; the first UCX_KEY_LEN bytes of the descriptor key */
    shoal_mr_t *mr;
    struct shoal_list node;    /* on ucx_ctx.mrs */
};

struct ucx_listener {
    ucp_listener_h ul;
};

static inline struct ucx_ctx *ucx_ctx(const shoal_ctx_t *ctx) { return ctx->priv; }
static inline struct ucx_ep *ucx_ep(const shoal_ep_t *ep) { return ep->priv; }

/* ucx_ep.c */
int ucx_am_init(shoal_ctx_t *ctx);
int ucx_listen(shoal_listener_t *l, const char *host, uint16_t port);
void ucx_listener_close(shoal_listener_t *l);
int ucx_connect(shoal_ep_t *ep, const char *host, uint16_t port);
void ucx_ep_close(shoal_ep_t *ep);
void ucx_sweep_pending(shoal_ctx_t *ctx);
int ucx_status_errno(ucs_status_t st);
void ucx_ep_abort(shoal_ep_t *ep, int status, const char *why);

/* ucx_rma.c */
int ucx_put(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
            shoal_rmr_t *rmr, size_t roff, size_t len, unsigned flags,
            uint32_t imm);
int ucx_get(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr, size_t loff,
            shoal_rmr_t *rmr, size_t roff, size_t len);
int ucx_send(shoal_ep_t *ep, struct shoal_op *op, const void *buf, size_t len);
int ucx_rmr_init(shoal_rmr_t *rmr);
void ucx_rmr_fini(shoal_rmr_t *rmr);
ucs_status_t ucx_am_get_req(void *arg, const void *header, size_t hlen, void *data,
                            size_t len, const ucp_am_recv_param_t *param);
ucs_status_t ucx_am_put_imm(void *arg, const void *header, size_t hlen, void *data,
                            size_t len, const ucp_am_recv_param_t *param);
ucs_status_t ucx_am_put(void *arg, const void *header, size_t hlen, void *data,
                        size_t len, const ucp_am_recv_param_t *param);
ucs_status_t ucx_am_get_resp(void *arg, const void *header, size_t hlen, void *data,
                             size_t len, const ucp_am_recv_param_t *param);
/* Fail every get still waiting for an answer on @ep. */
void ucx_fail_gets(shoal_ep_t *ep, int status, const char *why);
shoal_ep_t *ucx_ep_lookup(shoal_ctx_t *ctx, uint32_t token, const ucp_am_recv_param_t *param,
                          const char *what);
int ucx_am_send_hdr(shoal_ep_t *ep, unsigned id, const void *hdr, size_t hlen);

#endif
