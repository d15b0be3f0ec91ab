// A GraphSmile-style graph layer and shift head trained from C++ with graphsmile's ops.
//
// Three dialogues of two modalities (say text and audio, 32-d features each) form one windowed
// cross-modal graph (SPEC 2). One layer h = propagate(x W) with learnable per-edge weights (the
// original's, initialised to 1) learns to match a planted target, and the fused sentiment-shift
// loss trains a two-class head on the layer's output; both losses must fall. Runs on a GPU when
// the library holds the CUDA kernels and one is present. Exit status 1 if a loss did not fall.
#include <torch/torch.h>

#include <graphsmile/graphsmile.h>

#include <iostream>
#include <vector>

int main() {
  torch::manual_seed(0);
  const torch::Device device =
      graphsmile::has_cuda_kernels() && torch::cuda::is_available() ? torch::kCUDA : torch::kCPU;
  const std::vector<int64_t> lengths{12, 30, 7};
  const int64_t M = 2, D = 32;

  // the batch's graph: checked once, shared by every layer and step
  const graphsmile::WindowGraph graph(lengths, M, /*win_p=*/4, /*win_f=*/4);
  const int64_t N = graph.num_nodes();
  std::cout << "graphsmile " << graphsmile::version() << " on " << device << ": " << lengths.size() << " dialogues, N = " << N
            << " utterances, E = " << graph.num_edges() << " edges\n";

  // node features [M*N, D], modality-major; a planted target the layer can reach
  const auto opts = torch::TensorOptions().device(device);
  const torch::Tensor x = torch::randn({M * N, D}, opts);
  const torch::Tensor target = graph.propagate(x.matmul(torch::randn({D, D}, opts) / 6), torch::rand({graph.num_edges()}, opts) + 0.5);
  const torch::Tensor sentiment = torch::randint(0, 3, {N}, opts.dtype(torch::kLong));

  torch::nn::Linear layer(torch::nn::LinearOptions(D, D).bias(false));
  torch::nn::Linear shift_head(2 * D, 2);  // Linear(2D, 2): the original's shift head
  layer->to(device);
  shift_head->to(device);
  const torch::Tensor edge_weight = torch::ones({graph.num_edges()}, opts.requires_grad(true));
  std::vector<torch::Tensor> params{edge_weight};
  for (const auto& p : layer->parameters()) params.push_back(p);
  for (const auto& p : shift_head->parameters()) params.push_back(p);
  torch::optim::Adam optimiser(params, torch::optim::AdamOptions(1e-2));

  double first_fit = 0, first_shift = 0, fit_value = 0, shift_value = 0;
  for (int step = 0; step <= 200; ++step) {
    const torch::Tensor h = graph.propagate(layer(x), edge_weight);  // [M*N, D]
    const torch::Tensor fit = torch::mse_loss(h, target);
    // the shift loss over all pairs of each chunk of 5 utterances, on the text modality's rows
    const torch::Tensor text = h.slice(0, 0, N);
    const auto shift = graphsmile::shift_pair_nll(text, text, lengths, /*shift_win=*/5, shift_head->weight,
                                                  shift_head->bias, sentiment);
    optimiser.zero_grad();
    (fit + shift.loss).backward();
    optimiser.step();
    fit_value = fit.item<double>();
    shift_value = shift.loss.item<double>();
    if (step == 0) first_fit = fit_value, first_shift = shift_value;
    if (step % 50 == 0) {
      const auto c = shift.confusion.cpu();
      const double acc = (c[0][0].item<double>() + c[1][1].item<double>()) / c.sum().item<double>();
      std::cout << "step " << step << ": fit loss " << fit_value << ", shift loss " << shift_value << ", shift accuracy "
                << acc << "\n";
    }
  }
  const bool fell = fit_value < 0.5 * first_fit && shift_value < first_shift;
  std::cout << (fell ? "both losses fell" : "a loss did not fall") << "\n";
  return fell ? 0 : 1;
}
