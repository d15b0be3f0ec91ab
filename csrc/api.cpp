// The C++ API of include/graphsmile/graphsmile.h: thin wrappers that check what the kernels
// cannot (the head's shapes, the graph's arguments once per batch) and call the registered ops
// through the dispatcher, so that autograd (csrc/autograd.cpp) and the device's kernels apply as
// they do from Python. Chain: this file -> tests/cpp/test_api.cpp -> examples/cpp.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <graphsmile/graphsmile.h>

#include <array>
#include <tuple>

#include "op_handles.h"
#include "window_common.h"

namespace graphsmile {
namespace {

using namespace graphsmile::ops;  // the op signatures and typed_op (op_handles.h)

at::Tensor lengths_tensor(c10::IntArrayRef lengths) {
  return at::tensor(lengths, at::TensorOptions().dtype(at::kLong));
}

// The kernels exist for CPU tensors, and for CUDA tensors where the library was built with them;
// anything else would reach torch's generic "could not run" error, which names no argument.
// (The other tensors of a call are checked against this one by the kernels.)
void check_device(const at::Tensor& t, const char* name) {
  const c10::DeviceType type = t.device().type();
  const bool cuda = has_cuda_kernels();
  TORCH_CHECK_VALUE(type == c10::DeviceType::CPU || (cuda && type == c10::DeviceType::CUDA), "graphsmile: ", name,
                    " is on ", t.device(), ", but this build of the library has kernels for ",
                    cuda ? "CPU and CUDA tensors only"
                         : "CPU tensors only (for CUDA tensors, build it with -DGRAPHSMILE_WITH_CUDA=ON)");
}

// u, v: [N, D] of one dtype and device; weight [C, 2D] (C == classes where given); bias [C] or undefined.
void check_head(const at::Tensor& u, const at::Tensor& v, int64_t num_nodes, const at::Tensor& weight,
                const at::Tensor& bias, int64_t classes) {
  TORCH_CHECK_VALUE(u.defined() && v.defined(), "graphsmile: u and v must be defined tensors");
  check_device(u, "u");
  check_float_tensor(u, "u");
  TORCH_CHECK_VALUE(u.dim() == 2 && u.size(0) == num_nodes, "graphsmile: u must be [sum(lengths), D] = [", num_nodes,
                    ", D], got shape ", u.sizes());
  TORCH_CHECK_VALUE(v.sizes() == u.sizes(), "graphsmile: u and v must have the same shape, got ", u.sizes(), " and ",
                    v.sizes());
  check_same_device(u, "u", v, "v");
  check_same_dtype(u, "u", v, "v");
  const int64_t D = u.size(1);
  TORCH_CHECK_VALUE(weight.defined() && weight.dim() == 2 && weight.size(1) == 2 * D &&
                        (classes < 0 || weight.size(0) == classes),
                    "graphsmile: weight must be [", classes < 0 ? std::string("C") : std::to_string(classes),
                    ", 2D] = [..., ", 2 * D, "], got ", weight.defined() ? c10::str(weight.sizes()) : "undefined");
  check_same_device(u, "u", weight, "weight");
  check_same_dtype(u, "u", weight, "weight");
  if (bias.defined()) {
    TORCH_CHECK_VALUE(bias.dim() == 1 && bias.size(0) == weight.size(0), "graphsmile: bias must be [C] = [",
                      weight.size(0), "] or undefined, got shape ", bias.sizes());
    check_same_device(u, "u", bias, "bias");
    check_same_dtype(u, "u", bias, "bias");
  }
}

// The head split over the pair: a = W_u u + bias, b = W_v v ([N, C] each), so that
// W [u_i ; v_j] + bias = a_i + b_j.
std::pair<at::Tensor, at::Tensor> head_parts(const at::Tensor& u, const at::Tensor& v, const at::Tensor& weight,
                                             const at::Tensor& bias) {
  const int64_t D = u.size(1);
  return {at::linear(u, weight.slice(1, 0, D), bias), at::linear(v, weight.slice(1, D, 2 * D))};
}

}  // namespace

std::string version() { return GRAPHSMILE_VERSION; }

bool has_cuda_kernels() {
#ifdef GRAPHSMILE_WITH_CUDA
  return true;
#else
  return false;
#endif
}

int64_t num_edges(c10::IntArrayRef lengths, int64_t num_modal, int64_t win_p, int64_t win_f) {
  return WindowGraph(lengths, num_modal, win_p, win_f).num_edges();
}

int64_t num_shift_pairs(c10::IntArrayRef lengths, int64_t shift_win) {
  return make_shift_meta(lengths_tensor(lengths), shift_win).num_pairs;
}

WindowGraph::WindowGraph(c10::IntArrayRef lengths, int64_t num_modal, int64_t win_p, int64_t win_f,
                         WeightMode weight_mode)
    : lengths_(lengths_tensor(lengths)),
      num_modal_(num_modal),
      win_p_(win_p),
      win_f_(win_f),
      weight_mode_(weight_mode) {
  check_windows(num_modal, win_p, win_f, static_cast<int64_t>(weight_mode));
  const WindowMeta meta = make_window_meta(lengths_, num_modal, win_p, win_f);
  num_dialogues_ = meta.num_dialogues;
  num_nodes_ = meta.num_nodes;
  num_edges_ = meta.num_edges;
}

at::Tensor WindowGraph::norm(const at::Tensor& edge_weight) const {
  TORCH_CHECK_VALUE(edge_weight.defined(), "graphsmile: edge_weight must be a defined tensor");
  check_device(edge_weight, "edge_weight");
  static const auto op = typed_op<NormFn>("graphsmile::window_norm");
  return op.call(edge_weight, lengths_, c10::SymInt(num_nodes_), num_modal_, win_p_, win_f_,
                 static_cast<int64_t>(weight_mode_));
}

at::Tensor WindowGraph::spmm(const at::Tensor& x, const at::Tensor& edge_weight, const at::Tensor& norm) const {
  TORCH_CHECK_VALUE(x.defined() && edge_weight.defined() && norm.defined(),
                    "graphsmile: x, edge_weight and norm must be defined tensors");
  check_device(x, "x");
  static const auto op = typed_op<SpmmFn>("graphsmile::window_spmm");
  return op.call(x, edge_weight, norm, lengths_, num_modal_, win_p_, win_f_, static_cast<int64_t>(weight_mode_));
}

at::Tensor WindowGraph::propagate(const at::Tensor& x, const at::Tensor& edge_weight) const {
  return spmm(x, edge_weight, norm(edge_weight));
}

at::Tensor window_propagate(const at::Tensor& x, const at::Tensor& edge_weight, c10::IntArrayRef lengths,
                            int64_t num_modal, int64_t win_p, int64_t win_f, WeightMode weight_mode) {
  return WindowGraph(lengths, num_modal, win_p, win_f, weight_mode).propagate(x, edge_weight);
}

at::Tensor shift_pair_logits(const at::Tensor& u, const at::Tensor& v, c10::IntArrayRef lengths, int64_t shift_win,
                             const at::Tensor& weight, const at::Tensor& bias) {
  const at::Tensor lens = lengths_tensor(lengths);
  const ShiftMeta meta = make_shift_meta(lens, shift_win);
  check_head(u, v, meta.num_nodes, weight, bias, -1);
  const auto [a, b] = head_parts(u, v, weight, bias);
  static const auto op = typed_op<PairSumFn>("graphsmile::shift_pair_sum");
  return op.call(a, b, lens, c10::SymInt(meta.num_pairs), shift_win);
}

ShiftNll shift_pair_nll(const at::Tensor& u, const at::Tensor& v, c10::IntArrayRef lengths, int64_t shift_win,
                        const at::Tensor& weight, const at::Tensor& bias, const at::Tensor& sentiment,
                        int64_t reduction) {
  TORCH_CHECK_VALUE(reduction == at::Reduction::Mean || reduction == at::Reduction::Sum,
                    "graphsmile: reduction must be at::Reduction::Mean or at::Reduction::Sum (the fused loss keeps "
                    "no per-pair values), got ", reduction);
  const at::Tensor lens = lengths_tensor(lengths);
  const ShiftMeta meta = make_shift_meta(lens, shift_win);
  check_head(u, v, meta.num_nodes, weight, bias, 2);
  TORCH_CHECK_VALUE(sentiment.defined(), "graphsmile: sentiment must be a defined tensor");
  TORCH_CHECK_TYPE(at::isIntegralType(sentiment.scalar_type(), /*includeBool=*/false),
                   "graphsmile: sentiment must hold integer classes, got dtype ", sentiment.scalar_type());
  const auto [a, b] = head_parts(u, v, weight, bias);
  const bool with_grad = at::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad());
  static const auto op = typed_op<PairNllFn>("graphsmile::shift_pair_nll");
  auto [total, confusion, row_r, col_r] = op.call(a, b, sentiment.to(at::kLong), lens, shift_win, with_grad);
  if (reduction == at::Reduction::Mean) {
    total = meta.num_pairs > 0 ? total / static_cast<double>(meta.num_pairs) : total * std::nan("");
  }
  return {total, confusion};
}

}  // namespace graphsmile
