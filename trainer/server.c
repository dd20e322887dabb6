/*
 * server.c -- a shoal-train parameter server: owns one contiguous shard of
 * the parameters, applies the workers' gradients to it and sends the
 * fresh shard back.
 *
 * Memory, for a shard of n floats and W workers:
 *   slot[w]   n floats per worker, each registered on its own for remote
 *             write; only worker w gets its descriptor, so a worker can
 *             write its own slot and nothing else here.
 *   pool[i]   W + 2 parameter buffers (local registration: the source of
 *             the puts to the workers).  Every update reads the current
 *             buffer and writes a free one, which becomes current: a
 *             buffer a put is still reading is never written.
 *   momentum  n floats, when --momentum is set.
 *
 * Events drive everything (one thread, shoal_wait):
 *   IMM from worker w (its gradient for iteration k landed in slot[w]):
 *     bsp    when all workers' iteration-k gradients are in, average them,
 *            update once, put the new shard to every worker (imm = version)
 *     async  apply slot[w] (scaled by 1/W) at once, answer worker w
 *     ssp    like async, but answer worker w only while the slowest worker
 *            is at most --staleness iterations behind it
 *   PUT_DONE: a pool buffer has one reader less.
 * Server 0 is also the coordinator: the other servers register their
 * address with it, and it gives workers the table of all servers.
 *
 * Failures.  A worker whose endpoint fails, or that sends nothing (not
 * even a PING) for --fail-timeout, is LOST: its endpoint is closed and a
 * gradient it had pushed for the current bsp round is forgotten.  bsp
 * waits for a lost worker up to --rejoin-timeout, then goes on with the
 * live ones (GONE); async and ssp go on at once.  A worker that connects
 * again with the same index (a new process, or the same one after a
 * network break) rejoins: WELCOME tells it the iteration to continue from
 * (its clock here: pushes applied), so no gradient is applied twice and
 * none that was answered is lost.  With --checkpoint-dir the state is
 * saved every --checkpoint-every updates / --checkpoint-secs seconds, and
 * --resume starts from the newest valid checkpoint.
 *
 * Data shards.  Server 0 decides which workers share the training data in
 * each epoch: the membership of epoch e is fixed the first time a worker
 * enters e (bsp: when the round that ends epoch e - 1 completes), as every
 * worker not given up on (GONE) or finished, and sent (MEMBERS) to each
 * worker just before the parameters that start its epoch e, and after a
 * WELCOME.  The members split the whole set among themselves (see
 * train_data_shard); a worker lost for good thus has its samples taken
 * over from the next epoch, and a rejoining one gets its place back at
 * the first epoch fixed after it came back.  Other servers send no
 * MEMBERS: the workers follow server 0 alone, so they always agree.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "checkpoint.h"
#include "ckwriter.h"
#include "net.h"
#include "report.h"
#include "train.h"

enum peer_kind { PEER_NEW = 0, PEER_WORKER, PEER_SERVER };

struct speer {
    enum peer_kind kind;
    shoal_ep_t *ep;           /* NULL once closed (the peer stays listed) */
    int worker;               /* PEER_WORKER: its index */
    double last_heard;        /* any event from it */
    double last_sent;         /* anything to it */
    struct speer *next;       /* all peers */
};

/* A worker's place in the job, as this server sees it. */
enum wstate { W_JOINING = 0, W_LIVE, W_LOST, W_GONE, W_DONE };

struct sworker {
    enum wstate state;
    struct speer *peer;       /* while LIVE */
    uint32_t incarnation;
    double lost_at;
    shoal_mr_t *slot_mr;
    float *slot;
    shoal_rmr_t *params;      /* its parameter slice for this shard */
    uint32_t clock;           /* gradients received */
    bool arrived;             /* bsp: this round's gradient is in */
    bool queued;              /* async/ssp: gradient waiting to be applied */
    bool waiting;             /* ssp: applied, answer held back */
    uint32_t members_sent;    /* server 0: 1 + the epoch of the last MEMBERS sent on this
                                 connection (0: none yet) */
    bool answer_due;          /* its answer met a full send queue */
    int answer_buf;           /* pool buffer of the answer in flight, or -1 */
};

struct pbuf {
    float *p;
    shoal_mr_t *mr;
    int readers;              /* puts in flight from it */
};

struct server {
    const struct train_cfg *c;
    int index;
    shoal_ctx_t *ctx;
    shoal_listener_t *l;
    struct speer *peers;
    shoal_ep_t *coord;        /* servers > 0: the connection to server 0 */
    char host[PS_HOST_MAX];
    uint16_t port;

    /* job, fixed by the first HELLO and checked against every other */
    bool job_known;
    struct ps_hello job;
    int W;
    size_t nparams, off, len;
    double T;                 /* total rounds, for the lr schedule */

    struct sworker *w;
    struct pbuf *pool;
    int npool, cur;
    float *mom;
    uint32_t version;         /* updates applied */
    uint64_t grads;           /* gradients applied (async/ssp) */
    int arrived, hellos;
    uint64_t dropped;         /* stale or duplicate pushes ignored */
    /* server 0: who shares the data in each epoch, as runs of epochs:
     * from run[i].from up to the next run's start, run[i].live (fixed for
     * the epochs before @fixed, never changed after) */
    struct mrun {
        uint32_t from;
        uint8_t live[PS_MAX_WORKERS / 8];
    } *run;
    int nrun, caprun;
    uint32_t fixed;
    double last_progress;     /* a gradient, a join or a finish */
    uint32_t ckpt_version;    /* version of the last checkpoint */
    struct ckwriter ckw;      /* writes them in the background */
    double ckpt_time;
    int *queue, qhead, qlen;  /* async/ssp: workers whose gradient waits */

    /* server 0: the table */
    struct ps_msg table;
    int registered;           /* servers known, including us */
    double t_first, t_last;
    bool inject_torn;         /* tests only: see inject_torn() */
    struct optim_cfg opt;     /* the job's, momentum adjusted for async/ssp */
    shoal_ep_t *closed[256];  /* endpoints closed while handling this batch */
    int nclosed;
    bool closed_overflow;
    double last_look;         /* last heartbeat check */
    char err[1024];
};

__attribute__((format(printf, 2, 3)))
static int sfail(struct server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    return -EPROTO;
}


/* ---- the table (server 0) ------------------------------------------------ */

static bool table_complete(const struct server *s)
{
    return s->registered == s->c->servers;
}

static int send_table(struct server *s, shoal_ep_t *ep)
{
    int rc = net_send(ep, &s->table);
    if (rc) /* that peer's connection broke; its failure event follows */
        fprintf(stderr, "shoal-train: server %d: TABLE to %s: %s\n", s->index,
                shoal_ep_peer(ep), shoal_strerror(rc));
    return 0;
}

/* ---- job setup --------------------------------------------------------- */

/* Allocate the shard's buffers once the first HELLO told the job. */
static int setup_job(struct server *s, const struct ps_hello *h)
{
    const struct train_cfg *c = s->c;
    s->job = *h;
    s->job_known = true;
    s->W = (int)h->workers;
    s->nparams = (size_t)h->nparams;
    train_shard(s->nparams, c->servers, s->index, &s->off, &s->len);
    s->T = (double)h->iters_per_epoch * h->epochs;
    s->w = calloc((size_t)s->W, sizeof(*s->w));
    s->npool = s->W + 2;
    s->pool = calloc((size_t)s->npool, sizeof(*s->pool));
    s->queue = calloc((size_t)s->W, sizeof(int));
    if (!s->w || !s->pool || !s->queue)
        return sfail(s, "out of memory");
    for (int i = 0; i < s->npool; i++) {
        s->pool[i].p = train_alloc_floats(s->len);
        if (!s->pool[i].p)
            return sfail(s, "out of memory for %d x %zu parameters", s->npool, s->len);
        if (shoal_mr_reg(s->ctx, s->pool[i].p, s->len * sizeof(float), 0, &s->pool[i].mr))
            return sfail(s, "registering parameters: %s", shoal_ctx_errmsg(s->ctx));
    }
    /* Asynchronous updates act like extra momentum (each gradient was
     * computed before the others' updates landed: about 1 - 1/W of it),
     * so unless the user chose, async/ssp keep the same total:
     * 1 - mu_async = W * (1 - mu).  Measured here (W = 2, MLP-256, 10
     * epochs): async 87.2% at 0.9, 88.4% at 0.8; bsp 88.6%. */
    s->opt = c->opt;
    if (c->mode != PS_BSP && !c->momentum_set && c->opt.momentum > 0.0f) {
        float mu = 1.0f - (float)s->W * (1.0f - c->opt.momentum);
        s->opt.momentum = mu > 0.0f ? mu : 0.0f;
        if (!c->quiet)
            fprintf(stderr, "shoal-train: server %d: %s with %d workers: momentum %.2f "
                    "(--momentum sets it)\n", s->index, ps_mode_name(c->mode), s->W,
                    s->opt.momentum);
    }
    if (s->opt.momentum != 0.0f && !(s->mom = train_alloc_floats(s->len)))
        return sfail(s, "out of memory");
    /* The initial parameters: element i depends only on (seed, i), so any
     * sharding starts from the same model. */
    float *full = train_alloc_floats(s->nparams);
    if (!full)
        return sfail(s, "out of memory");
    struct model m;
    int dims[MODEL_MAX_LAYERS + 1], nd = 0;
    for (const char *q = h->model; *q && nd <= MODEL_MAX_LAYERS;) {
        dims[nd++] = atoi(q);
        q = strchr(q, '-');
        if (!q)
            break;
        q++;
    }
    if (nd < 2 || model_init(&m, dims[0], dims + 1, nd - 2, dims[nd - 1]) ||
        m.nparams != s->nparams) {
        free(full);
        return sfail(s, "worker's model \"%s\" does not have %zu parameters", h->model,
                     s->nparams);
    }
    model_init_params(&m, full, c->seed);
    memcpy(s->pool[0].p, full + s->off, s->len * sizeof(float));
    free(full);
    s->cur = 0;
    for (int i = 0; i < s->W; i++) {
        struct sworker *sw = &s->w[i];
        sw->answer_buf = -1;
        sw->slot = train_alloc_floats(s->len);
        if (!sw->slot)
            return sfail(s, "out of memory for %d gradient slots", s->W);
        if (shoal_mr_reg(s->ctx, sw->slot, s->len * sizeof(float), SHOAL_ACCESS_REMOTE_WRITE,
                         &sw->slot_mr))
            return sfail(s, "registering a gradient slot: %s", shoal_ctx_errmsg(s->ctx));
    }
    return 0;
}

/* The job a worker describes must be ours, exactly. */
static int check_job(struct server *s, const struct ps_hello *h, char *why, size_t len)
{
    const struct train_cfg *c = s->c;
    if (h->servers != (uint32_t)c->servers) {
        snprintf(why, len, "it expects %u servers, this job has %d", h->servers, c->servers);
        return -1;
    }
    if (h->mode != (uint32_t)c->mode || h->staleness != (uint32_t)c->staleness) {
        snprintf(why, len, "it trains in mode %s (staleness %u), the servers in %s (%d)",
                 ps_mode_name((enum ps_mode)h->mode), h->staleness, ps_mode_name(c->mode),
                 c->staleness);
        return -1;
    }
    if (c->workers > 0 && h->workers != (uint32_t)c->workers) {
        snprintf(why, len, "it counts %u workers, this job %d", h->workers, c->workers);
        return -1;
    }
    if (!s->job_known)
        return 0;
    const struct ps_hello *j = &s->job;
    if (h->workers != j->workers || h->nparams != j->nparams || strcmp(h->model, j->model) ||
        h->batch != j->batch || h->iters_per_epoch != j->iters_per_epoch ||
        h->epochs != j->epochs) {
        snprintf(why, len, "its job (%u workers, model %s, batch %u, %u x %u iterations) "
                 "differs from the others' (%u workers, model %s, batch %u, %u x %u)",
                 h->workers, h->model, h->batch, h->epochs, h->iters_per_epoch, j->workers,
                 j->model, j->batch, j->epochs, j->iters_per_epoch);
        return -1;
    }
    return 0;
}

/* ---- sending parameters ------------------------------------------------- */

static int free_buffer(const struct server *s);

/* Anything sent to a peer counts as a heartbeat. */
static void sent(struct speer *p) { p->last_sent = now_s(); }

/*
 * Fault injection for the tests (SHOAL_TRAIN_INJECT=torn): right after
 * worker wi's parameters, write a second, different copy over them, as a
 * broken protocol would while the worker reads.  --verify must catch it.
 */
static int inject_torn(struct server *s, int wi)
{
    int f = free_buffer(s);
    if (f < 0)
        return 0;
    memcpy(s->pool[f].p, s->pool[s->cur].p, s->len * sizeof(float));
    s->pool[f].p[s->len / 2] += 1.0f;
    int rc = shoal_put(s->w[wi].peer->ep, s->pool[f].mr, 0, s->w[wi].params, 0,
                       s->len * sizeof(float), 0, 0, (uint64_t)f);
    if (rc)
        return sfail(s, "injecting a torn write: %s", shoal_ctx_errmsg(s->ctx));
    s->pool[f].readers++;
    fprintf(stderr, "shoal-train: server %d: injected a torn write into worker %d's "
            "parameters (SHOAL_TRAIN_INJECT=torn)\n", s->index, wi);
    return 0;
}

static void detach_worker(struct server *s, int wi, enum wstate to, const char *why);

/* Server 0: the membership of epoch e, fixed now if it is not yet (as the
 * workers neither given up on nor finished).  NULL when out of memory. */
static const uint8_t *members_of(struct server *s, uint32_t e)
{
    if (e >= s->fixed) {
        uint8_t live[PS_MAX_WORKERS / 8] = {0};
        int n = 0;
        for (int i = 0; i < s->W; i++)
            if (s->w[i].state != W_GONE && s->w[i].state != W_DONE) {
                ps_member_set(live, i);
                n++;
            }
        if (s->nrun == 0 || memcmp(live, s->run[s->nrun - 1].live, sizeof(live)) != 0) {
            if (s->nrun == s->caprun) {
                int cap = s->caprun ? 2 * s->caprun : 4;
                struct mrun *q = realloc(s->run, (size_t)cap * sizeof(*q));
                if (!q)
                    return NULL;
                s->run = q;
                s->caprun = cap;
            }
            s->run[s->nrun].from = s->fixed;
            memcpy(s->run[s->nrun].live, live, sizeof(live));
            if (s->nrun > 0 || n != s->W)
                fprintf(stderr, "shoal-train: server %d: from epoch %u on, %d of %d workers "
                        "share the training data\n", s->index, s->fixed + 1, n, s->W);
            s->nrun++;
        }
        s->fixed = e + 1;
    }
    for (int i = s->nrun - 1; i >= 0; i--)
        if (s->run[i].from <= e)
            return s->run[i].live;
    return NULL; /* not reached: run[0] starts at epoch 0 */
}

/* Server 0: tell worker wi the membership of the epoch it is about to
 * train in, once per epoch and connection.  0 when sent (or not due), 1
 * when it must wait (full send queue: answer_due) or was lost, <0 on a
 * failure of the server. */
static int send_members(struct server *s, int wi)
{
    struct sworker *sw = &s->w[wi];
    uint32_t e = sw->clock / s->job.iters_per_epoch;
    if (s->index != 0 || e >= s->job.epochs || sw->members_sent == e + 1)
        return 0;
    const uint8_t *live = members_of(s, e);
    if (!live)
        return sfail(s, "out of memory for the data membership");
    struct ps_msg m = {.type = PS_MEMBERS};
    m.u.members.epoch = e;
    m.u.members.workers = (uint32_t)s->W;
    memcpy(m.u.members.live, live, sizeof(m.u.members.live));
    int rc = net_send(sw->peer->ep, &m);
    if (rc == -EAGAIN) {
        sw->answer_due = true;
        return 1;
    }
    if (rc) {
        detach_worker(s, wi, W_LOST, "MEMBERS could not be sent");
        return 1;
    }
    sw->members_sent = e + 1;
    sent(sw->peer);
    return 0;
}

/* Put the current shard to worker wi (imm = version), after the epoch's
 * membership when it is due. */
static int answer(struct server *s, int wi)
{
    struct sworker *sw = &s->w[wi];
    if (sw->state != W_LIVE)
        return 0;
    int rc = send_members(s, wi);
    if (rc)
        return rc < 0 ? rc : 0;
    struct pbuf *b = &s->pool[s->cur];
    rc = shoal_put(sw->peer->ep, b->mr, 0, sw->params, 0, s->len * sizeof(float),
                       SHOAL_PUT_IMM, s->version, (uint64_t)s->cur);
    if (rc == -EAGAIN) {
        /* The send queue is full: retried when completions free it. */
        sw->answer_due = true;
        return 0;
    }
    if (rc) {
        /* The connection broke under us: the worker is lost, not the job. */
        char why[200];
        snprintf(why, sizeof(why), "put failed: %s", shoal_ctx_errmsg(s->ctx));
        detach_worker(s, wi, W_LOST, why);
        return 0;
    }
    sw->answer_due = false;
    sw->answer_buf = s->cur;
    b->readers++;
    sent(sw->peer);
    if (s->inject_torn && wi == 0 && s->version == 3 && (rc = inject_torn(s, wi)))
        return rc;
    if (s->c->verify) {
        struct ps_msg m = {.type = PS_CHECK};
        m.u.check.version = s->version;
        m.u.check.crc = (uint32_t)crc32(0L, (const Bytef *)b->p, (uInt)(s->len * sizeof(float)));
        if ((rc = net_send(sw->peer->ep, &m)))
            detach_worker(s, wi, W_LOST, "CHECK could not be sent");
    }
    return 0;
}

static int free_buffer(const struct server *s)
{
    for (int i = 0; i < s->npool; i++)
        if (i != s->cur && s->pool[i].readers == 0)
            return i;
    return -1;
}

/* Workers still in the job (not finished, not given up on). */
static int active_workers(const struct server *s)
{
    int n = 0;
    for (int i = 0; i < s->W; i++)
        n += s->w[i].state != W_DONE && s->w[i].state != W_GONE;
    return n;
}

static float current_lr(const struct server *s)
{
    double epoch;
    if (s->c->mode == PS_BSP) {
        epoch = s->job.iters_per_epoch ? (double)s->version / s->job.iters_per_epoch : 0.0;
    } else {
        /* async/ssp: the fraction of the job's gradients done so far,
         * where a worker given up on is planned for what it did. */
        double T = (double)s->job.iters_per_epoch * s->job.epochs, done = 0, planned = 0;
        for (int i = 0; i < s->W; i++) {
            done += s->w[i].clock;
            planned += s->w[i].state == W_GONE ? s->w[i].clock : T;
        }
        epoch = planned > 0 ? done / planned * s->job.epochs : 0.0;
    }
    return optim_lr(&s->opt, epoch, (int)s->job.epochs);
}

/* Apply the gradients in @slots (sum * scale) to a fresh buffer. */
static void update(struct server *s, int to, const float *const *slots, int n, float scale)
{
    optim_apply(&s->opt, current_lr(s), s->pool[to].p, s->pool[s->cur].p, s->mom, slots, n,
                scale, s->len);
    s->cur = to;
    s->version++;
}

/* ---- checkpoints -------------------------------------------------------- */

static void checkpoint(struct server *s)
{
    const struct train_cfg *c = s->c;
    uint32_t clock[PS_MAX_WORKERS];
    uint8_t done[PS_MAX_WORKERS];
    for (int i = 0; i < s->W; i++) {
        clock[i] = s->w[i].clock;
        done[i] = s->w[i].state == W_DONE;
    }
    struct ckpt k = {.server = (uint32_t)s->index, .servers = (uint32_t)c->servers,
                     .job = s->job, .off = s->off, .len = s->len, .version = s->version,
                     .grads = s->grads, .workers = (uint32_t)s->W, .clock = clock,
                     .done = done, .params = s->pool[s->cur].p, .mom = s->mom};
    /* A copy goes to the writer thread, which reports when it is on disk.
     * Checkpoints stay at the versions asked for: if the previous one is
     * still being written (a disk slower than N updates), wait for it. */
    ckw_drain(&s->ckw);
    int rc = ckw_submit(&s->ckw, &k);
    if (rc)
        fprintf(stderr, "shoal-train: server %d: checkpoint at update %u failed: %s\n",
                s->index, s->version, strerror(-rc));
    s->ckpt_version = s->version;
    s->ckpt_time = now_s();
}

static bool checkpoint_due(const struct server *s)
{
    const struct train_cfg *c = s->c;
    if (!c->checkpoint_dir[0] || !s->job_known || s->version == s->ckpt_version)
        return false;
    if (c->checkpoint_every > 0 && s->version - s->ckpt_version >= (uint32_t)c->checkpoint_every)
        return true;
    return c->checkpoint_secs > 0 && now_s() - s->ckpt_time >= c->checkpoint_secs;
}

/* ---- rounds ---------------------------------------------------------------- */

/* bsp: the round is complete when every live worker's gradient is in and
 * no lost worker may still come back for it (within --rejoin-timeout). */
static int bsp_round(struct server *s)
{
    int live = 0;
    for (int i = 0; i < s->W; i++) {
        enum wstate st = s->w[i].state;
        if (st == W_JOINING || st == W_LOST)
            return 0;
        if (st == W_LIVE)
            live++;
    }
    if (live == 0 || s->arrived < live)
        return 0;
    int to = free_buffer(s);
    if (to < 0)
        return 0; /* retried when a put completes */
    const float *slots[PS_MAX_WORKERS];
    int n = 0;
    for (int i = 0; i < s->W; i++)
        if (s->w[i].state == W_LIVE && s->w[i].arrived)
            slots[n++] = s->w[i].slot;
    update(s, to, slots, n, 1.0f / (float)n);
    s->grads += (uint64_t)n;
    s->arrived = 0;
    for (int i = 0; i < s->W; i++)
        s->w[i].arrived = false;
    if (checkpoint_due(s))
        checkpoint(s); /* a round boundary: every live clock == version */
    for (int i = 0; i < s->W; i++) {
        int rc = answer(s, i);
        if (rc)
            return rc;
    }
    return 0;
}

static uint32_t slowest(const struct server *s)
{
    uint32_t m = UINT32_MAX;
    for (int i = 0; i < s->W; i++)
        if ((s->w[i].state == W_LIVE || s->w[i].state == W_JOINING) && s->w[i].clock < m)
            m = s->w[i].clock;
    return m;
}

/* async/ssp: apply queued gradients in arrival order, then answer every
 * worker the staleness bound lets go. */
static int async_step(struct server *s)
{
    while (s->qlen) {
        int to = free_buffer(s);
        if (to < 0)
            break;
        int wi = s->queue[s->qhead];
        s->qhead = (s->qhead + 1) % s->W;
        s->qlen--;
        const float *slot = s->w[wi].slot;
        /* Each gradient weighs what it would in a bsp average of the
         * workers still in the job. */
        int n = active_workers(s);
        update(s, to, &slot, 1, 1.0f / (float)(n > 0 ? n : 1));
        s->grads++;
        s->w[wi].queued = false;
        s->w[wi].waiting = true;
    }
    if (!s->qlen && checkpoint_due(s))
        checkpoint(s);
    uint32_t low = slowest(s);
    for (int i = 0; i < s->W; i++) {
        struct sworker *sw = &s->w[i];
        if (!sw->waiting || sw->state != W_LIVE)
            continue;
        /* Worker i starts iteration clock next; ssp lets it while the
         * slowest has done clock - staleness. */
        if (s->c->mode == PS_SSP && low != UINT32_MAX &&
            sw->clock > low + (uint32_t)s->c->staleness)
            continue;
        sw->waiting = false;
        int rc = answer(s, i);
        if (rc)
            return rc;
    }
    return 0;
}

static int progress_updates(struct server *s)
{
    if (!s->job_known)
        return 0;
    for (int i = 0; i < s->W; i++)
        if (s->w[i].answer_due && s->w[i].state == W_LIVE) {
            int rc = answer(s, i);
            if (rc || s->w[i].answer_due)
                return rc;
        }
    return s->c->mode == PS_BSP ? bsp_round(s) : async_step(s);
}

/* ---- membership ------------------------------------------------------------ */

/* Cut a peer off without waiting on it: it may be stopped or gone.  The
 * events already handed out in this batch may still name its endpoint:
 * it is remembered so handle() skips them (the memory is freed). */
static void close_peer(struct server *s, struct speer *p)
{
    if (!p->ep)
        return;
    if (s->nclosed < (int)(sizeof(s->closed) / sizeof(s->closed[0])))
        s->closed[s->nclosed++] = p->ep;
    else
        s->closed_overflow = true;
    shoal_ep_abort(p->ep);
    p->ep = NULL;
}

static bool closed_in_batch(const struct server *s, const shoal_ep_t *ep)
{
    for (int i = 0; i < s->nclosed; i++)
        if (s->closed[i] == ep)
            return true;
    return false;
}

/* Worker wi's connection is over (failed, silent, finished or replaced). */
static void detach_worker(struct server *s, int wi, enum wstate to, const char *why)
{
    struct sworker *sw = &s->w[wi];
    if (sw->state != W_LIVE)
        return;
    /* Closing completes its answer in flight without an event. */
    if (sw->answer_buf >= 0)
        s->pool[sw->answer_buf].readers--;
    sw->answer_buf = -1;
    sw->answer_due = false;
    if (sw->params)
        shoal_rmr_destroy(sw->params);
    sw->params = NULL;
    if (sw->peer) {
        close_peer(s, sw->peer);
        sw->peer->kind = PEER_NEW;
        sw->peer->worker = -1;
    }
    sw->peer = NULL;
    if (s->c->mode == PS_BSP && sw->arrived) {
        /* Its gradient of this round is forgotten: it redoes the round. */
        sw->arrived = false;
        sw->clock--;
        s->arrived--;
    }
    sw->waiting = false; /* answered when it comes back */
    sw->state = to;
    sw->lost_at = now_s();
    if (to == W_LOST)
        fprintf(stderr, "shoal-train: server %d: lost worker %d (%s); %s\n", s->index, wi, why,
                s->c->mode == PS_BSP ? "waiting for it to rejoin" : "going on without it");
}

/* ---- events -------------------------------------------------------------- */

static int on_hello(struct server *s, struct speer *p, const struct ps_hello *h)
{
    char why[512];
    if (check_job(s, h, why, sizeof(why))) {
        /* A worker of another job (or misconfigured) is refused; the job
         * goes on waiting for the right one. */
        fprintf(stderr, "shoal-train: server %d: refused worker %u at %s: job mismatch: %s\n",
                s->index, h->worker, shoal_ep_peer(p->ep), why);
        net_send_error(p->ep, "job mismatch: %s", why);
        close_peer(s, p);
        return 0;
    }
    if (!s->job_known) {
        int rc = setup_job(s, h);
        if (rc)
            return rc;
    }
    struct sworker *sw = &s->w[h->worker];
    if (sw->state == W_DONE) {
        net_send_error(p->ep, "worker %u has already finished this job", h->worker);
        close_peer(s, p);
        return 0;
    }
    if (sw->state == W_LIVE) {
        /* A new connection of a worker we think is alive: the old one is
         * dead (a restart, or a break we have not noticed yet).  An older
         * incarnation cannot replace a newer one. */
        if (h->incarnation != sw->incarnation && h->incarnation < sw->incarnation) {
            net_send_error(p->ep, "worker %u: a newer incarnation is connected", h->worker);
            close_peer(s, p);
            return 0;
        }
        detach_worker(s, (int)h->worker, W_LOST, "replaced by a new connection");
    }
    int rc = shoal_rmr_unpack(p->ep, h->desc, h->desc_len, &sw->params);
    if (rc) {
        net_send_error(p->ep, "bad parameter descriptor");
        return sfail(s, "worker %u: bad parameter descriptor: %s", h->worker,
                     shoal_ctx_errmsg(s->ctx));
    }
    if (shoal_rmr_length(sw->params) != s->len * sizeof(float) ||
        !(shoal_rmr_access(sw->params) & SHOAL_ACCESS_REMOTE_WRITE)) {
        net_send_error(p->ep, "parameter region of %zu bytes, expected %zu writable",
                       shoal_rmr_length(sw->params), s->len * sizeof(float));
        return sfail(s, "worker %u offered a parameter region of %zu bytes, expected %zu",
                     h->worker, shoal_rmr_length(sw->params), s->len * sizeof(float));
    }
    bool rejoin = sw->state == W_LOST || sw->state == W_GONE || sw->incarnation != 0;
    p->kind = PEER_WORKER;
    p->worker = (int)h->worker;
    sw->peer = p;
    sw->state = W_LIVE;
    sw->incarnation = h->incarnation;
    sw->members_sent = 0; /* a new connection: MEMBERS again */
    /* bsp: everyone is at the current round; async/ssp: its own count. */
    if (s->c->mode == PS_BSP)
        sw->clock = s->version;
    s->hellos++;
    s->last_progress = now_s();
    if (rejoin)
        fprintf(stderr, "shoal-train: server %d: worker %u rejoined (incarnation %08x, it had "
                "done %u iterations; continues at %u)\n", s->index, h->worker, h->incarnation,
                h->clock, sw->clock);
    struct ps_msg m = {.type = PS_WELCOME};
    struct ps_welcome *wl = &m.u.welcome;
    wl->server = (uint32_t)s->index;
    wl->offset = s->off;
    wl->length = s->len;
    wl->version = s->version;
    wl->iteration = sw->clock;
    size_t dlen;
    rc = shoal_mr_pack(sw->slot_mr, wl->desc, sizeof(wl->desc), &dlen);
    if (rc < 0)
        return sfail(s, "packing a descriptor: %s", shoal_strerror(rc));
    wl->desc_len = (uint32_t)dlen;
    if ((rc = net_send(p->ep, &m))) {
        detach_worker(s, (int)h->worker, W_LOST, "WELCOME could not be sent");
        return 0;
    }
    sent(p);
    if (s->t_first == 0)
        s->t_first = now_s();
    if ((rc = answer(s, p->worker)))
        return rc;
    return progress_updates(s); /* ssp: the slowest may have changed */
}

static int on_message(struct server *s, struct speer *p, const void *data, size_t len)
{
    struct ps_msg m;
    char why[256];
    if (ps_decode(data, len, &m, why, sizeof(why))) {
        /* A peer that speaks garbage is cut off; the job goes on. */
        fprintf(stderr, "shoal-train: server %d: %s sent a bad message (%s); closing it\n",
                s->index, shoal_ep_peer(p->ep), why);
        net_send_error(p->ep, "bad message: %s", why);
        if (p->kind == PEER_WORKER)
            detach_worker(s, p->worker, W_LOST, "protocol error");
        else
            close_peer(s, p);
        return 0;
    }
    switch (m.type) {
    case PS_PING:
        return 0;
    case PS_SERVER_REG: {
        uint32_t r = m.u.reg.rank;
        if (s->index != 0 || p->kind != PEER_NEW || r == 0 || r >= (uint32_t)s->c->servers)
            break;
        p->kind = PEER_SERVER;
        if (!s->table.u.table.addr[r].port)
            s->registered++;
        s->table.u.table.addr[r] = m.u.reg.addr; /* a restarted server re-registers */
        if (table_complete(s))
            for (struct speer *q = s->peers; q; q = q->next)
                if (q->kind == PEER_NEW && q->worker == -2 && q->ep) {
                    int rc = send_table(s, q->ep);
                    if (rc)
                        return rc;
                    q->worker = -1;
                }
        return 0;
    }
    case PS_TABLE_REQ:
        if (s->index != 0 || p->kind != PEER_NEW)
            break;
        if (table_complete(s))
            return send_table(s, p->ep);
        p->worker = -2; /* answered when the table is complete */
        return 0;
    case PS_HELLO:
        if (p->kind != PEER_NEW)
            break;
        if (m.u.hello.worker >= (uint32_t)s->c->workers && s->c->workers > 0) {
            net_send_error(p->ep, "worker index %u out of range", m.u.hello.worker);
            close_peer(s, p);
            return 0;
        }
        return on_hello(s, p, &m.u.hello);
    case PS_BYE: {
        if (p->kind != PEER_WORKER)
            break;
        int wi = p->worker;
        s->t_last = now_s();
        s->last_progress = s->t_last;
        detach_worker(s, wi, W_DONE, "finished");
        return progress_updates(s); /* ssp: the slowest may have changed */
    }
    case PS_ERROR:
        fprintf(stderr, "shoal-train: server %d: %s reports: %s\n", s->index,
                shoal_ep_peer(p->ep), m.u.error.text);
        if (p->kind == PEER_WORKER)
            detach_worker(s, p->worker, W_LOST, "it reported an error");
        else
            close_peer(s, p);
        return 0;
    default:
        break;
    }
    fprintf(stderr, "shoal-train: server %d: %s sent an unexpected %s message; closing it\n",
            s->index, shoal_ep_peer(p->ep), ps_type_name(m.type));
    net_send_error(p->ep, "unexpected %s message", ps_type_name(m.type));
    if (p->kind == PEER_WORKER)
        detach_worker(s, p->worker, W_LOST, "protocol error");
    else
        close_peer(s, p);
    return 0;
}

static int on_gradient(struct server *s, struct speer *p, uint32_t k)
{
    if (p->kind != PEER_WORKER) {
        fprintf(stderr, "shoal-train: server %d: %s wrote into a slot before its HELLO; "
                "closing it\n", s->index, shoal_ep_peer(p->ep));
        close_peer(s, p);
        return 0;
    }
    struct sworker *sw = &s->w[p->worker];
    if (k != sw->clock || sw->arrived || sw->queued || sw->waiting) {
        /* A duplicate or stale push (e.g. from before a reconnection):
         * dropped, never applied twice. */
        s->dropped++;
        fprintf(stderr, "shoal-train: server %d: dropped push %u of worker %d (expected %u)\n",
                s->index, k, p->worker, sw->clock);
        return 0;
    }
    sw->clock++;
    s->last_progress = now_s();
    if (s->c->mode == PS_BSP) {
        sw->arrived = true;
        s->arrived++;
    } else {
        sw->queued = true;
        s->queue[(s->qhead + s->qlen) % s->W] = p->worker;
        s->qlen++;
    }
    return progress_updates(s);
}

static int handle(struct server *s, const shoal_event_t *ev)
{
    /* An endpoint closed earlier in this batch is freed: skip its events. */
    if (!ev->ep || closed_in_batch(s, ev->ep))
        return 0;
    struct speer *p = shoal_ep_user(ev->ep);
    if (!p || !p->ep)
        return 0;
    /* Only what the peer sent shows it is alive; our own completions
     * (a PING's SEND_DONE) do not. */
    if (ev->type == SHOAL_EV_IMM || ev->type == SHOAL_EV_RECV)
        p->last_heard = now_s();
    switch (ev->type) {
    case SHOAL_EV_PUT_DONE:
        if (ev->wr_id < (uint64_t)s->npool && s->pool[ev->wr_id].readers > 0)
            s->pool[ev->wr_id].readers--;
        if (p->kind == PEER_WORKER)
            s->w[p->worker].answer_buf = -1;
        /* A failed put is followed by the endpoint's failure event. */
        return progress_updates(s);
    case SHOAL_EV_SEND_DONE:
        return 0;
    case SHOAL_EV_IMM:
        return on_gradient(s, p, ev->imm);
    case SHOAL_EV_RECV:
        return on_message(s, p, ev->data, ev->len);
    case SHOAL_EV_EP_FAILED:
        if (p->kind == PEER_WORKER) {
            char why[200];
            snprintf(why, sizeof(why), "%s", ev->reason ? ev->reason : "connection failed");
            detach_worker(s, p->worker, W_LOST, why);
            return progress_updates(s);
        }
        close_peer(s, p); /* a fellow server or a stranger */
        return 0;
    default:
        return 0;
    }
}

static struct speer *add_peer(struct server *s, shoal_ep_t *ep)
{
    struct speer *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->ep = ep;
    p->worker = -1;
    p->last_heard = p->last_sent = now_s();
    p->next = s->peers;
    s->peers = p;
    shoal_ep_set_user(ep, p);
    return p;
}

/* Free the records of closed peers that are nobody's worker any more. */
static void reap_peers(struct server *s)
{
    for (struct speer **pp = &s->peers; *pp;) {
        struct speer *p = *pp;
        if (!p->ep && p->kind != PEER_WORKER) {
            *pp = p->next;
            free(p);
        } else {
            pp = &p->next;
        }
    }
}

static bool finished(const struct server *s)
{
    if (!s->job_known)
        return false;
    for (int i = 0; i < s->W; i++)
        if (s->w[i].state != W_DONE && s->w[i].state != W_GONE)
            return false;
    return true;
}

/* Heartbeats, silence, rejoin deadlines, checkpoints by time. */
static int housekeeping(struct server *s)
{
    const struct train_cfg *c = s->c;
    double now = now_s(), hb = c->fail_timeout_ms / 4000.0;
    /* If this process itself did not look for a while (a checkpoint's
     * fsync, a descheduled process), the silence is ours, not theirs. */
    if ((now - s->last_look) * 1000 > c->fail_timeout_ms / 2)
        for (struct speer *p = s->peers; p; p = p->next)
            p->last_heard = now;
    s->last_look = now;
    for (struct speer *p = s->peers; p; p = p->next) {
        if (!p->ep || p->kind == PEER_SERVER)
            continue;
        if (p->kind == PEER_WORKER && (now - p->last_heard) * 1000 > c->fail_timeout_ms) {
            char why[96];
            snprintf(why, sizeof(why), "silent for %.0f ms", (now - p->last_heard) * 1000);
            detach_worker(s, p->worker, W_LOST, why);
            continue;
        }
        if (now - p->last_sent >= hb) {
            struct ps_msg ping = {.type = PS_PING};
            if (net_send(p->ep, &ping) == 0)
                sent(p);
        }
    }
    bool changed = false;
    for (int i = 0; s->w && i < s->W; i++)
        if (s->w[i].state == W_LOST && (now - s->w[i].lost_at) * 1000 > c->rejoin_timeout_ms) {
            s->w[i].state = W_GONE;
            changed = true;
            fprintf(stderr, "shoal-train: server %d: worker %d did not rejoin within %d ms; "
                    "going on without it\n", s->index, i, c->rejoin_timeout_ms);
        }
    reap_peers(s);
    if (checkpoint_due(s) && (c->mode != PS_BSP || s->arrived == 0))
        checkpoint(s);
    return changed ? progress_updates(s) : 0;
}

static int run(struct server *s)
{
    const struct train_cfg *c = s->c;
    s->last_progress = now_s();
    while (!finished(s)) {
        shoal_ep_t *ep;
        while (shoal_accept(s->l, 0, &ep) == 0)
            if (!add_peer(s, ep))
                return sfail(s, "out of memory");
        shoal_event_t ev[64];
        int n = shoal_wait(s->ctx, ev, 64, 20);
        if (n < 0)
            return sfail(s, "transport: %s", shoal_ctx_errmsg(s->ctx));
        s->nclosed = 0;
        s->closed_overflow = false;
        for (int i = 0; i < n && !s->closed_overflow; i++) {
            int rc = handle(s, &ev[i]);
            if (rc)
                return rc;
        }
        s->nclosed = 0;
        int rc = housekeeping(s);
        if (rc)
            return rc;
        if ((now_s() - s->last_progress) * 1000 > c->idle_timeout_ms) {
            int live = 0, done = 0;
            for (int i = 0; s->w && i < s->W; i++) {
                live += s->w[i].state == W_LIVE;
                done += s->w[i].state == W_DONE;
            }
            return sfail(s, "no progress for %d ms (%d of %d workers live, %d finished)",
                         c->idle_timeout_ms, live, s->job_known ? s->W : c->workers, done);
        }
    }
    if (c->checkpoint_dir[0] && s->version != s->ckpt_version)
        checkpoint(s);
    ckw_drain(&s->ckw); /* the last checkpoint is on disk before we exit */
    return 0;
}

/* --resume: the newest valid checkpoint becomes the state. */
static int resume(struct server *s)
{
    const struct train_cfg *c = s->c;
    struct ckpt k;
    char path[4096 + 64], err[512];
    int rc = ckpt_load(c->checkpoint_dir, (uint32_t)s->index, &k, stderr, path, sizeof(path),
                       err, sizeof(err));
    if (rc == -ENOENT) {
        fprintf(stderr, "shoal-train: server %d: --resume: %s; starting fresh\n", s->index, err);
        return 0;
    }
    if (rc)
        return sfail(s, "--resume: %s", err);
    if (k.servers != (uint32_t)c->servers || (c->workers && k.workers != (uint32_t)c->workers) ||
        k.job.mode != (uint32_t)c->mode) {
        ckpt_free(&k);
        return sfail(s, "--resume: %s is from another job (%u servers, %u workers, mode %s)",
                     path, k.servers, k.workers, ps_mode_name((enum ps_mode)k.job.mode));
    }
    if ((rc = setup_job(s, &k.job))) {
        ckpt_free(&k);
        return rc;
    }
    if (k.off != s->off || k.len != s->len || (!k.mom) != (!s->mom)) {
        ckpt_free(&k);
        return sfail(s, "--resume: %s holds another shard or optimizer", path);
    }
    memcpy(s->pool[s->cur].p, k.params, s->len * sizeof(float));
    if (s->mom)
        memcpy(s->mom, k.mom, s->len * sizeof(float));
    s->version = s->ckpt_version = k.version;
    s->grads = k.grads;
    s->ckpt_time = now_s();
    for (int i = 0; i < s->W; i++) {
        s->w[i].clock = k.clock[i];
        s->w[i].state = k.done[i] ? W_DONE : W_LOST;
        s->w[i].lost_at = now_s();
        s->w[i].incarnation = 1; /* anyone who connects now is rejoining */
    }
    fprintf(stderr, "shoal-train: server %d: resumed from %s (update %u, %llu gradients "
            "applied)\n", s->index, path, k.version, (unsigned long long)k.grads);
    ckpt_free(&k);
    return 0;
}

int server_main(const struct train_cfg *c)
{
    struct server S = {.c = c, .index = c->rank};
    struct server *s = &S;
    int rc;
    const char *inj = getenv("SHOAL_TRAIN_INJECT");
    s->inject_torn = inj && strcmp(inj, "torn") == 0;
    if ((rc = net_ctx(&s->ctx, s->err, sizeof(s->err))))
        goto out;
    net_place_compute(s->ctx, c);
    const char *bind_host = c->host;
    uint16_t port = 0;
    if (s->index == 0 && !c->rendezvous[0]) {
        bind_host = c->coord_host;
        port = c->coord_port;
    }
    if ((rc = shoal_listen(s->ctx, bind_host, port, &s->l))) {
        sfail(s, "cannot listen on %s:%u: %s", bind_host, port, shoal_ctx_errmsg(s->ctx));
        goto out;
    }
    snprintf(s->host, sizeof(s->host), "%s", bind_host);
    s->port = shoal_listener_port(s->l);
    s->table.type = PS_TABLE;
    s->table.u.table.n = (uint32_t)c->servers;
    if (s->index == 0) {
        memcpy(s->table.u.table.addr[0].host, s->host, PS_HOST_MAX);
        s->table.u.table.addr[0].port = s->port;
        s->registered = 1;
        if (c->rendezvous[0] &&
            (rc = net_publish(c, s->host, s->port, s->err, sizeof(s->err))))
            goto out;
    } else {
        char host[PS_HOST_MAX];
        uint16_t cport;
        if ((rc = net_coordinator(c, host, sizeof(host), &cport, s->err, sizeof(s->err))) ||
            (rc = net_connect(s->ctx, host, cport, c->connect_timeout_ms, &s->coord, s->err,
                              sizeof(s->err))))
            goto out;
        if (!add_peer(s, s->coord)) {
            rc = sfail(s, "out of memory");
            goto out;
        }
        struct ps_msg reg = {.type = PS_SERVER_REG};
        reg.u.reg.rank = (uint32_t)s->index;
        memcpy(reg.u.reg.addr.host, s->host, PS_HOST_MAX);
        reg.u.reg.addr.port = s->port;
        if ((rc = net_send(s->coord, &reg))) {
            sfail(s, "SERVER_REG to %s:%u: %s", host, cport, shoal_strerror(rc));
            goto out;
        }
    }
    if (!c->quiet)
        fprintf(stderr, "shoal-train: server %d listening on %s:%u over %s\n", s->index,
                s->host, s->port, shoal_ctx_describe(s->ctx));
    if (c->checkpoint_dir[0] && (rc = ckw_start(&s->ckw, c->checkpoint_dir, c->quiet))) {
        sfail(s, "cannot start the checkpoint writer: %s", strerror(-rc));
        goto out;
    }
    if (c->resume && (rc = resume(s)))
        goto out;
    rc = run(s);
    if (rc == 0 && s->job_known) {
        double el = s->t_last - s->t_first;
        double rounds = c->mode == PS_BSP ? (double)s->version : (double)s->grads / s->W;
        if (!c->quiet && el > 0)
            fprintf(stderr, "shoal-train: server %d: %u updates, %.1f rounds/s, %.0f "
                    "samples/s (all workers)\n", s->index, s->version, rounds / el,
                    rounds * s->job.batch * s->W / el);
        /* The evidence that nothing was applied twice: every gradient
         * applied had the iteration its worker was expected to push. */
        fprintf(stderr, "shoal-train: server %d: applied %llu gradients, each once; dropped %llu "
                "duplicate or stale pushes\n", s->index, (unsigned long long)s->grads,
                (unsigned long long)s->dropped);
    }
out:
    if (rc)
        fprintf(stderr, "shoal-train: server %d: %s\n", s->index, s->err);
    for (int i = 0; s->w && i < s->W; i++)
        if (s->w[i].params)
            shoal_rmr_destroy(s->w[i].params);
    while (s->peers) {
        struct speer *p = s->peers;
        s->peers = p->next;
        if (p->ep)
            shoal_ep_close(p->ep);
        free(p);
    }
    if (s->l)
        shoal_listener_close(s->l);
    for (int i = 0; s->w && i < s->W; i++) {
        if (s->w[i].slot_mr)
            shoal_mr_dereg(s->w[i].slot_mr);
        free(s->w[i].slot);
    }
    for (int i = 0; s->pool && i < s->npool; i++) {
        if (s->pool[i].mr)
            shoal_mr_dereg(s->pool[i].mr);
        free(s->pool[i].p);
    }
    free(s->pool);
    free(s->run);
    free(s->w);
    free(s->queue);
    ckw_stop(&s->ckw);
    free(s->mom);
    if (s->ctx)
        shoal_ctx_destroy(s->ctx);
    return rc ? 1 : 0;
}
