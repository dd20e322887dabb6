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
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "net.h"
#include "report.h"
#include "train.h"

enum peer_kind { PEER_NEW = 0, PEER_WORKER, PEER_SERVER };

struct speer {
    enum peer_kind kind;
    shoal_ep_t *ep;
    int worker;               /* PEER_WORKER: its index */
    struct speer *next;       /* all peers */
};

struct sworker {
    struct speer *peer;       /* NULL until its HELLO */
    shoal_mr_t *slot_mr;
    float *slot;
    shoal_rmr_t *params;      /* its parameter slice for this shard */
    uint32_t clock;           /* gradients received */
    bool arrived;             /* bsp: this round's gradient is in */
    bool queued;              /* async/ssp: gradient waiting to be applied */
    bool waiting;             /* ssp: applied, answer held back */
    bool bye;
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
    int arrived, byes, hellos;
    int *queue, qhead, qlen;  /* async/ssp: workers whose gradient waits */

    /* server 0: the table */
    struct ps_msg table;
    int registered;           /* servers known, including us */
    double t_first, t_last;
    bool inject_torn;         /* tests only: see inject_torn() */
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

static void *alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, (n ? n : 1) * sizeof(float)))
        return NULL;
    memset(p, 0, n * sizeof(float));
    return p;
}

/* ---- the table (server 0) ------------------------------------------------ */

static bool table_complete(const struct server *s)
{
    return s->registered == s->c->servers;
}

static int send_table(struct server *s, shoal_ep_t *ep)
{
    int rc = net_send(ep, &s->table);
    if (rc)
        return sfail(s, "TABLE to %s: %s", shoal_ep_peer(ep), shoal_strerror(rc));
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
        s->pool[i].p = alloc_floats(s->len);
        if (!s->pool[i].p)
            return sfail(s, "out of memory for %d x %zu parameters", s->npool, s->len);
        if (shoal_mr_reg(s->ctx, s->pool[i].p, s->len * sizeof(float), 0, &s->pool[i].mr))
            return sfail(s, "registering parameters: %s", shoal_ctx_errmsg(s->ctx));
    }
    if (c->opt.momentum != 0.0f && !(s->mom = alloc_floats(s->len)))
        return sfail(s, "out of memory");
    /* The initial parameters: element i depends only on (seed, i), so any
     * sharding starts from the same model. */
    float *full = alloc_floats(s->nparams);
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
        sw->slot = alloc_floats(s->len);
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

static int answer(struct server *s, int wi)
{
    struct sworker *sw = &s->w[wi];
    struct pbuf *b = &s->pool[s->cur];
    int rc = shoal_put(sw->peer->ep, b->mr, 0, sw->params, 0, s->len * sizeof(float),
                       SHOAL_PUT_IMM, s->version, (uint64_t)s->cur);
    if (rc == -EAGAIN) {
        /* The send queue is full: retried when completions free it. */
        sw->answer_due = true;
        return 0;
    }
    if (rc)
        return sfail(s, "parameters to worker %d: %s", wi, shoal_ctx_errmsg(s->ctx));
    sw->answer_due = false;
    sw->answer_buf = s->cur;
    b->readers++;
    if (s->inject_torn && wi == 0 && s->version == 3 && (rc = inject_torn(s, wi)))
        return rc;
    if (s->c->verify) {
        struct ps_msg m = {.type = PS_CHECK};
        m.u.check.version = s->version;
        m.u.check.crc = (uint32_t)crc32(0L, (const Bytef *)b->p, (uInt)(s->len * sizeof(float)));
        if ((rc = net_send(sw->peer->ep, &m)))
            return sfail(s, "CHECK to worker %d: %s", wi, shoal_strerror(rc));
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

static float current_lr(const struct server *s)
{
    double round = s->c->mode == PS_BSP ? (double)s->version : (double)s->grads / s->W;
    double epoch = s->job.iters_per_epoch ? round / s->job.iters_per_epoch : 0.0;
    return optim_lr(&s->c->opt, epoch, (int)s->job.epochs);
}

/* Apply the gradients in @slots (sum * scale) to a fresh buffer. */
static void update(struct server *s, int to, const float *const *slots, int n, float scale)
{
    optim_apply(&s->c->opt, current_lr(s), s->pool[to].p, s->pool[s->cur].p, s->mom, slots, n,
                scale, s->len);
    s->cur = to;
    s->version++;
}

/* bsp: the round is complete when every worker's gradient is in. */
static int bsp_round(struct server *s)
{
    if (s->arrived < s->W)
        return 0;
    int to = free_buffer(s);
    if (to < 0)
        return 0; /* retried when a put completes */
    const float *slots[PS_MAX_WORKERS];
    for (int i = 0; i < s->W; i++)
        slots[i] = s->w[i].slot;
    update(s, to, slots, s->W, 1.0f / (float)s->W);
    s->arrived = 0;
    for (int i = 0; i < s->W; i++) {
        s->w[i].arrived = false;
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
        if (!s->w[i].bye && s->w[i].clock < m)
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
        update(s, to, &slot, 1, 1.0f / (float)s->W);
        s->grads++;
        s->w[wi].queued = false;
        s->w[wi].waiting = true;
    }
    uint32_t low = slowest(s);
    for (int i = 0; i < s->W; i++) {
        struct sworker *sw = &s->w[i];
        if (!sw->waiting)
            continue;
        /* Worker i starts iteration clock next; ssp lets it while the
         * slowest has done clock - staleness. */
        if (s->c->mode == PS_SSP && sw->clock > low + (uint32_t)s->c->staleness)
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
        if (s->w[i].answer_due && s->w[i].peer) {
            int rc = answer(s, i);
            if (rc || s->w[i].answer_due)
                return rc;
        }
    return s->c->mode == PS_BSP ? bsp_round(s) : async_step(s);
}

/* ---- events -------------------------------------------------------------- */

static int on_hello(struct server *s, struct speer *p, const struct ps_hello *h)
{
    char why[512];
    if (check_job(s, h, why, sizeof(why))) {
        net_send_error(p->ep, "job mismatch: %s", why);
        return sfail(s, "worker %u at %s: job mismatch: %s", h->worker, shoal_ep_peer(p->ep),
                     why);
    }
    if (!s->job_known) {
        int rc = setup_job(s, h);
        if (rc)
            return rc;
    }
    struct sworker *sw = &s->w[h->worker];
    if (sw->peer) {
        net_send_error(p->ep, "worker %u is already connected", h->worker);
        return sfail(s, "a second worker %u from %s", h->worker, shoal_ep_peer(p->ep));
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
    p->kind = PEER_WORKER;
    p->worker = (int)h->worker;
    sw->peer = p;
    s->hellos++;
    struct ps_msg m = {.type = PS_WELCOME};
    struct ps_welcome *wl = &m.u.welcome;
    wl->server = (uint32_t)s->index;
    wl->offset = s->off;
    wl->length = s->len;
    wl->version = s->version;
    size_t dlen;
    rc = shoal_mr_pack(sw->slot_mr, wl->desc, sizeof(wl->desc), &dlen);
    if (rc < 0)
        return sfail(s, "packing a descriptor: %s", shoal_strerror(rc));
    wl->desc_len = (uint32_t)dlen;
    if ((rc = net_send(p->ep, &m)))
        return sfail(s, "WELCOME to worker %u: %s", h->worker, shoal_strerror(rc));
    if (s->t_first == 0)
        s->t_first = now_s();
    return answer(s, p->worker);
}

static int on_message(struct server *s, struct speer *p, const void *data, size_t len)
{
    struct ps_msg m;
    char why[256];
    if (ps_decode(data, len, &m, why, sizeof(why))) {
        net_send_error(p->ep, "bad message: %s", why);
        return sfail(s, "%s sent a bad message: %s", shoal_ep_peer(p->ep), why);
    }
    switch (m.type) {
    case PS_SERVER_REG: {
        uint32_t r = m.u.reg.rank;
        if (s->index != 0 || p->kind != PEER_NEW || r == 0 || r >= (uint32_t)s->c->servers ||
            s->table.u.table.addr[r].port)
            break;
        p->kind = PEER_SERVER;
        s->table.u.table.addr[r] = m.u.reg.addr;
        s->registered++;
        if (table_complete(s))
            for (struct speer *q = s->peers; q; q = q->next)
                if (q->kind == PEER_NEW && q->worker == -2) {
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
            return sfail(s, "HELLO from worker %u of %u", m.u.hello.worker, s->c->workers);
        }
        return on_hello(s, p, &m.u.hello);
    case PS_BYE: {
        if (p->kind != PEER_WORKER || s->w[p->worker].bye)
            break;
        struct sworker *sw = &s->w[p->worker];
        sw->bye = true;
        s->byes++;
        s->t_last = now_s();
        /* Done with it: close now, so its exit is not a failure.  Closing
         * completes the last answer, whose event is then not reported. */
        if (sw->answer_buf >= 0)
            s->pool[sw->answer_buf].readers--;
        sw->answer_buf = -1;
        shoal_rmr_destroy(sw->params);
        sw->params = NULL;
        shoal_ep_close(p->ep);
        p->ep = NULL;
        return progress_updates(s); /* ssp: the slowest may have changed */
    }
    case PS_ERROR:
        return sfail(s, "%s reports: %s", shoal_ep_peer(p->ep), m.u.error.text);
    default:
        break;
    }
    net_send_error(p->ep, "unexpected %s message", ps_type_name(m.type));
    return sfail(s, "%s sent an unexpected %s message", shoal_ep_peer(p->ep),
                 ps_type_name(m.type));
}

static int on_gradient(struct server *s, struct speer *p, uint32_t k)
{
    if (p->kind != PEER_WORKER)
        return sfail(s, "%s wrote into a slot before its HELLO", shoal_ep_peer(p->ep));
    struct sworker *sw = &s->w[p->worker];
    if (k != sw->clock || sw->arrived || sw->queued || sw->waiting || sw->bye)
        return sfail(s, "worker %d pushed iteration %u; expected %u%s", p->worker, k, sw->clock,
                     sw->arrived || sw->queued || sw->waiting
                         ? " after its previous answer"
                         : "");
    sw->clock++;
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
    /* ev->ep is NULL when the endpoint was closed earlier in this batch. */
    struct speer *p = ev->ep ? shoal_ep_user(ev->ep) : NULL;
    if (!p)
        return 0;
    switch (ev->type) {
    case SHOAL_EV_PUT_DONE:
        if (ev->wr_id < (uint64_t)s->npool && s->pool[ev->wr_id].readers > 0)
            s->pool[ev->wr_id].readers--;
        if (p->kind == PEER_WORKER)
            s->w[p->worker].answer_buf = -1;
        if (ev->status && !(p->kind == PEER_WORKER && s->w[p->worker].bye))
            return sfail(s, "parameters to %s failed: %s", shoal_ep_peer(ev->ep),
                         ev->reason ? ev->reason : shoal_strerror(ev->status));
        return progress_updates(s);
    case SHOAL_EV_SEND_DONE:
        return 0;
    case SHOAL_EV_IMM:
        return on_gradient(s, p, ev->imm);
    case SHOAL_EV_RECV:
        return on_message(s, p, ev->data, ev->len);
    case SHOAL_EV_EP_FAILED:
        if (p->kind == PEER_WORKER && s->w[p->worker].bye)
            return 0;
        if (p->kind == PEER_SERVER || (p->kind == PEER_NEW && p->ep == s->coord))
            return 0; /* a fellow server finished or died: its workers notice */
        if (p->kind == PEER_NEW)
            return 0; /* e.g. a port scanner */
        return sfail(s, "lost worker %d (%s): %s", p->worker, shoal_ep_peer(ev->ep),
                     ev->reason);
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
    p->next = s->peers;
    s->peers = p;
    shoal_ep_set_user(ep, p);
    return p;
}

static bool finished(const struct server *s)
{
    return s->job_known && s->byes == s->W;
}

static int run(struct server *s)
{
    const struct train_cfg *c = s->c;
    double idle_since = now_s();
    while (!finished(s)) {
        shoal_ep_t *ep;
        while (shoal_accept(s->l, 0, &ep) == 0)
            if (!add_peer(s, ep))
                return sfail(s, "out of memory");
        shoal_event_t ev[64];
        int n = shoal_wait(s->ctx, ev, 64, 20);
        if (n < 0)
            return sfail(s, "transport: %s", shoal_ctx_errmsg(s->ctx));
        for (int i = 0; i < n; i++) {
            int rc = handle(s, &ev[i]);
            if (rc)
                return rc;
        }
        if (n > 0)
            idle_since = now_s();
        else if ((now_s() - idle_since) * 1000 > c->idle_timeout_ms)
            return sfail(s, "no progress for %d ms (%d of %d workers joined, %d finished)",
                         c->idle_timeout_ms, s->hellos, s->W, s->byes);
    }
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
    rc = run(s);
    if (rc == 0 && !c->quiet && s->t_last > s->t_first) {
        double el = s->t_last - s->t_first;
        double rounds = c->mode == PS_BSP ? (double)s->version : (double)s->grads / s->W;
        fprintf(stderr, "shoal-train: server %d: %u updates, %.1f rounds/s, %.0f samples/s "
                "(all workers)\n", s->index, s->version, rounds / el,
                rounds * s->job.batch * s->W / el);
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
    free(s->w);
    free(s->queue);
    free(s->mom);
    if (s->ctx)
        shoal_ctx_destroy(s->ctx);
    return rc ? 1 : 0;
}
