/*
 * ctx.c -- contexts: choosing a provider, creating and destroying its
 * state, and the pool of operation records.
 *
 * Provider choice.  SHOAL_TRANSPORT=verbs or ucx takes that provider or
 * fails.  auto asks each provider in order of preference whether it is
 * usable here (probe) and takes the first that says yes, logging the
 * choice and every refusal's reason at info level.
 */
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core.h"
#include "topo.h"

/* In order of preference for auto. */
static const struct shoal_provider *const providers[] = {
#ifdef HAVE_VERBS
    &shoal_verbs_provider,
#endif
    &shoal_ucx_provider,
};
#define N_PROVIDERS (sizeof(providers) / sizeof(providers[0]))

const struct shoal_provider *const *shoal__providers(size_t *n)
{
    *n = N_PROVIDERS;
    return providers;
}

static int choose_provider(shoal_ctx_t *ctx)
{
    char why[256];
    shoal_transport_t want = ctx->cfg.transport;
    for (size_t i = 0; i < N_PROVIDERS; i++) {
        const struct shoal_provider *p = providers[i];
        if (want != SHOAL_TRANSPORT_AUTO && p->transport != want)
            continue;
        why[0] = '\0';
        int rc = p->probe(&ctx->cfg, why, sizeof(why));
        if (rc == 0) {
            ctx->prov = p;
            shoal__info(ctx, "transport %s selected (%s%s)", p->name,
                        want == SHOAL_TRANSPORT_AUTO ? "auto: " : "requested",
                        want == SHOAL_TRANSPORT_AUTO ? why : "");
            return 0;
        }
        if (want != SHOAL_TRANSPORT_AUTO)
            return shoal__fail(ctx, rc, "transport %s is not usable here: %s",
                               p->name, why);
        shoal__info(ctx, "transport %s not usable: %s", p->name, why);
    }
    if (want == SHOAL_TRANSPORT_VERBS)
        return shoal__fail(ctx, -ENODEV,
                           "transport verbs was not built in (configure --without-verbs)");
    return shoal__fail(ctx, -ENODEV, "no usable transport");
}

/*
 * How long shoal_wait() polls before it sleeps.  An answer often comes
 * within microseconds, and a sleep and wake-up cost tens of them: 100 us.
 * But where more processes of the job share the node than there are CPUs
 * (3 ranks of a local job on 2 cores), a process that polls holds the CPU
 * a peer needs to compute the answer: 5 us (docs/PERFORMANCE.md).
 */
static long spin_ns(const shoal_ctx_t *ctx)
{
    if (ctx->cfg.spin_us >= 0)
        return ctx->cfg.spin_us * 1000L;
    /* Waiting threads that poll take the CPU their peers need once there
     * are more of them than CPUs: local processes times the threads of
     * each that wait on a context of their own. */
    int local = ctx->plan ? ctx->plan->pub.local_size : 1;
    int waiters = ctx->cfg.waiters > 1 ? ctx->cfg.waiters : 1;
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 0;
    if (cpus <= 0)
        cpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
    bool crowded = cpus > 0 && (long)local * waiters > cpus;
    shoal__debug(ctx, "shoal_wait polls %d us before sleeping (%d local processes x %d "
                 "waiting threads, %d CPUs)", crowded ? 5 : 100, local, waiters, cpus);
    return crowded ? 5000L : 100000L;
}

/* A configuration filled by hand: which field is out of range, or NULL. */
static const char *bad_field(const shoal_config_t *c)
{
    if ((unsigned)c->log_level > SHOAL_LOG_TRACE)
        return "log_level (not a shoal_log_level_t)";
    if ((unsigned)c->transport > SHOAL_TRANSPORT_UCX)
        return "transport (not a shoal_transport_t)";
    if (c->connect_timeout_ms <= 0)
        return "connect_timeout_ms (must be positive)";
    if (c->queue_depth <= 0)
        return "queue_depth (must be positive)";
    if (!memchr(c->device, '\0', sizeof(c->device)))
        return "device (not NUL-terminated)";
    if (!memchr(c->auth_file, '\0', sizeof(c->auth_file)))
        return "auth_file (not NUL-terminated)";
    if ((unsigned)c->progress > SHOAL_PROGRESS_THREAD)
        return "progress (not a shoal_progress_t)";
    if (c->waiters < 0 || c->waiters > 4096)
        return "waiters (must be 0 to 4096)";
    return NULL;
}

/* shoal_ctx_create() can leave no message in a context (there is none on
 * failure): its failures are logged at error level instead. */
int shoal_ctx_create(const shoal_config_t *cfg, shoal_ctx_t **ctx_p)
{
    if (!ctx_p) {
        shoal__error(NULL, "shoal_ctx_create: the context pointer (ctx_p) is NULL");
        return -EINVAL;
    }
    shoal_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        shoal__error(NULL, "shoal_ctx_create: out of memory");
        return -ENOMEM;
    }
    if (cfg) {
        ctx->cfg = *cfg;
    } else {
        char err[256];
        shoal_config_init(&ctx->cfg);
        int rc = shoal_config_from_env(&ctx->cfg, err, sizeof(err));
        if (rc) {
            shoal__error(NULL, "%s", err);
            free(ctx);
            return rc;
        }
    }
    const char *bad = bad_field(&ctx->cfg);
    if (bad) {
        shoal__error(NULL, "shoal_ctx_create: bad configuration field %s", bad);
        free(ctx);
        return -EINVAL;
    }
    shoal__list_init(&ctx->eps);
    shoal__list_init(&ctx->listeners);
    ctx->next_ep_id = 1;
    ctx->err_out = ctx->errmsg;
    ctx->wake_fd = -1;
    int rc = shoal__auth_load(ctx);
    if (rc == 0)
        rc = choose_provider(ctx);
    if (rc == 0)
        rc = ctx->prov->ctx_init(ctx);
    if (rc == 0 && (rc = shoal__topo_ctx_init(ctx)) != 0)
        ctx->prov->ctx_fini(ctx);
    if (rc == 0) {
        ctx->spin_ns = spin_ns(ctx);
        if ((rc = shoal__progress_start(ctx)) != 0) {
            shoal__topo_ctx_fini(ctx);
            ctx->prov->ctx_fini(ctx);
        }
    }
    if (rc) {
        /* Keep the reason visible: the ctx that held it is going away. */
        if (ctx->errmsg[0])
            shoal__error(ctx, "%s", ctx->errmsg);
        shoal__auth_free(ctx);
        free(ctx);
        return rc;
    }
    if (!ctx->describe[0])
        snprintf(ctx->describe, sizeof(ctx->describe), "%s", ctx->prov->name);
    *ctx_p = ctx;
    return 0;
}

void shoal_ctx_destroy(shoal_ctx_t *ctx)
{
    if (!ctx)
        return;
    /* First the thread: what follows runs with nobody else in the ctx. */
    shoal__progress_stop(ctx);
    while (!shoal__list_empty(&ctx->listeners))
        shoal_listener_close(shoal__container_of(ctx->listeners.next,
                                                 shoal_listener_t, node));
    while (!shoal__list_empty(&ctx->eps)) {
        shoal_ep_t *ep = shoal__container_of(ctx->eps.next, shoal_ep_t, node);
        shoal__warn(ctx, "ctx_destroy: endpoint %s was still open; closing it",
                    ep->peer);
        shoal_ep_close(ep);
    }
    if (ctx->n_mrs)
        shoal__warn(ctx, "ctx_destroy: %u memory registrations still live",
                    ctx->n_mrs);
    ctx->prov->ctx_fini(ctx);
    shoal__topo_ctx_fini(ctx);
    shoal__evq_fini(&ctx->evq);
    shoal__auth_free(ctx);
    while (ctx->free_ops) {
        struct shoal_op *op = ctx->free_ops;
        ctx->free_ops = op->next_free;
        free(op);
    }
    free(ctx);
}

shoal_transport_t shoal_ctx_transport(const shoal_ctx_t *ctx)
{
    return ctx->prov->transport;
}

const char *shoal_ctx_describe(const shoal_ctx_t *ctx)
{
    return ctx->describe;
}

struct shoal_op *shoal__op_get(shoal_ctx_t *ctx)
{
    struct shoal_op *op = ctx->free_ops;
    if (op)
        ctx->free_ops = op->next_free;
    else if (!(op = malloc(sizeof(*op))))
        return NULL;
    memset(op, 0, sizeof(*op));
    return op;
}

void shoal__op_put(shoal_ctx_t *ctx, struct shoal_op *op)
{
    op->next_free = ctx->free_ops;
    ctx->free_ops = op;
}

void shoal__op_done(struct shoal_op *op, int status, const char *reason)
{
    if (status && !op->status)
        op->status = status;
    if (--op->pending > 0)
        return;
    shoal_ep_t *ep = op->ep;
    shoal_ctx_t *ctx = ep->ctx;
    shoal__queue_op_event(ctx, op, op->status ? reason : NULL);
    ep->outstanding--;
    shoal__op_put(ctx, op);
}
