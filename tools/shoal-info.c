/*
 * shoal-info -- what libshoal sees on this machine: RDMA devices (ports,
 * state, link layer, MTU, GIDs with their RoCE type), the UCX transports,
 * the hwloc topology and where each device sits, the SHOAL_* settings, and
 * for a given --transport/--device/--bind which transport auto picks and
 * why, and where threads would be bound.  Text, or JSON with --json.
 *
 * A diagnostic tool: it links the library's internals (provider probes,
 * lib/core/topo.h) rather than only shoal.h, like ucx_info does.  It
 * changes nothing on the machine.
 */
#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ucp/api/ucp.h>
#include <uct/api/uct.h>
#ifdef HAVE_VERBS
#include <infiniband/verbs.h>
#endif

#include "core/topo.h"

#define MAX_DEVS 16
#define MAX_PORTS 4
#define MAX_GIDS 16
#define MAX_TLS 64
#define MAX_OSDEVS 64

/* ---- what is gathered ---------------------------------------------------- */

struct gid_info {
    int index;
    char addr[INET6_ADDRSTRLEN];
    const char *type;      /* "IB", "RoCE v1", "RoCE v2" */
    char netdev[IF_NAMESIZE];
};

struct port_info {
    int num;
    const char *state, *link;
    unsigned active_mtu, max_mtu;
    double gbps;           /* 0 = unknown */
    int ngids;
    struct gid_info gid[MAX_GIDS];
};

struct dev_info {
    char name[64];
    char guid[24];
    char fw[64];
    int nports;
    struct port_info port[MAX_PORTS];
    int known;
    char where[160];
};

struct tl_info {
    char tl[32], dev[32];
    const char *type;
};

struct osdev_info {
    char name[64];
    const char *kind;
    int known;
    char where[160];
};

struct probe_info {
    const char *name;
    int rc;
    char why[256];
};

struct info {
    /* RDMA */
    bool verbs_built;
    char rdma_note[128];
    int ndevs;
    struct dev_info dev[MAX_DEVS];
    /* UCX */
    char ucx_version[32];
    int ntls;
    struct tl_info tl[MAX_TLS];
    char ucx_note[128];
    /* topology */
    char topo_source[300];
    char hwloc_version[32];
    int packages, numa, cores, pus;
    char allowed[128];
    int nosdevs;
    struct osdev_info osdev[MAX_OSDEVS];
    /* selection */
    shoal_config_t cfg;
    int nprobes;
    struct probe_info probe[4];
    const char *picked;     /* NULL: none usable */
    char describe[256];
    int ctx_rc;
    char ctx_err[400];
    bool have_plan;
    shoal_placement_t plan;
    char plan_err[400];
};

/* ---- RDMA devices ---------------------------------------------------------- */

#ifdef HAVE_VERBS
static unsigned mtu_bytes(enum ibv_mtu m)
{
    return m >= IBV_MTU_256 && m <= IBV_MTU_4096 ? 128u << m : 0;
}

/* Per-lane rate in Gb/s from ibv_port_attr.active_speed, times the lanes
 * of active_width; 0 if unknown. */
static double port_gbps(const struct ibv_port_attr *pa)
{
    double lane;
    switch (pa->active_speed) {
    case 1: lane = 2.5; break;
    case 2: lane = 5.0; break;
    case 4: case 8: lane = 10.0; break;
    case 16: lane = 14.0; break;
    case 32: lane = 25.0; break;
    case 64: lane = 50.0; break;
    case 128: lane = 100.0; break;
    default: return 0;
    }
    int lanes;
    switch (pa->active_width) {
    case 1: lanes = 1; break;
    case 2: lanes = 4; break;
    case 4: lanes = 8; break;
    case 8: lanes = 12; break;
    case 16: lanes = 2; break;
    default: return 0;
    }
    return lane * lanes;
}

static void gather_port(struct ibv_context *c, int num, struct port_info *pi)
{
    struct ibv_port_attr pa;
    pi->num = num;
    if (ibv_query_port(c, (uint8_t)num, &pa)) {
        pi->state = "query failed";
        pi->link = "?";
        return;
    }
    pi->state = ibv_port_state_str(pa.state);
    pi->link = pa.link_layer == IBV_LINK_LAYER_ETHERNET ? "Ethernet"
               : pa.link_layer == IBV_LINK_LAYER_INFINIBAND ? "InfiniBand" : "unspecified";
    pi->active_mtu = mtu_bytes(pa.active_mtu);
    pi->max_mtu = mtu_bytes(pa.max_mtu);
    pi->gbps = port_gbps(&pa);
    static const uint8_t zero[16];
    for (int i = 0; i < pa.gid_tbl_len && pi->ngids < MAX_GIDS; i++) {
        struct ibv_gid_entry ge;
        if (ibv_query_gid_ex(c, (uint32_t)num, (uint32_t)i, &ge, 0))
            continue;
        if (memcmp(ge.gid.raw, zero, 16) == 0)
            continue;
        struct gid_info *g = &pi->gid[pi->ngids++];
        g->index = i;
        inet_ntop(AF_INET6, ge.gid.raw, g->addr, sizeof(g->addr));
        g->type = ge.gid_type == IBV_GID_TYPE_ROCE_V2 ? "RoCE v2"
                  : ge.gid_type == IBV_GID_TYPE_ROCE_V1 ? "RoCE v1" : "IB";
        if (!ge.ndev_ifindex || !if_indextoname(ge.ndev_ifindex, g->netdev))
            g->netdev[0] = '\0';
    }
}

static void gather_rdma(struct info *in, hwloc_topology_t topo)
{
    in->verbs_built = true;
    int num = 0;
    struct ibv_device **list = ibv_get_device_list(&num);
    if (!list) {
        snprintf(in->rdma_note, sizeof(in->rdma_note),
                 "no RDMA devices on this host (ibv_get_device_list: %s)", strerror(errno));
        return;
    }
    if (num == 0)
        snprintf(in->rdma_note, sizeof(in->rdma_note), "no RDMA devices on this host");
    for (int i = 0; i < num && in->ndevs < MAX_DEVS; i++) {
        struct dev_info *d = &in->dev[in->ndevs++];
        snprintf(d->name, sizeof(d->name), "%s", ibv_get_device_name(list[i]));
        uint64_t g = be64toh(ibv_get_device_guid(list[i]));
        snprintf(d->guid, sizeof(d->guid), "%04x:%04x:%04x:%04x",
                 (unsigned)(g >> 48) & 0xffff, (unsigned)(g >> 32) & 0xffff,
                 (unsigned)(g >> 16) & 0xffff, (unsigned)g & 0xffff);
        hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
        d->known = shoal__topo_locate(topo, d->name, cpus, NULL, d->where, sizeof(d->where));
        hwloc_bitmap_free(cpus);
        struct ibv_context *c = ibv_open_device(list[i]);
        struct ibv_device_attr da;
        if (!c || ibv_query_device(c, &da)) {
            snprintf(d->fw, sizeof(d->fw), "(cannot open: %s)", strerror(errno));
            if (c)
                ibv_close_device(c);
            continue;
        }
        snprintf(d->fw, sizeof(d->fw), "%s", da.fw_ver);
        for (int p = 1; p <= da.phys_port_cnt && d->nports < MAX_PORTS; p++)
            gather_port(c, p, &d->port[d->nports++]);
        ibv_close_device(c);
    }
    ibv_free_device_list(list);
}
#endif

/* ---- UCX ------------------------------------------------------------------------ */

static const char *uct_type(uct_device_type_t t)
{
    switch (t) {
    case UCT_DEVICE_TYPE_NET: return "network";
    case UCT_DEVICE_TYPE_SHM: return "shared memory";
    case UCT_DEVICE_TYPE_ACC: return "accelerator";
    case UCT_DEVICE_TYPE_SELF: return "loopback";
    default: return "?";
    }
}

static void gather_ucx(struct info *in)
{
    unsigned maj, min, rel;
    ucp_get_version(&maj, &min, &rel);
    snprintf(in->ucx_version, sizeof(in->ucx_version), "%u.%u.%u", maj, min, rel);
    uct_component_h *comps;
    unsigned ncomp;
    if (uct_query_components(&comps, &ncomp) != UCS_OK) {
        snprintf(in->ucx_note, sizeof(in->ucx_note), "uct_query_components failed");
        return;
    }
    for (unsigned i = 0; i < ncomp; i++) {
        uct_component_attr_t ca = {.field_mask = UCT_COMPONENT_ATTR_FIELD_NAME |
                                                 UCT_COMPONENT_ATTR_FIELD_MD_RESOURCE_COUNT};
        if (uct_component_query(comps[i], &ca) != UCS_OK || !ca.md_resource_count)
            continue;
        uct_md_resource_desc_t *mds = calloc(ca.md_resource_count, sizeof(*mds));
        if (!mds)
            continue;
        ca.field_mask = UCT_COMPONENT_ATTR_FIELD_MD_RESOURCES;
        ca.md_resources = mds;
        if (uct_component_query(comps[i], &ca) == UCS_OK) {
            for (unsigned m = 0; m < ca.md_resource_count; m++) {
                uct_md_config_t *mc;
                uct_md_h md;
                if (uct_md_config_read(comps[i], NULL, NULL, &mc) != UCS_OK)
                    continue;
                ucs_status_t st = uct_md_open(comps[i], mds[m].md_name, mc, &md);
                uct_config_release(mc);
                if (st != UCS_OK)
                    continue;
                uct_tl_resource_desc_t *res;
                unsigned nres;
                if (uct_md_query_tl_resources(md, &res, &nres) == UCS_OK) {
                    for (unsigned r = 0; r < nres && in->ntls < MAX_TLS; r++) {
                        struct tl_info *t = &in->tl[in->ntls++];
                        snprintf(t->tl, sizeof(t->tl), "%s", res[r].tl_name);
                        snprintf(t->dev, sizeof(t->dev), "%s", res[r].dev_name);
                        t->type = uct_type(res[r].dev_type);
                    }
                    uct_release_tl_resource_list(res);
                }
                uct_md_close(md);
            }
        }
        free(mds);
    }
    uct_release_component_list(comps);
}

/* ---- topology ------------------------------------------------------------------- */

static void gather_topo(struct info *in, hwloc_topology_t t)
{
    const char *v = hwloc_obj_get_info_by_name(hwloc_get_root_obj(t), "hwlocVersion");
    snprintf(in->hwloc_version, sizeof(in->hwloc_version), "%s", v ? v : HWLOC_VERSION);
    in->packages = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PACKAGE);
    in->numa = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE);
    in->cores = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_CORE);
    in->pus = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_PU);
    hwloc_bitmap_list_snprintf(in->allowed, sizeof(in->allowed),
                               hwloc_topology_get_allowed_cpuset(t));
    hwloc_obj_t o = NULL;
    hwloc_bitmap_t cpus = hwloc_bitmap_alloc();
    while ((o = hwloc_get_next_osdev(t, o)) != NULL && in->nosdevs < MAX_OSDEVS) {
        if (!o->name || (o->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK &&
                         o->attr->osdev.type != HWLOC_OBJ_OSDEV_OPENFABRICS))
            continue;
        struct osdev_info *d = &in->osdev[in->nosdevs++];
        snprintf(d->name, sizeof(d->name), "%s", o->name);
        d->kind = o->attr->osdev.type == HWLOC_OBJ_OSDEV_NETWORK ? "network" : "RDMA";
        d->known = shoal__topo_locate(t, o->name, cpus, NULL, d->where, sizeof(d->where));
    }
    hwloc_bitmap_free(cpus);
}

static void numa_lines(hwloc_topology_t t, FILE *f, bool json, int depth);

/* ---- selection ------------------------------------------------------------------ */

static void gather_selection(struct info *in, hwloc_topology_t xml_topo)
{
    size_t n;
    const struct shoal_provider *const *provs = shoal__providers(&n);
    for (size_t i = 0; i < n && in->nprobes < 4; i++) {
        struct probe_info *p = &in->probe[in->nprobes++];
        p->name = provs[i]->name;
        if (in->cfg.transport != SHOAL_TRANSPORT_AUTO && provs[i]->transport != in->cfg.transport) {
            p->rc = 1;
            snprintf(p->why, sizeof(p->why), "not requested (--transport %s)",
                     shoal_transport_name(in->cfg.transport));
            continue;
        }
        p->rc = provs[i]->probe(&in->cfg, p->why, sizeof(p->why));
        if (p->rc == 0 && !in->picked)
            in->picked = p->name;
    }
    shoal_config_t c = in->cfg;
    c.log_level = SHOAL_LOG_ERROR;
    shoal_ctx_t *ctx = NULL;
    in->ctx_rc = shoal_ctx_create(&c, &ctx);
    char dev[SHOAL_DEVICE_MAX];
    snprintf(dev, sizeof(dev), "%s", in->cfg.device);
    if (in->ctx_rc == 0) {
        snprintf(in->describe, sizeof(in->describe), "%s", shoal_ctx_describe(ctx));
        if (ctx->device[0])
            snprintf(dev, sizeof(dev), "%s", ctx->device);
        if (!xml_topo) {
            in->plan = *shoal_ctx_placement(ctx);
            in->have_plan = true;
        }
        shoal_ctx_destroy(ctx);
    } else {
        snprintf(in->ctx_err, sizeof(in->ctx_err), "%s", shoal_strerror(in->ctx_rc));
    }
    if (!in->have_plan) {
        /* Plan on the --topology file, or on this machine when no context
         * could be made (so the placement part still says something). */
        hwloc_topology_t t = xml_topo;
        char err[400];
        int rc = 0;
        if (!t)
            rc = shoal__topo_load(NULL, dev[0] != '\0', &t, err, sizeof(err));
        struct shoal_plan p;
        if (!rc)
            rc = shoal__plan_make(t, t != xml_topo, &in->cfg, dev, &p, err, sizeof(err));
        if (rc) {
            snprintf(in->plan_err, sizeof(in->plan_err), "%s", err);
        } else {
            in->plan = p.pub;
            in->have_plan = true;
            shoal__plan_fini(&p);
        }
    }
}

/* ---- JSON ----------------------------------------------------------------------- */

struct jw {
    FILE *f;
    int depth;
    bool first[16];
};

static void j_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void j_key(struct jw *j, const char *key)
{
    if (!j->first[j->depth])
        fputc(',', j->f);
    j->first[j->depth] = false;
    fprintf(j->f, "\n%*s", 2 * j->depth, "");
    if (key) {
        j_str(j->f, key);
        fputs(": ", j->f);
    }
}

static void j_open(struct jw *j, const char *key, char brace)
{
    j_key(j, key);
    fputc(brace, j->f);
    j->first[++j->depth] = true;
}

static void j_close(struct jw *j, char brace)
{
    bool empty = j->first[j->depth];
    j->depth--;
    if (!empty)
        fprintf(j->f, "\n%*s", 2 * j->depth, "");
    fputc(brace, j->f);
}

static void j_s(struct jw *j, const char *key, const char *v)
{
    j_key(j, key);
    if (v)
        j_str(j->f, v);
    else
        fputs("null", j->f);
}

static void j_i(struct jw *j, const char *key, long v)
{
    j_key(j, key);
    fprintf(j->f, "%ld", v);
}

static void j_b(struct jw *j, const char *key, bool v)
{
    j_key(j, key);
    fputs(v ? "true" : "false", j->f);
}

static const char *policy_name(shoal_bind_t p)
{
    return p == SHOAL_BIND_AUTO ? "auto" : p == SHOAL_BIND_LIST ? "list" : "none";
}

static void print_json(const struct info *in, hwloc_topology_t t, FILE *f)
{
    struct jw j = {.f = f, .depth = 0, .first = {true}};
    fputc('{', f);
    j.first[++j.depth] = true;
    j_s(&j, "shoal_version", PACKAGE_VERSION);

    j_open(&j, "rdma", '{');
    j_b(&j, "verbs_built", in->verbs_built);
    if (in->rdma_note[0])
        j_s(&j, "note", in->rdma_note);
    j_open(&j, "devices", '[');
    for (int i = 0; i < in->ndevs; i++) {
        const struct dev_info *d = &in->dev[i];
        j_open(&j, NULL, '{');
        j_s(&j, "name", d->name);
        j_s(&j, "node_guid", d->guid);
        j_s(&j, "fw_ver", d->fw);
        j_b(&j, "locality_known", d->known);
        j_s(&j, "locality", d->where);
        j_open(&j, "ports", '[');
        for (int p = 0; p < d->nports; p++) {
            const struct port_info *pi = &d->port[p];
            j_open(&j, NULL, '{');
            j_i(&j, "port", pi->num);
            j_s(&j, "state", pi->state);
            j_s(&j, "link_layer", pi->link);
            j_i(&j, "active_mtu", pi->active_mtu);
            j_i(&j, "max_mtu", pi->max_mtu);
            if (pi->gbps > 0)
                j_i(&j, "rate_gbps", (long)pi->gbps);
            j_open(&j, "gids", '[');
            for (int g = 0; g < pi->ngids; g++) {
                j_open(&j, NULL, '{');
                j_i(&j, "index", pi->gid[g].index);
                j_s(&j, "gid", pi->gid[g].addr);
                j_s(&j, "type", pi->gid[g].type);
                j_s(&j, "netdev", pi->gid[g].netdev[0] ? pi->gid[g].netdev : NULL);
                j_close(&j, '}');
            }
            j_close(&j, ']');
            j_close(&j, '}');
        }
        j_close(&j, ']');
        j_close(&j, '}');
    }
    j_close(&j, ']');
    j_close(&j, '}');

    j_open(&j, "ucx", '{');
    j_s(&j, "version", in->ucx_version);
    if (in->ucx_note[0])
        j_s(&j, "note", in->ucx_note);
    j_open(&j, "transports", '[');
    for (int i = 0; i < in->ntls; i++) {
        j_open(&j, NULL, '{');
        j_s(&j, "transport", in->tl[i].tl);
        j_s(&j, "device", in->tl[i].dev);
        j_s(&j, "type", in->tl[i].type);
        j_close(&j, '}');
    }
    j_close(&j, ']');
    j_close(&j, '}');

    j_open(&j, "topology", '{');
    j_s(&j, "source", in->topo_source);
    j_s(&j, "hwloc_version", in->hwloc_version);
    j_i(&j, "packages", in->packages);
    j_i(&j, "numa_nodes", in->numa);
    j_i(&j, "cores", in->cores);
    j_i(&j, "pus", in->pus);
    j_s(&j, "allowed_cpus", in->allowed);
    j_open(&j, "numa", '[');
    numa_lines(t, f, true, j.depth);
    j.first[j.depth] = hwloc_get_nbobjs_by_type(t, HWLOC_OBJ_NUMANODE) == 0;
    j_close(&j, ']');
    j_open(&j, "devices", '[');
    for (int i = 0; i < in->nosdevs; i++) {
        j_open(&j, NULL, '{');
        j_s(&j, "name", in->osdev[i].name);
        j_s(&j, "kind", in->osdev[i].kind);
        j_b(&j, "locality_known", in->osdev[i].known);
        j_s(&j, "locality", in->osdev[i].where);
        j_close(&j, '}');
    }
    j_close(&j, ']');
    j_close(&j, '}');

    j_open(&j, "config", '{');
    j_s(&j, "SHOAL_TRANSPORT", shoal_transport_name(in->cfg.transport));
    j_s(&j, "SHOAL_DEVICE", in->cfg.device);
    j_s(&j, "SHOAL_BIND", in->cfg.bind);
    j_i(&j, "SHOAL_LOCAL_RANK", in->cfg.local_rank);
    j_i(&j, "SHOAL_LOCAL_SIZE", in->cfg.local_size);
    j_i(&j, "SHOAL_CONNECT_TIMEOUT", in->cfg.connect_timeout_ms);
    j_i(&j, "SHOAL_QUEUE_DEPTH", in->cfg.queue_depth);
    j_close(&j, '}');

    j_open(&j, "selection", '{');
    j_open(&j, "probes", '[');
    for (int i = 0; i < in->nprobes; i++) {
        j_open(&j, NULL, '{');
        j_s(&j, "transport", in->probe[i].name);
        j_b(&j, "usable", in->probe[i].rc == 0);
        j_s(&j, "why", in->probe[i].why);
        j_close(&j, '}');
    }
    j_close(&j, ']');
    j_s(&j, "picked", in->picked);
    if (in->ctx_rc == 0)
        j_s(&j, "context", in->describe);
    else
        j_s(&j, "context_error", in->ctx_err);
    if (in->have_plan) {
        const shoal_placement_t *p = &in->plan;
        j_open(&j, "placement", '{');
        j_s(&j, "policy", policy_name(p->policy));
        j_s(&j, "device", p->device);
        j_s(&j, "locality", p->locality);
        j_i(&j, "numa_node", p->numa_node);
        j_i(&j, "local_rank", p->local_rank);
        j_i(&j, "local_size", p->local_size);
        j_i(&j, "ncpus", p->ncpus);
        j_s(&j, "cpus", p->cpus);
        j_s(&j, "why", p->why);
        j_close(&j, '}');
    } else {
        j_s(&j, "placement_error", in->plan_err);
    }
    j_close(&j, '}');
    j_close(&j, '}');
    fputc('\n', f);
}

/* NUMA nodes: text lines, or JSON objects inside an open array. */
static void numa_lines(hwloc_topology_t t, FILE *f, bool json, int depth)
{
    hwloc_obj_t o = NULL;
    bool first = true;
    while ((o = hwloc_get_next_obj_by_type(t, HWLOC_OBJ_NUMANODE, o)) != NULL) {
        char cl[128];
        hwloc_bitmap_list_snprintf(cl, sizeof(cl), o->cpuset);
        double gib = (double)o->attr->numanode.local_memory / (1024.0 * 1024 * 1024);
        if (json)
            fprintf(f, "%s\n%*s{\"os_index\": %u, \"cpus\": \"%s\", \"memory_gib\": %.1f}",
                    first ? "" : ",", 2 * depth, "", o->os_index, cl, gib);
        else
            fprintf(f, "  NUMA node %u: CPUs %s, %.1f GiB\n", o->os_index, cl, gib);
        first = false;
    }
}

/* ---- text ----------------------------------------------------------------------- */

static void print_text(const struct info *in, hwloc_topology_t t, FILE *f)
{
    fprintf(f, "shoal-info %s\n\n", PACKAGE_VERSION);

    fprintf(f, "RDMA devices (rdma-core verbs)\n");
    if (!in->verbs_built)
        fprintf(f, "  (libshoal built --without-verbs)\n");
    else if (in->rdma_note[0])
        fprintf(f, "  none: %s\n", in->rdma_note);
    for (int i = 0; i < in->ndevs; i++) {
        const struct dev_info *d = &in->dev[i];
        fprintf(f, "  %s  node GUID %s, fw %s\n", d->name, d->guid, d->fw[0] ? d->fw : "-");
        fprintf(f, "    locality: %s\n", d->where);
        for (int p = 0; p < d->nports; p++) {
            const struct port_info *pi = &d->port[p];
            fprintf(f, "    port %d: %s, link layer %s, MTU %u (max %u)", pi->num, pi->state,
                    pi->link, pi->active_mtu, pi->max_mtu);
            if (pi->gbps > 0)
                fprintf(f, ", %g Gb/s", pi->gbps);
            fputc('\n', f);
            for (int g = 0; g < pi->ngids; g++)
                fprintf(f, "      GID[%d] %-40s %-8s %s\n", pi->gid[g].index,
                        pi->gid[g].addr, pi->gid[g].type, pi->gid[g].netdev);
            if (!pi->ngids)
                fprintf(f, "      (no GIDs)\n");
        }
    }

    fprintf(f, "\nUCX %s transports\n", in->ucx_version);
    if (in->ucx_note[0])
        fprintf(f, "  %s\n", in->ucx_note);
    for (int i = 0; i < in->ntls;) {
        /* one line per transport: "tcp: eth0, lo (network)" */
        int k = i;
        fprintf(f, "  %-10s %s:", in->tl[i].tl, in->tl[i].type);
        for (; k < in->ntls && strcmp(in->tl[k].tl, in->tl[i].tl) == 0; k++)
            fprintf(f, " %s", in->tl[k].dev);
        fputc('\n', f);
        i = k;
    }

    fprintf(f, "\nTopology (hwloc %s, %s)\n", in->hwloc_version, in->topo_source);
    fprintf(f, "  %d package%s, %d NUMA node%s, %d core%s, %d PU%s; this process may use "
            "CPUs %s\n", in->packages, in->packages == 1 ? "" : "s", in->numa,
            in->numa == 1 ? "" : "s", in->cores, in->cores == 1 ? "" : "s", in->pus,
            in->pus == 1 ? "" : "s", in->allowed);
    numa_lines(t, f, false, 0);
    if (in->numa == 1)
        fprintf(f, "  (one NUMA node: where a thread runs relative to the device cannot "
                "matter here)\n");
    for (int i = 0; i < in->nosdevs; i++)
        fprintf(f, "  %-8s %-8s %s\n", in->osdev[i].name, in->osdev[i].kind,
                in->osdev[i].where);

    fprintf(f, "\nConfiguration\n");
    shoal_config_print(&in->cfg, f);

    fprintf(f, "\nSelection (transport %s, device %s, bind %s)\n",
            shoal_transport_name(in->cfg.transport),
            in->cfg.device[0] ? in->cfg.device : "any", in->cfg.bind);
    for (int i = 0; i < in->nprobes; i++)
        fprintf(f, "  %-6s %s: %s\n", in->probe[i].name,
                in->probe[i].rc == 0 ? "usable" : in->probe[i].rc > 0 ? "skipped" : "not usable",
                in->probe[i].why);
    if (in->picked)
        fprintf(f, "  %s picks: %s\n", in->cfg.transport == SHOAL_TRANSPORT_AUTO ? "auto"
                                                                                 : "request",
                in->picked);
    if (in->ctx_rc == 0)
        fprintf(f, "  context: %s\n", in->describe);
    else
        fprintf(f, "  context: FAILED: %s\n", in->ctx_err);
    if (in->have_plan) {
        const shoal_placement_t *p = &in->plan;
        fprintf(f, "  placement: %s\n", p->why);
        if (p->device[0])
            fprintf(f, "    device %s at %s\n", p->device, p->locality);
        else
            fprintf(f, "    device: none named, so no locality to follow\n");
        if (p->policy == SHOAL_BIND_NONE)
            fprintf(f, "    threads: not bound\n");
        else
            fprintf(f, "    threads: %d compute thread%s, thread i on CPU i of [%s]\n",
                    p->ncpus, p->ncpus == 1 ? "" : "s", p->cpus);
        if (p->numa_node >= 0)
            fprintf(f, "    buffers (shoal_alloc): NUMA node %d\n", p->numa_node);
        else
            fprintf(f, "    buffers (shoal_alloc): default policy (device node unknown)\n");
    } else {
        fprintf(f, "  placement: FAILED: %s\n", in->plan_err);
    }
}

/* ---- main ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: shoal-info [options]\n"
            "Show what libshoal sees here: RDMA devices, UCX transports, the hwloc\n"
            "topology and device locality, the SHOAL_* settings, the transport auto\n"
            "picks and where threads would be bound.\n"
            "\n"
            "  -t, --transport T   auto, verbs or ucx (default: SHOAL_TRANSPORT or auto)\n"
            "  -d, --device D      RDMA device[:port] (default: SHOAL_DEVICE)\n"
            "  -b, --bind B        auto, none or a CPU list like 0-3,8 (default: SHOAL_BIND)\n"
            "  -r, --local-rank R  this process's rank on the node (with --local-size)\n"
            "  -n, --local-size N  processes on the node\n"
            "  -x, --topology F    plan on an hwloc XML topology instead of this machine\n"
            "  -j, --json          JSON instead of text\n"
            "  -h, --help          this text\n"
            "\n"
            "Exit status: 0, 1 if no context can be made with these settings, 2 for\n"
            "bad options.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"transport", required_argument, NULL, 't'}, {"device", required_argument, NULL, 'd'},
        {"bind", required_argument, NULL, 'b'},      {"local-rank", required_argument, NULL, 'r'},
        {"local-size", required_argument, NULL, 'n'}, {"topology", required_argument, NULL, 'x'},
        {"json", no_argument, NULL, 'j'},            {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    static struct info in;
    char err[400];
    bool json = false;
    const char *xml = NULL;
    shoal_config_init(&in.cfg);
    if (shoal_config_from_env(&in.cfg, err, sizeof(err))) {
        fprintf(stderr, "shoal-info: %s\n", err);
        return 2;
    }
    int c;
    while ((c = getopt_long(argc, argv, "t:d:b:r:n:x:jh", longopts, NULL)) != -1) {
        const char *name = NULL;
        switch (c) {
        case 't': name = "TRANSPORT"; break;
        case 'd': name = "DEVICE"; break;
        case 'b': name = "BIND"; break;
        case 'r': name = "LOCAL_RANK"; break;
        case 'n': name = "LOCAL_SIZE"; break;
        case 'x': xml = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
        if (name && shoal_config_set(&in.cfg, name, optarg, err, sizeof(err))) {
            fprintf(stderr, "shoal-info: %s\n", err);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal-info: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    hwloc_topology_t topo;
    if (shoal__topo_load(xml, true, &topo, err, sizeof(err))) {
        fprintf(stderr, "shoal-info: %s\n", err);
        return xml ? 2 : 1;
    }
    if (xml)
        snprintf(in.topo_source, sizeof(in.topo_source), "from %s", xml);
    else
        snprintf(in.topo_source, sizeof(in.topo_source), "this machine");
#ifdef HAVE_VERBS
    gather_rdma(&in, topo);
#endif
    gather_ucx(&in);
    gather_topo(&in, topo);
    gather_selection(&in, xml ? topo : NULL);
    if (json)
        print_json(&in, topo, stdout);
    else
        print_text(&in, topo, stdout);
    hwloc_topology_destroy(topo);
    if (!in.have_plan) {
        fprintf(stderr, "shoal-info: %s\n", in.plan_err);
        return 1;
    }
    if (in.ctx_rc) {
        fprintf(stderr, "shoal-info: no context with these settings: %s\n", in.ctx_err);
        return 1;
    }
    return 0;
}
