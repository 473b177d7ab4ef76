// Element-wise activation functions as plain float arithmetic, shared by the FP32 operators and
// the integer engine's epilogue (requantize.h), so that both compute the same bits: the compiler
// vectorizes these in a loop (no libm call), and -ffp-contract=off keeps every build's rounding.
// static: each translation unit (each ISA's build) keeps its own copy; one shared out-of-line copy
// compiled for AVX-512 could otherwise serve a baseline caller.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace tern::kernels {

// e^x within 2 ulp for x in [-87, 88] (clamped there; e^-87 ~ 1.6e-38 is the least normal result;
// NaN gives e^-87: callers that must propagate NaN test for it):
// x = n ln2 + r with |r| <= ln2 / 2 (Cody-Waite, ln2 in two parts), a degree-6 polynomial for e^r
// (Cephes' expf coefficients), and 2^n built in the exponent bits. n is rounded to nearest by
// adding and subtracting 1.5 * 2^23 (exact in round-to-nearest arithmetic).
static inline float exp_approx(float x) {
  // Clamped as vmaxps / vminps clamp (a NaN becomes -87, as in the intrinsic builds), so that the
  // integer conversion below never sees a NaN.
  x = x > -87.0f ? x : -87.0f;
  x = x < 88.0f ? x : 88.0f;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  return p * scale;
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

// clamp(alpha x + beta, 0, 1): HardSigmoid; HardSwish is x times it with alpha 1/6, beta 1/2.
static inline float hard_sigmoid(float x, float alpha, float beta) { return std::min(std::max(alpha * x + beta, 0.0f), 1.0f); }

}  // namespace tern::kernels
