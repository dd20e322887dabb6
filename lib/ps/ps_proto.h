/*
 * ps_proto.h -- what the PS layer sends over libshoal, in one place.
 *
 * Bulk data moves with one-sided puts; these control messages (shoal_send,
 * at most SHOAL_MSG_MAX bytes) set the job up.  Every message starts with
 *
 *   u32 magic "STRN"   u16 version   u16 type   u32 body length
 *
 * in little-endian, and each body is a fixed sequence of little-endian
 * integers and length-prefixed strings/blobs.  A receiver checks the
 * magic, the version, the type and every length before using a field
 * (ps_decode* below); anything else is a protocol error that closes the
 * connection.
 *
 * Immediates (32 bits) carry iteration numbers:
 *   worker -> server, gradient put into the worker's slot: the worker's
 *       iteration (0, 1, ...), i.e. how many gradients it pushed before;
 *   server -> worker, parameter put into the worker's buffer: the number
 *       of updates the parameters contain (the version).
 */
#ifndef SHOAL_PS_PROTO_H
#define SHOAL_PS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shoal.h"
#include "shoal_ps.h"

#define PS_MAGIC 0x4e525453u /* "STRN" little-endian */
#define PS_VERSION 4      /* 3: MEMBERS; 4: the job's optimizer and tensor layout */
#define PS_HOST_MAX SHOAL_PS_HOST_MAX   /* bytes of a host name, with its NUL */
#define PS_MAX_SERVERS SHOAL_PS_MAX_SERVERS /* a table of them fits SHOAL_MSG_MAX */
#define PS_MAX_WORKERS SHOAL_PS_MAX_WORKERS
#define PS_MODEL_MAX SHOAL_PS_LABEL_MAX

enum ps_type {
    PS_SERVER_REG = 1, /* server s -> server 0: where s listens */
    PS_TABLE_REQ,      /* worker -> server 0: where are the servers? */
    PS_TABLE,          /* server 0 -> worker: every server's address */
    PS_HELLO,          /* worker -> server: who I am, the job, my buffer */
    PS_WELCOME,        /* server -> worker: your shard and your slot */
    PS_BYE,            /* worker -> server: finished */
    PS_ERROR,          /* either way: why the peer is refused, then close */
    PS_CHECK,          /* server -> worker (--verify): CRC-32 of the parameters
                          just put, sent after them */
    PS_PING,           /* either way: heartbeat when nothing else was sent */
    PS_MEMBERS,        /* server 0 -> worker: the workers whose data shards
                          partition the training set in an epoch */
    PS_ROLLBACK,       /* worker -> server (bsp): servers continue at different
                          updates; go back from update `from` to the checkpoint
                          at update `to` */
    PS_PROBE,          /* worker -> server: are you the server I know? (answer
                          with PROBE_ACK and the same nonce) */
    PS_PROBE_ACK,      /* server -> worker: yes */
};

enum ps_mode { PS_BSP = SHOAL_PS_BSP, PS_ASYNC = SHOAL_PS_ASYNC, PS_SSP = SHOAL_PS_SSP };

struct ps_addr {
    char host[PS_HOST_MAX];
    uint16_t port;
};

struct ps_hello {
    uint32_t group;                    /* the parameter group it trains */
    uint32_t worker, servers;          /* worker: its index in the group */
    uint32_t incarnation;              /* new for every start of the worker process */
    uint32_t clock;                    /* iterations this worker has completed */
    shoal_ps_job_t job;                /* job.workers is W */
    uint64_t nparams;
    uint32_t ntensors;
    uint64_t layout;                   /* ps_layout_hash of the tensor list */
    uint32_t desc_len;
    uint8_t desc[SHOAL_DESC_MAX];      /* the worker's parameter slice for this server
                                          (writable, and readable for the first fetch) */
};

struct ps_welcome {
    uint32_t server;
    uint64_t offset, length;           /* the shard, in floats */
    uint32_t version;                  /* updates applied so far */
    uint32_t iteration;                /* where this worker continues */
    uint32_t desc_len;
    uint8_t desc[SHOAL_DESC_MAX];      /* this worker's gradient slot */
};

/* The workers that share the training data in @epoch: worker i is a member
 * when bit i % 8 of live[i / 8] is set.  The body carries (workers + 7) / 8
 * bytes of it; bits past @workers are zero and at least one is set. */
struct ps_members {
    uint32_t epoch;
    uint32_t workers;
    uint8_t live[PS_MAX_WORKERS / 8];
};

static inline bool ps_member(const uint8_t *live, int i)
{
    return live[i / 8] >> (i % 8) & 1;
}

static inline void ps_member_set(uint8_t *live, int i)
{
    live[i / 8] = (uint8_t)(live[i / 8] | 1u << (i % 8));
}

struct ps_msg {
    enum ps_type type;
    union {
        struct { uint32_t rank; struct ps_addr addr; } reg;
        struct { uint32_t n; struct ps_addr addr[PS_MAX_SERVERS]; } table;
        struct ps_hello hello;
        struct ps_welcome welcome;
        struct { char text[512]; } error;
        struct { uint32_t version, crc; } check;
        struct { uint32_t from, to; } rollback;
        struct { uint32_t nonce; } probe;
        struct ps_members members;
    } u;
};

/* Encode @m into buf (at least SHOAL_MSG_MAX bytes); returns the length,
 * or -EMSGSIZE. */
int ps_encode(const struct ps_msg *m, uint8_t *buf, size_t cap);

/* Decode and validate; on failure returns -EPROTO/-EBADMSG and explains
 * in @why. */
int ps_decode(const void *buf, size_t len, struct ps_msg *m, char *why, size_t whylen);

const char *ps_type_name(enum ps_type t);

#endif
