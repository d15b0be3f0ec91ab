// The per-pair term of the fused shift-pair NLL (op shift_pair_nll), shared by the CPU kernel,
// the CUDA kernels and the CUDA emulator. No torch headers: compiles with plain g++ and nvcc.
//
// The shift head's logits of pair (i, j) are z = a_i + b_j (two classes), its label is
// y = (sentiment_i != sentiment_j), and the loss term is the NLL of log_softmax(z) at y. With
// d = z_1 - z_0 that is
//
//   loss = softplus(x),  x = (y ? -d : d)          softplus(x) = max(x, 0) + log1p(exp(-|x|))
//   r    = d loss / d d = sigmoid(d) - y = (y ? -sigmoid(x) : sigmoid(x))
//   pred = argmax(z) = (z_1 > z_0) = (d > 0)        (a tie predicts class 0, as torch.argmax)
//
// d loss / d z_1 = r and d loss / d z_0 = -r. One exp, one log1p and one division per pair,
// each evaluated once for the loss, its gradient and the prediction. NaN inputs give NaN loss
// and residual (and predict 0); d = +-inf gives loss inf or 0 and residual +-1 or 0.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GS_NLL_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#define GS_NLL_HD inline
#endif

namespace graphsmile {

GS_NLL_HD float nll_exp(float x) { return expf(x); }
GS_NLL_HD double nll_exp(double x) { return exp(x); }
GS_NLL_HD float nll_log1p(float x) { return log1pf(x); }
GS_NLL_HD double nll_log1p(double x) { return log1p(x); }
GS_NLL_HD float nll_abs(float x) { return fabsf(x); }
GS_NLL_HD double nll_abs(double x) { return fabs(x); }

// Loss of one pair from its two (already rounded) logits; writes the residual r and the
// prediction. acc_t: float (for fp16 / bf16 / fp32 inputs) or double.
template <typename acc_t>
GS_NLL_HD acc_t shift_nll_term(acc_t z0, acc_t z1, bool y, acc_t* resid, bool* pred) {
  const acc_t d = z1 - z0;
  const acc_t x = y ? -d : d;
  const acc_t e = nll_exp(-nll_abs(x));  // exp(-|x|), in (0, 1]; NaN stays NaN (-|x|: a free operand modifier on GPUs)
  const acc_t inv = acc_t(1) / (acc_t(1) + e);
  const acc_t sig_x = x >= acc_t(0) ? inv : e * inv;  // sigmoid(x) without overflow
  *resid = y ? -sig_x : sig_x;
  *pred = d > acc_t(0);
  return (x > acc_t(0) ? x : acc_t(0)) + nll_log1p(e);
}

}  // namespace graphsmile
