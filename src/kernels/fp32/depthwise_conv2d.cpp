// Direct depthwise convolution: pad/phase-split each channel plane into per-thread scratch, then
// run the ISA's 1-D row kernel once per output row. The portable row kernel is its scalar twin.
#include "kernels/fp32/depthwise_conv2d.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/fp32/sgemm_internal.h"

namespace tern::kernels::detail {

namespace {

constexpr int64_t kMinParallelTaps = 64 * 1024;  // below this a worker's wake-up dominates

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

DepthwiseRowFn row_kernel(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return depthwise_row__avx512;
    case Isa::kAvx2:
      return depthwise_row__avx2;
    case Isa::kScalar:
      break;
  }
  return depthwise_row__generic;
}

// Phase (ph, pw) holds padded pixel (r * sh + ph, q * sw + pw) at [r][q], so a strided tap reads a
// contiguous run. Stride 1 has one phase: the padded plane itself.
struct PhasePlanes {
  int64_t sh, sw, pad_top, pad_left, hq, wq;

  int64_t plane_size() const { return hq * wq; }

  void build(const float* in, int64_t h, int64_t w, float* out) const {
    for (int64_t ph = 0; ph < sh; ++ph) {
      for (int64_t pw = 0; pw < sw; ++pw) {
        float* plane = out + (ph * sw + pw) * plane_size();
        const int64_t x0 = pw - pad_left;  // input column of plane column 0
        const int64_t q_lo = std::clamp<int64_t>(ceil_div(-x0, sw), 0, wq);
        const int64_t q_hi = std::clamp<int64_t>(ceil_div(w - x0, sw), q_lo, wq);
        for (int64_t r = 0; r < hq; ++r) {
          float* row = plane + r * wq;
          const int64_t y = r * sh + ph - pad_top;
          if (y < 0 || y >= h) {
            std::fill(row, row + wq, 0.0f);
            continue;
          }
          const float* src = in + y * w + x0;
          std::fill(row, row + q_lo, 0.0f);
          if (sw == 1) {
            std::memcpy(row + q_lo, src + q_lo, (q_hi - q_lo) * sizeof(float));
          } else {
            for (int64_t q = q_lo; q < q_hi; ++q) row[q] = src[q * sw];
          }
          std::fill(row + q_hi, row + wq, 0.0f);
        }
      }
    }
  }
};

}  // namespace

void depthwise_row__generic(const float* src, const int64_t* offsets, const float* weights, int taps, int64_t count,
                            float bias, float lo, float hi, float* out) {
  for (int64_t i = 0; i < count; ++i) out[i] = bias;
  for (int t = 0; t < taps; ++t) {
    const float* s = src + offsets[t];
    const float w = weights[t];
    for (int64_t i = 0; i < count; ++i) out[i] += w * s[i];
  }
  for (int64_t i = 0; i < count; ++i) {
    float v = out[i] < lo ? lo : out[i];  // NaN stays NaN
    out[i] = v > hi ? hi : v;
  }
}

void depthwise_conv2d(const Conv2dShape& s, const float* input, const float* weights, const float* bias,
                      float* output, const Conv2dEpilogue& epilogue, ThreadPool* pool) {
  const int64_t channels = s.in_channels, h = s.in_h, w = s.in_w;
  const int64_t out_h = s.out_h(), out_w = s.out_w();
  const int taps = static_cast<int>(s.kernel_h * s.kernel_w);
  // Unpadded stride-1 planes are read in place; everything else goes through phase planes.
  const bool in_place = s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 && s.pad_left == 0 &&
                        s.pad_bottom == 0 && s.pad_right == 0;
  PhasePlanes planes{s.stride_h,
                     s.stride_w,
                     s.pad_top,
                     s.pad_left,
                     ceil_div(h + s.pad_top + s.pad_bottom, s.stride_h),
                     in_place ? w : ceil_div(w + s.pad_left + s.pad_right, s.stride_w)};
  std::vector<int64_t> offsets(taps);
  for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
    for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
      const int64_t dy = kh * s.dilation_h, dx = kw * s.dilation_w;
      const int64_t phase = (dy % s.stride_h) * s.stride_w + dx % s.stride_w;
      offsets[kh * s.kernel_w + kw] = phase * planes.plane_size() + (dy / s.stride_h) * planes.wq + dx / s.stride_w;
    }
  }
  const DepthwiseRowFn row_fn = row_kernel(active_isa());

  auto run = [&](int64_t u_begin, int64_t u_end) {
    float* scratch =
        in_place ? nullptr : thread_scratch(ScratchSlot::kConv, s.stride_h * s.stride_w * planes.plane_size());
    for (int64_t u = u_begin; u < u_end; ++u) {  // u = image * channels + channel
      const int64_t c = u % channels;
      const float* src = input + u * h * w;
      if (!in_place) {
        planes.build(src, h, w, scratch);
        src = scratch;
      }
      float* out = output + u * out_h * out_w;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        row_fn(src + oh * planes.wq, offsets.data(), weights + c * taps, taps, out_w, bias ? bias[c] : 0.0f,
               epilogue.clamp_lo, epilogue.clamp_hi, out + oh * out_w);
      }
    }
  };
  const int64_t units = s.batch * channels;
  if (pool != nullptr && pool->size() > 1 && units * out_h * out_w * taps >= kMinParallelTaps) {
    pool->parallel_for(units, run);
  } else {
    run(0, units);
  }
}

}  // namespace tern::kernels::detail
