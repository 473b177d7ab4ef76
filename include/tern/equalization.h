// Function-preserving rescalings of an FP32 graph that make it easier to quantize: cross-layer
// equalization (Nagel et al. 2019, data-free) and SmoothQuant-style activation smoothing (Xiao et
// al. 2023, from calibration statistics). Both move per-channel scale between a layer and the one
// that reads it; the FP32 function is unchanged up to float rounding.
#pragma once

#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/tensor.h"
#include "tern/thread_pool.h"

namespace tern {

struct EqualizationReport {
  std::vector<std::pair<std::string, std::string>> pairs;  // (first layer, second layer) node names
  int sweeps = 0;                                           // passes over the pairs until the scales settled
};

// Cross-layer equalization. A pair is a Conv/Gemm A (constant weights, then nothing, or a ReLU fused
// as its clamp [0, inf)) whose output only a Conv/Gemm B with constant weights reads (B's data
// input). Output channel i of A is divided by s_i and B's weights reading channel i multiplied by
// s_i, with s_i = sqrt(r_A(i) / r_B(i)) (r: the channel's max |w|), so that both ranges become
// sqrt(r_A r_B): per-tensor and fine-grained weight grids then waste less of their range, and A's
// output channels (B's input activations) become alike. A layer in two pairs (a depthwise between
// two pointwise) is balanced by sweeping until no scale moves by more than 0.1 % (at most 32 sweeps).
// A clamp other than ReLU (ReLU6, hard limits) is not scale-equivariant and ends a pair.
EqualizationReport equalize_cross_layer(Graph& graph);

struct SmoothingReport {
  std::vector<std::string> inputs;  // the smoothed values (each read only by Gemm layers)
  double alpha = 0.5;
};

// SmoothQuant: a value read only by Gemm layers with constant weights [N, D] (a transformer's
// linear layers after a LayerNorm) and made by a per-channel affine map (Mul by a constant gamma,
// then optionally Add a constant beta, each of D elements over the last axis; or a
// LayerNormalization with constant scale and bias) has channel j divided by
// s_j = max|x_j|^alpha / max|w_j|^(1 - alpha) (folded into gamma and beta) and the weights reading
// it multiplied by s_j. max|x_j| is measured on `calibration` (model inputs, run in batches of
// `batch`). Outlier channels of x move into the weights, where per-channel scales absorb them.
SmoothingReport smooth_activations(Graph& graph, const Tensor& calibration, double alpha, int64_t batch,
                                   ThreadPool* pool = nullptr);

}  // namespace tern
