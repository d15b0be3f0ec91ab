// The graphsmile operator library: schemas, defined once. Kernels are registered per dispatch
// key in csrc/cpu/*.cpp (CPU) and csrc/cuda/*.cu (CUDA); every op's autograd in
// csrc/autograd.cpp; every op's fake (meta) implementation from Python, in
// graphsmile/ops/_registry.py. The C++ API over these ops is csrc/api.cpp.
//
// The Python extension (graphsmile._C) and the CMake library (libgraphsmile_ops.so) both hold
// these registrations, so one process must load only one of them: torch allows one
// TORCH_LIBRARY per namespace and ends the process when a second one registers.
//
// Importing graphsmile._C loads this library; it exposes no Python functions of its own (the
// ops are reached through torch.ops.graphsmile.*). setup.py defines GRAPHSMILE_PYTHON_MODULE; the
// CMake build for C++ users does not, so its library needs no libpython.
#include <torch/library.h>

#ifdef GRAPHSMILE_PYTHON_MODULE
#include <Python.h>

extern "C" {
// A module with no methods: `import graphsmile._C` only has to run the static registrations.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
#endif

TORCH_LIBRARY(graphsmile, m) {
  // s = d^{-1/2} (0 where d == 0), d_i = sum of the weights of the edges leaving node i. [M*N]
  m.def("window_norm(Tensor edge_weight, Tensor lengths, SymInt num_nodes, int num_modal, int win_p, "
        "int win_f, int weight_mode) -> Tensor");
  m.def("window_norm_backward(Tensor grad_norm, Tensor norm, Tensor edge_weight, Tensor lengths, "
        "int num_modal, int win_p, int win_f, int weight_mode) -> Tensor");
  // y_i = s_i sum_{e=(i,j)} a_e s_j x_j over the windowed cross-modal edges. [M*N, D]
  m.def("window_spmm(Tensor x, Tensor edge_weight, Tensor norm, Tensor lengths, int num_modal, "
        "int win_p, int win_f, int weight_mode) -> Tensor");
  m.def("window_spmm_backward(Tensor grad_y, Tensor x, Tensor edge_weight, Tensor norm, Tensor lengths, "
        "int num_modal, int win_p, int win_f, int weight_mode, bool[3] output_mask) -> "
        "(Tensor, Tensor, Tensor)");
  // out[pair(i, j)] = a_i + b_j over the shift pairs of each chunk. [P, C]
  m.def("shift_pair_sum(Tensor a, Tensor b, Tensor lengths, SymInt num_pairs, int shift_win) -> Tensor");
  m.def("shift_pair_sum_backward(Tensor grad, Tensor lengths, SymInt num_nodes, int shift_win, "
        "bool[2] output_mask) -> (Tensor, Tensor)");
  // The shift head's NLL summed over the pairs, without the [P, 2] logits (C == 2). Per pair:
  // z = a_i + b_j (rounded to a's dtype, as shift_pair_sum), d = z_1 - z_0, y = (sentiment_i !=
  // sentiment_j), loss = softplus(y ? -d : d), prediction = (d > 0), r = sigmoid(d) - y.
  // Returns (sum of the losses [] in the accumulation dtype, confusion [2, 2] int64 indexed
  // [y, prediction], and with with_grad the residual sums row_r_i = sum_j r_ij and
  // col_r_j = sum_i r_ij, [N] each in the accumulation dtype; [0] without). The gradient of the
  // loss is d/da_i = (-row_r_i, row_r_i), d/db_j = (-col_r_j, col_r_j).
  m.def("shift_pair_nll(Tensor a, Tensor b, Tensor sentiment, Tensor lengths, int shift_win, bool with_grad) -> "
        "(Tensor, Tensor, Tensor, Tensor)");
  // A 1-D int64 CPU tensor copied to a CUDA device by value (kernel arguments, no host memory read
  // on the device): capturable in a CUDA graph. CUDA builds only (csrc/cuda/upload_cuda.cu).
  m.def("upload_by_value(Tensor values, Device device) -> Tensor");
}
