/*
 * ps_core.h -- a parameter server's decisions, with no I/O.
 *
 * The core is a state machine in the manner of etcd's raft library: the
 * server loop (ps_server.c) feeds it events (a worker joined, a gradient
 * of iteration k arrived, a worker was lost or finished, a put of
 * parameters completed, time passed) and carries out the actions it
 * returns (apply these gradients to a fresh buffer, send parameters to
 * this worker, tell it the epoch's data membership, drop this push, write
 * a checkpoint).  It knows no sockets, no clock of its own (events carry
 * the time) and no floats: what it decides is who may go ahead and what
 * is applied once.  tests/ps/test-ps-core drives it directly.
 *
 * Rules it keeps:
 *   exactly once  a push of iteration k from worker w is taken only when
 *                 k is the clock the core holds for w and w has nothing
 *                 pending; anything else is dropped (DROP) and counted.
 *   bsp           an update is applied when every live worker's gradient
 *                 of the round is in and no lost worker may still come
 *                 back for it (within the rejoin timeout); then every
 *                 live worker is answered.
 *   async         each gradient is applied on arrival (scale 1/n, n the
 *                 workers still in the job) and its sender answered.
 *   ssp           as async, but the answer to a worker at clock c is
 *                 held until the slowest live worker is at c - s.
 *   buffers       updates read the current buffer and write a free one
 *                 (no puts reading it); a pool of W + 2 always has one.
 *   membership    (server 0) the workers sharing the data in epoch e are
 *                 fixed the first time a worker enters e, and sent before
 *                 the parameters that start its epoch.
 *   restore       a checkpoint sets the clocks back; every worker is then
 *                 lost until it rejoins, and continues at the clock the
 *                 checkpoint holds for it.
 */
#ifndef SHOAL_PS_CORE_H
#define SHOAL_PS_CORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PS_CORE_MAX_WORKERS 1024

enum ps_core_mode { PS_CORE_BSP = 0, PS_CORE_ASYNC, PS_CORE_SSP };

struct ps_core_cfg {
    int workers;                 /* W */
    enum ps_core_mode mode;
    int staleness;               /* ssp */
    uint32_t iters_per_epoch, epochs;
    bool coordinator;            /* server 0: decides the data membership */
    bool need_init;              /* take the first parameters from worker 0 */
    double rejoin_timeout;       /* seconds a lost worker is waited for (bsp) */
    uint32_t checkpoint_every;   /* updates; 0 = not by count */
    double checkpoint_secs;      /* 0 = not by time */
};

enum ps_ev_type {
    PS_EV_JOIN = 1,   /* worker, incarnation: a worker introduced itself */
    PS_EV_PUSH,       /* worker, k: its gradient of iteration k is in its slot */
    PS_EV_LOST,       /* worker: connection failed or silent */
    PS_EV_DONE,       /* worker: finished the job (BYE) */
    PS_EV_PUT_DONE,   /* worker, buf: a parameter put from buf completed (or
                         was canceled); worker -1 when it was not an answer */
    PS_EV_BLOCKED,    /* worker, buf: the answer met a full send queue */
    PS_EV_INIT_DONE,  /* worker: the initial parameters were fetched from it */
    PS_EV_INIT_FAILED,/* worker: fetching them failed */
    PS_EV_TICK,       /* time passed */
    PS_EV_CHECKPOINT_OK, /* a checkpoint write the core asked for is done */
};

struct ps_event {
    enum ps_ev_type type;
    int worker;
    uint32_t k;                  /* PUSH: the iteration */
    uint32_t incarnation;        /* JOIN */
    int buf;                     /* PUT_DONE, BLOCKED */
    const char *why;             /* LOST: how (for the log), or NULL */
    double now;                  /* seconds, any monotonic origin */
};

enum ps_act_type {
    PS_ACT_WELCOME = 1, /* worker, k: accept it; it continues at iteration k */
    PS_ACT_REFUSE,      /* worker, why: refuse this connection (not the worker) */
    PS_ACT_REPLACE,     /* worker: close its old connection (a new one came) */
    PS_ACT_FETCH_INIT,  /* worker, buf: get its parameters into buffer buf */
    PS_ACT_APPLY,       /* from, to, n, slots[], scale, progress: buffer to =
                           optimizer(buffer from, scale * sum of the slots) */
    PS_ACT_MEMBERS,     /* worker, epoch, live: the data membership of epoch */
    PS_ACT_SEND,        /* worker, buf, version: put buffer buf to it */
    PS_ACT_DROP,        /* worker, k, expected: a duplicate or stale push */
    PS_ACT_CHECKPOINT,  /* write one now (at version) */
    PS_ACT_GIVE_UP,     /* worker: it did not rejoin in time */
    PS_ACT_NOTE,        /* why: something worth a log line */
};

struct ps_action {
    enum ps_act_type type;
    int worker;
    uint32_t k, expected, version, epoch;
    int from, to, buf;
    int n;                       /* APPLY: slots */
    const int *slots;            /* APPLY: worker indices; valid until the next step */
    float scale;                 /* APPLY */
    double progress;             /* APPLY: epochs done (fractional), for the lr */
    const uint8_t *live;         /* MEMBERS: bitmap of W bits; valid until next step */
    char why[160];
};

enum ps_wstate { PS_W_JOINING = 0, PS_W_LIVE, PS_W_LOST, PS_W_GONE, PS_W_DONE };

struct ps_core_worker {
    enum ps_wstate state;
    uint32_t incarnation;
    uint32_t clock;              /* gradients taken from it */
    double lost_at;
    bool arrived;                /* bsp: this round's gradient is in */
    bool queued;                 /* async/ssp: waiting to be applied */
    bool waiting;                /* applied, answer held back */
    bool answer_due;             /* answer blocked (send queue) or held */
    uint32_t members_sent;       /* 1 + epoch of the last MEMBERS on this connection */
};

struct ps_core_run {
    uint32_t from;
    uint8_t live[PS_CORE_MAX_WORKERS / 8];
};

struct ps_core {
    struct ps_core_cfg cfg;
    int W;
    struct ps_core_worker *w;
    int *readers, npool, cur;    /* buffer pool: puts reading each */
    uint16_t *wreaders;          /* [W][npool]: of those, the answers to each worker
                                    (closing its connection ends them, with no event) */
    uint32_t version;            /* updates applied */
    uint64_t grads, dropped;
    int arrived;                 /* bsp */
    int *queue, qhead, qlen;     /* async/ssp arrival order */
    enum { PS_INIT_NONE, PS_INIT_FETCHING, PS_INIT_HAVE } init;
    int init_from;
    struct ps_core_run *run;     /* membership runs (coordinator) */
    int nrun, caprun;
    uint32_t fixed;              /* epochs before this have a fixed membership */
    uint32_t ckpt_version;
    double ckpt_time, last_progress;
    bool ckpt_pending;
    /* actions of the current step */
    struct ps_action *act;
    int nact, capact;
    int *slots;                  /* APPLY's slot list */
    uint8_t live[PS_CORE_MAX_WORKERS / 8];
    bool oom;
};

/* 0, or -EINVAL / -ENOMEM.  @now starts the checkpoint clock. */
int ps_core_init(struct ps_core *c, const struct ps_core_cfg *cfg, double now);
void ps_core_fini(struct ps_core *c);

/*
 * Take one event; the actions it leads to are in c->act[0..c->nact), in
 * the order to carry them out (valid until the next call).  Returns
 * c->nact, or -ENOMEM / -EINVAL (an event naming no worker of the job).
 */
int ps_core_step(struct ps_core *c, const struct ps_event *ev);

/*
 * Restore a checkpoint: version, gradients applied, each worker's clock and
 * whether it had finished.  Every other worker becomes LOST at @now (and
 * must rejoin); initial parameters are not fetched.  -EINVAL if the
 * clocks cannot belong to the job (bsp: a live clock other than version).
 */
int ps_core_restore(struct ps_core *c, uint32_t version, uint64_t grads,
                    const uint32_t *clock, const uint8_t *done, double now);

/* Every worker finished or given up on. */
bool ps_core_finished(const struct ps_core *c);

/* Bit i of a membership bitmap. */
static inline bool ps_core_member(const uint8_t *live, int i)
{
    return live[i / 8] >> (i % 8) & 1;
}

static inline void ps_core_member_set(uint8_t *live, int i)
{
    live[i / 8] = (uint8_t)(live[i / 8] | 1u << (i % 8));
}

const char *ps_core_action_name(enum ps_act_type t);

#endif
