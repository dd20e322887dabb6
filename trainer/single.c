/*
 * single.c -- the whole job in one process, without a network.
 *
 * It emulates W workers' data shards and batches exactly (same files,
 * same shuffles) and takes one SGD step per iteration on their union, the
 * "global batch", with one gradient over all W x batch rows.  That is
 * plain single-process SGD on the batches BSP training sees, so BSP with
 * W workers must end at the same parameters (within float rounding):
 * tests/trainer checks it.  With W = 1 it is simply the local baseline.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "modelfile.h"
#include "report.h"
#include "train.h"

int single_main(const struct train_cfg *c)
{
    const int W = c->workers > 0 ? c->workers : 1;
    struct dataset *shard = calloc((size_t)W, sizeof(*shard));
    struct batcher *bt = calloc((size_t)W, sizeof(*bt));
    struct dataset test = {0};
    struct model m;
    struct model_ws ws = {0};
    struct report rep;
    bool rep_open = false;
    float *p = NULL, *p2 = NULL, *g = NULL, *x = NULL;
    shoal_ps_optim_t *opt = NULL;
    int32_t *y = NULL;
    char err[1024] = "";
    int rc = -ENOMEM;
    if (!shard || !bt)
        goto out;
    for (int w = 0; w < W; w++) {
        rc = train_load_data(c, w, W, &shard[w], w == 0 ? &test : NULL, NULL, err,
                             sizeof(err));
        if (rc)
            goto out;
    }
    if ((rc = model_init(&m, shard[0].dim, c->hidden, c->nhidden, shard[0].classes))) {
        snprintf(err, sizeof(err), "bad model shape");
        goto out;
    }
    int iters = train_iters_per_epoch(c, shard[0].total / (size_t)W);
    if (iters < 1) {
        rc = -EINVAL;
        snprintf(err, sizeof(err), "a shard holds no batch of %d", c->batch);
        goto out;
    }
    const int B = c->batch * W;
    const size_t D = (size_t)shard[0].dim;
    p = malloc(m.nparams * sizeof(float));
    p2 = malloc(m.nparams * sizeof(float));
    g = malloc(m.nparams * sizeof(float));
    x = malloc((size_t)B * D * sizeof(float));
    y = malloc((size_t)B * sizeof(int32_t));
    rc = -ENOMEM;
    if (!p || !p2 || !g || !x || !y || model_ws_init(&ws, &m, B))
        goto out;
    for (int w = 0; w < W; w++)
        if (batcher_init(&bt[w], &shard[w], c->seed, w))
            goto out;
    model_init_params(&m, p, c->seed);
    /* The optimizer the servers run: a BSP job computes this same update. */
    struct train_cfg one = *c;
    one.mode = SHOAL_PS_BSP;
    shoal_ps_config_t pc;
    train_ps_config(&one, m.nparams, iters, &pc);
    pc.job.workers = W;
    if ((rc = shoal_ps_optim_create(&pc.job, m.nparams, &opt)))
        goto out;

    char label[SHOAL_PS_LABEL_MAX + 64], desc[SHOAL_PS_LABEL_MAX];
    model_describe(&m, desc, sizeof(desc));
    snprintf(label, sizeof(label), "%s single process, %d shards", desc, W);
    if ((rc = report_open(&rep, c->metrics, c->log_interval, c->quiet, "no network", label,
                          c->epochs, iters, 1, B, 1, err, sizeof(err))))
        goto out;
    rep_open = true;
    fprintf(stderr, "shoal-train: %s, %zu parameters, global batch %d, %d iterations per "
            "epoch\n", label, m.nparams, B, iters);
    double acc = 0;
    long k = 0;
    for (int e = 0; e < c->epochs; e++) {
        for (int w = 0; w < W; w++)
            batcher_epoch(&bt[w], e);
        for (int t = 0; t < iters; t++, k++) {
            for (int w = 0; w < W; w++)
                batcher_fill(&bt[w], t, c->batch, x + (size_t)w * c->batch * D,
                             y + (size_t)w * c->batch);
            float loss = model_grad(&m, p, g, x, y, B, &ws);
            const float *gs = g;
            shoal_ps_optim_step(opt, (double)k / iters, p2, p, &gs, 1, 1.0f);
            float *tmp = p;
            p = p2;
            p2 = tmp;
            report_step(&rep, e, t, loss, (k + 1) * B);
        }
        size_t ok = 0;
        double tl = train_eval(&m, p, &test, &ok, &ws);
        acc = test.n ? (double)ok / (double)test.n : 0.0;
        report_epoch(&rep, e, acc, tl);
    }
    fprintf(stderr, "final test accuracy: %.2f%%\n", 100.0 * acc);
    rc = 0;
    if (c->save[0] && (rc = modelfile_save(c->save, &m, p, err, sizeof(err))) == 0)
        fprintf(stderr, "model saved to %s\n", c->save);
out:
    if (rep_open) {
        char e2[512];
        if (report_close(&rep, e2, sizeof(e2)) && !rc) {
            snprintf(err, sizeof(err), "%s", e2);
            rc = -EIO;
        }
    }
    if (rc)
        fprintf(stderr, "shoal-train: %s\n", err[0] ? err : "out of memory");
    for (int w = 0; shard && bt && w < W; w++) {
        batcher_free(&bt[w]);
        data_free(&shard[w]);
    }
    data_free(&test);
    model_ws_free(&ws);
    free(shard);
    free(bt);
    free(p);
    free(p2);
    free(g);
    shoal_ps_optim_destroy(opt);
    free(x);
    free(y);
    return rc ? 1 : 0;
}

int eval_main(const struct train_cfg *c, const char *model_file)
{
    struct model m;
    float *p = NULL;
    char err[1024];
    struct dataset train = {0}, test = {0};
    struct model_ws ws = {0};
    int rc = modelfile_load(model_file, &m, &p, err, sizeof(err));
    if (rc == 0)
        rc = train_load_data(c, 0, 1, &train, &test, NULL, err, sizeof(err));
    if (rc == 0 && (test.dim != m.dims[0] || test.classes > m.dims[m.nlayers])) {
        snprintf(err, sizeof(err), "%s: the model takes %d features and %d classes, the test "
                 "data has %d and %d", model_file, m.dims[0], m.dims[m.nlayers], test.dim,
                 test.classes);
        rc = -EINVAL;
    }
    if (rc == 0 && model_ws_init(&ws, &m, 256)) {
        snprintf(err, sizeof(err), "out of memory");
        rc = -ENOMEM;
    }
    if (rc == 0) {
        size_t ok = 0;
        double loss = train_eval(&m, p, &test, &ok, &ws);
        char desc[SHOAL_PS_LABEL_MAX];
        model_describe(&m, desc, sizeof(desc));
        printf("model %s: test accuracy %.2f%% (%zu of %zu), test loss %.4f\n", desc,
               100.0 * (double)ok / (double)test.n, ok, test.n, loss);
    } else {
        fprintf(stderr, "shoal-train: %s\n", err);
    }
    model_ws_free(&ws);
    data_free(&train);
    data_free(&test);
    free(p);
    return rc ? 1 : 0;
}

int compare_main(const char *a, const char *b, double tolerance)
{
    struct model ma, mb;
    float *pa = NULL, *pb = NULL;
    char err[1024];
    int rc = modelfile_load(a, &ma, &pa, err, sizeof(err));
    if (rc == 0)
        rc = modelfile_load(b, &mb, &pb, err, sizeof(err));
    if (rc == 0 && (ma.nlayers != mb.nlayers || ma.nparams != mb.nparams ||
                    memcmp(ma.dims, mb.dims, sizeof(ma.dims)) != 0)) {
        snprintf(err, sizeof(err), "%s and %s have different shapes", a, b);
        rc = -EINVAL;
    }
    if (rc) {
        fprintf(stderr, "shoal-train: %s\n", err);
        free(pa);
        free(pb);
        return 2;
    }
    double maxdiff = 0, maxabs = 0;
    size_t at = 0;
    for (size_t i = 0; i < ma.nparams; i++) {
        double d = fabs((double)pa[i] - (double)pb[i]);
        if (d > maxdiff || d != d) {
            maxdiff = d;
            at = i;
        }
        if (fabs((double)pa[i]) > maxabs)
            maxabs = fabs((double)pa[i]);
    }
    bool same = maxdiff <= tolerance;
    printf("%s vs %s: %zu parameters, largest difference %.3g (parameter %zu; largest "
           "magnitude %.3g): %s (tolerance %g)\n", a, b, ma.nparams, maxdiff, at, maxabs,
           same ? "same" : "DIFFERENT", tolerance);
    free(pa);
    free(pb);
    return same ? 0 : 1;
}
