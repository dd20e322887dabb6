/*
 * layout.h -- the hybrid layout of a job: W workers as D data-parallel
 * replicas of a K-stage pipeline (D = W / K), and which consecutive
 * layers of the model each stage holds.
 *
 * Worker w is stage w % K of replica w / K, so a replica's stages are
 * neighbours in rank order.  Stage s trains the parameters of its layers
 * as parameter group s of the PS layer, with its D replicas as that
 * group's workers (group_rank = replica).
 *
 * The split: the layers are cut into K consecutive runs that minimise the
 * largest run's parameter count.  A dense layer's forward and backward
 * cost (2 in x out multiply-adds per sample, each way) and its memory are
 * both proportional to its parameters, so this balances compute and
 * memory at once; a layer is never cut, so a model whose layers differ
 * much in size stays unbalanced (784-256-10 on 2 stages: 200,960 and
 * 2,570 parameters).
 *
 * Nothing here does I/O; everything is a function of its inputs, so every
 * worker computes the same layout.
 */
#ifndef SHOAL_TRAIN_LAYOUT_H
#define SHOAL_TRAIN_LAYOUT_H

#include <stddef.h>

#include "model.h"

#define LAYOUT_MAX_MICRO 4096

struct layout {
    int stages, replicas, micro;  /* K, D, M */
    int first[MODEL_MAX_LAYERS + 1]; /* stage s: layers [first[s], first[s + 1]) */
};

/*
 * Refuse a bad layout up front (before any data or network), with the
 * problem named in @err: W not a multiple of K, more stages than layers,
 * micro-batches that do not divide the batch.  -EINVAL then.
 */
int layout_check(int workers, int stages, int nlayers, int batch, int micro, char *err,
                 size_t errlen);

/* The layout of @m for K stages and D replicas (checked already). */
void layout_split(struct layout *lo, const struct model *m, int stages, int replicas,
                  int micro);

/* Stage s's layers as a model of their own (model_part). */
int layout_stage_model(const struct layout *lo, const struct model *m, int s,
                       struct model *part);

static inline int layout_stage(const struct layout *lo, int worker)
{
    return worker % lo->stages;
}

static inline int layout_replica(const struct layout *lo, int worker)
{
    return worker / lo->stages;
}

/* "layers 2-3 (256-128-10)" for stage @s (layers counted from 1). */
void layout_stage_layers(const struct layout *lo, const struct model *m, int s, char *buf,
                         size_t len);

/* The whole layout in one line, for the start line:
 * "stage 0: layer 1 (784-256), 200960 parameters (804 KB); stage 1: ..." */
void layout_describe(const struct layout *lo, const struct model *m, char *buf, size_t len);

/* Bytes as "804 KB", "148.0 MB". */
const char *layout_bytes(double bytes, char *buf, size_t len);

#endif
