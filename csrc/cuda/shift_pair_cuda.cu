// CUDA launchers of the sentiment-shift pair ops (SPEC 4): shift_pair_sum, its backward and the
// fused shift loss shift_pair_nll, with the same argument checks and semantics as
// csrc/cpu/shift_pair_cpu.cpp; device code in kernels/shift_pair.cuh.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "cuda_utils.h"
#include "../../kernels/shift_pair.cuh"

namespace graphsmile {
namespace {

using cuda_host::ceil_div;
using cuda_host::check_cuda;

struct DeviceShiftMeta {
  at::Tensor buf;
  gpu::ShiftArgs args;
};

DeviceShiftMeta upload_shift_meta(const ShiftMeta& meta, int64_t shift_win, int64_t C, const at::Device& device) {
  DeviceShiftMeta d;
  d.buf = cuda_host::upload_meta({&meta.start, &meta.length, &meta.pair_base}, device);
  const int64_t B = static_cast<int64_t>(meta.length.size());
  const int64_t* p = d.buf.data_ptr<int64_t>();
  d.args.start = p;
  d.args.length = p + B;
  d.args.pair_base = p + 2 * B;
  d.args.B = B;
  d.args.N = meta.num_nodes;
  d.args.shift_win = shift_win;
  d.args.C = C;
  return d;
}

// How many kColSeg-row segments the column kernels need: those of the batch's largest chunk.
int64_t column_segments(const ShiftMeta& meta, int64_t shift_win) {
  int64_t max_chunk = 0;
  for (int64_t L : meta.length) max_chunk = std::max(max_chunk, std::min(shift_chunk(L, shift_win), L));
  return ceil_div(max_chunk, gpu::kColSeg);
}

void check_pair_inputs(const at::Tensor& a, const char* an, const ShiftMeta& meta) {
  check_float_tensor(a, an);
  check_cuda(a, an);
  TORCH_CHECK_VALUE(a.dim() == 2 && a.size(0) == meta.num_nodes, "graphsmile: ", an,
                    " must be [sum(lengths), C] = [", meta.num_nodes, ", C], got shape ", a.sizes());
}

at::Tensor shift_pair_sum_cuda(const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& lengths,
                               int64_t num_pairs, int64_t shift_win) {
  ShiftMeta meta = make_shift_meta(lengths, shift_win);
  check_pair_inputs(a_, "a", meta);
  check_pair_inputs(b_, "b", meta);
  check_same_device(a_, "a", b_, "b");
  TORCH_CHECK_VALUE(a_.sizes() == b_.sizes(), "graphsmile: a and b must have the same shape, got ",
                    a_.sizes(), " and ", b_.sizes());
  check_same_dtype(a_, "a", b_, "b");
  TORCH_CHECK_VALUE(num_pairs == meta.num_pairs, "graphsmile: num_pairs = ", num_pairs,
                    " but lengths and shift_win give ", meta.num_pairs, " pairs");
  c10::cuda::CUDAGuard guard(a_.device());
  const at::Tensor a = a_.contiguous(), b = b_.contiguous();
  const int64_t C = a.size(1);
  at::Tensor out = at::empty({meta.num_pairs, C}, a.options());
  if (out.numel() == 0) return out;
  DeviceShiftMeta dm = upload_shift_meta(meta, shift_win, C, a.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int blocks = cuda_host::grid_x(ceil_div(meta.num_nodes, gpu::kShiftWarps), "shift_pair_sum");
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "shift_pair_sum_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    gpu::shift_pair_sum_kernel<scalar_t, acc_t><<<blocks, gpu::kShiftWarps * 32, 0, stream>>>(
        a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), dm.args);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> shift_pair_sum_backward_cuda(const at::Tensor& grad_, const at::Tensor& lengths,
                                                                int64_t num_nodes, int64_t shift_win,
                                                                std::array<bool, 2> mask) {
  ShiftMeta meta = make_shift_meta(lengths, shift_win);
  check_float_tensor(grad_, "grad");
  check_cuda(grad_, "grad");
  TORCH_CHECK_VALUE(grad_.dim() == 2 && grad_.size(0) == meta.num_pairs, "graphsmile: grad must be [P, C] with P = ",
                    meta.num_pairs, ", got shape ", grad_.sizes());
  TORCH_CHECK_VALUE(num_nodes == meta.num_nodes, "graphsmile: num_nodes = ", num_nodes,
                    " but sum(lengths) = ", meta.num_nodes);
  c10::cuda::CUDAGuard guard(grad_.device());
  const at::Tensor grad = grad_.contiguous();
  const int64_t C = grad.size(1), N = meta.num_nodes;
  at::Tensor ga, gb;
  if (mask[0]) ga = at::empty({N, C}, grad.options());
  if (mask[1]) gb = at::empty({N, C}, grad.options());
  if ((!mask[0] && !mask[1]) || C == 0) return {ga, gb};
  DeviceShiftMeta dm = upload_shift_meta(meta, shift_win, C, grad.device());
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const int64_t nseg = column_segments(meta, shift_win);
  at::Tensor partial;
  if (mask[1] && nseg > 1) partial = at::empty({nseg * N * C}, grad.options().dtype(cuda_host::acc_dtype(grad.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "shift_pair_sum_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (mask[0]) {
      const unsigned int blocks = cuda_host::grid_x(ceil_div(N, gpu::kShiftWarps), "shift_pair_sum_backward");
      gpu::shift_pair_rows_kernel<scalar_t, acc_t><<<blocks, gpu::kShiftWarps * 32, 0, stream>>>(
          grad.data_ptr<scalar_t>(), ga.data_ptr<scalar_t>(), dm.args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (mask[1]) {
      const unsigned int bx = cuda_host::grid_x(ceil_div(N * C, gpu::kShiftThreads), "shift_pair_sum_backward");
      const dim3 grid(bx, cuda_host::grid_y(nseg, "shift_pair_sum_backward (chunk-row segments)"));
      acc_t* partial_ptr = partial.defined() ? partial.data_ptr<acc_t>() : nullptr;
      gpu::shift_pair_cols_kernel<scalar_t, acc_t><<<grid, gpu::kShiftThreads, 0, stream>>>(
          grad.data_ptr<scalar_t>(), gb.data_ptr<scalar_t>(), partial_ptr, dm.args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (partial_ptr != nullptr) {
        gpu::shift_pair_cols_combine_kernel<scalar_t, acc_t><<<bx, gpu::kShiftThreads, 0, stream>>>(
            partial_ptr, gb.data_ptr<scalar_t>(), dm.args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  return {ga, gb};
}

// Which kernels compute the fused shift loss. GRAPHSMILE_CUDA_SHIFT_NLL (read on every call):
// "auto" (or unset) takes the tiled single-pass kernel when its whole 64 x 64 tiles hold at most
// twice the batch's pairs (the two-pass kernels evaluate every pair twice; short chunks pad the
// tiles), "tiled" or "two_pass" force one (to compare them, as scripts/gpu_session.sh does).
bool use_tiled_nll(const ShiftMeta& meta, int64_t shift_win) {
  const char* e = std::getenv("GRAPHSMILE_CUDA_SHIFT_NLL");
  const std::string v = e == nullptr ? "" : e;
  if (v == "tiled") return true;
  if (v == "two_pass") return false;
  TORCH_CHECK_VALUE(v.empty() || v == "auto", "graphsmile: the environment variable GRAPHSMILE_CUDA_SHIFT_NLL must be ",
                    "auto, tiled or two_pass, got '", v, "'");
  const int64_t B = static_cast<int64_t>(meta.length.size());
  return gpu::nll_tile_slots(meta.length.data(), B, shift_win) <= 2 * meta.num_pairs;
}

// GRAPHSMILE_CUDA_FAST_MATH=1 (read on every call): the tiled kernel's float terms use __expf,
// __fdividef and __logf (about 1e-7 absolute error per pair; see kernels/shift_pair.cuh).
bool fast_math_nll() {
  const char* e = std::getenv("GRAPHSMILE_CUDA_FAST_MATH");
  const std::string v = e == nullptr ? "0" : e;
  TORCH_CHECK_VALUE(v == "0" || v == "1" || v.empty(), "graphsmile: the environment variable GRAPHSMILE_CUDA_FAST_MATH ",
                    "must be 0 or 1, got '", v, "'");
  return v == "1";
}

// The tiled kernel's plan on the device: the block and partial-slot bases of every dialogue.
struct DeviceNllTiling {
  at::Tensor buf;
  gpu::NllTileArgs args;
  int64_t blocks;
};

DeviceNllTiling upload_nll_tiling(const ShiftMeta& meta, int64_t shift_win, const at::Device& device) {
  const int64_t B = static_cast<int64_t>(meta.length.size());
  std::vector<int64_t> tile_base(B), part_base(B);
  const gpu::NllTilingCounts n = gpu::nll_tiling(meta.length.data(), B, shift_win, gpu::kNllMinBands,
                                                 tile_base.data(), part_base.data());
  DeviceNllTiling d;
  d.buf = cuda_host::upload_meta({&tile_base, &part_base}, device);
  const int64_t* p = d.buf.data_ptr<int64_t>();
  d.args.tile_base = p;
  d.args.part_base = p + B;
  d.args.min_bands = gpu::kNllMinBands;
  d.args.parts = n.parts;
  d.blocks = n.blocks;
  return d;
}

// The fused shift loss: the same checks, outputs and pair terms as shift_pair_nll_cpu. No [P]
// tensor; the loss and the confusion are torch's deterministic reductions of per-row values.
// Temp memory: two-pass, O(N) (row sums, per-row counts; column partials per kColSeg-row
// segment); tiled, at most about N + P / 64 partial slots (kernels/shift_pair.cuh) of 3 int32
// counts and 1 (3 with_grad) acc_t.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> shift_pair_nll_cuda(
    const at::Tensor& a_, const at::Tensor& b_, const at::Tensor& sentiment_, const at::Tensor& lengths,
    int64_t shift_win, bool with_grad) {
  const ShiftMeta meta = check_nll_inputs(a_, b_, sentiment_, lengths, shift_win, c10::DeviceType::CUDA);
  const bool tiled = use_tiled_nll(meta, shift_win), fast = fast_math_nll();
  c10::cuda::CUDAGuard guard(a_.device());
  const at::Tensor a = a_.contiguous(), b = b_.contiguous(), sentiment = sentiment_.contiguous();
  const int64_t N = meta.num_nodes;
  const auto acc_opts = a.options().dtype(cuda_host::acc_dtype(a.scalar_type()));
  at::Tensor row_r = at::empty({with_grad ? N : 0}, acc_opts);
  at::Tensor col_r = at::empty({with_grad ? N : 0}, acc_opts);
  at::Tensor row_loss = at::empty({N}, acc_opts);
  at::Tensor counts = at::empty({N, 4}, a.options().dtype(at::kLong));
  if (N > 0) {
    // C = 1: the column partials / combine kernel address one value per utterance.
    DeviceShiftMeta dm = upload_shift_meta(meta, shift_win, /*C=*/1, a.device());
    cudaStream_t stream = at::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, a.scalar_type(), "shift_pair_nll_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const scalar_t* ap = a.data_ptr<scalar_t>();
      const scalar_t* bp = b.data_ptr<scalar_t>();
      const int64_t* sp = sentiment.data_ptr<int64_t>();
      if (tiled) {
        const DeviceNllTiling tl = upload_nll_tiling(meta, shift_win, a.device());
        const int64_t Q = tl.args.parts;
        at::Tensor part_loss = at::empty({Q}, acc_opts);
        at::Tensor part_r = at::empty({with_grad ? Q : 0}, acc_opts);
        at::Tensor part_col = at::empty({with_grad ? Q : 0}, acc_opts);
        at::Tensor part_cnt = at::empty({3 * Q}, a.options().dtype(at::kInt));
        acc_t* pr = with_grad ? part_r.data_ptr<acc_t>() : nullptr;
        acc_t* pc = with_grad ? part_col.data_ptr<acc_t>() : nullptr;
        const unsigned int blocks = cuda_host::grid_x(tl.blocks, "shift_pair_nll (tiled)");
        // with_grad and fast math as template flags (fast math: float only)
        auto launch = [&](auto fast_c) {
          auto go = [&](auto grad_c) {
            gpu::shift_pair_nll_tiled_kernel<scalar_t, acc_t, decltype(grad_c)::value, decltype(fast_c)::value>
                <<<blocks, gpu::kNllThreads, 0, stream>>>(ap, bp, sp, part_loss.data_ptr<acc_t>(), pr,
                                                           part_cnt.data_ptr<int32_t>(), pc, dm.args, tl.args);
          };
          with_grad ? go(std::true_type{}) : go(std::false_type{});
        };
        if constexpr (std::is_same_v<acc_t, float>) fast ? launch(std::true_type{}) : launch(std::false_type{});
        else launch(std::false_type{});
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const unsigned int cblocks = cuda_host::grid_x(ceil_div(N, gpu::kShiftThreads), "shift_pair_nll (combine)");
        gpu::shift_pair_nll_combine_kernel<acc_t><<<cblocks, gpu::kShiftThreads, 0, stream>>>(
            part_loss.data_ptr<acc_t>(), pr, part_cnt.data_ptr<int32_t>(), pc, row_loss.data_ptr<acc_t>(),
            with_grad ? row_r.data_ptr<acc_t>() : nullptr, counts.data_ptr<int64_t>(),
            with_grad ? col_r.data_ptr<acc_t>() : nullptr, dm.args, tl.args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        return;
      }
      const int64_t nseg = column_segments(meta, shift_win);
      at::Tensor partial;
      if (with_grad && nseg > 1) partial = at::empty({nseg * N}, acc_opts);
      const unsigned int blocks = cuda_host::grid_x(ceil_div(N, gpu::kShiftWarps), "shift_pair_nll");
      gpu::shift_pair_nll_rows_kernel<scalar_t, acc_t><<<blocks, gpu::kShiftWarps * 32, 0, stream>>>(
          ap, bp, sp, row_loss.data_ptr<acc_t>(), with_grad ? row_r.data_ptr<acc_t>() : nullptr,
          counts.data_ptr<int64_t>(), dm.args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (with_grad) {
        const unsigned int bx = cuda_host::grid_x(ceil_div(N, gpu::kShiftThreads), "shift_pair_nll");
        const dim3 grid(bx, cuda_host::grid_y(nseg, "shift_pair_nll (chunk-row segments)"));
        acc_t* partial_ptr = partial.defined() ? partial.data_ptr<acc_t>() : nullptr;
        gpu::shift_pair_nll_cols_kernel<scalar_t, acc_t><<<grid, gpu::kShiftThreads, 0, stream>>>(
            ap, bp, sp, col_r.data_ptr<acc_t>(), partial_ptr, dm.args);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        if (partial_ptr != nullptr) {
          gpu::shift_pair_cols_combine_kernel<acc_t, acc_t><<<bx, gpu::kShiftThreads, 0, stream>>>(
              partial_ptr, col_r.data_ptr<acc_t>(), dm.args);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      }
    });
  }
  at::Tensor loss = row_loss.sum();
  at::Tensor confusion = counts.sum(0).view({2, 2});
  return {loss, confusion, row_r, col_r};
}

}  // namespace

TORCH_LIBRARY_IMPL(graphsmile, CUDA, m) {
  m.impl("shift_pair_sum", &shift_pair_sum_cuda);
  m.impl("shift_pair_sum_backward", &shift_pair_sum_backward_cuda);
  m.impl("shift_pair_nll", &shift_pair_nll_cuda);
}

}  // namespace graphsmile
