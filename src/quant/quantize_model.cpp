// Post-training quantization of a whole graph: plan -> weights -> activation scales -> int32 biases,
// and the simulation graph that runs the result on the FP32 executor.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>

#include "quant/batches.h"
#include "quant/pipeline.h"
#include "ops/op.h"
#include "tern/equalization.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/output_aware.h"
#include "tern/quantized_model.h"

namespace tern::quant {

namespace {

const char* method_name(TernaryMethod m) {
  switch (m) {
    case TernaryMethod::kFgq: return "fgq";
    case TernaryMethod::kFgqAsymmetric: return "fgq-asym";
    case TernaryMethod::kTwn: return "twn";
    case TernaryMethod::kTnt: return "tnt";
    case TernaryMethod::kCluster: return "cluster";
  }
  return "?";
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Is the value provably >= 0? (Decides unsigned activation codes.) Structural, so it holds for
// every input, not just the calibration images.
class NonNegative {
 public:
  NonNegative(const Graph& g, bool input_non_negative)
      : g_(g), producer_(g.producers()), input_non_negative_(input_non_negative) {}

  bool operator()(ValueId id) {
    if (auto it = memo_.find(id); it != memo_.end()) return it->second;
    bool r = compute(id);
    memo_[id] = r;
    return r;
  }

 private:
  bool compute(ValueId id) {
    if (g_.is_constant(id)) {
      const Tensor& t = g_.constant(id);
      if (t.dtype() != DataType::kFloat32) return false;
      const float* p = t.data<float>();
      return std::all_of(p, p + t.size(), [](float v) { return v >= 0.0f; });
    }
    int p = producer_[static_cast<size_t>(id)];
    if (p < 0) return input_non_negative_ && std::find(g_.inputs.begin(), g_.inputs.end(), id) != g_.inputs.end();
    const Node& n = g_.nodes[static_cast<size_t>(p)];
    ops::SignCall call{n, g_, [&](size_t i) { return i < n.inputs.size() && n.inputs[i] != kNoValue && (*this)(n.inputs[i]); }};
    return ops::record(n.op).non_negative(call);
  }

  const Graph& g_;
  std::vector<int> producer_;
  bool input_non_negative_;
  std::map<ValueId, bool> memo_;
};

}  // namespace

std::optional<int64_t> values_per_image(const Shape& shape) {
  size_t batch = 0;
  int dynamic = 0;
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] < 0) {
      batch = d;
      ++dynamic;
    }
  if (dynamic > 1) return std::nullopt;
  int64_t count = 1;
  for (size_t d = 0; d < shape.size(); ++d)
    if (d != batch && __builtin_mul_overflow(count, shape[d], &count)) return std::nullopt;
  return count;
}

namespace {

// Output values per image (values_per_image).
int64_t outputs_per_image(const Graph& g, const Node& n) {
  const Value& y = g.value(n.outputs[0]);
  check(y.shape_known && !y.shape.empty(), g.source + ": node '" + n.name + "' has an unknown output shape");
  std::optional<int64_t> count = values_per_image(y.shape);
  check(count.has_value(), g.source + ": node '" + n.name + "' output " + to_string(y.shape) +
                               " has a dynamic dimension besides the batch, or too many values");
  return *count;
}

// Gives the node a private copy of constant input `slot` when another node shares it, so that
// replacing it with quantized values changes only this layer.
void make_private(Graph& g, Node& n, size_t slot, const std::vector<int>& consumers) {
  ValueId id = n.inputs[slot];
  if (consumers[static_cast<size_t>(id)] <= 1) return;
  n.inputs[slot] = g.add_constant(g.value(id).name + "/" + n.name, g.constant(id).clone());
}

// Canonical weights [out][in][taps] of a Conv (ONNX layout already) or a Gemm. A Gemm is first
// rewritten to y = x W^T + b with alpha and beta folded in, so its weights are [out][in].
struct CanonicalLayer {
  int64_t out = 0, in = 0, taps = 0;
  bool ok = false;
  std::string why_not;
};

CanonicalLayer canonicalize(Graph& g, Node& n, const std::vector<int>& consumers) {
  CanonicalLayer c;
  if (n.inputs.size() < 2 || !g.is_constant(n.inputs[1])) {
    c.why_not = "weights are not constant";
    return c;
  }
  if (g.constant(n.inputs[1]).dtype() != DataType::kFloat32) {
    c.why_not = "weights are not float32";
    return c;
  }
  if (g.constant(n.inputs[1]).size() == 0) {
    c.why_not = "weights are empty";
    return c;
  }
  bool has_bias = n.inputs.size() > 2 && n.inputs[2] != kNoValue;
  if (has_bias && !g.is_constant(n.inputs[2])) {
    c.why_not = "bias is not constant";
    return c;
  }
  make_private(g, n, 1, consumers);
  if (has_bias) make_private(g, n, 2, consumers);
  const Tensor& w = g.constant(n.inputs[1]);
  if (n.op == OpType::kConv) {
    c.out = w.dim(0);
    c.in = w.dim(1);
    c.taps = w.size() / std::max<int64_t>(1, c.out * c.in);
  } else {
    auto& a = n.attr<GemmAttrs>();
    if (a.trans_a || w.rank() != 2) {
      c.why_not = "Gemm with transposed input";
      return c;
    }
    Tensor wc = g.constant(n.inputs[1]).clone();
    if (!a.trans_b) {  // [in][out] -> [out][in]
      Tensor t(DataType::kFloat32, {wc.dim(1), wc.dim(0)});
      for (int64_t i = 0; i < wc.dim(0); ++i)
        for (int64_t o = 0; o < wc.dim(1); ++o) t.data<float>()[o * wc.dim(0) + i] = wc.data<float>()[i * wc.dim(1) + o];
      wc = t;
      a.trans_b = true;
    }
    if (a.alpha != 1.0f) {
      for (float& v : wc.floats()) v *= a.alpha;
      a.alpha = 1.0f;
    }
    *g.value(n.inputs[1]).constant = wc;
    g.value(n.inputs[1]).shape = wc.shape();
    if (has_bias) {
      Tensor b = g.constant(n.inputs[2]).clone();
      if (a.beta != 1.0f) {
        for (float& v : b.floats()) v *= a.beta;
        a.beta = 1.0f;
      }
      *g.value(n.inputs[2]).constant = b;
    }
    c.out = wc.dim(0);
    c.in = wc.dim(1);
    c.taps = 1;
  }
  c.ok = c.out > 0 && c.in > 0 && c.taps > 0;
  if (!c.ok) c.why_not = "empty weights";
  return c;
}

// The largest scale of the groups holding filter o's weights (the bias's reference weight scale).
float filter_reference_scale(const QuantizedWeights& q, int64_t o) {
  const WeightGrouping& g = q.grouping;
  int64_t first, last;
  if (g.axis == GroupAxis::kFilterClusters) first = last = o / g.size;
  else {
    first = o * g.groups_per_filter();
    last = first + g.groups_per_filter() - 1;
  }
  float s = 0.0f;
  for (int64_t i = first; i <= last; ++i)
    s = std::max({s, q.scales[static_cast<size_t>(i)].positive, q.scales[static_cast<size_t>(i)].negative});
  return s;
}

ActivationQuant from_range(const ActivationRange& r, const std::string& source) {
  ActivationQuant a;
  a.bits = r.bits;
  a.is_unsigned = r.is_unsigned;
  a.zero_point = r.zero_point;
  a.power_of_two = r.power_of_two;
  a.scale = r.scale;
  a.threshold = r.threshold;
  a.source = source;
  return a;
}

ActivationQuant from_threshold(float threshold, int bits, bool is_unsigned, bool power_of_two, const std::string& source) {
  check(std::isfinite(threshold) && threshold > 0, "activation threshold must be positive and finite (" + source + ")");
  int32_t qmax = activation_qmax(bits, is_unsigned);
  ActivationQuant a;
  a.bits = bits;
  a.is_unsigned = is_unsigned;
  a.power_of_two = power_of_two;
  a.threshold = threshold;
  a.scale = power_of_two ? power_of_two_scale(threshold, qmax) : threshold / static_cast<float>(qmax);
  a.source = source;
  return a;
}

}  // namespace

std::vector<float> quantize_layer_bias(QuantizedLayer& l, std::span<const float> bias) {
  l.bias.clear();
  l.bias_scale.clear();
  if (!l.input || l.input->dynamic || l.terms.empty()) return {};
  check(static_cast<int64_t>(bias.size()) == l.out, "layer '" + l.node + "': bias has " + std::to_string(bias.size()) +
                                                        " values for " + std::to_string(l.out) + " outputs");
  std::vector<float> dequantized(bias.size());
  l.bias.resize(bias.size());
  l.bias_scale.resize(bias.size());
  for (int64_t o = 0; o < l.out; ++o) {
    float ref = filter_reference_scale(l.terms[0], o);
    float s = l.input->scale * (ref > 0.0f ? ref : 1.0f);
    double q = std::round(static_cast<double>(bias[static_cast<size_t>(o)]) / s);
    q = std::clamp(q, -2147483647.0, 2147483647.0);  // a bias 2^31 steps large saturates like int32
    l.bias[static_cast<size_t>(o)] = static_cast<int32_t>(q);
    l.bias_scale[static_cast<size_t>(o)] = s;
    dequantized[static_cast<size_t>(o)] = static_cast<float>(l.bias[static_cast<size_t>(o)] * static_cast<double>(s));
  }
  return dequantized;
}

int64_t QuantizedLayer::multiplies_per_image() const {
  bool sign_codes = config.format == WeightFormat::kTernary || config.format == WeightFormat::kBinary ||
                    (config.format == WeightFormat::kInt && config.bits == 2);
  if (!sign_codes || terms.empty()) return macs_per_image();
  int64_t per_group = scales_per_group(config);
  return std::min(macs_per_image(), outputs_per_image * terms[0].grouping.multiplies_per_output() * per_group *
                                        static_cast<int64_t>(std::clamp<size_t>(active_terms, 1, terms.size())));
}

double QuantizedLayer::zero_fraction() const { return terms.empty() ? 0.0 : terms[0].zero_fraction; }

Tensor active_weights(const QuantizedLayer& l, const Shape& shape) {
  Tensor w(DataType::kFloat32, shape);
  check(w.size() == l.out * l.in * l.taps, "layer '" + l.node + "': weight shape does not match its codes");
  float* p = w.data<float>();
  for (int j = 0; j < std::clamp<int>(l.active_terms, 1, static_cast<int>(l.terms.size())); ++j) {
    std::vector<float> d = l.terms[static_cast<size_t>(j)].dequantize();
    for (size_t k = 0; k < d.size(); ++k) p[k] += d[k];
  }
  return w;
}

std::vector<std::string> set_level(QuantizedModel& m, int level) {
  check(level >= 0 && level <= m.max_level(), "level " + std::to_string(level) + " is outside the stored levels 0.." +
                                                   std::to_string(m.max_level()));
  std::map<std::string, int> active;
  for (int k = 0; k < level; ++k) active[m.edges[static_cast<size_t>(k)].layer] += 1;
  std::vector<std::string> changed;
  for (QuantizedLayer& l : m.layers) {
    int want = 1 + active[l.node];
    check(want <= static_cast<int>(l.terms.size()), "layer '" + l.node + "': level needs more terms than stored");
    if (want == l.active_terms) continue;
    l.active_terms = want;
    if (!m.float_weights) continue;  // placeholders: dequantize_weights() follows active_terms
    ValueId id = m.graph.find_value(l.weight_value);
    check(id != kNoValue && m.graph.is_constant(id), "layer '" + l.node + "': weight value is missing");
    *m.graph.value(id).constant = active_weights(l, m.graph.constant(id).shape());
    changed.push_back(l.weight_value);
  }
  m.level = level;
  return changed;
}

void dequantize_weights(QuantizedModel& m) {
  if (m.float_weights) return;
  for (const QuantizedLayer& l : m.layers) {
    ValueId id = m.graph.find_value(l.weight_value);
    check(id != kNoValue && m.graph.is_constant(id), "layer '" + l.node + "': weight value is missing");
    *m.graph.value(id).constant = active_weights(l, m.graph.constant(id).shape());
  }
  m.float_weights = true;
}

QuantizedSession::QuantizedSession(QuantizedModel model, ExecutorOptions options)
    : model_(std::move(model)), executor_((dequantize_weights(model_), simulation_graph(model_)), options) {}

void QuantizedSession::set_level(int level) {
  for (const std::string& name : quant::set_level(model_, level)) {
    ValueId id = model_.graph.find_value(name);
    executor_.set_constant(name, model_.graph.constant(id));
  }
}

const QuantizedLayer* QuantizedModel::find(const std::string& node) const {
  for (const QuantizedLayer& l : layers)
    if (l.node == node) return &l;
  return nullptr;
}

void quantize_biases(QuantizedModel& m, const Graph& fp32) {
  Graph& g = m.graph;
  for (QuantizedLayer& l : m.layers) {
    l.bias.clear();
    l.bias_scale.clear();
    if (l.bias_value.empty() || !l.input || l.input->dynamic) continue;
    ValueId id = g.find_value(l.bias_value);
    ValueId source = fp32.find_value(l.bias_value);
    check(id != kNoValue && source != kNoValue, "layer '" + l.node + "': bias value is missing");
    const Tensor& b = fp32.constant(source);
    std::vector<float> dequantized = quantize_layer_bias(l, {b.data<float>(), static_cast<size_t>(b.size())});
    *g.value(id).constant = Tensor::from_floats(b.shape(), dequantized);
  }
}

QuantizedModel quantize_model(const Graph& graph, const QuantizeOptions& options, const Tensor* calibration,
                              ThreadPool* pool) {
  const std::string& src = graph.source;
  // An input shape with a fixed batch ([1,3,224,224], as many exporters write): every stage runs
  // the calibration images in batches of it, and a tail that cannot fill one is left out.
  if (int64_t fixed = graph.fixed_batch(); fixed > 0 && options.batch != fixed) {
    QuantizeOptions o = options;
    o.batch = fixed;
    if (!calibration || calibration->dim(0) % fixed == 0) return quantize_model(graph, o, calibration, pool);
    check(calibration->dim(0) >= fixed, src + ": the input's batch is fixed at " + std::to_string(fixed) + " and there are only " +
                                            std::to_string(calibration->dim(0)) + " calibration images");
    Tensor whole = slice_images(*calibration, 0, calibration->dim(0) / fixed * fixed);
    return quantize_model(graph, o, &whole, pool);
  }
  // Rescalings first: every later stage (calibration, rounding, bias correction, budgets) takes the
  // rescaled graph as its FP32 reference.
  if (options.equalize || options.smooth_alpha) {
    check(!options.smooth_alpha || calibration, src + ": smoothing measures activations on calibration images, and there are none");
    Graph rescaled = graph;
    nlohmann::json done;
    if (options.equalize) {
      EqualizationReport r = equalize_cross_layer(rescaled);
      done["equalization"] = {{"pairs", r.pairs}, {"sweeps", r.sweeps}};
    }
    if (options.smooth_alpha) {
      SmoothingReport r = smooth_activations(rescaled, *calibration, *options.smooth_alpha, options.batch, pool);
      done["smoothing"] = {{"alpha", r.alpha}, {"inputs", r.inputs}};
    }
    rescaled.compact();  // the replaced weights are no longer read: not stored, not counted
    QuantizeOptions rest = options;
    rest.equalize = false;
    rest.smooth_alpha.reset();
    QuantizedModel m = quantize_model(rescaled, rest, calibration, pool);
    nlohmann::json prov = nlohmann::json::parse(m.provenance_json);
    for (auto& [key, value] : done.items()) prov[key] = value;
    m.provenance_json = prov.dump();
    return m;
  }
  check(options.batch >= 1, "quantize: calibration batch must be >= 1");
  check(options.activation_mode != ActivationMode::kCalibrated || calibration,
        src + ": calibrated activation scales need calibration images (or choose a data-free mode)");
  if (calibration) {
    check(calibration->dtype() == DataType::kFloat32 && calibration->rank() >= 1 && calibration->dim(0) > 0,
          src + ": calibration images must be a non-empty float32 batch");
    check(graph.inputs.size() == 1, src + ": calibration supports single-input models");
  }
  QuantizedModel m;
  m.graph = graph;
  m.plan = make_plan(graph, options.plan, options.config_json, options.config_name);
  Graph& g = m.graph;
  std::vector<int> consumers = g.consumer_counts();
  NonNegative non_negative(graph, options.input_non_negative);

  // The layers to quantize, with weights in canonical form.
  std::map<std::string, size_t> node_index;
  for (size_t i = 0; i < g.nodes.size(); ++i) node_index[g.nodes[i].name] = i;
  for (LayerPlan& p : m.plan) {
    if (p.weights.format == WeightFormat::kFloat32) continue;
    Node& n = g.nodes[node_index.at(p.node)];
    CanonicalLayer c = canonicalize(g, n, consumers);
    if (!c.ok) {
      p.weights.format = WeightFormat::kFloat32;
      p.weights.bits = 32;
      p.reason = "kept float32: " + c.why_not;
      continue;
    }
    QuantizedLayer l;
    l.node = n.name;
    l.config = p.weights;
    l.reason = p.reason;
    l.out = c.out;
    l.in = c.in;
    l.taps = c.taps;
    l.outputs_per_image = outputs_per_image(g, n);
    l.weight_value = g.value(n.inputs[1]).name;
    if (n.inputs.size() > 2 && n.inputs[2] != kNoValue && g.constant(n.inputs[2]).size() == c.out)
      l.bias_value = g.value(n.inputs[2]).name;
    if (p.activation_bits > 0) {
      ActivationQuant a;
      a.bits = p.activation_bits;
      a.is_unsigned = non_negative(n.inputs[0]);
      a.power_of_two = options.power_of_two;
      l.input = a;
    }
    m.layers.push_back(std::move(l));
  }
  // Attention MatMuls: both operands computed (a MatMul by a constant weight imports as a Gemm).
  if (options.quantize_attention && options.plan.activation_bits > 0)
    for (const Node& n : g.nodes)
      if (n.op == OpType::kMatMul && n.inputs.size() == 2 && !g.is_constant(n.inputs[0]) && !g.is_constant(n.inputs[1]))
        for (int k = 0; k < 2; ++k) {
          QuantizedInput q;
          q.node = n.name;
          q.input = k;
          q.quant.bits = options.plan.activation_bits;
          q.quant.is_unsigned = non_negative(n.inputs[static_cast<size_t>(k)]);  // a softmax's probabilities
          q.quant.power_of_two = options.power_of_two;
          m.inputs.push_back(std::move(q));
        }
  // Values whose names collide would make the file ambiguous; imported graphs never have them.
  std::set<std::string> names;
  for (const Value& v : g.values) check(names.insert(v.name).second, src + ": duplicate value name '" + v.name + "'");

  // One pass of the FP32 graph over the calibration images: activation histograms (calibrated
  // scales) and input covariances (output-aware rounding).
  std::map<ValueId, ActivationHistogram> histograms;
  std::vector<std::optional<InputCovariance>> covariances(m.layers.size());
  auto input_of = [&](const QuantizedLayer& l) { return g.nodes[node_index.at(l.node)].inputs[0]; };
  if (calibration) {
    if (options.activation_mode == ActivationMode::kCalibrated)
      for (const QuantizedLayer& l : m.layers)
        if (l.input) histograms.try_emplace(input_of(l), options.histogram_bins);
    if (options.activation_mode == ActivationMode::kCalibrated)
      for (const QuantizedInput& q : m.inputs)
        histograms.try_emplace(g.nodes[node_index.at(q.node)].inputs[static_cast<size_t>(q.input)], options.histogram_bins);
    if (options.output_aware)
      for (size_t i = 0; i < m.layers.size(); ++i) {
        const QuantizedLayer& l = m.layers[i];
        const Node& n = g.nodes[node_index.at(l.node)];
        bool fits = l.in * l.taps <= options.output_aware_max_inputs;  // H is (in*taps)^2, inverted in O(n^3)
        if (!fits) m.layers[i].reason += "; per-group rounding (input dimension above the output-aware limit)";
        if (fits && (n.op == OpType::kGemm || n.attr<ConvAttrs>().kernel.size() == 2))
          covariances[i].emplace(g, n, l.in, l.taps);
      }
    std::vector<ValueId> ids;
    for (auto& [id, h] : histograms) ids.push_back(id);
    for (size_t i = 0; i < m.layers.size(); ++i)
      if (covariances[i]) ids.push_back(input_of(m.layers[i]));
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    if (!ids.empty()) {
      try {
        for_each_batch(graph, ids, *calibration, options.batch, pool, [&](std::vector<Tensor>& values) {
          for (size_t k = 0; k < ids.size(); ++k) {
            if (auto it = histograms.find(ids[k]); it != histograms.end()) it->second.add(values[k].floats());
            for (size_t i = 0; i < m.layers.size(); ++i)
              if (covariances[i] && input_of(m.layers[i]) == ids[k]) covariances[i]->add(values[k], pool);
          }
        }, &options);
      } catch (const Error& e) {
        throw Error(std::string("calibration: ") + e.what());
      }
    }
  }

  // Weights: the base term of every layer (residual terms come after the activation scales).
  const Graph fp32 = g;  // canonical FP32 weights (constants are replaced below, never written into)
  const bool residual = options.residual.kind != ResidualBudget::Kind::kNone;
  std::vector<std::vector<float>> original(m.layers.size());
  for (size_t i = 0; i < m.layers.size(); ++i) {
    QuantizedLayer& l = m.layers[i];
    Node& n = g.nodes[node_index.at(l.node)];
    const Tensor& w = g.constant(n.inputs[1]);
    std::vector<float> weights(w.data<float>(), w.data<float>() + w.size());
    try {
      l.terms = {covariances[i] ? quantize_weights_output_aware(weights, l.out, l.in, l.taps, l.config, *covariances[i],
                                                                options.damping)
                                : quantize_weights(weights, l.out, l.in, l.taps, l.config)};
    } catch (const Error& e) {
      throw Error(src + ": layer '" + n.name + "': " + e.what());
    }
    l.active_terms = 1;
    l.weight_sqnr_db = l.terms[0].sqnr_db;
    *g.value(n.inputs[1]).constant = active_weights(l, w.shape());
    // The residual step expands ternary layers; an accuracy budget may upgrade any layer.
    if (residual && (l.config.format == WeightFormat::kTernary || options.residual.kind == ResidualBudget::Kind::kDrop))
      original[i] = std::move(weights);
  }

  // Activation scales.
  RangeCandidates range_candidates;
  check(!options.choose_calibration || calibration || options.activation_mode != ActivationMode::kCalibrated,
        src + ": --calibration auto tries each method on calibration images, and there are none");
  // The scale of activation quantizer `a` of value `in`; `choose`: with --calibration auto, the
  // method is chosen later from the candidates (layers' inputs).
  auto set_scale = [&](ActivationQuant& a, ValueId in, bool choose) {
    const std::string& in_name = g.value(in).name;
    switch (options.activation_mode) {
      case ActivationMode::kCalibrated: {
        bool reads_input = std::find(g.inputs.begin(), g.inputs.end(), in) != g.inputs.end();
        if (reads_input && options.input_threshold) {  // known exactly: nothing to estimate
          a = from_threshold(*options.input_threshold, a.bits, a.is_unsigned, a.power_of_two, "input range");
          break;
        }
        std::string how = calibration_method_name(options.calibration);
        if (options.calibration == CalibrationMethod::kPercentile) {
          char buf[32];
          std::snprintf(buf, sizeof buf, " %g", options.percentile);
          how += buf;
        }
        const ActivationHistogram& h = histograms.at(in);
        auto range = [&](CalibrationMethod method, double percentile, std::string how) {
          ActivationRange r = calibrate(h, method, a.bits, a.is_unsigned, a.power_of_two, percentile);
          if (options.asymmetric && !a.is_unsigned && !a.power_of_two && h.min() < 0) {
            ActivationRange asymmetric = calibrate_asymmetric(h, method, a.bits, percentile);
            if (asymmetric.scale < 0.9f * r.scale) r = asymmetric, how += ", asymmetric";
          }
          return from_range(r, how);
        };
        if (!options.choose_calibration || !choose) {
          a = range(options.calibration, options.percentile, how);
          break;
        }
        std::vector<ActivationQuant>& c = range_candidates[in];
        if (c.empty()) {  // once per input value, shared by the layers reading it
          for (double p : {99.9, 99.99, 99.999}) {
            char buf[32];
            std::snprintf(buf, sizeof buf, "percentile %g", p);
            c.push_back(range(CalibrationMethod::kPercentile, p, buf));
          }
          for (CalibrationMethod method : {CalibrationMethod::kMinMax, CalibrationMethod::kMse, CalibrationMethod::kEntropy})
            if (method != CalibrationMethod::kEntropy || h.bins() >= activation_qmax(a.bits, a.is_unsigned))
              c.push_back(range(method, options.percentile, calibration_method_name(method)));
          // Methods that agree are one candidate.
          std::vector<ActivationQuant> distinct;
          for (const ActivationQuant& q : c)
            if (std::none_of(distinct.begin(), distinct.end(), [&](const ActivationQuant& d) {
                  return d.scale == q.scale && d.zero_point == q.zero_point && d.is_unsigned == q.is_unsigned;
                }))
              distinct.push_back(q);
          c = std::move(distinct);
        }
        a = c.front();
        break;
      }
      case ActivationMode::kBatchNorm:
        if (auto it = options.static_thresholds.find(in_name); it != options.static_thresholds.end()) {
          a = from_threshold(it->second.first, a.bits, a.is_unsigned, a.power_of_two, it->second.second);
          break;
        }
        [[fallthrough]];
      case ActivationMode::kDynamic:
        a.dynamic = true;
        a.source = "dynamic";
        break;
    }
  };
  for (QuantizedLayer& l : m.layers) {
    if (!l.input) continue;
    if (auto fixed = options.fixed_activations.find(l.node); fixed != options.fixed_activations.end()) {
      *l.input = fixed->second;
      continue;
    }
    set_scale(*l.input, input_of(l), true);
    const Node& n = g.nodes[node_index.at(l.node)];
    if (options.per_token_scales && n.op == OpType::kGemm) {  // rows: tokens (or [N, K] images)
      ActivationQuant& a = *l.input;
      a.dynamic = a.per_token = true;
      a.is_unsigned = non_negative(input_of(l));  // not the asymmetric codes of a static scale
      a.zero_point = 0;
      a.power_of_two = false;
      a.scale = a.threshold = 0.0f;
      a.source = "dynamic per token";
    }
  }
  const std::vector<int> producers = g.producers();
  for (QuantizedInput& q : m.inputs) {
    ValueId in = g.nodes[node_index.at(q.node)].inputs[static_cast<size_t>(q.input)];
    int p = producers[static_cast<size_t>(in)];
    if (p >= 0 && g.nodes[static_cast<size_t>(p)].op == OpType::kSoftmax && q.quant.is_unsigned && !q.quant.power_of_two &&
        options.activation_mode != ActivationMode::kDynamic) {
      // Probabilities: [0, 1] is proved. A percentile would clip the few large ones, which carry
      // most of the attention.
      q.quant = from_threshold(1.0f, q.quant.bits, true, false, "softmax range");
      continue;
    }
    set_scale(q.quant, in, false);
  }

  if (!range_candidates.empty()) {
    check(options.choice_images >= 1, "calibration choice images must be >= 1");
    Tensor choice = slice_images(*calibration, 0, std::min(options.choice_images, calibration->dim(0)));
    choose_activation_ranges(m, fp32, range_candidates, choice, options.batch, pool);
  }

  check(!options.bias_correction || calibration, src + ": bias correction measures means on calibration images, and there are none");
  check(options.bias_correction_images >= 1, "bias correction images must be >= 1");
  std::optional<Tensor> bias_images;
  if (options.bias_correction)
    bias_images = slice_images(*calibration, 0, std::min(options.bias_correction_images, calibration->dim(0)));
  nlohmann::json bias_json;
  auto finish_biases = [&](QuantizedModel& model) {
    if (bias_images) bias_json = correct_biases(model, fp32, *bias_images, options.batch, pool);
    else quantize_biases(model, fp32);
  };
  nlohmann::json residual_json;
  if (residual) {
    ResidualContext ctx{fp32, original, covariances, options, calibration, pool, finish_biases};
    residual_json = allocate_residual(m, ctx);
  }
  finish_biases(m);

  if (calibration) {
    std::vector<std::optional<double>> sqnr = output_sqnr(m, graph, *calibration, options.batch, pool);
    for (size_t i = 0; i < m.layers.size(); ++i) m.layers[i].output_sqnr_db = sqnr[i];
  }

  QuantizedLayer defaults;
  defaults.config = options.plan.weights;
  nlohmann::json prov = {
      {"tern_version", TERN_VERSION},
      {"activations",
       {{"mode", activation_mode_name(options.activation_mode)},
        {"calibration", calibration_method_name(options.calibration)},
        {"percentile", options.percentile},
        {"power_of_two", options.power_of_two},
        {"output_aware", options.output_aware && calibration != nullptr},
        {"calibration_images", calibration ? calibration->dim(0) : 0}}},
      {"defaults",
       {{"weights", describe_weights(defaults)},
        {"activation_bits", options.plan.activation_bits},
        {"first_last_8bit", options.plan.first_last_8bit}, {"depthwise_8bit", options.plan.depthwise_8bit}}}};
  if (options.config_json) prov["config"] = *options.config_json;
  if (residual) prov["residual"] = residual_json;
  if (options.bias_correction) prov["bias_correction"] = bias_json;
  m.provenance_json = prov.dump();
  return m;
}

Graph simulation_graph(const QuantizedModel& model, Placeholders placeholders) {
  check(model.float_weights || placeholders == Placeholders::kAccepted,
        "internal: a simulation of a model loaded without its float weights (dequantize_weights first)");
  Graph g = model.graph;
  std::map<std::string, const QuantizedLayer*> by_node;
  for (const QuantizedLayer& l : model.layers) by_node[l.node] = &l;
  std::set<std::string> names;
  for (const Value& v : g.values) names.insert(v.name);
  std::map<std::tuple<ValueId, int, bool, bool, bool, float, int32_t, bool>, ValueId> made;
  std::vector<Node> nodes;
  nodes.reserve(g.nodes.size() * 2);
  std::map<std::string, std::vector<const QuantizedInput*>> operands;  // by node
  for (const QuantizedInput& q : model.inputs) operands[q.node].push_back(&q);
  // A FakeQuantize of value x in format a before node n's input k (shared by readers of the same
  // value and format).
  auto quantize_input = [&](Node& n, size_t k, const ActivationQuant& a, const std::string& suffix) {
    FakeQuantAttrs fq{a.bits, a.is_unsigned, a.dynamic, a.power_of_two, a.dynamic ? 1.0f : a.scale, a.zero_point, a.per_token};
    ValueId x = n.inputs[k];
    auto key = std::make_tuple(x, fq.bits, fq.is_unsigned, fq.dynamic, fq.power_of_two, fq.scale, fq.zero_point, fq.per_row);
    auto done = made.find(key);
    if (done == made.end()) {
      Value v = g.value(x);
      v.constant.reset();
      std::string base = v.name + "/quantized";
      v.name = base;
      for (int j = 2; names.count(v.name); ++j) v.name = base + std::to_string(j);
      names.insert(v.name);
      ValueId id = g.add_value(std::move(v));
      Node q;
      q.name = n.name + suffix;
      q.op = OpType::kFakeQuantize;
      q.inputs = {x};
      q.outputs = {id};
      q.attrs = fq;
      nodes.push_back(std::move(q));
      done = made.emplace(key, id).first;
    }
    n.inputs[k] = done->second;
  };
  for (Node& n : g.nodes) {
    auto it = by_node.find(n.name);
    if (it != by_node.end() && it->second->input) quantize_input(n, 0, *it->second->input, "/input_quant");
    if (auto o = operands.find(n.name); o != operands.end())
      for (const QuantizedInput* q : o->second)
        quantize_input(n, static_cast<size_t>(q->input), q->quant, "/input" + std::to_string(q->input) + "_quant");
    nodes.push_back(std::move(n));
  }
  g.nodes = std::move(nodes);
  return g;
}

std::vector<std::optional<double>> output_sqnr(const QuantizedModel& model, const Graph& reference,
                                               const Tensor& images, int64_t batch, ThreadPool* pool) {
  Graph sim = simulation_graph(model);
  std::vector<ValueId> ref_ids, sim_ids;
  for (const QuantizedLayer& l : model.layers) {
    const Node* n = nullptr;
    for (const Node& x : sim.nodes)
      if (x.name == l.node) n = &x;
    check(n != nullptr, "output SQNR: layer '" + l.node + "' is not in the graph");
    const std::string& y = sim.value(n->outputs[0]).name;
    ValueId r = reference.find_value(y);
    check(r != kNoValue, "output SQNR: the reference graph has no value '" + y + "'");
    ref_ids.push_back(r);
    sim_ids.push_back(n->outputs[0]);
  }
  // Both graphs run batch by batch in lockstep, so no batch's outputs outlive it.
  auto executor = [&](Graph g, const std::vector<ValueId>& ids) {
    g.outputs = ids;
    ExecutorOptions options;
    options.pool = pool;
    return Executor(std::move(g), options);
  };
  Executor ref_exec = executor(reference, ref_ids), sim_exec = executor(sim, sim_ids);
  std::vector<double> signal(model.layers.size(), 0.0), noise(model.layers.size(), 0.0);
  for (int64_t b = 0; b < images.dim(0); b += batch) {
    Tensor x = slice_images(images, b, std::min(batch, images.dim(0) - b));
    std::vector<Tensor> r = ref_exec.run(std::span<const Tensor>(&x, 1));
    std::vector<Tensor> v = sim_exec.run(std::span<const Tensor>(&x, 1));
    for (size_t i = 0; i < v.size(); ++i) {
      const float* pr = r[i].data<float>();
      const float* pq = v[i].data<float>();
      for (int64_t k = 0; k < v[i].size(); ++k) {
        signal[i] += static_cast<double>(pr[k]) * pr[k];
        noise[i] += (static_cast<double>(pr[k]) - pq[k]) * (static_cast<double>(pr[k]) - pq[k]);
      }
    }
  }
  std::vector<std::optional<double>> db(model.layers.size());
  for (size_t i = 0; i < db.size(); ++i)
    if (signal[i] > 0) db[i] = noise[i] > 0 ? 10.0 * std::log10(signal[i] / noise[i]) : INFINITY;
  return db;
}

int code_field_bits(WeightFormat format, int bits) {
  switch (format) {
    case WeightFormat::kBinary: return 1;
    case WeightFormat::kTernary: return 2;
    case WeightFormat::kInt: return bits <= 2 ? 2 : bits <= 4 ? 4 : 8;
    case WeightFormat::kFloat32: break;
  }
  throw Error("float32 weights have no integer codes");
}

std::vector<uint8_t> pack_codes(const std::vector<int8_t>& codes, WeightFormat format, int bits) {
  const int w = code_field_bits(format, bits), per_byte = 8 / w;
  const unsigned mask = (1u << w) - 1u;
  std::vector<uint8_t> packed(static_cast<size_t>(ceil_div(static_cast<int64_t>(codes.size()), per_byte)), 0);
  for (size_t i = 0; i < codes.size(); ++i) {
    unsigned field = format == WeightFormat::kBinary ? (codes[i] > 0 ? 1u : 0u) : static_cast<unsigned>(codes[i]) & mask;
    packed[i / per_byte] |= static_cast<uint8_t>(field << ((i % per_byte) * w));
  }
  return packed;
}

std::vector<int8_t> unpack_codes(const uint8_t* packed, size_t packed_bytes, int64_t count, WeightFormat format,
                                 int bits, const std::string& what) {
  const int w = code_field_bits(format, bits), per_byte = 8 / w;
  check(count >= 0 && packed_bytes == static_cast<size_t>(ceil_div(count, per_byte)),
        what + ": packed codes have the wrong length");
  const unsigned mask = (1u << w) - 1u;
  const int lo = format == WeightFormat::kTernary ? -1 : format == WeightFormat::kBinary ? -1 : -((1 << (bits - 1)) - 1);
  const int hi = -lo;
  std::vector<int8_t> codes(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    unsigned field = (packed[i / per_byte] >> ((i % per_byte) * w)) & mask;
    int v = format == WeightFormat::kBinary ? (field ? 1 : -1)
                                            : static_cast<int>(field) - ((field >> (w - 1)) ? (1 << w) : 0);
    if (v < lo || v > hi)  // the message is built only on failure: this loop runs once per weight
      throw Error(what + ": code " + std::to_string(v) + " at index " + std::to_string(i) + " is outside the format's range");
    codes[static_cast<size_t>(i)] = static_cast<int8_t>(v);
  }
  // Bits after the last code must be zero: a stray bit means corruption, not a code.
  if (count % per_byte) check((packed[packed_bytes - 1] >> ((count % per_byte) * w)) == 0, what + ": non-zero padding bits");
  return codes;
}

int64_t term_bytes(const QuantizedWeights& t, const WeightQuantConfig& config) {
  int w = code_field_bits(t.format, t.bits);
  int spg = scales_per_group(config);
  int64_t bytes = ceil_div(static_cast<int64_t>(t.codes.size()) * w, 8);
  return bytes + (t.filter_steps.empty() ? t.grouping.count() * spg * 4  // float32 scales
                                         : t.grouping.count() * spg + static_cast<int64_t>(t.filter_steps.size()) * 4);
}

int64_t layer_bytes(const QuantizedLayer& l, bool all_terms) {
  int64_t bytes = 0;
  size_t count = all_terms ? l.terms.size() : std::clamp<size_t>(l.active_terms, 1, l.terms.size());
  for (size_t j = 0; j < count && j < l.terms.size(); ++j) bytes += term_bytes(l.terms[j], l.config);
  if (!l.bias_value.empty()) bytes += l.out * 4;  // int32, or float32 with dynamic activation scales
  return bytes;
}

ModelSize model_size(const QuantizedModel& m) {
  ModelSize s;
  std::set<std::string> owned;
  for (const QuantizedLayer& l : m.layers) {
    s.quantized += layer_bytes(l);
    s.stored += layer_bytes(l, true) - layer_bytes(l);
    owned.insert(l.weight_value);
    if (!l.bias_value.empty()) owned.insert(l.bias_value);
  }
  for (const Value& v : m.graph.values)
    if (v.constant) {
      s.fp32 += v.constant->bytes();
      if (!owned.count(v.name)) s.quantized += v.constant->bytes();
    }
  s.stored += s.quantized;
  s.int8 = s.fp32;
  for (const Node& n : m.graph.nodes) {
    if ((n.op != OpType::kConv && n.op != OpType::kGemm) || n.inputs.size() < 2 || !m.graph.is_constant(n.inputs[1]))
      continue;
    // First: an Error unless shape inference checked the node (and so the rank of its weights).
    int64_t per_image = outputs_per_image(m.graph, n);
    const Tensor& w = m.graph.constant(n.inputs[1]);
    int64_t out = n.op == OpType::kConv || n.attr<GemmAttrs>().trans_b ? w.dim(0) : w.dim(w.rank() - 1);
    s.int8 += w.size() + out * 4 - static_cast<int64_t>(w.bytes());
    const QuantizedLayer* l = m.find(n.name);
    int64_t macs = 0, multiplies = 0;
    check(!__builtin_mul_overflow(per_image, w.size() / std::max<int64_t>(1, out), &macs) &&
              !__builtin_add_overflow(s.macs_per_image, macs, &s.macs_per_image) &&
              !__builtin_add_overflow(s.multiplies_per_image, l ? l->multiplies_per_image() : macs, &multiplies),
          m.graph.source + ": node '" + n.name + "': multiply-accumulates per image overflow 64 bits");
    s.multiplies_per_image = multiplies;
  }
  return s;
}

std::string describe_weights(const QuantizedLayer& l) {
  const WeightQuantConfig& c = l.config;
  auto group = [&]() -> std::string {
    if (c.group_size == kWholeFilter) return "per-channel";
    if (c.format == WeightFormat::kInt && c.group_size == -1) return "per-tensor";
    if (c.format == WeightFormat::kTernary && c.method == TernaryMethod::kCluster) return "N=" + std::to_string(c.group_size) + " filters";
    return "N=" + std::to_string(c.group_size);
  };
  std::string terms = l.terms.size() > 1 ? " x" + std::to_string(l.terms.size()) : "";
  switch (c.format) {
    case WeightFormat::kFloat32: return "float32";
    case WeightFormat::kTernary:
      return std::string("ternary ") + method_name(c.method) + " " + group() + terms;
    case WeightFormat::kBinary: return "binary " + group() + terms;
    case WeightFormat::kInt: return "int" + std::to_string(c.bits) + " " + group() + terms;
  }
  return "?";
}

std::string describe_activation(const ActivationQuant& a) {
  std::string s = std::string(a.is_unsigned ? "u" : "s") + std::to_string(a.bits);
  if (a.dynamic) return s + (a.power_of_two ? " dynamic 2^k" : a.per_token ? " dynamic per token" : " dynamic");
  char buf[64];
  if (a.power_of_two) std::snprintf(buf, sizeof buf, " 2^%d", static_cast<int>(std::lround(std::log2(a.scale))));
  else std::snprintf(buf, sizeof buf, " %.3g", a.scale);
  if (a.zero_point != 0) s += std::string(buf) + " zp " + std::to_string(a.zero_point), buf[0] = 0;
  return s + buf + " (" + a.source + ")";
}

const char* activation_mode_name(ActivationMode mode) {
  switch (mode) {
    case ActivationMode::kCalibrated: return "calibrated";
    case ActivationMode::kDynamic: return "dynamic";
    case ActivationMode::kBatchNorm: return "batchnorm";
  }
  return "?";
}

ActivationMode parse_activation_mode(const std::string& name) {
  if (name == "calibrated") return ActivationMode::kCalibrated;
  if (name == "dynamic") return ActivationMode::kDynamic;
  if (name == "batchnorm") return ActivationMode::kBatchNorm;
  throw Error("unknown activation mode '" + name + "' (calibrated, dynamic, batchnorm)");
}

}  // namespace tern::quant
