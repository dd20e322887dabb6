/*
 * fuzz-common.h -- a context and endpoint for the fuzz targets, without a
 * transport: the wire decoders and the handshake only read ctx->prov's
 * name and transport, log through ctx->cfg.log_level, and (rmr_unpack)
 * call the provider's rmr_init/rmr_fini, stubbed here.
 */
#ifndef SHOAL_FUZZ_COMMON_H
#define SHOAL_FUZZ_COMMON_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

/* config.c's SHOAL_BIND check lives in topo.c (hwloc); not fuzzed here. */
int shoal__bind_check(const char *val, char *err, size_t errlen)
{
    (void)val;
    (void)err;
    (void)errlen;
    return 0;
}

static int fz_rmr_init(shoal_rmr_t *rmr)
{
    /* Like verbs: a 4-byte key, anything else refused. */
    return rmr->keylen == 4 ? 0 : -EBADMSG;
}
static void fz_rmr_fini(shoal_rmr_t *rmr) { (void)rmr; }

static const struct shoal_provider fz_prov[2] = {
    {.name = "ucx", .transport = SHOAL_TRANSPORT_UCX, .rmr_init = fz_rmr_init,
     .rmr_fini = fz_rmr_fini},
    {.name = "verbs", .transport = SHOAL_TRANSPORT_VERBS, .rmr_init = fz_rmr_init,
     .rmr_fini = fz_rmr_fini},
};

/* A context on fake transport @t (0 ucx, 1 verbs) with or without a
 * secret, quiet (errors only), and one endpoint in @state. */
static void fz_setup(shoal_ctx_t *ctx, shoal_ep_t *ep, int t, bool secret,
                     enum shoal_ep_state state)
{
    static uint8_t key[] = "fuzzing-secret-0123456789abcdef";
    memset(ctx, 0, sizeof(*ctx));
    shoal_config_init(&ctx->cfg);
    ctx->cfg.log_level = SHOAL_LOG_ERROR;
    ctx->prov = &fz_prov[t & 1];
    shoal__list_init(&ctx->eps);
    if (secret) {
        ctx->auth_key = key;
        ctx->auth_keylen = sizeof(key) - 1;
        snprintf(ctx->cfg.auth_file, sizeof(ctx->cfg.auth_file), "fuzz.key");
    }
    memset(ep, 0, sizeof(*ep));
    ep->ctx = ctx;
    ep->state = state;
    shoal__list_init(&ep->rmrs);
    shoal__list_init(&ep->node);
    snprintf(ep->peer, sizeof(ep->peer), "192.0.2.1:4242");
}

#define FZ_CHECK(cond)                                                           \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                      \
            abort();                                                             \
        }                                                                        \
    } while (0)

#endif
