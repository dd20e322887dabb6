/*
 * test-verbs.c -- tests of the verbs provider only: what the transport
 * suite (test-transport.c, run on both providers) cannot say about RDMA.
 *
 *   - write-with-immediate: an immediate arrives after the data of its put
 *     and of every earlier plain put; immediates and control messages
 *     arrive in posting order;
 *   - RDMA read of a region registered read-only;
 *   - the remote key check: a forged descriptor claiming rights the region
 *     was not registered with passes the library's local check, and the
 *     peer's device refuses it (remote access error) -- a clear error on
 *     the initiator, the endpoint failed, nothing written, no hang;
 *   - peer death with reads in flight and the survivor asleep in
 *     shoal_wait: every get completes with an error, EP_FAILED in bounded
 *     time;
 *   - 100 connect/close cycles leave no queue pair, completion queue,
 *     memory region, protection domain or rdma_cm id behind, counted per
 *     process with `rdma resource show` (iproute2);
 *   - a half-open connection (a client that vanishes between its connect
 *     request and ESTABLISHED) is dropped by the server after its connect
 *     timeout, with its resources freed;
 *   - fork(): a process that forks children (which exit at once, exec, or
 *     touch memory of their own) while its puts and gets are in flight,
 *     and rewrites its registered buffers after each fork, still puts and
 *     gets the right bytes (libshoal calls ibv_fork_init()).
 *
 * Needs an RDMA device (rxe in the soft-RoCE VM: tests/verbs-vm.sh runs
 * it); without one it prints SKIPPED and exits 77.  Links the internal
 * library (libshoal_impl) for the descriptor and hello formats, and
 * librdmacm for the half-open test's raw client.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <rdma/rdma_cma.h>

#include "../cu.h"
#include "core/core.h"
#include "harness.h"

/* ---- helpers -------------------------------------------------------------- */

/* Rewrite the access byte of a packed descriptor and fix its CRC: what a
 * buggy or malicious peer could send.  The verbs key check must then be
 * done by the remote device. */
static void forge_access(uint8_t *desc, size_t len, unsigned access)
{
    desc[7] = (uint8_t)access;
    shoal__put_le32(desc + len - 4, shoal__crc32(0, desc, len - 4));
}

/* Receive the peer's descriptor: its bytes into @desc (returns length). */
static size_t recv_desc_bytes(shoal_ctx_t *ctx, shoal_ep_t *ep, uint8_t desc[SHOAL_DESC_MAX])
{
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_RECV, ep, 10000, &ev);
    CHECK(ev.len <= SHOAL_DESC_MAX, "descriptor of %zu bytes", ev.len);
    memcpy(desc, ev.data, ev.len);
    return ev.len;
}

/* A remote region from @desc, with the access byte replaced by @access. */
static shoal_rmr_t *unpack_forged(shoal_ctx_t *ctx, shoal_ep_t *ep, const uint8_t *desc,
                                  size_t len, unsigned access)
{
    uint8_t copy[SHOAL_DESC_MAX];
    memcpy(copy, desc, len);
    forge_access(copy, len, access);
    shoal_rmr_t *rmr;
    CHECK_RC(shoal_rmr_unpack(ep, copy, len, &rmr), ctx, "unpack forged descriptor");
    CHECK(shoal_rmr_access(rmr) == access, "forged access not taken");
    return rmr;
}

/* Wait for EP_FAILED on @ep within @ms, ignoring other events; returns it. */
static shoal_event_t wait_failed(shoal_ctx_t *ctx, shoal_ep_t *ep, int ms)
{
    uint64_t deadline = h_now_ms() + (uint64_t)ms;
    for (;;) {
        uint64_t now = h_now_ms();
        CHECK(now < deadline, "no EP_FAILED within %d ms", ms);
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, (int)(deadline - now));
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        if (n == 1 && ev.type == SHOAL_EV_EP_FAILED) {
            CHECK(ev.ep == ep && ev.status < 0 && ev.reason && *ev.reason,
                  "EP_FAILED fields (status %d)", ev.status);
            return ev;
        }
    }
}

/* On RoCE the context must have chosen a RoCE v2 GID; in the soft-RoCE VM,
 * the one of the test address (rxe0 has v2 GIDs only for its IPv4 address
 * and its link-local one, which must not be chosen). */
static void check_gid(shoal_ctx_t *ctx)
{
    const char *d = shoal_ctx_describe(ctx);
    if (!strstr(d, "RoCE"))
        return;
    CHECK(strstr(d, "RoCE v2") != NULL, "context: '%s': not RoCE v2", d);
    if (getenv("SOFTROCE_VM")) {
        char want[80];
        snprintf(want, sizeof(want), " %s on ", h_host());
        CHECK(strstr(d, want) != NULL, "context: '%s': GID of %s not chosen", d, h_host());
    }
}

/* ---- write-with-immediate ordering ----------------------------------------- */

/* Round k: NPLAIN plain puts into slots of round k, then one put with
 * immediate k into the round's last slot; every third round also a control
 * message "m<k>".  The target checks, at each immediate, every slot of
 * the round (the plain puts posted before it must be visible), and that
 * immediates and messages come in posting order. */
#define ROUNDS 60
#define NPLAIN 7
#define ISLOT 8192
#define ROUND_BYTES ((size_t)(NPLAIN + 1) * ISLOT)

static uint32_t slot_seed(unsigned k, unsigned j) { return 7000 + k * 16 + j; }
/* Sizes vary so short and multi-packet writes mix (MTU 4096 on rxe). */
static size_t slot_len(unsigned k, unsigned j) { return 1 + ((k * 131 + j * 977) % ISLOT); }

static void imm_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    check_gid(ctx);
    fprintf(stderr, "context: %s\n", shoal_ctx_describe(ctx));
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(ROUNDS * ROUND_BYTES);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, ROUNDS * ROUND_BYTES, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx,
             "mr_reg");
    h_send_desc(ctx, ep, mr);
    unsigned next_imm = 0, next_msg = 0;
    while (next_imm < ROUNDS) {
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, 30000);
        CHECK(n == 1, "round %u: no event", next_imm);
        if (ev.type == SHOAL_EV_SEND_DONE)
            continue;
        if (ev.type == SHOAL_EV_RECV) {
            char want[16];
            snprintf(want, sizeof(want), "m%u", next_msg);
            CHECK(ev.len == strlen(want) && memcmp(ev.data, want, ev.len) == 0,
                  "message %.*s, expected %s", (int)ev.len, (const char *)ev.data, want);
            /* Message m<k> was posted after the immediate of round k. */
            CHECK(next_msg < next_imm, "message m%u overtook immediate %u", next_msg, next_msg);
            next_msg += 3;
            continue;
        }
        CHECK(ev.type == SHOAL_EV_IMM, "unexpected %s", shoal_event_name(ev.type));
        CHECK(ev.imm == next_imm, "immediate %u arrived at position %u", ev.imm, next_imm);
        /* Message m<k> (k = every third round) precedes the next
         * round's immediate. */
        CHECK(next_imm == 0 || (next_imm - 1) % 3 || next_msg > next_imm - 1,
              "immediate %u overtook message m%u", next_imm, next_imm - 1);
        const uint8_t *base = buf + next_imm * ROUND_BYTES;
        for (unsigned j = 0; j <= NPLAIN; j++) {
            long bad = h_verify(base + j * ISLOT, slot_len(next_imm, j), slot_seed(next_imm, j));
            CHECK(bad < 0, "immediate %u: put %u of its round not visible (byte %ld)",
                  next_imm, j, bad);
        }
        next_imm++;
    }
    h_send_str(ctx, ep, "all");
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void imm_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *src = h_alloc(ROUNDS * ROUND_BYTES);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, src, ROUNDS * ROUND_BYTES, 0, &mr), ctx, "mr_reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    unsigned posted = 0, done = 0;
    bool all = false;
    for (unsigned k = 0; k < ROUNDS; k++) {
        for (unsigned j = 0; j <= NPLAIN; j++) {
            size_t off = k * ROUND_BYTES + j * ISLOT;
            h_fill(src + off, slot_len(k, j), slot_seed(k, j));
            int rc;
            /* Back-pressure is -EAGAIN: make progress and retry. */
            while ((rc = shoal_put(ep, mr, off, rmr, off, slot_len(k, j),
                                   j == NPLAIN ? SHOAL_PUT_IMM : 0, k, off)) == -EAGAIN) {
                shoal_event_t evs[32];
                int n = shoal_poll(ctx, evs, 32);
                for (int i = 0; i < n; i++) {
                    CHECK(evs[i].status == 0, "%s failed: %s", shoal_event_name(evs[i].type),
                          evs[i].reason);
                    done += evs[i].type == SHOAL_EV_PUT_DONE;
                }
            }
            CHECK_RC(rc, ctx, "put");
            posted++;
        }
        if (k % 3 == 0) {
            char m[16];
            snprintf(m, sizeof(m), "m%u", k);
            CHECK_RC(shoal_send(ep, m, strlen(m), k), ctx, "send");
        }
    }
    uint64_t deadline = h_now_ms() + 60000;
    while (done < posted || !all) {
        CHECK(h_now_ms() < deadline, "%u of %u puts completed", done, posted);
        shoal_event_t ev;
        if (shoal_wait(ctx, &ev, 1, 1000) != 1)
            continue;
        CHECK(ev.status == 0, "%s failed: %s", shoal_event_name(ev.type), ev.reason);
        done += ev.type == SHOAL_EV_PUT_DONE;
        all |= ev.type == SHOAL_EV_RECV;
    }
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 10000, NULL);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(src);
}

static void test_imm_order(void)
{
    CU_ASSERT_EQUAL(h_run(imm_server, imm_client, 1, NULL, 120), 0);
}

/* ---- RDMA read of a read-only region; forged rights fail remotely ---------- */

#define RO_LEN (1024u * 1024u)

/* Server: region A registered read-only, region B write-only.  Connection
 * 1: the client reads A (must work), then forges write access to A and
 * puts.  Connection 2: the client forges read access to B and gets.  Each
 * forged operation must fail at the client; neither region may change. */
static void acc_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    uint8_t *a = h_alloc(RO_LEN), *b = h_alloc(RO_LEN);
    h_fill(a, RO_LEN, 41);
    h_fill(b, RO_LEN, 42);
    shoal_mr_t *amr, *bmr;
    CHECK_RC(shoal_mr_reg(ctx, a, RO_LEN, SHOAL_ACCESS_REMOTE_READ, &amr), ctx, "reg A");
    CHECK_RC(shoal_mr_reg(ctx, b, RO_LEN, SHOAL_ACCESS_REMOTE_WRITE, &bmr), ctx, "reg B");
    for (int c = 0; c < 2; c++) {
        shoal_ep_t *ep;
        CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
        h_send_desc(ctx, ep, c == 0 ? amr : bmr);
        /* The refused operation breaks the connection: the QP of the side
         * that was attacked fails too, or the client's close tells us. */
        shoal_event_t ev = wait_failed(ctx, ep, 15000);
        fprintf(stderr, "target of the forged %s: EP_FAILED (%s)\n", c ? "get" : "put",
                ev.reason);
        shoal_ep_close(ep);
    }
    CHECK(h_verify(a, RO_LEN, 41) < 0, "the read-only region was written");
    CHECK(h_verify(b, RO_LEN, 42) < 0, "the write-only region changed");
    shoal_listener_close(l);
    shoal_mr_dereg(amr);
    shoal_mr_dereg(bmr);
    shoal_ctx_destroy(ctx);
    free(a);
    free(b);
}

/* Expect the op with @wr_id to complete with -EACCES and the endpoint to
 * fail, both within a bounded time, in either order. */
static void expect_refused(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_event_type_t type,
                           uint64_t wr_id)
{
    bool op = false, failed = false;
    uint64_t t0 = h_now_ms();
    while (!op || !failed) {
        CHECK(h_now_ms() - t0 < 10000, "refused %s: op %d, failed %d after 10 s",
              shoal_event_name(type), op, failed);
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, 1000);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        if (n == 0)
            continue;
        if (ev.type == SHOAL_EV_EP_FAILED) {
            CHECK(!failed && ev.ep == ep, "EP_FAILED twice or on another endpoint");
            CHECK(ev.status == -EACCES, "EP_FAILED status %d (%s), expected -EACCES",
                  ev.status, ev.reason);
            CHECK(ev.reason && strstr(ev.reason, "access"), "reason '%s' does not say access",
                  ev.reason);
            fprintf(stderr, "initiator: EP_FAILED %s after %llu ms\n", ev.reason,
                    (unsigned long long)(h_now_ms() - t0));
            failed = true;
        } else if (ev.type == type && ev.wr_id == wr_id) {
            CHECK(ev.status == -EACCES, "%s status %d (%s), expected -EACCES",
                  shoal_event_name(type), ev.status, ev.reason ? ev.reason : "");
            op = true;
        } else {
            CHECK(ev.type == SHOAL_EV_SEND_DONE, "unexpected %s", shoal_event_name(ev.type));
        }
    }
    CHECK(shoal_send(ep, "x", 1, 0) == -ENOTCONN, "send after the failure");
}

/* The port of a connected endpoint, from its "host:port" peer name. */
static uint16_t peer_port(shoal_ep_t *ep)
{
    const char *colon = strrchr(shoal_ep_peer(ep), ':');
    CHECK(colon && atoi(colon + 1) > 0, "peer name '%s'", shoal_ep_peer(ep));
    return (uint16_t)atoi(colon + 1);
}

static void acc_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    uint8_t *buf = h_alloc(RO_LEN);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, RO_LEN, 0, &mr), ctx, "reg");
    uint8_t desc[SHOAL_DESC_MAX];
    const unsigned rw = SHOAL_ACCESS_REMOTE_READ | SHOAL_ACCESS_REMOTE_WRITE;

    /* Connection 1: reads of the read-only region work, at every size. */
    shoal_ep_t *ep = h_connect(ctx, r);
    uint16_t port = peer_port(ep);
    size_t dlen = recv_desc_bytes(ctx, ep, desc);
    shoal_rmr_t *ro;
    CHECK_RC(shoal_rmr_unpack(ep, desc, dlen, &ro), ctx, "unpack");
    CHECK(shoal_rmr_access(ro) == SHOAL_ACCESS_REMOTE_READ, "access %u", shoal_rmr_access(ro));
    static const size_t gsz[] = {1, 4096, 65537, RO_LEN};
    for (unsigned i = 0; i < 4; i++) {
        memset(buf, 0, RO_LEN);
        size_t off = RO_LEN - gsz[i];
        CHECK_RC(shoal_get(ep, mr, 0, ro, off, gsz[i], i), ctx, "get");
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_GET_DONE, ep, 30000, &ev);
        CHECK(ev.status == 0 && ev.wr_id == i, "get %zu: status %d", gsz[i], ev.status);
        for (size_t k = 0; k < gsz[i]; k++)
            CHECK(buf[k] == h_pattern(41, off + k), "get %zu bytes: byte %zu differs", gsz[i],
                  k);
    }
    /* The library refuses a put into it by itself ... */
    CHECK(shoal_put(ep, mr, 0, ro, 0, 16, 0, 0, 1) == -EACCES, "local access check");
    /* ... and the target's device refuses it when the descriptor lies. */
    shoal_rmr_t *forged = unpack_forged(ctx, ep, desc, dlen, rw);
    h_fill(buf, RO_LEN, 99);
    CHECK_RC(shoal_put(ep, mr, 0, forged, 0, 4096, SHOAL_PUT_IMM, 5, 0xf00), ctx,
             "forged put (the local check passes)");
    expect_refused(ctx, ep, SHOAL_EV_PUT_DONE, 0xf00);
    shoal_rmr_destroy(ro);
    shoal_rmr_destroy(forged);
    shoal_ep_close(ep);

    /* Connection 2: a read of the write-only region, forged. */
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "reconnect");
    dlen = recv_desc_bytes(ctx, ep, desc);
    forged = unpack_forged(ctx, ep, desc, dlen, rw);
    CHECK_RC(shoal_get(ep, mr, 0, forged, 0, 65536, 0xf01), ctx,
             "forged get (the local check passes)");
    expect_refused(ctx, ep, SHOAL_EV_GET_DONE, 0xf01);
    shoal_rmr_destroy(forged);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void test_access(void)
{
    CU_ASSERT_EQUAL(h_run(acc_server, acc_client, 1, NULL, 90), 0);
}

/* ---- peer death with reads in flight, survivor asleep ----------------------- */

#define DEATH_LEN (4u * 1024u * 1024u)

static void death_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(DEATH_LEN);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, DEATH_LEN, SHOAL_ACCESS_REMOTE_READ, &mr), ctx, "reg");
    h_send_desc(ctx, ep, mr);
    h_expect_str(ctx, ep, "reading", 10000);
    /* The client has 4 MiB reads in flight: die among them. */
    usleep(100000);
    raise(SIGKILL);
}

static void death_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *buf = h_alloc(4 * DEATH_LEN);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 4 * DEATH_LEN, 0, &mr), ctx, "reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    int started = 0;
    for (int i = 0; i < 4; i++)
        if (shoal_get(ep, mr, (size_t)i * DEATH_LEN, rmr, 0, DEATH_LEN, (uint64_t)i) == 0)
            started++;
    CHECK(started == 4, "only %d gets started", started);
    h_send_str(ctx, ep, "reading");
    /* Sleep in shoal_wait with a long timeout, as an idle application
     * would; keep reading while the peer lives.  Peer death must wake us. */
    uint64_t t0 = h_now_ms(), t_fail = 0;
    int done = 0, errors = 0;
    bool failed = false;
    while (!failed || done < started) {
        CHECK(h_now_ms() - t0 < 15000, "after 15 s: failed %d, %d of %d gets done", failed,
              done, started);
        shoal_event_t ev;
        int n = shoal_wait(ctx, &ev, 1, 10000);
        CHECK(n >= 0, "wait: %s", shoal_strerror(n));
        if (n == 0)
            continue;
        if (ev.type == SHOAL_EV_EP_FAILED) {
            CHECK(!failed && ev.status < 0 && ev.reason, "EP_FAILED fields");
            failed = true;
            t_fail = h_now_ms();
        } else if (ev.type == SHOAL_EV_GET_DONE) {
            done++;
            if (ev.status) {
                errors++;
                CHECK(ev.reason && *ev.reason, "failed get without a reason");
            } else if (!failed) {
                /* The failure may already be known, its event still queued
                 * behind this one: then the get is refused. */
                int rc = shoal_get(ep, mr, ev.wr_id * DEATH_LEN, rmr, 0, DEATH_LEN, ev.wr_id);
                CHECK(rc == 0 || rc == -ENOTCONN, "restart get: %s", shoal_strerror(rc));
                started += rc == 0;
            }
        } else {
            CHECK(ev.type == SHOAL_EV_SEND_DONE, "unexpected %s", shoal_event_name(ev.type));
        }
    }
    fprintf(stderr, "peer death with reads in flight: EP_FAILED after %llu ms of reading, "
                    "%d of %d gets failed\n",
            (unsigned long long)(t_fail - t0), errors, started);
    CHECK(errors > 0, "no get completed with an error");
    CHECK(shoal_get(ep, mr, 0, rmr, 0, 16, 9) == -ENOTCONN, "get after failure");
    shoal_rmr_destroy(rmr);
    uint64_t t1 = h_now_ms();
    shoal_ep_close(ep);
    CHECK(h_now_ms() - t1 < 3000, "closing the failed endpoint took %llu ms",
          (unsigned long long)(h_now_ms() - t1));
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void test_death_reads(void)
{
    (void)h_run(death_server, death_client, 1, NULL, 40);
    CU_ASSERT_EQUAL(h_last_signal(0), SIGKILL);
    CU_ASSERT_EQUAL(h_last_status(1), 0);
}

/* ---- 100 connect/close cycles leak nothing ------------------------------------ */

/* Resource kinds `rdma resource show KIND` lists with the owning pid. */
static const char *const res_kinds[] = {"qp", "cq", "mr", "pd", "cm_id"};
#define NRES 5

/* Count this process's objects of each kind.  CHECKs that the tool ran. */
static void res_count(unsigned out[NRES])
{
    char pidtok[32];
    snprintf(pidtok, sizeof(pidtok), " pid %d ", (int)getpid());
    for (int k = 0; k < NRES; k++) {
        char cmd[96];
        snprintf(cmd, sizeof(cmd), "rdma resource show %s 2>&1; echo rc=$?", res_kinds[k]);
        FILE *f = popen(cmd, "r");
        CHECK(f, "popen(%s)", cmd);
        char line[1024];
        unsigned n = 0;
        int rc = -1;
        while (fgets(line, sizeof(line), f)) {
            if (strncmp(line, "rc=", 3) == 0)
                rc = atoi(line + 3);
            else if (strstr(line, pidtok))
                n++;
        }
        pclose(f);
        CHECK(rc == 0, "`rdma resource show %s` failed", res_kinds[k]);
        out[k] = n;
    }
}

static void res_print(const char *when, const unsigned c[NRES])
{
    fprintf(stderr, "[pid %d] %-22s qp %u cq %u mr %u pd %u cm_id %u\n", (int)getpid(), when,
            c[0], c[1], c[2], c[3], c[4]);
}

static void res_same(const char *what, const unsigned a[NRES], const unsigned b[NRES])
{
    for (int k = 0; k < NRES; k++)
        CHECK(a[k] == b[k], "%s: %s count %u, was %u (leak)", what, res_kinds[k], b[k], a[k]);
}

#define CYCLES 100

static void cyc_server(struct h_role *r)
{
    unsigned c0[NRES], c1[NRES], c2[NRES], c3[NRES];
    res_count(c0);
    shoal_ctx_t *ctx = h_ctx();
    /* Counted before listening: once the port is published, the client's
     * next request may hold a kernel rdma_cm id for us at any moment. */
    res_count(c1);
    shoal_listener_t *l = h_listen(ctx, r);
    for (int i = 0; i < CYCLES; i++) {
        shoal_ep_t *ep;
        CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
        h_expect_str(ctx, ep, "hi", 10000);
        h_send_str(ctx, ep, "ok");
        h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 10000, NULL);
        shoal_ep_close(ep);
    }
    /* The client has sent its last request: quiet now. */
    res_count(c2);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
    res_count(c3);
    res_print("before the context", c0);
    res_print("context, no listener", c1);
    res_print("after 100 cycles", c2);
    res_print("after ctx_destroy", c3);
    /* Left after 100 connections: the listener's rdma_cm id, and at most
     * librdmacm's PD for the device it is bound to. */
    CHECK(c2[0] == c1[0] && c2[1] == c1[1] && c2[2] == c1[2],
          "server, 100 cycles: %u qp, %u cq, %u mr more than before (leak)", c2[0] - c1[0],
          c2[1] - c1[1], c2[2] - c1[2]);
    CHECK(c2[4] == c1[4] + 1 && c2[3] <= c1[3] + 1,
          "server, 100 cycles: %u cm_id, %u pd (before listening: %u, %u)", c2[4], c2[3], c1[4],
          c1[3]);
    res_same("server, after ctx_destroy", c0, c3);
}

static void cyc_client(struct h_role *r)
{
    unsigned c0[NRES], c1[NRES], c2[NRES], c3[NRES];
    res_count(c0);
    shoal_ctx_t *ctx = h_ctx();
    uint16_t port = 0;
    uint64_t t0 = h_now_ms();
    for (int i = 0; i < CYCLES; i++) {
        shoal_ep_t *ep;
        if (i == 0) {
            ep = h_connect(ctx, r);
            port = peer_port(ep);
        } else {
            CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "connect");
        }
        /* Close only once the server has accepted: a connection that
         * dies before shoal_accept() takes it is dropped unseen. */
        h_send_str(ctx, ep, "hi");
        h_expect_str(ctx, ep, "ok", 10000);
        if (i == 0) {
            /* The counting must see a live connection's objects, or it
             * proves nothing. */
            unsigned live[NRES];
            res_count(live);
            res_print("with a connection", live);
            for (int k = 0; k < NRES; k++)
                CHECK(live[k] > 0, "`rdma resource show %s` shows no object of ours "
                      "during a connection", res_kinds[k]);
        }
        shoal_ep_close(ep);
        if (i == 0)
            res_count(c1);
    }
    fprintf(stderr, "%d connect/close cycles in %llu ms\n", CYCLES,
            (unsigned long long)(h_now_ms() - t0));
    res_count(c2);
    shoal_ctx_destroy(ctx);
    res_count(c3);
    res_print("before the context", c0);
    res_print("after 1 cycle", c1);
    res_print("after 100 cycles", c2);
    res_print("after ctx_destroy", c3);
    res_same("client, 100 cycles vs 1", c1, c2);
    res_same("client, after ctx_destroy", c0, c3);
}

static void test_cycles(void)
{
    CU_ASSERT_EQUAL(h_run(cyc_server, cyc_client, 1, NULL, 150), 0);
}

/* ---- back-pressure: a small queue depth, a full send queue ------------------- */

#define BP_DEPTH 4
#define BP_MSGS 2000

static shoal_ctx_t *ctx_depth(int depth)
{
    shoal_config_t cfg;
    char err[256];
    shoal_config_init(&cfg);
    CHECK(shoal_config_from_env(&cfg, err, sizeof(err)) == 0, "config: %s", err);
    cfg.transport = h_transport;
    cfg.queue_depth = depth;
    shoal_ctx_t *ctx;
    int rc = shoal_ctx_create(&cfg, &ctx);
    CHECK(rc == 0, "ctx_create: %s", shoal_strerror(rc));
    return ctx;
}

static void bp_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(65536);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 65536, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx, "reg");
    h_send_desc(ctx, ep, mr);
    /* Every message, once, in order (the ring of 512 receives is smaller
     * than the burst: receiver-not-ready retries must absorb it). */
    for (unsigned i = 0; i < BP_MSGS; i++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_RECV, ep, 30000, &ev);
        CHECK(ev.len == sizeof(uint32_t), "message %u: %zu bytes", i, ev.len);
        uint32_t v;
        memcpy(&v, ev.data, sizeof(v));
        CHECK(v == i, "message %u carries %u", i, v);
    }
    h_send_str(ctx, ep, "all");
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void bp_client(struct h_role *r)
{
    shoal_ctx_t *ctx = ctx_depth(BP_DEPTH);
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *buf = h_alloc(65536);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 65536, 0, &mr), ctx, "reg");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    /* Puts: exactly BP_DEPTH may be outstanding. */
    for (unsigned i = 0; i < BP_DEPTH; i++)
        CHECK_RC(shoal_put(ep, mr, 0, rmr, 0, 65536, 0, 0, i), ctx, "put within the depth");
    CHECK(shoal_put(ep, mr, 0, rmr, 0, 65536, 0, 0, 99) == -EAGAIN,
          "put beyond the queue depth was not -EAGAIN");
    for (unsigned i = 0; i < BP_DEPTH; i++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_PUT_DONE, ep, 10000, &ev);
        CHECK(ev.status == 0 && ev.wr_id == i, "put %u completion", i);
    }
    CHECK_RC(shoal_put(ep, mr, 0, rmr, 0, 16, 0, 0, 5), ctx, "put after the completions");
    h_expect(ctx, SHOAL_EV_PUT_DONE, ep, 10000, NULL);
    /* Small messages as fast as they go: far more than the send queue
     * holds.  -EAGAIN is back-pressure (poll, retry), never an error. */
    unsigned eagain = 0, done = 0;
    uint64_t t0 = h_now_ms();
    for (uint32_t i = 0; i < BP_MSGS; i++) {
        int rc;
        while ((rc = shoal_send(ep, &i, sizeof(i), i)) == -EAGAIN) {
            eagain++;
            CHECK(h_now_ms() - t0 < 60000, "stuck at message %u", i);
            shoal_event_t evs[64];
            int n = shoal_wait(ctx, evs, 64, 100);
            CHECK(n >= 0, "wait: %s", shoal_strerror(n));
            for (int k = 0; k < n; k++) {
                CHECK(evs[k].type == SHOAL_EV_SEND_DONE && evs[k].status == 0,
                      "%s status %d", shoal_event_name(evs[k].type), evs[k].status);
                done++;
            }
        }
        CHECK_RC(rc, ctx, "send");
    }
    while (done < BP_MSGS) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, &ev);
        CHECK(ev.status == 0, "send failed: %s", ev.reason);
        done++;
    }
    fprintf(stderr, "%u messages through a send queue of depth %d: -EAGAIN %u times\n",
            BP_MSGS, BP_DEPTH, eagain);
    h_expect_str(ctx, ep, "all", 60000);
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 10000, NULL);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void test_backpressure(void)
{
    CU_ASSERT_EQUAL(h_run(bp_server, bp_client, 1, NULL, 120), 0);
}

/* ---- fork() while RDMA is in flight ----------------------------------------- *
 *
 * Without fork safety, the first write the parent makes to a registered
 * page after a fork gives it a copy of the page, while the device keeps
 * using the original: the next put sends the old bytes, a get lands where
 * the parent no longer looks.  So each round the client rewrites its
 * source (a new pattern), starts FORK_PIECES puts, forks a child while
 * they are in flight, then reads the server's region back with a get
 * while another child is forked, and checks every byte on both sides.
 */
#define FORK_LEN (2u * 1024u * 1024u)
#define FORK_PIECES 8
#define FORK_ROUNDS 12

static void fork_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep;
    CHECK_RC(shoal_accept(l, 30000, &ep), ctx, "accept");
    uint8_t *buf = h_alloc(FORK_LEN);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, FORK_LEN,
                          SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ, &mr),
             ctx, "mr_reg");
    h_send_desc(ctx, ep, mr);
    for (unsigned k = 0; k < FORK_ROUNDS; k++) {
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_IMM, ep, 60000, &ev);
        CHECK(ev.imm == k, "immediate %u in round %u", ev.imm, k);
        long bad = h_verify(buf, FORK_LEN, 1000 + k);
        CHECK(bad < 0, "round %u: byte %ld of the puts differs (stale source after fork?)", k,
              bad);
        h_fill(buf, FORK_LEN, 2000 + k); /* what the client's get must see */
        h_send_str(ctx, ep, "ok");
    }
    h_expect_str(ctx, ep, "bye", 30000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

/* A child of the forking client: what it does must not matter. */
static pid_t fork_child(unsigned how)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid)
        return pid;
    if (how % 3 == 1) {
        execl("/bin/true", "true", (char *)NULL);
        _exit(2);
    }
    if (how % 3 == 2) { /* memory of its own, touched and freed */
        size_t n = 8u << 20;
        char *p = malloc(n);
        if (p)
            memset(p, 0x5a, n);
        free(p);
    }
    _exit(0);
}

static void fork_client(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    enum ibv_fork_status fs = ibv_is_fork_initialized();
    CHECK(fs != IBV_FORK_DISABLED, "a verbs context exists and fork support is off");
    printf("fork support: %s; ", fs == IBV_FORK_UNNEEDED ? "the kernel's (copy on fork)"
                                                         : "ibv_fork_init (MADV_DONTFORK)");
    shoal_ep_t *ep = h_connect(ctx, r);
    uint8_t *src = h_alloc(FORK_LEN), *dst = h_alloc(FORK_LEN);
    shoal_mr_t *smr, *dmr;
    CHECK_RC(shoal_mr_reg(ctx, src, FORK_LEN, 0, &smr), ctx, "mr_reg src");
    CHECK_RC(shoal_mr_reg(ctx, dst, FORK_LEN, 0, &dmr), ctx, "mr_reg dst");
    shoal_rmr_t *rmr = h_recv_desc(ctx, ep);
    pid_t kids[2 * FORK_ROUNDS];
    int nkids = 0;
    const size_t piece = FORK_LEN / FORK_PIECES;
    for (unsigned k = 0; k < FORK_ROUNDS; k++) {
        h_fill(src, FORK_LEN, 1000 + k); /* after the last round's fork */
        for (unsigned i = 0; i < FORK_PIECES; i++)
            CHECK_RC(shoal_put(ep, smr, i * piece, rmr, i * piece, piece,
                               i + 1 == FORK_PIECES ? SHOAL_PUT_IMM : 0, k, i),
                     ctx, "put");
        kids[nkids++] = fork_child(2 * k); /* while the puts are in flight */
        unsigned done = 0;
        bool ok = false;
        while (done < FORK_PIECES || !ok) {
            shoal_event_t ev;
            int n = shoal_wait(ctx, &ev, 1, 60000);
            CHECK(n == 1, "round %u: %u puts done, ok %d: %s", k, done, ok,
                  n ? shoal_strerror(n) : "timed out");
            if (ev.type == SHOAL_EV_PUT_DONE) {
                CHECK(ev.status == 0, "round %u: put %llu failed: %s", k,
                      (unsigned long long)ev.wr_id, shoal_strerror(ev.status));
                done++;
            } else if (ev.type == SHOAL_EV_RECV) {
                CHECK(ev.len == 2 && memcmp(ev.data, "ok", 2) == 0, "unexpected message");
                ok = true;
            } else {
                CHECK(ev.type == SHOAL_EV_SEND_DONE && ev.status == 0, "unexpected %s",
                      shoal_event_name(ev.type));
            }
        }
        memset(dst, 0, FORK_LEN); /* a write to registered memory after a fork */
        CHECK_RC(shoal_get(ep, dmr, 0, rmr, 0, FORK_LEN, 100 + k), ctx, "get");
        kids[nkids++] = fork_child(2 * k + 1); /* while the get is in flight */
        shoal_event_t ev;
        h_expect(ctx, SHOAL_EV_GET_DONE, ep, 60000, &ev);
        CHECK(ev.status == 0 && ev.wr_id == 100 + k, "round %u: get: status %d", k, ev.status);
        long bad = h_verify(dst, FORK_LEN, 2000 + k);
        CHECK(bad < 0, "round %u: byte %ld of the get differs (landed in a page the parent "
              "no longer maps?)", k, bad);
    }
    for (int i = 0; i < nkids; i++) {
        int st;
        CHECK(waitpid(kids[i], &st, 0) == kids[i] && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "child %d (%s) did not exit cleanly", i, i % 3 == 1 ? "exec" : "exit");
    }
    printf("%d rounds, %d children forked with RDMA in flight; ", FORK_ROUNDS, nkids);
    h_send_str(ctx, ep, "bye");
    h_expect(ctx, SHOAL_EV_SEND_DONE, ep, 30000, NULL);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    shoal_mr_dereg(smr);
    shoal_mr_dereg(dmr);
    shoal_ctx_destroy(ctx);
    free(src);
    free(dst);
}

static void test_fork(void)
{
    CU_ASSERT_EQUAL(h_run(fork_server, fork_client, 1, NULL, 180), 0);
}

/* ---- half-open connections on the server ------------------------------------- */

/* arg: how the raw client vanishes after its connect request. */
enum { HALF_SILENT = 0, HALF_KILLED = 1 };
#define HALF_TIMEOUT_MS 1500

/* A client written against librdmacm directly: resolve, create a QP, send
 * a valid shoal hello with rdma_connect(), then never read its events, so
 * it never sends the RTU that would establish the connection -- what a
 * host that crashed at that moment looks like.  Or it dies there. */
static void half_client(struct h_role *r)
{
    int how = *(int *)r->arg;
    uint16_t port;
    struct pollfd pf = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&pf, 1, 30000) == 1 && read(r->port_rd, &port, 2) == 2, "no port published");
    struct rdma_event_channel *ch = rdma_create_event_channel();
    CHECK(ch, "rdma_create_event_channel: %s", strerror(errno));
    struct rdma_cm_id *id;
    CHECK(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) == 0, "rdma_create_id");
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, h_host(), &sin.sin_addr) == 1, "address %s", h_host());
    struct rdma_cm_event *ev;
    CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&sin, 2000) == 0 &&
              rdma_get_cm_event(ch, &ev) == 0 && ev->event == RDMA_CM_EVENT_ADDR_RESOLVED,
          "resolve address");
    rdma_ack_cm_event(ev);
    CHECK(rdma_resolve_route(id, 2000) == 0 && rdma_get_cm_event(ch, &ev) == 0 &&
              ev->event == RDMA_CM_EVENT_ROUTE_RESOLVED,
          "resolve route");
    rdma_ack_cm_event(ev);
    struct ibv_qp_init_attr qa = {.cap = {.max_send_wr = 4, .max_recv_wr = 4,
                                          .max_send_sge = 1, .max_recv_sge = 1},
                                  .qp_type = IBV_QPT_RC};
    CHECK(rdma_create_qp(id, NULL, &qa) == 0, "rdma_create_qp: %s", strerror(errno));
    struct shoal_hello h = {.magic = SHOAL_WIRE_MAGIC, .version = SHOAL_WIRE_VERSION,
                            .transport = SHOAL_TRANSPORT_VERBS, .ep_id = 7};
    uint8_t hello[SHOAL_HELLO_MAX];
    size_t hlen = shoal__hello_encode(&h, hello);
    struct rdma_conn_param p = {.private_data = hello, .private_data_len = (uint8_t)hlen,
                                .responder_resources = 1, .initiator_depth = 1,
                                .retry_count = 6, .rnr_retry_count = 7};
    CHECK(rdma_connect(id, &p) == 0, "rdma_connect: %s", strerror(errno));
    if (how == HALF_KILLED) {
        usleep(300000); /* the server accepts meanwhile */
        raise(SIGKILL);
    }
    /* Silent until well after the server's connect timeout (exiting
     * earlier would make our kernel reject, the other path). */
    usleep((HALF_TIMEOUT_MS + 3000) * 1000);
}

static void half_server(struct h_role *r)
{
    int how = *(int *)r->arg;
    unsigned c0[NRES], c1[NRES], c2[NRES];
    shoal_config_t cfg;
    char err[256];
    shoal_config_init(&cfg);
    CHECK(shoal_config_from_env(&cfg, err, sizeof(err)) == 0, "config: %s", err);
    cfg.transport = h_transport;
    cfg.connect_timeout_ms = HALF_TIMEOUT_MS;
    shoal_ctx_t *ctx;
    CHECK_RC(shoal_ctx_create(&cfg, &ctx), NULL, "ctx_create");
    res_count(c0);
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep = NULL;
    if (how == HALF_SILENT) {
        uint64_t t_req = h_now_ms();
        /* The request arrives and is accepted: a QP exists for it ... */
        do {
            CHECK(h_now_ms() - t_req < 10000, "no connection request within 10 s");
            int rc = shoal_accept(l, 100, &ep);
            CHECK(rc == -ETIMEDOUT, "accept returned %d for a connection never established",
                  rc);
            res_count(c1);
        } while (c1[0] == c0[0]);
        res_print("half-open", c1);
    }
    /* ... and is dropped, with everything it held, within the connect
     * timeout (a killed client: at once, through its kernel's reject, or
     * before we even accepted it). */
    int rc = shoal_accept(l, HALF_TIMEOUT_MS + 1500, &ep);
    CHECK(rc == -ETIMEDOUT, "accept returned %d for a connection never established", rc);
    res_count(c2);
    res_print("before listening", c0);
    res_print("after the timeout", c2);
    /* What is left is the listener's rdma_cm id (and librdmacm's PD for
     * the device it is bound to). */
    CHECK(c2[0] == c0[0] && c2[1] == c0[1] && c2[2] == c0[2],
          "the dropped connection left %u qp, %u cq, %u mr", c2[0] - c0[0], c2[1] - c0[1],
          c2[2] - c0[2]);
    CHECK(c2[4] == c0[4] + 1, "%u rdma_cm ids left, expected the listener's only",
          c2[4] - c0[4]);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void test_half_open(int how)
{
    int arg = how;
    (void)h_run(half_server, half_client, 1, &arg, 40);
    CU_ASSERT_EQUAL(h_last_status(0), 0);
}

static void test_half_open_silent(void) { test_half_open(HALF_SILENT); }
static void test_half_open_killed(void) { test_half_open(HALF_KILLED); }

/* ---- garbage in rdma_cm connect requests ------------------------------------- */

/* A raw librdmacm client sends connect requests whose private data (the
 * shoal hello's place) is garbage: random bytes of every length the REQ
 * allows, a misplaced proof, another version, unknown flags, and a hello
 * announcing a secret to a server that has none.  Each must be rejected
 * (the last with the reason in the REJ), no endpoint may reach accept(),
 * and a good client must be served afterwards. */
static int raw_connect(uint16_t port, const uint8_t *pd, size_t pdlen, uint8_t *rej,
                       size_t *rejlen)
{
    struct rdma_event_channel *ch = rdma_create_event_channel();
    CHECK(ch, "rdma_create_event_channel: %s", strerror(errno));
    struct rdma_cm_id *id;
    CHECK(rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) == 0, "rdma_create_id");
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, h_host(), &sin.sin_addr) == 1, "address %s", h_host());
    struct rdma_cm_event *ev;
    CHECK(rdma_resolve_addr(id, NULL, (struct sockaddr *)&sin, 2000) == 0 &&
              rdma_get_cm_event(ch, &ev) == 0 && ev->event == RDMA_CM_EVENT_ADDR_RESOLVED,
          "resolve address");
    rdma_ack_cm_event(ev);
    CHECK(rdma_resolve_route(id, 2000) == 0 && rdma_get_cm_event(ch, &ev) == 0 &&
              ev->event == RDMA_CM_EVENT_ROUTE_RESOLVED,
          "resolve route");
    rdma_ack_cm_event(ev);
    struct ibv_qp_init_attr qa = {.cap = {.max_send_wr = 4, .max_recv_wr = 4,
                                          .max_send_sge = 1, .max_recv_sge = 1},
                                  .qp_type = IBV_QPT_RC};
    CHECK(rdma_create_qp(id, NULL, &qa) == 0, "rdma_create_qp: %s", strerror(errno));
    struct rdma_conn_param p = {.private_data = pd, .private_data_len = (uint8_t)pdlen,
                                .responder_resources = 1, .initiator_depth = 1,
                                .retry_count = 6, .rnr_retry_count = 7};
    CHECK(rdma_connect(id, &p) == 0, "rdma_connect: %s", strerror(errno));
    struct pollfd pf = {.fd = ch->fd, .events = POLLIN};
    CHECK(poll(&pf, 1, 10000) == 1 && rdma_get_cm_event(ch, &ev) == 0,
          "no answer to a garbage connect request within 10 s");
    int type = ev->event;
    *rejlen = 0;
    if (type == RDMA_CM_EVENT_REJECTED && ev->param.conn.private_data) {
        *rejlen = ev->param.conn.private_data_len;
        if (*rejlen > 256)
            *rejlen = 256;
        memcpy(rej, ev->param.conn.private_data, *rejlen);
    }
    rdma_ack_cm_event(ev);
    if (type == RDMA_CM_EVENT_ESTABLISHED)
        rdma_disconnect(id);
    rdma_destroy_qp(id);
    rdma_destroy_id(id);
    rdma_destroy_event_channel(ch);
    return type;
}

static void garbage_cm_client(struct h_role *r)
{
    uint16_t port;
    struct pollfd pf = {.fd = r->port_rd, .events = POLLIN};
    CHECK(poll(&pf, 1, 30000) == 1 && read(r->port_rd, &port, 2) == 2, "no port published");
    uint32_t x = 0x5ea1u;
    uint8_t pd[SHOAL_HELLO_MAX], rej[256]; /* a REQ carries at most 56 bytes */
    size_t rejlen;
    for (int i = 0; i < 14; i++) {
        size_t len = (size_t)(i * 4) % 57; /* 0..56 */
        for (size_t k = 0; k < sizeof(pd); k++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            pd[k] = (uint8_t)x;
        }
        struct shoal_hello h = {.magic = SHOAL_WIRE_MAGIC, .version = SHOAL_WIRE_VERSION,
                                .transport = SHOAL_TRANSPORT_VERBS, .ep_id = 7};
        if (i == 10) { /* a first hello claiming to carry a proof (a hello cut
                          short is no test here: rdma_cm pads a REQ's private
                          data with zeros to 56 bytes) */
            h.flags = SHOAL_HELLO_PROOF;
            len = shoal__hello_encode(&h, pd);
        } else if (i == 11) { /* another version */
            h.version = 1;
            len = shoal__hello_encode(&h, pd);
        } else if (i == 12) { /* unknown flags */
            h.flags = 0x40;
            len = shoal__hello_encode(&h, pd);
        } else if (i == 13) { /* a secret the server does not have */
            h.flags = SHOAL_HELLO_AUTH;
            len = shoal__hello_encode(&h, pd);
        }
        int type = raw_connect(port, pd, len, rej, &rejlen);
        CHECK(type == RDMA_CM_EVENT_REJECTED, "garbage request %d (%zu bytes): %s", i, len,
              rdma_event_str(type));
        if (i == 13) {
            struct shoal_hello d;
            char why[160];
            CHECK(shoal__hello_decode(rej, rejlen, SHOAL_TRANSPORT_VERBS, &d, why,
                                      sizeof(why)) == 0 &&
                      d.flags == SHOAL_HELLO_REFUSE &&
                      d.reason == SHOAL_REFUSE_AUTH_UNEXPECTED,
                  "the REJ of request %d does not say why (%zu bytes)", i, rejlen);
        }
    }
    shoal_ctx_t *ctx = h_ctx();
    shoal_ep_t *ep;
    CHECK_RC(shoal_connect(ctx, h_host(), port, &ep), ctx, "good client after the garbage");
    h_send_str(ctx, ep, "ping");
    h_expect_str(ctx, ep, "pong", 15000);
    shoal_ep_close(ep);
    shoal_ctx_destroy(ctx);
}

static void garbage_cm_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep, *extra = NULL;
    CHECK_RC(shoal_accept(l, 60000, &ep), ctx, "accept");
    h_expect_str(ctx, ep, "ping", 15000);
    h_send_str(ctx, ep, "pong");
    int rc = shoal_accept(l, 200, &extra);
    CHECK(rc == -ETIMEDOUT && !extra, "a second endpoint was handed out (%d)", rc);
    (void)wait_failed(ctx, ep, 15000);
    shoal_ep_close(ep);
    shoal_listener_close(l);
    shoal_ctx_destroy(ctx);
}

static void test_garbage_cm(void)
{
    CU_ASSERT_EQUAL(h_run(garbage_cm_server, garbage_cm_client, 1, NULL, 90), 0);
}

/* ---- two contexts in one process --------------------------------------------- */

/* They share librdmacm's device context (its PD, its async-event fd):
 * destroying one must leave the other's connection working. */
static void two_ctx_server(struct h_role *r)
{
    shoal_ctx_t *ctx = h_ctx();
    shoal_listener_t *l = h_listen(ctx, r);
    shoal_ep_t *ep[2];
    uint8_t *buf = h_alloc(65536);
    shoal_mr_t *mr;
    CHECK_RC(shoal_mr_reg(ctx, buf, 65536, SHOAL_ACCESS_REMOTE_WRITE, &mr), ctx, "reg");
    for (int i = 0; i < 2; i++) {
        CHECK_RC(shoal_accept(l, 30000, &ep[i]), ctx, "accept");
        h_send_desc(ctx, ep[i], mr);
    }
    /* The first context's endpoint goes away with it ... */
    (void)wait_failed(ctx, ep[0], 15000);
    shoal_ep_close(ep[0]);
    /* ... the second one's still works. */
    shoal_event_t ev;
    h_expect(ctx, SHOAL_EV_IMM, ep[1], 15000, &ev);
    CHECK(ev.imm == 42 && h_verify(buf, 65536, 42) < 0, "put from the surviving context");
    h_send_str(ctx, ep[1], "ok");
    h_expect_str(ctx, ep[1], "bye", 15000);
    shoal_ep_close(ep[1]);
    shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
}

static void two_ctx_client(struct h_role *r)
{
    shoal_ctx_t *a = h_ctx(), *b = h_ctx();
    shoal_ep_t *ea = h_connect(a, r);
    shoal_ep_t *eb;
    CHECK_RC(shoal_connect(b, h_host(), peer_port(ea), &eb), b, "connect b");
    shoal_rmr_t *ra = h_recv_desc(a, ea), *rb = h_recv_desc(b, eb);
    uint8_t *buf = h_alloc(65536);
    h_fill(buf, 65536, 42);
    shoal_mr_t *mb;
    CHECK_RC(shoal_mr_reg(b, buf, 65536, 0, &mb), b, "reg");
    shoal_rmr_destroy(ra);
    shoal_ep_close(ea);
    shoal_ctx_destroy(a);
    CHECK_RC(shoal_put(eb, mb, 0, rb, 0, 65536, SHOAL_PUT_IMM, 42, 1), b, "put after a's end");
    h_expect_put_and_str(b, eb, "ok", 15000);
    h_send_str(b, eb, "bye");
    h_expect(b, SHOAL_EV_SEND_DONE, eb, 10000, NULL);
    shoal_rmr_destroy(rb);
    shoal_ep_close(eb);
    shoal_mr_dereg(mb);
    shoal_ctx_destroy(b);
    free(buf);
}

static void test_two_contexts(void)
{
    CU_ASSERT_EQUAL(h_run(two_ctx_server, two_ctx_client, 1, NULL, 60), 0);
}

/* ---- main ----------------------------------------------------------------------- */

static bool verbs_usable(void)
{
    /* Probe in a child: the CUnit process must not load a transport. */
    pid_t pid = fork();
    if (pid == 0) {
        shoal_config_t cfg;
        shoal_config_init(&cfg);
        cfg.transport = SHOAL_TRANSPORT_VERBS;
        cfg.log_level = SHOAL_LOG_ERROR;
        shoal_ctx_t *ctx;
        _exit(shoal_ctx_create(&cfg, &ctx) == 0 ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static int suite_init(void)
{
    h_transport = SHOAL_TRANSPORT_VERBS;
    return 0;
}

/* SHOAL_TEST_ONLY=word runs only the tests whose name contains it. */
static void add(CU_pSuite s, const char *name, CU_TestFunc fn)
{
    const char *only = getenv("SHOAL_TEST_ONLY");
    if (!only || !*only || strstr(name, only))
        CU_add_test(s, name, fn);
}

int main(void)
{
    if (!verbs_usable()) {
        printf("SKIPPED: verbs-only tests: no usable RDMA device here "
               "(tests/verbs-vm.sh runs them in the soft-RoCE VM)\n");
        return 77;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("verbs", suite_init, NULL);
    add(s, "RoCE v2 GID; write-with-imm: earlier puts visible, posting order",
                test_imm_order);
    add(s, "read of a read-only region; forged rights refused by the target",
                test_access);
    add(s, "queue depth 4: -EAGAIN, then 2000 messages through a full send queue",
        test_backpressure);
    add(s, "two contexts in one process: one destroyed, the other's connection works",
        test_two_contexts);
    add(s, "peer SIGKILLed with reads in flight, survivor asleep", test_death_reads);
    add(s, "fork() with puts and gets in flight: children exit or exec, the data stays right",
        test_fork);
    add(s, "garbage private data in connect requests: rejected, then a good client",
        test_garbage_cm);
    if (system("rdma resource show >/dev/null 2>&1") == 0) {
        add(s, "half-open connection (client silent after its request) dropped after "
               "the connect timeout", test_half_open_silent);
        add(s, "half-open connection (client killed after its request) dropped",
            test_half_open_killed);
        add(s, "100 connect/close cycles leak no qp/cq/mr/pd/cm_id", test_cycles);
    } else {
        printf("SKIPPED: leak and half-open tests: `rdma resource show` (iproute2) does not "
               "work here\n");
    }
    return cu_run_all();
}
