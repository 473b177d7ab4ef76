// Output-aware rounding: choosing a layer's quantized weights to minimize the error of its
// *output* on calibration inputs, E||W x - Q x||^2 = tr((W - Q) H (W - Q)^T) with H = E[x x^T],
// instead of the weight error ||W - Q||^2 that FGQ, TWN and TNT minimize.
//
// The weights are quantized one input column at a time (GPTQ, Frantar et al. 2022, after Optimal
// Brain Quantization): the rounding error of column j is pushed onto the columns not yet quantized
// through the inverse Hessian, so that later columns compensate for it. Group scales keep the
// chosen method and grouping: when the first column of a group is reached, the method (FGQ's
// exact L2 optimum, TWN, TNT, ...) computes the group's scale from the group's current, already
// compensated weights; each weight is then rounded to the nearest level of that scale. The result
// has exactly the format, grouping and storage cost of plain quantization.
//
// Columns are visited group by group (input-channel block, then tap, then channel within the
// block), so that every group's columns are consecutive and its scale is fixed before any of them
// is rounded.
#pragma once

#include <vector>

#include "tern/graph.h"
#include "tern/tensor.h"
#include "tern/thread_pool.h"
#include "tern/weight_quantization.h"

namespace tern::quant {

// Accumulates H = sum over input patches x of x x^T for one Conv/Gemm layer, per convolution group:
// for a Conv, patches are the im2col columns of its input in the canonical [in][taps] order (zero
// padding included); for a Gemm, the input rows.
class InputCovariance {
 public:
  InputCovariance(const Graph& graph, const Node& node, int64_t in, int64_t taps);
  void add(const Tensor& input, ThreadPool* pool);  // a batch of the layer's input
  int64_t groups() const { return groups_; }
  int64_t dim() const { return in_ * taps_; }
  int64_t samples() const { return samples_; }
  const std::vector<double>& matrix(int64_t group) const { return h_[static_cast<size_t>(group)]; }  // dim x dim

 private:
  bool conv_ = false;
  int64_t groups_ = 1, in_ = 0, taps_ = 0;
  std::vector<int64_t> kernel_, strides_, pads_, dilations_;
  std::vector<std::vector<double>> h_;
  int64_t samples_ = 0;
};

// Quantizes weights [out][in][taps] (canonical) with error feedback through H (one matrix per
// convolution group; out divides evenly into groups). damping: added to H's diagonal as a
// fraction of its mean (GPTQ's 1%), for a well-conditioned inverse. Same result type, grouping and
// codes as quantize_weights; sqnr_db and zero_fraction measured against `weights` as usual.
QuantizedWeights quantize_weights_output_aware(const std::vector<float>& weights, int64_t out, int64_t in, int64_t taps,
                                               const WeightQuantConfig& config, const InputCovariance& covariance,
                                               double damping = 0.01);

// The layer-output error tr((W - Q) H (W - Q)^T) / tr(W H W^T) of a quantization, summed over
// groups: what output-aware rounding minimizes (tests and reports).
double relative_output_error(const std::vector<float>& weights, const QuantizedWeights& q, const InputCovariance& covariance);
// The same for any approximation of the weights (e.g. a sum of residual terms), same layout.
double relative_output_error(const std::vector<float>& weights, const std::vector<float>& approx,
                             const InputCovariance& covariance);

}  // namespace tern::quant
