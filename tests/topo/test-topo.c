/*
 * test-topo.c -- placement (lib/core/topo.c): SHOAL_BIND parsing, device
 * locality and the auto plan on a synthetic two-socket hwloc XML topology
 * (tests/topo/two-socket.xml: mlx5_0 and ens1f0 on package 1), local ranks
 * from launchers, and on this machine: the CPU a bound thread really has
 * (sched_getaffinity, hwloc_get_last_cpu_location), disjoint cores for
 * several local processes, NUMA-local allocation, impossible lists.
 * White-box: links the internal library to reach shoal__*.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../cu.h"
#include "core/topo.h"

#ifndef TOPO_XML_DIR
#error "TOPO_XML_DIR must name tests/topo in the source tree"
#endif
#define TWO_SOCKET TOPO_XML_DIR "/two-socket.xml"

/* A clean environment for one test: no launcher or SHOAL_* variables. */
static void clean_env(void)
{
    static const char *const vars[] = {
        "SHOAL_BIND", "SHOAL_LOCAL_RANK", "SHOAL_LOCAL_SIZE", "SHOAL_DEVICE",
        "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALRANKID",
        "MPI_LOCALNRANKS", "SLURM_LOCALID", "SLURM_STEP_TASKS_PER_NODE",
        "SLURM_TASKS_PER_NODE", "SLURM_NODEID", "UCX_NET_DEVICES"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

static hwloc_topology_t load_xml(void)
{
    hwloc_topology_t t = NULL;
    char err[256] = "";
    int rc = shoal__topo_load(TWO_SOCKET, true, &t, err, sizeof(err));
    if (rc)
        printf("\n  loading %s: %s\n", TWO_SOCKET, err);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    return t;
}

/* Make a plan on the synthetic machine; the plan owns the topology. */
static int xml_plan(const char *bind, int rank, int size, const char *dev,
                    struct shoal_plan *p, char *err, size_t errlen)
{
    shoal_config_t c;
    shoal_config_init(&c);
    snprintf(c.bind, sizeof(c.bind), "%s", bind);
    c.local_rank = rank;
    c.local_size = size;
    return shoal__plan_make(load_xml(), true, &c, dev, p, err, errlen);
}

/* ---- SHOAL_BIND syntax -------------------------------------------------- */

static void test_cpulist(void)
{
    char err[256];
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    CU_ASSERT_EQUAL(shoal__cpulist_parse("0-3,8,10-11", s, err, sizeof(err)), 0);
    char txt[64];
    hwloc_bitmap_list_snprintf(txt, sizeof(txt), s);
    CU_ASSERT_STRING_EQUAL(txt, "0-3,8,10-11");
    static const char *const bad[] = {"", "a", "1-", "3-1", "1,,2", "1,", "-1", "0x1",
                                      "70000", " 1", "1 ", "1;2", "2-x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        int rc = shoal__cpulist_parse(bad[i], NULL, err, sizeof(err));
        CU_ASSERT_EQUAL(rc, -EINVAL);
        char want[64];
        snprintf(want, sizeof(want), "SHOAL_BIND='%s'", bad[i]);
        CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
        if (rc != -EINVAL)
            printf("\n  '%s' was accepted\n", bad[i]);
    }
    hwloc_bitmap_free(s);
}

static void test_config_bind(void)
{
    shoal_config_t c;
    char err[256];
    clean_env();
    shoal_config_init(&c);
    CU_ASSERT_STRING_EQUAL(c.bind, "auto");
    CU_ASSERT_EQUAL(c.local_rank, -1);
    CU_ASSERT_EQUAL(c.local_size, -1);
    CU_ASSERT_EQUAL(shoal_config_set(&c, "BIND", "NONE", err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(c.bind, "none");
    CU_ASSERT_EQUAL(shoal_config_set(&c, "bind", "2-3,7", err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(c.bind, "2-3,7");
    shoal_config_t before = c;
    CU_ASSERT_EQUAL(shoal_config_set(&c, "BIND", "sometimes", err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_BIND='sometimes'"));
    CU_ASSERT_EQUAL(memcmp(&before, &c, sizeof(c)), 0);
    setenv("SHOAL_BIND", "1", 1);
    setenv("SHOAL_LOCAL_RANK", "1", 1);
    setenv("SHOAL_LOCAL_SIZE", "3", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(c.bind, "1");
    CU_ASSERT_EQUAL(c.local_rank, 1);
    CU_ASSERT_EQUAL(c.local_size, 3);
    setenv("SHOAL_LOCAL_SIZE", "0", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_LOCAL_SIZE"));
    setenv("SHOAL_LOCAL_SIZE", "", 1);
    CU_ASSERT_EQUAL(shoal_config_from_env(&c, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(c.local_size, -1);
    clean_env();

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    shoal_config_print(&c, f);
    fclose(f);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "SHOAL_BIND"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "SHOAL_LOCAL_RANK"));
    free(text);
}

/* ---- locality and plans on the synthetic two-socket machine ---------------- */

static void check_locate(hwloc_topology_t t, const char *dev, int known, const char *cpus,
                         const char *nodes, const char *in_where)
{
    hwloc_bitmap_t c = hwloc_bitmap_alloc(), n = hwloc_bitmap_alloc();
    char where[160], txt[64];
    CU_ASSERT_EQUAL(shoal__topo_locate(t, dev, c, n, where, sizeof(where)), known);
    hwloc_bitmap_list_snprintf(txt, sizeof(txt), c);
    CU_ASSERT_STRING_EQUAL(txt, cpus);
    hwloc_bitmap_list_snprintf(txt, sizeof(txt), n);
    CU_ASSERT_STRING_EQUAL(txt, nodes);
    CU_ASSERT_PTR_NOT_NULL(strstr(where, in_where));
    if (!strstr(where, in_where))
        printf("\n  %s: where = '%s'\n", dev, where);
    hwloc_bitmap_free(c);
    hwloc_bitmap_free(n);
}

static void test_locate_xml(void)
{
    hwloc_topology_t t = load_xml();
    CU_ASSERT_FALSE(hwloc_topology_is_thissystem(t));
    check_locate(t, "mlx5_0", 1, "4-7,12-15", "1", "PCI 0000:81:00.0 on Package 1");
    check_locate(t, "mlx5_0:1", 1, "4-7,12-15", "1", "NUMA node 1,");
    check_locate(t, "ens1f0", 1, "4-7,12-15", "1", "Package 1");
    check_locate(t, "eno1", 1, "0-3,8-11", "0", "Package 0");
    check_locate(t, "mlx5_1", 1, "0-15", "0-1", "the machine (NUMA nodes 0-1");
    check_locate(t, "nosuch0", 0, "0-15", "", "'nosuch0'");
    check_locate(t, "", 0, "0-15", "", "no device");
    hwloc_topology_destroy(t);
}

static void test_auto_xml(void)
{
    struct shoal_plan p;
    char err[256] = "";
    clean_env();
    /* Device on socket 1: one CPU per physical core of package 1. */
    CU_ASSERT_EQUAL_FATAL(xml_plan("auto", -1, -1, "mlx5_0", &p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(p.pub.policy, SHOAL_BIND_AUTO);
    CU_ASSERT_EQUAL(p.pub.ncpus, 4);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "4-7");
    CU_ASSERT_EQUAL(p.pub.numa_node, 1);
    CU_ASSERT_EQUAL(p.pub.local_rank, 0);
    CU_ASSERT_EQUAL(p.pub.local_size, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.pub.why, "4 cores near mlx5_0"));
    /* Binding needs the real machine, and says so. */
    CU_ASSERT_EQUAL(shoal__plan_bind(&p, 0, err, sizeof(err)), -EOPNOTSUPP);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "not this machine"));
    shoal__plan_fini(&p);

    /* The TCP netdev on socket 1 and the one on socket 0. */
    CU_ASSERT_EQUAL(xml_plan("auto", -1, -1, "ens1f0", &p, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "4-7");
    shoal__plan_fini(&p);
    CU_ASSERT_EQUAL(xml_plan("auto", -1, -1, "eno1", &p, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "0-3");
    CU_ASSERT_EQUAL(p.pub.numa_node, 0);
    shoal__plan_fini(&p);

    /* Unknown locality: the whole machine, one CPU per core, no NUMA node. */
    CU_ASSERT_EQUAL(xml_plan("auto", -1, -1, "", &p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(p.pub.ncpus, 8);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "0-7");
    CU_ASSERT_EQUAL(p.pub.numa_node, -1);
    CU_ASSERT_PTR_NULL(p.nodes);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.pub.why, "no device"));
    shoal__plan_fini(&p);

    /* none: no plan, nothing bound, binding is a no-op. */
    CU_ASSERT_EQUAL(xml_plan("none", -1, -1, "mlx5_0", &p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(p.pub.policy, SHOAL_BIND_NONE);
    CU_ASSERT_EQUAL(p.pub.ncpus, 0);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "");
    CU_ASSERT_EQUAL(shoal__plan_bind(&p, 0, err, sizeof(err)), 0);
    shoal__plan_fini(&p);
}

/* Local ranks 0..size-1 on the synthetic machine with mlx5_0: disjoint
 * shares, none empty, covering @want (OS CPU indexes as a list). */
static void check_split(int size, const char *want, bool oversub)
{
    hwloc_bitmap_t all = hwloc_bitmap_alloc(), mine = hwloc_bitmap_alloc();
    char err[256] = "", txt[64];
    int overlaps = 0;
    for (int r = 0; r < size; r++) {
        struct shoal_plan p;
        int rc = xml_plan("auto", r, size, "mlx5_0", &p, err, sizeof(err));
        CU_ASSERT_EQUAL_FATAL(rc, 0);
        CU_ASSERT(p.pub.ncpus >= 1);
        CU_ASSERT_EQUAL(p.pub.local_rank, r);
        CU_ASSERT_EQUAL(p.pub.local_size, size);
        hwloc_bitmap_zero(mine);
        for (int i = 0; i < p.pub.ncpus; i++)
            hwloc_bitmap_set(mine, (unsigned)p.cpu[i]);
        overlaps += hwloc_bitmap_intersects(mine, all);
        hwloc_bitmap_or(all, all, mine);
        CU_ASSERT_EQUAL(strstr(p.pub.why, "OVERSUBSCRIBED") != NULL, oversub);
        shoal__plan_fini(&p);
    }
    hwloc_bitmap_list_snprintf(txt, sizeof(txt), all);
    CU_ASSERT_STRING_EQUAL(txt, want);
    CU_ASSERT_EQUAL(overlaps, oversub ? size - 8 : 0);
    hwloc_bitmap_free(all);
    hwloc_bitmap_free(mine);
}

static void test_local_ranks_xml(void)
{
    clean_env();
    check_split(2, "4-7", false);   /* 2 near cores each */
    check_split(3, "4-7", false);   /* 1, 1, 2 */
    check_split(4, "4-7", false);
    check_split(6, "0-7", false);   /* too few near cores: all cores split */
    check_split(8, "0-7", false);
    check_split(10, "0-7", true);   /* more processes than cores */

    /* The shares of 2 ranks are contiguous halves of the near cores. */
    struct shoal_plan p;
    char err[256] = "";
    CU_ASSERT_EQUAL(xml_plan("auto", 1, 2, "mlx5_0", &p, err, sizeof(err)), 0);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "6,7");
    CU_ASSERT_PTR_NOT_NULL(strstr(p.pub.why, "split 2 ways: this process takes 2"));
    shoal__plan_fini(&p);

    /* rank >= size, and half of a pair. */
    CU_ASSERT_EQUAL(xml_plan("auto", 2, 2, "mlx5_0", &p, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "local rank 2"));
    CU_ASSERT_EQUAL(xml_plan("auto", 0, -1, "mlx5_0", &p, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "together"));
}

static void test_list_xml(void)
{
    struct shoal_plan p;
    char err[256] = "";
    CU_ASSERT_EQUAL(xml_plan("12,4", -1, -1, "mlx5_0", &p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(p.pub.policy, SHOAL_BIND_LIST);
    CU_ASSERT_EQUAL(p.pub.ncpus, 2);
    CU_ASSERT_STRING_EQUAL(p.pub.cpus, "4,12");
    CU_ASSERT_EQUAL(p.pub.numa_node, 1); /* memory still follows the device */
    shoal__plan_fini(&p);
    CU_ASSERT_EQUAL(xml_plan("0-15", -1, -1, "", &p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(p.pub.ncpus, 16);
    shoal__plan_fini(&p);

    /* Impossible lists: a clear error naming the variable and the CPU. */
    CU_ASSERT_EQUAL(xml_plan("2,99", -1, -1, "mlx5_0", &p, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_BIND='2,99'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "CPU 99 does not exist here (CPUs 0-15)"));
    CU_ASSERT_EQUAL(xml_plan("1-", -1, -1, "mlx5_0", &p, err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "SHOAL_BIND='1-'"));
}

/* ---- local rank from launchers ------------------------------------------------ */

static void test_local_rank_env(void)
{
    shoal_config_t c;
    int r = -5, s = -5;
    char src[128], err[256];
    clean_env();
    shoal_config_init(&c);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 0 && s == 1);

    setenv("SLURM_LOCALID", "1", 1);
    setenv("SLURM_STEP_TASKS_PER_NODE", "4(x2),2", 1);
    setenv("SLURM_NODEID", "2", 1);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 1 && s == 2);
    CU_ASSERT_STRING_EQUAL(src, "Slurm");
    setenv("SLURM_NODEID", "1", 1);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 1 && s == 4);
    setenv("SLURM_STEP_TASKS_PER_NODE", "garbage", 1);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 0 && s == 1); /* rank without a size: not split */
    CU_ASSERT_PTR_NOT_NULL(strstr(src, "no local size"));

    /* Open MPI wins over Slurm (mpirun inside an allocation). */
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "3", 1);
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "4", 1);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 3 && s == 4);
    CU_ASSERT_STRING_EQUAL(src, "Open MPI");
    setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "3", 1);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "OMPI_COMM_WORLD_LOCAL_RANK"));
    setenv("OMPI_COMM_WORLD_LOCAL_RANK", "x", 1);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), -EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "OMPI_COMM_WORLD_LOCAL_RANK='x'"));

    /* SHOAL_LOCAL_RANK/SIZE (shoal's own launcher) win over everything. */
    c.local_rank = 0;
    c.local_size = 2;
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 0 && s == 2);

    clean_env();
    setenv("MPI_LOCALRANKID", "1", 1);
    setenv("MPI_LOCALNRANKS", "2", 1);
    shoal_config_init(&c);
    CU_ASSERT_EQUAL(shoal__local_rank(&c, &r, &s, src, sizeof(src), err, sizeof(err)), 0);
    CU_ASSERT(r == 1 && s == 2);
    clean_env();
}

/* ---- this machine ---------------------------------------------------------------- */

/* Make a UCX context with SHOAL_BIND=@bind (and more env set by the caller). */
static int make_ctx(const char *bind, shoal_ctx_t **ctx)
{
    setenv("SHOAL_TRANSPORT", "ucx", 1);
    setenv("SHOAL_BIND", bind, 1);
    int rc = shoal_ctx_create(NULL, ctx);
    unsetenv("SHOAL_BIND");
    unsetenv("SHOAL_TRANSPORT");
    return rc;
}

static int affinity_list(char *out, size_t len)
{
    cpu_set_t s;
    CPU_ZERO(&s);
    if (sched_getaffinity(0, sizeof(s), &s))
        return -errno;
    size_t o = 0;
    out[0] = '\0';
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &s))
            o += (size_t)snprintf(out + o, len - o, "%s%d", o ? "," : "", c);
    return CPU_COUNT(&s);
}

/* Where the calling thread last ran, after keeping it busy for a while
 * (so the scheduler has had to place it). */
static int last_cpu(hwloc_topology_t t)
{
    volatile unsigned long x = 0;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do {
        for (int i = 0; i < 100000; i++)
            x += (unsigned long)i;
        clock_gettime(CLOCK_MONOTONIC, &b);
    } while ((b.tv_sec - a.tv_sec) * 1000000000L + (b.tv_nsec - a.tv_nsec) < 20000000L);
    hwloc_bitmap_t s = hwloc_bitmap_alloc();
    int cpu = -1;
    if (hwloc_get_last_cpu_location(t, s, HWLOC_CPUBIND_THREAD) == 0)
        cpu = hwloc_bitmap_first(s);
    hwloc_bitmap_free(s);
    return cpu;
}

struct worker {
    shoal_ctx_t *ctx;
    hwloc_topology_t topo;
    int i, n;
    int rc, naff, last;
    char aff[64];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->rc = shoal_bind_thread(w->ctx, w->i, w->n);
    w->naff = affinity_list(w->aff, sizeof(w->aff));
    w->last = last_cpu(w->topo);
    return NULL;
}

/* Run @n threads binding themselves as compute threads 0..n-1. */
static void run_workers(shoal_ctx_t *ctx, hwloc_topology_t t, struct worker *w, int n)
{
    pthread_t th[16];
    for (int i = 0; i < n; i++) {
        w[i] = (struct worker){.ctx = ctx, .topo = t, .i = i, .n = n};
        CU_ASSERT_EQUAL_FATAL(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
}

static hwloc_topology_t here;

static int init_here(void)
{
    char err[256];
    clean_env();
    if (shoal__topo_load(NULL, false, &here, err, sizeof(err))) {
        printf("%s\n", err);
        return 1;
    }
    return 0;
}

static int fini_here(void)
{
    hwloc_topology_destroy(here);
    return 0;
}

static void test_bind_list_here(void)
{
    /* The last CPU this process may use, alone. */
    int cpu = hwloc_bitmap_last(hwloc_topology_get_allowed_cpuset(here));
    char list[16], want[16];
    snprintf(list, sizeof(list), "%d", cpu);
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL_FATAL(make_ctx(list, &ctx), 0);
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    CU_ASSERT_EQUAL(pl->policy, SHOAL_BIND_LIST);
    CU_ASSERT_EQUAL(pl->ncpus, 1);
    CU_ASSERT_STRING_EQUAL(pl->cpus, list);
    struct worker w[1];
    run_workers(ctx, here, w, 1);
    CU_ASSERT_EQUAL(w[0].rc, 0);
    CU_ASSERT_EQUAL(w[0].naff, 1);
    snprintf(want, sizeof(want), "%d", cpu);
    CU_ASSERT_STRING_EQUAL(w[0].aff, want);
    CU_ASSERT_EQUAL(w[0].last, cpu);
    CU_ASSERT_EQUAL(shoal_bind_thread(ctx, 1, 1), -EINVAL);
    CU_ASSERT_EQUAL(shoal_bind_thread(ctx, -1, 1), -EINVAL);
    shoal_ctx_destroy(ctx);
}

static void test_bind_auto_here(void)
{
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL_FATAL(make_ctx("auto", &ctx), 0);
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    int cores = 0;
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_obj_by_type(here, HWLOC_OBJ_CORE, o)) != NULL)
        cores += hwloc_bitmap_intersects(o->cpuset, hwloc_topology_get_allowed_cpuset(here));
    CU_ASSERT_EQUAL(pl->policy, SHOAL_BIND_AUTO);
    CU_ASSERT_EQUAL(pl->ncpus, cores); /* alone on a machine with no known device */
    CU_ASSERT_EQUAL(pl->local_size, 1);
    int n = pl->ncpus < 16 ? pl->ncpus : 16;
    struct worker w[16];
    run_workers(ctx, here, w, n);
    hwloc_bitmap_t seen_cores = hwloc_bitmap_alloc(), plan = hwloc_bitmap_alloc();
    CU_ASSERT_EQUAL(hwloc_bitmap_list_sscanf(plan, pl->cpus), 0);
    for (int i = 0, slot = hwloc_bitmap_first(plan); i < n;
         i++, slot = hwloc_bitmap_next(plan, slot)) {
        CU_ASSERT_EQUAL(w[i].rc, 0);
        CU_ASSERT_EQUAL(w[i].naff, 1);
        CU_ASSERT_EQUAL(atoi(w[i].aff), slot); /* thread i on the plan's CPU i */
        CU_ASSERT_EQUAL(w[i].last, slot);
        /* one thread per physical core */
        hwloc_obj_t pu = hwloc_get_pu_obj_by_os_index(here, (unsigned)atoi(w[i].aff));
        CU_ASSERT_PTR_NOT_NULL_FATAL(pu);
        hwloc_obj_t core = hwloc_get_ancestor_obj_by_type(here, HWLOC_OBJ_CORE, pu);
        CU_ASSERT_FALSE(core && hwloc_bitmap_isset(seen_cores, core->logical_index));
        if (core)
            hwloc_bitmap_set(seen_cores, core->logical_index);
    }
    hwloc_bitmap_free(seen_cores);
    hwloc_bitmap_free(plan);
    shoal_ctx_destroy(ctx);
}

/* The UCX provider names its netdev (UCX_NET_DEVICES); placement follows
 * it.  "lo" has no PCI locality: the whole machine, said so. */
static void test_ucx_netdev_here(void)
{
    shoal_ctx_t *ctx = NULL;
    setenv("UCX_NET_DEVICES", "lo", 1);
    int rc = make_ctx("auto", &ctx);
    unsetenv("UCX_NET_DEVICES");
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    CU_ASSERT_STRING_EQUAL(pl->device, "lo");
    CU_ASSERT_PTR_NOT_NULL(strstr(pl->locality, "'lo' has no PCI locality"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pl->why, "locality of lo unknown"));
    shoal_ctx_destroy(ctx);
}

static void test_bind_none_here(void)
{
    char before[64], after[64];
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL_FATAL(make_ctx("none", &ctx), 0);
    CU_ASSERT_EQUAL(shoal_ctx_placement(ctx)->policy, SHOAL_BIND_NONE);
    CU_ASSERT_EQUAL(shoal_ctx_placement(ctx)->ncpus, 0);
    int nb = affinity_list(before, sizeof(before));
    CU_ASSERT_EQUAL(shoal_bind_thread(ctx, 0, 4), 0);
    int na = affinity_list(after, sizeof(after));
    CU_ASSERT_EQUAL(nb, na);
    CU_ASSERT_STRING_EQUAL(before, after);
    void *buf = NULL;
    CU_ASSERT_EQUAL_FATAL(shoal_alloc(ctx, 1 << 20, &buf), 0);
    memset(buf, 0x5a, 1 << 20);
    shoal_free(ctx, buf, 1 << 20);
    shoal_ctx_destroy(ctx);
}

static void test_bind_impossible_here(void)
{
    /* A CPU past the last one this machine has. */
    char list[32];
    int past = hwloc_bitmap_last(hwloc_topology_get_complete_cpuset(here)) + 1;
    snprintf(list, sizeof(list), "0,%d", past);
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL(make_ctx(list, &ctx), -EINVAL);
    CU_ASSERT_PTR_NULL(ctx);
    /* The message (shoal_ctx_create logs it; the plan makes it). */
    shoal_config_t c;
    shoal_config_init(&c);
    snprintf(c.bind, sizeof(c.bind), "%s", list);
    struct shoal_plan p;
    char err[256] = "", want[64];
    CU_ASSERT_EQUAL(shoal__plan_make(here, false, &c, "", &p, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "CPU %d does not exist here", past);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, want));
    /* A malformed one fails at the variable already. */
    CU_ASSERT_EQUAL(make_ctx("0-", &ctx), -EINVAL);
}

static void test_alloc_numa_here(void)
{
    shoal_ctx_t *ctx = NULL;
    CU_ASSERT_EQUAL_FATAL(make_ctx("auto", &ctx), 0);
    const shoal_placement_t *pl = shoal_ctx_placement(ctx);
    size_t len = 4u << 20;
    void *buf = NULL;
    CU_ASSERT_EQUAL_FATAL(shoal_alloc(ctx, len, &buf), 0);
    CU_ASSERT_EQUAL((uintptr_t)buf % (uintptr_t)sysconf(_SC_PAGESIZE), 0);
    memset(buf, 1, len); /* place the pages */
    if (pl->numa_node >= 0) {
        hwloc_nodeset_t where = hwloc_bitmap_alloc();
        CU_ASSERT_EQUAL(hwloc_get_area_memlocation(here, buf, len, where,
                                                   HWLOC_MEMBIND_BYNODESET), 0);
        CU_ASSERT_EQUAL(hwloc_bitmap_weight(where), 1);
        CU_ASSERT_EQUAL(hwloc_bitmap_first(where), pl->numa_node);
        hwloc_bitmap_free(where);
    } else {
        printf("\n  (device NUMA node unknown here: placement not checked)\n");
    }
    shoal_free(ctx, buf, len);
    CU_ASSERT_EQUAL(shoal_alloc(ctx, 0, &buf), -EINVAL);
    shoal_ctx_destroy(ctx);
}

/* Two real processes as local ranks 0 and 1 of 2: each binds its compute
 * threads and reports the CPUs it got; they must not share one. */
static void test_local_ranks_here(void)
{
    int size = 2, fds[2];
    pid_t pid[2];
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    for (int r = 0; r < size; r++) {
        pid[r] = fork();
        CU_ASSERT_FATAL(pid[r] >= 0);
        if (pid[r] == 0) {
            alarm(30);
            char v[16];
            snprintf(v, sizeof(v), "%d", r);
            setenv("SHOAL_LOCAL_RANK", v, 1);
            snprintf(v, sizeof(v), "%d", size);
            setenv("SHOAL_LOCAL_SIZE", v, 1);
            shoal_ctx_t *ctx = NULL;
            char line[400] = "";
            if (make_ctx("auto", &ctx) == 0) {
                const shoal_placement_t *pl = shoal_ctx_placement(ctx);
                char aff[64] = "-";
                if (shoal_bind_thread(ctx, 0, pl->ncpus) == 0)
                    affinity_list(aff, sizeof(aff));
                snprintf(line, sizeof(line), "%d %s %s\n", r, pl->cpus, aff);
                shoal_ctx_destroy(ctx);
            } else {
                snprintf(line, sizeof(line), "%d FAILED -\n", r);
            }
            ssize_t wr = write(fds[1], line, strlen(line));
            _exit(wr > 0 ? 0 : 1);
        }
    }
    close(fds[1]);
    char buf[512] = "";
    size_t got = 0;
    ssize_t k;
    while (got < sizeof(buf) - 1 && (k = read(fds[0], buf + got, sizeof(buf) - 1 - got)) > 0)
        got += (size_t)k;
    close(fds[0]);
    for (int r = 0; r < size; r++) {
        int st;
        CU_ASSERT_EQUAL(waitpid(pid[r], &st, 0), pid[r]);
        CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    /* Parse "rank plan affinity" lines. */
    hwloc_bitmap_t plans[2] = {hwloc_bitmap_alloc(), hwloc_bitmap_alloc()};
    int seen = 0;
    for (char *save = NULL, *ln = strtok_r(buf, "\n", &save); ln; ln = strtok_r(NULL, "\n", &save)) {
        int r;
        char plan[128], aff[128];
        if (sscanf(ln, "%d %127s %127s", &r, plan, aff) != 3 || r < 0 || r >= size)
            continue;
        printf("\n  local rank %d of %d: plan CPUs %s, bound to %s", r, size, plan, aff);
        CU_ASSERT_NOT_EQUAL(strcmp(plan, "FAILED"), 0);
        CU_ASSERT_EQUAL(hwloc_bitmap_list_sscanf(plans[r], plan), 0);
        hwloc_bitmap_t a = hwloc_bitmap_alloc();
        hwloc_bitmap_list_sscanf(a, aff);
        CU_ASSERT(hwloc_bitmap_weight(a) == 1 && hwloc_bitmap_isincluded(a, plans[r]));
        hwloc_bitmap_free(a);
        seen++;
    }
    printf("\n");
    CU_ASSERT_EQUAL(seen, size);
    int ncores = hwloc_get_nbobjs_by_type(here, HWLOC_OBJ_CORE);
    if (ncores >= size) /* with enough cores, never share one */
        CU_ASSERT_FALSE(hwloc_bitmap_intersects(plans[0], plans[1]));
    CU_ASSERT_FALSE(hwloc_bitmap_iszero(plans[0]) || hwloc_bitmap_iszero(plans[1]));
    hwloc_bitmap_free(plans[0]);
    hwloc_bitmap_free(plans[1]);
}

/* A process started bound to one CPU (taskset, a launcher): auto stays on
 * it and does not split it again by local rank. */
static void test_inherited_here(void)
{
    int last = hwloc_bitmap_last(hwloc_topology_get_allowed_cpuset(here));
    if (hwloc_bitmap_weight(hwloc_topology_get_allowed_cpuset(here)) < 2) {
        printf("\n  (one CPU allowed: an inherited binding cannot be told apart)\n");
        return;
    }
    int fds[2];
    CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        alarm(30);
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(last, &set);
        char line[700] = "FAILED - -\n";
        shoal_ctx_t *ctx = NULL;
        setenv("SHOAL_LOCAL_RANK", "1", 1);
        setenv("SHOAL_LOCAL_SIZE", "2", 1);
        if (sched_setaffinity(0, sizeof(set), &set) == 0 && make_ctx("auto", &ctx) == 0) {
            const shoal_placement_t *pl = shoal_ctx_placement(ctx);
            snprintf(line, sizeof(line), "%d %s %s\n", pl->ncpus, pl->cpus,
                     strstr(pl->why, "started on") ? "inherited" : pl->why);
            shoal_ctx_destroy(ctx);
        }
        ssize_t w = write(fds[1], line, strlen(line));
        _exit(w > 0 ? 0 : 1);
    }
    close(fds[1]);
    char buf[400] = "";
    ssize_t k = read(fds[0], buf, sizeof(buf) - 1);
    close(fds[0]);
    int st;
    CU_ASSERT_EQUAL(waitpid(pid, &st, 0), pid);
    CU_ASSERT(k > 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char want[64];
    snprintf(want, sizeof(want), "1 %d inherited\n", last);
    CU_ASSERT_STRING_EQUAL(buf, want);
    if (strcmp(buf, want))
        printf("\n  got '%s'\n", buf);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("topo (synthetic two-socket XML)", NULL, NULL);
    CU_add_test(s, "CPU list syntax", test_cpulist);
    CU_add_test(s, "SHOAL_BIND and SHOAL_LOCAL_* in the config table", test_config_bind);
    CU_add_test(s, "device locality from hwloc", test_locate_xml);
    CU_add_test(s, "auto: cores near the device", test_auto_xml);
    CU_add_test(s, "auto: local ranks get disjoint cores", test_local_ranks_xml);
    CU_add_test(s, "CPU lists, impossible lists", test_list_xml);
    CU_add_test(s, "local rank from launchers", test_local_rank_env);
    CU_pSuite h = CU_add_suite("topo (this machine)", init_here, fini_here);
    CU_add_test(h, "SHOAL_BIND=<cpu>: the thread runs there", test_bind_list_here);
    CU_add_test(h, "SHOAL_BIND=auto: one thread per core", test_bind_auto_here);
    CU_add_test(h, "UCX: placement follows UCX_NET_DEVICES", test_ucx_netdev_here);
    CU_add_test(h, "SHOAL_BIND=none binds nothing", test_bind_none_here);
    CU_add_test(h, "impossible SHOAL_BIND fails ctx_create", test_bind_impossible_here);
    CU_add_test(h, "shoal_alloc on the device's NUMA node", test_alloc_numa_here);
    CU_add_test(h, "two local processes: disjoint cores", test_local_ranks_here);
    CU_add_test(h, "started bound (taskset): auto stays inside", test_inherited_here);
    return cu_run_all();
}
