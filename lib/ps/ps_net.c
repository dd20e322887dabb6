/*
 * ps_net.c -- networking steps of the PS layer (see ps_net.h).
 */
#include "ps_net.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ps_int.h"

int ps_net_ctx(shoal_ctx_t **ctx, bool progress_thread, int waiters, char *err,
               size_t errlen)
{
    shoal_config_t cfg;
    shoal_config_init(&cfg);
    if (progress_thread) {
        /* Only when the library knows the option (and the user set nothing). */
        char e2[64];
        if (!getenv("SHOAL_PROGRESS"))
            (void)shoal_config_set(&cfg, "PROGRESS", "thread", e2, sizeof(e2));
    }
    int rc = shoal_config_from_env(&cfg, err, errlen);
    if (rc)
        return rc;
    /* A co-located worker and server poll on two contexts: with a 100 us
     * spin each, the round took 4x as long on 2 CPUs (perf/ps-scale). */
    cfg.waiters = waiters;
    rc = shoal_ctx_create(&cfg, ctx);
    if (rc)
        snprintf(err, errlen, "cannot open a transport: %s", shoal_strerror(rc));
    return rc;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int ps_net_coordinator(const shoal_ps_config_t *c, char *host, size_t hostlen, uint16_t *port,
                       char *err, size_t errlen)
{
    if (!c->rendezvous[0]) {
        if (ps_parse_hostport(c->coordinator, host, hostlen, port)) {
            snprintf(err, errlen, "coordinator '%s' is not host:port", c->coordinator);
            return -EINVAL;
        }
        return 0;
    }
    double deadline = ps_now() + c->connect_timeout_ms / 1000.0;
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
        if (ps_now() > deadline) {
            snprintf(err, errlen, "%s: rank 0 did not publish its address within %d ms",
                     c->rendezvous, c->connect_timeout_ms);
            return -ETIMEDOUT;
        }
        sleep_ms(20);
    }
}

int ps_net_publish(const shoal_ps_config_t *c, const char *host, uint16_t port, char *err,
                   size_t errlen)
{
    char line[PS_HOST_MAX + 16];
    int n = snprintf(line, sizeof(line), "%s %u\n", host, port);
    return ps_atomic_write(c->rendezvous, line, (size_t)n, err, errlen);
}

int ps_net_connect(shoal_ctx_t *ctx, const char *host, uint16_t port, int timeout_ms,
                   shoal_ep_t **ep, char *err, size_t errlen)
{
    /* libshoal tries again, with backoff, while the failure may pass. */
    int rc = shoal_connect_retry(ctx, host, port, timeout_ms, ep);
    if (rc)
        snprintf(err, errlen, "cannot connect to %s:%u: %s", host, port,
                 shoal_ctx_errmsg(ctx));
    return rc;
}

int ps_net_send(shoal_ep_t *ep, const struct ps_msg *m)
{
    uint8_t buf[SHOAL_MSG_MAX];
    int n = ps_encode(m, buf, sizeof(buf));
    if (n < 0)
        return n;
    return shoal_send(ep, buf, (size_t)n, (uint64_t)m->type);
}

void ps_net_send_error(shoal_ep_t *ep, const char *fmt, ...)
{
    struct ps_msg m = {.type = PS_ERROR};
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m.u.error.text, sizeof(m.u.error.text), fmt, ap);
    va_end(ap);
    ps_net_send(ep, &m);
}
