/*
 * harness.c -- process management and helpers for the transport tests;
 * see harness.h.
 */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

shoal_transport_t h_transport = SHOAL_TRANSPORT_UCX;

/* Raw wait statuses of the last h_run's children. */
static int last_status[16];
static int last_n;

int h_last_status(int i)
{
    if (i >= last_n || !WIFEXITED(last_status[i]))
        return -1;
    return WEXITSTATUS(last_status[i]);
}

int h_last_signal(int i)
{
    if (i >= last_n || !WIFSIGNALED(last_status[i]))
        return 0;
    return WTERMSIG(last_status[i]);
}

const char *h_host(void)
{
    const char *h = getenv("SHOAL_TEST_HOST");
    return h && *h ? h : "127.0.0.1";
}

uint64_t h_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int h_run(h_role_fn server, h_role_fn client, int nclients, void *arg, int timeout_s)
{
    int fds[2];
    if (pipe(fds))
        return -1;
    int n = nclients + 1;
    pid_t pids[16];
    int status[16];
    bool done[16] = {false};
    fflush(stdout);
    fflush(stderr);
    for (int i = 0; i < n && i < 16; i++) {
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            /* The child: a hard limit in case the parent dies too. */
            alarm((unsigned)timeout_s + 5);
            struct h_role r = {.index = i, .nclients = nclients, .port_rd = fds[0],
                               .port_wr = fds[1], .arg = arg};
            (i == 0 ? server : client)(&r);
            fflush(stdout);
            _exit(0);
        }
        pids[i] = pid;
    }
    close(fds[0]);
    close(fds[1]);
    uint64_t deadline = h_now_ms() + (uint64_t)timeout_s * 1000u;
    int left = n, rc = 0;
    last_n = 0;
    while (left > 0) {
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            pid_t w = waitpid(pids[i], &status[i], WNOHANG);
            if (w == pids[i]) {
                done[i] = true;
                left--;
            }
        }
        if (left && h_now_ms() > deadline) {
            fprintf(stderr, "harness: time limit of %d s reached; killing %d role(s)\n",
                    timeout_s, left);
            for (int i = 0; i < n; i++)
                if (!done[i]) {
                    kill(pids[i], SIGKILL);
                    waitpid(pids[i], &status[i], 0);
                    done[i] = true;
                    fprintf(stderr, "harness: %s %d hung\n", i ? "client" : "server", i);
                }
            memcpy(last_status, status, sizeof(int) * (size_t)n);
            last_n = n;
            return -1;
        }
        if (left)
            usleep(2000);
    }
    memcpy(last_status, status, sizeof(int) * (size_t)n);
    last_n = n;
    for (int i = 0; i < n; i++) {
        if (WIFEXITED(status[i]) && WEXITSTATUS(status[i]) == 0)
            continue;
        rc = -1;
        if (WIFSIGNALED(status[i]))
            fprintf(stderr, "harness: %s %d killed by signal %d\n", i ? "client" : "server",
                    i, WTERMSIG(status[i]));
        else
            fprintf(stderr, "harness: %s %d exited with %d\n", i ? "client" : "server", i,
                    WEXITSTATUS(status[i]));
    }
    return rc;
}

shoal_ctx_t *h_ctx(void)
{
    shoal_config_t cfg;
    char err[256];
    shoal_config_init(&cfg);
    int rc = shoal_config_from_env(&cfg, err, sizeof(err));
    CHECK(rc == 0, "config: %s", err);
    cfg.transport = h_transport;
    shoal_ctx_t *ctx = NULL;
    rc = shoal_ctx_create(&cfg, &ctx);
    CHECK(rc == 0, "ctx_create(%s): %s", shoal_transport_name(h_transport), shoal_strerror(rc));
    return ctx;
}

shoal_listener_t *h_listen(shoal_ctx_t *ctx, struct h_role *r)
{
    shoal_listener_t *l;
    int rc = shoal_listen(ctx, h_host(), 0, &l);
    CHECK_RC(rc, ctx, "listen");
    uint16_t port = shoal_listener_port(l);
    CHECK(port != 0, "listener has no port");
    for (int i = 0; i < r->nclients; i++)
        CHECK(write(r->port_wr, &port, sizeof(port)) == sizeof(port), "publish port");
    return l;
}

shoal_ep_t *h_connect(shoal_ctx_t *ctx, struct h_role *r)
{
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1, "no port published by the server");
    CHECK(read(r->port_rd, &port, sizeof(port)) == sizeof(port), "read port");
    shoal_ep_t *ep;
    int rc = shoal_connect(ctx, h_host(), port, &ep);
    CHECK_RC(rc, ctx, "connect");
    return ep;
}

void h_expect(shoal_ctx_t *ctx, shoal_event_type_t type, shoal_ep_t *ep, int timeout_ms,
              shoal_event_t *out)
{
    shoal_event_t ev;
    int n;
    /* Completions of our own control messages may trail behind the
     * peer's answers: skip them unless they are what we wait for. */
    do
        n = shoal_wait(ctx, &ev, 1, timeout_ms);
    while (n == 1 && type != SHOAL_EV_SEND_DONE && ev.type == SHOAL_EV_SEND_DONE &&
           ev.status == 0);
    CHECK(n == 1, "waiting %d ms for %s: %s", timeout_ms, shoal_event_name(type),
          n == 0 ? "timed out" : shoal_strerror(n));
    CHECK(ev.type == type, "expected %s, got %s (status %d, %s)", shoal_event_name(type),
          shoal_event_name(ev.type), ev.status, ev.reason ? ev.reason : "");
    CHECK(!ep || ev.ep == ep, "%s on the wrong endpoint", shoal_event_name(type));
    if (out)
        *out = ev;
}

void h_send_desc(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_mr_t *mr)
{
    uint8_t buf[SHOAL_DESC_MAX];
    size_t len;
    int rc = shoal_mr_pack(mr, buf, sizeof(buf), &len);
    CHECK_RC(rc, ctx, "mr_pack");
    rc = shoal_send(ep, buf, len, 0xde5c);
    CHECK_RC(rc, ctx, "send descriptor");
}

shoal_rmr_t *h_recv_desc(shoal_ctx_t *ctx, shoal_ep_t *ep)
{
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_RECV, ep, 10000, &ev);
    shoal_rmr_t *rmr;
    int rc = shoal_rmr_unpack(ep, ev.data, ev.len, &rmr);
    CHECK_RC(rc, ctx, "rmr_unpack");
    return rmr;
}

void h_send_str(shoal_ctx_t *ctx, shoal_ep_t *ep, const char *s)
{
    int rc = shoal_send(ep, s, strlen(s), 0x5157);
    CHECK_RC(rc, ctx, "send string");
}

void h_expect_str(shoal_ctx_t *ctx, shoal_ep_t *ep, const char *s, int timeout_ms)
{
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_RECV, ep, timeout_ms, &ev);
    CHECK(ev.len == strlen(s) && memcmp(ev.data, s, ev.len) == 0,
          "expected message '%s', got %zu bytes", s, ev.len);
}

void h_fill(void *buf, size_t len, uint32_t seed)
{
    uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        p[i] = h_pattern(seed, i);
}

long h_verify(const void *buf, size_t len, uint32_t seed)
{
    const uint8_t *p = buf;
    for (size_t i = 0; i < len; i++)
        if (p[i] != h_pattern(seed, i))
            return (long)i;
    return -1;
}

void *h_alloc(size_t len)
{
    void *p = NULL;
    CHECK(posix_memalign(&p, 4096, len ? len : 1) == 0, "allocating %zu bytes", len);
    memset(p, 0, len);
    return p;
}

uint16_t h_closed_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof(a);
    CHECK(s >= 0 && bind(s, (struct sockaddr *)&a, sizeof(a)) == 0 &&
              getsockname(s, (struct sockaddr *)&a, &l) == 0,
          "binding a probe socket");
    close(s);
    return ntohs(a.sin_port);
}

void h_expect_put_and_str(shoal_ctx_t *ctx, shoal_ep_t *ep, const char *s, int timeout_ms)
{
    bool put = false, msg = false;
    while (!put || !msg) {
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, timeout_ms);
        CHECK(n == 1, "waiting for put completion and '%s': %s", s,
              n ? shoal_strerror(n) : "timed out");
        CHECK(ev.ep == ep, "%s on another endpoint", shoal_event_name(ev.type));
        if (ev.type == SHOAL_EV_PUT_DONE && ev.status == 0 && !put)
            put = true;
        else if (ev.type == SHOAL_EV_RECV && !msg)
            msg = ev.len == strlen(s) && memcmp(ev.data, s, ev.len) == 0;
        else
            CHECK(ev.type == SHOAL_EV_SEND_DONE && ev.status == 0, "unexpected %s",
                  shoal_event_name(ev.type));
        CHECK(ev.type != SHOAL_EV_RECV || msg, "expected message '%s'", s);
    }
}
