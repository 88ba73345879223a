/* Multi-head attention among a handful of tokens per item, forward and backward
 * (erc.heads.cattention; the fusion layers' attention over an utterance's modality tokens).
 *
 * qkv: [N, K, 3, H, Dh] (the q, k, v projections of K tokens, heads H of width Dh), row-major;
 * kpm: [N, K] (1 = masked key); out: [N, K, H, Dh]; probs: float [N, H, K, K], the softmax before
 * dropout (kept for the backward). Per item n and head h:
 *
 *     S = q k^T / sqrt(Dh) (masked keys -inf),  P = softmax(S),  out = (P * M) v
 *
 * M is the dropout mask of erc_common.h over the flat index of [N, H, K, K] (the tensor PyTorch's
 * `dropout(P)` would see), scaled by 1 / (1 - p); cut = 0 means no dropout. Work is a few
 * length-Dh dot products and axpys per (n, h); all arithmetic in float32, inputs and outputs
 * float32 or bf16. K <= ERC_MAX_TOKENS (the caller checks). Each item is widened to float32 in a
 * buffer first, so the arithmetic reads L1-resident, unaliased memory.
 */
#include <math.h>
#include <stdlib.h>

#include "erc_common.h"

#define ERC_MAX_TOKENS 8

/* One item's q, k, v ([K, 3, D] in qkv) widened to float32 in x; then per head h the scores,
 * softmax and weighted sum of v, all on x (L1-resident, never aliased). */
static void item_forward(const float *x, const uint8_t *kpm, int64_t K, int64_t H, int64_t Dh, int64_t item,
                         uint64_t seed, uint32_t cut, float scale, float *restrict P_all, float *restrict o) {
    const int64_t D = H * Dh, row = 3 * D;
    const float inv = 1.0f / sqrtf((float)Dh);
    for (int64_t h = 0; h < H; ++h) {
        float *P = P_all + h * K * K;
        for (int64_t i = 0; i < K; ++i) {
            const float *qi = x + i * row + h * Dh;
            float top = -INFINITY;
            for (int64_t j = 0; j < K; ++j) {
                const float *kj = x + j * row + D + h * Dh;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int64_t d = 0; d < Dh; ++d)
                    s += qi[d] * kj[d];
                s = kpm[j] ? -INFINITY : s * inv;
                P[i * K + j] = s;
                top = s > top ? s : top;
            }
            float total = 0.0f;
            for (int64_t j = 0; j < K; ++j) {
                P[i * K + j] = expf(P[i * K + j] - top);
                total += P[i * K + j];
            }
            float *oi = o + i * D + h * Dh;
            for (int64_t d = 0; d < Dh; ++d)
                oi[d] = 0.0f;
            for (int64_t j = 0; j < K; ++j) {
                P[i * K + j] /= total;
                const int64_t at = ((item * H + h) * K + i) * K + j; /* index in [N, H, K, K] */
                const float w = P[i * K + j] * (cut ? erc_keep_scale(at, seed, cut, scale) : 1.0f);
                const float *vj = x + j * row + 2 * D + h * Dh;
#pragma omp simd
                for (int64_t d = 0; d < Dh; ++d)
                    oi[d] += w * vj[d];
            }
        }
    }
}

/* One item's gradient: x = its q, k, v, go = d out [K, D], both float32; gx = d qkv [K, 3, D]. */
static void item_backward(const float *x, const float *P_all, const float *go, int64_t K, int64_t H, int64_t Dh,
                          int64_t item, uint64_t seed, uint32_t cut, float scale, float *restrict gx) {
    const int64_t D = H * Dh, row = 3 * D;
    const float inv = 1.0f / sqrtf((float)Dh);
    float GS[ERC_MAX_TOKENS * ERC_MAX_TOKENS];
    for (int64_t e = 0; e < K * row; ++e)
        gx[e] = 0.0f;
    for (int64_t h = 0; h < H; ++h) {
        const float *P = P_all + h * K * K;
        for (int64_t i = 0; i < K; ++i) {
            const float *goi = go + i * D + h * Dh;
            float gp[ERC_MAX_TOKENS], dot = 0.0f;
            for (int64_t j = 0; j < K; ++j) {
                const int64_t at = ((item * H + h) * K + i) * K + j;
                const float m = cut ? erc_keep_scale(at, seed, cut, scale) : 1.0f;
                const float *vj = x + j * row + 2 * D + h * Dh;
                float *gvj = gx + j * row + 2 * D + h * Dh;
                const float w = P[i * K + j] * m;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (int64_t d = 0; d < Dh; ++d) {
                    s += goi[d] * vj[d];
                    gvj[d] += w * goi[d];
                }
                gp[j] = s * m; /* dL/dP_ij through the dropout */
                dot += gp[j] * P[i * K + j];
            }
            for (int64_t j = 0; j < K; ++j) /* softmax backward, times 1/sqrt(Dh) */
                GS[i * K + j] = P[i * K + j] * (gp[j] - dot) * inv;
        }
        for (int64_t i = 0; i < K; ++i) {
            const float *qi = x + i * row + h * Dh;
            float *gqi = gx + i * row + h * Dh;
            for (int64_t j = 0; j < K; ++j) {
                const float g = GS[i * K + j];
                if (g == 0.0f)
                    continue; /* a masked key, or a zero gradient */
                const float *kj = x + j * row + D + h * Dh;
                float *gkj = gx + j * row + D + h * Dh;
#pragma omp simd
                for (int64_t d = 0; d < Dh; ++d) {
                    gqi[d] += g * kj[d];
                    gkj[d] += g * qi[d];
                }
            }
        }
    }
}

#define TOKEN_ATTENTION(T)                                                                          \
void erc_token_attention_fwd_##T(const ERC_CTYPE_##T *qkv, const uint8_t *kpm, int64_t N, int64_t K, \
                                 int64_t H, int64_t Dh, uint64_t seed, uint32_t cut, float scale,  \
                                 float *probs, ERC_CTYPE_##T *out) {                               \
    const int64_t D = H * Dh, per = 3 * K * D;                                                     \
    float *x = (float *)malloc(sizeof(float) * (size_t)(per + K * D)), *o = x + per;               \
    for (int64_t n = 0; n < N; ++n) {                                                              \
        const ERC_CTYPE_##T *src = qkv + n * per;                                                  \
        _Pragma("omp simd")                                                                        \
        for (int64_t e = 0; e < per; ++e)                                                          \
            x[e] = ERC_LOAD_##T(src, e);                                                           \
        item_forward(x, kpm + n * K, K, H, Dh, n, seed, cut, scale, probs + n * H * K * K, o);     \
        ERC_CTYPE_##T *dst = out + n * K * D;                                                      \
        _Pragma("omp simd")                                                                        \
        for (int64_t e = 0; e < K * D; ++e)                                                        \
            dst[e] = ERC_STORE_##T(o[e]);                                                          \
    }                                                                                              \
    free(x);                                                                                       \
}                                                                                                  \
                                                                                                   \
/* g_qkv: [N, K, 3, H, Dh] (written), from g_out [N, K, H, Dh] and the forward's probs. */         \
void erc_token_attention_bwd_##T(const ERC_CTYPE_##T *qkv, const float *probs, const ERC_CTYPE_##T *g_out, \
                                 int64_t N, int64_t K, int64_t H, int64_t Dh, uint64_t seed,       \
                                 uint32_t cut, float scale, ERC_CTYPE_##T *g_qkv) {                \
    const int64_t D = H * Dh, per = 3 * K * D;                                                     \
    float *x = (float *)malloc(sizeof(float) * (size_t)(2 * per + K * D)), *gx = x + per;          \
    float *go = gx + per;                                                                          \
    for (int64_t n = 0; n < N; ++n) {                                                              \
        const ERC_CTYPE_##T *src = qkv + n * per, *gsrc = g_out + n * K * D;                       \
        _Pragma("omp simd")                                                                        \
        for (int64_t e = 0; e < per; ++e)                                                          \
            x[e] = ERC_LOAD_##T(src, e);                                                           \
        _Pragma("omp simd")                                                                        \
        for (int64_t e = 0; e < K * D; ++e)                                                        \
            go[e] = ERC_LOAD_##T(gsrc, e);                                                         \
        item_backward(x, probs + n * H * K * K, go, K, H, Dh, n, seed, cut, scale, gx);            \
        ERC_CTYPE_##T *dst = g_qkv + n * per;                                                      \
        _Pragma("omp simd")                                                                        \
        for (int64_t e = 0; e < per; ++e)                                                          \
            dst[e] = ERC_STORE_##T(gx[e]);                                                         \
    }                                                                                              \
    free(x);                                                                                       \
}

TOKEN_ATTENTION(f32)
TOKEN_ATTENTION(bf16)
