/*
 * net.h -- the pieces of shoal-train's networking shared by its roles:
 * making a context, finding the coordinator, connecting with retries, and
 * sending a protocol message.
 */
#ifndef SHOAL_TRAIN_NET_H
#define SHOAL_TRAIN_NET_H

#include "shoal.h"
#include "train.h"

/* A context configured from SHOAL_* (errors explained in err). */
int net_ctx(shoal_ctx_t **ctx, char *err, size_t errlen);

/*
 * Place this process's compute: OpenBLAS gets --threads, but no more
 * than the cores libshoal's placement plan (SHOAL_BIND) gives this
 * process, and with one thread the calling thread is bound to the plan's
 * first core.
 */
void net_place_compute(shoal_ctx_t *ctx, const struct train_cfg *c);

/* One line about the placement in force, for the banner. */
const char *net_placement(const shoal_ctx_t *ctx);

/* Where server 0 listens: --coordinator, or the --rendezvous file (waited
 * for until the connect timeout). */
int net_coordinator(const struct train_cfg *c, char *host, size_t hostlen, uint16_t *port,
                    char *err, size_t errlen);

/* Rank 0: publish host:port in the --rendezvous file (atomically). */
int net_publish(const struct train_cfg *c, const char *host, uint16_t port, char *err,
                size_t errlen);

/* Connect, retrying refused/unreachable peers with backoff until
 * timeout_ms (they may not have started yet). */
int net_connect(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                shoal_ep_t **ep, char *err, size_t errlen);

/* Encode and send a message. */
int net_send(shoal_ep_t *ep, const struct ps_msg *m);

/* Send PS_ERROR with a reason (best effort). */
void net_send_error(shoal_ep_t *ep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
