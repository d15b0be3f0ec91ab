// CPU kernels of windowed cross-modal propagation (SPEC 3 and 5).
//
//   window_norm:  s_i = d_i^{-1/2} (0 where d_i == 0), d_i = sum_{e=(i,.)} a_e
//   window_spmm:  y_i = s_i * sum_{e=(i,j)} a_e s_j x_j
// and their backward ops. Each output row is owned by one thread (no atomics, deterministic for
// any thread count); edge ids come from the closed forms of kernels/window_index.h.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>
#include <cmath>
#include <vector>

#include "../window_common.h"

namespace graphsmile {
namespace {

// Maps a packed utterance index to its dialogue; used at the start of each parallel range.
inline int64_t dialogue_of(const WindowMeta& meta, int64_t t) {
  auto it = std::upper_bound(meta.start.begin(), meta.start.end(), t);
  return static_cast<int64_t>(it - meta.start.begin()) - 1;
}

// Calls fn(b, j) for the utterances t in [t0, t1) in order, tracking the dialogue b.
template <typename F>
inline void for_each_utterance(const WindowMeta& meta, int64_t t0, int64_t t1, F&& fn) {
  if (t0 >= t1) return;
  int64_t b = dialogue_of(meta, t0);
  for (int64_t t = t0; t < t1; ++t) {
    while (t >= meta.start[b] + meta.length[b]) ++b;
    fn(b, t - meta.start[b]);
  }
}

// Grain sizes: rows per task, so that one task does at least ~16k multiply-adds.
inline int64_t row_grain(int64_t work_per_row) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_row));
}

// s = d^{-1/2} of row (m, dialogue b, utterance j), d = the sum of the weights of its edges
// [lo, hi) in every other modality, in acc_t; pow(d, -0.5) with the original's masked
// assignment: +inf (d == 0) becomes 0; d < 0 is NaN.
template <typename acc_t, typename scalar_t>
acc_t row_norm(const scalar_t* wd, const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode,
               int64_t m, int64_t b, int64_t j, int64_t lo, int64_t hi) {
  const int64_t L = meta.length[b];
  acc_t d = 0;
  for (int64_t n = 0; n < M; ++n) {
    if (n == m) continue;
    const int64_t p = modal_pair_index(m, n, M);
    const int64_t e0 = meta.edge_base[b] + p * meta.band[b] + window_row_start(j, L, wp, wf) - lo;
    for (int64_t k = lo; k < hi; ++k) d += static_cast<acc_t>(wd[weight_index(mode, e0 + k, p, k - j, wp, wf)]);
  }
  return d == acc_t(0) ? acc_t(0) : acc_t(1) / std::sqrt(d);
}

template <typename scalar_t>
at::Tensor window_norm_kernel(const at::Tensor& w_, const WindowMeta& meta, int64_t M, int64_t wp,
                              int64_t wf, int64_t mode) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor w = w_.contiguous();
  const scalar_t* wd = w.data_ptr<scalar_t>();
  const int64_t N = meta.num_nodes;
  at::Tensor s = at::empty({M * N}, w.options());
  scalar_t* sd = s.data_ptr<scalar_t>();
  at::parallel_for(0, M * N, row_grain(meta.max_len), [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0 / N; m <= (r1 - 1) / N; ++m) {
      const int64_t t0 = std::max(r0, m * N) - m * N, t1 = std::min(r1, (m + 1) * N) - m * N;
      for_each_utterance(meta, t0, t1, [&](int64_t b, int64_t j) {
        const int64_t lo = window_lo(j, wp), hi = window_hi(j, meta.length[b], wf);
        sd[m * N + meta.start[b] + j] = static_cast<scalar_t>(row_norm<acc_t>(wd, meta, M, wp, wf, mode, m, b, j, lo, hi));
      });
    }
  });
  return s;
}

// Sums per-edge values into the relative table: entry (p, delta) = sum over the edges with that
// pair and offset, in a fixed order (deterministic).
template <typename acc_t, typename scalar_t>
void reduce_relative(const acc_t* per_edge, scalar_t* out, const WindowMeta& meta, int64_t M, int64_t wp,
                     int64_t wf) {
  const int64_t W = wp + wf + 1, P = M * (M - 1);
  at::parallel_for(0, P * W, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t p = q / W, delta = q % W - wp;
      acc_t sum = 0;
      for (int64_t b = 0; b < meta.num_dialogues; ++b) {
        const int64_t L = meta.length[b];
        const int64_t base = meta.edge_base[b] + p * meta.band[b];
        // rows j whose window holds k = j + delta: 0 <= j + delta < L
        for (int64_t j = std::max<int64_t>(0, -delta); j < std::min(L, L - delta); ++j) {
          const int64_t lo = window_lo(j, wp);
          sum += per_edge[base + window_row_start(j, L, wp, wf) + (j + delta - lo)];
        }
      }
      out[q] = static_cast<scalar_t>(sum);
    }
  });
}

template <typename scalar_t>
at::Tensor window_norm_backward_kernel(const at::Tensor& gs_, const at::Tensor& s_, const at::Tensor& w,
                                       const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor gs = gs_.contiguous(), s = s_.contiguous();
  const scalar_t* gsd = gs.data_ptr<scalar_t>();
  const scalar_t* sd = s.data_ptr<scalar_t>();
  const at::Tensor wc = w.contiguous();
  const scalar_t* wd = wc.data_ptr<scalar_t>();
  constexpr bool kRecompute = sizeof(scalar_t) < sizeof(acc_t);
  const int64_t N = meta.num_nodes;
  at::Tensor gw = at::zeros_like(w, at::MemoryFormat::Contiguous);
  std::vector<acc_t> per_edge(mode == kRelative ? meta.num_edges : 0);
  scalar_t* gwd = gw.data_ptr<scalar_t>();
  // ds_i/da_e = -0.5 * d_i^{-3/2} = -0.5 * s_i^3 for every edge e leaving row i (0 where s_i = 0,
  // as the original's masked assignment gives).
  at::parallel_for(0, M * N, row_grain(meta.max_len), [&](int64_t r0, int64_t r1) {
    for (int64_t m = r0 / N; m <= (r1 - 1) / N; ++m) {
      const int64_t t0 = std::max(r0, m * N) - m * N, t1 = std::min(r1, (m + 1) * N) - m * N;
      for_each_utterance(meta, t0, t1, [&](int64_t b, int64_t j) {
        const int64_t r = m * N + meta.start[b] + j;
        const int64_t L = meta.length[b];
        const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
        // fp16/bf16: s recomputed from the weights in acc_t, not read rounded: -0.5 s^3 would
        // triple its rounding error (up to 1.5 ulp); so the gradient is rounded once. (fp32/fp64:
        // the stored s has exactly these bits.)
        const acc_t si = kRecompute ? row_norm<acc_t>(wd, meta, M, wp, wf, mode, m, b, j, lo, hi)
                                    : static_cast<acc_t>(sd[r]);
        const acc_t v = acc_t(-0.5) * si * si * si * static_cast<acc_t>(gsd[r]);
        for (int64_t n = 0; n < M; ++n) {
          if (n == m) continue;
          const int64_t p = modal_pair_index(m, n, M);
          const int64_t e0 = meta.edge_base[b] + p * meta.band[b] + window_row_start(j, L, wp, wf) - lo;
          if (mode == kRelative) {
            for (int64_t k = lo; k < hi; ++k) per_edge[e0 + k] = v;
          } else {
            for (int64_t k = lo; k < hi; ++k) gwd[e0 + k] = static_cast<scalar_t>(v);
          }
        }
      });
    }
  });
  if (mode == kRelative) reduce_relative(per_edge.data(), gwd, meta, M, wp, wf);
  return gw;
}

// sum_d a[d] * b[d] with kDotLanes independent partial sums added pairwise at the end. A single
// running sum cannot be vectorised without -ffast-math (the compiler may not reorder the
// additions); independent lanes can, and the fixed order gives the same result on every run.
constexpr int kDotLanes = 16;

template <typename scalar_t>
inline scalar_t lane_dot(const scalar_t* a, const scalar_t* b, int64_t D) {
  scalar_t lane[kDotLanes] = {};
  int64_t d = 0;
  for (; d + kDotLanes <= D; d += kDotLanes)
    for (int l = 0; l < kDotLanes; ++l) lane[l] += a[d + l] * b[d + l];
  for (int l = 0; d < D; ++d, ++l) lane[l] += a[d] * b[d];
  for (int width = kDotLanes / 2; width > 0; width /= 2)
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  return lane[0];
}

// ---- band tiles through BLAS (fp32 and fp64; half and bfloat16 through fp32) -----------------
//
// A tile of R consecutive target rows of one dialogue needs only the contiguous band of source
// rows [lo(j0), hi(j1 - 1)) of the other modality. Writing the tile's normalised weights as a
// dense [R, band] block (zeros outside each row's window) turns the tile into one small GEMM
// that runs at BLAS speed; with win 17/17 and R = kTileRows = 16 the block holds about 1.4x the
// tile's edges, which costs less than the gathers of an edge-by-edge loop. Each tile owns its
// output rows: no atomics and the same result for any thread count.
struct Tile {
  int64_t m, b, j0, j1;  // modality, dialogue, rows [j0, j1) of that dialogue
};

constexpr int64_t kTileRows = 16;

std::vector<Tile> make_tiles(const WindowMeta& meta, int64_t M) {
  std::vector<Tile> tiles;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t b = 0; b < meta.num_dialogues; ++b)
      for (int64_t j0 = 0; j0 < meta.length[b]; j0 += kTileRows)
        tiles.push_back({m, b, j0, std::min(meta.length[b], j0 + kTileRows)});
  return tiles;
}

template <typename scalar_t>
inline at::Tensor blob(const scalar_t* p, int64_t rows, int64_t cols, const at::TensorOptions& opt) {
  return at::from_blob(const_cast<scalar_t*>(p), {rows, cols}, opt);
}

template <typename scalar_t>
at::Tensor window_spmm_gemm(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& s_,
                            const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  const at::Tensor x = x_.contiguous(), w = w_.contiguous(), s = s_.contiguous();
  const int64_t N = meta.num_nodes, D = x.size(1);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (y.numel() == 0) return y;
  const scalar_t* xd = x.data_ptr<scalar_t>();
  const scalar_t* wd = w.data_ptr<scalar_t>();
  const scalar_t* sd = s.data_ptr<scalar_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();
  const auto opt = x.options();
  const std::vector<Tile> tiles = make_tiles(meta, M);
  at::parallel_for(0, static_cast<int64_t>(tiles.size()), 1, [&](int64_t q0, int64_t q1) {
    std::vector<scalar_t> coef;
    for (int64_t q = q0; q < q1; ++q) {
      const Tile& tl = tiles[q];
      const int64_t L = meta.length[tl.b], sb = meta.start[tl.b], R = tl.j1 - tl.j0;
      const int64_t r0 = tl.m * N + sb + tl.j0;
      at::Tensor yv = blob(yd + r0 * D, R, D, opt);
      bool first = true;
      for (int64_t n = 0; n < M; ++n) {
        if (n == tl.m) continue;
        const int64_t p = modal_pair_index(tl.m, n, M);
        const int64_t cb0 = window_lo(tl.j0, wp), cb1 = window_hi(tl.j1 - 1, L, wf), Wb = cb1 - cb0;
        const int64_t c0 = n * N + sb;
        coef.assign(R * Wb, scalar_t(0));
        for (int64_t j = tl.j0; j < tl.j1; ++j) {
          const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
          const int64_t e0 = meta.edge_base[tl.b] + p * meta.band[tl.b] + window_row_start(j, L, wp, wf) - lo;
          scalar_t* crow = coef.data() + (j - tl.j0) * Wb - cb0;
          for (int64_t k = lo; k < hi; ++k) crow[k] = wd[weight_index(mode, e0 + k, p, k - j, wp, wf)] * sd[c0 + k];
        }
        at::Tensor cv = blob(coef.data(), R, Wb, opt), xv = blob(xd + (c0 + cb0) * D, Wb, D, opt);
        if (first) at::mm_out(yv, cv, xv);
        else yv.addmm_(cv, xv);
        first = false;
      }
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t si = sd[r0 + r];
        scalar_t* yr = yd + (r0 + r) * D;
        for (int64_t d = 0; d < D; ++d) yr[d] *= si;
      }
    }
  });
  return y;
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> window_spmm_backward_gemm(
    const at::Tensor& g_, const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& s_,
    const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode, std::array<bool, 3> mask) {
  const at::Tensor g = g_.contiguous(), x = x_.contiguous(), w = w_.contiguous(), s = s_.contiguous();
  const int64_t N = meta.num_nodes, D = x.size(1);
  const scalar_t* gd = g.data_ptr<scalar_t>();
  const scalar_t* xd = x.data_ptr<scalar_t>();
  const scalar_t* wd = w.data_ptr<scalar_t>();
  const scalar_t* sd = s.data_ptr<scalar_t>();
  const bool need_gx = mask[0], need_gw = mask[1], need_gs = mask[2];
  const auto opt = x.options();
  at::Tensor gx, gw, gs;
  if (need_gx) gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (need_gw) gw = at::zeros_like(w, at::MemoryFormat::Contiguous);
  if (need_gs) gs = at::zeros({M * N}, s.options());
  scalar_t* gsd = need_gs ? gs.data_ptr<scalar_t>() : nullptr;
  std::vector<scalar_t> per_edge(need_gw && mode == kRelative ? meta.num_edges : 0);
  const std::vector<Tile> tiles = make_tiles(meta, M);
  const int64_t T = static_cast<int64_t>(tiles.size());

  scalar_t* gxd = need_gx ? gx.data_ptr<scalar_t>() : nullptr;
  scalar_t* gwd = need_gw ? gw.data_ptr<scalar_t>() : nullptr;
  // One task per tile of R utterances of one dialogue in modality n runs both passes for those
  // rows: pass A sees them as columns (their gradient), pass B as rows (their edges' weight
  // gradients). The tile owns those rows of grad_x and grad_s and those edges: no atomics, one
  // fork-join, and the same result for any thread count.
  at::parallel_for(0, T, 1, [&](int64_t q0, int64_t q1) {
    std::vector<scalar_t> coef, ubuf, dots;
    for (int64_t q = q0; q < q1; ++q) {
      const Tile& tl = tiles[q];
      const int64_t L = meta.length[tl.b], sb = meta.start[tl.b], R = tl.j1 - tl.j0;
      const int64_t r0 = tl.m * N + sb + tl.j0;  // the tile's first row

      // Pass A, the tile as columns (modality n = tl.m, utterances [k0, k1)): U = sum_m Ct_m @ G_m
      // with Ct[k, t] = a_e s_t for the edges e = (t, k) of the transposed band.
      //   grad_x_k = s_k U_k;  grad_s_k (the column part) = <x_k, U_k>.
      if (need_gx || need_gs) {
        const int64_t n = tl.m, k0 = tl.j0, k1 = tl.j1;
        scalar_t* ud;
        if (need_gx) {
          ud = gxd + r0 * D;
        } else {
          ubuf.resize(R * D);
          ud = ubuf.data();
        }
        at::Tensor uv = blob(ud, R, D, opt);
        bool first = true;
        for (int64_t m = 0; m < M; ++m) {
          if (m == n) continue;
          const int64_t p = modal_pair_index(m, n, M);
          const int64_t base = meta.edge_base[tl.b] + p * meta.band[tl.b];
          const int64_t tb0 = window_row_lo(k0, wf), tb1 = window_row_hi(k1 - 1, L, wp), Wb = tb1 - tb0;
          const int64_t rm = m * N + sb;
          coef.assign(R * Wb, scalar_t(0));
          for (int64_t k = k0; k < k1; ++k) {
            scalar_t* crow = coef.data() + (k - k0) * Wb - tb0;
            for (int64_t t = window_row_lo(k, wf); t < window_row_hi(k, L, wp); ++t) {
              const int64_t e = base + window_row_start(t, L, wp, wf) + (k - window_lo(t, wp));
              crow[t] = wd[weight_index(mode, e, p, k - t, wp, wf)] * sd[rm + t];
            }
          }
          at::Tensor cv = blob(coef.data(), R, Wb, opt), gv = blob(gd + (rm + tb0) * D, Wb, D, opt);
          if (first) at::mm_out(uv, cv, gv);
          else uv.addmm_(cv, gv);
          first = false;
        }
        for (int64_t r = 0; r < R; ++r) {
          scalar_t* ur = ud + r * D;
          if (need_gs) gsd[r0 + r] = lane_dot(xd + (r0 + r) * D, ur, D);
          if (need_gx) {
            const scalar_t sc = sd[r0 + r];
            for (int64_t d = 0; d < D; ++d) ur[d] *= sc;
          }
        }
      }

      // Pass B, the tile as rows: Dots^T = X_band @ G_tile^T holds <g_i, x_j> for every edge
      // (i, j); BLAS runs this shape (a small output, a long inner dimension) about twice as
      // fast as G_tile @ X_band^T with a transposed right operand.
      //   grad_a_e = s_i s_j dot_e;  grad_s_i (the row part) = sum_e a_e s_j dot_e.
      if (need_gw || need_gs) {
        at::Tensor gv = blob(gd + r0 * D, R, D, opt);
        for (int64_t n = 0; n < M; ++n) {
          if (n == tl.m) continue;
          const int64_t p = modal_pair_index(tl.m, n, M);
          const int64_t cb0 = window_lo(tl.j0, wp), cb1 = window_hi(tl.j1 - 1, L, wf), Wb = cb1 - cb0;
          const int64_t c0 = n * N + sb;
          dots.resize(Wb * R);
          at::Tensor dv = blob(dots.data(), Wb, R, opt);
          at::mm_out(dv, blob(xd + (c0 + cb0) * D, Wb, D, opt), gv.t());
          for (int64_t j = tl.j0; j < tl.j1; ++j) {
            const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
            const int64_t e0 = meta.edge_base[tl.b] + p * meta.band[tl.b] + window_row_start(j, L, wp, wf) - lo;
            const scalar_t* dcol = dots.data() + (j - tl.j0) - cb0 * R;  // dcol[k * R] = <g_j, x_k>
            const scalar_t si = sd[r0 + j - tl.j0];
            scalar_t row_part = 0;
            for (int64_t k = lo; k < hi; ++k) {
              const scalar_t sj = sd[c0 + k], dot = dcol[k * R];
              if (need_gs) row_part += wd[weight_index(mode, e0 + k, p, k - j, wp, wf)] * sj * dot;
              if (need_gw) {
                if (mode == kRelative) per_edge[e0 + k] = si * sj * dot;
                else gwd[e0 + k] = si * sj * dot;
              }
            }
            if (need_gs) gsd[r0 + j - tl.j0] += row_part;
          }
        }
      }
    }
  });
  if (need_gw && mode == kRelative) reduce_relative(per_edge.data(), gwd, meta, M, wp, wf);
  return {gx, gw, gs};
}

#define GS_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

at::Tensor window_norm_cpu(const at::Tensor& edge_weight, const at::Tensor& lengths, int64_t num_nodes,
                           int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta = check_norm_inputs(edge_weight, lengths, num_nodes, M, wp, wf, mode, c10::DeviceType::CPU);
  at::Tensor out;
  GS_DISPATCH(edge_weight.scalar_type(), "window_norm_cpu", [&] {
    out = window_norm_kernel<scalar_t>(edge_weight, meta, M, wp, wf, mode);
  });
  return out;
}

at::Tensor window_norm_backward_cpu(const at::Tensor& grad_norm, const at::Tensor& norm,
                                    const at::Tensor& edge_weight, const at::Tensor& lengths, int64_t M,
                                    int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta =
      check_norm_backward_inputs(grad_norm, norm, edge_weight, lengths, M, wp, wf, mode, c10::DeviceType::CPU);
  at::Tensor out;
  GS_DISPATCH(edge_weight.scalar_type(), "window_norm_backward_cpu", [&] {
    out = window_norm_backward_kernel<scalar_t>(grad_norm, norm, edge_weight, meta, M, wp, wf, mode);
  });
  return out.view(edge_weight.sizes());
}

// Half and bfloat16 run the fp32 kernels on fp32 copies of their inputs: BLAS speed with fp32
// accumulation (an edge-by-edge loop converting as it goes was 4x (bf16) to 12x (fp16) slower
// than fp32 at 16x50, D = 512), for transient fp32 copies of x (and grad_y) of twice their size.
inline at::Tensor to_fp32(const at::Tensor& t) { return t.to(at::kFloat); }

at::Tensor window_spmm_cpu(const at::Tensor& x, const at::Tensor& edge_weight, const at::Tensor& norm,
                           const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta = check_spmm_inputs(x, edge_weight, norm, lengths, M, wp, wf, mode, c10::DeviceType::CPU);
  at::Tensor out;
  if (x.scalar_type() == at::kFloat) {
    out = window_spmm_gemm<float>(x, edge_weight, norm, meta, M, wp, wf, mode);
  } else if (x.scalar_type() == at::kDouble) {
    out = window_spmm_gemm<double>(x, edge_weight, norm, meta, M, wp, wf, mode);
  } else {
    // half / bfloat16: the fp32 kernel on fp32 copies, rounded once at the end (fp32
    // accumulation, as a reduced-precision GEMM in BLAS would not give).
    out = window_spmm_gemm<float>(to_fp32(x), to_fp32(edge_weight), to_fp32(norm), meta, M, wp, wf, mode)
              .to(x.scalar_type());
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_spmm_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& edge_weight, const at::Tensor& norm,
    const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode, std::array<bool, 3> mask) {
  WindowMeta meta = check_spmm_inputs(x, edge_weight, norm, lengths, M, wp, wf, mode, c10::DeviceType::CPU, &grad_y);
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  if (x.scalar_type() == at::kFloat) {
    out = window_spmm_backward_gemm<float>(grad_y, x, edge_weight, norm, meta, M, wp, wf, mode, mask);
  } else if (x.scalar_type() == at::kDouble) {
    out = window_spmm_backward_gemm<double>(grad_y, x, edge_weight, norm, meta, M, wp, wf, mode, mask);
  } else {
    auto [gx, gw, gs] = window_spmm_backward_gemm<float>(to_fp32(grad_y), to_fp32(x), to_fp32(edge_weight),
                                                         to_fp32(norm), meta, M, wp, wf, mode, mask);
    const auto back = [](const at::Tensor& t, const at::Tensor& like) {
      return t.defined() ? t.to(like.scalar_type()) : t;
    };
    out = {back(gx, x), back(gw, edge_weight), back(gs, norm)};
  }
  if (std::get<1>(out).defined()) std::get<1>(out) = std::get<1>(out).view(edge_weight.sizes());
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, CPU, m) {
  m.impl("window_norm", &window_norm_cpu);
  m.impl("window_norm_backward", &window_norm_backward_cpu);
  m.impl("window_spmm", &window_spmm_cpu);
  m.impl("window_spmm_backward", &window_spmm_backward_cpu);
}

}  // namespace graphsmile
