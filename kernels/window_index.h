// Index arithmetic of graphsmile's two graph structures, shared by the CPU kernels, the CUDA
// kernels and (mirrored in Python) the reference implementation. No torch headers: this file
// compiles with plain g++ and with nvcc.
//
// Windowed cross-modal edges (SPEC 2). For utterance j of a dialogue of length L:
//   lo(j) = 0 if win_p == -1 else max(0, j - win_p)
//   hi(j) = L if win_f == -1 else min(L, j + win_f + 1)        (exclusive)
// Edges are enumerated dialogue-major, then modality pair p in permutation order, then row j,
// then column k ascending. An edge id is therefore
//   edge_base[b] + p * band_count(L_b) + row_start(j) + (k - lo(j))
// where row_start(j) = sum_{t<j} (hi(t) - lo(t)) has the closed form below, so kernels never
// need an edge list.
//
// Sentiment-shift pairs (SPEC 4). A dialogue is cut into chunks of shift_win utterances (the
// last holds the remainder; shift_win == -1 means one chunk). Pair (i, j) of chunk c with start
// cs and size sz has id pair_base[b] + c * shift_win^2 + (i - cs) * sz + (j - cs), because every
// chunk before the last is full.
#pragma once
#include <stdint.h>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GS_HD __host__ __device__ __forceinline__
#else
#define GS_HD inline
#endif

namespace graphsmile {

GS_HD int64_t gs_min(int64_t a, int64_t b) { return a < b ? a : b; }
GS_HD int64_t gs_max(int64_t a, int64_t b) { return a > b ? a : b; }

// First column of row j's window (inclusive).
GS_HD int64_t window_lo(int64_t j, int64_t win_p) {
  return win_p < 0 ? 0 : gs_max(0, j - win_p);
}
// One past the last column of row j's window.
GS_HD int64_t window_hi(int64_t j, int64_t L, int64_t win_f) {
  return win_f < 0 ? L : gs_min(L, j + win_f + 1);
}
// Rows t whose window contains column k: t in [tlo(k), thi(k)). (The transposed band.)
GS_HD int64_t window_row_lo(int64_t k, int64_t win_f) {
  return win_f < 0 ? 0 : gs_max(0, k - win_f);
}
GS_HD int64_t window_row_hi(int64_t k, int64_t L, int64_t win_p) {
  return win_p < 0 ? L : gs_min(L, k + win_p + 1);
}

// sum_{t<j} (hi(t) - lo(t)) in O(1).
GS_HD int64_t window_row_start(int64_t j, int64_t L, int64_t win_p, int64_t win_f) {
  int64_t sum_hi;
  if (win_f < 0) {
    sum_hi = j * L;
  } else {
    // t + win_f + 1 <= L  <=>  t <= L - win_f - 1: the first `cnt` rows are not clipped by L.
    int64_t cnt = gs_min(gs_max(L - win_f, 0), j);
    sum_hi = cnt * (win_f + 1) + cnt * (cnt - 1) / 2 + (j - cnt) * L;
  }
  int64_t sum_lo = 0;
  if (win_p >= 0) {
    // lo(t) = t - win_p for t > win_p, else 0.
    int64_t q = gs_max(0, j - 1 - win_p);
    sum_lo = q * (q + 1) / 2;
  }
  return sum_hi - sum_lo;
}

// c(L): the number of edges of one modality pair in a dialogue of length L.
GS_HD int64_t window_band_count(int64_t L, int64_t win_p, int64_t win_f) {
  return window_row_start(L, L, win_p, win_f);
}

// Index of the ordered modality pair (m, n), m != n, in itertools.permutations(range(M), 2).
GS_HD int64_t modal_pair_index(int64_t m, int64_t n, int64_t num_modal) {
  return m * (num_modal - 1) + n - (n > m ? 1 : 0);
}

// How edge weights are addressed (SPEC 5).
enum WeightModeId : int64_t {  // (the public API's enum class is graphsmile::WeightMode)
  kPerEdge = 0,   // entry `edge id` of a vector
  kRelative = 1,  // entry [p, k - j + win_p] of a [M*(M-1), win_p + win_f + 1] table
};

GS_HD int64_t weight_index(int64_t mode, int64_t edge_id, int64_t pair, int64_t delta,
                           int64_t win_p, int64_t win_f) {
  return mode == kRelative ? pair * (win_p + win_f + 1) + delta + win_p : edge_id;
}

// Shift pairs: chunk size of a dialogue of length L (shift_win == -1: the whole dialogue).
GS_HD int64_t shift_chunk(int64_t L, int64_t shift_win) {
  return shift_win < 0 ? L : shift_win;
}
// Number of pairs of a dialogue of length L.
GS_HD int64_t shift_pair_count(int64_t L, int64_t shift_win) {
  int64_t w = shift_chunk(L, shift_win);
  if (w <= 0) return 0;
  int64_t full = L / w, rest = L % w;
  return full * w * w + rest * rest;
}

}  // namespace graphsmile
