// Direct depthwise convolution driver: per channel, point each (output row, kernel row) at its
// input row (or a zero row for padding) and hand the channel to the ISA's kernel. The portable
// kernel here is the scalar twin of depthwise_conv2d_avx2.cpp / _avx512.cpp.
#include "kernels/fp32/depthwise_conv2d.h"

#include <algorithm>
#include <vector>

#include "kernels/fp32/sgemm_internal.h"

namespace tern::kernels::detail {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

DepthwiseFn channel_kernel(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return depthwise_channel__avx512;
    case Isa::kAvx2:
      return depthwise_channel__avx2;
    case Isa::kScalar:
      break;
  }
  return depthwise_channel__generic;
}

}  // namespace

void depthwise_channel__generic(const DepthwiseChannel& c) {
  for (int64_t oh = 0; oh < c.out_h; ++oh) {
    float* out = c.out + oh * c.out_w;
    std::fill(out, out + c.out_w, c.bias);
    for (int i = 0; i < c.kernel_h; ++i) {
      for (int j = 0; j < c.kernel_w; ++j) {
        const float w = c.weights[i * c.kernel_w + j];
        const float* src = depthwise_row(c, oh * c.stride_h - c.pad_top + i * c.dilation_h) + c.col_offset[j];
        for (int64_t ow = c.col_lo[j]; ow < c.col_hi[j]; ++ow) out[ow] += w * src[ow];
      }
    }
    for (int64_t ow = 0; ow < c.out_w; ++ow) {
      const float v = out[ow] < c.lo ? c.lo : out[ow];  // NaN stays NaN
      out[ow] = v > c.hi ? c.hi : v;
    }
  }
}

void depthwise_conv2d(const Conv2dShape& s, const float* input, const float* weights, const float* bias,
                      float* output, const Conv2dEpilogue& epilogue, ThreadPool* pool) {
  const int64_t channels = s.in_channels, h = s.in_h, w = s.in_w, out_h = s.out_h(), out_w = s.out_w();
  const int64_t kh = s.kernel_h, kw = s.kernel_w, sw = s.stride_w;
  // stride_w 1 reads input rows in place, padding columns masked; so do the SIMD kernels for 3x3
  // stride 2. Otherwise each row is first copied into sw column phases with the padding built in
  // (phase p holds padded columns q * sw + p), so that a tap is again a contiguous run.
  const Isa isa = active_isa();
  const bool in_place = sw == 1 || (isa != Isa::kScalar && depthwise_in_place_stride2(s));
  const int64_t wq = in_place ? w : ceil_div(w + s.pad_left + s.pad_right, sw);  // phase row length
  const int64_t row_floats = in_place ? w : sw * wq;
  std::vector<int64_t> col_offset(kw), col_lo(kw), col_hi(kw);
  for (int64_t j = 0; j < kw; ++j) {
    const int64_t dx = j * s.dilation_w;
    if (in_place) {  // input column of output ow is ow * sw + dx - pad_left
      col_offset[j] = dx - s.pad_left;
      col_lo[j] = std::clamp<int64_t>(ceil_div(s.pad_left - dx, sw), 0, out_w);
      col_hi[j] = std::clamp<int64_t>(ceil_div(w + s.pad_left - dx, sw), col_lo[j], out_w);
    } else {
      col_offset[j] = dx % sw * wq + dx / sw;
      col_lo[j] = 0;
      col_hi[j] = out_w;
    }
  }
  std::vector<int64_t> q_lo(sw), q_hi(sw);  // phase p's columns that fall inside the input row
  for (int64_t p = 0; p < sw; ++p) {
    q_lo[p] = std::clamp<int64_t>(ceil_div(s.pad_left - p, sw), 0, wq);
    q_hi[p] = std::clamp<int64_t>(ceil_div(w + s.pad_left - p, sw), q_lo[p], wq);
  }
  const DepthwiseFn kernel = channel_kernel(isa);

  auto run = [&](int64_t u_begin, int64_t u_end) {
    // Scratch: [zero row][phase rows of the channel, when not in place]
    float* scratch = thread_scratch(ScratchSlot::kConvInput, row_floats * (in_place ? 1 : 1 + h));
    std::fill(scratch, scratch + row_floats, 0.0f);
    const float* zeros = scratch;
    float* phased = scratch + row_floats;
    DepthwiseChannel c;
    c.zeros = zeros;
    c.pitch = row_floats;
    c.in_h = h;
    c.in_w = w;
    c.stride_h = s.stride_h;
    c.stride_w = in_place ? sw : 1;
    c.pad_top = s.pad_top;
    c.dilation_h = s.dilation_h;
    c.col_offset = col_offset.data();
    c.col_lo = col_lo.data();
    c.col_hi = col_hi.data();
    c.kernel_h = static_cast<int>(kh);
    c.kernel_w = static_cast<int>(kw);
    c.out_h = out_h;
    c.out_w = out_w;
    c.lo = epilogue.clamp_lo;
    c.hi = epilogue.clamp_hi;
    for (int64_t u = u_begin; u < u_end; ++u) {  // u = image * channels + channel
      const float* in = input + u * h * w;
      if (!in_place) {
        for (int64_t y = 0; y < h; ++y) {
          for (int64_t p = 0; p < sw; ++p) {
            float* dst = phased + (y * sw + p) * wq;
            const float* src = in + y * w + p - s.pad_left;  // src[q * sw] is phase column q
            std::fill(dst, dst + q_lo[p], 0.0f);
            for (int64_t q = q_lo[p]; q < q_hi[p]; ++q) dst[q] = src[q * sw];
            std::fill(dst + q_hi[p], dst + wq, 0.0f);
          }
        }
      }
      c.base = in_place ? in : phased;
      c.weights = weights + (u % channels) * kh * kw;
      c.bias = bias ? bias[u % channels] : 0.0f;
      c.out = output + u * out_h * out_w;
      kernel(c);
    }
  };
  const int64_t units = s.batch * channels;
  if (worth_parallel(pool, 2.0 * units * out_h * out_w * kh * kw)) {
    pool->parallel_for(units, run);
  } else {
    run(0, units);
  }
}

}  // namespace tern::kernels::detail
