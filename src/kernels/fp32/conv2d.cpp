// conv2d: packed weights, the three ways B reaches the sgemm driver (the input itself for 1x1,
// shifted windows over a padded copy, im2col panels as the fallback), the depthwise hand-off, and
// the plain-loop reference.
#include "kernels/fp32/conv2d.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>

#include "kernels/fp32/depthwise_conv2d.h"
#include "kernels/fp32/sgemm_internal.h"
#include "tern/error.h"

namespace tern::kernels {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

void check_shape(const Conv2dShape& s, const char* who) {
  const std::string w = who;
  check(s.batch >= 0, w + ": negative batch");
  check(s.in_channels > 0 && s.out_channels > 0, w + ": channel counts must be positive");
  check(s.in_h > 0 && s.in_w > 0, w + ": input height and width must be positive");
  check(s.kernel_h > 0 && s.kernel_w > 0, w + ": kernel size must be positive");
  check(s.stride_h > 0 && s.stride_w > 0, w + ": strides must be positive");
  check(s.dilation_h > 0 && s.dilation_w > 0, w + ": dilations must be positive");
  check(s.pad_top >= 0 && s.pad_left >= 0 && s.pad_bottom >= 0 && s.pad_right >= 0, w + ": negative padding");
  check(s.groups > 0 && s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0,
        w + ": groups must divide in_channels and out_channels");
  // Each size at most 2^30 keeps every index product the kernels form below 2^63.
  constexpr int64_t kMaxSize = int64_t{1} << 30;
  for (int64_t v : {s.batch, s.in_channels, s.out_channels, s.in_h, s.in_w, s.kernel_h, s.kernel_w, s.stride_h,
                    s.stride_w, s.pad_top, s.pad_left, s.pad_bottom, s.pad_right, s.dilation_h, s.dilation_w})
    check(v <= kMaxSize, w + ": a size, stride, pad or dilation beyond 2^30");
  check(s.out_h() > 0 && s.out_w() > 0, w + ": the kernel does not fit in the padded input");
}

bool is_pointwise(const Conv2dShape& s) {
  return s.kernel_h == 1 && s.kernel_w == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_top == 0 &&
         s.pad_left == 0 && s.pad_bottom == 0 && s.pad_right == 0;
}

// B = im2col of one image's group: row k = (channel, kh, kw), column n = (oh, ow). Built straight
// into the micro-kernel's panels, one output-row segment at a time.
class Im2colPacker final : public detail::PanelPacker {
 public:
  Im2colPacker(const Conv2dShape& s, const float* image) : s_(s), image_(image) {
    k_ = s.in_channels / s.groups * s.kernel_h * s.kernel_w;
  }

  void pack(int64_t n0, int64_t ncols, int nr, float* dst) const override {
    const int64_t out_w = s_.out_w(), end = n0 + ncols, panels = (ncols + nr - 1) / nr;
    int64_t k = 0;
    for (int64_t c = 0; c < s_.in_channels / s_.groups; ++c) {
      const float* plane = image_ + c * s_.in_h * s_.in_w;
      for (int64_t kh = 0; kh < s_.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < s_.kernel_w; ++kw, ++k) {
          float* row = dst + k * nr;
          for (int64_t n = n0; n < end;) {
            const int64_t oh = n / out_w, ow = n % out_w, len = std::min(out_w - ow, end - n);
            const int64_t ih = oh * s_.stride_h - s_.pad_top + kh * s_.dilation_h;
            const float* src = ih >= 0 && ih < s_.in_h ? plane + ih * s_.in_w : nullptr;
            emit(row, n - n0, len, src, ow * s_.stride_w - s_.pad_left + kw * s_.dilation_w, nr);
            n += len;
          }
          const int64_t used = ncols - (panels - 1) * nr;  // zero the last panel's padding columns
          std::fill(row + (panels - 1) * k_ * nr + used, row + (panels - 1) * k_ * nr + nr, 0.0f);
        }
      }
    }
  }

 private:
  // Writes columns [rel, rel + len) of one B row: element e is src[iw0 + e * stride_w], zero where
  // that falls outside the input row (or everywhere when src is null: a padding row).
  void emit(float* row, int64_t rel, int64_t len, const float* src, int64_t iw0, int nr) const {
    const int64_t sw = s_.stride_w;
    int64_t e_lo = len, e_hi = len;
    if (src != nullptr) {
      e_lo = std::clamp<int64_t>(ceil_div(-iw0, sw), 0, len);
      e_hi = std::clamp<int64_t>(ceil_div(s_.in_w - iw0, sw), e_lo, len);
    }
    for (int64_t e = 0; e < len;) {  // split where the run crosses into the next panel
      const int64_t pos = rel + e, j = pos % nr, piece = std::min(len - e, nr - j);
      float* d = row + pos / nr * k_ * nr + j;  // d[0] is element e
      const int64_t a = std::clamp(e_lo, e, e + piece) - e, b = std::clamp(e_hi, e + a, e + piece) - e;
      std::fill(d, d + a, 0.0f);
      if (b > a) {
        const float* from = src + (iw0 + (e + a) * sw);  // input column of element e + a
        if (sw == 1) {
          std::memcpy(d + a, from, (b - a) * sizeof(float));
        } else {
          for (int64_t q = 0; q < b - a; ++q) d[a + q] = from[q * sw];
        }
      }
      std::fill(d + b, d + piece, 0.0f);
      e += piece;
    }
  }

  const Conv2dShape& s_;
  const float* image_;
  int64_t k_;
};

// The padded input of one group, split into stride phases: phase (ph, pw) of channel c holds padded
// pixel (r * stride_h + ph, q * stride_w + pw) at [r][q], with row pitch wq. Computing the output
// on a grid of pitch wq (columns ow >= out_w are junk, dropped afterwards), every tap (c, kh, kw)
// is then one fixed offset: B's row k is a contiguous run of this buffer, read in place with no
// im2col copy at all. Costs (wq - out_w) / out_w extra columns.
struct ShiftedWindows {
  int64_t hq = 0, wq = 0, plane = 0, channel_floats = 0, buffer_floats = 0;
  std::vector<int> phase_slot;  // -1 for phases no tap reads
  std::vector<int64_t> offsets;  // per B row k

  ShiftedWindows(const Conv2dShape& s, int nr) {
    const int64_t sh = s.stride_h, sw = s.stride_w;
    hq = ceil_div(s.in_h + s.pad_top + s.pad_bottom, sh);
    wq = ceil_div(s.in_w + s.pad_left + s.pad_right, sw);
    plane = hq * wq;
    phase_slot.assign(sh * sw, -1);
    int used = 0;
    for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
      for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
        int& slot = phase_slot[(kh * s.dilation_h % sh) * sw + kw * s.dilation_w % sw];
        if (slot < 0) slot = used++;
      }
    }
    channel_floats = used * plane;
    buffer_floats = s.in_channels / s.groups * channel_floats + wq + nr;  // slack: see build()
    for (int64_t c = 0; c < s.in_channels / s.groups; ++c) {
      for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
        for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
          const int64_t dy = kh * s.dilation_h, dx = kw * s.dilation_w;
          offsets.push_back(c * channel_floats + phase_slot[(dy % sh) * sw + dx % sw] * plane + dy / sh * wq + dx / sw);
        }
      }
    }
  }

  int64_t columns(const Conv2dShape& s) const { return s.out_h() * wq; }

  void build(const Conv2dShape& s, const float* image, float* dst) const {
    const int64_t sh = s.stride_h, sw = s.stride_w;
    for (int64_t c = 0; c < s.in_channels / s.groups; ++c) {
      const float* in = image + c * s.in_h * s.in_w;
      for (int64_t ph = 0; ph < sh; ++ph) {
        for (int64_t pw = 0; pw < sw; ++pw) {
          const int slot = phase_slot[ph * sw + pw];
          if (slot < 0) continue;
          float* out = dst + c * channel_floats + slot * plane;
          const int64_t x0 = pw - s.pad_left;  // input column of plane column 0
          const int64_t q_lo = std::clamp<int64_t>(ceil_div(-x0, sw), 0, wq);
          const int64_t q_hi = std::clamp<int64_t>(ceil_div(s.in_w - x0, sw), q_lo, wq);
          for (int64_t r = 0; r < hq; ++r) {
            float* row = out + r * wq;
            const int64_t y = r * sh + ph - s.pad_top;
            if (y < 0 || y >= s.in_h) {
              std::fill(row, row + wq, 0.0f);
              continue;
            }
            const float* src = in + y * s.in_w + x0;
            std::fill(row, row + q_lo, 0.0f);
            if (sw == 1) {
              std::copy(src + q_lo, src + q_hi, row + q_lo);
            } else {
              for (int64_t q = q_lo; q < q_hi; ++q) row[q] = src[q * sw];
            }
            std::fill(row + q_hi, row + wq, 0.0f);
          }
        }
      }
    }
    // The last tap's run ends up to wq - out_w past the buffer, and kernels read whole vectors up
    // to the panel end: zeros there keep junk columns finite.
    const int64_t used = s.in_channels / s.groups * channel_floats;
    std::fill(dst + used, dst + buffer_floats, 0.0f);
  }
};

}  // namespace

PackedConvWeights::PackedConvWeights(const Conv2dShape& shape, const float* weights) : shape_(shape) {
  check_shape(shape, "PackedConvWeights");
  check(weights != nullptr, "PackedConvWeights: weights are null");
  const int64_t k = shape.in_channels / shape.groups * shape.kernel_h * shape.kernel_w;
  if (shape.is_depthwise()) {
    raw_.assign(weights, weights + shape.out_channels * k);
    return;
  }
  const int64_t m = shape.out_channels / shape.groups;
  for (int64_t g = 0; g < shape.groups; ++g) per_group_.emplace_back(m, k, MatrixView{weights + g * m * k, k, 1});
}

void conv2d_reference(const Conv2dShape& s, const float* input, const float* weights, const float* bias,
                      float* output, const Conv2dEpilogue& epilogue) {
  check_shape(s, "conv2d_reference");
  const int64_t cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  const int64_t out_h = s.out_h(), out_w = s.out_w();
  for (int64_t b = 0; b < s.batch; ++b) {
    for (int64_t oc = 0; oc < s.out_channels; ++oc) {
      const int64_t g = oc / cout_g;
      for (int64_t oh = 0; oh < out_h; ++oh) {
        for (int64_t ow = 0; ow < out_w; ++ow) {
          float sum = 0.0f;
          for (int64_t ic = 0; ic < cin_g; ++ic) {
            for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
              const int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
              if (ih < 0 || ih >= s.in_h) continue;
              for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
                const int64_t iw = ow * s.stride_w - s.pad_left + kw * s.dilation_w;
                if (iw < 0 || iw >= s.in_w) continue;
                const float x = input[((b * s.in_channels + g * cin_g + ic) * s.in_h + ih) * s.in_w + iw];
                sum += x * weights[((oc * cin_g + ic) * s.kernel_h + kh) * s.kernel_w + kw];
              }
            }
          }
          if (bias != nullptr) sum += bias[oc];
          sum = sum < epilogue.clamp_lo ? epilogue.clamp_lo : sum;
          sum = sum > epilogue.clamp_hi ? epilogue.clamp_hi : sum;
          output[((b * s.out_channels + oc) * out_h + oh) * out_w + ow] = sum;
        }
      }
    }
  }
}

void conv2d(const Conv2dShape& s, const float* input, const PackedConvWeights& weights, const float* bias,
            float* output, const Conv2dEpilogue& epilogue, ThreadPool* pool) {
  check_shape(s, "conv2d");
  const Conv2dShape& w = weights.shape();
  check(s.in_channels == w.in_channels && s.out_channels == w.out_channels && s.kernel_h == w.kernel_h &&
            s.kernel_w == w.kernel_w && s.stride_h == w.stride_h && s.stride_w == w.stride_w &&
            s.dilation_h == w.dilation_h && s.dilation_w == w.dilation_w &&
            s.groups == w.groups,
        "conv2d: shape does not match the packed weights");
  check(!(epilogue.clamp_lo > epilogue.clamp_hi), "conv2d: clamp_lo is greater than clamp_hi");
  if (s.batch == 0) return;
  check(input != nullptr && output != nullptr, "conv2d: input or output is null");
  if (s.is_depthwise()) {
    return detail::depthwise_conv2d(s, input, weights.raw_.data(), bias, output, epilogue, pool);
  }

  const int64_t groups = s.groups, cin_g = s.in_channels / groups, cout_g = s.out_channels / groups;
  const int64_t k = cin_g * s.kernel_h * s.kernel_w, out_w = s.out_w(), spatial = s.out_h() * out_w;
  const Isa isa = weights.per_group_.front().isa();
  const detail::GemmKernels& ks = detail::gemm_kernels(isa);

  // How B is fed: the input itself (1x1), shifted windows (unless junk columns would cost over
  // half the work), or im2col panels.
  enum class Path { kPointwise, kShifted, kIm2col } path = Path::kIm2col;
  std::optional<ShiftedWindows> windows;
  if (is_pointwise(s)) {
    path = Path::kPointwise;
  } else if (s.stride_h <= 8 && s.stride_w <= 8) {  // a phase plane per stride position: few strides only
    windows.emplace(s, ks.nr);
    if (2 * windows->columns(s) <= 3 * spatial) path = Path::kShifted;
  }
  const int64_t columns = path == Path::kShifted ? windows->columns(s) : spatial;

  // Threads split (image, group) gemms; where those are too few to go round, each is also split
  // into row ranges of M. Every unit builds its own B (planes are cheap next to the gemm), so a
  // thread never reads what another core just wrote.
  const int threads = pool ? pool->size() : 1;
  const int64_t gemms = s.batch * groups, m_panels = (cout_g + ks.mr - 1) / ks.mr;
  const bool parallel = detail::worth_parallel(pool, 2.0 * gemms * cout_g * columns * k);
  const bool whole_gemms = gemms >= 2 * threads || gemms % threads == 0;
  const int64_t m_parts = parallel && !whole_gemms ? std::min<int64_t>(threads, m_panels) : 1;

  auto run_unit = [&](int64_t u) {  // u = (image * groups + group) * m_parts + part
    const int64_t b = u / m_parts / groups, g = u / m_parts % groups, part = u % m_parts;
    const int64_t m_begin = part * m_panels / m_parts * ks.mr;
    const int64_t rows = std::min(cout_g, (part + 1) * m_panels / m_parts * ks.mr) - m_begin;
    const float* image = input + (b * s.in_channels + g * cin_g) * s.in_h * s.in_w;
    float* out = output + (b * s.out_channels + g * cout_g + m_begin) * spatial;
    GemmEpilogue ep;
    ep.bias = bias ? bias + g * cout_g + m_begin : nullptr;
    ep.bias_kind = bias ? BiasKind::kPerRow : BiasKind::kNone;
    ep.clamp_lo = epilogue.clamp_lo;
    ep.clamp_hi = epilogue.clamp_hi;
    const float* a = weights.per_group_[g].panels() + m_begin * k;  // m_begin is a multiple of mr
    detail::BSource bsrc;
    if (path == Path::kPointwise) {
      bsrc.data = image;
      bsrc.stride = spatial;
      return detail::gemm_driver(ks, rows, spatial, k, a, bsrc, out, spatial, ep, nullptr);
    }
    if (path == Path::kIm2col) {
      const Im2colPacker packer(s, image);
      bsrc.packer = &packer;
      return detail::gemm_driver(ks, rows, spatial, k, a, bsrc, out, spatial, ep, nullptr);
    }
    float* planes = detail::thread_scratch(detail::ScratchSlot::kConvInput, windows->buffer_floats);
    windows->build(s, image, planes);
    bsrc.data = planes;
    bsrc.offsets = windows->offsets.data();
    bsrc.readable_to_panel_end = true;
    if (windows->wq == out_w) {  // no junk columns: write the output directly
      return detail::gemm_driver(ks, rows, spatial, k, a, bsrc, out, spatial, ep, nullptr);
    }
    float* wide = detail::thread_scratch(detail::ScratchSlot::kConvOutput, rows * columns);
    detail::gemm_driver(ks, rows, columns, k, a, bsrc, wide, columns, ep, nullptr);
    for (int64_t row = 0; row < rows * s.out_h(); ++row) {
      std::copy(wide + row * windows->wq, wide + row * windows->wq + out_w, out + row * out_w);
    }
  };

  const int64_t units = gemms * m_parts;
  if (parallel && units > 1) {
    pool->parallel_for(units, [&](int64_t begin, int64_t end) {
      for (int64_t u = begin; u < end; ++u) run_unit(u);
    });
  } else {
    for (int64_t u = 0; u < units; ++u) run_unit(u);
  }
}

}  // namespace tern::kernels
