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
 *  - UCX: random bytes, truncated hellos, headers claiming huge lengths,
 *    megabytes of junk, the zero-length header that aborted UCX's own
 *    listener, and silent connections, sent with plain TCP sockets to the
 *    listening port, never crash or hang the server, and it serves a good
 *    client afterwards;
 *  - UCX: a client that connects and says nothing, or sends a hello with a
 *    nonce and never its proof, is dropped after the connect timeout,
 *    logged, never reaches accept(), and its descriptors are freed;
 *  - UCX: 3000 such connections: the server's descriptors and memory stay
 *    bounded (measured), and a good client is served after them.
 *  `test-hostile --ucx-abort-bytes` (ucx-abort.sh) runs the zero-length
 *  header case alone and checks the refusal is logged naming the peer.
 */
#include <arpa/inet.h>
#include <dirent.h>
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

#include "../cu.h"
#include "boot.h"
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

/* A bootstrap frame (lib/boot.h) of @kind claiming @len bytes of body;
 * returns the header length (5). */
static size_t frame_hdr(uint8_t *out, uint8_t kind, uint32_t len)
{
    out[0] = (uint8_t)len, out[1] = (uint8_t)(len >> 8), out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 24), out[4] = kind;
    return SHOAL_FRAME_HDR;
}

/* A well-formed first hello frame (no authentication, or announcing a
 * secret with a nonce); returns its length. */
static size_t hello_frame(uint8_t *out, bool auth)
{
    size_t body = SHOAL_HELLO_LEN + (auth ? SHOAL_NONCE_LEN : 0);
    size_t n = frame_hdr(out, SHOAL_FRAME_HELLO, (uint32_t)body);
    uint8_t *h = out + n;
    memset(h, 0, body);
    h[0] = 0x53, h[1] = 0x4f, h[2] = 0x41, h[3] = 0x4c; /* "SOAL" */
    h[4] = SHOAL_WIRE_VERSION & 0xff, h[5] = SHOAL_WIRE_VERSION >> 8;
    h[6] = SHOAL_TRANSPORT_UCX;
    h[7] = auth ? SHOAL_HELLO_AUTH : 0;
    h[8] = 1; /* endpoint id 1 */
    for (size_t i = SHOAL_HELLO_LEN; i < body; i++)
        h[i] = (uint8_t)i; /* the nonce */
    return n + body;
}

/* The bytes that made UCX 1.13's sockcm listener (ucp_listener) abort the
 * whole server process: a connection-request header whose length field
 * is 0, followed by more bytes.  libshoal reads them itself now. */
static const uint8_t zeros[4096];

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
    const char *only = getenv("HOSTILE_ONLY"); /* one group: ucx-abort.sh, exploring */
#define GROUP(n) if (!only || atoi(only) == (n))
    /* 1. Random bytes of random lengths, one connection each. */
    GROUP(1)
    for (int i = 0; i < 40; i++) {
        int s = tcp_connect(port);
        size_t len = 1 + rnd() % (i < 30 ? 512 : 65536);
        send_some(s, big + rnd() % (sizeof(big) - len), len);
        close(s);
    }
    /* 2. Truncated: a hello frame cut short, then the connection closes;
     * and headers that announce huge lengths, then stop. */
    GROUP(2)
    for (int i = 0; i < 10; i++) {
        uint8_t buf[64];
        size_t n = hello_frame(buf, i % 2);
        if (i >= 6)
            n = frame_hdr(buf, (uint8_t)(1 + i % 2), i % 2 ? 0x7fffffffu : 0xffffffffu);
        int s = tcp_connect(port);
        send_some(s, buf, i < 6 ? (size_t)(1 + i * 4) % n : n);
        close(s);
    }
    /* 3. Oversized: megabytes of junk. */
    GROUP(3)
    for (int i = 0; i < 2; i++) {
        int s = tcp_connect(port);
        send_some(s, big, sizeof(big));
        close(s);
    }
    /* 4. Connections that say nothing and stay open. */
    GROUP(4)
    for (int i = 0; i < 4; i++)
        held[nheld++] = tcp_connect(port);
    /* 5. The bytes that aborted UCX's own listener, more than once. */
    GROUP(5)
    for (int i = 0; i < 3; i++) {
        int s = tcp_connect(port);
        send_some(s, zeros, sizeof(zeros));
        held[nheld++] = s;
        usleep(100000);
    }
    /* Then a good client, while the silent ones are still open. */
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

/* garbage_server with its log in log_path. */
static void logged_garbage_server(struct h_role *r)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && dup2(fd, 2) == 2, "redirect stderr");
    close(fd);
    garbage_server(r);
}

static void test_tcp_garbage(void)
{
    CU_ASSERT_EQUAL(h_run(garbage_server, garbage_client, 1, NULL, 90), 0);
}

/* ---- clients that never finish the handshake ----------------------------------- */

/* A plain TCP client that connects to the shoal port and then either says
 * nothing or sends a hello announcing a secret, reads the server's answer,
 * and never sends its proof.  The server must drop it after
 * SHOAL_CONNECT_TIMEOUT, log that, hand nothing to accept(), and free
 * what it held: its file descriptors are back to what they were. */
enum { STALL_SILENT = 0, STALL_NO_PROOF = 1 };
#define STALL_TIMEOUT_MS 1000

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own */
}

/* Resident set size, KiB. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = -1, rss = -1;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = -1;
        fclose(f);
    }
    return rss < 0 ? -1 : rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void stall_client(struct h_role *r)
{
    int how = *(int *)r->arg;
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "no port published");
    int s = tcp_connect(port);
    if (how == STALL_NO_PROOF) {
        uint8_t buf[64];
        size_t n = hello_frame(buf, true);
        CHECK(send(s, buf, n, MSG_NOSIGNAL) == (ssize_t)n, "send hello: %s", strerror(errno));
        /* The server's answer: a hello frame with its nonce and proof. */
        uint8_t ack[SHOAL_FRAME_HDR + SHOAL_HELLO_MAX];
        struct pollfd q = {.fd = s, .events = POLLIN};
        CHECK(poll(&q, 1, 10000) == 1, "no answer to the hello");
        ssize_t got = recv(s, ack, sizeof(ack), 0);
        CHECK(got >= SHOAL_FRAME_HDR + SHOAL_HELLO_LEN && ack[4] == SHOAL_FRAME_HELLO,
              "answer of %zd bytes, kind %u", got, got > 4 ? ack[4] : 0);
    }
    /* Stay connected, saying nothing, well past the server's timeout; the
     * server closes its end when it drops us. */
    struct pollfd q = {.fd = s, .events = POLLIN};
    uint64_t t0 = h_now_ms();
    bool closed = false;
    while (!closed && h_now_ms() - t0 < STALL_TIMEOUT_MS + 2500) {
        uint8_t b[64];
        if (poll(&q, 1, 100) == 1)
            closed = recv(s, b, sizeof(b), MSG_DONTWAIT) == 0;
    }
    CHECK(closed, "the server did not close the connection after its timeout");
    close(s);
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
    int fds0 = count_fds();
    shoal_ep_t *ep = NULL;
    int rc = shoal_accept(l, STALL_TIMEOUT_MS + 2000, &ep);
    CHECK(rc == -ETIMEDOUT && !ep, "accept: %s for a client that never finished",
          shoal_strerror(rc));
    int fds1 = count_fds();
    CHECK(fds1 == fds0, "%d file descriptors before the client, %d after it was dropped",
          fds0, fds1);
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

/* ---- a bounded load of hostile connections ----------------------------------- *
 *
 * LOAD_CONNS connections, one after another, each hostile in one of six
 * ways: random bytes, a hello cut short, the zero-length header that
 * aborted UCX's listener, a header claiming gigabytes, and two kinds that
 * stay open saying nothing more (right after connecting; after a good
 * hello) -- LOAD_HELD of those at a time, more than the server keeps
 * pending (UCX_PENDING_MAX, 256), so it must drop the oldest.  The server
 * samples its file descriptors and resident memory all along.  Bounded:
 * at the peak at most the pending limit plus one accept batch more
 * descriptors than before; once the load is over and its timeout passed,
 * the same number of descriptors as before and little more memory.  Then
 * a good client is served.
 */
#define LOAD_CONNS 3000
#define LOAD_HELD 300
#define LOAD_TIMEOUT_MS 1000
#define LOAD_FD_SLACK (256 + 64 + 16) /* pending limit, accept batch, UCX's own */
#define LOAD_RSS_SLACK_KIB (16 * 1024)

static void load_server(struct h_role *r)
{
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CHECK(fd >= 0 && dup2(fd, 2) == 2, "redirect stderr");
    close(fd);
    char t[16];
    snprintf(t, sizeof(t), "%d", LOAD_TIMEOUT_MS);
    setenv("SHOAL_CONNECT_TIMEOUT", t, 1);
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    /* The baseline once the context has settled (the client waits). */
    shoal_ep_t *ep = NULL;
    int rc = shoal_accept(l, 200, &ep);
    CHECK(rc == -ETIMEDOUT, "accept before the load: %s", shoal_strerror(rc));
    int fds0 = count_fds(), fds_max = fds0, fds_last = fds0;
    long rss0 = rss_kib(), rss_max = rss0, rss_last = rss0;
    /* The last samples: the client is quiet for 300 ms before its good
     * client, so the least of them is the state after the load (the
     * very last may already count the good client's socket). */
    int recent[8];
    int nrecent = 0;
    uint64_t deadline = h_now_ms() + 100000;
    while ((rc = shoal_accept(l, 20, &ep)) == -ETIMEDOUT) {
        CHECK(h_now_ms() < deadline, "no good client within 100 s");
        int fds = count_fds();
        rss_last = rss_kib();
        recent[nrecent++ % 8] = fds;
        fds_max = fds > fds_max ? fds : fds_max;
        rss_max = rss_last > rss_max ? rss_last : rss_max;
    }
    CHECK_RC(rc, ctx, "accept the good client after the load");
    fds_last = fds_max;
    for (int i = 0; i < (nrecent < 8 ? nrecent : 8); i++)
        fds_last = recent[i] < fds_last ? recent[i] : fds_last;
    printf("server: fds %d before, %d at the peak, %d after; RSS %ld KiB before, %ld at the "
           "peak, %ld after; ", fds0, fds_max, fds_last, rss0, rss_max, rss_last);
    exchange(ctx, ep, true);
    h_expect_str(ctx, ep, "bye", 20000);
    shoal_ep_close(ep);
    CHECK(fds_max <= fds0 + LOAD_FD_SLACK, "%d descriptors at the peak, %d before (at most "
          "%d more allowed)", fds_max, fds0, LOAD_FD_SLACK);
    CHECK(fds_last <= fds0, "%d descriptors after the load, %d before", fds_last, fds0);
    CHECK(rss_last - rss0 <= LOAD_RSS_SLACK_KIB, "RSS grew by %ld KiB over the load",
          rss_last - rss0);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void load_client(struct h_role *r)
{
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "no port published");
    usleep(400 * 1000); /* the server takes its baseline */
    rng_state = 0x10adu;
    int held[LOAD_HELD];
    int nheld = 0, oldest = 0;
    uint64_t t0 = h_now_ms();
    for (int i = 0; i < LOAD_CONNS; i++) {
        int s = tcp_connect(port);
        uint8_t buf[600];
        size_t n;
        switch (i % 6) {
        case 0: /* random bytes */
            n = 1 + rnd() % sizeof(buf);
            for (size_t k = 0; k < n; k++)
                buf[k] = (uint8_t)rnd();
            send_some(s, buf, n);
            break;
        case 1: /* a hello cut short */
            n = hello_frame(buf, false);
            send_some(s, buf, 1 + rnd() % (n - 1));
            break;
        case 2: /* what aborted UCX's listener */
            send_some(s, zeros, 17 + rnd() % 512);
            break;
        case 3: /* a header claiming gigabytes */
            send_some(s, buf, frame_hdr(buf, (uint8_t)(1 + (i & 1)), 0xfffffff0u));
            break;
        case 4: /* a good hello, then nothing */
            send_some(s, buf, hello_frame(buf, false));
            break;
        default: /* nothing at all */
            break;
        }
        if (i % 6 < 4) {
            close(s);
            continue;
        }
        if (nheld == LOAD_HELD) { /* the oldest silent one goes */
            close(held[oldest]);
            held[oldest] = s;
            oldest = (oldest + 1) % LOAD_HELD;
        } else {
            held[nheld++] = s;
        }
    }
    printf("client: %d hostile connections in %llu ms; ", LOAD_CONNS,
           (unsigned long long)(h_now_ms() - t0));
    /* Let the server drop what is left, then a good client. */
    usleep((LOAD_TIMEOUT_MS + 1500) * 1000);
    for (int i = 0; i < nheld; i++)
        close(held[i]);
    usleep(300 * 1000);
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep;
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "good client after the load");
    exchange(ctx, ep, false);
    h_send_str(ctx, ep, "bye");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 20000, &ev);
    shoal_ep_close(ep);
    shoal_ctx_destroy(ctx);
}

static void test_hostile_load(void)
{
    snprintf(log_path, sizeof(log_path), "%s/server.log", tmpdir);
    CU_ASSERT_EQUAL(h_run(load_server, load_client, 1, NULL, 110), 0);
    /* The log stays bounded too: refusals are rate-limited. */
    struct stat st;
    CU_ASSERT(stat(log_path, &st) == 0 && st.st_size < 256 * 1024);
    printf("server log %lld bytes\n", (long long)st.st_size);
}

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

/* What aborted UCX 1.13's own listener (sockcm), outside CUnit, for
 * ucx-abort.sh: the bytes are refused, the refusal is logged at warn
 * naming the peer, and the server goes on serving a good client.  Exit 0
 * if so. */
static int ucx_abort_bytes(void)
{
    h_transport = SHOAL_TRANSPORT_UCX;
    setenv("HOSTILE_ONLY", "5", 1);
    snprintf(log_path, sizeof(log_path), "%s/server.log", tmpdir);
    int rc = h_run(logged_garbage_server, garbage_client, 1, NULL, 60);
    char buf[16384] = "";
    int fd = open(log_path, O_RDONLY);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        buf[n > 0 ? n : 0] = '\0';
        close(fd);
    }
    char want[96];
    snprintf(want, sizeof(want), "warn: ucx: refused connection from %s:", h_host());
    const char *hit = strstr(buf, want);
    printf("zero-length connection-request header and data: server %s, %s\n",
           rc == 0 ? "survived and served a good client" : "FAILED",
           hit ? "refusal logged" : "NO refusal logged");
    if (hit) {
        const char *eol = strchr(hit, '\n');
        printf("  server: %.*s\n", eol ? (int)(eol - hit) : (int)strlen(hit), hit);
    } else {
        fprintf(stderr, "server log:\n%s\n", buf);
    }
    return rc == 0 && hit ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--ucx-abort-bytes") == 0) {
        if (make_secrets())
            return 1;
        int rc = ucx_abort_bytes();
        remove_secrets();
        return rc;
    }
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
            CU_add_test(s, "client silent after connecting: dropped after the timeout, "
                        "its descriptors freed", test_stall_silent);
            CU_add_test(s, "client that never sends its proof: dropped after the timeout, "
                        "its descriptors freed", test_stall_no_proof);
            CU_add_test(s, "3000 hostile connections: descriptors and memory stay bounded, "
                        "a good client is served", test_hostile_load);
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
