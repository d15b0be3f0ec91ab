// Self-test of the emulator (cuda_emu.h): toy kernels that must be caught (race, stale shared
// memory, divergent barrier, deadlock, shuffle with an exited lane, out-of-bounds read) or
// computed exactly (shuffles, the real group_sum of kernels/cuda_common.cuh).
//
//   selftest NAME POLICY     prints the kernel's output (one value per line) or fails.
#define CUDA_EMU_SHARED_PREFIX "_ZZN7emutest"
#include "cuda_emu.h"

#include <string>

#include "cuda_common.cuh"

namespace emutest {

// out[t] = value of lane (t ^ m) under width w, for every laneMask m in [0, 32) and width w.
__global__ void shfl_kernel(int* out) {
  const int lane = threadIdx.x & 31;
  int k = 0;
  for (int w = 1; w <= 32; w *= 2)
    for (int m = 0; m < 32; ++m) out[(k++) * 64 + threadIdx.x] = __shfl_xor_sync(0xffffffffu, 100 * (threadIdx.x >> 5) + lane, m, w);
}

// The butterfly of the real kernels: every lane of a group ends with the group's sum.
__global__ void group_sum_kernel(double* out) {
  const double v = 1.0 + threadIdx.x;
  out[threadIdx.x] = graphsmile::gpu::group_sum(v, 32);
  out[64 + threadIdx.x] = graphsmile::gpu::group_sum(v, 16);
  out[128 + threadIdx.x] = graphsmile::gpu::group_sum(v, 8);
}

// Missing __syncthreads between the write and the neighbour's read.
__global__ void race_kernel(float* out) {
  __shared__ float sh[64];
  sh[threadIdx.x] = static_cast<float>(threadIdx.x);
  out[threadIdx.x] = sh[(threadIdx.x + 1) % 64];
}

// The same with the barrier: no race.
__global__ void norace_kernel(float* out) {
  __shared__ float sh[64];
  sh[threadIdx.x] = static_cast<float>(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = sh[(threadIdx.x + 1) % 64];
}

// Thread 0 writes the shared value only in block 0; block 1 must not see it.
__global__ void stale_kernel(float* out) {
  __shared__ float sh[1];
  if (blockIdx.x == 0 && threadIdx.x == 0) sh[0] = 1.0f;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = sh[0];
}

__global__ void divergent_sync_kernel(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void deadlock_kernel(float* out) {
  float v = 1.0f;
  if (threadIdx.x == 0) __syncthreads();
  else v = __shfl_xor_sync(0xffffffffu, v, 1, 32);
  out[threadIdx.x] = v;
}

__global__ void shfl_exited_kernel(float* out) {
  if (threadIdx.x == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1, 32);
}

__global__ void oob_kernel(const float* in, float* out) { out[threadIdx.x] = in[threadIdx.x + 1]; }

}  // namespace emutest

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  const std::string name = argv[1];
  cuda_emu::set_policy(std::stoi(argv[2]));
  using namespace emutest;
  auto print = [](const auto& v) {
    for (auto x : v) std::printf("%.17g\n", static_cast<double>(x));
  };
  if (name == "shfl") {
    std::vector<int> out(6 * 32 * 64, -1);
    cuda_emu::launch("shfl_kernel", dim3(1), dim3(64), [&] { shfl_kernel(out.data()); });
    print(out);
  } else if (name == "group_sum") {
    std::vector<double> out(192);
    cuda_emu::launch("group_sum_kernel", dim3(1), dim3(64), [&] { group_sum_kernel(out.data()); });
    print(out);
  } else if (name == "race" || name == "norace") {
    std::vector<float> out(64);
    cuda_emu::launch(name.c_str(), dim3(1), dim3(64), [&] { (name == "race" ? race_kernel : norace_kernel)(out.data()); });
    print(out);
  } else if (name == "stale") {
    std::vector<float> out(2);
    cuda_emu::launch("stale_kernel", dim3(2), dim3(32), [&] { stale_kernel(out.data()); });
    print(out);
  } else if (name == "divergent_sync" || name == "deadlock" || name == "shfl_exited") {
    std::vector<float> out(64);
    auto k = name == "divergent_sync" ? divergent_sync_kernel : name == "deadlock" ? deadlock_kernel : shfl_exited_kernel;
    cuda_emu::launch(name.c_str(), dim3(1), dim3(64), [&] { k(out.data()); });
    print(out);
  } else if (name == "oob") {
    std::vector<float> in(32, 1.0f), out(32);
    cuda_emu::launch("oob_kernel", dim3(1), dim3(32), [&] { oob_kernel(in.data(), out.data()); });
    print(out);
  } else {
    return 2;
  }
  return 0;
}
