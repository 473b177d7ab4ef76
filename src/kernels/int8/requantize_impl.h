// The loops behind requantize.h, written once and included by one source file per ISA (each with
// its own compiler flags); REQUANT_SUFFIX names that build's functions. Plain loops over the
// channels the compiler vectorizes.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/activation_math.h"
#include "kernels/int8/requantize.h"

#define REQUANT_CAT2(a, b) a##b
#define REQUANT_CAT(a, b) REQUANT_CAT2(a, b)
#define REQUANT_NAME(f) REQUANT_CAT(f, REQUANT_SUFFIX)

namespace tern::kernels {

void REQUANT_NAME(requantize_block)(const RequantArgs& a) {
  constexpr int64_t kChunk = 256;  // channels per pass: v stays in registers / L1
  float v[kChunk];
  for (int64_t col = 0; col < a.cols; ++col) {
    const int32_t* acc = a.acc + col * a.acc_stride;
    for (int64_t r0 = 0; r0 < a.rows; r0 += kChunk) {
      const int64_t n = std::min(kChunk, a.rows - r0);
      for (int64_t r = 0; r < n; ++r) v[r] = a.bias[r0 + r];
      for (int j = 0; j < a.terms; ++j) {
        const int32_t* aj = acc + j * a.term_stride + r0;
        const float* mj = a.multiplier + j * a.multiplier_term_stride + r0;
        const int32_t* oj = a.offset ? a.offset + j * a.multiplier_term_stride + r0 : nullptr;
        for (int64_t r = 0; r < n; ++r) v[r] += static_cast<float>(aj[r] - (oj ? oj[r] : 0)) * mj[r];
      }
      for (int64_t r = 0; r < n; ++r) v[r] = std::min(std::max(v[r], a.lo), a.hi);
      switch (a.act) {
        case Activation::kNone: break;
        case Activation::kHardSigmoid:
          for (int64_t r = 0; r < n; ++r) v[r] = hard_sigmoid(v[r], a.act_alpha, a.act_beta);
          break;
        case Activation::kHardSwish:
          for (int64_t r = 0; r < n; ++r) v[r] = v[r] * hard_sigmoid(v[r], a.act_alpha, a.act_beta);
          break;
        case Activation::kSigmoid:
          for (int64_t r = 0; r < n; ++r) v[r] = sigmoid(v[r]);
          break;
        case Activation::kSilu:
          for (int64_t r = 0; r < n; ++r) v[r] = v[r] * sigmoid(v[r]);
          break;
        case Activation::kGelu:
          for (int64_t r = 0; r < n; ++r) v[r] = gelu_div(v[r], a.act_alpha);
          break;
        case Activation::kGeluMul:
          for (int64_t r = 0; r < n; ++r) v[r] = gelu_mul(v[r], a.act_alpha);
          break;
      }
      if (a.residual) {
        const float* res = a.residual + col * a.residual_stride + r0;
        if (a.residual_scale) {
          const float* rs = a.residual_scale + r0;
          for (int64_t r = 0; r < n; ++r) v[r] = std::min(std::max(v[r] + res[r] * rs[r], a.lo2), a.hi2);
        } else {
          for (int64_t r = 0; r < n; ++r) v[r] = std::min(std::max(v[r] + res[r], a.lo2), a.hi2);
        }
      }
      if (a.out) {
        float* out = a.out + col * a.out_stride + r0;
        for (int64_t r = 0; r < n; ++r) out[r] = v[r];
      }
      if (a.codes) {
        uint8_t* q = a.codes + col * a.codes_stride + r0;
        for (int64_t r = 0; r < n; ++r) {
          float t = std::min(std::max(v[r] * a.inv_scale, a.qlo), a.qhi);
          q[r] = static_cast<uint8_t>(round_half_away(t) + a.zero);
        }
      }
    }
  }
}

void REQUANT_NAME(depthwise_row_int8)(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                                      const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  for (int64_t ow = 0; ow < out_w; ++ow) {
    int32_t* out = acc + ow * channels;
    const uint8_t* pixel = x_row + ow * x_step;
    for (int64_t c = 0; c < channels; ++c) out[c] = 0;
    for (int64_t t = 0; t < taps; ++t) {
      const uint8_t* x = pixel + tap_offset[t];
      const int8_t* wt = w + t * channels;
      for (int64_t c = 0; c < channels; ++c)
        out[c] += static_cast<int32_t>(static_cast<int16_t>(x[c]) * static_cast<int16_t>(wt[c]));
    }
  }
}

}  // namespace tern::kernels

#undef REQUANT_NAME
#undef REQUANT_CAT
#undef REQUANT_CAT2
