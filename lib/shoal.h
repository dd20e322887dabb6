/*
 * shoal.h -- the whole public API of libshoal.
 *
 * libshoal moves bytes between registered buffers of two processes with
 * one-sided operations (put, get), over RDMA verbs (RC queue pairs) when the
 * machine has an RDMA device and over UCX (UCP on TCP) otherwise.  The API
 * is the same on both; nothing here names a transport except the config
 * field that picks one.
 *
 * Objects and ownership
 *   shoal_ctx       one per thread of communication: owns the transport's
 *                   resources, the event queue and every object below.
 *   shoal_mr        a registered local buffer.  Only registered memory can be
 *                   the source or target of put/get.
 *   shoal_listener  a passive endpoint on host:port that accepts peers.
 *   shoal_ep        a connection to one peer.
 *   shoal_rmr       a peer's region, made from the descriptor the peer packed
 *                   with shoal_mr_pack() and sent (by any means) to us.
 *   Destroy children before parents: rmr, ep, listener, mr, then ctx.
 *   (Closing an endpoint detaches its rmrs; they still need destroying.)
 *
 * Error convention
 *   Calls return 0 (or a non-negative count) on success and a negative
 *   errno value on failure (-EINVAL, -ETIMEDOUT, -ECONNREFUSED, ...).
 *   shoal_strerror() turns one into text; shoal_ctx_errmsg() gives the
 *   detailed message of the last failed call on a context.  -EAGAIN is not
 *   an error: it means "resources are busy, poll and try again".
 *
 * Contract (see docs/ARCHITECTURE.md for the long form)
 *   Zero copy  put/get move data directly between registered buffers; the
 *              library never copies a payload on the initiator, nor on
 *              verbs at all.  (UCX over TCP has no remote memory access:
 *              the target copies each put once from the socket, as UCX's
 *              own emulation would.)  Control messages (shoal_send) are
 *              small and are copied.
 *   Buffer reuse  The source of a put and the target of a get belong to the
 *              library from the call until its completion event (PUT_DONE /
 *              GET_DONE) is returned by shoal_poll()/shoal_wait().
 *   Visibility  PUT_DONE means the local buffer may be reused; it does NOT
 *              mean the data is visible at the target.  A put issued with
 *              SHOAL_PUT_IMM delivers a SHOAL_EV_IMM event to the target
 *              exactly once, and only after the whole payload of that put --
 *              and of every put issued earlier on the same endpoint -- is
 *              visible in the target's memory.  This is the only arrival
 *              notification: plain puts raise no event at the target.
 *   Ordering   On one endpoint, immediates and control messages are
 *              delivered in the order they were issued.  Plain puts to
 *              overlapping bytes have no defined order unless an immediate
 *              put separates them.  Nothing is ordered across endpoints.
 *   Progress   By default (SHOAL_PROGRESS=off) all progress happens inside
 *              shoal_poll()/shoal_wait() (and the blocking calls
 *              connect/accept): a target must keep polling for puts and
 *              gets aimed at it to complete on transports that need
 *              target-side progress (UCX over TCP), and for its peers'
 *              messages to be read.  With SHOAL_PROGRESS=thread the context
 *              also has a progress thread of its own, which progresses it
 *              whenever the application has made no progress call for a
 *              millisecond or more (it computes): puts aimed at it
 *              complete, messages and immediates are received and queued,
 *              in order, for the application's next shoal_poll/wait.  It
 *              sleeps in the transport's fds when there is nothing to do,
 *              stands aside while the application polls or waits (no
 *              handoff on that path), runs on the CPUs of the placement
 *              plan, takes no signals, and is joined by
 *              shoal_ctx_destroy().  Nothing the application sees changes
 *              but when things complete: events still come only from
 *              shoal_poll/wait.
 *   Threads    A context and everything made from it may be used by one
 *              application thread at a time; different contexts are
 *              independent.  Use one context per communicating thread.
 *              The progress thread does not change this: every call
 *              holds the context's lock against it (SHOAL_PROGRESS=thread
 *              only), including while shoal_wait, accept and connect
 *              sleep; shoal_ctx_errmsg() is never written by it.
 *   Fork       The application may fork() (or call system(), popen()) while
 *              operations are in flight: on the verbs transport, creating
 *              a context calls ibv_fork_init() before it registers any
 *              memory (as RDMAV_FORK_SAFE=1 would), so the parent's
 *              registered buffers and its puts and gets stay correct.  On
 *              kernels before 5.13 registered pages are then not mapped in
 *              the child at all: a child must not touch registered buffers
 *              (exec() or _exit() it is).  Memory the application itself
 *              registered with libibverbs before its first context defeats
 *              this (a warning says so).  A child must not use the
 *              parent's contexts.
 *   Failure    When a connection breaks (peer died, network lost, protocol
 *              violation) the endpoint raises exactly one SHOAL_EV_EP_FAILED
 *              event with a reason; its outstanding operations complete
 *              with an error status; further operations on it fail with
 *              -ENOTCONN.  The endpoint must still be closed -- or, on the
 *              side that connected, reconnected (shoal_ep_reconnect()).
 */
#ifndef SHOAL_H
#define SHOAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_VERSION_MAJOR 0
#define SHOAL_VERSION_MINOR 1

/* ------------------------------------------------------------------ */
/* Configuration                                                      */
/* ------------------------------------------------------------------ */

/** Which provider carries the traffic. */
typedef enum shoal_transport {
    SHOAL_TRANSPORT_AUTO = 0, /**< verbs if a usable RDMA port exists, else UCX */
    SHOAL_TRANSPORT_VERBS,    /**< rdma-core verbs + rdma_cm, RC queue pairs */
    SHOAL_TRANSPORT_UCX       /**< UCX UCP (TCP unless UCX_TLS says otherwise) */
} shoal_transport_t;

/** Who progresses a context while the application computes. */
typedef enum shoal_progress {
    SHOAL_PROGRESS_OFF = 0, /**< only the application's calls (see Progress) */
    SHOAL_PROGRESS_THREAD   /**< also a thread of the context's own */
} shoal_progress_t;

/** Log levels, from quiet to chatty. */
typedef enum shoal_log_level {
    SHOAL_LOG_ERROR = 0,
    SHOAL_LOG_WARN,
    SHOAL_LOG_INFO,
    SHOAL_LOG_DEBUG,
    SHOAL_LOG_TRACE
} shoal_log_level_t;

#define SHOAL_DEVICE_MAX 64
#define SHOAL_BIND_MAX 256
#define SHOAL_AUTH_FILE_MAX 1024

/**
 * Context configuration.  Fill with shoal_config_init() (defaults), then
 * shoal_config_from_env() (SHOAL_* variables), then override fields.
 */
typedef struct shoal_config {
    shoal_transport_t transport;    /**< SHOAL_TRANSPORT=auto|verbs|ucx */
    char device[SHOAL_DEVICE_MAX];  /**< SHOAL_DEVICE, e.g. "rxe0", "mlx5_0:1"; "" = any */
    shoal_log_level_t log_level;    /**< SHOAL_LOG_LEVEL=error|warn|info|debug|trace */
    int connect_timeout_ms;         /**< SHOAL_CONNECT_TIMEOUT (ms), connect and accept handshake */
    int queue_depth;                /**< SHOAL_QUEUE_DEPTH: outstanding ops per endpoint */
    char bind[SHOAL_BIND_MAX];      /**< SHOAL_BIND=auto|none|<cpu list> ("0-3,8"); see Placement */
    int local_rank;                 /**< SHOAL_LOCAL_RANK; -1 = from the launcher, else 0 */
    int local_size;                 /**< SHOAL_LOCAL_SIZE; -1 = from the launcher, else 1 */
    char auth_file[SHOAL_AUTH_FILE_MAX]; /**< SHOAL_AUTH_FILE: shared secret; "" = none */
    int spin_us;                    /**< SHOAL_SPIN_US: how long shoal_wait() polls before
                                         it sleeps; -1 = auto (100, or 5 when more local
                                         processes x waiters than CPUs share the node) */
    shoal_progress_t progress;      /**< SHOAL_PROGRESS=off|thread; see Progress */
    int waiters;                    /**< set by the application, no variable: how many
                                         threads of this process wait in shoal_wait() on
                                         contexts of their own (a worker with a co-located
                                         server: 2); the auto spin counts them; 0 = 1 */
} shoal_config_t;

/** Set every field to its built-in default. */
void shoal_config_init(shoal_config_t *cfg);

/**
 * Apply the SHOAL_* environment variables to @cfg.  On a malformed value,
 * returns -EINVAL and writes a message naming the variable and the problem
 * into @err (if not NULL); @cfg is then left as it was.
 */
int shoal_config_from_env(shoal_config_t *cfg, char *err, size_t errlen);

/**
 * Set one option by its variable name without the SHOAL_ prefix
 * ("TRANSPORT", "DEVICE", ...).  Same error reporting as above.
 */
int shoal_config_set(shoal_config_t *cfg, const char *name, const char *value,
                     char *err, size_t errlen);

/** Print every option with its current value and help text. */
void shoal_config_print(const shoal_config_t *cfg, FILE *out);

/** Name of a transport value: "auto", "verbs" or "ucx". */
const char *shoal_transport_name(shoal_transport_t t);

/* ------------------------------------------------------------------ */
/* Errors                                                             */
/* ------------------------------------------------------------------ */

/** Text for a negative (or positive) errno-style code; never NULL. */
const char *shoal_strerror(int err);

/* ------------------------------------------------------------------ */
/* Context                                                            */
/* ------------------------------------------------------------------ */

typedef struct shoal_ctx shoal_ctx_t;

/**
 * Create a context.  @cfg NULL means defaults plus SHOAL_* variables.
 * With SHOAL_TRANSPORT_AUTO the provider is chosen here and the choice and
 * its reason are logged at info level.
 */
int shoal_ctx_create(const shoal_config_t *cfg, shoal_ctx_t **ctx_p);

/** Destroy a context; every object made from it must be gone already. */
void shoal_ctx_destroy(shoal_ctx_t *ctx);

/** The transport this context runs on (never AUTO). */
shoal_transport_t shoal_ctx_transport(const shoal_ctx_t *ctx);

/** A one-line human description of the transport and device in use. */
const char *shoal_ctx_describe(const shoal_ctx_t *ctx);

/**
 * The detailed message of the last call on @ctx, as sqlite3_errmsg() has
 * it: every call that can fail clears it on entry and sets it on every
 * failure (naming the input or peer at fault), so after a success it is
 * "".  Valid until the next call on @ctx.  Not written by: calls whose
 * handle is NULL (-EINVAL, no context to hold it), shoal_ctx_create()
 * (logs its failures at error level: no context exists then), and
 * shoal_bind_thread() (may run in several threads at once; logs instead).
 */
const char *shoal_ctx_errmsg(const shoal_ctx_t *ctx);

/* ------------------------------------------------------------------ */
/* Placement (SHOAL_BIND)                                             */
/* ------------------------------------------------------------------ */

/*
 * When a context is created libshoal finds, through hwloc, where its
 * device sits (the RDMA device's PCI locality; for UCX the netdev named by
 * UCX_NET_DEVICES or SHOAL_DEVICE when it has one; else the whole machine)
 * and makes a plan: the CPUs the application's compute threads should run
 * on.  libshoal binds none of the application's threads by itself: the
 * application asks for each thread with shoal_bind_thread().  (The
 * progress thread of SHOAL_PROGRESS=thread binds itself to all of the
 * plan's CPUs: near the device, within this process's share.)
 *   SHOAL_BIND=auto   one CPU per physical core near the device; several
 *                     processes on one node (local rank/size from
 *                     SHOAL_LOCAL_RANK/SIZE, Open MPI, MPICH or Slurm) split
 *                     those cores between them, never sharing one.
 *   SHOAL_BIND=none   no plan: bind nothing, allocate without a NUMA policy.
 *   SHOAL_BIND=<list> exactly these CPUs ("0-3,8"); a CPU this process may
 *                     not use fails shoal_ctx_create() with -EINVAL.
 */

/** The placement policy in force. */
typedef enum shoal_bind {
    SHOAL_BIND_NONE = 0, /**< bind nothing */
    SHOAL_BIND_AUTO,     /**< cores near the device, split by local rank */
    SHOAL_BIND_LIST      /**< the CPUs listed in SHOAL_BIND */
} shoal_bind_t;

/** A context's placement plan (read-only; lives as long as the context). */
typedef struct shoal_placement {
    shoal_bind_t policy;
    int ncpus;          /**< compute threads the plan has room for, one CPU
                             each (0 with NONE): size thread pools (and
                             OpenBLAS) to this */
    int numa_node;      /**< OS index of the device's NUMA node; -1 unknown */
    int local_rank;     /**< this process among the plan's local processes */
    int local_size;
    char device[SHOAL_DEVICE_MAX]; /**< the device followed ("" = none) */
    char locality[160]; /**< where the device sits, e.g. "package 1, NUMA
                             node 1 (CPUs 4-7,12-15)" or "unknown" */
    char cpus[256];     /**< the plan's CPUs in slot order, list syntax
                             ("4-7"); "" with NONE */
    char why[256];      /**< one sentence: how the plan was made */
} shoal_placement_t;

/** The placement plan of @ctx; never NULL. */
const shoal_placement_t *shoal_ctx_placement(const shoal_ctx_t *ctx);

/**
 * Bind the calling thread as compute thread @i of @n (0 <= @i < @n): to
 * CPU @i of the plan (modulo ncpus; a warning is logged once when @n >
 * ncpus, since threads then share cores).  With SHOAL_BIND=none it does
 * nothing and returns 0.  -EINVAL for a bad @i/@n; another negative errno
 * (the reason is logged) if the kernel refuses the binding.  Unlike other
 * calls, several threads may call this on one context at the same time,
 * so it leaves shoal_ctx_errmsg() alone and logs its failures.
 */
int shoal_bind_thread(shoal_ctx_t *ctx, int i, int n);

/**
 * Allocate @len bytes, page aligned, for use as a registered buffer: on the
 * device's NUMA node when it is known and SHOAL_BIND is not none, else with
 * the default (first touch) policy.  Free with shoal_free(ctx, addr, len).
 */
int shoal_alloc(shoal_ctx_t *ctx, size_t len, void **addr_p);
void shoal_free(shoal_ctx_t *ctx, void *addr, size_t len);

/* ------------------------------------------------------------------ */
/* Memory registration and remote descriptors                         */
/* ------------------------------------------------------------------ */

typedef struct shoal_mr shoal_mr_t;
typedef struct shoal_rmr shoal_rmr_t;
typedef struct shoal_ep shoal_ep_t;

/** What peers may do to a registered region.  0 = local use only. */
enum shoal_access {
    SHOAL_ACCESS_REMOTE_WRITE = 1u << 0, /**< peers may put into it */
    SHOAL_ACCESS_REMOTE_READ = 1u << 1   /**< peers may get from it */
};

/** Upper bound of a packed descriptor; a buffer this big always fits. */
#define SHOAL_DESC_MAX 1024

/**
 * Register [addr, addr+len) for use in put/get.  @access is a mask of
 * enum shoal_access: grant peers only what they need.  On -ENOMEM from an
 * RDMA device the message names `ulimit -l` (locked memory).
 */
int shoal_mr_reg(shoal_ctx_t *ctx, void *addr, size_t len, unsigned access,
                 shoal_mr_t **mr_p);

/** Deregister.  No operation may still be using the region. */
void shoal_mr_dereg(shoal_mr_t *mr);

/** Base address and length of a registered region. */
void *shoal_mr_addr(const shoal_mr_t *mr);
size_t shoal_mr_length(const shoal_mr_t *mr);

/**
 * Pack the remote descriptor of @mr (format version, transport, address,
 * length, access, key, checksum) into @buf.  On success *@len_p is the
 * number of bytes written; -ENOBUFS if @buflen is too small.  The bytes are
 * position independent and may be sent to a peer over any channel.
 */
int shoal_mr_pack(const shoal_mr_t *mr, void *buf, size_t buflen,
                  size_t *len_p);

/**
 * Turn a descriptor that the peer of @ep packed into a remote region usable
 * on @ep (and only on @ep).  Every field is validated (magic, version,
 * transport, lengths, checksum): a corrupt or truncated descriptor gives
 * -EBADMSG, one from another transport or format version -EPROTO.
 */
int shoal_rmr_unpack(shoal_ep_t *ep, const void *buf, size_t len,
                     shoal_rmr_t **rmr_p);

/**
 * Release a remote region (it must not be in use by any operation).  May be
 * called after its endpoint was closed: closing an endpoint detaches its
 * remote regions, which then only await this call.
 */
void shoal_rmr_destroy(shoal_rmr_t *rmr);

/** Length and access mask a remote region was registered with. */
size_t shoal_rmr_length(const shoal_rmr_t *rmr);
unsigned shoal_rmr_access(const shoal_rmr_t *rmr);

/* ------------------------------------------------------------------ */
/* Endpoints                                                          */
/* ------------------------------------------------------------------ */

typedef struct shoal_listener shoal_listener_t;

/**
 * Listen on @host:@port (host NULL = all addresses; port 0 = let the
 * kernel choose, see shoal_listener_port()).
 */
int shoal_listen(shoal_ctx_t *ctx, const char *host, uint16_t port,
                 shoal_listener_t **l_p);

/** The port the listener is bound to. */
uint16_t shoal_listener_port(const shoal_listener_t *l);

/** Stop listening.  Endpoints already accepted stay connected. */
void shoal_listener_close(shoal_listener_t *l);

/**
 * Wait up to @timeout_ms (-1 = forever, 0 = just check) for a peer that has
 * completed the handshake, and return its endpoint.  -ETIMEDOUT if none
 * came in time; with timeout 0, -EAGAIN (a poll; nothing is logged).
 * Progresses the context while it waits (events for other endpoints are
 * queued, not lost).
 */
int shoal_accept(shoal_listener_t *l, int timeout_ms, shoal_ep_t **ep_p);

/**
 * Connect to @host:@port and complete the handshake (magic, protocol
 * version, transport).  Blocks up to the context's connect timeout.
 * -ECONNREFUSED when nothing listens there, -ETIMEDOUT when nothing
 * answers, -EPROTO when the peer speaks another protocol.
 */
int shoal_connect(shoal_ctx_t *ctx, const char *host, uint16_t port,
                  shoal_ep_t **ep_p);

/**
 * shoal_connect(), tried again while the failure is one that may pass
 * (nothing listens yet, unreachable, no answer, reset) for up to
 * @timeout_ms in all, waiting 20 ms after the first try and twice as long
 * after each next one, at most 1 s.  Any other failure (refused
 * authentication, another protocol, bad arguments) returns at once.  The
 * context is not progressed while it waits between tries: other
 * endpoints' events are queued, not lost.
 */
int shoal_connect_retry(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                        shoal_ep_t **ep_p);

/**
 * Replace @ep's connection with a new one to the same address, made as
 * shoal_connect_retry() makes it (@timeout_ms in all); the handle stays
 * the same.  Only for an endpoint this side made with shoal_connect*()
 * (-EINVAL otherwise, and nothing changes).  First the old connection is
 * dropped as shoal_ep_abort() drops it: each operation still in flight on
 * it completes with an error status (its event names @ep and comes before
 * any of the new connection's), none is retried by the library -- a put
 * or get may or may not have reached the peer, so whether to issue it
 * again is the application's call.  A queued SHOAL_EV_EP_FAILED of the old
 * connection is dropped.  Remote regions unpacked on the old connection
 * are detached (operations with them fail with -EINVAL): the peer may have
 * restarted, so descriptors must be exchanged again.  On failure @ep is
 * left failed (-ENOTCONN to operations) and must be closed.
 */
int shoal_ep_reconnect(shoal_ep_t *ep, int timeout_ms);

/**
 * Close an endpoint.  Outstanding operations complete (with -ECANCELED if
 * they could not finish); their events are still delivered, except that
 * events naming @ep are dropped from the queue when it is freed.
 */
void shoal_ep_close(shoal_ep_t *ep);

/**
 * Close an endpoint without waiting for anything: outstanding operations
 * are canceled at once.  For a peer the application has given up on (it
 * stopped answering): shoal_ep_close() would wait, up to the connect
 * timeout, for operations a silent peer may never acknowledge.
 */
void shoal_ep_abort(shoal_ep_t *ep);

/** "host:port" of the peer, for messages. */
const char *shoal_ep_peer(const shoal_ep_t *ep);

/** Attach / read back an opaque user pointer. */
void shoal_ep_set_user(shoal_ep_t *ep, void *user);
void *shoal_ep_user(const shoal_ep_t *ep);

/* ------------------------------------------------------------------ */
/* Operations                                                         */
/* ------------------------------------------------------------------ */

/** Flags of shoal_put(). */
enum shoal_put_flags {
    SHOAL_PUT_IMM = 1u << 0 /**< deliver @imm to the target after the data */
};

/** Largest control message shoal_send() accepts. */
#define SHOAL_MSG_MAX 4096

/**
 * One-sided write of @len bytes from @lmr+@loff to @rmr+@roff on @ep.
 * Completion: a SHOAL_EV_PUT_DONE event carrying @wr_id.  With
 * SHOAL_PUT_IMM the target receives SHOAL_EV_IMM carrying @imm once the
 * data is visible.  Ranges are checked locally: outside either region
 * -ERANGE; a remote region without remote-write access -EACCES; too many
 * outstanding operations -EAGAIN (poll, then retry).
 */
int shoal_put(shoal_ep_t *ep, shoal_mr_t *lmr, size_t loff,
              shoal_rmr_t *rmr, size_t roff, size_t len,
              unsigned flags, uint32_t imm, uint64_t wr_id);

/**
 * One-sided read of @len bytes from @rmr+@roff into @lmr+@loff.  The data
 * is in local memory when SHOAL_EV_GET_DONE carrying @wr_id is returned.
 * Same range and access checks as shoal_put().
 */
int shoal_get(shoal_ep_t *ep, shoal_mr_t *lmr, size_t loff,
              shoal_rmr_t *rmr, size_t roff, size_t len, uint64_t wr_id);

/**
 * Send a small control message (at most SHOAL_MSG_MAX bytes; -EMSGSIZE
 * otherwise).  The bytes are copied: @buf is free on return.  The peer gets
 * SHOAL_EV_RECV; the sender gets SHOAL_EV_SEND_DONE carrying @wr_id.
 */
int shoal_send(shoal_ep_t *ep, const void *buf, size_t len, uint64_t wr_id);

/* ------------------------------------------------------------------ */
/* Events                                                             */
/* ------------------------------------------------------------------ */

typedef enum shoal_event_type {
    SHOAL_EV_PUT_DONE = 1, /**< a put finished locally: buffer reusable */
    SHOAL_EV_GET_DONE,     /**< a get finished: data is in local memory */
    SHOAL_EV_SEND_DONE,    /**< a control message left: wr_id */
    SHOAL_EV_IMM,          /**< target side: a put's data arrived; imm */
    SHOAL_EV_RECV,         /**< a control message: data, len */
    SHOAL_EV_EP_FAILED     /**< the connection broke: status, reason */
} shoal_event_type_t;

/** One completion or notification. */
typedef struct shoal_event {
    shoal_event_type_t type;
    int status;        /**< 0, or a negative errno for a failed operation */
    shoal_ep_t *ep;    /**< the endpoint it concerns */
    uint64_t wr_id;    /**< PUT_DONE, GET_DONE, SEND_DONE */
    uint32_t imm;      /**< IMM */
    const void *data;  /**< RECV: valid until the next poll/wait on the ctx */
    size_t len;        /**< RECV: message length; PUT/GET_DONE: bytes */
    const char *reason;/**< EP_FAILED (and failed ops): human text; same
                            lifetime as data */
} shoal_event_t;

/**
 * Progress the context and return up to @max queued events without
 * blocking.  Returns the number of events (0 if none) or a negative error.
 */
int shoal_poll(shoal_ctx_t *ctx, shoal_event_t *evs, int max);

/**
 * Like shoal_poll(), but wait up to @timeout_ms (-1 = forever) for at least
 * one event; sleeps in the kernel instead of spinning.  Returns 0 on
 * timeout.
 */
int shoal_wait(shoal_ctx_t *ctx, shoal_event_t *evs, int max, int timeout_ms);

/** Name of an event type, for messages. */
const char *shoal_event_name(shoal_event_type_t type);

#ifdef __cplusplus
}
#endif

#endif /* SHOAL_H */
