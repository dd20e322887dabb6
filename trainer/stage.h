/*
 * stage.h -- the state of a worker that is one stage of a pipeline replica,
 * shared by the role (stage.c: the GPipe steps, evaluation, the model
 * gathered for --save, reports) and its chain (chain.c: the connections to
 * its neighbours, their events, and the recovery of the replica after a
 * failure).  Not an API: one stage per process.
 */
#ifndef SHOAL_TRAIN_STAGE_H
#define SHOAL_TRAIN_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "layout.h"
#include "pipe_proto.h"
#include "report.h"
#include "shard.h"
#include "train.h"

/* One neighbour. */
struct link {
    shoal_ep_t *ep;
    bool up;                  /* the handshake is done: rmr is its inbox */
    shoal_rmr_t *rmr;         /* where we put: its activation or gradient inbox */
    int puts;                 /* our puts on it not yet complete */
    const char *name;         /* "the stage before", "the stage after" */
};

struct stage {
    const struct train_cfg *c;
    int w, s, r, K, D, M, mb, b;
    uint64_t incarnation;
    char err[1024];

    /* the job (stage 0 reads it from the data, the others from HELLO) */
    bool have_job;
    struct pipe_job job;
    struct model whole, m;    /* the whole model and this stage's layers */
    struct layout lo;
    int in_w, out_w, iters;
    uint32_t total;

    /* network */
    shoal_ctx_t *ctx;
    shoal_listener_t *lis;
    double last_accept, next_connect;
    struct link up, down, pending;
    char addr_file[TRAIN_PATH_MAX + 32], down_file[TRAIN_PATH_MAX + 32];

    /* memory: see the top of the file */
    uint8_t *inbox, *out;
    float *gin, *gout;
    shoal_mr_t *inbox_mr, *out_mr, *gin_mr, *gout_mr;
    size_t in_slot, out_slot; /* bytes of an inbox / out slot */
    float *params, *grad;
    float *act[MODEL_MAX_LAYERS];
    float *tmp[2], *ones, *dl;
    float *x;
    int32_t *y;
    struct model_ws ews;      /* last stage: evaluation scratch */
    size_t act_bytes;         /* activations, inboxes, slots, scratch */

    /* data (stage 0) */
    struct dataset train, test;
    struct batcher bt;
    struct shard sh;
    int epoch;                /* whose shuffle the batcher holds (-1 none) */

    shoal_ps_t *ps;

    /* the chain */
    uint32_t gen;
    bool syncing;             /* agreeing where to go on */
    bool restart;             /* a reset stopped the step in progress */
    bool refreshed;           /* this generation asked the servers for its PS iteration */
    bool sync_in, sync_out, go;
    uint32_t sync_k, go_k;
    bool done_down, exit_up, finished;
    bool finishing;           /* in finish_job: every step done, the chain is ending */
    uint32_t step;

    /* data in flight, counted since GO */
    uint32_t acts_in, acts_used, grads_in, grads_used, evals_in;
    uint32_t eval_ends;       /* EVAL_END messages received */
    uint32_t eval_chunks;     /* the last EVAL_END's count */
    int credits_grad;         /* gradient slots of the stage before we may fill */
    int credits_eval;         /* inbox slots of the stage after we may fill */
    uint32_t out_seq, gout_seq;
    bool out_busy[2], gout_busy[2];

    /* --save: the model gathered towards the last stage */
    float *gbuf;
    shoal_mr_t *gbuf_mr;
    shoal_rmr_t *grmr;
    bool gather_in, gather_busy;

    /* reports */
    double busy;              /* seconds spent computing */
    double busy_all[MODEL_MAX_LAYERS];
    uint64_t bytes_sent;      /* to the neighbours in training steps */
    uint32_t steps_run;
    int reported_epoch;
    double acc, tloss;
    struct report rep;
    bool rep_open;
};


static inline bool reporter(const struct stage *st) { return st->r == 0 && st->s == st->K - 1; }

static inline float *inbox_act(const struct stage *st, int i)
{
    return (float *)(st->inbox + (size_t)i * st->in_slot);
}
static inline int32_t *inbox_lab(const struct stage *st, int i)
{
    return (int32_t *)(st->inbox + (size_t)i * st->in_slot +
                       (size_t)st->mb * (size_t)st->in_w * sizeof(float));
}
static inline float *out_act(const struct stage *st, int i)
{
    return (float *)(st->out + (size_t)i * st->out_slot);
}
static inline int32_t *out_lab(const struct stage *st, int i)
{
    return (int32_t *)(st->out + (size_t)i * st->out_slot +
                       (size_t)st->mb * (size_t)st->out_w * sizeof(float));
}

/* ---- stage.c -------------------------------------------------------------- */

/* Set st->err; -EPROTO. */
int stage_fail(struct stage *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The job is known (stage 0: from the data; others: HELLO): the model,
 * this stage's layers, every buffer. */
int stage_setup(struct stage *st);
/* Join the stage's PS group (the first time the chain syncs). */
int stage_join_ps(struct stage *st);
/* shoal_ps_refresh() of the stage's PS handle; on failure st->err says why. */
int stage_refresh(struct stage *st);

/* ---- chain.c -------------------------------------------------------------- */

/* Where worker @w publishes its address. */
void chain_addr_path(const struct train_cfg *c, int w, char *buf, size_t len);
/* Stages > 0: listen and publish the address. */
int chain_listen(struct stage *st);
/* Start generation @g: the step in progress stops (st->restart), the
 * neighbours hear of it, and the chain agrees again where to go on. */
void chain_reset(struct stage *st, uint32_t g);
/* The servers continue this stage at iteration @k, before step @j (a
 * restart from a checkpoint): say so and start a new generation;
 * returns -ERESTART. */
int chain_went_back(struct stage *st, uint32_t j, uint32_t k);
/* Wait up to @timeout_ms (0: just look) for events and handle them. */
int chain_pump(struct stage *st, int timeout_ms);

typedef bool (*ready_fn)(const struct stage *st, uint32_t arg);

/* Pump until @ready(st, arg): 0, -ERESTART when a reset stops the step,
 * or a failure (no progress for the idle timeout included). */
int chain_wait(struct stage *st, ready_fn ready, uint32_t arg, const char *what);
/* Put @len bytes from @mr+@loff to @rmr+@roff on the link, with @imm. */
int chain_put(struct stage *st, struct link *L, shoal_mr_t *mr, size_t loff, shoal_rmr_t *rmr,
              size_t roff, size_t len, uint32_t imm, uint64_t wr_id);
/* Send @m (of the current generation) on the link. */
void chain_send(struct stage *st, struct link *L, struct pipe_msg *m);
int chain_pack(struct stage *st, shoal_mr_t *mr, uint8_t *desc, uint32_t *len);
/* Connect the neighbours and agree on the next step (st->step). */
int chain_sync(struct stage *st);
/* Forget a connection (its puts are canceled with it). */
void chain_drop(struct stage *st, struct link *L);
/* Close the connections after the chain ended (flushing what was sent). */
void chain_close(struct stage *st);

#endif
