// Internal steps of quantize_model() that live in their own files.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "tern/output_aware.h"
#include "tern/quantized_model.h"

namespace tern::quant {

// Sets every layer's int32 bias (input scale x its filter's largest base-term group scale) from
// the FP32 biases in `fp32`, and the graph's bias values to the dequantized int32 values. Layers
// with dynamic or float inputs keep float biases.
void quantize_biases(QuantizedModel& m, const Graph& fp32);

// Empirical bias correction (bias_correction.cpp): each layer's bias moves by the difference
// between the FP32 and the quantized model's mean output per channel, measured on `images` (as
// many as fit in one batch of about 1 GB) layer after layer, each with the earlier corrections in
// place. Sets the biases as quantize_biases() does; returns a summary for provenance.
nlohmann::json correct_biases(QuantizedModel& m, const Graph& fp32, const Tensor& images, int64_t batch,
                              ThreadPool* pool);

// Candidate activation quantizations per layer input (--calibration auto): one per method.
using RangeCandidates = std::map<ValueId, std::vector<ActivationQuant>>;

// Per-layer choice of calibration (range_choice.cpp): for every input with several candidates,
// sets the quantization of the layers reading it to the candidate whose fake quantization gives
// those layers (with m's quantized weights) the least squared output error against FP32 on
// `images`. m.graph must hold the quantized weights; biases may still be float.
void choose_activation_ranges(QuantizedModel& m, const Graph& fp32, const RangeCandidates& candidates,
                              const Tensor& images, int64_t batch, ThreadPool* pool);

// What the residual allocation needs from quantize_model().
struct ResidualContext {
  const Graph& fp32;                                              // canonical FP32 weights
  const std::vector<std::vector<float>>& weights;                 // per layer; empty: not ternary
  const std::vector<std::optional<InputCovariance>>& covariances;  // per layer (output-aware rounding)
  const QuantizeOptions& options;
  const Tensor* calibration;
  ThreadPool* pool;
  // Sets a model's biases (quantize_biases, or bias correction): every model an accuracy budget
  // measures is finished as the one stored.
  std::function<void(QuantizedModel&)> finish_biases;
};

// Expands the ternary layers, ranks the upgrades, applies the budget and stores the chosen terms,
// fallbacks and edge order in `m` (at its highest level). Returns a JSON summary for provenance.
nlohmann::json allocate_residual(QuantizedModel& m, const ResidualContext& ctx);

}  // namespace tern::quant
