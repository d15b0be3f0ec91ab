// Autograd of the window ops (window_norm, window_spmm), registered in C++ for every device
// (the Autograd alias key), torchvision-style: the forward op runs below autograd and saves
// what its backward op needs; the backward op is called through the dispatcher.
//
// Why C++ rather than torch.library.register_autograd (which the shift ops keep, in
// graphsmile/ops/_registry.py): these two ops are called once per graph layer, 24 times per
// forward of the IEMOCAP preset and as many times in the backward, and a training step of
// that size on a GPU is bound by host time, not by the kernels. The Python autograd path costs
// about 40 us per forward call and 70 us per backward call on the host (bench/host.py); this
// one a few microseconds.
//
// Double backward: the backward kernels are not differentiable. Each backward op has an
// autograd kernel of its own whose outputs, under create_graph=True, carry a node that raises a
// clear error when differentiated (first-order gradients are unchanged), as the Python
// version in graphsmile/ops/_grad.py does for the other ops.
//
// torch.compile traces through these kernels (the ops below them have fake implementations,
// graphsmile/ops/_registry.py). torch.func transforms do not support C++ autograd functions:
// they raise, and backend="reference" is the twice-differentiable, transformable path.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <array>
#include <string>
#include <vector>

namespace graphsmile {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::Variable;
using torch::autograd::variable_list;

using NormFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t, int64_t, int64_t, int64_t);
using NormBackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                  int64_t, int64_t, int64_t);
using SpmmFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                          int64_t, int64_t);
using SpmmBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&, int64_t, int64_t, int64_t,
                                                                       int64_t, std::array<bool, 3>);

// The handle of a registered op, looked up where it is called, once (a function-local static:
// the schemas are registered before any call can reach these kernels).
template <typename Fn>
c10::TypedOperatorHandle<Fn> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

// The same words as graphsmile/ops/_grad.py's message for the Python-registered ops.
[[noreturn]] void refuse_double_backward(const char* op) {
  TORCH_CHECK(false, "graphsmile: the gradient of ", op,
              " cannot be differentiated again (double backward): on the cpu, cuda and triton backends its "
              "backward runs kernels that autograd cannot see through. Use backend='reference' (plain torch, "
              "twice differentiable) for higher-order gradients.");
}

// The integer arguments every window op shares, kept in the context between the passes.
void save_graph_args(AutogradContext* ctx, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  ctx->saved_data["graph"] = std::vector<int64_t>{M, wp, wf, mode};
}
std::array<int64_t, 4> graph_args(AutogradContext* ctx) {
  const auto v = ctx->saved_data["graph"].toIntVector();
  return {v[0], v[1], v[2], v[3]};
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
    // A gradient the mask left out is undefined; autograd wants a tensor in every output slot,
    // so it becomes an empty placeholder the op's own autograd kernel never hands on.
    variable_list out{gx, gw, gs};
    for (auto& t : out) {
      if (!t.defined()) {
        t = at::empty({0}, x.options());
        ctx->mark_non_differentiable({t});
      }
    }
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

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, Autograd, m) {
  m.impl("window_norm", &window_norm_autograd);
  m.impl("window_norm_backward", &window_norm_backward_autograd);
  m.impl("window_spmm", &window_spmm_autograd);
  m.impl("window_spmm_backward", &window_spmm_backward_autograd);
}

}  // namespace graphsmile
