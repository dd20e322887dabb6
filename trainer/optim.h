/*
 * optim.h -- the server's optimizer: SGD with optional momentum, weight
 * decay and a learning-rate schedule, applied to one shard.
 */
#ifndef SHOAL_TRAIN_OPTIM_H
#define SHOAL_TRAIN_OPTIM_H

#include <stddef.h>

enum lr_schedule { LR_CONST = 0, LR_COSINE, LR_STEP };

struct optim_cfg {
    float lr;
    float momentum;          /* 0 = plain SGD */
    float weight_decay;
    enum lr_schedule schedule;
    int step_epochs;         /* LR_STEP: multiply by gamma every step_epochs */
    float gamma;
};

/* Parse "const", "cosine" or "step"; -1 if none of them. */
int optim_parse_schedule(const char *s);
const char *optim_schedule_name(enum lr_schedule s);

/* The learning rate at @epoch (fractional: 2.5 = half way through the
 * third) of @epochs. */
float optim_lr(const struct optim_cfg *c, double epoch, int epochs);

/*
 * out = in - lr * v, with v = momentum * v + (scale * sum(g[0..ng)) + wd * in)
 * over n elements.  @v may be NULL when momentum is 0.  @out may equal @in.
 * The gradients are summed here so averaging W workers' slots costs one
 * pass over memory.
 */
void optim_apply(const struct optim_cfg *c, float lr, float *out, const float *in, float *v,
                 const float *const *g, int ng, float scale, size_t n);

#endif
