/*
 * config.c -- the SHOAL_* configuration table.
 *
 * Every option is one row: its name (the environment variable without the
 * SHOAL_ prefix), default, help text, and a parser that writes one field of
 * shoal_config_t.  shoal_config_from_env() reads them all; shoal-info and
 * `--help` outputs print them with shoal_config_print().  Nothing else in
 * the library reads the environment for its own settings.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core.h"

typedef int (*parse_fn)(shoal_config_t *cfg, const char *val, char *err,
                        size_t errlen);
typedef void (*show_fn)(const shoal_config_t *cfg, char *out, size_t outlen);

struct option_row {
    const char *name;
    const char *dflt;
    const char *help;
    parse_fn parse;
    show_fn show;
};

static const char *const transport_names[] = {"auto", "verbs", "ucx"};
static const char *const level_names[] = {"error", "warn", "info", "debug",
                                          "trace"};

const char *shoal_transport_name(shoal_transport_t t)
{
    if ((unsigned)t < sizeof(transport_names) / sizeof(transport_names[0]))
        return transport_names[t];
    return "?";
}

/* Match @val against @names (case-insensitive); index or -1. */
static int lookup(const char *val, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (strcasecmp(val, names[i]) == 0)
            return i;
    return -1;
}

static int parse_int(const char *name, const char *val, long lo, long hi,
                     int *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || end == val || *end != '\0' || v < lo || v > hi) {
        snprintf(err, errlen, "SHOAL_%s='%s': expected an integer from %ld to %ld",
                 name, val, lo, hi);
        return -EINVAL;
    }
    *out = (int)v;
    return 0;
}

static int parse_transport(shoal_config_t *cfg, const char *val, char *err,
                           size_t errlen)
{
    int i = lookup(val, transport_names, 3);
    if (i < 0) {
        snprintf(err, errlen, "SHOAL_TRANSPORT='%s': expected auto, verbs or ucx", val);
        return -EINVAL;
    }
    cfg->transport = (shoal_transport_t)i;
    return 0;
}

static void show_transport(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s", shoal_transport_name(cfg->transport));
}

static int parse_device(shoal_config_t *cfg, const char *val, char *err,
                        size_t errlen)
{
    if (strlen(val) >= sizeof(cfg->device)) {
        snprintf(err, errlen, "SHOAL_DEVICE='%s': longer than %zu characters",
                 val, sizeof(cfg->device) - 1);
        return -EINVAL;
    }
    for (const char *p = val; *p; p++) {
        if (*p <= ' ' || *p == '/') {
            snprintf(err, errlen, "SHOAL_DEVICE='%s': blanks and '/' are not allowed", val);
            return -EINVAL;
        }
    }
    strcpy(cfg->device, val);
    return 0;
}

static void show_device(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s", cfg->device[0] ? cfg->device : "(any)");
}

static int parse_level(shoal_config_t *cfg, const char *val, char *err,
                       size_t errlen)
{
    int i = lookup(val, level_names, 5);
    if (i < 0) {
        snprintf(err, errlen,
                 "SHOAL_LOG_LEVEL='%s': expected error, warn, info, debug or trace", val);
        return -EINVAL;
    }
    cfg->log_level = (shoal_log_level_t)i;
    return 0;
}

static void show_level(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s", level_names[cfg->log_level]);
}

static int parse_timeout(shoal_config_t *cfg, const char *val, char *err,
                         size_t errlen)
{
    return parse_int("CONNECT_TIMEOUT", val, 1, 3600 * 1000,
                     &cfg->connect_timeout_ms, err, errlen);
}

static void show_timeout(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%d", cfg->connect_timeout_ms);
}

static int parse_depth(shoal_config_t *cfg, const char *val, char *err,
                       size_t errlen)
{
    return parse_int("QUEUE_DEPTH", val, 1, 1 << 20, &cfg->queue_depth, err,
                     errlen);
}

static void show_depth(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%d", cfg->queue_depth);
}

static int parse_bind(shoal_config_t *cfg, const char *val, char *err,
                      size_t errlen)
{
    if (strlen(val) >= sizeof(cfg->bind)) {
        snprintf(err, errlen, "SHOAL_BIND: longer than %zu characters", sizeof(cfg->bind) - 1);
        return -EINVAL;
    }
    int rc = shoal__bind_check(val, err, errlen);
    if (rc == 0)
        for (size_t i = 0; i <= strlen(val); i++)
            cfg->bind[i] = (char)tolower((unsigned char)val[i]);
    return rc;
}

static void show_bind(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s", cfg->bind);
}

/* LOCAL_RANK / LOCAL_SIZE: "" = ask the launcher (-1). */
static int parse_local(const char *name, const char *val, long lo, int *out, char *err,
                       size_t errlen)
{
    if (!*val) {
        *out = -1;
        return 0;
    }
    return parse_int(name, val, lo, 1 << 20, out, err, errlen);
}

static int parse_lrank(shoal_config_t *cfg, const char *val, char *err, size_t errlen)
{
    return parse_local("LOCAL_RANK", val, 0, &cfg->local_rank, err, errlen);
}

static int parse_lsize(shoal_config_t *cfg, const char *val, char *err, size_t errlen)
{
    return parse_local("LOCAL_SIZE", val, 1, &cfg->local_size, err, errlen);
}

static void show_lrank(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, cfg->local_rank < 0 ? "(launcher)" : "%d", cfg->local_rank);
}

static void show_lsize(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, cfg->local_size < 0 ? "(launcher)" : "%d", cfg->local_size);
}

static int parse_auth(shoal_config_t *cfg, const char *val, char *err, size_t errlen)
{
    if (strlen(val) >= sizeof(cfg->auth_file)) {
        snprintf(err, errlen, "SHOAL_AUTH_FILE: longer than %zu characters",
                 sizeof(cfg->auth_file) - 1);
        return -EINVAL;
    }
    strcpy(cfg->auth_file, val);
    return 0;
}

static void show_auth(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s", cfg->auth_file[0] ? cfg->auth_file : "(none)");
}

static int parse_spin(shoal_config_t *cfg, const char *val, char *err, size_t errlen)
{
    if (strcmp(val, "auto") == 0) {
        cfg->spin_us = -1;
        return 0;
    }
    int rc = parse_int("SPIN_US", val, 0, 1000000, &cfg->spin_us, err, errlen);
    if (rc)
        snprintf(err, errlen, "SHOAL_SPIN_US='%s': expected auto or an integer from 0 to "
                 "1000000 (microseconds)", val);
    return rc;
}

static void show_spin(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, cfg->spin_us < 0 ? "auto" : "%d", cfg->spin_us);
}

static const char *const progress_names[] = {"off", "thread"};

static int parse_progress(shoal_config_t *cfg, const char *val, char *err, size_t errlen)
{
    int i = lookup(val, progress_names, 2);
    if (i < 0) {
        snprintf(err, errlen, "SHOAL_PROGRESS='%s': expected off or thread", val);
        return -EINVAL;
    }
    cfg->progress = (shoal_progress_t)i;
    return 0;
}

static void show_progress(const shoal_config_t *cfg, char *out, size_t n)
{
    snprintf(out, n, "%s", (unsigned)cfg->progress < 2 ? progress_names[cfg->progress] : "?");
}

static const struct option_row options[] = {
    {"TRANSPORT", "auto",
     "transport: auto (verbs when an active RDMA port exists, else ucx), verbs, ucx",
     parse_transport, show_transport},
    {"DEVICE", "", "RDMA device[:port] to use (e.g. rxe0, mlx5_0:1); empty = first active",
     parse_device, show_device},
    {"LOG_LEVEL", "warn", "log level: error, warn, info, debug, trace",
     parse_level, show_level},
    {"CONNECT_TIMEOUT", "10000", "connect and handshake timeout in milliseconds",
     parse_timeout, show_timeout},
    {"QUEUE_DEPTH", "4096", "outstanding operations allowed per endpoint",
     parse_depth, show_depth},
    {"BIND", "auto",
     "thread placement: auto (cores near the device, split between local processes), "
     "none, or a CPU list like 0-3,8",
     parse_bind, show_bind},
    {"LOCAL_RANK", "", "this process's rank on the node; empty = from Open MPI, MPICH or Slurm",
     parse_lrank, show_lrank},
    {"LOCAL_SIZE", "", "processes on the node (with LOCAL_RANK); empty = from the launcher",
     parse_lsize, show_lsize},
    {"AUTH_FILE", "",
     "file with the job's shared secret (not readable by others); connections are "
     "authenticated with HMAC-SHA256 and peers without it refused; empty = no authentication",
     parse_auth, show_auth},
    {"SPIN_US", "auto",
     "microseconds shoal_wait polls before it sleeps: auto (100; 5 when more local processes "
     "than CPUs share the node, where a polling process takes the CPU its peers need) or a "
     "number",
     parse_spin, show_spin},
    {"PROGRESS", "off",
     "who progresses a context while the application computes: off (only its own calls: "
     "a target must poll for puts aimed at it to complete on UCX over TCP) or thread (a "
     "thread of the context's own, asleep in the transport's fd when there is nothing to do)",
     parse_progress, show_progress},
};
#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

void shoal_config_init(shoal_config_t *cfg)
{
    char err[8];
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < N_OPTIONS; i++)
        (void)options[i].parse(cfg, options[i].dflt, err, sizeof(err));
}

int shoal_config_set(shoal_config_t *cfg, const char *name, const char *value,
                     char *err, size_t errlen)
{
    char dummy[256];
    if (!err) {
        err = dummy;
        errlen = sizeof(dummy);
    }
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strcasecmp(name, options[i].name) == 0)
            return options[i].parse(cfg, value, err, errlen);
    snprintf(err, errlen, "SHOAL_%s: no such option", name);
    return -ENOENT;
}

int shoal_config_from_env(shoal_config_t *cfg, char *err, size_t errlen)
{
    shoal_config_t tmp = *cfg;
    char name[64];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        snprintf(name, sizeof(name), "SHOAL_%s", options[i].name);
        const char *v = getenv(name);
        if (!v)
            continue;
        int rc = shoal_config_set(&tmp, options[i].name, v, err, errlen);
        if (rc)
            return rc;
    }
    *cfg = tmp;
    return 0;
}

void shoal_config_print(const shoal_config_t *cfg, FILE *out)
{
    char val[128];
    for (size_t i = 0; i < N_OPTIONS; i++) {
        options[i].show(cfg, val, sizeof(val));
        fprintf(out, "SHOAL_%-16s = %-12s # %s (default: %s)\n", options[i].name,
                val, options[i].help, options[i].dflt[0] ? options[i].dflt : "empty");
    }
}
