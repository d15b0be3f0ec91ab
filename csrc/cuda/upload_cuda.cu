// graphsmile::upload_by_value: a small int64 table from the host to a CUDA device by value, in
// the arguments of gpu::write_param_chunk_kernel launches (kernels/cuda_common.cuh), on the
// current stream. The C++ launchers send their per-batch metadata this way (cuda_host::upload_meta);
// this op is the same path for the Python side (graphsmile.ops.index.host_to_device), which uses
// it while a CUDA graph is being captured: the graph keeps the values, and a replay reads no
// host memory.
#include <torch/library.h>

#include "cuda_utils.h"

namespace graphsmile {
namespace {

at::Tensor upload_by_value(const at::Tensor& values, at::Device device) {
  TORCH_CHECK_VALUE(values.device().is_cpu(), "graphsmile: upload_by_value: values must be a CPU tensor, got one on ",
                    values.device());
  TORCH_CHECK_TYPE(values.scalar_type() == at::kLong, "graphsmile: upload_by_value: values must be int64, got ",
                   values.scalar_type());
  TORCH_CHECK_VALUE(values.dim() == 1, "graphsmile: upload_by_value: values must be 1-D, got shape ", values.sizes());
  TORCH_CHECK_VALUE(device.is_cuda(), "graphsmile: upload_by_value: device must be a CUDA device, got ", device);
  // "cuda" without an index: the current device, as torch's factories read it
  if (!device.has_index()) device = at::Device(at::kCUDA, c10::cuda::current_device());
  const at::Tensor v = values.contiguous();
  c10::cuda::CUDAGuard guard(device);
  at::Tensor dev = at::empty({v.numel()}, at::TensorOptions().dtype(at::kLong).device(device));
  // by value whatever the size: the caller wants a capturable upload
  cuda_host::write_by_value(v.data_ptr<int64_t>(), v.numel(), dev.data_ptr<int64_t>(),
                            at::cuda::getCurrentCUDAStream(device.index()));
  return dev;
}

}  // namespace
}  // namespace graphsmile

// The input is a CPU tensor and the output a CUDA one, so the kernel is not registered for a
// backend key: CompositeExplicitAutograd serves every input (int64, no gradient).
TORCH_LIBRARY_IMPL(graphsmile, CompositeExplicitAutograd, m) {
  m.impl("upload_by_value", &graphsmile::upload_by_value);
}
