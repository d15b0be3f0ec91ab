// Host-side helpers of the CUDA launchers (csrc/cuda/*.cu): device checks with messages that
// name the argument, the upload of per-dialogue metadata, launch-size checks.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGraphsC10Utils.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <vector>

#include "../window_common.h"
#include "../../kernels/cuda_common.cuh"

namespace graphsmile {
namespace cuda_host {

inline void check_cuda(const at::Tensor& t, const char* name) {
  check_kernel_device(t, name, c10::DeviceType::CUDA);
}

// Metadata of at most this many int64 values goes by value (gpu::write_param_chunk_kernel, two
// launches at most); more goes through pinned memory, unless the stream is being captured.
constexpr int64_t kByValueMaxValues = 2 * gpu::kParamChunkValues;

// Whether work queued on the current stream is being captured into a CUDA graph.
inline bool capturing_current_stream() {
  return c10::cuda::currentStreamCaptureStatusMayInitCtx() != c10::cuda::CaptureStatus::None;
}

// dst[0, n) = values[0, n) (dst in device memory), written on `stream` by kernels whose
// arguments carry the values (gpu::write_param_chunk_kernel, one launch per 480 values).
inline void write_by_value(const int64_t* values, int64_t n, int64_t* dst, cudaStream_t stream) {
  gpu::for_each_param_chunk(values, n, [&](const gpu::ParamChunk& chunk, int64_t offset) {
    gpu::write_param_chunk_kernel<><<<1, gpu::kParamChunkThreads, 0, stream>>>(chunk, dst + offset);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

// The arrays, one after the other, as one int64 tensor on `device`, written on the current stream
// (ordered before the kernels that read it, no host sync):
// - up to kByValueMaxValues values, and any number while the stream is being captured: by value,
//   in the arguments of write_param_chunk_kernel launches. A CUDA graph keeps those arguments,
//   so a replay rewrites the buffer (from the graph's own memory pool) with the same values and
//   reads no host memory; this is what makes the ops capturable (torch.cuda.graph).
// - otherwise: written into pinned host memory (torch's caching host allocator, which keeps the
//   block alive until the copy is done) and copied asynchronously.
inline at::Tensor upload_meta(std::initializer_list<const std::vector<int64_t>*> arrays, const at::Device& device) {
  std::vector<int64_t> all;
  for (const auto* v : arrays) all.insert(all.end(), v->begin(), v->end());
  const int64_t n = static_cast<int64_t>(all.size());
  c10::cuda::CUDAGuard guard(device);
  at::Tensor dev = at::empty({n}, at::TensorOptions().dtype(at::kLong).device(device));
  if (n == 0) return dev;
  if (n <= kByValueMaxValues || capturing_current_stream()) {
    write_by_value(all.data(), n, dev.data_ptr<int64_t>(), at::cuda::getCurrentCUDAStream(device.index()));
    return dev;
  }
  at::Tensor host = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  std::copy(all.begin(), all.end(), host.data_ptr<int64_t>());
  dev.copy_(host, /*non_blocking=*/true);
  return dev;
}

// ceil(a / b) for a >= 0, b > 0.
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline unsigned int grid_x(int64_t blocks, const char* what) {
  TORCH_CHECK(blocks <= static_cast<int64_t>(INT_MAX), "graphsmile: ", what, " needs ", blocks,
              " thread blocks, more than a CUDA grid holds (2^31 - 1); use smaller batches");
  return static_cast<unsigned int>(blocks);
}

inline unsigned int grid_y(int64_t blocks, const char* what) {
  TORCH_CHECK(blocks <= 65535, "graphsmile: ", what, " needs ", blocks,
              " thread blocks along grid.y (at most 65535)");
  return static_cast<unsigned int>(blocks);
}

// Accumulation dtype of the temp buffers: double for double inputs, float otherwise.
inline at::ScalarType acc_dtype(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

}  // namespace cuda_host
}  // namespace graphsmile
