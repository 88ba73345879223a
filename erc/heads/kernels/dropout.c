/* Dropout on CPU in one pass, with a counter-based keep mask (erc.heads.cdropout).
 *
 * Element i of a call with key `seed` is kept when a 16-bit number drawn from a hash of
 * (seed, i / 2) is >= cut (the two halves of one 32-bit hash serve elements 2k and 2k + 1), so
 * the drop probability is cut / 65536. Kept elements are multiplied by `scale` in float32 and
 * rounded once to the output type; dropped ones are multiplied by 0 (a NaN stays NaN, as in
 * PyTorch). Because the mask is a function of (seed, i), the backward recomputes it instead of
 * storing it, and any split of [0, n) into ranges gives the same result (the caller runs ranges
 * on several threads).
 *
 * bf16 is stored as uint16: widened by a shift, rounded to nearest even (NaN kept NaN).
 * Compiled without -ffast-math (x * 0 must stay NaN for a NaN x).
 */
#include <stdint.h>
#include <string.h>

static inline uint32_t mix32(uint32_t x) { /* a 32-bit finaliser with low bias */
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

static inline float keep_scale(int64_t i, uint32_t k0, uint32_t k1, uint32_t cut, float scale) {
    const uint64_t c = (uint64_t)i >> 1;
    const uint32_t h = mix32(mix32((uint32_t)c ^ k0) + k1 + (uint32_t)(c >> 32) * 0x9e3779b9U);
    const uint32_t v = (i & 1) ? (h >> 16) : (h & 0xffffU);
    return v >= cut ? scale : 0.0f;
}

static inline float bf16_to_f32(uint16_t b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t rounded = (u + 0x7fffU + ((u >> 16) & 1U)) >> 16;
    return (uint16_t)(((u & 0x7fffffffU) > 0x7f800000U) ? ((u >> 16) | 0x40U) : rounded);
}

#define LOAD_f32(p, i) ((p)[i])
#define LOAD_bf16(p, i) bf16_to_f32((p)[i])
#define STORE_f32(v) (v)
#define STORE_bf16(v) f32_to_bf16(v)
#define CTYPE_f32 float
#define CTYPE_bf16 uint16_t

/* y[i] = x[i] * mask(i) * scale for 0 <= i < n; x of type IN, y of type OUT. */
#define DROPOUT(IN, OUT)                                                                            \
void erc_dropout_##IN##_##OUT(const CTYPE_##IN *x, CTYPE_##OUT *y, int64_t n, uint64_t seed,       \
                              uint32_t cut, float scale) {                                         \
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);                               \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; ++i)                                                                 \
        y[i] = STORE_##OUT(LOAD_##IN(x, i) * keep_scale(i, k0, k1, cut, scale));                   \
}

/* y[i] = res[i] + r[i] * mask(i) * scale (float32 residual stream, r of type R). */
#define DROPOUT_ADD(R)                                                                              \
void erc_dropout_add_##R(const float *res, const CTYPE_##R *r, float *y, int64_t n, uint64_t seed, \
                         uint32_t cut, float scale) {                                              \
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);                               \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; ++i)                                                                 \
        y[i] = res[i] + LOAD_##R(r, i) * keep_scale(i, k0, k1, cut, scale);                        \
}

DROPOUT(f32, f32)
DROPOUT(bf16, bf16)
DROPOUT(f32, bf16)
DROPOUT_ADD(f32)
DROPOUT_ADD(bf16)
