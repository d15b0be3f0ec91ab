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
//
// The fused shift loss (op shift_pair_nll, C == 2): per pair (i, j) of a chunk the logits
// z = a_i + b_j, rounded to scalar_t (the bits shift_pair_sum would store), y = (s_i != s_j), and
// shift_nll_term (shift_nll.h, the CPU kernel's formula) gives loss_ij, r_ij and pred_ij. Nothing
// of size P is stored: the pairs are reduced on the fly into O(N) buffers.
//
//   shift_pair_nll_rows_kernel: one warp per utterance t (row pos of its chunk), lanes over the
//                           chunk columns j (lane l takes j = l, l + 32, ...: consecutive lanes
//                           read consecutive b rows and sentiments), accumulating in acc_t per
//                           lane, then a fixed butterfly: row_loss[t] = sum_j loss_tj,
//                           row_r[t] = sum_j r_tj (with_grad) and counts[t] = the row's
//                           confusion counts [4] int64, indexed 2 * y + pred (each lane counts
//                           y, pred and y & pred, branch-free; the four cells follow from those
//                           and the chunk size). The launcher then sums row_loss and counts
//                           with torch's (deterministic) reductions: the loss and the [2, 2]
//                           confusion.
//   shift_pair_nll_cols_kernel: col_r[cs + j] = sum_i r_ij, recomputing the pair terms (the
//                           loss and its log1p are dead code there): one thread per utterance
//                           (column) and segment of kColSeg chunk rows (grid.y), as
//                           shift_pair_cols_kernel; the threads of a warp are consecutive columns
//                           of one chunk, so a[cs + i] and s_{cs + i} are warp-wide broadcasts.
//                           With more than one segment the partial sums [nseg, N] go through
//                           shift_pair_cols_combine_kernel<acc_t, acc_t> (ShiftArgs::C = 1),
//                           added in segment order.
// Temp memory: row_loss [N], counts [N, 4] and (chunks over kColSeg rows) partial [nseg, N].
// Every pair is evaluated once per kernel; every output has one writer and a fixed order.
#pragma once
#include <stdint.h>

#include "cuda_common.cuh"
#include "shift_nll.h"
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

// The logit z_q of pair (i, j): a_iq + b_jq added in acc_t, rounded once to scalar_t (as
// shift_pair_sum stores it and as the CPU kernel rounds it), back in acc_t.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t nll_logit(acc_t a, acc_t b) {
  return to_acc<acc_t>(static_cast<scalar_t>(a + b));
}

// Per utterance t (row of its chunk): row_loss[t], row_r[t] (row_r == nullptr: not computed)
// and counts[4 * t + 2 * y + pred]. a, b: [N, 2]; sentiment: [N]. ShiftArgs::C is unused.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kShiftWarps * 32)
    shift_pair_nll_rows_kernel(const scalar_t* __restrict__ av, const scalar_t* __restrict__ bv,
                               const int64_t* __restrict__ sentiment, acc_t* __restrict__ row_loss,
                               acc_t* __restrict__ row_r, int64_t* __restrict__ counts, ShiftArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kShiftWarps + (threadIdx.x >> 5);
  if (t >= a.N) return;  // uniform per warp
  const ChunkPos cp = chunk_pos(a, t);
  const acc_t a0 = to_acc<acc_t>(av[2 * t]), a1 = to_acc<acc_t>(av[2 * t + 1]);
  const int64_t st = sentiment[t];
  const scalar_t* __restrict__ bc = bv + 2 * cp.chunk_start;
  const int64_t* __restrict__ sc = sentiment + cp.chunk_start;
  acc_t lsum = acc_t(0), rsum = acc_t(0);
  int64_t n_y = 0, n_pred = 0, n_both = 0;  // pairs with y = 1, pred = 1, both
  for (int64_t j = lane; j < cp.size; j += 32) {
    const acc_t z0 = nll_logit<scalar_t, acc_t>(a0, to_acc<acc_t>(bc[2 * j]));
    const acc_t z1 = nll_logit<scalar_t, acc_t>(a1, to_acc<acc_t>(bc[2 * j + 1]));
    const bool y = st != sc[j];
    acc_t r;
    bool pred;
    lsum += shift_nll_term<acc_t>(z0, z1, y, &r, &pred);
    rsum += r;
    n_y += y;
    n_pred += pred;
    n_both += y & pred;
  }
  lsum = group_sum(lsum, 32);
  if (row_r != nullptr) rsum = group_sum(rsum, 32);  // uniform branch
  n_y = group_sum(n_y, 32);
  n_pred = group_sum(n_pred, 32);
  n_both = group_sum(n_both, 32);
  if (lane == 0) {
    row_loss[t] = lsum;
    if (row_r != nullptr) row_r[t] = rsum;
    int64_t* __restrict__ c = counts + 4 * t;
    c[0] = cp.size - n_y - n_pred + n_both;  // y = 0, pred = 0
    c[1] = n_pred - n_both;                  // y = 0, pred = 1
    c[2] = n_y - n_both;                     // y = 1, pred = 0
    c[3] = n_both;                           // y = 1, pred = 1
  }
}

// col_r[u] = sum over chunk rows i in [seg * kColSeg, (seg + 1) * kColSeg) of r_iu, seg =
// blockIdx.y; with partial != nullptr (more than one segment) into partial[seg * N + u] instead.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kShiftThreads)
    shift_pair_nll_cols_kernel(const scalar_t* __restrict__ av, const scalar_t* __restrict__ bv,
                               const int64_t* __restrict__ sentiment, acc_t* __restrict__ col_r,
                               acc_t* __restrict__ partial, ShiftArgs a) {
  const int64_t u = static_cast<int64_t>(blockIdx.x) * kShiftThreads + threadIdx.x;
  if (u >= a.N) return;
  const ChunkPos cp = chunk_pos(a, u);
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kColSeg;
  if (i0 >= cp.size) return;  // the combine kernel reads only the segments a chunk has
  const int64_t i1 = gs_min(cp.size, i0 + kColSeg);
  const acc_t b0 = to_acc<acc_t>(bv[2 * u]), b1 = to_acc<acc_t>(bv[2 * u + 1]);
  const int64_t su = sentiment[u];
  const scalar_t* __restrict__ ac = av + 2 * cp.chunk_start;
  const int64_t* __restrict__ sc = sentiment + cp.chunk_start;
  acc_t sum = acc_t(0);
  for (int64_t i = i0; i < i1; ++i) {
    // a_i + b_u in the rows kernel's operand order (IEEE addition commutes anyway)
    const acc_t z0 = nll_logit<scalar_t, acc_t>(to_acc<acc_t>(ac[2 * i]), b0);
    const acc_t z1 = nll_logit<scalar_t, acc_t>(to_acc<acc_t>(ac[2 * i + 1]), b1);
    acc_t r;
    bool pred;
    (void)shift_nll_term<acc_t>(z0, z1, sc[i] != su, &r, &pred);
    sum += r;
  }
  if (partial == nullptr) col_r[u] = sum;
  else partial[static_cast<int64_t>(blockIdx.y) * a.N + u] = sum;
}

}  // namespace gpu
}  // namespace graphsmile
