/*
 * core.h -- declarations shared by the files of lib/core only (not by
 * providers, which see provider.h).
 */
#ifndef SHOAL_CORE_H
#define SHOAL_CORE_H

#include "provider.h"

/* With the progress thread on (SHOAL_PROGRESS=thread), every public call
 * that touches a context holds its lock: shoal__lock at the start,
 * shoal__unlock at the end (shoal__enter/leave do it for calls that can
 * fail).  Without it, both are a test of one flag.  app_want tells the
 * thread that the application is waiting, so it hands the lock over at
 * once (progress.c). */
static inline void shoal__lock(shoal_ctx_t *ctx)
{
    if (!ctx->threaded)
        return;
    atomic_fetch_add_explicit(&ctx->app_want, 1, memory_order_relaxed);
    pthread_mutex_lock(&ctx->lock);
    atomic_fetch_sub_explicit(&ctx->app_want, 1, memory_order_relaxed);
}

static inline void shoal__unlock(shoal_ctx_t *ctx)
{
    if (ctx->threaded)
        pthread_mutex_unlock(&ctx->lock);
}

/* The frame of every public call that can fail and has a context:
 *     shoal__enter(ctx);  ...  return shoal__leave(ctx, "put", rc);
 * enter takes the lock (above) and clears the context's errmsg; leave
 * makes sure a failure has a message (one naming @call and the code, if no
 * step set a better one) and a success none (an internal step may have
 * failed and been recovered from), releases the lock and returns @rc.  So
 * shoal_ctx_errmsg() always describes the last call, as sqlite3_errmsg()
 * does. */
void shoal__enter(shoal_ctx_t *ctx);
int shoal__leave(shoal_ctx_t *ctx, const char *call, int rc);

/* The application made a progress pass (poll, wait, accept, connect): the
 * progress thread stands aside while this keeps changing. */
static inline void shoal__app_progressed(shoal_ctx_t *ctx)
{
    atomic_fetch_add_explicit(&ctx->app_progress, 1, memory_order_relaxed);
}

/* The progress thread (progress.c): start it at the end of
 * shoal_ctx_create (0, or a negative errno with errmsg), stop and join it
 * at the start of shoal_ctx_destroy.  Both no-ops unless
 * cfg.progress == SHOAL_PROGRESS_THREAD. */
int shoal__progress_start(shoal_ctx_t *ctx);
void shoal__progress_stop(shoal_ctx_t *ctx);

void shoal__evq_fini(struct shoal_evq *q);
void shoal__evq_drop_ep(shoal_ctx_t *ctx, shoal_ep_t *ep);
/* Drop only @ep's queued events of @type. */
void shoal__evq_drop_ep_type(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_event_type_t type);
void shoal__queue_op_event(shoal_ctx_t *ctx, struct shoal_op *op,
                           const char *reason);

/* Descriptor layout (version 1), all little-endian:
 *   0  u32 magic "SHMR"     4  u16 version     6  u8 transport  7  u8 access
 *   8  u64 address         16  u64 length     24  u32 key length
 *  28  key bytes           28+keylen  u32 CRC-32 of everything before it */
#define SHOAL_DESC_MAGIC   0x524d4853u
#define SHOAL_DESC_VERSION 1
#define SHOAL_DESC_HDR     28
#define SHOAL_DESC_KEY_MAX (SHOAL_DESC_MAX - SHOAL_DESC_HDR - 4)



struct shoal_op *shoal__op_get(shoal_ctx_t *ctx);
void shoal__op_put(shoal_ctx_t *ctx, struct shoal_op *op);

void shoal__rmr_detach(shoal_rmr_t *rmr);

/* A descriptor's fields after validation; key points into the input. */
struct shoal_desc {
    uint64_t addr, len;
    unsigned access;
    uint32_t keylen;
    const uint8_t *key;
};
/* Validate a packed descriptor for @ctx's transport: 0, -EBADMSG (corrupt,
 * truncated) or -EPROTO (other version or transport), with errmsg set. */
int shoal__desc_parse(shoal_ctx_t *ctx, const void *buf, size_t len,
                      struct shoal_desc *d);

/* Authentication (auth.c): read SHOAL_AUTH_FILE into ctx->auth_key (0
 * when unset; -EPERM for a file others can read, -EINVAL/-errno otherwise,
 * with errmsg), and wipe it. */
int shoal__auth_load(shoal_ctx_t *ctx);
void shoal__auth_free(shoal_ctx_t *ctx);
/* HMAC-SHA256 proof of @role ('C' client, 'S' server) over the
 * connection's ids and both nonces. */
int shoal__auth_proof(const uint8_t *key, size_t keylen, char role, uint8_t transport,
                      uint32_t client_id, uint32_t server_id,
                      const uint8_t nonce_c[SHOAL_NONCE_LEN],
                      const uint8_t nonce_s[SHOAL_NONCE_LEN], uint8_t out[SHOAL_PROOF_LEN]);

/* The providers in auto's order of preference (ctx.c; for shoal-info). */
const struct shoal_provider *const *shoal__providers(size_t *n);

/* Placement (topo.c): make the context's plan once the provider is up
 * (-EINVAL with errmsg for an impossible SHOAL_BIND), and drop it. */
int shoal__topo_ctx_init(shoal_ctx_t *ctx);
void shoal__topo_ctx_fini(shoal_ctx_t *ctx);
/* Syntax check of a SHOAL_BIND value (auto, none or a CPU list). */
int shoal__bind_check(const char *val, char *err, size_t errlen);
#endif
