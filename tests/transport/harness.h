/*
 * harness.h -- multi-process transport tests.
 *
 * A test is a set of roles (one server, one or more clients), each run in
 * its own forked child with its own shoal context, under a hard time
 * limit.  The CUnit process itself never touches a transport: it forks,
 * waits with a deadline, kills stragglers, and asserts on exit statuses.
 * A role fails by calling CHECK(), which prints where and why to stderr
 * and exits non-zero.  The server publishes its port (port 0 = the
 * kernel's choice, so tests never collide) through a pipe the clients read.
 */
#ifndef SHOAL_TESTS_HARNESS_H
#define SHOAL_TESTS_HARNESS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

#include "shoal.h"

/* The transport under test, and the host to listen on / connect to
 * (SHOAL_TEST_HOST, default 127.0.0.1; the rxe address in the VM). */
extern shoal_transport_t h_transport;
const char *h_host(void);

/* Role context handed to every role. */
struct h_role {
    int index;          /* 0 = server, 1.. = clients */
    int nclients;
    int port_rd, port_wr;
    void *arg;
};
typedef void (*h_role_fn)(struct h_role *r);

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: [pid %d] check failed: %s: ", __FILE__,    \
                    __LINE__, (int)getpid(), #cond);                            \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
            fflush(stderr);                                                     \
            _exit(3);                                                           \
        }                                                                       \
    } while (0)
#define CHECK_RC(rc, ctx, what)                                                 \
    do {                                                                        \
        int rc_ = (rc); /* evaluated once: it is often the call itself */      \
        CHECK(rc_ == 0, "%s: %s (%s)", what, shoal_strerror(rc_),               \
              (ctx) ? shoal_ctx_errmsg(ctx) : "");                              \
    } while (0)

/* Run @server and @nclients copies of @client, each in its own child, for
 * at most @timeout_s seconds.  Returns 0 when every child exited 0;
 * otherwise prints what went wrong and returns -1. */
int h_run(h_role_fn server, h_role_fn client, int nclients, void *arg,
          int timeout_s);

/* Of the last h_run: child @i's exit code (-1 if it was killed) and the
 * signal that killed it (0 if none).  0 = server, 1.. = clients. */
int h_last_status(int i);
int h_last_signal(int i);

/* In a role: a context on the transport under test. */
shoal_ctx_t *h_ctx(void);
/* Server: listen on port 0 and publish the port once per client. */
shoal_listener_t *h_listen(shoal_ctx_t *ctx, struct h_role *r);
/* Client: read the published port and connect. */
shoal_ep_t *h_connect(shoal_ctx_t *ctx, struct h_role *r);
/* Wait for the next event; it must be of @type (and on @ep if not NULL).
 * Successful SEND_DONEs are skipped unless @type is SEND_DONE. */
void h_expect(shoal_ctx_t *ctx, shoal_event_type_t type, shoal_ep_t *ep,
              int timeout_ms, shoal_event_t *out);
/* Send @mr's descriptor on @ep (its completion is left to h_expect to
 * skip) / receive the peer's and unpack it. */
void h_send_desc(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_mr_t *mr);
shoal_rmr_t *h_recv_desc(shoal_ctx_t *ctx, shoal_ep_t *ep);
/* Send / expect a small text token ("ready", "done", ...). */
void h_send_str(shoal_ctx_t *ctx, shoal_ep_t *ep, const char *s);
void h_expect_str(shoal_ctx_t *ctx, shoal_ep_t *ep, const char *s, int timeout_ms);
/* Wait for a successful PUT_DONE and the message @s, in either order. */
void h_expect_put_and_str(shoal_ctx_t *ctx, shoal_ep_t *ep, const char *s, int timeout_ms);
/* Deterministic test pattern: byte i of stream @seed. */
static inline uint8_t h_pattern(uint32_t seed, size_t i)
{
    uint32_t x = seed * 2654435761u + (uint32_t)i * 40503u + (uint32_t)(i >> 13);
    x ^= x >> 15;
    return (uint8_t)(x * 2246822519u >> 24);
}
void h_fill(void *buf, size_t len, uint32_t seed);
/* Index of the first byte that differs from the pattern, or -1. */
long h_verify(const void *buf, size_t len, uint32_t seed);
/* Aligned, zeroed allocation that CHECKs on failure. */
void *h_alloc(size_t len);
/* Milliseconds since some fixed point. */
uint64_t h_now_ms(void);
/* A TCP port nothing listens on (bound then closed). */
uint16_t h_closed_port(void);

#endif
