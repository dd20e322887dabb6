/*
 * worker.c -- a shoal-train worker: computes gradients on its data shard
 * and exchanges them with the servers through the PS layer (shoal_ps.h).
 *
 * Memory: the parameter vector (P floats) and the gradient vector (P
 * floats), page aligned, registered once by shoal_ps_create(): gradients
 * go straight from the gradient vector to the servers, and fresh
 * parameters land straight in the parameter vector (no copy here).
 *
 * One iteration: compute the gradient on the next batch (model_grad,
 * OpenBLAS), then shoal_ps_push_pull(), which returns with the fresh
 * parameters.  After a server restart the PS layer may name an earlier
 * iteration; the batches are a function of the iteration, so the worker
 * redoes exactly the work the server lost.
 *
 * Data.  The worker holds only its data shard, and follows each epoch's
 * membership (shard.c).
 */
#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "batch.h"
#include "modelfile.h"
#include "report.h"
#include "shard.h"
#include "train.h"

struct worker {
    const struct train_cfg *c;
    int index;
    shoal_ps_t *ps;
    struct model m;
    float *params, *grad;
    struct shard sh;          /* the data shard held */
    char err[1024];
};

__attribute__((format(printf, 2, 3)))
static int wfail(struct worker *w, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof(w->err), fmt, ap);
    va_end(ap);
    return -EPROTO;
}

static int psfail(struct worker *w, int rc)
{
    snprintf(w->err, sizeof(w->err), "%s", shoal_ps_errmsg(w->ps));
    return rc;
}

/* --overlap: the gradient from @from on is final (model_backward_cb). */
static void push_ready(void *ps, size_t from)
{
    (void)shoal_ps_push_ready(ps, from); /* failures surface at the push-pull */
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}


/* Peak resident memory and what it is made of: the data this worker holds,
 * the parameters and gradient, and the rest (libraries, transport buffers,
 * batch and model work space). */
static void report_memory(const struct worker *w, const struct dataset *train,
                          const struct dataset *test)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru))
        return;
    const double mb = 1e6;
    double peak = (double)ru.ru_maxrss * 1024.0 / mb;
    double shard = (double)data_bytes(train), tst = (double)data_bytes(test);
    double model = 2.0 * (double)w->m.nparams * sizeof(float);
    fprintf(stderr, "shoal-train: worker %d: peak memory %.0f MB = data shard %.0f MB (%zu "
            "samples) + test set %.0f MB + parameters and gradient %.1f MB + %.0f MB other\n",
            w->index, peak, shard / mb, train->n, tst / mb, model / mb,
            peak - (shard + tst + model) / mb);
}

int worker_main(const struct train_cfg *c)
{
    struct worker W = {.c = c, .index = c->rank - c->servers};
    struct worker *w = &W;
    struct dataset train = {0}, test = {0};
    struct model_ws ws = {0};
    struct batcher bt = {0};
    struct report rep;
    bool rep_open = false;
    float *x = NULL, *rounds = NULL;
    int32_t *y = NULL;
    int rc;

    rc = train_load_data(c, w->index, c->workers, &train, w->index == 0 ? &test : NULL, NULL,
                         w->err, sizeof(w->err));
    if (rc)
        goto out;
    w->sh = (struct shard){.index = w->index, .shard = w->index, .shards = c->workers,
                           .member = true};
    rc = model_init(&w->m, train.dim, c->hidden, c->nhidden, train.classes);
    if (rc) {
        wfail(w, "bad model shape");
        goto out;
    }
    int iters = train_iters_per_epoch(c, train.total / (size_t)c->workers);
    if (iters < 1) {
        rc = wfail(w, "a shard of %zu samples holds no batch of %d", train.total / c->workers,
                   c->batch);
        goto out;
    }
    w->params = train_alloc_floats(w->m.nparams);
    w->grad = train_alloc_floats(w->m.nparams);
    x = malloc((size_t)c->batch * (size_t)train.dim * sizeof(float));
    y = malloc((size_t)c->batch * sizeof(int32_t));
    if (!w->params || !w->grad || !x || !y || model_ws_init(&ws, &w->m, c->batch) ||
        batcher_init(&bt, &train, c->seed, w->index)) {
        rc = wfail(w, "out of memory");
        goto out;
    }
    /* Every worker starts from the same parameters (element i depends only
     * on the seed); the servers take theirs from the first worker. */
    model_init_params(&w->m, w->params, c->seed);
    shoal_ps_config_t pc;
    train_ps_config(c, w->m.nparams, iters, &pc);
    model_describe(&w->m, pc.job.label, sizeof(pc.job.label));
    shoal_ps_tensor_t tensors[2 * MODEL_MAX_LAYERS];
    char names[2 * MODEL_MAX_LAYERS][16];
    int nt = 0;
    for (int l = 0; l < w->m.nlayers; l++) {
        snprintf(names[nt], sizeof(names[nt]), "w%d", l);
        tensors[nt] = (shoal_ps_tensor_t){names[nt], (size_t)w->m.dims[l] * (size_t)w->m.dims[l + 1]};
        nt++;
        snprintf(names[nt], sizeof(names[nt]), "b%d", l);
        tensors[nt] = (shoal_ps_tensor_t){names[nt], (size_t)w->m.dims[l + 1]};
        nt++;
    }
    if ((rc = shoal_ps_create(&pc, tensors, nt, w->params, w->grad, &w->ps, w->err,
                              sizeof(w->err))))
        goto out;
    train_place_compute(shoal_ps_ctx(w->ps), c);
    if ((rc = shoal_ps_join(w->ps))) {
        psfail(w, rc);
        goto out;
    }

    char label[SHOAL_PS_LABEL_MAX + 64], desc[SHOAL_PS_LABEL_MAX];
    model_describe(&w->m, desc, sizeof(desc));
    snprintf(label, sizeof(label), "%s %s, %d workers", desc, shoal_ps_mode_name(c->mode),
             c->workers);
    if (w->index == 0) {
        size_t push, pull;
        char cz[48];
        shoal_ps_wire_bytes(&pc.job, w->m.nparams, c->servers, &push, &pull);
        fprintf(stderr, "shoal-train: compression %s: %zu bytes pushed and %zu pulled per worker "
                "per iteration (fp32: %zu each way)\n",
                shoal_ps_compress_name(&pc.job, cz, sizeof(cz)), push, pull,
                w->m.nparams * sizeof(float));
        if ((rc = report_open(&rep, c->metrics, c->log_interval, c->quiet,
                              shoal_ps_describe(w->ps), label, c->epochs, iters, c->workers,
                              c->batch, 1, w->err, sizeof(w->err))))
            goto out;
        rep_open = true;
        fprintf(stderr, "shoal-train: %s, %zu parameters, %d servers%s, batch %d per worker, "
                "%d iterations per epoch, over %s (OpenBLAS %s, %d thread%s; placement: %s)\n",
                label, w->m.nparams, c->servers, c->colocated ? " (co-located)" : "", c->batch,
                iters, shoal_ps_describe(w->ps),
                openblas_get_corename(), openblas_get_num_threads(),
                openblas_get_num_threads() == 1 ? "" : "s",
                train_placement(shoal_ps_ctx(w->ps)));
    }
    double acc = 0, tloss = 0;
    const uint32_t total = (uint32_t)iters * (uint32_t)c->epochs;
    uint32_t timed = 0;
    /* Worker 0 times every parameter round: push, update, fresh slice back. */
    rounds = w->index == 0 ? malloc((size_t)total * sizeof(float)) : NULL;
    int epoch = -1;
    for (uint32_t k = shoal_ps_iteration(w->ps); k < total; k = shoal_ps_iteration(w->ps)) {
        const int e = (int)(k / (uint32_t)iters), t = (int)(k % (uint32_t)iters);
        if (e != epoch) {
            if ((rc = shard_enter_epoch(c, w->ps, &w->sh, e, &train, &bt, w->err,
                                        sizeof(w->err))))
                goto out;
            if (shoal_ps_iteration(w->ps) != k) { /* reconnected meanwhile */
                epoch = -1;
                continue;
            }
            batcher_epoch(&bt, e);
            epoch = e;
        }
        float loss = 0;
        if (!c->bench_rounds) {
            batcher_fill(&bt, t, c->batch, x, y);
            loss = c->overlap ? model_grad_cb(&w->m, w->params, w->grad, x, y, c->batch, &ws,
                                              push_ready, w->ps)
                              : model_grad(&w->m, w->params, w->grad, x, y, c->batch, &ws);
        }
        if ((rc = shoal_ps_push_pull_at(w->ps, k)) && rc != -ESTALE) {
            psfail(w, rc);
            goto out;
        }
        rc = 0; /* -ESTALE: reconnected while computing; redo the iteration it names */
        if (shoal_ps_iteration(w->ps) != k + 1) {
            /* A server was lost and the job continues elsewhere (the
             * batches follow from the iteration): the epoch's membership
             * again, from server 0. */
            epoch = -1;
            continue;
        }
        if (rounds && timed < total && (!c->bench_rounds || k >= TRAIN_BENCH_WARMUP))
            rounds[timed++] = (float)shoal_ps_last_round_us(w->ps);
        if (rep_open)
            report_step(&rep, e, t, loss, (long)(k + 1) * c->batch * c->workers);
        if (rep_open && (k + 1) % (uint32_t)iters == 0 && !c->bench_rounds) {
            size_t ok = 0;
            tloss = train_eval(&w->m, w->params, &test, &ok, &ws);
            acc = test.n ? (double)ok / (double)test.n : 0.0;
            report_epoch(&rep, e, acc, tloss);
        }
    }
    if ((rc = shoal_ps_finish(w->ps))) {
        psfail(w, rc);
        goto out;
    }
    if (rep_open) {
        if (rounds && timed > 0) {
            qsort(rounds, timed, sizeof(float), cmp_float);
            fprintf(stderr, "parameter round (push, update, parameters back; %zu bytes each "
                    "way): median %.0f us, p99 %.0f us over %u rounds\n",
                    w->m.nparams * sizeof(float), rounds[timed / 2],
                    rounds[(size_t)timed * 99 / 100], timed);
        }
        uint64_t pushed, early;
        shoal_ps_pushed_bytes(w->ps, &pushed, &early);
        if (c->overlap)
            fprintf(stderr, "overlap: %.1f%% of the gradient's bytes went during backward\n",
                    pushed ? 100.0 * (double)early / (double)pushed : 0.0);
        if (!c->bench_rounds)
            fprintf(stderr, "final test accuracy: %.2f%%\n", 100.0 * acc);
        if (c->save[0] && (rc = modelfile_save(c->save, &w->m, w->params, w->err,
                                               sizeof(w->err))))
            goto out;
        if (c->save[0])
            fprintf(stderr, "model saved to %s\n", c->save);
    }
out:
    if (rep_open) {
        char e2[512];
        if (report_close(&rep, e2, sizeof(e2)) && !rc) {
            snprintf(w->err, sizeof(w->err), "%s", e2);
            rc = -EIO;
        }
    }
    if (rc)
        fprintf(stderr, "shoal-train: worker %d: %s\n", w->index, w->err);
    else
        report_memory(w, &train, &test);
    shoal_ps_destroy(w->ps);
    free(rounds);
    batcher_free(&bt);
    model_ws_free(&ws);
    free(x);
    free(y);
    free(w->params);
    free(w->grad);
    data_free(&train);
    data_free(&test);
    return rc ? 1 : 0;
}
