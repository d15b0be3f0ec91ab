// Typed handles of the registered graphsmile ops, for C++ code that calls them through the
// dispatcher (csrc/autograd.cpp, below autograd; csrc/api.cpp, above it). The signatures are
// those of the schemas in csrc/graphsmile.cpp.
#pragma once
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <tuple>

namespace graphsmile {
namespace ops {

using NormFn = at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t, int64_t, int64_t, int64_t);
using NormBackwardFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t,
                                  int64_t, int64_t, int64_t);
using SpmmFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t,
                          int64_t, int64_t);
using SpmmBackwardFn = std::tuple<at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&, const at::Tensor&,
                                                                       const at::Tensor&, int64_t, int64_t, int64_t,
                                                                       int64_t, std::array<bool, 3>);
using PairSumFn = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t);
using PairSumBackwardFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, c10::SymInt, int64_t,
                                                             std::array<bool, 2>);
using PairNllFn = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                             const at::Tensor&, const at::Tensor&,
                                                                             int64_t, bool);

// The handle of a registered op. Callers keep it in a function-local static, looked up once:
// the schemas are registered when the library loads, before any call can reach them.
template <typename Fn>
c10::TypedOperatorHandle<Fn> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

}  // namespace ops
}  // namespace graphsmile
