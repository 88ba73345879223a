/* Dropout on CPU in one pass, with the counter-based keep mask of erc_common.h
 * (erc.heads.cdropout). Kept elements are multiplied by `scale` in float32 and rounded once to
 * the output type; dropped ones are multiplied by 0 (a NaN stays NaN, as in PyTorch). The mask is
 * a function of (seed, i): the backward recomputes it instead of storing it.
 *
 * bf16 is stored as uint16: widened by a shift, rounded to nearest even (NaN kept NaN).
 * Compiled without -ffast-math (x * 0 must stay NaN for a NaN x).
 */
#include "erc_common.h"

/* y[i] = x[i] * mask(i) * scale for 0 <= i < n; x of type IN, y of type OUT. */
#define DROPOUT(IN, OUT)                                                                            \
void erc_dropout_##IN##_##OUT(const ERC_CTYPE_##IN *x, ERC_CTYPE_##OUT *y, int64_t n,              \
                              uint64_t seed, uint32_t cut, float scale) {                          \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; ++i)                                                                 \
        y[i] = ERC_STORE_##OUT(ERC_LOAD_##IN(x, i) * erc_keep_scale(i, seed, cut, scale));         \
}

/* y[i] = res[i] + r[i] * mask(i) * scale (float32 residual stream, r of type R). */
#define DROPOUT_ADD(R)                                                                              \
void erc_dropout_add_##R(const float *res, const ERC_CTYPE_##R *r, float *y, int64_t n,            \
                         uint64_t seed, uint32_t cut, float scale) {                               \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; ++i)                                                                 \
        y[i] = res[i] + ERC_LOAD_##R(r, i) * erc_keep_scale(i, seed, cut, scale);                  \
}

DROPOUT(f32, f32)
DROPOUT(bf16, bf16)
DROPOUT(f32, bf16)
DROPOUT_ADD(f32)
DROPOUT_ADD(bf16)
