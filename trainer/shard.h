/*
 * shard.h -- the data shard a worker (or a pipeline replica's first
 * stage) holds, following each epoch's membership from the PS layer.
 */
#ifndef SHOAL_TRAIN_SHARD_H
#define SHOAL_TRAIN_SHARD_H

#include <stdbool.h>
#include <stddef.h>

#include "batch.h"
#include "data.h"
#include "shoal_ps.h"
#include "train.h"

struct shard {
    int index;                /* whose data: the worker, or the replica */
    int shard, shards;        /* the data shard held: shard of shards (-1: none) */
    bool member;              /* among those that share the data this epoch */
};

/*
 * Before the first batch of epoch @e: the epoch's data membership (from
 * @ps), and when it moves this shard, free the old one and read the new
 * one (the batcher follows).  A negative errno with the reason in @err.
 */
int shard_enter_epoch(const struct train_cfg *c, shoal_ps_t *ps, struct shard *sh, int e,
                      struct dataset *train, struct batcher *bt, char *err, size_t errlen);

#endif
