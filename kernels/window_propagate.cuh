// CUDA kernels of windowed cross-modal propagation (SPEC 3 and 5); launched by
// csrc/cuda/window_propagate_cuda.cu. No torch headers.
//
// Coordinates. Node m*N + t is packed utterance t of modality m. Utterance t of dialogue b
// (start s_b, length L) is row j = t - s_b; its window covers the packed columns
// [s_b + lo(j), s_b + hi(j)) of every other modality (window_index.h). Both ends are
// non-decreasing in t, also across dialogue boundaries (the last row of a dialogue ends at
// s_b + L = s_{b+1}), so the columns needed by any run of consecutive rows form one contiguous
// packed range: "the band". Likewise for the transposed windows of consecutive columns. A
// column u lies in row t's window only if both are in the same dialogue, so the block-diagonal
// structure needs no extra test. Edge id of (row t -> column u, pair p):
//   ebase(t) + p * band(b) + u,   ebase(t) = edge_base[b] + row_start(j) - lo(j) - s_b.
// (relative mode: weight slot p * (win_p + win_f + 1) + (u - t) + win_p via weight_index()).
//
// Tiling (forward, window_spmm_forward_kernel). A block owns kTileRows consecutive target rows
// of one modality m (tiles may span dialogues) and kTileD feature columns (grid.y). For every
// other modality n it walks the tile's band in chunks of kChunk source rows; per chunk it stages
// in shared memory x[n*N + u, d-tile] (converted to acc_t; zeros past the band / past D) and
// the coefficient tile cf[r][k] = a_e * s_u (0 outside row r's window). Each thread then owns a
// 4 rows x 4 features register tile and runs a small dense GEMM over the chunk, restricted to
// the union of its 4 rows' windows (k rounded to groups of 4; coefficients outside a window
// are exact zeros). Shared memory is O(kChunk * kTileD), independent of the window: an
// unbounded window (band = whole dialogue, up to 20000) just means more chunks.
//
// Backward, two passes, no atomics (every output element has exactly one writer, every
// reduction has a fixed order, so the bits are the same on every run):
//   pass A (window_spmm_cols_kernel): the same GEMM over the transposed band. A block owns
//     kTileRows target columns u of modality n; source rows t of each other modality m are
//     staged as g[m*N + t] with coefficients a_e * s_t. U_u = sum_e a_e s_t g_t gives
//     grad_x_u = s_u U_u and the column part <x_u, U_u> of grad_norm, written as per-(D tile)
//     partial sums colpart[blockIdx.y][node] (reduced later in a fixed order).
//   pass B (window_spmm_rows_kernel): per-edge dots <g_i, x_j>. A block owns kTileRows rows i of
//     modality m and walks their band in chunks of kChunk columns; for each chunk it loops over
//     all of D in steps of kDotD, staging g rows and x columns, each thread accumulating a 4x4
//     tile of dots (rows ry + 8i, columns kx + 8j: strided so the 128-bit shared loads are
//     bank-conflict free). Epilogue per edge: grad_a_e = s_i s_j dot (per_edge mode: stored at
//     its edge id; relative mode: into a temp [E] buffer), and the row part
//     sum_e a_e s_j dot of grad_norm, reduced over the 8 column-threads with a fixed butterfly
//     and added to the pass-A partials in a fixed order.
//   relative mode: relative_reduce_kernel, one block per table entry (p, delta), sums the
//     per-edge values of that entry over all rows in a fixed thread map + fixed tree.
//   window_norm_kernel / window_norm_grad_per_edge_kernel: one warp per row, lanes over the
//     row's window (coalesced: a row's edges are consecutive ids), fixed butterfly.
#pragma once
#include <stdint.h>

#include <type_traits>

#if defined(__CUDACC__)
#include <mma.h>  // nvcuda::wmma (tests/cuda_emu/cuda_emu.h provides it for the CPU emulator)
#endif

#include "cuda_common.cuh"
#include "window_index.h"

namespace graphsmile {
namespace gpu {

constexpr int kTileRows = 32;     // target rows (pass A: target columns) per block
constexpr int kChunk = 32;        // source rows (columns) staged per step
constexpr int kTileD = 64;        // feature columns per block (forward, pass A)
constexpr int kSpmmThreads = 128; // (kTileRows / 4) x (kTileD / 4) register tiles of 4 x 4
constexpr int kDotD = 32;         // feature columns staged per step (pass B)
constexpr int kDotThreads = 64;   // (kTileRows / 4) x (kChunk / 4) register tiles of 4 x 4
constexpr int kNormWarps = 8;     // rows (warps) per block of the norm kernels
constexpr int kReduceThreads = 256;

static_assert(kSpmmThreads == (kTileRows / 4) * (kTileD / 4), "forward/pass A thread layout");
static_assert(kDotThreads == (kTileRows / 4) * (kChunk / 4), "pass B thread layout");
static_assert(kTileRows == 32 && kChunk == 32, "pass B strides (8) assume 32 x 32 tiles");
static_assert(kChunk % 4 == 0 && kTileD % 4 == 0 && kDotD % 4 == 0, "vector loads of 4");

// Per-batch metadata, device pointers into one int64 tensor uploaded by the launcher.
struct WindowArgs {
  const int64_t* start;      // [B] s_b
  const int64_t* length;     // [B] L_b
  const int64_t* band;       // [B] c(L_b)
  const int64_t* edge_base;  // [B] first edge id of dialogue b
  int64_t B, N, M, wp, wf, mode;
};

// Row t's window in packed columns and its edge-id base (see the header comment).
struct RowWindow {
  int64_t lo, hi, ebase, band;
};

__device__ __forceinline__ RowWindow row_window(const WindowArgs& a, int64_t t) {
  const int64_t b = find_dialogue(a.start, a.B, t);
  const int64_t s = a.start[b], L = a.length[b], j = t - s;
  const int64_t lo = window_lo(j, a.wp), hi = window_hi(j, L, a.wf);
  RowWindow r;
  r.lo = s + lo;
  r.hi = s + hi;
  r.ebase = a.edge_base[b] + window_row_start(j, L, a.wp, a.wf) - lo - s;
  r.band = a.band[b];
  return r;
}

// Column u's transposed window: the packed rows t whose window holds u.
__device__ __forceinline__ void col_window(const WindowArgs& a, int64_t u, int64_t& lo, int64_t& hi) {
  const int64_t b = find_dialogue(a.start, a.B, u);
  const int64_t s = a.start[b], L = a.length[b], k = u - s;
  lo = s + window_row_lo(k, a.wf);
  hi = s + window_row_hi(k, L, a.wp);
}

// Weight slot of edge (row t -> column u) of pair p.
__device__ __forceinline__ int64_t edge_slot(const WindowArgs& a, int64_t edge_id, int64_t p, int64_t t,
                                             int64_t u) {
  return weight_index(a.mode, edge_id, p, u - t, a.wp, a.wf);
}

// ---------------------------------------------------------------------------------------------
// Staging helpers shared by the FFMA and tensor-core kernels (the caller synchronises).

// Windows (row_window) of the packed rows t0 .. t0 + count - 1 into shared arrays, entry i
// written by thread i < kEntries; entries past count get empty windows. With norm_in (the
// normalisation of those rows), also norm_in[i] into norm_out (0 past count).
template <int kEntries, typename acc_t, typename scalar_t>
__device__ __forceinline__ void load_windows(const WindowArgs& a, int64_t t0, int64_t count, int tid, int64_t* lo,
                                             int64_t* hi, int64_t* eb, int64_t* band,
                                             const scalar_t* norm_in = nullptr, acc_t* norm_out = nullptr) {
  if (tid >= kEntries) return;
  RowWindow rw{0, 0, 0, 0};
  if (tid < count) rw = row_window(a, t0 + tid);
  lo[tid] = rw.lo;
  hi[tid] = rw.hi;
  eb[tid] = rw.ebase;
  band[tid] = rw.band;
  if (norm_in != nullptr) norm_out[tid] = tid < count ? to_acc<acc_t>(norm_in[tid]) : acc_t(0);
}

// Transposed windows (col_window) of the packed columns c0 .. c0 + count - 1 (empty past count).
template <int kEntries>
__device__ __forceinline__ void load_col_windows(const WindowArgs& a, int64_t c0, int64_t count, int tid, int64_t* lo,
                                                 int64_t* hi) {
  if (tid >= kEntries) return;
  int64_t l = 0, h = 0;
  if (tid < count) col_window(a, c0 + tid, l, h);
  lo[tid] = l;
  hi[tid] = h;
}

// A [kRows x kCols] tile of the row-major [*, D] matrix src: rows row0 + k (k < nvalid), columns
// d0 + dd (< D). store(k, dd, p) gets a pointer to each element, nullptr where the tile is
// padding; consecutive threads take consecutive columns (coalesced).
template <int kRows, int kCols, int kThreads, typename scalar_t, typename Store>
__device__ __forceinline__ void stage_tile(const scalar_t* __restrict__ src, int64_t row0, int nvalid, int64_t d0,
                                           int64_t D, int tid, Store store) {
  for (int idx = tid; idx < kRows * kCols; idx += kThreads) {
    const int k = idx / kCols, dd = idx % kCols;
    store(k, dd, k < nvalid && d0 + dd < D ? &src[(row0 + k) * D + d0 + dd] : nullptr);
  }
}

// The forward's coefficient tile: c(r, k) = a_e s_u for column u = u0 + k (k < clen) in the
// window of tile row r (t0 + r; windows in r_lo .. r_band), else 0; sn: the source modality's
// normalisation. store(r, k, c); consecutive threads take consecutive edge ids.
template <typename acc_t, typename scalar_t, typename Store>
__device__ __forceinline__ void stage_row_coefs(const WindowArgs& a, const scalar_t* __restrict__ w,
                                                const scalar_t* __restrict__ sn, const int64_t* r_lo,
                                                const int64_t* r_hi, const int64_t* r_eb, const int64_t* r_band,
                                                int64_t p, int64_t t0, int64_t u0, int clen, int tid, Store store) {
  for (int idx = tid; idx < kTileRows * kChunk; idx += kSpmmThreads) {
    const int r = idx / kChunk, k = idx % kChunk;
    const int64_t u = u0 + k;
    acc_t c = acc_t(0);
    if (k < clen && u >= r_lo[r] && u < r_hi[r]) {
      const int64_t slot = edge_slot(a, r_eb[r] + p * r_band[r] + u, p, t0 + r, u);
      c = to_acc<acc_t>(w[slot]) * to_acc<acc_t>(sn[u]);
    }
    store(r, k, c);
  }
}

// Backward pass A's coefficient tile: c(k, r) = a_e s_t for source row t = t0 + k (windows and
// normalisation in s_lo .. s_s, empty past the chunk) and target column u = c0 + r (r < ncols)
// in its window, else 0. store(k, r, c); consecutive threads take consecutive edge ids.
template <typename acc_t, typename scalar_t, typename Store>
__device__ __forceinline__ void stage_col_coefs(const WindowArgs& a, const scalar_t* __restrict__ w,
                                                const int64_t* s_lo, const int64_t* s_hi, const int64_t* s_eb,
                                                const int64_t* s_band, const acc_t* s_s, int64_t p, int64_t t0,
                                                int64_t c0, int ncols, int tid, Store store) {
  for (int idx = tid; idx < kChunk * kTileRows; idx += kSpmmThreads) {
    const int k = idx / kTileRows, r = idx % kTileRows;
    const int64_t u = c0 + r;
    acc_t c = acc_t(0);
    if (r < ncols && u >= s_lo[k] && u < s_hi[k]) {  // k < clen implied (empty windows past it)
      const int64_t slot = edge_slot(a, s_eb[k] + p * s_band[k] + u, p, t0 + k, u);
      c = to_acc<acc_t>(w[slot]) * s_s[k];
    }
    store(k, r, c);
  }
}

// 16-byte staging (D % 4 == 0, src 16-byte aligned) of a [kRows x kCols] tile of the row-major
// [*, D] matrix src: rows row0 + k (k < nvalid), columns d0 + dd (< D), 0 outside. load() issues
// all of a thread's loads into registers, so they are in flight together, before store() writes
// them to dst[k * ld + dd].
template <int kRows, int kCols, int kThreads, typename T>
struct VecTile {
  static_assert(kCols % 4 == 0 && (kRows * kCols / 4) % kThreads == 0, "VecTile: whole groups per thread");
  static constexpr int kGroups = kCols / 4;
  static constexpr int kPerThread = kRows * kGroups / kThreads;
  T v[kPerThread][4];

  __device__ __forceinline__ void load(const T* __restrict__ src, int64_t row0, int nvalid, int64_t d0, int64_t D,
                                       int tid) {
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int idx = tid + it * kThreads;
      const int k = idx / kGroups, dd = 4 * (idx % kGroups);
      if (k < nvalid && d0 + dd < D) {  // D % 4 == 0: the whole group is inside
        load4(&src[(row0 + k) * D + d0 + dd], v[it]);
      } else {
#pragma unroll
        for (int q = 0; q < 4; ++q) v[it][q] = T(0);
      }
    }
  }
  __device__ __forceinline__ void store(T* dst, int ld, int tid) const {
#pragma unroll
    for (int it = 0; it < kPerThread; ++it) {
      const int idx = tid + it * kThreads;
      const int k = idx / kGroups, dd = 4 * (idx % kGroups);
#pragma unroll
      for (int q = 0; q < 4; ++q) dst[k * ld + dd + q] = v[it][q];
    }
  }
};

// A chunk's [kChunk x kTileD] tile of src (rows row0 + k, k < nvalid) into dst[k * kTileD + dd]
// in acc_t: 16-byte loads when vec (scalar_t == acc_t only), else stage_tile.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void stage_chunk(const scalar_t* __restrict__ src, int64_t row0, int nvalid, int64_t d0,
                                            int64_t D, int tid, bool vec, acc_t* dst) {
  if constexpr (std::is_same<scalar_t, acc_t>::value) {
    if (vec) {
      VecTile<kChunk, kTileD, kSpmmThreads, acc_t> t;
      t.load(src, row0, nvalid, d0, D, tid);
      t.store(dst, kTileD, tid);
      return;
    }
  }
  stage_tile<kChunk, kTileD, kSpmmThreads>(src, row0, nvalid, d0, D, tid, [&](int k, int dd, const scalar_t* v) {
    dst[k * kTileD + dd] = v != nullptr ? to_acc<acc_t>(*v) : acc_t(0);
  });
}

// One thread's product of a staged chunk (source rows u0 .. u0 + clen - 1) over the k-range of
// its rows' window union [th_lo, th_hi), k rounded down to a multiple of 4 (the coefficients are 0
// outside each row's window; kb and kChunk are multiples of 4, so k + 3 < kChunk):
//   forward (kTransposed false): acc[i][q] += cf[(4 ry + i) * ld + k] * src[k * kTileD + 4 dx + q];
//   pass A (kTransposed true):   acc[i][q] += cf[k * ld + 4 ry + i] * src[k * kTileD + 4 dx + q].
template <bool kTransposed, typename acc_t>
__device__ __forceinline__ void chunk_fma(acc_t (&acc)[4][4], const acc_t* src, const acc_t* cf, int ld, int ry,
                                          int dx, int64_t th_lo, int64_t th_hi, int64_t u0, int clen) {
  const int kb = static_cast<int>(gs_min(gs_max(th_lo - u0, 0), kChunk)) & ~3;
  const int ke = static_cast<int>(gs_max(gs_min(th_hi - u0, clen), 0));
  for (int k = kb; k < ke; k += 4) {
    acc_t sv[4][4], cv[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) load4(&src[(k + kk) * kTileD + 4 * dx], sv[kk]);
    if constexpr (kTransposed) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) load4(&cf[(k + kk) * ld + 4 * ry], cv[kk]);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[i][q] += cv[kk][i] * sv[kk][q];
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) load4(&cf[(4 * ry + i) * ld + k], cv[i]);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int q = 0; q < 4; ++q) acc[i][q] += cv[i][kk] * sv[kk][q];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// d_r = sum of the weights of the edges leaving row r (utterance t of modality m), summed by the
// 32 lanes of a warp in a fixed order; the xor butterfly leaves the same bits in every lane.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t row_degree(const scalar_t* __restrict__ w, const WindowArgs& a, int64_t m, int64_t t,
                                            const RowWindow& rw, int lane) {
  acc_t d = acc_t(0);
  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    const int64_t e0 = rw.ebase + p * rw.band;
    for (int64_t u = rw.lo + lane; u < rw.hi; u += 32) d += to_acc<acc_t>(w[edge_slot(a, e0 + u, p, t, u)]);
  }
  return group_sum(d, 32);
}

// d^{-1/2}: 0 where d == 0 (the original's masked assignment), NaN where d < 0.
template <typename acc_t>
__device__ __forceinline__ acc_t inv_sqrt_degree(acc_t d) {
  return d == acc_t(0) ? acc_t(0) : acc_t(1) / sqrt(d);
}

// window_norm: s_r = d_r^{-1/2}, one warp per row r. out_t: scalar_t for the op's output, acc_t
// for the unrounded norm that the fp16/bf16 backward of the relative mode reads.
template <typename scalar_t, typename acc_t, typename out_t = scalar_t>
__global__ void __launch_bounds__(kNormWarps * 32)
    window_norm_kernel(const scalar_t* __restrict__ w, out_t* __restrict__ s_out, WindowArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kNormWarps + (threadIdx.x >> 5);
  if (row >= a.M * a.N) return;  // uniform per warp
  const int64_t m = row / a.N, t = row - m * a.N;
  const acc_t d = row_degree<scalar_t, acc_t>(w, a, m, t, row_window(a, t), lane);
  if (lane == 0) s_out[row] = static_cast<out_t>(inv_sqrt_degree(d));
}

// True for fp16/bf16 storage with fp32 accumulation. Their backward recomputes s_r from the
// weights in acc_t instead of reading the stored, rounded s_r: -0.5 s_r^3 would triple its
// rounding error (up to 1.5 ulp, more than fp16 torch's own error); recomputed, the gradient
// is rounded once. In fp32/fp64 the stored s_r has exactly the recomputed bits.
template <typename scalar_t, typename acc_t>
constexpr bool kRecomputeNorm = sizeof(scalar_t) < sizeof(acc_t);

// window_norm_backward, per_edge mode: grad_a_e = -0.5 s_r^3 grad_s_r for every edge e leaving r.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kNormWarps * 32)
    window_norm_grad_per_edge_kernel(const scalar_t* __restrict__ gs, const scalar_t* __restrict__ s,
                                     const scalar_t* __restrict__ w, scalar_t* __restrict__ gw, WindowArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kNormWarps + (threadIdx.x >> 5);
  if (row >= a.M * a.N) return;
  const int64_t m = row / a.N, t = row - m * a.N;
  const RowWindow rw = row_window(a, t);
  acc_t si;
  if constexpr (kRecomputeNorm<scalar_t, acc_t>) {
    si = inv_sqrt_degree(row_degree<scalar_t, acc_t>(w, a, m, t, rw, lane));
  } else {
    si = to_acc<acc_t>(s[row]);
  }
  const scalar_t v = static_cast<scalar_t>(acc_t(-0.5) * si * si * si * to_acc<acc_t>(gs[row]));
  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t e0 = rw.ebase + modal_pair_index(m, n, a.M) * rw.band;
    for (int64_t u = rw.lo + lane; u < rw.hi; u += 32) gw[e0 + u] = v;
  }
}

// Per-edge values of window_norm_backward (relative mode): depend on the row only. norm_t:
// scalar_t (the stored norm), or acc_t for fp16/bf16 (recomputed by window_norm_kernel, see
// kRecomputeNorm).
template <typename scalar_t, typename acc_t, typename norm_t = scalar_t>
struct NormGradEdges {
  const norm_t* s;
  const scalar_t* gs;
  __device__ __forceinline__ acc_t operator()(int64_t row, int64_t /*edge*/) const {
    const acc_t si = to_acc<acc_t>(s[row]);
    return acc_t(-0.5) * si * si * si * to_acc<acc_t>(gs[row]);
  }
};

// Per-edge values stored in a temp [E] buffer (window_spmm_backward, relative mode).
template <typename acc_t>
struct BufferedEdges {
  const acc_t* v;
  __device__ __forceinline__ acc_t operator()(int64_t /*row*/, int64_t edge) const { return v[edge]; }
};

// out[p, delta + win_p] = sum of the per-edge values of the edges of pair p with k - j = delta,
// one block per table entry; fixed thread->row map and fixed tree: deterministic.
template <typename scalar_t, typename acc_t, typename Edges>
__global__ void __launch_bounds__(kReduceThreads)
    relative_reduce_kernel(Edges edges, scalar_t* __restrict__ out, WindowArgs a) {
  __shared__ acc_t part[kReduceThreads / 32];
  const int64_t W = a.wp + a.wf + 1;
  const int64_t q = blockIdx.x;
  const int64_t p = q / W, delta = q - p * W - a.wp;
  const int64_t m = p / (a.M - 1);  // row modality of pair p
  acc_t sum = acc_t(0);
  for (int64_t t = threadIdx.x; t < a.N; t += kReduceThreads) {
    const int64_t b = find_dialogue(a.start, a.B, t);
    const int64_t s = a.start[b], L = a.length[b], j = t - s, k = j + delta;
    if (k >= 0 && k < L) {  // delta in [-win_p, win_f]: then k is inside row j's window
      const int64_t e = a.edge_base[b] + p * a.band[b] + window_row_start(j, L, a.wp, a.wf) + (k - window_lo(j, a.wp));
      sum += edges(m * a.N + t, e);
    }
  }
  sum = group_sum(sum, 32);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = part[0];
    for (int i = 1; i < kReduceThreads / 32; ++i) total += part[i];
    out[q] = static_cast<scalar_t>(total);
  }
}

// ---------------------------------------------------------------------------------------------
// Forward: y[m*N + t] = s_t * sum_{n != m} sum_{u in window(t)} a_e s_u x[n*N + u].
// grid: (M * ceil(N / kTileRows), ceil(D / kTileD)), block: kSpmmThreads.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSpmmThreads)
    window_spmm_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                               const scalar_t* __restrict__ s, scalar_t* __restrict__ y, WindowArgs a, int64_t D) {
  __shared__ __align__(16) acc_t xs[kChunk * kTileD];             // [k][d]
  __shared__ __align__(16) acc_t cf[kTileRows * (kChunk + 4)];    // [r][k], rows padded
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t m = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t t0 = (static_cast<int64_t>(blockIdx.x) - m * tiles) * kTileRows;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kTileD;
  const int nrows = static_cast<int>(gs_min(kTileRows, N - t0));
  load_windows<kTileRows, acc_t, scalar_t>(a, t0, nrows, tid, r_lo, r_hi, r_eb, r_band);
  __syncthreads();
  const int64_t band_lo = r_lo[0], band_hi = r_hi[nrows - 1];
  const int ry = tid / (kTileD / 4), dx = tid % (kTileD / 4);
  // Union of this thread's rows' windows (windows are monotone in the row).
  const int rfirst = 4 * ry, rlast = static_cast<int>(gs_min(4 * ry + 3, nrows - 1));
  const bool th_any = rfirst < nrows;
  const int64_t th_lo = th_any ? r_lo[rfirst] : 0, th_hi = th_any ? r_hi[rlast] : 0;

  acc_t acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[i][q] = acc_t(0);

  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    const scalar_t* __restrict__ xn = x + n * N * D;
    const scalar_t* __restrict__ sn = s + n * N;
    for (int64_t u0 = band_lo; u0 < band_hi; u0 += kChunk) {
      const int clen = static_cast<int>(gs_min(kChunk, band_hi - u0));
      __syncthreads();  // the previous chunk's GEMM is done with xs / cf
      stage_chunk<scalar_t, acc_t>(xn, u0, clen, d0, D, tid, /*vec=*/false, xs);
      stage_row_coefs<acc_t>(a, w, sn, r_lo, r_hi, r_eb, r_band, p, t0, u0, clen, tid,
                             [&](int r, int k, acc_t c) { cf[r * (kChunk + 4) + k] = c; });
      __syncthreads();
      if (th_any) chunk_fma<false>(acc, xs, cf, kChunk + 4, ry, dx, th_lo, th_hi, u0, clen);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = 4 * ry + i;
    if (r >= nrows) continue;
    const int64_t row = m * N + t0 + r;
    const acc_t si = to_acc<acc_t>(s[row]);
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const int64_t d = d0 + 4 * dx + q;
      if (d < D) y[row * D + d] = static_cast<scalar_t>(si * acc[i][q]);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward, staged once (fp32 / fp64: T is both the storage and the accumulation type). The same
// block tile, band walk, per-thread k-ranges and multiply-add order as window_spmm_forward_kernel
// (so the same bits), with the staging the first GPU run showed to dominate (GPU_NOTES: the FFMA
// forward issued about 6 instructions per useful multiply-add) cut down:
// - a block computes d_tiles consecutive 64-feature tiles, and the band's coefficient tiles
//   (int64 edge ids, gathers of w and s) are staged once, for the first, when the band's chunks
//   over all other modalities fit kFwdCfSlots<T> tiles (windows 17/17: 3 chunks per modality);
//   longer bands restage them per tile;
// - x is staged with 16-byte loads (vec: D a multiple of 4 and x 16-byte aligned, checked by the
//   launcher), all of a thread's loads issued before its shared-memory stores.
// grid: (M * ceil(N / kTileRows), ceil(D / (kTileD * d_tiles))), block: kSpmmThreads.
template <typename T>
constexpr int kFwdCfSlots = sizeof(T) == 4 ? 6 : 2;  // 6 x 32 x 36 x 4 B = 27 KB; fp64: 18 KB

// Occupancy: at least kFwdMinBlocks<T> blocks per SM (fp32: 6, as its shared memory allows,
// capping registers at 80 on sm_90 with no spills; unbounded, ptxas took 127 and 4 blocks per SM;
// fp64 spilled at 80 and keeps 3).
template <typename T>
constexpr int kFwdMinBlocks = sizeof(T) == 4 ? 6 : 3;

template <typename T>
__global__ void __launch_bounds__(kSpmmThreads, kFwdMinBlocks<T>)
    window_spmm_forward_staged_kernel(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ s,
                                      T* __restrict__ y, WindowArgs a, int64_t D, int64_t d_tiles, bool vec) {
  constexpr int kLd = kChunk + 4;  // cf row stride (as the kernel above)
  __shared__ __align__(16) T xs[kChunk * kTileD];                    // [k][d]
  __shared__ __align__(16) T cf[kFwdCfSlots<T> * kTileRows * kLd];   // [slot][r][k]
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t m = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t t0 = (static_cast<int64_t>(blockIdx.x) - m * tiles) * kTileRows;
  const int nrows = static_cast<int>(gs_min(kTileRows, N - t0));
  load_windows<kTileRows, T, T>(a, t0, nrows, tid, r_lo, r_hi, r_eb, r_band);
  __syncthreads();
  const int64_t band_lo = r_lo[0], band_hi = r_hi[nrows - 1];
  const int64_t band_chunks = (a.M - 1) * ((band_hi - band_lo + kChunk - 1) / kChunk);
  const bool cached = band_chunks <= kFwdCfSlots<T>;  // uniform per block
  const int ry = tid / (kTileD / 4), dx = tid % (kTileD / 4);
  const int rfirst = 4 * ry, rlast = static_cast<int>(gs_min(4 * ry + 3, nrows - 1));
  const bool th_any = rfirst < nrows;
  const int64_t th_lo = th_any ? r_lo[rfirst] : 0, th_hi = th_any ? r_hi[rlast] : 0;

  for (int64_t dt = 0; dt < d_tiles; ++dt) {
    const int64_t d0 = (static_cast<int64_t>(blockIdx.y) * d_tiles + dt) * kTileD;
    if (d0 >= D) break;  // uniform per block
    T acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][q] = T(0);
    int slot = 0;  // the chunk's coefficient tile (cached: one per chunk; else tile 0, restaged)
    for (int64_t n = 0; n < a.M; ++n) {
      if (n == m) continue;
      const int64_t p = modal_pair_index(m, n, a.M);
      const T* __restrict__ xn = x + n * N * D;
      const T* __restrict__ sn = s + n * N;
      for (int64_t u0 = band_lo; u0 < band_hi; u0 += kChunk, ++slot) {
        const int clen = static_cast<int>(gs_min(kChunk, band_hi - u0));
        T* __restrict__ cft = cf + (cached ? slot : 0) * kTileRows * kLd;
        __syncthreads();  // the previous chunk's products are done with xs (and an uncached cf)
        stage_chunk<T, T>(xn, u0, clen, d0, D, tid, vec, xs);
        if (!cached || dt == 0)
          stage_row_coefs<T>(a, w, sn, r_lo, r_hi, r_eb, r_band, p, t0, u0, clen, tid,
                             [&](int r, int k, T c) { cft[r * kLd + k] = c; });
        __syncthreads();
        if (th_any) chunk_fma<false>(acc, xs, cft, kLd, ry, dx, th_lo, th_hi, u0, clen);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = 4 * ry + i;
      if (r >= nrows) continue;
      const int64_t row = m * N + t0 + r;
      const T si = s[row];
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t d = d0 + 4 * dx + q;
        if (d < D) y[row * D + d] = si * acc[i][q];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward on tensor cores, for 16-bit storage (fp16 / bf16; tc_t = __half / __nv_bfloat16 for
// the wmma fragments): the same block tile, band walk and staging as the kernel above, but the
// chunk GEMM [32 rows x 32 k] @ [32 k x 64 d] runs as wmma 16x16x16 products with fp32
// accumulation. Each of the 4 warps owns 16 rows x 32 features (two accumulator fragments).
// x is staged as its own 16-bit bits (exact); the coefficients a_e * s_u are computed in fp32
// and rounded to the storage type, as plain torch in that precision would. The whole chunk is
// multiplied (zero-padded past the band): the FFMA kernel's per-thread k-range trimming would
// not pay on tensor cores. Needs sm_80 (bf16 fragments); the launcher checks the device.
// Feature tiles: a block computes d_tiles consecutive 64-feature tiles (grid.y = ceil(D / (64 *
// d_tiles))), one after the other. The coefficients of a chunk do not depend on the features, so
// when the band's chunks over all other modalities fit kTcCfSlots tiles (windows 17/17: 3 chunks
// per modality), they are staged once, for the first feature tile, and reused by the others:
// d_tiles times less coefficient work (int64 edge ids, gathers of w and s), which GPU_NOTES
// predicts to be most of this kernel's instructions. Longer bands restage them per tile.
constexpr int kTcLdA = kChunk + 8;    // cf row stride, elements (multiple of 8: wmma's ldm rule)
constexpr int kTcLdB = kTileD + 8;    // xs row stride
constexpr int kTcLdC = kTileD + 4;    // fp32 epilogue tile row stride (multiple of 4)
constexpr int kTcDTiles = 4;          // the launcher's default d_tiles (GRAPHSMILE_CUDA_TC_DTILES)
constexpr int kTcCfSlots = 6;         // coefficient tiles kept: 6 x 32 x 40 x 2 B = 15 KB
static_assert(kTileRows == 32 && kChunk == 32 && kTileD == 64 && kSpmmThreads == 128,
              "the tensor-core tiling assumes 32 x 64 block tiles, 32-row chunks and 4 warps");

// One warp's share of a chunk GEMM (the forward and backward pass A): acc0 / acc1 (16 rows x
// 16 + 16 features) += A[16 rows x kChunk] @ B[kChunk x 32 features], in steps of 16 k. A's
// element (r, k) is at a + r * kTcLdA + k (ALayout row_major) or a + k * kTcLdA + r (col_major),
// B's (k, d) at b + k * kTcLdB + d; all 16-bit storage bits.
template <typename tc_t, typename ALayout, typename Acc>
__device__ __forceinline__ void warp_chunk_mma(Acc& acc0, Acc& acc1, const uint16_t* a, const uint16_t* b) {
  using namespace nvcuda;
  constexpr bool kRowMajor = std::is_same<ALayout, wmma::row_major>::value;
#pragma unroll
  for (int k = 0; k < kChunk; k += 16) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, tc_t, ALayout> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, tc_t, wmma::row_major> fb0, fb1;
    wmma::load_matrix_sync(fa, reinterpret_cast<const tc_t*>(a + (kRowMajor ? k : k * kTcLdA)), kTcLdA);
    wmma::load_matrix_sync(fb0, reinterpret_cast<const tc_t*>(b + k * kTcLdB), kTcLdB);
    wmma::load_matrix_sync(fb1, reinterpret_cast<const tc_t*>(b + k * kTcLdB + 16), kTcLdB);
    wmma::mma_sync(acc0, fa, fb0, acc0);
    wmma::mma_sync(acc1, fa, fb1, acc1);
  }
}

template <typename scalar_t, typename tc_t>
__global__ void __launch_bounds__(kSpmmThreads)
    window_spmm_forward_tc_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ w,
                                  const scalar_t* __restrict__ s, scalar_t* __restrict__ y, WindowArgs a,
                                  int64_t D, int64_t d_tiles) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using acc_t = float;
  // wmma loads and stores need 32-byte aligned pointers: every fragment offset below is a
  // multiple of 32 bytes given these strides (16 * kTcLdA * 2, 16 * kTcLdB * 2, 16 * kTcLdC * 4).
  __shared__ __align__(32) uint16_t cf[kTcCfSlots * kTileRows * kTcLdA];  // A tiles: [slot][r][k], bits of scalar_t
  __shared__ __align__(32) uint16_t xs[kChunk * kTcLdB];                 // B: [k][d], bits of scalar_t
  __shared__ __align__(32) float out[kTileRows * kTcLdC];                // the accumulators, for the epilogue
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t m = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t t0 = (static_cast<int64_t>(blockIdx.x) - m * tiles) * kTileRows;
  const int nrows = static_cast<int>(gs_min(kTileRows, N - t0));
  load_windows<kTileRows, acc_t, scalar_t>(a, t0, nrows, tid, r_lo, r_hi, r_eb, r_band);
  __syncthreads();
  const int64_t band_lo = r_lo[0], band_hi = r_hi[nrows - 1];
  const int64_t band_chunks = (a.M - 1) * ((band_hi - band_lo + kChunk - 1) / kChunk);
  const bool cached = d_tiles > 1 && band_chunks <= kTcCfSlots;  // uniform per block
  const int warp = tid >> 5;
  const int wr = (warp >> 1) * 16, wc = (warp & 1) * 32;  // this warp's rows and features

  for (int64_t dt = 0; dt < d_tiles; ++dt) {
    const int64_t d0 = (static_cast<int64_t>(blockIdx.y) * d_tiles + dt) * kTileD;
    if (d0 >= D) break;  // uniform per block
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc0, acc1;
    wmma::fill_fragment(acc0, 0.0f);
    wmma::fill_fragment(acc1, 0.0f);
    int slot = 0;  // the chunk's coefficient tile (cached: one per chunk; else tile 0, restaged)
    for (int64_t n = 0; n < a.M; ++n) {
      if (n == m) continue;
      const int64_t p = modal_pair_index(m, n, a.M);
      const scalar_t* __restrict__ xn = x + n * N * D;
      const scalar_t* __restrict__ sn = s + n * N;
      for (int64_t u0 = band_lo; u0 < band_hi; u0 += kChunk, ++slot) {
        const int clen = static_cast<int>(gs_min(kChunk, band_hi - u0));
        uint16_t* __restrict__ cft = cf + (cached ? slot : 0) * kTileRows * kTcLdA;
        __syncthreads();  // the previous chunk's products are done with xs (and an uncached cf)
        stage_tile<kChunk, kTileD, kSpmmThreads>(xn, u0, clen, d0, D, tid, [&](int k, int dd, const scalar_t* v) {
          xs[k * kTcLdB + dd] = v != nullptr ? bits16(*v) : uint16_t(0);  // 0: +0.0 in fp16 and bf16
        });
        if (!cached || dt == 0)
          stage_row_coefs<acc_t>(a, w, sn, r_lo, r_hi, r_eb, r_band, p, t0, u0, clen, tid,
                                 [&](int r, int k, acc_t c) { cft[r * kTcLdA + k] = bits16(static_cast<scalar_t>(c)); });
        __syncthreads();
        warp_chunk_mma<tc_t, wmma::row_major>(acc0, acc1, cft + wr * kTcLdA, xs + wc);
      }
    }
    wmma::store_matrix_sync(out + wr * kTcLdC + wc, acc0, kTcLdC, wmma::mem_row_major);
    wmma::store_matrix_sync(out + wr * kTcLdC + wc + 16, acc1, kTcLdC, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < kTileRows * kTileD; idx += kSpmmThreads) {
      const int r = idx / kTileD, dd = idx % kTileD;  // consecutive threads: consecutive features
      const int64_t d = d0 + dd;
      if (r >= nrows || d >= D) continue;
      const int64_t row = m * N + t0 + r;
      y[row * D + d] = static_cast<scalar_t>(to_acc<acc_t>(s[row]) * out[r * kTcLdC + dd]);
    }
    __syncthreads();  // out is rewritten by the next feature tile (redundant while every block has a chunk to stage: M >= 2, windows never empty; kept so this loop does not rely on it)
  }
#else
  __trap();  // built for an architecture without bf16 tensor cores: the launcher never gets here
#endif
}

// ---------------------------------------------------------------------------------------------
// Backward pass A, over columns c = n*N + u: U_c = sum_{m != n} sum_{t: u in window(t)} a_e s_t g[m*N + t];
//   grad_x_c = s_c U_c (if gx), colpart[blockIdx.y][c] = <x_c, U_c> over this D tile (if colpart).
// grid: (M * ceil(N / kTileRows), ceil(D / kTileD)), block: kSpmmThreads.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kSpmmThreads)
    window_spmm_cols_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                            const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                            scalar_t* __restrict__ gx, acc_t* __restrict__ colpart, WindowArgs a, int64_t D) {
  __shared__ __align__(16) acc_t gsrc[kChunk * kTileD];           // [k][d]: source rows t
  __shared__ __align__(16) acc_t cf[kChunk * (kTileRows + 4)];    // [k][r]: r = target column
  __shared__ int64_t c_lo[kTileRows], c_hi[kTileRows];             // transposed windows of the targets
  __shared__ int64_t s_lo[kChunk], s_hi[kChunk], s_eb[kChunk], s_band[kChunk];  // source rows' windows
  __shared__ acc_t s_s[kChunk];                                       // s of the source rows

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t n = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) - n * tiles) * kTileRows;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kTileD;
  const int ncols = static_cast<int>(gs_min(kTileRows, N - c0));
  load_col_windows<kTileRows>(a, c0, ncols, tid, c_lo, c_hi);
  __syncthreads();
  const int64_t band_lo = c_lo[0], band_hi = c_hi[ncols - 1];
  const int ry = tid / (kTileD / 4), dx = tid % (kTileD / 4);
  const int rfirst = 4 * ry, rlast = static_cast<int>(gs_min(4 * ry + 3, ncols - 1));
  const bool th_any = rfirst < ncols;
  const int64_t th_lo = th_any ? c_lo[rfirst] : 0, th_hi = th_any ? c_hi[rlast] : 0;

  acc_t acc[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[i][q] = acc_t(0);

  for (int64_t m = 0; m < a.M; ++m) {
    if (m == n) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    const scalar_t* __restrict__ gm = g + m * N * D;
    for (int64_t t0 = band_lo; t0 < band_hi; t0 += kChunk) {
      const int clen = static_cast<int>(gs_min(kChunk, band_hi - t0));
      __syncthreads();  // the previous chunk is done with gsrc / cf / s_*
      stage_chunk<scalar_t, acc_t>(gm, t0, clen, d0, D, tid, /*vec=*/false, gsrc);
      load_windows<kChunk>(a, t0, clen, tid, s_lo, s_hi, s_eb, s_band, s + m * N + t0, s_s);
      __syncthreads();
      stage_col_coefs(a, w, s_lo, s_hi, s_eb, s_band, s_s, p, t0, c0, ncols, tid,
                      [&](int k, int r, acc_t c) { cf[k * (kTileRows + 4) + r] = c; });
      __syncthreads();
      if (th_any) chunk_fma<true>(acc, gsrc, cf, kTileRows + 4, ry, dx, th_lo, th_hi, t0, clen);
    }
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = 4 * ry + i;
    const bool valid = r < ncols;
    const int64_t col = n * N + c0 + r;
    acc_t dot = acc_t(0);
    if (valid) {
      const acc_t sc = to_acc<acc_t>(s[col]);
#pragma unroll
      for (int q = 0; q < 4; ++q) {
        const int64_t d = d0 + 4 * dx + q;
        if (d < D) {
          if (gx != nullptr) gx[col * D + d] = static_cast<scalar_t>(sc * acc[i][q]);
          if (colpart != nullptr) dot += to_acc<acc_t>(x[col * D + d]) * acc[i][q];
        }
      }
    }
    if (colpart != nullptr) {  // uniform: every lane shuffles
      dot = group_sum(dot, kTileD / 4);
      if (valid && dx == 0) colpart[static_cast<int64_t>(blockIdx.y) * a.M * N + col] = dot;
    }
  }
}

// Backward pass A, staged (fp32 / fp64; GRAPHSMILE_CUDA_FFMA_DTILES, as the staged forward): the
// kernel above with d_tiles feature tiles per block, the band's coefficient tiles (and the source
// rows' windows they need) staged once for all of them when the band's chunks fit
// kFwdCfSlots<T>, and g staged with 16-byte loads (vec). Same sums in the same order: the same
// bits. colpart gets one partial per 64-feature tile, as before (index blockIdx.y * d_tiles + dt).
// grid: (M * ceil(N / kTileRows), ceil(D / (kTileD * d_tiles))), block: kSpmmThreads.
// Occupancy: fp32 5 blocks per SM (37.5 KB of shared memory each, plus the 1 KB per block the
// SM reserves: 6 would need 231 KB of its 228), 102 registers, no spills on sm_90; fp64 3.
template <typename T>
constexpr int kColsMinBlocks = sizeof(T) == 4 ? 5 : 3;

template <typename T>
__global__ void __launch_bounds__(kSpmmThreads, kColsMinBlocks<T>)
    window_spmm_cols_staged_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                                   const T* __restrict__ s, T* __restrict__ gx, T* __restrict__ colpart, WindowArgs a,
                                   int64_t D, int64_t d_tiles, bool vec) {
  constexpr int kLd = kTileRows + 4;
  __shared__ __align__(16) T gsrc[kChunk * kTileD];                 // [k][d]: source rows t
  __shared__ __align__(16) T cf[kFwdCfSlots<T> * kChunk * kLd];     // [slot][k][r]: r = target column
  __shared__ int64_t c_lo[kTileRows], c_hi[kTileRows];
  __shared__ int64_t s_lo[kChunk], s_hi[kChunk], s_eb[kChunk], s_band[kChunk];
  __shared__ T s_s[kChunk];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t n = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) - n * tiles) * kTileRows;
  const int ncols = static_cast<int>(gs_min(kTileRows, N - c0));
  load_col_windows<kTileRows>(a, c0, ncols, tid, c_lo, c_hi);
  __syncthreads();
  const int64_t band_lo = c_lo[0], band_hi = c_hi[ncols - 1];
  const int64_t band_chunks = (a.M - 1) * ((band_hi - band_lo + kChunk - 1) / kChunk);
  const bool cached = band_chunks <= kFwdCfSlots<T>;  // uniform per block
  const int ry = tid / (kTileD / 4), dx = tid % (kTileD / 4);
  const int rfirst = 4 * ry, rlast = static_cast<int>(gs_min(4 * ry + 3, ncols - 1));
  const bool th_any = rfirst < ncols;
  const int64_t th_lo = th_any ? c_lo[rfirst] : 0, th_hi = th_any ? c_hi[rlast] : 0;

  for (int64_t dt = 0; dt < d_tiles; ++dt) {
    const int64_t dtile = static_cast<int64_t>(blockIdx.y) * d_tiles + dt;
    const int64_t d0 = dtile * kTileD;
    if (d0 >= D) break;  // uniform per block
    T acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[i][q] = T(0);
    int slot = 0;
    for (int64_t m = 0; m < a.M; ++m) {
      if (m == n) continue;
      const int64_t p = modal_pair_index(m, n, a.M);
      const T* __restrict__ gm = g + m * N * D;
      for (int64_t t0 = band_lo; t0 < band_hi; t0 += kChunk, ++slot) {
        const int clen = static_cast<int>(gs_min(kChunk, band_hi - t0));
        T* __restrict__ cft = cf + (cached ? slot : 0) * kChunk * kLd;
        __syncthreads();  // the previous chunk is done with gsrc (and an uncached cf, s_*)
        stage_chunk<T, T>(gm, t0, clen, d0, D, tid, vec, gsrc);
        if (!cached || dt == 0) {  // uniform per block
          load_windows<kChunk>(a, t0, clen, tid, s_lo, s_hi, s_eb, s_band, s + m * N + t0, s_s);
          __syncthreads();
          stage_col_coefs(a, w, s_lo, s_hi, s_eb, s_band, s_s, p, t0, c0, ncols, tid,
                          [&](int k, int r, T c) { cft[k * kLd + r] = c; });
        }
        __syncthreads();
        if (th_any) chunk_fma<true>(acc, gsrc, cft, kLd, ry, dx, th_lo, th_hi, t0, clen);
      }
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = 4 * ry + i;
      const bool valid = r < ncols;
      const int64_t col = n * N + c0 + r;
      T dot = T(0);
      if (valid) {
        const T sc = s[col];
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int64_t d = d0 + 4 * dx + q;
          if (d < D) {
            if (gx != nullptr) gx[col * D + d] = sc * acc[i][q];
            if (colpart != nullptr) dot += x[col * D + d] * acc[i][q];
          }
        }
      }
      if (colpart != nullptr) {  // uniform: every lane shuffles
        dot = group_sum(dot, kTileD / 4);
        if (valid && dx == 0) colpart[dtile * a.M * N + col] = dot;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward pass A on tensor cores, for 16-bit storage: window_spmm_cols_kernel's tiling and
// staging, the chunk product U[r][d] += sum_k cf[k][r] g[k][d] as wmma (cf read as a col-major
// A), then the same epilogue from an fp32 tile in shared memory: grad_x = s_c U and the column
// part of grad_norm, <x_c, U_c> over this feature tile, summed by 4 threads per column (16
// features each, then a fixed butterfly): deterministic.
template <typename scalar_t, typename tc_t>
__global__ void __launch_bounds__(kSpmmThreads)
    window_spmm_cols_tc_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                               const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                               scalar_t* __restrict__ gx, float* __restrict__ colpart, WindowArgs a, int64_t D) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using acc_t = float;
  __shared__ __align__(32) uint16_t cf[kChunk * kTcLdA];     // A^T: [k][r] (r = target column)
  __shared__ __align__(32) uint16_t gsrc[kChunk * kTcLdB];   // B: [k][d], bits of g
  __shared__ __align__(32) float out[kTileRows * kTcLdC];    // U, for the epilogue
  __shared__ int64_t c_lo[kTileRows], c_hi[kTileRows];
  __shared__ int64_t s_lo[kChunk], s_hi[kChunk], s_eb[kChunk], s_band[kChunk];
  __shared__ acc_t s_s[kChunk];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t n = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t c0 = (static_cast<int64_t>(blockIdx.x) - n * tiles) * kTileRows;
  const int64_t d0 = static_cast<int64_t>(blockIdx.y) * kTileD;
  const int ncols = static_cast<int>(gs_min(kTileRows, N - c0));
  load_col_windows<kTileRows>(a, c0, ncols, tid, c_lo, c_hi);
  __syncthreads();
  const int64_t band_lo = c_lo[0], band_hi = c_hi[ncols - 1];
  const int warp = tid >> 5;
  const int wr = (warp >> 1) * 16, wc = (warp & 1) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc0, acc1;
  wmma::fill_fragment(acc0, 0.0f);
  wmma::fill_fragment(acc1, 0.0f);

  for (int64_t m = 0; m < a.M; ++m) {
    if (m == n) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    const scalar_t* __restrict__ gm = g + m * N * D;
    for (int64_t t0 = band_lo; t0 < band_hi; t0 += kChunk) {
      const int clen = static_cast<int>(gs_min(kChunk, band_hi - t0));
      __syncthreads();  // the previous chunk is done with gsrc / cf / s_*
      stage_tile<kChunk, kTileD, kSpmmThreads>(gm, t0, clen, d0, D, tid, [&](int k, int dd, const scalar_t* v) {
        gsrc[k * kTcLdB + dd] = v != nullptr ? bits16(*v) : uint16_t(0);
      });
      load_windows<kChunk>(a, t0, clen, tid, s_lo, s_hi, s_eb, s_band, s + m * N + t0, s_s);
      __syncthreads();
      stage_col_coefs(a, w, s_lo, s_hi, s_eb, s_band, s_s, p, t0, c0, ncols, tid,
                      [&](int k, int r, acc_t c) { cf[k * kTcLdA + r] = bits16(static_cast<scalar_t>(c)); });
      __syncthreads();
      warp_chunk_mma<tc_t, wmma::col_major>(acc0, acc1, cf + wr, gsrc + wc);  // A[r][k] = cf[k][r]
    }
  }
  wmma::store_matrix_sync(out + wr * kTcLdC + wc, acc0, kTcLdC, wmma::mem_row_major);
  wmma::store_matrix_sync(out + wr * kTcLdC + wc + 16, acc1, kTcLdC, wmma::mem_row_major);
  __syncthreads();
  if (gx != nullptr) {
    for (int idx = tid; idx < kTileRows * kTileD; idx += kSpmmThreads) {
      const int r = idx / kTileD, dd = idx % kTileD;
      const int64_t d = d0 + dd;
      if (r >= ncols || d >= D) continue;
      const int64_t col = n * N + c0 + r;
      gx[col * D + d] = static_cast<scalar_t>(to_acc<acc_t>(s[col]) * out[r * kTcLdC + dd]);
    }
  }
  if (colpart != nullptr) {
    constexpr int kPerCol = kSpmmThreads / kTileRows;  // 4 threads per column, consecutive lanes
    static_assert(kPerCol == 4 && kTileD % kPerCol == 0, "colpart reduction layout");
    const int r = tid / kPerCol, part = tid % kPerCol;
    const int64_t col = n * N + c0 + r;
    acc_t dot = acc_t(0);
    if (r < ncols) {
      for (int dd = part * (kTileD / kPerCol); dd < (part + 1) * (kTileD / kPerCol); ++dd) {
        const int64_t d = d0 + dd;
        if (d < D) dot += to_acc<acc_t>(x[col * D + d]) * out[r * kTcLdC + dd];
      }
    }
    dot = group_sum(dot, kPerCol);  // uniform: every lane shuffles
    if (r < ncols && part == 0) colpart[static_cast<int64_t>(blockIdx.y) * a.M * N + col] = dot;
  }
#else
  __trap();
#endif
}

// ---------------------------------------------------------------------------------------------
// Pass B's dots of a 32-row tile (g rows gm[r * D + .], r < nrows) with a chunk of columns
// (xc[k * D + .], k < clen) over the features [f_begin, f_end), staged 32 at a time into gt / xt
// (row stride kDotD + 4; vec: 16-byte loads, scalar_t == acc_t only):
//   dots[i][j] = sum_d g[ry + 8i][d] * x[kx + 8j][d].
// Every thread of the block calls it (barriers).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void rows_chunk_dots(acc_t (&dots)[4][4], const scalar_t* __restrict__ gm, int nrows,
                                                const scalar_t* __restrict__ xc, int clen, int64_t f_begin,
                                                int64_t f_end, int64_t D, int tid, bool vec, acc_t* gt, acc_t* xt,
                                                int ry, int kx) {
  constexpr int kLd = kDotD + 4;
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) dots[i][j] = acc_t(0);
  for (int64_t f0 = f_begin; f0 < f_end; f0 += kDotD) {
    __syncthreads();  // the previous step is done with gt / xt
    bool staged = false;
    if constexpr (std::is_same<scalar_t, acc_t>::value) {
      if (vec) {  // all of a thread's 8 loads in flight before its stores
        VecTile<kTileRows, kDotD, kDotThreads, acc_t> gv, xv;
        gv.load(gm, 0, nrows, f0, D, tid);
        xv.load(xc, 0, clen, f0, D, tid);
        gv.store(gt, kLd, tid);
        xv.store(xt, kLd, tid);
        staged = true;
      }
    }
    if (!staged) {
      stage_tile<kTileRows, kDotD, kDotThreads>(gm, 0, nrows, f0, D, tid, [&](int r, int dd, const scalar_t* v) {
        gt[r * kLd + dd] = v != nullptr ? to_acc<acc_t>(*v) : acc_t(0);
      });
      stage_tile<kChunk, kDotD, kDotThreads>(xc, 0, clen, f0, D, tid, [&](int k, int dd, const scalar_t* v) {
        xt[k * kLd + dd] = v != nullptr ? to_acc<acc_t>(*v) : acc_t(0);
      });
    }
    __syncthreads();
#pragma unroll 2
    for (int dd = 0; dd < kDotD; dd += 4) {
      acc_t gv[4][4], xv[4][4];
#pragma unroll
      for (int i = 0; i < 4; ++i) load4(&gt[(ry + 8 * i) * kLd + dd], gv[i]);
#pragma unroll
      for (int j = 0; j < 4; ++j) load4(&xt[(kx + 8 * j) * kLd + dd], xv[j]);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j)
#pragma unroll
          for (int q = 0; q < 4; ++q) dots[i][j] += gv[i][q] * xv[j][q];
    }
  }
}

// Pass B's epilogue of one chunk for one thread: for each of its (row r, column k) pairs that is
// an edge e (t0 + r -> u0 + k of pair p): grad_a_e = s_r s_u dot_e into gw (per_edge, scalar_t)
// or tmp (relative, acc_t) when either is given, and rowsum[i] += a_e s_u dot_e when gs is needed.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void rows_chunk_epilogue(const acc_t (&dots)[4][4], acc_t (&rowsum)[4], const WindowArgs& a,
                                                    const scalar_t* __restrict__ w, scalar_t* __restrict__ gw,
                                                    acc_t* __restrict__ tmp, bool need_rowsum, const int64_t* r_lo,
                                                    const int64_t* r_hi, const int64_t* r_eb, const int64_t* r_band,
                                                    const acc_t* r_s, const acc_t* c_s, int64_t p, int64_t t0,
                                                    int64_t u0, int nrows, int clen, int ry, int kx) {
  const bool edge_grad = gw != nullptr || tmp != nullptr;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ry + 8 * i;
    if (r >= nrows) continue;
    const int64_t lo = r_lo[r], hi = r_hi[r];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int k = kx + 8 * j;
      const int64_t u = u0 + k;
      if (k >= clen || u < lo || u >= hi) continue;
      const acc_t sj = c_s[k], dot = dots[i][j];
      const int64_t e = r_eb[r] + p * r_band[r] + u;
      if (edge_grad) {
        const acc_t v = r_s[r] * sj * dot;
        if (gw != nullptr) gw[e] = static_cast<scalar_t>(v);
        else tmp[e] = v;
      }
      if (need_rowsum) rowsum[i] += to_acc<acc_t>(w[edge_slot(a, e, p, t0 + r, u)]) * sj * dot;
    }
  }
}

// Pass B's grad_norm of the tile's rows: gs[row] = sum_dc colpart[dc][row] (fixed order) + the
// row part, reduced over the 8 column-threads of rows ry + 8i with a fixed butterfly.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void rows_store_gs(const acc_t (&rowsum)[4], const acc_t* __restrict__ colpart,
                                              int64_t n_colpart, scalar_t* __restrict__ gs, const WindowArgs& a,
                                              int64_t m, int64_t t0, int nrows, int ry, int kx) {
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const acc_t part = group_sum(rowsum[i], 8);  // the 8 column-threads of rows ry + 8i
    const int r = ry + 8 * i;
    if (kx == 0 && r < nrows) {
      const int64_t row = m * a.N + t0 + r;
      acc_t total = acc_t(0);
      for (int64_t dc = 0; dc < n_colpart; ++dc) total += colpart[dc * a.M * a.N + row];
      gs[row] = static_cast<scalar_t>(total + part);
    }
  }
}

// Backward pass B, over rows r = m*N + t: dot_e = <g_r, x_c> for each edge e = (r, c = n*N + u).
//   edge_grad: grad_a_e = s_r s_c dot_e (per_edge: gw[e] in scalar_t; relative: tmp[e] in acc_t).
//   gs: grad_s_r = sum_{dc} colpart[dc][r] + sum_e a_e s_c dot_e.
// grid: M * ceil(N / kTileRows), block: kDotThreads.
// One 32-row tile of pass B (the kernels below and window_spmm_rows_staged_kernel): per chunk of
// the band, the dots (rows_chunk_dots) and their epilogue; then grad_norm of the rows. The
// shared arrays come from the kernel.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void rows_tile(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                                          const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                                          scalar_t* __restrict__ gw, acc_t* __restrict__ tmp,
                                          const acc_t* __restrict__ colpart, int64_t n_colpart,
                                          scalar_t* __restrict__ gs, const WindowArgs& a, int64_t D, bool vec,
                                          acc_t* gt, acc_t* xt, int64_t* r_lo, int64_t* r_hi, int64_t* r_eb,
                                          int64_t* r_band, acc_t* r_s, acc_t* c_s) {
  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t m = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t t0 = (static_cast<int64_t>(blockIdx.x) - m * tiles) * kTileRows;
  const int nrows = static_cast<int>(gs_min(kTileRows, N - t0));
  load_windows<kTileRows>(a, t0, nrows, tid, r_lo, r_hi, r_eb, r_band, s + m * N + t0, r_s);
  __syncthreads();
  const int64_t band_lo = r_lo[0], band_hi = r_hi[nrows - 1];
  const int ry = tid >> 3, kx = tid & 7;  // rows ry + 8i, columns kx + 8j
  const scalar_t* __restrict__ gm = g + (m * N + t0) * D;
  acc_t rowsum[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};

  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    for (int64_t u0 = band_lo; u0 < band_hi; u0 += kChunk) {
      const int clen = static_cast<int>(gs_min(kChunk, band_hi - u0));
      const scalar_t* __restrict__ xc = x + (n * N + u0) * D;
      __syncthreads();  // the previous chunk's epilogue is done with c_s
      if (tid < kChunk) c_s[tid] = tid < clen ? to_acc<acc_t>(s[n * N + u0 + tid]) : acc_t(0);
      acc_t dots[4][4];
      rows_chunk_dots(dots, gm, nrows, xc, clen, 0, D, D, tid, vec, gt, xt, ry, kx);
      __syncthreads();  // c_s visible (also when D == 0)
      rows_chunk_epilogue(dots, rowsum, a, w, gw, tmp, gs != nullptr, r_lo, r_hi, r_eb, r_band, r_s, c_s, p, t0, u0,
                          nrows, clen, ry, kx);
    }
  }
  if (gs != nullptr) rows_store_gs(rowsum, colpart, n_colpart, gs, a, m, t0, nrows, ry, kx);
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kDotThreads)
    window_spmm_rows_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                            const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                            scalar_t* __restrict__ gw, acc_t* __restrict__ tmp, const acc_t* __restrict__ colpart,
                            int64_t n_colpart, scalar_t* __restrict__ gs, WindowArgs a, int64_t D) {
  __shared__ __align__(16) acc_t gt[kTileRows * (kDotD + 4)];  // [r][d], rows padded
  __shared__ __align__(16) acc_t xt[kChunk * (kDotD + 4)];     // [k][d]
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];
  __shared__ acc_t r_s[kTileRows];
  __shared__ acc_t c_s[kChunk];
  rows_tile<scalar_t, acc_t>(g, x, w, s, gw, tmp, colpart, n_colpart, gs, a, D, /*vec=*/false, gt, xt, r_lo, r_hi, r_eb,
                             r_band, r_s, c_s);
}

// Backward pass B, staged (fp32 / fp64; with GRAPHSMILE_CUDA_FFMA_DTILES > 0, as the staged
// forward and pass A): the kernel above with the g and x tiles of each 32-feature step staged by
// 16-byte loads (vec: D % 4 == 0 and g, x 16-byte aligned), all of a thread's 8 loads issued
// before its shared-memory stores: the first GPU run found this kernel latency-bound (1.16 ms at
// fp32 D = 512 16x3200; 44% SM, 20% DRAM, 3% L1 hits), waiting on one scalar load at a time.
// Same dots in the same order: the same bits. Without vec it is the kernel above.
// Occupancy: fp32 at least 10 blocks (20 warps) per SM: 96 registers, no spills on sm_90
// (unbounded, the batched loads took 115 and 8 blocks; 12 blocks spilled; the original kernel has
// 80 registers, 12 blocks); fp64 6.
template <typename T>
constexpr int kRowsMinBlocks = sizeof(T) == 4 ? 10 : 6;

template <typename T>
__global__ void __launch_bounds__(kDotThreads, kRowsMinBlocks<T>)
    window_spmm_rows_staged_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ w,
                                   const T* __restrict__ s, T* __restrict__ gw, T* __restrict__ tmp,
                                   const T* __restrict__ colpart, int64_t n_colpart, T* __restrict__ gs, WindowArgs a,
                                   int64_t D, bool vec) {
  __shared__ __align__(16) T gt[kTileRows * (kDotD + 4)];
  __shared__ __align__(16) T xt[kChunk * (kDotD + 4)];
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];
  __shared__ T r_s[kTileRows];
  __shared__ T c_s[kChunk];
  rows_tile<T, T>(g, x, w, s, gw, tmp, colpart, n_colpart, gs, a, D, vec, gt, xt, r_lo, r_hi, r_eb, r_band, r_s, c_s);
}

// ---------------------------------------------------------------------------------------------
// GRAPHSMILE_CUDA_ROWS_FSPLIT=auto: the split pass B's 32-feature steps per block for a pass B of
// `row_tiles` blocks over D features (0: unsplit). Unsplit from kRowsAutoMaxTiles row tiles on
// (about 4 blocks per SM of a 132-SM GPU already); below, about kRowsAutoBlocks blocks in all,
// each at least one 32-feature step: at 16 IEMOCAP-length dialogues (N = 759, 48 row tiles) and
// D = 512, 16 splits of one step (768 blocks, one wave), against 48 blocks walking all of D
// unsplit. Constants only, not the device's SM count: the same bits on every GPU. (Host code,
// shared by the launcher and the emulator.)
constexpr int64_t kRowsAutoMaxTiles = 512;
constexpr int64_t kRowsAutoBlocks = 1024;

inline int64_t rows_auto_feature_steps(int64_t row_tiles, int64_t D) {
  const int64_t steps = (D + kDotD - 1) / kDotD;
  if (row_tiles <= 0 || row_tiles >= kRowsAutoMaxTiles || steps <= 1) return 0;
  const int64_t want = (kRowsAutoBlocks + row_tiles - 1) / row_tiles;
  const int64_t splits = want < steps ? want : steps;
  return splits <= 1 ? 0 : (steps + splits - 1) / splits;
}

// Backward pass B split over the features (fp32 / fp64; GRAPHSMILE_CUDA_ROWS_FSPLIT = f > 0): for
// small batches. Pass B has one block per 32-row tile (48 at 16 IEMOCAP-length dialogues, on a
// GPU of 132 SMs), each walking all of D. Here block (tile, split) computes the dots of its tile
// over features [split * f * 32, (split + 1) * f * 32) and stores them raw, per edge, in
// part[split * E + e] (E-sized per split: never [E, D]); window_spmm_rows_finish_kernel then sums
// each edge's partials in split order and does pass B's epilogue. Deterministic (fixed orders);
// the bits differ from the unsplit kernel's (another association of each dot's sum).
// grid: (M * ceil(N / kTileRows), splits), block: kDotThreads.
template <typename T>
__global__ void __launch_bounds__(kDotThreads, kRowsMinBlocks<T>)
    window_spmm_rows_split_kernel(const T* __restrict__ g, const T* __restrict__ x, T* __restrict__ part, int64_t E,
                                  WindowArgs a, int64_t D, int64_t f_steps, bool vec) {
  __shared__ __align__(16) T gt[kTileRows * (kDotD + 4)];
  __shared__ __align__(16) T xt[kChunk * (kDotD + 4)];
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t m = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t t0 = (static_cast<int64_t>(blockIdx.x) - m * tiles) * kTileRows;
  const int nrows = static_cast<int>(gs_min(kTileRows, N - t0));
  const int64_t f_begin = static_cast<int64_t>(blockIdx.y) * f_steps * kDotD;
  const int64_t f_end = gs_min(D, f_begin + f_steps * kDotD);
  T* __restrict__ out = part + static_cast<int64_t>(blockIdx.y) * E;
  load_windows<kTileRows, T, T>(a, t0, nrows, tid, r_lo, r_hi, r_eb, r_band);
  __syncthreads();
  const int64_t band_lo = r_lo[0], band_hi = r_hi[nrows - 1];
  const int ry = tid >> 3, kx = tid & 7;
  const T* __restrict__ gm = g + (m * N + t0) * D;

  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    for (int64_t u0 = band_lo; u0 < band_hi; u0 += kChunk) {
      const int clen = static_cast<int>(gs_min(kChunk, band_hi - u0));
      const T* __restrict__ xc = x + (n * N + u0) * D;
      T dots[4][4];
      rows_chunk_dots(dots, gm, nrows, xc, clen, f_begin, f_end, D, tid, vec, gt, xt, ry, kx);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = ry + 8 * i;
        if (r >= nrows) continue;
        const int64_t lo = r_lo[r], hi = r_hi[r];
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int k = kx + 8 * j;
          const int64_t u = u0 + k;
          if (k >= clen || u < lo || u >= hi) continue;
          out[r_eb[r] + p * r_band[r] + u] = dots[i][j];
        }
      }
    }
  }
}

// The split pass B's epilogue, one warp per row r = m*N + t, lanes over the row's edges (as the
// norm kernels): dot_e = sum over splits of part[split * E + e] (split order); grad_a_e =
// s_r s_c dot_e into gw (per_edge) or tmp (relative); gs_r = sum_dc colpart[dc][r] + the row's
// sum_e a_e s_c dot_e (fixed butterfly).
template <typename T>
__global__ void __launch_bounds__(kNormWarps * 32)
    window_spmm_rows_finish_kernel(const T* __restrict__ part, int64_t splits, int64_t E, const T* __restrict__ w,
                                   const T* __restrict__ s, T* __restrict__ gw, T* __restrict__ tmp,
                                   const T* __restrict__ colpart, int64_t n_colpart, T* __restrict__ gs, WindowArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kNormWarps + (threadIdx.x >> 5);
  if (row >= a.M * a.N) return;  // uniform per warp
  const int64_t m = row / a.N, t = row - m * a.N;
  const RowWindow rw = row_window(a, t);
  const T sr = s[row];
  T rowsum = T(0);
  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    const int64_t e0 = rw.ebase + p * rw.band;
    for (int64_t u = rw.lo + lane; u < rw.hi; u += 32) {
      const int64_t e = e0 + u;
      T dot = T(0);
      for (int64_t sp = 0; sp < splits; ++sp) dot += part[sp * E + e];
      const T sc = s[n * a.N + u];
      if (gw != nullptr) gw[e] = sr * sc * dot;
      else if (tmp != nullptr) tmp[e] = sr * sc * dot;
      if (gs != nullptr) rowsum += w[edge_slot(a, e, p, t, u)] * sc * dot;
    }
  }
  if (gs != nullptr) {
    rowsum = group_sum(rowsum, 32);
    if (lane == 0) {
      T total = T(0);
      for (int64_t dc = 0; dc < n_colpart; ++dc) total += colpart[dc * a.M * a.N + row];
      gs[row] = total + rowsum;
    }
  }
}

// Backward pass B on tensor cores, for 16-bit storage: the per-edge dots of a 32-row tile and a
// 32-column chunk, G[32 x D] @ X_chunk^T[D x 32], as wmma over D in steps of kTcDotD (x read as a
// col-major B), stored to shared memory; then window_spmm_rows_kernel's epilogue with 4 threads
// per row (columns kx + 4j) and a fixed 4-lane butterfly for the row part of grad_norm.
// grid: M * ceil(N / kTileRows), block: kSpmmThreads (4 warps, one 16 x 16 dot tile each).
constexpr int kTcDotD = 32;                 // features staged per step
constexpr int kTcLdDot = kTcDotD + 8;       // gt / xt row stride (elements)
constexpr int kTcLdDots = kChunk + 4;       // fp32 dot tile row stride

template <typename scalar_t, typename tc_t>
__global__ void __launch_bounds__(kSpmmThreads)
    window_spmm_rows_tc_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ x,
                               const scalar_t* __restrict__ w, const scalar_t* __restrict__ s,
                               scalar_t* __restrict__ gw, float* __restrict__ tmp, const float* __restrict__ colpart,
                               int64_t n_colpart, scalar_t* __restrict__ gs, WindowArgs a, int64_t D) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using acc_t = float;
  __shared__ __align__(32) uint16_t gt[kTileRows * kTcLdDot];  // A: [r][d], bits of g
  __shared__ __align__(32) uint16_t xt[kChunk * kTcLdDot];     // B^T: [k][d], bits of x
  __shared__ __align__(32) float dots_s[kTileRows * kTcLdDots];
  __shared__ int64_t r_lo[kTileRows], r_hi[kTileRows], r_eb[kTileRows], r_band[kTileRows];
  __shared__ acc_t r_s[kTileRows];
  __shared__ acc_t c_s[kChunk];

  const int tid = threadIdx.x;
  const int64_t N = a.N;
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  const int64_t m = static_cast<int64_t>(blockIdx.x) / tiles;
  const int64_t t0 = (static_cast<int64_t>(blockIdx.x) - m * tiles) * kTileRows;
  const int nrows = static_cast<int>(gs_min(kTileRows, N - t0));
  load_windows<kTileRows>(a, t0, nrows, tid, r_lo, r_hi, r_eb, r_band, s + m * N + t0, r_s);
  __syncthreads();
  const int64_t band_lo = r_lo[0], band_hi = r_hi[nrows - 1];
  const int warp = tid >> 5;
  const int wr = (warp >> 1) * 16, wk = (warp & 1) * 16;  // this warp's rows and chunk columns
  const int ry = tid >> 2, kx = tid & 3;                   // epilogue: row ry, columns kx + 4j
  const bool edge_grad = gw != nullptr || tmp != nullptr;
  const scalar_t* __restrict__ gm = g + (m * N + t0) * D;
  acc_t rowsum = acc_t(0);

  for (int64_t n = 0; n < a.M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, a.M);
    for (int64_t u0 = band_lo; u0 < band_hi; u0 += kChunk) {
      const int clen = static_cast<int>(gs_min(kChunk, band_hi - u0));
      const scalar_t* __restrict__ xc = x + (n * N + u0) * D;
      __syncthreads();  // the previous chunk's epilogue is done with c_s / dots_s
      if (tid < kChunk) c_s[tid] = tid < clen ? to_acc<acc_t>(s[n * N + u0 + tid]) : acc_t(0);
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
      for (int64_t f0 = 0; f0 < D; f0 += kTcDotD) {
        __syncthreads();  // the previous step's products are done with gt / xt
        stage_tile<kTileRows, kTcDotD, kSpmmThreads>(gm, 0, nrows, f0, D, tid, [&](int r, int dd, const scalar_t* v) {
          gt[r * kTcLdDot + dd] = v != nullptr ? bits16(*v) : uint16_t(0);
        });
        stage_tile<kChunk, kTcDotD, kSpmmThreads>(xc, 0, clen, f0, D, tid, [&](int k, int dd, const scalar_t* v) {
          xt[k * kTcLdDot + dd] = v != nullptr ? bits16(*v) : uint16_t(0);
        });
        __syncthreads();
#pragma unroll
        for (int dd = 0; dd < kTcDotD; dd += 16) {
          // B[d][k] = xt[k][d]: col-major with leading dimension kTcLdDot
          wmma::fragment<wmma::matrix_a, 16, 16, 16, tc_t, wmma::row_major> fa;
          wmma::fragment<wmma::matrix_b, 16, 16, 16, tc_t, wmma::col_major> fb;
          wmma::load_matrix_sync(fa, reinterpret_cast<const tc_t*>(gt + wr * kTcLdDot + dd), kTcLdDot);
          wmma::load_matrix_sync(fb, reinterpret_cast<const tc_t*>(xt + wk * kTcLdDot + dd), kTcLdDot);
          wmma::mma_sync(acc, fa, fb, acc);
        }
      }
      wmma::store_matrix_sync(dots_s + wr * kTcLdDots + wk, acc, kTcLdDots, wmma::mem_row_major);
      __syncthreads();  // dots_s and c_s visible (also when D == 0)
      if (ry < nrows) {
        const int64_t lo = r_lo[ry], hi = r_hi[ry];
#pragma unroll
        for (int j = 0; j < kChunk / 4; ++j) {
          const int k = kx + 4 * j;
          const int64_t u = u0 + k;
          if (k >= clen || u < lo || u >= hi) continue;
          const acc_t sj = c_s[k], dot = dots_s[ry * kTcLdDots + k];
          const int64_t e = r_eb[ry] + p * r_band[ry] + u;
          if (edge_grad) {
            const acc_t v = r_s[ry] * sj * dot;
            if (gw != nullptr) gw[e] = static_cast<scalar_t>(v);
            else tmp[e] = v;
          }
          if (gs != nullptr) rowsum += to_acc<acc_t>(w[edge_slot(a, e, p, t0 + ry, u)]) * sj * dot;
        }
      }
    }
  }
  if (gs != nullptr) {
    const acc_t part = group_sum(rowsum, 4);  // the 4 column-threads of row ry (uniform)
    if (kx == 0 && ry < nrows) {
      const int64_t row = m * N + t0 + ry;
      acc_t total = acc_t(0);
      for (int64_t dc = 0; dc < n_colpart; ++dc) total += colpart[dc * a.M * N + row];
      gs[row] = static_cast<scalar_t>(total + part);
    }
  }
#else
  __trap();
#endif
}

}  // namespace gpu
}  // namespace graphsmile
