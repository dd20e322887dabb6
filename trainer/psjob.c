/*
 * psjob.c -- shoal-train's side of the PS layer: its options as a PS
 * configuration and job, the server role, and where compute runs.
 */
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "train.h"

void train_ps_config(const struct train_cfg *c, size_t nparams, int iters,
                     shoal_ps_config_t *o)
{
    (void)nparams;
    shoal_ps_config_init(o);
    o->rank = c->rank;
    o->size = c->size;
    o->local_rank = c->local_rank;
    o->servers = c->servers;
    if (c->colocated) {
        /* the PS layer makes the same virtual layout and starts the server */
        o->colocated = true;
        o->rank = c->rank - c->servers;
        o->size = c->servers;
    }
    if (!c->rendezvous[0])
        snprintf(o->coordinator, sizeof(o->coordinator), "%s:%u", c->coord_host, c->coord_port);
    snprintf(o->rendezvous, sizeof(o->rendezvous), "%s", c->rendezvous);
    snprintf(o->host, sizeof(o->host), "%s", c->host);
    o->connect_timeout_ms = c->connect_timeout_ms;
    o->idle_timeout_ms = c->idle_timeout_ms;
    o->fail_timeout_ms = c->fail_timeout_ms;
    o->rejoin_timeout_ms = c->rejoin_timeout_ms;
    o->reconnect_timeout_ms = c->reconnect_timeout_ms;
    snprintf(o->checkpoint_dir, sizeof(o->checkpoint_dir), "%s", c->checkpoint_dir);
    o->checkpoint_every = c->checkpoint_every;
    o->checkpoint_secs = c->checkpoint_secs;
    o->resume = c->resume;
    o->verify = c->verify;
    o->quiet = c->quiet;
    /* A pipeline's stages are parameter groups: stage s of every replica
     * trains group s (the worker's group, rank and size are set by the
     * stage; see stage.c). */
    o->groups = c->stages > 1 ? c->stages : 1;
    shoal_ps_job_t *j = &o->job;
    j->workers = c->workers;
    j->mode = c->mode;
    j->staleness = c->staleness;
    j->iters_per_epoch = (uint32_t)iters;
    j->epochs = (uint32_t)c->epochs;
    j->batch = (uint32_t)c->batch;
    j->optimizer = SHOAL_PS_SGD;
    j->lr = c->opt.lr;
    j->momentum = c->opt.momentum;
    j->weight_decay = c->opt.weight_decay;
    /* Asynchronous updates act like extra momentum, so unless the user
     * chose, async/ssp keep the same total (see ARCHITECTURE.md). */
    j->momentum_auto = c->mode != SHOAL_PS_BSP && !c->momentum_set;
    j->schedule = c->opt.schedule;
    j->step_epochs = c->opt.step_epochs;
    j->gamma = c->opt.gamma;
    j->compress = c->compress;
    j->topk_ratio = c->topk_ratio;
}

int server_main(const struct train_cfg *c)
{
    shoal_ps_config_t o;
    char err[1024];
    train_ps_config(c, 0, 1, &o);
    int rc = shoal_ps_serve(&o, err, sizeof(err));
    if (rc)
        fprintf(stderr, "shoal-train: server %d: %s\n", c->rank, err);
    return rc ? 1 : 0;
}

void train_place_compute(shoal_ctx_t *ctx, const struct train_cfg *c)
{
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    int n = c->threads;
    if (pl && pl->policy != SHOAL_BIND_NONE && pl->ncpus > 0 && n > pl->ncpus)
        n = pl->ncpus;
    openblas_set_num_threads(n);
    /* OpenBLAS's own threads inherit the caller's mask: bind only when the
     * work is this one thread. */
    if (n == 1 && pl && pl->policy != SHOAL_BIND_NONE)
        shoal_bind_thread(ctx, 0, 1);
}

const char *train_placement(const shoal_ctx_t *ctx)
{
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    return pl && pl->why[0] ? pl->why : "none";
}
