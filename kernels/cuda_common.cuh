// Device helpers shared by graphsmile's CUDA kernels (kernels/window_propagate.cuh,
// kernels/shift_pair.cuh). No torch headers: the kernels are templates over the storage type
// `scalar_t` (float, double, or any type with conversions to and from `acc_t`, such as
// c10::Half / c10::BFloat16, which the launchers in csrc/cuda/ instantiate them with) and the
// accumulation type `acc_t` (float or double).
//
// Determinism: every reduction here has a fixed shape (butterfly over a fixed lane width, or
// a fixed thread-to-element map), so results do not depend on scheduling.
#pragma once
#include <stdint.h>

#include "window_index.h"

namespace graphsmile {
namespace gpu {

// Dialogue of packed utterance t: the largest b with start[b] <= t (start ascending, start[0] = 0).
__device__ __forceinline__ int64_t find_dialogue(const int64_t* __restrict__ start, int64_t B, int64_t t) {
  int64_t lo = 0, hi = B - 1;
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) >> 1;
    if (start[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Four consecutive elements from 16-byte aligned shared memory with vector loads.
template <typename T>
struct Load4;
template <>
struct Load4<float> {
  __device__ __forceinline__ static void run(const float* p, float (&o)[4]) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    o[0] = v.x;
    o[1] = v.y;
    o[2] = v.z;
    o[3] = v.w;
  }
};
template <>
struct Load4<double> {
  __device__ __forceinline__ static void run(const double* p, double (&o)[4]) {
    const double2 a = *reinterpret_cast<const double2*>(p);
    const double2 b = *reinterpret_cast<const double2*>(p + 2);
    o[0] = a.x;
    o[1] = a.y;
    o[2] = b.x;
    o[3] = b.y;
  }
};
template <typename T>
__device__ __forceinline__ void load4(const T* p, T (&o)[4]) {
  Load4<T>::run(p, o);
}

// Butterfly sum over groups of `width` lanes (a power of two <= 32); every lane of the group
// ends with the same bits (IEEE addition is commutative), whatever the scheduling.
template <typename T>
__device__ __forceinline__ T group_sum(T v, int width) {
  for (int off = width >> 1; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off, width);
  return v;
}

// The raw bits of a 16-bit storage value (c10::Half, c10::BFloat16): what tensor-core fragments
// are loaded from (no conversion intrinsics needed, so the same code runs in the CPU emulator).
template <typename T>
__device__ __forceinline__ uint16_t bits16(const T& v) {
  static_assert(sizeof(T) == 2, "bits16: 16-bit storage types only");
  uint16_t b;
  __builtin_memcpy(&b, &v, 2);
  return b;
}

template <typename acc_t, typename scalar_t>
__device__ __forceinline__ acc_t to_acc(const scalar_t& v) {
  return static_cast<acc_t>(v);
}

// ---- metadata by value ----------------------------------------------------------------------------

// Up to kParamChunkValues int64 values carried by a kernel's argument (8 + 8 x 480 = 3,848 bytes,
// under the 4,096-byte argument limit of every architecture) and written to device memory by one
// block. The launchers send their per-batch metadata this way when it is small or when the stream
// is being captured into a CUDA graph: a graph keeps a launch's arguments from capture time, so a
// replay writes the same values and reads no host memory. (A copy from pinned host memory is read
// again at every replay, from a block the caching host allocator may have handed out since.)
constexpr int kParamChunkValues = 480;
constexpr int kParamChunkThreads = 128;

struct ParamChunk {
  int64_t count;  // values used, 1 .. kParamChunkValues
  int64_t values[kParamChunkValues];
};
// with the kernel's other argument (the destination pointer), within the 4,096 bytes
static_assert(sizeof(ParamChunk) + sizeof(int64_t*) <= 4096, "ParamChunk must fit a kernel's arguments");

// dst[i] = chunk.values[i] for i < chunk.count; one block of kParamChunkThreads threads. (A
// template, so that the .cu files that include this header do not each define it.)
template <int kUnused = 0>
__global__ void __launch_bounds__(kParamChunkThreads) write_param_chunk_kernel(ParamChunk chunk, int64_t* __restrict__ dst) {
  for (int64_t i = threadIdx.x; i < chunk.count; i += blockDim.x) dst[i] = chunk.values[i];
}

// Cuts values[0, n) into ParamChunks, in order, and calls launch(chunk, offset) for each: the
// host side of the by-value upload, shared by the launchers and the emulator.
template <typename Launch>
inline void for_each_param_chunk(const int64_t* values, int64_t n, Launch&& launch) {
  ParamChunk chunk;
  for (int64_t offset = 0; offset < n; offset += kParamChunkValues) {
    const int64_t count = n - offset < kParamChunkValues ? n - offset : kParamChunkValues;
    chunk.count = count;
    for (int64_t i = 0; i < count; ++i) chunk.values[i] = values[offset + i];
    launch(chunk, offset);
  }
}

}  // namespace gpu
}  // namespace graphsmile
