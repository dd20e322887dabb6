/*
 * ps_compress.c -- gradient and parameter wire formats (see
 * ps_compress.h).
 */
#include "ps_compress.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

size_t ps_topk_k(float ratio, size_t n)
{
    double k = ceil((double)ratio * (double)n);
    if (k < 1)
        k = 1;
    return k > (double)n ? n : (size_t)k;
}

bool ps_is_half(shoal_ps_compress_t c)
{
    return c == SHOAL_PS_COMPRESS_FP16 || c == SHOAL_PS_COMPRESS_BF16;
}

static bool is_topk(shoal_ps_compress_t c)
{
    return c == SHOAL_PS_COMPRESS_TOPK || c == SHOAL_PS_COMPRESS_TOPK_NOEF;
}

size_t ps_push_bytes(const shoal_ps_job_t *j, size_t n)
{
    if (ps_is_half(j->compress))
        return 2 * n;
    if (is_topk(j->compress))
        return 8 * ps_topk_k(j->topk_ratio, n);
    return 4 * n;
}

size_t ps_pull_bytes(const shoal_ps_job_t *j, size_t n)
{
    return ps_is_half(j->compress) ? 2 * n : 4 * n;
}

void shoal_ps_wire_bytes(const shoal_ps_job_t *job, size_t nparams, int servers, size_t *push,
                         size_t *pull)
{
    size_t a = 0, b = 0;
    for (int s = 0; s < servers; s++) {
        size_t lo = nparams * (size_t)s / (size_t)servers;
        size_t hi = nparams * (size_t)(s + 1) / (size_t)servers;
        a += ps_push_bytes(job, hi - lo);
        b += ps_pull_bytes(job, hi - lo);
    }
    *push = a;
    *pull = b;
}

int shoal_ps_parse_compress(const char *s, shoal_ps_compress_t *c, float *ratio)
{
    if (!s)
        return -EINVAL;
    *ratio = 0.0f;
    if (!strcmp(s, "none") || !strcmp(s, "fp32")) {
        *c = SHOAL_PS_COMPRESS_NONE;
        return 0;
    }
    if (!strcmp(s, "fp16")) {
        *c = SHOAL_PS_COMPRESS_FP16;
        return 0;
    }
    if (!strcmp(s, "bf16")) {
        *c = SHOAL_PS_COMPRESS_BF16;
        return 0;
    }
    const char *r = NULL;
    if (!strncmp(s, "topk:", 5)) {
        *c = SHOAL_PS_COMPRESS_TOPK;
        r = s + 5;
    } else if (!strncmp(s, "topk-noef:", 10)) {
        *c = SHOAL_PS_COMPRESS_TOPK_NOEF;
        r = s + 10;
    } else {
        return -EINVAL;
    }
    char *end;
    double v = strtod(r, &end);
    if (end == r || *end || !(v > 0.0 && v <= 1.0))
        return -EINVAL;
    *ratio = (float)v;
    return 0;
}

const char *shoal_ps_compress_name(const shoal_ps_job_t *j, char *buf, size_t len)
{
    switch (j->compress) {
    case SHOAL_PS_COMPRESS_FP16: snprintf(buf, len, "fp16"); break;
    case SHOAL_PS_COMPRESS_BF16: snprintf(buf, len, "bf16"); break;
    case SHOAL_PS_COMPRESS_TOPK: snprintf(buf, len, "topk:%g", (double)j->topk_ratio); break;
    case SHOAL_PS_COMPRESS_TOPK_NOEF:
        snprintf(buf, len, "topk-noef:%g", (double)j->topk_ratio);
        break;
    default: snprintf(buf, len, "none"); break;
    }
    return buf;
}

/* ---- half-width floats ---------------------------------------------------- */

static uint16_t f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xff, m = x & 0x7fffffu;
    if (e == 0xff) /* inf, nan */
        return (uint16_t)(sign | 0x7c00u | (m ? 0x200u | (m >> 13) : 0));
    int ee = (int)e - 127 + 15;
    if (ee >= 0x1f)
        return (uint16_t)(sign | 0x7c00u);
    if (ee <= 0) { /* subnormal or zero */
        if (ee < -10)
            return (uint16_t)sign;
        m |= 0x800000u;
        int shift = 14 - ee;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = (uint32_t)ee << 10 | m >> 13, rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++; /* may carry into the exponent: still correct, up to inf */
    return (uint16_t)(sign | h);
}

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu, x;
    if (e == 0) {
        if (m == 0) {
            x = sign;
        } else { /* subnormal: normalise */
            int k = -1;
            do {
                k++;
                m <<= 1;
            } while (!(m & 0x400u));
            x = sign | (uint32_t)(127 - 15 - k) << 23 | (m & 0x3ffu) << 13;
        }
    } else if (e == 0x1f) {
        x = sign | 0x7f800000u | m << 13;
    } else {
        x = sign | (e - 15 + 127) << 23 | m << 13;
    }
    float f;
    memcpy(&f, &x, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(x >> 16 | 0x40u); /* a NaN stays one */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1)) >> 16);
}

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t x = (uint32_t)h << 16;
    float f;
    memcpy(&f, &x, 4);
    return f;
}

#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) static void f16c_pack(uint16_t *d, const float *s, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++)
        d[i] = f32_to_f16(s[i]);
}

__attribute__((target("avx,f16c"))) static void f16c_unpack(float *d, const uint16_t *s,
                                                             size_t n, int add)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i)));
        if (add)
            v = _mm256_add_ps(v, _mm256_loadu_ps(d + i));
        _mm256_storeu_ps(d + i, v);
    }
    for (; i < n; i++)
        d[i] = add ? d[i] + f16_to_f32(s[i]) : f16_to_f32(s[i]);
}

static int have_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
}
#else
static int have_f16c(void) { return 0; }
static void f16c_pack(uint16_t *d, const float *s, size_t n) { (void)d, (void)s, (void)n; }
static void f16c_unpack(float *d, const uint16_t *s, size_t n, int add)
{
    (void)d, (void)s, (void)n, (void)add;
}
#endif

void ps_half_pack(shoal_ps_compress_t kind, uint16_t *dst, const float *src, size_t n)
{
    if (kind == SHOAL_PS_COMPRESS_BF16) {
        for (size_t i = 0; i < n; i++) /* vectorised by the compiler */
            dst[i] = f32_to_bf16(src[i]);
    } else if (have_f16c()) {
        f16c_pack(dst, src, n);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = f32_to_f16(src[i]);
    }
}

static void half_unpack(shoal_ps_compress_t kind, float *dst, const uint16_t *src, size_t n,
                        int add)
{
    if (kind == SHOAL_PS_COMPRESS_BF16) {
        if (add)
            for (size_t i = 0; i < n; i++)
                dst[i] += bf16_to_f32(src[i]);
        else
            for (size_t i = 0; i < n; i++)
                dst[i] = bf16_to_f32(src[i]);
    } else if (have_f16c()) {
        f16c_unpack(dst, src, n, add);
    } else {
        for (size_t i = 0; i < n; i++)
            dst[i] = add ? dst[i] + f16_to_f32(src[i]) : f16_to_f32(src[i]);
    }
}

void ps_half_unpack(shoal_ps_compress_t kind, float *dst, const uint16_t *src, size_t n)
{
    half_unpack(kind, dst, src, n, 0);
}

void ps_half_unpack_add(shoal_ps_compress_t kind, float *acc, const uint16_t *src, size_t n)
{
    half_unpack(kind, acc, src, n, 1);
}

/* ---- top-k ------------------------------------------------------------------------ */

/* The k-th largest of a[0..n) (k >= 1), by quickselect; a is reordered. */
static float kth_largest(float *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        size_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot)
                i++;
            while (a[j] < pivot)
                j--;
            if (i <= j) {
                float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[lo];
}

void ps_topk_pack(uint8_t *dst, const float *g, float *resid, size_t n, size_t k,
                  float *scratch)
{
    /* the candidates: g + resid (error feedback) or g */
    for (size_t i = 0; i < n; i++)
        scratch[i] = fabsf(resid ? g[i] + resid[i] : g[i]);
    float t = kth_largest(scratch, n, k);
    /* entries above the threshold first, then ties at it, k in all */
    size_t m = 0;
    for (int pass = 0; pass < 2 && m < k; pass++)
        for (size_t i = 0; i < n && m < k; i++) {
            float v = resid ? g[i] + resid[i] : g[i];
            float a = fabsf(v);
            if (pass == 0 ? a > t : a == t) {
                uint32_t idx = (uint32_t)i;
                memcpy(dst + 8 * m, &idx, 4);
                memcpy(dst + 8 * m + 4, &v, 4);
                m++;
                if (resid)
                    resid[i] = -g[i]; /* cancelled by the += g below */
            }
        }
    if (resid)
        for (size_t i = 0; i < n; i++)
            resid[i] += g[i];
}

int ps_topk_unpack_add(float *acc, const uint8_t *src, size_t n, size_t k)
{
    for (size_t m = 0; m < k; m++) {
        uint32_t idx;
        float v;
        memcpy(&idx, src + 8 * m, 4);
        memcpy(&v, src + 8 * m + 4, 4);
        if (idx >= n)
            return -EBADMSG;
        acc[idx] += v;
    }
    return 0;
}
