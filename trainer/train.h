/*
 * train.h -- shoal-train's job description and the entry points of its
 * roles.  main.c fills a train_cfg from the command line and the
 * environment; the roles only read it.
 */
#ifndef SHOAL_TRAIN_H
#define SHOAL_TRAIN_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "data.h"
#include "model.h"
#include "shoal.h"
#include "shoal_ps.h"

#define TRAIN_PATH_MAX 4096

/* The optimizer the servers run (see shoal_ps.h). */
struct optim_cfg {
    float lr;
    float momentum;          /* 0 = plain SGD */
    float weight_decay;
    shoal_ps_schedule_t schedule;
    int step_epochs;         /* LR_STEP: multiply by gamma every step_epochs */
    float gamma;
};

struct train_cfg {
    /* job layout */
    int rank, size;          /* this process among servers + workers */
    int servers, workers;    /* ranks 0..servers-1 are servers */
    bool colocated;          /* every process is worker r and serves shard r; rank and
                                size are then those of the virtual layout (servers =
                                workers = processes, rank = servers + process) */
    int local_rank;          /* among this node's processes, for binding */

    /* meeting */
    char coord_host[SHOAL_PS_HOST_MAX];
    uint16_t coord_port;
    char rendezvous[TRAIN_PATH_MAX]; /* or a file rank 0 writes its address to */
    char host[SHOAL_PS_HOST_MAX];  /* where this process listens (servers) */
    int connect_timeout_ms;  /* to find the servers at start */
    int idle_timeout_ms;     /* no training progress for this long = failure */

    /* failures */
    int fail_timeout_ms;     /* a peer silent this long is lost (heartbeats
                                every quarter of it) */
    int rejoin_timeout_ms;   /* bsp: how long to wait for a lost worker */
    int reconnect_timeout_ms;/* workers: how long to try to reach a lost server */
    char checkpoint_dir[TRAIN_PATH_MAX]; /* servers: where checkpoints go */
    int checkpoint_every;    /* updates between checkpoints (0 = by time only) */
    double checkpoint_secs;  /* seconds between checkpoints (0 = by count only) */
    bool resume;             /* servers: start from the newest valid checkpoint */

    /* data */
    char data_dir[TRAIN_PATH_MAX];   /* IDX directory */
    char train_file[TRAIN_PATH_MAX]; /* LIBSVM (instead of IDX) */
    char test_file[TRAIN_PATH_MAX];
    int features, classes;           /* 0 = from the data */

    /* model and optimization */
    int hidden[MODEL_MAX_LAYERS];
    int nhidden;
    shoal_ps_mode_t mode;
    int staleness;
    int epochs, batch;
    int iters_per_epoch;             /* 0 = a full pass over each shard */
    int bench_rounds;                /* > 0: time this many compute-free rounds
                                        (one epoch), no training */
    struct optim_cfg opt;
    bool momentum_set;               /* --momentum given (else async/ssp adjust it) */
    uint64_t seed;
    int threads;                     /* OpenBLAS threads per process */

    /* pipeline (layout.h): W workers = W / stages replicas x stages */
    int stages;                      /* K: consecutive layer runs on K workers */
    int micro;                       /* M: micro-batches a replica's batch is cut into */
    char pipe_dir[TRAIN_PATH_MAX];   /* where stages publish their addresses ("" = next
                                        to the rendezvous file) */

    /* output */
    char metrics[TRAIN_PATH_MAX];
    char save[TRAIN_PATH_MAX];
    double log_interval;             /* seconds between progress lines */
    bool verify;                     /* check each parameter delivery */
    shoal_ps_compress_t compress;    /* what crosses the wire */
    float topk_ratio;
    bool overlap;                    /* push each layer's gradient as backward makes it */
    bool quiet;
};

/* Mean loss of the model with parameters @p over all of @d (and the
 * number it classifies right in *@ok), converting rows a batch at a time;
 * -1 if out of memory. */
float train_eval(const struct model *m, const float *p, const struct dataset *d, size_t *ok,
                 struct model_ws *ws);

/* Untimed rounds before the timed ones of --bench-rounds. */
#define TRAIN_BENCH_WARMUP 50

/* n zeroed floats, page aligned (registered buffers); free() them. */
float *train_alloc_floats(size_t n);

/* Load data shard @shard of @shards (the samples with index % shards ==
 * shard), and the test set if @test; @tick (or NULL) is called during long
 * loads. */
int train_load_data(const struct train_cfg *c, int shard, int shards, struct dataset *train,
                    struct dataset *test, const struct data_tick *tick, char *err,
                    size_t errlen);

/* Iterations per epoch every worker runs (the same for all, so BSP stays
 * in step): a full pass over the smallest shard unless capped. */
int train_iters_per_epoch(const struct train_cfg *c, size_t smallest_shard);

/* The job as the PS layer sees it (and the meeting, timeouts, checkpoints). */
void train_ps_config(const struct train_cfg *c, size_t nparams, int iters,
                     shoal_ps_config_t *out);

/* Place this process's compute: OpenBLAS gets --threads, but no more than
 * the cores libshoal's placement plan (SHOAL_BIND) gives this process, and
 * with one thread the calling thread is bound to the plan's first core. */
void train_place_compute(shoal_ctx_t *ctx, const struct train_cfg *c);

/* One line about the placement in force, for the banner. */
const char *train_placement(const shoal_ctx_t *ctx);

int server_main(const struct train_cfg *c);
int worker_main(const struct train_cfg *c);
/* A worker that is one stage of a pipeline replica (--stages > 1). */
int stage_main(const struct train_cfg *c);
/* The whole job in one process, no network: the reference BSP is
 * checked against (same shards, same global batches). */
int single_main(const struct train_cfg *c);
int eval_main(const struct train_cfg *c, const char *model_file);
/* Exit status 0 when two model files agree within @tolerance. */
int compare_main(const char *a, const char *b, double tolerance);

#endif
