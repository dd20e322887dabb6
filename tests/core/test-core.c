/*
 * test-core.c -- unit tests of libshoal's transport-neutral core: config
 * parsing, error text, CRC, the handshake hello, and the descriptor
 * format.  White-box: links the internal library to reach shoal__*.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cu.h"
#include "boot.h"
#include "core/core.h"

/* ---- config ---------------------------------------------------------- */

static void test_config_defaults(void)
{
    shoal_config_t c;
    shoal_config_init(&c);
    CU_ASSERT_EQUAL(c.transport, SHOAL_TRANSPORT_AUTO);
    CU_ASSERT_STRING_EQUAL(c.device, "");
    CU_ASSERT_EQUAL(c.log_level, SHOAL_LOG_WARN);
    CU_ASSERT(c.connect_timeout_ms > 0);
    CU_ASSERT(c.queue_depth >= 1000);
}

static void test_config_env(void)
{
    shoal_config_t c;
    char err[256] = "";
    shoal_config_init(&c);
    setenv("SHOAL_TRANSPORT", "UCX", 1);
    setenv("SHOAL_DEVICE", "mlx5_0:1", 1);
    setenv("SHOAL_LOG_LEVEL", "debug", 1);
    setenv("SHOAL_CONNECT_TIMEOUT", "2500", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(c.transport, SHOAL_TRANSPORT_UCX);
    CU_ASSERT_STRING_EQUAL(c.device, "mlx5_0:1");
    CU_ASSERT_EQUAL(c.log_level, SHOAL_LOG_DEBUG);
    CU_ASSERT_EQUAL(c.connect_timeout_ms, 2500);

    /* A bad value: error names the variable and the value; cfg unchanged. */
    shoal_config_t before = c;
    setenv("SHOAL_CONNECT_TIMEOUT", "12abc", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_CONNECT_TIMEOUT"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "12abc"));
    CU_ASSERT_EQUAL(memcmp(&before, &c, sizeof(c)), 0);
    setenv("SHOAL_CONNECT_TIMEOUT", "0", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    unsetenv("SHOAL_CONNECT_TIMEOUT");
    setenv("SHOAL_TRANSPORT", "infiniband", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_TRANSPORT"));
    unsetenv("SHOAL_TRANSPORT");
    setenv("SHOAL_DEVICE", "a/b", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    setenv("SHOAL_DEVICE", "0123456789012345678901234567890123456789012345678901234567890123456789", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    unsetenv("SHOAL_DEVICE");
    setenv("SHOAL_LOG_LEVEL", "loud", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    unsetenv("SHOAL_LOG_LEVEL");
    CU_ASSERT_EQUAL(shoal_config_set(&c, "NO_SUCH", "1", err, sizeof(err)), -ENOENT);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "queue_depth", "17", NULL, 0), 0);
    CU_ASSERT_EQUAL(c.queue_depth, 17);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "QUEUE_DEPTH", "-1", NULL, 0), -EINVAL);
    /* SPIN_US: auto (-1) by default, a number, or refused naming itself. */
    CU_ASSERT_EQUAL(c.spin_us, -1);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "SPIN_US", "20", NULL, 0), 0);
    CU_ASSERT_EQUAL(c.spin_us, 20);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "SPIN_US", "auto", NULL, 0), 0);
    CU_ASSERT_EQUAL(c.spin_us, -1);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "SPIN_US", "fast", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_SPIN_US='fast'"));
    CU_ASSERT_EQUAL(c.spin_us, -1);
    /* PROGRESS: off by default, thread, or refused naming itself. */
    CU_ASSERT_EQUAL(c.progress, SHOAL_PROGRESS_OFF);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "PROGRESS", "Thread", NULL, 0), 0);
    CU_ASSERT_EQUAL(c.progress, SHOAL_PROGRESS_THREAD);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "PROGRESS", "threads", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_PROGRESS='threads'"));
    CU_ASSERT_EQUAL(c.progress, SHOAL_PROGRESS_THREAD);
}

static void test_config_print(void)
{
    shoal_config_t c;
    shoal_config_init(&c);
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    shoal_config_print(&c, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "SHOAL_TRANSPORT"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "SHOAL_LOG_LEVEL"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "SHOAL_DEVICE"));
    free(text);
    CU_ASSERT_STRING_EQUAL(shoal_transport_name(SHOAL_TRANSPORT_VERBS), "verbs");
    CU_ASSERT_STRING_EQUAL(shoal_transport_name((shoal_transport_t)42), "?");
}

/* ---- errors -------------------------------------------------------------- */

static void test_strerror(void)
{
    static const int codes[] = {EAGAIN, ERANGE, EACCES, EBADMSG, EPROTO, ENOTCONN,
                                ECONNREFUSED, ETIMEDOUT, EMSGSIZE, ENODEV, ECANCELED};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        const char *a = shoal_strerror(-codes[i]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(a);
        CU_ASSERT(strlen(a) > 5);
        CU_ASSERT_STRING_EQUAL(a, shoal_strerror(codes[i]));
        for (size_t j = 0; j < i; j++)
            CU_ASSERT(strcmp(a, shoal_strerror(-codes[j])) != 0);
    }
    CU_ASSERT_STRING_EQUAL(shoal_strerror(0), "success");
    CU_ASSERT_PTR_NOT_NULL(shoal_strerror(-123456));
    CU_ASSERT_STRING_EQUAL(shoal_event_name(SHOAL_EV_EP_FAILED), "ep_failed");
    CU_ASSERT_STRING_EQUAL(shoal_event_name((shoal_event_type_t)99), "?");
}

/* ---- wire helpers ---------------------------------------------------------- */

static void test_crc32(void)
{
    CU_ASSERT_EQUAL(shoal__crc32(0, "123456789", 9), 0xCBF43926u);
    CU_ASSERT_EQUAL(shoal__crc32(0, "", 0), 0u);
    /* Chaining equals one pass. */
    uint32_t c = shoal__crc32(0, "12345", 5);
    CU_ASSERT_EQUAL(shoal__crc32(c, "6789", 4), 0xCBF43926u);
}

static void test_hello(void)
{
    struct shoal_hello h = {.magic = SHOAL_WIRE_MAGIC, .version = SHOAL_WIRE_VERSION,
                            .transport = SHOAL_TRANSPORT_UCX, .flags = 0,
                            .ep_id = 0x12345678, .peer_id = 0x9abcdef0}, d;
    uint8_t buf[SHOAL_HELLO_MAX];
    char why[160];
    CU_ASSERT_EQUAL(shoal__hello_encode(&h, buf), SHOAL_HELLO_LEN);
    CU_ASSERT_EQUAL(buf[0], 0x53); /* little-endian on the wire */
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, SHOAL_HELLO_LEN, SHOAL_TRANSPORT_UCX, &d, why,
                                        sizeof(why)), 0);
    CU_ASSERT_EQUAL(d.ep_id, h.ep_id);
    CU_ASSERT_EQUAL(d.peer_id, h.peer_id);
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, 15, SHOAL_TRANSPORT_UCX, &d, why, sizeof(why)),
                    -EBADMSG);
    CU_ASSERT_EQUAL(shoal__hello_decode(NULL, 0, SHOAL_TRANSPORT_UCX, &d, why, sizeof(why)),
                    -EBADMSG);
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, sizeof(buf), SHOAL_TRANSPORT_VERBS, &d, why,
                                        sizeof(why)), -EPROTO);
    buf[4] ^= 0x7f; /* version */
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, sizeof(buf), SHOAL_TRANSPORT_UCX, &d, why,
                                        sizeof(why)), -EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "version"));
    buf[4] ^= 0x7f;
    buf[1] ^= 1; /* magic */
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, sizeof(buf), SHOAL_TRANSPORT_UCX, &d, why,
                                        sizeof(why)), -EBADMSG);
}

/* ---- descriptors (on a real UCX context, no peer needed) ------------------ */

static shoal_ctx_t *ucx_ctx_or_fail(void)
{
    shoal_config_t c;
    shoal_config_init(&c);
    c.transport = SHOAL_TRANSPORT_UCX;
    c.log_level = SHOAL_LOG_ERROR;
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL_FATAL(shoal_ctx_create(&c, &ctx), 0);
    return ctx;
}

/* ---- hello v2 and the authenticated handshake, in-process ---------------- */

static void test_hello_flags(void)
{
    struct shoal_hello h = {.magic = SHOAL_WIRE_MAGIC, .version = SHOAL_WIRE_VERSION,
                            .transport = SHOAL_TRANSPORT_VERBS,
                            .flags = SHOAL_HELLO_AUTH | SHOAL_HELLO_PROOF | SHOAL_HELLO_REFUSE,
                            .ep_id = 3, .peer_id = 4, .reason = 2}, d;
    for (int i = 0; i < SHOAL_NONCE_LEN; i++)
        h.nonce[i] = (uint8_t)i;
    for (int i = 0; i < SHOAL_PROOF_LEN; i++)
        h.proof[i] = (uint8_t)(100 + i);
    uint8_t buf[SHOAL_HELLO_MAX + 8];
    char why[160];
    size_t n = shoal__hello_encode(&h, buf);
    CU_ASSERT_EQUAL(n, SHOAL_HELLO_MAX);
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, n, SHOAL_TRANSPORT_VERBS, &d, why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(memcmp(&d, &h, sizeof(h)), 0);
    /* rdma_cm pads: trailing bytes are fine; one byte short is not. */
    memset(buf + n, 0, 8);
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, n + 8, SHOAL_TRANSPORT_VERBS, &d, why,
                                        sizeof(why)), 0);
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, n - 1, SHOAL_TRANSPORT_VERBS, &d, why,
                                        sizeof(why)), -EBADMSG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "need"));
    buf[7] |= 0x80; /* an unknown flag */
    CU_ASSERT_EQUAL(shoal__hello_decode(buf, n, SHOAL_TRANSPORT_VERBS, &d, why, sizeof(why)),
                    -EBADMSG);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "flags"));
}

static void test_auth_proof(void)
{
    const uint8_t k1[] = "0123456789abcdef", k2[] = "0123456789abcdeg";
    uint8_t nc[SHOAL_NONCE_LEN] = {1}, ns[SHOAL_NONCE_LEN] = {2}, p[6][SHOAL_PROOF_LEN];
    CU_ASSERT_EQUAL(shoal__auth_proof(k1, 16, 'C', 2, 5, 7, nc, ns, p[0]), 0);
    CU_ASSERT_EQUAL(shoal__auth_proof(k1, 16, 'C', 2, 5, 7, nc, ns, p[1]), 0);
    CU_ASSERT_EQUAL(memcmp(p[0], p[1], SHOAL_PROOF_LEN), 0); /* deterministic */
    shoal__auth_proof(k1, 16, 'S', 2, 5, 7, nc, ns, p[1]);   /* role */
    shoal__auth_proof(k2, 16, 'C', 2, 5, 7, nc, ns, p[2]);   /* key */
    shoal__auth_proof(k1, 16, 'C', 2, 5, 8, nc, ns, p[3]);   /* ids */
    shoal__auth_proof(k1, 16, 'C', 2, 5, 7, ns, nc, p[4]);   /* nonces swapped */
    shoal__auth_proof(k1, 16, 'C', 1, 5, 7, nc, ns, p[5]);   /* transport */
    for (int i = 1; i < 6; i++)
        CU_ASSERT_NOT_EQUAL(memcmp(p[0], p[i], SHOAL_PROOF_LEN), 0);
}

/* A UCX context whose SHOAL_AUTH_FILE holds @secret (NULL: none). */
static shoal_ctx_t *auth_ctx(const char *path, const char *secret)
{
    shoal_config_t c;
    shoal_config_init(&c);
    c.transport = SHOAL_TRANSPORT_UCX;
    c.log_level = SHOAL_LOG_ERROR;
    if (secret) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        CU_ASSERT_FATAL(fd >= 0);
        CU_ASSERT_FATAL(write(fd, secret, strlen(secret)) == (ssize_t)strlen(secret));
        close(fd);
        snprintf(c.auth_file, sizeof(c.auth_file), "%s", path);
    }
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL_FATAL(shoal_ctx_create(&c, &ctx), 0);
    return ctx;
}

/* The handshake's decisions without a network: a client and a server
 * context exchange the three messages by hand; then a recorded proof is
 * replayed to a new server connection and must be refused. */
static void test_handshake_replay(void)
{
    char path[] = "/tmp/shoal-core-key.XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    shoal_ctx_t *cctx = auth_ctx(path, "a shared secret of the job\n");
    shoal_ctx_t *sctx = auth_ctx(path, "a shared secret of the job");
    shoal_ctx_t *octx = auth_ctx(path, "another job's secret, longer");
    unlink(path);
    shoal_ep_t *c = shoal__ep_new(cctx), *s1 = shoal__ep_new(sctx), *s2 = shoal__ep_new(sctx);
    uint8_t hello[SHOAL_HELLO_MAX], ack[SHOAL_HELLO_MAX], proof[SHOAL_HELLO_MAX];
    size_t hl, al, pl;
    CU_ASSERT_EQUAL(shoal__hs_hello(c, 11, hello, &hl), 0);
    CU_ASSERT_EQUAL(hl, SHOAL_HELLO_LEN + SHOAL_NONCE_LEN);
    CU_ASSERT_EQUAL(shoal__hs_accept(s1, hello, hl, 21, ack, &al), 0);
    CU_ASSERT_TRUE(s1->hs.need_proof);
    CU_ASSERT_EQUAL(al, SHOAL_HELLO_LEN + SHOAL_NONCE_LEN + SHOAL_PROOF_LEN);
    CU_ASSERT_EQUAL(shoal__hs_ack(c, ack, al, proof, &pl), 0); /* trailing \n ignored */
    CU_ASSERT_EQUAL(pl, SHOAL_HELLO_LEN + SHOAL_PROOF_LEN);
    CU_ASSERT_EQUAL(shoal__hs_proof(s1, proof, pl), 0);
    CU_ASSERT_FALSE(s1->hs.need_proof);
    /* Replay: the same hello and proof on a new connection fail, since the
     * server's nonce is new. */
    CU_ASSERT_EQUAL(shoal__hs_accept(s2, hello, hl, 21, ack, &al), 0);
    CU_ASSERT_EQUAL(shoal__hs_proof(s2, proof, pl), -EACCES);
    CU_ASSERT_TRUE(s2->hs.need_proof);
    /* A server with another secret: the client refuses it, tells it why,
     * and sends no proof of its own. */
    shoal_ep_t *c2 = shoal__ep_new(cctx), *o = shoal__ep_new(octx);
    CU_ASSERT_EQUAL(shoal__hs_hello(c2, 12, hello, &hl), 0);
    CU_ASSERT_EQUAL(shoal__hs_accept(o, hello, hl, 31, ack, &al), 0);
    CU_ASSERT_EQUAL(shoal__hs_ack(c2, ack, al, proof, &pl), -EACCES);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(cctx), "differs"));
    struct shoal_hello r;
    char why[160];
    CU_ASSERT_EQUAL(shoal__hello_decode(proof, pl, SHOAL_TRANSPORT_UCX, &r, why, sizeof(why)),
                    0);
    CU_ASSERT_EQUAL(r.flags, SHOAL_HELLO_REFUSE);
    CU_ASSERT_EQUAL(r.reason, SHOAL_REFUSE_AUTH_FAILED);
    CU_ASSERT_EQUAL(shoal__hs_proof(o, proof, pl), -EACCES);
    shoal__ep_discard(c);
    shoal__ep_discard(c2);
    shoal__ep_discard(s1);
    shoal__ep_discard(s2);
    shoal__ep_discard(o);
    shoal_ctx_destroy(cctx);
    shoal_ctx_destroy(sctx);
    shoal_ctx_destroy(octx);
}

/* ---- UCX's bootstrap handshake, in-process ------------------------------- */

/* Move what @from has to send into @to, a few bytes at a time (a socket
 * may cut the stream anywhere). */
static void pipe_boot(struct shoal_boot *from, struct shoal_boot *to)
{
    while (from->out_off < from->out_len && to->phase != SHOAL_BOOT_DONE &&
           to->phase != SHOAL_BOOT_FAILED) {
        size_t n = from->out_len - from->out_off;
        if (n > 7)
            n = 7;
        size_t used = shoal__boot_input(to, from->out + from->out_off, n);
        from->out_off += used;
        if (used < n)
            break;
    }
}

/* A client and a server exchange the whole handshake through their
 * shoal_boot states, with and without a secret: both end DONE, each with
 * the other's address and cookie.  A server with another secret: the
 * client fails with -EACCES and the server never sends its address.  The
 * bytes that aborted UCX's own listener end the server's side at once. */
static void test_boot_handshake(void)
{
    char path[] = "/tmp/shoal-core-boot.XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    static const char caddr[] = "client worker address", saddr[] = "the server's address";
    for (int secret = 0; secret < 3; secret++) {
        shoal_ctx_t *cctx = auth_ctx(path, secret ? "the job's shared secret" : NULL);
        shoal_ctx_t *sctx = auth_ctx(path, secret == 0 ? NULL
                                           : secret == 1 ? "the job's shared secret"
                                                         : "another job's secret!!");
        shoal_ep_t *cep = shoal__ep_new(cctx), *sep = shoal__ep_new(sctx);
        struct shoal_boot c, s;
        shoal__boot_init(&c, cep, false, 11, 0xc0c0, caddr, sizeof(caddr));
        shoal__boot_init(&s, sep, true, 22, 0x5e5e, saddr, sizeof(saddr));
        CU_ASSERT_EQUAL_FATAL(shoal__boot_start(&c), 0);
        for (int round = 0; round < 8; round++) {
            pipe_boot(&c, &s);
            pipe_boot(&s, &c);
        }
        if (secret < 2) {
            CU_ASSERT_EQUAL(c.phase, SHOAL_BOOT_DONE);
            CU_ASSERT_EQUAL(s.phase, SHOAL_BOOT_DONE);
            CU_ASSERT(c.peer_addrlen == sizeof(saddr) && memcmp(c.peer_addr, saddr,
                                                                sizeof(saddr)) == 0);
            CU_ASSERT(s.peer_addrlen == sizeof(caddr) && memcmp(s.peer_addr, caddr,
                                                                sizeof(caddr)) == 0);
            CU_ASSERT_EQUAL(c.peer_cookie, 0x5e5e);
            CU_ASSERT_EQUAL(s.peer_cookie, 0xc0c0);
            CU_ASSERT_EQUAL(cep->hs.peer_id, 22);
            CU_ASSERT_EQUAL(sep->hs.peer_id, 11);
        } else {
            CU_ASSERT_EQUAL(c.phase, SHOAL_BOOT_FAILED);
            CU_ASSERT_EQUAL(c.err, -EACCES);
            CU_ASSERT_NOT_EQUAL(s.phase, SHOAL_BOOT_DONE);
            CU_ASSERT_PTR_NULL(s.peer_addr); /* the client's address never went */
        }
        shoal__boot_fini(&c);
        shoal__boot_fini(&s);
        shoal__ep_discard(cep);
        shoal__ep_discard(sep);
        shoal_ctx_destroy(cctx);
        shoal_ctx_destroy(sctx);
    }
    unlink(path);
    /* Not a shoal stream: the first header ends it, nothing is allocated. */
    shoal_ctx_t *ctx = auth_ctx(path, NULL);
    shoal_ep_t *ep = shoal__ep_new(ctx);
    struct shoal_boot s;
    static const uint8_t zeros[64];
    shoal__boot_init(&s, ep, true, 1, 1, saddr, sizeof(saddr));
    CU_ASSERT_EQUAL(shoal__boot_input(&s, zeros, sizeof(zeros)), SHOAL_FRAME_HDR);
    CU_ASSERT_EQUAL(s.phase, SHOAL_BOOT_FAILED);
    CU_ASSERT_EQUAL(s.err, -EBADMSG);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "not a shoal handshake"));
    CU_ASSERT_PTR_NULL(s.body);
    shoal__boot_fini(&s);
    /* A hello frame claiming 2 GiB: refused on its header. */
    uint8_t hdr[SHOAL_FRAME_HDR] = {0xff, 0xff, 0xff, 0x7f, SHOAL_FRAME_HELLO};
    shoal__boot_init(&s, ep, true, 1, 1, saddr, sizeof(saddr));
    shoal__boot_input(&s, hdr, sizeof(hdr));
    CU_ASSERT_EQUAL(s.phase, SHOAL_BOOT_FAILED);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "2147483647 bytes"));
    CU_ASSERT_PTR_NULL(s.body);
    shoal__boot_fini(&s);
    /* A peer that closes half way: failed, with the step it was at. */
    shoal__boot_init(&s, ep, true, 1, 1, saddr, sizeof(saddr));
    shoal__boot_input(&s, hdr, 3);
    shoal__boot_closed(&s, 0);
    CU_ASSERT_EQUAL(s.phase, SHOAL_BOOT_FAILED);
    CU_ASSERT_PTR_NOT_NULL(strstr(s.why, "in the middle of a frame"));
    shoal__boot_fini(&s);
    shoal__ep_discard(ep);
    shoal_ctx_destroy(ctx);
}

static void test_descriptor(void)
{
    shoal_ctx_t *ctx = ucx_ctx_or_fail();
    CU_ASSERT_EQUAL(shoal_ctx_transport(ctx), SHOAL_TRANSPORT_UCX);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_describe(ctx), "ucx"));
    static char region[8192];
    shoal_mr_t *mr;
    CU_ASSERT_EQUAL(shoal_mr_reg(ctx, region, 0, 0, &mr), -EINVAL);
    CU_ASSERT_EQUAL(shoal_mr_reg(ctx, region, sizeof(region), 0x100, &mr), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "access"));
    CU_ASSERT_EQUAL_FATAL(shoal_mr_reg(ctx, region, sizeof(region),
                                       SHOAL_ACCESS_REMOTE_WRITE, &mr), 0);
    CU_ASSERT_PTR_EQUAL(shoal_mr_addr(mr), region);
    CU_ASSERT_EQUAL(shoal_mr_length(mr), sizeof(region));

    uint8_t buf[SHOAL_DESC_MAX];
    size_t len = 0;
    CU_ASSERT_EQUAL(shoal_mr_pack(mr, buf, 10, &len), -ENOBUFS);
    CU_ASSERT_EQUAL_FATAL(shoal_mr_pack(mr, buf, sizeof(buf), &len), 0);
    CU_ASSERT(len > SHOAL_DESC_HDR + 4 && len <= SHOAL_DESC_MAX);

    struct shoal_desc d;
    CU_ASSERT_EQUAL(shoal__desc_parse(ctx, buf, len, &d), 0);
    CU_ASSERT_EQUAL(d.addr, (uint64_t)(uintptr_t)region);
    CU_ASSERT_EQUAL(d.len, sizeof(region));
    CU_ASSERT_EQUAL(d.access, SHOAL_ACCESS_REMOTE_WRITE);
    CU_ASSERT_EQUAL(d.keylen, len - SHOAL_DESC_HDR - 4);

    /* Every truncation and every single-bit flip is caught. */
    int caught = 0, total = 0;
    for (size_t cut = 0; cut < len; cut++, total++)
        caught += shoal__desc_parse(ctx, buf, cut, &d) == -EBADMSG;
    for (size_t i = 0; i < len; i++)
        for (int b = 0; b < 8; b++, total++) {
            buf[i] ^= (uint8_t)(1u << b);
            int rc = shoal__desc_parse(ctx, buf, len, &d);
            caught += rc == -EBADMSG || rc == -EPROTO;
            buf[i] ^= (uint8_t)(1u << b);
        }
    CU_ASSERT_EQUAL(caught, total);
    /* Longer than it says. */
    CU_ASSERT_EQUAL(shoal__desc_parse(ctx, buf, len + 1, &d), -EBADMSG);

    /* A well-formed descriptor of another version or transport: -EPROTO
     * (re-sealed with a valid CRC so only that field is wrong). */
    uint8_t other[SHOAL_DESC_MAX];
    memcpy(other, buf, len);
    other[4] = 2;
    shoal__put_le32(other + len - 4, shoal__crc32(0, other, len - 4));
    CU_ASSERT_EQUAL(shoal__desc_parse(ctx, other, len, &d), -EPROTO);
    memcpy(other, buf, len);
    other[6] = SHOAL_TRANSPORT_VERBS;
    shoal__put_le32(other + len - 4, shoal__crc32(0, other, len - 4));
    CU_ASSERT_EQUAL(shoal__desc_parse(ctx, other, len, &d), -EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "transport"));
    /* A huge claimed key length. */
    memcpy(other, buf, len);
    shoal__put_le32(other + 24, 0xffffffffu);
    CU_ASSERT_EQUAL(shoal__desc_parse(ctx, other, len, &d), -EBADMSG);
    /* A region that wraps around the address space. */
    memcpy(other, buf, len);
    shoal__put_le64(other + 8, UINT64_MAX - 10);
    shoal__put_le32(other + len - 4, shoal__crc32(0, other, len - 4));
    CU_ASSERT_EQUAL(shoal__desc_parse(ctx, other, len, &d), -EBADMSG);

    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
}

static void test_ctx_errors(void)
{
    shoal_config_t c;
    shoal_config_init(&c);
    shoal_ctx_t *ctx = NULL;
    c.queue_depth = 0;
    CU_ASSERT_EQUAL(shoal_ctx_create(&c, &ctx), -EINVAL);
    CU_ASSERT_PTR_NULL(ctx);
    shoal_config_init(&c);
    c.progress = (shoal_progress_t)7;
    CU_ASSERT_EQUAL(shoal_ctx_create(&c, &ctx), -EINVAL);
    CU_ASSERT_PTR_NULL(ctx);
    shoal_config_init(&c);
    c.waiters = -1;
    CU_ASSERT_EQUAL(shoal_ctx_create(&c, &ctx), -EINVAL);
    CU_ASSERT_PTR_NULL(ctx);
    shoal_config_init(&c);
    CU_ASSERT_EQUAL(c.waiters, 0);
    CU_ASSERT_EQUAL(shoal_ctx_create(NULL, NULL), -EINVAL);
    /* Polling with bad arguments does not crash. */
    shoal_event_t ev;
    CU_ASSERT_EQUAL(shoal_poll(NULL, &ev, 1), -EINVAL);
    CU_ASSERT_EQUAL(shoal_wait(NULL, &ev, 1, 0), -EINVAL);
    ctx = ucx_ctx_or_fail();
    CU_ASSERT_EQUAL(shoal_poll(ctx, &ev, 1), 0);
    uint64_t t0 = shoal__now_ms();
    CU_ASSERT_EQUAL(shoal_wait(ctx, &ev, 1, 100), 0);
    CU_ASSERT(shoal__now_ms() - t0 >= 90);
    shoal_listener_t *l;
    CU_ASSERT_EQUAL(shoal_listen(ctx, "no-such-host.invalid", 0, &l), -EHOSTUNREACH);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "no-such-host.invalid"));
    shoal_ep_t *ep;
    CU_ASSERT_EQUAL(shoal_connect(ctx, "127.0.0.1", 0, &ep), -EINVAL);
    CU_ASSERT_EQUAL(shoal_listen(ctx, "127.0.0.1", 0, &l), 0);
    CU_ASSERT(shoal_listener_port(l) > 0);
    CU_ASSERT_EQUAL(shoal_accept(l, 50, &ep), -ETIMEDOUT);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

/* shoal_ctx_errmsg() is like sqlite3_errmsg(): it describes the last call
 * on the context -- set by a failure, replaced by the next failure,
 * cleared by a success. */
static void test_errmsg_last_call(void)
{
    shoal_ctx_t *ctx = ucx_ctx_or_fail();
    static char region[4096];
    shoal_mr_t *mr = NULL;
    shoal_event_t ev;
    CU_ASSERT_STRING_EQUAL(shoal_ctx_errmsg(ctx), "");
    /* A failure names what was wrong. */
    CU_ASSERT_EQUAL(shoal_mr_reg(ctx, region, sizeof(region), 0x100, &mr), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "access bits 0x100"));
    /* The next success clears it. */
    CU_ASSERT_EQUAL(shoal_poll(ctx, &ev, 1), 0);
    CU_ASSERT_STRING_EQUAL(shoal_ctx_errmsg(ctx), "");
    /* Each failing call leaves its own message, not the previous one's. */
    CU_ASSERT_EQUAL(shoal_mr_reg(ctx, region, 0, 0, &mr), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "empty region"));
    CU_ASSERT_EQUAL(shoal_wait(ctx, &ev, 0, 0), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "max"));
    CU_ASSERT_PTR_NULL(strstr(shoal_ctx_errmsg(ctx), "empty region"));
    CU_ASSERT_EQUAL_FATAL(shoal_mr_reg(ctx, region, sizeof(region), 0, &mr), 0);
    CU_ASSERT_STRING_EQUAL(shoal_ctx_errmsg(ctx), "");
    /* Failures that used to leave no message: a too-small buffer, a
     * NULL out-pointer, an accept that is only a poll. */
    uint8_t small[8];
    size_t len;
    CU_ASSERT_EQUAL(shoal_mr_pack(mr, small, sizeof(small), &len), -ENOBUFS);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "8 bytes"));
    CU_ASSERT_EQUAL(shoal_mr_pack(mr, small, sizeof(small), NULL), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "len_p"));
    shoal_listener_t *l;
    CU_ASSERT_EQUAL_FATAL(shoal_listen(ctx, "127.0.0.1", 0, &l), 0);
    CU_ASSERT_STRING_EQUAL(shoal_ctx_errmsg(ctx), "");
    shoal_ep_t *ep;
    CU_ASSERT_EQUAL(shoal_accept(l, 0, &ep), -EAGAIN);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "no peer"));
    CU_ASSERT_EQUAL(shoal_connect(ctx, NULL, 1, &ep), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "host"));
    /* A step that failed inside a call that then succeeded leaves
     * nothing behind. */
    shoal__fail(ctx, -EIO, "an internal step that was recovered from");
    CU_ASSERT_EQUAL(shoal_wait(ctx, &ev, 1, 0), 0);
    CU_ASSERT_STRING_EQUAL(shoal_ctx_errmsg(ctx), "");
    /* A failure whose path set no text still gets one naming the call. */
    CU_ASSERT_EQUAL(shoal__leave(ctx, "put", -ENOTCONN), -ENOTCONN);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ctx_errmsg(ctx), "put: "));
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
}

/* A message that arrives on an endpoint before its connection is
 * established (verbs: the CQ is polled before the rdma_cm event is read)
 * is held until the endpoint is connected, not handed out for an endpoint
 * the application has not been given yet. */
static void test_event_before_connected(void)
{
    shoal_ctx_t *ctx = ucx_ctx_or_fail();
    shoal_ep_t *ep = shoal__ep_new(ctx);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ep);
    CU_ASSERT_EQUAL(ep->state, SHOAL_EP_CONNECTING);
    shoal__ep_recv(ep, "hello", 5);
    shoal_event_t ev;
    CU_ASSERT_EQUAL(shoal_poll(ctx, &ev, 1), 0);
    CU_ASSERT_EQUAL(shoal_poll(ctx, &ev, 1), 0);
    shoal__ep_connected(ep);
    CU_ASSERT_EQUAL(shoal_poll(ctx, &ev, 1), 1);
    CU_ASSERT_EQUAL(ev.type, SHOAL_EV_RECV);
    CU_ASSERT_PTR_EQUAL(ev.ep, ep);
    CU_ASSERT(ev.len == 5 && memcmp(ev.data, "hello", 5) == 0);
    shoal__ep_discard(ep);
    shoal_ctx_destroy(ctx);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("core", NULL, NULL);
    CU_add_test(s, "config defaults", test_config_defaults);
    CU_add_test(s, "config from SHOAL_* variables", test_config_env);
    CU_add_test(s, "config print and names", test_config_print);
    CU_add_test(s, "error strings", test_strerror);
    CU_add_test(s, "crc32", test_crc32);
    CU_add_test(s, "handshake hello encode/decode", test_hello);
    CU_add_test(s, "hello v2 flags: nonce, proof, refusal", test_hello_flags);
    CU_add_test(s, "auth proof depends on key, role, ids, nonces", test_auth_proof);
    CU_add_test(s, "authenticated handshake in-process; replayed proof refused",
                test_handshake_replay);
    CU_add_test(s, "UCX bootstrap handshake: plain, authenticated, wrong secret, garbage",
                test_boot_handshake);
    CU_add_test(s, "descriptor pack/parse, corruption", test_descriptor);
    CU_add_test(s, "context and endpoint argument errors", test_ctx_errors);
    CU_add_test(s, "errmsg describes the last call: set by a failure, cleared by a success",
                test_errmsg_last_call);
    CU_add_test(s, "events of an endpoint not yet connected are held",
                test_event_before_connected);
    return cu_run_all();
}
