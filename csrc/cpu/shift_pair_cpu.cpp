// CPU kernels of the sentiment-shift pair op (SPEC 4).
//
// Because the shift head is linear, W [u_i ; v_j] + bias = (W_u u_i + bias) + W_v v_j: the pair
// logits are a broadcast sum of two [N, C] tensors over the pairs of each chunk, so no [P, 2D]
// pair embedding is built. shift_pair_sum computes out[pair(i, j)] = a_i + b_j; its backward is
// a pair of segment sums over chunk rows and chunk columns.
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>
#include <vector>

#include "../window_common.h"

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

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, CPU, m) {
  m.impl("shift_pair_sum", &shift_pair_sum_cpu);
  m.impl("shift_pair_sum_backward", &shift_pair_sum_backward_cpu);
}

}  // namespace graphsmile
