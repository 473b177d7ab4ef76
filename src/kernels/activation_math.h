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

// erf within 3 ulp of libm's (tests), NaN stays NaN. |x| < 0.875: x P(x^2), P of degree 5 (a
// least-squares fit of erf(x) / x in x^2); 0.875 <= |x| < 4: 1 - e^(-x^2) R(1 / |x|), R of degree
// 10 (a fit of erfc(a) e^(a^2), relative error 1.3e-8); from 4 on, +-1 (erfc(4) = 1.5e-8 is below
// half an ulp of 1). Both branches are computed and one selected, so loops vectorize.
static inline float erf_approx(float x) {
  const float a = x < 0.0f ? -x : x;
  const float z = x * x;
  float p = -6.218505441211164e-04f;
  p = p * z + 5.0351242534816265e-03f;
  p = p * z + -2.6793455705046654e-02f;
  p = p * z + 1.1282510310411453e-01f;
  p = p * z + -3.761255443096161e-01f;
  p = p * z + 1.1283791065216064e+00f;
  const float small = x * p;
  const float t = 1.0f / (a < 0.875f ? 1.0f : a);
  float q = -1.9284633919596672e-02f;
  q = q * t + 1.457294374704361e-01f;
  q = q * t + -4.814735949039459e-01f;
  q = q * t + 8.963276147842407e-01f;
  q = q * t + -9.820159077644348e-01f;
  q = q * t + 5.272132754325867e-01f;
  q = q * t + 1.0364840179681778e-01f;
  q = q * t + -3.387681841850281e-01f;
  q = q * t + 1.3607642613351345e-02f;
  q = q * t + 5.625135898590088e-01f;
  q = q * t + 8.595283725298941e-05f;
  const float big = 1.0f - exp_approx(-z) * q;
  const float magnitude = a < 4.0f ? big : 1.0f;
  const float large = x < 0.0f ? -magnitude : magnitude;
  const float r = a < 0.875f ? small : large;
  return x != x ? x : r;
}

// GELU in the order torch.onnx writes it (Div or Mul, Erf, Add 1, Mul by x, Mul by 0.5): the
// simulation runs those nodes one by one, so the fused epilogue must round exactly as they do.
static inline float gelu_div(float x, float divisor) { return (x * (erf_approx(x / divisor) + 1.0f)) * 0.5f; }
static inline float gelu_mul(float x, float factor) { return (x * (erf_approx(x * factor) + 1.0f)) * 0.5f; }

// clamp(alpha x + beta, 0, 1): HardSigmoid; HardSwish is x times it with alpha 1/6, beta 1/2.
static inline float hard_sigmoid(float x, float alpha, float beta) { return std::min(std::max(alpha * x + beta, 0.0f), 1.0f); }

}  // namespace tern::kernels
