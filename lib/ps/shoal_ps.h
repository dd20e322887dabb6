/*
 * shoal_ps.h -- the whole public API of libshoal-ps, the parameter server
 * layer of shoal.
 *
 * A job is S servers and W workers.  Each server owns a contiguous shard
 * of one flat parameter vector of P floats (server s: floats
 * [P*s/S, P*(s+1)/S)) and runs the optimizer on it; each worker computes
 * gradients of the whole vector and, once per iteration, pushes them and
 * pulls fresh parameters.  Nothing here names a model or a transport: the
 * layer uses only libshoal's public API (shoal.h), so it runs over verbs
 * or UCX alike, and whatever the workers train (shoal-train's MLPs, a
 * PyTorch module through the Python package, a C program of your own).
 *
 * A worker, in a few lines:
 *
 *     shoal_ps_config_t cfg;
 *     shoal_ps_config_init(&cfg);                   defaults, then SHOAL_PS_*
 *     shoal_ps_config_from_env(&cfg, err, sizeof err);   and launcher variables
 *     cfg.job.optimizer = SHOAL_PS_ADAM; cfg.job.lr = 1e-3f; ...
 *     if (shoal_ps_is_server(&cfg))                 ranks below cfg.servers
 *         return shoal_ps_serve(&cfg, err, sizeof err) ? 1 : 0;
 *     shoal_ps_t *ps;
 *     shoal_ps_tensor_t t[] = {{"w", 784 * 10}, {"b", 10}};
 *     shoal_ps_create(&cfg, t, 2, params, grads, &ps, err, sizeof err);
 *     shoal_ps_join(ps);                            params now hold the job's
 *     for (k = shoal_ps_iteration(ps); k < total; k = shoal_ps_iteration(ps)) {
 *         compute grads from params for batch k;
 *         shoal_ps_push_pull(ps);                   push grads, pull params
 *     }
 *     shoal_ps_finish(ps); shoal_ps_destroy(ps);
 *
 * Roles and meeting.  Rank and size come from the launcher (SHOAL_RANK /
 * SHOAL_SIZE from tools/shoal-run, Open MPI, PMIx, Slurm) unless set in the
 * config; ranks below `servers` are servers, the others workers (worker
 * index = rank - servers).  Server 0 is the coordinator: it listens on
 * `coordinator` (host:port) or publishes its address in the `rendezvous`
 * file; everyone else finds it there.
 *
 * Consistency (job.mode).
 *   BSP    a server waits for every live worker's gradient of iteration k,
 *          applies their mean once, and sends every worker the new shard.
 *   ASYNC  each gradient is applied on arrival (scaled by 1/W) and only
 *          its sender gets the new shard.
 *   SSP    as ASYNC, but a worker that has done c iterations gets its
 *          answer only once the slowest live worker has done c - staleness
 *          (staleness 0 behaves as BSP).
 * Exactly once: a push carries the worker's iteration; a server applies
 * it only if it is the one it expects from that worker, and drops (and
 * counts) duplicates and stale pushes.  After a reconnection the servers
 * say where to continue: shoal_ps_iteration() may go back (a server
 * restarted from a checkpoint), and the caller redoes those iterations.
 *
 * Optimizers (job.optimizer), on the servers:
 *   SGD      p -= lr * v, v = momentum * v + g + weight_decay * p
 *            (momentum 0: plain SGD)
 *   ADAM     Adam with bias correction (beta1, beta2, eps); weight_decay is
 *            L2 added to the gradient, as torch.optim.Adam does
 *   AVERAGE  no optimizer: the servers return the mean of the workers'
 *            gradients in the parameter buffer (every worker then applies
 *            its own optimizer to the same mean, as BytePS does; BSP only)
 * with a learning-rate schedule (constant, cosine, step) over
 * job.epochs x job.iters_per_epoch iterations.
 *
 * Memory.  The caller's parameter and gradient buffers (P floats each) are
 * registered once by shoal_ps_create() and belong to the library while a
 * push-pull is in flight.  Pushes are one-sided puts straight from the
 * gradient buffer into the worker's own slot at each server (no copy);
 * servers put fresh parameters straight into the parameter buffer, each
 * into the slice it owns, registered for that server alone.  At the start
 * of a job the servers take their initial shards from worker 0 (a
 * one-sided get of its parameter buffer; the others wait for it), so every
 * worker starts from worker 0's parameters; with resume, from the
 * checkpoint.
 *
 * Progress and threads.  A worker handle keeps its job alive while the
 * caller computes: its libshoal context runs with SHOAL_PROGRESS=thread
 * (unless SHOAL_PROGRESS is set otherwise), so parameters arrive and
 * pushes complete without the caller, and a keeper thread of the handle
 * answers and sends heartbeats.  The calls on one handle must come from
 * one thread at a time.
 *
 * Failures.  A worker that dies or loses the network and comes back with
 * the same rank rejoins (BSP waits for it up to rejoin_timeout_ms; ASYNC
 * and SSP go on without it).  A lost server is reconnected with backoff
 * for up to reconnect_timeout_ms; a server restarted with `resume` (and
 * checkpoint_dir) continues from its newest valid checkpoint.
 *
 * Errors: calls return 0 (or a documented non-negative value) or a negative
 * errno; shoal_ps_errmsg() (or the @err buffer of calls that have no
 * handle yet) says what failed, naming the input.
 */
#ifndef SHOAL_PS_H
#define SHOAL_PS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SHOAL_PS_VERSION_MAJOR 0
#define SHOAL_PS_VERSION_MINOR 1

#define SHOAL_PS_HOST_MAX 64
#define SHOAL_PS_PATH_MAX 4096
#define SHOAL_PS_LABEL_MAX 128
#define SHOAL_PS_MAX_SERVERS 48
#define SHOAL_PS_MAX_WORKERS 1024
#define SHOAL_PS_MAX_GROUPS 64

/** How servers and workers keep in step. */
typedef enum shoal_ps_mode {
    SHOAL_PS_BSP = 0,  /**< bulk-synchronous: one update per iteration */
    SHOAL_PS_ASYNC,    /**< each gradient applied on arrival */
    SHOAL_PS_SSP       /**< asynchronous, at most `staleness` ahead of the slowest */
} shoal_ps_mode_t;

/** What the servers do with the gradients. */
typedef enum shoal_ps_optimizer {
    SHOAL_PS_SGD = 0,  /**< SGD with momentum and weight decay */
    SHOAL_PS_ADAM,     /**< Adam (bias-corrected) */
    SHOAL_PS_AVERAGE   /**< return the mean gradient; workers apply their own (BSP) */
} shoal_ps_optimizer_t;

/** What crosses the wire (the servers keep parameters and optimizer state
 * in fp32 whatever it is). */
typedef enum shoal_ps_compress {
    SHOAL_PS_COMPRESS_NONE = 0, /**< fp32 both ways */
    SHOAL_PS_COMPRESS_FP16,     /**< gradients pushed and parameters pulled as IEEE half */
    SHOAL_PS_COMPRESS_BF16,     /**< the same as bfloat16 (fp32's range, 8 bits of mantissa) */
    SHOAL_PS_COMPRESS_TOPK,     /**< push only the largest topk_ratio of each gradient slice
                                     by magnitude (index, value pairs), with error feedback:
                                     what was not sent is added to the next gradient;
                                     parameters pulled in fp32 */
    SHOAL_PS_COMPRESS_TOPK_NOEF /**< top-k without error feedback (for comparison) */
} shoal_ps_compress_t;

/** Learning-rate schedule over the job's iterations. */
typedef enum shoal_ps_schedule {
    SHOAL_PS_LR_CONST = 0,
    SHOAL_PS_LR_COSINE,  /**< lr * (1 + cos(pi * t)) / 2, t = fraction done */
    SHOAL_PS_LR_STEP     /**< lr * gamma^floor(epoch / step_epochs) */
} shoal_ps_schedule_t;

/**
 * The job, as the workers describe it.  Every worker sends its own to every
 * server, which refuses a worker whose job differs from the others' (and
 * names the difference).  The servers learn the job from the first worker.
 */
typedef struct shoal_ps_job {
    int workers;                 /**< W (0 = size - servers) */
    shoal_ps_mode_t mode;
    int staleness;               /**< SSP bound */
    uint32_t iters_per_epoch;    /**< iterations every worker runs per epoch */
    uint32_t epochs;             /**< the job ends after epochs x iters_per_epoch */
    uint32_t batch;              /**< samples per worker per iteration (reports) */
    shoal_ps_optimizer_t optimizer;
    float lr, momentum, weight_decay;
    bool momentum_auto;          /**< ASYNC/SSP: use 1 - W * (1 - momentum), as
                                      asynchrony adds momentum of its own */
    float beta1, beta2, eps;     /**< ADAM */
    shoal_ps_schedule_t schedule;
    int step_epochs;             /**< LR_STEP */
    float gamma;                 /**< LR_STEP */
    char label[SHOAL_PS_LABEL_MAX]; /**< free text that must agree ("784-256-10") */
    shoal_ps_compress_t compress; /**< the wire format (default none) */
    float topk_ratio;            /**< TOPK: the fraction of entries sent, (0, 1] */
} shoal_ps_job_t;

/** Everything a server or a worker needs; see shoal_ps_config_init(). */
typedef struct shoal_ps_config {
    int rank, size;              /**< -1 = from the launcher */
    int local_rank;              /**< -1 = from the launcher */
    int servers;                 /**< S: ranks 0..S-1 serve (SHOAL_PS_SERVERS) */
    char coordinator[SHOAL_PS_HOST_MAX + 8]; /**< "host:port" of server 0
                                      (SHOAL_COORDINATOR) */
    char rendezvous[SHOAL_PS_PATH_MAX]; /**< or a file server 0 writes its
                                      address to (SHOAL_RENDEZVOUS) */
    char host[SHOAL_PS_HOST_MAX];  /**< servers: the address to listen on and
                                      publish (SHOAL_PS_HOST; default 127.0.0.1) */
    int connect_timeout_ms;      /**< finding the servers at start */
    int idle_timeout_ms;         /**< no progress at all for this long: fail */
    int fail_timeout_ms;         /**< a silent peer is lost after this */
    int rejoin_timeout_ms;       /**< servers, BSP: how long to wait for a lost worker */
    int reconnect_timeout_ms;    /**< workers: how long to try a lost server */
    char checkpoint_dir[SHOAL_PS_PATH_MAX]; /**< servers: "" = no checkpoints */
    int checkpoint_every;        /**< updates between checkpoints (0 = by time only) */
    double checkpoint_secs;      /**< seconds between checkpoints (0 = by count only) */
    bool resume;                 /**< servers: start from the newest checkpoint */
    bool verify;                 /**< check every parameter delivery with a CRC */
    bool quiet;                  /**< servers: fewer messages on stderr */
    bool colocated;              /**< every process serves one shard and is a worker:
                                      servers = workers = size, rank r is server r (in a
                                      thread of its own) and worker r; SHOAL_SERVERS=
                                      colocated.  Each process sends and receives
                                      2(W-1)/W of the model per iteration, as a ring
                                      allreduce does */
    int groups;                  /**< parameter groups served (default 1): each group is
                                      a job of its own (parameters, optimizer, mode,
                                      workers) sharded over the same servers; e.g. the
                                      stages of a pipeline, each trained by its replicas */
    int group;                   /**< workers: the group this worker trains (0..groups-1) */
    int group_rank;              /**< workers: its index among the group's workers
                                      (-1 = rank - servers) */
    int group_size;              /**< workers: the group's workers (-1 = size - servers) */
    shoal_ps_job_t job;          /**< workers: the job (of its group) */
} shoal_ps_config_t;

/** Defaults: 1 server, BSP, SGD lr 0.1, timeouts as shoal-train's. */
void shoal_ps_config_init(shoal_ps_config_t *cfg);

/**
 * Apply the launcher's variables (rank, size, local rank) and SHOAL_PS_*,
 * SHOAL_SERVERS, SHOAL_COORDINATOR, SHOAL_RENDEZVOUS to @cfg.  A malformed
 * value is -EINVAL with a message naming the variable in @err.
 */
int shoal_ps_config_from_env(shoal_ps_config_t *cfg, char *err, size_t errlen);

/**
 * Check @cfg (rank below size, servers below size, timeouts, a meeting
 * place, the job's values); -EINVAL with the problem named in @err.
 */
int shoal_ps_config_check(const shoal_ps_config_t *cfg, bool worker, char *err,
                          size_t errlen);

/** True when @cfg's rank is a server's (never when colocated: every rank
 * is a worker whose handle runs its server). */
bool shoal_ps_is_server(const shoal_ps_config_t *cfg);

/** "bsp", "async", "ssp"; "sgd", "adam", "average"; "const", "cosine", "step". */
const char *shoal_ps_mode_name(shoal_ps_mode_t m);
const char *shoal_ps_optimizer_name(shoal_ps_optimizer_t o);
const char *shoal_ps_schedule_name(shoal_ps_schedule_t s);
/** Parse those names; -EINVAL for anything else. */
int shoal_ps_parse_mode(const char *s, shoal_ps_mode_t *m);
int shoal_ps_parse_optimizer(const char *s, shoal_ps_optimizer_t *o);
int shoal_ps_parse_schedule(const char *s, shoal_ps_schedule_t *sch);

/**
 * "none", "fp16", "bf16", "topk:R" or "topk-noef:R" (R the fraction sent,
 * e.g. 0.01): -EINVAL for anything else.  The name of a job's setting
 * (into @buf) in the same syntax.
 */
int shoal_ps_parse_compress(const char *s, shoal_ps_compress_t *c, float *ratio);
const char *shoal_ps_compress_name(const shoal_ps_job_t *job, char *buf, size_t len);

/**
 * Bytes one worker sends to and receives from all servers per iteration
 * for @nparams parameters under @job's compression (control messages
 * aside).
 */
void shoal_ps_wire_bytes(const shoal_ps_job_t *job, size_t nparams, int servers,
                         size_t *push, size_t *pull);

/** The learning rate at @epoch (fractional) of the job's schedule. */
float shoal_ps_lr(const shoal_ps_job_t *job, double epoch);

/**
 * The optimizer the servers run, for a local reference (a single-process
 * run that must match a BSP job) or a test.  @job gives the optimizer, its
 * hyper-parameters, workers (for momentum_auto) and the schedule's length;
 * @n is the number of parameters it updates.
 */
typedef struct shoal_ps_optim shoal_ps_optim_t;
int shoal_ps_optim_create(const shoal_ps_job_t *job, size_t n, shoal_ps_optim_t **o_p);

/**
 * One update at @epoch (fractional, for the schedule): out = step(in,
 * scale * sum of @ng gradients); @out may equal @in.  With AVERAGE, out =
 * scale * sum of the gradients.
 */
void shoal_ps_optim_step(shoal_ps_optim_t *o, double epoch, float *out, const float *in,
                         const float *const *g, int ng, float scale);
void shoal_ps_optim_destroy(shoal_ps_optim_t *o);

/* ------------------------------------------------------------------ */
/* Servers                                                            */
/* ------------------------------------------------------------------ */

/**
 * Serve this rank's shard until every worker has finished (or been given
 * up on), then return 0.  The shard, the optimizer and the job come from
 * the workers.  Checkpoints, --resume, authentication (SHOAL_AUTH_FILE),
 * heartbeats and rejoining workers as described above.  On failure a
 * negative errno and the reason in @err.  At the end it prints "applied N
 * gradients, each once; dropped D duplicate or stale pushes" on stderr.
 */
int shoal_ps_serve(const shoal_ps_config_t *cfg, char *err, size_t errlen);

/* ------------------------------------------------------------------ */
/* Workers                                                            */
/* ------------------------------------------------------------------ */

typedef struct shoal_ps shoal_ps_t;

/** One named tensor of the parameter vector, in order. */
typedef struct shoal_ps_tensor {
    const char *name;
    size_t count;                /**< floats */
} shoal_ps_tensor_t;

/**
 * Make a worker handle: check @cfg, create the libshoal context, declare
 * the parameters as @n tensors laid end to end in one flat vector of P =
 * sum(count) floats (n = 1 for a plain vector; every worker must declare
 * the same list: names and counts are checked by the servers), and
 * register the caller's @params and @grads (P floats each, which must stay
 * valid until shoal_ps_destroy()).  Nothing is sent yet.
 */
int shoal_ps_create(const shoal_ps_config_t *cfg, const shoal_ps_tensor_t *tensors, int n,
                    float *params, float *grads, shoal_ps_t **ps_p, char *err,
                    size_t errlen);

/**
 * Join the job: find the servers, introduce this worker and wait for its
 * first parameters (into @params: worker 0's initial ones, at the start of
 * a job).  Bounded by connect_timeout_ms.
 */
int shoal_ps_join(shoal_ps_t *ps);

/**
 * One iteration: push @grads (the gradient of iteration
 * shoal_ps_iteration()) to every server and wait for the fresh parameters.
 * On return the iteration counter moved on (or, after a server restart,
 * back: always read shoal_ps_iteration()).  Equivalent to
 * shoal_ps_push_start() then shoal_ps_push_wait(-1).
 */
int shoal_ps_push_pull(shoal_ps_t *ps);

/**
 * The same, for a gradient computed for iteration @k: if the iteration
 * changed meanwhile (the handle reconnected while the caller computed, and
 * the servers continue elsewhere), nothing is pushed and -ESTALE returned;
 * read shoal_ps_iteration() and compute that one.
 */
int shoal_ps_push_pull_at(shoal_ps_t *ps, uint32_t k);

/**
 * Make sure shoal_ps_iteration() is the servers' current word: a round
 * trip to every server; a server that does not answer (restarted, or
 * gone) is reconnected to first, within reconnect_timeout_ms, and the
 * iteration is then the one the servers continue at.  The iteration is
 * otherwise only as fresh as the keeper's last look (it notices a lost
 * server within fail_timeout_ms): call this before a decision that a
 * stale iteration would make wrong, such as skipping a push because the
 * iteration is already past it.  Not while a push-pull is in flight
 * (-EBUSY).
 */
int shoal_ps_refresh(shoal_ps_t *ps);

/**
 * Optional, while the gradient is being computed: its entries from @from
 * to the end are final (a backward pass finishes the last layer first),
 * and may start to travel now; the push-pull then sends the rest.  The
 * entries handed over must not change before the push-pull.  Does nothing
 * with top-k compression, while a push-pull is in flight, or for pieces
 * under 16 KiB that do not end a server's slice.  0, or -EINVAL for an
 * entry past the end; a transport failure is left to the push-pull.
 */
int shoal_ps_push_ready(shoal_ps_t *ps, size_t from);

/**
 * Start a push-pull and return at once; @grads and @params belong to the
 * library until shoal_ps_push_test() returns 1 or shoal_ps_push_wait()
 * returns 0.  -EBUSY if one is already in flight.
 */
int shoal_ps_push_start(shoal_ps_t *ps);

/** 1 when the push-pull started is complete, 0 when not yet, or <0. */
int shoal_ps_push_test(shoal_ps_t *ps);

/** Wait up to @timeout_ms (-1 = until done): 0 done, -ETIMEDOUT, or <0. */
int shoal_ps_push_wait(shoal_ps_t *ps, int timeout_ms);

/** The iteration this worker computes next (0 at the start). */
uint32_t shoal_ps_iteration(const shoal_ps_t *ps);

/**
 * The workers that share the training data in @epoch (decided by server 0
 * at the start of each epoch: the workers not given up on): waits for it
 * if needed (it comes with the parameters that start the epoch).  On
 * return *@member says whether this worker is one, and *@shard of
 * *@shards is the part of the data it should train on (the j-th of n
 * members takes shard j of n; a non-member keeps its own shard
 * index of workers).  Without failures shard = worker index.
 */
int shoal_ps_data_shard(shoal_ps_t *ps, uint32_t epoch, bool *member, int *shard,
                        int *shards);

/** Tell the servers this worker is done (they exit when all are). */
int shoal_ps_finish(shoal_ps_t *ps);

/** Close the connections, deregister, free (safe on NULL). */
void shoal_ps_destroy(shoal_ps_t *ps);

/** This worker's index (0..W-1), W, and P. */
int shoal_ps_worker(const shoal_ps_t *ps);
int shoal_ps_workers(const shoal_ps_t *ps);
size_t shoal_ps_nparams(const shoal_ps_t *ps);

/** The transport in use, for banners ("ucx (UCX_TLS=tcp)"). */
const char *shoal_ps_describe(const shoal_ps_t *ps);

/** The handle's libshoal context (placement, describe); owned by @ps. */
struct shoal_ctx *shoal_ps_ctx(shoal_ps_t *ps);

/** The message of the last failed call on @ps. */
const char *shoal_ps_errmsg(const shoal_ps_t *ps);

/**
 * The last push-pull's round time in microseconds (push, update, fresh
 * parameters back), for reports.
 */
double shoal_ps_last_round_us(const shoal_ps_t *ps);

/**
 * Gradient bytes pushed so far, and how many of them went ahead through
 * shoal_ps_push_ready(), for reports.
 */
void shoal_ps_pushed_bytes(const shoal_ps_t *ps, uint64_t *total, uint64_t *early);

#ifdef __cplusplus
}
#endif

#endif /* SHOAL_PS_H */
