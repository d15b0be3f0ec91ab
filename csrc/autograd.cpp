// Autograd of every graphsmile op (window_norm, window_spmm, shift_pair_sum, shift_pair_nll),
// registered in C++ for every device (the Autograd alias key), torchvision-style: the forward op
// runs below autograd and saves what its backward needs; backward ops are called through the
// dispatcher.
//
// Why C++ rather than torch.library.register_autograd:
// - C++ programs (include/graphsmile/graphsmile.h, the CMake library) get gradients through the
//   dispatcher with no Python at all;
// - the window ops are called once per graph layer, 24 times per forward of the IEMOCAP preset
//   and as many times in the backward, and a training step of that size on a GPU is bound by
//   host time, not by the kernels. The Python autograd path costs about 40 us per forward call
//   and 70 us per backward call on the host (bench/host.py); this one a few microseconds.
//
// Double backward: the backward kernels are not differentiable. Each backward op has an
// autograd kernel of its own whose outputs, under create_graph=True, carry a node that raises a
// clear error when differentiated (first-order gradients are unchanged); the fused shift loss,
// whose gradient is plain arithmetic on residuals its forward kept, passes its gradients through
// such a node (RefuseDoubleBackward). graphsmile/ops/_grad.py does the same for the Triton ops.
//
// torch.compile traces through these kernels (the ops below them have fake implementations,
// graphsmile/ops/_registry.py). torch.func transforms do not support C++ autograd functions:
// they raise, and backend="reference" is the twice-differentiable, transformable path.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "op_handles.h"

#include <array>
#include <string>
#include <vector>

namespace graphsmile {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

using namespace graphsmile::ops;  // the op signatures and typed_op (op_handles.h)

// The same words as graphsmile/ops/_grad.py's message for the Triton ops (for C++ programs too,
// so the Python advice is marked as such).
[[noreturn]] void refuse_double_backward(const char* op) {
  TORCH_CHECK(false, "graphsmile: the gradient of ", op,
              " cannot be differentiated again (double backward): its backward runs compiled kernels that "
              "autograd cannot see through, so they give first-order gradients only. From Python, "
              "backend='reference' (plain torch) is twice differentiable.");
}

// The integer arguments every window op shares, kept in the context between the passes.
void save_graph_args(AutogradContext* ctx, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  ctx->saved_data["graph"] = std::vector<int64_t>{M, wp, wf, mode};
}
std::array<int64_t, 4> graph_args(AutogradContext* ctx) {
  const auto v = ctx->saved_data["graph"].toIntVector();
  return {v[0], v[1], v[2], v[3]};
}

// A gradient an output mask left out is undefined; a custom Function wants a tensor in every
// output slot, so it becomes an empty placeholder that the op's own autograd kernel never hands on.
void fill_undefined(AutogradContext* ctx, variable_list& out, const at::TensorOptions& options) {
  for (auto& t : out) {
    if (!t.defined()) {
      t = at::empty({0}, options);
      ctx->mark_non_differentiable({t});
    }
  }
}

// Copies of `grads`, linked to `links` (the op's inputs and incoming gradients) through a node
// that raises when differentiated: under create_graph=True, a gradient computed from residuals
// (which autograd cannot differentiate) must not silently come out as a constant.
struct RefuseDoubleBackward : public torch::autograd::Function<RefuseDoubleBackward> {
  static variable_list forward(AutogradContext* ctx, std::string op, at::TensorList grads, at::TensorList links) {
    ctx->saved_data["op"] = std::move(op);
    variable_list out;
    out.reserve(grads.size());
    for (const auto& g : grads) out.push_back(g.clone());
    return out;
  }
  static variable_list backward(AutogradContext* ctx, variable_list) {
    refuse_double_backward(ctx->saved_data["op"].toStringRef().c_str());
  }
};

// `grads` unchanged, except under create_graph=True (grad mode on inside a backward): then the
// defined ones are re-attached through RefuseDoubleBackward to every link that requires grad.
void first_order_only(const char* op, variable_list& grads, const variable_list& links) {
  if (!at::GradMode::is_enabled()) return;
  variable_list present, linked;
  std::vector<size_t> where;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i].defined()) {
      present.push_back(grads[i]);
      where.push_back(i);
    }
  }
  for (const auto& t : links) {
    if (t.defined() && t.requires_grad()) linked.push_back(t);
  }
  if (present.empty() || linked.empty()) return;
  const variable_list attached = RefuseDoubleBackward::apply(std::string(op), at::TensorList(present),
                                                             at::TensorList(linked));
  for (size_t k = 0; k < where.size(); ++k) grads[where[k]] = attached[k];
}

// --- the backward ops: differentiable only in that they refuse ------------------------------

struct WindowNormBackward : public torch::autograd::Function<WindowNormBackward> {
  static Variable forward(AutogradContext*, const Variable& grad_norm, const Variable& norm, const Variable& w,
                          const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = typed_op<NormBackwardFn>("graphsmile::window_norm_backward");
    return op.call(grad_norm, norm, w, lengths, M, wp, wf, mode);
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("window_norm"); }
};

struct WindowSpmmBackward : public torch::autograd::Function<WindowSpmmBackward> {
  static variable_list forward(AutogradContext* ctx, const Variable& grad_y, const Variable& x, const Variable& w,
                               const Variable& s, const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf,
                               int64_t mode, std::array<bool, 3> mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = typed_op<SpmmBackwardFn>("graphsmile::window_spmm_backward");
    auto [gx, gw, gs] = op.call(grad_y, x, w, s, lengths, M, wp, wf, mode, mask);
    variable_list out{gx, gw, gs};
    fill_undefined(ctx, out, x.options());
    return out;
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("window_spmm"); }
};

at::Tensor window_norm_backward_autograd(const at::Tensor& grad_norm, const at::Tensor& norm, const at::Tensor& w,
                                         const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  return WindowNormBackward::apply(grad_norm, norm, w, lengths, M, wp, wf, mode);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_spmm_backward_autograd(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& w, const at::Tensor& s,
    const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode, std::array<bool, 3> mask) {
  const variable_list g = WindowSpmmBackward::apply(grad_y, x, w, s, lengths, M, wp, wf, mode, mask);
  return {mask[0] ? g[0] : at::Tensor(), mask[1] ? g[1] : at::Tensor(), mask[2] ? g[2] : at::Tensor()};
}

struct PairSumBackward : public torch::autograd::Function<PairSumBackward> {
  static variable_list forward(AutogradContext* ctx, const Variable& grad, const at::Tensor& lengths,
                               c10::SymInt num_nodes, int64_t shift_win, std::array<bool, 2> mask) {
    at::AutoDispatchBelowADInplaceOrView guard;
    static const auto op = typed_op<PairSumBackwardFn>("graphsmile::shift_pair_sum_backward");
    auto [ga, gb] = op.call(grad, lengths, std::move(num_nodes), shift_win, mask);
    variable_list out{ga, gb};
    fill_undefined(ctx, out, grad.options());
    return out;
  }
  static variable_list backward(AutogradContext*, variable_list) { refuse_double_backward("shift_pair_sum"); }
};

std::tuple<at::Tensor, at::Tensor> shift_pair_sum_backward_autograd(const at::Tensor& grad, const at::Tensor& lengths,
                                                                    c10::SymInt num_nodes, int64_t shift_win,
                                                                    std::array<bool, 2> mask) {
  const variable_list g = PairSumBackward::apply(grad, lengths, std::move(num_nodes), shift_win, mask);
  return {mask[0] ? g[0] : at::Tensor(), mask[1] ? g[1] : at::Tensor()};
}

// --- the forward ops --------------------------------------------------------------------------

// s = d^{-1/2}: grad_w from window_norm_backward (norm and weights saved).
struct WindowNorm : public torch::autograd::Function<WindowNorm> {
  static Variable forward(AutogradContext* ctx, const Variable& w, const at::Tensor& lengths, c10::SymInt num_nodes,
                          int64_t M, int64_t wp, int64_t wf, int64_t mode) {
    Variable s;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static const auto op = typed_op<NormFn>("graphsmile::window_norm");
      s = op.call(w, lengths, std::move(num_nodes), M, wp, wf, mode);
    }
    ctx->save_for_backward({s, w, lengths});
    save_graph_args(ctx, M, wp, wf, mode);
    return s;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(7);  // one slot per forward argument
    if (ctx->needs_input_grad(0)) {
      const auto saved = ctx->get_saved_variables();
      const auto [M, wp, wf, mode] = graph_args(ctx);
      out[0] = window_norm_backward_autograd(grads[0], saved[0], saved[1], saved[2], M, wp, wf, mode);
    }
    return out;
  }
};

// y = diag(s) A diag(s) x: grad_x, grad_w, grad_s from window_spmm_backward (x, w, s saved).
struct WindowSpmm : public torch::autograd::Function<WindowSpmm> {
  static Variable forward(AutogradContext* ctx, const Variable& x, const Variable& w, const Variable& s,
                          const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
    Variable y;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static const auto op = typed_op<SpmmFn>("graphsmile::window_spmm");
      y = op.call(x, w, s, lengths, M, wp, wf, mode);
    }
    ctx->save_for_backward({x, w, s, lengths});
    save_graph_args(ctx, M, wp, wf, mode);
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(8);
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    if (!mask[0] && !mask[1] && !mask[2]) return out;
    const auto saved = ctx->get_saved_variables();
    const auto [M, wp, wf, mode] = graph_args(ctx);
    auto [gx, gw, gs] =
        window_spmm_backward_autograd(grads[0], saved[0], saved[1], saved[2], saved[3], M, wp, wf, mode, mask);
    out[0] = gx;
    out[1] = gw;
    out[2] = gs;
    return out;
  }
};

at::Tensor window_norm_autograd(const at::Tensor& w, const at::Tensor& lengths, c10::SymInt num_nodes, int64_t M,
                                int64_t wp, int64_t wf, int64_t mode) {
  return WindowNorm::apply(w, lengths, std::move(num_nodes), M, wp, wf, mode);
}

at::Tensor window_spmm_autograd(const at::Tensor& x, const at::Tensor& w, const at::Tensor& s,
                                const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  return WindowSpmm::apply(x, w, s, lengths, M, wp, wf, mode);
}

// out[pair(i, j)] = a_i + b_j: grad_a, grad_b are segment sums of the pair gradient
// (shift_pair_sum_backward; only the lengths are saved).
struct PairSum : public torch::autograd::Function<PairSum> {
  static Variable forward(AutogradContext* ctx, const Variable& a, const Variable& b, const at::Tensor& lengths,
                          c10::SymInt num_pairs, int64_t shift_win) {
    Variable out;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static const auto op = typed_op<PairSumFn>("graphsmile::shift_pair_sum");
      out = op.call(a, b, lengths, std::move(num_pairs), shift_win);
    }
    ctx->save_for_backward({lengths});
    ctx->saved_data["num_nodes"] = a.sym_size(0);
    ctx->saved_data["shift_win"] = shift_win;
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(5);
    const std::array<bool, 2> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1)};
    if (!mask[0] && !mask[1]) return out;
    const auto saved = ctx->get_saved_variables();
    auto [ga, gb] = shift_pair_sum_backward_autograd(grads[0], saved[0], ctx->saved_data["num_nodes"].toSymInt(),
                                                     ctx->saved_data["shift_win"].toInt(), mask);
    out[0] = ga;
    out[1] = gb;
    return out;
  }
};

// The fused shift loss: (loss, confusion, row_r, col_r); only the loss is differentiable. It is a
// sum over pairs of softplus(+-(z_1 - z_0)), so d/da_i = grad_loss * (-row_r_i, row_r_i) and
// d/db_j = grad_loss * (-col_r_j, col_r_j) from the residual sums the forward kept.
struct PairNll : public torch::autograd::Function<PairNll> {
  static variable_list forward(AutogradContext* ctx, const Variable& a, const Variable& b, const at::Tensor& sentiment,
                               const at::Tensor& lengths, int64_t shift_win, bool with_grad) {
    Variable loss, confusion, row_r, col_r;
    {
      at::AutoDispatchBelowADInplaceOrView guard;
      static const auto op = typed_op<PairNllFn>("graphsmile::shift_pair_nll");
      std::tie(loss, confusion, row_r, col_r) = op.call(a, b, sentiment, lengths, shift_win, with_grad);
    }
    ctx->mark_non_differentiable({confusion, row_r, col_r});
    // a and b are saved only to link a double backward's error node to them
    ctx->save_for_backward({row_r, col_r, a, b});
    ctx->saved_data["with_grad"] = with_grad;
    return {loss, confusion, row_r, col_r};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(6);
    if (!ctx->needs_input_grad(0) && !ctx->needs_input_grad(1)) return out;
    TORCH_CHECK(ctx->saved_data["with_grad"].toBool(),
                "graphsmile::shift_pair_nll was called with with_grad=False, so it kept no gradient; call it with "
                "with_grad=True (graphsmile.ops.shift_pair_nll does when grad is enabled)");
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& row_r = saved[0];
    const at::Tensor& col_r = saved[1];
    const at::Tensor& grad_loss = grads[0];
    {
      at::NoGradGuard no_grad;
      if (ctx->needs_input_grad(0)) out[0] = grad_loss.mul(at::stack({row_r.neg(), row_r}, 1)).to(saved[2].scalar_type());
      if (ctx->needs_input_grad(1)) out[1] = grad_loss.mul(at::stack({col_r.neg(), col_r}, 1)).to(saved[3].scalar_type());
    }
    first_order_only("shift_pair_nll", out, {grad_loss, saved[2], saved[3]});  // (slots 2.. are undefined)
    return out;
  }
};

at::Tensor shift_pair_sum_autograd(const at::Tensor& a, const at::Tensor& b, const at::Tensor& lengths,
                                   c10::SymInt num_pairs, int64_t shift_win) {
  return PairSum::apply(a, b, lengths, std::move(num_pairs), shift_win);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shift_pair_nll_autograd(
    const at::Tensor& a, const at::Tensor& b, const at::Tensor& sentiment, const at::Tensor& lengths,
    int64_t shift_win, bool with_grad) {
  const variable_list o = PairNll::apply(a, b, sentiment, lengths, shift_win, with_grad);
  return {o[0], o[1], o[2], o[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, Autograd, m) {
  m.impl("window_norm", &window_norm_autograd);
  m.impl("window_norm_backward", &window_norm_backward_autograd);
  m.impl("window_spmm", &window_spmm_autograd);
  m.impl("window_spmm_backward", &window_spmm_backward_autograd);
  m.impl("shift_pair_sum", &shift_pair_sum_autograd);
  m.impl("shift_pair_sum_backward", &shift_pair_sum_backward_autograd);
  m.impl("shift_pair_nll", &shift_pair_nll_autograd);
}

}  // namespace graphsmile
