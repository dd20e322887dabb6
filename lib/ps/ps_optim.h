/*
 * ps_optim.h -- the optimizers a server runs on its shard: SGD with
 * momentum and weight decay, Adam, or plain averaging; and the learning-
 * rate schedules.  The state (momentum; Adam's moments and step count)
 * is what a checkpoint keeps besides the parameters.
 */
#ifndef SHOAL_PS_OPTIM_H
#define SHOAL_PS_OPTIM_H

#include <stddef.h>
#include <stdint.h>

#include "shoal_ps.h"

struct shoal_ps_optim {
    shoal_ps_optimizer_t kind;
    shoal_ps_job_t job;      /* momentum already adjusted (momentum_auto) */
    size_t n;
    float *m;                /* SGD momentum, or Adam's first moment; NULL if unused */
    float *v;                /* Adam's second moment */
    uint64_t t;              /* Adam's step count */
};

/* The momentum the servers run a job with: momentum_auto in async/ssp
 * gives 1 - W * (1 - momentum) (asynchrony adds momentum of its own); 0
 * for top-k SGD jobs, whose workers keep it (ps_topk_momentum). */
float ps_optim_momentum(const shoal_ps_job_t *job);
/* The momentum a worker applies before top-k selection (momentum
 * correction, as in Deep Gradient Compression: u = mu u + g, then the
 * error-fed top-k of u; the entries sent are cleared from u too), 0 for
 * every other job.  The servers then run SGD without momentum. */
float ps_topk_momentum(const shoal_ps_job_t *job);

/* Init in place (shoal_ps_optim_create allocates the struct). */
int ps_optim_init(struct shoal_ps_optim *o, const shoal_ps_job_t *job, size_t n);
void ps_optim_fini(struct shoal_ps_optim *o);

#endif
