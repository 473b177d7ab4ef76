// Integer forms of quantized layers (integer_layers.h).
#include "exec/integer_layers.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "exec/fp32_ops.h"
#include "kernels/int8/requantize.h"
#include "tern/calibration.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::integer {

namespace {

using kernels::kQPanelRows;
using kernels::kQStep;

// The most K steps per block (16, 8, 4, 2 or 1) over which value_of(row, step) is one number
// wherever it is nonzero (0: "no value here").
template <typename F>
int64_t shared_steps(int64_t rows, int64_t steps, F value_of) {
  auto shares = [&](int64_t spu) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < steps; b += spu) {
        int unit = 0;
        for (int64_t s = b; s < std::min(steps, b + spu); ++s) {
          int m = value_of(r, s);
          if (m == 0) continue;
          if (unit == 0) unit = m;
          if (m != unit) return false;
        }
      }
    return true;
  };
  for (int64_t candidate : {16, 8, 4, 2})
    if (candidate <= steps && shares(candidate)) return candidate;
  return shares(1) ? 1 : 0;
}

// Int4 weights at 4 bits: plain codes in [-8, 7] (units folded into the filter step), or int4
// codes times one 7-bit unit per (row, block of steps). nullopt when neither describes w exactly.
std::optional<kernels::Int4Panels> int4_form(const int8_t* w, const int8_t* codes, const uint8_t* units, int64_t rows,
                                              int64_t depth) {
  const int64_t steps = (depth + kQStep - 1) / kQStep;
  bool plain = true;
  for (int64_t i = 0; i < rows * depth; ++i) plain = plain && w[i] >= -8 && w[i] <= 7;
  if (plain) {
    kernels::Int4Panels p(rows, depth, 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < depth; ++k) p.set_code(r, k, w[r * depth + k]);
    return p;
  }
  if (!codes || !units) return std::nullopt;
  for (int64_t i = 0; i < rows * depth; ++i)
    if (codes[i] < -8 || codes[i] > 7) return std::nullopt;
  // The unit of each (row, step): 0 where every code is zero, -1 where two differ.
  std::vector<int> unit(static_cast<size_t>(rows * steps), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) {
      if (codes[r * depth + k] == 0) continue;
      int& u = unit[static_cast<size_t>(r * steps + k / kQStep)];
      int v = units[r * depth + k];
      if (u == 0) u = v;
      else if (u != v) u = -1;
    }
  for (int u : unit)
    if (u < 0 || u > 127) return std::nullopt;
  const int64_t spu = shared_steps(rows, steps, [&](int64_t r, int64_t s) { return unit[static_cast<size_t>(r * steps + s)]; });
  if (spu == 0) return std::nullopt;
  kernels::Int4Panels p(rows, depth, spu);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < steps; ++s)
      if (int u = unit[static_cast<size_t>(r * steps + s)]) p.set_unit(r, s, u);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k)
      if (codes[r * depth + k] != 0) p.set_code(r, k, codes[r * depth + k]);
  return p;
}

}  // namespace

// (integer_layers.h) Also what `tern export` writes as a layer's int8 weights.
std::optional<std::vector<int8_t>> term_integer_weights(const quant::QuantizedLayer& l, const quant::QuantizedWeights& q,
                                                        std::vector<float>& step, std::string& why,
                                                        std::vector<uint8_t>* units) {
  using namespace quant;
  if (l.config.log_scales) {
    why = "logarithmic group scales";
    return std::nullopt;
  }
  const WeightGrouping& g = q.grouping;
  const int64_t out = g.out, in = g.in, taps = g.taps;
  const bool two_level = !q.filter_steps.empty();
  step.assign(static_cast<size_t>(out), 0.0f);
  std::vector<int8_t> w(static_cast<size_t>(out * in * taps));
  if (units) units->assign(w.size(), 1);
  for (int64_t o = 0; o < out; ++o) {
    const ScalePair& first = q.scales[static_cast<size_t>(g.group_of(o, 0, 0))];
    step[static_cast<size_t>(o)] = two_level ? q.filter_steps[static_cast<size_t>(o)] : first.positive;
    for (int64_t c = 0; c < in; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        const ScalePair& s = q.scales[static_cast<size_t>(g.group_of(o, c, t))];
        int code = q.codes[static_cast<size_t>((o * in + c) * taps + t)];
        int value = code;
        if (two_level) {
          float st = q.filter_steps[static_cast<size_t>(o)];
          int unit = scale_unit(code >= 0 ? s.positive : s.negative, st, false);
          value = code * unit;
          if (units) (*units)[static_cast<size_t>((o * taps + t) * in + c)] = static_cast<uint8_t>(std::clamp(unit, 0, 255));
        } else if (s.positive != first.positive || s.negative != first.positive) {
          why = s.positive != s.negative ? "asymmetric float32 scales" : "float32 scales per group";
          return std::nullopt;
        }
        if (value < -127 || value > 127) {
          why = "codes times group units exceed int8";
          return std::nullopt;
        }
        w[static_cast<size_t>((o * taps + t) * in + c)] = static_cast<int8_t>(value);  // tap-major
      }
  }
  return w;
}

TermGroup make_term_group(const int8_t* w, int64_t rows, int64_t depth, bool int4, const int8_t* codes,
                          const uint8_t* units) {
  TermGroup tg;
  const int64_t steps = (depth + kQStep - 1) / kQStep;
  // The magnitude of each (row, step)'s nonzero weights: 0 when all are zero, -1 when they differ
  // (then the layer needs dense int8 panels).
  std::vector<int> magnitude(static_cast<size_t>(rows * steps), 0);
  bool ternary = true;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) {
      int v = std::abs(static_cast<int>(w[r * depth + k]));
      int& m = magnitude[static_cast<size_t>(r * steps + k / kQStep)];
      if (v == 0) continue;
      if (m == 0) m = v;
      if (m != v) ternary = false;
    }
  tg.row_sums.assign(static_cast<size_t>((rows + kQPanelRows - 1) / kQPanelRows * kQPanelRows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) tg.row_sums[static_cast<size_t>(r)] += w[r * depth + k];
  if (!ternary) {
    if (int4) tg.int4 = int4_form(w, codes, units, rows, depth);
    if (!tg.int4) tg.dense = kernels::QPackedWeights::pack(w, rows, depth, depth);
    return tg;
  }
  // The most steps that share one unit everywhere (groups of N = 4 * that along K).
  auto shares = [&](int64_t spu) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < steps; b += spu) {
        int unit = 0;
        for (int64_t s = b; s < std::min(steps, b + spu); ++s) {
          int m = magnitude[static_cast<size_t>(r * steps + s)];
          if (m == 0) continue;
          if (unit == 0) unit = m;
          if (m != unit) return false;
        }
      }
    return true;
  };
  int64_t spu = 1;
  for (int64_t candidate : {16, 8, 4, 2})
    if (candidate <= steps && shares(candidate)) {
      spu = candidate;
      break;
    }
  kernels::TernaryPanels panels(rows, depth, spu);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) {
      int v = w[r * depth + k];
      if (v == 0) continue;
      panels.set_code(r, k, v > 0 ? 1 : -1);
      panels.set_unit(r, k / kQStep, std::abs(v));
    }
  tg.ternary = std::move(panels);
  return tg;
}

std::vector<int8_t> TermGroup::weights() const {
  const int64_t rows = ternary ? ternary->rows() : int4 ? int4->rows() : dense.rows();
  const int64_t depth = ternary ? ternary->depth() : int4 ? int4->depth() : dense.depth();
  const int64_t steps = (depth + kQStep - 1) / kQStep;
  std::vector<int8_t> panel(static_cast<size_t>(panel_bytes()));
  panels(panel.data());
  std::vector<int8_t> w(static_cast<size_t>(rows * depth));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k)
      w[static_cast<size_t>(r * depth + k)] =
          panel[static_cast<size_t>((((r / kQPanelRows) * steps + k / kQStep) * kQPanelRows + r % kQPanelRows) * kQStep + k % kQStep)];
  return w;
}

void TermGroup::panels(int8_t* out) const { panels(out, 0, panel_count()); }

void TermGroup::panels(int8_t* out, int64_t begin, int64_t end) const {
  const int64_t bytes = panel_bytes() / std::max<int64_t>(1, panel_count());  // per panel
  if (ternary) kernels::decode_ternary(*ternary, begin, end, out + begin * bytes);
  else if (int4) kernels::decode_int4(*int4, begin, end, out + begin * bytes);
  else std::memcpy(out + begin * bytes, dense.data() + begin * bytes, static_cast<size_t>((end - begin) * bytes));
}

int64_t TermGroup::panel_count() const { return ternary ? ternary->panels() : int4 ? int4->panels() : dense.panels(); }

int64_t TermGroup::panel_bytes() const {
  const int64_t panels = ternary ? ternary->panels() : int4 ? int4->panels() : dense.panels();
  const int64_t steps = ternary ? ternary->steps() : int4 ? int4->steps() : dense.steps();
  return panels * steps * kQPanelRows * kQStep;
}

void TermGroup::gemm(int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc,
                     std::vector<int8_t>& scratch, ThreadPool* pool) const {
  if (ternary) kernels::ternary_qgemm(*ternary, row_sums.data(), cols, x, x_stride, c, ldc, scratch, pool);
  else if (int4) kernels::int4_qgemm(*int4, row_sums.data(), cols, x, x_stride, c, ldc, scratch, pool);
  else kernels::qgemm(dense, cols, x, x_stride, c, ldc, pool);
}

const char* TermGroup::kind() const { return ternary ? "ternary" : int4 ? "int4" : "int8"; }

std::string IntLayer::weights_kind() const {
  std::string kind;
  for (const IntTerm& t : terms)
    for (const TermGroup& g : t.groups) {
      if (kind.empty()) kind = g.kind();
      else if (kind != g.kind()) return "mixed";
    }
  return kind;
}

std::optional<IntLayer> build_int_layer(const quant::QuantizedLayer& l, const Node& node, const Graph& g,
                                      std::string& why_not) {
  auto fail = [&](std::string why) {
    why_not = std::move(why);
    return std::nullopt;
  };
  if (!l.input) return fail("float32 input");
  if (node.op == OpType::kConv && node.attr<ConvAttrs>().kernel.size() != 2) return fail("not a 2-D convolution");
  IntLayer L;
  L.node = l.node;
  L.gemm = node.op == OpType::kGemm;
  L.input = *l.input;
  L.out = l.out;
  L.taps = l.taps;
  L.groups = L.gemm ? 1 : node.attr<ConvAttrs>().group;
  L.in = l.in;
  if (L.gemm) {
    L.clamp_lo = node.attr<GemmAttrs>().clamp_lo;
    L.clamp_hi = node.attr<GemmAttrs>().clamp_hi;
  } else {
    L.conv = node.attr<ConvAttrs>();
    L.clamp_lo = L.conv.clamp_lo;
    L.clamp_hi = L.conv.clamp_hi;
  }
  L.weight_shape = g.value(node.inputs[1]).shape;
  if (node.inputs.size() > 2 && node.inputs[2] != kNoValue && g.is_constant(node.inputs[2])) {
    const Tensor& b = g.constant(node.inputs[2]);
    L.bias.assign(b.data<float>(), b.data<float>() + b.size());
  }
  const int64_t rows = L.out / L.groups, depth = L.in * L.taps;
  if (depth > kernels::kQMaxDepth) return fail("depth above the int32-safe maximum");
  for (const quant::QuantizedWeights& q : l.terms) {
    IntTerm term;
    std::string why;
    std::vector<uint8_t> units;
    std::optional<std::vector<int8_t>> w = term_integer_weights(l, q, term.step, why, &units);
    if (!w) return fail(why);
    // Int4 codes in the same tap-major order as w (for int4 codes times units).
    const bool int4 = l.config.format == quant::WeightFormat::kInt && l.config.bits <= 4;
    std::vector<int8_t> codes;
    if (int4) {
      codes.resize(w->size());
      for (int64_t o = 0; o < L.out; ++o)
        for (int64_t c = 0; c < L.in; ++c)
          for (int64_t t = 0; t < L.taps; ++t)
            codes[static_cast<size_t>((o * L.taps + t) * L.in + c)] = q.codes[static_cast<size_t>((o * L.in + c) * L.taps + t)];
    }
    if (L.depthwise()) {  // [tap][channel]: the direct kernel's order
      term.depthwise.resize(static_cast<size_t>(L.taps * L.groups));
      for (int64_t c = 0; c < L.groups; ++c)
        for (int64_t t = 0; t < L.taps; ++t) term.depthwise[static_cast<size_t>(t * L.groups + c)] = (*w)[static_cast<size_t>(c * L.taps + t)];
    }
    for (int64_t gi = 0; gi < L.groups; ++gi) {
      term.groups.push_back(make_term_group(w->data() + gi * rows * depth, rows, depth, int4,
                                            int4 ? codes.data() + gi * rows * depth : nullptr,
                                            units.data() + gi * rows * depth));
    }
    L.terms.push_back(std::move(term));
  }
  L.active = l.active_terms;
  return L;
}
// ---------------------------------------------------------------------------------------------
// A layer on whole float tensors (the hybrid graph's layers, the fused program's whole-tensor steps).

namespace {

// The byte of value 0: the zero point, or 128 for signed codes (VNNI multiplies u8).
int32_t zero_code(const quant::ActivationQuant& a) { return a.is_unsigned ? a.zero_point : 128; }

// Codes of `count` values at `scale` (the simulation's rounding: x / scale, clamped, half away
// from zero: kernels::round_half_away), offset by zero_code. Branch-free, so the
// compiler vectorizes it (with a branch per value it ran at 3-12 ns a value).
void quantize(const float* x, int64_t count, float scale, const quant::ActivationQuant& a, uint8_t* out) {
  const auto [lo, hi] = quant::code_bounds(quant::activation_qmax(a.bits, a.is_unsigned), a.is_unsigned, a.zero_point);
  const int32_t offset = zero_code(a);
  int32_t nan = 0;
  for (int64_t i = 0; i < count; ++i) {
    float v = x[i] / scale;
    nan |= v != v;
    v = std::min(std::max(v, lo), hi);
    out[i] = static_cast<uint8_t>(kernels::round_half_away(v) + offset);
  }
  if (nan) throw Error("integer engine: NaN input");
}

float image_scale(const quant::ActivationQuant& a, const float* x, int64_t count) {
  if (!a.dynamic) return a.scale;
  const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
  float t = 0.0f;
  for (int64_t i = 0; i < count; ++i) t = std::max(t, a.is_unsigned ? x[i] : std::fabs(x[i]));
  if (!std::isfinite(t)) throw Error("integer engine: an image holds an infinite value");
  if (t == 0.0f) return 1.0f;  // every code is 0 at any scale
  return a.power_of_two ? quant::power_of_two_scale(t, qmax) : t / static_cast<float>(qmax);
}

}  // namespace

Tensor run_layer(const IntLayer& L, const Tensor& x, const Shape& out_shape, LayerScratch& work, ThreadPool* pool,
                 DecodedPanels* decoded) {
  std::vector<uint8_t>& codes = work.codes;
  std::vector<uint8_t>& patches = work.patches;
  std::vector<int32_t>& acc = work.acc;
  std::vector<float>& sum = work.sum;
  std::vector<int8_t>& scratch = work.panels;
  check(x.dtype() == DataType::kFloat32, L.node + ": integer layer needs float input");
  const int64_t images = x.dim(0), rows = L.out / L.groups, depth = L.in * L.taps;
  const int64_t steps = (depth + kQStep - 1) / kQStep, stride = steps * kQStep;
  const uint8_t zero = static_cast<uint8_t>(zero_code(L.input));
  kernels::Conv2dShape cs;
  int64_t positions = 1;  // output positions per image (a Gemm's rows per image: its input's [..., K])
  const int64_t per_image = x.size() / std::max<int64_t>(images, 1);
  if (!L.gemm) {
    cs = ops::conv_shape(L.conv, x.shape(), L.weight_shape);
    positions = cs.out_h() * cs.out_w();
  } else {
    positions = per_image / std::max<int64_t>(depth, 1);
  }
  std::vector<float> scales(static_cast<size_t>(images));
  // Per-token scales (a Gemm on [N, T, K] tokens): one per row of codes, i.e. per column.
  const bool per_token = L.input.per_token && L.gemm;
  std::vector<float> token_scales(per_token ? static_cast<size_t>(images * positions) : 0);
  // Activation codes, NHWC (one row of channels per pixel) for a Conv, [N][K] for a Gemm.
  const int64_t channels = L.gemm ? depth : L.in * L.groups;
  const int64_t pixels = L.gemm ? positions : cs.in_h * cs.in_w;
  codes.resize(std::max(codes.size(), static_cast<size_t>(images * pixels * channels)));
  auto quantize_images = [&](int64_t begin, int64_t end) {
    std::vector<uint8_t> planar(static_cast<size_t>(per_image));
    for (int64_t n = begin; n < end; ++n) {
      const float* xn = x.data<float>() + n * per_image;
      if (per_token) {
        for (int64_t p = 0; p < positions; ++p) {
          float s = image_scale(L.input, xn + p * depth, depth);
          token_scales[static_cast<size_t>(n * positions + p)] = s;
          quantize(xn + p * depth, depth, s, L.input, planar.data() + p * depth);
        }
      } else {
        float s = image_scale(L.input, xn, per_image);
        scales[static_cast<size_t>(n)] = s;
        quantize(xn, per_image, s, L.input, planar.data());
      }
      uint8_t* dst = codes.data() + n * pixels * channels;  // NCHW -> NHWC (a Gemm's rows are already)
      if (L.gemm) std::memcpy(dst, planar.data(), static_cast<size_t>(per_image));
      else
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t p = 0; p < pixels; ++p) dst[p * channels + c] = planar[static_cast<size_t>(c * pixels + p)];
    }
  };
  if (pool && images > 1) pool->parallel_for(images, quantize_images);
  else quantize_images(0, images);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);  // every value is written below
  const int64_t cols = images * positions;
  // A Gemm whose rows are whole K steps multiplies the codes where they are.
  const bool in_place = L.gemm && depth == stride;
  // Every patch byte below `depth` is written below; the bytes up to `stride` meet zero weights.
  if (!in_place) patches.resize(std::max(patches.size(), static_cast<size_t>(cols * stride)));
  acc.resize(std::max(acc.size(), static_cast<size_t>(cols * rows)));
  if (!L.gemm) sum.resize(std::max(sum.size(), static_cast<size_t>(cols * rows)));  // (a Gemm finishes in the epilogue)
  DecodedPanels local;
  if (!decoded) decoded = &local;
  if (decoded->layer != &L) {
    decoded->panels.assign(static_cast<size_t>(L.groups) * L.terms.size(), {});
    decoded->layer = &L;
  }
  // Term j of group gi: ternary and int4 weights stream their codes for few columns; for more,
  // int8 panels, decoded once where the caller keeps them (a fused program's step) instead of
  // on every run.
  auto multiply_into = [&](const TermGroup& tg, size_t key, const uint8_t* xs, int32_t* c, int64_t ldc) {
    const bool term_kernel =
        (!tg.ternary && !tg.int4) || (tg.ternary ? kernels::ternary_streams(cols) : cols <= kernels::kInt4StreamMaxCols);
    if (term_kernel) return tg.gemm(cols, xs, stride, c, ldc, scratch, pool);
    std::vector<int8_t>& panels = decoded->panels[key];
    if (panels.empty()) {
      panels.resize(static_cast<size_t>(tg.panel_bytes()));
      tg.panels(panels.data());
    }
    kernels::qgemm_panels(panels.data(), tg.row_sums.data(), rows, depth, cols, xs, stride, c, ldc, pool);
  };
  auto multiply = [&](const TermGroup& tg, size_t key, const uint8_t* xs) { multiply_into(tg, key, xs, acc.data(), rows); };
  for (int64_t gi = 0; gi < L.groups; ++gi) {
    // im2col, tap-major: patch k = tap * in + channel.
    if (in_place) {
      // (codes are the patches)
    } else if (L.gemm) {
      for (int64_t col = 0; col < cols; ++col)
        std::memcpy(&patches[static_cast<size_t>(col * stride)], &codes[static_cast<size_t>(col * depth)], static_cast<size_t>(depth));
    } else {
      auto im2col = [&](int64_t begin, int64_t end) {
        for (int64_t col = begin; col < end; ++col) {
            int64_t n = col / positions, oh = col % positions / cs.out_w(), ow = col % cs.out_w();
            uint8_t* patch = &patches[static_cast<size_t>(col * stride)];
            for (int64_t kh = 0; kh < cs.kernel_h; ++kh)
              for (int64_t kw = 0; kw < cs.kernel_w; ++kw) {
                int64_t ih = oh * cs.stride_h - cs.pad_top + kh * cs.dilation_h;
                int64_t iw = ow * cs.stride_w - cs.pad_left + kw * cs.dilation_w;
                uint8_t* dst = patch + (kh * cs.kernel_w + kw) * L.in;
                if (ih < 0 || ih >= cs.in_h || iw < 0 || iw >= cs.in_w) std::memset(dst, zero, static_cast<size_t>(L.in));
                else
                  std::memcpy(dst, &codes[static_cast<size_t>(((n * cs.in_h + ih) * cs.in_w + iw) * channels + gi * L.in)],
                              static_cast<size_t>(L.in));
              }
        }
      };
      if (pool) pool->parallel_for(cols, im2col, 256);
      else im2col(0, cols);
    }
    if (L.gemm) {  // (one group) every term into its rows of one accumulator, then the epilogue
      const int64_t padded = (rows + kQPanelRows - 1) / kQPanelRows * kQPanelRows, stacked = L.active * padded;
      acc.resize(std::max(acc.size(), static_cast<size_t>(cols * stacked)));
      for (int j = 0; j < L.active; ++j)
        multiply_into(L.terms[static_cast<size_t>(j)].groups[0], static_cast<size_t>(j), in_place ? codes.data() : patches.data(),
                      acc.data() + j * padded, stacked);
      // Each column's scale: its image's (static or dynamic) or its token's. Runs of columns that
      // share one (every column, with a static scale) go through the epilogue at once.
      auto scale_of = [&](int64_t col) {
        return per_token ? token_scales[static_cast<size_t>(col)] : scales[static_cast<size_t>(col / positions)];
      };
      const std::vector<float> zeros(L.bias.empty() ? static_cast<size_t>(rows) : 0, 0.0f);
      auto finish = [&](int64_t begin, int64_t end) {
        std::vector<float> multiplier(static_cast<size_t>(stacked));
        std::vector<int32_t> offset(static_cast<size_t>(stacked));
        const int32_t zero_point = zero_code(L.input);
        for (int64_t c0 = begin, c1; c0 < end; c0 = c1) {
          const float sc = scale_of(c0);
          for (c1 = c0 + 1; c1 < end && scale_of(c1) == sc;) ++c1;
          for (int j = 0; j < L.active; ++j) {
            const IntTerm& term = L.terms[static_cast<size_t>(j)];
            for (int64_t r = 0; r < rows; ++r) {
              multiplier[static_cast<size_t>(j * padded + r)] = sc * term.step[static_cast<size_t>(r)];
              offset[static_cast<size_t>(j * padded + r)] = zero_point * term.groups[0].row_sums[static_cast<size_t>(r)];
            }
          }
          kernels::RequantArgs a;
          a.cols = c1 - c0;
          a.rows = rows;
          a.terms = L.active;
          a.acc = acc.data() + c0 * stacked;
          a.acc_stride = stacked;
          a.term_stride = padded;
          a.multiplier = multiplier.data();
          a.offset = offset.data();
          a.multiplier_term_stride = padded;
          a.bias = L.bias.empty() ? zeros.data() : L.bias.data();
          a.lo = L.clamp_lo;
          a.hi = L.clamp_hi;
          a.out = y.data<float>() + c0 * L.out;
          a.out_stride = L.out;
          kernels::requantize_block(a);
        }
      };
      if (pool && cols > 1) pool->parallel_for(cols, finish, 16);
      else finish(0, cols);
      continue;
    }
    std::fill(sum.begin(), sum.begin() + cols * rows, 0.0f);
    for (int j = 0; j < L.active; ++j) {
      const IntTerm& term = L.terms[static_cast<size_t>(j)];
      const TermGroup& tg = term.groups[static_cast<size_t>(gi)];
      multiply(tg, static_cast<size_t>(gi) * L.terms.size() + static_cast<size_t>(j), in_place ? codes.data() : patches.data());
      auto accumulate = [&](int64_t begin, int64_t end) {
        const int32_t offset = zero_code(L.input);
        for (int64_t col = begin; col < end; ++col) {
          float s = per_token ? token_scales[static_cast<size_t>(col)] : scales[static_cast<size_t>(col / positions)];
          const int32_t* a = &acc[static_cast<size_t>(col * rows)];
          float* out = &sum[static_cast<size_t>(col * rows)];
          const float* st = &term.step[static_cast<size_t>(gi * rows)];
          for (int64_t r = 0; r < rows; ++r)
            out[r] += static_cast<float>(a[r] - offset * tg.row_sums[static_cast<size_t>(r)]) * (s * st[r]);
        }
      };
      if (pool) pool->parallel_for(cols, accumulate, 256);
      else accumulate(0, cols);
    }
    // NHWC sums -> NCHW output, with bias and the fused clamp (a Gemm went through the epilogue).
    auto store = [&](int64_t begin, int64_t end) {
      const float lo = L.clamp_lo, hi = L.clamp_hi;
      const float* bias = L.bias.empty() ? nullptr : L.bias.data() + gi * rows;
      float* out = y.data<float>();
      for (int64_t col = begin; col < end; ++col) {
        const int64_t n = col / positions, p = col % positions;
        const float* s = &sum[static_cast<size_t>(col * rows)];
        for (int64_t r = 0; r < rows; ++r)
          out[(n * L.out + gi * rows + r) * positions + p] = std::min(std::max(s[r] + (bias ? bias[r] : 0.0f), lo), hi);
      }
    };
    if (pool) pool->parallel_for(cols, store, 256);
    else store(0, cols);
  }
  return y;
}

}  // namespace tern::integer
