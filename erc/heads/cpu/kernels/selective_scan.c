/* Mamba's selective scan on CPU, forward and backward, on time-major packed sequences.
 *
 * Layout (erc.heads.mamba.PackedLayout): sequences sorted by length, longest first; row
 * r = starts[t] + j holds step t of sequence j. dt, u, y: [P, E]; Bm, Cm: [P, N]; At: [N, E]
 * (A transposed, so that consecutive channels are consecutive in memory).
 *
 *     h_t = exp(dt_t A) * h_{t-1} + (dt_t u_t) B_t,   h_{-1} = 0,   y_t = h_t . C_t
 *
 * Vectorised over channels: W consecutive channels are the SIMD lanes and every state update
 * is a vertical operation; the only sums across channels (dL/dB, dL/dC) are accumulated per
 * lane and reduced once per sequence. Each call handles the sequences j0 <= j < j1; calls on
 * disjoint ranges write disjoint rows, so the caller runs them on several threads (only g_At is
 * shared: each call adds into its own buffer). The backward recomputes a sequence's states into
 * [L, N, W] buffers and runs the adjoint recurrence backwards. Compiled by erc.heads.cpu.build with
 * -O3 -ffast-math (vectorised exp from glibc's libmvec). The PyTorch implementation
 * (erc.heads.scan.TorchScan) is the reference; tests/test_mamba_scan.py compares them.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define W 16 /* channels per SIMD block */

#define SCAN_FUNCS(T, SUFFIX, EXP)                                                                   \
void erc_scan_fwd_##SUFFIX(const T *dt, const T *u, const T *Bm, const T *Cm, const T *At,           \
                           const int64_t *starts, const int64_t *lengths, int64_t j0, int64_t j1,     \
                           int64_t E, int64_t N, T *y) {                                              \
    T *h = (T *)malloc(sizeof(T) * (size_t)(N * W));                                                  \
    for (int64_t j = j0; j < j1; ++j) {                                                               \
        for (int64_t e0 = 0; e0 < E; e0 += W) {                                                       \
            const int64_t w = E - e0 < W ? E - e0 : W;                                                \
            memset(h, 0, sizeof(T) * (size_t)(N * W));                                                \
            for (int64_t t = 0; t < lengths[j]; ++t) {                                                \
                const int64_t r = starts[t] + j;                                                      \
                const T *B = Bm + r * N, *C = Cm + r * N, *dr = dt + r * E + e0, *ur = u + r * E + e0; \
                T d[W], x[W], acc[W];                                                                 \
                for (int64_t l = 0; l < w; ++l) {                                                     \
                    d[l] = dr[l];                                                                     \
                    x[l] = dr[l] * ur[l];                                                             \
                    acc[l] = 0;                                                                       \
                }                                                                                     \
                for (int64_t n = 0; n < N; ++n) {                                                     \
                    const T b = B[n], c = C[n], *An = At + n * E + e0;                                \
                    T *hn = h + n * W;                                                                \
                    _Pragma("omp simd")                                                               \
                    for (int64_t l = 0; l < w; ++l) {                                                 \
                        hn[l] = EXP(d[l] * An[l]) * hn[l] + x[l] * b;                                 \
                        acc[l] += hn[l] * c;                                                          \
                    }                                                                                 \
                }                                                                                     \
                for (int64_t l = 0; l < w; ++l)                                                       \
                    y[r * E + e0 + l] = acc[l];                                                       \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
    free(h);                                                                                          \
}                                                                                                     \
                                                                                                      \
/* g_dt, g_u: [P, E] (written); g_B, g_C: [P, N] (added to: zero them first); g_At: [N, E] (added). */\
void erc_scan_bwd_##SUFFIX(const T *dt, const T *u, const T *Bm, const T *Cm, const T *At,          \
                           const T *gy, const int64_t *starts, const int64_t *lengths, int64_t j0,    \
                           int64_t j1, int64_t E, int64_t N, T *g_dt, T *g_u, T *g_B, T *g_C,         \
                           T *g_At) {                                                                 \
    const int64_t L = j1 > j0 ? lengths[j0] : 0; /* the longest sequence of the range */             \
    const size_t step = (size_t)(N * W);                                                              \
    T *hist = (T *)malloc(sizeof(T) * (size_t)(L + 1) * step); /* hist[t + 1] = h_t, hist[0] = 0 */   \
    T *decay = (T *)malloc(sizeof(T) * (size_t)(L > 0 ? L : 1) * step);                               \
    T *gBp = (T *)malloc(sizeof(T) * (size_t)(L > 0 ? L : 1) * step); /* per-lane partial sums */     \
    T *gCp = (T *)malloc(sizeof(T) * (size_t)(L > 0 ? L : 1) * step);                                 \
    T *gh = (T *)malloc(sizeof(T) * step), *gAb = (T *)malloc(sizeof(T) * step);                      \
    for (int64_t j = j0; j < j1; ++j) {                                                               \
        const int64_t n_t = lengths[j];                                                               \
        memset(gBp, 0, sizeof(T) * (size_t)n_t * step);                                              \
        memset(gCp, 0, sizeof(T) * (size_t)n_t * step);                                              \
        for (int64_t e0 = 0; e0 < E; e0 += W) {                                                       \
            const int64_t w = E - e0 < W ? E - e0 : W;                                                \
            memset(hist, 0, sizeof(T) * step);                                                        \
            for (int64_t t = 0; t < n_t; ++t) { /* recompute the states */                           \
                const int64_t r = starts[t] + j;                                                      \
                const T *B = Bm + r * N, *dr = dt + r * E + e0, *ur = u + r * E + e0;                 \
                T d[W], x[W];                                                                         \
                for (int64_t l = 0; l < w; ++l) {                                                     \
                    d[l] = dr[l];                                                                     \
                    x[l] = dr[l] * ur[l];                                                             \
                }                                                                                     \
                for (int64_t n = 0; n < N; ++n) {                                                     \
                    const T b = B[n], *An = At + n * E + e0;                                          \
                    const T *hp = hist + t * step + n * W;                                            \
                    T *hc = hist + (t + 1) * step + n * W, *a = decay + t * step + n * W;             \
                    _Pragma("omp simd")                                                               \
                    for (int64_t l = 0; l < w; ++l) {                                                 \
                        a[l] = EXP(d[l] * An[l]);                                                     \
                        hc[l] = a[l] * hp[l] + x[l] * b;                                              \
                    }                                                                                 \
                }                                                                                     \
            }                                                                                         \
            memset(gh, 0, sizeof(T) * step);                                                          \
            memset(gAb, 0, sizeof(T) * step);                                                         \
            for (int64_t t = n_t - 1; t >= 0; --t) { /* the adjoint, backwards */                    \
                const int64_t r = starts[t] + j;                                                      \
                const T *B = Bm + r * N, *C = Cm + r * N;                                             \
                const T *dr = dt + r * E + e0, *ur = u + r * E + e0, *gr = gy + r * E + e0;           \
                T d[W], x[W], g[W], g_du[W], g_dA[W];                                                 \
                for (int64_t l = 0; l < w; ++l) {                                                     \
                    d[l] = dr[l];                                                                     \
                    x[l] = dr[l] * ur[l];                                                             \
                    g[l] = gr[l];                                                                     \
                    g_du[l] = 0;                                                                      \
                    g_dA[l] = 0;                                                                      \
                }                                                                                     \
                for (int64_t n = 0; n < N; ++n) {                                                     \
                    const T b = B[n], c = C[n], *An = At + n * E + e0;                                \
                    const T *hc = hist + (t + 1) * step + n * W, *hp = hist + t * step + n * W;       \
                    const T *a = decay + t * step + n * W;                                            \
                    T *ghn = gh + n * W, *gAn = gAb + n * W;                                          \
                    T *gb = gBp + t * step + n * W, *gc = gCp + t * step + n * W;                     \
                    _Pragma("omp simd")                                                               \
                    for (int64_t l = 0; l < w; ++l) {                                                 \
                        const T gt = ghn[l] + g[l] * c; /* dL/dh_t */                                \
                        const T gx = gt * a[l] * hp[l]; /* dL/d(dt_t A) */                           \
                        gc[l] += g[l] * hc[l];                                                        \
                        gb[l] += gt * x[l];                                                           \
                        g_du[l] += gt * b;                                                            \
                        g_dA[l] += gx * An[l];                                                        \
                        gAn[l] += gx * d[l];                                                          \
                        ghn[l] = gt * a[l];                                                           \
                    }                                                                                 \
                }                                                                                     \
                for (int64_t l = 0; l < w; ++l) {                                                     \
                    g_dt[r * E + e0 + l] = g_dA[l] + g_du[l] * ur[l];                                 \
                    g_u[r * E + e0 + l] = g_du[l] * d[l];                                             \
                }                                                                                     \
            }                                                                                         \
            for (int64_t n = 0; n < N; ++n)                                                           \
                for (int64_t l = 0; l < w; ++l)                                                       \
                    g_At[n * E + e0 + l] += gAb[n * W + l];                                           \
        }                                                                                             \
        for (int64_t t = 0; t < n_t; ++t) { /* dL/dB, dL/dC: the sums over channels */               \
            const int64_t r = starts[t] + j;                                                          \
            for (int64_t n = 0; n < N; ++n) {                                                         \
                T sb = 0, sc = 0;                                                                     \
                const T *pb = gBp + t * step + n * W, *pc = gCp + t * step + n * W;                   \
                for (int64_t l = 0; l < W; ++l) {                                                     \
                    sb += pb[l];                                                                      \
                    sc += pc[l];                                                                      \
                }                                                                                     \
                g_B[r * N + n] += sb;                                                                 \
                g_C[r * N + n] += sc;                                                                 \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
    free(hist);                                                                                       \
    free(decay);                                                                                      \
    free(gBp);                                                                                        \
    free(gCp);                                                                                        \
    free(gh);                                                                                         \
    free(gAb);                                                                                        \
}

SCAN_FUNCS(float, f32, expf)
SCAN_FUNCS(double, f64, exp)
