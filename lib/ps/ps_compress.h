/*
 * ps_compress.h -- the wire formats of gradients and parameters under a
 * job's compression: half-width floats (fp16, bf16) and top-k sparse
 * gradients with error feedback.  Pure functions on buffers, tested on
 * their own (tests/ps/test-ps-core); the worker and the server call them
 * around their puts.
 *
 * Layouts, per server slice of n floats:
 *   NONE       n fp32 both ways
 *   FP16/BF16  n u16 both ways (IEEE binary16, round to nearest even;
 *              bfloat16, round to nearest even, NaN kept a NaN)
 *   TOPK       push: k = ps_topk_k(ratio, n) pairs (u32 index, fp32 value),
 *              indices < n; pull: n fp32
 */
#ifndef SHOAL_PS_COMPRESS_H
#define SHOAL_PS_COMPRESS_H

#include <stddef.h>
#include <stdint.h>

#include "shoal_ps.h"

/* Bytes of a pushed gradient slice / a pulled parameter slice of n floats. */
/* fp16 or bf16: gradients and parameters at half width. */
bool ps_is_half(shoal_ps_compress_t c);
size_t ps_push_bytes(const shoal_ps_job_t *j, size_t n);
size_t ps_pull_bytes(const shoal_ps_job_t *j, size_t n);

/* Entries a top-k push of n floats sends: ceil(ratio * n), at least 1. */
size_t ps_topk_k(float ratio, size_t n);

/* fp32 <-> fp16/bf16 (@kind FP16 or BF16); vectorised (F16C when the CPU
 * has it). */
void ps_half_pack(shoal_ps_compress_t kind, uint16_t *dst, const float *src, size_t n);
void ps_half_unpack(shoal_ps_compress_t kind, float *dst, const uint16_t *src, size_t n);
/* acc[i] += src[i] */
void ps_half_unpack_add(shoal_ps_compress_t kind, float *acc, const uint16_t *src, size_t n);

/*
 * Top-k: pack the k entries of (g + *resid) largest in magnitude into
 * @dst as (index, value) pairs; with @resid (error feedback) it then holds
 * what was not sent (the sum of the gradients is conserved: sent + resid
 * = previous resid + g), else it is not touched and may be NULL.
 * @scratch holds n floats.
 */
void ps_topk_pack(uint8_t *dst, const float *g, float *resid, size_t n, size_t k,
                  float *scratch);
/* acc[index] += value for each pair; -EBADMSG if an index is >= n (the
 * sender is broken or hostile), with acc partly updated. */
int ps_topk_unpack_add(float *acc, const uint8_t *src, size_t n, size_t k);

#endif
