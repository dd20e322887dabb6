/*
 * shoal-demo -- a two-process libshoal demonstration: one side registers a
 * buffer and hands its descriptor over; the other streams one-sided puts
 * into it, the last one with an immediate, and then both ping-pong small
 * put-with-immediate messages.  Prints the transport in use, the bandwidth
 * and the round-trip latency.
 *
 *   shoal-demo                     both roles on this machine (forks)
 *   shoal-demo --server [-p PORT]  one role ...
 *   shoal-demo --client HOST -p PORT   ... and the other, elsewhere
 *
 * Not a benchmark with statistics: perf/shoal-perf is.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shoal.h"

struct opts {
    size_t size;
    unsigned iters;
    unsigned pings;
    const char *host;
    unsigned port;
    int role; /* 0 both, 1 server, 2 client */
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int die(shoal_ctx_t *ctx, const char *what, int rc)
{
    fprintf(stderr, "shoal-demo: %s: %s%s%s\n", what, shoal_strerror(rc),
            ctx && *shoal_ctx_errmsg(ctx) ? ": " : "", ctx ? shoal_ctx_errmsg(ctx) : "");
    return 1;
}

/* Wait for the next event, skipping completions of our own control
 * messages (they may trail behind the peer's answers). */
static int next_event(shoal_ctx_t *ctx, shoal_event_t *ev, int timeout_ms)
{
    for (;;) {
        int n = shoal_wait(ctx, ev, 1, timeout_ms);
        if (n != 1 || ev->type != SHOAL_EV_SEND_DONE || ev->status)
            return n;
    }
}

/* Wait for one event of @type; any failure event ends the demo. */
static int expect(shoal_ctx_t *ctx, shoal_event_type_t type, shoal_event_t *ev)
{
    int n = next_event(ctx, ev, 30000);
    if (n <= 0) {
        fprintf(stderr, "shoal-demo: waiting for %s: %s\n", shoal_event_name(type),
                n ? shoal_strerror(n) : "timed out");
        return -1;
    }
    if (ev->type != type || ev->status) {
        fprintf(stderr, "shoal-demo: expected %s, got %s%s%s\n", shoal_event_name(type),
                shoal_event_name(ev->type), ev->reason ? ": " : "",
                ev->reason ? ev->reason : "");
        return -1;
    }
    return 0;
}

static shoal_ctx_t *make_ctx(void)
{
    shoal_ctx_t *ctx = NULL;
    int rc = shoal_ctx_create(NULL, &ctx);
    if (rc) {
        die(NULL, "creating a context", rc);
        return NULL;
    }
    /* The demo's one thread is its compute thread 0 (SHOAL_BIND, --bind). */
    if ((rc = shoal_bind_thread(ctx, 0, 1)) != 0) {
        die(ctx, "binding the thread", rc);
        shoal_ctx_destroy(ctx);
        return NULL;
    }
    return ctx;
}

/* Exchange descriptors: each side sends its own and unpacks the peer's.
 * Control messages and immediates are ordered on an endpoint, so the
 * peer's descriptor arrives before anything it puts into our memory. */
static int swap_desc(shoal_ctx_t *ctx, shoal_ep_t *ep, shoal_mr_t *mine, shoal_rmr_t **theirs)
{
    unsigned char d[SHOAL_DESC_MAX];
    size_t len;
    shoal_event_t ev;
    int rc = shoal_mr_pack(mine, d, sizeof(d), &len);
    if (!rc)
        rc = shoal_send(ep, d, len, 0);
    if (rc)
        return die(ctx, "sending the descriptor", rc);
    if (expect(ctx, SHOAL_EV_RECV, &ev))
        return 1;
    rc = shoal_rmr_unpack(ep, ev.data, ev.len, theirs);
    if (rc)
        return die(ctx, "unpacking the peer's descriptor", rc);
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run(const struct opts *o, int is_server, int port_fd)
{
    shoal_ctx_t *ctx = make_ctx();
    if (!ctx)
        return 1;
    shoal_ep_t *ep = NULL;
    shoal_listener_t *l = NULL;
    int rc;
    if (is_server) {
        rc = shoal_listen(ctx, o->host, (uint16_t)o->port, &l);
        if (rc)
            return die(ctx, "listen", rc);
        unsigned short port = shoal_listener_port(l);
        if (port_fd >= 0) {
            if (write(port_fd, &port, sizeof(port)) != sizeof(port))
                return 1;
        } else {
            printf("shoal-demo: server listening on port %u\n", port);
            fflush(stdout);
        }
        rc = shoal_accept(l, 60000, &ep);
        if (rc)
            return die(ctx, "accept", rc);
    } else {
        unsigned short port = (unsigned short)o->port;
        if (port_fd >= 0 && read(port_fd, &port, sizeof(port)) != sizeof(port))
            return 1;
        rc = shoal_connect(ctx, o->host ? o->host : "127.0.0.1", port, &ep);
        if (rc)
            return die(ctx, "connect", rc);
    }
    /* Server: a target buffer of one message size.  Client: the source. */
    size_t len = o->size < 8 ? 8 : o->size;
    char *buf = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
    if (!buf)
        return die(ctx, "allocating the buffer", -ENOMEM);
    memset(buf, is_server ? 0 : 0x5a, len);
    shoal_mr_t *mr;
    rc = shoal_mr_reg(ctx, buf, len, SHOAL_ACCESS_REMOTE_WRITE, &mr);
    if (rc)
        return die(ctx, "registering memory", rc);
    shoal_rmr_t *rmr = NULL;
    if (swap_desc(ctx, ep, mr, &rmr))
        return 1;
    shoal_event_t ev;

    /* Phase 1: bandwidth, client -> server. */
    if (!is_server) {
        const unsigned window = 16;
        unsigned posted = 0, done = 0;
        double t0 = now_s();
        while (done < o->iters) {
            while (posted < o->iters && posted - done < window) {
                unsigned last = posted + 1 == o->iters;
                rc = shoal_put(ep, mr, 0, rmr, 0, o->size, last ? SHOAL_PUT_IMM : 0, 1, posted);
                if (rc == -EAGAIN)
                    break;
                if (rc)
                    return die(ctx, "put", rc);
                posted++;
            }
            shoal_event_t evs[16];
            int n = shoal_wait(ctx, evs, 16, 30000);
            if (n <= 0)
                return die(ctx, "waiting for puts", n ? n : -ETIMEDOUT);
            for (int i = 0; i < n; i++) {
                if (evs[i].type == SHOAL_EV_SEND_DONE && !evs[i].status)
                    continue;
                if (evs[i].type != SHOAL_EV_PUT_DONE || evs[i].status) {
                    fprintf(stderr, "shoal-demo: put failed: %s\n",
                            evs[i].reason ? evs[i].reason : shoal_event_name(evs[i].type));
                    return 1;
                }
                done++;
            }
        }
        /* The server answers when the last put's immediate has arrived:
         * only then is all the data known to be there. */
        if (expect(ctx, SHOAL_EV_RECV, &ev))
            return 1;
        double dt = now_s() - t0;
        double bytes = (double)o->size * o->iters;
        printf("shoal-demo: transport: %s\n", shoal_ctx_describe(ctx));
        const shoal_placement_t *pl = shoal_ctx_placement(ctx);
        printf("shoal-demo: placement: CPUs %s (%s)\n", pl->cpus[0] ? pl->cpus : "not bound",
               pl->why);
        printf("shoal-demo: put bandwidth: %u x %zu B in %.3f s = %.1f MB/s (%.2f Gb/s)\n",
               o->iters, o->size, dt, bytes / dt / 1e6, bytes * 8 / dt / 1e9);
    } else {
        if (expect(ctx, SHOAL_EV_IMM, &ev))
            return 1;
        rc = shoal_send(ep, "ok", 2, 0);
        if (rc)
            return die(ctx, "answering", rc);
    }

    /* Phase 2: ping-pong of 8-byte puts with immediates. */
    double *rtt = calloc(o->pings, sizeof(double));
    if (!rtt)
        return 1;
    for (unsigned i = 0; i < o->pings; i++) {
        double t0 = now_s();
        if (!is_server) {
            rc = shoal_put(ep, mr, 0, rmr, 0, 8, SHOAL_PUT_IMM, i, i);
            if (rc)
                return die(ctx, "ping", rc);
        }
        int got_imm = 0, got_done = 0;
        while (!got_imm || !got_done) {
            if (shoal_poll(ctx, &ev, 1) == 0)
                continue; /* busy-poll: latency, not CPU, is measured */
            if (ev.type == SHOAL_EV_IMM && ev.imm == i) {
                got_imm = 1;
                if (is_server) {
                    rc = shoal_put(ep, mr, 0, rmr, 0, 8, SHOAL_PUT_IMM, i, i);
                    if (rc)
                        return die(ctx, "pong", rc);
                }
            } else if (ev.type == SHOAL_EV_PUT_DONE && !ev.status) {
                got_done = 1;
            } else if (ev.type == SHOAL_EV_SEND_DONE && !ev.status) {
                continue;
            } else {
                fprintf(stderr, "shoal-demo: ping-pong: unexpected %s%s%s\n",
                        shoal_event_name(ev.type), ev.reason ? ": " : "",
                        ev.reason ? ev.reason : "");
                return 1;
            }
        }
        rtt[i] = now_s() - t0;
    }
    if (!is_server && o->pings) {
        qsort(rtt, o->pings, sizeof(double), cmp_double);
        printf("shoal-demo: put+immediate round trip, 8 B: median %.1f us, min %.1f us "
               "(%u pings)\n", rtt[o->pings / 2] * 1e6, rtt[0] * 1e6, o->pings);
    }
    free(rtt);
    shoal_rmr_destroy(rmr);
    shoal_ep_close(ep);
    if (l)
        shoal_listener_close(l);
    shoal_mr_dereg(mr);
    shoal_ctx_destroy(ctx);
    free(buf);
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: shoal-demo [options]            both roles, two local processes\n"
            "       shoal-demo --server [options]   target side\n"
            "       shoal-demo --client HOST -p PORT [options]\n"
            "options:\n"
            "  -s, --size BYTES    size of each put (default 1048576)\n"
            "  -n, --iters N       number of puts (default 512)\n"
            "      --pings N       round trips for the latency figure (default 1000)\n"
            "  -p, --port PORT     port to listen on / connect to (default: any)\n"
            "  -H, --host ADDR     address to listen on (server)\n"
            "  -b, --bind B        thread placement: auto, none or a CPU list (SHOAL_BIND)\n"
            "  -h, --help          this text\n"
            "environment: SHOAL_TRANSPORT=auto|verbs|ucx, SHOAL_DEVICE, SHOAL_LOG_LEVEL,\n"
            "  and UCX_* for the UCX transport (see shoal-demo(1)).\n");
}

static int parse_num(const char *s, const char *what, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || v == 0 || v > max || s[0] == '-') {
        fprintf(stderr, "shoal-demo: %s '%s': expected a number from 1 to %lu\n", what, s, max);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    struct opts o = {.size = 1 << 20, .iters = 512, .pings = 1000};
    static const struct option lo[] = {
        {"size", required_argument, 0, 's'}, {"iters", required_argument, 0, 'n'},
        {"pings", required_argument, 0, 'P'}, {"port", required_argument, 0, 'p'},
        {"host", required_argument, 0, 'H'}, {"server", no_argument, 0, 'S'},
        {"client", required_argument, 0, 'C'}, {"bind", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    unsigned long v;
    while ((c = getopt_long(argc, argv, "s:n:p:H:b:h", lo, NULL)) != -1) {
        switch (c) {
        case 's':
            if (parse_num(optarg, "--size", 1ul << 30, &v))
                return 2;
            o.size = v;
            break;
        case 'n':
            if (parse_num(optarg, "--iters", 1ul << 24, &v))
                return 2;
            o.iters = (unsigned)v;
            break;
        case 'P':
            if (parse_num(optarg, "--pings", 1ul << 24, &v))
                return 2;
            o.pings = (unsigned)v;
            break;
        case 'p':
            if (parse_num(optarg, "--port", 65535, &v))
                return 2;
            o.port = (unsigned)v;
            break;
        case 'H': o.host = optarg; break;
        case 'b': {
            shoal_config_t cfg;
            char err[256];
            shoal_config_init(&cfg);
            if (shoal_config_set(&cfg, "BIND", optarg, err, sizeof(err))) {
                fprintf(stderr, "shoal-demo: --bind: %s\n", err);
                return 2;
            }
            setenv("SHOAL_BIND", optarg, 1);
            break;
        }
        case 'S': o.role = 1; break;
        case 'C': o.role = 2; o.host = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal-demo: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (o.role == 1)
        return run(&o, 1, -1);
    if (o.role == 2) {
        if (!o.port) {
            fprintf(stderr, "shoal-demo: --client needs -p PORT\n");
            return 2;
        }
        return run(&o, 0, -1);
    }
    /* Both roles: the server in a child, the port through a pipe. */
    int fds[2];
    if (pipe(fds))
        return 1;
    if (!o.host)
        o.host = "127.0.0.1";
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return 1;
    /* Two processes on this node: local ranks 0 (server) and 1 (client),
     * so SHOAL_BIND=auto gives them different cores. */
    bool ranks = !getenv("SHOAL_LOCAL_RANK") && !getenv("SHOAL_LOCAL_SIZE");
    if (ranks)
        setenv("SHOAL_LOCAL_SIZE", "2", 1);
    if (pid == 0) {
        close(fds[0]);
        alarm(300);
        if (ranks)
            setenv("SHOAL_LOCAL_RANK", "0", 1);
        _exit(run(&o, 1, fds[1]));
    }
    close(fds[1]);
    if (ranks)
        setenv("SHOAL_LOCAL_RANK", "1", 1);
    int rc = run(&o, 0, fds[0]);
    int st;
    if (rc)
        kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    if (!rc && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
        fprintf(stderr, "shoal-demo: the server process failed\n");
        rc = 1;
    }
    return rc;
}
