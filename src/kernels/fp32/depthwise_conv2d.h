// Private: the direct depthwise convolution (groups == in_channels == out_channels) behind
// conv2d. Each channel plane is padded (and, for strides > 1, split into stride phases) so that
// every filter tap becomes a fixed offset and an output row is a short 1-D sum of shifted rows.
#pragma once

#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/fp32/conv2d.h"

namespace tern::kernels::detail {

// out[i] = clamp(bias + sum_t weights[t] * src[offsets[t] + i], lo, hi) for i in [0, count).
using DepthwiseRowFn = void (*)(const float* src, const int64_t* offsets, const float* weights, int taps,
                                int64_t count, float bias, float lo, float hi, float* out);

void depthwise_row__generic(const float* src, const int64_t* offsets, const float* weights, int taps, int64_t count,
                            float bias, float lo, float hi, float* out);
void depthwise_row__avx2(const float* src, const int64_t* offsets, const float* weights, int taps, int64_t count,
                         float bias, float lo, float hi, float* out);
void depthwise_row__avx512(const float* src, const int64_t* offsets, const float* weights, int taps, int64_t count,
                           float bias, float lo, float hi, float* out);

// weights: [channels, 1, kernel_h, kernel_w] as given. Runs with active_isa()'s row kernel.
void depthwise_conv2d(const Conv2dShape& shape, const float* input, const float* weights, const float* bias,
                      float* output, const Conv2dEpilogue& epilogue, ThreadPool* pool);

}  // namespace tern::kernels::detail
