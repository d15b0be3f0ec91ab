// CUDA kernels of the sentiment-shift pair op (SPEC 4); launched by csrc/cuda/shift_pair_cuda.cu.
// No torch headers.
//
// Pairs: every packed utterance t is row `pos` of exactly one chunk (start cs, size sz, first
// pair id pair0 = pair_base[b] + c * w^2, window_index.h); pair (i, j) of the chunk has id
// pair0 + i * sz + j. So the pair rows of an utterance are one contiguous run of sz pairs.
//
//   shift_pair_sum_kernel:  one warp per utterance t writes its run: out[pair(pos, j)] =
//                           a[t] + b[cs + j]; lanes over j (C < 32) or over the C classes,
//                           consecutive lanes write consecutive addresses.
//   shift_pair_rows_kernel: grad_a[t] = sum_j grad[pair(pos, j)], one warp per utterance, a fixed
//                           lane->j map and a fixed butterfly (or, C >= 32, lanes over classes
//                           summing j in order).
//   shift_pair_cols_kernel: grad_b[cs + j] = sum_i grad[pair(i, j)] (a chunk column, stride sz*C),
//                           one thread per (utterance, class) and segment of kColSeg chunk rows
//                           (grid.y): consecutive threads read consecutive addresses of one pair
//                           row. With more than one segment the partial sums go to a temp buffer
//                           that shift_pair_cols_combine_kernel adds in segment order.
// No atomics anywhere: the same inputs give the same bits on every run, and an utterance's
// gradient does not depend on the other dialogues of the batch.
#pragma once
#include <stdint.h>

#include "cuda_common.cuh"
#include "window_index.h"

namespace graphsmile {
namespace gpu {

constexpr int kShiftWarps = 8;      // utterances (warps) per block of the row kernels
constexpr int kShiftThreads = 256;  // threads per block of the column kernels
constexpr int64_t kColSeg = 256;    // chunk rows per thread in shift_pair_cols_kernel

struct ShiftArgs {
  const int64_t* start;      // [B]
  const int64_t* length;     // [B]
  const int64_t* pair_base;  // [B] first pair id of dialogue b
  int64_t B, N, shift_win, C;
};

struct ChunkPos {
  int64_t chunk_start;  // packed index of the chunk's first utterance
  int64_t size;         // sz
  int64_t pos;          // index of the utterance inside its chunk
  int64_t pair0;        // id of pair (0, 0) of the chunk
};

__device__ __forceinline__ ChunkPos chunk_pos(const ShiftArgs& a, int64_t t) {
  const int64_t b = find_dialogue(a.start, a.B, t);
  const int64_t s = a.start[b], L = a.length[b];
  const int64_t w = shift_chunk(L, a.shift_win);
  const int64_t jl = t - s, c = jl / w, cs = c * w;
  ChunkPos r;
  r.chunk_start = s + cs;
  r.size = gs_min(w, L - cs);
  r.pos = jl - cs;
  r.pair0 = a.pair_base[b] + c * w * w;
  return r;
}

// out[pair(i, j)] = a_i + b_j (added in acc_t and rounded once, as c10::Half / BFloat16 do).
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kShiftWarps * 32)
    shift_pair_sum_kernel(const scalar_t* __restrict__ av, const scalar_t* __restrict__ bv,
                          scalar_t* __restrict__ out, ShiftArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kShiftWarps + (threadIdx.x >> 5);
  if (t >= a.N) return;
  const ChunkPos cp = chunk_pos(a, t);
  const int64_t C = a.C;
  const scalar_t* __restrict__ arow = av + t * C;
  const scalar_t* __restrict__ bc = bv + cp.chunk_start * C;
  scalar_t* __restrict__ o = out + (cp.pair0 + cp.pos * cp.size) * C;
  if (C < 32) {
    for (int64_t j = lane; j < cp.size; j += 32)
      for (int64_t q = 0; q < C; ++q)
        o[j * C + q] = static_cast<scalar_t>(to_acc<acc_t>(arow[q]) + to_acc<acc_t>(bc[j * C + q]));
  } else {
    for (int64_t j = 0; j < cp.size; ++j)
      for (int64_t q = lane; q < C; q += 32)
        o[j * C + q] = static_cast<scalar_t>(to_acc<acc_t>(arow[q]) + to_acc<acc_t>(bc[j * C + q]));
  }
}

// grad_a[t] = sum over the pair row of t.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kShiftWarps * 32)
    shift_pair_rows_kernel(const scalar_t* __restrict__ grad, scalar_t* __restrict__ ga, ShiftArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kShiftWarps + (threadIdx.x >> 5);
  if (t >= a.N) return;  // uniform per warp
  const ChunkPos cp = chunk_pos(a, t);
  const int64_t C = a.C;
  const scalar_t* __restrict__ g = grad + (cp.pair0 + cp.pos * cp.size) * C;
  if (C < 32) {
    for (int64_t q = 0; q < C; ++q) {
      acc_t sum = acc_t(0);
      for (int64_t j = lane; j < cp.size; j += 32) sum += to_acc<acc_t>(g[j * C + q]);
      sum = group_sum(sum, 32);
      if (lane == 0) ga[t * C + q] = static_cast<scalar_t>(sum);
    }
  } else {
    for (int64_t q = lane; q < C; q += 32) {
      acc_t sum = acc_t(0);
      for (int64_t j = 0; j < cp.size; ++j) sum += to_acc<acc_t>(g[j * C + q]);
      ga[t * C + q] = static_cast<scalar_t>(sum);
    }
  }
}

// Column sums over chunk rows [seg * kColSeg, (seg + 1) * kColSeg), seg = blockIdx.y. With
// partial == nullptr (a single segment) the result goes straight to gb.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kShiftThreads)
    shift_pair_cols_kernel(const scalar_t* __restrict__ grad, scalar_t* __restrict__ gb, acc_t* __restrict__ partial,
                           ShiftArgs a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kShiftThreads + threadIdx.x;
  if (idx >= a.N * a.C) return;
  const int64_t C = a.C;
  const int64_t u = idx / C, q = idx - u * C;
  const ChunkPos cp = chunk_pos(a, u);
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kColSeg;
  if (i0 >= cp.size) return;  // the combine kernel reads only the segments a chunk has
  const int64_t i1 = gs_min(cp.size, i0 + kColSeg);
  const int64_t stride = cp.size * C;
  const scalar_t* __restrict__ g = grad + (cp.pair0 + cp.pos) * C + q;
  acc_t sum = acc_t(0);
  for (int64_t i = i0; i < i1; ++i) sum += to_acc<acc_t>(g[i * stride]);
  if (partial == nullptr) gb[idx] = static_cast<scalar_t>(sum);
  else partial[static_cast<int64_t>(blockIdx.y) * a.N * C + idx] = sum;
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kShiftThreads)
    shift_pair_cols_combine_kernel(const acc_t* __restrict__ partial, scalar_t* __restrict__ gb, ShiftArgs a) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kShiftThreads + threadIdx.x;
  const int64_t NC = a.N * a.C;
  if (idx >= NC) return;
  const ChunkPos cp = chunk_pos(a, idx / a.C);
  const int64_t nseg = (cp.size + kColSeg - 1) / kColSeg;
  acc_t sum = partial[idx];  // one segment: the same bits as the direct path
  for (int64_t sg = 1; sg < nseg; ++sg) sum += partial[sg * NC + idx];
  gb[idx] = static_cast<scalar_t>(sum);
}

}  // namespace gpu
}  // namespace graphsmile
