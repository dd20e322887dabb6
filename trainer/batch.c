/*
 * batch.c -- minibatches of a shard (see batch.h).
 */
#include "batch.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int batcher_init(struct batcher *b, const struct dataset *d, uint64_t seed, int worker)
{
    b->d = d;
    b->seed = seed;
    b->worker = worker;
    b->order = malloc((d->n ? d->n : 1) * sizeof(uint32_t));
    if (!b->order)
        return -ENOMEM;
    for (size_t i = 0; i < d->n; i++)
        b->order[i] = (uint32_t)i;
    return 0;
}

void batcher_free(struct batcher *b)
{
    free(b->order);
    b->order = NULL;
}

void batcher_epoch(struct batcher *b, int epoch)
{
    for (size_t i = 0; i < b->d->n; i++)
        b->order[i] = (uint32_t)i;
    rng_shuffle(b->order, b->d->n,
                rng_mix(b->seed ^ rng_mix((uint64_t)epoch << 20 ^ (uint64_t)b->worker)));
}

void batcher_fill(const struct batcher *b, int t, int bs, float *x, int32_t *y)
{
    const size_t dim = (size_t)b->d->dim;
    for (int r = 0; r < bs; r++) {
        uint32_t i = b->order[(size_t)t * (size_t)bs + (size_t)r];
        data_row(b->d, i, x + (size_t)r * dim);
        y[r] = b->d->y[i];
    }
}
