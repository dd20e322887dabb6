/*
 * model.h -- dense classifiers on OpenBLAS: softmax regression (no hidden
 * layer) and multi-layer perceptrons with ReLU, cross-entropy loss,
 * single precision.
 *
 * All parameters live in one flat float vector (so it can be registered
 * once and sharded by offset): for each layer, its weights (in x out,
 * row-major) then its biases (out).
 *
 * A model can also be a *part* of a whole one: consecutive layers
 * [first, first + nlayers) of it (a pipeline stage, see layout.h), with
 * its own flat vector, which is the slice [base, base + nparams) of the
 * whole one.  Only the part that ends in the class scores has no ReLU on
 * its last layer.
 */
#ifndef SHOAL_TRAIN_MODEL_H
#define SHOAL_TRAIN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MODEL_MAX_LAYERS 8

struct model {
    int nlayers;                      /* weight layers (hidden + 1) */
    int dims[MODEL_MAX_LAYERS + 1];   /* dims[0] = inputs, dims[nlayers] = classes */
    size_t w_off[MODEL_MAX_LAYERS];   /* offsets into the parameter vector */
    size_t b_off[MODEL_MAX_LAYERS];
    size_t nparams;
    int first;                        /* the whole model's index of layer 0 */
    size_t base;                      /* the whole vector's index of parameter 0 */
    bool scores;                      /* the last layer gives class scores (no ReLU) */
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

/* Layers [l0, l1) of @whole as a model of their own (0 < l1 - l0, l1 <=
 * whole->nlayers); -EINVAL otherwise. */
int model_part(const struct model *whole, int l0, int l1, struct model *part);

/* "784-256-10" */
void model_describe(const struct model *m, char *buf, size_t len);

/* Parse "256" or "512,128" (or "" / "0" for none) into hidden sizes. */
int model_parse_hidden(const char *s, int *hidden, int max);

/* PyTorch's default Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from
 * a seed; element i depends only on (seed, i), i counted in the whole
 * model's vector (so a part gets exactly its slice of the whole's). */
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
/* The same, with model_backward_cb's @ready. */
float model_grad_cb(const struct model *m, const float *p, float *g, const float *x,
                    const int32_t *y, int B, struct model_ws *ws,
                    void (*ready)(void *arg, size_t from), void *arg);

/*
 * The pieces of model_grad, for a pipeline stage that runs a batch as
 * micro-batches through a part of the model:
 *
 * model_forward: B rows of @in (B x dims[0]) through every layer; act[l]
 * (B x dims[l + 1]) gets layer l's output, ReLU'd unless it is the scores.
 *
 * model_loss_grad: for B rows of C class scores @z and labels @y, d = (softmax(z)
 * - onehot(y)) * scale; returns the summed loss.
 *
 * model_backward: @d is dLoss/dZ of the last layer (B x dims[nlayers]),
 * @in and @act as model_forward left them.  The parameter gradient goes
 * to @g (beta 0) or is added to it (beta 1); if @din is not NULL it gets
 * dLoss/dZ of the layer that produced @in: (d W^T) masked by in > 0.
 * tmp[0], tmp[1]: B x (widest layer) floats of scratch; @ones: B ones.
 */
void model_forward(const struct model *m, const float *p, const float *in, int B,
                   float *const *act);
double model_loss_grad(const float *z, const int32_t *y, int B, int C, float scale, float *d);
void model_backward(const struct model *m, const float *p, float *g, float beta,
                    const float *in, float *const *act, const float *d, float *din,
                    float *const *tmp, const float *ones, int B);
/* The same, calling @ready(@arg, off) after each layer but the first once
 * its gradient is done: the entries of @g from off on are final. */
void model_backward_cb(const struct model *m, const float *p, float *g, float beta,
                       const float *in, float *const *act, const float *d, float *din,
                       float *const *tmp, const float *ones, int B,
                       void (*ready)(void *arg, size_t from), void *arg);

/* Mean loss and number of correct predictions over n rows (any n). */
float model_eval(const struct model *m, const float *p, const float *x, const int32_t *y,
                 size_t n, size_t *correct, struct model_ws *ws);

#endif
