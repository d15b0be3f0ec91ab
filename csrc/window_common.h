// Host-side argument checks and per-dialogue metadata shared by the CPU and CUDA launchers.
// Every user-facing error names the argument and says what was expected (TORCH_CHECK raises a
// Python RuntimeError/ValueError with the message); nothing here is an internal assertion.
#pragma once
#include <torch/library.h>
#include <ATen/ATen.h>
#include <cstdint>
#include <limits>
#include <vector>

#include "../kernels/window_index.h"

namespace graphsmile {

// Per-dialogue offsets of one batch, computed from `lengths` on the host in O(B).
struct WindowMeta {
  int64_t num_dialogues = 0;
  int64_t num_nodes = 0;         // N = sum(lengths): utterances per modality
  int64_t num_edges = 0;         // E = M(M-1) * sum_b c(L_b)
  int64_t max_len = 0;
  std::vector<int64_t> start;    // s_b: first packed utterance of dialogue b
  std::vector<int64_t> length;   // L_b
  std::vector<int64_t> band;     // c(L_b): edges of one modality pair in dialogue b
  std::vector<int64_t> edge_base;// first edge id of dialogue b
};

// Bounds that keep every index product in int64 (window_index.h: band counts stay below
// L^2 <= 2^62 when L and the windows are below 2^31); a window longer than every dialogue is
// the same as -1, and more modalities than kMaxModal are not a cross-modal graph anyone builds.
constexpr int64_t kMaxWindow = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxLength = (int64_t{1} << 31) - 1;
constexpr int64_t kMaxModal = 1024;

// a + b and a * b (a, b >= 0) with an error naming `what` instead of a wrap-around.
inline int64_t checked_add(int64_t a, int64_t b, const char* what) {
  TORCH_CHECK_VALUE(b <= std::numeric_limits<int64_t>::max() - a, "graphsmile: ", what,
                    " does not fit in int64 (", a, " + ", b, ")");
  return a + b;
}
inline int64_t checked_mul(int64_t a, int64_t b, const char* what) {
  TORCH_CHECK_VALUE(a == 0 || b <= std::numeric_limits<int64_t>::max() / a, "graphsmile: ", what,
                    " does not fit in int64 (", a, " * ", b, ")");
  return a * b;
}

inline void check_windows(int64_t num_modal, int64_t win_p, int64_t win_f, int64_t weight_mode) {
  TORCH_CHECK_VALUE(num_modal >= 2 && num_modal <= kMaxModal, "graphsmile: num_modal must be from 2 to ", kMaxModal,
                    " (a cross-modal graph needs two modalities), got ", num_modal);
  TORCH_CHECK_VALUE(win_p >= -1 && win_p <= kMaxWindow, "graphsmile: win_p must be -1 (unbounded) or from 0 to ",
                    kMaxWindow, ", got ", win_p);
  TORCH_CHECK_VALUE(win_f >= -1 && win_f <= kMaxWindow, "graphsmile: win_f must be -1 (unbounded) or from 0 to ",
                    kMaxWindow, ", got ", win_f);
  TORCH_CHECK_VALUE(weight_mode == kPerEdge || weight_mode == kRelative,
                    "graphsmile: weight_mode must be 0 (per_edge) or 1 (relative), got ", weight_mode);
  TORCH_CHECK_VALUE(weight_mode != kRelative || (win_p >= 0 && win_f >= 0),
                    "graphsmile: weight_mode 'relative' needs finite windows (win_p, win_f >= 0), got "
                    "win_p=", win_p, ", win_f=", win_f);
}

// Reads `lengths` (a 1-D integer tensor; copied to the host if it lives on a GPU) and builds the
// per-dialogue offsets. Edge counts are only needed by the window ops (with_edges).
inline WindowMeta make_window_meta(const at::Tensor& lengths, int64_t num_modal, int64_t win_p,
                                   int64_t win_f, bool with_edges = true) {
  TORCH_CHECK_VALUE(lengths.dim() == 1, "graphsmile: lengths must be a 1-D tensor of dialogue lengths, got "
                    "shape ", lengths.sizes());
  TORCH_CHECK_VALUE(!at::isFloatingType(lengths.scalar_type()) && !at::isComplexType(lengths.scalar_type()) &&
                    lengths.scalar_type() != at::kBool,
                    "graphsmile: lengths must hold integers, got dtype ", lengths.scalar_type());
  TORCH_CHECK_VALUE(lengths.numel() > 0, "graphsmile: lengths is empty: a batch needs at least one dialogue");
  at::Tensor host = lengths.to(at::kCPU, at::kLong).contiguous();
  const int64_t* len = host.data_ptr<int64_t>();
  WindowMeta meta;
  meta.num_dialogues = host.numel();
  meta.start.resize(meta.num_dialogues);
  meta.length.resize(meta.num_dialogues);
  if (with_edges) {
    meta.band.resize(meta.num_dialogues);
    meta.edge_base.resize(meta.num_dialogues);
  }
  const int64_t pairs = num_modal * (num_modal - 1);
  for (int64_t b = 0; b < meta.num_dialogues; ++b) {
    TORCH_CHECK_VALUE(len[b] >= 1 && len[b] <= kMaxLength, "graphsmile: lengths[", b, "] = ", len[b],
                      ": every dialogue needs from 1 to ", kMaxLength, " utterances");
    meta.start[b] = meta.num_nodes;
    meta.length[b] = len[b];
    meta.num_nodes = checked_add(meta.num_nodes, len[b], "sum(lengths)");
    meta.max_len = std::max(meta.max_len, len[b]);
    if (with_edges) {
      meta.band[b] = window_band_count(len[b], win_p, win_f);
      meta.edge_base[b] = meta.num_edges;
      meta.num_edges = checked_add(meta.num_edges, checked_mul(pairs, meta.band[b], "the edge count"),
                                   "the edge count");
    }
  }
  checked_mul(num_modal, meta.num_nodes, "num_modal * sum(lengths)");  // the row count of x
  return meta;
}

inline void check_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), "graphsmile: ", name,
                   " must be a floating-point tensor, got dtype ", t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_VALUE(a.device() == b.device(), "graphsmile: ", an, " is on ", a.device(), " but ", bn,
                    " is on ", b.device(), "; move them to the same device");
}

inline void check_same_dtype(const at::Tensor& a, const char* an, const at::Tensor& b, const char* bn) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "graphsmile: ", an, " has dtype ", a.scalar_type(),
                   " but ", bn, " has dtype ", b.scalar_type(), "; they must match");
}

// Edge weights: a vector of >= E entries (per_edge; entries past E are unused), or the
// [M, M-1, win_p+win_f+1] table of the relative mode (any shape with that many entries).
inline void check_edge_weight(const at::Tensor& w, const WindowMeta& meta, int64_t num_modal,
                              int64_t win_p, int64_t win_f, int64_t weight_mode) {
  check_float_tensor(w, "edge_weight");
  if (weight_mode == kPerEdge) {
    TORCH_CHECK_VALUE(w.dim() == 1, "graphsmile: edge_weight must be 1-D in per_edge mode, got shape ",
                      w.sizes());
    TORCH_CHECK_VALUE(w.numel() >= meta.num_edges, "graphsmile: edge_weight has ", w.numel(),
                      " entries but this batch has E = ", meta.num_edges, " edges (",
                      meta.num_dialogues, " dialogues, ", meta.num_nodes, " utterances, num_modal=", num_modal,
                      ", win_p=", win_p, ", win_f=", win_f,
                      "); raise edge_capacity, shorten the windows or use smaller batches");
  } else {
    const int64_t want = num_modal * (num_modal - 1) * (win_p + win_f + 1);
    TORCH_CHECK_VALUE(w.numel() == want, "graphsmile: edge_weight in relative mode must have M*(M-1)*"
                      "(win_p+win_f+1) = ", want, " entries (shape [", num_modal, ", ", num_modal - 1, ", ",
                      win_p + win_f + 1, "]), got shape ", w.sizes());
  }
}

inline void check_features(const at::Tensor& x, const char* name, const WindowMeta& meta, int64_t num_modal) {
  check_float_tensor(x, name);
  TORCH_CHECK_VALUE(x.dim() == 2, "graphsmile: ", name, " must be 2-D [num_modal * N, D], got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(x.size(0) == num_modal * meta.num_nodes, "graphsmile: ", name, " has ", x.size(0),
                    " rows but num_modal * sum(lengths) = ", num_modal, " * ", meta.num_nodes, " = ",
                    num_modal * meta.num_nodes);
}

inline void check_norm(const at::Tensor& norm, const WindowMeta& meta, int64_t num_modal) {
  check_float_tensor(norm, "norm");
  TORCH_CHECK_VALUE(norm.dim() == 1 && norm.size(0) == num_modal * meta.num_nodes,
                    "graphsmile: norm must be 1-D with num_modal * sum(lengths) = ", num_modal * meta.num_nodes,
                    " entries, got shape ", norm.sizes());
}

// The tensor must live on the device type this kernel runs on ("CPU" or "CUDA" kernel).
inline void check_kernel_device(const at::Tensor& t, const char* name, c10::DeviceType kernel) {
  if (kernel == c10::DeviceType::CUDA) {
    // The dispatcher picks the CUDA kernel when any tensor argument is on a GPU, `lengths`
    // included, so say so: a CUDA `lengths` with CPU data lands here.
    TORCH_CHECK_VALUE(t.device().is_cuda(), "graphsmile: ", name, " is on ", t.device(),
                      " but this is the CUDA kernel (it runs when any tensor argument, lengths included, is on a "
                      "GPU); move ", name, " to the GPU (", name, ".cuda()), or keep every argument, lengths too, on "
                      "the CPU");
  } else {
    TORCH_CHECK_VALUE(t.device().type() == kernel, "graphsmile: ", name, " is on ", t.device(),
                      " but this is the CPU kernel; move it to the CPU or pick a GPU backend");
  }
}

// Arguments of window_norm: the same checks and messages for every device's kernel.
inline WindowMeta check_norm_inputs(const at::Tensor& w, const at::Tensor& lengths, int64_t num_nodes, int64_t M,
                                    int64_t wp, int64_t wf, int64_t mode, c10::DeviceType kernel) {
  check_windows(M, wp, wf, mode);
  check_kernel_device(w, "edge_weight", kernel);
  WindowMeta meta = make_window_meta(lengths, M, wp, wf);
  TORCH_CHECK_VALUE(num_nodes == meta.num_nodes, "graphsmile: num_nodes = ", num_nodes,
                    " but sum(lengths) = ", meta.num_nodes);
  check_edge_weight(w, meta, M, wp, wf, mode);
  return meta;
}

// Arguments of window_norm_backward.
inline WindowMeta check_norm_backward_inputs(const at::Tensor& grad_norm, const at::Tensor& norm,
                                             const at::Tensor& w, const at::Tensor& lengths, int64_t M, int64_t wp,
                                             int64_t wf, int64_t mode, c10::DeviceType kernel) {
  check_windows(M, wp, wf, mode);
  check_kernel_device(w, "edge_weight", kernel);
  check_kernel_device(norm, "norm", kernel);
  check_kernel_device(grad_norm, "grad_norm", kernel);
  check_same_device(norm, "norm", w, "edge_weight");
  check_same_device(grad_norm, "grad_norm", w, "edge_weight");
  WindowMeta meta = make_window_meta(lengths, M, wp, wf);
  check_edge_weight(w, meta, M, wp, wf, mode);
  check_norm(norm, meta, M);
  TORCH_CHECK_VALUE(grad_norm.sizes() == norm.sizes(), "graphsmile: grad_norm must have the shape of norm ",
                    norm.sizes(), ", got ", grad_norm.sizes());
  check_same_dtype(norm, "norm", w, "edge_weight");
  check_same_dtype(grad_norm, "grad_norm", w, "edge_weight");
  return meta;
}

// Arguments of window_spmm (and its backward, with grad_y): the same checks and messages for
// every device's kernel.
inline WindowMeta check_spmm_inputs(const at::Tensor& x, const at::Tensor& w, const at::Tensor& s,
                                    const at::Tensor& lengths, int64_t M, int64_t wp, int64_t wf, int64_t mode,
                                    c10::DeviceType kernel, const at::Tensor* grad_y = nullptr) {
  check_windows(M, wp, wf, mode);
  check_kernel_device(x, "x", kernel);
  check_kernel_device(w, "edge_weight", kernel);
  check_kernel_device(s, "norm", kernel);
  check_same_device(x, "x", w, "edge_weight");
  check_same_device(x, "x", s, "norm");
  WindowMeta meta = make_window_meta(lengths, M, wp, wf);
  check_features(x, "x", meta, M);
  check_edge_weight(w, meta, M, wp, wf, mode);
  check_norm(s, meta, M);
  check_same_dtype(x, "x", w, "edge_weight");
  check_same_dtype(x, "x", s, "norm");
  if (grad_y != nullptr) {
    check_kernel_device(*grad_y, "grad_y", kernel);
    check_same_device(x, "x", *grad_y, "grad_y");
    TORCH_CHECK_VALUE(grad_y->sizes() == x.sizes(), "graphsmile: grad_y must have the shape of x ", x.sizes(),
                      ", got ", grad_y->sizes());
    check_same_dtype(x, "x", *grad_y, "grad_y");
  }
  return meta;
}

// Shift pairs: per-dialogue pair offsets.
struct ShiftMeta {
  int64_t num_nodes = 0;
  int64_t num_pairs = 0;
  std::vector<int64_t> start, length, pair_base;
};

inline ShiftMeta make_shift_meta(const at::Tensor& lengths, int64_t shift_win) {
  TORCH_CHECK_VALUE(shift_win == -1 || shift_win > 0,
                    "graphsmile: shift_win must be -1 (whole dialogue) or > 0, got ", shift_win);
  WindowMeta w = make_window_meta(lengths, 2, -1, -1, /*with_edges=*/false);
  ShiftMeta meta;
  meta.num_nodes = w.num_nodes;
  meta.start = w.start;
  meta.length = w.length;
  meta.pair_base.resize(w.num_dialogues);
  for (int64_t b = 0; b < w.num_dialogues; ++b) {
    meta.pair_base[b] = meta.num_pairs;
    meta.num_pairs = checked_add(meta.num_pairs, shift_pair_count(w.length[b], shift_win), "the shift-pair count");
  }
  return meta;
}

// Arguments of shift_pair_nll: a, b [N, 2] floating (same dtype and device), sentiment [N]
// int64 on that device. The same checks and messages for every device's kernel.
inline ShiftMeta check_nll_inputs(const at::Tensor& a, const at::Tensor& b, const at::Tensor& sentiment,
                                  const at::Tensor& lengths, int64_t shift_win, c10::DeviceType kernel) {
  ShiftMeta meta = make_shift_meta(lengths, shift_win);
  for (auto [t, name] : {std::pair<const at::Tensor&, const char*>{a, "a"}, {b, "b"}}) {
    check_float_tensor(t, name);
    check_kernel_device(t, name, kernel);
    TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == meta.num_nodes && t.size(1) == 2, "graphsmile: ", name,
                      " must be [sum(lengths), 2] = [", meta.num_nodes, ", 2] (two shift classes), got shape ",
                      t.sizes());
  }
  check_same_device(a, "a", b, "b");
  check_same_dtype(a, "a", b, "b");
  TORCH_CHECK_TYPE(sentiment.scalar_type() == at::kLong, "graphsmile: sentiment must be an int64 tensor of "
                   "sentiment classes, got dtype ", sentiment.scalar_type());
  check_same_device(a, "a", sentiment, "sentiment");
  TORCH_CHECK_VALUE(sentiment.dim() == 1 && sentiment.size(0) == meta.num_nodes, "graphsmile: sentiment must be "
                    "[sum(lengths)] = [", meta.num_nodes, "], got shape ", sentiment.sizes());
  return meta;
}

}  // namespace graphsmile
