// Edge-loop helpers of the CPU graph ops' half / bfloat16 path. fp32 and fp64 run through
// BLAS on dense band tiles instead (see window_propagate_cpu.cpp).
#pragma once
#include <stdint.h>

namespace graphsmile {
namespace cpu {

// Edge-loop helpers of the half / bfloat16 path (accumulating in acc_t = float).
template <typename scalar_t, typename acc_t>
inline void band_axpy(acc_t* acc, const scalar_t* x, int64_t ld, const acc_t* coef, int64_t count, int64_t D) {
  for (int64_t k = 0; k < count; ++k) {
    const acc_t c = coef[k];
    const scalar_t* xr = x + k * ld;
    for (int64_t d = 0; d < D; ++d) acc[d] += c * static_cast<acc_t>(xr[d]);
  }
}

template <typename scalar_t, typename acc_t>
inline void band_dots(const scalar_t* g, const scalar_t* x, int64_t ld, int64_t count, int64_t D, acc_t* out) {
  for (int64_t k = 0; k < count; ++k) {
    acc_t s = 0;
    const scalar_t* xr = x + k * ld;
    for (int64_t d = 0; d < D; ++d) s += static_cast<acc_t>(g[d]) * static_cast<acc_t>(xr[d]);
    out[k] = s;
  }
}

template <typename scalar_t, typename acc_t>
inline acc_t dot(const scalar_t* a, const acc_t* b, int64_t D) {
  acc_t s = 0;
  for (int64_t d = 0; d < D; ++d) s += static_cast<acc_t>(a[d]) * b[d];
  return s;
}

}  // namespace cpu
}  // namespace graphsmile
