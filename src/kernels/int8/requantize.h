// The integer engine's epilogue and its depthwise convolution, on NHWC blocks.
//
// requantize_block turns a block of int32 sums (one column = one output pixel, its rows the
// output channels, several residual-expansion terms stacked) into the layer's outputs:
//     v = sum_j (acc_j[r] - offset_j[r]) * multiplier_j[r] + bias[r]
//     v = clamp(v, lo, hi)
//     v = act(v)                           (a fused HardSigmoid, HardSwish, Sigmoid, SiLU or GELU:
//                                           activation_math.h, the FP32 operators' own functions)
// (multiplier = input scale * weight step; offset = the activation zero point times the row's
// weight sum, taken off in int32 so that it costs no precision)
//     v = clamp(v + residual[r], lo2, hi2)                  (a fused residual Add and its ReLU)
//     (residual[r] * residual_scale[r] where residual_scale is given: a squeeze-excitation gate)
// and writes v as float32 and/or as the next layer's activation codes,
//     code = clamp(round_half_away(v * inv_scale), qlo, qhi) + zero,
// the simulation's FakeQuantize (x / scale) with a multiply by the reciprocal instead of a divide.
// A float multiplier per channel costs the same instructions on AVX-512 as a fixed-point
// multiply-and-shift and keeps the simulation's arithmetic (docs/integer-engine.md).
//
// depthwise_conv_int8 computes one output row of a depthwise convolution on padded u8 NHWC codes.
//
// One source (requantize_impl.h) is compiled per ISA with its own flags and vectorized by the
// compiler; contraction into FMA is off, so every ISA rounds the same way.
#pragma once

#include <cmath>
#include <cstdint>

namespace tern::kernels {

// kGelu / kGeluMul: GELU as exporters write it, (v * (erf(v / alpha) + 1)) * 0.5, or with
// v * alpha inside the erf (alpha = 1/sqrt(2) for the exact GELU), in that order (activation_math.h).
enum class Activation : uint8_t { kNone, kHardSigmoid, kHardSwish, kSigmoid, kSilu, kGelu, kGeluMul };

// The float just below one half. Truncating t + copysign(kHalfBelow, t) rounds every float t half
// away from zero, as std::round does; with 0.5 itself, 0.49999997 + 0.5 rounds (to even) to 1.
inline constexpr float kHalfBelow = 0.49999997f;

// t rounded half away from zero, exactly as std::round (for |t| < 2^31): the one rounding of every
// code the simulation and the integer engine make.
inline int32_t round_half_away(float t) { return static_cast<int32_t>(t + std::copysign(kHalfBelow, t)); }

struct RequantArgs {
  int64_t cols = 0, rows = 0;
  int terms = 1;
  const int32_t* acc = nullptr;  // acc[col * acc_stride + j * term_stride + r]
  int64_t acc_stride = 0, term_stride = 0;
  const float* multiplier = nullptr;  // [j * multiplier_term_stride + r]
  const int32_t* offset = nullptr;    // [j * multiplier_term_stride + r], or null (zero)
  int64_t multiplier_term_stride = 0;
  const float* bias = nullptr;        // [r]
  float lo = -__builtin_inff(), hi = __builtin_inff();
  Activation act = Activation::kNone;
  float act_alpha = 0.0f, act_beta = 0.0f;  // HardSigmoid / HardSwish: clamp(alpha v + beta, 0, 1); GELU: alpha
  const float* residual = nullptr;    // [col * residual_stride + r], or null
  int64_t residual_stride = 0;
  const float* residual_scale = nullptr;  // [r], or null (one)
  float lo2 = -__builtin_inff(), hi2 = __builtin_inff();
  float* out = nullptr;               // [col * out_stride + r], or null
  int64_t out_stride = 0;
  uint8_t* codes = nullptr;           // [col * codes_stride + r], or null
  int64_t codes_stride = 0;
  float inv_scale = 1.0f, qlo = 0.0f, qhi = 255.0f;
  int32_t zero = 0;
};

void requantize_block(const RequantArgs& a);
void requantize_block_reference(const RequantArgs& a);

// One output row of a depthwise convolution (channel multiplier 1): for each of out_w pixels and
// each channel c < channels, acc = sum_taps w[tap * channels + c] * x[pixel + tap_offset[tap] + c],
// where pixel = x_row + ow * x_step. acc[ow * channels + c].
void depthwise_row_int8(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                        const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc);
void depthwise_row_int8_reference(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                                  const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc);

// Internal: per-ISA builds of requantize_impl.h.
void requantize_block_avx2(const RequantArgs& a);
void requantize_block_avx512(const RequantArgs& a);
void depthwise_row_int8_avx2(const uint8_t*, int64_t, const int64_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*);
void depthwise_row_int8_avx512(const uint8_t*, int64_t, const int64_t*, int64_t, const int8_t*, int64_t, int64_t,
                               int32_t*);
void depthwise_row_int8_avx512_vnni(const uint8_t*, int64_t, const int64_t*, int64_t, const int8_t*, int64_t, int64_t,
                                    int32_t*);  // depthwise_avx512_vnni.cpp: four taps per vpdpbusd
void depthwise_row_int8_avxvnni(const uint8_t*, int64_t, const int64_t*, int64_t, const int8_t*, int64_t, int64_t,
                                int32_t*);  // depthwise_avxvnni.cpp: the same on ymm (AVX-VNNI)

}  // namespace tern::kernels
