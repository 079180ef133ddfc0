/* PCG32 (PCG-XSH-RR 64/32) and an unbiased bounded draw; twin of numerics/rng.py. */
#include "tinycl_rt.h"

uint32_t tc_rng_next(tc_rng *r)
{
    uint64_t old = r->state;
    uint32_t xorshifted, rot;
    r->state = old * 6364136223846793005ULL + r->inc;
    xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    rot = (uint32_t)(old >> 59);
    return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

void tc_rng_seed(tc_rng *r, uint64_t seed, uint64_t seq)
{
    r->state = 0u;
    r->inc = (seq << 1) | 1u;
    (void)tc_rng_next(r);
    r->state += seed;
    (void)tc_rng_next(r);
}

/* uniform in [0, n), n >= 1: reject r < 2^32 mod n, then r mod n */
uint32_t tc_rng_below(tc_rng *r, uint32_t n)
{
    uint32_t threshold = (uint32_t)(0u - n) % n;
    for (;;) {
        uint32_t v = tc_rng_next(r);
        if (v >= threshold)
            return v % n;
    }
}
