/*
 * main.c -- shoal-train's command line: options, the process's rank and
 * role, then the role's main.
 *
 * Rank and size come from --rank/--size, else the first launcher that
 * set them: SHOAL_RANK/SHOAL_SIZE (tools/shoal-run), Open MPI
 * (OMPI_COMM_WORLD_RANK/SIZE), PMIx (PMIX_RANK with the size from
 * OMPI_COMM_WORLD_SIZE or --size), Slurm (SLURM_PROCID/SLURM_NTASKS).
 * Ranks below --servers are servers, the rest workers.
 */
#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "layout.h"
#include "train.h"

static void usage(FILE *out)
{
    fprintf(out,
"Usage: shoal-train [OPTIONS]                 (one rank of a job: see shoal-run(1))\n"
"       shoal-train --single [OPTIONS]        (the same training in one process;\n"
"                                              --workers W [--stages K]: its batches)\n"
"       shoal-train --eval MODEL [--data DIR | --train F --test F]\n"
"       shoal-train --compare MODEL1 MODEL2 [--tolerance X]\n"
"\n"
"Data-parallel (and pipeline-parallel: --stages) SGD with parameter servers over\n"
"libshoal (RDMA verbs, or UCX).\n"
"\n"
"Job:\n"
"  -s, --servers S         server ranks (default SHOAL_SERVERS, else 1); the other\n"
"                          ranks are workers; 'colocated': every process is a worker\n"
"                          and serves one shard of the parameters in a thread of its\n"
"                          own (start it as shoal-run -s colocated, or with\n"
"                          SHOAL_SERVERS=colocated under mpirun/srun)\n"
"      --rank R --size N   this rank and the job size (default: from SHOAL_RANK/\n"
"                          SHOAL_SIZE, OMPI_COMM_WORLD_*, PMIX_RANK, SLURM_*)\n"
"      --coordinator H:P   where server 0 listens (env SHOAL_COORDINATOR)\n"
"      --rendezvous FILE   instead: server 0 listens on a free port and writes\n"
"                          \"host port\" to FILE (env SHOAL_RENDEZVOUS)\n"
"      --host ADDR         address servers listen on and advertise (env\n"
"                          SHOAL_TRAIN_HOST; default 127.0.0.1)\n"
"      --connect-timeout MS  how long to look for the servers (default 60000)\n"
"      --idle-timeout MS   no progress for this long is a failure (default 120000)\n"
"Failures:\n"
"      --fail-timeout MS   a peer silent this long is lost; heartbeats every quarter\n"
"                          of it (default 2000)\n"
"      --rejoin-timeout MS bsp: how long the servers wait for a lost worker before\n"
"                          going on without it (default 10000)\n"
"      --reconnect-timeout MS  workers: how long to keep trying a lost server\n"
"                          (default 120000)\n"
"      --checkpoint-dir DIR    servers: write checkpoints there\n"
"      --checkpoint-every N    ... every N updates (default 200)\n"
"      --checkpoint-secs S     ... and/or every S seconds (default 0: off)\n"
"      --resume            servers: start from the newest valid checkpoint\n"
"      --auth-file FILE    shared secret every rank proves in the handshake\n"
"                          (HMAC-SHA256; the same as SHOAL_AUTH_FILE)\n"
"Data (default: Fashion-MNIST from " DATA_DEFAULT_DIR "):\n"
"      --data DIR          IDX files {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]\n"
"      --train FILE --test FILE   LIBSVM text files instead\n"
"      --features N --classes K   fix the input size / class count\n"
"Model and training:\n"
"      --hidden LIST       hidden layer sizes, e.g. 256 or 512,128 (default 256);\n"
"                          0 = softmax regression\n"
"      --model softmax     the same as --hidden 0\n"
"      --mode MODE         bsp (default), async or ssp\n"
"      --staleness S       ssp: how many iterations ahead of the slowest (default 2)\n"
"  -e, --epochs N          (default 10)\n"
"  -b, --batch N           per worker, or per replica with --stages (default 64)\n"
"      --iters-per-epoch N   cap the iterations per epoch (short runs)\n"
"      --bench-rounds N    no training: time N parameter rounds (push, update,\n"
"                          parameters back) with no compute between them, after\n"
"                          50 untimed ones; worker 0 prints median and p99\n"
"      --lr X              learning rate (default 0.1)\n"
"      --momentum X        (default 0.9; async/ssp: 1 - W * 0.1, as asynchrony\n"
"                          adds momentum of its own)\n"
"      --weight-decay X    (default 0)\n"
"      --lr-schedule S     const, cosine (default) or step\n"
"      --lr-step N --lr-gamma G   step: times G every N epochs (default 3, 0.1)\n"
"      --seed N            model init and shuffles (default 1)\n"
"      --threads N         OpenBLAS threads per process (default 1)\n"
"Model and hybrid parallelism:\n"
"      --stages K          cut the model's layers into K consecutive stages on K\n"
"                          workers (balanced by parameter count, which for dense\n"
"                          layers is also compute); the W workers form W/K\n"
"                          data-parallel replicas of that pipeline (W must be a\n"
"                          multiple of K; at most one stage per layer).  Each\n"
"                          worker holds only its stage's parameters, gradients and\n"
"                          activations: use it when the model does not fit one\n"
"                          worker, or when the model is so wide that pushing all\n"
"                          of it every iteration costs more than sending\n"
"                          activations between stages (default 1: data parallel)\n"
"      --micro-batches M   stages>1: cut each replica's batch (-b) into M\n"
"                          micro-batches that flow through the stages at once\n"
"                          (GPipe); M must divide the batch; a stage is idle\n"
"                          (K-1)/(M+K-1) of the time at best (default 4)\n"
"      --pipe-dir DIR      stages>1: a directory every worker can write (shared\n"
"                          across hosts) where stages publish their addresses\n"
"                          (default: next to the --rendezvous file)\n"
"Output:\n"
"      --metrics FILE      CSV: time, epoch, iteration, loss, samples/s, accuracy\n"
"                          (with --stages, each stage's busy share too)\n"
"      --save FILE         write the final model (atomically)\n"
"      --log-interval SEC  progress line period (default 1)\n"
"      --verify            check every parameter delivery with a CRC (slower)\n"
"      --compress C        the wire format: none (fp32), fp16, bf16 (gradients pushed\n"
"                          and parameters pulled at half width; the servers keep fp32),\n"
"                          topk:R (only the largest fraction R of each gradient, with\n"
"                          error feedback), topk-noef:R (without it)\n"
"      --overlap           push each layer's gradient as soon as backward has made it\n"
"                          (the last layer first), while the layers before it compute\n"
"  -q, --quiet             no progress lines\n"
"      --compare A B       exit 0 if two saved models agree within --tolerance\n"
"                          (default 1e-4): e.g. BSP against --single\n"
"  -h, --help              this text\n"
"\n"
"Library settings come from SHOAL_* variables (SHOAL_TRANSPORT, SHOAL_DEVICE, ...):\n"
"see shoal-demo(1).\n");
}

enum {
    O_RANK = 256, O_SIZE, O_COORD, O_RDV, O_HOST, O_CTO, O_ITO, O_DATA, O_TRAIN, O_TEST,
    O_FEAT, O_CLASSES, O_HIDDEN, O_MODEL, O_MODE, O_STALE, O_IPE, O_LR, O_MOM, O_WD,
    O_SCHED, O_LRSTEP, O_GAMMA, O_SEED, O_THREADS, O_METRICS, O_SAVE, O_LOGINT, O_VERIFY, O_COMPRESS, O_OVERLAP,
    O_SINGLE, O_WORKERS, O_EVAL, O_COMPARE, O_TOL, O_FTO, O_RTO, O_RCTO, O_CKDIR, O_CKEVERY,
    O_CKSECS, O_RESUME, O_AUTH, O_BENCH, O_STAGES, O_MICRO, O_PIPEDIR,
};

static const struct option opts[] = {
    {"servers", required_argument, 0, 's'}, {"rank", required_argument, 0, O_RANK},
    {"size", required_argument, 0, O_SIZE}, {"coordinator", required_argument, 0, O_COORD},
    {"rendezvous", required_argument, 0, O_RDV}, {"host", required_argument, 0, O_HOST},
    {"connect-timeout", required_argument, 0, O_CTO},
    {"idle-timeout", required_argument, 0, O_ITO}, {"data", required_argument, 0, O_DATA},
    {"train", required_argument, 0, O_TRAIN}, {"test", required_argument, 0, O_TEST},
    {"features", required_argument, 0, O_FEAT}, {"classes", required_argument, 0, O_CLASSES},
    {"hidden", required_argument, 0, O_HIDDEN}, {"model", required_argument, 0, O_MODEL},
    {"mode", required_argument, 0, O_MODE}, {"staleness", required_argument, 0, O_STALE},
    {"epochs", required_argument, 0, 'e'}, {"batch", required_argument, 0, 'b'},
    {"iters-per-epoch", required_argument, 0, O_IPE},
    {"bench-rounds", required_argument, 0, O_BENCH}, {"lr", required_argument, 0, O_LR},
    {"momentum", required_argument, 0, O_MOM}, {"weight-decay", required_argument, 0, O_WD},
    {"lr-schedule", required_argument, 0, O_SCHED}, {"lr-step", required_argument, 0, O_LRSTEP},
    {"lr-gamma", required_argument, 0, O_GAMMA}, {"seed", required_argument, 0, O_SEED},
    {"threads", required_argument, 0, O_THREADS}, {"metrics", required_argument, 0, O_METRICS},
    {"save", required_argument, 0, O_SAVE}, {"log-interval", required_argument, 0, O_LOGINT},
    {"verify", no_argument, 0, O_VERIFY}, {"compress", required_argument, 0, O_COMPRESS}, {"single", no_argument, 0, O_SINGLE},
    {"overlap", no_argument, 0, O_OVERLAP},
    {"workers", required_argument, 0, O_WORKERS}, {"eval", required_argument, 0, O_EVAL},
    {"fail-timeout", required_argument, 0, O_FTO},
    {"rejoin-timeout", required_argument, 0, O_RTO},
    {"reconnect-timeout", required_argument, 0, O_RCTO},
    {"checkpoint-dir", required_argument, 0, O_CKDIR},
    {"checkpoint-every", required_argument, 0, O_CKEVERY},
    {"checkpoint-secs", required_argument, 0, O_CKSECS}, {"resume", no_argument, 0, O_RESUME},
    {"auth-file", required_argument, 0, O_AUTH},
    {"stages", required_argument, 0, O_STAGES},
    {"micro-batches", required_argument, 0, O_MICRO},
    {"pipe-dir", required_argument, 0, O_PIPEDIR},
    {"compare", required_argument, 0, O_COMPARE}, {"tolerance", required_argument, 0, O_TOL},
    {"quiet", no_argument, 0, 'q'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};

static const char *opt_name(int code)
{
    for (const struct option *o = opts; o->name; o++)
        if (o->val == code)
            return o->name;
    return "?";
}

/* Strict numbers: the whole argument, in range, or a message and exit 2. */
static long num(int code, const char *arg, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end || errno || v < lo || v > hi) {
        fprintf(stderr, "shoal-train: --%s: '%s' is not an integer in [%ld, %ld]\n",
                opt_name(code), arg, lo, hi);
        exit(2);
    }
    return v;
}

static double real(int code, const char *arg, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (end == arg || *end || errno || !(v >= lo && v <= hi)) {
        fprintf(stderr, "shoal-train: --%s: '%s' is not a number in [%g, %g]\n",
                opt_name(code), arg, lo, hi);
        exit(2);
    }
    return v;
}

static void copy(char *dst, size_t cap, int code, const char *arg)
{
    if (strlen(arg) >= cap) {
        fprintf(stderr, "shoal-train: --%s: argument too long\n", opt_name(code));
        exit(2);
    }
    memcpy(dst, arg, strlen(arg) + 1);
}

static int parse_hostport(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= cap)
        return -1;
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    *port = (uint16_t)p;
    return 0;
}

/* An environment integer, or -1 when unset; malformed is fatal. */
static long env_num(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return -1;
    char *end;
    long n = strtol(v, &end, 10);
    if (*end || n < 0 || n > INT_MAX) {
        fprintf(stderr, "shoal-train: %s='%s' is not a rank or size\n", name, v);
        exit(2);
    }
    return n;
}

static void find_rank(struct train_cfg *c)
{
    static const char *const pairs[][2] = {{"SHOAL_RANK", "SHOAL_SIZE"},
                                           {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"},
                                           {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE"},
                                           {"SLURM_PROCID", "SLURM_NTASKS"}};
    for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
        long r = env_num(pairs[i][0]), n = env_num(pairs[i][1]);
        if (c->rank < 0 && r >= 0)
            c->rank = (int)r;
        if (c->size < 0 && n >= 0 && r >= 0)
            c->size = (int)n;
    }
    static const char *const local[] = {"SHOAL_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                                        "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof(local) / sizeof(local[0]) && c->local_rank < 0; i++)
        c->local_rank = (int)env_num(local[i]);
    if (c->local_rank < 0)
        c->local_rank = 0;
}

/*
 * OpenBLAS picks its kernels from the CPU model, and on virtual CPUs that
 * report a generic model ("Intel Xeon Processor") it falls back to its
 * oldest x86-64 kernels (Prescott, SSE3) even when the CPU has AVX-512:
 * three times slower here.  It reads OPENBLAS_CORETYPE only when it loads,
 * so when that happened and the user set nothing, pick the kernel from the
 * CPU's features and start again with it.
 */
static void fix_openblas_core(char **argv)
{
    static const char *const weak[] = {"prescott", "core2", "penryn", "dunnington",
                                       "nehalem", "atom", "northwood", "banias", "katmai",
                                       "coppermine", "unknown"};
    if (getenv("OPENBLAS_CORETYPE") || getenv("SHOAL_TRAIN_REEXEC"))
        return;
    const char *core = openblas_get_corename();
    bool is_weak = false;
    for (size_t i = 0; core && i < sizeof(weak) / sizeof(weak[0]); i++)
        is_weak |= strcasecmp(core, weak[i]) == 0;
    if (!is_weak)
        return;
    __builtin_cpu_init();
    const char *want = NULL;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
        want = "SkylakeX";
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        want = "Haswell";
    else if (__builtin_cpu_supports("avx"))
        want = "Sandybridge";
    if (!want)
        return;
    setenv("OPENBLAS_CORETYPE", want, 1);
    setenv("SHOAL_TRAIN_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* Could not: carry on with the slow kernels. */
}

int main(int argc, char **argv)
{
    fix_openblas_core(argv);
    struct train_cfg c = {
        .rank = -1, .size = -1, .local_rank = -1, .servers = 1, .workers = 0,
        .connect_timeout_ms = 60000, .idle_timeout_ms = 120000, .fail_timeout_ms = 2000,
        .rejoin_timeout_ms = 10000, .reconnect_timeout_ms = 120000, .checkpoint_every = 200,
        .hidden = {256}, .nhidden = 1, .mode = SHOAL_PS_BSP, .staleness = 2, .epochs = 10,
        .batch = 64, .seed = 1, .threads = 1, .log_interval = 1.0, .stages = 1, .micro = 0,
        .opt = {.lr = 0.1f, .momentum = 0.9f, .schedule = SHOAL_PS_LR_COSINE, .step_epochs = 3,
                .gamma = 0.1f},
    };
    snprintf(c.data_dir, sizeof(c.data_dir), "%s", DATA_DEFAULT_DIR);
    snprintf(c.host, sizeof(c.host), "%s",
             getenv("SHOAL_TRAIN_HOST") ? getenv("SHOAL_TRAIN_HOST") : "127.0.0.1");
    const char *coord = getenv("SHOAL_COORDINATOR");
    if (getenv("SHOAL_RENDEZVOUS"))
        copy(c.rendezvous, sizeof(c.rendezvous), O_RDV, getenv("SHOAL_RENDEZVOUS"));
    const char *sv = getenv("SHOAL_SERVERS");
    if (sv && !strcmp(sv, "colocated")) {
        c.colocated = true;
    } else {
        long env_servers = env_num("SHOAL_SERVERS");
        if (env_servers > 0)
            c.servers = (int)env_servers;
    }
    bool single = false;
    const char *eval = NULL, *compare = NULL;
    double tolerance = 1e-4;
    int o;
    while ((o = getopt_long(argc, argv, "s:e:b:qh", opts, NULL)) != -1) {
        switch (o) {
        case 's':
            if (!strcmp(optarg, "colocated")) {
                c.colocated = true;
            } else {
                c.servers = (int)num(o, optarg, 1, SHOAL_PS_MAX_SERVERS);
                c.colocated = false;
            }
            break;
        case O_RANK: c.rank = (int)num(o, optarg, 0, INT_MAX); break;
        case O_SIZE: c.size = (int)num(o, optarg, 2, SHOAL_PS_MAX_SERVERS + SHOAL_PS_MAX_WORKERS); break;
        case O_COORD: coord = optarg; break;
        case O_RDV: copy(c.rendezvous, sizeof(c.rendezvous), o, optarg); break;
        case O_HOST: copy(c.host, sizeof(c.host), o, optarg); break;
        case O_CTO: c.connect_timeout_ms = (int)num(o, optarg, 100, 3600000); break;
        case O_ITO: c.idle_timeout_ms = (int)num(o, optarg, 100, 86400000); break;
        case O_DATA: copy(c.data_dir, sizeof(c.data_dir), o, optarg); break;
        case O_TRAIN: copy(c.train_file, sizeof(c.train_file), o, optarg); break;
        case O_TEST: copy(c.test_file, sizeof(c.test_file), o, optarg); break;
        case O_FEAT: c.features = (int)num(o, optarg, 1, 1 << 26); break;
        case O_CLASSES: c.classes = (int)num(o, optarg, 2, DATA_MAX_CLASSES); break;
        case O_HIDDEN:
            c.nhidden = model_parse_hidden(optarg, c.hidden, MODEL_MAX_LAYERS - 1);
            if (c.nhidden < 0) {
                fprintf(stderr, "shoal-train: --hidden: '%s' is not a list of layer sizes "
                        "(e.g. 256 or 512,128; at most %d)\n", optarg, MODEL_MAX_LAYERS - 1);
                return 2;
            }
            break;
        case O_MODEL:
            if (strcmp(optarg, "softmax") == 0) {
                c.nhidden = 0;
            } else if (strcmp(optarg, "mlp") != 0) {
                fprintf(stderr, "shoal-train: --model: '%s' is not softmax or mlp\n", optarg);
                return 2;
            }
            break;
        case O_MODE:
            if (strcmp(optarg, "bsp") == 0) c.mode = SHOAL_PS_BSP;
            else if (strcmp(optarg, "async") == 0) c.mode = SHOAL_PS_ASYNC;
            else if (strcmp(optarg, "ssp") == 0) c.mode = SHOAL_PS_SSP;
            else {
                fprintf(stderr, "shoal-train: --mode: '%s' is not bsp, async or ssp\n", optarg);
                return 2;
            }
            break;
        case O_STALE: c.staleness = (int)num(o, optarg, 0, 1000000); break;
        case 'e': c.epochs = (int)num(o, optarg, 1, 100000); break;
        case 'b': c.batch = (int)num(o, optarg, 1, 1 << 20); break;
        case O_IPE: c.iters_per_epoch = (int)num(o, optarg, 1, INT_MAX); break;
        case O_BENCH: c.bench_rounds = (int)num(o, optarg, 1, 10000000); break;
        case O_LR: c.opt.lr = (float)real(o, optarg, 0, 1e3); break;
        case O_MOM:
            c.opt.momentum = (float)real(o, optarg, 0, 0.9999);
            c.momentum_set = true;
            break;
        case O_WD: c.opt.weight_decay = (float)real(o, optarg, 0, 1); break;
        case O_SCHED: {
            shoal_ps_schedule_t sc;
            if (shoal_ps_parse_schedule(optarg, &sc)) {
                fprintf(stderr, "shoal-train: --lr-schedule: '%s' is not const, cosine or "
                        "step\n", optarg);
                return 2;
            }
            c.opt.schedule = sc;
            break;
        }
        case O_LRSTEP: c.opt.step_epochs = (int)num(o, optarg, 1, 100000); break;
        case O_GAMMA: c.opt.gamma = (float)real(o, optarg, 0, 1); break;
        case O_SEED: c.seed = (uint64_t)num(o, optarg, 0, LONG_MAX); break;
        case O_THREADS: c.threads = (int)num(o, optarg, 1, 1024); break;
        case O_METRICS: copy(c.metrics, sizeof(c.metrics), o, optarg); break;
        case O_SAVE: copy(c.save, sizeof(c.save), o, optarg); break;
        case O_LOGINT: c.log_interval = real(o, optarg, 0.01, 86400); break;
        case O_VERIFY: c.verify = true; break;
        case O_OVERLAP: c.overlap = true; break;
        case O_COMPRESS:
            if (shoal_ps_parse_compress(optarg, &c.compress, &c.topk_ratio)) {
                fprintf(stderr, "shoal-train: --compress: '%s' is not none, fp16, bf16, topk:R "
                        "or topk-noef:R (R in (0, 1], e.g. topk:0.01)\n", optarg);
                return 2;
            }
            break;
        case O_SINGLE: single = true; break;
        case O_WORKERS: c.workers = (int)num(o, optarg, 1, SHOAL_PS_MAX_WORKERS); break;
        case O_EVAL: eval = optarg; break;
        case O_COMPARE: compare = optarg; break;
        case O_FTO: c.fail_timeout_ms = (int)num(o, optarg, 100, 3600000); break;
        case O_RTO: c.rejoin_timeout_ms = (int)num(o, optarg, 0, 86400000); break;
        case O_RCTO: c.reconnect_timeout_ms = (int)num(o, optarg, 100, 86400000); break;
        case O_CKDIR: copy(c.checkpoint_dir, sizeof(c.checkpoint_dir), o, optarg); break;
        case O_CKEVERY: c.checkpoint_every = (int)num(o, optarg, 0, INT_MAX); break;
        case O_CKSECS: c.checkpoint_secs = real(o, optarg, 0, 86400); break;
        case O_RESUME: c.resume = true; break;
        case O_AUTH:
            /* libshoal reads it with the other SHOAL_* settings. */
            if (access(optarg, R_OK) != 0) {
                fprintf(stderr, "shoal-train: --auth-file: %s: %s\n", optarg, strerror(errno));
                return 2;
            }
            setenv("SHOAL_AUTH_FILE", optarg, 1);
            break;
        case O_TOL: tolerance = real(o, optarg, 0, 1e9); break;
        case O_STAGES: c.stages = (int)num(o, optarg, 1, MODEL_MAX_LAYERS); break;
        case O_MICRO: c.micro = (int)num(o, optarg, 1, LAYOUT_MAX_MICRO); break;
        case O_PIPEDIR: copy(c.pipe_dir, sizeof(c.pipe_dir), o, optarg); break;
        case 'q': c.quiet = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (compare) {
        if (optind + 1 != argc) {
            fprintf(stderr, "shoal-train: --compare takes two model files\n");
            return 2;
        }
        return compare_main(compare, argv[optind], tolerance);
    }
    if (optind < argc) {
        fprintf(stderr, "shoal-train: unexpected argument '%s' (see --help)\n", argv[optind]);
        return 2;
    }
    if (c.resume && !c.checkpoint_dir[0]) {
        fprintf(stderr, "shoal-train: --resume needs --checkpoint-dir\n");
        return 2;
    }
    if (!!c.train_file[0] != !!c.test_file[0]) {
        fprintf(stderr, "shoal-train: --train and --test go together (LIBSVM files)\n");
        return 2;
    }
    if (c.stages == 1 && c.micro > 1) {
        fprintf(stderr, "shoal-train: --micro-batches cuts a pipeline's batch: it needs "
                "--stages 2 or more\n");
        return 2;
    }
    if (c.micro == 0)
        c.micro = c.stages > 1 ? 4 : 1;
    char lerr[256];
    /* The layout, as far as it is known before the job (workers below). */
    if (layout_check(single ? c.workers : 0, c.stages, c.nhidden + 1, c.batch, c.micro, lerr,
                     sizeof(lerr))) {
        fprintf(stderr, "shoal-train: %s\n", lerr);
        return 2;
    }
    if (c.stages > 1 && c.bench_rounds) {
        fprintf(stderr, "shoal-train: --bench-rounds times the parameter round of data "
                "parallelism; it does not run with --stages\n");
        return 2;
    }
    openblas_set_num_threads(c.threads);
    if (eval)
        return eval_main(&c, eval);
    if (single) {
        /* The same global batches: one shard per replica. */
        if (c.stages > 1)
            c.workers = (c.workers > 0 ? c.workers : c.stages) / c.stages;
        return single_main(&c);
    }
    if (c.bench_rounds > 0)
        c.epochs = 1; /* the rounds are one epoch of iterations */

    find_rank(&c);
    if (c.rank < 0 || c.size < 0) {
        fprintf(stderr, "shoal-train: no rank/size: start it with shoal-run, mpirun or srun, "
                "or give --rank and --size (or use --single)\n");
        return 2;
    }
    if (c.colocated) {
        /* every process is a worker and serves one shard */
        if (c.size > SHOAL_PS_MAX_SERVERS) {
            fprintf(stderr, "shoal-train: --servers colocated: %d processes, at most %d\n",
                    c.size, SHOAL_PS_MAX_SERVERS);
            return 2;
        }
        c.servers = c.size;
        c.size *= 2;
        c.rank += c.servers;
    }
    if (c.size <= c.servers || c.rank >= c.size) {
        fprintf(stderr, "shoal-train: rank %d of %d with %d servers: a job needs at least one "
                "worker and rank < size\n", c.rank, c.size, c.servers);
        return 2;
    }
    if (c.workers > 0 && c.workers != c.size - c.servers) {
        fprintf(stderr, "shoal-train: --workers %d, but %d ranks and %d servers make %d\n",
                c.workers, c.size, c.servers, c.size - c.servers);
        return 2;
    }
    c.workers = c.size - c.servers;
    if (c.workers > SHOAL_PS_MAX_WORKERS) {
        fprintf(stderr, "shoal-train: %d workers; at most %d\n", c.workers, SHOAL_PS_MAX_WORKERS);
        return 2;
    }
    if (layout_check(c.workers, c.stages, c.nhidden + 1, c.batch, c.micro, lerr,
                     sizeof(lerr))) {
        fprintf(stderr, "shoal-train: %s\n", lerr);
        return 2;
    }
    if (c.stages > 1 && !c.rendezvous[0] && !c.pipe_dir[0]) {
        fprintf(stderr, "shoal-train: --stages: where do the stages meet? give --pipe-dir DIR "
                "(a directory every worker can write) or --rendezvous FILE\n");
        return 2;
    }
    if (!c.rendezvous[0]) {
        if (!coord) {
            fprintf(stderr, "shoal-train: where is server 0? give --coordinator HOST:PORT or "
                    "--rendezvous FILE\n");
            return 2;
        }
        if (parse_hostport(coord, c.coord_host, sizeof(c.coord_host), &c.coord_port)) {
            fprintf(stderr, "shoal-train: coordinator '%s' is not HOST:PORT\n", coord);
            return 2;
        }
    }
    if (c.rank < c.servers)
        return server_main(&c);
    return c.stages > 1 ? stage_main(&c) : worker_main(&c);
}
