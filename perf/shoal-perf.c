/*
 * shoal-perf -- perftest-style microbenchmarks of libshoal's one-sided
 * operations, between two processes.
 *
 *   shoal-perf [options]          server: waits for one client, serves it, exits
 *   shoal-perf [options] HOST     client: runs the tests, prints the table
 *
 * The client tells the server what to run (test, size, iterations) over
 * control messages, so the server needs no test options (unlike perftest,
 * both sides cannot disagree).  Tests:
 *
 *   put_lat   ping-pong of put-with-immediate; one-way latency = RTT / 2
 *             (as ib_write_lat and ucx_perftest report it)
 *   put_bw    a window of puts, the last with an immediate; the clock stops
 *             when the server has seen that immediate (the data is there)
 *   put_rate  put_bw for small messages, reported as a message rate
 *   get_lat   one get at a time; latency = one full get (as ib_read_lat)
 *   get_bw    a window of gets; the clock stops at the last GET_DONE
 *
 * Each side checks the bytes that arrived against the sender's pattern
 * after the timed part, so a run that moved the wrong data fails.
 *
 * Not for: functional testing (tests/), or comparing with other tools
 * (perf/compare runs this next to ib_write_* and ucx_perftest).
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shoal.h"

#define PERF_MAX_SIZE (8ul << 20)   /* -a goes from 2 B to this */
#define PERF_DEFAULT_PORT 18515     /* perftest's default port */
#define PERF_IDLE_MS 30000          /* no event for this long: give up */

enum test { T_PUT_LAT, T_PUT_BW, T_PUT_RATE, T_GET_LAT, T_GET_BW, T_COUNT };
static const char *const test_names[T_COUNT] = {"put_lat", "put_bw", "put_rate", "get_lat",
                                                "get_bw"};
static bool is_lat(enum test t) { return t == T_PUT_LAT || t == T_GET_LAT; }
static bool is_get(enum test t) { return t == T_GET_LAT || t == T_GET_BW; }

struct opts {
    enum test test;
    size_t size;
    bool all;
    unsigned long iters;
    unsigned long warmup;
    unsigned long window;
    const char *host;        /* client: the server; NULL = we are the server */
    unsigned port;
    const char *device;
    const char *transport;
    bool json;
    bool busy;               /* --busy: spin in bandwidth tests too */
};

/* One side's run state: the connection, the buffers and what the event
 * stream has shown so far. */
struct run {
    shoal_ctx_t *ctx;
    shoal_listener_t *l;
    shoal_ep_t *ep;
    unsigned char *buf;      /* registered: source and target of everything */
    size_t buflen;
    shoal_mr_t *mr;
    shoal_rmr_t *rmr;        /* the peer's buffer */
    /* counters fed by pump() */
    unsigned long imms, put_done, get_done;
    uint32_t last_imm;
    /* control messages not yet consumed (one poll may return several) */
    struct {
        unsigned char data[SHOAL_DESC_MAX];
        size_t len;
    } q[8];
    unsigned qhead, qlen;
    unsigned char msg[SHOAL_DESC_MAX + 1]; /* the one taken last, NUL-terminated */
    size_t msglen;
    bool spin;               /* bandwidth tests: spin (shoal_poll) instead of shoal_wait */
    char broke[200];         /* the connection failed after messages still queued */
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec * 1e-3;
}

static int fail(struct run *r, const char *what, int rc)
{
    const char *detail = r && r->ctx ? shoal_ctx_errmsg(r->ctx) : "";
    fprintf(stderr, "shoal-perf: %s: %s%s%s\n", what, shoal_strerror(rc), *detail ? ": " : "",
            detail);
    return -1;
}

/* Handle every event that is ready (busy: shoal_poll; else shoal_wait up
 * to the idle limit).  Returns 0, or -1 on a failure event or timeout. */
static int pump(struct run *r, bool busy)
{
    if (r->broke[0]) {
        fprintf(stderr, "shoal-perf: %s\n", r->broke);
        return -1;
    }
    shoal_event_t evs[32];
    int n = busy ? shoal_poll(r->ctx, evs, 32) : shoal_wait(r->ctx, evs, 32, PERF_IDLE_MS);
    if (n < 0)
        return fail(r, "waiting for events", n);
    if (n == 0 && !busy) {
        fprintf(stderr, "shoal-perf: no event from the peer for %d s; giving up\n",
                PERF_IDLE_MS / 1000);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        const shoal_event_t *ev = &evs[i];
        if (ev->status && ev->type != SHOAL_EV_EP_FAILED) {
            fprintf(stderr, "shoal-perf: %s failed: %s%s%s\n", shoal_event_name(ev->type),
                    shoal_strerror(ev->status), ev->reason ? ": " : "",
                    ev->reason ? ev->reason : "");
            return -1;
        }
        switch (ev->type) {
        case SHOAL_EV_PUT_DONE: r->put_done++; break;
        case SHOAL_EV_GET_DONE: r->get_done++; break;
        case SHOAL_EV_SEND_DONE: break;
        case SHOAL_EV_IMM: r->imms++; r->last_imm = ev->imm; break;
        case SHOAL_EV_RECV: {
            if (r->qlen == 8 || ev->len > SHOAL_DESC_MAX) {
                fprintf(stderr, "shoal-perf: unexpected control traffic from the peer\n");
                return -1;
            }
            unsigned k = (r->qhead + r->qlen++) % 8;
            memcpy(r->q[k].data, ev->data, ev->len);
            r->q[k].len = ev->len;
            break;
        }
        case SHOAL_EV_EP_FAILED:
            /* A peer that sends "Q" and closes: its last messages come
             * first and may still be queued; fail only when they are
             * read and more is expected. */
            snprintf(r->broke, sizeof(r->broke), "the connection to %s broke: %s",
                     shoal_ep_peer(ev->ep), ev->reason ? ev->reason : "?");
            if (r->qlen)
                return 0;
            fprintf(stderr, "shoal-perf: %s\n", r->broke);
            return -1;
        }
    }
    return 0;
}

/* Take the next queued control message into r->msg / r->msglen. */
static void take_msg(struct run *r)
{
    memcpy(r->msg, r->q[r->qhead].data, r->q[r->qhead].len);
    r->msglen = r->q[r->qhead].len;
    r->msg[r->msglen] = '\0';
    r->qhead = (r->qhead + 1) % 8;
    r->qlen--;
}

/* Wait (sleeping, or spinning if @busy) for the next control message. */
static int recv_msg_how(struct run *r, bool busy)
{
    while (!r->qlen)
        if (pump(r, busy))
            return -1;
    take_msg(r);
    return 0;
}

static int recv_msg(struct run *r)
{
    return recv_msg_how(r, false);
}

static int send_msg(struct run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_msg(struct run *r, const char *fmt, ...)
{
    char m[256];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(m, sizeof(m), fmt, ap);
    va_end(ap);
    int rc = shoal_send(r->ep, m, (size_t)len + 1, 0);
    return rc ? fail(r, "sending a control message", rc) : 0;
}

/* The byte pattern at offset @i of a transfer of @size bytes, @who being
 * 'c' (client) or 's' (server): differs per size and per side. */
static unsigned char pattern(size_t i, size_t size, char who)
{
    return (unsigned char)(i * 7 + size + (unsigned char)who);
}

static void fill(struct run *r, size_t size, char who)
{
    for (size_t i = 0; i < size; i++)
        r->buf[i] = pattern(i, size, who);
}

static int check(const struct run *r, size_t size, char who, const char *test)
{
    for (size_t i = 0; i < size; i++)
        if (r->buf[i] != pattern(i, size, who)) {
            fprintf(stderr, "shoal-perf: %s, %zu B: byte %zu is 0x%02x, expected 0x%02x: "
                    "the data did not arrive intact\n", test, size, i, r->buf[i],
                    pattern(i, size, who));
            return -1;
        }
    return 0;
}

/* Post one put (retrying on -EAGAIN while progressing). */
static int put(struct run *r, size_t size, unsigned flags, uint32_t imm)
{
    for (;;) {
        int rc = shoal_put(r->ep, r->mr, 0, r->rmr, 0, size, flags, imm, 0);
        if (rc != -EAGAIN)
            return rc ? fail(r, "put", rc) : 0;
        if (pump(r, true))
            return -1;
    }
}

static int get(struct run *r, size_t size)
{
    for (;;) {
        int rc = shoal_get(r->ep, r->mr, 0, r->rmr, 0, size, 0);
        if (rc != -EAGAIN)
            return rc ? fail(r, "get", rc) : 0;
        if (pump(r, true))
            return -1;
    }
}

/* ---- the tests ------------------------------------------------------- */

/* Both sides of put_lat: the client pings, the server pongs.  Each put
 * must be locally complete (PUT_DONE) before the buffer is used again.
 * @t (client) receives one-way latencies. */
static int put_lat(struct run *r, bool client, size_t size, unsigned long n, double *t)
{
    /* Counted from the start: the peer's next ping may arrive while we
     * still wait for our own PUT_DONE. */
    unsigned long done0 = r->put_done, imm0 = r->imms;
    for (unsigned long i = 0; i < n; i++) {
        double t0 = now_us();
        unsigned long want_done = done0 + i + 1, want_imm = imm0 + i + 1;
        if (client && put(r, size, SHOAL_PUT_IMM, (uint32_t)i))
            return -1;
        while (r->imms < want_imm)
            if (pump(r, true))
                return -1;
        if (r->imms == want_imm && r->last_imm != (uint32_t)i) {
            fprintf(stderr, "shoal-perf: put_lat: immediate %u, expected %lu\n", r->last_imm, i);
            return -1;
        }
        if (!client && put(r, size, SHOAL_PUT_IMM, (uint32_t)i))
            return -1;
        while (r->put_done < want_done)
            if (pump(r, true))
                return -1;
        if (t)
            t[i] = (now_us() - t0) / 2;
    }
    return 0;
}

/* Client side of put_bw / put_rate: @n puts, at most @window in flight,
 * the last one with an immediate; ends when the server says it saw it. */
static int put_bw(struct run *r, size_t size, unsigned long n, unsigned long window)
{
    unsigned long base = r->put_done, posted = 0;
    while (r->put_done - base < n) {
        while (posted < n && posted - (r->put_done - base) < window) {
            bool last = posted + 1 == n;
            if (put(r, size, last ? SHOAL_PUT_IMM : 0, (uint32_t)posted))
                return -1;
            posted++;
        }
        if (pump(r, r->spin))
            return -1;
    }
    /* The server's "D" says the last immediate, hence all the data, is there. */
    if (recv_msg_how(r, r->spin))
        return -1;
    if (r->msg[0] != 'D') {
        fprintf(stderr, "shoal-perf: put_bw: unexpected answer '%s'\n", r->msg);
        return -1;
    }
    return 0;
}

/* Client side of get_lat (@t gets each get's time) and get_bw. */
static int get_run(struct run *r, size_t size, unsigned long n, unsigned long window, double *t)
{
    unsigned long base = r->get_done, posted = 0;
    while (r->get_done - base < n) {
        double t0 = now_us();
        while (posted < n && posted - (r->get_done - base) < window) {
            if (get(r, size))
                return -1;
            posted++;
        }
        if (t) { /* window 1: exactly one get in flight */
            while (r->get_done - base < posted)
                if (pump(r, true))
                    return -1;
            t[posted - 1] = now_us() - t0;
        } else if (pump(r, r->spin)) {
            return -1;
        }
    }
    return 0;
}

/* ---- results --------------------------------------------------------- */

struct result {
    size_t bytes;
    unsigned long iters;
    /* latency, us */
    double t_min, t_max, t_typical, t_avg, t_stdev, t_99, t_999;
    /* bandwidth */
    double secs, mib_s, gb_s, mpps;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void lat_stats(struct result *res, double *t, unsigned long n)
{
    qsort(t, n, sizeof(*t), cmp_double);
    double sum = 0, sq = 0;
    for (unsigned long i = 0; i < n; i++)
        sum += t[i];
    res->t_avg = sum / (double)n;
    for (unsigned long i = 0; i < n; i++)
        sq += (t[i] - res->t_avg) * (t[i] - res->t_avg);
    res->t_stdev = sqrt(sq / (double)n);
    res->t_min = t[0];
    res->t_max = t[n - 1];
    res->t_typical = t[n / 2];
    res->t_99 = t[(unsigned long)((double)(n - 1) * 0.99)];
    res->t_999 = t[(unsigned long)((double)(n - 1) * 0.999)];
}

static void placement_str(const struct run *r, char *out, size_t len);

static void print_header(const struct opts *o, const struct run *r)
{
    if (o->json)
        return;
    const char *rule = "-------------------------------------------------------------------"
                       "--------------------------------";
    printf("%s\n", rule);
    printf("                    shoal-perf %s\n", test_names[o->test]);
    printf(" Transport       : %s\n", shoal_ctx_describe(r->ctx));
    printf(" Peer            : %s\n", shoal_ep_peer(r->ep));
    char pl[320];
    placement_str(r, pl, sizeof(pl));
    printf(" Placement       : %s\n", pl);
    if (!is_lat(o->test)) {
        printf(" Window          : %lu operations in flight\n", o->window);
        printf(" Waiting         : %s\n", o->busy ? "both sides spin (--busy)"
                                                 : "shoal_wait (spin, then sleep)");
    }
    printf(" Warm-up         : %lu iterations per size\n", o->warmup);
    printf("%s\n", rule);
    if (is_lat(o->test))
        printf(" #bytes  #iterations  t_min[usec]  t_max[usec]  t_typical[usec]  t_avg[usec]"
               "  t_stdev[usec]  99%% percentile[usec]  99.9%% percentile[usec]\n");
    else
        printf(" #bytes  #iterations  BW average[MiB/sec]  BW average[Gb/sec]  MsgRate[Mpps]\n");
    fflush(stdout);
}

static void print_row(const struct opts *o, const struct result *x)
{
    if (o->json)
        return;
    if (is_lat(o->test))
        printf(" %-7zu %-12lu %-12.2f %-12.2f %-16.2f %-12.2f %-14.2f %-21.2f %.2f\n", x->bytes,
               x->iters, x->t_min, x->t_max, x->t_typical, x->t_avg, x->t_stdev, x->t_99,
               x->t_999);
    else
        printf(" %-7zu %-12lu %-20.2f %-19.3f %.6f\n", x->bytes, x->iters, x->mib_s, x->gb_s,
               x->mpps);
    fflush(stdout);
}

static void json_escape(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

static void print_json(const struct opts *o, const struct run *r, const struct result *res,
                       size_t nres)
{
    printf("{\"tool\": \"shoal-perf\", \"test\": \"%s\", \"transport\": \"%s\", \"describe\": ",
           test_names[o->test], shoal_transport_name(shoal_ctx_transport(r->ctx)));
    json_escape(shoal_ctx_describe(r->ctx));
    printf(", \"warmup\": %lu, \"window\": %lu, \"busy\": %s, \"results\": [", o->warmup,
           is_lat(o->test) ? 1ul : o->window, is_lat(o->test) || o->busy ? "true" : "false");
    for (size_t i = 0; i < nres; i++) {
        const struct result *x = &res[i];
        printf("%s\n  {\"bytes\": %zu, \"iterations\": %lu, ", i ? "," : "", x->bytes, x->iters);
        if (is_lat(o->test))
            printf("\"t_min_us\": %.3f, \"t_max_us\": %.3f, \"t_typical_us\": %.3f, "
                   "\"t_avg_us\": %.3f, \"t_stdev_us\": %.3f, \"t_99_us\": %.3f, "
                   "\"t_99_9_us\": %.3f}", x->t_min, x->t_max, x->t_typical, x->t_avg,
                   x->t_stdev, x->t_99, x->t_999);
        else
            printf("\"seconds\": %.6f, \"bw_avg_MiB_s\": %.3f, \"bw_avg_Gb_s\": %.4f, "
                   "\"msg_rate_Mpps\": %.6f}", x->secs, x->mib_s, x->gb_s, x->mpps);
    }
    printf("\n]}\n");
}

/* ---- setup ------------------------------------------------------------ */

static int make_ctx(struct run *r, const struct opts *o)
{
    shoal_config_t cfg;
    char err[256];
    shoal_config_init(&cfg);
    int rc = shoal_config_from_env(&cfg, err, sizeof(err));
    if (!rc && o->transport)
        rc = shoal_config_set(&cfg, "TRANSPORT", o->transport, err, sizeof(err));
    if (!rc && o->device)
        rc = shoal_config_set(&cfg, "DEVICE", o->device, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "shoal-perf: %s\n", err);
        return -1;
    }
    rc = shoal_ctx_create(&cfg, &r->ctx);
    if (rc)
        return fail(r, "creating a context", rc);
    /* Pinned as the library places compute threads (SHOAL_BIND): our one
     * thread is thread 0 of 1.  Two processes on one machine should say
     * which is which (SHOAL_LOCAL_RANK/SIZE), or both get the same CPU;
     * perf/compare and perf/smoke.sh do. */
    rc = shoal_bind_thread(r->ctx, 0, 1);
    return rc ? fail(r, "binding the thread (SHOAL_BIND)", rc) : 0;
}

/* "CPUs 1 (SHOAL_BIND auto, local rank 1/2)" or "not bound (SHOAL_BIND none)". */
static void placement_str(const struct run *r, char *out, size_t len)
{
    const shoal_placement_t *p = shoal_ctx_placement(r->ctx);
    if (p->policy == SHOAL_BIND_NONE || !p->cpus[0])
        snprintf(out, len, "not bound (SHOAL_BIND none)");
    else
        snprintf(out, len, "CPUs %s (SHOAL_BIND %s, local rank %d/%d)", p->cpus,
                 p->policy == SHOAL_BIND_AUTO ? "auto" : "list", p->local_rank, p->local_size);
}

/* Register a buffer of @len bytes and swap descriptors with the peer. */
static int setup_buffers(struct run *r, size_t len)
{
    r->buflen = len < 64 ? 64 : len;
    r->buf = aligned_alloc(4096, (r->buflen + 4095) / 4096 * 4096);
    if (!r->buf)
        return fail(r, "allocating the buffer", -ENOMEM);
    memset(r->buf, 0, r->buflen);
    int rc = shoal_mr_reg(r->ctx, r->buf, r->buflen,
                          SHOAL_ACCESS_REMOTE_WRITE | SHOAL_ACCESS_REMOTE_READ, &r->mr);
    if (rc)
        return fail(r, "registering memory", rc);
    unsigned char d[SHOAL_DESC_MAX];
    size_t dlen;
    rc = shoal_mr_pack(r->mr, d, sizeof(d), &dlen);
    if (!rc)
        rc = shoal_send(r->ep, d, dlen, 0);
    if (rc)
        return fail(r, "sending the descriptor", rc);
    if (recv_msg(r))
        return -1;
    rc = shoal_rmr_unpack(r->ep, r->msg, r->msglen, &r->rmr);
    return rc ? fail(r, "unpacking the peer's descriptor", rc) : 0;
}

static void teardown(struct run *r)
{
    if (r->rmr)
        shoal_rmr_destroy(r->rmr);
    if (r->ep)
        shoal_ep_close(r->ep);
    if (r->l)
        shoal_listener_close(r->l);
    if (r->mr)
        shoal_mr_dereg(r->mr);
    if (r->ctx)
        shoal_ctx_destroy(r->ctx);
    free(r->buf);
}

/* ---- server ----------------------------------------------------------- */

/*
 * Protocol (text control messages, client first):
 *   "H <bufsize>"                     then both swap descriptors
 *   "T <test> <size> <iters> <spin>"  one run (warm-up runs are runs too);
 *                                     spin: 1 = --busy
 *                                     the server answers "R" when ready,
 *                                     and "D" after a put_bw run
 *   "C <size>"                        server: check the last put's bytes, answer "K" or "E"
 *   "F <size>"                        server: fill its buffer for gets, answer "K"
 *   "Q"                               end
 */
static int serve_run(struct run *r, enum test t, size_t size, unsigned long n)
{
    if (send_msg(r, "R"))
        return -1;
    if (t == T_PUT_LAT)
        return put_lat(r, false, size, n, NULL);
    /* Bandwidth tests: the target waits in shoal_wait (the library spins
     * briefly, then sleeps until the transport signals), as an application
     * would, unless the client asked for --busy.  perftest's server is
     * passive too; on verbs a spinning target takes a CPU from rxe, and on
     * a loaded machine a spinning pair loses its CPUs (measured 2-4x less
     * bandwidth with a third busy process on 2 cores). */
    bool busy = r->spin;
    if (t == T_PUT_BW || t == T_PUT_RATE) {
        unsigned long want = r->imms + 1;
        while (r->imms < want)
            if (pump(r, busy))
                return -1;
        if (r->last_imm != (uint32_t)(n - 1)) {
            fprintf(stderr, "shoal-perf: put_bw: last immediate %u, expected %lu\n",
                    r->last_imm, n - 1);
            return -1;
        }
        return send_msg(r, "D");
    }
    /* get tests: keep progressing until the client's next message.  UCX
     * answers gets on the target, so for get_lat the target spins there;
     * on verbs the device answers them and the target waits, as
     * ib_read_lat's does (a spinning target takes a CPU from rxe). */
    bool answers = shoal_ctx_transport(r->ctx) != SHOAL_TRANSPORT_VERBS;
    while (!r->qlen)
        if (pump(r, busy || (t == T_GET_LAT && answers)))
            return -1;
    return 0;
}

static int server(const struct opts *o)
{
    struct run r = {0};
    int rc = -1;
    if (make_ctx(&r, o))
        goto out;
    int e = shoal_listen(r.ctx, NULL, (uint16_t)o->port, &r.l);
    if (e) {
        fail(&r, "listen", e);
        goto out;
    }
    char pl[320];
    placement_str(&r, pl, sizeof(pl));
    printf("shoal-perf: server listening on port %u (%s; %s); waiting for a client\n",
           shoal_listener_port(r.l), shoal_ctx_describe(r.ctx), pl);
    fflush(stdout);
    e = shoal_accept(r.l, -1, &r.ep);
    if (e) {
        fail(&r, "accept", e);
        goto out;
    }
    unsigned long bufsize;
    if (recv_msg(&r))
        goto out;
    if (sscanf((char *)r.msg, "H %lu", &bufsize) != 1 || bufsize > PERF_MAX_SIZE) {
        fprintf(stderr, "shoal-perf: bad hello from the client: '%s'\n", r.msg);
        goto out;
    }
    if (setup_buffers(&r, bufsize))
        goto out;
    for (;;) {
        if (recv_msg(&r))
            goto out;
        char name[32];
        size_t size;
        unsigned long n;
    again:
        if (r.msg[0] == 'Q')
            break;
        int spin = 0;
        if (sscanf((char *)r.msg, "T %31s %zu %lu %d", name, &size, &n, &spin) >= 3) {
            r.spin = spin != 0;
            int t = 0;
            while (t < T_COUNT && strcmp(name, test_names[t]))
                t++;
            if (t == T_COUNT || size > r.buflen || n == 0) {
                fprintf(stderr, "shoal-perf: bad request from the client: '%s'\n", r.msg);
                goto out;
            }
            if (serve_run(&r, (enum test)t, size, n))
                goto out;
            if (is_get((enum test)t)) {
                take_msg(&r); /* serve_run stopped at the next message */
                goto again;
            }
        } else if (sscanf((char *)r.msg, "C %zu", &size) == 1 && size <= r.buflen) {
            if (send_msg(&r, check(&r, size, 'c', "put") ? "E" : "K"))
                goto out;
        } else if (sscanf((char *)r.msg, "F %zu", &size) == 1 && size <= r.buflen) {
            fill(&r, size, 's');
            if (send_msg(&r, "K"))
                goto out;
        } else {
            fprintf(stderr, "shoal-perf: bad request from the client: '%s'\n", r.msg);
            goto out;
        }
    }
    rc = 0;
out:
    teardown(&r);
    return rc ? 1 : 0;
}

/* ---- client ----------------------------------------------------------- */

/* Ask the server for one run and wait until it is ready. */
static int start_run(struct run *r, enum test t, size_t size, unsigned long n)
{
    if (send_msg(r, "T %s %zu %lu %d", test_names[t], size, n, r->spin) || recv_msg(r))
        return -1;
    if (r->msg[0] != 'R') {
        fprintf(stderr, "shoal-perf: server answered '%s' instead of R\n", r->msg);
        return -1;
    }
    return 0;
}

static int request(struct run *r, const char *fmt, size_t size)
{
    if (send_msg(r, fmt, size) || recv_msg(r))
        return -1;
    return r->msg[0] == 'K' ? 0 : -1;
}

/* One size: warm-up run, timed run, data check.  Fills @res. */
static int client_size(struct run *r, const struct opts *o, size_t size, struct result *res,
                       double *t)
{
    enum test test = o->test;
    unsigned long n = o->iters, w = is_lat(test) ? 1 : o->window;
    memset(res, 0, sizeof(*res));
    res->bytes = size;
    res->iters = n;
    if (is_get(test)) {
        if (request(r, "F %zu", size)) {
            fprintf(stderr, "shoal-perf: the server could not prepare its buffer\n");
            return -1;
        }
        memset(r->buf, 0, size);
    } else {
        fill(r, size, 'c');
    }
    for (int timed = 0; timed < 2; timed++) {
        unsigned long iters = timed ? n : o->warmup;
        if (!iters)
            continue;
        if (start_run(r, test, size, iters))
            return -1;
        double t0 = now_us();
        int rc;
        if (test == T_PUT_LAT)
            rc = put_lat(r, true, size, iters, timed ? t : NULL);
        else if (is_get(test))
            rc = get_run(r, size, iters, w, timed && test == T_GET_LAT ? t : NULL);
        else
            rc = put_bw(r, size, iters, w);
        if (rc)
            return -1;
        res->secs = (now_us() - t0) * 1e-6;
    }
    if (is_lat(test)) {
        lat_stats(res, t, n);
    } else {
        double bytes = (double)size * (double)n;
        res->mib_s = bytes / res->secs / 1048576.0;
        res->gb_s = bytes * 8 / res->secs / 1e9;
        res->mpps = (double)n / res->secs / 1e6;
    }
    /* The data check, outside the clock. */
    if (is_get(test))
        return check(r, size, 's', test_names[test]);
    if (request(r, "C %zu", size)) {
        fprintf(stderr, "shoal-perf: %s, %zu B: the server found the data damaged\n",
                test_names[test], size);
        return -1;
    }
    return 0;
}

static int client(const struct opts *o)
{
    struct run r = {0};
    int rc = -1;
    size_t sizes[32], nsizes = 0;
    if (o->all)
        for (size_t s = 2; s <= PERF_MAX_SIZE; s *= 2)
            sizes[nsizes++] = s;
    else
        sizes[nsizes++] = o->size;
    struct result *res = calloc(nsizes, sizeof(*res));
    double *t = is_lat(o->test) ? calloc(o->iters, sizeof(double)) : NULL;
    if (!res || (is_lat(o->test) && !t)) {
        fprintf(stderr, "shoal-perf: out of memory\n");
        goto out;
    }
    r.spin = o->busy;
    if (make_ctx(&r, o))
        goto out;
    int e = shoal_connect(r.ctx, o->host, (uint16_t)o->port, &r.ep);
    if (e) {
        fail(&r, "connect", e);
        goto out;
    }
    size_t bufsize = sizes[nsizes - 1];
    if (send_msg(&r, "H %zu", bufsize) || setup_buffers(&r, bufsize))
        goto out;
    print_header(o, &r);
    for (size_t i = 0; i < nsizes; i++) {
        if (client_size(&r, o, sizes[i], &res[i], t))
            goto out;
        print_row(o, &res[i]);
    }
    if (o->json)
        print_json(o, &r, res, nsizes);
    else
        printf("-------------------------------------------------------------------"
               "--------------------------------\n");
    if (send_msg(&r, "Q"))
        goto out;
    /* Let the Q leave before closing (a flushed close would also do). */
    rc = 0;
out:
    teardown(&r);
    free(res);
    free(t);
    return rc ? 1 : 0;
}

/* ---- options ---------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: shoal-perf [options]          server (waits for one client)\n"
            "       shoal-perf [options] HOST     client\n"
            "options (client unless noted):\n"
            "  -t, --test NAME       put_lat (default), put_bw, put_rate, get_lat, get_bw\n"
            "  -s, --size BYTES      message size, k/m suffixes allowed (default 2; 65536 for\n"
            "                        put_bw and get_bw; 8 for put_rate)\n"
            "  -a, --all             all sizes from 2 B to 8 MiB (powers of two)\n"
            "  -n, --iters N         timed iterations per size (default 1000; 5000 for\n"
            "                        put_bw and get_bw, 100000 for put_rate)\n"
            "  -w, --warmup N        untimed iterations before each size (default 100)\n"
            "  -W, --window N        operations in flight for bandwidth tests (default 128)\n"
            "  -p, --port PORT       port (both; default %d, 0 = any, printed by the server)\n"
            "  -d, --device DEV      RDMA device[:port] (both; SHOAL_DEVICE)\n"
            "      --transport T     auto, verbs or ucx (both; SHOAL_TRANSPORT)\n"
            "      --json            print the results as one JSON object\n"
            "      --busy            bandwidth tests: both sides spin instead of shoal_wait\n"
            "  -h, --help            this text\n"
            "environment: SHOAL_* (see shoal-perf(1)) and UCX_* for the UCX transport.\n",
            PERF_DEFAULT_PORT);
}

/* A positive number with an optional k/m/g suffix (powers of 1024). */
static int parse_num(const char *s, const char *what, unsigned long min, unsigned long max,
                     unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    unsigned long mult = 1;
    if (end != s && *end && !end[1]) {
        switch (*end) {
        case 'k': case 'K': mult = 1ul << 10; end++; break;
        case 'm': case 'M': mult = 1ul << 20; end++; break;
        case 'g': case 'G': mult = 1ul << 30; end++; break;
        default: break;
        }
    }
    if (errno || end == s || *end || s[0] == '-' || v > max / mult || v * mult < min ||
        v * mult > max) {
        fprintf(stderr, "shoal-perf: %s '%s': expected a number from %lu to %lu\n", what, s,
                min, max);
        return -1;
    }
    *out = v * mult;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.port = PERF_DEFAULT_PORT};
    bool size_set = false, iters_set = false, warm_set = false;
    static const struct option lo[] = {
        {"test", required_argument, 0, 't'},   {"size", required_argument, 0, 's'},
        {"all", no_argument, 0, 'a'},          {"iters", required_argument, 0, 'n'},
        {"warmup", required_argument, 0, 'w'}, {"window", required_argument, 0, 'W'},
        {"port", required_argument, 0, 'p'},   {"device", required_argument, 0, 'd'},
        {"transport", required_argument, 0, 'T'}, {"json", no_argument, 0, 'J'},
        {"busy", no_argument, 0, 'B'},
        {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
    int c;
    unsigned long v;
    o.window = 128;
    while ((c = getopt_long(argc, argv, "t:s:an:w:W:p:d:h", lo, NULL)) != -1) {
        switch (c) {
        case 't': {
            int t = 0;
            while (t < T_COUNT && strcmp(optarg, test_names[t]))
                t++;
            if (t == T_COUNT) {
                fprintf(stderr, "shoal-perf: --test '%s': expected put_lat, put_bw, put_rate, "
                        "get_lat or get_bw\n", optarg);
                return 2;
            }
            o.test = (enum test)t;
            break;
        }
        case 's':
            if (parse_num(optarg, "--size", 1, PERF_MAX_SIZE, &v))
                return 2;
            o.size = v;
            size_set = true;
            break;
        case 'a': o.all = true; break;
        case 'n':
            if (parse_num(optarg, "--iters", 1, 100000000, &v))
                return 2;
            o.iters = v;
            iters_set = true;
            break;
        case 'w':
            if (parse_num(optarg, "--warmup", 0, 100000000, &v))
                return 2;
            o.warmup = v;
            warm_set = true;
            break;
        case 'W':
            if (parse_num(optarg, "--window", 1, 65536, &v))
                return 2;
            o.window = v;
            break;
        case 'p':
            if (parse_num(optarg, "--port", 0, 65535, &v))
                return 2;
            o.port = (unsigned)v;
            break;
        case 'd': o.device = optarg; break;
        case 'T': o.transport = optarg; break;
        case 'J': o.json = true; break;
        case 'B': o.busy = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        o.host = argv[optind++];
    if (optind < argc) {
        fprintf(stderr, "shoal-perf: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o.all && size_set) {
        fprintf(stderr, "shoal-perf: -a and -s exclude each other\n");
        return 2;
    }
    if (!size_set)
        o.size = o.test == T_PUT_BW || o.test == T_GET_BW ? 65536 : o.test == T_PUT_RATE ? 8 : 2;
    if (!iters_set)
        o.iters = o.test == T_PUT_RATE ? 100000 : is_lat(o.test) ? 1000 : 5000;
    if (!warm_set)
        o.warmup = 100;
    if (o.host && !o.port) {
        fprintf(stderr, "shoal-perf: the client needs the server's port (-p PORT)\n");
        return 2;
    }
    return o.host ? client(&o) : server(&o);
}
