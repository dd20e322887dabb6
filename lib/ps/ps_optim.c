/*
 * ps_optim.c -- the servers' optimizers (see ps_optim.h).  Each update is
 * one streaming pass over the parameters, the optimizer state and the
 * workers' gradient slots, blocked so the partial sums stay in L1.
 */
#include "ps_optim.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ps_int.h"

float shoal_ps_lr(const shoal_ps_job_t *job, double epoch)
{
    switch (job->schedule) {
    case SHOAL_PS_LR_COSINE: {
        double t = job->epochs > 0 ? epoch / job->epochs : 0.0;
        if (t > 1.0)
            t = 1.0;
        return (float)(job->lr * 0.5 * (1.0 + cos(M_PI * t)));
    }
    case SHOAL_PS_LR_STEP: {
        int steps = job->step_epochs > 0 ? (int)(epoch / job->step_epochs) : 0;
        return (float)(job->lr * pow(job->gamma, steps));
    }
    default:
        return job->lr;
    }
}

/* The momentum the job asks for (async/ssp with momentum_auto: lowered
 * for the implicit momentum of W workers). */
static float job_momentum(const shoal_ps_job_t *job)
{
    if (job->mode == SHOAL_PS_BSP || !job->momentum_auto || job->momentum <= 0.0f)
        return job->momentum;
    float mu = 1.0f - (float)job->workers * (1.0f - job->momentum);
    return mu > 0.0f ? mu : 0.0f;
}

/* top-k with error feedback and SGD: the workers keep the momentum (DGC's
 * momentum correction), the servers apply plain SGD. */
static bool momentum_on_workers(const shoal_ps_job_t *job)
{
    return job->compress == SHOAL_PS_COMPRESS_TOPK && job->optimizer == SHOAL_PS_SGD;
}

float ps_optim_momentum(const shoal_ps_job_t *job)
{
    return momentum_on_workers(job) ? 0.0f : job_momentum(job);
}

float ps_topk_momentum(const shoal_ps_job_t *job)
{
    return momentum_on_workers(job) ? job_momentum(job) : 0.0f;
}

int ps_optim_init(struct shoal_ps_optim *o, const shoal_ps_job_t *job, size_t n)
{
    memset(o, 0, sizeof(*o));
    o->kind = job->optimizer;
    o->job = *job;
    o->job.momentum = ps_optim_momentum(job);
    o->n = n;
    if ((o->kind == SHOAL_PS_SGD && o->job.momentum != 0.0f) || o->kind == SHOAL_PS_ADAM)
        if (!(o->m = ps_alloc_floats(n)))
            return -ENOMEM;
    if (o->kind == SHOAL_PS_ADAM && !(o->v = ps_alloc_floats(n))) {
        ps_optim_fini(o);
        return -ENOMEM;
    }
    return 0;
}

void ps_optim_fini(struct shoal_ps_optim *o)
{
    free(o->m);
    free(o->v);
    o->m = o->v = NULL;
}

int shoal_ps_optim_create(const shoal_ps_job_t *job, size_t n, shoal_ps_optim_t **o_p)
{
    if (!job || !o_p || job->optimizer > SHOAL_PS_AVERAGE)
        return -EINVAL;
    struct shoal_ps_optim *o = malloc(sizeof(*o));
    if (!o)
        return -ENOMEM;
    int rc = ps_optim_init(o, job, n);
    if (rc) {
        free(o);
        return rc;
    }
    *o_p = o;
    return 0;
}

void shoal_ps_optim_destroy(shoal_ps_optim_t *o)
{
    if (!o)
        return;
    ps_optim_fini(o);
    free(o);
}

#define BLOCK 1024

void shoal_ps_optim_step(shoal_ps_optim_t *o, double epoch, float *out, const float *in,
                         const float *const *g, int ng, float scale)
{
    const float lr = shoal_ps_lr(&o->job, epoch), mu = o->job.momentum,
                wd = o->job.weight_decay;
    const size_t n = o->n;
    float b1 = o->job.beta1, b2 = o->job.beta2, eps = o->job.eps, c1 = 1.0f, c2 = 1.0f;
    if (o->kind == SHOAL_PS_ADAM) {
        o->t++;
        c1 = 1.0f - powf(b1, (float)o->t);
        c2 = 1.0f - powf(b2, (float)o->t);
    }
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
        switch (o->kind) {
        case SHOAL_PS_AVERAGE:
            for (size_t i = 0; i < m; i++)
                po[i] = scale * d[i];
            break;
        case SHOAL_PS_ADAM: {
            float *mm = o->m + at, *vv = o->v + at;
            const float step = lr / c1, rc2 = 1.0f / sqrtf(c2);
            for (size_t i = 0; i < m; i++) {
                float gi = scale * d[i] + wd * pi[i];
                mm[i] = b1 * mm[i] + (1.0f - b1) * gi;
                vv[i] = b2 * vv[i] + (1.0f - b2) * gi * gi;
                po[i] = pi[i] - step * mm[i] / (sqrtf(vv[i]) * rc2 + eps);
            }
            break;
        }
        default:
            if (o->m) {
                float *vv = o->m + at;
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
}
