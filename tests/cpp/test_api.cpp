// Tests of the C++ API (include/graphsmile/graphsmile.h) with no Python: every op's forward and
// gradients against a dense reference built here from the SPEC's loops (float64), the double
// backward refusal, and the errors bad arguments give. Built by CMake with
// -DGRAPHSMILE_BUILD_TESTS=ON and run by CI (`make cpp-test`); exit status 1 on any failure.
// CUDA cases run when the library holds the CUDA kernels and a GPU is present.
#include <ATen/ATen.h>
#include <torch/autograd.h>

#include <graphsmile/graphsmile.h>

#include <cmath>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

namespace {

int g_checks = 0, g_failures = 0;

void check(bool ok, const std::string& what) {
  ++g_checks;
  if (!ok) {
    ++g_failures;
    std::cerr << "FAIL: " << what << "\n";
  }
}

void check_close(const at::Tensor& got, const at::Tensor& want, const std::string& what, double tol = 1e-10) {
  ++g_checks;
  const at::Tensor g = got.to(at::kCPU, at::kDouble), w = want.to(at::kCPU, at::kDouble);
  if (g.sizes() != w.sizes()) {
    ++g_failures;
    std::cerr << "FAIL: " << what << ": shape " << g.sizes() << ", expected " << w.sizes() << "\n";
    return;
  }
  const double err = g.numel() ? (g - w).abs().max().item<double>() : 0.0;
  const double scale = w.numel() ? std::max(1.0, w.abs().max().item<double>()) : 1.0;
  if (!(err <= tol * scale)) {
    ++g_failures;
    std::cerr << "FAIL: " << what << ": max error " << err << " (tolerance " << tol * scale << ")\n";
  }
}

// `fn` must throw a c10::Error whose message contains `needle`.
void check_throws(const std::function<void()>& fn, const std::string& needle, const std::string& what) {
  ++g_checks;
  try {
    fn();
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    if (msg.find(needle) == std::string::npos) {
      ++g_failures;
      std::cerr << "FAIL: " << what << ": error without '" << needle << "': " << msg << "\n";
    }
    return;
  }
  ++g_failures;
  std::cerr << "FAIL: " << what << ": no error\n";
}

int64_t total(const std::vector<int64_t>& lengths) {
  int64_t n = 0;
  for (int64_t L : lengths) n += L;
  return n;
}

// The edges of SPEC 2 in canonical order, as (row, col, weight entry).
struct Edges {
  std::vector<int64_t> row, col, entry;
};

Edges spec_edges(const std::vector<int64_t>& lengths, int64_t M, int64_t wp, int64_t wf, bool relative) {
  Edges e;
  const int64_t N = total(lengths);
  int64_t start = 0;
  for (int64_t L : lengths) {
    for (int64_t m = 0; m < M; ++m) {
      for (int64_t n = 0; n < M; ++n) {
        if (m == n) continue;
        for (int64_t j = 0; j < L; ++j) {
          const int64_t lo = wp < 0 ? 0 : std::max<int64_t>(0, j - wp);
          const int64_t hi = wf < 0 ? L : std::min<int64_t>(L, j + wf + 1);
          for (int64_t k = lo; k < hi; ++k) {
            e.row.push_back(m * N + start + j);
            e.col.push_back(n * N + start + k);
            // relative: entry [m, n - (n > m), k - j + win_p] of [M, M-1, wp + wf + 1]
            e.entry.push_back(relative ? (m * (M - 1) + n - (n > m ? 1 : 0)) * (wp + wf + 1) + k - j + wp
                                       : static_cast<int64_t>(e.entry.size()));
          }
        }
      }
    }
    start += L;
  }
  return e;
}

at::Tensor index_tensor(const std::vector<int64_t>& v) { return at::tensor(v, at::TensorOptions().dtype(at::kLong)); }

// y = diag(s) A diag(s) x with a dense A (plain ATen, differentiable).
at::Tensor dense_propagate(const at::Tensor& x, const at::Tensor& w, const Edges& e) {
  const int64_t rows = x.size(0);
  const auto dev = x.device();
  at::Tensor a = w.index_select(0, index_tensor(e.entry).to(dev));
  at::Tensor A = at::zeros({rows * rows}, x.options()).index_add(0, (index_tensor(e.row) * rows + index_tensor(e.col)).to(dev), a);
  A = A.view({rows, rows});
  const at::Tensor d = A.sum(1);
  const at::Tensor s = at::where(d > 0, d.clamp_min(1e-300).pow(-0.5), at::zeros_like(d));
  return s.unsqueeze(1) * A.mm(s.unsqueeze(1) * x);
}

void test_window(const at::Device& dev, bool relative, int64_t wp, int64_t wf) {
  const std::vector<int64_t> lengths{5, 1, 8};
  const int64_t M = 3, D = 6, N = total(lengths);
  const std::string tag = std::string("window ") + (relative ? "relative" : "per_edge") + " wp=" +
                          std::to_string(wp) + " wf=" + std::to_string(wf) + " on " + dev.str();
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(dev);
  const Edges e = spec_edges(lengths, M, wp, wf, relative);

  const graphsmile::WindowGraph graph(lengths, M, wp, wf,
                                      relative ? graphsmile::WeightMode::Relative : graphsmile::WeightMode::PerEdge);
  check(graph.num_nodes() == N && graph.num_dialogues() == 3, tag + ": num_nodes, num_dialogues");
  check(graph.num_edges() == static_cast<int64_t>(e.row.size()), tag + ": num_edges against the SPEC's loops");
  check(graphsmile::num_edges(lengths, M, wp, wf) == graph.num_edges(), tag + ": graphsmile::num_edges");

  const int64_t entries = relative ? M * (M - 1) * (wp + wf + 1) : graph.num_edges() + 3;  // per_edge: spare entries unused
  at::manual_seed(7);
  const at::Tensor x = at::randn({M * N, D}, opts).set_requires_grad(true);
  const at::Tensor w = (at::rand({entries}, opts) + 0.5).set_requires_grad(true);
  const at::Tensor g = at::randn({M * N, D}, opts);

  const at::Tensor y = graph.propagate(x, w);
  const at::Tensor y_ref = dense_propagate(x, w, e);
  check_close(y, y_ref, tag + ": y");
  check_close(graphsmile::window_propagate(x, w, lengths, M, wp, wf,
                                           relative ? graphsmile::WeightMode::Relative : graphsmile::WeightMode::PerEdge),
              y_ref, tag + ": window_propagate");

  const auto grads = torch::autograd::grad({(y * g).sum()}, {x, w});
  const auto grads_ref = torch::autograd::grad({(y_ref * g).sum()}, {x, w});
  check_close(grads[0], grads_ref[0], tag + ": grad x");
  check_close(grads[1], grads_ref[1], tag + ": grad edge_weight");

  // norm and spmm separately: the gradient through norm is part of grad w
  const at::Tensor s = graph.norm(w);
  check(s.dim() == 1 && s.size(0) == M * N, tag + ": norm is [M*N]");
  check_close(graph.spmm(x, w, s), y_ref, tag + ": spmm(norm)");
}

// Pair (i, j) of each chunk, row-major, as in SPEC 4.
void spec_pairs(const std::vector<int64_t>& lengths, int64_t shift_win, std::vector<int64_t>& I, std::vector<int64_t>& J) {
  int64_t start = 0;
  for (int64_t L : lengths) {
    const int64_t w = shift_win < 0 ? L : shift_win;
    for (int64_t cs = 0; cs < L; cs += w) {
      const int64_t ce = std::min(L, cs + w);
      for (int64_t i = cs; i < ce; ++i)
        for (int64_t j = cs; j < ce; ++j) {
          I.push_back(start + i);
          J.push_back(start + j);
        }
    }
    start += L;
  }
}

void test_shift(const at::Device& dev, int64_t shift_win) {
  const std::vector<int64_t> lengths{7, 1, 4};
  const int64_t N = total(lengths), D = 5;
  const std::string tag = "shift_win=" + std::to_string(shift_win) + " on " + dev.str();
  const auto opts = at::TensorOptions().dtype(at::kDouble).device(dev);
  std::vector<int64_t> I, J;
  spec_pairs(lengths, shift_win, I, J);
  const int64_t P = static_cast<int64_t>(I.size());
  check(graphsmile::num_shift_pairs(lengths, shift_win) == P, tag + ": num_shift_pairs");

  at::manual_seed(11);
  const at::Tensor u = at::randn({N, D}, opts).set_requires_grad(true);
  const at::Tensor v = at::randn({N, D}, opts).set_requires_grad(true);
  const at::Tensor W = at::randn({2, 2 * D}, opts).set_requires_grad(true);
  const at::Tensor bias = at::randn({2}, opts).set_requires_grad(true);
  const at::Tensor sentiment = at::randint(0, 3, {N}, at::TensorOptions().dtype(at::kLong).device(dev));
  const at::Tensor Ii = index_tensor(I).to(dev), Ji = index_tensor(J).to(dev);

  // reference: the [P, 2D] pair embeddings the original builds
  const at::Tensor logits_ref = at::linear(at::cat({u.index_select(0, Ii), v.index_select(0, Ji)}, 1), W, bias);
  const at::Tensor logits = graphsmile::shift_pair_logits(u, v, lengths, shift_win, W, bias);
  check_close(logits, logits_ref, tag + ": logits");
  const at::Tensor g = at::randn({P, 2}, opts);
  const auto grads = torch::autograd::grad({(logits * g).sum()}, {u, v, W, bias});
  const auto grads_ref = torch::autograd::grad({(logits_ref * g).sum()}, {u, v, W, bias}, {}, /*retain_graph=*/true);
  const char* names[] = {"u", "v", "weight", "bias"};
  for (int t = 0; t < 4; ++t) check_close(grads[t], grads_ref[t], tag + ": logits grad " + names[t]);

  // the fused loss against nll(log_softmax(logits)) at the pair labels
  const at::Tensor labels = sentiment.index_select(0, Ii).ne(sentiment.index_select(0, Ji)).to(at::kLong);
  const at::Tensor nll_ref = at::nll_loss(at::log_softmax(logits_ref, 1), labels);
  const graphsmile::ShiftNll nll = graphsmile::shift_pair_nll(u, v, lengths, shift_win, W, bias, sentiment);
  check_close(nll.loss, nll_ref, tag + ": fused loss (mean)");
  const at::Tensor pred = logits_ref.argmax(1);
  at::Tensor conf_ref = at::zeros({4}, at::TensorOptions().dtype(at::kLong).device(dev));
  conf_ref.index_add_(0, labels * 2 + pred, at::ones({P}, conf_ref.options()));
  check(nll.confusion.equal(conf_ref.view({2, 2})), tag + ": confusion counts");
  const auto ng = torch::autograd::grad({nll.loss}, {u, v, W, bias});
  const auto ng_ref = torch::autograd::grad({nll_ref}, {u, v, W, bias});
  for (int t = 0; t < 4; ++t) check_close(ng[t], ng_ref[t], tag + ": fused loss grad " + names[t]);
  const graphsmile::ShiftNll sum = graphsmile::shift_pair_nll(u, v, lengths, shift_win, W, at::Tensor(), sentiment, at::Reduction::Sum);
  const at::Tensor sum_ref =
      at::nll_loss(at::log_softmax(at::linear(at::cat({u.index_select(0, Ii), v.index_select(0, Ji)}, 1), W), 1),
                   labels, {}, at::Reduction::Sum);
  check_close(sum.loss, sum_ref, tag + ": fused loss (sum, no bias)");
}

void test_double_backward_refused() {
  const std::vector<int64_t> lengths{4, 3};
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor x = at::randn({2 * 7, 3}, opts).set_requires_grad(true);
  const at::Tensor w = at::ones({graphsmile::num_edges(lengths, 2, 1, 1)}, opts).set_requires_grad(true);
  const at::Tensor y = graphsmile::window_propagate(x, w, lengths, 2, 1, 1);
  const auto gx = torch::autograd::grad({y.pow(2).sum()}, {x}, {}, /*retain_graph=*/true, /*create_graph=*/true);
  check_throws([&] { torch::autograd::grad({gx[0].pow(2).sum()}, {x}); }, "cannot be differentiated again",
               "double backward of window_propagate");

  const at::Tensor u = at::randn({7, 3}, opts).set_requires_grad(true);
  const at::Tensor W = at::randn({2, 6}, opts);
  const at::Tensor sentiment = at::randint(0, 3, {7}, at::TensorOptions().dtype(at::kLong));
  const auto loss = graphsmile::shift_pair_nll(u, u, lengths, 3, W, at::Tensor(), sentiment).loss;
  const auto gu = torch::autograd::grad({loss}, {u}, {}, true, true);
  check_throws([&] { torch::autograd::grad({gu[0].pow(2).sum()}, {u}); }, "gradient of shift_pair_nll cannot",
               "double backward of shift_pair_nll");
  const auto logits = graphsmile::shift_pair_logits(u, u, lengths, 3, W, at::Tensor());
  const auto gl = torch::autograd::grad({logits.pow(3).sum()}, {u}, {}, true, true);
  check_throws([&] { torch::autograd::grad({gl[0].pow(2).sum()}, {u}); }, "gradient of shift_pair_sum cannot",
               "double backward of shift_pair_logits");
}

void test_bad_arguments() {
  using graphsmile::WindowGraph;
  const std::vector<int64_t> lengths{3, 4};
  check_throws([&] { (void)WindowGraph(lengths, 2, -2, 1); }, "win_p must be -1", "win_p = -2");
  check_throws([&] { (void)WindowGraph(lengths, 1, 1, 1); }, "num_modal must be from 2", "num_modal = 1");
  check_throws([&] { (void)WindowGraph({3, 0}, 2, 1, 1); }, "lengths[1] = 0", "a dialogue of length 0");
  check_throws([&] { (void)WindowGraph(std::vector<int64_t>{}, 2, 1, 1); }, "lengths is empty", "no dialogues");
  check_throws([&] { (void)WindowGraph(lengths, 2, -1, 1, graphsmile::WeightMode::Relative); }, "needs finite windows",
               "relative weights with an unbounded window");
  check_throws([&] { (void)WindowGraph(lengths, 2, 1, 1, static_cast<graphsmile::WeightMode>(5)); }, "weight_mode must be",
               "an unknown weight mode");
  const WindowGraph graph(lengths, 2, 1, 1);
  const at::Tensor x = at::randn({14, 4});
  const at::Tensor w = at::ones({graph.num_edges()});
  check_throws([&] { graph.propagate(at::randn({13, 4}), w); }, "x", "x with a row too few");
  check_throws([&] { graph.propagate(x, at::ones({graph.num_edges() - 1})); }, "edge_weight",
               "per-edge weights one short");
  check_throws([&] { graph.propagate(x, w.to(at::kDouble)); }, "dtype", "x and edge_weight of two dtypes");
  check_throws([&] { graph.propagate(x.to(at::kLong), w); }, "floating-point", "integer features");
  check_throws([&] { graph.propagate(at::Tensor(), w); }, "defined", "an undefined x");
  check_throws([&] { graph.spmm(x, w, at::ones({13})); }, "norm", "norm of the wrong length");
  // a device the library has no kernels for (meta here; CUDA in a CPU-only build) is named
  const std::string no_kernels = "but this build of the library has kernels for CPU";
  check_throws([&] { graph.propagate(x.to(at::kMeta), w.to(at::kMeta)); }, "edge_weight is on meta, " + no_kernels,
               "tensors on a device without kernels (norm)");
  check_throws([&] { graph.spmm(x.to(at::kMeta), w, at::ones({14})); }, "x is on meta, " + no_kernels,
               "tensors on a device without kernels (spmm)");

  const at::Tensor u = at::randn({7, 3}), W = at::randn({2, 6}), s = at::randint(0, 3, {7}, at::kLong);
  check_throws([&] { graphsmile::num_shift_pairs(lengths, 0); }, "shift_win must be -1", "shift_win = 0");
  check_throws([&] { graphsmile::shift_pair_logits(u.to(at::kMeta), u.to(at::kMeta), lengths, 3, W, at::Tensor()); },
               "u is on meta, " + no_kernels, "shift features on a device without kernels");
  check_throws([&] { graphsmile::shift_pair_logits(u, u, lengths, 0, W, at::Tensor()); }, "shift_win", "logits, shift_win 0");
  check_throws([&] { graphsmile::shift_pair_logits(u, u.slice(0, 1), lengths, 3, W, at::Tensor()); }, "u and v",
               "u and v of two shapes");
  check_throws([&] { graphsmile::shift_pair_logits(u, u, lengths, 3, at::randn({2, 5}), at::Tensor()); }, "weight must be",
               "a weight of the wrong width");
  check_throws([&] { graphsmile::shift_pair_logits(u, u, lengths, 3, W, at::randn({3})); }, "bias must be",
               "a bias of the wrong length");
  check_throws([&] { graphsmile::shift_pair_logits(u.slice(0, 1), u.slice(0, 1), lengths, 3, W, at::Tensor()); },
               "sum(lengths)", "u with a row too few");
  check_throws([&] { graphsmile::shift_pair_nll(u, u, lengths, 3, at::randn({3, 6}), at::Tensor(), s); }, "weight must be [2",
               "a three-class head for the two-class loss");
  check_throws([&] { graphsmile::shift_pair_nll(u, u, lengths, 3, W, at::Tensor(), s.to(at::kFloat)); },
               "sentiment must hold integer", "float sentiment");
  check_throws([&] { graphsmile::shift_pair_nll(u, u, lengths, 3, W, at::Tensor(), s.slice(0, 1)); }, "sentiment",
               "sentiment with an entry too few");
  check_throws([&] { graphsmile::shift_pair_nll(u, u, lengths, 3, W, at::Tensor(), s, at::Reduction::None); },
               "reduction must be", "reduction None");
}

}  // namespace

int run() {
  check(graphsmile::version() == GRAPHSMILE_VERSION, "version() matches the header");
  std::vector<at::Device> devices{at::Device(at::kCPU)};
  if (graphsmile::has_cuda_kernels() && at::hasCUDA()) devices.emplace_back(at::kCUDA, 0);
  for (const auto& dev : devices) {
    for (int64_t wp : {-1, 0, 2}) {
      for (int64_t wf : {-1, 1}) test_window(dev, /*relative=*/false, wp, wf);
    }
    test_window(dev, /*relative=*/true, 2, 1);
    test_window(dev, /*relative=*/true, 0, 3);
    for (int64_t sw : {-1, 1, 3}) test_shift(dev, sw);
  }
  test_double_backward_refused();
  test_bad_arguments();
  std::cout << "graphsmile C++ API " << graphsmile::version() << " (CUDA kernels: "
            << (graphsmile::has_cuda_kernels() ? "yes" : "no") << ", devices tested: " << devices.size() << "): "
            << g_checks - g_failures << " of " << g_checks << " checks passed\n";
  return g_failures == 0 ? 0 : 1;
}

int main() {
  try {
    return run();
  } catch (const std::exception& e) {  // an error no check expected
    std::cerr << "FAIL: unexpected error after " << g_checks << " checks: " << e.what() << "\n";
    return 1;
  }
}
