/* Helpers shared by erc's C kernels: bf16 <-> float32 and the counter-based dropout mask.
 *
 * Dropout mask: element i of a call with key `seed` is kept when a 16-bit number drawn from a
 * hash of (seed, i / 2) is >= cut (the two halves of one 32-bit hash serve elements 2k and
 * 2k + 1), so the drop probability is cut / 65536. A function of (seed, i): never stored, the
 * backward recomputes it. The token attention's weight dropout uses it; tests/test_token_attention.py
 * reproduces the mask from its key in NumPy.
 */
#ifndef ERC_COMMON_H
#define ERC_COMMON_H

#include <stdint.h>
#include <string.h>

static inline uint32_t erc_mix32(uint32_t x) { /* a 32-bit finaliser with low bias */
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

/* scale if element i is kept, else 0 */
static inline float erc_keep_scale(int64_t i, uint64_t seed, uint32_t cut, float scale) {
    const uint64_t c = (uint64_t)i >> 1;
    const uint32_t h = erc_mix32(erc_mix32((uint32_t)c ^ (uint32_t)seed) + (uint32_t)(seed >> 32)
                                 + (uint32_t)(c >> 32) * 0x9e3779b9U);
    const uint32_t v = (i & 1) ? (h >> 16) : (h & 0xffffU);
    return v >= cut ? scale : 0.0f;
}

static inline float erc_bf16_to_f32(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t erc_f32_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t rounded = (u + 0x7fffU + ((u >> 16) & 1U)) >> 16;
    return (uint16_t)(((u & 0x7fffffffU) > 0x7f800000U) ? ((u >> 16) | 0x40U) : rounded);
}

#define ERC_LOAD_f32(p, i) ((p)[i])
#define ERC_LOAD_bf16(p, i) erc_bf16_to_f32((p)[i])
#define ERC_STORE_f32(v) (v)
#define ERC_STORE_bf16(v) erc_f32_to_bf16(v)
#define ERC_CTYPE_f32 float
#define ERC_CTYPE_bf16 uint16_t

#endif
