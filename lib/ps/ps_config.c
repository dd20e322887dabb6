/*
 * ps_config.c -- the PS layer's configuration: defaults, the launcher's
 * and SHOAL_PS_* variables, checks, and the names of modes, optimizers and
 * schedules.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps_int.h"

void shoal_ps_config_init(shoal_ps_config_t *c)
{
    memset(c, 0, sizeof(*c));
    c->rank = c->size = c->local_rank = -1;
    c->servers = 1;
    snprintf(c->host, sizeof(c->host), "127.0.0.1");
    c->connect_timeout_ms = 60000;
    c->idle_timeout_ms = 120000;
    c->fail_timeout_ms = 2000;
    c->rejoin_timeout_ms = 10000;
    c->reconnect_timeout_ms = 120000;
    c->checkpoint_every = 200;
    c->groups = 1;
    c->group_rank = c->group_size = -1;
    shoal_ps_job_t *j = &c->job;
    j->mode = SHOAL_PS_BSP;
    j->staleness = 2;
    j->iters_per_epoch = 1;
    j->epochs = 1;
    j->batch = 1;
    j->optimizer = SHOAL_PS_SGD;
    j->lr = 0.1f;
    j->beta1 = 0.9f;
    j->beta2 = 0.999f;
    j->eps = 1e-8f;
    j->schedule = SHOAL_PS_LR_CONST;
    j->step_epochs = 1;
    j->gamma = 0.1f;
}

/* An environment integer into *out (unset: unchanged); -EINVAL named. */
static int env_int(const char *name, long lo, long hi, int *out, char *err, size_t errlen)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < lo || n > hi) {
        snprintf(err, errlen, "%s='%s' is not a number in [%ld, %ld]", name, v, lo, hi);
        return -EINVAL;
    }
    *out = (int)n;
    return 0;
}

int shoal_ps_config_from_env(shoal_ps_config_t *cfg, char *err, size_t errlen)
{
    shoal_ps_config_t c = *cfg;
    /* rank and size, in the launchers' order of precedence */
    static const char *const pairs[][2] = {{"SHOAL_RANK", "SHOAL_SIZE"},
                                           {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                           {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE"},
                                           {"SLURM_PROCID", "SLURM_NTASKS"}};
    int rc;
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        int r = -1, n = -1;
        if ((rc = env_int(pairs[i][0], 0, INT_MAX, &r, err, errlen)) ||
            (rc = env_int(pairs[i][1], 1, INT_MAX, &n, err, errlen)))
            return rc;
        if (c.rank < 0 && r >= 0)
            c.rank = r;
        if (c.size < 0 && n >= 0 && r >= 0)
            c.size = n;
    }
    static const char *const local[] = {"SHOAL_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                        "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]) && c.local_rank < 0; i++)
        if ((rc = env_int(local[i], 0, INT_MAX, &c.local_rank, err, errlen)))
            return rc;
    static const char *const sv[] = {"SHOAL_SERVERS", "SHOAL_PS_SERVERS"};
    for (int i = 0; i < 2; i++) {
        const char *x = getenv(sv[i]);
        if (x && !strcmp(x, "colocated"))
            c.colocated = true;
        else if ((rc = env_int(sv[i], 1, SHOAL_PS_MAX_SERVERS, &c.servers, err, errlen)))
            return rc;
    }
    const char *v;
    if ((v = getenv("SHOAL_COORDINATOR")) && *v) {
        if (strlen(v) >= sizeof(c.coordinator)) {
            snprintf(err, errlen, "SHOAL_COORDINATOR='%s' is too long", v);
            return -EINVAL;
        }
        snprintf(c.coordinator, sizeof(c.coordinator), "%s", v);
    }
    if ((v = getenv("SHOAL_RENDEZVOUS")) && *v) {
        if (strlen(v) >= sizeof(c.rendezvous)) {
            snprintf(err, errlen, "SHOAL_RENDEZVOUS is longer than %zu bytes",
                     sizeof(c.rendezvous) - 1);
            return -EINVAL;
        }
        snprintf(c.rendezvous, sizeof(c.rendezvous), "%s", v);
    }
    if (((v = getenv("SHOAL_PS_HOST")) && *v) || ((v = getenv("SHOAL_TRAIN_HOST")) && *v)) {
        if (strlen(v) >= sizeof(c.host)) {
            snprintf(err, errlen, "SHOAL_PS_HOST='%s' is too long", v);
            return -EINVAL;
        }
        snprintf(c.host, sizeof(c.host), "%s", v);
    }
    *cfg = c;
    return 0;
}

int ps_parse_hostport(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= cap)
        return -EINVAL;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
        return -EINVAL;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    *port = (uint16_t)p;
    return 0;
}

__attribute__((format(printf, 3, 4)))
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

void ps_config_split(const shoal_ps_config_t *c, shoal_ps_config_t *worker,
                     shoal_ps_config_t *server)
{
    /* P processes are a job of P servers and P workers: process r is
     * server r and worker r (rank P + r) */
    int P = c->size;
    if (worker) {
        *worker = *c;
        worker->servers = P;
        worker->size = 2 * P;
        worker->rank = P + c->rank;
        worker->colocated = false;
    }
    if (server) {
        *server = *c;
        server->servers = P;
        server->size = 2 * P;
        server->rank = c->rank;
        server->colocated = false;
    }
}

int shoal_ps_config_check(const shoal_ps_config_t *cin, bool worker, char *err, size_t errlen)
{
    shoal_ps_config_t cc = *cin;
    const shoal_ps_config_t *c = &cc;
    if (cc.colocated && cc.rank >= 0 && cc.size > 0) {
        if (cc.size > SHOAL_PS_MAX_SERVERS)
            return bad(err, errlen, "%d processes: co-located, at most %d", cc.size,
                       SHOAL_PS_MAX_SERVERS);
        if (cc.groups > 1)
            return bad(err, errlen, "co-located servers serve one parameter group");
        ps_config_split(cin, worker ? &cc : NULL, worker ? NULL : &cc);
    }
    if (c->rank < 0 || c->size < 0)
        return bad(err, errlen, "no rank/size: run under a launcher (shoal-run, mpirun, srun) "
                   "or set SHOAL_RANK and SHOAL_SIZE");
    if (c->rank >= c->size)
        return bad(err, errlen, "rank %d is not below the job size %d", c->rank, c->size);
    if (c->servers < 1 || c->servers > SHOAL_PS_MAX_SERVERS)
        return bad(err, errlen, "%d servers: between 1 and %d", c->servers,
                   SHOAL_PS_MAX_SERVERS);
    if (c->size <= c->servers)
        return bad(err, errlen, "a job of %d ranks with %d servers has no worker", c->size,
                   c->servers);
    if (c->size - c->servers > SHOAL_PS_MAX_WORKERS)
        return bad(err, errlen, "%d workers: at most %d", c->size - c->servers,
                   SHOAL_PS_MAX_WORKERS);
    char host[SHOAL_PS_HOST_MAX];
    uint16_t port;
    if (!c->rendezvous[0] &&
        ps_parse_hostport(c->coordinator, host, sizeof(host), &port))
        return bad(err, errlen, "no meeting place: give a coordinator host:port (%s) or a "
                   "rendezvous file", c->coordinator[0] ? "malformed" : "none set");
    if (c->connect_timeout_ms < 1 || c->idle_timeout_ms < 1 || c->fail_timeout_ms < 1 ||
        c->rejoin_timeout_ms < 0 || c->reconnect_timeout_ms < 1)
        return bad(err, errlen, "timeouts must be positive");
    if (c->checkpoint_every < 0 || c->checkpoint_secs < 0)
        return bad(err, errlen, "checkpoint interval must not be negative");
    if (c->groups < 1 || c->groups > SHOAL_PS_MAX_GROUPS)
        return bad(err, errlen, "%d parameter groups: between 1 and %d", c->groups,
                   SHOAL_PS_MAX_GROUPS);
    if (!worker)
        return 0;
    const shoal_ps_job_t *j = &c->job;
    int W = c->group_size > 0 ? c->group_size : c->size - c->servers;
    int wi = c->group_rank >= 0 ? c->group_rank : c->rank - c->servers;
    if (c->group < 0 || c->group >= c->groups)
        return bad(err, errlen, "group %d: the job has %d", c->group, c->groups);
    if (wi >= W || W > c->size - c->servers)
        return bad(err, errlen, "worker %d of a group of %d (%d worker ranks)", wi, W,
                   c->size - c->servers);
    if (j->workers != 0 && j->workers != W)
        return bad(err, errlen, "job.workers is %d but the group has %d workers", j->workers,
                   W);
    if ((unsigned)j->mode > SHOAL_PS_SSP || j->staleness < 0)
        return bad(err, errlen, "bad mode or staleness");
    if (j->iters_per_epoch < 1 || j->epochs < 1 || j->batch < 1)
        return bad(err, errlen, "iterations per epoch, epochs and batch must be at least 1");
    if ((unsigned)j->optimizer > SHOAL_PS_AVERAGE)
        return bad(err, errlen, "unknown optimizer %d", (int)j->optimizer);
    if (j->optimizer == SHOAL_PS_AVERAGE && j->mode != SHOAL_PS_BSP)
        return bad(err, errlen, "the average optimizer (workers apply their own) needs bsp, "
                   "not %s", shoal_ps_mode_name(j->mode));
    if (!(j->lr >= 0.0f && j->lr < 1e6f))
        return bad(err, errlen, "learning rate %g out of range", (double)j->lr);
    if (!(j->momentum >= 0.0f && j->momentum < 1.0f))
        return bad(err, errlen, "momentum %g not in [0, 1)", (double)j->momentum);
    if (!(j->weight_decay >= 0.0f && j->weight_decay < 1e6f))
        return bad(err, errlen, "weight decay %g out of range", (double)j->weight_decay);
    if (!(j->beta1 >= 0.0f && j->beta1 < 1.0f) || !(j->beta2 >= 0.0f && j->beta2 < 1.0f) ||
        !(j->eps >= 0.0f && j->eps < 1.0f))
        return bad(err, errlen, "Adam's beta1, beta2 must be in [0, 1) and eps in [0, 1)");
    if ((unsigned)j->schedule > SHOAL_PS_LR_STEP || j->step_epochs < 0 ||
        !(j->gamma >= 0.0f && j->gamma < 1e6f))
        return bad(err, errlen, "bad learning-rate schedule");
    if ((unsigned)j->compress > SHOAL_PS_COMPRESS_TOPK_NOEF ||
        (j->compress >= SHOAL_PS_COMPRESS_TOPK && !(j->topk_ratio > 0.0f && j->topk_ratio <= 1.0f)))
        return bad(err, errlen, "bad compression (top-k needs a fraction in (0, 1])");
    if (memchr(j->label, 0, sizeof(j->label)) == NULL)
        return bad(err, errlen, "job label is not terminated");
    return 0;
}

bool shoal_ps_is_server(const shoal_ps_config_t *cfg)
{
    return !cfg->colocated && cfg->rank >= 0 && cfg->rank < cfg->servers;
}

const char *shoal_ps_mode_name(shoal_ps_mode_t m)
{
    return m == SHOAL_PS_ASYNC ? "async" : m == SHOAL_PS_SSP ? "ssp" : "bsp";
}

const char *shoal_ps_optimizer_name(shoal_ps_optimizer_t o)
{
    return o == SHOAL_PS_ADAM ? "adam" : o == SHOAL_PS_AVERAGE ? "average" : "sgd";
}

const char *shoal_ps_schedule_name(shoal_ps_schedule_t s)
{
    return s == SHOAL_PS_LR_COSINE ? "cosine" : s == SHOAL_PS_LR_STEP ? "step" : "const";
}

int shoal_ps_parse_mode(const char *s, shoal_ps_mode_t *m)
{
    for (int i = SHOAL_PS_BSP; i <= SHOAL_PS_SSP; i++)
        if (s && strcmp(s, shoal_ps_mode_name((shoal_ps_mode_t)i)) == 0) {
            *m = (shoal_ps_mode_t)i;
            return 0;
        }
    return -EINVAL;
}

int shoal_ps_parse_optimizer(const char *s, shoal_ps_optimizer_t *o)
{
    for (int i = SHOAL_PS_SGD; i <= SHOAL_PS_AVERAGE; i++)
        if (s && strcmp(s, shoal_ps_optimizer_name((shoal_ps_optimizer_t)i)) == 0) {
            *o = (shoal_ps_optimizer_t)i;
            return 0;
        }
    return -EINVAL;
}

int shoal_ps_parse_schedule(const char *s, shoal_ps_schedule_t *sch)
{
    if (s && strcmp(s, "constant") == 0) {
        *sch = SHOAL_PS_LR_CONST;
        return 0;
    }
    for (int i = SHOAL_PS_LR_CONST; i <= SHOAL_PS_LR_STEP; i++)
        if (s && strcmp(s, shoal_ps_schedule_name((shoal_ps_schedule_t)i)) == 0) {
            *sch = (shoal_ps_schedule_t)i;
            return 0;
        }
    return -EINVAL;
}
