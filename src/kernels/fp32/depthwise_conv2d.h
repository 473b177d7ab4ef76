// Private: the direct depthwise convolution (groups == in_channels == out_channels) behind
// conv2d. Each output row is a sum of kernel_h x kernel_w shifted input rows; padding is masked
// out (stride_w 1, read in place) or built into a column-phase copy (stride_w > 1).
#pragma once

#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/fp32/conv2d.h"

namespace tern::kernels::detail {

// One channel: out[oh * out_w + ow] = clamp(bias + sum over (kh, kw) of
//   weights[kh * kernel_w + kw] * row(oh * stride_h - pad_top + kh * dilation_h)[ow * stride_w + col_offset[kw]],
//   lo, hi),
// where row(y) = base + y * pitch for 0 <= y < in_h, else zeros (padding rows), and a tap
// contributes only for col_lo[kw] <= ow < col_hi[kw] (outside is padding).
// stride_w 2 (read in place, deinterleaved in registers) is only passed to the SIMD kernels, for
// 3x3 without dilation; otherwise stride_w is 1, with wider strides pre-split into column phases.
struct DepthwiseChannel {
  const float* base = nullptr;
  const float* zeros = nullptr;  // a zero row, as long as a row
  int64_t pitch = 0, in_h = 0, in_w = 0, stride_h = 1, stride_w = 1, pad_top = 0, dilation_h = 1;
  const int64_t* col_offset = nullptr;  // [kernel_w], may be negative
  const int64_t* col_lo = nullptr;      // [kernel_w]
  const int64_t* col_hi = nullptr;      // [kernel_w]
  const float* weights = nullptr;       // [kernel_h][kernel_w]
  int kernel_h = 0, kernel_w = 0;
  int64_t out_h = 0, out_w = 0;
  float bias = 0, lo = 0, hi = 0;
  float* out = nullptr;
};
using DepthwiseFn = void (*)(const DepthwiseChannel& c);

void depthwise_channel__generic(const DepthwiseChannel& c);
void depthwise_channel__avx2(const DepthwiseChannel& c);
void depthwise_channel__avx512(const DepthwiseChannel& c);

// Input row y of the channel, or the zero row where y falls in the padding. static: each
// ISA-flagged file keeps its own copy, so the linker cannot hand an AVX-512 build of it to others.
static inline const float* depthwise_row(const DepthwiseChannel& c, int64_t y) {
  return static_cast<uint64_t>(y) < static_cast<uint64_t>(c.in_h) ? c.base + y * c.pitch : c.zeros;
}

// Whether the SIMD kernels handle this shape with stride_w 2 in place.
inline bool depthwise_in_place_stride2(const Conv2dShape& s) {
  return s.stride_w == 2 && s.kernel_h == 3 && s.kernel_w == 3 && s.dilation_h == 1 && s.dilation_w == 1 &&
         (s.stride_h == 1 || s.stride_h == 2);
}

// weights: [channels, 1, kernel_h, kernel_w] as given. Runs with active_isa()'s kernel.
void depthwise_conv2d(const Conv2dShape& shape, const float* input, const float* weights, const float* bias,
                      float* output, const Conv2dEpilogue& epilogue, ThreadPool* pool);

}  // namespace tern::kernels::detail
