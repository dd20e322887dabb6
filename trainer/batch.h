/*
 * batch.h -- a worker's minibatches: its shard reshuffled every epoch from
 * (seed, epoch, worker), cut into consecutive batches.  The single-process
 * reference uses the same code, so both see the same samples in the same
 * order.
 */
#ifndef SHOAL_TRAIN_BATCH_H
#define SHOAL_TRAIN_BATCH_H

#include <stdint.h>

#include "data.h"

struct batcher {
    const struct dataset *d;
    uint32_t *order;
    uint64_t seed;
    int worker;
};

int batcher_init(struct batcher *b, const struct dataset *d, uint64_t seed, int worker);
void batcher_free(struct batcher *b);
/* Reshuffle for @epoch (the same permutation for the same inputs). */
void batcher_epoch(struct batcher *b, int epoch);
/* Copy batch @t (rows t*bs .. t*bs+bs of this epoch's order) into x, y. */
void batcher_fill(const struct batcher *b, int t, int bs, float *x, int32_t *y);

#endif
