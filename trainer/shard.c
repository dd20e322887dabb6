/*
 * shard.c -- a worker's data shard across epochs (see shard.h).
 *
 * Before the first batch of each epoch the holder asks the PS layer which
 * workers share the training set in that epoch (server 0 decides); when
 * that moves its shard (a worker was lost for good, or one came back), it
 * frees the shard and reads its new one from the file.  The PS layer
 * keeps the job alive meanwhile.  Without failures the shard is always
 * its own, index % workers == its index.
 */
#include "shard.h"

#include <errno.h>
#include <stdio.h>

#include "report.h"

int shard_enter_epoch(const struct train_cfg *c, shoal_ps_t *ps, struct shard *sh, int e,
                      struct dataset *train, struct batcher *bt, char *err, size_t errlen)
{
    bool member;
    int shard, shards;
    int rc = shoal_ps_data_shard(ps, (uint32_t)e, &member, &shard, &shards);
    if (rc) {
        snprintf(err, errlen, "%s", shoal_ps_errmsg(ps));
        return rc;
    }
    bool was = sh->member;
    sh->member = member;
    if (shard == sh->shard && shards == sh->shards) {
        if (!member)
            fprintf(stderr, "shoal-train: worker %d: epoch %d: not among the workers that "
                    "share the data (it rejoined after the epoch's membership was fixed); "
                    "its own shard %d of %d (%zu samples) for this epoch\n", sh->index, e + 1,
                    shard, shards, train->n);
        else if (!was)
            fprintf(stderr, "shoal-train: worker %d: epoch %d: data shard %d of %d live "
                    "workers (%zu samples)\n", sh->index, e + 1, shard, shards, train->n);
        return 0;
    }
    const int dim = train->dim, classes = train->classes;
    batcher_free(bt);
    data_free(train);
    sh->shard = sh->shards = -1; /* none until the new one is in */
    double t0 = now_s();
    char e2[768];
    rc = train_load_data(c, shard, shards, train, NULL, NULL, e2, sizeof(e2));
    if (rc) {
        snprintf(err, errlen, "epoch %d: reading data shard %d of %d: %s", e + 1, shard,
                 shards, e2);
        return rc;
    }
    if (train->dim != dim || train->classes != classes) {
        snprintf(err, errlen, "epoch %d: the training data changed on disk: %d features and "
                 "%d classes now, %d and %d at the start", e + 1, train->dim, train->classes,
                 dim, classes);
        return -EPROTO;
    }
    if (batcher_init(bt, train, c->seed, sh->index)) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    sh->shard = shard;
    sh->shards = shards;
    if (member)
        fprintf(stderr, "shoal-train: worker %d: epoch %d: data shard %d of %d live workers "
                "(%zu samples; read in %.2f s)\n", sh->index, e + 1, shard, shards, train->n,
                now_s() - t0);
    else
        fprintf(stderr, "shoal-train: worker %d: epoch %d: not among the workers that "
                "share the data (it rejoined after the epoch's membership was fixed); its own "
                "shard %d of %d (%zu samples; read in %.2f s) for this epoch\n", sh->index,
                e + 1, shard, shards, train->n, now_s() - t0);
    return 0;
}
