/*
 * test-ps-api.c -- the PS layer's public API with real processes over
 * libshoal (UCX over TCP on loopback): wrong use refused with a clear
 * message, workers whose tensors differ refused by the servers, the
 * average and Adam optimizers end to end, parameter groups, and the
 * start/test/wait form of a push-pull.
 *
 * Each job forks its servers and workers; they meet through a rendezvous
 * file in a fresh directory (the kernel picks server 0's port), and the
 * parent kills whatever is left after a deadline.  A child reports by its
 * exit status and, on failure, a line on stderr.
 */
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cu.h"
#include "shoal_ps.h"

#define FAIL(...)                                                                    \
    do {                                                                             \
        fprintf(stderr, "[rank %s] %s:%d: ", getenv("SHOAL_RANK"), __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                                                \
        fprintf(stderr, "\n");                                                       \
        _exit(3);                                                                    \
    } while (0)

static char rdv_dir[256];

typedef void (*role_fn)(int rank, shoal_ps_config_t *cfg, void *arg);

/* Run a job of @size ranks (@servers of them serve) for at most @secs;
 * each rank calls @fn (servers call shoal_ps_serve unless @fn_servers).
 * The exit statuses land in @status[rank]. */
static void run_job(int size, int servers, int groups, role_fn fn, void *arg, int secs,
                    bool fn_servers, int *status)
{
    static int job;
    char rdv[320];
    snprintf(rdv, sizeof(rdv), "%s/job%d", rdv_dir, ++job);
    pid_t pid[16];
    for (int r = 0; r < size; r++) {
        pid[r] = fork();
        if (pid[r] == 0) {
            char v[32];
            snprintf(v, sizeof(v), "%d", r);
            setenv("SHOAL_RANK", v, 1);
            snprintf(v, sizeof(v), "%d", size);
            setenv("SHOAL_SIZE", v, 1);
            snprintf(v, sizeof(v), "%d", servers);
            setenv("SHOAL_SERVERS", v, 1);
            setenv("SHOAL_RENDEZVOUS", rdv, 1);
            setenv("SHOAL_TRANSPORT", "ucx", 1);
            setenv("SHOAL_BIND", "none", 1);
            shoal_ps_config_t cfg;
            char err[512];
            shoal_ps_config_init(&cfg);
            if (shoal_ps_config_from_env(&cfg, err, sizeof(err)))
                FAIL("config: %s", err);
            cfg.groups = groups;
            cfg.connect_timeout_ms = 10000;
            cfg.idle_timeout_ms = 8000;
            cfg.reconnect_timeout_ms = 3000;
            cfg.quiet = true;
            if (r < servers && !fn_servers) {
                if (shoal_ps_serve(&cfg, err, sizeof(err)))
                    FAIL("serve: %s", err);
                _exit(0);
            }
            fn(r, &cfg, arg);
            _exit(0);
        }
    }
    double deadline = time(NULL) + secs;
    for (int r = 0; r < size; r++)
        status[r] = -1;
    int left = size;
    while (left > 0 && time(NULL) < deadline) {
        for (int r = 0; r < size; r++) {
            int st;
            if (status[r] == -1 && waitpid(pid[r], &st, WNOHANG) == pid[r]) {
                status[r] = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                left--;
            }
        }
        usleep(20000);
    }
    for (int r = 0; r < size; r++)
        if (status[r] == -1) {
            kill(pid[r], SIGKILL);
            waitpid(pid[r], NULL, 0);
            status[r] = 124;
            fprintf(stderr, "rank %d killed after %d s\n", r, secs);
        }
}

/* A handle on one tensor @t, joined, or the child fails. */
static shoal_ps_t *create_join(shoal_ps_config_t *cfg, const shoal_ps_tensor_t *t, float *p,
                               float *g)
{
    shoal_ps_t *ps;
    char err[512];
    if (shoal_ps_create(cfg, t, 1, p, g, &ps, err, sizeof(err)))
        FAIL("create: %s", err);
    if (shoal_ps_join(ps))
        FAIL("join: %s", shoal_ps_errmsg(ps));
    return ps;
}

/* ---- wrong use, no network ------------------------------------------------ */

static void test_wrong_use(void)
{
    shoal_ps_config_t cfg;
    char err[512];
    float p[8], g[8];
    shoal_ps_t *ps = NULL;
    shoal_ps_tensor_t t[] = {{"w", 8}};
    shoal_ps_config_init(&cfg);
    /* no rank */
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "rank"));
    cfg.rank = 1;
    cfg.size = 3;
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "meeting place"));
    snprintf(cfg.coordinator, sizeof(cfg.coordinator), "127.0.0.1:1");
    /* no tensors, an empty one, NULL buffers */
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 0, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "no tensors"));
    shoal_ps_tensor_t empty[] = {{"w", 8}, {"b", 0}};
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, empty, 2, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "tensor 1 (b)"));
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, NULL, g, &ps, err, sizeof(err)), -EINVAL);
    /* average needs bsp */
    cfg.job.optimizer = SHOAL_PS_AVERAGE;
    cfg.job.mode = SHOAL_PS_ASYNC;
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "needs bsp"));
    cfg.job.mode = SHOAL_PS_BSP;
    cfg.job.momentum = 1.5f;
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "momentum"));
    cfg.job.momentum = 0;
    /* a server's rank */
    cfg.rank = 0;
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "shoal_ps_serve"));
    /* a group that does not exist */
    cfg.rank = 1;
    cfg.group = 2;
    CU_ASSERT_EQUAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "group 2"));
    cfg.group = 0;
    /* calls in the wrong order: push before join */
    CU_ASSERT_EQUAL_FATAL(shoal_ps_create(&cfg, t, 1, p, g, &ps, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(shoal_ps_push_pull(ps), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(shoal_ps_errmsg(ps), "before shoal_ps_join"));
    CU_ASSERT_EQUAL(shoal_ps_push_test(ps), -EINVAL);
    CU_ASSERT_EQUAL(shoal_ps_finish(ps), -EINVAL);
    bool member;
    int sh, shs;
    CU_ASSERT_EQUAL(shoal_ps_data_shard(ps, 0, &member, &sh, &shs), -EINVAL);
    shoal_ps_destroy(ps);
    /* not a server's rank */
    CU_ASSERT_EQUAL(shoal_ps_serve(&cfg, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not a server"));
    shoal_ps_destroy(NULL);
}

/* ---- jobs ------------------------------------------------------------------ */

struct avg_arg {
    shoal_ps_optimizer_t opt;
    bool other_names;      /* worker 1 declares other tensor names */
    bool nonblocking;
    int iters;
};

/* Worker w pushes gradient (w + 1) everywhere; checks what comes back. */
static void avg_worker(int rank, shoal_ps_config_t *cfg, void *argp)
{
    struct avg_arg *a = argp;
    enum { P = 1000 };
    static float p[P], g[P];
    int w = rank - cfg->servers;
    for (int i = 0; i < P; i++)
        p[i] = w == 0 ? 1.0f : 5.0f; /* the servers take worker 0's */
    cfg->job.optimizer = a->opt;
    cfg->job.lr = 0.1f;
    cfg->job.iters_per_epoch = (uint32_t)a->iters;
    cfg->job.epochs = 1;
    cfg->job.beta1 = 0.9f;
    cfg->job.beta2 = 0.999f;
    cfg->job.eps = 1e-8f;
    shoal_ps_tensor_t t[] = {{"weight", 600}, {"bias", 400}};
    if (a->other_names && w == 1)
        t[1].name = "bias2";
    shoal_ps_t *ps;
    char err[512];
    if (shoal_ps_create(cfg, t, 2, p, g, &ps, err, sizeof(err)))
        FAIL("create: %s", err);
    int rc = shoal_ps_join(ps);
    if (a->other_names && rc && strstr(shoal_ps_errmsg(ps), "differ")) {
        /* whichever worker the servers heard second is refused, naming why */
        fprintf(stderr, "refused as expected: %s\n", shoal_ps_errmsg(ps));
        shoal_ps_destroy(ps);
        _exit(42);
    }
    if (rc)
        FAIL("join: %s", shoal_ps_errmsg(ps));
    float start = p[0];
    for (int i = 1; i < P; i++)
        if (p[i] != start)
            FAIL("initial parameters differ within the vector at %d", i);
    if (start != 1.0f && !a->other_names)
        FAIL("initial parameters %g are not worker 0's", (double)start);
    double prev = start;
    for (int k = 0; k < a->iters; k++) {
        if ((int)shoal_ps_iteration(ps) != k)
            FAIL("iteration %u, expected %d", shoal_ps_iteration(ps), k);
        for (int i = 0; i < P; i++)
            g[i] = (float)(w + 1);
        if (a->nonblocking) {
            if ((rc = shoal_ps_push_start(ps)))
                FAIL("push_start: %s", shoal_ps_errmsg(ps));
            if (shoal_ps_push_start(ps) != -EBUSY)
                FAIL("a second push_start was not refused");
            int done;
            while ((done = shoal_ps_push_test(ps)) == 0)
                ;
            if (done != 1)
                FAIL("push_test: %s", shoal_ps_errmsg(ps));
        } else if ((rc = shoal_ps_push_pull(ps))) {
            FAIL("push_pull: %s", shoal_ps_errmsg(ps));
        }
        double want;
        if (a->opt == SHOAL_PS_AVERAGE)
            want = 1.5; /* the mean of 1 and 2 */
        else if (a->opt == SHOAL_PS_SGD)
            want = prev - 0.1 * 1.5;
        else
            want = prev - 0.1; /* Adam's step on a constant gradient is lr */
        for (int i = 0; i < P; i += 97)
            if (fabs(p[i] - want) > 1e-4)
                FAIL("iteration %d: parameter %d is %g, expected %g", k, i, (double)p[i], want);
        prev = want;
    }
    if (shoal_ps_finish(ps))
        FAIL("finish: %s", shoal_ps_errmsg(ps));
    shoal_ps_destroy(ps);
}

static void test_optimizers(void)
{
    int st[4];
    shoal_ps_optimizer_t opts[] = {SHOAL_PS_AVERAGE, SHOAL_PS_SGD, SHOAL_PS_ADAM};
    for (int i = 0; i < 3; i++) {
        struct avg_arg a = {.opt = opts[i], .iters = 20, .nonblocking = i == 2};
        run_job(3, 1, 1, avg_worker, &a, 60, false, st);
        CU_ASSERT_EQUAL(st[0], 0);
        CU_ASSERT_EQUAL(st[1], 0);
        CU_ASSERT_EQUAL(st[2], 0);
        /* the same over two servers (each a shard of both tensors) */
        run_job(4, 2, 1, avg_worker, &a, 60, false, st);
        for (int r = 0; r < 4; r++)
            CU_ASSERT_EQUAL(st[r], 0);
    }
}

static void test_tensors_differ(void)
{
    int st[3];
    struct avg_arg a = {.opt = SHOAL_PS_SGD, .iters = 5, .other_names = true};
    run_job(3, 1, 1, avg_worker, &a, 30, false, st);
    /* exactly one worker is refused, with the difference named; the other
     * waits for a partner that never comes and fails by its timeouts: no
     * process hangs */
    CU_ASSERT((st[1] == 42) + (st[2] == 42) == 1);
    CU_ASSERT(st[1] != 0 && st[2] != 0);
    CU_ASSERT(st[0] != 124 && st[1] != 124 && st[2] != 124);
}

/* Two groups on one server: group 0 has 2 workers, group 1 has 1, with
 * vectors of different lengths and optimizers. */
static void group_worker(int rank, shoal_ps_config_t *cfg, void *arg)
{
    (void)arg;
    int w = rank - cfg->servers;
    cfg->group = w < 2 ? 0 : 1;
    cfg->group_rank = w < 2 ? w : 0;
    cfg->group_size = w < 2 ? 2 : 1;
    size_t P = cfg->group == 0 ? 300 : 77;
    static float p[300], g[300];
    cfg->job.iters_per_epoch = 10;
    cfg->job.epochs = 2;
    cfg->job.optimizer = cfg->group == 0 ? SHOAL_PS_AVERAGE : SHOAL_PS_SGD;
    cfg->job.lr = 0.5f;
    shoal_ps_tensor_t t[] = {{"x", P}};
    shoal_ps_t *ps = create_join(cfg, t, p, g);
    for (uint32_t k = 0; k < 20; k++) {
        bool member;
        int shard, shards;
        if (k % 10 == 0 && shoal_ps_data_shard(ps, k / 10, &member, &shard, &shards))
            FAIL("data shard: %s", shoal_ps_errmsg(ps));
        if (k % 10 == 0 && (!member || shards != cfg->group_size || shard != cfg->group_rank))
            FAIL("group %d worker %d: shard %d of %d", cfg->group, cfg->group_rank, shard,
                 shards);
        for (size_t i = 0; i < P; i++)
            g[i] = (float)(cfg->group_rank + 1);
        if (shoal_ps_push_pull(ps))
            FAIL("push_pull: %s", shoal_ps_errmsg(ps));
        float want = cfg->group == 0 ? 1.5f : -0.5f * (float)(k + 1);
        if (fabsf(p[P - 1] - want) > 1e-4f)
            FAIL("group %d: %g, expected %g", cfg->group, (double)p[P - 1], (double)want);
    }
    if (shoal_ps_finish(ps))
        FAIL("finish: %s", shoal_ps_errmsg(ps));
    shoal_ps_destroy(ps);
}

static void test_groups(void)
{
    int st[5];
    run_job(5, 2, 2, group_worker, NULL, 60, false, st);
    for (int r = 0; r < 5; r++)
        CU_ASSERT_EQUAL(st[r], 0);
}

/* ---- shoal_ps_refresh: a restarted server noticed at once ------------------ */

static bool file_wait(const char *path, int ms)
{
    for (int t = 0; t < ms; t += 10) {
        if (access(path, F_OK) == 0)
            return true;
        usleep(10000);
    }
    return false;
}

static void touch(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        FAIL("cannot create %s", path);
    fclose(f);
}

/* Rank 0 runs the server in a child, kills it (-9) when the worker says
 * so, and starts it again with resume; rank 1 is the worker. */
static void refresh_role(int rank, shoal_ps_config_t *cfg, void *arg)
{
    const char *dir = arg;
    char kill_file[320], up_file[320];
    snprintf(kill_file, sizeof(kill_file), "%s/kill", dir);
    snprintf(up_file, sizeof(up_file), "%s/restarted", dir);
    cfg->fail_timeout_ms = 10000; /* the keeper would notice late */
    cfg->job.optimizer = SHOAL_PS_SGD;
    cfg->job.lr = 0.1f;
    cfg->job.iters_per_epoch = 8;
    cfg->job.epochs = 1;
    if (rank == 0) {
        char err[512];
        snprintf(cfg->checkpoint_dir, sizeof(cfg->checkpoint_dir), "%s/ck", dir);
        if (mkdir(cfg->checkpoint_dir, 0700))
            FAIL("mkdir %s: %s", cfg->checkpoint_dir, strerror(errno));
        cfg->checkpoint_every = 3;
        for (int life = 0; life < 2; life++) {
            cfg->resume = life == 1;
            pid_t child = fork();
            if (child == 0) {
                if (shoal_ps_serve(cfg, err, sizeof(err)))
                    FAIL("serve (life %d): %s", life, err);
                _exit(0);
            }
            if (life == 1) {
                touch(up_file);
                int st;
                waitpid(child, &st, 0);
                _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 3);
            }
            if (!file_wait(kill_file, 20000))
                FAIL("the worker never asked for the kill");
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
        }
    }
    enum { P = 64 };
    static float p[P], g[P];
    shoal_ps_tensor_t t[] = {{"w", P}};
    shoal_ps_t *ps = create_join(cfg, t, p, g);
    if (shoal_ps_refresh(ps) || shoal_ps_iteration(ps) != 0)
        FAIL("refresh with the server up: %s, iteration %u", shoal_ps_errmsg(ps),
             shoal_ps_iteration(ps));
    for (int k = 0; k < 5; k++) {
        for (int i = 0; i < P; i++)
            g[i] = 1.0f;
        if (shoal_ps_push_start(ps))
            FAIL("push_start: %s", shoal_ps_errmsg(ps));
        if (k == 4 && shoal_ps_refresh(ps) != -EBUSY)
            FAIL("refresh during a push-pull was not refused");
        if (shoal_ps_push_wait(ps, -1))
            FAIL("push_wait: %s", shoal_ps_errmsg(ps));
    }
    usleep(300000); /* the checkpoint of update 3 is written */
    touch(kill_file);
    if (!file_wait(up_file, 20000))
        FAIL("the server was not restarted");
    uint32_t before = shoal_ps_iteration(ps);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (shoal_ps_refresh(ps))
        FAIL("refresh after the restart: %s", shoal_ps_errmsg(ps));
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "refresh after the restart: iteration %u -> %u in %.0f ms\n", before,
            shoal_ps_iteration(ps),
            (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
    if (shoal_ps_iteration(ps) != 3)
        FAIL("after the restart from the checkpoint of update 3 the iteration is %u",
             shoal_ps_iteration(ps));
    while (shoal_ps_iteration(ps) < 8)
        if (shoal_ps_push_pull(ps))
            FAIL("push_pull: %s", shoal_ps_errmsg(ps));
    /* 8 updates of lr x 1, none lost or doubled (the restart redid 3..4) */
    if (fabsf(p[0] + 0.8f) > 1e-5f)
        FAIL("parameter %g after 8 updates", (double)p[0]);
    if (shoal_ps_finish(ps))
        FAIL("finish: %s", shoal_ps_errmsg(ps));
    shoal_ps_destroy(ps);
}

static void test_refresh(void)
{
    char dir[320];
    snprintf(dir, sizeof(dir), "%s/refresh", rdv_dir);
    CU_ASSERT_EQUAL_FATAL(mkdir(dir, 0700), 0);
    int st[2];
    run_job(2, 1, 1, refresh_role, dir, 60, true, st);
    CU_ASSERT_EQUAL(st[0], 0);
    CU_ASSERT_EQUAL(st[1], 0);
}

int main(void)
{
    char tmpl[] = "/tmp/shoal-ps-api.XXXXXX";
    if (!mkdtemp(tmpl))
        return 1;
    snprintf(rdv_dir, sizeof(rdv_dir), "%s", tmpl);
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("ps api", NULL, NULL);
    CU_add_test(s, "wrong use refused with a message naming it", test_wrong_use);
    CU_add_test(s, "average, SGD and Adam end to end, 1 and 2 servers, start/test",
                test_optimizers);
    CU_add_test(s, "a worker whose tensors differ is refused, naming the difference",
                test_tensors_differ);
    CU_add_test(s, "two parameter groups on the same servers", test_groups);
    CU_add_test(s, "shoal_ps_refresh notices a restarted server and goes back with it",
                test_refresh);
    int rc = cu_run_all();
    char cmd[320];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", rdv_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", rdv_dir);
    return rc;
}
