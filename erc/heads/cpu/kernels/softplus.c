/* softplus(x) = log(1 + exp(x)) (x itself above 20, as PyTorch's threshold), float32 or bf16 in,
 * float32 out (erc.heads.csoftplus: the Mamba's dt, which its scan takes in float32).
 * Compiled with -ffast-math so that expf / log1pf come vectorised from glibc's libmvec; PyTorch's
 * CPU softplus calls log1p one element at a time.
 */
#include <math.h>

#include "erc_common.h"

#define SOFTPLUS(T)                                                                                 \
void erc_softplus_##T(const ERC_CTYPE_##T *x, float *y, int64_t n) {                               \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; ++i) {                                                               \
        const float v = ERC_LOAD_##T(x, i);                                                         \
        y[i] = v > 20.0f ? v : log1pf(expf(v));                                                     \
    }                                                                                               \
}

SOFTPLUS(f32)
SOFTPLUS(bf16)
