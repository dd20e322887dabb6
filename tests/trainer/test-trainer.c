/*
 * test-trainer.c -- shoal-train's parts on their own: the IDX and LIBSVM
 * readers (good files and every kind of bad one), the model's gradient
 * against finite differences, the protocol codec against truncated and
 * random messages, model files, the learning-rate schedules, and
 * checkpoints (through the background writer; corrupt, truncated and
 * unwritable ones).
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "cu.h"
#include "data.h"
#include "model.h"
#include "modelfile.h"
#include "ps_ckpt.h"
#include "ps_ckwriter.h"
#include "ps_int.h"
#include "ps_optim.h"
#include "ps_proto.h"
#include "rng.h"
#include "train.h"

static char dir[256];

static const char *path(const char *name)
{
    static char p[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
    return p[k];
}

static void write_file(const char *name, const void *data, size_t len, int gz)
{
    if (gz) {
        gzFile f = gzopen(path(name), "wb");
        CU_ASSERT_FATAL(f != NULL);
        CU_ASSERT_FATAL(gzwrite(f, data, (unsigned)len) == (int)len);
        gzclose(f);
    } else {
        FILE *f = fopen(path(name), "wb");
        CU_ASSERT_FATAL(f != NULL);
        CU_ASSERT_FATAL(fwrite(data, 1, len, f) == len);
        fclose(f);
    }
}

static void be32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

/* n images of r x c, pixel = (i + j) % 256; labels i % 3. */
static size_t make_images(uint8_t *buf, uint32_t n, uint32_t r, uint32_t c)
{
    be32(buf, 0x00000803);
    be32(buf + 4, n);
    be32(buf + 8, r);
    be32(buf + 12, c);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t j = 0; j < r * c; j++)
            buf[16 + i * r * c + j] = (uint8_t)((i + j) % 256);
    return 16 + (size_t)n * r * c;
}

static size_t make_labels(uint8_t *buf, uint32_t n)
{
    be32(buf, 0x00000801);
    be32(buf + 4, n);
    for (uint32_t i = 0; i < n; i++)
        buf[8 + i] = (uint8_t)(i % 3);
    return 8 + n;
}

static uint8_t img[16 + 10 * 4 * 4], lab[8 + 10];
static size_t img_len, lab_len;

static int expect_fail(const char *images, const char *labels, int classes, const char *want)
{
    struct dataset d;
    char err[512] = "";
    int rc = data_load_idx(path(images), path(labels), 1, 0, classes, &d, NULL, err,
                           sizeof(err));
    if (rc == 0) {
        data_free(&d);
        printf("\n  loaded %s / %s, expected an error with '%s'\n", images, labels, want);
        return 0;
    }
    if (!strstr(err, want) || !strstr(err, dir)) {
        printf("\n  error '%s' lacks '%s' or the path\n", err, want);
        return 0;
    }
    return 1;
}

static void test_idx_good(void)
{
    img_len = make_images(img, 10, 4, 4);
    lab_len = make_labels(lab, 10);
    write_file("img", img, img_len, 0);
    write_file("lab", lab, lab_len, 0);
    write_file("img.gz", img, img_len, 1);
    write_file("lab.gz", lab, lab_len, 1);
    struct dataset d;
    char err[512];
    CU_ASSERT_EQUAL_FATAL(data_load_idx(path("img.gz"), path("lab"), 1, 0, 0, &d, NULL, err,
                                        sizeof(err)), 0);
    CU_ASSERT_EQUAL(d.n, 10);
    CU_ASSERT_EQUAL(d.total, 10);
    CU_ASSERT_EQUAL(d.dim, 16);
    CU_ASSERT_EQUAL(d.classes, 3);
    float row[16];
    data_row(&d, 3, row);
    CU_ASSERT(fabsf(row[5] - (float)((3 + 5) % 256) / 255.0f) < 1e-6f);
    CU_ASSERT(d.x8 && d.x8[3 * 16 + 5] == (3 + 5) % 256); /* kept as bytes */
    CU_ASSERT_EQUAL(data_bytes(&d), 10 * (16 + 4));
    CU_ASSERT_EQUAL(d.y[7], 1);
    data_free(&d);
    /* Shard 1 of 3: samples 1, 4, 7. */
    CU_ASSERT_EQUAL_FATAL(data_load_idx(path("img"), path("lab.gz"), 3, 1, 0, &d, NULL, err,
                                        sizeof(err)), 0);
    CU_ASSERT_EQUAL(d.n, 3);
    CU_ASSERT_EQUAL(d.total, 10);
    CU_ASSERT_EQUAL(d.y[2], 7 % 3);
    data_row(&d, 2, row);
    CU_ASSERT(fabsf(row[0] - 7.0f / 255.0f) < 1e-6f);
    data_free(&d);
}

static void test_idx_bad(void)
{
    uint8_t buf[sizeof(img) + 8];
    /* truncated images, raw and gzip */
    write_file("img.trunc", img, img_len - 5, 0);
    CU_ASSERT(expect_fail("img.trunc", "lab", 0, "truncated"));
    write_file("img.trunc.gz", img, img_len - 5, 1);
    CU_ASSERT(expect_fail("img.trunc.gz", "lab", 0, "truncated"));
    /* trailing bytes */
    memcpy(buf, img, img_len);
    memset(buf + img_len, 7, 3);
    write_file("img.long", buf, img_len + 3, 0);
    CU_ASSERT(expect_fail("img.long", "lab", 0, "unexpected bytes"));
    /* wrong magic, wrong type, wrong dimension count */
    memcpy(buf, img, img_len);
    buf[0] = 0x1f;
    write_file("img.magic", buf, img_len, 0);
    CU_ASSERT(expect_fail("img.magic", "lab", 0, "not an IDX file"));
    memcpy(buf, img, img_len);
    buf[2] = 0x0d;
    write_file("img.type", buf, img_len, 0);
    CU_ASSERT(expect_fail("img.type", "lab", 0, "element type"));
    CU_ASSERT(expect_fail("lab", "lab", 0, "dimensions"));
    /* count mismatch between images and labels */
    uint8_t lab9[8 + 9];
    write_file("lab9", lab9, make_labels(lab9, 9), 0);
    CU_ASSERT(expect_fail("img", "lab9", 0, "labels, but"));
    /* label out of range for 2 classes */
    CU_ASSERT(expect_fail("img", "lab", 2, "out of range"));
    /* a corrupt gzip stream: flip bytes in the middle of the compressed data */
    FILE *f = fopen(path("img.gz"), "rb");
    CU_ASSERT_FATAL(f != NULL);
    uint8_t z[4096];
    size_t zn = fread(z, 1, sizeof(z), f);
    fclose(f);
    CU_ASSERT_FATAL(zn > 30);
    for (size_t i = zn / 2; i < zn / 2 + 8; i++)
        z[i] ^= 0x5a;
    write_file("img.corrupt.gz", z, zn, 0);
    CU_ASSERT(expect_fail("img.corrupt.gz", "lab", 0, "img.corrupt.gz"));
    /* missing file */
    CU_ASSERT(expect_fail("nonexistent", "lab", 0, "cannot open"));
}

static int svm(const char *text, int dim, struct label_map *map, struct dataset *d, char *err,
               size_t errlen)
{
    write_file("svm", text, strlen(text), 0);
    return data_load_libsvm(path("svm"), dim, map, 1, 0, d, NULL, err, errlen);
}

static void test_libsvm(void)
{
    struct dataset d;
    struct label_map map = {0};
    char err[512];
    CU_ASSERT_EQUAL_FATAL(svm("+1 1:0.5 3:2\n# comment\n\n-1 2:1.5\n+1 4:-1e-1 # tail\n", 0,
                              &map, &d, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(d.n, 3);
    CU_ASSERT_EQUAL(d.dim, 4);
    CU_ASSERT_EQUAL(d.classes, 2);
    CU_ASSERT_EQUAL(map.label[0], -1.0);
    CU_ASSERT_EQUAL(d.y[0], 1);
    CU_ASSERT_EQUAL(d.y[1], 0);
    CU_ASSERT(d.x[0] == 0.5f && d.x[1] == 0.0f && d.x[2] == 2.0f);
    CU_ASSERT(fabsf(d.x[2 * 4 + 3] + 0.1f) < 1e-7f);
    data_free(&d);
    /* A test file with the training map: an unseen label is an error. */
    int rc = svm("-1 1:1\n3 2:1\n", 4, &map, &d, err, sizeof(err));
    CU_ASSERT(rc < 0 && strstr(err, "line 2") && strstr(err, "not among"));

    static const struct {
        const char *text, *want;
    } bad[] = {
        {"1 1:1\nabc 1:2\n", "line 2: the label"},
        {"1 3:1 2:1\n", "line 1: feature index 2 after 3"},
        {"1 0:1\n", "line 1: feature index 0"},
        {"1 1:x\n", "line 1: feature 1: bad value"},
        {"1 1:nan\n2 1:1\n", "bad value"},
        {"1 1 2\n", "expected index:value"},
        {"1 1:1\n", "only one distinct label"},
        {"\n# nothing\n", "no samples"},
        {"1 5:1\n2 1:1\n", "beyond the 3 features"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct label_map m = {0};
        err[0] = 0;
        rc = svm(bad[i].text, i == 8 ? 3 : 0, &m, &d, err, sizeof(err));
        if (rc == 0)
            data_free(&d);
        CU_ASSERT(rc < 0);
        if (!strstr(err, bad[i].want) || !strstr(err, "svm"))
            printf("\n  case %zu: error '%s' lacks '%s'\n", i, err, bad[i].want);
        CU_ASSERT(strstr(err, bad[i].want) != NULL);
    }
    /* NUL bytes in a text file */
    write_file("svm.bin", "1 1:1\n\0\0\n", 9, 0);
    struct label_map m = {0};
    rc = data_load_libsvm(path("svm.bin"), 0, &m, 1, 0, &d, NULL, err, sizeof(err));
    CU_ASSERT(rc < 0 && strstr(err, "NUL"));
}

/* The analytic gradient against central differences (in double). */
static void test_gradient(void)
{
    struct model m;
    int hidden[] = {6, 5};
    CU_ASSERT_EQUAL_FATAL(model_init(&m, 7, hidden, 2, 4), 0);
    CU_ASSERT_EQUAL(m.nparams, (size_t)(7 * 6 + 6 + 6 * 5 + 5 + 5 * 4 + 4));
    const int B = 5;
    float *p = malloc(m.nparams * sizeof(float)), *g = malloc(m.nparams * sizeof(float));
    float x[5 * 7];
    int32_t y[5] = {0, 3, 1, 2, 3};
    uint64_t st = 42;
    for (int i = 0; i < B * 7; i++)
        x[i] = (float)rng_unit(rng_next(&st)) * 2.0f - 1.0f;
    model_init_params(&m, p, 7);
    struct model_ws ws;
    CU_ASSERT_EQUAL_FATAL(model_ws_init(&ws, &m, B), 0);
    float loss = model_grad(&m, p, g, x, y, B, &ws);
    CU_ASSERT(loss > 0.5f && loss < 3.0f);
    int bad = 0;
    for (size_t i = 0; i < m.nparams; i++) {
        float keep = p[i];
        const float h = 1e-2f;
        p[i] = keep + h;
        double lp = model_eval(&m, p, x, y, B, NULL, &ws);
        p[i] = keep - h;
        double lm = model_eval(&m, p, x, y, B, NULL, &ws);
        p[i] = keep;
        double num = (lp - lm) / (2 * h);
        if (fabs(num - g[i]) > 2e-3 + 2e-2 * fabs(num)) {
            if (bad++ < 5)
                printf("\n  parameter %zu: analytic %g, numeric %g", i, g[i], num);
        }
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* eval's loss is model_grad's loss on the same batch */
    size_t ok;
    CU_ASSERT(fabsf((float)model_eval(&m, p, x, y, B, &ok, &ws) - loss) < 1e-5f);
    CU_ASSERT(ok <= (size_t)B);
    model_ws_free(&ws);
    free(p);
    free(g);
    int h2[4];
    CU_ASSERT_EQUAL(model_parse_hidden("512,128", h2, 4), 2);
    CU_ASSERT_EQUAL(h2[1], 128);
    CU_ASSERT_EQUAL(model_parse_hidden("0", h2, 4), 0);
    CU_ASSERT(model_parse_hidden("12,x", h2, 4) < 0);
    CU_ASSERT(model_parse_hidden("-3", h2, 4) < 0);
    CU_ASSERT(model_parse_hidden("1,2,3,4,5", h2, 4) < 0);
}

static void test_protocol(void)
{
    uint8_t buf[SHOAL_MSG_MAX];
    struct ps_msg m = {.type = PS_HELLO}, out;
    char why[256];
    m.u.hello.worker = 1;
    m.u.hello.job.workers = 2;
    m.u.hello.servers = 1;
    m.u.hello.nparams = 203530;
    m.u.hello.ntensors = 4;
    m.u.hello.layout = 0x1234567890abcdefull;
    m.u.hello.job.batch = 64;
    m.u.hello.job.iters_per_epoch = 468;
    m.u.hello.job.epochs = 10;
    m.u.hello.job.optimizer = SHOAL_PS_ADAM;
    m.u.hello.job.lr = 0.001f;
    m.u.hello.job.beta1 = 0.9f;
    m.u.hello.job.beta2 = 0.999f;
    m.u.hello.job.eps = 1e-8f;
    snprintf(m.u.hello.job.label, sizeof(m.u.hello.job.label), "784-256-10");
    m.u.hello.desc_len = 40;
    memset(m.u.hello.desc, 0xab, 40);
    int n = ps_encode(&m, buf, sizeof(buf));
    CU_ASSERT_FATAL(n > 12);
    CU_ASSERT_EQUAL(ps_decode(buf, (size_t)n, &out, why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(out.u.hello.nparams, 203530);
    CU_ASSERT_STRING_EQUAL(out.u.hello.job.label, "784-256-10");
    CU_ASSERT_EQUAL(out.u.hello.layout, 0x1234567890abcdefull);
    CU_ASSERT_EQUAL(out.u.hello.job.optimizer, SHOAL_PS_ADAM);
    CU_ASSERT_EQUAL(out.u.hello.job.beta2, 0.999f);
    CU_ASSERT_EQUAL(out.u.hello.desc_len, 40);
    /* every truncation fails, and so does one extra byte */
    for (int len = 0; len < n; len++)
        CU_ASSERT(ps_decode(buf, (size_t)len, &out, why, sizeof(why)) < 0);
    buf[n] = 0;
    CU_ASSERT(ps_decode(buf, (size_t)n + 1, &out, why, sizeof(why)) < 0);
    /* semantic checks: worker index beyond the worker count */
    m.u.hello.worker = 2;
    n = ps_encode(&m, buf, sizeof(buf));
    CU_ASSERT(ps_decode(buf, (size_t)n, &out, why, sizeof(why)) < 0 && strstr(why, "worker"));
    /* another protocol version is -EPROTO with the numbers */
    m.u.hello.worker = 0;
    n = ps_encode(&m, buf, sizeof(buf));
    buf[4] = 9;
    CU_ASSERT_EQUAL(ps_decode(buf, (size_t)n, &out, why, sizeof(why)), -EPROTO);
    CU_ASSERT(strstr(why, "version 9") != NULL);
    /* a table of too many servers cannot be encoded; 48 fit a message */
    struct ps_msg t = {.type = PS_TABLE};
    t.u.table.n = PS_MAX_SERVERS;
    for (int i = 0; i < PS_MAX_SERVERS; i++) {
        memset(t.u.table.addr[i].host, 'h', PS_HOST_MAX - 1);
        t.u.table.addr[i].port = 1;
    }
    CU_ASSERT(ps_encode(&t, buf, sizeof(buf)) > 0);
    t.u.table.n = PS_MAX_SERVERS + 1;
    CU_ASSERT(ps_encode(&t, buf, sizeof(buf)) < 0);
    /* random bytes never decode into something with a NUL-free host etc.;
     * above all they must not crash */
    uint64_t st = 1;
    int accepted = 0;
    for (int round = 0; round < 20000; round++) {
        size_t len = rng_below(&st, 64);
        for (size_t i = 0; i < len; i++)
            buf[i] = (uint8_t)rng_next(&st);
        if (round & 1 && len >= 12) { /* a valid header, random body */
            uint32_t magic = PS_MAGIC;
            memcpy(buf, &magic, 4);
            buf[4] = PS_VERSION;
            buf[5] = 0;
            buf[6] = (uint8_t)(1 + rng_below(&st, PS_MEMBERS));
            buf[7] = 0;
            uint32_t bl = (uint32_t)(len - 12);
            memcpy(buf + 8, &bl, 4);
        }
        if (ps_decode(buf, len, &out, why, sizeof(why)) == 0)
            accepted++;
    }
    CU_ASSERT(accepted < 20000);
}

/* MEMBERS: round trip; a bitmap of the wrong size, a member past the last
 * worker, no member at all and a bad worker count are refused. */
static void test_members_msg(void)
{
    uint8_t buf[SHOAL_MSG_MAX];
    struct ps_msg m = {.type = PS_MEMBERS}, out;
    char why[256];
    for (uint32_t W = 1; W <= PS_MAX_WORKERS; W += W < 20 ? 1 : 97) {
        memset(&m.u.members, 0, sizeof(m.u.members));
        m.u.members.epoch = 7;
        m.u.members.workers = W;
        for (uint32_t i = 0; i < W; i += 3)
            ps_member_set(m.u.members.live, (int)i);
        int n = ps_encode(&m, buf, sizeof(buf));
        CU_ASSERT_FATAL(n == 12 + 8 + 4 + (int)((W + 7) / 8));
        CU_ASSERT_FATAL(ps_decode(buf, (size_t)n, &out, why, sizeof(why)) == 0);
        CU_ASSERT(out.type == PS_MEMBERS && out.u.members.epoch == 7 &&
                  out.u.members.workers == W);
        CU_ASSERT(memcmp(out.u.members.live, m.u.members.live, sizeof(m.u.members.live)) == 0);
        for (int len = 0; len < n; len++)
            CU_ASSERT(ps_decode(buf, (size_t)len, &out, why, sizeof(why)) < 0);
        if (W % 8) { /* a member past the last worker */
            buf[n - 1] = (uint8_t)(buf[n - 1] | 0x80);
            CU_ASSERT(ps_decode(buf, (size_t)n, &out, why, sizeof(why)) < 0 &&
                      strstr(why, "members"));
        }
    }
    /* nobody */
    memset(&m.u.members, 0, sizeof(m.u.members));
    m.u.members.workers = 10;
    int n = ps_encode(&m, buf, sizeof(buf));
    CU_ASSERT(ps_decode(buf, (size_t)n, &out, why, sizeof(why)) < 0 && strstr(why, "members"));
    /* 10 workers but a bitmap of 3 bytes (the count field says 3) */
    ps_member_set(m.u.members.live, 1);
    m.u.members.workers = 17;
    n = ps_encode(&m, buf, sizeof(buf));
    buf[16] = 10; /* workers: 10, the 3 bytes of 17 stay */
    CU_ASSERT(ps_decode(buf, (size_t)n, &out, why, sizeof(why)) < 0 && strstr(why, "members"));
    /* no workers, too many: not even encoded; and decoded as bad */
    m.u.members.workers = 0;
    CU_ASSERT(ps_encode(&m, buf, sizeof(buf)) < 0);
    m.u.members.workers = PS_MAX_WORKERS + 1;
    CU_ASSERT(ps_encode(&m, buf, sizeof(buf)) < 0);
    m.u.members.workers = 8;
    n = ps_encode(&m, buf, sizeof(buf));
    buf[16] = 0;
    CU_ASSERT(ps_decode(buf, (size_t)n, &out, why, sizeof(why)) < 0 && strstr(why, "workers"));
}

/* ps_data_shard: in every membership, each sample index belongs to the
 * shard of exactly one member; non-members keep their own shard of all
 * workers; with everyone a member nothing moves. */
static void test_data_shard(void)
{
    uint64_t st = 3;
    for (int round = 0; round < 400; round++) {
        int W = 1 + (int)rng_below(&st, round < 200 ? 9 : 70);
        uint8_t live[PS_MAX_WORKERS / 8] = {0};
        int members = 0;
        for (int i = 0; i < W; i++)
            if (round % 10 == 0 || rng_below(&st, 3) != 0) {
                ps_member_set(live, i);
                members++;
            }
        if (members == 0) {
            ps_member_set(live, W - 1);
            members = 1;
        }
        int shard[PS_MAX_WORKERS], shards[PS_MAX_WORKERS];
        for (int i = 0; i < W; i++) {
            bool member = ps_data_shard(live, W, i, &shard[i], &shards[i]);
            CU_ASSERT_EQUAL(member, ps_member(live, i));
            if (member) {
                CU_ASSERT_EQUAL(shards[i], members);
                CU_ASSERT(shard[i] >= 0 && shard[i] < members);
            } else {
                CU_ASSERT(shard[i] == i && shards[i] == W);
            }
            if (members == W)
                CU_ASSERT(shard[i] == i && shards[i] == W);
        }
        const size_t N = 1 + rng_below(&st, 5000);
        size_t held = 0;
        for (size_t x = 0; x < N; x++) {
            int owners = 0;
            for (int i = 0; i < W; i++)
                owners += ps_member(live, i) && x % (size_t)shards[i] == (size_t)shard[i];
            CU_ASSERT_EQUAL_FATAL(owners, 1);
            held += (size_t)owners;
        }
        CU_ASSERT_EQUAL(held, N);
    }
}

static void test_modelfile(void)
{
    struct model m, m2;
    int hidden[] = {8};
    CU_ASSERT_EQUAL_FATAL(model_init(&m, 5, hidden, 1, 3), 0);
    float p[5 * 8 + 8 + 8 * 3 + 3];
    model_init_params(&m, p, 3);
    char err[512];
    CU_ASSERT_EQUAL_FATAL(modelfile_save(path("m.mdl"), &m, p, err, sizeof(err)), 0);
    CU_ASSERT(access(path("m.mdl.tmp"), F_OK) != 0);
    float *q;
    CU_ASSERT_EQUAL_FATAL(modelfile_load(path("m.mdl"), &m2, &q, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(m2.nparams, m.nparams);
    CU_ASSERT_EQUAL(memcmp(p, q, sizeof(p)), 0);
    free(q);
    /* one flipped byte: the checksum catches it */
    FILE *f = fopen(path("m.mdl"), "r+b");
    CU_ASSERT_FATAL(f != NULL);
    fseek(f, 60, SEEK_SET);
    int c = fgetc(f);
    fseek(f, 60, SEEK_SET);
    fputc(c ^ 1, f);
    fclose(f);
    CU_ASSERT(modelfile_load(path("m.mdl"), &m2, &q, err, sizeof(err)) < 0);
    CU_ASSERT(strstr(err, "checksum") != NULL);
    /* truncated */
    CU_ASSERT_EQUAL_FATAL(modelfile_save(path("m.mdl"), &m, p, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(truncate(path("m.mdl"), 100), 0);
    CU_ASSERT(modelfile_load(path("m.mdl"), &m2, &q, err, sizeof(err)) < 0);
    /* not a model */
    write_file("junk", "hello world, not a model at all, but long enough to look like one", 64,
               0);
    CU_ASSERT(modelfile_load(path("junk"), &m2, &q, err, sizeof(err)) < 0);
    CU_ASSERT(strstr(err, "magic") != NULL);
}

static void test_optim(void)
{
    shoal_ps_job_t j = {.lr = 0.2f, .schedule = SHOAL_PS_LR_COSINE, .epochs = 10};
    CU_ASSERT(fabsf(shoal_ps_lr(&j, 0) - 0.2f) < 1e-7f);
    CU_ASSERT(fabsf(shoal_ps_lr(&j, 5) - 0.1f) < 1e-6f);
    CU_ASSERT(shoal_ps_lr(&j, 10) < 1e-7f);
    j.schedule = SHOAL_PS_LR_STEP;
    j.step_epochs = 3;
    j.gamma = 0.5f;
    CU_ASSERT(fabsf(shoal_ps_lr(&j, 2.9) - 0.2f) < 1e-7f);
    CU_ASSERT(fabsf(shoal_ps_lr(&j, 6.0) - 0.05f) < 1e-7f);
    /* out = in - lr * (mean of g + wd * in), momentum accumulates */
    j = (shoal_ps_job_t){.lr = 0.5f, .momentum = 0.5f, .weight_decay = 0.1f, .epochs = 1};
    float in[3] = {1, 2, 3}, out[3];
    float g1[3] = {1, 1, 1}, g2[3] = {3, 3, 3};
    const float *gs[2] = {g1, g2};
    shoal_ps_optim_t *o;
    CU_ASSERT_EQUAL_FATAL(shoal_ps_optim_create(&j, 3, &o), 0);
    shoal_ps_optim_step(o, 0, out, in, gs, 2, 0.5f);
    for (int i = 0; i < 3; i++) {
        float d = 2.0f + 0.1f * in[i];
        CU_ASSERT(fabsf(o->m[i] - d) < 1e-6f);
        CU_ASSERT(fabsf(out[i] - (in[i] - 0.5f * d)) < 1e-6f);
    }
    shoal_ps_optim_destroy(o);
    /* Adam, as torch.optim.Adam: the first step moves each parameter by
     * lr * sign(g) (bias-corrected moments), the second by the ratio of
     * the corrected moments */
    j = (shoal_ps_job_t){.optimizer = SHOAL_PS_ADAM, .lr = 0.01f, .beta1 = 0.9f,
                         .beta2 = 0.999f, .eps = 1e-8f, .epochs = 1};
    CU_ASSERT_EQUAL_FATAL(shoal_ps_optim_create(&j, 3, &o), 0);
    float p[3] = {1, 2, 3}, ga[3] = {0.5f, -2.0f, 0.0f};
    const float *gp = ga;
    shoal_ps_optim_step(o, 0, p, p, &gp, 1, 1.0f);
    CU_ASSERT(fabsf(p[0] - 0.99f) < 1e-6f && fabsf(p[1] - 2.01f) < 1e-6f && p[2] == 3.0f);
    float gb[3] = {1.0f, 1.0f, 1.0f};
    gp = gb;
    shoal_ps_optim_step(o, 0, p, p, &gp, 1, 1.0f);
    double m = 0.9 * 0.05 + 0.1, v = 0.999 * 0.00025 + 0.001;
    double step = 0.01 * (m / 0.19) / sqrt(v / (1 - 0.999 * 0.999));
    CU_ASSERT(fabs(p[0] - (0.99 - step)) < 1e-5);
    shoal_ps_optim_destroy(o);
    /* average: the mean gradient, for workers that apply their own */
    j = (shoal_ps_job_t){.optimizer = SHOAL_PS_AVERAGE, .epochs = 1};
    CU_ASSERT_EQUAL_FATAL(shoal_ps_optim_create(&j, 3, &o), 0);
    shoal_ps_optim_step(o, 0, out, in, gs, 2, 0.5f);
    CU_ASSERT(out[0] == 2.0f && out[2] == 2.0f);
    shoal_ps_optim_destroy(o);
    shoal_ps_schedule_t sch;
    CU_ASSERT_EQUAL(shoal_ps_parse_schedule("warp", &sch), -EINVAL);
}

/* ---- checkpoints -------------------------------------------------------- */

#define CK_N 1000

static struct ckpt ck_state(uint32_t version, float *p, float *m, uint32_t *clock,
                            uint8_t *done, size_t len)
{
    struct ckpt k = {.server = 0, .servers = 1, .off = 0, .len = len, .version = version,
                     .grads = 2ull * version, .workers = 2, .clock = clock, .done = done,
                     .params = p, .m = m, .nparams = len, .ntensors = 1};
    k.job.workers = 2;
    k.job.batch = 64;
    k.job.iters_per_epoch = 5;
    k.job.epochs = 2;
    snprintf(k.job.label, sizeof(k.job.label), "784-256-10");
    return k;
}

static int ck_load(const char *ckdir, struct ckpt *r, char *log, size_t loglen)
{
    char got[600], err[512];
    FILE *f = tmpfile();
    memset(r, 0, sizeof(*r));
    int rc = ckpt_load(ckdir, 0, 0, r, f, got, sizeof(got), err, sizeof(err));
    size_t n = 0;
    if (f) {
        rewind(f);
        n = fread(log, 1, loglen - 1, f);
        fclose(f);
    }
    log[n] = 0;
    if (rc)
        snprintf(log + n, loglen - n, "%s", err);
    return rc;
}

static void test_checkpoint(void)
{
    const char *ckdir = path("ck");
    CU_ASSERT_FATAL(mkdir(ckdir, 0700) == 0);
    static float p[CK_N], m[CK_N];
    uint32_t clock[2] = {10, 9};
    uint8_t done[2] = {0, 1};
    for (int i = 0; i < CK_N; i++) {
        p[i] = 0.5f * (float)i + 1.0f;
        m[i] = -(float)i;
    }
    /* Two checkpoints through the writer thread; it writes copies taken at
     * submit time, whatever the server does to its buffers afterwards. */
    struct ckwriter w;
    CU_ASSERT_EQUAL_FATAL(ckw_start(&w, ckdir, true), 0);
    struct ckpt k = ck_state(10, p, m, clock, done, CK_N);
    CU_ASSERT_EQUAL(ckw_submit(&w, &k), 0);
    p[0] = 99.0f;
    ckw_drain(&w);
    k = ck_state(20, p, m, clock, done, CK_N);
    CU_ASSERT_EQUAL(ckw_submit(&w, &k), 0);
    p[1] = 77.0f; /* after the submit: not in checkpoint 20 */
    ckw_stop(&w);

    struct ckpt r;
    char log[2048];
    CU_ASSERT_EQUAL(ck_load(ckdir, &r, log, sizeof(log)), 0);
    CU_ASSERT_EQUAL(r.version, 20);
    CU_ASSERT_EQUAL(r.grads, 40);
    CU_ASSERT_EQUAL(r.len, CK_N);
    CU_ASSERT(r.params && r.params[0] == 99.0f && r.params[1] == 1.5f && r.params[CK_N - 1] ==
              0.5f * (CK_N - 1) + 1.0f);
    CU_ASSERT(r.m && r.m[7] == -7.0f);
    CU_ASSERT_EQUAL(r.format, 2);
    CU_ASSERT(r.clock && r.clock[0] == 10 && r.clock[1] == 9 && r.done && r.done[1] == 1);
    ckpt_free(&r);

    /* The newest corrupted (one byte flipped): skipped with a message, the
     * one before it loads, with the values it had. */
    char f20[600], f10[600];
    snprintf(f20, sizeof(f20), "%s/server-0.ckpt.%010u", ckdir, 20u);
    snprintf(f10, sizeof(f10), "%s/server-0.ckpt.%010u", ckdir, 10u);
    FILE *f = fopen(f20, "r+b");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT(fseek(f, 2000, SEEK_SET) == 0);
    int c = fgetc(f);
    CU_ASSERT(fseek(f, 2000, SEEK_SET) == 0);
    fputc(c ^ 0x40, f);
    fclose(f);
    CU_ASSERT_EQUAL(ck_load(ckdir, &r, log, sizeof(log)), 0);
    CU_ASSERT_EQUAL(r.version, 10);
    CU_ASSERT(r.params && r.params[0] == 1.0f);
    CU_ASSERT(strstr(log, "checksum") != NULL);
    ckpt_free(&r);

    /* Half-written (truncated) too: no valid checkpoint, said so. */
    struct stat st;
    CU_ASSERT_FATAL(stat(f10, &st) == 0);
    CU_ASSERT(truncate(f10, st.st_size / 2) == 0);
    CU_ASSERT_EQUAL(ck_load(ckdir, &r, log, sizeof(log)), -ENOENT);
    CU_ASSERT(strstr(log, "no valid checkpoint") != NULL);

    /* An unwritable place: an error naming it. */
    write_file("plain", "x", 1, 0);
    char err[512] = "";
    k = ck_state(30, p, m, clock, done, CK_N);
    CU_ASSERT(ckpt_save(path("plain/ck"), &k, err, sizeof(err)) != 0);
    CU_ASSERT(strstr(err, "plain/ck") != NULL);

    /* A full disk (a 64 KiB tmpfs, where we may mount one): the save fails
     * with an error and the previous checkpoint is intact. */
    const char *small = path("small");
    CU_ASSERT_FATAL(mkdir(small, 0700) == 0);
    if (mount("tmpfs", small, "tmpfs", 0, "size=64k") != 0) {
        printf("\n    (full disk part skipped: cannot mount a tmpfs here: %s) ",
               strerror(errno));
        return;
    }
    static float big[40000], bigm[40000];
    k = ck_state(40, p, m, clock, done, CK_N); /* ~8 KB: fits */
    CU_ASSERT_EQUAL(ckpt_save(small, &k, err, sizeof(err)), 0);
    k = ck_state(50, big, bigm, clock, done, 40000); /* ~320 KB: does not */
    err[0] = 0;
    CU_ASSERT(ckpt_save(small, &k, err, sizeof(err)) != 0);
    CU_ASSERT(strstr(err, "space") != NULL || strstr(err, "No space") != NULL);
    CU_ASSERT_EQUAL(ck_load(small, &r, log, sizeof(log)), 0);
    CU_ASSERT_EQUAL(r.version, 40);
    CU_ASSERT(r.params && r.params[0] == 99.0f);
    ckpt_free(&r);
    CU_ASSERT(umount(small) == 0);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "%s/shoal-trainer-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 99;
    }
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("trainer", NULL, NULL);
    CU_add_test(s, "IDX: raw and gzip, shards", test_idx_good);
    CU_add_test(s, "IDX: truncated, trailing, bad magic/type/dims, counts, labels, corrupt "
                "gzip", test_idx_bad);
    CU_add_test(s, "LIBSVM: labels mapped, sparse rows; malformed lines named", test_libsvm);
    CU_add_test(s, "model gradient = finite differences", test_gradient);
    CU_add_test(s, "protocol: round trip, truncations, versions, random bytes", test_protocol);
    CU_add_test(s, "protocol: MEMBERS round trip and its checks", test_members_msg);
    CU_add_test(s, "data shards: live workers partition the set", test_data_shard);
    CU_add_test(s, "model files: round trip, corrupt, truncated, not a model", test_modelfile);
    CU_add_test(s, "optimizer: schedules and the update", test_optim);
    CU_add_test(s, "checkpoints: background writer, corrupt/truncated skipped, unwritable "
                "and full-disk errors", test_checkpoint);
    int rc = cu_run_all();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
