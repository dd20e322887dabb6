/*
 * ps_server.c -- a parameter server: the thin loop that drives the
 * transport-free core (ps_core.c) with libshoal.
 *
 * The core decides (who goes ahead, what is applied once, when to
 * checkpoint); this file does the I/O: it accepts connections, decodes
 * and validates messages, turns transport events into core events, and
 * carries out the core's actions (puts of fresh parameters, the one-sided
 * get of the initial parameters, optimizer steps, checkpoint writes).
 *
 * Memory, for a shard of n floats and W workers:
 *   slot[w]   n floats per worker, each registered on its own for remote
 *             write; only worker w gets its descriptor, so a worker can
 *             write its own slot and nothing else here.
 *   pool[i]   W + 2 parameter buffers (local registration: the sources of
 *             the puts to the workers); the core picks which one an
 *             update writes (never one a put still reads).
 *   optimizer state (momentum, Adam's moments), n floats each.
 *
 * Server 0 is also the coordinator: the other servers register their
 * address with it, and it gives workers the table of all servers and
 * (the core decides) each epoch's data membership.
 *
 * Liveness is the loop's: a worker whose endpoint fails, or that sends
 * nothing (not even a PING) for fail_timeout_ms, is reported lost to the
 * core; the core decides what that means (bsp waits up to the rejoin
 * timeout, async/ssp go on).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "ps_ckwriter.h"
#include "ps_compress.h"
#include "ps_core.h"
#include "ps_int.h"
#include "ps_net.h"
#include "ps_optim.h"

enum peer_kind { PEER_NEW = 0, PEER_WORKER, PEER_SERVER };

struct speer {
    enum peer_kind kind;
    shoal_ep_t *ep;           /* NULL once closed (the record is reaped later) */
    int group;                /* PEER_WORKER: its group */
    int worker;               /* PEER_WORKER: its index in the group; -2: waits for the table */
    double last_heard;        /* anything the peer sent */
    double last_sent;         /* anything to it */
    struct speer *next;
};

struct sworker {
    struct speer *peer;       /* while the core has it LIVE */
    shoal_mr_t *slot_mr;
    void *slot;               /* its pushed gradient, in the job's wire format */
    shoal_rmr_t *params;      /* its parameter slice for this shard */
    bool borrowed;            /* slot is the co-located worker's (not freed here) */
    bool members_blocked;     /* its MEMBERS met a full send queue: skip the SEND */
};

struct pbuf {
    float *p;                 /* the parameters, fp32 */
    uint16_t *h;              /* fp16/bf16 jobs: the same at half width (what is sent) */
    shoal_mr_t *mr;           /* registers what is sent: h, else p */
};

/* wr_id of the initial parameters' get, and a flag for test-only puts */
#define WR_INIT (1ull << 40)
#define WR_TORN (1ull << 41)

/* One parameter group: a job of its own (its workers, parameters,
 * optimizer and core) on this server's shard of it. */
struct sgroup {
    int id;
    bool job_known, job_partial; /* partial: from a format-1 checkpoint */
    struct ps_hello job;      /* the first HELLO of the group (desc unused) */
    int W;
    size_t nparams, off, len;
    struct ps_core core;
    bool core_up;
    struct shoal_ps_optim opt;
    struct sworker *w;
    struct pbuf *pool;
    int npool;
    float *sum;               /* compressed jobs: the gradients decoded and summed */
    size_t push_bytes, pull_bytes;
    double t_first, t_last;
};

struct server {
    const shoal_ps_config_t *c;
    int index;
    shoal_ctx_t *ctx;
    shoal_listener_t *l;
    struct speer *peers;
    struct speer *coord;      /* servers > 0: the connection to server 0 (NULL: lost) */
    double next_reg;          /* when to try to register with server 0 again */
    char host[PS_HOST_MAX];
    uint16_t port;

    struct sgroup *g;         /* [c->groups] */
    int ngroups;

    /* events the actions of a step lead to, handled after it */
    struct ps_event *evq;
    int *evg;                 /* the group of each */
    char (*evwhy)[160];       /* a copy of each one's reason (LOST) */
    int nev, capev;
    struct speer *joining;    /* the peer of the JOIN being stepped */
    shoal_rmr_t *joining_rmr;

    struct ckwriter ckw;
    struct ps_msg table;
    int registered;
    double t_start;
    bool inject_torn;
    shoal_ep_t *closed[256];  /* endpoints closed while handling this batch */
    int nclosed;
    bool closed_overflow;
    double last_look;
    const int *stop;          /* co-located: the worker gave up */
    struct ps_colo *colo;     /* co-located: the worker's shared state, else NULL */
    char *err;
    size_t errlen;
};

__attribute__((format(printf, 2, 3)))
static int sfail(struct server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, s->errlen, fmt, ap);
    va_end(ap);
    return -EPROTO;
}

__attribute__((format(printf, 2, 3)))
static void slog(const struct server *s, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "shoal-ps: server %d: %s\n", s->index, line);
}

static void sent(struct speer *p) { p->last_sent = ps_now(); }

static void queue_event(struct server *s, int group, enum ps_ev_type t, int worker, int buf,
                        const char *why)
{
    if (s->nev == s->capev) {
        int cap = s->capev ? 2 * s->capev : 16;
        struct ps_event *q = realloc(s->evq, (size_t)cap * sizeof(*q));
        if (q)
            s->evq = q;
        int *qg = realloc(s->evg, (size_t)cap * sizeof(*qg));
        if (qg)
            s->evg = qg;
        char(*qw)[160] = realloc(s->evwhy, (size_t)cap * sizeof(*qw));
        if (qw)
            s->evwhy = qw;
        if (!q || !qg || !qw)
            return; /* the core then misses it; the idle timeout is the backstop */
        s->capev = cap;
    }
    s->evg[s->nev] = group;
    snprintf(s->evwhy[s->nev], sizeof(s->evwhy[0]), "%s", why ? why : "");
    s->evq[s->nev] = (struct ps_event){.type = t, .worker = worker, .buf = buf,
                                       .why = why ? s->evwhy[s->nev] : NULL, .now = ps_now()};
    s->nev++;
}

/* ---- connections ------------------------------------------------------ */

/* Cut a peer off without waiting on it: it may be stopped or gone.  Events
 * already handed out in this batch may still name its endpoint: it is
 * remembered so handle() skips them. */
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

/* Worker wi's connection is over: close it and forget its region. */
static void unbind_worker(struct server *s, struct sgroup *G, int wi)
{
    struct sworker *sw = &G->w[wi];
    if (sw->params)
        shoal_rmr_destroy(sw->params);
    sw->params = NULL;
    if (sw->peer) {
        close_peer(s, sw->peer);
        sw->peer->kind = PEER_NEW;
        sw->peer->worker = -1;
    }
    sw->peer = NULL;
    sw->members_blocked = false;
}

/* The loop noticed worker wi is gone (failure, silence, protocol error). */
static void lose_worker(struct server *s, struct sgroup *G, int wi, const char *why)
{
    unbind_worker(s, G, wi);
    queue_event(s, G->id, PS_EV_LOST, wi, 0, why);
}

/* ---- the table (server 0) ------------------------------------------------ */

static bool table_complete(const struct server *s) { return s->registered == s->c->servers; }

static void send_table(struct server *s, shoal_ep_t *ep)
{
    int rc = ps_net_send(ep, &s->table);
    if (rc) /* that peer's connection broke; its failure event follows */
        slog(s, "TABLE to %s: %s", shoal_ep_peer(ep), shoal_strerror(rc));
}

/* ---- the job -------------------------------------------------------------- */

static void describe_layout(const struct ps_hello *h, char *out, size_t len)
{
    snprintf(out, len, "%u tensors, %llu floats, layout %016llx", h->ntensors,
             (unsigned long long)h->nparams, (unsigned long long)h->layout);
}

/* The job a worker describes must be its group's, exactly; @why names the
 * first difference. */
static int check_job(const struct server *s, const struct sgroup *G, const struct ps_hello *h,
                     char *why, size_t len)
{
    const shoal_ps_config_t *c = s->c;
    const shoal_ps_job_t *a = &h->job;
    if (h->servers != (uint32_t)c->servers) {
        snprintf(why, len, "it expects %u servers, this job has %d", h->servers, c->servers);
        return -1;
    }
    if (s->ngroups == 1 && c->size > 0 && a->workers != c->size - c->servers) {
        snprintf(why, len, "it counts %d workers, this job %d", a->workers,
                 c->size - c->servers);
        return -1;
    }
    if (!G->job_known)
        return 0;
    const shoal_ps_job_t *b = &G->job.job;
    char x[128], y[128];
    if (h->nparams != G->job.nparams || h->ntensors != G->job.ntensors ||
        (h->layout != G->job.layout && !G->job_partial)) {
        describe_layout(h, x, sizeof(x));
        describe_layout(&G->job, y, sizeof(y));
        snprintf(why, len, "its parameters (%s) differ from the others' (%s): every worker "
                 "must declare the same tensors, names and sizes", x, y);
        return -1;
    }
    if (a->compress != b->compress || a->topk_ratio != b->topk_ratio) {
        snprintf(why, len, "it compresses as %s, the others as %s",
                 shoal_ps_compress_name(a, x, sizeof(x)), shoal_ps_compress_name(b, y, sizeof(y)));
        return -1;
    }
    if (a->mode != b->mode || a->staleness != b->staleness) {
        snprintf(why, len, "it trains in mode %s (staleness %d), the others in %s (%d)",
                 shoal_ps_mode_name(a->mode), a->staleness, shoal_ps_mode_name(b->mode),
                 b->staleness);
        return -1;
    }
    if (a->workers != b->workers || strcmp(a->label, b->label) || a->batch != b->batch ||
        a->iters_per_epoch != b->iters_per_epoch || a->epochs != b->epochs) {
        snprintf(why, len, "its job (%d workers, model %s, batch %u, %u x %u iterations) "
                 "differs from the others' (%d workers, model %s, batch %u, %u x %u)",
                 a->workers, a->label, a->batch, a->epochs, a->iters_per_epoch, b->workers,
                 b->label, b->batch, b->epochs, b->iters_per_epoch);
        return -1;
    }
    if (!G->job_partial &&
        (a->optimizer != b->optimizer || a->lr != b->lr || a->momentum != b->momentum ||
         a->weight_decay != b->weight_decay || a->momentum_auto != b->momentum_auto ||
         a->beta1 != b->beta1 || a->beta2 != b->beta2 || a->eps != b->eps ||
         a->schedule != b->schedule || a->step_epochs != b->step_epochs ||
         a->gamma != b->gamma)) {
        snprintf(why, len, "its optimizer (%s, lr %g, momentum %g, weight decay %g, schedule "
                 "%s) differs from the others' (%s, lr %g, momentum %g, weight decay %g, "
                 "schedule %s)", shoal_ps_optimizer_name(a->optimizer), (double)a->lr,
                 (double)a->momentum, (double)a->weight_decay,
                 shoal_ps_schedule_name(a->schedule), shoal_ps_optimizer_name(b->optimizer),
                 (double)b->lr, (double)b->momentum, (double)b->weight_decay,
                 shoal_ps_schedule_name(b->schedule));
        return -1;
    }
    return 0;
}

/* Allocate the shard's buffers once a group's job is known (from its
 * first HELLO, or a checkpoint). */
static int setup_job(struct server *s, struct sgroup *G, const struct ps_hello *h,
                     bool need_init)
{
    const shoal_ps_config_t *c = s->c;
    G->job = *h;
    G->job_known = true;
    G->W = h->job.workers;
    G->nparams = (size_t)h->nparams;
    ps_shard(G->nparams, c->servers, s->index, &G->off, &G->len);
    if (G->len == 0)
        return sfail(s, "group %d: %zu parameters cannot be split over %d servers", G->id,
                     G->nparams, c->servers);
    struct ps_core_cfg cc = {
        .workers = G->W, .mode = (enum ps_core_mode)h->job.mode,
        .staleness = h->job.staleness, .iters_per_epoch = h->job.iters_per_epoch,
        .epochs = h->job.epochs, .coordinator = s->index == 0, .need_init = need_init,
        .rejoin_timeout = c->rejoin_timeout_ms / 1000.0,
        .checkpoint_every = c->checkpoint_dir[0] ? (uint32_t)c->checkpoint_every : 0,
        .checkpoint_secs = c->checkpoint_dir[0] ? c->checkpoint_secs : 0};
    int rc = ps_core_init(&G->core, &cc, ps_now());
    if (rc)
        return sfail(s, "cannot set up the job: %s", strerror(-rc));
    G->core_up = true;
    if ((rc = ps_optim_init(&G->opt, &h->job, G->len)))
        return sfail(s, "out of memory for the optimizer state");
    if (h->job.optimizer != SHOAL_PS_AVERAGE && h->job.momentum_auto &&
        G->opt.job.momentum != h->job.momentum && !c->quiet)
        slog(s, "%s with %d workers: momentum %.2f", shoal_ps_mode_name(h->job.mode), G->W,
             (double)G->opt.job.momentum);
    if (c->servers > 1 && h->job.mode == SHOAL_PS_BSP && c->checkpoint_secs > 0 &&
        c->checkpoint_dir[0] && G->id == 0)
        slog(s, "warning: with %d servers, checkpoints by time fall on different updates on "
             "each server, and a restarted server may find no update the others also have: "
             "prefer checkpoints by count", c->servers);
    G->npool = G->core.npool;
    G->w = calloc((size_t)G->W, sizeof(*G->w));
    G->pool = calloc((size_t)G->npool, sizeof(*G->pool));
    if (!G->w || !G->pool)
        return sfail(s, "out of memory");
    const shoal_ps_job_t *j = &h->job;
    G->push_bytes = ps_push_bytes(j, G->len);
    G->pull_bytes = ps_pull_bytes(j, G->len);
    bool half = G->pull_bytes < G->len * sizeof(float);
    if (j->compress != SHOAL_PS_COMPRESS_NONE && !(G->sum = ps_alloc_floats(G->len)))
        return sfail(s, "out of memory");
    for (int i = 0; i < G->npool; i++) {
        struct pbuf *b = &G->pool[i];
        if (!(b->p = ps_alloc_floats(G->len)) ||
            (half && !(b->h = (uint16_t *)ps_alloc_floats((G->len + 1) / 2))))
            return sfail(s, "out of memory for %d x %zu parameters", G->npool, G->len);
        if (shoal_mr_reg(s->ctx, half ? (void *)b->h : (void *)b->p, G->pull_bytes, 0, &b->mr))
            return sfail(s, "registering parameters: %s", shoal_ctx_errmsg(s->ctx));
    }
    for (int i = 0; i < G->W; i++) {
        struct sworker *sw = &G->w[i];
        struct ps_colo *co = s->colo;
        if (co && G->id == 0 && i == co->worker && co->slot_bytes == G->push_bytes) {
            sw->slot = co->slot; /* the worker's; it writes it in memory */
            sw->borrowed = true;
        } else if (!(sw->slot = ps_alloc_floats((G->push_bytes + 3) / 4)))
            return sfail(s, "out of memory for %d gradient slots", G->W);
        if (shoal_mr_reg(s->ctx, sw->slot, G->push_bytes, SHOAL_ACCESS_REMOTE_WRITE,
                         &sw->slot_mr))
            return sfail(s, "registering a gradient slot: %s", shoal_ctx_errmsg(s->ctx));
        if (sw->borrowed)
            __atomic_store_n(&s->colo->adopted, 1, __ATOMIC_RELEASE);
    }
    return 0;
}

/* The fp32 parameters of buffer b became new: their half-width copy too. */
static void encode_params(struct sgroup *G, int b)
{
    if (G->pool[b].h)
        ps_half_pack(G->job.job.compress, G->pool[b].h, G->pool[b].p, G->len);
}

/* ---- carrying out the core's actions ---------------------------------------- */

/*
 * Fault injection for the tests (SHOAL_TRAIN_INJECT=torn): right after
 * worker wi's parameters of version 3, write a second, different copy
 * over them, as a broken protocol would while the worker reads.  A
 * worker with verify on must catch it.
 */
static void inject_torn(struct server *s, struct sgroup *G, int wi, int buf)
{
    int f = (buf + 1) % G->npool;
    if (G->pool[f].h)
        return; /* fp32 jobs only */
    memcpy(G->pool[f].p, G->pool[buf].p, G->len * sizeof(float));
    G->pool[f].p[G->len / 2] += 1.0f;
    if (shoal_put(G->w[wi].peer->ep, G->pool[f].mr, 0, G->w[wi].params, 0,
                  G->len * sizeof(float), 0, 0, WR_TORN) == 0)
        slog(s, "injected a torn write into worker %d's parameters (SHOAL_TRAIN_INJECT=torn)",
             wi);
}

static void do_send(struct server *s, struct sgroup *G, const struct ps_action *a)
{
    struct sworker *sw = &G->w[a->worker];
    if (!sw->peer || !sw->peer->ep || sw->members_blocked) {
        sw->members_blocked = false;
        queue_event(s, G->id, PS_EV_BLOCKED, a->worker, a->buf, NULL);
        return;
    }
    struct pbuf *b = &G->pool[a->buf];
    size_t off = 0, len = G->pull_bytes;
    if (s->colo && G->id == 0 && a->worker == s->colo->worker &&
        s->colo->params_bytes == len) {
        /* the worker in this process: copy, and put only the tail */
        size_t tail = ps_colo_copy(s->colo->params, b->h ? (void *)b->h : (void *)b->p, len);
        off = len - tail;
        len = tail;
    }
    int rc = shoal_put(sw->peer->ep, b->mr, off, sw->params, off, len, SHOAL_PUT_IMM,
                       a->version, (uint64_t)a->buf);
    if (rc) {
        queue_event(s, G->id, PS_EV_BLOCKED, a->worker, a->buf, NULL);
        /* Anything but a full queue: the connection broke under us; the
         * worker is lost, not the job. */
        if (rc != -EAGAIN)
            lose_worker(s, G, a->worker, "a put to it failed");
        return;
    }
    sent(sw->peer);
    if (s->inject_torn && a->worker == 0 && a->version == 3)
        inject_torn(s, G, a->worker, a->buf);
    if (s->c->verify) {
        struct ps_msg m = {.type = PS_CHECK};
        m.u.check.version = a->version;
        m.u.check.crc = (uint32_t)crc32(0L, (const Bytef *)(b->h ? (void *)b->h : (void *)b->p),
                                        (uInt)G->pull_bytes);
        if (ps_net_send(sw->peer->ep, &m))
            lose_worker(s, G, a->worker, "CHECK could not be sent");
    }
}

static void do_members(struct server *s, struct sgroup *G, const struct ps_action *a)
{
    struct sworker *sw = &G->w[a->worker];
    if (!sw->peer || !sw->peer->ep)
        return;
    struct ps_msg m = {.type = PS_MEMBERS};
    m.u.members.epoch = a->epoch;
    m.u.members.workers = (uint32_t)G->W;
    memcpy(m.u.members.live, a->live, (size_t)(G->W + 7) / 8);
    int rc = ps_net_send(sw->peer->ep, &m);
    if (rc == -EAGAIN)
        sw->members_blocked = true;
    else if (rc)
        lose_worker(s, G, a->worker, "MEMBERS could not be sent");
    else
        sent(sw->peer);
}

static void do_welcome(struct server *s, struct sgroup *G, const struct ps_action *a)
{
    struct speer *p = s->joining;
    struct sworker *sw = &G->w[a->worker];
    p->kind = PEER_WORKER;
    p->group = G->id;
    p->worker = a->worker;
    sw->peer = p;
    sw->params = s->joining_rmr;
    s->joining_rmr = NULL;
    struct ps_msg m = {.type = PS_WELCOME};
    struct ps_welcome *wl = &m.u.welcome;
    wl->server = (uint32_t)s->index;
    wl->offset = G->off;
    wl->length = G->len;
    wl->version = a->version;
    wl->iteration = a->k;
    size_t dlen;
    if (shoal_mr_pack(sw->slot_mr, wl->desc, sizeof(wl->desc), &dlen) < 0) {
        lose_worker(s, G, a->worker, "its slot descriptor could not be packed");
        return;
    }
    wl->desc_len = (uint32_t)dlen;
    if (ps_net_send(p->ep, &m)) {
        lose_worker(s, G, a->worker, "WELCOME could not be sent");
        return;
    }
    sent(p);
    if (G->t_first == 0)
        G->t_first = ps_now();
}

static void checkpoint(struct server *s, struct sgroup *G)
{
    const struct ps_core *k = &G->core;
    uint32_t *clock = malloc((size_t)G->W * sizeof(uint32_t));
    uint8_t *done = malloc((size_t)G->W);
    if (!clock || !done) {
        free(clock);
        free(done);
        slog(s, "checkpoint at update %u failed: out of memory", k->version);
        return;
    }
    for (int i = 0; i < G->W; i++) {
        clock[i] = k->w[i].clock;
        done[i] = k->w[i].state == PS_W_DONE;
    }
    struct ckpt ck = {.server = (uint32_t)s->index, .group = (uint32_t)G->id,
                      .servers = (uint32_t)s->c->servers,
                      .job = G->job.job, .nparams = G->nparams, .layout = G->job.layout,
                      .ntensors = G->job.ntensors, .off = G->off, .len = G->len,
                      .version = k->version, .grads = k->grads, .workers = (uint32_t)G->W,
                      .clock = clock, .done = done, .fixed = k->fixed,
                      .nrun = (uint32_t)k->nrun, .run = k->run,
                      .opt_kind = (uint32_t)G->opt.kind, .opt_t = G->opt.t,
                      .params = G->pool[k->cur].p, .m = G->opt.m, .v = G->opt.v};
    /* A copy goes to the writer thread.  Checkpoints stay at the versions
     * asked for: if the previous one is still being written, wait. */
    ckw_drain(&s->ckw);
    int rc = ckw_submit(&s->ckw, &ck);
    if (rc)
        slog(s, "checkpoint at update %u failed: %s", k->version, strerror(-rc));
    free(clock);
    free(done);
}

static void do_fetch_init(struct server *s, struct sgroup *G, const struct ps_action *a)
{
    struct sworker *sw = &G->w[a->worker];
    int rc = sw->peer && sw->peer->ep
                 ? shoal_get(sw->peer->ep, G->pool[a->buf].mr, 0, sw->params, 0,
                             G->pull_bytes, WR_INIT | (uint64_t)a->worker)
                 : -ENOTCONN;
    if (rc) {
        slog(s, "reading worker %d's initial parameters: %s", a->worker, shoal_strerror(rc));
        queue_event(s, G->id, PS_EV_INIT_FAILED, a->worker, 0, NULL);
    }
}

static void carry_out(struct server *s, struct sgroup *G, const struct ps_action *a)
{
    switch (a->type) {
    case PS_ACT_WELCOME:
        do_welcome(s, G, a);
        break;
    case PS_ACT_REFUSE:
        slog(s, "refused worker %d at %s: %s", a->worker, shoal_ep_peer(s->joining->ep), a->why);
        ps_net_send_error(s->joining->ep, "%s", a->why);
        close_peer(s, s->joining);
        break;
    case PS_ACT_REPLACE:
        unbind_worker(s, G, a->worker);
        break;
    case PS_ACT_FETCH_INIT:
        do_fetch_init(s, G, a);
        break;
    case PS_ACT_APPLY: {
        const float *g[PS_CORE_MAX_WORKERS];
        int ng = a->n;
        shoal_ps_compress_t cz = G->job.job.compress;
        if (cz == SHOAL_PS_COMPRESS_NONE) {
            for (int i = 0; i < a->n; i++)
                g[i] = G->w[a->slots[i]].slot;
        } else {
            /* decode and sum the pushes (top-k indices were checked on
             * arrival), then one optimizer step on the sum */
            memset(G->sum, 0, G->len * sizeof(float));
            size_t k = ps_topk_k(G->job.job.topk_ratio, G->len);
            for (int i = 0; i < a->n; i++) {
                const void *slot = G->w[a->slots[i]].slot;
                if (ps_is_half(cz))
                    ps_half_unpack_add(cz, G->sum, slot, G->len);
                else
                    (void)ps_topk_unpack_add(G->sum, slot, G->len, k);
            }
            g[0] = G->sum;
            ng = 1;
        }
        shoal_ps_optim_step(&G->opt, a->progress, G->pool[a->to].p, G->pool[a->from].p, g, ng,
                            a->scale);
        encode_params(G, a->to);
        break;
    }
    case PS_ACT_MEMBERS:
        do_members(s, G, a);
        break;
    case PS_ACT_SEND:
        do_send(s, G, a);
        break;
    case PS_ACT_DROP:
    case PS_ACT_NOTE:
        if (s->ngroups > 1)
            slog(s, "group %d: %s", G->id, a->why);
        else
            slog(s, "%s", a->why);
        break;
    case PS_ACT_CHECKPOINT:
        checkpoint(s, G);
        break;
    default:
        break;
    }
}

/* Step group @gi's core with @ev and every event its actions lead to. */
static int step(struct server *s, int gi, const struct ps_event *ev)
{
    queue_event(s, gi, ev->type, ev->worker, ev->buf, ev->why);
    s->evq[s->nev - 1].k = ev->k;
    s->evq[s->nev - 1].incarnation = ev->incarnation;
    for (int i = 0; i < s->nev; i++) {
        struct ps_event e = s->evq[i];
        if (e.why) /* the queue may have moved since */
            e.why = s->evwhy[i];
        struct sgroup *G = &s->g[s->evg[i]];
        if (!G->core_up)
            continue;
        int n = ps_core_step(&G->core, &e);
        if (n < 0) {
            s->nev = 0;
            return sfail(s, "the server's state machine refused %d: %s", e.type,
                         strerror(-n));
        }
        for (int j = 0; j < n; j++)
            carry_out(s, G, &G->core.act[j]);
    }
    s->nev = 0;
    return 0;
}

static int step_simple(struct server *s, int gi, enum ps_ev_type t, int worker, int buf)
{
    struct ps_event e = {.type = t, .worker = worker, .buf = buf, .now = ps_now()};
    return step(s, gi, &e);
}

/* Time passed: every group's core hears it. */
static int tick_all(struct server *s)
{
    for (int g = 0; g < s->ngroups; g++) {
        int rc = step_simple(s, g, PS_EV_TICK, 0, 0);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- messages ----------------------------------------------------------------- */

static int on_hello(struct server *s, struct speer *p, const struct ps_hello *h)
{
    char why[512];
    if (h->group >= (uint32_t)s->ngroups) {
        slog(s, "refused worker %u at %s: group %u, this server has %d", h->worker,
             shoal_ep_peer(p->ep), h->group, s->ngroups);
        ps_net_send_error(p->ep, "group %u: the servers serve %d groups", h->group, s->ngroups);
        close_peer(s, p);
        return 0;
    }
    struct sgroup *G = &s->g[h->group];
    if (check_job(s, G, h, why, sizeof(why))) {
        /* A worker of another job (or misconfigured) is refused; the job
         * goes on waiting for the right one. */
        slog(s, "refused worker %u at %s: job mismatch: %s", h->worker, shoal_ep_peer(p->ep),
             why);
        ps_net_send_error(p->ep, "job mismatch: %s", why);
        close_peer(s, p);
        return 0;
    }
    if (!G->job_known) {
        int rc = setup_job(s, G, h, true);
        if (rc)
            return rc;
    } else if (G->job_partial) {
        /* a format-1 checkpoint did not know the optimizer: the workers say */
        G->job = *h;
        G->job_partial = false;
        G->opt.job = h->job;
        G->opt.job.momentum = ps_optim_momentum(&h->job);
        G->opt.kind = h->job.optimizer;
    }
    shoal_rmr_t *rmr;
    if (shoal_rmr_unpack(p->ep, h->desc, h->desc_len, &rmr)) {
        slog(s, "worker %u at %s: bad parameter descriptor: %s; closing it", h->worker,
             shoal_ep_peer(p->ep), shoal_ctx_errmsg(s->ctx));
        ps_net_send_error(p->ep, "bad parameter descriptor");
        close_peer(s, p);
        return 0;
    }
    if (shoal_rmr_length(rmr) != G->pull_bytes ||
        !(shoal_rmr_access(rmr) & SHOAL_ACCESS_REMOTE_WRITE)) {
        slog(s, "worker %u at %s offered a parameter region of %zu bytes, expected %zu "
             "writable; closing it", h->worker, shoal_ep_peer(p->ep), shoal_rmr_length(rmr),
             G->pull_bytes);
        ps_net_send_error(p->ep, "parameter region of %zu bytes, expected %zu writable",
                          shoal_rmr_length(rmr), G->pull_bytes);
        shoal_rmr_destroy(rmr);
        close_peer(s, p);
        return 0;
    }
    s->joining = p;
    s->joining_rmr = rmr;
    struct ps_event e = {.type = PS_EV_JOIN, .worker = (int)h->worker,
                         .incarnation = h->incarnation, .now = ps_now()};
    int rc = step(s, G->id, &e);
    if (s->joining_rmr) /* refused */
        shoal_rmr_destroy(s->joining_rmr);
    s->joining = NULL;
    s->joining_rmr = NULL;
    return rc;
}

static void cut_off(struct server *s, struct speer *p, const char *why)
{
    if (p->kind == PEER_WORKER)
        lose_worker(s, &s->g[p->group], p->worker, why);
    else
        close_peer(s, p);
}

static int rollback(struct server *s, struct sgroup *G, struct speer *p, uint32_t from,
                    uint32_t to);

static int on_message(struct server *s, struct speer *p, const void *data, size_t len)
{
    struct ps_msg m;
    char why[256];
    if (ps_decode(data, len, &m, why, sizeof(why))) {
        /* A peer that speaks garbage is cut off; the job goes on. */
        slog(s, "%s sent a bad message (%s); closing it", shoal_ep_peer(p->ep), why);
        ps_net_send_error(p->ep, "bad message: %s", why);
        cut_off(s, p, "protocol error");
        return tick_all(s);
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
                    send_table(s, q->ep);
                    q->worker = -1;
                }
        return 0;
    }
    case PS_TABLE_REQ:
        if (s->index != 0 || p->kind != PEER_NEW)
            break;
        if (table_complete(s))
            send_table(s, p->ep);
        else
            p->worker = -2; /* answered when the table is complete */
        return 0;
    case PS_HELLO:
        if (p->kind != PEER_NEW)
            break;
        return on_hello(s, p, &m.u.hello);
    case PS_BYE: {
        if (p->kind != PEER_WORKER)
            break;
        int wi = p->worker, gi = p->group;
        s->g[gi].t_last = ps_now();
        unbind_worker(s, &s->g[gi], wi);
        return step_simple(s, gi, PS_EV_DONE, wi, 0);
    }
    case PS_PROBE: {
        if (p->kind != PEER_WORKER)
            break;
        struct ps_msg a = {.type = PS_PROBE_ACK, .u.probe.nonce = m.u.probe.nonce};
        if (ps_net_send(p->ep, &a) == 0) /* (a failure shows as the endpoint's) */
            sent(p);
        return 0;
    }
    case PS_ROLLBACK:
        if (p->kind != PEER_WORKER)
            break;
    {
        int rc = rollback(s, &s->g[p->group], p, m.u.rollback.from, m.u.rollback.to);
        return rc < 0 ? rc : 0;
    }
    case PS_ERROR:
        slog(s, "%s reports: %s", shoal_ep_peer(p->ep), m.u.error.text);
        cut_off(s, p, "it reported an error");
        return tick_all(s);
    default:
        break;
    }
    slog(s, "%s sent an unexpected %s message; closing it", shoal_ep_peer(p->ep),
         ps_type_name(m.type));
    ps_net_send_error(p->ep, "unexpected %s message", ps_type_name(m.type));
    cut_off(s, p, "protocol error");
    return tick_all(s);
}

static int handle(struct server *s, const shoal_event_t *ev)
{
    if (!ev->ep || closed_in_batch(s, ev->ep))
        return 0;
    struct speer *p = shoal_ep_user(ev->ep);
    if (!p || !p->ep)
        return 0;
    /* Only what the peer sent shows it is alive; our own completions do not. */
    if (ev->type == SHOAL_EV_IMM || ev->type == SHOAL_EV_RECV)
        p->last_heard = ps_now();
    bool worker = p->kind == PEER_WORKER;
    switch (ev->type) {
    case SHOAL_EV_PUT_DONE:
        if (!worker || ev->wr_id & WR_TORN || ev->wr_id >= (uint64_t)s->g[p->group].npool)
            return 0;
        /* A failed put is followed by the endpoint's failure event. */
        return step_simple(s, p->group, PS_EV_PUT_DONE, p->worker, (int)ev->wr_id);
    case SHOAL_EV_GET_DONE:
        if (!(ev->wr_id & WR_INIT) || !worker)
            return 0;
        if (ev->status) {
            slog(s, "reading worker %d's initial parameters: %s", p->worker,
                 ev->reason ? ev->reason : shoal_strerror(ev->status));
            return step_simple(s, p->group, PS_EV_INIT_FAILED, p->worker, 0);
        }
        {
            struct sgroup *G = &s->g[p->group];
            int b = G->core.cur;
            if (G->pool[b].h) /* the worker's parameters came at half width */
                ps_half_unpack(G->job.job.compress, G->pool[b].p, G->pool[b].h, G->len);
        }
        return step_simple(s, p->group, PS_EV_INIT_DONE, p->worker, 0);
    case SHOAL_EV_IMM:
        if (!worker) {
            slog(s, "%s wrote into a slot before its HELLO; closing it", shoal_ep_peer(p->ep));
            close_peer(s, p);
            return 0;
        }
        {
            struct sgroup *G = &s->g[p->group];
            shoal_ps_compress_t cz = G->job.job.compress;
            if (cz == SHOAL_PS_COMPRESS_TOPK || cz == SHOAL_PS_COMPRESS_TOPK_NOEF) {
                /* every index inside the shard, before the core takes it */
                size_t k = ps_topk_k(G->job.job.topk_ratio, G->len);
                const uint8_t *q = G->w[p->worker].slot;
                for (size_t m = 0; m < k; m++) {
                    uint32_t idx;
                    memcpy(&idx, q + 8 * m, 4);
                    if (idx >= G->len) {
                        slog(s, "worker %d pushed a top-k index %u outside its shard of %zu; "
                             "closing it", p->worker, idx, G->len);
                        lose_worker(s, G, p->worker, "malformed top-k push");
                        return step_simple(s, p->group, PS_EV_TICK, 0, 0);
                    }
                }
            }
            struct ps_event e = {.type = PS_EV_PUSH, .worker = p->worker, .k = ev->imm,
                                 .now = ps_now()};
            return step(s, p->group, &e);
        }
    case SHOAL_EV_RECV:
        return on_message(s, p, ev->data, ev->len);
    case SHOAL_EV_EP_FAILED:
        if (worker) {
            char why[200];
            snprintf(why, sizeof(why), "%s", ev->reason ? ev->reason : "connection failed");
            int gi = p->group;
            lose_worker(s, &s->g[gi], p->worker, why);
            return step_simple(s, gi, PS_EV_TICK, 0, 0);
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
    p->last_heard = p->last_sent = ps_now();
    p->next = s->peers;
    s->peers = p;
    shoal_ep_set_user(ep, p);
    return p;
}

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

static int register_with_coordinator(struct server *s, int timeout_ms);

/* Heartbeats, silence, and the cores' clock (rejoin deadlines,
 * checkpoints by time). */
static int housekeeping(struct server *s)
{
    const shoal_ps_config_t *c = s->c;
    double now = ps_now(), hb = c->fail_timeout_ms / 4000.0;
    /* If this process itself did not look for a while (a descheduled
     * process), the silence is ours, not theirs. */
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
            lose_worker(s, &s->g[p->group], p->worker, why);
            continue;
        }
        if (now - p->last_sent >= hb) {
            struct ps_msg ping = {.type = PS_PING};
            if (ps_net_send(p->ep, &ping) == 0)
                sent(p);
        }
    }
    if (s->index != 0 && s->coord && !s->coord->ep) {
        slog(s, "the connection to server 0 closed; registering with it again in 1 s");
        s->coord = NULL; /* reaped below */
        /* not at once: server 0 may be exiting at the end of the job, and
         * a connection request racing its teardown is not welcome */
        s->next_reg = now + 1.0;
    }
    reap_peers(s);
    if (s->index != 0 && !s->coord && now >= s->next_reg) {
        char keep[1024];
        snprintf(keep, sizeof(keep), "%s", s->err);
        if (register_with_coordinator(s, 300) == 0)
            slog(s, "registered with server 0 again");
        snprintf(s->err, s->errlen, "%s", keep);
        s->next_reg = ps_now() + 0.5;
    }
    return tick_all(s);
}

static bool finished(const struct server *s)
{
    for (int g = 0; g < s->ngroups; g++)
        if (!s->g[g].core_up || !ps_core_finished(&s->g[g].core))
            return false;
    return true;
}

static double last_progress(const struct server *s)
{
    double t = s->t_start;
    for (int g = 0; g < s->ngroups; g++)
        if (s->g[g].core_up && s->g[g].core.last_progress > t)
            t = s->g[g].core.last_progress;
    return t;
}

static int run(struct server *s)
{
    const shoal_ps_config_t *c = s->c;
    while (!finished(s)) {
        if (s->stop && __atomic_load_n(s->stop, __ATOMIC_ACQUIRE)) {
            snprintf(s->err, s->errlen, "stopped: this process's worker failed");
            return -ECANCELED;
        }
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
        if ((ps_now() - last_progress(s)) * 1000 > c->idle_timeout_ms) {
            int live = 0, done = 0, all = 0;
            for (int g = 0; g < s->ngroups; g++)
                for (int i = 0; s->g[g].core_up && i < s->g[g].W; i++) {
                    live += s->g[g].core.w[i].state == PS_W_LIVE;
                    done += s->g[g].core.w[i].state == PS_W_DONE;
                    all++;
                }
            if (s->ngroups == 1 && !s->g[0].job_known)
                all = c->size - c->servers;
            return sfail(s, "no progress for %d ms (%d of %d workers live, %d finished)",
                         c->idle_timeout_ms, live, all, done);
        }
    }
    for (int g = 0; g < s->ngroups; g++)
        if (c->checkpoint_dir[0] && s->g[g].core.version != s->g[g].core.ckpt_version)
            checkpoint(s, &s->g[g]);
    ckw_drain(&s->ckw); /* the last checkpoint is on disk before we exit */
    return 0;
}

/* Make checkpoint @k group G's state: the job (set up now when @setup),
 * the parameters, the optimizer's state, the clocks and the memberships. */
static int restore(struct server *s, struct sgroup *G, struct ckpt *k, const char *path,
                   bool setup)
{
    const shoal_ps_config_t *c = s->c;
    int rc;
    if (k->servers != (uint32_t)c->servers ||
        (s->ngroups == 1 && c->size > 0 && k->workers != (uint32_t)(c->size - c->servers)))
        return sfail(s, "%s is from another job (%u servers, %u workers)", path, k->servers,
                     k->workers);
    if (setup) {
        struct ps_hello h = {.servers = k->servers, .job = k->job, .nparams = k->nparams,
                             .ntensors = k->ntensors ? k->ntensors : 1, .layout = k->layout,
                             .group = (uint32_t)G->id};
        if (k->format == 1) {
            /* The optimizer and layout were not recorded: taken from the workers. */
            G->job_partial = true;
            h.job.optimizer = SHOAL_PS_SGD;
        }
        if ((rc = setup_job(s, G, &h, false)))
            return rc;
    }
    if (k->off != G->off || k->len != G->len || k->opt_kind != (uint32_t)G->opt.kind ||
        (!k->m) != (!G->opt.m) || (!k->v) != (!G->opt.v) || k->workers != (uint32_t)G->W)
        return sfail(s, "%s holds another shard or optimizer", path);
    memcpy(G->pool[G->core.cur].p, k->params, G->len * sizeof(float));
    encode_params(G, G->core.cur);
    if (G->opt.m)
        memcpy(G->opt.m, k->m, G->len * sizeof(float));
    if (G->opt.v)
        memcpy(G->opt.v, k->v, G->len * sizeof(float));
    G->opt.t = k->opt_t;
    rc = ps_core_restore(&G->core, k->version, k->grads, k->clock, k->done, ps_now());
    if (rc == 0 && k->nrun > 0) {
        struct ps_core_run *r = malloc(k->nrun * sizeof(*r));
        if (!r) {
            rc = -ENOMEM;
        } else {
            memcpy(r, k->run, k->nrun * sizeof(*r));
            free(G->core.run);
            G->core.run = r;
            G->core.nrun = G->core.caprun = (int)k->nrun;
            G->core.fixed = k->fixed;
        }
    }
    if (rc)
        return sfail(s, "%s: clocks that cannot belong to this job", path);
    return 0;
}

/* resume: the newest valid checkpoint of a group becomes its state; with
 * @want (not UINT32_MAX), the one of that update if the group has it. */
static int resume_group(struct server *s, struct sgroup *G, uint32_t want)
{
    struct ckpt k;
    char path[SHOAL_PS_PATH_MAX + 64], err[512];
    int rc = ckpt_load(s->c->checkpoint_dir, (uint32_t)s->index, (uint32_t)G->id, &k, stderr,
                       path, sizeof(path), err, sizeof(err));
    if (rc == -ENOENT) {
        slog(s, "resume: %s; starting fresh", err);
        return 0;
    }
    if (rc)
        return sfail(s, "resume: %s", err);
    if (want != UINT32_MAX && k.version > want) {
        uint32_t newest = k.version;
        ckpt_free(&k);
        if (ckpt_load_version(s->c->checkpoint_dir, (uint32_t)s->index, (uint32_t)G->id, want,
                              &k, path, sizeof(path), err, sizeof(err)) == 0) {
            slog(s, "group %d: back to update %u, which every group has (its newest is %u)",
                 G->id, want, newest);
        } else if ((rc = ckpt_load(s->c->checkpoint_dir, (uint32_t)s->index,
                                   (uint32_t)G->id, &k, stderr, path, sizeof(path), err,
                                   sizeof(err)))) {
            return sfail(s, "resume: %s", err);
        } else {
            slog(s, "warning: group %d has no checkpoint at update %u, which the other "
                 "groups resume from; it resumes from its newest, %u", G->id, want, newest);
        }
    }
    rc = restore(s, G, &k, path, true);
    if (rc == 0)
        slog(s, "resumed from %s (update %u, %llu gradients applied)", path, k.version,
             (unsigned long long)k.grads);
    ckpt_free(&k);
    return rc;
}

/*
 * resume every group.  Several groups (a pipeline's stages) checkpoint at
 * the same update counts, but the server may die between one group's write
 * and the next's; a pipeline's stages must go back to the same step, or a
 * stage ahead would not redo the steps its neighbours redo.  So all go back
 * to the newest update every group has a checkpoint of.
 */
static int resume_groups(struct server *s)
{
    uint32_t common = UINT32_MAX;
    for (int g = 0; s->ngroups > 1 && g < s->ngroups; g++) {
        struct ckpt k;
        char path[SHOAL_PS_PATH_MAX + 64], err[512];
        if (ckpt_load(s->c->checkpoint_dir, (uint32_t)s->index, (uint32_t)s->g[g].id, &k, NULL,
                      path, sizeof(path), err, sizeof(err)))
            continue; /* reported when that group resumes */
        common = k.version < common ? k.version : common;
        ckpt_free(&k);
    }
    for (int g = 0; g < s->ngroups; g++) {
        int rc = resume_group(s, &s->g[g], common);
        if (rc)
            return rc;
    }
    return 0;
}

/*
 * bsp, several servers: a worker found the servers at different updates
 * (one restarted from its checkpoint).  Go back from update @from (the
 * one it saw here; a late request from another worker is ignored) to the
 * checkpoint at update @to, and cut every worker of the group off: they
 * reconnect and continue at @to.  0, or 1 when there is no such
 * checkpoint (the worker is told why).
 */
static int rollback(struct server *s, struct sgroup *G, struct speer *p, uint32_t from,
                    uint32_t to)
{
    if (G->core.version != from || G->job.job.mode != SHOAL_PS_BSP)
        return 0;
    ckw_drain(&s->ckw);
    struct ckpt k;
    char path[SHOAL_PS_PATH_MAX + 64], err[512];
    if (!s->c->checkpoint_dir[0] ||
        ckpt_load_version(s->c->checkpoint_dir, (uint32_t)s->index, (uint32_t)G->id, to, &k,
                          path, sizeof(path), err, sizeof(err))) {
        slog(s, "cannot roll back from update %u to %u: %s", from, to,
             s->c->checkpoint_dir[0] ? "no valid checkpoint of that update"
                                     : "no checkpoint directory");
        ps_net_send_error(p->ep, "server %d cannot roll back to update %u: no checkpoint of it",
                          s->index, to);
        return 1;
    }
    for (int i = 0; i < G->W; i++)
        unbind_worker(s, G, i);
    int rc = restore(s, G, &k, path, false);
    if (rc == 0)
        slog(s, "rolled back from update %u to %u (%s): another server restarted from it",
             from, to, path);
    ckpt_free(&k);
    return rc;
}

/* Servers > 0: tell server 0 where this one listens (at start, and again
 * whenever the connection is lost: a restarted server 0 knows only
 * itself until the others register again). */
static int register_with_coordinator(struct server *s, int timeout_ms)
{
    const shoal_ps_config_t *c = s->c;
    char chost[PS_HOST_MAX];
    uint16_t cport;
    shoal_ep_t *ep;
    int rc;
    if ((rc = ps_net_coordinator(c, chost, sizeof(chost), &cport, s->err, s->errlen)) ||
        (rc = ps_net_connect(s->ctx, chost, cport, timeout_ms, &ep, s->err, s->errlen)))
        return rc;
    struct speer *p = add_peer(s, ep);
    if (!p) {
        shoal_ep_close(ep);
        return sfail(s, "out of memory");
    }
    p->kind = PEER_SERVER;
    struct ps_msg reg = {.type = PS_SERVER_REG};
    reg.u.reg.rank = (uint32_t)s->index;
    memcpy(reg.u.reg.addr.host, s->host, PS_HOST_MAX);
    reg.u.reg.addr.port = s->port;
    if ((rc = ps_net_send(ep, &reg))) {
        close_peer(s, p);
        return sfail(s, "SERVER_REG to %s:%u: %s", chost, cport, shoal_strerror(rc));
    }
    s->coord = p;
    return 0;
}

static int start(struct server *s)
{
    const shoal_ps_config_t *c = s->c;
    int rc;
    char host[PS_HOST_MAX];
    uint16_t port = 0;
    const char *bind_host = c->host;
    if (s->index == 0 && !c->rendezvous[0]) {
        if (ps_parse_hostport(c->coordinator, host, sizeof(host), &port))
            return sfail(s, "coordinator '%s' is not host:port", c->coordinator);
        bind_host = host;
    }
    if ((rc = shoal_listen(s->ctx, bind_host, port, &s->l)))
        return sfail(s, "cannot listen on %s:%u: %s", bind_host, port, shoal_ctx_errmsg(s->ctx));
    snprintf(s->host, sizeof(s->host), "%s", bind_host);
    s->port = shoal_listener_port(s->l);
    s->table.type = PS_TABLE;
    s->table.u.table.n = (uint32_t)c->servers;
    if (s->index == 0) {
        memcpy(s->table.u.table.addr[0].host, s->host, PS_HOST_MAX);
        s->table.u.table.addr[0].port = s->port;
        s->registered = 1;
        if (c->rendezvous[0] && (rc = ps_net_publish(c, s->host, s->port, s->err, s->errlen)))
            return rc;
    } else if ((rc = register_with_coordinator(s, c->connect_timeout_ms))) {
        return rc;
    }
    if (!c->quiet)
        slog(s, "listening on %s:%u over %s", s->host, s->port, shoal_ctx_describe(s->ctx));
    if (c->checkpoint_dir[0] && (rc = ckw_start(&s->ckw, c->checkpoint_dir, c->quiet)))
        return sfail(s, "cannot start the checkpoint writer: %s", strerror(-rc));
    if (c->resume)
        return resume_groups(s);
    return 0;
}

static void cleanup(struct server *s)
{
    /* Stop listening first: a late connection request is refused by the
     * kernel instead of meeting a transport being torn down. */
    if (s->l)
        shoal_listener_close(s->l);
    s->l = NULL;
    for (int g = 0; s->g && g < s->ngroups; g++)
        for (int i = 0; s->g[g].w && i < s->g[g].W; i++)
            if (s->g[g].w[i].params)
                shoal_rmr_destroy(s->g[g].w[i].params);
    while (s->peers) {
        struct speer *p = s->peers;
        s->peers = p->next;
        if (p->ep)
            shoal_ep_close(p->ep);
        free(p);
    }
    if (s->l)
        shoal_listener_close(s->l);
    for (int g = 0; s->g && g < s->ngroups; g++) {
        struct sgroup *G = &s->g[g];
        for (int i = 0; G->w && i < G->W; i++) {
            if (G->w[i].slot_mr)
                shoal_mr_dereg(G->w[i].slot_mr);
            if (!G->w[i].borrowed)
                free(G->w[i].slot);
        }
        for (int i = 0; G->pool && i < G->npool; i++) {
            if (G->pool[i].mr)
                shoal_mr_dereg(G->pool[i].mr);
            free(G->pool[i].p);
            free(G->pool[i].h);
        }
        free(G->sum);
        free(G->pool);
        free(G->w);
        ps_optim_fini(&G->opt);
        if (G->core_up)
            ps_core_fini(&G->core);
    }
    free(s->g);
    free(s->evq);
    free(s->evg);
    free(s->evwhy);
    ckw_stop(&s->ckw);
    if (s->ctx)
        shoal_ctx_destroy(s->ctx);
}

int shoal_ps_serve(const shoal_ps_config_t *cfg, char *err, size_t errlen)
{
    if (cfg && cfg->colocated) {
        if (err)
            snprintf(err, errlen, "a co-located job's servers run inside its workers' "
                     "handles (shoal_ps_create)");
        return -EINVAL;
    }
    return ps_serve(cfg, NULL, NULL, err, errlen);
}

int ps_serve(const shoal_ps_config_t *cfg, const int *stop, struct ps_colo *colo, char *err,
             size_t errlen)
{
    char dummy[8];
    struct server S = {.c = cfg, .index = cfg ? cfg->rank : -1, .stop = stop, .colo = colo,
                       .err = err ? err : dummy, .errlen = err ? errlen : sizeof(dummy)};
    struct server *s = &S;
    if (!cfg)
        return -EINVAL;
    int rc = shoal_ps_config_check(cfg, false, s->err, s->errlen);
    if (rc)
        return rc;
    if (!shoal_ps_is_server(cfg)) {
        snprintf(s->err, s->errlen, "rank %d is not a server's (servers are ranks 0-%d)",
                 cfg->rank, cfg->servers - 1);
        return -EINVAL;
    }
    s->ngroups = cfg->groups > 0 ? cfg->groups : 1;
    if (!(s->g = calloc((size_t)s->ngroups, sizeof(*s->g)))) {
        snprintf(s->err, s->errlen, "out of memory");
        return -ENOMEM;
    }
    for (int g = 0; g < s->ngroups; g++)
        s->g[g].id = g;
    const char *inj = getenv("SHOAL_TRAIN_INJECT");
    s->inject_torn = inj && strcmp(inj, "torn") == 0;
    s->t_start = s->last_look = ps_now();
    /* co-located: this thread and the worker's both wait on contexts */
    if ((rc = ps_net_ctx(&s->ctx, false, colo ? 2 : 1, s->err, s->errlen)) == 0 &&
        (rc = start(s)) == 0)
        rc = run(s);
    for (int g = 0; rc == 0 && g < s->ngroups; g++) {
        struct sgroup *G = &s->g[g];
        if (!G->job_known)
            continue;
        char gl[32] = "";
        if (s->ngroups > 1)
            snprintf(gl, sizeof(gl), "group %d: ", g);
        double el = G->t_last - G->t_first;
        double rounds = G->job.job.mode == SHOAL_PS_BSP ? (double)G->core.version
                                                        : (double)G->core.grads / G->W;
        if (!cfg->quiet && el > 0)
            slog(s, "%s%u updates, %.1f rounds/s, %.0f samples/s (all workers)", gl,
                 G->core.version, rounds / el, rounds * G->job.job.batch * G->W / el);
        /* The evidence that nothing was applied twice: every gradient
         * applied had the iteration its worker was expected to push. */
        slog(s, "%sapplied %llu gradients, each once; dropped %llu duplicate or stale pushes",
             gl, (unsigned long long)G->core.grads, (unsigned long long)G->core.dropped);
    }
    cleanup(s);
    return rc;
}
