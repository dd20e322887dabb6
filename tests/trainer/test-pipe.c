/*
 * test-pipe.c -- the pipeline's parts on their own, no network: the
 * layout (bad layouts refused with the problem named; the split of the
 * layers is the best one, checked against every split), model parts (a
 * stage's initial parameters are its slice of the whole model's; K stages
 * running M micro-batches compose to the whole model's gradient), and
 * the stage-to-stage protocol codec (round trips, truncations, bad
 * values, random bytes).
 */
#include <CUnit/Basic.h>
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cu.h"
#include "layout.h"
#include "model.h"
#include "pipe_proto.h"
#include "rng.h"

static void test_layout_check(void)
{
    char err[256];
    CU_ASSERT_EQUAL(layout_check(4, 2, 2, 64, 4, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(layout_check(1, 1, 1, 64, 1, err, sizeof(err)), 0);
    CU_ASSERT(layout_check(3, 2, 2, 64, 4, err, sizeof(err)) < 0);
    CU_ASSERT(strstr(err, "3 workers") && strstr(err, "multiple of --stages"));
    CU_ASSERT(layout_check(4, 4, 2, 64, 4, err, sizeof(err)) < 0);
    CU_ASSERT(strstr(err, "--stages 4") && strstr(err, "only 2 layers"));
    CU_ASSERT(layout_check(2, 2, 2, 64, 5, err, sizeof(err)) < 0);
    CU_ASSERT(strstr(err, "--micro-batches 5") && strstr(err, "batch of 64"));
    CU_ASSERT(layout_check(2, 2, 2, 64, 0, err, sizeof(err)) < 0);
    CU_ASSERT(layout_check(2, 0, 2, 64, 1, err, sizeof(err)) < 0);
}

static size_t stage_params(const struct layout *lo, const struct model *m, int s)
{
    struct model part;
    CU_ASSERT_EQUAL_FATAL(layout_stage_model(lo, m, s, &part), 0);
    return part.nparams;
}

/* The largest stage of the best split, by trying every split. */
static size_t brute_best(const struct model *m, int K)
{
    const int L = m->nlayers;
    size_t best = (size_t)-1;
    /* a split = K-1 cut points among the L-1 gaps, as a bitmask */
    for (unsigned mask = 0; mask < 1u << (L - 1); mask++) {
        if (__builtin_popcount(mask) != K - 1)
            continue;
        size_t worst = 0, run = 0;
        for (int l = 0; l < L; l++) {
            run += (size_t)m->dims[l] * (size_t)m->dims[l + 1] + (size_t)m->dims[l + 1];
            if (l == L - 1 || (mask >> l & 1)) {
                worst = run > worst ? run : worst;
                run = 0;
            }
        }
        best = worst < best ? worst : best;
    }
    return best;
}

static void test_layout_split(void)
{
    struct model m;
    struct layout lo;
    int h1[] = {256};
    CU_ASSERT_EQUAL_FATAL(model_init(&m, 784, h1, 1, 10), 0);
    layout_split(&lo, &m, 2, 1, 4);
    CU_ASSERT(lo.first[0] == 0 && lo.first[1] == 1 && lo.first[2] == 2);
    int wide[] = {4096, 4096, 4096};
    CU_ASSERT_EQUAL_FATAL(model_init(&m, 784, wide, 3, 10), 0);
    layout_split(&lo, &m, 2, 2, 4);
    CU_ASSERT(lo.first[1] == 2);               /* 784-4096-4096 | 4096-4096-10 */
    CU_ASSERT_EQUAL(stage_params(&lo, &m, 0) + stage_params(&lo, &m, 1), m.nparams);
    CU_ASSERT(stage_params(&lo, &m, 0) < m.nparams * 0.55);
    CU_ASSERT(stage_params(&lo, &m, 1) < m.nparams * 0.55);
    layout_split(&lo, &m, 3, 1, 4);            /* 784-4096 | 4096-4096 | 4096-4096-10 */
    CU_ASSERT(lo.first[1] == 1 && lo.first[2] == 2 && lo.first[3] == 4);
    char buf[512];
    layout_describe(&lo, &m, buf, sizeof(buf));
    CU_ASSERT(strstr(buf, "stage 0: layer 1 (784-4096), 3215360 parameters (12.9 MB)") != NULL);
    CU_ASSERT(strstr(buf, "stage 2: layers 3-4 (4096-4096-10)") != NULL);
    /* Random shapes: the split is as good as the best of all splits, and
     * every stage holds at least one layer, in order. */
    uint64_t st = 7;
    for (int trial = 0; trial < 300; trial++) {
        int nh = 1 + (int)(rng_next(&st) % (MODEL_MAX_LAYERS - 1)), hid[MODEL_MAX_LAYERS];
        for (int i = 0; i < nh; i++)
            hid[i] = 1 + (int)(rng_next(&st) % 700);
        CU_ASSERT_EQUAL_FATAL(model_init(&m, 1 + (int)(rng_next(&st) % 900), hid, nh, 10), 0);
        int K = 1 + (int)(rng_next(&st) % (unsigned)m.nlayers);
        layout_split(&lo, &m, K, 1, 1);
        size_t worst = 0, sum = 0;
        CU_ASSERT(lo.first[0] == 0 && lo.first[K] == m.nlayers);
        for (int s = 0; s < K; s++) {
            CU_ASSERT(lo.first[s + 1] > lo.first[s]);
            size_t p = stage_params(&lo, &m, s);
            worst = p > worst ? p : worst;
            sum += p;
        }
        CU_ASSERT_EQUAL(sum, m.nparams);
        CU_ASSERT_EQUAL(worst, brute_best(&m, K));
    }
}

/* Uniform [-1, 1) floats. */
static void fill(float *x, size_t n, uint64_t seed)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)rng_unit(rng_next(&seed)) * 2.0f - 1.0f;
}

/*
 * K stages, each running its part of the model on M micro-batches of a
 * batch of B rows (all forwards, then all backwards, the gradient
 * accumulated over the micro-batches, the loss scaled by 1/B): the
 * gradient is the whole model's on the whole batch, within rounding.
 */
static double pipeline_diff(int K, int M, bool accumulate)
{
    struct model m;
    int hidden[] = {9, 6, 5};
    const int B = 12, mb = B / M, D = 7, C = 4;
    CU_ASSERT_EQUAL_FATAL(model_init(&m, D, hidden, 3, C), 0);
    float *p = malloc(m.nparams * sizeof(float)), *g = malloc(m.nparams * sizeof(float));
    float *g2 = calloc(m.nparams, sizeof(float)), x[12 * 7];
    int32_t y[12];
    for (int r = 0; r < B; r++)
        y[r] = (r * 5 + 1) % C;
    fill(x, sizeof(x) / sizeof(x[0]), 3);
    model_init_params(&m, p, 11);
    struct model_ws ws;
    CU_ASSERT_EQUAL_FATAL(model_ws_init(&ws, &m, B), 0);
    float loss = model_grad(&m, p, g, x, y, B, &ws);

    struct layout lo;
    layout_split(&lo, &m, K, 1, M);
    struct model part[MODEL_MAX_LAYERS];
    /* per stage: its layers' outputs for the whole batch, and the
     * gradient it sends back (dLoss/dZ of the layer before it) */
    float *act[MODEL_MAX_LAYERS][MODEL_MAX_LAYERS], *din[MODEL_MAX_LAYERS];
    float *tmp[2] = {malloc(B * 16 * sizeof(float)), malloc(B * 16 * sizeof(float))};
    float ones[12], dl[12 * 4];
    for (int i = 0; i < B; i++)
        ones[i] = 1.0f;
    for (int s = 0; s < K; s++) {
        CU_ASSERT_EQUAL_FATAL(layout_stage_model(&lo, &m, s, &part[s]), 0);
        CU_ASSERT_EQUAL(part[s].scores, s == K - 1);
        for (int l = 0; l < part[s].nlayers; l++)
            act[s][l] = malloc((size_t)B * part[s].dims[l + 1] * sizeof(float));
        din[s] = malloc((size_t)B * part[s].dims[0] * sizeof(float));
        /* A stage's own initial parameters are its slice of the whole's. */
        float *ps = malloc(part[s].nparams * sizeof(float));
        model_init_params(&part[s], ps, 11);
        CU_ASSERT(memcmp(ps, p + part[s].base, part[s].nparams * sizeof(float)) == 0);
        free(ps);
    }
    /* all forwards */
    for (int mi = 0; mi < M; mi++)
        for (int s = 0; s < K; s++) {
            const struct model *q = &part[s];
            const float *in = s ? act[s - 1][part[s - 1].nlayers - 1] + (size_t)mi * mb * q->dims[0]
                                : x + (size_t)mi * mb * D;
            float *a[MODEL_MAX_LAYERS];
            for (int l = 0; l < q->nlayers; l++)
                a[l] = act[s][l] + (size_t)mi * mb * q->dims[l + 1];
            model_forward(q, p + q->base, in, mb, a);
        }
    /* all backwards */
    double lsum = 0;
    for (int mi = 0; mi < M; mi++)
        for (int s = K - 1; s >= 0; s--) {
            const struct model *q = &part[s];
            const float *in = s ? act[s - 1][part[s - 1].nlayers - 1] + (size_t)mi * mb * q->dims[0]
                                : x + (size_t)mi * mb * D;
            float *a[MODEL_MAX_LAYERS];
            for (int l = 0; l < q->nlayers; l++)
                a[l] = act[s][l] + (size_t)mi * mb * q->dims[l + 1];
            const float *d;
            if (s == K - 1) {
                lsum += model_loss_grad(a[q->nlayers - 1], y + mi * mb, mb, C, 1.0f / B, dl);
                d = dl;
            } else {
                d = din[s + 1];
            }
            model_backward(q, p + q->base, g2 + q->base, mi && accumulate ? 1.0f : 0.0f, in, a, d,
                           s ? din[s] : NULL, tmp, ones, mb);
        }
    CU_ASSERT(fabs(lsum / B - loss) < 1e-5);
    double worst = 0;
    for (size_t i = 0; i < m.nparams; i++) {
        double e = fabs((double)g[i] - g2[i]);
        worst = e > worst ? e : worst;
    }
    for (int s = 0; s < K; s++) {
        for (int l = 0; l < part[s].nlayers; l++)
            free(act[s][l]);
        free(din[s]);
    }
    free(tmp[0]);
    free(tmp[1]);
    model_ws_free(&ws);
    free(p);
    free(g);
    free(g2);
    return worst;
}

static void test_pipeline_gradient(void)
{
    for (int K = 1; K <= 4; K++)
        for (int M = 1; M <= 12; M++) {
            if (12 % M)
                continue;
            double worst = pipeline_diff(K, M, true);
            CU_ASSERT(worst < 1e-6);
            if (worst >= 1e-6)
                printf("\n  K=%d M=%d: largest difference %g", K, M, worst);
            /* the comparison can fail: forgetting to accumulate over the
             * micro-batches keeps only the last one's gradient */
            if (M > 1)
                CU_ASSERT(pipeline_diff(K, M, false) > 1e-4);
        }
    struct model m, part;
    int hidden[] = {5};
    CU_ASSERT_EQUAL_FATAL(model_init(&m, 3, hidden, 1, 2), 0);
    CU_ASSERT(model_part(&m, 1, 1, &part) < 0);
    CU_ASSERT(model_part(&m, 0, 3, &part) < 0);
    CU_ASSERT_EQUAL(model_part(&m, 1, 2, &part), 0);
    CU_ASSERT(part.base == 3 * 5 + 5 && part.nparams == 5 * 2 + 2 && part.first == 1);
}

static struct pipe_msg hello_msg(void)
{
    struct pipe_msg m = {.type = PIPE_HELLO, .gen = 3};
    struct pipe_hello *h = &m.u.hello;
    h->worker = 5;
    h->stage = 1;
    h->replica = 2;
    h->incarnation = 0x123456789abcull;
    h->job = (struct pipe_job){.stages = 2, .replicas = 3, .micro = 4, .batch = 64,
                               .iters_per_epoch = 468, .epochs = 10, .nlayers = 2,
                               .dims = {784, 256, 10}};
    h->desc_len = 40;
    for (int i = 0; i < 40; i++)
        h->desc[i] = (uint8_t)(i * 7);
    return m;
}

/* Encode, decode, compare the fields that matter; every truncation of
 * the encoding must be refused. */
static void round_trip(const struct pipe_msg *m)
{
    uint8_t buf[SHOAL_MSG_MAX];
    struct pipe_msg out;
    char why[256];
    int n = pipe_encode(m, buf, sizeof(buf));
    CU_ASSERT_FATAL(n > 0);
    CU_ASSERT_EQUAL(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)), 0);
    CU_ASSERT_EQUAL(out.type, m->type);
    CU_ASSERT_EQUAL(out.gen, m->gen);
    for (int cut = 0; cut < n; cut++)
        CU_ASSERT(pipe_decode(buf, (size_t)cut, &out, why, sizeof(why)) == -EBADMSG);
    buf[n] = 0; /* one byte too many */
    CU_ASSERT(pipe_decode(buf, (size_t)n + 1, &out, why, sizeof(why)) == -EBADMSG);
    CU_ASSERT(strstr(why, "after the end") != NULL);
}

static void test_protocol(void)
{
    uint8_t buf[SHOAL_MSG_MAX];
    struct pipe_msg m = hello_msg(), out;
    char why[256];
    round_trip(&m);
    int n = pipe_encode(&m, buf, sizeof(buf));
    CU_ASSERT_EQUAL_FATAL(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)), 0);
    CU_ASSERT(memcmp(&out.u.hello.job, &m.u.hello.job, sizeof(m.u.hello.job)) == 0);
    CU_ASSERT(out.u.hello.incarnation == m.u.hello.incarnation && out.u.hello.worker == 5);
    CU_ASSERT(out.u.hello.desc_len == 40 && memcmp(out.u.hello.desc, m.u.hello.desc, 40) == 0);

    struct pipe_msg w = m;
    w.type = PIPE_WELCOME;
    round_trip(&w);
    int simple[] = {PIPE_RESET, PIPE_DONE, PIPE_EXIT};
    for (int i = 0; i < 3; i++) {
        struct pipe_msg q = {.type = (uint8_t)simple[i], .gen = 9};
        round_trip(&q);
    }
    struct pipe_msg q = {.type = PIPE_SYNC, .gen = 2, .u.iteration = 4000000};
    round_trip(&q);
    n = pipe_encode(&q, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == 0 &&
              out.u.iteration == 4000000);
    q.type = PIPE_GO;
    round_trip(&q);
    q = (struct pipe_msg){.type = PIPE_CREDIT, .u.kind = PIPE_EVAL};
    round_trip(&q);
    q.u.kind = PIPE_ACT; /* only gradient and evaluation slots have credits */
    n = pipe_encode(&q, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
    q = (struct pipe_msg){.type = PIPE_STATS, .u.stats = {.iteration = 7, .n = 3,
                                                          .busy = {1.5, 2.25, 0}}};
    round_trip(&q);
    n = pipe_encode(&q, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == 0 &&
              out.u.stats.busy[1] == 2.25 && out.u.stats.n == 3);
    q.u.stats.busy[0] = -1; /* a busy time is never negative */
    n = pipe_encode(&q, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
    q.u.stats.n = 0;
    CU_ASSERT(pipe_encode(&q, buf, sizeof(buf)) < 0);
    q = (struct pipe_msg){.type = PIPE_EVAL_END, .u.chunks = 625};
    round_trip(&q);
    q = (struct pipe_msg){.type = PIPE_GATHER, .u.gather = {.desc_len = 3, .desc = {1, 2, 3}}};
    round_trip(&q);
    q = (struct pipe_msg){.type = PIPE_ERROR};
    snprintf(q.u.text, sizeof(q.u.text), "refused: another job");
    round_trip(&q);
    n = pipe_encode(&q, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == 0 &&
              strcmp(out.u.text, "refused: another job") == 0);
    buf[n - 3] = 0; /* a NUL inside the text */
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);

    /* the header: magic, version, type, reserved bytes */
    n = pipe_encode(&m, buf, sizeof(buf));
    uint8_t bad[SHOAL_MSG_MAX];
    const struct { int at; uint8_t v; const char *what; } h[] = {
        {0, 0x00, "magic"}, {4, 2, "version"}, {5, 0, "type"}, {5, 99, "type"},
        {6, 1, "reserved"}};
    for (size_t i = 0; i < sizeof(h) / sizeof(h[0]); i++) {
        memcpy(bad, buf, (size_t)n);
        bad[h[i].at] = h[i].v;
        CU_ASSERT(pipe_decode(bad, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
        CU_ASSERT(strstr(why, h[i].what) != NULL);
    }
    /* the job: values a stage could not run */
    struct pipe_msg j1 = hello_msg();
    j1.u.hello.job.stages = 1;
    n = pipe_encode(&j1, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
    j1 = hello_msg();
    j1.u.hello.job.micro = 5; /* does not divide 64 */
    n = pipe_encode(&j1, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
    j1 = hello_msg();
    j1.u.hello.job.dims[1] = 0;
    n = pipe_encode(&j1, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
    j1 = hello_msg();
    j1.u.hello.stage = 2; /* of 2 stages */
    n = pipe_encode(&j1, buf, sizeof(buf));
    CU_ASSERT(pipe_decode(buf, (size_t)n, &out, why, sizeof(why)) == -EBADMSG);
    j1 = hello_msg();
    j1.u.hello.desc_len = SHOAL_DESC_MAX + 1;
    CU_ASSERT(pipe_encode(&j1, buf, sizeof(buf)) < 0);

    /* random bytes, and random damage to a good HELLO: never a crash,
     * and a message that decodes is well formed */
    uint64_t st = 99;
    int accepted = 0;
    for (int t = 0; t < 20000; t++) {
        size_t len;
        if (t & 1) {
            len = (size_t)(rng_next(&st) % 300);
            for (size_t i = 0; i < len; i++)
                bad[i] = (uint8_t)rng_next(&st);
            if (len >= 8 && t % 4 == 1) { /* a good header, random body */
                memcpy(bad, buf, 8);
                bad[5] = (uint8_t)(1 + rng_next(&st) % PIPE_TYPE_MAX);
            }
        } else {
            len = (size_t)n;
            memcpy(bad, buf, len);
            bad[rng_next(&st) % len] ^= (uint8_t)(1 + rng_next(&st) % 255);
        }
        if (pipe_decode(bad, len, &out, why, sizeof(why)) == 0) {
            accepted++;
            CU_ASSERT(out.type >= 1 && out.type <= PIPE_TYPE_MAX);
            if (out.type == PIPE_HELLO)
                CU_ASSERT(out.u.hello.job.nlayers >= 1 &&
                          out.u.hello.job.nlayers <= MODEL_MAX_LAYERS &&
                          out.u.hello.desc_len <= SHOAL_DESC_MAX);
        }
    }
    CU_ASSERT(accepted < 20000);
    CU_ASSERT_STRING_EQUAL(pipe_type_name(PIPE_GO), "GO");
    CU_ASSERT_STRING_EQUAL(pipe_type_name(77), "unknown");
    CU_ASSERT(pipe_imm_kind(pipe_imm(PIPE_GRAD, 12345)) == PIPE_GRAD &&
              pipe_imm_index(pipe_imm(PIPE_GRAD, 12345)) == 12345);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 1;
    CU_pSuite s = CU_add_suite("pipeline", NULL, NULL);
    CU_add_test(s, "layout: bad layouts refused, the problem named", test_layout_check);
    CU_add_test(s, "layout: the split is the best of all splits", test_layout_split);
    CU_add_test(s, "model parts: K stages x M micro-batches = the whole gradient",
                test_pipeline_gradient);
    CU_add_test(s, "protocol: round trips, truncations, bad values, random bytes",
                test_protocol);
    return cu_run_all();
}
