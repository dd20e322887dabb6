/*
 * provider.h -- the contract between libshoal's transport-neutral core
 * (lib/core/) and one transport provider (lib/ucx/, lib/verbs/).
 *
 * The core owns every public object (ctx, mr, rmr, listener, ep), the
 * descriptor format, range and access checks, per-endpoint queue depth,
 * the event queue and the endpoint state machine.  A provider owns only
 * its private state (the fields marked "prov") and moves bytes.  It may
 * read core fields (an endpoint's state, its handshake state) but never
 * writes them, and never touches the event queue: it reports through the
 * shoal__* functions at the bottom of this file (shoal__ep_connected,
 * shoal__ep_failed, ...), and the core changes the state.
 *
 * What adding a provider takes is listed in docs/ARCHITECTURE.md ("The
 * provider interface"): a folder and build fragment, a configure check,
 * this table's declaration and a line in lib/core/ctx.c, a
 * shoal_transport_t value and its name, and the test suites' lists.
 *
 * Not for applications: this header is not installed.
 */
#ifndef SHOAL_PROVIDER_H
#define SHOAL_PROVIDER_H

#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "shoal.h"

/* The connection handshake every provider carries in its own way (active
 * messages on UCX, rdma_cm private data plus one first SEND on verbs).
 * Layout (version 3), little-endian:
 *    0 u32 magic "SOAL"   4 u16 version   6 u8 transport   7 u8 flags
 *    8 u32 ep_id          12 u32 peer_id
 *   16 what the flags announce, in this order:
 *      SHOAL_HELLO_AUTH:   nonce[16]  the sender holds a secret; its challenge
 *      SHOAL_HELLO_PROOF:  proof[32]  HMAC-SHA256 answering the peer's challenge
 *      SHOAL_HELLO_REFUSE: u8 reason  the sender refuses the connection
 * Trailing bytes are ignored (rdma_cm pads private data). */
#define SHOAL_WIRE_MAGIC   0x4c414f53u  /* "SOAL" little-endian */
#define SHOAL_WIRE_VERSION 3      /* 3: UCX PUT and GET requests carry the region's key */
#define SHOAL_HELLO_LEN    16           /* the fixed part */
#define SHOAL_NONCE_LEN    16
#define SHOAL_PROOF_LEN    32
#define SHOAL_HELLO_MAX    (SHOAL_HELLO_LEN + SHOAL_NONCE_LEN + SHOAL_PROOF_LEN + 1)
#define SHOAL_HELLO_AUTH   0x01
#define SHOAL_HELLO_PROOF  0x02
#define SHOAL_HELLO_REFUSE 0x04
/* Refusal reasons, from the refusing side's point of view. */
enum {
    SHOAL_REFUSE_AUTH_REQUIRED = 1, /* I have a secret; you sent no authentication */
    SHOAL_REFUSE_AUTH_UNEXPECTED,   /* I have no secret; you sent authentication */
    SHOAL_REFUSE_AUTH_FAILED,       /* your proof does not match my secret */
};
struct shoal_hello {
    uint32_t magic;
    uint16_t version;
    uint8_t transport;
    uint8_t flags;
    uint32_t ep_id;     /* the sender's id for this connection */
    uint32_t peer_id;   /* in a reply: the id the other side sent */
    uint8_t nonce[SHOAL_NONCE_LEN];
    uint8_t proof[SHOAL_PROOF_LEN];
    uint8_t reason;
};
/* Encode; returns the length (at most SHOAL_HELLO_MAX). */
size_t shoal__hello_encode(const struct shoal_hello *h, uint8_t out[SHOAL_HELLO_MAX]);
/* Decode and validate; returns 0, -EBADMSG (short, bad magic, unknown
 * flags) or -EPROTO (version or transport mismatch with @transport).  @why
 * gets text. */
int shoal__hello_decode(const void *buf, size_t len, shoal_transport_t transport,
                        struct shoal_hello *h, char *why, size_t whylen);

/*
 * The handshake, with authentication when SHOAL_AUTH_FILE is set (auth.c).
 * The provider moves the bytes; these functions decide.
 *   client                          server
 *   HELLO [AUTH nonce_c]      ->    shoal__hs_accept
 *   shoal__hs_ack             <-    HELLO_ACK [AUTH nonce_s, PROOF proof_s] or REFUSE
 *   proof [PROOF proof_c]     ->    shoal__hs_proof (only with a secret)
 * Without a secret on either side it is the first two messages alone.
 * On the server the endpoint is handed to the listener only once
 * ep->hs.need_proof is false.
 */
struct shoal_hs {
    uint32_t my_id, peer_id;
    uint8_t my_nonce[SHOAL_NONCE_LEN], peer_nonce[SHOAL_NONCE_LEN];
    bool auth;          /* both sides hold a secret */
    bool need_proof;    /* server: waiting for the client's proof */
};
/* Client: make the first hello for an endpoint whose id is @my_id. */
int shoal__hs_hello(shoal_ep_t *ep, uint32_t my_id, uint8_t out[SHOAL_HELLO_MAX],
                    size_t *outlen);
/* Server: a HELLO arrived on @ep (ep->peer set).  0: send @out (the
 * HELLO_ACK); the endpoint is then ready, or waits for a proof if
 * ep->hs.need_proof.  Negative: refused, a warning naming the peer is
 * logged; send @out if *outlen (the refusal, with a reason), then drop. */
int shoal__hs_accept(shoal_ep_t *ep, const void *in, size_t inlen, uint32_t my_id,
                     uint8_t out[SHOAL_HELLO_MAX], size_t *outlen);
/* Client: the server's answer (a HELLO_ACK, or a refusal) arrived.
 * 0: the server is accepted; send @out if *outlen (our proof).  Negative
 * (-EACCES, -EBADMSG, -EPROTO): the ctx's errmsg says why; send @out if
 * *outlen (telling the server why), then fail the connect. */
int shoal__hs_ack(shoal_ep_t *ep, const void *in, size_t inlen,
                  uint8_t out[SHOAL_HELLO_MAX], size_t *outlen);
/* Server: the client's proof arrived.  0: authenticated.  Negative:
 * refused (warning logged naming the peer). */
int shoal__hs_proof(shoal_ep_t *ep, const void *in, size_t inlen);

/* ------------------------------------------------------------------ */
/* Core objects (fields marked "core" are the core's; "prov" is yours) */
/* ------------------------------------------------------------------ */

/* A doubly linked list node; embedded in the objects that live on lists. */
struct shoal_list {
    struct shoal_list *prev, *next;
};

/* One queued event, with storage for what the public event points at. */
struct shoal_qev {
    shoal_event_t ev;
    void *data;        /* malloc'd copy of a received message, or NULL */
    char reason[160];
};

/* A growable ring of queued events, plus the batch last handed out. */
struct shoal_evq {
    struct shoal_qev *ring;
    unsigned cap, head, count;      /* ring: cap is a power of two */
    struct shoal_qev *batch;        /* events returned by the last poll */
    unsigned batch_cap, batch_len;
};

struct shoal_ctx {
    shoal_config_t cfg;                  /* core: resolved config */
    const struct shoal_provider *prov;   /* core: the provider in use */
    void *priv;                          /* prov: provider state */
    char describe[256];                  /* prov may fill in ctx_init */
    char device[SHOAL_DEVICE_MAX];       /* prov may fill in ctx_init: the
                                            device in use (RDMA device or
                                            netdev), which placement follows */
    struct shoal_plan *plan;             /* core: placement (core/topo.c) */
    long spin_ns;                        /* core: shoal_wait polls this long, then sleeps */
    char errmsg[512];                    /* core: last call's error text (shoal_ctx_errmsg) */
    char *err_out;                       /* core: where shoal__fail writes: errmsg, or
                                            pt_err while the progress thread works */
    char pt_err[512];                    /* core: the progress thread's scratch errmsg */
    /* core: SHOAL_PROGRESS=thread (core/progress.c).  Every public call
     * holds `lock` (shoal__lock); the thread takes it only with trylock,
     * and only while the application is neither in a call nor progressing. */
    bool threaded;                       /* the thread runs: calls take the lock */
    pthread_mutex_t lock;
    atomic_uint app_want;                /* application calls waiting for the lock */
    atomic_ulong app_progress;           /* progress passes the application made */
    pthread_t thread;
    int wake_fd;                         /* eventfd: wakes the thread to stop */
    bool stop;                           /* under lock: the thread must exit */
    struct shoal_evq evq;                /* core */
    struct shoal_list eps;               /* core: every endpoint */
    struct shoal_list listeners;         /* core */
    unsigned n_mrs;                      /* core: live registrations */
    struct shoal_op *free_ops;           /* core: op freelist */
    uint32_t next_ep_id;                 /* core: ids for endpoints */
    uint8_t *auth_key;                   /* core: SHOAL_AUTH_FILE's secret, or NULL */
    size_t auth_keylen;
};

struct shoal_mr {
    shoal_ctx_t *ctx;
    void *addr;
    size_t len;
    unsigned access;
    void *priv;                          /* prov */
    uint8_t key[SHOAL_DESC_MAX];         /* prov: fills key, keylen in mr_reg */
    uint32_t keylen;
};

struct shoal_rmr {
    shoal_ep_t *ep;                      /* NULL once detached by ep close */
    struct shoal_list node;              /* core: on ep->rmrs */
    uint64_t addr;                       /* peer's virtual address */
    uint64_t len;
    unsigned access;
    void *priv;                          /* prov: made by rmr_init */
    uint32_t keylen;
    uint8_t key[];                       /* the packed key from the peer */
};

struct shoal_listener {
    shoal_ctx_t *ctx;
    struct shoal_list node;              /* core: on ctx->listeners */
    struct shoal_list ready;             /* core: handshaken, not yet accepted eps */
    uint16_t port;                       /* prov: the bound port */
    void *priv;                          /* prov */
};

enum shoal_ep_state {
    SHOAL_EP_CONNECTING = 0,             /* handshake not finished */
    SHOAL_EP_CONNECTED,
    SHOAL_EP_FAILED,
    SHOAL_EP_CLOSING
};

struct shoal_ep {
    shoal_ctx_t *ctx;
    struct shoal_list node;              /* core: on ctx->eps, or on a
                                            listener's ready list */
    struct shoal_list rmrs;              /* core: unpacked regions */
    shoal_listener_t *listener;          /* core: set while unaccepted */
    enum shoal_ep_state state;           /* core, via shoal__ep_* */
    uint32_t id;                         /* core: unique in the ctx */
    unsigned outstanding;                /* core: ops not yet completed */
    bool abort;                          /* core: shoal_ep_abort(): close
                                            without flushing */
    char peer[96];                       /* prov: "host:port" */
    char dial_host[80];                  /* core: what shoal_connect*() was given */
    uint16_t dial_port;                  /* ... (0: accepted, not dialed) */
    struct shoal_hs hs;                  /* core: handshake state (auth.c) */
    void *user;
    void *priv;                          /* prov */
};

/* One operation in flight.  The core allocates it and hands it to the
 * provider, which calls shoal__op_done() exactly once per `pending`
 * reference it holds (a put with immediate may need two completions). */
enum shoal_op_kind { SHOAL_OP_PUT = 1, SHOAL_OP_GET, SHOAL_OP_SEND };

struct shoal_op {
    enum shoal_op_kind kind;
    shoal_ep_t *ep;
    uint64_t wr_id;
    size_t len;
    int pending;                         /* completions still expected */
    int status;                          /* first error seen, or 0 */
    void *buf;                           /* prov: e.g. copied send payload */
    uint8_t scratch[24];                 /* prov: room for a small header */
    struct shoal_op *next_free;          /* core: freelist link */
};

/* ------------------------------------------------------------------ */
/* The provider's operations table                                    */
/* ------------------------------------------------------------------ */

struct shoal_provider {
    const char *name;
    shoal_transport_t transport;

    /* Is this provider usable with @cfg?  0 if so; otherwise a negative
     * errno and a reason in @why.  Cheap; does not keep resources. */
    int (*probe)(const shoal_config_t *cfg, char *why, size_t whylen);

    int (*ctx_init)(shoal_ctx_t *ctx);
    void (*ctx_fini)(shoal_ctx_t *ctx);

    /* Register mr->addr/len/access; fill mr->key/keylen with the bytes a
     * peer's rmr_init needs. */
    int (*mr_reg)(shoal_mr_t *mr);
    void (*mr_dereg)(shoal_mr_t *mr);

    /* Make a usable remote region on rmr->ep from rmr->key. */
    int (*rmr_init)(shoal_rmr_t *rmr);
    void (*rmr_fini)(shoal_rmr_t *rmr);

    /* Bind and listen; set l->port.  Handshaken peers are handed to the
     * core with shoal__listener_ready(). */
    int (*listen)(shoal_listener_t *l, const char *host, uint16_t port);
    void (*listener_close)(shoal_listener_t *l);

    /* Connect and complete the handshake before returning (blocking,
     * bounded by ctx->cfg.connect_timeout_ms); on success call
     * shoal__ep_connected(). */
    int (*connect)(shoal_ep_t *ep, const char *host, uint16_t port);

    /* Tear the connection down.  Before returning, every op the provider
     * holds for @ep must have been completed through shoal__op_done(). */
    void (*ep_close)(shoal_ep_t *ep);

    /* Start operations; ranges and access were checked by the core.
     * Return 0 once started (completion comes later via shoal__op_done),
     * or a negative errno if nothing was started. */
    int (*put)(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr,
               size_t loff, shoal_rmr_t *rmr, size_t roff, size_t len,
               unsigned flags, uint32_t imm);
    int (*get)(shoal_ep_t *ep, struct shoal_op *op, shoal_mr_t *lmr,
               size_t loff, shoal_rmr_t *rmr, size_t roff, size_t len);
    int (*send)(shoal_ep_t *ep, struct shoal_op *op, const void *buf,
                size_t len);

    /* Make progress without blocking; return how much work was done. */
    int (*progress)(shoal_ctx_t *ctx);

    /* Prepare to sleep until the provider may have work: arm its
     * notifications, fill @fds (at most SHOAL_WAIT_FDS) with what poll()
     * should wait on, and lower *@timeout_ms if something is due sooner
     * (a handshake deadline).  Returns the number of fds, 0 if work is
     * already pending (progress instead of sleeping), or a negative errno
     * (with errmsg).  The core does the poll() (shoal__sleep; the progress
     * thread polls without holding the context's lock, so a provider's
     * state must not change between this and wait_done except through its
     * own calls), then calls wait_done (may be NULL) with the results.
     * Spurious wake-ups are fine. */
    int (*wait_fds)(shoal_ctx_t *ctx, struct pollfd *fds, int *timeout_ms);
    void (*wait_done)(shoal_ctx_t *ctx, const struct pollfd *fds, int nfds);
};
#define SHOAL_WAIT_FDS 4

extern const struct shoal_provider shoal_ucx_provider;
#ifdef HAVE_VERBS
extern const struct shoal_provider shoal_verbs_provider;
#endif

/* ------------------------------------------------------------------ */
/* What a provider calls back into                                    */
/* ------------------------------------------------------------------ */

/* Logging: respects ctx->cfg.log_level; ctx may be NULL (then: warn). */
void shoal__log(const shoal_ctx_t *ctx, shoal_log_level_t lvl,
                const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define shoal__error(c, ...) shoal__log((c), SHOAL_LOG_ERROR, __VA_ARGS__)
#define shoal__warn(c, ...)  shoal__log((c), SHOAL_LOG_WARN, __VA_ARGS__)
#define shoal__info(c, ...)  shoal__log((c), SHOAL_LOG_INFO, __VA_ARGS__)
#define shoal__debug(c, ...) shoal__log((c), SHOAL_LOG_DEBUG, __VA_ARGS__)

/* Record the detailed message of a failure on @ctx (shoal_ctx_errmsg),
 * log it at debug level, and return @err so callers can `return`. */
int shoal__fail(shoal_ctx_t *ctx, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The message shoal__fail recorded last, for a provider that passes it on
 * (e.g. into a connect's reason): inside the progress thread it is not
 * the application's errmsg. */
const char *shoal__last_error(const shoal_ctx_t *ctx);

/* Sleep until @ctx's provider may have work or @timeout_ms passes (-1:
 * no limit): wait_fds, poll(), wait_done.  0, or a negative errno with
 * errmsg if poll() fails.  For blocking loops (connect, accept, wait). */
int shoal__sleep(shoal_ctx_t *ctx, int timeout_ms);

/* An operation reference finished with @status (0 or negative errno).
 * When the last reference finishes the core queues the completion event
 * and recycles @op.  @reason may be NULL. */
void shoal__op_done(struct shoal_op *op, int status, const char *reason);

/* Target side: an immediate arrived on @ep (data already visible). */
void shoal__ep_imm(shoal_ep_t *ep, uint32_t imm);

/* A control message arrived on @ep; the core copies @buf. */
void shoal__ep_recv(shoal_ep_t *ep, const void *buf, size_t len);

/* The handshake of @ep is complete: CONNECTING -> CONNECTED. */
void shoal__ep_connected(shoal_ep_t *ep);

/* The connection of @ep broke, or its handshake was refused or timed out:
 * the endpoint becomes FAILED.  Queues SHOAL_EV_EP_FAILED once, and only
 * for an endpoint the application holds (one still in handshake is
 * reported by the blocking call waiting for it, or discarded by the
 * provider with shoal__ep_discard); later calls, and calls on a CLOSING
 * endpoint, are ignored.  Safe to call from any provider callback. */
void shoal__ep_failed(shoal_ep_t *ep, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Server side: a new endpoint for listener @l (allocated by the core with
 * shoal__ep_new) whose handshake is done; accept() will return it. */
void shoal__listener_ready(shoal_listener_t *l, shoal_ep_t *ep);

/* Allocate an endpoint in CONNECTING state (NULL on ENOMEM). */
shoal_ep_t *shoal__ep_new(shoal_ctx_t *ctx);

/* Free an endpoint that never became visible to the application (a
 * handshake that failed on the server side, or one the provider could
 * not set up).  Calls prov->ep_close (with ep->priv NULL if the provider
 * never attached its state). */
void shoal__ep_discard(shoal_ep_t *ep);

/* Resolve @host:@port (host NULL with @passive = all IPv4 addresses) into
 * @ss (and its length into @sl if not NULL); -EHOSTUNREACH with a message
 * naming the host when it does not resolve. */
int shoal__resolve(shoal_ctx_t *ctx, const char *host, uint16_t port, bool passive,
                   struct sockaddr_storage *ss, socklen_t *sl);

/* "host:port" of an IPv4/IPv6 address ("?:0" for NULL or another family),
 * and its port alone. */
void shoal__addr_str(const struct sockaddr *sa, char *out, size_t len);
uint16_t shoal__addr_port(const struct sockaddr *sa);

/* Monotonic milliseconds, for timeouts. */
uint64_t shoal__now_ms(void);

/* Wire helpers: little-endian encoding independent of the host. */
static inline void shoal__put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void shoal__put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline void shoal__put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint16_t shoal__get_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t shoal__get_le32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}
static inline uint64_t shoal__get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* CRC-32 (IEEE 802.3 polynomial) of @len bytes, chained through @crc
 * (start with 0). */
uint32_t shoal__crc32(uint32_t crc, const void *buf, size_t len);

/* List helpers. */
static inline void shoal__list_init(struct shoal_list *l) { l->prev = l->next = l; }
static inline bool shoal__list_empty(const struct shoal_list *l) { return l->next == l; }
static inline void shoal__list_add(struct shoal_list *head, struct shoal_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}
static inline void shoal__list_del(struct shoal_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}
#define shoal__container_of(ptr, type, member) \
    ((type *)((char *)(ptr) - offsetof(type, member)))

#endif /* SHOAL_PROVIDER_H */
