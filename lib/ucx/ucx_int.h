/*
 * ucx_int.h -- private state of the UCX provider (lib/ucx/ only).
 *
 * One UCP context and one UCP worker per shoal context (SINGLE thread
 * mode, or SERIALIZED with the progress thread).  Connections are set up
 * over TCP sockets this provider owns (ucx_boot.c: listener, the
 * bootstrap handshake of lib/boot.h), which end in an exchange of UCP
 * worker addresses; each side then makes its UCP endpoint from the other's
 * address (ucx_ep.c).  Control traffic rides on UCP active messages; every
 * active message carries the receiver's endpoint token in its header and
 * is sent with the REPLY flag, so the receiver can check that the token
 * belongs to the very UCX connection the message came in on (bound by the
 * BIND message and the cookie exchanged in the handshake) before it trusts
 * anything else.
 */
#ifndef SHOAL_UCX_INT_H
#define SHOAL_UCX_INT_H

#include <ucp/api/ucp.h>

#include "boot.h"
#include "provider.h"

/* Active message ids. */
enum {
    UCX_AM_BIND = 0,  /* header: token u32, cookie u64 -- each side's first
                         message on a new connection */
    UCX_AM_CLOSE,     /* header: token u32 -- the sender closes the connection */
    UCX_AM_IMM,       /* header: token u32, imm u32 -- after a fence */
    UCX_AM_MSG,       /* header: token u32; data: the control message */
    UCX_AM_GET_REQ,   /* header: token u32, req u32, addr u64, len u64, key u64 */
    UCX_AM_GET_RESP,  /* header: token u32, req u32, status i32; data */
    UCX_AM_PUT_IMM,   /* header: token u32, imm u32, addr u64, key u64; data: the bytes */
    UCX_AM_PUT,       /* header: as PUT_IMM (imm unused); data: the bytes */
    UCX_AM_COUNT
};
#define UCX_BIND_HDR 12
#define UCX_CLOSE_HDR 4
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

/* epoll tags: what an epoll event's data.ptr points at. */
enum { UCX_FD_LISTENER = 0x4c535455, UCX_FD_BOOT = 0x54534f42 };

struct ucx_ctx {
    ucp_context_h context;
    ucp_worker_h worker;
    int efd;                   /* worker's event fd for blocking waits */
    ucp_address_t *waddr;      /* our worker address, for the handshake */
    size_t waddr_len;
    shoal_ep_t **slots;        /* token -> ep lookup, index = token & 0xffff */
    unsigned nslots;
    uint16_t gen;              /* generation bits of the next token */
    int epfd;                  /* epoll: listening and bootstrap sockets */
    unsigned nsockets;         /* sockets in epfd */
    struct shoal_list pending; /* server-side eps from accept until ready, oldest first */
    unsigned npending;
    struct shoal_list failed;  /* connected eps whose UCX ep must be force-closed */
    struct shoal_list bound;   /* eps whose peer's BIND arrived, to finish after progress */
    bool sweep;                /* some pending ep failed: discard after progress */
    bool in_progress;          /* inside ucp_worker_progress */
    bool arrived;              /* an IMM or message arrived in this progress call */
    unsigned passes;           /* progress calls, to pace the socket checks */
    bool put_by_am;            /* TCP is the only transport: puts go as PUT messages */
    size_t put_piece;          /* ... each at most this long (fits one TCP segment) */
    struct shoal_list mrs;     /* registered regions, checked by GET_REQ */
    struct shoal_op **gets;    /* gets in flight, index = req & 0xfffff */
    unsigned ngets;
    uint32_t get_gen;
};

/* A bootstrap connection (ucx_boot.c): the socket and its protocol. */
struct ucx_boot {
    uint32_t tag;              /* UCX_FD_BOOT */
    int fd;
    bool connecting;           /* client: the TCP connect is in progress */
    bool handed;               /* DONE: the addresses went to ucx_boot_done */
    bool want_out;             /* EPOLLOUT is registered */
    struct shoal_boot proto;
};

struct ucx_ep {
    ucp_ep_h uep;              /* the UCP endpoint we made from the peer's address */
    ucp_ep_h rx_ep;            /* where the peer's messages arrive (its BIND's reply
                                  ep): uep, unless UCP did not pair the two sides'
                                  endpoints, then also ours to close */
    uint32_t token;            /* our id for this connection (slot | gen<<16) */
    uint32_t peer_token;       /* the peer's id, put in every AM we send */
    uint64_t cookie;           /* ours: the peer's BIND must carry it */
    uint64_t peer_cookie;      /* the peer's: our BIND carries it */
    uint8_t *peer_addr;        /* server: the client's worker address, until BIND */
    size_t peer_addrlen;
    struct ucx_boot *boot;     /* the bootstrap socket, while the handshake runs */
    ucs_status_t fail_status;  /* why it failed, if it did */
    shoal_listener_t *listener;/* server side, until handed to accept */
    struct shoal_list pnode;   /* on ucx_ctx.pending while handshaking */
    struct shoal_list fnode;   /* on ucx_ctx.failed until force-closed */
    struct shoal_list bnode;   /* on ucx_ctx.bound until finished */
    uint64_t deadline;         /* server: ready by then (ms), or dropped */
    int hs_err;                /* client: the handshake failed (negative errno) */
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
    uint32_t tag;              /* UCX_FD_LISTENER */
    int fd;
    shoal_listener_t *l;
};

static inline struct ucx_ctx *ucx_ctx(const shoal_ctx_t *ctx) { return ctx->priv; }
static inline struct ucx_ep *ucx_ep(const shoal_ep_t *ep) { return ep->priv; }

/* ucx_ep.c */
int ucx_am_init(shoal_ctx_t *ctx);
int ucx_connect(shoal_ep_t *ep, const char *host, uint16_t port);
void ucx_ep_close(shoal_ep_t *ep);
void ucx_sweep_pending(shoal_ctx_t *ctx);
int ucx_status_errno(ucs_status_t st);
void ucx_ep_abort(shoal_ep_t *ep, int status, const char *why);
/* A new endpoint's private state (token, cookie): 0 or -errno with errmsg. */
int ucx_ep_priv_new(shoal_ep_t *ep);
/* The bootstrap handshake of @ep is done: make the UCP endpoint from the
 * peer's address and, on the client, send our BIND. */
void ucx_boot_done(shoal_ep_t *ep, struct shoal_boot *b);
/* Server: an ep enters the pending list (the cap is enforced by
 * ucx_boot.c's accept); the earliest deadline on it (UINT64_MAX: none). */
void ucx_pending_add(shoal_ep_t *ep, shoal_listener_t *l);
uint64_t ucx_pending_deadline(shoal_ctx_t *ctx);
/* Drop the pending endpoints past their deadline (logged). */
void ucx_expire_pending(shoal_ctx_t *ctx);

/* ucx_boot.c */
int ucx_boot_init(shoal_ctx_t *ctx);
void ucx_boot_fini(shoal_ctx_t *ctx);
int ucx_listen(shoal_listener_t *l, const char *host, uint16_t port);
void ucx_listener_close(shoal_listener_t *l);
/* Client: open the socket to @ss and start the handshake of @ep. */
int ucx_boot_connect(shoal_ep_t *ep, const struct sockaddr_storage *ss, socklen_t sl);
/* Accept, read and write what the sockets have (no blocking); returns
 * how much work was done. */
int ucx_boot_progress(shoal_ctx_t *ctx);
/* Free @ep's bootstrap socket, if it still has one. */
void ucx_boot_free(shoal_ep_t *ep);
/* Most server handshakes pending at once per context: when full, the
 * oldest is dropped for the newest. */
#define UCX_PENDING_MAX 256

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
