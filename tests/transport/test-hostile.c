/*
 * test-hostile.c -- authentication (SHOAL_AUTH_FILE) and hostile input on
 * real connections, once per transport in the list (same selection as
 * test-transport: argv, SHOAL_TEST_TRANSPORTS, or ucx plus verbs when
 * usable).
 *
 *  - the same secret on both sides: connected, messages flow both ways;
 *  - a wrong secret, a secret on one side only: connect fails with
 *    -EACCES and a message naming the problem; the server logs the refusal
 *    at warn with the peer's address, hands no endpoint to accept(), and
 *    then serves a good client;
 *  - a secret file others can read, a short one, a missing one: context
 *    creation fails with a clear error;
 *  - UCX: random bytes, truncated, oversized and silent connections sent
 *    with plain TCP sockets to the listening port never crash or hang the
 *    server, and it serves a good client afterwards;
 *  - UCX: a UCP client that connects and says nothing, or sends a hello
 *    with a nonce and never its proof, is dropped after the connect
 *    timeout, logged, and never reaches accept().
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ucp/api/ucp.h>

#include "../cu.h"
#include "harness.h"

/* ---- secrets ------------------------------------------------------------ */

static char tmpdir[64];
static char secret_a[128], secret_b[128];

static int write_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, text, strlen(text));
    close(fd);
    return n == (ssize_t)strlen(text) && chmod(path, mode) == 0 ? 0 : -1;
}

static int make_secrets(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/shoal-hostile.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(secret_a, sizeof(secret_a), "%s/a.key", tmpdir);
    snprintf(secret_b, sizeof(secret_b), "%s/b.key", tmpdir);
    /* b is group-readable: allowed (only "others" is refused). */
    if (write_file(secret_a, "c2hvYWwtdGVzdC1zZWNyZXQtQUFBQUFBQUFBQUFB\n", 0600) ||
        write_file(secret_b, "c2hvYWwtdGVzdC1zZWNyZXQtQkJCQkJCQkJCQkJC\n", 0640))
        return -1;
    return 0;
}

static void remove_secrets(void)
{
    char p[160];
    const char *names[] = {"a.key", "b.key", "open.key", "short.key", "server.log"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
        unlink(p);
    }
    rmdir(tmpdir);
}

/* In a role: use @path as SHOAL_AUTH_FILE (NULL = none). */
static void use_secret(const char *path)
{
    if (path)
        setenv("SHOAL_AUTH_FILE", path, 1);
    else
        unsetenv("SHOAL_AUTH_FILE");
}

/* ---- a server that refuses bad clients and then serves a good one ------- */

struct auth_case {
    const char *server_secret;  /* SHOAL_AUTH_FILE of the server */
    const char *bad_secret;     /* of the client that must be refused */
    bool bad_client;            /* false: no bad client (both sides agree) */
    const char *client_says;    /* text the refused client's error must contain */
    const char *server_says;    /* text the server's warning must contain */
};

static char log_path[160];

/* Send "ping", expect "pong" (client) or the reverse (server). */
static void exchange(shoal_ctx_t *ctx, shoal_ep_t *ep, bool server)
{
    if (server) {
        h_expect_str(ctx, ep, "ping", 20000);
        h_send_str(ctx, ep, "pong");
    } else {
        h_send_str(ctx, ep, "ping");
        h_expect_str(ctx, ep, "pong", 20000);
    }
}

static void auth_server(struct h_role *r)
{
    const struct auth_case *c = r->arg;
    /* Our warnings go to a file the test reads afterwards. */
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && dup2(fd, 2) == 2, "redirect stderr");
    close(fd);
    use_secret(c->server_secret);
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    /* The only endpoint accept() may ever return is the good client's. */
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    exchange(ctx, ep, true);
    /* ... and nothing else is waiting. */
    shoal_ep_t *extra = NULL;
    int rc = shoal_accept(l, 200, &extra);
    CHECK(rc == -ETIMEDOUT && extra == NULL, "a second endpoint was handed out (%s)",
          shoal_strerror(rc));
    h_expect_str(ctx, ep, "bye", 20000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void auth_client(struct h_role *r)
{
    const struct auth_case *c = r->arg;
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "no port published");
    shoal_ep_t *ep = NULL;
    if (c->bad_client) {
        use_secret(c->bad_secret);
        shoal_ctx_t *bad = h_ctx();
        uint64_t t0 = h_now_ms();
        int rc = shoal_connect(bad, h_host(), port, &ep);
        const char *msg = shoal_ctx_errmsg(bad);
        fprintf(stderr, "refused client: %s (%s) after %llu ms\n", shoal_strerror(rc), msg,
                (unsigned long long)(h_now_ms() - t0));
        CHECK(rc == -EACCES, "connect with the wrong secret: %s (%s), expected -EACCES",
              shoal_strerror(rc), msg);
        CHECK(ep == NULL, "an endpoint was returned");
        CHECK(strstr(msg, c->client_says), "message '%s' lacks '%s'", msg, c->client_says);
        CHECK(h_now_ms() - t0 < 5000, "refusal took %llu ms",
              (unsigned long long)(h_now_ms() - t0));
        shoal_ctx_destroy(bad);
    }
    use_secret(c->server_secret);
    shoal_ctx_t *ctx = h_ctx();
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "good client connect");
    exchange(ctx, ep, false);
    h_send_str(ctx, ep, "bye");
    /* Let "bye" leave before closing. */
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 20000, &ev);
    shoal_ep_close(ep);
    shoal_ctx_destroy(ctx);
}

static void run_auth_case(const struct auth_case *c)
{
    snprintf(log_path, sizeof(log_path), "%s/server.log", tmpdir);
    int rc = h_run(auth_server, auth_client, 1, (void *)c, 60);
    CU_ASSERT_EQUAL(rc, 0);
    /* The server's log: the refusal, at warn, naming the peer. */
    char buf[8192] = "";
    int fd = open(log_path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    if (!c->bad_client) {
        CU_ASSERT_PTR_NULL(strstr(buf, "refused"));
        return;
    }
    char want[128];
    snprintf(want, sizeof(want), "refused connection from %s:", h_host());
    char *hit = strstr(buf, want);
    CU_ASSERT_PTR_NOT_NULL(hit);
    if (hit) {
        char *line = hit;
        while (line > buf && line[-1] != '\n')
            line--;
        char *eol = strchr(hit, '\n');
        if (eol)
            *eol = '\0';
        CU_ASSERT_PTR_NOT_NULL(strstr(hit, c->server_says));
        /* at warn level: "[time] shoal[pid] warn: ..." */
        CU_ASSERT_PTR_NOT_NULL(strstr(line, "] warn: "));
        printf("  server: %s\n", line);
    } else {
        fprintf(stderr, "server log:\n%s\n", buf);
    }
}

static void test_auth_same(void)
{
    struct auth_case c = {.server_secret = secret_a};
    run_auth_case(&c);
}

static void test_auth_wrong(void)
{
    struct auth_case c = {.server_secret = secret_a, .bad_secret = secret_b, .bad_client = true,
                          .client_says = "does not match",
                          .server_says = "does not match its secret"};
    run_auth_case(&c);
}

static void test_auth_client_none(void)
{
    struct auth_case c = {.server_secret = secret_a, .bad_secret = NULL, .bad_client = true,
                          .client_says = "requires authentication",
                          .server_says = "sent no authentication"};
    run_auth_case(&c);
}

static void test_auth_server_none(void)
{
    struct auth_case c = {.server_secret = NULL, .bad_secret = secret_a, .bad_client = true,
                          .client_says = "server has no secret",
                          .server_says = "this side has none"};
    run_auth_case(&c);
}

/* ---- bad secret files --------------------------------------------------- */

static void bad_file_role(struct h_role *r)
{
    (void)r;
    char path[160];
    shoal_config_t cfg;
    char err[256];
    shoal_ctx_t *ctx = NULL;
    struct {
        const char *name, *text;
        mode_t mode;
        int want;
    } cases[] = {
        {"open.key", "0123456789abcdef0123456789abcdef", 0644, -EPERM},
        {"short.key", "tooshort\n", 0600, -EINVAL},
        {"missing.key", NULL, 0, -ENOENT},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", tmpdir, cases[i].name);
        if (cases[i].text) {
            int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            CHECK(fd >= 0 && write(fd, cases[i].text, strlen(cases[i].text)) > 0, "write");
            close(fd);
            CHECK(chmod(path, cases[i].mode) == 0, "chmod");
        }
        shoal_config_init(&cfg);
        cfg.transport = h_transport;
        CHECK(shoal_config_set(&cfg, "AUTH_FILE", path, err, sizeof(err)) == 0, "%s", err);
        int rc = shoal_ctx_create(&cfg, &ctx);
        CHECK(rc == cases[i].want, "%s: ctx_create: %s, expected %s", cases[i].name,
              shoal_strerror(rc), shoal_strerror(cases[i].want));
    }
    /* A path too long for the field is refused when set. */
    char longp[SHOAL_AUTH_FILE_MAX + 8];
    memset(longp, 'x', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    CHECK(shoal_config_set(&cfg, "AUTH_FILE", longp, err, sizeof(err)) == -EINVAL &&
              strstr(err, "SHOAL_AUTH_FILE"), "long path: %s", err);
}

static void test_bad_files(void)
{
    CU_ASSERT_EQUAL(h_run(bad_file_role, bad_file_role, 0, NULL, 30), 0);
}

/* ---- plain TCP garbage at the UCX listener ------------------------------ */

static uint32_t rng_state;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 17;
    rng_state ^= rng_state << 5;
    return rng_state;
}

static int tcp_connect(uint16_t port)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(s >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, h_host(), &sin.sin_addr) == 1, "address %s", h_host());
    CHECK(connect(s, (struct sockaddr *)&sin, sizeof(sin)) == 0, "tcp connect to %u: %s",
          port, strerror(errno));
    return s;
}

/* Write what the server takes within a short time; a server that stops
 * reading is fine (it may have dropped us), a blocked write is not ours
 * to wait for. */
static void send_some(int s, const uint8_t *buf, size_t len)
{
    fcntl(s, F_SETFL, O_NONBLOCK);
    size_t off = 0;
    uint64_t t0 = h_now_ms();
    while (off < len && h_now_ms() - t0 < 500) {
        ssize_t n = send(s, buf + off, len - off, MSG_NOSIGNAL);
        if (n > 0)
            off += (size_t)n;
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            break;
        else
            usleep(1000);
    }
}

static void garbage_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    /* Progressing all along; the good client comes after the garbage. */
    CHECK_RC(shoal_accept(l, 60000, &ep), ctx, "accept after the garbage");
    exchange(ctx, ep, true);
    h_expect_str(ctx, ep, "bye", 20000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void garbage_client(struct h_role *r)
{
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "no port published");
    rng_state = 0x5ea1u; /* fixed seed: the same garbage every run */
    static uint8_t big[4 << 20];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)rnd();
    int held[8];
    int nheld = 0;
    const char *only = getenv("HOSTILE_ONLY"); /* for exploring: run one group */
#define GROUP(n) if (!only || atoi(only) == (n))
    /* 1. Random bytes of random lengths, one connection each. */
    GROUP(1)
    for (int i = 0; i < 40; i++) {
        int s = tcp_connect(port);
        size_t len = 1 + rnd() % (i < 30 ? 512 : 65536);
        send_some(s, big + rnd() % (sizeof(big) - len), len);
        close(s);
    }
    /* 2. Headers that announce a large length, then stop (truncated). */
    GROUP(2)
    for (int i = 0; i < 10; i++) {
        uint8_t hdr[64];
        for (size_t k = 0; k < sizeof(hdr); k++)
            hdr[k] = (uint8_t)rnd();
        /* Lengths that do not wrap when UCX adds its header size to
         * them (those that do are the known UCX abort, below). */
        uint64_t huge = i % 2 ? 0x7fffffffull : 0x10000ull;
        memcpy(hdr, &huge, sizeof(huge));
        memcpy(hdr + 8, &huge, sizeof(huge));
        int s = tcp_connect(port);
        send_some(s, hdr, 8 + (size_t)i * 5);
        close(s);
    }
    /* 3. Oversized: megabytes of junk. */
    GROUP(3)
    for (int i = 0; i < 2; i++) {
        int s = tcp_connect(port);
        send_some(s, big, sizeof(big));
        close(s);
    }
    /* 4. Connections that say nothing and stay open, and an all-zero one. */
    GROUP(4)
    for (int i = 0; i < 4; i++)
        held[nheld++] = tcp_connect(port);
    /* 5. Only with --known-ucx-abort: a connection-request header whose
     * length is 0 (or wraps), followed by more bytes.  UCX 1.13's
     * tcp_sockcm asserts on it and aborts the whole process (see
     * docs/ARCHITECTURE.md, "Hostile input"). */
    if (only && atoi(only) == 5) {
        static const uint8_t zeros[4096];
        for (int i = 0; i < 3; i++) { /* more than once: not a matter of timing */
            int s = tcp_connect(port);
            send_some(s, zeros, sizeof(zeros));
            held[nheld++] = s;
            usleep(100000);
        }
    }
    /* 5. A good client, while the silent ones are still open. */
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep;
    uint64_t t0 = h_now_ms();
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "good client after the garbage");
    fprintf(stderr, "good client connected %llu ms after the garbage\n",
            (unsigned long long)(h_now_ms() - t0));
    exchange(ctx, ep, false);
    h_send_str(ctx, ep, "bye");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 20000, &ev);
    shoal_ep_close(ep);
    shoal_ctx_destroy(ctx);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
}

static void test_tcp_garbage(void)
{
    CU_ASSERT_EQUAL(h_run(garbage_server, garbage_client, 1, NULL, 90), 0);
}

/* ---- UCP clients that never finish the handshake ----------------------------- */

/* A client written against UCP directly: it connects to the shoal port (so
 * the server has a half-open endpoint) and then either says nothing or
 * sends a hello announcing a secret and never its proof.  The server must
 * drop it after SHOAL_CONNECT_TIMEOUT, log that, and hand nothing to
 * accept(). */
enum { STALL_SILENT = 0, STALL_NO_PROOF = 1 };
#define STALL_TIMEOUT_MS 1000

static ucs_status_t ignore_am(void *arg, const void *header, size_t hlen, void *data,
                              size_t len, const ucp_am_recv_param_t *param)
{
    (void)arg, (void)header, (void)hlen, (void)data, (void)len, (void)param;
    return UCS_OK;
}

static void stall_client(struct h_role *r)
{
    int how = *(int *)r->arg;
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "no port published");
    ucp_config_t *cfg;
    ucp_context_h uctx;
    ucp_worker_h w;
    ucp_ep_h uep;
    CHECK(ucp_config_read(NULL, NULL, &cfg) == UCS_OK, "ucp_config_read");
    ucp_params_t up = {.field_mask = UCP_PARAM_FIELD_FEATURES, .features = UCP_FEATURE_AM};
    CHECK(ucp_init(&up, cfg, &uctx) == UCS_OK, "ucp_init");
    ucp_config_release(cfg);
    ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};
    CHECK(ucp_worker_create(uctx, &wp, &w) == UCS_OK, "ucp_worker_create");
    /* The server's HELLO_ACK (id 1) comes back: take it and ignore it. */
    ucp_am_handler_param_t hp = {
        .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_FLAGS,
        .id = 1, .cb = ignore_am, .flags = UCP_AM_FLAG_WHOLE_MSG};
    CHECK(ucp_worker_set_am_recv_handler(w, &hp) == UCS_OK, "set_am_recv_handler");
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, h_host(), &sin.sin_addr) == 1, "address");
    ucp_ep_params_t ep = {
        .field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                      UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE,
        .flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER,
        .sockaddr = {.addr = (struct sockaddr *)&sin, .addrlen = sizeof(sin)},
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
    };
    CHECK(ucp_ep_create(w, &ep, &uep) == UCS_OK, "ucp_ep_create");
    if (how == STALL_NO_PROOF) {
        /* A shoal hello (version 3, transport ucx, flags AUTH) and a
         * nonce, as HELLO (active message 0): then silence. */
        static uint8_t hello[32] = {0x53, 0x4f, 0x41, 0x4c, 3, 0, SHOAL_TRANSPORT_UCX, 1,
                                    1, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
        ucp_request_param_t rp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                  .flags = UCP_AM_SEND_FLAG_REPLY};
        ucs_status_ptr_t req = ucp_am_send_nbx(uep, 0, hello, sizeof(hello), NULL, 0, &rp);
        CHECK(!UCS_PTR_IS_ERR(req), "ucp_am_send_nbx");
        while (req && ucp_request_check_status(req) == UCS_INPROGRESS)
            ucp_worker_progress(w);
        if (req)
            ucp_request_free(req);
    }
    /* Stay connected, progressing, well past the server's timeout. */
    uint64_t t0 = h_now_ms();
    while (h_now_ms() - t0 < STALL_TIMEOUT_MS + 2500) {
        ucp_worker_progress(w);
        usleep(1000);
    }
    ucp_request_param_t cp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                              .flags = UCP_EP_CLOSE_FLAG_FORCE};
    ucs_status_ptr_t req = ucp_ep_close_nbx(uep, &cp);
    while (req && !UCS_PTR_IS_ERR(req) && ucp_request_check_status(req) == UCS_INPROGRESS)
        ucp_worker_progress(w);
    if (req && !UCS_PTR_IS_ERR(req))
        ucp_request_free(req);
    ucp_worker_destroy(w);
    ucp_cleanup(uctx);
}

static void stall_server(struct h_role *r)
{
    int how = *(int *)r->arg;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && dup2(fd, 2) == 2, "redirect stderr");
    close(fd);
    use_secret(how == STALL_NO_PROOF ? secret_a : NULL);
    char t[16];
    snprintf(t, sizeof(t), "%d", STALL_TIMEOUT_MS);
    setenv("SHOAL_CONNECT_TIMEOUT", t, 1);
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep = NULL;
    int rc = shoal_accept(l, STALL_TIMEOUT_MS + 2000, &ep);
    CHECK(rc == -ETIMEDOUT && !ep, "accept: %s for a client that never finished",
          shoal_strerror(rc));
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void run_stall(int how)
{
    snprintf(log_path, sizeof(log_path), "%s/server.log", tmpdir);
    CU_ASSERT_EQUAL(h_run(stall_server, stall_client, 1, &how, 30), 0);
    char buf[8192] = "";
    int fd = open(log_path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    char want[96];
    snprintf(want, sizeof(want), "handshake not finished within %d ms; dropped",
             STALL_TIMEOUT_MS);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, want));
    if (!strstr(buf, want))
        fprintf(stderr, "server log:\n%s\n", buf);
}

static void test_stall_silent(void) { run_stall(STALL_SILENT); }
static void test_stall_no_proof(void) { run_stall(STALL_NO_PROOF); }

/* ---- suite setup (as test-transport) -------------------------------------- */

static bool transport_usable(shoal_transport_t t)
{
    pid_t pid = fork();
    if (pid == 0) {
        shoal_config_t cfg;
        shoal_config_init(&cfg);
        cfg.transport = t;
        cfg.log_level = SHOAL_LOG_ERROR;
        shoal_ctx_t *ctx;
        _exit(shoal_ctx_create(&cfg, &ctx) == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int suite_init_ucx(void) { h_transport = SHOAL_TRANSPORT_UCX; return 0; }
static int suite_init_verbs(void) { h_transport = SHOAL_TRANSPORT_VERBS; return 0; }

/* The UCX abort reproducer, outside CUnit: exit 0 only if the server
 * survived and served a good client (an XFAIL test until UCX is fixed). */
static int known_ucx_abort(void)
{
    h_transport = SHOAL_TRANSPORT_UCX;
    setenv("HOSTILE_ONLY", "5", 1);
    int rc = h_run(garbage_server, garbage_client, 1, NULL, 60);
    printf("UCX sockcm listener %s a zero-length connection-request header followed by "
           "data\n", rc == 0 ? "survived" : "did not survive");
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--known-ucx-abort") == 0)
        return known_ucx_abort();
    const char *list[4];
    int nlist = 0, explicit = 0;
    char envbuf[128];
    const char *env = getenv("SHOAL_TEST_TRANSPORTS");
    /* Our own settings only: an inherited secret would change every case. */
    unsetenv("SHOAL_AUTH_FILE");
    if (argc > 1) {
        for (int i = 1; i < argc && nlist < 4; i++)
            list[nlist++] = argv[i];
        explicit = 1;
    } else if (env && *env) {
        snprintf(envbuf, sizeof(envbuf), "%s", env);
        for (char *t = strtok(envbuf, " ,"); t && nlist < 4; t = strtok(NULL, " ,"))
            list[nlist++] = t;
        explicit = 1;
    } else {
        list[nlist++] = "ucx";
        list[nlist++] = "verbs";
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    if (make_secrets()) {
        fprintf(stderr, "test-hostile: cannot make a temporary directory\n");
        return 1;
    }
    int suites = 0;
    for (int i = 0; i < nlist; i++) {
        shoal_transport_t t;
        if (strcmp(list[i], "ucx") == 0)
            t = SHOAL_TRANSPORT_UCX;
        else if (strcmp(list[i], "verbs") == 0)
            t = SHOAL_TRANSPORT_VERBS;
        else {
            fprintf(stderr, "test-hostile: unknown transport '%s' (ucx, verbs)\n", list[i]);
            return 2;
        }
        if (!transport_usable(t)) {
            if (explicit) {
                fprintf(stderr, "test-hostile: transport %s was requested but is not usable "
                                "here\n", list[i]);
                return 1;
            }
            printf("SKIPPED: hostile-input suite '%s': no usable %s device on this host "
                   "(the soft-RoCE VM runs it: tests/verbs-vm.sh)\n", list[i], list[i]);
            continue;
        }
        char name[32];
        snprintf(name, sizeof(name), "hostile-%s", list[i]);
        CU_pSuite s = CU_add_suite(name, t == SHOAL_TRANSPORT_UCX ? suite_init_ucx
                                                                 : suite_init_verbs, NULL);
        CU_add_test(s, "same secret on both sides: connected", test_auth_same);
        CU_add_test(s, "wrong secret: refused on both sides, then a good client",
                    test_auth_wrong);
        CU_add_test(s, "client without secret: refused", test_auth_client_none);
        CU_add_test(s, "server without secret: refused", test_auth_server_none);
        CU_add_test(s, "secret file readable by others, short, missing", test_bad_files);
        if (t == SHOAL_TRANSPORT_UCX) {
            CU_add_test(s, "TCP garbage at the listener: no crash, no hang, still serves",
                        test_tcp_garbage);
            CU_add_test(s, "UCP client silent after connecting: dropped after the timeout",
                        test_stall_silent);
            CU_add_test(s, "UCP client that never sends its proof: dropped after the timeout",
                        test_stall_no_proof);
        }
        suites++;
    }
    int rc = 77;
    if (suites)
        rc = cu_run_all();
    else
        CU_cleanup_registry();
    remove_secrets();
    return rc;
}
