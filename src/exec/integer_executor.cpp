// The integer engine (see tern/integer_executor.h): quantized Conv/Gemm nodes of the simulation
// graph run as integer kernels through the executor's node-kernel hook.
#include "tern/integer_executor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>

#include "exec/fp32_ops.h"
#include "exec/integer_layers.h"
#include "exec/integer_program.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/requantize.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/error.h"

namespace tern {

using integer::IntLayer;
using integer::IntTerm;
using integer::TermGroup;
using kernels::kQPanelRows;
using kernels::kQStep;

struct IntegerExecutor::Impl {
  quant::QuantizedModel model;
  std::vector<IntLayer> layers;
  std::vector<IntegerLayerInfo> info;
  std::unique_ptr<integer::Program> program;  // the fused program, or
  std::string why_hybrid;
  std::unique_ptr<Executor> executor;         // the hybrid graph
  Graph graph;                                // the program's inputs and outputs
  std::vector<int8_t> scratch;  // decoded ternary panels of the layer running now (ternary_qgemm)
  // Work buffers of the layer running now, kept between layers and runs: allocating (and first
  // touching) tens of MB per layer at batch 64 cost more than the arithmetic.
  std::vector<uint8_t> codes, patches;
  std::vector<int32_t> acc;
  std::vector<float> sum;

  Impl(quant::QuantizedModel m, ExecutorOptions options, const IntegerEngineOptions& engine) : model(std::move(m)) {
    Graph sim = quant::simulation_graph(model);
    std::vector<std::string> float_layers;
    for (const quant::QuantizedLayer& l : model.layers) {
      const Node* node = nullptr;
      for (const Node& n : sim.nodes)
        if (n.name == l.node) node = &n;
      check(node != nullptr, "integer engine: layer '" + l.node + "' is not in the graph");
      std::string why;
      std::optional<IntLayer> L = integer::build_int_layer(l, *node, sim, why);
      if (!L) {
        info.push_back({l.node, "float32 simulation (" + why + ")"});
        float_layers.push_back(l.node);
        continue;
      }
      layers.push_back(std::move(*L));
      info.push_back({l.node, ""});
    }
    // The fused program when every layer has an integer form; else the hybrid graph.
    if (engine.fused && float_layers.empty()) {
      ThreadPool* pool = options.pool ? options.pool : &ThreadPool::global();
      program = integer::Program::compile(sim, layers, pool, options.profile, why_hybrid);
    } else {
      why_hybrid = engine.fused ? "layer " + float_layers.front() + " has no integer form" : "asked for";
    }
    if (program) {
      for (IntegerLayerInfo& i : info) i.kernel = program->kernel_of(i.node);
      // The program keeps what it runs (packed weights, biases, scales); the graph is kept for its
      // inputs and outputs, and the model for its levels: their weights go.
      for (Value& v : sim.values) v.constant.reset();
      graph = std::move(sim);
      release_weights();
      return;
    }
    for (size_t index = 0; index < layers.size(); ++index)
      options.node_kernels[layers[index].node] = [this, index](std::span<const Tensor* const> in,
                                                               const std::vector<Shape>& shapes, ThreadPool* pool) {
        return std::vector<Tensor>{run_layer(layers[index], *in[0], shapes[0], pool)};
      };
    for (IntegerLayerInfo& i : info)
      for (const IntLayer& L : layers)
        if (L.node == i.node) i.kernel = describe(L) + " (hybrid)";
    drop_input_quantizers(sim);
    executor = std::make_unique<Executor>(std::move(sim), options);
  }

  // The dequantized float weights and int8 codes of the loaded model: the program has its own
  // packed form, and switching levels only changes which terms run.
  void release_weights() {
    for (Value& v : model.graph.values) v.constant.reset();
    for (quant::QuantizedLayer& l : model.layers)
      for (quant::QuantizedWeights& q : l.terms) {
        q.codes.clear();
        q.codes.shrink_to_fit();
      }
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
    std::string s = L.weights_kind();
    if (L.terms.size() > 1) s += " x" + std::to_string(L.active) + "/" + std::to_string(L.terms.size());
    return s + " " + kernels::qgemm_kernel_name();
  }

  // The byte of value 0: the zero point, or 128 for signed codes (VNNI multiplies u8).
  static int32_t zero_code(const quant::ActivationQuant& a) { return a.is_unsigned ? a.zero_point : 128; }

  // Codes of `count` values at `scale` (the simulation's rounding: x / scale, clamped, half away
  // from zero: kernels::round_half_away), offset by zero_code. Branch-free, so the
  // compiler vectorizes it (with a branch per value it ran at 3-12 ns a value).
  static void quantize(const float* x, int64_t count, float scale, const quant::ActivationQuant& a, uint8_t* out) {
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

  float image_scale(const quant::ActivationQuant& a, const float* x, int64_t count) const {
    if (!a.dynamic) return a.scale;
    const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
    float t = 0.0f;
    for (int64_t i = 0; i < count; ++i) t = std::max(t, a.is_unsigned ? x[i] : std::fabs(x[i]));
    if (!std::isfinite(t)) throw Error("integer engine: an image holds an infinite value");
    if (t == 0.0f) return 1.0f;  // every code is 0 at any scale
    return a.power_of_two ? quant::power_of_two_scale(t, qmax) : t / static_cast<float>(qmax);
  }

  Tensor run_layer(const IntLayer& L, const Tensor& x, const Shape& out_shape, ThreadPool* pool) {
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
    Tensor y(DataType::kFloat32, out_shape);
    const int64_t cols = images * positions;
    // Every patch byte below `depth` is written below; the bytes up to `stride` meet zero weights.
    patches.resize(std::max(patches.size(), static_cast<size_t>(cols * stride)));
    acc.resize(std::max(acc.size(), static_cast<size_t>(cols * rows)));
    sum.resize(std::max(sum.size(), static_cast<size_t>(cols * rows)));
    for (int64_t gi = 0; gi < L.groups; ++gi) {
      // im2col, tap-major: patch k = tap * in + channel.
      if (L.gemm) {
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
      std::fill(sum.begin(), sum.begin() + cols * rows, 0.0f);
      for (int j = 0; j < L.active; ++j) {
        const IntTerm& term = L.terms[static_cast<size_t>(j)];
        const TermGroup& tg = term.groups[static_cast<size_t>(gi)];
        tg.gemm(cols, patches.data(), stride, acc.data(), rows, scratch, pool);
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
      // NHWC sums -> NCHW output, with bias and the fused clamp.
      // The layout test and the bias presence hoisted out of the inner loop: a Gemm's row of
      // outputs is contiguous, and that loop vectorizes.
      auto store = [&](int64_t begin, int64_t end) {
        const float lo = L.clamp_lo, hi = L.clamp_hi;
        const float* bias = L.bias.empty() ? nullptr : L.bias.data() + gi * rows;
        float* out = y.data<float>();
        for (int64_t col = begin; col < end; ++col) {
          const int64_t n = col / positions, p = col % positions;
          const float* s = &sum[static_cast<size_t>(col * rows)];
          if (L.gemm) {  // [..., N]: row (n, p), columns gi * rows + r
            float* dst = out + (n * positions + p) * L.out + gi * rows;
            if (bias)
              for (int64_t r = 0; r < rows; ++r) dst[r] = std::min(std::max(s[r] + bias[r], lo), hi);
            else
              for (int64_t r = 0; r < rows; ++r) dst[r] = std::min(std::max(s[r] + 0.0f, lo), hi);
          } else {  // NCHW
            for (int64_t r = 0; r < rows; ++r)
              out[(n * L.out + gi * rows + r) * positions + p] = std::min(std::max(s[r] + (bias ? bias[r] : 0.0f), lo), hi);
          }
        }
      };
      if (pool) pool->parallel_for(cols, store, 256);
      else store(0, cols);
    }
    return y;
  }

  void set_level(int level) {
    if (program) {
      check(level >= 0 && level <= model.max_level(), "level " + std::to_string(level) + " is outside 0.." +
                                                          std::to_string(model.max_level()));
      model.level = level;
      for (quant::QuantizedLayer& l : model.layers) l.active_terms = 1;
      for (int k = 0; k < level; ++k)
        if (quant::QuantizedLayer* l = find_layer(model.edges[static_cast<size_t>(k)].layer)) ++l->active_terms;
    } else {
      std::vector<std::string> changed = quant::set_level(model, level);
      for (const std::string& name : changed)
        for (const Value& v : model.graph.values)
          if (v.name == name && v.constant) executor->set_constant(name, *v.constant);
    }
    for (IntLayer& L : layers)
      if (const quant::QuantizedLayer* l = model.find(L.node)) L.active = l->active_terms;
    if (!program)
      for (IntegerLayerInfo& i : info)
        for (const IntLayer& L : layers)
          if (L.node == i.node) i.kernel = describe(L) + " (hybrid)";
  }

  quant::QuantizedLayer* find_layer(const std::string& node) {
    for (quant::QuantizedLayer& l : model.layers)
      if (l.node == node) return &l;
    return nullptr;
  }
};

IntegerExecutor::IntegerExecutor(quant::QuantizedModel model, ExecutorOptions options, IntegerEngineOptions engine)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options), engine)) {}
IntegerExecutor::~IntegerExecutor() = default;
IntegerExecutor::IntegerExecutor(IntegerExecutor&&) noexcept = default;
IntegerExecutor& IntegerExecutor::operator=(IntegerExecutor&&) noexcept = default;

const Graph& IntegerExecutor::graph() const { return impl_->program ? impl_->graph : impl_->executor->graph(); }
std::vector<Tensor> IntegerExecutor::run(std::span<const Tensor> inputs) {
  return impl_->program ? impl_->program->run(inputs) : impl_->executor->run(inputs);
}
std::vector<NodeProfile> IntegerExecutor::profile() const {
  return impl_->program ? impl_->program->profile() : impl_->executor->profile();
}
void IntegerExecutor::set_level(int level) { impl_->set_level(level); }
int IntegerExecutor::level() const { return impl_->model.level; }
int IntegerExecutor::max_level() const { return impl_->model.max_level(); }
const std::vector<IntegerLayerInfo>& IntegerExecutor::layers() const { return impl_->info; }
bool IntegerExecutor::fused() const { return impl_->program != nullptr; }
std::string IntegerExecutor::mode() const {
  return impl_->program ? "fused integer program" : "hybrid (" + impl_->why_hybrid + ")";
}
std::vector<std::string> IntegerExecutor::steps() const {
  return impl_->program ? impl_->program->describe() : std::vector<std::string>{};
}

}  // namespace tern
