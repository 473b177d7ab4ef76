// Reference implementations of every IR operator on tensors (float32, plus the int64 shape
// arithmetic the importer folds). The executor calls these for every node it has no prepared fast
// path for; constant folding calls them through evaluate_node.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "kernels/fp32/conv2d.h"
#include "tern/graph.h"
#include "tern/thread_pool.h"

namespace tern::ops {

struct OpContext {
  const Node& node;
  std::string who;  // "model.onnx: node 'x' (Conv)" for errors
  int64_t batch;    // what kSymbolicBatch stands for
  ThreadPool* pool;
};

// Maps an N-D (1-D or 2-D spatial) Conv onto the 2-D kernel's shape description.
kernels::Conv2dShape conv_shape(const ConvAttrs& attrs, const Shape& input, const Shape& weights);

// Conv with already packed weights (the executor's prepared path).
Tensor conv_packed(const OpContext& ctx, const Tensor& input, const kernels::PackedConvWeights& weights,
                   const Tensor* bias, const Shape& out_shape);

std::vector<Tensor> run(const OpContext& ctx, std::span<const Tensor* const> inputs, std::span<const Shape> out_shapes);

}  // namespace tern::ops
