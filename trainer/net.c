/*
 * net.c -- shared networking steps of shoal-train (see net.h).
 */
#include "net.h"

#include <cblas.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "modelfile.h"
#include "report.h"

int net_ctx(shoal_ctx_t **ctx, char *err, size_t errlen)
{
    shoal_config_t cfg;
    shoal_config_init(&cfg);
    int rc = shoal_config_from_env(&cfg, err, errlen);
    if (rc)
        return rc;
    rc = shoal_ctx_create(&cfg, ctx);
    if (rc)
        snprintf(err, errlen, "cannot open a transport: %s", shoal_strerror(rc));
    return rc;
}

void net_place_compute(shoal_ctx_t *ctx, const struct train_cfg *c)
{
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    int n = c->threads;
    if (pl && pl->policy != SHOAL_BIND_NONE && pl->ncpus > 0 && n > pl->ncpus)
        n = pl->ncpus;
    openblas_set_num_threads(n);
    /* OpenBLAS's own threads inherit the caller's mask: bind only when the
     * work is this one thread. */
    if (n == 1 && pl && pl->policy != SHOAL_BIND_NONE)
        shoal_bind_thread(ctx, 0, 1);
}

const char *net_placement(const shoal_ctx_t *ctx)
{
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    return pl && pl->why[0] ? pl->why : "none";
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int net_coordinator(const struct train_cfg *c, char *host, size_t hostlen, uint16_t *port,
                    char *err, size_t errlen)
{
    if (!c->rendezvous[0]) {
        snprintf(host, hostlen, "%s", c->coord_host);
        *port = c->coord_port;
        return 0;
    }
    double deadline = now_s() + c->connect_timeout_ms / 1000.0;
    for (;;) {
        FILE *f = fopen(c->rendezvous, "r");
        if (f) {
            char h[PS_HOST_MAX];
            unsigned p;
            int n = fscanf(f, "%63s %u", h, &p);
            fclose(f);
            if (n == 2 && p > 0 && p < 65536) {
                snprintf(host, hostlen, "%s", h);
                *port = (uint16_t)p;
                return 0;
            }
            snprintf(err, errlen, "%s: not a rendezvous file (expected \"host port\")",
                     c->rendezvous);
            return -EINVAL;
        }
        if (now_s() > deadline) {
            snprintf(err, errlen, "%s: rank 0 did not publish its address within %d ms",
                     c->rendezvous, c->connect_timeout_ms);
            return -ETIMEDOUT;
        }
        sleep_ms(20);
    }
}

int net_publish(const struct train_cfg *c, const char *host, uint16_t port, char *err,
                size_t errlen)
{
    char line[PS_HOST_MAX + 16];
    int n = snprintf(line, sizeof(line), "%s %u\n", host, port);
    return atomic_write(c->rendezvous, line, (size_t)n, err, errlen);
}

int net_connect(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                shoal_ep_t **ep, char *err, size_t errlen)
{
    /* libshoal tries again, with backoff, while the failure may pass. */
    int rc = shoal_connect_retry(ctx, host, port, timeout_ms, ep);
    if (rc)
        snprintf(err, errlen, "cannot connect to %s:%u: %s", host, port,
                 shoal_ctx_errmsg(ctx));
    return rc;
}

int net_send(shoal_ep_t *ep, const struct ps_msg *m)
{
    uint8_t buf[SHOAL_MSG_MAX];
    int n = ps_encode(m, buf, sizeof(buf));
    if (n < 0)
        return n;
    return shoal_send(ep, buf, (size_t)n, (uint64_t)m->type);
}

void net_send_error(shoal_ep_t *ep, const char *fmt, ...)
{
    struct ps_msg m = {.type = PS_ERROR};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.u.error.text, sizeof(m.u.error.text), fmt, ap);
    va_end(ap);
    net_send(ep, &m);
}
