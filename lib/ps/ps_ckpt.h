/*
 * ps_ckpt.h -- a server's state on disk, so a restarted server (resume)
 * continues where the last checkpoint left it.
 *
 * One file per checkpoint, DIR/server-<s>.ckpt.<version> (parameter
 * group 0) or DIR/server-<s>-g<group>.ckpt.<version>, written
 * atomically (temporary file, fsync, rename, fsync of the directory);
 * the newest three are kept (a rollback of several servers to the newest
 * update they all have needs one behind the newest).  Format 2 (little-endian): "SHOALCKP", u32
 * format, the server and server count, the job (every field of
 * shoal_ps_job_t), the parameter count and layout digest, the shard, the
 * update counters, each worker's clock and whether it finished, the
 * epoch memberships (runs), the optimizer's kind, step count and state
 * vectors, the parameters, and a CRC-32 of everything before it.  Format
 * 1 (shoal-train before the PS layer: SGD momentum only, no memberships)
 * is still read.  Loading tries the newest file first and skips, with a
 * message, any that is truncated or fails its checksum.
 */
#ifndef SHOAL_PS_CKPT_H
#define SHOAL_PS_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ps_core.h"
#include "shoal_ps.h"

struct ckpt {
    uint32_t format;          /* as read (1 or 2); written as 2 */
    uint32_t server, servers;
    uint32_t group;           /* not stored: from the file name */
    shoal_ps_job_t job;       /* format 1: only mode, staleness, workers, batch, schedule
                                 length and label are known */
    uint64_t nparams, layout;
    uint32_t ntensors;
    uint64_t off, len;
    uint32_t version;
    uint64_t grads;
    uint32_t workers;
    uint32_t *clock;          /* [workers] */
    uint8_t *done;            /* [workers] */
    uint32_t fixed;           /* epochs before this have a fixed membership */
    uint32_t nrun;            /* membership runs */
    struct ps_core_run *run;  /* [nrun] */
    uint32_t opt_kind;        /* shoal_ps_optimizer_t */
    uint64_t opt_t;
    float *params;            /* [len] */
    float *m, *v;             /* [len] or NULL */
};

/* Save; on failure (full disk, unwritable directory) the previous
 * checkpoints are untouched. */
int ckpt_save(const char *dir, const struct ckpt *c, char *err, size_t errlen);

/* Load the newest valid checkpoint of server @server from @dir (skipped
 * files are reported on @log).  -ENOENT when there is none. */
int ckpt_load(const char *dir, uint32_t server, uint32_t group, struct ckpt *c, FILE *log,
              char *path, size_t pathlen, char *err, size_t errlen);

/* Load the checkpoint of exactly update @version (a rollback); -ENOENT
 * when there is none, or it does not pass its checks. */
int ckpt_load_version(const char *dir, uint32_t server, uint32_t group, uint32_t version,
                      struct ckpt *c, char *path, size_t pathlen, char *err, size_t errlen);

void ckpt_free(struct ckpt *c);

/* The file name of a checkpoint. */
void ckpt_path(char *out, size_t len, const char *dir, uint32_t server, uint32_t group,
               uint32_t version);

#endif
