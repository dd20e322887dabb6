/*
 * ucx_ctx.c -- the UCX provider's context, worker, registration and
 * progress.  See ucx_ep.c for connections and ucx_rma.c for operations.
 *
 * Defaults.  UCX reads its own UCX_* variables; where the user has set
 * none, this provider picks TCP (UCX_TLS=tcp) and raises the TCP segment
 * sizes above UCX's 8 KiB default, which limits large puts
 * (docs/PERFORMANCE.md); and it lets a listener take a port whose old
 * connections still wait in TIME_WAIT (a job or a server restarted at once
 * on the same port).  A value the user set is never overridden.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "ucx_int.h"

/* UCX settings applied only when the user set none of the variables
 * named in `unless`.  ucp_config_modify() takes transport-level options
 * without their transport prefix (UCX 1.13 warns "invalid configuration"
 * for TCP_RX_SEG_SIZE), so the segment sizes are set only while TCP is
 * the one transport, where the unprefixed name means TCP alone. */
static const struct {
    const char *name, *value, *unless[2];
} ucx_defaults[] = {
    {"TLS", "tcp", {"UCX_TLS", NULL}},
    {"TX_SEG_SIZE", "1m", {"UCX_TLS", "UCX_TCP_TX_SEG_SIZE"}},
    {"RX_SEG_SIZE", "1m", {"UCX_TLS", "UCX_TCP_RX_SEG_SIZE"}},
    /* SO_REUSEADDR on listeners (TCP_CM_ and RDMA_CM_REUSEADDR). */
    {"CM_REUSEADDR", "y", {"UCX_TCP_CM_REUSEADDR", "UCX_RDMA_CM_REUSEADDR"}},
};

/* The TCP segment size in force: the smaller of UCX_TCP_{TX,RX}_SEG_SIZE
 * where the user set them (a number with an optional b/k/m/g suffix),
 * else our default above.  0 if it cannot be told. */
static size_t seg_size(void)
{
    size_t seg = 0;
    const char *names[] = {"UCX_TCP_TX_SEG_SIZE", "UCX_TCP_RX_SEG_SIZE"};
    for (int i = 0; i < 2; i++) {
        const char *v = getenv(names[i]);
        if (!v)
            v = "1m"; /* ucx_defaults */
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        switch (*end | 0x20) {
        case 'g': n <<= 10; /* fall through */
        case 'm': n <<= 10; /* fall through */
        case 'k': n <<= 10; end++; break;
        case 'b': end++; break;
        default: break;
        }
        if (end == v || *end)
            return 0;
        if (seg == 0 || n < seg)
            seg = (size_t)n;
    }
    return seg;
}

static int ucx_probe(const shoal_config_t *cfg, char *why, size_t whylen)
{
    (void)cfg;
    unsigned major, minor, release;
    ucp_get_version(&major, &minor, &release);
    const char *tls = getenv("UCX_TLS");
    snprintf(why, whylen, "UCX %u.%u.%u, transports %s", major, minor, release,
             tls ? tls : "tcp (default)");
    return 0;
}

static int ucx_ctx_init(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = calloc(1, sizeof(*u));
    if (!u)
        return shoal__fail(ctx, -ENOMEM, "ucx: out of memory");
    u->efd = -1;
    shoal__list_init(&u->pending);
    shoal__list_init(&u->failed);
    shoal__list_init(&u->mrs);
    ctx->priv = u;

    ucp_config_t *config;
    ucs_status_t st = ucp_config_read(NULL, NULL, &config);
    if (st != UCS_OK) {
        free(u);
        return shoal__fail(ctx, -EINVAL, "UCX configuration: %s (check UCX_* variables)",
                           ucs_status_string(st));
    }
    for (size_t i = 0; i < sizeof(ucx_defaults) / sizeof(ucx_defaults[0]); i++) {
        bool user_set = false;
        for (int k = 0; k < 2; k++)
            user_set |= ucx_defaults[i].unless[k] && getenv(ucx_defaults[i].unless[k]);
        if (user_set)
            continue;
        st = ucp_config_modify(config, ucx_defaults[i].name, ucx_defaults[i].value);
        if (st != UCS_OK)
            shoal__warn(ctx, "ucx: cannot set %s=%s: %s", ucx_defaults[i].name,
                        ucx_defaults[i].value, ucs_status_string(st));
    }
    ucp_params_t params = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED,
        .features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP,
        .mt_workers_shared = 0,
    };
    st = ucp_init(&params, config, &u->context);
    ucp_config_release(config);
    if (st != UCS_OK) {
        free(u);
        return shoal__fail(ctx, -ENODEV, "ucp_init: %s", ucs_status_string(st));
    }
    /* With the progress thread, two threads use the worker, one at a time
     * (the context's lock): SERIALIZED.  Otherwise only the caller's. */
    ucp_worker_params_t wp = {
        .field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
        .thread_mode = ctx->cfg.progress == SHOAL_PROGRESS_THREAD ? UCS_THREAD_MODE_SERIALIZED
                                                                  : UCS_THREAD_MODE_SINGLE,
    };
    st = ucp_worker_create(u->context, &wp, &u->worker);
    if (st != UCS_OK) {
        ucp_cleanup(u->context);
        free(u);
        return shoal__fail(ctx, -ENODEV, "ucp_worker_create: %s", ucs_status_string(st));
    }
    st = ucp_worker_get_efd(u->worker, &u->efd);
    int rc = st == UCS_OK ? ucx_am_init(ctx) : -EIO;
    if (rc) {
        ucp_worker_destroy(u->worker);
        ucp_cleanup(u->context);
        free(u);
        return shoal__fail(ctx, rc, "ucx worker setup: %s", ucs_status_string(st));
    }
    const char *tls = getenv("UCX_TLS");
    /* Placement follows the first of UCX_NET_DEVICES ("eth1", "mlx5_0:1"). */
    const char *nd = getenv("UCX_NET_DEVICES");
    if (nd && strcmp(nd, "all") != 0)
        snprintf(ctx->device, sizeof(ctx->device), "%.*s", (int)strcspn(nd, ","), nd);
    /* Over TCP alone, UCX emulates put on active messages (with peer
     * error handling, which we need); shoal's own PUT message does the
     * same with one copy less.  Other transports keep UCX's native put. */
    u->put_by_am = !tls || strcmp(tls, "tcp") == 0;
    /* A PUT message longer than one segment is reassembled by UCX in a
     * buffer it allocates (one copy and page faults more): cut puts into
     * pieces that fit, with room for UCX's and our headers. */
    size_t seg = seg_size();
    /* (A multiple of 64, so equal pieces rounded up to 64 never exceed it
     * and the last piece is never empty.) */
    u->put_piece = seg > 2 * UCX_SEG_HEADROOM ? (seg - UCX_SEG_HEADROOM) & ~(size_t)63 : 0;
    snprintf(ctx->describe, sizeof(ctx->describe), "ucx (UCX_TLS=%s%s)", tls ? tls : "tcp",
             u->put_by_am ? ", puts as active messages" : "");
    return 0;
}

static void ucx_ctx_fini(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    ucx_sweep_pending(ctx);
    ucp_worker_destroy(u->worker);
    ucp_cleanup(u->context);
    free(u->slots);
    free(u->gets);
    free(u);
}

static int ucx_mr_reg(shoal_mr_t *mr)
{
    shoal_ctx_t *ctx = mr->ctx;
    struct ucx_ctx *u = ucx_ctx(ctx);
    struct ucx_mr *m = calloc(1, sizeof(*m));
    if (!m)
        return shoal__fail(ctx, -ENOMEM, "mr_reg: out of memory");
    ucp_mem_map_params_t mp = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
        .address = mr->addr,
        .length = mr->len,
    };
    ucs_status_t st = ucp_mem_map(u->context, &mp, &m->memh);
    if (st != UCS_OK) {
        free(m);
        return shoal__fail(ctx, st == UCS_ERR_NO_MEMORY ? -ENOMEM : -EIO,
                           "ucp_mem_map of %zu bytes: %s", mr->len, ucs_status_string(st));
    }
    void *rkey;
    size_t rlen;
    st = ucp_rkey_pack(u->context, m->memh, &rkey, &rlen);
    if (st != UCS_OK || rlen + UCX_KEY_LEN > sizeof(mr->key) - 64) {
        if (st == UCS_OK)
            ucp_rkey_buffer_release(rkey);
        ucp_mem_unmap(u->context, m->memh);
        free(m);
        return shoal__fail(ctx, -EIO, "ucp_rkey_pack: %s (key of %zu bytes)",
                           ucs_status_string(st), st == UCS_OK ? rlen : 0);
    }
    if (getrandom(&m->key, sizeof(m->key), 0) != (ssize_t)sizeof(m->key)) {
        ucp_rkey_buffer_release(rkey);
        ucp_mem_unmap(u->context, m->memh);
        free(m);
        return shoal__fail(ctx, -EIO, "getrandom: %s", strerror(errno));
    }
    shoal__put_le64(mr->key, m->key);
    memcpy(mr->key + UCX_KEY_LEN, rkey, rlen);
    mr->keylen = (uint32_t)(UCX_KEY_LEN + rlen);
    ucp_rkey_buffer_release(rkey);
    m->mr = mr;
    shoal__list_add(&u->mrs, &m->node);
    mr->priv = m;
    return 0;
}

static void ucx_mr_dereg(shoal_mr_t *mr)
{
    struct ucx_mr *m = mr->priv;
    shoal__list_del(&m->node);
    ucp_mem_unmap(ucx_ctx(mr->ctx)->context, m->memh);
    free(m);
}

static int ucx_progress(shoal_ctx_t *ctx)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    int n = 0;
    unsigned done;
    u->in_progress = true;
    u->arrived = false;
    /* Drain (bounded), which keeps streams of puts and gets moving, but
     * return as soon as an immediate or message has arrived: someone is
     * probably waiting for it, and one more pass costs a system call. */
    do {
        done = ucp_worker_progress(u->worker);
        n += (int)done;
    } while (done && n < 64 && !u->arrived);
    u->in_progress = false;
    if (u->sweep || !shoal__list_empty(&u->pending))
        ucx_sweep_pending(ctx); /* also drops handshakes past their deadline */
    return n;
}

/*
 * Before a sleep (shoal_wait has already spun on progress, or the progress
 * thread is idle): arm the worker; the core then sleeps in poll() on its
 * event fd until UCX signals work or the timeout passes.
 */
static int ucx_wait_fds(shoal_ctx_t *ctx, struct pollfd *fds, int *timeout_ms)
{
    struct ucx_ctx *u = ucx_ctx(ctx);
    (void)timeout_ms;
    ucs_status_t st = ucp_worker_arm(u->worker);
    if (st == UCS_ERR_BUSY)
        return 0; /* events are pending: go and progress */
    if (st != UCS_OK)
        return shoal__fail(ctx, -EIO, "ucp_worker_arm: %s", ucs_status_string(st));
    fds[0] = (struct pollfd){.fd = u->efd, .events = POLLIN};
    return 1;
}

const struct shoal_provider shoal_ucx_provider = {
    .name = "ucx",
    .transport = SHOAL_TRANSPORT_UCX,
    .probe = ucx_probe,
    .ctx_init = ucx_ctx_init,
    .ctx_fini = ucx_ctx_fini,
    .mr_reg = ucx_mr_reg,
    .mr_dereg = ucx_mr_dereg,
    .rmr_init = ucx_rmr_init,
    .rmr_fini = ucx_rmr_fini,
    .listen = ucx_listen,
    .listener_close = ucx_listener_close,
    .connect = ucx_connect,
    .ep_close = ucx_ep_close,
    .put = ucx_put,
    .get = ucx_get,
    .send = ucx_send,
    .progress = ucx_progress,
    .wait_fds = ucx_wait_fds,
};
