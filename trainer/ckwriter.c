/*
 * ckwriter.c -- the background checkpoint writer (see ckwriter.h).
 */
#include "ckwriter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *writer(void *arg)
{
    struct ckwriter *w = arg;
    pthread_mutex_lock(&w->lock);
    for (;;) {
        while (!w->busy && !w->stop)
            pthread_cond_wait(&w->cond, &w->lock);
        if (!w->busy)
            break; /* stop, nothing left to write */
        /* The snapshot is ours until busy is cleared: write it unlocked. */
        pthread_mutex_unlock(&w->lock);
        char err[512];
        double t0 = mono_s();
        if (ckpt_save(w->dir, &w->snap, err, sizeof(err)))
            fprintf(stderr, "shoal-train: server %u: checkpoint at update %u failed: %s "
                    "(the previous checkpoint is intact)\n", w->snap.server, w->snap.version,
                    err);
        else if (!w->quiet)
            fprintf(stderr, "shoal-train: server %u: checkpoint at update %u (%.1f ms)\n",
                    w->snap.server, w->snap.version, (mono_s() - t0) * 1e3);
        pthread_mutex_lock(&w->lock);
        w->busy = false;
        pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

int ckw_start(struct ckwriter *w, const char *dir, bool quiet)
{
    memset(w, 0, sizeof(*w));
    if (strlen(dir) >= sizeof(w->dir))
        return -ENAMETOOLONG;
    strcpy(w->dir, dir);
    w->quiet = quiet;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    int rc = pthread_create(&w->thread, NULL, writer, w);
    if (rc) {
        pthread_cond_destroy(&w->cond);
        pthread_mutex_destroy(&w->lock);
        return -rc;
    }
    w->started = true;
    return 0;
}

/* Room in the owned copies for @len parameters and @workers clocks. */
static int reserve(struct ckwriter *w, size_t len, size_t workers)
{
    if (len > w->cap_len || !w->params) {
        float *p = realloc(w->params, (len ? len : 1) * sizeof(float));
        if (!p)
            return -ENOMEM;
        w->params = p;
        float *m = realloc(w->mom, (len ? len : 1) * sizeof(float));
        if (!m)
            return -ENOMEM;
        w->mom = m;
        w->cap_len = len;
    }
    if (workers > w->cap_workers || !w->clock) {
        uint32_t *c = realloc(w->clock, (workers ? workers : 1) * sizeof(uint32_t));
        if (!c)
            return -ENOMEM;
        w->clock = c;
        uint8_t *d = realloc(w->done, workers ? workers : 1);
        if (!d)
            return -ENOMEM;
        w->done = d;
        w->cap_workers = workers;
    }
    return 0;
}

int ckw_submit(struct ckwriter *w, const struct ckpt *k)
{
    pthread_mutex_lock(&w->lock);
    bool busy = w->busy;
    pthread_mutex_unlock(&w->lock);
    if (busy)
        return -EBUSY;
    /* Not busy: the thread does not touch the copies until busy is set. */
    int rc = reserve(w, k->len, k->workers);
    if (rc)
        return rc;
    memcpy(w->params, k->params, k->len * sizeof(float));
    if (k->mom)
        memcpy(w->mom, k->mom, k->len * sizeof(float));
    memcpy(w->clock, k->clock, k->workers * sizeof(uint32_t));
    memcpy(w->done, k->done, k->workers);
    w->snap = *k;
    w->snap.params = w->params;
    w->snap.mom = k->mom ? w->mom : NULL;
    w->snap.clock = w->clock;
    w->snap.done = w->done;
    pthread_mutex_lock(&w->lock);
    w->busy = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    return 0;
}

void ckw_drain(struct ckwriter *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->lock);
    while (w->busy)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

void ckw_stop(struct ckwriter *w)
{
    if (!w->started)
        return;
    pthread_mutex_lock(&w->lock);
    w->stop = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->lock);
    free(w->params);
    free(w->mom);
    free(w->clock);
    free(w->done);
    memset(w, 0, sizeof(*w));
}
