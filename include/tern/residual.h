// Ternary residual networks (arXiv 1707.04679): where to spend extra ternary "edges".
//
// A ternary layer can carry a residual expansion W ~= T_0 + T_1 + ... (weight_quantization.h,
// expand_residual): each extra term is an edge set, a parallel ternary layer on the same input
// whose output is added. Edge sets cost bytes and multiplications, and help some layers far more
// than others. This file ranks the possible upgrades of a quantized model - the next residual term
// of a layer, or replacing the layer by int8 weights (a "fallback") - by estimated output
// distortion removed per stored byte, and picks them greedily under a budget.
//
// The distortion model is first order and additive over layers: with layer l quantized to
// relative error E_l (E_l,0 with its base term alone), the network output distortion is
//     D ~= sum_l D_l * E_l / E_l,0,
// where D_l is layer l's sensitivity, the distortion when l alone is quantized to its base term.
// An upgrade of layer l from error E to E' removes D_l (E - E') / E_l,0.
//
// Two ways to get D_l and E:
//  - measured (data): D_l = relative logit error on calibration images with only layer l at its
//    base term (every other layer FP32); E = the layer's relative output error on the
//    calibration inputs, tr(dW H dW^T) / tr(W H W^T) (output_aware.h).
//  - weights (data-free): D_l = g_l * e_l,0 with e = ||dW||^2 / ||W||^2 and g_l the propagation
//    gain of propagation_gains() below: how much of a relative perturbation of l's output reaches
//    the network output.
//
// The model's stored edges are ordered by importance (the order they were picked); level k runs
// the base terms plus the first k edge sets (QuantizedModel::set_level).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/tensor.h"
#include "tern/thread_pool.h"

namespace tern::quant {

enum class ResidualRanking {
  kMeasured,  // sensitivities and errors measured on calibration images
  kWeights,   // data-free: from the weights alone (propagation gains, weight errors)
  kUniform,   // every layer's term 1, then every layer's term 2, ... in graph order (no fallbacks)
  kRandom,    // a random sequence of the available upgrades (seeded)
};
const char* residual_ranking_name(ResidualRanking r);
ResidualRanking parse_residual_ranking(const std::string& name);  // measured | weights | uniform | random

// How far to upgrade: `tern quantize --residual size:BYTES|size:P%|edges:K|drop:PP|all`.
struct ResidualBudget {
  enum class Kind { kNone, kSize, kEdges, kDrop, kAll } kind = Kind::kNone;
  double value = 0;              // bytes (kSize), upgrades (kEdges), percentage points (kDrop)
  bool percent_of_int8 = false;  // kSize: value is a percentage of the int8 per-channel model's size
};
// "size:150000", "size:150k", "size:1.5M", "size:60%" (of the int8 model), "edges:12", "drop:0.5",
// "all". Throws Error naming the text for anything else, or a negative or absurd value.
ResidualBudget parse_residual_budget(const std::string& text);

// One quantized layer's upgrade options, for the allocator.
struct ResidualCandidate {
  std::vector<int64_t> term_bytes;  // stored bytes of term j (term 0: the base)
  std::vector<double> error;        // relative error with terms 0..j (same length; error[0] > 0)
  int64_t fallback_bytes = -1;      // bytes of the layer at int8 instead; < 0: no fallback offered
  double fallback_error = 0;        // its relative error
  double sensitivity = 0;           // D_l: output distortion with the base term alone
  // Keeping the layer float32 (weights and input): offered as a last resort by accuracy budgets
  // (--max-drop). float_bytes < 0: not offered. It removes the layer's remaining weight distortion
  // and float_extra, the distortion its input activation quantization adds.
  int64_t float_bytes = -1;
  double float_extra = 0;
};

// One upgrade: the next residual term of a layer (term >= 1), its int8 fallback (term 0), or
// keeping it float32 (term kFloatMove).
inline constexpr int kFloatMove = -1;
struct ResidualMove {
  size_t layer = 0;
  int term = 0;
  int64_t bytes = 0;   // added bytes (a fallback's may be negative: int8 smaller than the expansion)
  double gain = 0;     // estimated distortion removed
};

// Upgrades in the order the ranking picks them, while their added bytes fit `max_bytes`. Greedy
// rankings (measured, weights) take the best gain per added byte among the upgrades that fit and
// still help; a layer's term j is offered only after its term j - 1; a layer that falls back to
// int8 takes no further terms, and a float32 layer nothing more.
std::vector<ResidualMove> order_residual_moves(const std::vector<ResidualCandidate>& layers, ResidualRanking ranking,
                                               int64_t max_bytes = std::numeric_limits<int64_t>::max(),
                                               uint64_t seed = 1);

// The outcome of the first `count` moves: which layers fall back to int8, and the residual edges
// left, in pick order (edges of a layer that fell back later are dropped: int8 replaces them).
struct ResidualAllocation {
  std::vector<bool> fallback;         // per layer
  std::vector<bool> kept_float;       // per layer (a float move was taken; fallback is then false)
  std::vector<ResidualMove> edges;    // importance order: level k enables the first k
  double estimated_distortion = 0;    // sum_l D_l E_l / E_l,0 after the moves
};
ResidualAllocation allocation_from_moves(const std::vector<ResidualCandidate>& layers,
                                         const std::vector<ResidualMove>& moves, size_t count);

// Data-free propagation gains g_l for the Conv/Gemm nodes `layers` of an FP32 graph, from the
// weights alone. Every value carries a signal energy S (variance per element; the graph input has
// S = 1) and, for each layer l, the energy N_l of the perturbation a unit relative weight error of
// l puts on it. A Conv/Gemm with weights W [out][fan-in] multiplies energies by f = ||W||_F^2 / out
// (uncorrelated inputs; biases shift means, not variances); layer l itself adds f * S_in to N_l.
// ReLU / Clip halve both (half the inputs pass, and so does half of a small perturbation). Add
// sums both; Concat averages by channel count; other ops pass them through. Then g_l = N_l / S at
// the graph output: 1 for a plain chain, less where a residual Add dilutes the branch. See
// docs/residual.md for the derivation and its assumptions.
std::vector<double> propagation_gains(const Graph& graph, const std::vector<std::string>& layers);

// Measured sensitivities: for each l, the relative error sum ||z_l - z||^2 / sum ||z||^2 of the
// graph's first output over `images`, where z_l comes from `graph` with constant `weight_values[l]`
// replaced by `replacements[l]` (and z from `graph` unchanged).
std::vector<double> measured_sensitivities(const Graph& graph, const std::vector<std::string>& weight_values,
                                           const std::vector<Tensor>& replacements, const Tensor& images,
                                           int64_t batch = 64, ThreadPool* pool = nullptr);

}  // namespace tern::quant
