/*
 * job.c -- facts about a job that every role must compute the same way:
 * parameter shards, data shards (and how live workers split the data),
 * iterations per epoch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train.h"

int train_load_data(const struct train_cfg *c, int shard, int shards, struct dataset *train,
                    struct dataset *test, const struct data_tick *tick, char *err,
                    size_t errlen)
{
    int rc;
    if (c->train_file[0]) {
        struct label_map map = {0};
        rc = data_load_libsvm(c->train_file, c->features, &map, (size_t)shards, (size_t)shard,
                              train, tick, err, errlen);
        if (rc == 0 && test)
            rc = data_load_libsvm(c->test_file, train->dim, &map, 1, 0, test, tick, err,
                                  errlen);
    } else {
        char img[TRAIN_PATH_MAX + 64], lab[TRAIN_PATH_MAX + 64];
        rc = data_idx_paths(c->data_dir, "train", img, lab, sizeof(img), err, errlen);
        if (rc == 0)
            rc = data_load_idx(img, lab, (size_t)shards, (size_t)shard, c->classes, train,
                               tick, err, errlen);
        if (rc == 0 && test) {
            rc = data_idx_paths(c->data_dir, "t10k", img, lab, sizeof(img), err, errlen);
            if (rc == 0)
                rc = data_load_idx(img, lab, 1, 0, train->classes, test, tick, err, errlen);
            if (rc == 0 && test->dim != train->dim) {
                snprintf(err, errlen, "%s: test images have %d pixels, training images %d",
                         img, test->dim, train->dim);
                rc = -1;
            }
        }
    }
    if (rc && train)
        data_free(train);
    return rc;
}

int train_iters_per_epoch(const struct train_cfg *c, size_t smallest_shard)
{
    if (c->bench_rounds > 0)
        return c->bench_rounds + TRAIN_BENCH_WARMUP;
    size_t full = smallest_shard / (size_t)c->batch;
    if (c->iters_per_epoch > 0 && (size_t)c->iters_per_epoch < full)
        return c->iters_per_epoch;
    return (int)full;
}

float train_eval(const struct model *m, const float *p, const struct dataset *d, size_t *ok,
                 struct model_ws *ws)
{
    const size_t B = (size_t)ws->maxb, dim = (size_t)d->dim;
    float *x = malloc(B * dim * sizeof(float));
    if (!x)
        return -1.0f;
    double loss = 0.0;
    size_t right = 0;
    for (size_t at = 0; at < d->n; at += B) {
        size_t n = d->n - at < B ? d->n - at : B, k = 0;
        for (size_t r = 0; r < n; r++)
            data_row(d, at + r, x + r * dim);
        loss += (double)model_eval(m, p, x, d->y + at, n, &k, ws) * (double)n;
        right += k;
    }
    free(x);
    if (ok)
        *ok = right;
    return d->n ? (float)(loss / (double)d->n) : 0.0f;
}

float *train_alloc_floats(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, (n ? n : 1) * sizeof(float)))
        return NULL;
    memset(p, 0, n * sizeof(float));
    return p;
}
