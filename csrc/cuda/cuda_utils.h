// Host-side helpers of the CUDA launchers (csrc/cuda/*.cu): device checks with messages that
// name the argument, the upload of per-dialogue metadata, launch-size checks.
#pragma once
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <climits>
#include <initializer_list>
#include <vector>

#include "../window_common.h"

namespace graphsmile {
namespace cuda_host {

inline void check_cuda(const at::Tensor& t, const char* name) {
  check_kernel_device(t, name, c10::DeviceType::CUDA);
}

// The arrays, one after the other, as one int64 tensor on `device`: written into pinned host
// memory (torch's caching host allocator, which keeps the block alive until the copy is done)
// and copied asynchronously on the current stream.
inline at::Tensor upload_meta(std::initializer_list<const std::vector<int64_t>*> arrays, const at::Device& device) {
  int64_t n = 0;
  for (const auto* v : arrays) n += static_cast<int64_t>(v->size());
  at::Tensor host = at::empty({n}, at::TensorOptions().dtype(at::kLong).pinned_memory(true));
  int64_t* h = host.data_ptr<int64_t>();
  for (const auto* v : arrays) h = std::copy(v->begin(), v->end(), h);
  at::Tensor dev = at::empty({n}, at::TensorOptions().dtype(at::kLong).device(device));
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
