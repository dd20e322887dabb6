/*
 * optim.c -- SGD on a shard (see optim.h).  The update is one streaming
 * pass over the parameters, the momentum and the workers' gradient slots,
 * blocked so the partial sums stay in L1.
 */
#include "optim.h"

#include <math.h>
#include <string.h>

int optim_parse_schedule(const char *s)
{
    if (strcmp(s, "const") == 0 || strcmp(s, "constant") == 0)
        return LR_CONST;
    if (strcmp(s, "cosine") == 0)
        return LR_COSINE;
    if (strcmp(s, "step") == 0)
        return LR_STEP;
    return -1;
}

const char *optim_schedule_name(enum lr_schedule s)
{
    return s == LR_COSINE ? "cosine" : s == LR_STEP ? "step" : "const";
}

float optim_lr(const struct optim_cfg *c, double epoch, int epochs)
{
    switch (c->schedule) {
    case LR_COSINE: {
        double t = epochs > 0 ? epoch / epochs : 0.0;
        if (t > 1.0)
            t = 1.0;
        return (float)(c->lr * 0.5 * (1.0 + cos(M_PI * t)));
    }
    case LR_STEP: {
        int steps = c->step_epochs > 0 ? (int)(epoch / c->step_epochs) : 0;
        return (float)(c->lr * pow(c->gamma, steps));
    }
    default:
        return c->lr;
    }
}

#define BLOCK 1024

void optim_apply(const struct optim_cfg *c, float lr, float *out, const float *in, float *v,
                 const float *const *g, int ng, float scale, size_t n)
{
    const float mu = c->momentum, wd = c->weight_decay;
    float d[BLOCK];
    for (size_t at = 0; at < n; at += BLOCK) {
        size_t m = n - at < BLOCK ? n - at : BLOCK;
        memcpy(d, g[0] + at, m * sizeof(float));
        for (int k = 1; k < ng; k++) {
            const float *gk = g[k] + at;
            for (size_t i = 0; i < m; i++)
                d[i] += gk[i];
        }
        const float *pi = in + at;
        float *po = out + at;
        if (v) {
            float *vv = v + at;
            for (size_t i = 0; i < m; i++) {
                vv[i] = mu * vv[i] + scale * d[i] + wd * pi[i];
                po[i] = pi[i] - lr * vv[i];
            }
        } else {
            for (size_t i = 0; i < m; i++)
                po[i] = pi[i] - lr * (scale * d[i] + wd * pi[i]);
        }
    }
}
