/*
 * ps_int.h -- what the files of lib/ps share and no one else sees: the
 * clock, atomic files, the parameter layout, and the shard arithmetic.
 */
#ifndef SHOAL_PS_INT_H
#define SHOAL_PS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal_ps.h"

/* Seconds on a monotonic clock. */
double ps_now(void);

/* Write @len bytes to @path atomically: temporary file, fsync, rename,
 * fsync of the directory.  0 or -errno with the reason in @err. */
int ps_atomic_write(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* The shard of P floats that server s of S owns: [*off, *off + *len). */
void ps_shard(size_t nparams, int servers, int s, size_t *off, size_t *len);

/* A 64-bit digest of a tensor list (names and counts, in order): what the
 * servers compare between workers. */
uint64_t ps_layout_hash(const shoal_ps_tensor_t *t, int n);

/* "host:port" into its parts; -EINVAL when malformed. */
int ps_parse_hostport(const char *s, char *host, size_t cap, uint16_t *port);

/* The data shard of @worker (of @workers) in an epoch whose members are
 * the workers set in @live: the members, in rank order, split the whole
 * set, the j-th of n members taking shard j of n; a worker that is not a
 * member keeps shard @worker of @workers.  Returns whether it is one. */
bool ps_data_shard(const uint8_t *live, int workers, int worker, int *shard, int *shards);

/* A co-located job (@c->colocated) as two ordinary configurations: the
 * worker's (rank P + r of 2P) and its server's (rank r of 2P), P servers;
 * either output may be NULL. */
void ps_config_split(const shoal_ps_config_t *c, shoal_ps_config_t *worker,
                     shoal_ps_config_t *server);

/*
 * A co-located worker and its server thread share one address space: the
 * worker's pushes to that server and the server's parameters to that
 * worker need no network.  The bytes are copied in memory and only the
 * last PS_COLO_TAIL bytes travel as the put, whose immediate keeps the
 * protocol unchanged (the copy is done, and fenced, before the put starts,
 * so the data is in place when the immediate is seen).
 */
#define PS_COLO_TAIL 64
struct ps_colo {
    int worker;               /* the worker's index (= the server's rank) */
    void *params;             /* its parameter region for this shard (what the server puts) */
    size_t params_bytes;
    void *slot;               /* its gradient slot at this server, owned by the worker */
    size_t slot_bytes;        /* (it outlives the server thread) */
    int adopted;              /* set by the server thread (release) once it uses slot */
};

/* Copy @len bytes to @dst in memory but the last PS_COLO_TAIL (returned:
 * the put's length; the put starts at @len - that). */
size_t ps_colo_copy(void *dst, const void *src, size_t len);

/* shoal_ps_serve, which also returns (-ECANCELED) once *@stop is set;
 * @colo (may be NULL): the co-located worker's shared state. */
int ps_serve(const shoal_ps_config_t *cfg, const int *stop, struct ps_colo *colo, char *err,
             size_t errlen);

/* n zeroed floats, page aligned; free() them. */
float *ps_alloc_floats(size_t n);

#endif
