/*
 * topo.h -- placement internals (lib/core/topo.c): where a device sits in
 * the machine, and the plan SHOAL_BIND makes from that.  Seen by the core,
 * the topo tests and shoal-info; not by providers, not installed.
 *
 * The topology source is injectable (an hwloc XML file instead of this
 * machine), so the planning logic can be tested on machines we don't have;
 * binding and NUMA allocation need the real machine.
 */
#ifndef SHOAL_TOPO_H
#define SHOAL_TOPO_H

#include <hwloc.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core.h"

/* A plan: the public view plus what binding and allocation need. */
struct shoal_plan {
    shoal_placement_t pub;
    int *cpu;                 /* slot -> OS CPU index; pub.ncpus entries */
    hwloc_nodeset_t nodes;    /* NUMA nodes near the device; NULL = unknown */
    hwloc_topology_t topo;    /* NULL with SHOAL_BIND=none */
    bool own_topo;            /* plan_fini destroys topo */
    atomic_bool warned;       /* the oversubscription warning was logged */
};

/* Load a topology: this machine (@xml NULL) or an hwloc XML file.  @io
 * keeps PCI devices and OS devices (network, OpenFabrics), which device
 * locality needs (several times slower to load).  0 or -errno with @err. */
int shoal__topo_load(const char *xml, bool io, hwloc_topology_t *tp,
                     char *err, size_t errlen);

/* Where @device sits (an RDMA device "mlx5_0" or a netdev "eth0"; a
 * ":port" suffix is ignored).  Fills @cpus (and @nodes if not NULL) with
 * its locality and @where with text.  Returns 1 when known; 0 when not
 * (empty name, device not found, virtual device): then @cpus is the whole
 * machine (allowed CPUs) and @nodes empty. */
int shoal__topo_locate(hwloc_topology_t t, const char *device, hwloc_cpuset_t cpus,
                       hwloc_nodeset_t nodes, char *where, size_t wherelen);

/* This process's rank among the processes sharing the node, and their
 * number: SHOAL_LOCAL_RANK/SIZE (cfg), else Open MPI, MPICH (hydra), Slurm,
 * else 0 of 1.  @src names where they came from.  -EINVAL (with @err) for
 * values that make no sense. */
int shoal__local_rank(const shoal_config_t *cfg, int *rank, int *size, char *src,
                      size_t srclen, char *err, size_t errlen);

/* Parse a CPU list ("0-3,8"); into @set if not NULL.  -EINVAL with an
 * error naming SHOAL_BIND='@s'. */
int shoal__cpulist_parse(const char *s, hwloc_bitmap_t set, char *err, size_t errlen);

/* Make the plan of @cfg->bind for @device on topology @t (which the plan
 * then holds; @own: plan_fini destroys it).  @t may be NULL only with
 * SHOAL_BIND=none.  0, or -EINVAL with @err (bad or impossible list, bad
 * local rank); on failure nothing is held. */
int shoal__plan_make(hwloc_topology_t t, bool own, const shoal_config_t *cfg,
                     const char *device, struct shoal_plan *p, char *err,
                     size_t errlen);
void shoal__plan_fini(struct shoal_plan *p);

/* Bind the calling thread to slot @slot of @p (modulo ncpus). */
int shoal__plan_bind(struct shoal_plan *p, int slot, char *err, size_t errlen);

/* Bind the calling thread to every CPU of @ctx's plan (none with
 * SHOAL_BIND=none): where the progress thread runs.  Failures are logged;
 * the thread then runs unbound. */
void shoal__topo_bind_near(shoal_ctx_t *ctx);

#endif
