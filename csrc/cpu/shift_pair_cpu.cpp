// CPU kernels of the sentiment-shift pair op (SPEC 4).
//
// Because the shift head is linear, W [u_i ; v_j] + bias = (W_u u_i + bias) + W_v v_j: the pair
// logits are a broadcast sum of two [N, C] tensors over the pairs of each chunk, so no [P, 2D]
// pair embedding is built. shift_pair_sum computes out[pair(i, j)] = a_i + b_j; its backward is
// a pair of segment sums over chunk rows and chunk columns.
//
// shift_pair_nll fuses that sum with the shift loss (kernels/shift_nll.h): one pass over the
// pairs evaluates each pair's loss, prediction and residual and reduces them straight into
// per-row and per-column sums, so nothing of size P is stored.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>
#include <array>
#include <climits>
#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../window_common.h"
#include "../../kernels/shift_nll.h"

namespace graphsmile {
namespace {

void check_pair_inputs(const at::Tensor& a, const char* an, const ShiftMeta& meta) {
  check_float_tensor(a, an);
  TORCH_CHECK_VALUE(a.device().is_cpu(), "graphsmile: ", an, " is on ", a.device(),
                    " but this is the CPU kernel");
  TORCH_CHECK_VALUE(a.dim() == 2 && a.size(0) == meta.num_nodes, "graphsmile: ", an,
                    " must be [sum(lengths), C] = [", meta.num_nodes, ", C], got shape ", a.sizes());
}

// Calls fn(b, chunk_start, chunk_size, pair_offset) for every chunk of every dialogue in
// [b0, b1); pair_offset is the id of the chunk's first pair.
template <typename F>
inline void for_each_chunk(const ShiftMeta& meta, int64_t shift_win, int64_t b0, int64_t b1, F&& fn) {
  for (int64_t b = b0; b < b1; ++b) {
    const int64_t L = meta.length[b], w = shift_chunk(L, shift_win);
    for (int64_t cs = 0, c = 0; cs < L; cs += w, ++c)
      fn(b, meta.start[b] + cs, std::min(w, L - cs), meta.pair_base[b] + c * w * w);
  }
}

at::Tensor shift_pair_sum_cpu(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& lengths,
                              int64_t num_pairs, int64_t shift_win) {
  ShiftMeta meta = make_shift_meta(lengths, shift_win);
  check_pair_inputs(a_, "a", meta);
  check_pair_inputs(b_, "b", meta);
  TORCH_CHECK_VALUE(a_.sizes() == b_.sizes(), "graphsmile: a and b must have the same shape, got ",
                    a_.sizes(), " and ", b_.sizes());
  check_same_dtype(a_, "a", b_, "b");
  TORCH_CHECK_VALUE(num_pairs == meta.num_pairs, "graphsmile: num_pairs = ", num_pairs,
                    " but lengths and shift_win give ", meta.num_pairs, " pairs");
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const int64_t C = a.size(1);
  at::Tensor out = at::empty({meta.num_pairs, C}, a.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "shift_pair_sum_cpu", [&] {
    const scalar_t* ad = a.data_ptr<scalar_t>();
    const scalar_t* bd = b.data_ptr<scalar_t>();
    scalar_t* od = out.data_ptr<scalar_t>();
    // Parallel over dialogues; one huge dialogue (shift_win = -1) is split over its rows instead.
    const int64_t B = static_cast<int64_t>(meta.length.size());
    auto write_rows = [&](int64_t cs, int64_t sz, int64_t base, int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i) {
        scalar_t* o = od + (base + i * sz) * C;
        const scalar_t* ai = ad + (cs + i) * C;
        for (int64_t j = 0; j < sz; ++j) {
          const scalar_t* bj = bd + (cs + j) * C;
          for (int64_t q = 0; q < C; ++q) o[j * C + q] = ai[q] + bj[q];
        }
      }
    };
    if (B == 1) {
      for_each_chunk(meta, shift_win, 0, 1, [&](int64_t, int64_t cs, int64_t sz, int64_t base) {
        at::parallel_for(0, sz, std::max<int64_t>(1, 65536 / std::max<int64_t>(1, sz * C)),
                         [&](int64_t i0, int64_t i1) { write_rows(cs, sz, base, i0, i1); });
      });
    } else {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for_each_chunk(meta, shift_win, b0, b1, [&](int64_t, int64_t cs, int64_t sz, int64_t base) {
          write_rows(cs, sz, base, 0, sz);
        });
      });
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> shift_pair_sum_backward_cpu(const at::Tensor& grad_, const at::Tensor& lengths,
                                                               int64_t num_nodes, int64_t shift_win,
                                                               std::array<bool, 2> mask) {
  ShiftMeta meta = make_shift_meta(lengths, shift_win);
  check_float_tensor(grad_, "grad");
  TORCH_CHECK_VALUE(grad_.device().is_cpu(), "graphsmile: grad is on ", grad_.device(),
                    " but this is the CPU kernel");
  TORCH_CHECK_VALUE(grad_.dim() == 2 && grad_.size(0) == meta.num_pairs, "graphsmile: grad must be [P, C] with P = ",
                    meta.num_pairs, ", got shape ", grad_.sizes());
  TORCH_CHECK_VALUE(num_nodes == meta.num_nodes, "graphsmile: num_nodes = ", num_nodes,
                    " but sum(lengths) = ", meta.num_nodes);
  const at::Tensor grad = grad_.contiguous();
  const int64_t C = grad.size(1);
  at::Tensor ga, gb;
  if (mask[0]) ga = at::empty({meta.num_nodes, C}, grad.options());
  if (mask[1]) gb = at::empty({meta.num_nodes, C}, grad.options());
  const int64_t B = static_cast<int64_t>(meta.length.size());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "shift_pair_sum_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* gd = grad.data_ptr<scalar_t>();
    scalar_t* gad = mask[0] ? ga.data_ptr<scalar_t>() : nullptr;
    scalar_t* gbd = mask[1] ? gb.data_ptr<scalar_t>() : nullptr;
    // grad_a_i = sum_j g[pair(i, j)] (a chunk row), grad_b_j = sum_i g[pair(i, j)] (a chunk column).
    auto rows = [&](int64_t cs, int64_t sz, int64_t base, int64_t i0, int64_t i1) {
      std::vector<acc_t> acc(C);
      for (int64_t i = i0; i < i1; ++i) {
        std::fill(acc.begin(), acc.end(), acc_t(0));
        const scalar_t* g = gd + (base + i * sz) * C;
        for (int64_t j = 0; j < sz; ++j)
          for (int64_t q = 0; q < C; ++q) acc[q] += static_cast<acc_t>(g[j * C + q]);
        for (int64_t q = 0; q < C; ++q) gad[(cs + i) * C + q] = static_cast<scalar_t>(acc[q]);
      }
    };
    auto cols = [&](int64_t cs, int64_t sz, int64_t base, int64_t j0, int64_t j1) {
      // Column sums walk the chunk row by row (contiguous reads), keeping a [j1 - j0, C] accumulator.
      std::vector<acc_t> acc((j1 - j0) * C, acc_t(0));
      for (int64_t i = 0; i < sz; ++i) {
        const scalar_t* g = gd + (base + i * sz + j0) * C;
        for (int64_t q = 0; q < (j1 - j0) * C; ++q) acc[q] += static_cast<acc_t>(g[q]);
      }
      for (int64_t q = 0; q < (j1 - j0) * C; ++q) gbd[(cs + j0) * C + q] = static_cast<scalar_t>(acc[q]);
    };
    auto chunk = [&](int64_t cs, int64_t sz, int64_t base, bool split) {
      const int64_t grain = split ? std::max<int64_t>(1, 65536 / std::max<int64_t>(1, sz * C)) : sz;
      if (mask[0]) {
        if (split) at::parallel_for(0, sz, grain, [&](int64_t i0, int64_t i1) { rows(cs, sz, base, i0, i1); });
        else rows(cs, sz, base, 0, sz);
      }
      if (mask[1]) {
        if (split) at::parallel_for(0, sz, grain, [&](int64_t j0, int64_t j1) { cols(cs, sz, base, j0, j1); });
        else cols(cs, sz, base, 0, sz);
      }
    };
    if (B == 1) {
      for_each_chunk(meta, shift_win, 0, 1, [&](int64_t, int64_t cs, int64_t sz, int64_t base) {
        chunk(cs, sz, base, true);
      });
    } else {
      at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
        for_each_chunk(meta, shift_win, b0, b1, [&](int64_t, int64_t cs, int64_t sz, int64_t base) {
          chunk(cs, sz, base, false);
        });
      });
    }
  });
  return {ga, gb};
}

// ---- shift_pair_nll: a vectorisable float32 row ------------------------------------------------
//
// The per-pair term costs one exp, one log1p and one division; glibc's scalar expf/log1pf make
// it ~25 ns a pair. For float32 inputs the rows below evaluate it with branch-free polynomials
// that the compiler vectorises (SSE2 everywhere; an AVX2 clone on x86-64 with GCC, picked at load
// time): about 4x (SSE2) to 8x (AVX2) faster. It computes the same function as shift_nll_term
// (kernels/shift_nll.h) to within a few float ulps; NaN and inf propagate the same way. The
// build passes -fno-trapping-math (setup.py, CMakeLists.txt): without it GCC will not
// if-convert the selects and nothing vectorises (we never unmask FP exceptions).

// exp(t) for t <= 0 (NaN stays NaN): t = n ln2 + r with |r| <= ln2/2 (Cody-Waite, two-part ln2),
// a degree-7 Taylor polynomial for exp(r) (truncation < 2e-8 relative), 2^n from the exponent
// bits. Below t = -87 (exp(-87) = 1.6e-38, near the smallest normal float) it returns 0, as
// expf does from -104 on: the loss and residual terms of such a pair are then exactly 0 or x.
inline float nll_exp_nonpos(float t_in) {
  const float t = t_in < -87.0f ? -87.0f : t_in;
  const float v = t * 1.44269504088896341f;
  const float v_ok = v == v ? v : 0.0f;                  // NaN: any n (r is NaN anyway), no UB
  const int32_t n = static_cast<int32_t>(v_ok - 0.5f);   // round to nearest, v <= 0
  const float nf = static_cast<float>(n);
  const float r = (t - nf * 0.693359375f) - nf * -2.12194440e-4f;
  float p = 1.0f / 5040;
  p = p * r + 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (n + 127) << 23;  // n in [-126, 0]: a normal power of two
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  // (a select of constants and a product: keeps the loop branch-free; NaN compares false and stays NaN)
  const float keep = t_in < -87.0f ? 0.0f : 1.0f;
  return (p * scale) * keep;
}

// log1p(e) for e in [0, 1]: 2 atanh(s), s = e / (2 + e) in [0, 1/3], odd series to s^15
// (truncation < 2e-9 relative); exact for tiny e, where log(1 + e) would round to 0.
inline float nll_log1p_unit(float e) {
  const float s = e / (2.0f + e), s2 = s * s;
  float p = 1.0f / 15;
  p = p * s2 + 1.0f / 13;
  p = p * s2 + 1.0f / 11;
  p = p * s2 + 1.0f / 9;
  p = p * s2 + 1.0f / 7;
  p = p * s2 + 1.0f / 5;
  p = p * s2 + 1.0f / 3;
  p = p * s2 + 1.0f;
  return 2.0f * s * p;
}

constexpr int kNllVec = 64;    // columns per vectorised step
constexpr int kNllLanes = 16;  // independent float accumulators of a row's sums

struct NllRowSums {
  double loss = 0.0, resid = 0.0;
  int64_t n_y = 0, n_pred = 0, n_both = 0;  // pairs with y = 1, prediction 1, both
};

// One row (a0, a1, sentiment si) against a chunk's columns: b0/b1 the chunk's b deinterleaved,
// s its sentiments as int32 (the caller checked they fit), colp (or nullptr) the work item's
// partial column sums. The row's sums are kept in kNllLanes float lanes over kNllVec-column
// steps (a fixed order, so the same bits on every run) and added in double at the end; the
// last sz % kNllVec columns go through shift_nll_term.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
__attribute__((target_clones("avx2", "default")))
#endif
NllRowSums nll_row_f32(float a0, float a1, int32_t si, const float* __restrict__ b0, const float* __restrict__ b1,
                       const int32_t* __restrict__ s, int64_t sz, float* __restrict__ colp) {
  float lacc[kNllLanes] = {0}, racc[kNllLanes] = {0};
  NllRowSums out;
  int64_t j0 = 0;
  for (; j0 + kNllVec <= sz; j0 += kNllVec) {
    float lt[kNllVec], rt[kNllVec];
    int32_t yv[kNllVec], pv[kNllVec];
    // GS-VECTORISED-LOOP (tests/test_extension.py checks that GCC vectorises the next line's loop)
    for (int k = 0; k < kNllVec; ++k) {
      const int64_t j = j0 + k;
      const float d = (a1 + b1[j]) - (a0 + b0[j]);
      const int32_t y = s[j] != si;
      const float sign = 1.0f - 2.0f * static_cast<float>(y);  // x = (y ? -d : d)
      const float x = sign * d;
      const float e = nll_exp_nonpos(-std::fabs(x));
      const float inv = 1.0f / (1.0f + e);
      lt[k] = (x > 0.0f ? x : 0.0f) + nll_log1p_unit(e);
      rt[k] = sign * ((x >= 0.0f ? 1.0f : e) * inv);            // sigmoid(d) - y
      yv[k] = y;
      pv[k] = d > 0.0f;
    }
    for (int k = 0; k < kNllLanes; ++k) {
      lacc[k] += (lt[k] + lt[k + kNllLanes]) + (lt[k + 2 * kNllLanes] + lt[k + 3 * kNllLanes]);
      racc[k] += (rt[k] + rt[k + kNllLanes]) + (rt[k + 2 * kNllLanes] + rt[k + 3 * kNllLanes]);
    }
    if (colp != nullptr)
      for (int k = 0; k < kNllVec; ++k) colp[j0 + k] += rt[k];
    for (int k = 0; k < kNllVec; ++k) {
      out.n_y += yv[k];
      out.n_pred += pv[k];
      out.n_both += yv[k] & pv[k];
    }
  }
  for (int k = 0; k < kNllLanes; ++k) {
    out.loss += lacc[k];
    out.resid += racc[k];
  }
  for (int64_t j = j0; j < sz; ++j) {
    const bool y = s[j] != si;
    float r;
    bool pred;
    out.loss += shift_nll_term<float>(a0 + b0[j], a1 + b1[j], y, &r, &pred);
    out.resid += r;
    if (colp != nullptr) colp[j] += r;
    out.n_y += y;
    out.n_pred += pred;
    out.n_both += y && pred;
  }
  return out;
}

// Rows of a chunk per work item of shift_pair_nll. Fixed (not derived from the thread count),
// so the column partial sums, and hence every output bit, do not depend on the thread count.
constexpr int64_t kNllRowBlock = 32;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shift_pair_nll_cpu(
    const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& sentiment_, const at::Tensor& lengths,
    int64_t shift_win, bool with_grad) {
  const ShiftMeta meta = check_nll_inputs(a_, b_, sentiment_, lengths, shift_win, c10::DeviceType::CPU);
  const at::Tensor a = a_.contiguous(), b = b_.contiguous(), sentiment = sentiment_.contiguous();
  const int64_t N = meta.num_nodes;
  const at::ScalarType acc_type = a.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const auto acc_opts = a.options().dtype(acc_type);
  at::Tensor row_r = at::empty({with_grad ? N : 0}, acc_opts);
  at::Tensor col_r = at::empty({with_grad ? N : 0}, acc_opts);
  at::Tensor loss = at::empty({}, acc_opts);
  at::Tensor confusion = at::zeros({2, 2}, a.options().dtype(at::kLong));

  // Work items: (chunk, block of kNllRowBlock rows), in pair order. Each writes its rows' loss
  // and residual sums, its confusion counts, and (with_grad) a partial column sum over its rows.
  struct Item { int64_t cs, sz, i0, part; };
  std::vector<Item> items;
  int64_t part_size = 0;
  for (size_t bi = 0; bi < meta.length.size(); ++bi) {
    const int64_t L = meta.length[bi], w = shift_chunk(L, shift_win);
    for (int64_t c0 = 0; c0 < L; c0 += w) {
      const int64_t sz = std::min(w, L - c0);
      for (int64_t i0 = 0; i0 < sz; i0 += kNllRowBlock) {
        items.push_back({meta.start[bi] + c0, sz, i0, part_size});
        if (with_grad) part_size += sz;
      }
    }
  }
  const int64_t n_items = static_cast<int64_t>(items.size());
  std::vector<double> row_loss(N);
  std::vector<std::array<int64_t, 4>> counts(n_items);
  // The float32 fast path compares sentiments as int32: only when every value fits.
  bool sentiment_fits_int32 = true;
  {
    const int64_t* sd = sentiment.data_ptr<int64_t>();
    for (int64_t t = 0; t < N && sentiment_fits_int32; ++t)
      sentiment_fits_int32 = sd[t] >= INT32_MIN && sd[t] <= INT32_MAX;
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "shift_pair_nll_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ad = a.data_ptr<scalar_t>();
    const scalar_t* bd = b.data_ptr<scalar_t>();
    const int64_t* sd = sentiment.data_ptr<int64_t>();
    acc_t* row_rd = with_grad ? row_r.data_ptr<acc_t>() : nullptr;
    // partial column sums of 32 rows each (acc_t), added in double across a chunk's row blocks
    std::vector<acc_t> part(part_size);
    constexpr bool kFloat = std::is_same_v<scalar_t, float>;
    const bool vectorised = kFloat && sentiment_fits_int32;
    // Grain: about 64k pairs per task.
    const int64_t grain = std::max<int64_t>(1, 65536 / (kNllRowBlock * std::max<int64_t>(1, meta.num_pairs / std::max<int64_t>(1, N))));
    at::parallel_for(0, n_items, grain, [&](int64_t k0, int64_t k1) {
      std::vector<float> b0, b1;
      std::vector<int32_t> s32;
      for (int64_t k = k0; k < k1; ++k) {
        const Item it = items[k];
        std::array<int64_t, 4> cnt{0, 0, 0, 0};
        acc_t* colp = with_grad ? part.data() + it.part : nullptr;
        if (colp != nullptr) std::fill(colp, colp + it.sz, acc_t(0));
        if (kFloat) {  // (AT_DISPATCH's lambda is no template: both branches compile for every dtype)
          if (vectorised) {
            // the chunk's columns, deinterleaved for the vector loop (O(sz) per 32 rows)
            b0.resize(it.sz);
            b1.resize(it.sz);
            s32.resize(it.sz);
            for (int64_t j = 0; j < it.sz; ++j) {
              b0[j] = bd[2 * (it.cs + j)];
              b1[j] = bd[2 * (it.cs + j) + 1];
              s32[j] = static_cast<int32_t>(sd[it.cs + j]);
            }
            for (int64_t i = it.i0; i < std::min(it.sz, it.i0 + kNllRowBlock); ++i) {
              const int64_t ti = it.cs + i;
              const NllRowSums rs = nll_row_f32(ad[2 * ti], ad[2 * ti + 1], static_cast<int32_t>(sd[ti]), b0.data(),
                                                b1.data(), s32.data(), it.sz,
                                                reinterpret_cast<float*>(colp));  // acc_t is float here
              row_loss[ti] = rs.loss;
              if (row_rd != nullptr) row_rd[ti] = static_cast<acc_t>(rs.resid);
              cnt[3] += rs.n_both;
              cnt[2] += rs.n_y - rs.n_both;
              cnt[1] += rs.n_pred - rs.n_both;
              cnt[0] += it.sz - rs.n_y - rs.n_pred + rs.n_both;
            }
            counts[k] = cnt;
            continue;
          }
        }
        for (int64_t i = it.i0; i < std::min(it.sz, it.i0 + kNllRowBlock); ++i) {
          const int64_t ti = it.cs + i;
          const acc_t a0 = static_cast<acc_t>(ad[2 * ti]), a1 = static_cast<acc_t>(ad[2 * ti + 1]);
          const int64_t si = sd[ti];
          double lsum = 0.0, rsum = 0.0;
          for (int64_t j = 0; j < it.sz; ++j) {
            const int64_t tj = it.cs + j;
            // the logits rounded to the input dtype, as shift_pair_sum stores them
            const acc_t z0 = static_cast<acc_t>(static_cast<scalar_t>(a0 + static_cast<acc_t>(bd[2 * tj])));
            const acc_t z1 = static_cast<acc_t>(static_cast<scalar_t>(a1 + static_cast<acc_t>(bd[2 * tj + 1])));
            const bool y = si != sd[tj];
            acc_t r;
            bool pred;
            lsum += static_cast<double>(shift_nll_term<acc_t>(z0, z1, y, &r, &pred));
            ++cnt[2 * y + pred];
            if (colp != nullptr) {
              rsum += static_cast<double>(r);
              colp[j] += r;
            }
          }
          row_loss[ti] = lsum;
          if (row_rd != nullptr) row_rd[ti] = static_cast<acc_t>(rsum);
        }
        counts[k] = cnt;
      }
    });
    // Column sums: the partials of a chunk's row blocks, added in block order.
    if (with_grad) {
      acc_t* col_rd = col_r.data_ptr<acc_t>();
      at::parallel_for(0, n_items, 1, [&](int64_t k0, int64_t k1) {
        for (int64_t k = k0; k < k1; ++k) {
          const Item it = items[k];
          if (it.i0 != 0) continue;  // the chunk's first block sums the chunk's columns
          const int64_t nblk = (it.sz + kNllRowBlock - 1) / kNllRowBlock;
          for (int64_t j = 0; j < it.sz; ++j) {
            double s = 0.0;
            for (int64_t q = 0; q < nblk; ++q) s += static_cast<double>(part[it.part + q * it.sz + j]);
            col_rd[it.cs + j] = static_cast<acc_t>(s);
          }
        }
      });
    }
    double total = 0.0;
    for (int64_t t = 0; t < N; ++t) total += row_loss[t];
    loss.fill_(total);
  });
  int64_t* cd = confusion.data_ptr<int64_t>();
  for (const auto& c : counts)
    for (int q = 0; q < 4; ++q) cd[q] += c[q];
  return {loss, confusion, row_r, col_r};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, CPU, m) {
  m.impl("shift_pair_sum", &shift_pair_sum_cpu);
  m.impl("shift_pair_sum_backward", &shift_pair_sum_backward_cpu);
  m.impl("shift_pair_nll", &shift_pair_nll_cpu);
}

}  // namespace graphsmile
