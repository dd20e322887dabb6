/*
 * layout.c -- replicas, stages and the split of the layers (see layout.h).
 */
#include "layout.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int layout_check(int workers, int stages, int nlayers, int batch, int micro, char *err,
                 size_t errlen)
{
    if (stages < 1 || micro < 1) {
        snprintf(err, errlen, "--stages and --micro-batches must be at least 1");
        return -EINVAL;
    }
    if (workers > 0 && workers % stages) {
        snprintf(err, errlen, "%d workers cannot form replicas of a %d-stage pipeline: "
                 "the worker count must be a multiple of --stages", workers, stages);
        return -EINVAL;
    }
    if (stages > nlayers) {
        snprintf(err, errlen, "--stages %d, but the model has only %d layer%s (a stage holds "
                 "at least one; add --hidden layers or use fewer stages)", stages, nlayers,
                 nlayers == 1 ? "" : "s");
        return -EINVAL;
    }
    if (micro > LAYOUT_MAX_MICRO) {
        snprintf(err, errlen, "--micro-batches %d: at most %d", micro, LAYOUT_MAX_MICRO);
        return -EINVAL;
    }
    if (batch % micro) {
        snprintf(err, errlen, "--micro-batches %d does not divide the batch of %d (each "
                 "micro-batch must have the same number of rows)", micro, batch);
        return -EINVAL;
    }
    return 0;
}

static size_t layer_params(const struct model *m, int l)
{
    return (size_t)m->dims[l] * (size_t)m->dims[l + 1] + (size_t)m->dims[l + 1];
}

void layout_split(struct layout *lo, const struct model *m, int stages, int replicas, int micro)
{
    const int L = m->nlayers, K = stages;
    memset(lo, 0, sizeof(*lo));
    lo->stages = K;
    lo->replicas = replicas;
    lo->micro = micro;
    /* best[k][i]: the smallest largest-stage over splits of layers [0, i)
     * into k stages; cut[k][i]: where the last of them starts. */
    size_t best[MODEL_MAX_LAYERS + 1][MODEL_MAX_LAYERS + 1];
    int cut[MODEL_MAX_LAYERS + 1][MODEL_MAX_LAYERS + 1];
    size_t prefix[MODEL_MAX_LAYERS + 1] = {0};
    for (int l = 0; l < L; l++)
        prefix[l + 1] = prefix[l] + layer_params(m, l);
    for (int k = 0; k <= K; k++)
        for (int i = 0; i <= L; i++)
            best[k][i] = (size_t)-1, cut[k][i] = 0;
    best[0][0] = 0;
    for (int k = 1; k <= K; k++)
        for (int i = k; i <= L; i++)
            for (int j = k - 1; j < i; j++) {
                if (best[k - 1][j] == (size_t)-1)
                    continue;
                size_t run = prefix[i] - prefix[j];
                size_t worst = best[k - 1][j] > run ? best[k - 1][j] : run;
                if (worst < best[k][i]) {
                    best[k][i] = worst;
                    cut[k][i] = j;
                }
            }
    lo->first[K] = L;
    for (int k = K, i = L; k > 0; k--) {
        lo->first[k - 1] = cut[k][i];
        i = cut[k][i];
    }
}

int layout_stage_model(const struct layout *lo, const struct model *m, int s,
                       struct model *part)
{
    if (s < 0 || s >= lo->stages)
        return -EINVAL;
    return model_part(m, lo->first[s], lo->first[s + 1], part);
}

void layout_stage_layers(const struct layout *lo, const struct model *m, int s, char *buf,
                         size_t len)
{
    int l0 = lo->first[s], l1 = lo->first[s + 1];
    size_t used;
    if (l1 - l0 == 1)
        used = (size_t)snprintf(buf, len, "layer %d (", l0 + 1);
    else
        used = (size_t)snprintf(buf, len, "layers %d-%d (", l0 + 1, l1);
    for (int l = l0; l <= l1 && used < len; l++)
        used += (size_t)snprintf(buf + used, len - used, l > l0 ? "-%d" : "%d", m->dims[l]);
    if (used < len)
        snprintf(buf + used, len - used, ")");
}

const char *layout_bytes(double bytes, char *buf, size_t len)
{
    if (bytes >= 1e9)
        snprintf(buf, len, "%.2f GB", bytes / 1e9);
    else if (bytes >= 1e6)
        snprintf(buf, len, "%.1f MB", bytes / 1e6);
    else if (bytes >= 1e3)
        snprintf(buf, len, "%.0f KB", bytes / 1e3);
    else
        snprintf(buf, len, "%.0f B", bytes);
    return buf;
}

void layout_describe(const struct layout *lo, const struct model *m, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = 0;
    for (int s = 0; s < lo->stages && used < len; s++) {
        struct model part;
        char layers[128], b[32];
        layout_stage_model(lo, m, s, &part);
        layout_stage_layers(lo, m, s, layers, sizeof(layers));
        used += (size_t)snprintf(buf + used, len - used, "%sstage %d: %s, %zu parameters (%s)",
                                 s ? "; " : "", s, layers, part.nparams,
                                 layout_bytes((double)part.nparams * sizeof(float), b,
                                              sizeof(b)));
    }
}
