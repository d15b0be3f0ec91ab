// Small vector kernels for the CPU graph ops. The float versions are compiled for several
// instruction sets (GCC function multi-versioning, chosen once at load time) because the
// extension is built without -march=native, which would otherwise leave them at SSE2.
#pragma once
#include <stdint.h>
#include <algorithm>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define GS_CLONES __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define GS_CLONES
#endif

namespace graphsmile {
namespace cpu {

// acc[d] += sum_{k < count} coef[k] * x[k * ld + d]   for d < D.
// The D axis is cut into 64-wide blocks held in registers while the band streams past.
GS_CLONES inline void band_axpy_f32(float* __restrict acc, const float* __restrict x, int64_t ld,
                                    const float* __restrict coef, int64_t count, int64_t D) {
  constexpr int64_t W = 64;
  int64_t d0 = 0;
  for (; d0 + W <= D; d0 += W) {
    float a[W];
    for (int64_t i = 0; i < W; ++i) a[i] = acc[d0 + i];
    for (int64_t k = 0; k < count; ++k) {
      const float c = coef[k];
      const float* __restrict xr = x + k * ld + d0;
      for (int64_t i = 0; i < W; ++i) a[i] += c * xr[i];
    }
    for (int64_t i = 0; i < W; ++i) acc[d0 + i] = a[i];
  }
  for (int64_t k = 0; k < count; ++k) {
    const float c = coef[k];
    const float* __restrict xr = x + k * ld;
    for (int64_t d = d0; d < D; ++d) acc[d] += c * xr[d];
  }
}

// out[k] = <g, x[k * ld : k * ld + D]>  for k < count. Sixteen independent partial sums per dot
// let the compiler vectorise without reassociating (no -ffast-math).
GS_CLONES inline void band_dots_f32(const float* __restrict g, const float* __restrict x, int64_t ld,
                                    int64_t count, int64_t D, float* __restrict out) {
  constexpr int64_t W = 16;
  const int64_t Dv = D - D % W;
  int64_t k = 0;
  for (; k + 2 <= count; k += 2) {
    float p0[W] = {0}, p1[W] = {0};
    const float* __restrict x0 = x + k * ld;
    const float* __restrict x1 = x0 + ld;
    for (int64_t d = 0; d < Dv; d += W) {
      for (int64_t i = 0; i < W; ++i) {
        p0[i] += g[d + i] * x0[d + i];
        p1[i] += g[d + i] * x1[d + i];
      }
    }
    float s0 = 0.f, s1 = 0.f;
    for (int64_t i = 0; i < W; ++i) { s0 += p0[i]; s1 += p1[i]; }
    for (int64_t d = Dv; d < D; ++d) { s0 += g[d] * x0[d]; s1 += g[d] * x1[d]; }
    out[k] = s0;
    out[k + 1] = s1;
  }
  for (; k < count; ++k) {
    float p0[W] = {0};
    const float* __restrict x0 = x + k * ld;
    for (int64_t d = 0; d < Dv; d += W)
      for (int64_t i = 0; i < W; ++i) p0[i] += g[d + i] * x0[d + i];
    float s0 = 0.f;
    for (int64_t i = 0; i < W; ++i) s0 += p0[i];
    for (int64_t d = Dv; d < D; ++d) s0 += g[d] * x0[d];
    out[k] = s0;
  }
}

// Generic versions for double, half and bfloat16 (accumulating in acc_t).
template <typename scalar_t, typename acc_t>
inline void band_axpy(acc_t* acc, const scalar_t* x, int64_t ld, const acc_t* coef, int64_t count, int64_t D) {
  for (int64_t k = 0; k < count; ++k) {
    const acc_t c = coef[k];
    const scalar_t* xr = x + k * ld;
    for (int64_t d = 0; d < D; ++d) acc[d] += c * static_cast<acc_t>(xr[d]);
  }
}
inline void band_axpy(float* acc, const float* x, int64_t ld, const float* coef, int64_t count, int64_t D) {
  band_axpy_f32(acc, x, ld, coef, count, D);
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
inline void band_dots(const float* g, const float* x, int64_t ld, int64_t count, int64_t D, float* out) {
  band_dots_f32(g, x, ld, count, D, out);
}

template <typename scalar_t, typename acc_t>
inline acc_t dot(const scalar_t* a, const acc_t* b, int64_t D) {
  acc_t s = 0;
  for (int64_t d = 0; d < D; ++d) s += static_cast<acc_t>(a[d]) * b[d];
  return s;
}

}  // namespace cpu
}  // namespace graphsmile
