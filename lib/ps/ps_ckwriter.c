/*
 * ps_ckwriter.c -- the background checkpoint writer (see ps_ckwriter.h).
 */
#include "ps_ckwriter.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double mono_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/*
 * Tests only (SHOAL_TEST_CKPT_STALL=UPDATE:MS): leave half of the
 * checkpoint of that update in its temporary file and wait MS, so a test
 * can kill the server in the middle of a write.
 */
static void stall(struct ckwriter *w)
{
    char path[sizeof(w->dir) + 96], tmp[sizeof(path) + 32];
    ckpt_path(path, sizeof(path), w->dir, w->snap.server, w->snap.group, w->snap.version);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (f) {
        fwrite(w->snap.params, sizeof(float), w->snap.len / 2, f);
        fclose(f);
    }
    fprintf(stderr, "shoal-ps: server %u: writing checkpoint at update %u (stalled %d ms for a "
            "test)\n", w->snap.server, w->snap.version, w->stall_ms);
    struct timespec ts = {w->stall_ms / 1000, (long)(w->stall_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
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
        if (w->stall_ms > 0 && w->snap.version == w->stall_at)
            stall(w);
        if (ckpt_save(w->dir, &w->snap, err, sizeof(err)))
            fprintf(stderr, "shoal-ps: server %u: checkpoint at update %u failed: %s "
                    "(the previous checkpoint is intact)\n", w->snap.server, w->snap.version,
                    err);
        else if (!w->quiet)
            fprintf(stderr, "shoal-ps: server %u: checkpoint at update %u (%.1f ms)\n",
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
    const char *st = getenv("SHOAL_TEST_CKPT_STALL");
    if (st && sscanf(st, "%u:%d", &w->stall_at, &w->stall_ms) != 2)
        w->stall_ms = 0;
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

static void *dup_mem(const void *p, size_t n, bool *bad)
{
    if (!p)
        return NULL;
    void *q = malloc(n ? n : 1);
    if (!q)
        *bad = true;
    else
        memcpy(q, p, n);
    return q;
}

int ckw_submit(struct ckwriter *w, const struct ckpt *k)
{
    pthread_mutex_lock(&w->lock);
    bool busy = w->busy;
    pthread_mutex_unlock(&w->lock);
    if (busy)
        return -EBUSY;
    /* Not busy: the thread does not touch the snapshot until busy is set. */
    ckpt_free(&w->snap);
    bool bad = false;
    struct ckpt c = *k;
    size_t bytes = k->len * sizeof(float);
    c.params = dup_mem(k->params, bytes, &bad);
    c.m = dup_mem(k->m, bytes, &bad);
    c.v = dup_mem(k->v, bytes, &bad);
    c.clock = dup_mem(k->clock, k->workers * sizeof(uint32_t), &bad);
    c.done = dup_mem(k->done, k->workers, &bad);
    c.run = dup_mem(k->run, k->nrun * sizeof(*k->run), &bad);
    w->snap = c;
    if (bad) {
        ckpt_free(&w->snap);
        return -ENOMEM;
    }
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
    ckpt_free(&w->snap);
    memset(w, 0, sizeof(*w));
}
