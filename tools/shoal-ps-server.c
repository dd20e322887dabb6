/*
 * shoal-ps-server -- a parameter server for any job: owns one shard of
 * the parameters the workers declare and runs the optimizer they ask for
 * (see shoal_ps.h).  Rank and size come from the launcher, as for the
 * workers; ranks below --servers serve.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal_ps.h"

static void usage(FILE *f)
{
    fprintf(f,
"usage: shoal-ps-server [options]\n"
"  Serve one shard of a shoal parameter-server job until every worker is done.\n"
"  Rank and size come from the launcher (SHOAL_RANK/SHOAL_SIZE from shoal-run,\n"
"  Open MPI, PMIx, Slurm) unless given; ranks below --servers are servers.\n"
"\n"
"  -s, --servers N          servers in the job (default 1; SHOAL_SERVERS)\n"
"      --rank R --size N    this rank and the job size\n"
"      --coordinator H:P    where server 0 listens (SHOAL_COORDINATOR)\n"
"      --rendezvous FILE    or: server 0 writes host:port there (SHOAL_RENDEZVOUS)\n"
"      --host H             the address this server listens on (servers > 0)\n"
"      --checkpoint-dir D   write checkpoints to D\n"
"      --checkpoint-every N updates between checkpoints (default 200)\n"
"      --checkpoint-secs S  and/or seconds between checkpoints\n"
"      --resume             start from the newest valid checkpoint in D\n"
"      --connect-timeout MS --idle-timeout MS --fail-timeout MS --rejoin-timeout MS\n"
"  -q, --quiet              fewer messages\n"
"  -h, --help               this text\n"
"The job (mode, optimizer, learning rate, schedule, parameters) comes from the\n"
"workers; SHOAL_* variables configure the transport (shoal-demo(1)).\n");
}

static long num(const char *opt, const char *v, long lo, long hi)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < lo || n > hi) {
        fprintf(stderr, "shoal-ps-server: --%s '%s': expected a number in [%ld, %ld]\n", opt,
                v, lo, hi);
        exit(2);
    }
    return n;
}

static void copy(char *dst, size_t cap, const char *opt, const char *v)
{
    if (strlen(v) >= cap) {
        fprintf(stderr, "shoal-ps-server: --%s: longer than %zu bytes\n", opt, cap - 1);
        exit(2);
    }
    strcpy(dst, v);
}

int main(int argc, char **argv)
{
    shoal_ps_config_t c;
    char err[1024];
    shoal_ps_config_init(&c);
    if (shoal_ps_config_from_env(&c, err, sizeof(err))) {
        fprintf(stderr, "shoal-ps-server: %s\n", err);
        return 2;
    }
    enum { O_RANK = 256, O_SIZE, O_COORD, O_RDV, O_HOST, O_CKD, O_CKE, O_CKS, O_RESUME,
           O_CTO, O_ITO, O_FTO, O_RTO };
    static const struct option opts[] = {
        {"servers", required_argument, 0, 's'}, {"rank", required_argument, 0, O_RANK},
        {"size", required_argument, 0, O_SIZE}, {"coordinator", required_argument, 0, O_COORD},
        {"rendezvous", required_argument, 0, O_RDV}, {"host", required_argument, 0, O_HOST},
        {"checkpoint-dir", required_argument, 0, O_CKD},
        {"checkpoint-every", required_argument, 0, O_CKE},
        {"checkpoint-secs", required_argument, 0, O_CKS}, {"resume", no_argument, 0, O_RESUME},
        {"connect-timeout", required_argument, 0, O_CTO},
        {"idle-timeout", required_argument, 0, O_ITO},
        {"fail-timeout", required_argument, 0, O_FTO},
        {"rejoin-timeout", required_argument, 0, O_RTO}, {"quiet", no_argument, 0, 'q'},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "s:qh", opts, NULL)) != -1) {
        switch (o) {
        case 's': c.servers = (int)num("servers", optarg, 1, SHOAL_PS_MAX_SERVERS); break;
        case O_RANK: c.rank = (int)num("rank", optarg, 0, INT_MAX); break;
        case O_SIZE: c.size = (int)num("size", optarg, 2, INT_MAX); break;
        case O_COORD: copy(c.coordinator, sizeof(c.coordinator), "coordinator", optarg); break;
        case O_RDV: copy(c.rendezvous, sizeof(c.rendezvous), "rendezvous", optarg); break;
        case O_HOST: copy(c.host, sizeof(c.host), "host", optarg); break;
        case O_CKD: copy(c.checkpoint_dir, sizeof(c.checkpoint_dir), "checkpoint-dir", optarg);
            break;
        case O_CKE: c.checkpoint_every = (int)num("checkpoint-every", optarg, 0, INT_MAX); break;
        case O_CKS: c.checkpoint_secs = (double)num("checkpoint-secs", optarg, 0, 86400); break;
        case O_RESUME: c.resume = true; break;
        case O_CTO: c.connect_timeout_ms = (int)num("connect-timeout", optarg, 100, 3600000);
            break;
        case O_ITO: c.idle_timeout_ms = (int)num("idle-timeout", optarg, 100, 86400000); break;
        case O_FTO: c.fail_timeout_ms = (int)num("fail-timeout", optarg, 100, 3600000); break;
        case O_RTO: c.rejoin_timeout_ms = (int)num("rejoin-timeout", optarg, 0, 86400000);
            break;
        case 'q': c.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "shoal-ps-server: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (c.resume && !c.checkpoint_dir[0]) {
        fprintf(stderr, "shoal-ps-server: --resume needs --checkpoint-dir\n");
        return 2;
    }
    int rc = shoal_ps_serve(&c, err, sizeof(err));
    if (rc) {
        fprintf(stderr, "shoal-ps-server: %s\n", err);
        return 1;
    }
    return 0;
}
