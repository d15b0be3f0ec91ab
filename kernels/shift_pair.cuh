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
// The tiled single-pass kernel (below) is the launcher's choice for long chunks.
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


// ---------------------------------------------------------------------------------------------
// The tiled single-pass fused loss (shift_pair_nll_tiled_kernel + shift_pair_nll_combine_kernel).
//
// The rows + columns kernels above evaluate every pair twice (exp, division and log1p in the rows
// kernel, exp and division again in the columns kernel). Here every pair is evaluated once and
// feeds both its row sums and its column sum. Each chunk of size sz (shift_win or the whole
// dialogue) is cut into ns = ceil(sz / S) row bands and ns column bands of S rows / columns;
// block (rb, cb) owns the S x S square of pairs (rows of band rb, columns of band cb). The side
// S = nll_span(w) of a dialogue depends only on its chunk length w (64 up to w = 4095, then
// doubling while the chunk keeps at least min_bands = 32 bands, at most 1024), so an utterance's
// sums have the same bits whatever else is in the batch, on any GPU. Inside a block, 16 x 16
// threads walk the square in 64 x 64 tiles, row tiles outer, column tiles inner; thread (ty, tx)
// owns rows ty + 16 q and columns tx + 16 p (q, p < 4) of a tile, so each thread evaluates 16
// independent pairs per tile from 4 a rows and 4 b rows held in registers.
//   Row side: per row, a thread accumulates loss, residual and confusion counts over its columns
//     of all the square's column tiles (the counts packed in one uint32, 8 bits per cell 2y + pred:
//     a thread sees at most S / 16 <= 64 columns of a row per square), then a fixed width-16
//     butterfly over tx gives the square's row sums: written once to the row partials
//     [.., cb, row] (the counts of cells (0, 1), (1, 0), (1, 1) as int32).
//   Column side: per column tile, the 16 ty-threads' residual sums of a column meet in shared
//     memory and are added in ty order, then added to the column partial [.., rb, column] in
//     row-tile order (the first row tile writes it). One block writes each partial.
//   Partial layout: dialogue b (length L, chunk w = min(shift_win or L, L)) owns the slots
//     part_base[b] + band * L + (t - start_b) for band < ns(w): about L + L w / S in all, so at
//     most about N + P / 64 (4e8 pairs of a 20,000-utterance chunk: S = 512, 0.8M slots).
//   Masks: only the tiles on a square's bottom or right edge hold padding pairs (stand-in rows
//     and columns whose terms are discarded by selects); whole tiles run without the selects.
//   shift_pair_nll_combine_kernel: one thread per utterance adds its chunk's ns partials in band
//     order (row_loss, row_r, counts [4] int64, col_r); the launcher then sums row_loss and
//     counts with torch, as for the rows kernel.
// kFast (float only, GRAPHSMILE_CUDA_FAST_MATH=1): __expf / __fdividef / __logf(1 + e) in place
// of expf / IEEE division / log1pf; each pair's loss and residual then carry an absolute error
// of about 1e-7 (log(1 + e) for e below 6e-8 rounds to 0), the predictions are the same.

constexpr int kNllTile = 64;                     // rows and columns of a tile
constexpr int kNllSide = 16;                     // 16 x 16 threads, each 4 rows x 4 columns of a tile
constexpr int kNllThreads = kNllSide * kNllSide;
constexpr int kNllPer = kNllTile / kNllSide;     // 4
constexpr int64_t kNllMaxSpan = 1024;            // the largest square side
constexpr int64_t kNllMinBands = 32;             // bands a chunk keeps when its squares grow past 64
static_assert(kNllMaxSpan / kNllSide <= 255, "a thread's per-row cell counts of one square fit 8 bits");

struct NllTileArgs {
  const int64_t* tile_base;  // [B] first block of dialogue b
  const int64_t* part_base;  // [B] first partial slot of dialogue b
  int64_t min_bands;         // kNllMinBands (the CPU emulator's tests lower it to reach large squares)
  int64_t parts;             // Q: partial slots in all (the stride between the count planes)
};

// The square side S of a chunk of length w: kNllTile, doubled while w still has at least
// 2 * min_bands bands of the current side, at most kNllMaxSpan.
GS_HD int64_t nll_span(int64_t w, int64_t min_bands) {
  int64_t s = kNllTile;
  while (s < kNllMaxSpan && w >= 2 * s * min_bands) s *= 2;
  return s;
}

// The per-pair term, accurate (shift_nll.h) or with the fast intrinsics.
template <bool kFast, typename acc_t>
struct NllTerm {
  __device__ __forceinline__ static acc_t run(acc_t z0, acc_t z1, bool y, acc_t* r, bool* pred) {
    return shift_nll_term<acc_t>(z0, z1, y, r, pred);
  }
};
template <>
struct NllTerm<true, float> {
  __device__ __forceinline__ static float run(float z0, float z1, bool y, float* r, bool* pred) {
    const float d = z1 - z0;
    const float x = y ? -d : d;
    const float e = __expf(-fabsf(x));  // exp(-|x|); NaN stays NaN
    const float inv = __fdividef(1.0f, 1.0f + e);
    const float sig_x = x >= 0.0f ? inv : e * inv;
    *r = y ? -sig_x : sig_x;
    *pred = d > 0.0f;
    return (x > 0.0f ? x : 0.0f) + __logf(1.0f + e);
  }
};

// Blocks and partial slots of a batch (host code, shared by the launcher and the CPU emulator
// harness). tile_base / part_base: arrays of B entries, filled.
struct NllTilingCounts {
  int64_t blocks = 0, parts = 0;
};
inline NllTilingCounts nll_tiling(const int64_t* length, int64_t B, int64_t shift_win, int64_t min_bands,
                                  int64_t* tile_base, int64_t* part_base) {
  NllTilingCounts n;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t L = length[b], w = gs_min(shift_chunk(L, shift_win), L), span = nll_span(w, min_bands);
    const int64_t full = L / w, rest = L % w, ns = (w + span - 1) / span, nr = (rest + span - 1) / span;
    if (tile_base != nullptr) tile_base[b] = n.blocks;
    if (part_base != nullptr) part_base[b] = n.parts;
    n.blocks += full * ns * ns + nr * nr;
    n.parts += ns * L;
  }
  return n;
}

// Pair slots the tiled kernel evaluates at square side kNllTile (whole 64 x 64 tiles, padding
// included), against the P pairs: the launcher's "auto" takes the tiled kernel when at most
// twice P (each pair evaluated once, against twice in the rows + columns kernels). The block
// count of nll_tiling with squares that never grow past kNllTile, times a tile's pairs.
inline int64_t nll_tile_slots(const int64_t* length, int64_t B, int64_t shift_win) {
  constexpr int64_t kNeverGrow = int64_t(1) << 40;  // min_bands no chunk reaches
  return nll_tiling(length, B, shift_win, kNeverGrow, nullptr, nullptr).blocks * kNllTile * kNllTile;
}

template <typename scalar_t, typename acc_t, bool kWithGrad, bool kFast, bool kMasked>
__device__ __forceinline__ void nll_pairs_4x4(const acc_t (&a0)[kNllPer], const acc_t (&a1)[kNllPer],
                                              const int64_t (&sr)[kNllPer], const bool (&vr)[kNllPer],
                                              const acc_t (&b0)[kNllPer], const acc_t (&b1)[kNllPer],
                                              const int64_t (&sc)[kNllPer], const bool (&vc)[kNllPer],
                                              acc_t (&lsum)[kNllPer], acc_t (&rsum)[kNllPer],
                                              uint32_t (&cells)[kNllPer], acc_t (&csum)[kNllPer]) {
#pragma unroll
  for (int q = 0; q < kNllPer; ++q) {
#pragma unroll
    for (int p = 0; p < kNllPer; ++p) {
      const acc_t z0 = nll_logit<scalar_t, acc_t>(a0[q], b0[p]);
      const acc_t z1 = nll_logit<scalar_t, acc_t>(a1[q], b1[p]);
      const bool y = sr[q] != sc[p];
      acc_t r;
      bool pred;
      acc_t l = NllTerm<kFast, acc_t>::run(z0, z1, y, &r, &pred);
      uint32_t cell = 1u << (8 * (2 * int(y) + int(pred)));
      if (kMasked) {
        const bool v = vr[q] && vc[p];
        l = v ? l : acc_t(0);  // selects: a stand-in's NaN or inf never leaks in
        r = v ? r : acc_t(0);
        cell = v ? cell : 0u;
      }
      lsum[q] += l;
      if (kWithGrad) {
        rsum[q] += r;
        csum[p] += r;
      }
      cells[q] += cell;
    }
  }
}

// One thread's 4 rows (or columns) of a tile side: chunk indices first + 16 q (q < 4), valid
// below end; an invalid one loads the stand-in `begin` (its pairs are masked). v0, v1: the two
// logit halves (a or b), sent: the sentiments.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_tile_side(const scalar_t* __restrict__ src, const int64_t* __restrict__ sc,
                                               int64_t first, int64_t begin, int64_t end, acc_t (&v0)[kNllPer],
                                               acc_t (&v1)[kNllPer], int64_t (&sent)[kNllPer], bool (&valid)[kNllPer]) {
#pragma unroll
  for (int q = 0; q < kNllPer; ++q) {
    const int64_t i = first + kNllSide * q;
    valid[q] = i < end;
    const int64_t ii = valid[q] ? i : begin;
    v0[q] = to_acc<acc_t>(src[2 * ii]);
    v1[q] = to_acc<acc_t>(src[2 * ii + 1]);
    sent[q] = sc[ii];
  }
}

template <typename scalar_t, typename acc_t, bool kWithGrad, bool kFast>
__global__ void __launch_bounds__(kNllThreads)
    shift_pair_nll_tiled_kernel(const scalar_t* __restrict__ av, const scalar_t* __restrict__ bv,
                                const int64_t* __restrict__ sentiment, acc_t* __restrict__ part_loss,
                                acc_t* __restrict__ part_r, int32_t* __restrict__ part_cnt,
                                acc_t* __restrict__ part_col, ShiftArgs a, NllTileArgs ta) {
  __shared__ acc_t colpart[kNllSide][kNllTile];
  const int tid = threadIdx.x, tx = tid % kNllSide, ty = tid / kNllSide;
  const int64_t blk = blockIdx.x;
  const int64_t b = find_dialogue(ta.tile_base, a.B, blk);
  const int64_t L = a.length[b], w = gs_min(shift_chunk(L, a.shift_win), L), S = nll_span(w, ta.min_bands);
  const int64_t ns = (w + S - 1) / S;
  const int64_t k = blk - ta.tile_base[b], c = k / (ns * ns), kk = k - c * ns * ns;
  const int64_t c0 = c * w, sz = gs_min(w, L - c0);       // the chunk: dialogue rows c0 .. c0 + sz
  const int64_t nsc = (sz + S - 1) / S;                    // its bands (fewer in a short last chunk)
  const int64_t rb = kk / nsc, cb = kk - rb * nsc;
  const int64_t r_begin = rb * S, r_end = gs_min(sz, r_begin + S);
  const int64_t j_begin = cb * S, j_end = gs_min(sz, j_begin + S);
  const int64_t cs = a.start[b] + c0;                      // packed index of the chunk's row 0
  const scalar_t* __restrict__ ac = av + 2 * cs;
  const scalar_t* __restrict__ bc = bv + 2 * cs;
  const int64_t* __restrict__ sc = sentiment + cs;
  const int64_t row_slot = ta.part_base[b] + cb * L + c0;  // + chunk row i
  const int64_t col_slot = ta.part_base[b] + rb * L + c0;  // + chunk column j

  for (int64_t r0 = r_begin; r0 < r_end; r0 += kNllTile) {
    acc_t a0[kNllPer], a1[kNllPer], lsum[kNllPer], rsum[kNllPer];
    int64_t sr[kNllPer];
    bool vr[kNllPer];
    uint32_t cells[kNllPer];
    load_tile_side<scalar_t, acc_t>(ac, sc, r0 + ty, r_begin, r_end, a0, a1, sr, vr);
#pragma unroll
    for (int q = 0; q < kNllPer; ++q) {
      lsum[q] = rsum[q] = acc_t(0);
      cells[q] = 0u;
    }
    const bool full_rows = r0 + kNllTile <= r_end;
    for (int64_t j0 = j_begin; j0 < j_end; j0 += kNllTile) {
      acc_t b0[kNllPer], b1[kNllPer], csum[kNllPer];
      int64_t scol[kNllPer];
      bool vc[kNllPer];
      load_tile_side<scalar_t, acc_t>(bc, sc, j0 + tx, j_begin, j_end, b0, b1, scol, vc);
#pragma unroll
      for (int p = 0; p < kNllPer; ++p) csum[p] = acc_t(0);
      if (full_rows && j0 + kNllTile <= j_end)  // uniform per block: a whole tile, no selects
        nll_pairs_4x4<scalar_t, acc_t, kWithGrad, kFast, false>(a0, a1, sr, vr, b0, b1, scol, vc, lsum, rsum,
                                                                cells, csum);
      else
        nll_pairs_4x4<scalar_t, acc_t, kWithGrad, kFast, true>(a0, a1, sr, vr, b0, b1, scol, vc, lsum, rsum,
                                                               cells, csum);
      if (kWithGrad) {
#pragma unroll
        for (int p = 0; p < kNllPer; ++p) colpart[ty][tx + kNllSide * p] = csum[p];
        __syncthreads();
        if (tid < kNllTile && j0 + tid < j_end) {
          acc_t tot = colpart[0][tid];
          for (int row = 1; row < kNllSide; ++row) tot += colpart[row][tid];
          acc_t* __restrict__ slot = part_col + col_slot + j0 + tid;
          *slot = r0 == r_begin ? tot : *slot + tot;  // row tiles in order; this block's slot only
        }
        __syncthreads();  // colpart is rewritten by the next column tile
      }
    }
#pragma unroll
    for (int q = 0; q < kNllPer; ++q) {
      const acc_t l = group_sum(lsum[q], kNllSide);
      const acc_t r = kWithGrad ? group_sum(rsum[q], kNllSide) : acc_t(0);
      // cells (y, pred) = (0, 1), (1, 0), (1, 1); (0, 0) follows from the chunk size in the combine
      const int n01 = group_sum(int((cells[q] >> 8) & 255u), kNllSide);
      const int n10 = group_sum(int((cells[q] >> 16) & 255u), kNllSide);
      const int n11 = group_sum(int(cells[q] >> 24), kNllSide);
      if (tx == 0 && vr[q]) {
        const int64_t slot = row_slot + r0 + ty + kNllSide * q;
        part_loss[slot] = l;
        if (kWithGrad) part_r[slot] = r;
        part_cnt[slot] = n01;
        part_cnt[ta.parts + slot] = n10;
        part_cnt[2 * ta.parts + slot] = n11;
      }
    }
  }
}

// Per utterance t: its chunk's ns partials added in band order. part_r / part_col == nullptr:
// no residuals (with_grad false).
template <typename acc_t>
__global__ void __launch_bounds__(kShiftThreads)
    shift_pair_nll_combine_kernel(const acc_t* __restrict__ part_loss, const acc_t* __restrict__ part_r,
                                  const int32_t* __restrict__ part_cnt, const acc_t* __restrict__ part_col,
                                  acc_t* __restrict__ row_loss, acc_t* __restrict__ row_r,
                                  int64_t* __restrict__ counts, acc_t* __restrict__ col_r, ShiftArgs a,
                                  NllTileArgs ta) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kShiftThreads + threadIdx.x;
  if (t >= a.N) return;
  const int64_t b = find_dialogue(a.start, a.B, t);
  const int64_t L = a.length[b], w = gs_min(shift_chunk(L, a.shift_win), L), local = t - a.start[b];
  const int64_t S = nll_span(w, ta.min_bands);
  const int64_t c0 = (local / w) * w, sz = gs_min(w, L - c0), nsc = (sz + S - 1) / S;
  const int64_t slot0 = ta.part_base[b] + local;
  acc_t l = acc_t(0), r = acc_t(0), cr = acc_t(0);
  int64_t n01 = 0, n10 = 0, n11 = 0;
  for (int64_t band = 0; band < nsc; ++band) {
    const int64_t s = slot0 + band * L;
    l += part_loss[s];
    n01 += part_cnt[s];
    n10 += part_cnt[ta.parts + s];
    n11 += part_cnt[2 * ta.parts + s];
    if (part_r != nullptr) {
      r += part_r[s];
      cr += part_col[s];
    }
  }
  row_loss[t] = l;
  if (part_r != nullptr) {
    row_r[t] = r;
    col_r[t] = cr;
  }
  int64_t* __restrict__ cnt = counts + 4 * t;
  cnt[0] = sz - n01 - n10 - n11;  // y = 0, pred = 0: the rest of the row's sz pairs
  cnt[1] = n01;                   // y = 0, pred = 1
  cnt[2] = n10;                   // y = 1, pred = 0
  cnt[3] = n11;                   // y = 1, pred = 1
}

}  // namespace gpu
}  // namespace graphsmile
