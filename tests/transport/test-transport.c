/*
 * test-transport.c -- libshoal's transport suite: real processes on real
 * connections, once per transport in the list.
 *
 * The list comes from the command line (`test-transport ucx verbs`) or
 * SHOAL_TEST_TRANSPORTS; by default ucx always, plus verbs when this host
 * has a usable RDMA port.  A transport that was asked for but is not
 * usable here is a failure, not a skip; one that was merely not found by
 * the default list is reported as skipped.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../cu.h"
#include "harness.h"

#define MiB (1024u * 1024u)
#define BIG (16u * MiB)

/* ---- put and get, 1 B to 16 MiB, byte for byte -------------------------- */

static const size_t sizes[] = {1, 2, 7, 64, 4095, 4096, 65537, 1 * MiB + 3, 4 * MiB, BIG};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static void sizes_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(BIG);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, BIG,
                          SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ, &mr),
             ctx, "mr_reg");
    h_send_desc(ctx, ep, mr);
    for (unsigned i = 0; i < NSIZES; i++) {
        /* The client's put of sizes[i] bytes, seed i, offset 0. */
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_IMM, ep, 60000, &ev);
        CHECK(ev.imm == 1000 + i, "imm %u, expected %u", ev.imm, 1000 + i);
        long bad = h_verify(buf, sizes[i], i);
        CHECK(bad < 0, "put of %zu bytes: byte %ld differs", sizes[i], bad);
        /* Now the client reads back a different pattern. */
        h_fill(buf, sizes[i], 500 + i);
        h_send_str(ctx, ep, "get");
        h_expect_str(ctx, ep, "next", 60000); /* keeps progressing for the get */
    }
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void sizes_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *src = h_alloc(BIG), *dst = h_alloc(BIG);
    shoal_mr_t *smr, *dmr;
    CHECK_RC(shoal_mr_reg(ctx, src, BIG, 0, &smr), ctx, "mr_reg src");
    CHECK_RC(shoal_mr_reg(ctx, dst, BIG, 0, &dmr), ctx, "mr_reg dst");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    CHECK(shoal_rmr_length(rmr) == BIG, "remote length %zu", shoal_rmr_length(rmr));
    for (unsigned i = 0; i < NSIZES; i++) {
        h_fill(src, sizes[i], i);
        CHECK_RC(shoal_put(ep, smr, 0, rmr, 0, sizes[i], SHOAL_PUT_IMM, 1000 + i, i), ctx,
                 "put");
        /* Our PUT_DONE and the server's "get" (sent once it saw the
         * immediate) may come in either order. */
        shoal_event_t ev;
        bool put_done = false, got_get = false;
        while (!put_done || !got_get) {
            CHECK(shoal_wait(ctx, &ev, 1, 60000) == 1, "size %zu: no event", sizes[i]);
            if (ev.type == SHOAL_EV_PUT_DONE) {
                CHECK(ev.status == 0 && ev.wr_id == i && ev.len == sizes[i] && !put_done,
                      "put of %zu bytes: completion status %d (%s)", sizes[i], ev.status,
                      shoal_strerror(ev.status));
                put_done = true;
            } else if (ev.type == SHOAL_EV_RECV) {
                CHECK(ev.len == 3 && memcmp(ev.data, "get", 3) == 0 && !got_get, "message");
                got_get = true;
            } else {
                CHECK(ev.type == SHOAL_EV_SEND_DONE && ev.status == 0, "unexpected %s",
                      shoal_event_name(ev.type));
            }
        }
        memset(dst, 0, sizes[i]);
        CHECK_RC(shoal_get(ep, dmr, 0, rmr, 0, sizes[i], 77 + i), ctx, "get");
        h_expect(ctx, SHOAL_EV_GET_DONE, ep, 60000, &ev);
        CHECK(ev.status == 0 && ev.wr_id == 77 + i, "get of %zu bytes: completion status %d (%s)",
              sizes[i], ev.status, shoal_strerror(ev.status));
        long bad = h_verify(dst, sizes[i], 500 + i);
        CHECK(bad < 0, "get of %zu bytes: byte %ld differs", sizes[i], bad);
        h_send_str(ctx, ep, "next");
    }
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(smr);
    shoal_mr_dereg(dmr);
    shoal_ctx_destroy(ctx);
    free(src);
    free(dst);
}

static void test_put_get_sizes(void)
{
    CU_ASSERT_EQUAL(h_run(sizes_server, sizes_client, 1, NULL, 120), 0);
}

/* ---- 1,000 outstanding puts; immediates once each, in order, after data -- */

#define NOPS 1000
#define SLOT 4096

static void many_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc((size_t)NOPS * SLOT);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, (size_t)NOPS * SLOT, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx,
             "mr_reg");
    h_send_desc(ctx, ep, mr);
    static unsigned seen[NOPS];
    for (unsigned i = 0; i < NOPS; i++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_IMM, ep, 30000, &ev);
        CHECK(ev.imm < NOPS, "imm %u out of range", ev.imm);
        CHECK(seen[ev.imm] == 0, "imm %u delivered twice", ev.imm);
        CHECK(ev.imm == i, "imm %u arrived at position %u (out of order)", ev.imm, i);
        seen[ev.imm]++;
        long bad = h_verify(buf + (size_t)ev.imm * SLOT, SLOT, 9000 + ev.imm);
        CHECK(bad < 0, "imm %u arrived before its data (byte %ld)", ev.imm, bad);
    }
    /* Nothing more may arrive: no duplicates after the last one.  The
     * client answers "bye" only after all its completions, so anything
     * but that message here is an extra immediate. */
    h_send_str(ctx, ep, "all");
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void many_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *src = h_alloc((size_t)NOPS * SLOT);
    for (unsigned i = 0; i < NOPS; i++)
        h_fill(src + (size_t)i * SLOT, SLOT, 9000 + i);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, src, (size_t)NOPS * SLOT, 0, &mr), ctx, "mr_reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    /* Issue all of them before reaping any completion. */
    for (unsigned i = 0; i < NOPS; i++)
        CHECK_RC(shoal_put(ep, mr, (size_t)i * SLOT, rmr, (size_t)i * SLOT, SLOT,
                           SHOAL_PUT_IMM, i, 0x10000 + i),
                 ctx, "put");
    static unsigned done[NOPS];
    shoal_event_t evs[64];
    unsigned got = 0;
    uint64_t deadline = h_now_ms() + 60000;
    bool all = false; /* the server's "all" may overtake our last completions */
    while (got < NOPS) {
        CHECK(h_now_ms() < deadline, "only %u of %d completions", got, NOPS);
        int n = shoal_wait(ctx, evs, 64, 1000);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        for (int k = 0; k < n; k++) {
            if (evs[k].type == SHOAL_EV_RECV && evs[k].len == 3 &&
                memcmp(evs[k].data, "all", 3) == 0 && !all) {
                all = true;
                continue;
            }
            if (evs[k].type == SHOAL_EV_SEND_DONE && evs[k].status == 0)
                continue;
            CHECK(evs[k].type == SHOAL_EV_PUT_DONE, "unexpected %s",
                  shoal_event_name(evs[k].type));
            CHECK(evs[k].status == 0, "put failed: %s", evs[k].reason);
            uint64_t id = evs[k].wr_id - 0x10000;
            CHECK(id < NOPS && !done[id], "completion %llu bad or repeated",
                  (unsigned long long)evs[k].wr_id);
            done[id] = 1;
            got++;
        }
    }
    if (!all)
        h_expect_str(ctx, ep, "all", 30000);
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 10000, NULL);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(src);
}

static void test_many_outstanding_imm(void)
{
    CU_ASSERT_EQUAL(h_run(many_server, many_client, 1, NULL, 120), 0);
}

/* ---- two endpoints at once (two client processes) ------------------------ */

#define TWO_LEN (256u * 1024u)

static void two_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep[2];
    uint8_t *buf[2];
    shoal_mr_t *mr[2];
    for (int i = 0; i < 2; i++) {
        CHECK_RC(shoal_accept(l, 30000, &ep[i]), ctx, "accept");
        buf[i] = h_alloc(TWO_LEN);
        CHECK_RC(shoal_mr_reg(ctx, buf[i], TWO_LEN, SHOAL_ACCESS_REMOTE_WRITE, &mr[i]), ctx,
                 "mr_reg");
        shoal_ep_set_user(ep[i], buf[i]);
        h_send_desc(ctx, ep[i], mr[i]);
    }
    /* Each client sends 20 puts with immediates carrying its own seed and
     * waits for our "ok" before overwriting the buffer with the next. */
    unsigned count[2] = {0, 0};
    uint64_t deadline = h_now_ms() + 60000;
    while (count[0] + count[1] < 40) {
        CHECK(h_now_ms() < deadline, "only %u+%u immediates", count[0], count[1]);
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, 1000);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        if (n == 0)
            continue;
        if (ev.type == SHOAL_EV_SEND_DONE) {
            CHECK(ev.status == 0, "ok message failed");
            continue;
        }
        CHECK(ev.type == SHOAL_EV_IMM, "unexpected %s", shoal_event_name(ev.type));
        int who = ev.ep == ep[0] ? 0 : ev.ep == ep[1] ? 1 : -1;
        CHECK(who >= 0, "immediate on an unknown endpoint");
        long bad = h_verify(shoal_ep_user(ev.ep), TWO_LEN, ev.imm);
        CHECK(bad < 0, "endpoint %d seed %u: byte %ld differs (crossed wires?)", who, ev.imm,
              bad);
        count[who]++;
        CHECK_RC(shoal_send(ev.ep, "ok", 2, 0), ctx, "send ok");
    }
    CHECK(count[0] == 20 && count[1] == 20, "counts %u/%u", count[0], count[1]);
    for (int i = 0; i < 2; i++)
        CHECK_RC(shoal_send(ep[i], "bye", 3, 0xb7e), ctx, "send bye");
    for (int byes = 0; byes < 2;) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_SEND_DONE, NULL, 10000, &ev);
        CHECK(ev.status == 0, "send failed");
        byes += ev.wr_id == 0xb7e;
    }
    for (int i = 0; i < 2; i++) {
        shoal_ep_close(ep[i]);
        shoal_mr_dereg(mr[i]);
        free(buf[i]);
    }
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void two_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *src = h_alloc(TWO_LEN);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, src, TWO_LEN, 0, &mr), ctx, "mr_reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    for (unsigned k = 0; k < 20; k++) {
        uint32_t seed = (uint32_t)r->index * 1000 + k;
        h_fill(src, TWO_LEN, seed);
        CHECK_RC(shoal_put(ep, mr, 0, rmr, 0, TWO_LEN, SHOAL_PUT_IMM, seed, k), ctx, "put");
        h_expect_put_and_str(ctx, ep, "ok", 30000);
    }
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(src);
}

static void test_two_endpoints(void)
{
    CU_ASSERT_EQUAL(h_run(two_server, two_client, 2, NULL, 120), 0);
}

/* ---- control messages: 0 to SHOAL_MSG_MAX bytes, and one too many -------- */

static const size_t msg_sizes[] = {0, 1, 100, 1024, SHOAL_MSG_MAX - 1, SHOAL_MSG_MAX};
#define NMSG (sizeof(msg_sizes) / sizeof(msg_sizes[0]))

static void msg_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    for (unsigned i = 0; i < NMSG; i++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_RECV, ep, 10000, &ev);
        CHECK(ev.len == msg_sizes[i], "message %u: %zu bytes, expected %zu", i, ev.len,
              msg_sizes[i]);
        long bad = h_verify(ev.data, ev.len, 300 + i);
        CHECK(bad < 0, "message %u: byte %ld differs", i, bad);
    }
    h_send_str(ctx, ep, "done");
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void msg_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    static uint8_t buf[SHOAL_MSG_MAX + 1];
    CHECK(shoal_send(ep, buf, SHOAL_MSG_MAX + 1, 0) == -EMSGSIZE, "oversized send accepted");
    for (unsigned i = 0; i < NMSG; i++) {
        h_fill(buf, msg_sizes[i], 300 + i);
        CHECK_RC(shoal_send(ep, buf, msg_sizes[i], i), ctx, "send");
        /* The bytes were copied: scribbling on them now must not matter. */
        memset(buf, 0xee, sizeof(buf));
    }
    for (unsigned i = 0; i < NMSG; i++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 10000, &ev);
        CHECK(ev.status == 0 && ev.wr_id == i, "send %u completion (wr_id %llu)", i,
              (unsigned long long)ev.wr_id);
    }
    h_expect_str(ctx, ep, "done", 10000);
    shoal_ep_close(ep);
    shoal_ctx_destroy(ctx);
}

static void test_messages(void)
{
    CU_ASSERT_EQUAL(h_run(msg_server, msg_client, 1, NULL, 60), 0);
}

/* ---- local checks: out-of-range, wrong access, corrupt descriptors ------- */

#define SMALL 8192

static void checks_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *wbuf = h_alloc(SMALL), *rbuf = h_alloc(SMALL);
    shoal_mr_t *wmr, *rmr;
    CHECK_RC(shoal_mr_reg(ctx, wbuf, SMALL, SHOAL_ACCESS_REMOTE_WRITE, &wmr), ctx, "reg w");
    CHECK_RC(shoal_mr_reg(ctx, rbuf, SMALL, SHOAL_ACCESS_REMOTE_READ, &rmr), ctx, "reg r");
    h_send_desc(ctx, ep, wmr);
    h_send_desc(ctx, ep, rmr);
    h_expect_str(ctx, ep, "done", 30000);
    /* None of the refused operations may have touched our memory. */
    for (unsigned i = 0; i < SMALL; i++)
        CHECK(wbuf[i] == 0 && rbuf[i] == 0, "byte %u was written by a refused operation", i);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(wmr);
    shoal_mr_dereg(rmr);
    shoal_ctx_destroy(ctx);
    free(wbuf);
    free(rbuf);
}

static void checks_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *buf = h_alloc(2 * SMALL);
    memset(buf, 0xab, 2 * SMALL);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 2 * SMALL, 0, &mr), ctx, "reg");

    /* Corrupt and truncated descriptors are refused. */
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_RECV, ep, 10000, &ev);
    uint8_t desc[SHOAL_DESC_MAX];
    size_t dlen = ev.len;
    memcpy(desc, ev.data, dlen);
    shoal_rmr_t *bad;
    for (size_t cut = 0; cut < dlen; cut++) {
        int rc = shoal_rmr_unpack(ep, desc, cut, &bad);
        CHECK(rc == -EBADMSG, "descriptor truncated to %zu bytes: got %d", cut, rc);
    }
    for (size_t i = 0; i < dlen; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            desc[i] ^= (uint8_t)(1u << bit);
            int rc = shoal_rmr_unpack(ep, desc, dlen, &bad);
            CHECK(rc == -EBADMSG || rc == -EPROTO, "byte %zu bit %d flipped: accepted (%d)", i,
                  bit, rc);
            desc[i] ^= (uint8_t)(1u << bit);
        }
    }
    shoal_rmr_t *wr;
    CHECK_RC(shoal_rmr_unpack(ep, desc, dlen, &wr), ctx, "intact descriptor");
    shoal_rmr_t *rd = h_recv_desc(ctx, ep);

    /* Ranges. */
    CHECK(shoal_put(ep, mr, 0, wr, 1, SMALL, 0, 0, 1) == -ERANGE, "put past the end");
    CHECK(shoal_put(ep, mr, 0, wr, SMALL, 1, 0, 0, 1) == -ERANGE, "put at the end");
    CHECK(shoal_put(ep, mr, 0, wr, (size_t)-1, 2, 0, 0, 1) == -ERANGE, "put offset overflow");
    CHECK(shoal_put(ep, mr, 2 * SMALL - 1, wr, 0, 2, 0, 0, 1) == -ERANGE, "local overrun");
    CHECK(shoal_put(ep, mr, 0, wr, 0, 0, 0, 0, 1) == -EINVAL, "zero-length put");
    CHECK(shoal_get(ep, mr, 0, rd, 4, SMALL, 1) == -ERANGE, "get past the end");
    CHECK(strstr(shoal_ctx_errmsg(ctx), "outside") != NULL, "errmsg '%s'",
          shoal_ctx_errmsg(ctx));
    /* Access granted in the descriptor. */
    CHECK(shoal_put(ep, mr, 0, rd, 0, 16, 0, 0, 1) == -EACCES, "put into a read-only region");
    CHECK(shoal_get(ep, mr, 0, wr, 0, 16, 1) == -EACCES, "get from a write-only region");
    CHECK(shoal_put(ep, mr, 0, wr, 0, 16, 0x80, 0, 1) == -EINVAL, "unknown put flag");
    /* Nothing was started, so no completion may come. */
    int n = shoal_wait(ctx, &ev, 1, 200);
    CHECK(n == 0, "a refused operation produced %s", shoal_event_name(ev.type));
    h_send_str(ctx, ep, "done");
    shoal_rmr_destroy(wr);
    shoal_rmr_destroy(rd);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void test_local_checks(void)
{
    CU_ASSERT_EQUAL(h_run(checks_server, checks_client, 1, NULL, 60), 0);
}

/* ---- UCX: a forged write right is refused where the memory is ----------- */

/* CRC-32 (IEEE), as the descriptor format uses; the test's own copy, so a
 * forged descriptor passes the local checks and only the target can
 * refuse the write. */
static uint32_t test_crc32(const uint8_t *p, size_t len)
{
    uint32_t crc = 0xffffffffu;
    while (len--) {
        crc ^= *p++;
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

#define FORGE_LEN 4096

static void forge_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 10000, &ep), ctx, "accept");
    static uint8_t buf[FORGE_LEN];
    memset(buf, 0x33, sizeof(buf));
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, sizeof(buf), SHOAL_ACCESS_REMOTE_READ, &mr), ctx, "reg");
    uint8_t d[SHOAL_DESC_MAX];
    size_t len;
    CHECK_RC(shoal_mr_pack(mr, d, sizeof(d), &len), ctx, "pack");
    /* Grant remote write in the descriptor (byte 7: access), re-sign it. */
    d[7] |= SHOAL_ACCESS_REMOTE_WRITE;
    uint32_t crc = test_crc32(d, len - 4);
    for (int i = 0; i < 4; i++)
        d[len - 4 + i] = (uint8_t)(crc >> (8 * i));
    CHECK_RC(shoal_send(ep, d, len, 0), ctx, "send forged descriptor");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_EP_FAILED, ep, 10000, &ev);
    CHECK(ev.status == -EACCES, "target failed with %d (%s), expected -EACCES", ev.status,
          ev.reason ? ev.reason : "");
    for (size_t i = 0; i < sizeof(buf); i++)
        CHECK(buf[i] == 0x33, "byte %zu of the read-only region was overwritten", i);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
}

/* After a put the target must refuse: wait up to @ms for the initiator's
 * EP_FAILED (returned); no immediate may come back meanwhile. */
static shoal_event_t expect_refused(shoal_ctx_t *ctx, int ms)
{
    shoal_event_t ev = {0};
    bool failed = false;
    uint64_t deadline = h_now_ms() + (uint64_t)ms;
    while (!failed && h_now_ms() < deadline) {
        int n = shoal_wait(ctx, &ev, 1, 1000);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        CHECK(n == 0 || ev.type != SHOAL_EV_IMM, "an immediate came back");
        failed = n == 1 && ev.type == SHOAL_EV_EP_FAILED;
    }
    CHECK(failed, "the initiator never saw its endpoint fail");
    return ev;
}

static void forge_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    CHECK(shoal_rmr_access(rmr) & SHOAL_ACCESS_REMOTE_WRITE, "forged right not accepted");
    static uint8_t src[FORGE_LEN];
    memset(src, 0xee, sizeof(src));
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, src, sizeof(src), 0, &mr), ctx, "reg");
    /* The local checks pass (the descriptor says write); the target must
     * refuse and drop the connection, which this side must notice. */
    CHECK_RC(shoal_put(ep, mr, 0, rmr, 0, sizeof(src), SHOAL_PUT_IMM, 7, 1), ctx, "put");
    (void)expect_refused(ctx, 10000);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
}

static void test_forged_write(void)
{
    CU_ASSERT_EQUAL(h_run(forge_server, forge_client, 1, NULL, 60), 0);
}

/* ---- a descriptor aimed at another region ----------------------------------
 *
 * The server registers two writable regions, A and B, gives the client
 * A's descriptor and (as if it had guessed it) B's address.  The client
 * forges a descriptor with A's key and B's address, checksum fixed, so
 * every local check passes: the target must refuse the write (UCX: the
 * region's key in the PUT does not match B; verbs: the NIC's rkey check),
 * and B must be untouched.  A peer reaches only the regions it was given.
 */

#define XR_LEN 4096

static void xregion_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *a = h_alloc(XR_LEN), *b = h_alloc(XR_LEN);
    memset(b, 0x5a, XR_LEN);
    shoal_mr_t *ma, *mb;
    CHECK_RC(shoal_mr_reg(ctx, a, XR_LEN, SHOAL_ACCESS_REMOTE_WRITE, &ma), ctx, "reg A");
    CHECK_RC(shoal_mr_reg(ctx, b, XR_LEN, SHOAL_ACCESS_REMOTE_WRITE, &mb), ctx, "reg B");
    h_send_desc(ctx, ep, ma);
    uint64_t baddr = (uint64_t)(uintptr_t)b;
    CHECK_RC(shoal_send(ep, &baddr, sizeof(baddr), 0), ctx, "send B's address");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_EP_FAILED, ep, 20000, &ev);
    for (size_t i = 0; i < XR_LEN; i++)
        CHECK(b[i] == 0x5a, "byte %zu of region B was overwritten", i);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(ma);
    shoal_mr_dereg(mb);
    shoal_ctx_destroy(ctx);
    free(a);
    free(b);
}

static void xregion_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_RECV, ep, 10000, &ev);
    uint8_t d[SHOAL_DESC_MAX];
    CHECK(ev.len <= sizeof(d) && ev.len > 32, "descriptor of %zu bytes", ev.len);
    size_t len = ev.len;
    memcpy(d, ev.data, len);
    h_expect(ctx, SHOAL_EV_RECV, ep, 10000, &ev);
    CHECK(ev.len == 8, "B's address: %zu bytes", ev.len);
    uint64_t baddr;
    memcpy(&baddr, ev.data, 8);
    for (int i = 0; i < 8; i++) /* the descriptor's address field (offset 8) */
        d[8 + i] = (uint8_t)(baddr >> (8 * i));
    uint32_t crc = test_crc32(d, len - 4);
    for (int i = 0; i < 4; i++)
        d[len - 4 + i] = (uint8_t)(crc >> (8 * i));
    shoal_rmr_t *rmr;
    CHECK_RC(shoal_rmr_unpack(ep, d, len, &rmr), ctx, "unpack the forged descriptor");
    uint8_t *src = h_alloc(XR_LEN);
    memset(src, 0xee, XR_LEN);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, src, XR_LEN, 0, &mr), ctx, "reg");
    CHECK_RC(shoal_put(ep, mr, 0, rmr, 0, XR_LEN, SHOAL_PUT_IMM, 9, 1), ctx, "put");
    /* (A PUT_DONE may still say 0 on UCX: it completes locally, once sent;
     * the server checks that region B is untouched.) */
    ev = expect_refused(ctx, 15000);
    printf("refused: %s; ", ev.reason ? ev.reason : "(no reason)");
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(src);
}

static void test_cross_region(void)
{
    CU_ASSERT_EQUAL(h_run(xregion_server, xregion_client, 1, NULL, 60), 0);
}

/* ---- connect with backoff, reconnect ---------------------------------------
 *
 * The server publishes a port and listens on it only 500 ms later: the
 * client's shoal_connect_retry() must get through by trying again.  Then
 * the server drops the connection; the client sees EP_FAILED and
 * reconnects the same handle; a descriptor from the old connection is
 * refused on the new one, messages flow.  And retrying gives up in its
 * time where nothing listens, at once on a bad argument.
 */

static void reconnect_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l;
    CHECK_RC(shoal_listen(ctx, h_host(), 0, &l), ctx, "listen");
    uint16_t port = shoal_listener_port(l);
    shoal_listener_close(l);
    CHECK(write(r->port_wr, &port, sizeof(port)) == sizeof(port), "publish port");
    /* when it listens again: 500 ms from now (the client compares on the
     * same monotonic clock, so a loaded machine cannot fool the check) */
    uint64_t t_listen = h_now_ms() + 500;
    CHECK(write(r->port_wr, &t_listen, sizeof(t_listen)) == sizeof(t_listen), "publish time");
    usleep(500000);
    CHECK_RC(shoal_listen(ctx, h_host(), port, &l), ctx, "listen on the published port");
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(4096);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 4096, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx, "mr_reg");
    h_send_desc(ctx, ep, mr);
    h_expect_str(ctx, ep, "got it", 30000);
    shoal_ep_close(ep); /* the client's connection breaks */
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept the reconnected client");
    CHECK(shoal_ep_reconnect(ep, 100) == -EINVAL, "an accepted endpoint was reconnected");
    h_expect_str(ctx, ep, "again", 30000);
    h_send_str(ctx, ep, "ok");
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void reconnect_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    uint16_t port;
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&p, 1, 30000) == 1, "no port published by the server");
    CHECK(read(r->port_rd, &port, sizeof(port)) == sizeof(port), "read port");
    uint64_t t_listen;
    CHECK(read(r->port_rd, &t_listen, sizeof(t_listen)) == sizeof(t_listen), "read time");
    uint64_t t0 = h_now_ms();
    shoal_ep_t *ep;
    CHECK_RC(shoal_connect_retry(ctx, h_host(), port, 20000, &ep), ctx, "connect_retry");
    uint64_t now = h_now_ms(), ms = now - t0;
    CHECK(now >= t_listen, "connected %llu ms before the server listened again",
          (unsigned long long)(t_listen - now));
    printf("connected after %llu ms of retries; ", (unsigned long long)ms);
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    h_send_str(ctx, ep, "got it");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_EP_FAILED, ep, 30000, &ev);
    t0 = h_now_ms();
    CHECK_RC(shoal_ep_reconnect(ep, 20000), ctx, "reconnect");
    printf("reconnected in %llu ms; ", (unsigned long long)(h_now_ms() - t0));
    uint8_t *src = h_alloc(64);
    shoal_mr_t *smr;
    CHECK_RC(shoal_mr_reg(ctx, src, 64, 0, &smr), ctx, "mr_reg");
    int rc = shoal_put(ep, smr, 0, rmr, 0, 64, 0, 0, 1);
    CHECK(rc == -EINVAL, "a put with a descriptor of the old connection gave %d (%s)", rc,
          shoal_strerror(rc));
    h_send_str(ctx, ep, "again");
    h_expect_str(ctx, ep, "ok", 30000);
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, &ev);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    /* Nothing listens: retrying gives up after its 400 ms, refused. */
    shoal_listener_t *l;
    CHECK_RC(shoal_listen(ctx, h_host(), 0, &l), ctx, "listen");
    uint16_t closed = shoal_listener_port(l);
    shoal_listener_close(l);
    t0 = h_now_ms();
    rc = shoal_connect_retry(ctx, h_host(), closed, 400, &ep);
    ms = h_now_ms() - t0;
    CHECK(rc == -ECONNREFUSED || rc == -ETIMEDOUT, "retrying a closed port gave %d (%s)", rc,
          shoal_strerror(rc));
    CHECK(ms >= 200 && ms < 5000, "gave up after %llu ms with a 400 ms bound",
          (unsigned long long)ms);
    printf("a closed port: gave up after %llu ms (bound 400)\n", (unsigned long long)ms);
    /* A failure that cannot pass is not retried. */
    t0 = h_now_ms();
    CHECK(shoal_connect_retry(ctx, h_host(), 0, 5000, &ep) == -EINVAL, "port 0 accepted");
    CHECK(h_now_ms() - t0 < 100, "a bad argument was retried");
    shoal_mr_dereg(smr);
    shoal_ctx_destroy(ctx);
    free(src);
}

static void test_reconnect(void)
{
    CU_ASSERT_EQUAL(h_run(reconnect_server, reconnect_client, 1, NULL, 90), 0);
}

/* ---- a listener restarted on its port -------------------------------------
 *
 * A server that closed its connections first leaves them in TIME_WAIT on
 * its listening port for a minute; a new server on the same port (a job
 * restarted at the same --coordinator, a parameter server restarted with
 * --resume) must still be able to listen there at once.
 */

static void relisten_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l;
    CHECK_RC(shoal_listen(ctx, h_host(), 0, &l), ctx, "listen");
    uint16_t port = shoal_listener_port(l);
    CHECK(write(r->port_wr, &port, sizeof(port)) == sizeof(port), "publish port");
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    h_expect_str(ctx, ep, "hello", 30000);
    shoal_ep_close(ep); /* this side closes first: its sockets wait in TIME_WAIT */
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
    ctx = h_ctx();
    CHECK_RC(shoal_listen(ctx, h_host(), port, &l), ctx, "listen again on the same port");
    CHECK(write(r->port_wr, &port, sizeof(port)) == sizeof(port), "publish port again");
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept on the new listener");
    h_expect_str(ctx, ep, "hello again", 30000);
    h_send_str(ctx, ep, "ok");
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void relisten_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    struct pollfd p = {.fd = r->port_rd, .events = POLLIN};
    uint16_t port;
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "no port published by the server");
    shoal_ep_t *ep;
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "connect");
    h_send_str(ctx, ep, "hello");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_EP_FAILED, ep, 30000, &ev); /* the server closed */
    shoal_ep_close(ep);
    CHECK(poll(&p, 1, 30000) == 1 && read(r->port_rd, &port, sizeof(port)) == sizeof(port),
          "the server did not listen again");
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "connect to the new listener");
    h_send_str(ctx, ep, "hello again");
    h_expect_str(ctx, ep, "ok", 30000);
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, &ev);
    shoal_ep_close(ep);
    shoal_ctx_destroy(ctx);
}

static void test_relisten(void)
{
    CU_ASSERT_EQUAL(h_run(relisten_server, relisten_client, 1, NULL, 60), 0);
}

/* ---- connecting to a closed port ----------------------------------------- */

static void refused_role(struct h_role *r)
{
    (void)r;
    shoal_ctx_t *ctx = h_ctx();
    uint16_t port = h_closed_port();
    shoal_ep_t *ep = NULL;
    uint64_t t0 = h_now_ms();
    int rc = shoal_connect(ctx, h_host(), port, &ep);
    uint64_t dt = h_now_ms() - t0;
    CHECK(rc == -ECONNREFUSED, "connect to closed port %u gave %d (%s)", port, rc,
          shoal_ctx_errmsg(ctx));
    CHECK(ep == NULL, "endpoint returned on failure");
    char want[32];
    snprintf(want, sizeof(want), ":%u", port);
    CHECK(strstr(shoal_ctx_errmsg(ctx), want) != NULL, "message does not name the port: '%s'",
          shoal_ctx_errmsg(ctx));
    CHECK(dt < 5000, "refusal took %llu ms", (unsigned long long)dt);
    shoal_ctx_destroy(ctx);
}

static void noop_role(struct h_role *r) { (void)r; }

static void test_connect_refused(void)
{
    CU_ASSERT_EQUAL(h_run(refused_role, noop_role, 0, NULL, 30), 0);
}

/* ---- a peer killed with SIGKILL -------------------------------------------- */

/* arg: which side dies.  The survivor must see EP_FAILED within a few
 * seconds, its outstanding put must complete (with an error or not, but it
 * must complete), and later operations must fail with -ENOTCONN. */
enum { SERVER_DIES = 0, CLIENT_DIES = 1 };

static void survivor(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_mr_t *mr, shoal_rmr_t *rmr)
{
    uint64_t t0 = h_now_ms();
    bool failed = false;
    int puts = 0, done = 0;
    /* Keep writing until the failure is noticed. */
    while (!failed) {
        CHECK(h_now_ms() - t0 < 8000, "peer death not reported within 8 s");
        if (rmr && puts - done < 8 &&
            shoal_put(ep, mr, 0, rmr, 0, 65536, 0, 0, (uint64_t)puts) == 0)
            puts++;
        shoal_event_t evs[16];
        int n = shoal_wait(ctx, evs, 16, 50);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        for (int i = 0; i < n; i++) {
            if (evs[i].type == SHOAL_EV_PUT_DONE)
                done++;
            else if (evs[i].type == SHOAL_EV_EP_FAILED) {
                CHECK(evs[i].ep == ep && evs[i].status < 0 && evs[i].reason,
                      "EP_FAILED event fields");
                failed = true;
            } else
                CHECK(evs[i].type == SHOAL_EV_RECV || evs[i].type == SHOAL_EV_SEND_DONE,
                      "unexpected %s", shoal_event_name(evs[i].type));
        }
    }
    uint64_t dt = h_now_ms() - t0;
    fprintf(stderr, "peer death detected after %llu ms\n", (unsigned long long)dt);
    if (rmr)
        CHECK(shoal_put(ep, mr, 0, rmr, 0, 16, 0, 0, 1) == -ENOTCONN, "put after failure");
    CHECK(shoal_send(ep, "x", 1, 0) == -ENOTCONN, "send after failure");
    /* Every started operation completes; no second EP_FAILED. */
    uint64_t t1 = h_now_ms();
    while (done < puts) {
        CHECK(h_now_ms() - t1 < 5000, "%d of %d puts never completed", puts - done, puts);
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, 100);
        if (n == 1) {
            CHECK(ev.type == SHOAL_EV_PUT_DONE, "after failure: %s", shoal_event_name(ev.type));
            done++;
        }
    }
    t1 = h_now_ms();
    if (rmr)
        shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    CHECK(h_now_ms() - t1 < 3000, "closing a failed endpoint took %llu ms",
          (unsigned long long)(h_now_ms() - t1));
}

static void kill_server(struct h_role *r)
{
    int who = *(int *)r->arg;
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(65536);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 65536, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx, "reg");
    h_send_desc(ctx, ep, mr);
    h_expect_str(ctx, ep, "go", 10000);
    if (who == SERVER_DIES) {
        /* Let a few puts land, then die without any goodbye. */
        shoal_event_t ev;
        shoal_wait(ctx, &ev, 1, 200);
        raise(SIGKILL);
    }
    survivor(ctx, ep, mr, NULL);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
}

static void kill_client(struct h_role *r)
{
    int who = *(int *)r->arg;
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *buf = h_alloc(65536);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 65536, 0, &mr), ctx, "reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    h_send_str(ctx, ep, "go");
    if (who == CLIENT_DIES) {
        usleep(200000);
        raise(SIGKILL);
    }
    survivor(ctx, ep, mr, rmr);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
}

static void test_peer_killed(int who)
{
    int arg = who;
    /* h_run counts the victim's death as a failure, so its return value is
     * not the verdict: the survivor's exit status (its CHECKs) is. */
    (void)h_run(kill_server, kill_client, 1, &arg, 40);
    CU_ASSERT_EQUAL(h_last_status(who == SERVER_DIES ? 1 : 0), 0);
    CU_ASSERT_EQUAL(h_last_signal(who == SERVER_DIES ? 0 : 1), SIGKILL);
}

static void test_server_killed(void) { test_peer_killed(SERVER_DIES); }
static void test_client_killed(void) { test_peer_killed(CLIENT_DIES); }

/* ---- the progress thread (SHOAL_PROGRESS=thread) ------------------------------
 *
 * A target that computes: the server says "computing" and then makes no
 * call into libshoal for COMPUTE_MS, while the client puts 16 MiB into it
 * (16 puts of 1 MiB, the last with an immediate) and sends three
 * messages.  Over UCX on TCP a put completes only once the target has
 * taken its bytes off the socket, which is more than the kernel's buffers
 * hold: so with the target's progress thread every PUT_DONE arrives while
 * it computes, and without it they do not.  Afterwards the target's own
 * events are all there, in order: the immediate, then the messages.
 */
#define COMPUTE_MS 2000
#define PT_PUTS 16

static void pt_use(bool thread)
{
    setenv("SHOAL_PROGRESS", thread ? "thread" : "off", 1);
}

static void compute_server(struct h_role *r)
{
    bool thread = *(bool *)r->arg;
    pt_use(thread);
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    size_t len = (size_t)PT_PUTS * MiB;
    uint8_t *buf = h_alloc(len);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, len, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx, "mr_reg");
    h_send_desc(ctx, ep, mr);
    h_expect_str(ctx, ep, "ready", 30000);
    h_send_str(ctx, ep, "computing");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, &ev);
    /* "Compute": no call into libshoal at all. */
    struct timespec t = {COMPUTE_MS / 1000, (COMPUTE_MS % 1000) * 1000000L};
    while (nanosleep(&t, &t) && errno == EINTR)
        ;
    /* Everything the client did arrives, in the order it was issued. */
    h_expect(ctx, SHOAL_EV_IMM, ep, 60000, &ev);
    CHECK(ev.imm == 0xC0FFEE, "imm 0x%x", ev.imm);
    h_expect_str(ctx, ep, "m0", 30000);
    h_expect_str(ctx, ep, "m1", 30000);
    h_expect_str(ctx, ep, "m2", 30000);
    long bad = h_verify(buf, len, 7);
    CHECK(bad < 0, "byte %ld of the 16 MiB differs", bad);
    h_send_str(ctx, ep, "verified");
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void compute_client(struct h_role *r)
{
    bool thread = *(bool *)r->arg;
    pt_use(false); /* only the target's thread matters here */
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    size_t len = (size_t)PT_PUTS * MiB;
    uint8_t *src = h_alloc(len);
    h_fill(src, len, 7);
    shoal_mr_t *smr;
    CHECK_RC(shoal_mr_reg(ctx, src, len, 0, &smr), ctx, "mr_reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    h_send_str(ctx, ep, "ready");
    h_expect_str(ctx, ep, "computing", 30000);
    uint64_t t0 = h_now_ms();
    for (unsigned i = 0; i < PT_PUTS; i++)
        CHECK_RC(shoal_put(ep, smr, (size_t)i * MiB, rmr, (size_t)i * MiB, MiB,
                           i + 1 == PT_PUTS ? SHOAL_PUT_IMM : 0, 0xC0FFEE, i),
                 ctx, "put");
    for (int i = 0; i < 3; i++) {
        char m[4];
        snprintf(m, sizeof(m), "m%d", i);
        h_send_str(ctx, ep, m);
    }
    /* Count what completes while the target computes (with a margin
     * before it stops, for a slow start of its thread and the load). */
    int done = 0;
    uint64_t last = 0, window = COMPUTE_MS - 400;
    shoal_event_t ev;
    while (h_now_ms() - t0 < window) {
        int n = shoal_wait(ctx, &ev, 1, 20);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        if (n == 1 && ev.type == SHOAL_EV_PUT_DONE) {
            CHECK(ev.status == 0, "put %llu: %s", (unsigned long long)ev.wr_id,
                  shoal_strerror(ev.status));
            done++;
            last = h_now_ms() - t0;
        } else if (n == 1) {
            CHECK(ev.type == SHOAL_EV_SEND_DONE && ev.status == 0, "unexpected %s",
                  shoal_event_name(ev.type));
        }
    }
    printf("%s: %d of %d PUT_DONEs while the target computed%s", thread ? "thread" : "off",
           done, PT_PUTS, done ? "" : "; ");
    if (done)
        printf(" (last %llu ms after the first put); ", (unsigned long long)last);
    if (thread)
        CHECK(done == PT_PUTS, "with the target's progress thread only %d of %d puts "
              "completed while it computed", done, PT_PUTS);
    else
        CHECK(done < PT_PUTS, "all %d puts completed with nobody progressing the target: "
              "the test proves nothing here (larger socket buffers?)", PT_PUTS);
    /* The rest completes once the target is back. */
    while (done < PT_PUTS) {
        h_expect(ctx, SHOAL_EV_PUT_DONE, ep, 30000, &ev);
        CHECK(ev.status == 0, "put: %s", shoal_strerror(ev.status));
        done++;
    }
    h_expect_str(ctx, ep, "verified", 30000);
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, &ev);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(smr);
    shoal_ctx_destroy(ctx);
    free(src);
}

static void test_progress_thread_compute(void)
{
    static bool on = true, off = false;
    CU_ASSERT_EQUAL(h_run(compute_server, compute_client, 1, &on, 90), 0);
    CU_ASSERT_EQUAL(h_run(compute_server, compute_client, 1, &off, 90), 0);
}

/*
 * The application and the thread side by side: both ends run their
 * progress thread, and the client does PT_OPS round trips (a put with
 * immediate, answered by a message carrying the same number), waiting by
 * shoal_poll or shoal_wait in turn and pausing now and then long enough
 * for its thread to take over, so calls meet the thread in every state.
 * No deadlock (the harness's time limit), every answer in order, and
 * shoal_ctx_destroy joins the thread: the process has as many threads
 * after it as before the context.
 */
#define PT_OPS 3000

static int count_threads(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int n = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "Threads: %d", &n) == 1)
            break;
    if (f)
        fclose(f);
    return n;
}

/* A context with the thread; checks that it adds exactly one thread to
 * those a context without it has (UCX runs one of its own per context). */
static shoal_ctx_t *pt_ctx(int *before)
{
    pt_use(false);
    shoal_ctx_t *plain = h_ctx();
    int without = count_threads();
    shoal_ctx_destroy(plain);
    *before = count_threads();
    pt_use(true);
    shoal_ctx_t *ctx = h_ctx();
    int with = count_threads();
    CHECK(with == without + 1, "threads: %d with a context without the progress thread, "
          "%d with one with it", without, with);
    return ctx;
}

static void pt_ctx_destroy(shoal_ctx_t *ctx, int before)
{
    shoal_ctx_destroy(ctx);
    int after = count_threads();
    CHECK(after == before, "threads: %d before the context, %d after its destroy", before,
          after);
}

/* Every PT_PAUSE_EVERY rounds a pause longer than the thread's longest
 * nap (16 ms), so it takes over; short ones otherwise. */
#define PT_PAUSE_EVERY 60
static void pause_now_and_then(unsigned i)
{
    if (i % PT_PAUSE_EVERY == 0)
        usleep(20000 + (i * 37) % 5000);
    else if (i % 7 == 3)
        usleep(500 + (i * 37) % 1000);
}

static void busy_server(struct h_role *r)
{
    int before;
    shoal_ctx_t *ctx = pt_ctx(&before);
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(SLOT);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, SLOT, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx, "mr_reg");
    h_send_desc(ctx, ep, mr);
    for (unsigned i = 0; i < PT_OPS; i++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_IMM, ep, 30000, &ev);
        CHECK(ev.imm == i, "immediate %u, expected %u", ev.imm, i);
        CHECK(buf[0] == (uint8_t)i, "data of put %u not there before its immediate", i);
        char m[16];
        snprintf(m, sizeof(m), "%u", i);
        CHECK_RC(shoal_send(ep, m, strlen(m), i), ctx, "send");
        pause_now_and_then(i + PT_PAUSE_EVERY / 4);
    }
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    pt_ctx_destroy(ctx, before);
    free(buf);
}

static void busy_client(struct h_role *r)
{
    int before;
    shoal_ctx_t *ctx = pt_ctx(&before);
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *src = h_alloc(SLOT);
    shoal_mr_t *smr;
    CHECK_RC(shoal_mr_reg(ctx, src, SLOT, 0, &smr), ctx, "mr_reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    uint64_t t0 = h_now_ms();
    for (unsigned i = 0; i < PT_OPS; i++) {
        memset(src, (int)(uint8_t)i, SLOT);
        /* The put meets the thread serving (after a long pause), the
         * wait finds what the thread queued (after the next). */
        pause_now_and_then(i);
        CHECK_RC(shoal_put(ep, smr, 0, rmr, 0, SLOT, SHOAL_PUT_IMM, i, i), ctx, "put");
        pause_now_and_then(i + PT_PAUSE_EVERY / 2);
        /* Until the answer: the put's completion and the message "i". */
        bool put = false, answer = false;
        while (!put || !answer) {
            shoal_event_t ev;
            int n = i % 2 ? shoal_poll(ctx, &ev, 1) : shoal_wait(ctx, &ev, 1, 30000);
            CHECK(n >= 0, "%s: %s", i % 2 ? "poll" : "wait", shoal_strerror(n));
            CHECK(n == 1 || i % 2, "no event within 30 s (round %u)", i);
            if (n == 0)
                continue;
            if (ev.type == SHOAL_EV_PUT_DONE) {
                CHECK(ev.status == 0 && ev.wr_id == i && !put, "put %u: status %d, wr_id %llu",
                      i, ev.status, (unsigned long long)ev.wr_id);
                put = true;
            } else if (ev.type == SHOAL_EV_RECV) {
                char m[16];
                snprintf(m, sizeof(m), "%u", i);
                CHECK(ev.len == strlen(m) && memcmp(ev.data, m, ev.len) == 0,
                      "answer out of order in round %u", i);
                answer = true;
            } else {
                CHECK(ev.type == SHOAL_EV_SEND_DONE && ev.status == 0, "unexpected %s",
                      shoal_event_name(ev.type));
            }
        }
    }
    printf("%d round trips in %llu ms with both progress threads; ", PT_OPS,
           (unsigned long long)(h_now_ms() - t0));
    h_send_str(ctx, ep, "bye");
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, &ev);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(smr);
    pt_ctx_destroy(ctx, before);
    printf("threads joined\n");
    free(src);
}

static void test_progress_thread_busy(void)
{
    CU_ASSERT_EQUAL(h_run(busy_server, busy_client, 1, NULL, 120), 0);
}

/* ---- suite setup ------------------------------------------------------------ */

static bool transport_usable(shoal_transport_t t)
{
    /* Probe in a child: the CUnit process must not load a transport. */
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

int main(int argc, char **argv)
{
    const char *list[4];
    int nlist = 0, explicit = 0;
    char envbuf[128];
    const char *env = getenv("SHOAL_TEST_TRANSPORTS");
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
    int suites = 0, skipped = 0;
    for (int i = 0; i < nlist; i++) {
        shoal_transport_t t;
        if (strcmp(list[i], "ucx") == 0)
            t = SHOAL_TRANSPORT_UCX;
        else if (strcmp(list[i], "verbs") == 0)
            t = SHOAL_TRANSPORT_VERBS;
        else {
            fprintf(stderr, "test-transport: unknown transport '%s' (ucx, verbs)\n", list[i]);
            return 2;
        }
        if (!transport_usable(t)) {
            if (explicit) {
                fprintf(stderr, "test-transport: transport %s was requested but is not usable "
                                "here\n", list[i]);
                return 1;
            }
            printf("SKIPPED: transport suite '%s': no usable %s device on this host "
                   "(the soft-RoCE VM runs it: tests/verbs-vm.sh)\n", list[i], list[i]);
            skipped++;
            continue;
        }
        char name[32];
        snprintf(name, sizeof(name), "transport-%s", list[i]);
        CU_pSuite s = CU_add_suite(name, t == SHOAL_TRANSPORT_UCX ? suite_init_ucx
                                                                 : suite_init_verbs, NULL);
        CU_add_test(s, "put/get 1 B..16 MiB byte for byte", test_put_get_sizes);
        CU_add_test(s, "1000 outstanding puts, immediates once, in order, after data",
                    test_many_outstanding_imm);
        CU_add_test(s, "two endpoints at once", test_two_endpoints);
        CU_add_test(s, "control messages 0..MSG_MAX, oversize refused", test_messages);
        CU_add_test(s, "local range/access checks, corrupt descriptors", test_local_checks);
        CU_add_test(s, "connect to a closed port", test_connect_refused);
        CU_add_test(s, "server SIGKILLed: client sees EP_FAILED", test_server_killed);
        CU_add_test(s, "client SIGKILLed: server sees EP_FAILED", test_client_killed);
        CU_add_test(s, "connect with backoff; reconnect after the peer dropped us",
                    test_reconnect);
        if (t == SHOAL_TRANSPORT_UCX) /* verbs: rdma_cm frees a port with its id */
            CU_add_test(s, "a listener restarted at once on its port (TIME_WAIT)",
                        test_relisten);
        CU_add_test(s, "a descriptor aimed at another region is refused by the target",
                    test_cross_region);
        if (t == SHOAL_TRANSPORT_UCX) /* verbs: the NIC refuses (test-verbs) */
            CU_add_test(s, "forged write right refused by the target", test_forged_write);
        if (t == SHOAL_TRANSPORT_UCX) /* verbs: puts need no target progress */
            CU_add_test(s, "progress thread: a target computing 2 s completes puts meanwhile "
                        "(and without it does not)", test_progress_thread_compute);
        CU_add_test(s, "progress thread: 3000 put/poll/wait round trips beside it; destroy "
                    "joins it", test_progress_thread_busy);
        suites++;
    }
    if (!suites) {
        CU_cleanup_registry();
        return 77;
    }
    return cu_run_all();
}
