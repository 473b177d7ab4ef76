// Fake quantization for fine-tuning on libtorch: the forward pass computes exactly the values the
// quantized model computes (it calls tern's own quantizers, not a re-implementation), the backward
// pass is the straight-through estimator.
//
//   weights:     w_q = Q(w) in the forward pass, dL/dw = dL/dw_q (identity: FGQ/int quantizers
//                scale to the group's own range, so no weight is clipped);
//   activations: x_q = scale * clamp(round(x / scale), qmin, qmax); dL/dx = dL/dx_q where
//                qmin <= x / scale <= qmax, and 0 where the value was clipped;
//   biases:      b_q = the int32 bias times its scale (input scale x the filter's weight scale).
#pragma once

#include <torch/torch.h>

#include <vector>

#include "tern/quantized_model.h"

namespace tern::train {

// Quantizes `weights` (canonical layout [out][in][taps], any torch shape holding it) with the
// layer's configuration through quant::quantize_weights, stores the result as layer.terms = {q},
// and returns the dequantized weights in the input's shape with straight-through gradients.
torch::Tensor fake_quantize_weights(const torch::Tensor& weights, quant::QuantizedLayer& layer);

// The int32-grid bias of layer (its base term and input scale must be set: call after
// fake_quantize_weights), via quant::quantize_layer_bias; straight-through gradients.
torch::Tensor fake_quantize_bias(const torch::Tensor& bias, quant::QuantizedLayer& layer);

// Static activation quantization with quant::fake_quantize; straight-through inside the clipping
// range, zero outside. Throws Error for a dynamic (per-image) quantizer: fine-tuning calibrates
// static scales.
torch::Tensor fake_quantize_activation(const torch::Tensor& x, const quant::ActivationQuant& quantizer);

// Copies between tern tensors / vectors and torch float32 CPU tensors.
torch::Tensor to_torch(const Tensor& tensor);
Tensor to_tern(const torch::Tensor& tensor);
std::vector<float> to_vector(const torch::Tensor& tensor);

}  // namespace tern::train
