// CPU kernels of windowed cross-modal propagation (SPEC 3 and 5).
//
//   window_norm:  s_i = d_i^{-1/2} (0 where d_i == 0), d_i = sum_{e=(i,.)} a_e
//   window_spmm:  y_i = s_i * sum_{e=(i,j)} a_e s_j x_j
// and their backward ops. Each output row is owned by one thread (no atomics, deterministic for
// any thread count); edge ids come from the closed forms of kernels/window_index.h.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/util/irange.h>
#include <torch/library.h>
#include <cmath>
#include <vector>

#include "../window_common.h"
#include "simd.h"

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
        const int64_t L = meta.length[b];
        const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
        acc_t d = 0;
        for (int64_t n = 0; n < M; ++n) {
          if (n == m) continue;
          const int64_t p = modal_pair_index(m, n, M);
          const int64_t e0 = meta.edge_base[b] + p * meta.band[b] + window_row_start(j, L, wp, wf) - lo;
          for (int64_t k = lo; k < hi; ++k) d += static_cast<acc_t>(wd[weight_index(mode, e0 + k, p, k - j, wp, wf)]);
        }
        // pow(d, -0.5) with the original's masked assignment: +inf (d == 0) becomes 0; d < 0 is NaN.
        acc_t v = d == acc_t(0) ? acc_t(0) : acc_t(1) / std::sqrt(d);
        sd[m * N + meta.start[b] + j] = static_cast<scalar_t>(v);
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
        const acc_t si = static_cast<acc_t>(sd[r]);
        const acc_t v = acc_t(-0.5) * si * si * si * static_cast<acc_t>(gsd[r]);
        const int64_t L = meta.length[b];
        const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
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

template <typename scalar_t>
at::Tensor window_spmm_kernel(const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& s_,
                              const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor x = x_.contiguous(), w = w_.contiguous(), s = s_.contiguous();
  const int64_t N = meta.num_nodes, D = x.size(1);
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (y.numel() == 0) return y;
  const scalar_t* xd = x.data_ptr<scalar_t>();
  const scalar_t* wd = w.data_ptr<scalar_t>();
  const scalar_t* sd = s.data_ptr<scalar_t>();
  scalar_t* yd = y.data_ptr<scalar_t>();
  const int64_t band_max = std::min<int64_t>(meta.max_len, (wp < 0 || wf < 0) ? meta.max_len : wp + wf + 1);
  at::parallel_for(0, M * N, row_grain(band_max * (M - 1) * D), [&](int64_t r0, int64_t r1) {
    std::vector<acc_t> acc(D), coef(band_max);
    for (int64_t m = r0 / N; m <= (r1 - 1) / N; ++m) {
      const int64_t t0 = std::max(r0, m * N) - m * N, t1 = std::min(r1, (m + 1) * N) - m * N;
      for_each_utterance(meta, t0, t1, [&](int64_t b, int64_t j) {
        const int64_t L = meta.length[b];
        const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
        const int64_t r = m * N + meta.start[b] + j;
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for (int64_t n = 0; n < M; ++n) {
          if (n == m) continue;
          const int64_t p = modal_pair_index(m, n, M);
          const int64_t e0 = meta.edge_base[b] + p * meta.band[b] + window_row_start(j, L, wp, wf) - lo;
          const int64_t c0 = n * N + meta.start[b];
          for (int64_t k = lo; k < hi; ++k)
            coef[k - lo] = static_cast<acc_t>(wd[weight_index(mode, e0 + k, p, k - j, wp, wf)]) *
                           static_cast<acc_t>(sd[c0 + k]);
          cpu::band_axpy(acc.data(), xd + (c0 + lo) * D, D, coef.data(), hi - lo, D);
        }
        const acc_t si = static_cast<acc_t>(sd[r]);
        scalar_t* yr = yd + r * D;
        for (int64_t d = 0; d < D; ++d) yr[d] = static_cast<scalar_t>(si * acc[d]);
      });
    }
  });
  return y;
}

template <typename scalar_t>
std::tuple<at::Tensor, at::Tensor, at::Tensor> window_spmm_backward_kernel(
    const at::Tensor& g_, const at::Tensor& x_, const at::Tensor& w_, const at::Tensor& s_,
    const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode, std::array<bool, 3> mask) {
  using acc_t = at::opmath_type<scalar_t>;
  const at::Tensor g = g_.contiguous(), x = x_.contiguous(), w = w_.contiguous(), s = s_.contiguous();
  const int64_t N = meta.num_nodes, D = x.size(1);
  const scalar_t* gd = g.data_ptr<scalar_t>();
  const scalar_t* xd = x.data_ptr<scalar_t>();
  const scalar_t* wd = w.data_ptr<scalar_t>();
  const scalar_t* sd = s.data_ptr<scalar_t>();
  const bool need_gx = mask[0], need_gw = mask[1], need_gs = mask[2];
  at::Tensor gx, gw, gs;
  if (need_gx) gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (need_gw) gw = at::zeros_like(w, at::MemoryFormat::Contiguous);
  // grad_s is accumulated in acc_t: column part (pass A) then row part (pass B).
  std::vector<acc_t> gs_acc(need_gs ? M * N : 0, acc_t(0));
  std::vector<acc_t> per_edge(need_gw && mode == kRelative ? meta.num_edges : 0);
  const int64_t band_max = std::min<int64_t>(meta.max_len, (wp < 0 || wf < 0) ? meta.max_len : wp + wf + 1);
  const int64_t grain = row_grain(band_max * (M - 1) * D);

  // Pass A, over columns c (modality n, utterance k): u_c = sum_{e=(i,c)} a_e s_i g_i.
  //   grad_x_c = s_c u_c;  grad_s_c (as a column) = <x_c, u_c>.
  if (need_gx || need_gs) {
    scalar_t* gxd = need_gx ? gx.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, M * N, grain, [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> acc(D), coef(band_max);
      for (int64_t n = r0 / N; n <= (r1 - 1) / N; ++n) {
        const int64_t t0 = std::max(r0, n * N) - n * N, t1 = std::min(r1, (n + 1) * N) - n * N;
        for_each_utterance(meta, t0, t1, [&](int64_t b, int64_t k) {
          const int64_t L = meta.length[b];
          const int64_t c = n * N + meta.start[b] + k;
          const int64_t tlo = window_row_lo(k, wf), thi = window_row_hi(k, L, wp);
          std::fill(acc.begin(), acc.end(), acc_t(0));
          for (int64_t m = 0; m < M; ++m) {
            if (m == n) continue;
            const int64_t p = modal_pair_index(m, n, M);
            const int64_t base = meta.edge_base[b] + p * meta.band[b];
            const int64_t r0m = m * N + meta.start[b];
            for (int64_t t = tlo; t < thi; ++t) {
              const int64_t e = base + window_row_start(t, L, wp, wf) + (k - window_lo(t, wp));
              coef[t - tlo] = static_cast<acc_t>(wd[weight_index(mode, e, p, k - t, wp, wf)]) *
                              static_cast<acc_t>(sd[r0m + t]);
            }
            cpu::band_axpy(acc.data(), gd + (r0m + tlo) * D, D, coef.data(), thi - tlo, D);
          }
          const acc_t sc = static_cast<acc_t>(sd[c]);
          if (need_gx) {
            scalar_t* gxr = gxd + c * D;
            for (int64_t d = 0; d < D; ++d) gxr[d] = static_cast<scalar_t>(sc * acc[d]);
          }
          if (need_gs) gs_acc[c] = cpu::dot(xd + c * D, acc.data(), D);
        });
      }
    });
  }

  // Pass B, over rows i: dot_e = <g_i, x_j> for each edge e = (i, j).
  //   grad_a_e = s_i s_j dot_e;  grad_s_i (as a row) = sum_e a_e s_j dot_e.
  if (need_gw || need_gs) {
    scalar_t* gwd = need_gw ? gw.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, M * N, grain, [&](int64_t r0, int64_t r1) {
      std::vector<acc_t> dots(band_max);
      for (int64_t m = r0 / N; m <= (r1 - 1) / N; ++m) {
        const int64_t t0 = std::max(r0, m * N) - m * N, t1 = std::min(r1, (m + 1) * N) - m * N;
        for_each_utterance(meta, t0, t1, [&](int64_t b, int64_t j) {
          const int64_t L = meta.length[b];
          const int64_t lo = window_lo(j, wp), hi = window_hi(j, L, wf);
          const int64_t r = m * N + meta.start[b] + j;
          const acc_t si = static_cast<acc_t>(sd[r]);
          acc_t row_part = 0;
          for (int64_t n = 0; n < M; ++n) {
            if (n == m) continue;
            const int64_t p = modal_pair_index(m, n, M);
            const int64_t e0 = meta.edge_base[b] + p * meta.band[b] + window_row_start(j, L, wp, wf) - lo;
            const int64_t c0 = n * N + meta.start[b];
            cpu::band_dots(gd + r * D, xd + (c0 + lo) * D, D, hi - lo, D, dots.data());
            for (int64_t k = lo; k < hi; ++k) {
              const acc_t dot = dots[k - lo];
              const acc_t sj = static_cast<acc_t>(sd[c0 + k]);
              if (need_gs) row_part += static_cast<acc_t>(wd[weight_index(mode, e0 + k, p, k - j, wp, wf)]) * sj * dot;
              if (need_gw) {
                if (mode == kRelative) per_edge[e0 + k] = si * sj * dot;
                else gwd[e0 + k] = static_cast<scalar_t>(si * sj * dot);
              }
            }
          }
          if (need_gs) gs_acc[r] += row_part;
        });
      }
    });
    if (need_gw && mode == kRelative) reduce_relative(per_edge.data(), gwd, meta, M, wp, wf);
  }
  if (need_gs) {
    gs = at::empty({M * N}, s.options());
    scalar_t* gsd = gs.data_ptr<scalar_t>();
    for (int64_t i = 0; i < M * N; ++i) gsd[i] = static_cast<scalar_t>(gs_acc[i]);
  }
  return {gx, gw, gs};
}

void check_cpu(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.device().is_cpu(), "graphsmile: ", name, " is on ", t.device(),
                    " but this is the CPU kernel; move it to the CPU or pick a GPU backend");
}

#define GS_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

at::Tensor window_norm_cpu(const at::Tensor& edge_weight, const at::Tensor& lengths, int64_t num_nodes,
                           int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  check_windows(M, wp, wf, mode);
  check_cpu(edge_weight, "edge_weight");
  WindowMeta meta = make_window_meta(lengths, M, wp, wf);
  TORCH_CHECK_VALUE(num_nodes == meta.num_nodes, "graphsmile: num_nodes = ", num_nodes,
                    " but sum(lengths) = ", meta.num_nodes);
  check_edge_weight(edge_weight, meta, M, wp, wf, mode);
  at::Tensor out;
  GS_DISPATCH(edge_weight.scalar_type(), "window_norm_cpu", [&] {
    out = window_norm_kernel<scalar_t>(edge_weight, meta, M, wp, wf, mode);
  });
  return out;
}

at::Tensor window_norm_backward_cpu(const at::Tensor& grad_norm, const at::Tensor& norm,
                                    const at::Tensor& edge_weight, const at::Tensor& lengths, int64_t M,
                                    int64_t wp, int64_t wf, int64_t mode) {
  check_windows(M, wp, wf, mode);
  check_cpu(edge_weight, "edge_weight");
  check_cpu(norm, "norm");
  check_cpu(grad_norm, "grad_norm");
  WindowMeta meta = make_window_meta(lengths, M, wp, wf);
  check_edge_weight(edge_weight, meta, M, wp, wf, mode);
  check_norm(norm, meta, M);
  TORCH_CHECK_VALUE(grad_norm.sizes() == norm.sizes(), "graphsmile: grad_norm must have the shape of norm ",
                    norm.sizes(), ", got ", grad_norm.sizes());
  check_same_dtype(norm, "norm", edge_weight, "edge_weight");
  check_same_dtype(grad_norm, "grad_norm", edge_weight, "edge_weight");
  at::Tensor out;
  GS_DISPATCH(edge_weight.scalar_type(), "window_norm_backward_cpu", [&] {
    out = window_norm_backward_kernel<scalar_t>(grad_norm, norm, edge_weight, meta, M, wp, wf, mode);
  });
  return out.view(edge_weight.sizes());
}

WindowMeta check_spmm_args(const at::Tensor& x, const at::Tensor& w, const at::Tensor& s,
                           const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  check_windows(M, wp, wf, mode);
  check_cpu(x, "x");
  check_cpu(w, "edge_weight");
  check_cpu(s, "norm");
  WindowMeta meta = make_window_meta(lengths, M, wp, wf);
  check_features(x, "x", meta, M);
  check_edge_weight(w, meta, M, wp, wf, mode);
  check_norm(s, meta, M);
  check_same_dtype(x, "x", w, "edge_weight");
  check_same_dtype(x, "x", s, "norm");
  return meta;
}

at::Tensor window_spmm_cpu(const at::Tensor& x, const at::Tensor& edge_weight, const at::Tensor& norm,
                           const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta = check_spmm_args(x, edge_weight, norm, lengths, M, wp, wf, mode);
  at::Tensor out;
  GS_DISPATCH(x.scalar_type(), "window_spmm_cpu", [&] {
    out = window_spmm_kernel<scalar_t>(x, edge_weight, norm, meta, M, wp, wf, mode);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_spmm_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& edge_weight, const at::Tensor& norm,
    const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode, std::array<bool, 3> mask) {
  WindowMeta meta = check_spmm_args(x, edge_weight, norm, lengths, M, wp, wf, mode);
  check_cpu(grad_y, "grad_y");
  TORCH_CHECK_VALUE(grad_y.sizes() == x.sizes(), "graphsmile: grad_y must have the shape of x ", x.sizes(),
                    ", got ", grad_y.sizes());
  check_same_dtype(x, "x", grad_y, "grad_y");
  std::tuple<at::Tensor, at::Tensor, at::Tensor> out;
  GS_DISPATCH(x.scalar_type(), "window_spmm_backward_cpu", [&] {
    out = window_spmm_backward_kernel<scalar_t>(grad_y, x, edge_weight, norm, meta, M, wp, wf, mode, mask);
  });
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
