// The fused integer program (integer_program.h): compilation of a simulation graph into steps over
// NHWC buffers, and the steps themselves.
#include "exec/integer_program.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <set>

#include "exec/fp32_ops.h"
#include "kernels/fp32/rows.h"
#include "kernels/int8/qgemm_indirect.h"
#include "kernels/int8/requantize.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/calibration.h"
#include "ops/op.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/limits.h"

namespace tern::integer {

namespace {

using kernels::kQPanelRows;
using kernels::kQStep;

// How a value's codes relate to it (a FakeQuantize's attributes).
struct Format {
  int bits = 8;
  bool is_unsigned = false;
  bool dynamic = false;
  bool power_of_two = false;
  float scale = 1.0f;  // static only
  int32_t zero_point = 0;  // asymmetric unsigned codes
  bool operator==(const Format&) const = default;
  int32_t qmax() const { return quant::activation_qmax(bits, is_unsigned); }
  // The stored byte of value code 0: the zero point, or 128 for signed codes (VNNI multiplies u8).
  int32_t zero() const { return is_unsigned ? zero_point : 128; }
  // The value codes' bounds (stored bytes less zero()).
  float lo() const { return quant::code_bounds(qmax(), is_unsigned, zero_point).lo; }
  float hi() const { return quant::code_bounds(qmax(), is_unsigned, zero_point).hi; }
};

Format format_of(const FakeQuantAttrs& a) {
  return {a.bits, a.is_unsigned, a.dynamic, a.power_of_two, a.dynamic ? 1.0f : a.scale, a.zero_point};
}
Format format_of(const quant::ActivationQuant& a) {
  return {a.bits, a.is_unsigned, a.dynamic, a.power_of_two, a.dynamic ? 1.0f : a.scale, a.zero_point};
}

std::string describe(const Format& f) {
  std::string s = (f.is_unsigned ? "u" : "s") + std::to_string(f.bits);
  if (f.zero_point != 0) s += " zp " + std::to_string(f.zero_point);
  return s + (f.dynamic ? " dynamic" : "");
}

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The simulation's rounding (FakeQuantize): x / scale, clamped, half away from zero.
inline uint8_t quantize_code(float x, float scale, float lo, float hi, int32_t zero) {
  float v = std::min(std::max(x / scale, lo), hi);
  return static_cast<uint8_t>(kernels::round_half_away(v) + zero);
}

// One image's dynamic scale, as the simulation picks it (an all-zero image keeps every code 0).
float dynamic_scale(const Format& f, float max_abs) {
  if (!std::isfinite(max_abs)) throw Error("integer engine: an activation holds an infinite or NaN value");
  if (max_abs == 0.0f) return 1.0f;
  return f.power_of_two ? quant::power_of_two_scale(max_abs, f.qmax()) : max_abs / f.hi();
}

// A value in one form: u8 codes or float32, NHWC (2-D values [N, C] as 1 x 1 images).
struct Buffer {
  std::string name;
  bool codes = false;
  Format format;
  int64_t h = 1, w = 1, c = 0;
  int64_t pad = 0;     // codes: a border of zero codes around every image (convolution padding)
  int64_t stride = 0;  // elements per pixel: codes round c up to a whole dot-product step
  int64_t images = 0;  // allocated for
  std::vector<uint8_t> q;
  std::vector<float> f;
  std::vector<float> scales;  // codes: per image

  int64_t hp() const { return h + 2 * pad; }
  int64_t wp() const { return w + 2 * pad; }
  int64_t image_elements() const { return hp() * wp() * stride; }
  uint8_t* code_at(int64_t n, int64_t y, int64_t x) {
    return q.data() + ((n * hp() + y + pad) * wp() + x + pad) * stride;
  }
  float* float_at(int64_t n, int64_t y, int64_t x) { return f.data() + ((n * h + y) * w + x) * stride; }
  // Grows to `n` images; the border and the pixel padding hold zero codes (never written after).
  void allocate(int64_t n) {
    if (n <= images) return;
    images = n;
    if (codes) {
      q.assign(static_cast<size_t>(n * image_elements()), static_cast<uint8_t>(format.zero()));
      scales.assign(static_cast<size_t>(n), format.scale);
    } else {
      f.assign(static_cast<size_t>(n * image_elements()), 0.0f);
    }
  }
};

struct Step {
  std::string name, what;
  std::function<void(int64_t)> run;  // on a batch of that many images
  double seconds = 0;
  int64_t runs = 0;
};

// Whether an FP32 step on these inputs has work enough for the pool: below about 2^16 values
// (a transformer's per-token operations at batch 1), handing half to another core costs more than
// it saves; so do the operators that are mostly bookkeeping (Shape, Reshape, Concat of shapes).
bool worth_threads(const std::vector<const Tensor*>& args) {
  int64_t values = 0;
  for (const Tensor* t : args)
    if (t) values += t->size();
  return values >= (int64_t{1} << 16);
}

// Whether a step of about this many multiply-accumulates (or element operations) gains from both
// cores. Moving a cache line between the cores of this VM costs ~100 ns, so a step that reads
// what the other core wrote pays more to share the work than it saves below some tens of
// microseconds of work: a transformer's layers at batch 1 (1-3 M multiply-accumulates each, the
// epilogue of a few thousand values) ran twice as slowly on two cores as on one.
bool worth_both_cores(int64_t work) { return work >= (int64_t{1} << 23); }

// Runs body(begin, end) over [0, count) on the pool (or inline).
void parallel(ThreadPool* pool, int64_t count, const std::function<void(int64_t, int64_t)>& body, int64_t grain = 1) {
  if (pool && pool->size() > 1 && count > 1) pool->parallel_for(count, body, grain);
  else if (count > 0) body(0, count);
}

}  // namespace

struct Program::Impl {
  ThreadPool* pool = nullptr;
  bool profiling = false;
  std::vector<std::unique_ptr<Buffer>> buffers;
  std::vector<Step> steps;
  const Tensor* input = nullptr;  // during run()
  Shape input_shape;              // per image (graph shape without the batch)
  std::string input_name;
  std::vector<Buffer*> outputs;
  std::vector<Shape> output_shapes;  // graph shapes (dim 0: the batch)
  std::map<std::string, std::string> kernels;
  std::vector<int8_t> panels;  // decoded/stacked weight panels of the layer running now
  // Values that are not batches of images (a Shape's int64 result, attention heads merged into
  // the batch dim, ...): whole tensors, written and read only by FP32 and whole-tensor layer steps.
  std::vector<std::unique_ptr<Tensor>> side;
  LayerScratch scratch;  // the work buffers of the whole-tensor layer running now
};

namespace {

// ---------------------------------------------------------------------------------------------
// Integer Conv/Gemm with its fused epilogue.

// A layer's epilogue constants (make_epilogue).
struct Epilogue {
  std::vector<float> multiplier, bias;
  std::vector<int32_t> offset;  // zero point * row sum, per term
  int64_t term_stride = 0;      // of multiplier and offset
};

struct LayerStep {
  const IntLayer* L = nullptr;
  Buffer* in = nullptr;                 // codes
  Buffer* out_float = nullptr;          // float output (or null)
  std::vector<Buffer*> out_codes;       // static-scale codes outputs
  Buffer* residual = nullptr;           // fused residual Add operand (float) or null
  Buffer* pool_out = nullptr;           // depthwise: a GlobalAveragePool of out_float, summed per
                                        // output row while the row is in cache (or null)
  float lo2 = -INFINITY, hi2 = INFINITY;  // the clamp after the Add (a fused ReLU)
  kernels::Activation act = kernels::Activation::kNone;  // a fused activation (after the clamp)
  float act_alpha = 0, act_beta = 0;
  kernels::Conv2dShape cs;              // Conv geometry (per image)
  enum class Mode { kImplicit, kGather, kDepthwise, kGemm } mode = Mode::kGemm;
  std::vector<int8_t>* panels = nullptr;  // shared scratch

  // Per-layer constants, made on the first run and again when the level changes the active terms.
  int cached_active = -1;
  std::vector<int64_t> tap_offset;               // byte offset of each kernel tap in the padded input
  struct Group {
    std::vector<int64_t> step_offset;            // implicit GEMM: of each K step
    std::vector<int32_t> stacked_sums;           // the active terms' row sums, stacked like the panels
    std::vector<const int32_t*> row_sums;        // per active term
    std::optional<Epilogue> epilogue;            // with a static input scale: made once per level
    std::shared_ptr<const std::vector<int8_t>> panels;  // the active terms' int8 panels, stacked
                                                        // (null: one int8 term, its stored panels)
  };
  std::vector<Group> groups;
  std::vector<std::vector<int32_t>> depthwise_sums;  // depthwise: each active term's sums per channel
  std::optional<Epilogue> depthwise_epilogue;        // depthwise, static input scale: made once per level
  std::vector<Epilogue> epilogues;               // of the group running now: one, or one per image
  // A convolution whose input channels are not a multiple of 4 (a first layer on a grayscale
  // image): its weights with channels padded with zeros to `channels`, so that the implicit GEMM
  // reads the codes buffer's pixel padding (zero codes) instead of gathering patches. [term][group]
  std::vector<std::vector<TermGroup>> padded;
  int64_t channels = 0;  // input channels per group as the kernel sees them

  const TermGroup& group(int j, int64_t gi) const {
    return padded.empty() ? L->terms[static_cast<size_t>(j)].groups[static_cast<size_t>(gi)]
                          : padded[static_cast<size_t>(j)][static_cast<size_t>(gi)];
  }
  int64_t depth() const { return L->taps * channels; }
};

std::string mode_name(LayerStep::Mode m) {
  switch (m) {
    case LayerStep::Mode::kImplicit: return "implicit-GEMM";
    case LayerStep::Mode::kGather: return "im2col-block GEMM";
    case LayerStep::Mode::kDepthwise: return "direct depthwise";
    default: return "GEMM";
  }
}

// Per-image epilogue constants: multiplier_j[r] = input scale * step_j[o], the activation offset
// zero * row_sum_j[r], and the bias.
// Output channels [first, first + count): a convolution group's filters, or every channel of a
// depthwise layer.
void make_epilogue(const IntLayer& L, int64_t first, int64_t count, float input_scale, int32_t zero, int64_t term_stride,
                   const std::vector<const int32_t*>& row_sums, Epilogue& e) {
  e.term_stride = term_stride;
  e.multiplier.assign(static_cast<size_t>(L.active * term_stride), 0.0f);
  e.offset.assign(static_cast<size_t>(L.active * term_stride), 0);
  e.bias.assign(static_cast<size_t>(count), 0.0f);
  for (int64_t r = 0; r < count; ++r) {
    const int64_t o = first + r;
    for (int j = 0; j < L.active; ++j) {
      e.multiplier[static_cast<size_t>(j * term_stride + r)] = input_scale * L.terms[static_cast<size_t>(j)].step[static_cast<size_t>(o)];
      e.offset[static_cast<size_t>(j * term_stride + r)] = zero * row_sums[static_cast<size_t>(j)][r];
    }
    e.bias[static_cast<size_t>(r)] = L.bias.empty() ? 0.0f : L.bias[static_cast<size_t>(o)];
  }
}

// Writes the epilogue of `cols` consecutive output pixels starting at (n, y, x) (all in one
// output row) of group gi, from acc[col * acc_stride + j * term_stride + r].
// Channels [r0, r0 + count) only when count >= 0 (acc then starts at channel r0).
void finish_pixels(const LayerStep& s, const Epilogue& e, int64_t gi, int64_t n, int64_t y, int64_t x, int64_t cols,
                   const int32_t* acc, int64_t acc_stride, int64_t acc_term_stride, int64_t r0 = 0, int64_t count = -1) {
  const IntLayer& L = *s.L;
  const int64_t channels = static_cast<int64_t>(e.bias.size());  // the group's (all of them, depthwise)
  const int64_t rows = channels;
  kernels::RequantArgs a;
  a.cols = cols;
  a.rows = count >= 0 ? count : channels;
  a.terms = L.active;
  a.acc = acc;
  a.acc_stride = acc_stride;
  a.term_stride = acc_term_stride;
  a.multiplier = e.multiplier.data() + r0;
  a.offset = e.offset.data() + r0;
  a.multiplier_term_stride = e.term_stride;
  a.bias = e.bias.data() + r0;
  a.lo = L.clamp_lo;
  a.hi = L.clamp_hi;
  a.act = s.act;
  a.act_alpha = s.act_alpha;
  a.act_beta = s.act_beta;
  if (s.residual) {
    a.residual = s.residual->float_at(n, y, x) + gi * rows + r0;
    a.residual_stride = s.residual->stride;
    a.lo2 = s.lo2;
    a.hi2 = s.hi2;
  }
  if (s.out_float) {
    a.out = s.out_float->float_at(n, y, x) + gi * rows + r0;
    a.out_stride = s.out_float->stride;
  }
  if (s.out_codes.empty()) return kernels::requantize_block(a);
  for (size_t k = 0; k < s.out_codes.size(); ++k) {
    Buffer* b = s.out_codes[k];
    a.codes = b->code_at(n, y, x) + gi * rows + r0;
    a.codes_stride = b->stride;
    a.inv_scale = 1.0f / b->format.scale;
    a.qlo = b->format.lo();
    a.qhi = b->format.hi();
    a.zero = b->format.zero();
    kernels::requantize_block(a);
    a.out = nullptr;  // written once
  }
}

// The active terms' int8 panels of group gi, stacked (term j's rows at j * padded rows): ternary
// and int4 codes decoded, int8 copied. prepare_layer makes them once per level; decoding on every
// run had cost MobileNetV3-large more than half its ternary time at batch 1.
std::vector<int8_t> stacked_panels(const LayerStep& s, int64_t gi) {
  const IntLayer& L = *s.L;
  int64_t total = 0;
  for (int j = 0; j < L.active; ++j) total += s.group(j, gi).panel_bytes();
  std::vector<int8_t> out(static_cast<size_t>(total));
  int64_t offset = 0;
  for (int j = 0; j < L.active; ++j) {
    const TermGroup& tg = s.group(j, gi);
    tg.panels(out.data() + offset);
    offset += tg.panel_bytes();
  }
  return out;
}

// Zero weights for the channels between L.in and the next multiple of 4 (see LayerStep::padded).
void pad_channels(LayerStep& s) {
  const IntLayer& L = *s.L;
  s.channels = round_up(L.in, kQStep);
  for (const IntTerm& term : L.terms) {
    std::vector<TermGroup> groups;
    for (const TermGroup& tg : term.groups) {
      std::vector<int8_t> w = tg.weights(), padded(static_cast<size_t>(L.rows() * L.taps * s.channels), 0);
      for (int64_t r = 0; r < L.rows(); ++r)
        for (int64_t t = 0; t < L.taps; ++t)
          for (int64_t c = 0; c < L.in; ++c)
            padded[static_cast<size_t>((r * L.taps + t) * s.channels + c)] = w[static_cast<size_t>((r * L.taps + t) * L.in + c)];
      groups.push_back(make_term_group(padded.data(), L.rows(), L.taps * s.channels, tg.int4.has_value()));
    }
    s.padded.push_back(std::move(groups));
  }
}

// stacked_panels of group gi at the layer's active level, made once and shared by every program
// running the layer: with a copy of the program per thread, each had decoded its own (a ternary
// ResNet-50 at 2 threads held three int8 copies of its weights).
std::shared_ptr<const std::vector<int8_t>> shared_panels(const LayerStep& s, int64_t gi) {
  IntLayer::DecodedCache& cache = *s.L->decoded;
  std::lock_guard<std::mutex> lock(cache.mutex);
  if (cache.active != s.L->active) {
    cache.groups.clear();
    cache.active = s.L->active;
  }
  auto& slot = cache.groups[gi];
  if (!slot) slot = std::make_shared<const std::vector<int8_t>>(stacked_panels(s, gi));
  return slot;
}

void prepare_layer(LayerStep& s) {
  const IntLayer& L = *s.L;
  const Buffer& in = *s.in;
  const kernels::Conv2dShape& cs = s.cs;
  const int64_t padded_rows = round_up(L.rows(), kQPanelRows);
  const int64_t steps = (s.depth() + kQStep - 1) / kQStep;
  s.cached_active = L.active;
  s.tap_offset.assign(static_cast<size_t>(L.taps), 0);
  if (!L.gemm)
    for (int64_t t = 0; t < L.taps; ++t)
      s.tap_offset[static_cast<size_t>(t)] =
          ((t / cs.kernel_w) * cs.dilation_h * in.wp() + (t % cs.kernel_w) * cs.dilation_w) * in.stride;
  s.groups.assign(static_cast<size_t>(L.depthwise() ? 0 : L.groups), {});
  s.depthwise_sums.clear();
  s.depthwise_epilogue.reset();
  if (s.mode == LayerStep::Mode::kDepthwise)
    for (int j = 0; j < L.active; ++j) {
      std::vector<int32_t> sums(static_cast<size_t>(L.groups), 0);
      const std::vector<int8_t>& w = L.terms[static_cast<size_t>(j)].depthwise;
      for (int64_t t = 0; t < L.taps; ++t)
        for (int64_t c = 0; c < L.groups; ++c) sums[static_cast<size_t>(c)] += w[static_cast<size_t>(t * L.groups + c)];
      s.depthwise_sums.push_back(std::move(sums));
    }
  for (size_t gi = 0; gi < s.groups.size(); ++gi) {
    LayerStep::Group& g = s.groups[gi];
    for (int j = 0; j < L.active; ++j) {
      const std::vector<int32_t>& sums = s.group(j, static_cast<int64_t>(gi)).row_sums;
      g.row_sums.push_back(sums.data());
      g.stacked_sums.insert(g.stacked_sums.end(), sums.begin(), sums.begin() + padded_rows);
    }
    // Ternary and int4 codes, and stacked terms, become int8 panels once per level (not per run).
    const TermGroup& only = s.group(0, static_cast<int64_t>(gi));
    if (!(L.active == 1 && !only.ternary && !only.int4)) g.panels = shared_panels(s, static_cast<int64_t>(gi));
    // Implicit GEMM: k = tap * in + channel, 4 channels per step.
    if (s.mode == LayerStep::Mode::kImplicit)
      for (int64_t st = 0; st < steps; ++st)
        g.step_offset.push_back(s.tap_offset[static_cast<size_t>(st * kQStep / s.channels)] +
                                static_cast<int64_t>(gi) * s.channels + st * kQStep % s.channels);
  }
}

void run_conv(LayerStep& s, int64_t images, ThreadPool* pool) {
  const IntLayer& L = *s.L;
  Buffer& in = *s.in;
  const kernels::Conv2dShape& cs = s.cs;
  const int64_t out_h = cs.out_h(), out_w = cs.out_w(), rows = L.rows();
  const int64_t padded_rows = round_up(rows, kQPanelRows);
  const int64_t depth = s.depth(), steps = (depth + kQStep - 1) / kQStep;
  const int32_t zero = in.format.zero();
  for (Buffer* b : s.out_codes) b->allocate(images);
  if (s.out_float) s.out_float->allocate(images);
  // Where output pixel (oh, ow)'s receptive field starts, relative to the padded input pixel.
  const int64_t top = in.pad - cs.pad_top, left = in.pad - cs.pad_left;
  if (s.cached_active != L.active) prepare_layer(s);
  const std::vector<int64_t>& tap_offset = s.tap_offset;
  auto origin = [&](int64_t n, int64_t oh, int64_t ow) {
    return in.q.data() + ((n * in.hp() + top + oh * cs.stride_h) * in.wp() + left + ow * cs.stride_w) * in.stride;
  };

  if (s.mode == LayerStep::Mode::kDepthwise) {
    const int64_t channels = L.groups;
    std::vector<const int32_t*> row_sums;
    for (const std::vector<int32_t>& sums : s.depthwise_sums) row_sums.push_back(sums.data());
    // The depthwise epilogue runs over all channels at once (rows = channels, group 0); with a
    // static input scale it is the same on every run.
    const bool dynamic = in.format.dynamic;
    std::vector<Epilogue> per_image(dynamic ? static_cast<size_t>(images) : 0);
    for (size_t n = 0; n < per_image.size(); ++n)
      make_epilogue(L, 0, channels, in.scales[n], zero, channels, row_sums, per_image[n]);
    if (!dynamic && !s.depthwise_epilogue) {
      s.depthwise_epilogue.emplace();
      make_epilogue(L, 0, channels, in.scales[0], zero, channels, row_sums, *s.depthwise_epilogue);
    }
    // A fused GlobalAveragePool: each output row's channel sums, then the rows' sums per image.
    std::vector<float> pool_rows(s.pool_out ? static_cast<size_t>(images * out_h * channels) : 0);
    parallel(pool, images * out_h, [&](int64_t begin, int64_t end) {
      thread_local std::vector<int32_t> acc;
      acc.resize(static_cast<size_t>(L.active * out_w * channels));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t n = item / out_h, oh = item % out_h;
        for (int j = 0; j < L.active; ++j)
          kernels::depthwise_row_int8(origin(n, oh, 0), cs.stride_w * in.stride, tap_offset.data(), L.taps,
                                      L.terms[static_cast<size_t>(j)].depthwise.data(), channels, out_w,
                                      acc.data() + j * out_w * channels);
        finish_pixels(s, dynamic ? per_image[static_cast<size_t>(n)] : *s.depthwise_epilogue, 0, n, oh, 0, out_w, acc.data(),
                      channels, out_w * channels);
        if (s.pool_out) {
          float* sum = pool_rows.data() + item * channels;
          for (int64_t ow = 0; ow < out_w; ++ow) {
            const float* v = s.out_float->float_at(n, oh, ow);
            for (int64_t c = 0; c < channels; ++c) sum[c] += v[c];
          }
        }
      }
    });
    if (s.pool_out) {
      s.pool_out->allocate(images);
      const float inv = 1.0f / static_cast<float>(out_h * out_w);
      for (int64_t n = 0; n < images; ++n) {
        float* dst = s.pool_out->float_at(n, 0, 0);
        std::fill(dst, dst + channels, 0.0f);
        for (int64_t oh = 0; oh < out_h; ++oh) {
          const float* sum = pool_rows.data() + (n * out_h + oh) * channels;
          for (int64_t c = 0; c < channels; ++c) dst[c] += sum[c];
        }
        for (int64_t c = 0; c < channels; ++c) dst[c] *= inv;
      }
    }
    return;
  }

  for (int64_t gi = 0; gi < L.groups; ++gi) {
    const int64_t stacked_rows = L.active * padded_rows;
    LayerStep::Group& group = s.groups[static_cast<size_t>(gi)];
    // One int8 term is multiplied from its stored panels; stacked terms and ternary / int4 codes
    // from the int8 panels prepare_layer made for this level.
    const int8_t* panels = group.panels ? group.panels->data() : s.group(0, gi).dense.data();
    const std::vector<int32_t>& stacked_sums = group.stacked_sums;
    const std::vector<int64_t>& step_offset = group.step_offset;
    std::vector<Epilogue>& per_image = s.epilogues;  // (not thread_local: the workers read it)
    const bool dynamic = in.format.dynamic;
    if (dynamic) {
      per_image.resize(static_cast<size_t>(images));
      for (size_t n = 0; n < per_image.size(); ++n)
        make_epilogue(L, gi * rows, rows, in.scales[n], zero, padded_rows, group.row_sums, per_image[n]);
    } else if (!group.epilogue) {  // a static input scale: the same constants on every run
      group.epilogue.emplace();
      make_epilogue(L, gi * rows, rows, in.scales[0], zero, padded_rows, group.row_sums, *group.epilogue);
    }
    const Epilogue* fixed = dynamic ? nullptr : &*group.epilogue;
    // Work items: runs of output pixels within one output row, about 96 pixels each. Small maps
    // (batch 1, late layers) have too few rows to keep the threads busy: their items also split
    // the channels into blocks of panels.
    const int64_t segment = std::min<int64_t>(out_w, 96);
    const int64_t per_row = (out_w + segment - 1) / segment;
    const int64_t row_items = images * out_h * per_row;
    const int64_t threads = pool ? pool->size() : 1;
    const bool split = threads > 1 && row_items < 8 * threads && padded_rows > 2 * kQPanelRows;
    // Blocks of 4 panels (the kernel's widest tile) where there are enough, else 2.
    const int64_t block_rows = !split ? padded_rows : padded_rows >= 8 * kQPanelRows ? 4 * kQPanelRows : 2 * kQPanelRows;
    const int64_t blocks = (padded_rows + block_rows - 1) / block_rows;
    const int64_t panel_bytes = steps * kQPanelRows * kQStep;
    const int64_t items = row_items * blocks;
    parallel(pool, items, [&](int64_t begin, int64_t end) {
      thread_local std::vector<int32_t> acc;
      thread_local std::vector<const uint8_t*> base;
      thread_local std::vector<uint8_t> patches;
      const int64_t acc_rows = L.active * block_rows;  // per pixel: each term's block of channels
      acc.resize(static_cast<size_t>(segment * acc_rows));
      base.resize(static_cast<size_t>(segment));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t row_item = item / blocks, r0 = item % blocks * block_rows;
        const int64_t n = row_item / (out_h * per_row), oh = row_item / per_row % out_h, ow0 = row_item % per_row * segment;
        const int64_t cols = std::min(segment, out_w - ow0);
        for (int64_t i = 0; i < cols; ++i) base[static_cast<size_t>(i)] = origin(n, oh, ow0 + i);
        const uint8_t* x = nullptr;
        int64_t x_stride = 0;
        if (s.mode == LayerStep::Mode::kGather) {  // channels per group not a multiple of 4: gather the patches
          x_stride = steps * kQStep;
          if (patches.size() < static_cast<size_t>(segment * x_stride)) patches.assign(static_cast<size_t>(segment * x_stride), 0);
          for (int64_t i = 0; i < cols; ++i) {
            uint8_t* patch = &patches[static_cast<size_t>(i * x_stride)];
            for (int64_t t = 0; t < L.taps; ++t) {
              const uint8_t* src = base[static_cast<size_t>(i)] + tap_offset[static_cast<size_t>(t)] + gi * L.in;
              for (int64_t c = 0; c < L.in; ++c) patch[t * L.in + c] = src[c];  // a few bytes: no memcpy call
            }
          }
          x = patches.data();
        }
        auto multiply = [&](const int8_t* w, const int32_t* sums, int64_t nrows, int32_t* c) {
          if (x) kernels::qgemm_panels(w, sums, nrows, depth, cols, x, x_stride, c, acc_rows, nullptr);
          else kernels::qgemm_indirect(w, sums, nrows, steps, cols, base.data(), step_offset.data(), c, acc_rows);
        };
        if (!split) {  // every term's panels in one pass
          multiply(panels, stacked_sums.data(), stacked_rows, acc.data());
          finish_pixels(s, fixed ? *fixed : per_image[static_cast<size_t>(n)], gi, n, oh, ow0, cols, acc.data(), acc_rows,
                        padded_rows);
          continue;
        }
        const int64_t count = std::min(block_rows, rows - r0);
        if (count <= 0) continue;
        for (int j = 0; j < L.active; ++j) {
          const int64_t first = j * padded_rows + r0;  // stacked row of this term's block
          multiply(panels + first / kQPanelRows * panel_bytes, stacked_sums.data() + first, count,
                   acc.data() + j * block_rows);
        }
        finish_pixels(s, fixed ? *fixed : per_image[static_cast<size_t>(n)], gi, n, oh, ow0, cols, acc.data(), acc_rows,
                      block_rows, r0, count);
      }
    });
  }
}

// A Gemm (or a 1 x 1 output): the images are the columns; the kernels split the weights over
// threads (weights are the large operand), ternary terms stream from their 2-bit codes.
void run_gemm(LayerStep& s, int64_t images, ThreadPool* pool) {
  const IntLayer& L = *s.L;
  Buffer& in = *s.in;
  const int64_t rows = L.rows(), padded_rows = round_up(rows, kQPanelRows);
  const int64_t stacked_rows = L.active * padded_rows;
  // Rows of a Gemm: one per image ([N, K]) or per token ([N, T, K] as a row of T pixels); the
  // codes are contiguous (a Gemm's input has no border).
  const int64_t positions = in.h * in.w, cols = images * positions;
  if (in.pad != 0) throw Error(L.node + ": a Gemm input with a border");  // (no message built per run)
  for (Buffer* b : s.out_codes) b->allocate(images);
  if (s.out_float) s.out_float->allocate(images);
  std::vector<const int32_t*> row_sums;
  for (int j = 0; j < L.active; ++j) row_sums.push_back(L.terms[static_cast<size_t>(j)].groups[0].row_sums.data());
  std::vector<Epilogue> e(static_cast<size_t>(in.format.dynamic ? images : 1));
  for (int64_t n = 0; n < static_cast<int64_t>(e.size()); ++n)
    make_epilogue(L, 0, rows, in.scales[static_cast<size_t>(n)], in.format.zero(), padded_rows, row_sums, e[static_cast<size_t>(n)]);
  // The epilogue of columns [c0, c0 + count) from their sums (acc: the first column's), split
  // where an image ends.
  auto finish = [&](int64_t c0, int64_t count, const int32_t* acc) {
    for (int64_t c = c0; c < c0 + count;) {
      const int64_t n = c / positions, p = c % positions, run = std::min(positions - p, c0 + count - c);
      finish_pixels(s, e[static_cast<size_t>(in.format.dynamic ? n : 0)], 0, n, 0, p, run, acc + (c - c0) * stacked_rows,
                    stacked_rows, padded_rows);
      c += run;
    }
  };
  if (!worth_both_cores(cols * stacked_rows * L.depth())) pool = nullptr;
  // Few columns (a GEMV, a small batch) stream the packed weights, every term by its own kernel.
  const TermGroup& first = L.terms[0].groups[0];
  const bool term_kernels = L.active == 1 && !first.ternary && !first.int4 ? cols <= kernels::kTernaryStreamMaxCols
                            : first.ternary                                ? kernels::ternary_streams(cols)
                            : first.int4                                   ? cols <= kernels::kInt4StreamMaxCols
                                                                           : false;
  if (term_kernels) {
    thread_local std::vector<int32_t> acc;
    acc.resize(static_cast<size_t>(cols * stacked_rows));
    for (int j = 0; j < L.active; ++j)
      L.terms[static_cast<size_t>(j)].groups[0].gemm(cols, in.q.data(), in.stride, acc.data() + j * padded_rows,
                                                     stacked_rows, *s.panels, pool);
    finish(0, cols, acc.data());
    return;
  }
  // More (tokens, large batches): int8 panels (prepare_layer decodes ternary and int4 once per
  // level, every term stacked), over blocks of columns that each core multiplies and finishes
  // while their sums are in its cache (split otherwise, the epilogue read half its sums from
  // the other core, and with a GELU ran slower on two cores than on one).
  if (s.cached_active != L.active) prepare_layer(s);
  const LayerStep::Group& g = s.groups[0];
  const int8_t* panels = g.panels ? g.panels->data() : nullptr;
  constexpr int64_t kCols = 48;
  const int64_t blocks = (cols + kCols - 1) / kCols;
  parallel(pool, blocks, [&](int64_t begin, int64_t end) {
    thread_local std::vector<int32_t> acc;
    acc.resize(static_cast<size_t>(kCols * stacked_rows));
    for (int64_t b = begin; b < end; ++b) {
      const int64_t c0 = b * kCols, count = std::min(kCols, cols - c0);
      const uint8_t* x = in.q.data() + c0 * in.stride;
      if (panels) kernels::qgemm_panels(panels, g.stacked_sums.data(), stacked_rows, L.depth(), count, x, in.stride, acc.data(),
                                        stacked_rows, nullptr);
      else first.gemm(count, x, in.stride, acc.data(), stacked_rows, *s.panels, nullptr);  // one int8 term
      finish(c0, count, acc.data());
    }
  });
}

// ---------------------------------------------------------------------------------------------
// The other operations, each on one form (codes or float).

template <typename T>
T* at(Buffer& b, int64_t n, int64_t y, int64_t x) {
  if constexpr (std::is_same_v<T, uint8_t>) return b.code_at(n, y, x);
  else return b.float_at(n, y, x);
}

// dst[c] = max(dst[c], src[c]). Separate restrict-qualified pointers: written through the
// buffers' own uint8_t pointers, every store could alias the Buffer's fields (a char type aliases
// anything), so the compiler reloaded them per byte and kept the loop scalar (ResNet-18's
// 112x112x64 MaxPool took 1.1 ms).
template <typename T>
void max_into(T* __restrict dst, const T* __restrict a, const T* __restrict b, int64_t count) {
  for (int64_t c = 0; c < count; ++c) {
    const T m = a[c] > b[c] ? a[c] : b[c];
    dst[c] = m > dst[c] ? m : dst[c];
  }
}

template <typename T>
void max_of(T* __restrict dst, const T* __restrict a, const T* __restrict b, int64_t count) {
  for (int64_t c = 0; c < count; ++c) dst[c] = a[c] > b[c] ? a[c] : b[c];
}

template <typename T>
void max_pool(Buffer& in, Buffer& out, const PoolAttrs& p, int64_t images, ThreadPool* pool) {
  const int64_t kh = p.kernel[0], kw = p.kernel[1];
  const int64_t sh = p.strides.empty() ? 1 : p.strides[0], sw = p.strides.empty() ? 1 : p.strides[1];
  const int64_t dh = p.dilations.empty() ? 1 : p.dilations[0], dw = p.dilations.empty() ? 1 : p.dilations[1];
  const int64_t pt = p.pads.empty() ? 0 : p.pads[0], pl = p.pads.empty() ? 0 : p.pads[1];
  const int64_t in_h = in.h, in_w = in.w, channels = in.c, out_h = out.h, out_w = out.w;
  parallel(pool, images * out_h, [&](int64_t begin, int64_t end) {
    std::vector<const T*> taps(static_cast<size_t>(kh * kw));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / out_h, oh = item % out_h;
      for (int64_t ow = 0; ow < out_w; ++ow) {
        size_t count = 0;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t ih = oh * sh - pt + i * dh;
          if (ih < 0 || ih >= in_h) continue;
          for (int64_t j = 0; j < kw; ++j) {
            const int64_t iw = ow * sw - pl + j * dw;
            if (iw >= 0 && iw < in_w) taps[count++] = at<T>(in, n, ih, iw);
          }
        }
        T* dst = at<T>(out, n, oh, ow);
        if (count == 0) continue;  // a window wholly in the padding: left as allocated
        if (count == 1) {
          std::memcpy(dst, taps[0], static_cast<size_t>(channels) * sizeof(T));
          continue;
        }
        // Taps two at a time: dst is read and written once per pair.
        size_t t = 2;
        max_of(dst, taps[0], taps[1], channels);
        for (; t + 2 <= count; t += 2) max_into(dst, taps[t], taps[t + 1], channels);
        if (t < count) max_into(dst, taps[t], taps[t], channels);
      }
    }
  });
}

// Relu / Clip / Identity: an elementwise clamp; on codes, the clamp of the codes of the bounds
// (rounding is monotone, so it commutes with the clamp).
template <typename T>
void clamp_into(T* __restrict dst, const T* __restrict src, int64_t count, T lo, T hi) {
  for (int64_t c = 0; c < count; ++c) dst[c] = std::min(std::max(src[c], lo), hi);
}

template <typename T>
void clamp_copy(Buffer& in, Buffer& out, float lo, float hi, int64_t images) {
  T tlo, thi;
  if constexpr (std::is_same_v<T, uint8_t>) {
    const Format& f = in.format;
    tlo = std::isinf(lo) ? 0 : quantize_code(lo, f.scale, f.lo(), f.hi(), f.zero());
    thi = std::isinf(hi) ? 255 : quantize_code(hi, f.scale, f.lo(), f.hi(), f.zero());
  } else {
    tlo = lo;
    thi = hi;
  }
  const int64_t h = in.h, w = in.w, channels = in.c;
  for (int64_t n = 0; n < images; ++n)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) clamp_into(at<T>(out, n, y, x), at<T>(in, n, y, x), channels, tlo, thi);
}

// Flatten / Reshape to [N, C * H * W]: NCHW order, as the graph flattens.
template <typename T>
void flatten(Buffer& in, Buffer& out, int64_t images) {
  for (int64_t n = 0; n < images; ++n) {
    T* dst = at<T>(out, n, 0, 0);
    for (int64_t y = 0; y < in.h; ++y)
      for (int64_t x = 0; x < in.w; ++x) {
        const T* src = at<T>(in, n, y, x);
        for (int64_t c = 0; c < in.c; ++c) dst[(c * in.h + y) * in.w + x] = src[c];
      }
  }
}

template <typename T>
void concat(std::vector<Buffer*>& in, Buffer& out, int64_t images) {
  for (int64_t n = 0; n < images; ++n)
    for (int64_t y = 0; y < out.h; ++y)
      for (int64_t x = 0; x < out.w; ++x) {
        T* dst = at<T>(out, n, y, x);
        for (Buffer* b : in) {
          std::memcpy(dst, at<T>(*b, n, y, x), static_cast<size_t>(b->c) * sizeof(T));
          dst += b->c;
        }
      }
}

// Codes of `pixels` NHWC pixels of `channels` floats at `scale`, by the layers' vectorized
// epilogue (requantize.h: a multiply by the reciprocal, as every layer's output codes are made).
// With a gate, the values are src[c] * gate[c] (a squeeze-excitation's Mul), also written as
// float to `out` when given; without codes (dst null), only that.
void quantize_pixels(const float* src, int64_t src_stride, int64_t pixels, int64_t channels, float scale, const Format& f,
                     uint8_t* dst, int64_t dst_stride, const float* gate = nullptr, float* out = nullptr,
                     int64_t out_stride = 0) {
  static thread_local std::vector<float> zeros;
  if (zeros.size() < static_cast<size_t>(channels)) zeros.assign(static_cast<size_t>(channels), 0.0f);
  static const int32_t no_sums = 0;
  kernels::RequantArgs a;
  a.cols = pixels;
  a.rows = channels;
  a.terms = 0;  // v = 0 + src: the float values themselves
  a.acc = &no_sums;
  a.bias = zeros.data();
  a.residual = src;
  a.residual_stride = src_stride;
  a.residual_scale = gate;
  a.out = out;
  a.out_stride = out_stride;
  a.codes = dst;
  a.codes_stride = dst_stride;
  a.inv_scale = 1.0f / scale;
  a.qlo = f.lo();
  a.qhi = f.hi();
  a.zero = f.zero();
  kernels::requantize_block(a);
}

// Codes of `count` contiguous floats at `scale`: as 16-value columns (one vector each) and a tail.
void quantize_run(const float* src, int64_t count, float scale, const Format& f, uint8_t* dst) {
  const int64_t whole = count / 16 * 16;
  if (whole > 0) quantize_pixels(src, 16, whole / 16, 16, scale, f, dst, 16);
  if (count > whole) quantize_pixels(src + whole, 0, 1, count - whole, scale, f, dst + whole, 0);
}

// Float to codes (a FakeQuantize whose input is not a quantized layer's output, or a dynamic one).
void quantize_buffer(Buffer& in, Buffer& out, int64_t images, ThreadPool* pool) {
  const Format& f = out.format;
  if (f.dynamic) {  // each image's own scale
    parallel(pool, images, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        float t = 0.0f;
        const float* x = in.float_at(n, 0, 0);
        const bool is_unsigned = f.is_unsigned;
        for (int64_t i = 0; i < in.h * in.w * in.stride; ++i) t = std::max(t, is_unsigned ? x[i] : std::fabs(x[i]));
        const float scale = dynamic_scale(f, t);
        out.scales[static_cast<size_t>(n)] = scale;
        for (int64_t y = 0; y < in.h; ++y)
          quantize_pixels(in.float_at(n, y, 0), in.stride, in.w, in.c, scale, f, out.code_at(n, y, 0), out.stride);
      }
    });
    return;
  }
  parallel(pool, images * in.h, [&](int64_t begin, int64_t end) {  // image rows: both cores at batch 1
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / in.h, y = row % in.h;
      quantize_pixels(in.float_at(n, y, 0), in.stride, in.w, in.c, f.scale, f, out.code_at(n, y, 0), out.stride);
    }
  });
}

// A float buffer's images as the graph's tensor of `shape` (dim 0: images). [N, C] and [N, T, D]
// are the buffer's own layout; [N, C, H, W] is transposed from NHWC.
Tensor buffer_to_tensor(const Buffer& b, Shape shape, int64_t images) {
  shape[0] = images;
  Tensor t = Tensor::uninitialized(DataType::kFloat32, shape);
  float* dst = t.data<float>();
  if (b.f.size() < static_cast<size_t>(t.size())) throw Error("integer engine: '" + b.name + "' holds fewer values than its shape");
  if (shape.size() != 4) {
    std::memcpy(dst, b.f.data(), static_cast<size_t>(t.size()) * sizeof(float));
    return t;
  }
  const int64_t hw = b.h * b.w;
  for (int64_t n = 0; n < images; ++n)
    for (int64_t p = 0; p < hw; ++p) {
      const float* src = b.f.data() + (n * hw + p) * b.stride;
      for (int64_t c = 0; c < b.c; ++c) dst[(n * b.c + c) * hw + p] = src[c];
    }
  return t;
}

// The inverse: a tensor of the buffer's geometry into the (allocated) buffer.
void tensor_to_buffer(const Tensor& t, Buffer& b, int64_t images) {
  const int64_t hw = b.h * b.w;
  if (t.size() != images * b.c * hw)
    throw Error("integer engine: '" + b.name + "': a result of " + std::to_string(t.size()) + " values, planned " +
                std::to_string(images * b.c * hw));
  const float* src = t.data<float>();
  if (t.rank() != 4) {
    std::memcpy(b.f.data(), src, static_cast<size_t>(t.size()) * sizeof(float));
    return;
  }
  for (int64_t n = 0; n < images; ++n)
    for (int64_t p = 0; p < hw; ++p) {
      float* dst = b.f.data() + (n * hw + p) * b.stride;
      for (int64_t c = 0; c < b.c; ++c) dst[c] = src[(n * b.c + c) * hw + p];
    }
}

bool is_passthrough(OpType op) { return ops::record(op).integer == ops::IntegerUse::kOnCodes; }

bool is_float_op(OpType op) { return ops::record(op).integer == ops::IntegerUse::kFloat; }

// ---------------------------------------------------------------------------------------------
// Compilation.

struct Compiler {
  const Graph& g;
  const std::vector<IntLayer>& layers;
  Program::Impl& P;
  std::string why;

  std::map<std::string, const IntLayer*> layer_of;
  std::vector<int> producer;
  std::vector<std::vector<int>> readers;
  std::vector<bool> is_output;
  std::vector<ValueId> alias;  // a static FakeQuantize's output: its input (the same codes)

  // What a layer's epilogue computes after its own clamp: a residual Add (and the ReLU/Clip after
  // it), or an activation function (act, and for SiLU the Mul after the Sigmoid as act2).
  struct Fusion {
    int add = -1, act = -1, act2 = -1;
    ValueId residual = kNoValue, result = kNoValue;
    kernels::Activation function = kernels::Activation::kNone;
    float alpha = 0, beta = 0;
  };
  std::map<int, Fusion> fusion;  // by integer layer node index
  std::set<int> fused;           // Add / activation nodes folded into a layer
  // Nodes with no integer form (activations such as HardSigmoid or Sigmoid, a squeeze-excitation's
  // broadcasting Mul, Softmax, a layer kept float32): run by their FP32 kernel on the float
  // values between integer layers, as the simulation runs them.
  std::set<int> generic;
  // Integer layers on whole float tensors (run_layer quantizes them as their FakeQuantize does):
  // on a value that is not a batch of images (a sequence-first attention input), or with
  // per-token scales. Their FakeQuantize nodes are absorbed (not run).
  std::set<int> whole;
  std::set<int> absorbed;
  // LayerNorms as exporters below opset 17 write them (ReduceMean, Sub, Pow, ReduceMean, Add,
  // Sqrt, Div, then Mul and Add by constants), one step each, by their first ReduceMean's index.
  struct LayerNorm {
    ValueId x = kNoValue, result = kNoValue;
    float eps = 0;
    std::vector<float> gamma, beta;  // empty: none
    bool op = false;  // a LayerNormalization node (opset 17), computed as its FP32 kernel computes it
  };
  std::map<int, LayerNorm> layer_norms;
  std::map<ValueId, Tensor*> side;  // values kept as whole tensors (Impl::side)
  std::set<ValueId> batch_only;     // side values the batch size alone determines (build_generic)
  std::map<ValueId, LayerStep*> depthwise_writer;  // float outputs written by a depthwise layer's epilogue

  std::vector<bool> need_float;
  std::vector<std::vector<std::pair<Format, int64_t>>> need_codes;  // (format, border)

  std::map<ValueId, Buffer*> float_buffers;
  std::map<std::pair<ValueId, size_t>, Buffer*> code_buffers;  // (value, index in need_codes)

  Compiler(const Graph& graph, const std::vector<IntLayer>& ls, Program::Impl& p) : g(graph), layers(ls), P(p) {}

  bool fail(std::string w) {
    if (why.empty()) why = std::move(w);
    return false;
  }

  ValueId resolve(ValueId v) const {
    while (alias[static_cast<size_t>(v)] != kNoValue) v = alias[static_cast<size_t>(v)];
    return v;
  }

  // The NHWC geometry of a value: [N, C, H, W] or [N, C].
  bool geometry(ValueId v, int64_t& h, int64_t& w, int64_t& c) {
    const Value& val = g.value(v);
    if (!val.shape_known) return fail("value '" + val.name + "' has no known shape");
    const Shape& s = val.shape;
    if (val.dtype != DataType::kFloat32) return fail("value '" + val.name + "' is " + to_string(val.dtype) + ", not float32");
    // Every buffer holds whole images: its first dim must be the graph input's batch.
    const Shape& in = g.value(g.inputs[0]).shape;
    if (!s.empty() && !in.empty() &&
        (in[0] < 0 ? s[0] >= 0 || (!val.batch_leading() && v != g.inputs[0]) : s[0] != in[0]))
      return fail("value '" + val.name + "' does not lead with the batch");
    for (size_t i = 1; i < s.size(); ++i)
      if (s[i] < 0) return fail("value '" + val.name + "' has a dynamic dimension beyond the batch");
    if (s.size() == 4) {
      c = s[1], h = s[2], w = s[3];
      return true;
    }
    if (s.size() == 3) {  // tokens [N, T, D]: one row of T pixels of D channels
      c = s[2], h = 1, w = s[1];
      return true;
    }
    if (s.size() == 2) {
      c = s[1], h = w = 1;
      return true;
    }
    return fail("value '" + val.name + "' has rank " + std::to_string(s.size()) + " (2, 3 or 4 supported)");
  }

  // Whether a passthrough node can run on codes: the layouts its code path knows.
  bool on_codes(const Node& n) const {
    for (ValueId v : n.inputs)
      if (v != kNoValue && !g.is_constant(v) && g.value(v).shape.size() == 3 && n.op != OpType::kRelu && n.op != OpType::kClip)
        return false;  // tokens: only element-wise clamps
    if (n.op == OpType::kFlatten) return n.attr<AxisAttrs>().axis == 1;
    if (n.op == OpType::kReshape) {
      const Shape& out = g.value(n.outputs[0]).shape;
      const Shape& in = g.value(n.inputs[0]).shape;
      int64_t per_image = 1;
      for (size_t k = 1; k < in.size(); ++k) per_image *= in[k];
      return out.size() == 2 && !in.empty() && out[0] == in[0] && out[1] == per_image;
    }
    if (n.op == OpType::kConcat) return n.attr<AxisAttrs>().axis == 1;
    if (n.op == OpType::kClip)  // bounds as attributes only (constant inputs were folded at import)
      for (size_t k = 1; k < n.inputs.size(); ++k)
        if (n.inputs[k] != kNoValue) return false;
    return true;
  }

  // geometry() without recording why not.
  bool fits(ValueId v) {
    std::string saved = why;
    int64_t h, w, c;
    bool ok = geometry(v, h, w, c);
    why = saved;
    return ok;
  }

  bool check_supported() {
    for (const IntLayer& L : layers) layer_of[L.node] = &L;
    producer = g.producers();
    readers.assign(g.values.size(), {});
    for (size_t i = 0; i < g.nodes.size(); ++i)
      for (ValueId v : g.nodes[i].inputs)
        if (v != kNoValue && !g.is_constant(v)) readers[static_cast<size_t>(v)].push_back(static_cast<int>(i));
    is_output.assign(g.values.size(), false);
    for (ValueId v : g.outputs) {
      is_output[static_cast<size_t>(v)] = true;
      if (g.is_constant(v)) return fail("graph output '" + g.value(v).name + "' is a constant, not computed");
    }
    alias.assign(g.values.size(), kNoValue);
    if (g.inputs.size() != 1) return fail("the graph has " + std::to_string(g.inputs.size()) + " inputs");
    int64_t h, w, c;
    if (!geometry(g.inputs[0], h, w, c)) return false;
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& n = g.nodes[i];
      auto it = layer_of.find(n.name);
      if ((n.op == OpType::kConv || n.op == OpType::kGemm) && it == layer_of.end()) {
        if (n.outputs.size() != 1) return fail(n.name + ": several outputs");
        generic.insert(static_cast<int>(i));  // kept float32
      } else if (n.op == OpType::kConv || n.op == OpType::kGemm) {
        ValueId x = n.inputs[0];
        int p = producer[static_cast<size_t>(x)];
        if (p < 0 || g.nodes[static_cast<size_t>(p)].op != OpType::kFakeQuantize)
          return fail(n.name + ": its input is not quantized");
        if (n.op == OpType::kGemm) {
          const GemmAttrs& a = n.attr<GemmAttrs>();
          if (a.trans_a || !a.trans_b || a.alpha != 1.0f || a.beta != 1.0f) return fail(n.name + ": Gemm attributes");
          const size_t rank = g.value(n.inputs[0]).shape.size();
          if (rank != 2 && rank != 3 && !whole.count(static_cast<int>(i)))
            return fail(n.name + ": a Gemm on rank-" + std::to_string(rank) + " rows");
        }
      } else if (n.op == OpType::kFakeQuantize) {
        if (is_output[static_cast<size_t>(n.outputs[0])]) return fail(n.name + ": a graph output");
        const bool per_row = n.attr<FakeQuantAttrs>().per_row;
        bool layers_only = true;
        for (int r : readers[static_cast<size_t>(n.outputs[0])])
          layers_only = layers_only && layer_of.count(g.nodes[static_cast<size_t>(r)].name);
        if (layers_only && (per_row || side.count(n.inputs[0]))) {
          // Quantized by its readers, whole-tensor layers.
          absorbed.insert(static_cast<int>(i));
          for (int r : readers[static_cast<size_t>(n.outputs[0])]) whole.insert(r);
          continue;
        }
        if (!layers_only) generic.insert(static_cast<int>(i));  // an operand of a float operation (an attention MatMul)
        else if (!n.attr<FakeQuantAttrs>().dynamic) alias[static_cast<size_t>(n.outputs[0])] = n.inputs[0];
      } else if (n.op == OpType::kMaxPool) {
        const PoolAttrs& a = n.attr<PoolAttrs>();
        if (a.kernel.size() != 2) return fail(n.name + ": not a 2-D pooling");
      } else if (n.op == OpType::kAdd && (g.value(n.inputs[0]).shape != g.value(n.inputs[1]).shape ||
                                          g.is_constant(n.inputs[0]) || g.is_constant(n.inputs[1]))) {
        generic.insert(static_cast<int>(i));  // broadcasting, or a constant operand
      } else if (n.op == OpType::kReduceMean) {
        const ReduceAttrs& a = n.attr<ReduceAttrs>();
        std::vector<int64_t> axes = a.axes;
        std::sort(axes.begin(), axes.end());
        if (g.value(n.inputs[0]).shape.size() != 4 || axes != std::vector<int64_t>{2, 3} || !a.keepdims)
          generic.insert(static_cast<int>(i));
      } else if (is_passthrough(n.op) && !on_codes(n)) {
        // A layout move the codes path does not do (a Reshape other than a flatten of each image,
        // a Concat along tokens, anything on [N, T, D] tokens ...): run by its FP32 kernel.
        if (n.outputs.size() != 1) return fail(n.name + ": " + to_string(n.op) + " with several outputs");
        generic.insert(static_cast<int>(i));
      } else if (!is_passthrough(n.op) && !is_float_op(n.op)) {
        if (n.outputs.size() != 1) return fail(n.name + ": " + to_string(n.op) + " with several outputs");
        generic.insert(static_cast<int>(i));
      }
      const bool is_generic = generic.count(static_cast<int>(i)) > 0 || whole.count(static_cast<int>(i)) > 0;
      if (!is_generic)
        for (ValueId v : n.inputs)
          if (v != kNoValue && side.count(v)) return fail(n.name + ": reads '" + g.value(v).name + "', which is not a batch of images");
      for (ValueId v : n.outputs) {
        if (is_generic && !fits(v)) {  // kept whole, for FP32 steps only
          if (is_output[static_cast<size_t>(v)]) return fail("graph output '" + g.value(v).name + "' is not a batch of images");
          P.side.push_back(std::make_unique<Tensor>());
          side[v] = P.side.back().get();
          continue;
        }
        if (!geometry(v, h, w, c)) return false;
      }
    }
    return true;
  }

  // Residual Adds whose one operand is an integer layer's only use run in that layer's epilogue
  // (with the ReLU/Clip after them, when the Add's only reader).
  void find_fusions() {
    for (size_t i = 0; i < g.nodes.size(); ++i) {
      const Node& add = g.nodes[i];
      if (add.op != OpType::kAdd) continue;
      int best = -1;
      ValueId residual = kNoValue;
      for (int k = 0; k < 2; ++k) {
        ValueId v = add.inputs[static_cast<size_t>(k)], other = add.inputs[static_cast<size_t>(1 - k)];
        int p = producer[static_cast<size_t>(v)];
        if (p < 0 || !layer_of.count(g.nodes[static_cast<size_t>(p)].name) || whole.count(p) || fusion.count(p)) continue;
        if (readers[static_cast<size_t>(v)].size() != 1 || is_output[static_cast<size_t>(v)]) continue;
        int po = other == kNoValue ? -2 : producer[static_cast<size_t>(other)];
        if (po >= p || g.is_constant(other)) continue;  // the residual must exist before the layer runs
        if (p > best) best = p, residual = other;
      }
      if (best < 0) continue;
      Fusion f;
      f.add = static_cast<int>(i);
      f.residual = residual;
      f.result = add.outputs[0];
      const std::vector<int>& r = readers[static_cast<size_t>(add.outputs[0])];
      if (r.size() == 1 && !is_output[static_cast<size_t>(add.outputs[0])]) {
        const Node& act = g.nodes[static_cast<size_t>(r[0])];
        if (act.op == OpType::kRelu || (act.op == OpType::kClip && act.inputs.size() == 1)) {
          f.act = r[0];
          f.result = act.outputs[0];
        }
      }
      fusion[best] = f;
      fused.insert(f.add);
      if (f.act >= 0) fused.insert(f.act);
    }
    // An activation that alone reads a layer's output: HardSigmoid / HardSwish, Sigmoid; or a gate
    // times the output, as exporters write SiLU (x * Sigmoid(x)) and HardSwish (x * HardSigmoid(x)):
    // the gate's only reader is a Mul of the output by it.
    for (size_t p = 0; p < g.nodes.size(); ++p) {
      const Node& n = g.nodes[p];
      if (!layer_of.count(n.name) || whole.count(static_cast<int>(p)) || fusion.count(static_cast<int>(p))) continue;
      ValueId v = n.outputs[0];
      const std::vector<int>& r = readers[static_cast<size_t>(v)];
      if (is_output[static_cast<size_t>(v)] || r.empty() || r.size() > 2) continue;
      auto gate_of = [&](int k, Fusion& f) {  // a gate node's function (Sigmoid, or HardSigmoid alone)
        const Node& a = g.nodes[static_cast<size_t>(k)];
        if (a.op == OpType::kSigmoid) {
          f.function = kernels::Activation::kSigmoid;
          return true;
        }
        if (a.op != OpType::kHardSigmoid) return false;
        const AffineAttrs& at = a.attr<AffineAttrs>();
        f.function = at.multiply_input ? kernels::Activation::kHardSwish : kernels::Activation::kHardSigmoid;
        f.alpha = at.alpha;
        f.beta = at.beta;
        return true;
      };
      Fusion f;
      if (std::vector<int> chain; r.size() == 2 && match_gelu(v, chain, f)) {
        if (side.count(f.result) || !fits(f.result)) continue;
        fusion[static_cast<int>(p)] = f;
        for (int k : chain) {
          fused.insert(k);
          generic.erase(k);
        }
        continue;
      }
      if (r.size() == 1) {
        if (!gate_of(r[0], f)) continue;
        f.act = r[0];
        f.result = g.nodes[static_cast<size_t>(r[0])].outputs[0];
      } else {
        int gate = -1;
        for (int k : r) {
          Fusion t;
          if (gate_of(k, t) && (t.function == kernels::Activation::kSigmoid || t.function == kernels::Activation::kHardSigmoid))
            gate = k, f = t;
        }
        if (gate < 0) continue;
        int mul = r[0] == gate ? r[1] : r[0];
        const Node& m = g.nodes[static_cast<size_t>(mul)];
        ValueId s = g.nodes[static_cast<size_t>(gate)].outputs[0];
        const std::vector<int>& rs = readers[static_cast<size_t>(s)];
        if (m.op != OpType::kMul || m.inputs.size() != 2 || rs.size() != 1 || rs[0] != mul || is_output[static_cast<size_t>(s)] ||
            !((m.inputs[0] == v && m.inputs[1] == s) || (m.inputs[0] == s && m.inputs[1] == v)))
          continue;
        f.function = f.function == kernels::Activation::kSigmoid ? kernels::Activation::kSilu : kernels::Activation::kHardSwish;
        f.act = gate;
        f.act2 = mul;
        f.result = m.outputs[0];
      }
      if (side.count(f.result) || !fits(f.result)) continue;
      fusion[static_cast<int>(p)] = f;
      fused.insert(f.act);
      if (f.act2 >= 0) fused.insert(f.act2);
      generic.erase(f.act);
      generic.erase(f.act2);
    }
  }

  // A whole-tensor layer's input: what its (absorbed) FakeQuantize reads.
  ValueId whole_input(const Node& n) const { return g.nodes[static_cast<size_t>(producer[static_cast<size_t>(n.inputs[0])])].inputs[0]; }

  // A float32 constant of one element.
  std::optional<float> scalar(ValueId v) const {
    if (v == kNoValue || !g.is_constant(v)) return std::nullopt;
    const Tensor& t = g.constant(v);
    if (t.dtype() != DataType::kFloat32 || t.size() != 1) return std::nullopt;
    return t.data<float>()[0];
  }
  // The other operand of a two-input node that reads v, or kNoValue.
  static ValueId other_operand(const Node& n, ValueId v) {
    if (n.inputs.size() != 2) return kNoValue;
    return n.inputs[0] == v ? n.inputs[1] : n.inputs[1] == v ? n.inputs[0] : kNoValue;
  }
  // The single reader of a value that is not a graph output, or -1.
  int only_reader(ValueId v) const {
    const std::vector<int>& r = readers[static_cast<size_t>(v)];
    return r.size() == 1 && !is_output[static_cast<size_t>(v)] ? r[0] : -1;
  }

  // GELU as exporters write it, read from a layer's output v: Div(v, c) or Mul(v, c) -> Erf ->
  // Add(1), then either Mul(v, .) -> Mul(0.5) (torch.onnx) or Mul(Mul(v, 0.5), .) (paddle2onnx),
  // each node the only reader of the one before. Halving is exact, so both orders round as
  // activation_math.h's gelu_div / gelu_mul do. The nodes go to `chain`.
  bool match_gelu(ValueId v, std::vector<int>& chain, Fusion& f) const {
    auto node = [&](int k) -> const Node& { return g.nodes[static_cast<size_t>(k)]; };
    const std::vector<int>& r = readers[static_cast<size_t>(v)];
    for (int k = 0; k < 2; ++k) {
      const int scale_at = r[static_cast<size_t>(k)], other_at = r[static_cast<size_t>(1 - k)];
      const Node& scale = node(scale_at);
      std::optional<float> c;
      if (scale.op == OpType::kDiv && scale.inputs.size() == 2 && scale.inputs[0] == v) c = scalar(scale.inputs[1]);
      if (scale.op == OpType::kMul) c = scalar(other_operand(scale, v));
      if (!c || node(other_at).op != OpType::kMul) continue;
      const int erf = only_reader(scale.outputs[0]);
      if (erf < 0 || node(erf).op != OpType::kErf) continue;
      const int add = only_reader(node(erf).outputs[0]);
      if (add < 0 || node(add).op != OpType::kAdd || scalar(other_operand(node(add), node(erf).outputs[0])) != 1.0f) continue;
      const ValueId plus = node(add).outputs[0];
      const Node& other = node(other_at);
      int last = -1;
      if (other_operand(other, v) == plus && only_reader(plus) == other_at) {  // v * (erf + 1), then * 0.5
        const int half = only_reader(other.outputs[0]);
        if (half >= 0 && node(half).op == OpType::kMul && scalar(other_operand(node(half), other.outputs[0])) == 0.5f)
          last = half;
      } else if (scalar(other_operand(other, v)) == 0.5f) {  // (v * 0.5) * (erf + 1)
        const int product = only_reader(other.outputs[0]);
        if (product >= 0 && node(product).op == OpType::kMul && only_reader(plus) == product &&
            other_operand(node(product), other.outputs[0]) == plus)
          last = product;
      }
      if (last < 0) continue;
      f.function = scale.op == OpType::kDiv ? kernels::Activation::kGelu : kernels::Activation::kGeluMul;
      f.alpha = *c;
      f.act = scale_at;
      f.result = node(last).outputs[0];
      chain = {scale_at, erf, add, other_at, last};
      return true;
    }
    return false;
  }

  // The decomposed LayerNorm over the last axis that starts at node i (a ReduceMean), its nodes
  // after the first to `chain`.
  std::optional<LayerNorm> match_layer_norm(int i, std::vector<int>& chain) const {
    auto node = [&](int k) -> const Node& { return g.nodes[static_cast<size_t>(k)]; };
    auto last_axis_mean = [&](const Node& n) {
      if (n.op != OpType::kReduceMean || n.inputs.size() != 1 || !n.attr<ReduceAttrs>().keepdims) return false;
      const std::vector<int64_t>& axes = n.attr<ReduceAttrs>().axes;
      const int64_t rank = static_cast<int64_t>(g.value(n.inputs[0]).shape.size());
      return axes.size() == 1 && (axes[0] == -1 || axes[0] == rank - 1);
    };
    const Node& mean = node(i);
    if (mean.op == OpType::kLayerNormalization) {  // the operator itself, over the last axis
      LayerNorm ln;
      ln.op = true;
      ln.x = mean.inputs[0];
      ln.result = mean.outputs[0];
      const Shape& xs = g.value(ln.x).shape;
      const int64_t axis = mean.attr<LayerNormAttrs>().axis, rank = static_cast<int64_t>(xs.size());
      if (mean.outputs.size() != 1 || side.count(ln.x) || side.count(ln.result) || (rank != 2 && rank != 3) ||
          (axis != -1 && axis != rank - 1))
        return std::nullopt;
      auto per_channel = [&](size_t k, std::vector<float>& out) {
        if (k >= mean.inputs.size() || mean.inputs[k] == kNoValue) return k == 2;  // the bias is optional
        const ValueId c = mean.inputs[k];
        if (!g.is_constant(c) || g.constant(c).dtype() != DataType::kFloat32 || g.constant(c).size() != xs.back()) return false;
        out.assign(g.constant(c).floats().begin(), g.constant(c).floats().end());
        return true;
      };
      if (!per_channel(1, ln.gamma) || !per_channel(2, ln.beta)) return std::nullopt;
      ln.eps = mean.attr<LayerNormAttrs>().epsilon;
      return ln;
    }
    if (!last_axis_mean(mean) || side.count(mean.inputs[0])) return std::nullopt;
    LayerNorm ln;
    ln.x = mean.inputs[0];
    const Shape& xs = g.value(ln.x).shape;
    if (xs.size() != 2 && xs.size() != 3) return std::nullopt;
    const int sub = only_reader(mean.outputs[0]);
    if (sub < 0 || node(sub).op != OpType::kSub || node(sub).inputs[0] != ln.x || node(sub).inputs[1] != mean.outputs[0])
      return std::nullopt;
    const ValueId d = node(sub).outputs[0];
    const std::vector<int>& dr = readers[static_cast<size_t>(d)];
    if (dr.size() != 2 || is_output[static_cast<size_t>(d)]) return std::nullopt;
    const int pow = node(dr[0]).op == OpType::kPow ? dr[0] : dr[1], div = pow == dr[0] ? dr[1] : dr[0];
    if (node(pow).op != OpType::kPow || node(pow).inputs[0] != d || scalar(node(pow).inputs[1]) != 2.0f) return std::nullopt;
    const int var = only_reader(node(pow).outputs[0]);
    if (var < 0 || !last_axis_mean(node(var))) return std::nullopt;
    const int add = only_reader(node(var).outputs[0]);
    if (add < 0 || node(add).op != OpType::kAdd) return std::nullopt;
    std::optional<float> eps = scalar(other_operand(node(add), node(var).outputs[0]));
    const int sqrt = eps ? only_reader(node(add).outputs[0]) : -1;
    if (sqrt < 0 || node(sqrt).op != OpType::kSqrt) return std::nullopt;
    if (only_reader(node(sqrt).outputs[0]) != div || node(div).op != OpType::kDiv || node(div).inputs[0] != d ||
        node(div).inputs[1] != node(sqrt).outputs[0])
      return std::nullopt;
    ln.eps = *eps;
    chain = {sub, pow, var, add, sqrt, div};
    ln.result = node(div).outputs[0];
    // The affine part: constants of one value per channel.
    auto per_channel = [&](int k, OpType op, std::vector<float>& out) {
      if (k < 0 || node(k).op != op) return false;
      const ValueId c = other_operand(node(k), ln.result);
      if (c == kNoValue || !g.is_constant(c) || g.constant(c).dtype() != DataType::kFloat32 || g.constant(c).size() != xs.back())
        return false;
      out.assign(g.constant(c).floats().begin(), g.constant(c).floats().end());
      chain.push_back(k);
      ln.result = node(k).outputs[0];
      return true;
    };
    if (per_channel(only_reader(ln.result), OpType::kMul, ln.gamma)) per_channel(only_reader(ln.result), OpType::kAdd, ln.beta);
    if (g.value(ln.result).shape != xs || side.count(ln.result)) return std::nullopt;
    return ln;
  }

  void find_layer_norms() {
    for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
      std::vector<int> chain;
      std::optional<LayerNorm> ln = match_layer_norm(i, chain);
      if (!ln) continue;
      layer_norms[i] = *ln;
      generic.erase(i);
      for (int k : chain) {
        fused.insert(k);
        generic.erase(k);
      }
    }
  }

  void want_float(ValueId v) { need_float[static_cast<size_t>(v)] = true; }
  void want_codes(ValueId v, const Format& f, int64_t border) {
    v = resolve(v);
    auto& list = need_codes[static_cast<size_t>(v)];
    for (auto& [format, b] : list)
      if (format == f) {
        b = std::max(b, border);
        return;
      }
    list.emplace_back(f, border);
  }

  static int64_t conv_border(const ConvAttrs& a) {
    int64_t b = 0;
    for (int64_t p : a.pads) b = std::max(b, p);
    return b;
  }

  // A squeeze-excitation's Mul, images [N, C, H, W] times a gate [N, C, 1, 1] (either order), both
  // computed batches of images: which input is the images, or -1.
  int gate_image(const Node& n) const {
    if (n.op != OpType::kMul || n.inputs.size() != 2) return -1;
    for (ValueId v : n.inputs)
      if (v == kNoValue || g.is_constant(v) || side.count(v)) return -1;
    if (side.count(n.outputs[0])) return -1;
    const Shape& s0 = g.value(n.inputs[0]).shape;
    const Shape& s1 = g.value(n.inputs[1]).shape;
    const Shape& so = g.value(n.outputs[0]).shape;
    if (s0.size() != 4 || s1.size() != 4 || s0[1] != s1[1]) return -1;
    if (s1[2] == 1 && s1[3] == 1 && s0 == so) return 0;
    if (s0[2] == 1 && s0[3] == 1 && s1 == so) return 1;
    return -1;
  }

  // Which forms each value is needed in, from the outputs back to the input.
  void propagate() {
    need_float.assign(g.values.size(), false);
    need_codes.assign(g.values.size(), {});
    for (ValueId v : g.outputs) want_float(v);
    for (int i = static_cast<int>(g.nodes.size()) - 1; i >= 0; --i) {
      if (fused.count(i)) continue;
      const Node& n = g.nodes[static_cast<size_t>(i)];
      ValueId out = n.outputs[0];
      if (absorbed.count(i)) continue;
      if (auto ln = layer_norms.find(i); ln != layer_norms.end()) {
        want_float(ln->second.x);  // (its static codes are written by the step itself)
        continue;
      }
      if (whole.count(i)) {  // float in (its FakeQuantize's input), float out
        ValueId x = whole_input(n);
        if (!side.count(x)) want_float(x);
        if (!need_codes[static_cast<size_t>(out)].empty()) want_float(out);  // for a quantize step
        continue;
      }
      if (auto it = layer_of.find(n.name); it != layer_of.end()) {
        const IntLayer& L = *it->second;
        // Its result's forms are written by its epilogue; a fused Add's other operand is read in float.
        if (auto f = fusion.find(i); f != fusion.end() && f->second.add >= 0) want_float(f->second.residual);
        want_codes(n.inputs[0], format_of(L.input), L.gemm ? 0 : conv_border(L.conv));
      } else if (n.op == OpType::kFakeQuantize && !generic.count(i)) {
        const FakeQuantAttrs& a = n.attr<FakeQuantAttrs>();
        if (a.dynamic) want_float(n.inputs[0]);  // quantized per image by a step of its own
      } else if (is_passthrough(n.op) && !generic.count(i)) {
        std::vector<ValueId> ins = {n.inputs[0]};
        if (n.op == OpType::kConcat) ins = n.inputs;
        for (ValueId x : ins) {
          if (need_float[static_cast<size_t>(out)]) want_float(x);
          for (auto& [format, b] : need_codes[static_cast<size_t>(out)]) want_codes(x, format, 0);
        }
      } else {  // float operations: float in, float out, codes by a quantize step after
        for (size_t k = 0; k < (generic.count(i) || n.op == OpType::kAdd ? n.inputs.size() : 1); ++k)
          if (n.inputs[k] != kNoValue && !g.is_constant(n.inputs[k]) && !side.count(n.inputs[k])) want_float(n.inputs[k]);
        if (!need_codes[static_cast<size_t>(out)].empty() && gate_image(n) < 0) want_float(out);  // for a quantize step
      }
    }
  }

  Buffer* make_buffer(ValueId v, bool codes, const Format& f, int64_t border) {
    auto b = std::make_unique<Buffer>();
    b->name = g.value(v).name + (codes ? " (" + describe(f) + ")" : " (f32)");
    b->codes = codes;
    b->format = f;
    geometry(v, b->h, b->w, b->c);
    b->pad = codes ? border : 0;
    b->stride = codes ? round_up(b->c, kQStep) : b->c;
    P.buffers.push_back(std::move(b));
    return P.buffers.back().get();
  }

  Buffer* float_buffer(ValueId v) {
    auto it = float_buffers.find(v);
    if (it != float_buffers.end()) return it->second;
    return float_buffers[v] = make_buffer(v, false, {}, 0);
  }
  // The codes buffer of (value, format): made on first use with the largest border asked for.
  Buffer* code_buffer(ValueId v, const Format& f) {
    v = resolve(v);
    const auto& list = need_codes[static_cast<size_t>(v)];
    for (size_t k = 0; k < list.size(); ++k)
      if (list[k].first == f) {
        auto key = std::make_pair(v, k);
        auto it = code_buffers.find(key);
        if (it != code_buffers.end()) return it->second;
        return code_buffers[key] = make_buffer(v, true, f, list[k].second);
      }
    throw Error("integer engine: no codes planned for '" + g.value(v).name + "'");
  }
  // Every form of v that its readers need, as (codes?, buffer).
  std::vector<Buffer*> forms(ValueId v) {
    std::vector<Buffer*> out;
    if (need_float[static_cast<size_t>(v)]) out.push_back(float_buffer(v));
    for (auto& [format, b] : need_codes[static_cast<size_t>(v)])
      if (!format.dynamic) out.push_back(code_buffer(v, format));
    return out;
  }

  void add_step(std::string name, std::string what, std::function<void(int64_t)> run) {
    P.steps.push_back({std::move(name), std::move(what), std::move(run), 0, 0});
  }

  // Quantize steps for the static codes of a value produced in float.
  void quantize_after(ValueId v, const std::string& node) {
    for (auto& [format, b] : need_codes[static_cast<size_t>(v)]) {
      if (format.dynamic) continue;
      Buffer* in = float_buffer(v);
      Buffer* out = code_buffer(v, format);
      add_step(node + "/quantize", "quantize " + describe(format),
               [in, out, pool = P.pool](int64_t images) {
                 out->allocate(images);
                 quantize_buffer(*in, *out, images, pool);
               });
    }
  }

  void build_input() {
    ValueId v = g.inputs[0];
    P.input_name = g.value(v).name;
    P.input_shape.assign(g.value(v).shape.begin() + 1, g.value(v).shape.end());
    for (Buffer* b : forms(v)) {
      const bool nchw = g.value(v).shape.size() == 4;  // [N, C] and [N, T, D] are already pixel-major
      add_step(P.input_name, b->codes ? "quantize input " + describe(b->format) : "input to NHWC",
               [b, nchw, impl = &P](int64_t images) {
                 b->allocate(images);
                 const float* x = impl->input->data<float>();
                 const int64_t hw = b->h * b->w, per_image = b->c * hw;
                 if (!nchw) {
                   parallel(impl->pool, images, [&](int64_t begin, int64_t end) {
                     for (int64_t n = begin; n < end; ++n) {
                       const float* xn = x + n * per_image;
                       if (b->codes) quantize_pixels(xn, b->c, hw, b->c, b->format.scale, b->format, b->code_at(n, 0, 0), b->stride);
                       else std::memcpy(b->float_at(n, 0, 0), xn, static_cast<size_t>(per_image) * sizeof(float));
                     }
                   });
                   return;
                 }
                 // Image rows over the pool only for images far beyond 224 x 224 x 3: the step runs at
                 // memory speed, and splitting it cost more than it saved (0.06 ms on one core).
                 ThreadPool* pool = worth_both_cores(images * per_image * 16) ? impl->pool : nullptr;
                 parallel(pool, images * b->h, [&](int64_t begin, int64_t end) {
                   if (!b->codes) {
                     for (int64_t r = begin; r < end; ++r) {  // NCHW row to NHWC
                       const int64_t n = r / b->h, y = r % b->h;
                       const float* xn = x + n * per_image + y * b->w;
                       float* dst = b->float_at(n, y, 0);
                       for (int64_t c = 0; c < b->c; ++c)
                         for (int64_t px = 0; px < b->w; ++px) dst[px * b->c + c] = xn[c * hw + px];
                     }
                     return;
                   }
                   // The rows of one image this range holds, each channel's run of them quantized
                   // in one call where it lies (contiguous), then the bytes moved to NHWC.
                   std::vector<uint8_t> plane;
                   for (int64_t r = begin; r < end;) {
                     const int64_t n = r / b->h, y0 = r % b->h, rows = std::min(b->h - y0, end - r), run = rows * b->w;
                     plane.resize(static_cast<size_t>(run * b->c));
                     for (int64_t c = 0; c < b->c; ++c)
                       quantize_run(x + n * per_image + c * hw + y0 * b->w, run, b->format.scale, b->format, plane.data() + c * run);
                     for (int64_t y = 0; y < rows; ++y) {
                       uint8_t* dst = b->code_at(n, y0 + y, 0);
                       const uint8_t* src = plane.data() + y * b->w;
                       if (b->c == 3 && b->stride == 4) {  // RGB: one 32-bit word per pixel, its padding byte kept
                         for (int64_t px = 0; px < b->w; ++px) {
                           uint32_t word;
                           std::memcpy(&word, dst + px * 4, 4);
                           word = (word & 0xFF000000u) | src[px] | static_cast<uint32_t>(src[run + px]) << 8 |
                                  static_cast<uint32_t>(src[2 * run + px]) << 16;
                           std::memcpy(dst + px * 4, &word, 4);
                         }
                         continue;
                       }
                       for (int64_t px = 0; px < b->w; ++px)
                         for (int64_t c = 0; c < b->c; ++c) dst[px * b->stride + c] = src[c * run + px];
                     }
                     r += rows;
                   }
                 });
               });
    }
  }

  void build_layer(int i) {
    const Node& n = g.nodes[static_cast<size_t>(i)];
    const IntLayer& L = *layer_of.at(n.name);
    auto f = fusion.find(i);
    ValueId result = f == fusion.end() ? n.outputs[0] : f->second.result;
    auto s = std::make_shared<LayerStep>();
    s->L = &L;
    s->in = code_buffer(n.inputs[0], format_of(L.input));
    s->panels = &P.panels;
    s->channels = L.in;
    if (need_float[static_cast<size_t>(result)]) s->out_float = float_buffer(result);
    for (auto& [format, b] : need_codes[static_cast<size_t>(result)])
      if (!format.dynamic) s->out_codes.push_back(code_buffer(result, format));
    std::string fused_note;
    if (f != fusion.end() && f->second.add < 0) {
      s->act = f->second.function;
      s->act_alpha = f->second.alpha;
      s->act_beta = f->second.beta;
      static const char* const kNames[] = {"", "HardSigmoid", "HardSwish", "Sigmoid", "SiLU", "GELU", "GELU"};
      fused_note = std::string(" + ") + kNames[static_cast<int>(f->second.function)];
    } else if (f != fusion.end()) {
      s->residual = float_buffer(f->second.residual);
      fused_note = " + Add";
      if (f->second.act >= 0) {
        const Node& act = g.nodes[static_cast<size_t>(f->second.act)];
        if (act.op == OpType::kRelu) s->lo2 = 0.0f;
        else s->lo2 = act.attr<ClipAttrs>().lo, s->hi2 = act.attr<ClipAttrs>().hi;
        fused_note += act.op == OpType::kRelu ? " + Relu" : " + Clip";
      }
    }
    if (L.gemm) {
      s->mode = LayerStep::Mode::kGemm;
    } else {
      Shape in_shape = {1, s->in->c, s->in->h, s->in->w};
      s->cs = ops::conv_shape(L.conv, in_shape, L.weight_shape);
      // A 1x1 convolution of a 1x1 map (a squeeze-excitation's) is a Gemm over the images: the
      // GEMV kernels stream its weights instead of a one-column implicit-GEMM tile.
      const bool one_by_one = L.groups == 1 && L.taps == 1 && s->in->h == 1 && s->in->w == 1 && s->in->pad == 0 &&
                              s->cs.out_h() == 1 && s->cs.out_w() == 1;
      if (one_by_one) s->mode = LayerStep::Mode::kGemm;
      else if (L.depthwise()) s->mode = LayerStep::Mode::kDepthwise;
      else if (L.in % kQStep == 0) s->mode = LayerStep::Mode::kImplicit;
      else if (L.groups == 1) {
        s->mode = LayerStep::Mode::kImplicit;
        pad_channels(*s);
      } else s->mode = LayerStep::Mode::kGather;
    }
    std::string weights = L.weights_kind();
    if (s->mode == LayerStep::Mode::kDepthwise) weights = "int8";
    std::string isa = s->mode == LayerStep::Mode::kImplicit ? kernels::qgemm_indirect_kernel_name()
                                                            : kernels::qgemm_kernel_name();
    std::string what = weights + " " + mode_name(s->mode) + " " + isa + fused_note;
    // Images run one at a time (one column) through a Gemm step: ternary_qgemm's table kernel.
    if (const auto& t = L.terms[0].groups[0].ternary; s->mode == LayerStep::Mode::kGemm && t && kernels::ternary_uses_lut(*t, 1))
      what += " (lookup table)";
    if (L.terms.size() > 1) what += " (terms " + std::to_string(L.active) + "/" + std::to_string(L.terms.size()) + ")";
    P.kernels[L.node] = what;
    if (s->mode == LayerStep::Mode::kDepthwise && s->out_float) depthwise_writer[result] = s.get();
    ThreadPool* pool = P.pool;
    add_step(L.node, what, [s, pool](int64_t images) {
      if (s->mode == LayerStep::Mode::kGemm) run_gemm(*s, images, pool);
      else run_conv(*s, images, pool);
    });
  }

  // A layer on a whole float tensor (see `whole`): its input converted from a batch of NHWC
  // images when it is one, its output kept whole or written back as one.
  void build_whole_layer(int i) {
    const Node& n = g.nodes[static_cast<size_t>(i)];
    const IntLayer& L = *layer_of.at(n.name);
    const ValueId x = whole_input(n), out = n.outputs[0];
    Tensor* in_whole = side.count(x) ? side.at(x) : nullptr;
    Buffer* in = in_whole ? nullptr : float_buffer(x);
    const Shape in_shape = g.value(x).shape;
    Tensor* out_whole = side.count(out) ? side.at(out) : nullptr;
    Buffer* o = out_whole ? nullptr : float_buffer(out);
    const Shape out_graph_shape = g.value(out).shape;
    const std::string what = L.weights_kind() + " whole-tensor " + kernels::qgemm_kernel_name() +
                             (L.input.per_token ? " (per-token scales)" : "");
    P.kernels[L.node] = what;
    auto decoded = std::make_shared<DecodedPanels>();  // this layer's, across runs
    add_step(L.node, what, [&L, in_whole, in, in_shape, out_whole, o, out_graph_shape, decoded, impl = &P](int64_t images) {
      Tensor converted;
      if (in) converted = buffer_to_tensor(*in, in_shape, images);
      const Tensor& xt = in ? converted : *in_whole;
      // The output's shape: the input's rows, L.out columns (a Conv's from its geometry).
      Shape shape = out_graph_shape;
      if (L.gemm) {
        shape = xt.shape();
        shape.back() = L.out;
      } else {
        shape[0] = xt.dim(0);
      }
      const int64_t macs = xt.size() / std::max<int64_t>(L.depth(), 1) * L.out * L.depth() / std::max<int64_t>(L.groups, 1);
      Tensor y = run_layer(L, xt, shape, impl->scratch, worth_both_cores(macs) ? impl->pool : nullptr, decoded.get());
      if (out_whole) {
        *out_whole = std::move(y);
      } else {
        o->allocate(images);
        tensor_to_buffer(y, *o, images);
      }
    });
    if (!out_whole) quantize_after(out, n.name);
  }

  // A LayerNorm over each token's channels, as its nodes compute it: the mean and the variance
  // summed in double (four running sums: the float results equal the nodes' one running sum
  // but where a sum of 2^29 ulps of its terms separates them), d = x - mean, d / sqrt(var + eps),
  // times gamma plus beta, each rounded to float as the nodes round.
  void build_layer_norm(int i) {
    const LayerNorm ln = layer_norms.at(i);
    Buffer* x = float_buffer(ln.x);
    Buffer* o = need_float[static_cast<size_t>(ln.result)] ? float_buffer(ln.result) : nullptr;
    std::vector<Buffer*> codes;  // the next layers' static codes, written row by row as well
    for (auto& [format, b] : need_codes[static_cast<size_t>(ln.result)])
      if (!format.dynamic) codes.push_back(code_buffer(ln.result, format));
    const std::string what = ln.op ? "LayerNorm on f32 (LayerNormalization, one pass)"
                                   : "LayerNorm on f32 (" + std::to_string(ln.gamma.empty() ? 7 : ln.beta.empty() ? 8 : 9) +
                                         " nodes in one pass)";
    add_step(g.nodes[static_cast<size_t>(i)].name, what + (codes.empty() ? "" : " + quantize"), [x, o, codes, ln, pool = P.pool](int64_t images) {
      if (o) o->allocate(images);
      for (Buffer* b : codes) b->allocate(images);
      const int64_t tokens = x->h * x->w, channels = x->c;
      parallel(worth_both_cores(images * tokens * channels * 128) ? pool : nullptr, images * tokens, [&](int64_t begin, int64_t end) {
        // Up to kBlock rows of one image at a time: their values, then their codes for each
        // reader in one epilogue call (quantize_buffer's rounding).
        constexpr int64_t kBlock = 32;
        std::vector<float> scratch(o ? 0 : static_cast<size_t>(kBlock * channels));
        for (int64_t row = begin; row < end;) {
          const int64_t n = row / tokens, t0 = row % tokens, count = std::min({kBlock, tokens - t0, end - row});
          float* y0 = o ? o->float_at(n, 0, t0) : scratch.data();
          const int64_t y_stride = o ? o->stride : channels;
          if (ln.op) {  // the LayerNormalization operator's own statistics and arithmetic
            for (int64_t t = 0; t < count; ++t) {
              const float* xr = x->float_at(n, 0, t0 + t);
              float* yr = y0 + t * y_stride;
              const ops::RowMoments m = ops::layer_norm_moments(xr, channels, ln.eps);
              for (int64_t j = 0; j < channels; ++j) {
                const float v = (xr[j] - m.mean) * m.inv_std * ln.gamma[static_cast<size_t>(j)];
                yr[j] = ln.beta.empty() ? v : v + ln.beta[static_cast<size_t>(j)];
              }
            }
          } else {  // the exporters' nodes, rounded as the FP32 operators round them
            kernels::layer_norm_rows(x->float_at(n, 0, t0), x->stride, y0, y_stride, count, channels, ln.eps,
                                     ln.gamma.empty() ? nullptr : ln.gamma.data(), ln.beta.empty() ? nullptr : ln.beta.data());
          }
          for (Buffer* b : codes)
            quantize_pixels(y0, y_stride, count, channels, b->format.scale, b->format, b->code_at(n, 0, t0), b->stride);
          row += count;
        }
      });
    });
  }

  void build_passthrough(int i) {
    const Node& n = g.nodes[static_cast<size_t>(i)];
    ValueId out = n.outputs[0];
    std::vector<std::pair<std::vector<Buffer*>, Buffer*>> pairs;  // (inputs, output) per form
    if (need_float[static_cast<size_t>(out)]) {
      std::vector<Buffer*> ins;
      for (ValueId x : n.op == OpType::kConcat ? n.inputs : std::vector<ValueId>{n.inputs[0]}) ins.push_back(float_buffer(x));
      pairs.emplace_back(ins, float_buffer(out));
    }
    for (auto& [format, b] : need_codes[static_cast<size_t>(out)]) {
      if (format.dynamic) continue;
      std::vector<Buffer*> ins;
      for (ValueId x : n.op == OpType::kConcat ? n.inputs : std::vector<ValueId>{n.inputs[0]}) ins.push_back(code_buffer(x, format));
      pairs.emplace_back(ins, code_buffer(out, format));
    }
    for (auto& pair : pairs) {
      std::vector<Buffer*> ins = pair.first;  // named copies: clang 14 cannot capture structured bindings
      Buffer* o = pair.second;
      const bool codes = o->codes;
      std::function<void(int64_t)> run;
      ThreadPool* pool = P.pool;
      Buffer* in = ins[0];
      switch (n.op) {
        case OpType::kMaxPool: {
          PoolAttrs a = n.attr<PoolAttrs>();
          run = [in, o, a, codes, pool](int64_t images) {
            if (codes) max_pool<uint8_t>(*in, *o, a, images, pool);
            else max_pool<float>(*in, *o, a, images, pool);
          };
          break;
        }
        case OpType::kFlatten:
        case OpType::kReshape:
          run = [in, o, codes](int64_t images) {
            if (codes) flatten<uint8_t>(*in, *o, images);
            else flatten<float>(*in, *o, images);
          };
          break;
        case OpType::kConcat:
          run = [ins, o, codes](int64_t images) mutable {
            if (codes) concat<uint8_t>(ins, *o, images);
            else concat<float>(ins, *o, images);
          };
          break;
        default: {  // Relu, Clip, Identity
          float lo = -INFINITY, hi = INFINITY;
          if (n.op == OpType::kRelu) lo = 0.0f;
          if (n.op == OpType::kClip) lo = n.attr<ClipAttrs>().lo, hi = n.attr<ClipAttrs>().hi;
          run = [in, o, lo, hi, codes](int64_t images) {
            if (codes) clamp_copy<uint8_t>(*in, *o, lo, hi, images);
            else clamp_copy<float>(*in, *o, lo, hi, images);
          };
        }
      }
      add_step(n.name, to_string(n.op) + (codes ? " on codes" : " on f32"), [o, run](int64_t images) {
        o->allocate(images);
        run(images);
      });
    }
  }

  void build_float_op(int i) {
    const Node& n = g.nodes[static_cast<size_t>(i)];
    ValueId out = n.outputs[0];
    Buffer* o = float_buffer(out);
    Buffer* a = float_buffer(n.inputs[0]);
    ThreadPool* pool = P.pool;
    if (n.op == OpType::kAdd) {
      Buffer* b = float_buffer(n.inputs[1]);
      add_step(n.name, "Add on f32", [a, b, o, pool](int64_t images) {
        o->allocate(images);
        const int64_t count = images * o->image_elements();
        parallel(pool, count, [&](int64_t begin, int64_t end) {
          for (int64_t k = begin; k < end; ++k) o->f[static_cast<size_t>(k)] = a->f[static_cast<size_t>(k)] + b->f[static_cast<size_t>(k)];
        }, 1 << 14);
      });
    } else if (auto w = depthwise_writer.find(n.inputs[0]); w != depthwise_writer.end() && !w->second->pool_out) {
      // GlobalAveragePool / ReduceMean over H and W of a depthwise layer's output: summed by that
      // layer row by row as it writes them (run_conv), not read again here.
      w->second->pool_out = o;
      add_step(n.name, to_string(n.op) + " on f32 (summed in " + w->second->L->node + "'s epilogue)", [](int64_t) {});
    } else {  // GlobalAveragePool, ReduceMean over H and W
      // Blocks of 64 channels of one image per work item, so that both cores share an image.
      add_step(n.name, to_string(n.op) + " on f32", [a, o, pool](int64_t images) {
        o->allocate(images);
        const float inv = 1.0f / static_cast<float>(a->h * a->w);
        constexpr int64_t kBlock = 64;
        const int64_t blocks = (a->c + kBlock - 1) / kBlock;
        parallel(pool, images * blocks, [&](int64_t begin, int64_t end) {
          for (int64_t item = begin; item < end; ++item) {
            const int64_t k = item / blocks, c0 = item % blocks * kBlock, count = std::min(kBlock, a->c - c0);
            float* dst = o->float_at(k, 0, 0) + c0;
            std::fill(dst, dst + count, 0.0f);
            for (int64_t y = 0; y < a->h; ++y)
              for (int64_t x = 0; x < a->w; ++x) {
                const float* src = a->float_at(k, y, x) + c0;
                for (int64_t c = 0; c < count; ++c) dst[c] += src[c];
              }
            for (int64_t c = 0; c < count; ++c) dst[c] *= inv;
          }
        });
      });
    }
    quantize_after(out, n.name);
  }

  // A node without an integer form: its FP32 kernel on NCHW copies of its float inputs (the
  // constant ones copied at compile time: the engine releases the graph's), written back NHWC.
  void build_generic(int i) {
    const Node& n = g.nodes[static_cast<size_t>(i)];
    struct Input {
      Buffer* buffer = nullptr;  // a computed batch of images, or
      const Tensor* whole = nullptr;  // a computed value kept whole, or
      std::shared_ptr<const Tensor> constant;  // a constant, or none of them (absent)
      Shape shape;  // a buffer's graph shape
    };
    std::vector<Input> ins(n.inputs.size());
    for (size_t k = 0; k < n.inputs.size(); ++k) {
      ValueId v = n.inputs[k];
      if (v == kNoValue) continue;
      if (g.is_constant(v)) ins[k].constant = std::make_shared<const Tensor>(g.constant(v));
      else if (side.count(v)) ins[k].whole = side.at(v);
      else ins[k].buffer = float_buffer(v), ins[k].shape = g.value(v).shape;
    }
    ValueId out = n.outputs[0];
    Tensor* whole = side.count(out) ? side.at(out) : nullptr;
    Buffer* o = whole ? nullptr : float_buffer(out);
    // Element by element, without broadcasting (but of scalar constants): the buffers' own layout
    // serves, as one flat run of values, with no NCHW copies.
    static const std::set<OpType> elementwise = {
        OpType::kRelu, OpType::kClip, OpType::kLeakyRelu, OpType::kSigmoid, OpType::kTanh, OpType::kAdd, OpType::kSub,
        OpType::kMul, OpType::kDiv, OpType::kHardSigmoid, OpType::kSqrt, OpType::kErf, OpType::kPow, OpType::kExp,
        OpType::kLog, OpType::kReciprocal, OpType::kFloor, OpType::kCeil, OpType::kSoftplus, OpType::kNeg, OpType::kAbs,
        OpType::kMax, OpType::kMin};
    bool flat = o && (elementwise.count(n.op) ||
                      (n.op == OpType::kFakeQuantize && !n.attr<FakeQuantAttrs>().dynamic));
    for (size_t k = 0; k < ins.size() && flat; ++k) {
      if (ins[k].whole) flat = false;
      else if (ins[k].constant) flat = ins[k].constant->size() == 1;
      else if (ins[k].buffer) flat = g.value(n.inputs[k]).shape == g.value(out).shape;
    }
    // A squeeze-excitation's Mul: images [N, C, H, W] times a gate [N, C, 1, 1], on NHWC pixels,
    // made into the next layers' static codes in the same pass (by the epilogue), and into float
    // only where a reader needs it.
    if (const int image = o ? gate_image(n) : -1; image >= 0) {
      Buffer* x = ins[static_cast<size_t>(image)].buffer;
      Buffer* gate = ins[static_cast<size_t>(1 - image)].buffer;
      Buffer* fo = need_float[static_cast<size_t>(out)] ? o : nullptr;
      std::vector<Buffer*> codes;
      for (auto& [format, b] : need_codes[static_cast<size_t>(out)])
        if (!format.dynamic) codes.push_back(code_buffer(out, format));
      add_step(n.name, "Mul by a per-channel gate on f32" + std::string(codes.empty() ? "" : " + quantize"),
               [x, gate, fo, codes, pool = P.pool](int64_t images) {
        if (fo) fo->allocate(images);
        for (Buffer* b : codes) b->allocate(images);
        parallel(pool, images * x->h, [&](int64_t begin, int64_t end) {
          for (int64_t row = begin; row < end; ++row) {
            const int64_t k = row / x->h, y = row % x->h;
            const float* gk = gate->float_at(k, 0, 0);
            float* dst = fo ? fo->float_at(k, y, 0) : nullptr;
            if (codes.empty() && fo)
              quantize_pixels(x->float_at(k, y, 0), x->stride, x->w, x->c, 1.0f, Format{}, nullptr, 0, gk, dst, fo->stride);
            for (Buffer* b : codes) {
              quantize_pixels(x->float_at(k, y, 0), x->stride, x->w, x->c, b->format.scale, b->format, b->code_at(k, y, 0),
                              b->stride, gk, dst, fo ? fo->stride : 0);
              dst = nullptr;  // written once
            }
          }
        });
      });
      return;
    }
    if (flat) {
      add_step(n.name, to_string(n.op) + " on f32 (FP32 kernel, element-wise)",
               [ins, o, runner = std::make_shared<NodeRunner>(n, g.source), pool = P.pool](int64_t images) {
                 o->allocate(images);
                 const int64_t count = images * o->image_elements();
                 std::vector<Tensor> flat_in(ins.size());
                 std::vector<const Tensor*> args(ins.size(), nullptr);
                 for (size_t k = 0; k < ins.size(); ++k) {
                   if (ins[k].constant) {
                     args[k] = ins[k].constant.get();  // one value: broadcasts to any shape
                   } else if (ins[k].buffer) {
                     flat_in[k] = Tensor::uninitialized(DataType::kFloat32, Shape{count});
                     std::memcpy(flat_in[k].data<float>(), ins[k].buffer->f.data(), static_cast<size_t>(count) * sizeof(float));
                     args[k] = &flat_in[k];
                   }
                 }
                 std::vector<Tensor> y = runner->run(args, images, worth_threads(args) ? pool : nullptr);
                 if (y[0].size() != count) throw Error(runner->name() + ": output size differs from the plan");
                 std::memcpy(o->f.data(), y[0].data<float>(), static_cast<size_t>(count) * sizeof(float));
               });
      quantize_after(out, n.name);
      return;
    }
    // Values the batch size alone determines (a Shape, and what is computed from shapes and
    // constants only: the Reshape targets exporters build at run time) are computed once per batch
    // size, not on every run.
    bool by_batch = whole != nullptr;
    for (size_t k = 0; k < n.inputs.size() && by_batch && n.op != OpType::kShape; ++k)
      by_batch = n.inputs[k] == kNoValue || g.is_constant(n.inputs[k]) || batch_only.count(n.inputs[k]);
    if (by_batch) batch_only.insert(out);
    add_step(n.name, to_string(n.op) + " on " + (whole ? "a whole tensor" : "f32") + " (FP32 kernel" + (by_batch ? ", once per batch size)" : ")"),
             [ins, o, whole, by_batch, computed_for = std::make_shared<int64_t>(-1),
              runner = std::make_shared<NodeRunner>(n, g.source), pool = P.pool](int64_t images) {
               if (by_batch && *computed_for == images) return;
               if (o) o->allocate(images);
               std::vector<Tensor> nchw(ins.size());
               std::vector<const Tensor*> args(ins.size(), nullptr);
               for (size_t k = 0; k < ins.size(); ++k) {
                 if (ins[k].constant) args[k] = ins[k].constant.get();
                 if (ins[k].whole) args[k] = ins[k].whole;
                 if (!ins[k].buffer) continue;
                 nchw[k] = buffer_to_tensor(*ins[k].buffer, ins[k].shape, images);
                 args[k] = &nchw[k];
               }
               std::vector<Tensor> y = runner->run(args, images, worth_threads(args) ? pool : nullptr);
               if (whole) *whole = std::move(y[0]);
               else tensor_to_buffer(y[0], *o, images);
               *computed_for = images;
             });
    if (!whole) quantize_after(out, n.name);
  }

  void build_dynamic_quantize(int i) {
    const Node& n = g.nodes[static_cast<size_t>(i)];
    Format f = format_of(n.attr<FakeQuantAttrs>());
    Buffer* in = float_buffer(n.inputs[0]);
    Buffer* out = code_buffer(n.outputs[0], f);
    ThreadPool* pool = P.pool;
    add_step(n.name, "quantize " + describe(f), [in, out, pool](int64_t images) {
      out->allocate(images);
      quantize_buffer(*in, *out, images, pool);
    });
  }

  bool compile() {
    if (!check_supported()) return false;
    find_fusions();
    find_layer_norms();
    propagate();
    build_input();
    for (int i = 0; i < static_cast<int>(g.nodes.size()); ++i) {
      if (fused.count(i)) continue;
      const Node& n = g.nodes[static_cast<size_t>(i)];
      if (absorbed.count(i)) continue;
      if (layer_norms.count(i)) build_layer_norm(i);
      else if (whole.count(i)) build_whole_layer(i);
      else if (layer_of.count(n.name)) build_layer(i);
      else if (generic.count(i)) build_generic(i);
      else if (n.op == OpType::kFakeQuantize) {
        if (n.attr<FakeQuantAttrs>().dynamic) build_dynamic_quantize(i);
      }
      else if (is_passthrough(n.op)) build_passthrough(i);
      else build_float_op(i);
    }
    for (ValueId v : g.outputs) {
      P.outputs.push_back(float_buffer(v));
      P.output_shapes.push_back(g.value(v).shape);
    }
    return true;
  }
};

}  // namespace

std::unique_ptr<Program> Program::compile(const Graph& graph, const std::vector<IntLayer>& layers, ThreadPool* pool,
                                          bool profile, std::string& why_not) {
  std::unique_ptr<Program> p(new Program());
  p->impl_ = std::make_unique<Impl>();
  p->impl_->pool = pool;
  p->impl_->profiling = profile;
  Compiler c(graph, layers, *p->impl_);
  if (!c.compile()) {
    why_not = c.why;
    return nullptr;
  }
  return p;
}

Program::~Program() = default;

std::vector<Tensor> Program::run(std::span<const Tensor> inputs) {
  Impl& P = *impl_;
  // Messages are built only on failure: this runs for every inference.
  if (inputs.size() != 1) throw Error("integer engine: expected 1 input, got " + std::to_string(inputs.size()));
  const Tensor& x = inputs[0];
  if (x.dtype() != DataType::kFloat32) throw Error("input '" + P.input_name + "': expected float32");
  if (!(x.rank() == static_cast<int64_t>(P.input_shape.size()) + 1 &&
        std::equal(P.input_shape.begin(), P.input_shape.end(), x.shape().begin() + 1)))
    throw Error("input '" + P.input_name + "': shape " + to_string(x.shape()) + " does not fit the model's [N," +
                to_string(P.input_shape).substr(1));
  const int64_t images = x.dim(0);
  double need = 0;  // every buffer is held for the whole run
  for (const auto& b : P.buffers)
    need += static_cast<double>(images) * static_cast<double>(b->image_elements()) * (b->codes ? 1.0 : 4.0);
  check_memory(need, "integer engine: a batch of " + std::to_string(images), "activation buffers");
  for (float v : x.floats())
    if (!std::isfinite(v)) throw Error("input '" + P.input_name + "': holds NaN or infinity");
  P.input = &x;
  for (Step& s : P.steps) {
    if (!P.profiling) {
      s.run(images);
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    s.run(images);
    s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    ++s.runs;
  }
  P.input = nullptr;
  std::vector<Tensor> out;
  for (size_t k = 0; k < P.outputs.size(); ++k) {
    Buffer& b = *P.outputs[k];
    Tensor y = buffer_to_tensor(b, P.output_shapes[k], images);
    out.push_back(std::move(y));
  }
  return out;
}

std::vector<NodeProfile> Program::profile() const {
  std::vector<NodeProfile> out;
  if (!impl_->profiling) return out;
  for (const Step& s : impl_->steps) out.push_back({s.name, s.what, s.seconds, s.runs});
  return out;
}

std::string Program::kernel_of(const std::string& node) const {
  auto it = impl_->kernels.find(node);
  return it == impl_->kernels.end() ? "" : it->second;
}

std::vector<std::string> Program::describe() const {
  std::vector<std::string> out;
  for (const Step& s : impl_->steps) out.push_back(s.name + ": " + s.what);
  return out;
}

}  // namespace tern::integer
