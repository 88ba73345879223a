/* Mamba's selective scan on CPU, forward and backward, on time-major packed sequences.
 *
 * Layout (erc.heads.mamba.PackedLayout): sequences sorted by length, longest first; row
 * r = starts[t] + j holds step t of sequence j. dt, u, y: [P, E]; Bm, Cm: [P, N]; A: [E, N].
 *
 *     h_t = exp(dt_t A) * h_{t-1} + (dt_t u_t) B_t,   h_{-1} = 0,   y_t = h_t . C_t
 *
 * Each call handles the sequences j0 <= j < j1; calls on disjoint ranges write disjoint rows, so
 * the caller runs them on several threads (only g_A is shared: each call adds into its own
 * buffer). The state of one (sequence, channel) is N values that stay in registers / L1; the
 * backward recomputes a sequence's states into a [L, N] buffer and runs the adjoint recurrence
 * backwards. Compiled by erc.heads.cscan with -O3 -ffast-math (vectorised exp from libmvec).
 * The PyTorch implementation (erc.heads.mamba._PackedScan) is the reference; the tests compare.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_FUNCS(T, SUFFIX, EXP)                                                                   \
void erc_scan_fwd_##SUFFIX(const T *dt, const T *u, const T *Bm, const T *Cm, const T *A,            \
                           const int64_t *starts, const int64_t *lengths, int64_t j0, int64_t j1,     \
                           int64_t E, int64_t N, T *y) {                                              \
    T *h = (T *)calloc((size_t)(E * N), sizeof(T));                                                  \
    for (int64_t j = j0; j < j1; ++j) {                                                               \
        memset(h, 0, sizeof(T) * (size_t)(E * N));                                                    \
        for (int64_t t = 0; t < lengths[j]; ++t) {                                                    \
            const int64_t r = starts[t] + j;                                                          \
            const T *B = Bm + r * N, *C = Cm + r * N;                                                 \
            for (int64_t e = 0; e < E; ++e) {                                                         \
                const T d = dt[r * E + e], x = d * u[r * E + e];                                      \
                const T *Ae = A + e * N;                                                              \
                T *he = h + e * N;                                                                    \
                T acc = 0;                                                                            \
                _Pragma("omp simd reduction(+:acc)")                                                  \
                for (int64_t n = 0; n < N; ++n) {                                                     \
                    he[n] = EXP(d * Ae[n]) * he[n] + x * B[n];                                        \
                    acc += he[n] * C[n];                                                              \
                }                                                                                     \
                y[r * E + e] = acc;                                                                   \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
    free(h);                                                                                          \
}                                                                                                     \
                                                                                                      \
/* g_dt, g_u: [P, E] (written); g_B, g_C: [P, N] (added to: zero them first); g_A: [E, N] (added). */ \
void erc_scan_bwd_##SUFFIX(const T *dt, const T *u, const T *Bm, const T *Cm, const T *A,            \
                           const T *gy, const int64_t *starts, const int64_t *lengths, int64_t j0,    \
                           int64_t j1, int64_t E, int64_t N, T *g_dt, T *g_u, T *g_B, T *g_C,         \
                           T *g_A) {                                                                  \
    const int64_t L = j1 > j0 ? lengths[j0] : 0; /* longest sequence of the range */                 \
    T *hist = (T *)malloc(sizeof(T) * (size_t)((L + 1) * N)); /* hist[t + 1] = h_t, hist[0] = 0 */    \
    T *decay = (T *)malloc(sizeof(T) * (size_t)(L * N));                                              \
    T *gh = (T *)malloc(sizeof(T) * (size_t)N);                                                       \
    for (int64_t j = j0; j < j1; ++j) {                                                               \
        const int64_t n_t = lengths[j];                                                               \
        for (int64_t e = 0; e < E; ++e) {                                                             \
            const T *Ae = A + e * N;                                                                  \
            T *gAe = g_A + e * N;                                                                     \
            memset(hist, 0, sizeof(T) * (size_t)N);                                                   \
            for (int64_t t = 0; t < n_t; ++t) { /* recompute the states */                           \
                const int64_t r = starts[t] + j;                                                      \
                const T d = dt[r * E + e], x = d * u[r * E + e];                                      \
                const T *B = Bm + r * N, *hp = hist + t * N;                                          \
                T *hc = hist + (t + 1) * N, *a = decay + t * N;                                       \
                _Pragma("omp simd")                                                                   \
                for (int64_t n = 0; n < N; ++n) {                                                     \
                    a[n] = EXP(d * Ae[n]);                                                            \
                    hc[n] = a[n] * hp[n] + x * B[n];                                                  \
                }                                                                                     \
            }                                                                                         \
            memset(gh, 0, sizeof(T) * (size_t)N);                                                     \
            for (int64_t t = n_t - 1; t >= 0; --t) { /* the adjoint, backwards */                    \
                const int64_t r = starts[t] + j;                                                      \
                const T g = gy[r * E + e], d = dt[r * E + e], uu = u[r * E + e], x = d * uu;          \
                const T *B = Bm + r * N, *C = Cm + r * N, *hc = hist + (t + 1) * N;                   \
                const T *hp = hist + t * N, *a = decay + t * N;                                       \
                T *gB = g_B + r * N, *gC = g_C + r * N;                                               \
                T g_du = 0, g_dA = 0;                                                                 \
                _Pragma("omp simd reduction(+:g_du, g_dA)")                                           \
                for (int64_t n = 0; n < N; ++n) {                                                     \
                    const T ghn = gh[n] + g * C[n]; /* dL/dh_t */                                    \
                    gC[n] += g * hc[n];                                                               \
                    gB[n] += ghn * x;                                                                 \
                    g_du += ghn * B[n];                                                               \
                    const T gx = ghn * a[n] * hp[n]; /* dL/d(dt_t A) */                              \
                    g_dA += gx * Ae[n];                                                               \
                    gAe[n] += gx * d;                                                                 \
                    gh[n] = ghn * a[n];                                                               \
                }                                                                                     \
                g_dt[r * E + e] = g_dA + g_du * uu;                                                   \
                g_u[r * E + e] = g_du * d;                                                            \
            }                                                                                         \
        }                                                                                             \
    }                                                                                                 \
    free(hist);                                                                                       \
    free(decay);                                                                                      \
    free(gh);                                                                                         \
}

SCAN_FUNCS(float, f32, expf)
SCAN_FUNCS(double, f64, exp)
