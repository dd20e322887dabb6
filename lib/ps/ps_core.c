/*
 * ps_core.c -- a parameter server's decisions (see ps_core.h).  No I/O,
 * no clock, no floats: events in, actions out.
 */
#include "ps_core.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *ps_core_action_name(enum ps_act_type t)
{
    static const char *const names[] = {"?", "WELCOME", "REFUSE", "REPLACE", "FETCH_INIT",
                                        "APPLY", "MEMBERS", "SEND", "DROP", "CHECKPOINT",
                                        "GIVE_UP", "NOTE"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "?";
}

int ps_core_init(struct ps_core *c, const struct ps_core_cfg *cfg, double now)
{
    memset(c, 0, sizeof(*c));
    if (cfg->workers < 1 || cfg->workers > PS_CORE_MAX_WORKERS || cfg->iters_per_epoch < 1 ||
        cfg->epochs < 1 || cfg->staleness < 0 || cfg->mode > PS_CORE_SSP)
        return -EINVAL;
    c->cfg = *cfg;
    c->W = cfg->workers;
    c->npool = c->W + 2;
    c->w = calloc((size_t)c->W, sizeof(*c->w));
    c->readers = calloc((size_t)c->npool, sizeof(int));
    c->queue = calloc((size_t)c->W, sizeof(int));
    c->wreaders = calloc((size_t)c->W * (size_t)c->npool, sizeof(uint16_t));
    if (!c->w || !c->readers || !c->queue || !c->wreaders) {
        ps_core_fini(c);
        return -ENOMEM;
    }
    c->init = cfg->need_init ? PS_INIT_NONE : PS_INIT_HAVE;
    c->init_from = -1;
    c->ckpt_time = c->last_progress = now;
    return 0;
}

void ps_core_fini(struct ps_core *c)
{
    free(c->w);
    free(c->readers);
    free(c->queue);
    free(c->wreaders);
    free(c->run);
    free(c->act);
    free(c->slots);
    memset(c, 0, sizeof(*c));
}

/* ---- actions ---------------------------------------------------------- */

static struct ps_action *emit(struct ps_core *c, enum ps_act_type t, int worker)
{
    if (c->nact == c->capact) {
        int cap = c->capact ? 2 * c->capact : 16;
        struct ps_action *a = realloc(c->act, (size_t)cap * sizeof(*a));
        if (!a) {
            c->oom = true;
            return NULL;
        }
        c->act = a;
        c->capact = cap;
    }
    struct ps_action *a = &c->act[c->nact++];
    memset(a, 0, sizeof(*a));
    a->type = t;
    a->worker = worker;
    a->from = a->to = a->buf = -1;
    return a;
}

__attribute__((format(printf, 3, 4)))
static void note(struct ps_core *c, int worker, const char *fmt, ...)
{
    struct ps_action *a = emit(c, PS_ACT_NOTE, worker);
    if (!a)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->why, sizeof(a->why), fmt, ap);
    va_end(ap);
}

/* ---- membership (coordinator) ------------------------------------------ */

static int workers_in(const struct ps_core *c, uint8_t *live)
{
    int n = 0;
    memset(live, 0, PS_CORE_MAX_WORKERS / 8);
    for (int i = 0; i < c->W; i++)
        if (c->w[i].state != PS_W_GONE && c->w[i].state != PS_W_DONE) {
            ps_core_member_set(live, i);
            n++;
        }
    return n;
}

/* The membership of epoch e, fixed now if it is not yet. */
static const uint8_t *members_of(struct ps_core *c, uint32_t e)
{
    if (e >= c->fixed) {
        int n = workers_in(c, c->live);
        if (c->nrun == 0 || memcmp(c->live, c->run[c->nrun - 1].live, sizeof(c->live)) != 0) {
            if (c->nrun == c->caprun) {
                int cap = c->caprun ? 2 * c->caprun : 4;
                struct ps_core_run *r = realloc(c->run, (size_t)cap * sizeof(*r));
                if (!r) {
                    c->oom = true;
                    return NULL;
                }
                c->run = r;
                c->caprun = cap;
            }
            c->run[c->nrun].from = c->fixed;
            memcpy(c->run[c->nrun].live, c->live, sizeof(c->live));
            if (c->nrun > 0 || n != c->W)
                note(c, -1, "from epoch %u on, %d of %d workers share the training data",
                     c->fixed + 1, n, c->W);
            c->nrun++;
        }
        c->fixed = e + 1;
    }
    for (int i = c->nrun - 1; i >= 0; i--)
        if (c->run[i].from <= e)
            return c->run[i].live;
    return NULL;
}

/* ---- answers -------------------------------------------------------------- */

static int free_buffer(const struct ps_core *c)
{
    for (int i = 0; i < c->npool; i++)
        if (i != c->cur && c->readers[i] == 0)
            return i;
    return -1;
}

/* Put the current parameters to worker wi, after the epoch's membership
 * when that is due.  Held while the initial parameters are not in. */
static void answer(struct ps_core *c, int wi)
{
    struct ps_core_worker *w = &c->w[wi];
    if (w->state != PS_W_LIVE)
        return;
    if (c->init != PS_INIT_HAVE) {
        w->answer_due = true;
        return;
    }
    uint32_t e = w->clock / c->cfg.iters_per_epoch;
    if (c->cfg.coordinator && e < c->cfg.epochs && w->members_sent != e + 1) {
        const uint8_t *live = members_of(c, e);
        struct ps_action *a = live ? emit(c, PS_ACT_MEMBERS, wi) : NULL;
        if (!a)
            return;
        a->epoch = e;
        a->live = live;
        w->members_sent = e + 1;
    }
    struct ps_action *a = emit(c, PS_ACT_SEND, wi);
    if (!a)
        return;
    a->buf = c->cur;
    a->version = c->version;
    c->readers[c->cur]++;
    c->wreaders[(size_t)wi * (size_t)c->npool + (size_t)c->cur]++;
    w->answer_due = false;
}

static int active_workers(const struct ps_core *c)
{
    int n = 0;
    for (int i = 0; i < c->W; i++)
        n += c->w[i].state != PS_W_DONE && c->w[i].state != PS_W_GONE;
    return n;
}

/* Epochs done, for the learning-rate schedule.  bsp: the rounds; async
 * and ssp: the fraction of the job's gradients in, where a worker given up
 * on is planned for what it did. */
static double progress(const struct ps_core *c)
{
    if (c->cfg.mode == PS_CORE_BSP)
        return (double)c->version / c->cfg.iters_per_epoch;
    double T = (double)c->cfg.iters_per_epoch * c->cfg.epochs, done = 0, planned = 0;
    for (int i = 0; i < c->W; i++) {
        done += c->w[i].clock;
        planned += c->w[i].state == PS_W_GONE ? c->w[i].clock : T;
    }
    return planned > 0 ? done / planned * c->cfg.epochs : 0.0;
}

static void apply(struct ps_core *c, int to, const int *slots, int n, float scale)
{
    struct ps_action *a = emit(c, PS_ACT_APPLY, -1);
    int *s = realloc(c->slots, (size_t)(c->nact + 1) * (size_t)c->W * sizeof(int));
    if (!a || !s) {
        if (s)
            c->slots = s;
        c->oom = true;
        return;
    }
    c->slots = s;
    /* Each APPLY owns W entries of the arena; pointers are set at the end
     * of the step (the arena may move before). */
    memcpy(c->slots + (size_t)(c->nact - 1) * (size_t)c->W, slots, (size_t)n * sizeof(int));
    a->from = c->cur;
    a->to = to;
    a->n = n;
    a->scale = scale;
    a->progress = progress(c);
    a->version = c->version + 1;
    c->cur = to;
    c->version++;
}

static bool checkpoint_due(const struct ps_core *c, double now)
{
    if (c->version == c->ckpt_version || c->init != PS_INIT_HAVE)
        return false;
    if (c->cfg.checkpoint_every > 0 && c->version - c->ckpt_version >= c->cfg.checkpoint_every)
        return true;
    return c->cfg.checkpoint_secs > 0 && now - c->ckpt_time >= c->cfg.checkpoint_secs;
}

static void checkpoint(struct ps_core *c, double now)
{
    struct ps_action *a = emit(c, PS_ACT_CHECKPOINT, -1);
    if (!a)
        return;
    a->version = c->version;
    c->ckpt_version = c->version;
    c->ckpt_time = now;
}

/* bsp: the round is complete when every live worker's gradient is in and
 * no lost worker may still come back for it. */
static void bsp_round(struct ps_core *c, double now)
{
    int live = 0;
    for (int i = 0; i < c->W; i++) {
        enum ps_wstate st = c->w[i].state;
        if (st == PS_W_JOINING || st == PS_W_LOST)
            return;
        live += st == PS_W_LIVE;
    }
    if (live == 0 || c->arrived < live)
        return;
    int to = free_buffer(c);
    if (to < 0)
        return; /* again when a put completes */
    int slots[PS_CORE_MAX_WORKERS], n = 0;
    for (int i = 0; i < c->W; i++)
        if (c->w[i].state == PS_W_LIVE && c->w[i].arrived)
            slots[n++] = i;
    apply(c, to, slots, n, 1.0f / (float)n);
    c->grads += (uint64_t)n;
    c->arrived = 0;
    for (int i = 0; i < c->W; i++)
        c->w[i].arrived = false;
    if (checkpoint_due(c, now))
        checkpoint(c, now); /* a round boundary: every live clock == version */
    for (int i = 0; i < c->W; i++)
        answer(c, i);
}

static uint32_t slowest(const struct ps_core *c)
{
    uint32_t m = UINT32_MAX;
    for (int i = 0; i < c->W; i++)
        if ((c->w[i].state == PS_W_LIVE || c->w[i].state == PS_W_JOINING) && c->w[i].clock < m)
            m = c->w[i].clock;
    return m;
}

/* async/ssp: apply queued gradients in arrival order, then answer every
 * worker the staleness bound lets go. */
static void async_step(struct ps_core *c, double now)
{
    while (c->qlen) {
        int to = free_buffer(c);
        if (to < 0)
            break;
        int wi = c->queue[c->qhead];
        c->qhead = (c->qhead + 1) % c->W;
        c->qlen--;
        int n = active_workers(c);
        apply(c, to, &wi, 1, 1.0f / (float)(n > 0 ? n : 1));
        c->grads++;
        c->w[wi].queued = false;
        c->w[wi].waiting = true;
    }
    if (!c->qlen && checkpoint_due(c, now))
        checkpoint(c, now);
    uint32_t low = slowest(c);
    for (int i = 0; i < c->W; i++) {
        struct ps_core_worker *w = &c->w[i];
        if (!w->waiting || w->state != PS_W_LIVE)
            continue;
        /* Worker i starts iteration clock next; ssp lets it while the
         * slowest has done clock - staleness. */
        if (c->cfg.mode == PS_CORE_SSP && low != UINT32_MAX &&
            w->clock > low + (uint32_t)c->cfg.staleness)
            continue;
        w->waiting = false;
        answer(c, i);
    }
}

/* The initial parameters come from worker 0 (the same on every server, so
 * every worker starts from one point): fetched as soon as it is live. */
static void fetch_init(struct ps_core *c)
{
    if (c->init != PS_INIT_NONE || c->w[0].state != PS_W_LIVE)
        return;
    struct ps_action *a = emit(c, PS_ACT_FETCH_INIT, 0);
    if (!a)
        return;
    a->buf = c->cur;
    c->init = PS_INIT_FETCHING;
    c->init_from = 0;
}

static void progress_updates(struct ps_core *c, double now)
{
    fetch_init(c);
    if (c->init != PS_INIT_HAVE)
        return;
    for (int i = 0; i < c->W; i++)
        if (c->w[i].answer_due && c->w[i].state == PS_W_LIVE && !c->w[i].waiting)
            answer(c, i);
    if (c->cfg.mode == PS_CORE_BSP)
        bsp_round(c, now);
    else
        async_step(c, now);
}

/* Worker wi's connection is over (failed, silent, finished). */
static void detach(struct ps_core *c, int wi, enum ps_wstate to, double now, const char *why)
{
    struct ps_core_worker *w = &c->w[wi];
    if (w->state != PS_W_LIVE)
        return;
    /* Closing its connection ends its answers in flight without events. */
    uint16_t *wr = c->wreaders + (size_t)wi * (size_t)c->npool;
    for (int b = 0; b < c->npool; b++) {
        c->readers[b] -= wr[b];
        wr[b] = 0;
    }
    w->answer_due = false;
    if (c->cfg.mode == PS_CORE_BSP && w->arrived) {
        /* Its gradient of this round is forgotten: it redoes the round. */
        w->arrived = false;
        w->clock--;
        c->arrived--;
    }
    if (w->queued) {
        /* async/ssp: its gradient is in the queue and stays there (it was
         * taken; the worker continues after it when it comes back). */
    }
    w->waiting = false;
    w->state = to;
    w->lost_at = now;
    if (c->init == PS_INIT_FETCHING && c->init_from == wi) {
        c->init = PS_INIT_NONE;
        c->init_from = -1;
    }
    if (to == PS_W_LOST)
        note(c, wi, "lost worker %d (%s); %s", wi, why,
             c->cfg.mode == PS_CORE_BSP ? "waiting for it to rejoin" : "going on without it");
}

static void on_join(struct ps_core *c, const struct ps_event *ev)
{
    int wi = ev->worker;
    struct ps_core_worker *w = &c->w[wi];
    struct ps_action *a;
    if (w->state == PS_W_DONE) {
        if ((a = emit(c, PS_ACT_REFUSE, wi)))
            snprintf(a->why, sizeof(a->why), "worker %d has already finished this job", wi);
        return;
    }
    if (w->state == PS_W_LIVE) {
        /* A new connection of a worker we think is alive: the old one is
         * dead (a restart, or a break not noticed yet).  An older
         * incarnation cannot replace a newer one. */
        if (ev->incarnation < w->incarnation) {
            if ((a = emit(c, PS_ACT_REFUSE, wi)))
                snprintf(a->why, sizeof(a->why), "worker %d: a newer incarnation is connected",
                         wi);
            return;
        }
        emit(c, PS_ACT_REPLACE, wi);
        detach(c, wi, PS_W_LOST, ev->now, "replaced by a new connection");
    }
    bool rejoin = w->state == PS_W_LOST || w->state == PS_W_GONE || w->incarnation != 0;
    w->state = PS_W_LIVE;
    w->incarnation = ev->incarnation;
    w->members_sent = 0; /* a new connection: MEMBERS again */
    w->waiting = false;
    /* bsp: everyone is at the current round; async/ssp: its own count. */
    if (c->cfg.mode == PS_CORE_BSP)
        w->clock = c->version;
    c->last_progress = ev->now;
    if ((a = emit(c, PS_ACT_WELCOME, wi))) {
        a->k = w->clock;
        a->version = c->version;
    }
    if (rejoin)
        note(c, wi, "worker %d rejoined (incarnation %08x; continues at %u)", wi,
             ev->incarnation, w->clock);
    if (!w->queued)
        w->answer_due = true;
    progress_updates(c, ev->now);
}

static void on_push(struct ps_core *c, const struct ps_event *ev)
{
    int wi = ev->worker;
    struct ps_core_worker *w = &c->w[wi];
    if (w->state != PS_W_LIVE || ev->k != w->clock || w->arrived || w->queued || w->waiting ||
        w->answer_due) {
        /* A duplicate or stale push (e.g. from before a reconnection):
         * dropped, never applied twice. */
        c->dropped++;
        struct ps_action *a = emit(c, PS_ACT_DROP, wi);
        if (a) {
            a->k = ev->k;
            a->expected = w->clock;
            snprintf(a->why, sizeof(a->why), "dropped push %u of worker %d (expected %u)",
                     ev->k, wi, w->clock);
        }
        return;
    }
    w->clock++;
    c->last_progress = ev->now;
    if (c->cfg.mode == PS_CORE_BSP) {
        w->arrived = true;
        c->arrived++;
    } else {
        w->queued = true;
        c->queue[(c->qhead + c->qlen) % c->W] = wi;
        c->qlen++;
    }
    progress_updates(c, ev->now);
}

static void on_tick(struct ps_core *c, double now)
{
    bool changed = false;
    for (int i = 0; i < c->W; i++)
        if (c->w[i].state == PS_W_LOST && now - c->w[i].lost_at > c->cfg.rejoin_timeout) {
            c->w[i].state = PS_W_GONE;
            changed = true;
            emit(c, PS_ACT_GIVE_UP, i);
            note(c, i, "worker %d did not rejoin within %.0f ms; going on without it", i,
                 c->cfg.rejoin_timeout * 1000);
        }
    if (checkpoint_due(c, now) && (c->cfg.mode != PS_CORE_BSP || c->arrived == 0) && !c->qlen)
        checkpoint(c, now);
    if (changed)
        progress_updates(c, now);
}

/* A put from buffer b ended (to worker wi, or -1 for one that was no
 * answer).  A late event of a connection already closed is ignored. */
static void release(struct ps_core *c, int wi, int b)
{
    if (wi >= 0) {
        uint16_t *wr = &c->wreaders[(size_t)wi * (size_t)c->npool + (size_t)b];
        if (*wr == 0)
            return;
        (*wr)--;
    }
    if (c->readers[b] > 0)
        c->readers[b]--;
}

int ps_core_step(struct ps_core *c, const struct ps_event *ev)
{
    c->nact = 0;
    c->oom = false;
    if (ev->type != PS_EV_TICK && !(ev->type == PS_EV_PUT_DONE && ev->worker < 0) &&
        (ev->worker < 0 || ev->worker >= c->W))
        return -EINVAL;
    if ((ev->type == PS_EV_PUT_DONE || ev->type == PS_EV_BLOCKED) &&
        (ev->buf < 0 || ev->buf >= c->npool))
        return -EINVAL;
    switch (ev->type) {
    case PS_EV_JOIN:
        on_join(c, ev);
        break;
    case PS_EV_PUSH:
        on_push(c, ev);
        break;
    case PS_EV_LOST:
        detach(c, ev->worker, PS_W_LOST, ev->now, ev->why ? ev->why : "connection lost");
        progress_updates(c, ev->now);
        break;
    case PS_EV_DONE:
        c->last_progress = ev->now;
        detach(c, ev->worker, PS_W_DONE, ev->now, "finished");
        progress_updates(c, ev->now);
        break;
    case PS_EV_PUT_DONE:
        release(c, ev->worker, ev->buf);
        progress_updates(c, ev->now);
        break;
    case PS_EV_BLOCKED: {
        struct ps_core_worker *w = &c->w[ev->worker];
        release(c, ev->worker, ev->buf);
        if (w->state == PS_W_LIVE)
            w->answer_due = true; /* again after the next completion */
        w->members_sent = 0;      /* the MEMBERS before it may not have left */
        break;
    }
    case PS_EV_INIT_DONE:
        if (c->init == PS_INIT_FETCHING && c->init_from == ev->worker) {
            c->init = PS_INIT_HAVE;
            c->init_from = -1;
            c->ckpt_time = ev->now;
        }
        progress_updates(c, ev->now);
        break;
    case PS_EV_INIT_FAILED:
        if (c->init == PS_INIT_FETCHING && c->init_from == ev->worker) {
            c->init = PS_INIT_NONE;
            c->init_from = -1;
        }
        detach(c, ev->worker, PS_W_LOST, ev->now, "its initial parameters could not be read");
        progress_updates(c, ev->now);
        break;
    case PS_EV_TICK:
        on_tick(c, ev->now);
        break;
    default:
        return -EINVAL;
    }
    if (c->oom)
        return -ENOMEM;
    for (int i = 0; i < c->nact; i++)
        if (c->act[i].type == PS_ACT_APPLY)
            c->act[i].slots = c->slots + (size_t)i * (size_t)c->W;
    return c->nact;
}

int ps_core_restore(struct ps_core *c, uint32_t version, uint64_t grads, const uint32_t *clock,
                    const uint8_t *done, double now)
{
    uint64_t total = (uint64_t)c->cfg.iters_per_epoch * c->cfg.epochs;
    for (int i = 0; i < c->W; i++)
        if (clock[i] > total || (c->cfg.mode == PS_CORE_BSP && !done[i] && clock[i] > version))
            return -EINVAL;
    c->version = c->ckpt_version = version;
    c->grads = grads;
    c->ckpt_time = c->last_progress = now;
    c->init = PS_INIT_HAVE;
    c->init_from = -1;
    c->arrived = 0;
    c->qlen = c->qhead = 0;
    for (int i = 0; i < c->npool; i++)
        c->readers[i] = 0;
    memset(c->wreaders, 0, (size_t)c->W * (size_t)c->npool * sizeof(uint16_t));
    for (int i = 0; i < c->W; i++) {
        struct ps_core_worker *w = &c->w[i];
        memset(w, 0, sizeof(*w));
        w->clock = clock[i];
        w->state = done[i] ? PS_W_DONE : PS_W_LOST;
        w->lost_at = now;
        w->incarnation = 1; /* anyone who connects now is rejoining */
    }
    return 0;
}

bool ps_core_finished(const struct ps_core *c)
{
    for (int i = 0; i < c->W; i++)
        if (c->w[i].state != PS_W_DONE && c->w[i].state != PS_W_GONE)
            return false;
    return true;
}
