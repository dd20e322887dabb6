/*
 * rng.h -- small deterministic random numbers (splitmix64), so the same
 * seed gives the same model and the same batches on every machine.
 */
#ifndef SHOAL_TRAIN_RNG_H
#define SHOAL_TRAIN_RNG_H

#include <stddef.h>
#include <stdint.h>

static inline uint64_t rng_mix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* The next number of the stream held in *state. */
static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t z = *state;
    *state += 0x9e3779b97f4a7c15ull;
    return rng_mix(z);
}

/* Uniform in [0, 1). */
static inline double rng_unit(uint64_t x)
{
    return (double)(x >> 11) * (1.0 / 9007199254740992.0);
}

/* Uniform in [0, n) (n small enough that the bias does not matter). */
static inline size_t rng_below(uint64_t *state, size_t n)
{
    return (size_t)(rng_unit(rng_next(state)) * (double)n);
}

/* Fisher-Yates shuffle of idx[0..n). */
static inline void rng_shuffle(uint32_t *idx, size_t n, uint64_t seed)
{
    uint64_t st = rng_mix(seed);
    for (size_t i = n; i > 1; i--) {
        size_t j = rng_below(&st, i);
        uint32_t t = idx[i - 1];
        idx[i - 1] = idx[j];
        idx[j] = t;
    }
}

#endif
