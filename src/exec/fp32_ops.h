// The executor's prepared fast paths (packed Conv and Gemm weights) and the entry to every
// operator's FP32 reference kernel (src/ops/: float32, plus the int64 shape arithmetic the importer
// folds). Constant folding calls them through evaluate_node.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/fp32/conv2d.h"
#include "ops/op.h"
#include "tern/graph.h"
#include "tern/thread_pool.h"

namespace tern::ops {


// LayerNormalization's statistics of one row of n values as its FP32 kernel computes them (sums
// in double): the mean, rounded to float, and 1 / sqrt(variance + eps). The integer program's
// LayerNorm step uses them too, so that both give the same bits.
struct RowMoments {
  float mean, inv_std;
};
RowMoments layer_norm_moments(const float* x, int64_t n, float eps);

// Maps an N-D (1-D or 2-D spatial) Conv onto the 2-D kernel's shape description.
kernels::Conv2dShape conv_shape(const ConvAttrs& attrs, const Shape& input, const Shape& weights);

// Conv with already packed weights (the executor's prepared path).
Tensor conv_packed(const OpContext& ctx, const Tensor& input, const kernels::PackedConvWeights& weights,
                   const Tensor* bias, const Shape& out_shape);

// Gemm weights prepared once: Y = X * W' + bias computed as (W' * X^T)^T so the constant weights are
// the packed operand (alpha folded in, beta folded into the bias).
struct PackedGemm {
  kernels::PackedMatrixA weights;  // [N, K]
  std::vector<float> bias;         // N entries, or empty
};
// Null when the node does not fit (non-constant weights, transA, a bias that is not per column).
std::optional<PackedGemm> pack_gemm(const Node& node, const Graph& graph);
Tensor gemm_packed(const OpContext& ctx, const Tensor& x, const PackedGemm& packed, const Shape& out_shape);

// The node's FP32 reference kernel (its record's).
std::vector<Tensor> run(const OpContext& ctx, std::span<const Tensor* const> inputs, std::span<const Shape> out_shapes);

}  // namespace tern::ops
