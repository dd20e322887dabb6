/*
 * checkpoint.h -- a server's state on disk, so a restarted server
 * (--resume) continues where the last checkpoint left it.
 *
 * One file per checkpoint, DIR/server-<s>.ckpt.<version>, written
 * atomically (temporary file, fsync, rename, fsync of the directory);
 * the newest two are kept.  Layout (little-endian): "SHOALCKP", u32 format
 * version, then the job (as in HELLO), the shard, the update counters,
 * each worker's clock and whether it finished, the parameters and the
 * momentum, and a CRC-32 of everything before it.  Loading tries the
 * newest file first and skips, with a message, any that is truncated or
 * fails its checksum.
 */
#ifndef SHOAL_TRAIN_CHECKPOINT_H
#define SHOAL_TRAIN_CHECKPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "protocol.h"

struct ckpt {
    uint32_t server, servers;
    struct ps_hello job;      /* desc unused */
    uint64_t off, len;
    uint32_t version;
    uint64_t grads;
    uint32_t workers;
    uint32_t *clock;          /* [workers] */
    uint8_t *done;            /* [workers] */
    float *params;            /* [len] */
    float *mom;               /* [len] or NULL */
};

/* Save; on failure (full disk, unwritable directory) the previous
 * checkpoints are untouched. */
int ckpt_save(const char *dir, const struct ckpt *c, char *err, size_t errlen);

/* Load the newest valid checkpoint of server @server from @dir (skipped
 * files are reported on @log).  -ENOENT when there is none. */
int ckpt_load(const char *dir, uint32_t server, struct ckpt *c, FILE *log, char *path,
              size_t pathlen, char *err, size_t errlen);

void ckpt_free(struct ckpt *c);

#endif
