/*
 * linreg.c -- a program of its own on the shoal parameter server: linear
 * regression y = w.x + b on synthetic data, data-parallel over the
 * workers, SGD with momentum on the servers.  Built against the installed
 * library only:
 *
 *     cc linreg.c $(pkg-config --cflags --libs shoal-ps) -o linreg
 *     shoal-run -n 2 -s 1 -- ./linreg            (1 server, 2 workers)
 *
 * Every rank runs the same program; ranks below the server count serve.
 * Exit status 0 when the learned weights are within 1e-2 of the truth.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <shoal_ps.h>

#define D 16          /* features */
#define N 4096        /* samples per worker */
#define BATCH 32

/* The same truth and data on every rank: a small deterministic generator. */
static uint64_t rng_state;
static double uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

int main(void)
{
    shoal_ps_config_t cfg;
    char err[1024];
    shoal_ps_config_init(&cfg);
    if (shoal_ps_config_from_env(&cfg, err, sizeof(err))) {
        fprintf(stderr, "linreg: %s\n", err);
        return 2;
    }
    cfg.job.iters_per_epoch = N / BATCH;
    cfg.job.epochs = 5;
    cfg.job.batch = BATCH;
    cfg.job.optimizer = SHOAL_PS_SGD;
    cfg.job.lr = 0.05f;
    cfg.job.momentum = 0.9f;
    snprintf(cfg.job.label, sizeof(cfg.job.label), "linreg-%d", D);
    if (shoal_ps_is_server(&cfg)) {
        if (shoal_ps_serve(&cfg, err, sizeof(err))) {
            fprintf(stderr, "linreg: server: %s\n", err);
            return 1;
        }
        return 0;
    }
    /* The model: weights and bias, two named tensors in one flat vector. */
    static float params[D + 1], grads[D + 1];
    shoal_ps_tensor_t tensors[] = {{"weight", D}, {"bias", 1}};
    double truth[D + 1];
    rng_state = 42;
    for (int i = 0; i <= D; i++)
        truth[i] = 2.0 * uniform() - 1.0;
    shoal_ps_t *ps;
    if (shoal_ps_create(&cfg, tensors, 2, params, grads, &ps, err, sizeof(err))) {
        fprintf(stderr, "linreg: %s\n", err);
        return 1;
    }
    int w = shoal_ps_worker(ps);
    if (shoal_ps_join(ps)) {
        fprintf(stderr, "linreg: worker %d: %s\n", w, shoal_ps_errmsg(ps));
        shoal_ps_destroy(ps);
        return 1;
    }
    /* This worker's data. */
    static float x[N][D], y[N];
    rng_state = 1000 + (uint64_t)w;
    for (int n = 0; n < N; n++) {
        double t = truth[D];
        for (int i = 0; i < D; i++) {
            x[n][i] = (float)(2.0 * uniform() - 1.0);
            t += truth[i] * x[n][i];
        }
        y[n] = (float)(t + 0.01 * (uniform() - 0.5));
    }
    uint32_t total = cfg.job.iters_per_epoch * cfg.job.epochs;
    int rc = 0;
    for (uint32_t k = shoal_ps_iteration(ps); k < total; k = shoal_ps_iteration(ps)) {
        /* Mean-squared-error gradient of batch k. */
        memset(grads, 0, sizeof(grads));
        for (int b = 0; b < BATCH; b++) {
            int n = (int)((k * BATCH + (uint32_t)b) % N);
            double e = params[D] - y[n];
            for (int i = 0; i < D; i++)
                e += params[i] * x[n][i];
            for (int i = 0; i < D; i++)
                grads[i] += (float)(2.0 * e * x[n][i] / BATCH);
            grads[D] += (float)(2.0 * e / BATCH);
        }
        if ((rc = shoal_ps_push_pull(ps))) {
            fprintf(stderr, "linreg: worker %d: %s\n", w, shoal_ps_errmsg(ps));
            break;
        }
    }
    if (rc == 0 && (rc = shoal_ps_finish(ps)))
        fprintf(stderr, "linreg: worker %d: %s\n", w, shoal_ps_errmsg(ps));
    double worst = 0;
    for (int i = 0; i <= D; i++)
        worst = fmax(worst, fabs(params[i] - truth[i]));
    printf("linreg: worker %d: %u iterations over %s; largest weight error %.5f\n", w, total,
           shoal_ps_describe(ps), worst);
    shoal_ps_destroy(ps);
    return rc || worst > 1e-2 ? 1 : 0;
}
