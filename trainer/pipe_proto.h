/*
 * pipe_proto.h -- what the stages of a pipeline say to each other: the
 * control messages on a stage-to-stage connection (shoal_send), encoded
 * and validated in one place, and the immediates that announce the data
 * the one-sided puts carried.
 *
 * A connection joins stage s (which connects) to stage s + 1 of the same
 * replica (which listens).
 *   HELLO    s -> s+1  the job as stage s knows it (stage 0 reads the
 *                      data, so the shape and the iterations come from
 *                      it) and the descriptor of s's gradient inbox
 *   WELCOME  s+1 -> s  the descriptor of s+1's activation inbox
 *   RESET    both      the chain starts over at generation gen (a stage
 *                      was lost or came back)
 *   SYNC     down      the smallest iteration any stage up to here still
 *                      has to push (each stage's PS iteration)
 *   GO       up        the last stage's verdict: every stage runs step
 *                      `iteration` next
 *   CREDIT   both      a slot of the receiver's inbox is free again
 *                      (gradients: to s+1; evaluation chunks: to s)
 *   STATS    down      each stage's busy seconds so far, stage by stage
 *   EVAL_END down      the evaluation chunks are all sent
 *   GATHER   up        the descriptor of the buffer the model is gathered
 *                      in (--save)
 *   DONE     up        every stage from here down has finished the job
 *   EXIT     down      the whole chain has: close
 *   ERROR    both      refused (a different job), with the reason
 * Every message but ERROR carries the sender's generation; a receiver
 * ignores one from an older generation.
 *
 * Immediates: kind (4 bits) and an index (28 bits): which micro-batch
 * (ACT, GRAD) or evaluation chunk (EVAL) the put carried.
 */
#ifndef SHOAL_TRAIN_PIPE_PROTO_H
#define SHOAL_TRAIN_PIPE_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "shoal.h"

#define PIPE_MAGIC 0x50504853u /* "SHPP" */
#define PIPE_VERSION 1
#define PIPE_TEXT_MAX 512

enum pipe_type {
    PIPE_HELLO = 1,
    PIPE_WELCOME,
    PIPE_RESET,
    PIPE_SYNC,
    PIPE_GO,
    PIPE_CREDIT,
    PIPE_STATS,
    PIPE_EVAL_END,
    PIPE_GATHER,
    PIPE_DONE,
    PIPE_EXIT,
    PIPE_ERROR,
    PIPE_TYPE_MAX = PIPE_ERROR
};

/* The kinds of data a put carries (imm >> 28). */
enum pipe_kind {
    PIPE_ACT = 1,   /* a micro-batch's activations (and labels), forward */
    PIPE_GRAD,      /* a micro-batch's input gradient, backward */
    PIPE_EVAL,      /* an evaluation chunk's activations, forward */
    PIPE_MODEL      /* the gathered model, forward */
};

static inline uint32_t pipe_imm(enum pipe_kind k, uint32_t index)
{
    return (uint32_t)k << 28 | (index & 0x0fffffffu);
}
static inline enum pipe_kind pipe_imm_kind(uint32_t imm) { return (enum pipe_kind)(imm >> 28); }
static inline uint32_t pipe_imm_index(uint32_t imm) { return imm & 0x0fffffffu; }

/* The job a stage learns from the stage before it. */
struct pipe_job {
    uint32_t stages, replicas, micro, batch;
    uint32_t iters_per_epoch, epochs;
    uint32_t nlayers;
    uint32_t dims[MODEL_MAX_LAYERS + 1];
};

struct pipe_msg {
    uint8_t type;
    uint32_t gen;
    union {
        struct pipe_hello {           /* HELLO and WELCOME */
            uint32_t worker, stage, replica;
            uint64_t incarnation;
            struct pipe_job job;      /* HELLO only */
            uint32_t desc_len;
            uint8_t desc[SHOAL_DESC_MAX];
        } hello;
        uint32_t iteration;           /* SYNC, GO */
        uint32_t kind;                /* CREDIT: PIPE_GRAD or PIPE_EVAL */
        struct {
            uint32_t iteration, n;
            double busy[MODEL_MAX_LAYERS];
        } stats;
        uint32_t chunks;              /* EVAL_END */
        struct {
            uint32_t desc_len;
            uint8_t desc[SHOAL_DESC_MAX];
        } gather;
        char text[PIPE_TEXT_MAX];     /* ERROR */
    } u;
};

/* Encode into @buf (SHOAL_MSG_MAX is always enough): the length, or
 * -EINVAL for a message that breaks the rules below. */
int pipe_encode(const struct pipe_msg *m, uint8_t *buf, size_t cap);

/* Decode and validate (magic, version, type, exact length, counts within
 * limits, text without NULs): 0, or -EBADMSG with the problem in @why. */
int pipe_decode(const void *buf, size_t len, struct pipe_msg *m, char *why, size_t whylen);

const char *pipe_type_name(int type);

/* Encode and send (wr_id = the type). */
int pipe_send(shoal_ep_t *ep, const struct pipe_msg *m);

#endif
