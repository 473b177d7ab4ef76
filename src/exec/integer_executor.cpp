// The integer engine (see tern/integer_executor.h): quantized Conv/Gemm nodes of the simulation
// graph run as integer kernels through the executor's node-kernel hook.
#include "tern/integer_executor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "exec/fp32_ops.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/error.h"

namespace tern {

namespace {

using kernels::kQPanelRows;
using kernels::kQStep;

// One term's integer weights for one convolution group: rows = filters of the group, depth =
// taps * channels, K tap-major (k = tap * channels + channel, an NHWC patch's order).
struct TermGroup {
  std::optional<kernels::TernaryPanels> ternary;  // when every row-step has one magnitude
  kernels::QPackedWeights dense;                  // otherwise
  std::vector<int32_t> row_sums;                  // padded to whole panels
};

struct IntTerm {
  std::vector<TermGroup> groups;
  std::vector<float> step;  // per output filter: the integer weight's real value is w * step
};

struct IntLayer {
  std::string node;
  bool gemm = false;
  ConvAttrs conv;
  Shape weight_shape;
  int64_t out = 0, in = 0, taps = 0, groups = 1;  // in: channels per group
  quant::ActivationQuant input;
  std::vector<IntTerm> terms;  // every stored term
  int active = 1;
  std::vector<float> bias;     // dequantized, per filter (empty: none)
  float clamp_lo = -INFINITY, clamp_hi = INFINITY;
  bool uses_panels = false;
};

// The exact integer form of a term: w[o][k] (tap-major within each group) with w * step[o] its
// value. nullopt (and `why`) when there is none.
std::optional<std::vector<int8_t>> integer_weights(const quant::QuantizedLayer& l, const quant::QuantizedWeights& q,
                                                   std::vector<float>& step, std::string& why) {
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
  for (int64_t o = 0; o < out; ++o) {
    const GroupScales& first = q.scales[static_cast<size_t>(g.group_of(o, 0, 0))];
    step[static_cast<size_t>(o)] = two_level ? q.filter_steps[static_cast<size_t>(o)] : first.positive;
    for (int64_t c = 0; c < in; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        const GroupScales& s = q.scales[static_cast<size_t>(g.group_of(o, c, t))];
        int code = q.codes[static_cast<size_t>((o * in + c) * taps + t)];
        int value = code;
        if (two_level) {
          float st = q.filter_steps[static_cast<size_t>(o)];
          int unit = scale_unit(code >= 0 ? s.positive : s.negative, st, false);
          value = code * unit;
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

TermGroup make_term_group(const int8_t* w, int64_t rows, int64_t depth) {
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
    tg.dense = kernels::QPackedWeights::pack(w, rows, depth, depth);
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

}  // namespace

struct IntegerExecutor::Impl {
  quant::QuantizedModel model;
  std::vector<IntLayer> layers;
  std::vector<IntegerLayerInfo> info;
  std::unique_ptr<Executor> executor;
  std::vector<int8_t> scratch;  // decoded ternary panels of the layer running now (ternary_qgemm)
  // Work buffers of the layer running now, kept between layers and runs: allocating (and first
  // touching) tens of MB per layer at batch 64 cost more than the arithmetic.
  std::vector<uint8_t> codes, patches;
  std::vector<int32_t> acc;
  std::vector<float> sum;

  Impl(quant::QuantizedModel m, ExecutorOptions options) : model(std::move(m)) {
    Graph sim = quant::simulation_graph(model);
    for (const quant::QuantizedLayer& l : model.layers) {
      const Node* node = nullptr;
      for (const Node& n : sim.nodes)
        if (n.name == l.node) node = &n;
      check(node != nullptr, "integer engine: layer '" + l.node + "' is not in the graph");
      std::string why = build(l, *node, sim);
      if (!why.empty()) {
        info.push_back({l.node, "float32 simulation (" + why + ")"});
        continue;
      }
      size_t index = layers.size() - 1;
      options.node_kernels[l.node] = [this, index](std::span<const Tensor* const> in, const std::vector<Shape>& shapes,
                                                   ThreadPool* pool) {
        return std::vector<Tensor>{run_layer(layers[index], *in[0], shapes[0], pool)};
      };
      info.push_back({l.node, describe(layers.back())});
    }
    drop_input_quantizers(sim);
    executor = std::make_unique<Executor>(std::move(sim), options);
  }

  // Integer layers quantize their own input (same rounding): they read the value the simulation's
  // FakeQuantize node reads, and FakeQuantize nodes nobody reads any more go.
  void drop_input_quantizers(Graph& g) const {
    std::vector<int> producer = g.producers();
    for (Node& n : g.nodes) {
      bool integer = std::any_of(layers.begin(), layers.end(), [&](const IntLayer& L) { return L.node == n.name; });
      int p = n.inputs.empty() || n.inputs[0] == kNoValue ? -1 : producer[static_cast<size_t>(n.inputs[0])];
      if (integer && p >= 0 && g.nodes[static_cast<size_t>(p)].op == OpType::kFakeQuantize)
        n.inputs[0] = g.nodes[static_cast<size_t>(p)].inputs[0];
    }
    std::vector<int> uses = g.consumer_counts();
    for (ValueId out : g.outputs) ++uses[static_cast<size_t>(out)];
    std::erase_if(g.nodes, [&](const Node& n) { return n.op == OpType::kFakeQuantize && uses[static_cast<size_t>(n.outputs[0])] == 0; });
  }

  std::string describe(const IntLayer& L) const {
    std::string s = L.uses_panels ? "ternary-panels" : "int8";
    if (L.terms.size() > 1) s += " x" + std::to_string(L.active) + "/" + std::to_string(L.terms.size());
    return s + " " + kernels::qgemm_kernel_name();
  }

  // Builds the integer form of a layer; returns why not ("" when built).
  std::string build(const quant::QuantizedLayer& l, const Node& node, const Graph& g) {
    if (!l.input) return "float32 input";
    if (node.op == OpType::kConv && node.attr<ConvAttrs>().kernel.size() != 2) return "not a 2-D convolution";
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
    if (depth > kernels::kQMaxDepth) return "depth above the int32-safe maximum";
    bool all_panels = true;
    for (const quant::QuantizedWeights& q : l.terms) {
      IntTerm term;
      std::string why;
      std::optional<std::vector<int8_t>> w = integer_weights(l, q, term.step, why);
      if (!w) return why;
      for (int64_t gi = 0; gi < L.groups; ++gi) {
        term.groups.push_back(make_term_group(w->data() + gi * rows * depth, rows, depth));
        all_panels = all_panels && term.groups.back().ternary.has_value();
      }
      L.terms.push_back(std::move(term));
    }
    L.uses_panels = all_panels;
    L.active = l.active_terms;
    layers.push_back(std::move(L));
    return "";
  }

  // Codes of `count` values at `scale` (the simulation's rounding: x / scale, clamped, half away
  // from zero), offset by 128 when signed (VNNI multiplies u8). A plain loop the compiler vectorizes.
  static void quantize(const float* x, int64_t count, float scale, const quant::ActivationQuant& a, uint8_t* out) {
    const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
    const float hi = static_cast<float>(qmax), lo = a.is_unsigned ? 0.0f : -hi;
    const float offset = a.is_unsigned ? 0.0f : 128.0f;
    bool nan = false;
    for (int64_t i = 0; i < count; ++i) {
      float v = x[i] / scale;
      nan |= v != v;
      v = std::min(std::max(v, lo), hi);
      out[i] = static_cast<uint8_t>(static_cast<int32_t>(v + (v >= 0.0f ? 0.5f : -0.5f)) + static_cast<int32_t>(offset));
    }
    if (nan) throw Error("integer engine: NaN input");
  }

  float image_scale(const quant::ActivationQuant& a, const float* x, int64_t count) const {
    if (!a.dynamic) return a.scale;
    const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
    float t = 0.0f;
    for (int64_t i = 0; i < count; ++i) t = std::max(t, a.is_unsigned ? x[i] : std::fabs(x[i]));
    check(std::isfinite(t), "integer engine: an image holds an infinite value");
    if (t == 0.0f) return 1.0f;  // every code is 0 at any scale
    return a.power_of_two ? quant::power_of_two_scale(t, qmax) : t / static_cast<float>(qmax);
  }

  Tensor run_layer(const IntLayer& L, const Tensor& x, const Shape& out_shape, ThreadPool* pool) {
    check(x.dtype() == DataType::kFloat32, L.node + ": integer layer needs float input");
    const int64_t images = x.dim(0), rows = L.out / L.groups, depth = L.in * L.taps;
    const int64_t steps = (depth + kQStep - 1) / kQStep, stride = steps * kQStep;
    const uint8_t zero_code = L.input.is_unsigned ? 0 : 128;
    kernels::Conv2dShape cs;
    int64_t positions = 1;  // output positions per image
    if (!L.gemm) {
      cs = ops::conv_shape(L.conv, x.shape(), L.weight_shape);
      positions = cs.out_h() * cs.out_w();
    }
    const int64_t per_image = x.size() / std::max<int64_t>(images, 1);
    std::vector<float> scales(static_cast<size_t>(images));
    // Activation codes, NHWC (one row of channels per pixel) for a Conv, [N][K] for a Gemm.
    const int64_t channels = L.gemm ? depth : L.in * L.groups;
    const int64_t pixels = L.gemm ? 1 : cs.in_h * cs.in_w;
    codes.resize(std::max(codes.size(), static_cast<size_t>(images * pixels * channels)));
    auto quantize_images = [&](int64_t begin, int64_t end) {
      std::vector<uint8_t> planar(static_cast<size_t>(per_image));
      for (int64_t n = begin; n < end; ++n) {
        const float* xn = x.data<float>() + n * per_image;
        float s = image_scale(L.input, xn, per_image);
        scales[static_cast<size_t>(n)] = s;
        quantize(xn, per_image, s, L.input, planar.data());
        uint8_t* dst = codes.data() + n * pixels * channels;  // NCHW -> NHWC
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t p = 0; p < pixels; ++p) dst[p * channels + c] = planar[static_cast<size_t>(c * pixels + p)];
      }
    };
    if (pool && images > 1) pool->parallel_for(images, quantize_images);
    else quantize_images(0, images);
    Tensor y(DataType::kFloat32, out_shape);
    const int64_t cols = images * positions;
    // Every patch byte below `depth` is written below; the bytes up to `stride` meet zero weights.
    patches.resize(std::max(patches.size(), static_cast<size_t>(cols * stride)));
    acc.resize(std::max(acc.size(), static_cast<size_t>(cols * rows)));
    sum.resize(std::max(sum.size(), static_cast<size_t>(cols * rows)));
    for (int64_t gi = 0; gi < L.groups; ++gi) {
      // im2col, tap-major: patch k = tap * in + channel.
      if (L.gemm) {
        for (int64_t n = 0; n < images; ++n)
          std::memcpy(&patches[static_cast<size_t>(n * stride)], &codes[static_cast<size_t>(n * depth)], static_cast<size_t>(depth));
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
                  if (ih < 0 || ih >= cs.in_h || iw < 0 || iw >= cs.in_w) std::memset(dst, zero_code, static_cast<size_t>(L.in));
                  else
                    std::memcpy(dst, &codes[static_cast<size_t>(((n * cs.in_h + ih) * cs.in_w + iw) * channels + gi * L.in)],
                                static_cast<size_t>(L.in));
                }
          }
        };
        if (pool) pool->parallel_for(cols, im2col, 256);
        else im2col(0, cols);
      }
      std::fill(sum.begin(), sum.begin() + cols * rows, 0.0f);
      for (int j = 0; j < L.active; ++j) {
        const IntTerm& term = L.terms[static_cast<size_t>(j)];
        const TermGroup& tg = term.groups[static_cast<size_t>(gi)];
        if (tg.ternary) {
          kernels::ternary_qgemm(*tg.ternary, tg.row_sums.data(), cols, patches.data(), stride, acc.data(), rows, scratch,
                                 pool);
        } else {
          kernels::qgemm(tg.dense, cols, patches.data(), stride, acc.data(), rows, pool);
        }
        auto accumulate = [&](int64_t begin, int64_t end) {
          const int32_t offset = L.input.is_unsigned ? 0 : 128;
          for (int64_t col = begin; col < end; ++col) {
            float s = scales[static_cast<size_t>(col / positions)];
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
      // NHWC sums -> NCHW output, with bias and the fused clamp.
      auto store = [&](int64_t begin, int64_t end) {
        for (int64_t col = begin; col < end; ++col) {
          int64_t n = col / positions, p = col % positions;
          for (int64_t r = 0; r < rows; ++r) {
            int64_t o = gi * rows + r;
            float v = sum[static_cast<size_t>(col * rows + r)] + (L.bias.empty() ? 0.0f : L.bias[static_cast<size_t>(o)]);
            y.data<float>()[(n * L.out + o) * positions + p] = std::clamp(v, L.clamp_lo, L.clamp_hi);
          }
        }
      };
      if (pool) pool->parallel_for(cols, store, 256);
      else store(0, cols);
    }
    return y;
  }

  void set_level(int level) {
    std::vector<std::string> changed = quant::set_level(model, level);
    for (const std::string& name : changed)
      for (const Value& v : model.graph.values)
        if (v.name == name && v.constant) executor->set_constant(name, *v.constant);
    for (IntLayer& L : layers)
      if (const quant::QuantizedLayer* l = model.find(L.node)) L.active = l->active_terms;
    for (IntegerLayerInfo& i : info)
      for (const IntLayer& L : layers)
        if (L.node == i.node) i.kernel = describe(L);
  }
};

IntegerExecutor::IntegerExecutor(quant::QuantizedModel model, ExecutorOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options))) {}
IntegerExecutor::~IntegerExecutor() = default;
IntegerExecutor::IntegerExecutor(IntegerExecutor&&) noexcept = default;
IntegerExecutor& IntegerExecutor::operator=(IntegerExecutor&&) noexcept = default;

std::vector<Tensor> IntegerExecutor::run(std::span<const Tensor> inputs) { return impl_->executor->run(inputs); }
Tensor IntegerExecutor::run(const Tensor& input) { return impl_->executor->run(input); }
void IntegerExecutor::set_level(int level) { impl_->set_level(level); }
int IntegerExecutor::level() const { return impl_->model.level; }
int IntegerExecutor::max_level() const { return impl_->model.max_level(); }
const std::vector<IntegerLayerInfo>& IntegerExecutor::layers() const { return impl_->info; }
Executor& IntegerExecutor::executor() { return *impl_->executor; }

}  // namespace tern
