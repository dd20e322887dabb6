/*
 * ps_net.h -- the networking steps servers and workers share: making a
 * context, finding the coordinator, connecting with retries, sending a
 * protocol message.
 */
#ifndef SHOAL_PS_NET_H
#define SHOAL_PS_NET_H

#include "ps_proto.h"
#include "shoal.h"
#include "shoal_ps.h"

/* A context configured from SHOAL_*; with @progress_thread, SHOAL_PROGRESS
 * defaults to thread (the variable still decides when set).  @waiters:
 * threads of this process that wait on contexts of their own (2 for a
 * worker with a co-located server), for libshoal's spin rule.  Errors
 * explained in err. */
int ps_net_ctx(shoal_ctx_t **ctx, bool progress_thread, int waiters, char *err,
               size_t errlen);

/* Where server 0 listens: the coordinator, or the rendezvous file (waited
 * for until the connect timeout). */
int ps_net_coordinator(const shoal_ps_config_t *c, char *host, size_t hostlen, uint16_t *port,
                       char *err, size_t errlen);

/* Server 0: publish host:port in the rendezvous file (atomically). */
int ps_net_publish(const shoal_ps_config_t *c, const char *host, uint16_t port, char *err,
                   size_t errlen);

/* Connect, retrying refused/unreachable peers with backoff until
 * timeout_ms (they may not have started yet). */
int ps_net_connect(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                   shoal_ep_t **ep, char *err, size_t errlen);

/* Encode and send a message. */
int ps_net_send(shoal_ep_t *ep, const struct ps_msg *m);

/* Send PS_ERROR with a reason (best effort). */
void ps_net_send_error(shoal_ep_t *ep, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
