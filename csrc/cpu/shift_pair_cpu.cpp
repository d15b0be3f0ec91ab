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
#include <tuple>
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
  std::vector<double> part(part_size);
  std::vector<std::array<int64_t, 4>> counts(n_items);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "shift_pair_nll_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* ad = a.data_ptr<scalar_t>();
    const scalar_t* bd = b.data_ptr<scalar_t>();
    const int64_t* sd = sentiment.data_ptr<int64_t>();
    acc_t* row_rd = with_grad ? row_r.data_ptr<acc_t>() : nullptr;
    // Grain: about 64k pairs per task.
    const int64_t grain = std::max<int64_t>(1, 65536 / (kNllRowBlock * std::max<int64_t>(1, meta.num_pairs / std::max<int64_t>(1, N))));
    at::parallel_for(0, n_items, grain, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        const Item it = items[k];
        std::array<int64_t, 4> cnt{0, 0, 0, 0};
        double* colp = with_grad ? part.data() + it.part : nullptr;
        if (colp != nullptr) std::fill(colp, colp + it.sz, 0.0);
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
              colp[j] += static_cast<double>(r);
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
            for (int64_t q = 0; q < nblk; ++q) s += part[it.part + q * it.sz + j];
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
