// graphsmile's C++ API: the graph ops of GraphSmile (SPEC 3-5) for LibTorch programs.
//
// Link the library built by the top-level CMakeLists.txt (`find_package(graphsmile)`, target
// `graphsmile::graphsmile_ops`; examples/cpp shows a whole project). Every function here is
// differentiable with torch's autograd (the kernels' autograd is registered in C++,
// csrc/autograd.cpp) and runs the CPU kernels on CPU tensors, the CUDA kernels on CUDA tensors
// where the library was built with them (-DGRAPHSMILE_WITH_CUDA=ON). Bad arguments raise
// c10::Error (c10::ValueError, c10::TypeError) with a message naming the argument and what was
// expected, as in Python.
//
// The same ops are reachable through the dispatcher by name (torch::ops::graphsmile in Python,
// c10::Dispatcher::singleton().findSchemaOrThrow("graphsmile::window_spmm", "") here); a program
// that only does that references no symbol of the library, so link it with -Wl,--no-as-needed
// or call one function of this header (for example graphsmile::version()) to keep it loaded.
//
// The library holds the same op registrations as the Python extension graphsmile._C: load one or
// the other in a process, never both (torch allows one TORCH_LIBRARY(graphsmile) and aborts at the
// second).
//
// Layout, as in Python (SPEC 1): node features are [num_modal * N, D], modality-major (row
// m*N + t is utterance t of modality m), N = sum(lengths), dialogues packed in batch order.
#pragma once

#include <ATen/core/Reduction.h>
#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <string>

#if defined(_WIN32)
#define GRAPHSMILE_API __declspec(dllexport)
#else
#define GRAPHSMILE_API __attribute__((visibility("default")))
#endif

// The version of this API and of the Python package (graphsmile.__version__; a test keeps them equal).
#define GRAPHSMILE_VERSION "0.1.0"

namespace graphsmile {

// How edge weights are indexed (SPEC 5).
enum class WeightMode : int64_t {
  // one weight per edge: a vector of at least num_edges() entries in the canonical edge order
  // (SPEC 2), the original's choice
  PerEdge = 0,
  // one weight per (modality pair, relative offset k - j): a [M, M-1, win_p + win_f + 1] table,
  // edge (m -> n, k - j) using entry [m, n - (n > m), k - j + win_p]; needs finite windows
  Relative = 1,
};

// The library's version, GRAPHSMILE_VERSION when header and library match.
GRAPHSMILE_API std::string version();
// Whether this build of the library holds the CUDA kernels.
GRAPHSMILE_API bool has_cuda_kernels();

// E = M (M - 1) sum_b c(L_b), the edge count of the windowed cross-modal graph (SPEC 2), where
// c(L) is the number of (j, k) with k in j's window; win_p, win_f: -1 (unbounded) or >= 0.
GRAPHSMILE_API int64_t num_edges(c10::IntArrayRef lengths, int64_t num_modal, int64_t win_p, int64_t win_f);
// P = sum over the chunks of shift_win utterances (-1: the whole dialogue) of size^2 (SPEC 4).
GRAPHSMILE_API int64_t num_shift_pairs(c10::IntArrayRef lengths, int64_t shift_win);

// One batch's windowed cross-modal graph: checked once, then used by every layer that shares it.
//
//   graphsmile::WindowGraph graph({3, 4}, /*num_modal=*/3, /*win_p=*/1, /*win_f=*/1);
//   at::Tensor w = torch::ones({graph.num_edges()}, torch::requires_grad());
//   at::Tensor s = graph.norm(w);          // once per batch
//   at::Tensor y = graph.spmm(x, w, s);    // once per layer, x: [3 * 7, D]
class GRAPHSMILE_API WindowGraph {
 public:
  // lengths: dialogue lengths, each >= 1; num_modal >= 2; win_p, win_f: -1 or >= 0.
  WindowGraph(c10::IntArrayRef lengths, int64_t num_modal, int64_t win_p, int64_t win_f,
              WeightMode weight_mode = WeightMode::PerEdge);

  // s = d^{-1/2} (0 where d == 0), d_i = sum of the weights of the edges leaving node i: [M*N].
  at::Tensor norm(const at::Tensor& edge_weight) const;
  // y_i = s_i sum_{e=(i,j)} a_e s_j x_j: shaped like x, [M*N, D]. Differentiable in x,
  // edge_weight and norm.
  at::Tensor spmm(const at::Tensor& x, const at::Tensor& edge_weight, const at::Tensor& norm) const;
  // spmm(x, edge_weight, norm(edge_weight)): y = diag(s) A diag(s) x (SPEC 3), gradients to x
  // and edge_weight including the path through the degrees.
  at::Tensor propagate(const at::Tensor& x, const at::Tensor& edge_weight) const;

  int64_t num_dialogues() const { return num_dialogues_; }
  int64_t num_nodes() const { return num_nodes_; }  // N = sum(lengths), utterances per modality
  int64_t num_edges() const { return num_edges_; }
  int64_t num_modal() const { return num_modal_; }
  int64_t win_p() const { return win_p_; }
  int64_t win_f() const { return win_f_; }
  WeightMode weight_mode() const { return weight_mode_; }

 private:
  at::Tensor lengths_;  // int64 [B] on the CPU, as the kernels read it
  int64_t num_modal_, win_p_, win_f_;
  WeightMode weight_mode_;
  int64_t num_dialogues_ = 0, num_nodes_ = 0, num_edges_ = 0;
};

// WindowGraph(lengths, num_modal, win_p, win_f, weight_mode).propagate(x, edge_weight).
GRAPHSMILE_API at::Tensor window_propagate(const at::Tensor& x, const at::Tensor& edge_weight, c10::IntArrayRef lengths,
                                           int64_t num_modal, int64_t win_p, int64_t win_f,
                                           WeightMode weight_mode = WeightMode::PerEdge);

// Logits of the sentiment-shift head over every pair (i, j) of each chunk, without pair
// embeddings: logits[pair(i, j)] = weight [u_i ; v_j] + bias. u, v: [N, D]; weight: [C, 2D];
// bias: [C] or an undefined tensor. Returns [P, C], P = num_shift_pairs(lengths, shift_win).
GRAPHSMILE_API at::Tensor shift_pair_logits(const at::Tensor& u, const at::Tensor& v, c10::IntArrayRef lengths,
                                            int64_t shift_win, const at::Tensor& weight, const at::Tensor& bias);

// The shift loss fused with its two-class head: the NLL of log_softmax(shift_pair_logits(...)) at
// the pair labels y = (sentiment_i != sentiment_j), without the [P, 2] logits.
struct ShiftNll {
  at::Tensor loss;       // 0-dim, float32 (float64 for float64 inputs); differentiable
  at::Tensor confusion;  // [2, 2] int64 pair counts indexed [label, prediction]
};
// u, v: [N, D]; weight: [2, 2D]; bias: [2] or undefined; sentiment: [N] integer classes on u's
// device. reduction: at::Reduction::Mean (over the P pairs; NaN when P = 0) or at::Reduction::Sum,
// as torch's nll_loss (there is no per-pair None: the fused loss keeps nothing of size P).
GRAPHSMILE_API ShiftNll shift_pair_nll(const at::Tensor& u, const at::Tensor& v, c10::IntArrayRef lengths,
                                       int64_t shift_win, const at::Tensor& weight, const at::Tensor& bias,
                                       const at::Tensor& sentiment, int64_t reduction = at::Reduction::Mean);

}  // namespace graphsmile
