// The quantization plan: which precision every Conv/Gemm layer gets.
//
// Defaults come from options (CLI flags); a JSON config can override them per layer:
//
//   {
//     "weights": "ternary",        // ternary | binary | int2 .. int8 | float32
//     "method": "fgq",             // fgq | fgq-asym | twn | tnt | cluster (ternary only)
//     "group_size": 4,             // N, "channel" for whole filters, "tensor" (int weights only)
//     "activation_bits": 8,        // 4 | 8 (the bits of the layer's input activations)
//     "first_last_8bit": true,     // keep the first and last layers at int8 weights (the default)
//     "depthwise_8bit": true,      // keep depthwise layers at int8 under weights below 8 bits (the default)
//     "layers": [                  // applied in order; later entries win
//       {"name": "/fc/Gemm", "weights": "int8"},
//       {"match": "/layers/layers\\.0/.*", "group_size": 8}
//     ]
//   }
//
// An entry must match at least one layer: a config naming a layer that does not exist is an error.
// "First" and "last" are the first and last Conv/Gemm in topological order: they hold few
// weights and carry the most precision-sensitive signals (raw pixels in, class scores out).
// Depthwise layers (one input channel per group) hold a few taps per channel (about 4 % of
// MobileNetV3-small's weights) and lose most under ternary codes: int8 there costs +3 % of the
// ternary size and recovered 15 of the 33 points MobileNetV3-small lost with them ternary; at int4,
// MobileNetV3-large (trained here) lost 5.5 points with them int4 and 3.6 with them int8.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/weight_quantization.h"

namespace tern::quant {

struct LayerPlan {
  std::string node;  // the Conv/Gemm node's name
  WeightQuantConfig weights;
  int activation_bits = 8;  // 0: the layer's input stays float32
  std::string reason;       // why it got this precision ("default", "first layer", "config: ...")
};

struct PlanOptions {
  WeightQuantConfig weights;
  int activation_bits = 8;
  bool first_last_8bit = true;
  bool depthwise_8bit = true;  // under weights below 8 bits (see the file comment)
};

// Parses "ternary", "binary", "int4", "float32" ... into format and bits; Error naming `what` otherwise.
void parse_weight_spec(const std::string& spec, WeightQuantConfig& config, const std::string& what);
TernaryMethod parse_ternary_method(const std::string& name, const std::string& what);
// "channel" -> kWholeFilter, "tensor" -> -1 (int weights: one scale per tensor), else N >= 1.
int64_t parse_group_size(const std::string& text, const std::string& what);

// The plan for every Conv and Gemm of the graph, from options and an optional JSON config (text).
// Throws Error ("CONFIG: problem") for malformed JSON, unknown keys or values, bad combinations,
// or an entry that matches no layer.
std::vector<LayerPlan> make_plan(const Graph& graph, const PlanOptions& options,
                                 const std::optional<std::string>& config_json = std::nullopt,
                                 const std::string& config_name = "config");

}  // namespace tern::quant
