/*
 * model.c -- forward and backward passes on OpenBLAS (see model.h).
 *
 * Per layer l (A_0 = the input batch, B rows):
 *   forward   Z_l = A_{l-1} W_l + 1 b_l^T       one sgemm
 *             A_l = relu(Z_l)   (hidden layers; the last gets softmax)
 *   backward  D_L = (softmax(Z_L) - onehot(y)) / B
 *             dW_l = A_{l-1}^T D_l               one sgemm
 *             db_l = D_l^T 1                     one sgemv
 *             D_{l-1} = (D_l W_l^T) * [A_{l-1} > 0]   one sgemm (not for l = 1)
 * The element-wise steps (bias rows, relu, softmax, mask) are single
 * passes over the activations; every product is BLAS.  A part of a model
 * (a pipeline stage) runs the same steps on its own layers; the stage
 * before it gets D = (D_first W_first^T) * [A_in > 0] from it, and only
 * the last part computes the loss.
 */
#include "model.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"

int model_init(struct model *m, int inputs, const int *hidden, int nhidden, int classes)
{
    memset(m, 0, sizeof(*m));
    if (inputs <= 0 || classes < 2 || nhidden < 0 || nhidden >= MODEL_MAX_LAYERS)
        return -EINVAL;
    m->nlayers = nhidden + 1;
    m->dims[0] = inputs;
    for (int i = 0; i < nhidden; i++) {
        if (hidden[i] <= 0)
            return -EINVAL;
        m->dims[i + 1] = hidden[i];
    }
    m->dims[m->nlayers] = classes;
    size_t off = 0;
    for (int l = 0; l < m->nlayers; l++) {
        m->w_off[l] = off;
        off += (size_t)m->dims[l] * (size_t)m->dims[l + 1];
        m->b_off[l] = off;
        off += (size_t)m->dims[l + 1];
    }
    m->nparams = off;
    m->scores = true;
    return 0;
}

int model_part(const struct model *whole, int l0, int l1, struct model *part)
{
    memset(part, 0, sizeof(*part));
    if (l0 < 0 || l1 <= l0 || l1 > whole->nlayers)
        return -EINVAL;
    part->nlayers = l1 - l0;
    part->first = whole->first + l0;
    part->base = whole->base + whole->w_off[l0];
    for (int l = 0; l <= part->nlayers; l++)
        part->dims[l] = whole->dims[l0 + l];
    for (int l = 0; l < part->nlayers; l++) {
        part->w_off[l] = whole->w_off[l0 + l] - whole->w_off[l0];
        part->b_off[l] = whole->b_off[l0 + l] - whole->w_off[l0];
    }
    part->nparams = (l1 < whole->nlayers ? whole->w_off[l1] : whole->nparams) -
                    whole->w_off[l0];
    part->scores = whole->scores && l1 == whole->nlayers;
    return 0;
}

void model_describe(const struct model *m, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    for (int l = 0; l <= m->nlayers && used < len; l++)
        used += (size_t)snprintf(buf + used, len - used, l ? "-%d" : "%d", m->dims[l]);
}

int model_parse_hidden(const char *s, int *hidden, int max)
{
    int n = 0;
    if (!s || !*s || strcmp(s, "0") == 0 || strcmp(s, "none") == 0)
        return 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > 1 << 16 || (*end && *end != ','))
            return -EINVAL;
        if (n == max)
            return -E2BIG;
        hidden[n++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return n;
}

void model_init_params(const struct model *m, float *p, uint64_t seed)
{
    for (int l = 0; l < m->nlayers; l++) {
        double bound = 1.0 / sqrt((double)m->dims[l]);
        size_t end = l + 1 < m->nlayers ? m->w_off[l + 1] : m->nparams;
        for (size_t i = m->w_off[l]; i < end; i++) {
            double u = rng_unit(rng_mix(seed * 0x100000001b3ull + m->base + i));
            p[i] = (float)((2.0 * u - 1.0) * bound);
        }
    }
}

int model_ws_init(struct model_ws *ws, const struct model *m, int maxb)
{
    memset(ws, 0, sizeof(*ws));
    ws->maxb = maxb;
    int widest = 0;
    for (int l = 0; l <= m->nlayers; l++) {
        ws->act[l] = malloc((size_t)maxb * (size_t)m->dims[l] * sizeof(float));
        if (!ws->act[l])
            goto nomem;
        if (l > 0 && m->dims[l] > widest)
            widest = m->dims[l];
    }
    for (int i = 0; i < 2; i++)
        if (!(ws->delta[i] = malloc((size_t)maxb * (size_t)widest * sizeof(float))))
            goto nomem;
    if (!(ws->ones = malloc((size_t)maxb * sizeof(float))))
        goto nomem;
    for (int i = 0; i < maxb; i++)
        ws->ones[i] = 1.0f;
    return 0;
nomem:
    model_ws_free(ws);
    return -ENOMEM;
}

void model_ws_free(struct model_ws *ws)
{
    for (int l = 0; l <= MODEL_MAX_LAYERS; l++)
        free(ws->act[l]);
    free(ws->delta[0]);
    free(ws->delta[1]);
    free(ws->ones);
    memset(ws, 0, sizeof(*ws));
}

void model_forward(const struct model *m, const float *p, const float *in, int B,
                   float *const *act)
{
    const float *a = in;
    for (int l = 0; l < m->nlayers; l++) {
        int k = m->dims[l], n = m->dims[l + 1];
        float *z = act[l];
        const float *b = p + m->b_off[l];
        for (int r = 0; r < B; r++)
            memcpy(z + (size_t)r * n, b, (size_t)n * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, n, k, 1.0f, a, k,
                    p + m->w_off[l], n, 1.0f, z, n);
        if (l + 1 < m->nlayers || !m->scores)
            for (size_t i = 0; i < (size_t)B * n; i++)
                z[i] = z[i] > 0.0f ? z[i] : 0.0f;
        a = z;
    }
}

/* Row-wise log-softmax pieces: returns the loss of row r for label y and
 * (if @prob) writes softmax into prob. */
static float softmax_row(const float *z, int n, int y, float *prob)
{
    float mx = z[0];
    for (int j = 1; j < n; j++)
        mx = z[j] > mx ? z[j] : mx;
    double sum = 0.0;
    for (int j = 0; j < n; j++)
        sum += exp((double)(z[j] - mx));
    double logz = log(sum) + mx;
    if (prob)
        for (int j = 0; j < n; j++)
            prob[j] = (float)exp((double)z[j] - logz);
    return (float)(logz - z[y]);
}

double model_loss_grad(const float *z, const int32_t *y, int B, int C, float scale, float *d)
{
    double loss = 0.0;
    for (int r = 0; r < B; r++) {
        float *dr = d + (size_t)r * C;
        loss += softmax_row(z + (size_t)r * C, C, y[r], dr);
        dr[y[r]] -= 1.0f;
        for (int j = 0; j < C; j++)
            dr[j] *= scale;
    }
    return loss;
}

void model_backward(const struct model *m, const float *p, float *g, float beta,
                    const float *in, float *const *act, const float *d, float *din,
                    float *const *tmp, const float *ones, int B)
{
    model_backward_cb(m, p, g, beta, in, act, d, din, tmp, ones, B, NULL, NULL);
}

void model_backward_cb(const struct model *m, const float *p, float *g, float beta,
                       const float *in, float *const *act, const float *d, float *din,
                       float *const *tmp, const float *ones, int B,
                       void (*ready)(void *arg, size_t from), void *arg)
{
    const int L = m->nlayers;
    for (int l = L - 1; l >= 0; l--) {
        int k = m->dims[l], n = m->dims[l + 1];
        const float *a = l ? act[l - 1] : in;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, B, 1.0f, a, k, d, n, beta,
                    g + m->w_off[l], n);
        cblas_sgemv(CblasRowMajor, CblasTrans, B, n, 1.0f, d, n, ones, 1, beta,
                    g + m->b_off[l], 1);
        if (ready && l > 0) /* layers l.. are done; the first one ends the pass */
            ready(arg, m->w_off[l]);
        if (l == 0 && !din)
            break;
        /* (alternating scratch: never the buffer d is read from) */
        float *dprev = l ? tmp[(L - l) & 1] : din;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, k, n, 1.0f, d, n,
                    p + m->w_off[l], n, 0.0f, dprev, k);
        for (size_t i = 0; i < (size_t)B * k; i++)
            if (!(a[i] > 0.0f))
                dprev[i] = 0.0f;
        d = dprev;
    }
}

float model_grad(const struct model *m, const float *p, float *g, const float *x,
                 const int32_t *y, int B, struct model_ws *ws)
{
    return model_grad_cb(m, p, g, x, y, B, ws, NULL, NULL);
}

float model_grad_cb(const struct model *m, const float *p, float *g, const float *x,
                    const int32_t *y, int B, struct model_ws *ws,
                    void (*ready)(void *arg, size_t from), void *arg)
{
    const int L = m->nlayers, C = m->dims[L];
    const float *in = x ? x : ws->act[0];
    model_forward(m, p, in, B, ws->act + 1);
    /* D_L = (softmax - onehot) / B */
    double loss = model_loss_grad(ws->act[L], y, B, C, 1.0f / (float)B, ws->delta[0]);
    model_backward_cb(m, p, g, 0.0f, in, ws->act + 1, ws->delta[0], NULL, ws->delta,
                      ws->ones, B, ready, arg);
    return (float)(loss / B);
}

float model_eval(const struct model *m, const float *p, const float *x, const int32_t *y,
                 size_t n, size_t *correct, struct model_ws *ws)
{
    const int C = m->dims[m->nlayers], D = m->dims[0];
    double loss = 0.0;
    size_t ok = 0;
    for (size_t at = 0; at < n; at += (size_t)ws->maxb) {
        int B = (int)(n - at < (size_t)ws->maxb ? n - at : (size_t)ws->maxb);
        model_forward(m, p, x + at * (size_t)D, B, ws->act + 1);
        const float *z = ws->act[m->nlayers];
        for (int r = 0; r < B; r++) {
            const float *zr = z + (size_t)r * C;
            int best = 0;
            for (int j = 1; j < C; j++)
                if (zr[j] > zr[best])
                    best = j;
            ok += best == y[at + (size_t)r];
            loss += softmax_row(zr, C, y[at + (size_t)r], NULL);
        }
    }
    if (correct)
        *correct = ok;
    return n ? (float)(loss / (double)n) : 0.0f;
}
