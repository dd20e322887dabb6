/*
 * stage.c -- a worker that is one stage of a pipeline replica (--stages
 * K > 1): it holds the parameters of its consecutive layers only (layout.h)
 * and trains them as parameter group `stage` of the PS layer, with the
 * stage's D replicas as the group's workers.
 *
 * GPipe schedule.  A replica's batch of b rows is cut into M micro-batches
 * of b/M.  Every stage runs all M forwards (as its input arrives), then
 * all M backwards, accumulating its parameter gradient over them, then
 * pushes it and pulls its fresh parameters (shoal_ps_push_pull), all while
 * its neighbours work on other micro-batches.  Stage 0 reads the data of
 * its replica; the labels ride with the activations to the last stage,
 * which computes the loss.  The loss of each row is scaled by 1/b, so the
 * sum over micro-batches is the batch's mean gradient and BSP with D
 * replicas equals single-process SGD on the same D x b rows.
 *
 * Memory and one-sided traffic (stage s, input width i, output width o):
 *
 *   inbox  M slots [b/M x i floats][b/M labels]   s > 0, remote-writable:
 *          stage s-1 puts micro-batch m's activations into slot m; the
 *          slot is also s's stash of that input until its backward
 *   out    2 slots [b/M x o][b/M labels]          s < K-1: s computes its
 *          last layer's output straight into a slot and puts it from there
 *   gin    2 slots b/M x o                        s < K-1, remote-writable:
 *          the gradient of that output, from s+1
 *   gout   2 slots b/M x i                        s > 0: s computes the
 *          gradient of its input straight into a slot and puts it to s-1
 *   act    b x width of each inner layer          the activations between
 *          its own layers (last stage: also the class scores)
 *
 * Every put carries an immediate (pipe_proto.h) and starts from a
 * registered buffer: nothing is copied on the way (only the labels, 4
 * bytes a row, are copied from a stage's inbox to its out slot).  No slot
 * is written while its reader may still read it:
 *   - an inbox slot is written once per step; the next step's write comes
 *     after the writer received every gradient of this step, and a stage
 *     sends micro-batch m's gradient only after its last read of slot m;
 *   - an out or gout slot is rewritten only after its previous put
 *     completed (double buffering: the next micro-batch is computed into
 *     the other slot meanwhile);
 *   - a gin slot is written only with a credit: its reader sends CREDIT
 *     when it is done with a gradient, and the writer holds two.
 *   - evaluation chunks use the inbox slots with credits as well.
 *
 * Steps.  The replica's work is numbered: step j < total trains iteration
 * j; before it, replica 0 evaluates the test set through the pipeline if
 * j ends an epoch; step `total` evaluates, gathers the model (--save) in
 * the last stage, and ends the chain (DONE up, EXIT down).  A stage whose
 * PS iteration is past j (it pushed j before a failure made the replica
 * repeat it) runs j without pushing: it only feeds its neighbours.
 *
 * Failures: the replica's stages form a chain that recovers together
 * (chain.c).  The PS layer applies each stage's gradient of an iteration
 * once: a stage that already pushed the step the chain agreed on runs it
 * without pushing.  Meanwhile the other replicas go on (async, ssp up to
 * the staleness bound) or wait for this one (bsp: every round needs every
 * live replica).
 *
 * Threads: one of its own.  The stage polls its own libshoal context (not
 * the PS handle's, which its keeper thread uses) between micro-batches;
 * the context's progress thread (SHOAL_PROGRESS=thread unless set) moves
 * the data while the stage computes.
 */
#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "modelfile.h"
#include "stage.h"

int stage_fail(struct stage *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->err, sizeof(st->err), fmt, ap);
    va_end(ap);
    return -EPROTO;
}

/* ---- setting up: the job, memory ---------------------------------------- */

static float *alloc_floats(struct stage *st, size_t n)
{
    float *p = train_alloc_floats(n);
    if (p)
        st->act_bytes += n * sizeof(float);
    return p;
}

static int reg(struct stage *st, void *addr, size_t len, unsigned access, shoal_mr_t **mr)
{
    int rc = shoal_mr_reg(st->ctx, addr, len, access, mr);
    if (rc)
        return stage_fail(st, "registering %zu bytes: %s", len, shoal_ctx_errmsg(st->ctx));
    return 0;
}

/* The job is known: the model, this stage's layers, every buffer. */
int stage_setup(struct stage *st)
{
    const struct pipe_job *j = &st->job;
    int hidden[MODEL_MAX_LAYERS];
    for (uint32_t l = 1; l < j->nlayers; l++)
        hidden[l - 1] = (int)j->dims[l];
    if (model_init(&st->whole, (int)j->dims[0], hidden, (int)j->nlayers - 1,
                   (int)j->dims[j->nlayers]))
        return stage_fail(st, "bad model shape");
    layout_split(&st->lo, &st->whole, st->K, st->D, st->M);
    layout_stage_model(&st->lo, &st->whole, st->s, &st->m);
    const struct model *m = &st->m;
    st->in_w = m->dims[0];
    st->out_w = m->dims[m->nlayers];
    st->iters = (int)j->iters_per_epoch;
    st->total = j->iters_per_epoch * j->epochs;
    const size_t mb = (size_t)st->mb, b = (size_t)st->b;
    st->in_slot = mb * ((size_t)st->in_w + 1) * 4;
    st->out_slot = mb * ((size_t)st->out_w + 1) * 4;
    int widest = 1;
    for (int l = 0; l <= m->nlayers; l++)
        widest = m->dims[l] > widest ? m->dims[l] : widest;
    st->params = train_alloc_floats(m->nparams);
    st->grad = train_alloc_floats(m->nparams);
    if (!st->params || !st->grad)
        return stage_fail(st, "out of memory");
    for (int l = 0; l < m->nlayers; l++)
        if (l + 1 < m->nlayers || st->s == st->K - 1)
            if (!(st->act[l] = alloc_floats(st, b * (size_t)m->dims[l + 1])))
                return stage_fail(st, "out of memory");
    for (int i = 0; i < 2; i++)
        if (!(st->tmp[i] = alloc_floats(st, mb * (size_t)widest)))
            return stage_fail(st, "out of memory");
    if (!(st->ones = alloc_floats(st, mb)))
        return stage_fail(st, "out of memory");
    for (size_t i = 0; i < mb; i++)
        st->ones[i] = 1.0f;
    int rc;
    if (st->s > 0) {
        st->inbox = (uint8_t *)alloc_floats(st, (size_t)st->M * st->in_slot / 4);
        st->gout = alloc_floats(st, 2 * mb * (size_t)st->in_w);
        if (!st->inbox || !st->gout)
            return stage_fail(st, "out of memory");
        if ((rc = reg(st, st->inbox, (size_t)st->M * st->in_slot, SHOAL_ACCESS_REMOTE_WRITE,
                      &st->inbox_mr)) ||
            (rc = reg(st, st->gout, 2 * mb * (size_t)st->in_w * 4, 0, &st->gout_mr)))
            return rc;
    }
    if (st->s < st->K - 1) {
        st->out = (uint8_t *)alloc_floats(st, 2 * st->out_slot / 4);
        st->gin = alloc_floats(st, 2 * mb * (size_t)st->out_w);
        if (!st->out || !st->gin)
            return stage_fail(st, "out of memory");
        if ((rc = reg(st, st->out, 2 * st->out_slot, 0, &st->out_mr)) ||
            (rc = reg(st, st->gin, 2 * mb * (size_t)st->out_w * 4, SHOAL_ACCESS_REMOTE_WRITE,
                      &st->gin_mr)))
            return rc;
    } else {
        if (!(st->dl = alloc_floats(st, mb * (size_t)st->out_w)))
            return stage_fail(st, "out of memory");
        if (st->r == 0 && model_ws_init(&st->ews, m, st->mb))
            return stage_fail(st, "out of memory");
    }
    /* Every replica starts from the same parameters: its slice of the
     * whole model's, element i a function of (seed, i). */
    model_init_params(m, st->params, st->c->seed);
    char layers[128], by[32];
    layout_stage_layers(&st->lo, &st->whole, st->s, layers, sizeof(layers));
    fprintf(stderr, "shoal-train: worker %d: replica %d of %d, stage %d of %d: %s, %zu "
            "parameters (%s)\n", st->w, st->r, st->D, st->s, st->K, layers, m->nparams,
            layout_bytes((double)m->nparams * sizeof(float), by, sizeof(by)));
    st->have_job = true;
    return 0;
}

static bool act_in(const struct stage *st, uint32_t m) { return st->acts_in > st->acts_used + m; }
static bool grad_in(const struct stage *st, uint32_t m)
{
    return st->grads_in > st->grads_used + m;
}
static bool out_free(const struct stage *st, uint32_t slot) { return !st->out_busy[slot]; }
static bool eval_slot_free(const struct stage *st, uint32_t slot)
{
    return !st->out_busy[slot] && st->credits_eval > 0;
}
static bool eval_idle(const struct stage *st, uint32_t u)
{
    (void)u;
    return st->credits_eval == st->M;
}
static bool gout_free(const struct stage *st, uint32_t slot)
{
    return !st->gout_busy[slot] && st->credits_grad > 0;
}
static bool chunk_or_end(const struct stage *st, uint32_t i)
{
    return st->evals_in > i || (st->eval_ends && st->eval_chunks == i);
}
static bool gather_ready(const struct stage *st, uint32_t u)
{
    (void)u;
    return (st->s == 0 || st->gather_in) && (st->s == st->K - 1 || st->grmr);
}
static bool gather_sent(const struct stage *st, uint32_t u)
{
    (void)u;
    return !st->gather_busy;
}
static bool got_done(const struct stage *st, uint32_t u)
{
    (void)u;
    return st->done_down;
}
static bool got_exit(const struct stage *st, uint32_t u)
{
    (void)u;
    return st->exit_up;
}

/* ---- the work ------------------------------------------------------------- */

/* Layer outputs of micro-batch @mi (or evaluation rows when @eval). */
static void micro_acts(struct stage *st, int mi, float **a, int out_slot)
{
    const struct model *m = &st->m;
    for (int l = 0; l < m->nlayers; l++)
        a[l] = st->act[l] ? st->act[l] + (size_t)mi * st->mb * (size_t)m->dims[l + 1] : NULL;
    if (st->s < st->K - 1)
        a[m->nlayers - 1] = out_slot >= 0 ? out_act(st, out_slot) : NULL;
}

/* Forward one micro-batch (or chunk) of @rows rows from @in into the out
 * slot (stages before the last) and put it to the stage after. */
static int forward_one(struct stage *st, int mi, const float *in, const int32_t *lab,
                       enum pipe_kind kind, uint32_t index, uint32_t dest)
{
    int rc;
    int slot = -1;
    if (st->s < st->K - 1) {
        slot = (int)(st->out_seq & 1);
        if ((rc = chain_wait(st, kind == PIPE_EVAL ? eval_slot_free : out_free, (uint32_t)slot,
                           "an output slot")))
            return rc;
    }
    float *a[MODEL_MAX_LAYERS];
    micro_acts(st, mi, a, slot);
    double t = now_s();
    model_forward(&st->m, st->params, in, st->mb, a);
    st->busy += now_s() - t;
    if (st->s == st->K - 1)
        return 0;
    memcpy(out_lab(st, slot), lab, (size_t)st->mb * sizeof(int32_t));
    st->out_busy[slot] = true;
    st->out_seq++;
    if (kind == PIPE_EVAL)
        st->credits_eval--;
    return chain_put(st, &st->down, st->out_mr, (size_t)slot * st->out_slot, st->down.rmr,
               (size_t)dest * st->out_slot, st->out_slot, pipe_imm(kind, index),
               (uint64_t)kind << 8 | (uint64_t)slot);
}

static bool stats_due(const struct stage *st) { return st->s < st->K - 1; }

/* Train step @j: all forwards, all backwards, push (unless already
 * pushed before a reset). */
static int train_step(struct stage *st, uint32_t j, float *loss_out)
{
    const struct train_cfg *c = st->c;
    const int M = st->M, mb = st->mb;
    const int e = (int)(j / (uint32_t)st->iters), t = (int)(j % (uint32_t)st->iters);
    int rc;
    uint32_t k = shoal_ps_iteration(st->ps);
    if (k > j) {
        /* Already pushed, says the handle; make sure a restarted server
         * does not need it again (a push skipped wrongly would hold up a
         * bsp round for good). */
        if ((rc = stage_refresh(st)))
            return rc;
        k = shoal_ps_iteration(st->ps);
    }
    if (k < j) /* the servers went back (a restart from a checkpoint) */
        return chain_went_back(st, j, k);
    bool push = k == j;
    if (st->s == 0) {
        if (e != st->epoch) {
            rc = shard_enter_epoch(c, st->ps, &st->sh, e, &st->train, &st->bt, st->err,
                                   sizeof(st->err));
            if (rc)
                return rc;
            batcher_epoch(&st->bt, e);
            st->epoch = e;
        }
        batcher_fill(&st->bt, t, st->b, st->x, st->y);
    }
    /* the evaluation chunks of before must all be read: they used the inbox */
    if (st->s < st->K - 1 && (rc = chain_wait(st, eval_idle, 0, "the evaluation to drain")))
        return rc;
    /* all forwards */
    for (int mi = 0; mi < M; mi++) {
        const float *in;
        const int32_t *lab;
        if (st->s == 0) {
            in = st->x + (size_t)mi * mb * (size_t)st->in_w;
            lab = st->y + (size_t)mi * mb;
        } else {
            if ((rc = chain_wait(st, act_in, (uint32_t)mi, "activations from the stage before")))
                return rc;
            in = inbox_act(st, mi);
            lab = inbox_lab(st, mi);
        }
        if ((rc = forward_one(st, mi, in, lab, PIPE_ACT, (uint32_t)mi, (uint32_t)mi)))
            return rc;
        if ((rc = chain_pump(st, 0)))
            return rc;
    }
    if (stats_due(st)) {
        struct pipe_msg sm = {.type = PIPE_STATS};
        sm.u.stats.iteration = j;
        sm.u.stats.n = (uint32_t)st->s + 1;
        st->busy_all[st->s] = st->busy;
        memcpy(sm.u.stats.busy, st->busy_all, sizeof(double) * (size_t)(st->s + 1));
        chain_send(st, &st->down, &sm);
    }
    /* all backwards */
    double loss = 0;
    for (int mi = 0; mi < M; mi++) {
        const float *in = st->s == 0 ? st->x + (size_t)mi * mb * (size_t)st->in_w
                                     : inbox_act(st, mi);
        float *a[MODEL_MAX_LAYERS];
        micro_acts(st, mi, a, -1);
        const float *d;
        if (st->s == st->K - 1) {
            double t0 = now_s();
            loss += model_loss_grad(a[st->m.nlayers - 1], inbox_lab(st, mi), mb, st->out_w,
                                    1.0f / (float)st->b, st->dl);
            st->busy += now_s() - t0;
            d = st->dl;
        } else {
            if ((rc = chain_wait(st, grad_in, (uint32_t)mi, "a gradient from the stage after")))
                return rc;
            d = st->gin + (size_t)((st->grads_used + (uint32_t)mi) & 1) * mb * (size_t)st->out_w;
        }
        int gslot = -1;
        float *din = NULL;
        if (st->s > 0) {
            gslot = (int)(st->gout_seq & 1);
            if ((rc = chain_wait(st, gout_free, (uint32_t)gslot, "a gradient slot of the stage "
                               "before")))
                return rc;
            din = st->gout + (size_t)gslot * mb * (size_t)st->in_w;
        }
        double t0 = now_s();
        model_backward(&st->m, st->params, st->grad, mi ? 1.0f : 0.0f, in, a, d, din, st->tmp,
                       st->ones, mb);
        st->busy += now_s() - t0;
        if (st->s < st->K - 1) { /* done with that gradient slot */
            struct pipe_msg cm = {.type = PIPE_CREDIT};
            cm.u.kind = PIPE_GRAD;
            chain_send(st, &st->down, &cm);
        }
        if (st->s > 0) { /* done with inbox slot mi: its gradient goes back */
            size_t len = (size_t)mb * (size_t)st->in_w * sizeof(float);
            st->gout_busy[gslot] = true;
            st->credits_grad--;
            rc = chain_put(st, &st->up, st->gout_mr, (size_t)gslot * len, st->up.rmr,
                     (size_t)(st->gout_seq & 1) * len, len, pipe_imm(PIPE_GRAD, (uint32_t)mi),
                     (uint64_t)PIPE_GRAD << 8 | (uint64_t)gslot);
            st->gout_seq++;
            if (rc)
                return rc;
        }
        if ((rc = chain_pump(st, 0)))
            return rc;
    }
    st->acts_used += st->s > 0 ? (uint32_t)M : 0;
    st->grads_used += st->s < st->K - 1 ? (uint32_t)M : 0;
    if (push) {
        rc = shoal_ps_push_pull_at(st->ps, j);
        if (rc && rc != -ESTALE) {
            snprintf(st->err, sizeof(st->err), "%s", shoal_ps_errmsg(st->ps));
            return rc;
        }
        /* -ESTALE: the handle reconnected during the step and the servers
         * went back; nothing was pushed */
        if (shoal_ps_iteration(st->ps) != j + 1) {
            /* a server went back to a checkpoint: the replica resyncs */
            fprintf(stderr, "shoal-train: worker %d: the servers continue at iteration %u; "
                    "the replica starts over from there\n", st->w, shoal_ps_iteration(st->ps));
            chain_reset(st, st->gen + 1);
        }
    }
    *loss_out = (float)(loss / st->b);
    return 0;
}

/* Replica 0 evaluates the test set through the pipeline after epoch @e. */
static int eval_epoch(struct stage *st, int e)
{
    const int mb = st->mb;
    int rc;
    if (st->s == 0) {
        const struct dataset *d = &st->test;
        const size_t dim = (size_t)d->dim;
        uint32_t chunks = 0;
        for (size_t at = 0; at < d->n; at += (size_t)mb, chunks++) {
            size_t n = d->n - at < (size_t)mb ? d->n - at : (size_t)mb;
            double t0 = now_s();
            for (size_t r = 0; r < (size_t)mb; r++) {
                if (r < n) {
                    data_row(d, at + r, st->x + r * dim);
                    st->y[r] = d->y[at + r];
                } else { /* padding: no label */
                    memset(st->x + r * dim, 0, dim * sizeof(float));
                    st->y[r] = -1;
                }
            }
            st->busy += now_s() - t0;
            rc = forward_one(st, 0, st->x, st->y, PIPE_EVAL, chunks, chunks % (uint32_t)st->M);
            if (rc)
                return rc;
            if ((rc = chain_pump(st, 0)))
                return rc;
        }
        struct pipe_msg em = {.type = PIPE_EVAL_END};
        em.u.chunks = chunks;
        chain_send(st, &st->down, &em);
        return 0;
    }
    double loss = 0;
    size_t ok = 0, n = 0;
    uint32_t i = 0; /* chunks count from 0 in each evaluation */
    for (;; i++) {
        if ((rc = chain_wait(st, chunk_or_end, i, "evaluation data from the stage before")))
            return rc;
        if (st->evals_in <= i)
            break; /* all came */
        int slot = (int)(i % (uint32_t)st->M);
        const float *in = inbox_act(st, slot);
        const int32_t *lab = inbox_lab(st, slot);
        if (st->s < st->K - 1) {
            if ((rc = forward_one(st, 0, in, lab, PIPE_EVAL, i, i % (uint32_t)st->M)))
                return rc;
        } else {
            int valid = 0;
            while (valid < mb && lab[valid] >= 0)
                valid++;
            size_t right = 0;
            double t0 = now_s();
            loss += (double)model_eval(&st->m, st->params, in, lab, (size_t)valid, &right,
                                       &st->ews) * valid;
            st->busy += now_s() - t0;
            ok += right;
            n += (size_t)valid;
        }
        struct pipe_msg cm = {.type = PIPE_CREDIT};
        cm.u.kind = PIPE_EVAL;
        chain_send(st, &st->up, &cm);
    }
    st->evals_in = 0;
    st->eval_ends = 0;
    if (st->s < st->K - 1) {
        struct pipe_msg em = {.type = PIPE_EVAL_END};
        em.u.chunks = i;
        chain_send(st, &st->down, &em);
        return 0;
    }
    st->acc = n ? (double)ok / (double)n : 0.0;
    st->tloss = n ? loss / (double)n : 0.0;
    if (st->rep_open && e > st->reported_epoch) {
        report_epoch(&st->rep, e, st->acc, st->tloss);
        st->reported_epoch = e;
    }
    return 0;
}

/* --save: the model is gathered towards the last stage, each stage
 * appending its own layers, and saved there. */
static int gather(struct stage *st)
{
    int rc;
    const size_t have = st->m.base + st->m.nparams; /* floats up to and with ours */
    if (!st->gbuf) {
        if (!(st->gbuf = train_alloc_floats(have)))
            return stage_fail(st, "out of memory");
        if ((rc = reg(st, st->gbuf, have * sizeof(float), SHOAL_ACCESS_REMOTE_WRITE,
                      &st->gbuf_mr)))
            return rc;
    }
    if (st->s > 0) {
        struct pipe_msg gm = {.type = PIPE_GATHER};
        if ((rc = chain_pack(st, st->gbuf_mr, gm.u.gather.desc, &gm.u.gather.desc_len)))
            return rc;
        chain_send(st, &st->up, &gm);
    }
    if ((rc = chain_wait(st, gather_ready, 0, "the gathered model")))
        return rc;
    memcpy(st->gbuf + st->m.base, st->params, st->m.nparams * sizeof(float));
    if (st->s < st->K - 1) {
        st->gather_busy = true;
        if ((rc = chain_put(st, &st->down, st->gbuf_mr, 0, st->grmr, 0, have * sizeof(float),
                      pipe_imm(PIPE_MODEL, 0), (uint64_t)PIPE_MODEL << 8)))
            return rc;
        return chain_wait(st, gather_sent, 0, "the gathered model to leave");
    }
    if ((rc = modelfile_save(st->c->save, &st->whole, st->gbuf, st->err, sizeof(st->err))))
        return rc;
    fprintf(stderr, "model saved to %s\n", st->c->save);
    return 0;
}

/* Step `total`: the last evaluation (before this), --save, then the chain
 * ends together: DONE climbs from the last stage, EXIT comes down. */
static int finish_job(struct stage *st)
{
    int rc;
    if (st->r == 0 && st->c->save[0] && (rc = gather(st)))
        return rc;
    st->finishing = true;
    struct pipe_msg m = {0};
    if (st->s < st->K - 1 && (rc = chain_wait(st, got_done, 0, "the stages after to finish")))
        return rc;
    if (st->s > 0) {
        m.type = PIPE_DONE;
        chain_send(st, &st->up, &m);
        if ((rc = chain_wait(st, got_exit, 0, "the stages before to finish")))
            return rc;
    }
    if (st->s < st->K - 1) {
        /* the busy times as they ended, for the last stage's summary */
        struct pipe_msg sm = {.type = PIPE_STATS};
        sm.u.stats.iteration = st->step;
        sm.u.stats.n = (uint32_t)st->s + 1;
        st->busy_all[st->s] = st->busy;
        memcpy(sm.u.stats.busy, st->busy_all, sizeof(double) * (size_t)(st->s + 1));
        chain_send(st, &st->down, &sm);
        m.type = PIPE_EXIT;
        chain_send(st, &st->down, &m);
    }
    st->busy_all[st->s] = st->busy;
    st->finished = true;
    return 0;
}

static int run_step(struct stage *st, uint32_t j)
{
    int rc;
    if (st->r == 0 && j > 0 && j % (uint32_t)st->iters == 0 &&
        (rc = eval_epoch(st, (int)(j / (uint32_t)st->iters) - 1)))
        return rc;
    if (j == st->total)
        return finish_job(st);
    float loss = 0;
    if ((rc = train_step(st, j, &loss)))
        return rc;
    st->steps_run++;
    if (st->rep_open) {
        st->busy_all[st->s] = st->busy;
        report_busy(&st->rep, st->busy_all);
        report_step(&st->rep, (int)(j / (uint32_t)st->iters), (int)(j % (uint32_t)st->iters),
                    loss, (long)(j + 1) * st->b * st->D);
    }
    return 0;
}

/* ---- the PS handle -------------------------------------------------------- */

static void start_line(struct stage *st);

int stage_refresh(struct stage *st)
{
    int rc = shoal_ps_refresh(st->ps);
    if (rc)
        snprintf(st->err, sizeof(st->err), "%s", shoal_ps_errmsg(st->ps));
    return rc;
}

int stage_join_ps(struct stage *st)
{
    const struct train_cfg *c = st->c;
    shoal_ps_config_t pc;
    train_ps_config(c, st->m.nparams, st->iters, &pc);
    pc.group = st->s;
    pc.group_rank = st->r;
    pc.group_size = st->D;
    pc.job.workers = st->D;
    char desc[SHOAL_PS_LABEL_MAX], layers[64];
    model_describe(&st->whole, desc, sizeof(desc));
    layout_stage_layers(&st->lo, &st->whole, st->s, layers, sizeof(layers));
    snprintf(pc.job.label, sizeof(pc.job.label), "%.60s stage %d of %d: %.40s", desc, st->s,
             st->K, layers);
    shoal_ps_tensor_t tensors[2 * MODEL_MAX_LAYERS];
    char names[2 * MODEL_MAX_LAYERS][16];
    int nt = 0;
    for (int l = 0; l < st->m.nlayers; l++) {
        int gl = st->m.first + l;
        snprintf(names[nt], sizeof(names[nt]), "w%d", gl);
        tensors[nt] = (shoal_ps_tensor_t){names[nt],
                                          (size_t)st->m.dims[l] * (size_t)st->m.dims[l + 1]};
        nt++;
        snprintf(names[nt], sizeof(names[nt]), "b%d", gl);
        tensors[nt] = (shoal_ps_tensor_t){names[nt], (size_t)st->m.dims[l + 1]};
        nt++;
    }
    int rc = shoal_ps_create(&pc, tensors, nt, st->params, st->grad, &st->ps, st->err,
                             sizeof(st->err));
    if (rc)
        return rc;
    train_place_compute(shoal_ps_ctx(st->ps), c);
    if ((rc = shoal_ps_join(st->ps))) {
        snprintf(st->err, sizeof(st->err), "%s", shoal_ps_errmsg(st->ps));
        return rc;
    }
    if (reporter(st))
        start_line(st);
    return 0;
}

static void start_line(struct stage *st)
{
    const struct train_cfg *c = st->c;
    static char label[SHOAL_PS_LABEL_MAX + 256];
    char desc[SHOAL_PS_LABEL_MAX], cut[256] = "", lay[1024];
    model_describe(&st->whole, desc, sizeof(desc));
    for (int s = 0, at = 0; s < st->K; s++) {
        struct model part;
        layout_stage_model(&st->lo, &st->whole, s, &part);
        at += snprintf(cut + at, sizeof(cut) - (size_t)at, "%s", s ? " | " : "");
        for (int l = 0; l <= part.nlayers; l++)
            at += snprintf(cut + at, sizeof(cut) - (size_t)at, l ? "-%d" : "%d", part.dims[l]);
    }
    snprintf(label, sizeof(label), "%s %s, %d replica%s x %d stages (%s)", desc,
             shoal_ps_mode_name(c->mode), st->D, st->D == 1 ? "" : "s", st->K, cut);
    layout_describe(&st->lo, &st->whole, lay, sizeof(lay));
    if (report_open(&st->rep, c->metrics, c->log_interval, c->quiet, shoal_ps_describe(st->ps),
                    label, c->epochs, st->iters, c->workers, st->b * st->D, st->K, st->err,
                    sizeof(st->err)) == 0)
        st->rep_open = true;
    else
        fprintf(stderr, "shoal-train: %s\n", st->err);
    fprintf(stderr, "shoal-train: %s, %zu parameters, %d servers, batch %d per replica in %d "
            "micro-batches of %d, %d iterations per epoch, over %s (OpenBLAS %s, %d thread%s; "
            "placement: %s)\nshoal-train: layout: %s\n", label, st->whole.nparams, c->servers,
            st->b, st->M, st->mb, st->iters, shoal_ps_describe(st->ps),
            openblas_get_corename(), openblas_get_num_threads(),
            openblas_get_num_threads() == 1 ? "" : "s", train_placement(shoal_ps_ctx(st->ps)),
            lay);
}

/* ---- the role --------------------------------------------------------------- */

static int load_first(struct stage *st)
{
    const struct train_cfg *c = st->c;
    int rc = train_load_data(c, st->r, st->D, &st->train, st->r == 0 ? &st->test : NULL, NULL,
                             st->err, sizeof(st->err));
    if (rc)
        return rc;
    st->sh = (struct shard){.index = st->r, .shard = st->r, .shards = st->D, .member = true};
    struct model m;
    if (model_init(&m, st->train.dim, c->hidden, c->nhidden, st->train.classes))
        return stage_fail(st, "bad model shape");
    int iters = train_iters_per_epoch(c, st->train.total / (size_t)st->D);
    if (iters < 1)
        return stage_fail(st, "a replica's shard of %zu samples holds no batch of %d",
                     st->train.total / (size_t)st->D, c->batch);
    struct pipe_job *j = &st->job;
    j->stages = (uint32_t)st->K;
    j->replicas = (uint32_t)st->D;
    j->micro = (uint32_t)st->M;
    j->batch = (uint32_t)st->b;
    j->iters_per_epoch = (uint32_t)iters;
    j->epochs = (uint32_t)c->epochs;
    j->nlayers = (uint32_t)m.nlayers;
    for (int l = 0; l <= m.nlayers; l++)
        j->dims[l] = (uint32_t)m.dims[l];
    if ((rc = stage_setup(st)))
        return rc;
    st->x = malloc((size_t)st->b * (size_t)st->in_w * sizeof(float));
    st->y = malloc((size_t)st->b * sizeof(int32_t));
    if (!st->x || !st->y || batcher_init(&st->bt, &st->train, c->seed, st->r))
        return stage_fail(st, "out of memory");
    st->act_bytes += (size_t)st->b * ((size_t)st->in_w + 1) * sizeof(float);
    return 0;
}

static void report_end(struct stage *st)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return;
    const double mb = 1e6;
    double peak = (double)ru.ru_maxrss * 1024.0 / mb;
    double model = 2.0 * (double)st->m.nparams * sizeof(float);
    double data = (double)data_bytes(&st->train) + (double)data_bytes(&st->test);
    double acts = (double)st->act_bytes;
    fprintf(stderr, "shoal-train: worker %d (replica %d, stage %d): peak memory %.0f MB = "
            "parameters and gradient %.1f MB (%zu parameters) + activations and pipeline "
            "buffers %.1f MB + data %.0f MB + %.0f MB other\n", st->w, st->r, st->s, peak,
            model / mb, st->m.nparams, acts / mb, data / mb, peak - (model + acts + data) / mb);
    if (st->steps_run)
        fprintf(stderr, "shoal-train: worker %d: sent %.2f MB per iteration to its "
                "neighbours, pushed %.2f MB to the servers; busy %.1f s\n", st->w,
                (double)st->bytes_sent / st->steps_run / mb,
                (double)st->m.nparams * sizeof(float) / mb, st->busy);
}

static void free_all(struct stage *st)
{
    chain_drop(st, &st->pending);
    chain_drop(st, &st->up);
    chain_drop(st, &st->down);
    if (st->lis)
        shoal_listener_close(st->lis);
    shoal_mr_t *mrs[] = {st->inbox_mr, st->out_mr, st->gin_mr, st->gout_mr, st->gbuf_mr};
    for (size_t i = 0; i < sizeof(mrs) / sizeof(mrs[0]); i++)
        if (mrs[i])
            shoal_mr_dereg(mrs[i]);
    if (st->ctx)
        shoal_ctx_destroy(st->ctx);
    shoal_ps_destroy(st->ps);
    free(st->inbox);
    free(st->out);
    free(st->gin);
    free(st->gout);
    free(st->gbuf);
    free(st->params);
    free(st->grad);
    for (int l = 0; l < MODEL_MAX_LAYERS; l++)
        free(st->act[l]);
    free(st->tmp[0]);
    free(st->tmp[1]);
    free(st->ones);
    free(st->dl);
    free(st->x);
    free(st->y);
    model_ws_free(&st->ews);
    batcher_free(&st->bt);
    data_free(&st->train);
    data_free(&st->test);
}

int stage_main(const struct train_cfg *c)
{
    static struct stage S; /* large; one per process */
    struct stage *st = &S;
    memset(st, 0, sizeof(*st));
    st->c = c;
    st->w = c->rank - c->servers;
    st->K = c->stages;
    st->D = c->workers / c->stages;
    st->s = st->w % st->K;
    st->r = st->w / st->K;
    st->M = c->micro;
    st->b = c->batch;
    st->mb = c->batch / c->micro;
    st->epoch = -1;
    st->reported_epoch = -1;
    st->incarnation = (uint64_t)time(NULL) << 32 ^ (uint64_t)getpid();
    st->up.name = "the stage before";
    st->down.name = "the stage after";
    st->pending.name = "a connecting stage";
    st->syncing = true;
    chain_addr_path(c, st->w + 1, st->down_file, sizeof(st->down_file));

    /* The data between stages moves while the stage computes only if
     * someone progresses the context: its own thread, unless the user
     * chose (as for the PS handle's context). */
    shoal_config_t cfg;
    shoal_config_init(&cfg);
    if (!getenv("SHOAL_PROGRESS"))
        cfg.progress = SHOAL_PROGRESS_THREAD;
    int rc = shoal_config_from_env(&cfg, st->err, sizeof(st->err));
    if (rc == 0 && (rc = shoal_ctx_create(&cfg, &st->ctx)))
        stage_fail(st, "cannot open a transport: %s", shoal_strerror(rc));
    if (rc == 0 && st->s > 0)
        rc = chain_listen(st);
    if (rc == 0 && st->s == 0) {
        rc = load_first(st);
        if (rc == 0)
            rc = stage_join_ps(st);
    }
    while (rc == 0 && !st->finished) {
        if (st->syncing) {
            rc = chain_sync(st);
            continue;
        }
        rc = run_step(st, st->step);
        if (rc == -ERESTART) {
            rc = 0;
            continue;
        }
        if (rc == 0 && !st->syncing && !st->finished)
            st->step++;
    }
    if (rc == 0) {
        chain_close(st);
        if (st->rep_open) {
            const double wall = now_s() - st->rep.t0;
            /* (one write per line: the ranks of a job often share stderr) */
            char line[1024];
            int at = snprintf(line, sizeof(line), "stage busy time over %.1f s:", wall);
            for (int s = 0; s < st->K; s++)
                at += snprintf(line + at, sizeof(line) - (size_t)at, " stage %d %.1f s (%.0f%%)%s",
                               s, st->busy_all[s], 100.0 * st->busy_all[s] / wall,
                               s + 1 < st->K ? "," : "");
            fprintf(stderr, "final test accuracy: %.2f%%\n%s; GPipe ideal M/(M+K-1) = %.0f%%\n",
                    100.0 * st->acc, line, 100.0 * st->M / (st->M + st->K - 1));
        }
        if ((rc = shoal_ps_finish(st->ps)))
            snprintf(st->err, sizeof(st->err), "%s", shoal_ps_errmsg(st->ps));
    }
    if (st->rep_open) {
        char e2[512];
        if (report_close(&st->rep, e2, sizeof(e2)) && !rc) {
            snprintf(st->err, sizeof(st->err), "%s", e2);
            rc = -EIO;
        }
    }
    if (rc)
        fprintf(stderr, "shoal-train: worker %d (replica %d, stage %d): %s\n", st->w, st->r,
                st->s, st->err);
    else
        report_end(st);
    if (st->addr_file[0])
        unlink(st->addr_file);
    free_all(st);
    return rc ? 1 : 0;
}
