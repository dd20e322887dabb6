/*
 * ps_ckwriter.h -- checkpoints written by a background thread, so a server's
 * loop does not stop for write() and fsync() .
 *
 * ckw_submit() copies the state (parameters, momentum, clocks: a memcpy of
 * the shard) and returns; the thread writes it with ckpt_save() (atomic:
 * temporary file, fsync, rename) and reports on stderr, after the rename,
 * "server S: checkpoint at update V (T ms)", or why it failed (the previous
 * checkpoint is then intact).  One write at a time: a submit while the
 * previous write runs is refused (-EBUSY); the server drains first, so
 * its checkpoints stay at the versions it asked for.
 */
#ifndef SHOAL_PS_CKWRITER_H
#define SHOAL_PS_CKWRITER_H

#include <pthread.h>
#include <stdbool.h>

#include "ps_ckpt.h"

struct ckwriter {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool started, busy, stop, quiet;
    int stall_ms;              /* tests: SHOAL_TEST_CKPT_STALL=UPDATE:MS */
    unsigned stall_at;
    char dir[4096];
    struct ckpt snap;          /* an owned copy of the state being written */
};

/* Start the writer thread for checkpoints into @dir.  0 or -errno. */
int ckw_start(struct ckwriter *w, const char *dir, bool quiet);

/* Copy @k and write it in the background: 0, -EBUSY (a write is still
 * running: try later) or -ENOMEM. */
int ckw_submit(struct ckwriter *w, const struct ckpt *k);

/* Wait until no write is running. */
void ckw_drain(struct ckwriter *w);

/* Drain, stop the thread, free the copies.  Safe on a writer never started. */
void ckw_stop(struct ckwriter *w);

#endif
