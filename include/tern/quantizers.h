// Weight quantizers on one group of weights: the math of FGQ (exact per-group L2 ternarization,
// symmetric and asymmetric), the TWN and TNT baselines, binarization and symmetric k-bit integers.
// A group is a span of weights sharing one scale; how a layer is cut into groups is the plan's job.
//
// Codes are int8: {-1, 0, +1} for ternary, {-1, +1} for binary, [-(2^(b-1)-1), 2^(b-1)-1] for
// k-bit. A weight is reconstructed as code * scale, with scale = positive for codes > 0 and
// negative for codes < 0 (equal for symmetric methods).
#pragma once

#include <cstdint>
#include <span>

namespace tern::quant {

// What a quantized layer keeps of each group (QuantizedWeights::scales): 8 bytes a group.
struct ScalePair {
  float positive = 0.0f;  // scale of +codes
  float negative = 0.0f;  // scale of -codes (a magnitude: w ~= -negative for code -1)
};
static_assert(sizeof(ScalePair) == 8, "a layer keeps 8 bytes of scales a group");

// A quantizer's result for one group: its scales and the threshold it chose, which only the
// quantizers' tests read (a layer keeps the ScalePair).
struct GroupScales : ScalePair {
  float threshold = 0.0f; // |w| above it became non-zero (ternary methods); 0 otherwise
};

// FGQ: the exact minimizer of ||w - alpha*t||^2 over alpha >= 0 and t in {-1,0,+1}^N, in
// O(N log N): the support is the top-k magnitudes for k* = argmax_k (P_k)^2 / k (P_k = sum of the k
// largest |w|), alpha = P_k* / k*. Among equal optima the smallest k (the sparsest code) wins.
GroupScales ternarize_l2(std::span<const float> w, std::span<int8_t> codes);

// FGQ's asymmetric variant: separate scales for positive and negative weights; the problem splits
// into the same 1-D search over the positive weights and over the negative ones.
GroupScales ternarize_l2_asymmetric(std::span<const float> w, std::span<int8_t> codes);

// TWN: threshold 0.7 * mean|w|, scale = mean |w| above it.
GroupScales ternarize_twn(std::span<const float> w, std::span<int8_t> codes);

// TNT: the support maximizing cosine similarity, k* = argmax_k P_k / sqrt(k); scales are the means
// of the selected positive and negative magnitudes.
GroupScales ternarize_tnt(std::span<const float> w, std::span<int8_t> codes);

// sign(w) * mean|w| (zeros map to +1).
GroupScales binarize(std::span<const float> w, std::span<int8_t> codes);

// Symmetric uniform k-bit (2..8): scale = max|w| / (2^(bits-1) - 1), code = round-half-away(w / scale).
GroupScales quantize_symmetric(std::span<const float> w, int bits, std::span<int8_t> codes);

// sum (w_i - code_i * scale_i)^2, in double.
double reconstruction_error(std::span<const float> w, std::span<const int8_t> codes, const ScalePair& scales);

}  // namespace tern::quant
