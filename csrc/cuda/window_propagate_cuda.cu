// CUDA launchers of windowed cross-modal propagation (SPEC 3 and 5): the same ops, argument
// checks and semantics as csrc/cpu/window_propagate_cpu.cpp; the device code (tiling, shared
// memory staging, determinism) is described in kernels/window_propagate.cuh.
//
// `lengths` is read on the host (make_window_meta; a CUDA tensor is copied); the per-dialogue
// offsets (start, length, band, edge_base) go to the device as one int64 tensor, and the
// kernels map rows to dialogues by binary search over the starts.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <tuple>
#include <type_traits>

#include "cuda_utils.h"
#include "../../kernels/window_propagate.cuh"

namespace graphsmile {
namespace {

using cuda_host::ceil_div;

#define GS_CUDA_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// wmma fragment type of a 16-bit storage type (void: no tensor-core kernel for it).
template <typename scalar_t>
struct TensorCoreType {
  using type = void;
};
template <>
struct TensorCoreType<at::Half> {
  using type = __half;
};
template <>
struct TensorCoreType<at::BFloat16> {
  using type = __nv_bfloat16;
};

// Whether the tensor-core kernels' code for the current device was compiled for sm_80 or newer.
// The device's own capability is not enough: a build for "7.5+PTX" runs on an sm_90 GPU through
// PTX compiled with __CUDA_ARCH__ = 750, where those kernels are a __trap() (see the #if in
// kernels/window_propagate.cuh). ptxVersion is the virtual architecture the loaded code came from;
// every tensor-core kernel is in this translation unit, so one kernel answers for all of them.
bool tensor_core_code_loaded(int device) {
  constexpr int kMaxDevices = 64;
  static std::array<std::atomic<int8_t>, kMaxDevices> known{};  // 0 unknown, 1 yes, -1 no
  if (device < 0 || device >= kMaxDevices) return false;
  int8_t v = known[device].load(std::memory_order_relaxed);
  if (v == 0) {
    cudaFuncAttributes attr;
    const cudaError_t err = cudaFuncGetAttributes(&attr, gpu::window_spmm_forward_tc_kernel<at::Half, __half>);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();  // not a sticky error: clear it, the FFMA kernels run instead
      v = -1;
    } else {
      v = attr.ptxVersion >= 80 ? 1 : -1;
    }
    known[device].store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

// fp16/bf16 band GEMMs on tensor cores (window_spmm_forward_tc_kernel and backward passes A and B,
// window_spmm_cols_tc_kernel, window_spmm_rows_tc_kernel) on sm_80 and newer, when this build has
// sm_80+ code for the device, unless GRAPHSMILE_CUDA_TENSOR_CORES=0 (read once; the FFMA kernel
// then runs, e.g. to compare them). Called under the device guard of x's device.
bool tensor_cores_for(const at::Tensor& x) {
  static const bool enabled = [] {
    const char* e = std::getenv("GRAPHSMILE_CUDA_TENSOR_CORES");
    return e == nullptr || std::strcmp(e, "0") != 0;
  }();
  return enabled && at::cuda::getDeviceProperties(x.get_device())->major >= 8 &&
         tensor_core_code_loaded(x.get_device());
}

// The integer in environment variable `name` (read on every call), `fallback` when unset or
// empty; an error naming the variable unless it is an integer from lo to hi.
int64_t env_int(const char* name, int64_t fallback, int64_t lo, int64_t hi, const char* alternative = nullptr) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return fallback;
  char* end = nullptr;
  const long long v = std::strtoll(e, &end, 10);
  TORCH_CHECK_VALUE(*end == '\0' && v >= lo && v <= hi, "graphsmile: the environment variable ", name,
                    " must be an integer from ", lo, " to ", hi, alternative ? " " : "", alternative ? alternative : "",
                    ", got '", e, "'");
  return v;
}

// Feature tiles per block of the tensor-core forward (window_spmm_forward_tc_kernel: the band's
// coefficients staged once for all of them): gpu::kTcDTiles, or GRAPHSMILE_CUDA_TC_DTILES (1
// restages them for every tile, as before, to compare).
int64_t tc_feature_tiles() { return env_int("GRAPHSMILE_CUDA_TC_DTILES", gpu::kTcDTiles, 1, 64); }

// Feature tiles per block of the staged fp32/fp64 forward and backward pass A
// (window_spmm_forward_staged_kernel, window_spmm_cols_staged_kernel: coefficients staged once for
// all of their tiles, x / grad_y with 16-byte loads), from GRAPHSMILE_CUDA_FFMA_DTILES; any n > 0
// also runs pass B staged (window_spmm_rows_staged_kernel: 16-byte loads). Unset, empty or 0: the
// original FFMA kernels, the default until a GPU run has timed them side by side.
int64_t ffma_feature_tiles() { return env_int("GRAPHSMILE_CUDA_FFMA_DTILES", 0, 0, 64); }

// Backward pass B split over the features (window_spmm_rows_split_kernel + _finish_kernel, fp32 /
// fp64): GRAPHSMILE_CUDA_ROWS_FSPLIT = f, 32-feature steps per block, or "auto" (by the size of
// the pass: gpu::rows_auto_feature_steps, split only below 512 row tiles). Unset, empty or 0:
// unsplit. For small batches, whose pass B has few blocks; opt-in until measured.
int64_t rows_feature_split(int64_t row_tiles, int64_t D) {
  const char* e = std::getenv("GRAPHSMILE_CUDA_ROWS_FSPLIT");
  if (e != nullptr && std::strcmp(e, "auto") == 0) return gpu::rows_auto_feature_steps(row_tiles, D);
  return env_int("GRAPHSMILE_CUDA_ROWS_FSPLIT", 0, 0, 1024, "or 'auto'");
}

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls launch(TypeTag<tc_t>{}) with tc_t the wmma fragment type of scalar_t and returns true;
// returns false without launching where scalar_t has none (fp32, fp64: the FFMA kernels run).
template <typename scalar_t, typename Launch>
bool with_tensor_core_type(Launch&& launch) {
  using tc_t = typename TensorCoreType<scalar_t>::type;
  if constexpr (std::is_same_v<tc_t, void>) {
    return false;
  } else {
    launch(TypeTag<tc_t>{});
    return true;
  }
}

// The metadata on the device; `buf` owns the memory the pointers of `args` point into.
struct DeviceWindowMeta {
  at::Tensor buf;
  gpu::WindowArgs args;
};

DeviceWindowMeta upload_window_meta(const WindowMeta& meta, int64_t M, int64_t wp, int64_t wf, int64_t mode,
                                    const at::Device& device) {
  DeviceWindowMeta d;
  d.buf = cuda_host::upload_meta({&meta.start, &meta.length, &meta.band, &meta.edge_base}, device);
  const int64_t B = meta.num_dialogues;
  const int64_t* p = d.buf.data_ptr<int64_t>();
  d.args.start = p;
  d.args.length = p + B;
  d.args.band = p + 2 * B;
  d.args.edge_base = p + 3 * B;
  d.args.B = B;
  d.args.N = meta.num_nodes;
  d.args.M = M;
  d.args.wp = wp;
  d.args.wf = wf;
  d.args.mode = mode;
  return d;
}

// Launches the relative-mode reduction: out[q] = sum of the per-edge values of table entry q.
template <typename scalar_t, typename acc_t, typename Edges>
void launch_relative_reduce(const Edges& edges, scalar_t* out, const gpu::WindowArgs& args, int64_t entries,
                            cudaStream_t stream) {
  gpu::relative_reduce_kernel<scalar_t, acc_t, Edges>
      <<<cuda_host::grid_x(entries, "the relative-weight reduction"), gpu::kReduceThreads, 0, stream>>>(edges, out,
                                                                                                         args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Whether the staged kernels may stage rows of these [*, D] tensors with 16-byte loads: D a
// multiple of 4 and every tensor 16-byte aligned, so that every row start is.
bool vec_loads(int64_t D, std::initializer_list<const at::Tensor*> tensors) {
  if (D % 4 != 0) return false;
  for (const at::Tensor* t : tensors)
    if (reinterpret_cast<uintptr_t>(t->data_ptr()) % 16 != 0) return false;
  return true;
}

// The staged fp32/fp64 kernels' launches (GRAPHSMILE_CUDA_FFMA_DTILES, GRAPHSMILE_CUDA_ROWS_FSPLIT).
// Function templates, so that `if constexpr` drops them for 16-bit storage, whose pointers do not
// fit the kernels' single type T: in the dispatch lambda, not a template, both branches compile.
// Each returns whether it launched.
template <typename scalar_t>
bool launch_forward_staged(const at::Tensor& x, const at::Tensor& w, const at::Tensor& s, const at::Tensor& y,
                           const gpu::WindowArgs& args, int64_t D, unsigned int row_blocks, cudaStream_t stream) {
  if constexpr (!std::is_same<scalar_t, at::opmath_type<scalar_t>>::value) {
    return false;
  } else {
    const int64_t d_tiles = ffma_feature_tiles();
    if (d_tiles <= 0) return false;
    const dim3 grid(row_blocks, cuda_host::grid_y(ceil_div(D, gpu::kTileD * d_tiles), "window_spmm (feature tiles)"));
    const bool vec = vec_loads(D, {&x});
    gpu::window_spmm_forward_staged_kernel<scalar_t><<<grid, gpu::kSpmmThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), args, D,
        d_tiles, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  }
}

template <typename scalar_t, typename acc_t>
bool launch_cols_staged(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& s,
                        scalar_t* gx_ptr, acc_t* colpart_ptr, const gpu::WindowArgs& args, int64_t D,
                        unsigned int row_tiles, cudaStream_t stream) {
  if constexpr (!std::is_same<scalar_t, acc_t>::value) {
    return false;
  } else {
    const int64_t d_tiles = ffma_feature_tiles();
    if (d_tiles <= 0) return false;
    const dim3 grid(row_tiles, cuda_host::grid_y(ceil_div(D, gpu::kTileD * d_tiles), "window_spmm_backward (feature tiles)"));
    const bool vec = vec_loads(D, {&g});
    gpu::window_spmm_cols_staged_kernel<scalar_t><<<grid, gpu::kSpmmThreads, 0, stream>>>(
        g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gx_ptr,
        colpart_ptr, args, D, d_tiles, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  }
}

// Pass B: split over the features (GRAPHSMILE_CUDA_ROWS_FSPLIT), else staged (..._FFMA_DTILES).
template <typename scalar_t, typename acc_t>
bool launch_rows_staged(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w, const at::Tensor& s,
                        scalar_t* gw_ptr, acc_t* tmp_ptr, const acc_t* colpart_ptr, int64_t n_colpart,
                        scalar_t* gs_ptr, const gpu::WindowArgs& args, int64_t D, int64_t num_edges,
                        unsigned int row_tiles, cudaStream_t stream) {
  if constexpr (!std::is_same<scalar_t, acc_t>::value) {
    return false;
  } else {
    const bool vec = vec_loads(D, {&g, &x});
    const int64_t f_steps = D == 0 ? 0 : rows_feature_split(row_tiles, D);
    if (f_steps > 0) {
      const int64_t splits = ceil_div(D, f_steps * gpu::kDotD);
      const int64_t E = std::max<int64_t>(num_edges, 1);
      at::Tensor part = at::empty({checked_mul(splits, E, "the split pass B's partial dots")}, g.options());
      const dim3 split_grid(row_tiles, cuda_host::grid_y(splits, "window_spmm_backward (feature splits)"));
      gpu::window_spmm_rows_split_kernel<scalar_t><<<split_grid, gpu::kDotThreads, 0, stream>>>(
          g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), part.data_ptr<scalar_t>(), E, args, D, f_steps, vec);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const unsigned int blocks = cuda_host::grid_x(ceil_div(args.M * args.N, gpu::kNormWarps), "window_spmm_backward");
      gpu::window_spmm_rows_finish_kernel<scalar_t><<<blocks, gpu::kNormWarps * 32, 0, stream>>>(
          part.data_ptr<scalar_t>(), splits, E, w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gw_ptr, tmp_ptr,
          colpart_ptr, n_colpart, gs_ptr, args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return true;
    }
    if (ffma_feature_tiles() <= 0) return false;
    gpu::window_spmm_rows_staged_kernel<scalar_t><<<row_tiles, gpu::kDotThreads, 0, stream>>>(
        g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gw_ptr, tmp_ptr,
        colpart_ptr, n_colpart, gs_ptr, args, D, vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return true;
  }
}

at::Tensor window_norm_cuda(const at::Tensor& edge_weight, const at::Tensor& lengths, int64_t num_nodes, int64_t M,
                            int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta = check_norm_inputs(edge_weight, lengths, num_nodes, M, wp, wf, mode, c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(edge_weight.device());
  const at::Tensor w = edge_weight.contiguous();
  const int64_t rows = M * meta.num_nodes;
  at::Tensor s = at::empty({rows}, w.options());
  DeviceWindowMeta dm = upload_window_meta(meta, M, wp, wf, mode, w.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int blocks = cuda_host::grid_x(ceil_div(rows, gpu::kNormWarps), "window_norm");
  GS_CUDA_DISPATCH(w.scalar_type(), "window_norm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gpu::window_norm_kernel<scalar_t, acc_t>
        <<<blocks, gpu::kNormWarps * 32, 0, stream>>>(w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), dm.args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return s;
}

at::Tensor window_norm_backward_cuda(const at::Tensor& grad_norm, const at::Tensor& norm,
                                     const at::Tensor& edge_weight, const at::Tensor& lengths, int64_t M,
                                     int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta =
      check_norm_backward_inputs(grad_norm, norm, edge_weight, lengths, M, wp, wf, mode, c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(edge_weight.device());
  const at::Tensor gs = grad_norm.contiguous(), s = norm.contiguous();
  at::Tensor gw = at::empty_like(edge_weight, at::MemoryFormat::Contiguous);
  DeviceWindowMeta dm = upload_window_meta(meta, M, wp, wf, mode, edge_weight.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t rows = M * meta.num_nodes;
  if (mode == kPerEdge && gw.numel() > meta.num_edges) {
    gw.view(-1).narrow(0, meta.num_edges, gw.numel() - meta.num_edges).zero_();  // unused entries
  }
  const at::Tensor w = edge_weight.contiguous();
  const unsigned int blocks = cuda_host::grid_x(ceil_div(rows, gpu::kNormWarps), "window_norm_backward");
  GS_CUDA_DISPATCH(edge_weight.scalar_type(), "window_norm_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (mode == kPerEdge) {
      gpu::window_norm_grad_per_edge_kernel<scalar_t, acc_t><<<blocks, gpu::kNormWarps * 32, 0, stream>>>(
          gs.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), dm.args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else if constexpr (gpu::kRecomputeNorm<scalar_t, acc_t>) {
      // fp16/bf16: the norm recomputed unrounded (gpu::kRecomputeNorm), [M * N] in acc_t
      at::Tensor s_acc = at::empty({rows}, w.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
      if (rows > 0) {
        gpu::window_norm_kernel<scalar_t, acc_t, acc_t><<<blocks, gpu::kNormWarps * 32, 0, stream>>>(
            w.data_ptr<scalar_t>(), s_acc.data_ptr<acc_t>(), dm.args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      gpu::NormGradEdges<scalar_t, acc_t, acc_t> edges{s_acc.data_ptr<acc_t>(), gs.data_ptr<scalar_t>()};
      launch_relative_reduce<scalar_t, acc_t>(edges, gw.data_ptr<scalar_t>(), dm.args, gw.numel(), stream);
    } else {
      gpu::NormGradEdges<scalar_t, acc_t> edges{s.data_ptr<scalar_t>(), gs.data_ptr<scalar_t>()};
      launch_relative_reduce<scalar_t, acc_t>(edges, gw.data_ptr<scalar_t>(), dm.args, gw.numel(), stream);
    }
  });
  return gw.view(edge_weight.sizes());
}

at::Tensor window_spmm_cuda(const at::Tensor& x_, const at::Tensor& edge_weight, const at::Tensor& norm,
                            const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode) {
  WindowMeta meta = check_spmm_inputs(x_, edge_weight, norm, lengths, M, wp, wf, mode, c10::DeviceType::CUDA);
  c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor x = x_.contiguous(), w = edge_weight.contiguous(), s = norm.contiguous();
  at::Tensor y = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (y.numel() == 0) return y;
  const int64_t N = meta.num_nodes, D = x.size(1);
  DeviceWindowMeta dm = upload_window_meta(meta, M, wp, wf, mode, x.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const dim3 grid(cuda_host::grid_x(M * ceil_div(N, gpu::kTileRows), "window_spmm"),
                  cuda_host::grid_y(ceil_div(D, gpu::kTileD), "window_spmm (feature tiles)"));
  const bool tc = tensor_cores_for(x);
  GS_CUDA_DISPATCH(x.scalar_type(), "window_spmm_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool launched = tc && with_tensor_core_type<scalar_t>([&](auto tag) {
      const int64_t d_tiles = tc_feature_tiles();
      const dim3 tc_grid(grid.x, cuda_host::grid_y(ceil_div(D, gpu::kTileD * d_tiles), "window_spmm (feature tiles)"));
      gpu::window_spmm_forward_tc_kernel<scalar_t, typename decltype(tag)::type><<<tc_grid, gpu::kSpmmThreads, 0, stream>>>(
          x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), dm.args, D,
          d_tiles);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (launched) return;
    if (launch_forward_staged<scalar_t>(x, w, s, y, dm.args, D, grid.x, stream)) return;
    gpu::window_spmm_forward_kernel<scalar_t, acc_t><<<grid, gpu::kSpmmThreads, 0, stream>>>(
        x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), dm.args, D);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_spmm_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& x_, const at::Tensor& edge_weight, const at::Tensor& norm,
    const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode, std::array<bool, 3> mask) {
  WindowMeta meta = check_spmm_inputs(x_, edge_weight, norm, lengths, M, wp, wf, mode, c10::DeviceType::CUDA, &grad_y);
  c10::cuda::CUDAGuard guard(x_.device());
  const at::Tensor g = grad_y.contiguous(), x = x_.contiguous(), w = edge_weight.contiguous(), s = norm.contiguous();
  const bool need_gx = mask[0], need_gw = mask[1], need_gs = mask[2];
  const int64_t N = meta.num_nodes, D = x.size(1), rows = M * N;
  at::Tensor gx, gw, gs;
  if (need_gx) gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (need_gw) gw = at::empty_like(w, at::MemoryFormat::Contiguous);
  if (need_gs) gs = at::empty({rows}, s.options());
  if (!need_gx && !need_gw && !need_gs) return {gx, gw, gs};
  if (need_gw && mode == kPerEdge && gw.numel() > meta.num_edges) {
    gw.view(-1).narrow(0, meta.num_edges, gw.numel() - meta.num_edges).zero_();  // unused entries
  }
  const at::ScalarType acc_type = cuda_host::acc_dtype(x.scalar_type());
  const int64_t n_dtiles = ceil_div(D, gpu::kTileD);
  // grad_norm's column part, one partial per feature tile (summed in a fixed order by pass B).
  at::Tensor colpart;
  if (need_gs && n_dtiles > 0) colpart = at::empty({n_dtiles * rows}, x.options().dtype(acc_type));
  // Per-edge values of the relative mode, reduced per table entry afterwards.
  at::Tensor edge_tmp;
  if (need_gw && mode == kRelative) edge_tmp = at::empty({std::max<int64_t>(meta.num_edges, 1)}, x.options().dtype(acc_type));
  DeviceWindowMeta dm = upload_window_meta(meta, M, wp, wf, mode, x.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int row_tiles = cuda_host::grid_x(M * ceil_div(N, gpu::kTileRows), "window_spmm_backward");
  const bool tc = tensor_cores_for(x);
  GS_CUDA_DISPATCH(x.scalar_type(), "window_spmm_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    acc_t* colpart_ptr = colpart.defined() ? colpart.data_ptr<acc_t>() : nullptr;
    // Pass A (columns): grad_x and the column part of grad_norm.
    if ((need_gx || need_gs) && D > 0) {
      const dim3 grid(row_tiles, cuda_host::grid_y(n_dtiles, "window_spmm_backward (feature tiles)"));
      scalar_t* gx_ptr = need_gx ? gx.data_ptr<scalar_t>() : nullptr;
      const bool launched = tc && with_tensor_core_type<scalar_t>([&](auto tag) {
        gpu::window_spmm_cols_tc_kernel<scalar_t, typename decltype(tag)::type><<<grid, gpu::kSpmmThreads, 0, stream>>>(
            g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gx_ptr,
            colpart_ptr, dm.args, D);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      const bool staged = !launched && launch_cols_staged<scalar_t, acc_t>(g, x, w, s, gx_ptr, colpart_ptr, dm.args, D,
                                                                           row_tiles, stream);
      if (!launched && !staged) {
        gpu::window_spmm_cols_kernel<scalar_t, acc_t><<<grid, gpu::kSpmmThreads, 0, stream>>>(
            g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gx_ptr,
            colpart_ptr, dm.args, D);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    // Pass B (rows): per-edge dots -> grad_edge_weight and the row part of grad_norm.
    if (need_gw || need_gs) {
      scalar_t* gw_ptr = need_gw && mode == kPerEdge ? gw.data_ptr<scalar_t>() : nullptr;
      acc_t* tmp_ptr = edge_tmp.defined() ? edge_tmp.data_ptr<acc_t>() : nullptr;
      const int64_t n_colpart = colpart.defined() ? n_dtiles : 0;
      scalar_t* gs_ptr = need_gs ? gs.data_ptr<scalar_t>() : nullptr;
      const bool launched = tc && with_tensor_core_type<scalar_t>([&](auto tag) {
        gpu::window_spmm_rows_tc_kernel<scalar_t, typename decltype(tag)::type>
            <<<row_tiles, gpu::kSpmmThreads, 0, stream>>>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                         w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gw_ptr, tmp_ptr,
                                                         colpart_ptr, n_colpart, gs_ptr, dm.args, D);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      const bool staged = !launched && launch_rows_staged<scalar_t, acc_t>(g, x, w, s, gw_ptr, tmp_ptr, colpart_ptr,
                                                                           n_colpart, gs_ptr, dm.args, D,
                                                                           meta.num_edges, row_tiles, stream);
      if (!launched && !staged) {
        gpu::window_spmm_rows_kernel<scalar_t, acc_t><<<row_tiles, gpu::kDotThreads, 0, stream>>>(
            g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), gw_ptr,
            tmp_ptr, colpart_ptr, n_colpart, gs_ptr, dm.args, D);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
    if (need_gw && mode == kRelative) {
      gpu::BufferedEdges<acc_t> edges{edge_tmp.data_ptr<acc_t>()};
      launch_relative_reduce<scalar_t, acc_t>(edges, gw.data_ptr<scalar_t>(), dm.args, gw.numel(), stream);
    }
  });
  if (gw.defined()) gw = gw.view(edge_weight.sizes());
  return {gx, gw, gs};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, CUDA, m) {
  m.impl("window_norm", &window_norm_cuda);
  m.impl("window_norm_backward", &window_norm_backward_cuda);
  m.impl("window_spmm", &window_spmm_cuda);
  m.impl("window_spmm_backward", &window_spmm_backward_cuda);
}

}  // namespace graphsmile
