// Conv/Gemm products with emulated reduced-precision accumulation (Sakr et al. 2019), for
// TrainableGraph::set_layer_product: the forward product, the input gradient and the weight
// gradient each run accum::gemm_reduced_accumulation with their own accumulator mantissa width.
//
// A convolution is lowered to GEMMs that sum what the convolution sums: the forward product
// (im2col) Cin/groups * kh * kw products, the input gradient (the transposed convolution as one
// GEMM over the stride-dilated output gradient) Cout/groups * kh * kw, the weight gradient
// batch * Hout * Wout.
#pragma once

#include <torch/torch.h>

#include "train/trainable_graph.h"

namespace tern::train {

struct AccumulationBits {
  int forward = 0, backward = 0, weight_grad = 0;  // mantissa bits; 0: exact float32 (torch)
  int64_t chunk = 0;                               // 0: one running sum
};

// C = A @ B (float32, 2-D) with the forward product accumulated at bits.forward. `weight_is_a`
// says which operand is the layer's weight: its gradient is the weight-gradient GEMM
// (bits.weight_grad), the other operand's the input gradient (bits.backward).
torch::Tensor reduced_matmul(const torch::Tensor& a, const torch::Tensor& b, bool weight_is_a,
                             const AccumulationBits& bits);

// The layer's product (no bias): Conv2d by im2col, Gemm by reduced_matmul.
torch::Tensor reduced_accumulation_product(const TrainableGraph::LayerProduct& p, const AccumulationBits& bits);

}  // namespace tern::train
