/*
 * progress.c -- the opt-in progress thread (SHOAL_PROGRESS=thread): one
 * thread per context that keeps it progressing while the application is
 * busy elsewhere, so peers are not stalled by a process that computes for
 * seconds (UCX over TCP needs the target to progress for puts aimed at it
 * to complete; control messages and heartbeats need someone to read them).
 *
 * Not for: making a context usable from several application threads at
 * once (the contract stays one application thread at a time), nor for
 * taking progress away from an application that polls: the thread stands
 * aside then, so the hot path pays no handoff.
 *
 * Locking.  Every public call on the context holds ctx->lock (core.h:
 * shoal__lock), including the sleep inside shoal_wait/accept/connect.  The
 * thread never blocks on that lock (which would make every one of the
 * application's unlocks a futex wake-up): it only ever *tries* it, and only
 * after the application has made no progress pass for a whole nap.
 *
 * The thread's two modes.
 *   standing aside  sleeping on its eventfd for a nap (1 ms, doubling up
 *                   to 16 ms while the application stays busy in calls);
 *                   then, if the application progressed meanwhile, is in a
 *                   call, or wants the lock, another nap;
 *   serving         otherwise: under the lock, one progress pass and
 *                   wait_fds (the provider arms its notifications), then,
 *                   without the lock, poll() on the provider's fds and the
 *                   eventfd, until traffic or the stop signal; then back
 *                   to standing aside if the application has come back
 *                   (it progressed, wants the lock or holds it), else
 *                   wait_done and another pass.
 * Events the thread produces go to the context's queue like any other;
 * the application's next shoal_poll/shoal_wait returns them (the thread
 * cannot add one while shoal_wait sleeps: shoal_wait holds the lock).
 * While it works, the thread's failures go to its own errmsg buffer, so
 * shoal_ctx_errmsg() keeps describing the application's last call.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core.h"
#include "topo.h"

#define NAP_FIRST_MS 1
#define NAP_MAX_MS 16
#define SERVE_POLL_MS 1000 /* re-check even if nothing ever arrives */

/* Sleep up to @ms on the eventfd; true if the thread must stop. */
static bool nap(shoal_ctx_t *ctx, int ms)
{
    struct pollfd p = {.fd = ctx->wake_fd, .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

/* Is the application back (it progressed since @seen, or wants or holds
 * the lock)?  If not, the lock is taken and false returned. */
static bool app_back(shoal_ctx_t *ctx, unsigned long seen)
{
    if (atomic_load_explicit(&ctx->app_progress, memory_order_relaxed) != seen ||
        atomic_load_explicit(&ctx->app_want, memory_order_relaxed))
        return true;
    return pthread_mutex_trylock(&ctx->lock) != 0;
}

/* Progress for the application until it comes back or the thread must
 * stop.  Called with the lock held; returns without it.  True: stop. */
static bool serve(shoal_ctx_t *ctx, unsigned long seen)
{
    const struct shoal_provider *prov = ctx->prov;
    for (;;) {
        if (ctx->stop) {
            pthread_mutex_unlock(&ctx->lock);
            return true;
        }
        struct pollfd fds[SHOAL_WAIT_FDS + 1];
        int timeout = SERVE_POLL_MS;
        ctx->err_out = ctx->pt_err;
        prov->progress(ctx);
        int n = prov->wait_fds(ctx, fds, &timeout);
        ctx->err_out = ctx->errmsg;
        pthread_mutex_unlock(&ctx->lock);
        if (n < 0) {
            /* Cannot sleep on the provider's fds: don't spin on it. */
            shoal__debug(ctx, "progress thread: %s", ctx->pt_err);
            if (nap(ctx, NAP_MAX_MS))
                return true;
        } else if (n > 0) {
            fds[n] = (struct pollfd){.fd = ctx->wake_fd, .events = POLLIN};
            if (poll(fds, (nfds_t)n + 1, timeout) > 0 && (fds[n].revents & POLLIN))
                return true;
        }
        if (app_back(ctx, seen))
            return false;
        if (n > 0 && prov->wait_done) {
            ctx->err_out = ctx->pt_err;
            prov->wait_done(ctx, fds, n);
            ctx->err_out = ctx->errmsg;
        }
    }
}

static void *progress_main(void *arg)
{
    shoal_ctx_t *ctx = arg;
    shoal__topo_bind_near(ctx);
    unsigned long seen = atomic_load_explicit(&ctx->app_progress, memory_order_relaxed);
    int ms = NAP_FIRST_MS;
    for (;;) {
        if (nap(ctx, ms))
            break;
        if (app_back(ctx, seen)) {
            seen = atomic_load_explicit(&ctx->app_progress, memory_order_relaxed);
            ms = ms * 2 > NAP_MAX_MS ? NAP_MAX_MS : ms * 2;
            continue;
        }
        ms = NAP_FIRST_MS;
        if (serve(ctx, seen))
            break;
        seen = atomic_load_explicit(&ctx->app_progress, memory_order_relaxed);
    }
    return NULL;
}

int shoal__progress_start(shoal_ctx_t *ctx)
{
    if (ctx->cfg.progress != SHOAL_PROGRESS_THREAD)
        return 0;
    ctx->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ctx->wake_fd < 0)
        return shoal__fail(ctx, -errno, "progress thread: eventfd: %s", strerror(errno));
    int rc = pthread_mutex_init(&ctx->lock, NULL);
    if (rc) {
        close(ctx->wake_fd);
        ctx->wake_fd = -1;
        return shoal__fail(ctx, -rc, "progress thread: mutex: %s", strerror(rc));
    }
    /* The thread takes no signals: they stay the application's. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&ctx->thread, NULL, progress_main, ctx);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        pthread_mutex_destroy(&ctx->lock);
        close(ctx->wake_fd);
        ctx->wake_fd = -1;
        return shoal__fail(ctx, -rc, "progress thread: pthread_create: %s", strerror(rc));
    }
    ctx->threaded = true;
    shoal__info(ctx, "progress thread started");
    return 0;
}

void shoal__progress_stop(shoal_ctx_t *ctx)
{
    if (!ctx->threaded)
        return;
    pthread_mutex_lock(&ctx->lock);
    ctx->stop = true;
    pthread_mutex_unlock(&ctx->lock);
    uint64_t one = 1;
    ssize_t w = write(ctx->wake_fd, &one, sizeof(one));
    (void)w;
    pthread_join(ctx->thread, NULL);
    ctx->threaded = false;
    pthread_mutex_destroy(&ctx->lock);
    close(ctx->wake_fd);
    ctx->wake_fd = -1;
}
