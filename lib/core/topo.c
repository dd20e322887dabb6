/*
 * topo.c -- placement: where the context's device sits in the machine
 * (hwloc), the plan SHOAL_BIND makes from that, binding the application's
 * threads to the plan, and buffers allocated on the device's NUMA node.
 *
 * Not for: choosing the transport or the device (ctx.c and the providers
 * do), or starting threads (the application binds its own compute threads
 * with shoal_bind_thread(); the progress thread, progress.c, binds itself
 * to the whole plan with shoal__topo_bind_near()).
 *
 * The plan (SHOAL_BIND=auto):
 *   1. near = the CPUs of the device's non-I/O hwloc ancestor (its package
 *      or NUMA node); the whole machine when that is unknown.
 *   2. one CPU per physical core: the first allowed PU of every core that
 *      touches `near`, in topology order.
 *   3. the processes sharing the node split those cores by local rank into
 *      contiguous, disjoint shares; with fewer near cores than processes
 *      they split all cores (near ones first); with fewer cores than
 *      processes they must share, and the plan says so.
 * It is made once, when the context is created, from the CPUs the process
 * may use: its cgroup's; or, when it was started bound to fewer (taskset,
 * numactl, a launcher's binding), those, and then not split again: whoever
 * bound it has already given each local process its share.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <unistd.h>

#include <hwloc/linux.h>
#ifdef HAVE_VERBS
#include <hwloc/openfabrics-verbs.h>
#endif

#include "topo.h"

#define CPU_MAX 65535

/* ---- CPU lists -------------------------------------------------------------- */

static int list_error(const char *s, char *err, size_t errlen, const char *what,
                      const char *at)
{
    snprintf(err, errlen, "SHOAL_BIND='%s': %s%s%s%s (expected auto, none or a CPU list "
             "like 0-3,8)", s, what, at ? " at '" : "", at ? at : "", at ? "'" : "");
    return -EINVAL;
}

int shoal__cpulist_parse(const char *s, hwloc_bitmap_t set, char *err, size_t errlen)
{
    const char *p = s;
    if (!*p)
        return list_error(s, err, errlen, "empty CPU list", NULL);
    for (;;) {
        unsigned long lo, hi;
        char *end;
        if (!isdigit((unsigned char)*p))
            return list_error(s, err, errlen, "expected a CPU number", p);
        errno = 0;
        lo = hi = strtoul(p, &end, 10);
        if (errno || lo > CPU_MAX)
            return list_error(s, err, errlen, "CPU number too large", p);
        p = end;
        if (*p == '-') {
            if (!isdigit((unsigned char)p[1]))
                return list_error(s, err, errlen, "expected the end of a range", p);
            errno = 0;
            hi = strtoul(p + 1, &end, 10);
            if (errno || hi > CPU_MAX)
                return list_error(s, err, errlen, "CPU number too large", p + 1);
            if (hi < lo)
                return list_error(s, err, errlen, "backwards range", p - 1);
            p = end;
        }
        if (set)
            hwloc_bitmap_set_range(set, (unsigned)lo, (int)hi);
        if (*p == '\0')
            return 0;
        if (*p != ',' || !p[1])
            return list_error(s, err, errlen, "unexpected character", p);
        p++;
    }
}

static shoal_bind_t bind_policy(const char *val)
{
    if (strcasecmp(val, "none") == 0)
        return SHOAL_BIND_NONE;
    if (strcasecmp(val, "auto") == 0)
        return SHOAL_BIND_AUTO;
    return SHOAL_BIND_LIST;
}

int shoal__bind_check(const char *val, char *err, size_t errlen)
{
    if (bind_policy(val) != SHOAL_BIND_LIST)
        return 0;
    return shoal__cpulist_parse(val, NULL, err, errlen);
}

/* ---- topology and device locality ------------------------------------------ */

int shoal__topo_load(const char *xml, bool io, hwloc_topology_t *tp, char *err,
                     size_t errlen)
{
    hwloc_topology_t t;
    if (hwloc_topology_init(&t)) {
        snprintf(err, errlen, "hwloc_topology_init: %s", strerror(errno));
        return -ENOMEM;
    }
    if (io)
        hwloc_topology_set_io_types_filter(t, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
    /* The Linux backend finds PCI devices and their netdevs/RDMA devices in
     * sysfs by itself.  The plugins would add device names from libpciaccess
     * (~570 MB of RSS and a leak under ASan) and initialise GPU stacks
     * (OpenCL, CUDA, ...), which a transport library has no business doing. */
    static const char *const skip[] = {"pci", "opencl", "gl", "cuda", "nvml", "rsmi",
                                       "levelzero"};
    for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
        (void)hwloc_topology_set_components(t, HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
                                            skip[i]);
    if (xml && hwloc_topology_set_xml(t, xml)) {
        int e = errno ? errno : EINVAL;
        snprintf(err, errlen, "hwloc cannot read the XML topology '%s': %s", xml, strerror(e));
        hwloc_topology_destroy(t);
        return -e;
    }
    if (hwloc_topology_load(t)) {
        int e = errno ? errno : EIO;
        snprintf(err, errlen, "hwloc_topology_load%s%s: %s", xml ? " " : "", xml ? xml : "",
                 strerror(e));
        hwloc_topology_destroy(t);
        return -e;
    }
    *tp = t;
    return 0;
}

/* The OS device (OpenFabrics or network) called @name, or NULL. */
static hwloc_obj_t find_osdev(hwloc_topology_t t, const char *name)
{
#ifdef HAVE_VERBS
    hwloc_obj_t ib = hwloc_ibv_get_device_osdev_by_name(t, name);
    if (ib)
        return ib;
#endif
    hwloc_obj_t o = NULL;
    while ((o = hwloc_get_next_osdev(t, o)) != NULL)
        if (o->name && strcmp(o->name, name) == 0 &&
            (o->attr->osdev.type == HWLOC_OBJ_OSDEV_OPENFABRICS ||
             o->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK))
            return o;
    return NULL;
}

/* "Package 1 (NUMA node 1, CPUs 4-7,12-15)" */
static void where_text(hwloc_obj_t anc, hwloc_const_cpuset_t cpus,
                       hwloc_const_nodeset_t nodes, char *out, size_t n)
{
    char cl[96], nl[48], ty[32];
    hwloc_bitmap_list_snprintf(cl, sizeof(cl), cpus);
    hwloc_bitmap_list_snprintf(nl, sizeof(nl), nodes);
    int nn = hwloc_bitmap_weight(nodes);
    if (anc && anc->type == HWLOC_OBJ_MACHINE)
        snprintf(ty, sizeof(ty), "the machine");
    else if (anc && anc->type == HWLOC_OBJ_NUMANODE)
        snprintf(ty, sizeof(ty), "NUMA node %u", anc->os_index);
    else if (anc) {
        hwloc_obj_type_snprintf(ty, sizeof(ty), anc, 0);
        size_t l = strlen(ty);
        snprintf(ty + l, sizeof(ty) - l, " %u", anc->os_index);
    } else
        snprintf(ty, sizeof(ty), "sysfs");
    snprintf(out, n, "%s (NUMA node%s %s, CPUs %s)", ty, nn == 1 ? "" : "s", nl, cl);
}

/* The device's locality from sysfs when the topology has no OS device for
 * it (this machine only): an RDMA device's PCI local_cpus through hwloc's
 * verbs helper, or, for a soft device (rxe, siw), its netdev's.  1 if
 * known. */
static int locate_sysfs(hwloc_topology_t t, const char *name, hwloc_cpuset_t cpus,
                        char *where, size_t wherelen, int depth)
{
    char path[256];
#ifdef HAVE_VERBS
    snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/local_cpus", name);
    if (access(path, R_OK) == 0) {
        int num = 0, rc = -1;
        struct ibv_device **list = ibv_get_device_list(&num);
        for (int i = 0; list && i < num; i++)
            if (strcmp(ibv_get_device_name(list[i]), name) == 0)
                rc = hwloc_ibv_get_device_cpuset(t, list[i], cpus);
        if (list)
            ibv_free_device_list(list);
        if (rc == 0 && !hwloc_bitmap_iszero(cpus))
            return 1;
    }
#endif
    /* A soft RDMA device runs over a netdev: follow it (once). */
    snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/1/gid_attrs/ndevs/0", name);
    FILE *f = depth == 0 ? fopen(path, "r") : NULL;
    if (f) {
        char nd[64] = "";
        bool got = fgets(nd, sizeof(nd), f) != NULL;
        fclose(f);
        nd[strcspn(nd, "\n")] = '\0';
        if (got && nd[0] && strcmp(nd, name) != 0) {
            hwloc_obj_t o = find_osdev(t, nd);
            if (o) {
                hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, o);
                hwloc_bitmap_copy(cpus, anc->cpuset);
                char w[160];
                where_text(anc, anc->cpuset, anc->nodeset, w, sizeof(w));
                snprintf(where, wherelen, "over %s: %s", nd, w);
                return 1;
            }
            if (locate_sysfs(t, nd, cpus, where, wherelen, depth + 1) == 1)
                return 1;
            snprintf(where, wherelen, "unknown: %s runs over %s, which has no PCI locality",
                     name, nd);
            return 0;
        }
    }
    snprintf(path, sizeof(path), "/sys/class/net/%s/device/local_cpus", name);
    if (access(path, R_OK) == 0 && hwloc_linux_read_path_as_cpumask(path, cpus) == 0 &&
        !hwloc_bitmap_iszero(cpus))
        return 1;
    return 0;
}

int shoal__topo_locate(hwloc_topology_t t, const char *device, hwloc_cpuset_t cpus,
                       hwloc_nodeset_t nodes, char *where, size_t wherelen)
{
    char name[SHOAL_DEVICE_MAX];
    snprintf(name, sizeof(name), "%s", device ? device : "");
    name[strcspn(name, ":")] = '\0';
    hwloc_bitmap_copy(cpus, hwloc_topology_get_allowed_cpuset(t));
    if (nodes)
        hwloc_bitmap_zero(nodes);
    if (!name[0]) {
        snprintf(where, wherelen, "unknown: no device named");
        return 0;
    }
    hwloc_obj_t o = find_osdev(t, name);
    if (o) {
        hwloc_obj_t anc = hwloc_get_non_io_ancestor_obj(t, o);
        hwloc_obj_t pci = o->parent && o->parent->type == HWLOC_OBJ_PCI_DEVICE ? o->parent : NULL;
        char w[160];
        hwloc_bitmap_copy(cpus, anc->cpuset);
        if (nodes)
            hwloc_bitmap_copy(nodes, anc->nodeset);
        where_text(anc, anc->cpuset, anc->nodeset, w, sizeof(w));
        if (pci)
            snprintf(where, wherelen, "PCI %04x:%02x:%02x.%01x on %s",
                     pci->attr->pcidev.domain, pci->attr->pcidev.bus,
                     pci->attr->pcidev.dev, pci->attr->pcidev.func, w);
        else
            snprintf(where, wherelen, "%s", w);
        return 1;
    }
    where[0] = '\0';
    if (hwloc_topology_is_thissystem(t) &&
        locate_sysfs(t, name, cpus, where, wherelen, 0) == 1) {
        if (!where[0]) {
            hwloc_nodeset_t ns = hwloc_bitmap_alloc();
            hwloc_cpuset_to_nodeset(t, cpus, ns);
            where_text(NULL, cpus, ns, where, wherelen);
            hwloc_bitmap_free(ns);
        }
        if (nodes)
            hwloc_cpuset_to_nodeset(t, cpus, nodes);
        return 1;
    }
    hwloc_bitmap_copy(cpus, hwloc_topology_get_allowed_cpuset(t));
    if (!where[0])
        snprintf(where, wherelen, "unknown: '%s' has no PCI locality here%s", name,
                 hwloc_topology_is_thissystem(t) ? " (virtual, or not present)"
                                                 : " (not in the topology)");
    return 0;
}

/* ---- local rank --------------------------------------------------------------- */

/* An environment variable as a non-negative int: 1 if set and valid, 0 if
 * unset, -EINVAL (with @err) if set to something else. */
static int env_int(const char *name, int *out, char *err, size_t errlen)
{
    const char *v = getenv(name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 0 || x > 1 << 20) {
        snprintf(err, errlen, "%s='%s': expected a non-negative integer", name, v);
        return -EINVAL;
    }
    *out = (int)x;
    return 1;
}

/* Tasks on this node from Slurm's "2(x3),1" list and SLURM_NODEID; -1 if
 * not known. */
static int slurm_local_size(void)
{
    const char *tpn = getenv("SLURM_STEP_TASKS_PER_NODE");
    if (!tpn)
        tpn = getenv("SLURM_TASKS_PER_NODE");
    const char *nid = getenv("SLURM_NODEID");
    long node = nid ? strtol(nid, NULL, 10) : 0, idx = 0;
    for (const char *p = tpn; p && *p;) {
        char *end;
        long n = strtol(p, &end, 10), rep = 1;
        if (end == p || n < 1)
            return -1;
        p = end;
        if (p[0] == '(' && p[1] == 'x') {
            rep = strtol(p + 2, &end, 10);
            if (*end != ')' || rep < 1)
                return -1;
            p = end + 1;
        }
        if (node < idx + rep)
            return (int)n;
        idx += rep;
        if (*p == ',')
            p++;
        else if (*p)
            return -1;
    }
    return -1;
}

int shoal__local_rank(const shoal_config_t *cfg, int *rank, int *size, char *src,
                      size_t srclen, char *err, size_t errlen)
{
    static const struct {
        const char *rank, *size, *who;
    } launchers[] = {
        {"OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE", "Open MPI"},
        {"MPI_LOCALRANKID", "MPI_LOCALNRANKS", "MPICH"},
        {"SLURM_LOCALID", NULL, "Slurm"},
    };
    int r = 0, s = 1, rc;
    const char *rname = "SHOAL_LOCAL_RANK", *sname = "SHOAL_LOCAL_SIZE";
    if (cfg->local_rank >= 0 || cfg->local_size >= 0) {
        if (cfg->local_rank < 0 || cfg->local_size < 1) {
            snprintf(err, errlen, "SHOAL_LOCAL_RANK and SHOAL_LOCAL_SIZE must be set together "
                     "(rank %d, size %d)", cfg->local_rank, cfg->local_size);
            return -EINVAL;
        }
        r = cfg->local_rank;
        s = cfg->local_size;
        snprintf(src, srclen, "SHOAL_LOCAL_RANK/SIZE");
    } else {
        snprintf(src, srclen, "no launcher seen");
        for (size_t i = 0; i < sizeof(launchers) / sizeof(launchers[0]); i++) {
            if ((rc = env_int(launchers[i].rank, &r, err, errlen)) < 0)
                return rc;
            if (rc == 0)
                continue;
            rname = launchers[i].rank;
            sname = launchers[i].size ? launchers[i].size : "SLURM_STEP_TASKS_PER_NODE";
            s = -1;
            if (launchers[i].size) {
                if ((rc = env_int(launchers[i].size, &s, err, errlen)) < 0)
                    return rc;
            } else {
                s = slurm_local_size();
            }
            if (s < 1) {
                /* The rank without the count cannot be split safely. */
                snprintf(src, srclen, "%s gives rank %d but no local size: "
                         "not splitting", launchers[i].who, r);
                *rank = 0;
                *size = 1;
                return 0;
            }
            snprintf(src, srclen, "%s", launchers[i].who);
            break;
        }
    }
    if (r >= s) {
        snprintf(err, errlen, "local rank %d (%s) is not below the local size %d (%s)", r,
                 rname, s, sname);
        return -EINVAL;
    }
    *rank = r;
    *size = s;
    return 0;
}

/* ---- the plan ------------------------------------------------------------------ */

struct core_list {
    int *cpu;
    int n, near;  /* near ones first: cpu[0..near) */
};

/* One CPU per core (the first PU of each in @pool), cores touching @near
 * first, each group in topology order. */
static int list_cores(hwloc_topology_t t, hwloc_const_cpuset_t pool, hwloc_const_cpuset_t near,
                      struct core_list *cl)
{
    hwloc_obj_type_t type = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE) > 0
                                ? HWLOC_OBJ_CORE : HWLOC_OBJ_PU;
    int total = hwloc_get_nbobjs_by_type(t, type);
    hwloc_bitmap_t tmp = hwloc_bitmap_alloc();
    cl->cpu = calloc((size_t)(total > 0 ? total : 1), sizeof(int));
    cl->n = cl->near = 0;
    if (!cl->cpu || !tmp) {
        free(cl->cpu);
        hwloc_bitmap_free(tmp);
        return -ENOMEM;
    }
    for (int pass = 0; pass < 2; pass++) {
        hwloc_obj_t o = NULL;
        while ((o = hwloc_get_next_obj_by_type(t, type, o)) != NULL) {
            hwloc_bitmap_and(tmp, o->cpuset, pool);
            int first = hwloc_bitmap_first(tmp);
            if (first < 0)
                continue;
            bool is_near = hwloc_bitmap_intersects(o->cpuset, near);
            if (is_near == (pass == 0))
                cl->cpu[cl->n++] = first;
        }
        if (pass == 0)
            cl->near = cl->n;
    }
    hwloc_bitmap_free(tmp);
    return 0;
}

/* Slot CPUs as list text, in slot order ("4-7", "1,0"). */
static void slots_text(const int *cpu, int n, char *out, size_t len)
{
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && cpu[j + 1] == cpu[j] + 1)
            j++;
        if (j < i + 2)
            j = i; /* two in a row read better as "4,5" */
        int w = j > i ? snprintf(out + o, len - o, "%s%d-%d", o ? "," : "", cpu[i], cpu[j])
                      : snprintf(out + o, len - o, "%s%d", o ? "," : "", cpu[i]);
        if (w < 0 || (size_t)w >= len - o) {
            snprintf(out + len - 4, 4, "...");
            return;
        }
        o += (size_t)w;
        i = j + 1;
    }
}

static int plan_list(struct shoal_plan *p, const char *list, char *err, size_t errlen)
{
    hwloc_bitmap_t want = hwloc_bitmap_alloc();
    int rc = shoal__cpulist_parse(list, want, err, errlen);
    hwloc_const_cpuset_t all = hwloc_topology_get_complete_cpuset(p->topo);
    hwloc_const_cpuset_t allowed = hwloc_topology_get_allowed_cpuset(p->topo);
    char have[96];
    int cpu;
    hwloc_bitmap_foreach_begin(cpu, want) {
        if (rc)
            break;
        if (!hwloc_bitmap_isset(all, (unsigned)cpu)) {
            hwloc_bitmap_list_snprintf(have, sizeof(have), all);
            snprintf(err, errlen, "SHOAL_BIND='%s': CPU %d does not exist here (CPUs %s)",
                     list, cpu, have);
            rc = -EINVAL;
        } else if (!hwloc_bitmap_isset(allowed, (unsigned)cpu)) {
            hwloc_bitmap_list_snprintf(have, sizeof(have), allowed);
            snprintf(err, errlen, "SHOAL_BIND='%s': CPU %d is not available to this process "
                     "(allowed: %s)", list, cpu, have);
            rc = -EINVAL;
        }
    } hwloc_bitmap_foreach_end();
    int n = rc ? 0 : hwloc_bitmap_weight(want);
    if (!rc && !(p->cpu = calloc((size_t)n, sizeof(int))))
        rc = -ENOMEM;
    if (!rc) {
        int k = 0;
        hwloc_bitmap_foreach_begin(cpu, want) {
            p->cpu[k++] = cpu;
        } hwloc_bitmap_foreach_end();
        p->pub.ncpus = n;
        snprintf(p->pub.why, sizeof(p->pub.why),
                 "SHOAL_BIND=%.80s: the %d listed CPU%s as given, one thread each "
                 "(lists are not split between local processes)", list, n, n == 1 ? "" : "s");
    }
    hwloc_bitmap_free(want);
    return rc;
}

static int plan_auto(struct shoal_plan *p, bool known, hwloc_const_cpuset_t cpus,
                     bool inherited, hwloc_const_cpuset_t near)
{
    struct core_list cl;
    int rc = list_cores(p->topo, cpus, near, &cl);
    if (rc)
        return rc;
    int r = p->pub.local_rank, s = p->pub.local_size, lo, hi, pool;
    char inh[160] = "";
    if (inherited) {
        char l[96];
        hwloc_bitmap_list_snprintf(l, sizeof(l), cpus);
        snprintf(inh, sizeof(inh), " of the CPUs %.60s the process was started on (not "
                 "split again by local rank)", l);
        r = 0;
        s = 1;
    }
    const char *dev = p->pub.device;
    char head[320], share[128] = "";
    if (known)
        snprintf(head, sizeof(head), "auto: %d core%s near %s%s", cl.near,
                 cl.near == 1 ? "" : "s", dev, inh);
    else if (p->pub.device[0])
        snprintf(head, sizeof(head), "auto: locality of %s unknown, so all %d core%s%s", dev,
                 cl.n, cl.n == 1 ? "" : "s", inh);
    else
        snprintf(head, sizeof(head), "auto: no device to follow, so all %d core%s%s", cl.n,
                 cl.n == 1 ? "" : "s", inh);
    if (s <= cl.near) {
        pool = cl.near;
        lo = (int)((long)r * pool / s);
        hi = (int)((long)(r + 1) * pool / s);
        if (s > 1)
            snprintf(share, sizeof(share), ", split %d ways: this process takes %d", s,
                     hi - lo);
    } else if (s <= cl.n) {
        pool = cl.n;
        lo = (int)((long)r * pool / s);
        hi = (int)((long)(r + 1) * pool / s);
        snprintf(share, sizeof(share), ", too few for %d local processes, so they split all "
                 "%d cores (near first): this process takes %d", s, cl.n, hi - lo);
    } else {
        lo = cl.n ? r % cl.n : 0;
        hi = cl.n ? lo + 1 : 0;
        snprintf(share, sizeof(share), ", OVERSUBSCRIBED: %d local processes on %d cores, "
                 "this one shares CPU %d", s, cl.n, cl.n ? cl.cpu[lo] : -1);
    }
    p->pub.ncpus = hi - lo;
    p->cpu = calloc((size_t)(hi > lo ? hi - lo : 1), sizeof(int));
    if (!p->cpu) {
        free(cl.cpu);
        return -ENOMEM;
    }
    memcpy(p->cpu, cl.cpu + lo, (size_t)(hi - lo) * sizeof(int));
    snprintf(p->pub.why, sizeof(p->pub.why), "%.150s%.80s; one thread per core", head, share);
    free(cl.cpu);
    return 0;
}

int shoal__plan_make(hwloc_topology_t t, bool own, const shoal_config_t *cfg,
                     const char *device, struct shoal_plan *p, char *err, size_t errlen)
{
    memset(p, 0, sizeof(*p));
    p->pub.numa_node = -1;
    snprintf(p->pub.device, sizeof(p->pub.device), "%s", device ? device : "");
    int rc = 0;
    char src[128];
    if (!memchr(cfg->bind, '\0', sizeof(cfg->bind))) {
        snprintf(err, errlen, "SHOAL_BIND: not a terminated string");
        rc = -EINVAL;
    }
    if (!rc)
        rc = shoal__bind_check(cfg->bind, err, errlen);
    if (!rc)
        rc = shoal__local_rank(cfg, &p->pub.local_rank, &p->pub.local_size, src,
                               sizeof(src), err, errlen);
    p->pub.policy = rc ? SHOAL_BIND_NONE : bind_policy(cfg->bind);
    if (!rc && p->pub.policy != SHOAL_BIND_NONE && !t) {
        snprintf(err, errlen, "placement: no topology");
        rc = -EINVAL;
    }
    if (rc || p->pub.policy == SHOAL_BIND_NONE) {
        if (own && t)
            hwloc_topology_destroy(t);
        if (!rc) {
            snprintf(p->pub.locality, sizeof(p->pub.locality), "not looked up");
            snprintf(p->pub.why, sizeof(p->pub.why), "SHOAL_BIND=none: nothing is bound");
        }
        return rc;
    }
    p->topo = t;
    p->own_topo = own;

    hwloc_bitmap_t near = hwloc_bitmap_alloc(), nodes = hwloc_bitmap_alloc();
    int known = shoal__topo_locate(t, device, near, nodes, p->pub.locality,
                                   sizeof(p->pub.locality));
    /* Memory goes to the device's nodes; with the locality unknown only a
     * machine with one NUMA node has an obvious answer. */
    if (!known && hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE) == 1)
        hwloc_bitmap_copy(nodes, hwloc_get_obj_by_type(t, HWLOC_OBJ_NUMANODE, 0)->nodeset);
    if (!hwloc_bitmap_iszero(nodes)) {
        p->nodes = hwloc_bitmap_dup(nodes);
        if (hwloc_bitmap_weight(nodes) == 1)
            p->pub.numa_node = hwloc_bitmap_first(nodes);
    }
    /* The CPUs auto may use: the cgroup's, or fewer if the process was
     * started bound to fewer (the union of its threads' bindings). */
    hwloc_bitmap_t pool = hwloc_bitmap_dup(hwloc_topology_get_allowed_cpuset(t));
    hwloc_bitmap_t inh = hwloc_bitmap_alloc();
    bool inherited = false;
    if (hwloc_topology_is_thissystem(t) &&
        hwloc_get_cpubind(t, inh, HWLOC_CPUBIND_PROCESS) == 0) {
        hwloc_bitmap_and(inh, inh, pool);
        if (!hwloc_bitmap_iszero(inh) && !hwloc_bitmap_isequal(inh, pool)) {
            hwloc_bitmap_copy(pool, inh);
            inherited = true;
        }
    }
    hwloc_bitmap_and(near, near, pool);
    if (hwloc_bitmap_iszero(near)) {
        /* None of the device's CPUs may be used. */
        if (known) {
            size_t l = strlen(p->pub.locality);
            snprintf(p->pub.locality + l, sizeof(p->pub.locality) - l,
                     "; none of them usable here");
        }
        hwloc_bitmap_copy(near, pool);
        known = 0;
    }
    if (p->pub.policy == SHOAL_BIND_LIST)
        rc = plan_list(p, cfg->bind, err, errlen);
    else
        rc = plan_auto(p, known, pool, inherited, near);
    hwloc_bitmap_free(pool);
    hwloc_bitmap_free(inh);
    hwloc_bitmap_free(near);
    hwloc_bitmap_free(nodes);
    if (rc) {
        if (rc == -ENOMEM)
            snprintf(err, errlen, "placement: out of memory");
        shoal__plan_fini(p);
        return rc;
    }
    slots_text(p->cpu, p->pub.ncpus, p->pub.cpus, sizeof(p->pub.cpus));
    size_t l = strlen(p->pub.why);
    snprintf(p->pub.why + l, sizeof(p->pub.why) - l, "; local rank %d of %d (%s)",
             p->pub.local_rank, p->pub.local_size, src);
    return 0;
}

void shoal__plan_fini(struct shoal_plan *p)
{
    free(p->cpu);
    hwloc_bitmap_free(p->nodes);
    if (p->own_topo && p->topo)
        hwloc_topology_destroy(p->topo);
    memset(p, 0, sizeof(*p));
}

int shoal__plan_bind(struct shoal_plan *p, int slot, char *err, size_t errlen)
{
    if (p->pub.policy == SHOAL_BIND_NONE)
        return 0;
    if (p->pub.ncpus < 1) {
        snprintf(err, errlen, "the placement plan has no CPUs");
        return -ENODEV;
    }
    if (!hwloc_topology_is_thissystem(p->topo)) {
        snprintf(err, errlen, "the topology is not this machine's (HWLOC_XMLFILE set?): "
                 "cannot bind");
        return -EOPNOTSUPP;
    }
    int cpu = p->cpu[slot % p->pub.ncpus];
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set)
        return -ENOMEM;
    hwloc_bitmap_only(set, (unsigned)cpu);
    int rc = 0;
    if (hwloc_set_cpubind(p->topo, set, HWLOC_CPUBIND_THREAD)) {
        rc = errno ? -errno : -EINVAL;
        snprintf(err, errlen, "binding the thread to CPU %d: %s", cpu, strerror(-rc));
    }
    hwloc_bitmap_free(set);
    return rc;
}

void shoal__topo_bind_near(shoal_ctx_t *ctx)
{
    struct shoal_plan *p = ctx->plan;
    if (!p || p->pub.policy == SHOAL_BIND_NONE || p->pub.ncpus < 1 ||
        !hwloc_topology_is_thissystem(p->topo))
        return;
    hwloc_bitmap_t set = hwloc_bitmap_alloc();
    if (!set)
        return;
    for (int i = 0; i < p->pub.ncpus; i++)
        hwloc_bitmap_set(set, (unsigned)p->cpu[i]);
    if (hwloc_set_cpubind(p->topo, set, HWLOC_CPUBIND_THREAD))
        shoal__warn(ctx, "progress thread: binding to CPUs %s: %s", p->pub.cpus,
                    strerror(errno));
    else
        shoal__debug(ctx, "progress thread bound to CPUs %s", p->pub.cpus);
    hwloc_bitmap_free(set);
}

/* ---- the context's plan and the public calls ------------------------------------- */

int shoal__topo_ctx_init(shoal_ctx_t *ctx)
{
    char err[400];
    struct shoal_plan *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    const char *dev = ctx->device[0] ? ctx->device : ctx->cfg.device;
    hwloc_topology_t t = NULL;
    int rc = 0;
    if (memchr(ctx->cfg.bind, '\0', sizeof(ctx->cfg.bind)) &&
        bind_policy(ctx->cfg.bind) != SHOAL_BIND_NONE)
        rc = shoal__topo_load(NULL, dev[0] != '\0', &t, err, sizeof(err));
    if (!rc)
        rc = shoal__plan_make(t, true, &ctx->cfg, dev, p, err, sizeof(err));
    if (rc) {
        free(p);
        return shoal__fail(ctx, rc, "placement: %s", err);
    }
    ctx->plan = p;
    shoal__info(ctx, "placement: %s; CPUs %s; device at %s", p->pub.why,
                p->pub.cpus[0] ? p->pub.cpus : "-", p->pub.locality);
    return 0;
}

void shoal__topo_ctx_fini(shoal_ctx_t *ctx)
{
    if (ctx->plan) {
        shoal__plan_fini(ctx->plan);
        free(ctx->plan);
        ctx->plan = NULL;
    }
}

const shoal_placement_t *shoal_ctx_placement(const shoal_ctx_t *ctx)
{
    return &ctx->plan->pub;
}

/* Callable from several threads at once: reads the plan, logs instead of
 * writing the context's errmsg. */
int shoal_bind_thread(shoal_ctx_t *ctx, int i, int n)
{
    if (!ctx)
        return -EINVAL;
    if (n < 1 || i < 0 || i >= n) {
        shoal__error(ctx, "shoal_bind_thread(%d of %d): needs 0 <= i < n", i, n);
        return -EINVAL;
    }
    struct shoal_plan *p = ctx->plan;
    if (p->pub.policy == SHOAL_BIND_NONE)
        return 0;
    if (n > p->pub.ncpus && !atomic_exchange(&p->warned, true))
        shoal__warn(ctx, "placement: %d compute threads for %d CPUs (%s): threads share cores",
                    n, p->pub.ncpus, p->pub.cpus);
    char err[200];
    int rc = shoal__plan_bind(p, i, err, sizeof(err));
    if (rc)
        shoal__error(ctx, "shoal_bind_thread(%d of %d): %s", i, n, err);
    else
        shoal__debug(ctx, "compute thread %d of %d bound to CPU %d", i, n,
                     p->cpu[i % p->pub.ncpus]);
    return rc;
}

static int alloc_near(shoal_ctx_t *ctx, size_t len, void **addr_p)
{
    if (!len || !addr_p)
        return shoal__fail(ctx, -EINVAL, "shoal_alloc: %s", !len ? "length 0"
                           : "the address pointer (addr_p) is NULL");
    struct shoal_plan *p = ctx->plan;
    void *a = NULL;
    if (p->topo && p->nodes) {
        a = hwloc_alloc_membind(p->topo, len, p->nodes, HWLOC_MEMBIND_BIND,
                                HWLOC_MEMBIND_BYNODESET);
        if (!a)
            shoal__debug(ctx, "shoal_alloc: NUMA binding refused (%s); first touch instead",
                         strerror(errno));
    }
    if (!a && p->topo)
        a = hwloc_alloc(p->topo, len);
    if (!a && !p->topo) {
        a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED)
            a = NULL;
    }
    if (!a)
        return shoal__fail(ctx, -ENOMEM, "shoal_alloc: %zu bytes: %s", len, strerror(errno));
    *addr_p = a;
    return 0;
}

int shoal_alloc(shoal_ctx_t *ctx, size_t len, void **addr_p)
{
    if (!ctx)
        return -EINVAL;
    shoal__enter(ctx);
    return shoal__leave(ctx, "shoal_alloc", alloc_near(ctx, len, addr_p));
}

void shoal_free(shoal_ctx_t *ctx, void *addr, size_t len)
{
    if (!ctx || !addr)
        return;
    if (ctx->plan->topo)
        hwloc_free(ctx->plan->topo, addr, len);
    else
        munmap(addr, len);
}
