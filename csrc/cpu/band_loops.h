// Loop helpers of the CPU graph ops: the edge loops of the half / bfloat16 path (fp32 and fp64
// run through BLAS on dense band tiles instead, see window_propagate_cpu.cpp) and a row dot
// product for both.
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

// sum_d a[d] * b[d] in acc_t, with kDotLanes independent partial sums added pairwise at the
// end. A single running sum cannot be vectorised without -ffast-math (the compiler may not
// reorder the additions); independent lanes can, and the fixed order keeps the result the same
// on every run.
constexpr int kDotLanes = 16;

template <typename acc_t, typename a_t, typename b_t>
inline acc_t lane_dot(const a_t* a, const b_t* b, int64_t D) {
  acc_t lane[kDotLanes] = {};
  int64_t d = 0;
  for (; d + kDotLanes <= D; d += kDotLanes)
    for (int l = 0; l < kDotLanes; ++l) lane[l] += static_cast<acc_t>(a[d + l]) * static_cast<acc_t>(b[d + l]);
  for (int l = 0; d < D; ++d, ++l) lane[l] += static_cast<acc_t>(a[d]) * static_cast<acc_t>(b[d]);
  for (int width = kDotLanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  return lane[0];
}

template <typename scalar_t, typename acc_t>
inline void band_dots(const scalar_t* g, const scalar_t* x, int64_t ld, int64_t count, int64_t D, acc_t* out) {
  for (int64_t k = 0; k < count; ++k) out[k] = lane_dot<acc_t>(g, x + k * ld, D);
}

template <typename scalar_t, typename acc_t>
inline acc_t dot(const scalar_t* a, const acc_t* b, int64_t D) {
  return lane_dot<acc_t>(a, b, D);
}

}  // namespace cpu
}  // namespace graphsmile
