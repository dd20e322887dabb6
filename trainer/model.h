/*
 * model.h -- dense classifiers on OpenBLAS: softmax regression (no hidden
 * layer) and multi-layer perceptrons with ReLU, cross-entropy loss,
 * single precision.
 *
 * All parameters live in one flat float vector (so it can be registered
 * once and sharded by offset): for each layer, its weights (in x out,
 * row-major) then its biases (out).
 */
#ifndef SHOAL_TRAIN_MODEL_H
#define SHOAL_TRAIN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_MAX_LAYERS 8

struct model {
    int nlayers;                      /* weight layers (hidden + 1) */
    int dims[MODEL_MAX_LAYERS + 1];   /* dims[0] = inputs, dims[nlayers] = classes */
    size_t w_off[MODEL_MAX_LAYERS];   /* offsets into the parameter vector */
    size_t b_off[MODEL_MAX_LAYERS];
    size_t nparams;
};

/* Scratch for one batch size; owned by one thread. */
struct model_ws {
    int maxb;
    float *act[MODEL_MAX_LAYERS + 1];  /* act[0] is the input batch */
    float *delta[2];
    float *ones;
};

/* Describe a model; hidden may be NULL with nhidden 0 (softmax regression). */
int model_init(struct model *m, int inputs, const int *hidden, int nhidden, int classes);

/* "784-256-10" */
void model_describe(const struct model *m, char *buf, size_t len);

/* Parse "256" or "512,128" (or "" / "0" for none) into hidden sizes. */
int model_parse_hidden(const char *s, int *hidden, int max);

/* PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from
 * a seed; element i depends only on (seed, i). */
void model_init_params(const struct model *m, float *p, uint64_t seed);

int model_ws_init(struct model_ws *ws, const struct model *m, int maxb);
void model_ws_free(struct model_ws *ws);

/*
 * One forward and backward pass on a batch of B rows (x: B x inputs,
 * y: B labels): writes the gradient of the mean cross-entropy to @g and
 * returns the mean loss.  Uses ws->act[0] as the input if x == NULL.
 */
float model_grad(const struct model *m, const float *p, float *g, const float *x,
                 const int32_t *y, int B, struct model_ws *ws);

/* Mean loss and number of correct predictions over n rows (any n). */
float model_eval(const struct model *m, const float *p, const float *x, const int32_t *y,
                 size_t n, size_t *correct, struct model_ws *ws);

#endif
