// Cross-layer equalization and activation smoothing (see tern/equalization.h).
#include "tern/equalization.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "quant/batches.h"
#include "tern/error.h"

namespace tern {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A layer's weights seen by channel: output channel i (rows) and input channel i (what reads it).
struct LayerView {
  bool ok = false;
  int64_t out = 0, in = 0;    // output channels; input channels (all groups)
  int64_t group = 1, taps = 1;  // Conv groups; spatial taps per filter
};

bool relu_or_linear(float lo, float hi) { return hi == kInf && (lo == 0.0f || lo == -kInf); }

LayerView view(const Graph& g, const Node& n) {
  LayerView v;
  if ((n.op != OpType::kConv && n.op != OpType::kGemm) || n.inputs.size() < 2 || !g.is_constant(n.inputs[1])) return v;
  const Tensor& w = g.constant(n.inputs[1]);
  if (w.dtype() != DataType::kFloat32 || w.rank() < 2) return v;
  if (n.op == OpType::kGemm) {
    const auto& a = n.attr<GemmAttrs>();
    if (!a.trans_b || a.trans_a || a.alpha != 1.0f || w.rank() != 2) return v;
    v.out = w.dim(0);
    v.in = w.dim(1);
  } else {
    v.group = n.attr<ConvAttrs>().group;
    if (v.group < 1 || w.dim(0) % v.group != 0) return v;
    v.out = w.dim(0);
    v.in = w.dim(1) * v.group;
    v.taps = w.size() / (w.dim(0) * w.dim(1));
  }
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) {
    if (!g.is_constant(n.inputs[2]) || g.constant(n.inputs[2]).size() != v.out) return v;
    if (n.op == OpType::kGemm && n.attr<GemmAttrs>().beta != 1.0f) return v;
  }
  v.ok = true;
  return v;
}

// Visits every weight of `v` that reads input channel i: f(float&).
template <typename F>
void for_input_channel(Tensor& w, const LayerView& v, int64_t i, F f) {
  float* p = w.data<float>();
  if (v.group == 1 && v.taps == 1) {  // Gemm [N, K] or 1x1 Conv [O, I, 1, 1]
    for (int64_t o = 0; o < v.out; ++o) f(p[o * v.in + i]);
    return;
  }
  int64_t ipg = v.in / v.group, opg = v.out / v.group, g = i / ipg, k = i % ipg;
  for (int64_t o = g * opg; o < (g + 1) * opg; ++o)
    for (int64_t t = 0; t < v.taps; ++t) f(p[(o * ipg + k) * v.taps + t]);
}

}  // namespace

EqualizationReport equalize_cross_layer(Graph& graph) {
  EqualizationReport report;
  std::vector<int> producer = graph.producers();
  std::vector<int> consumers = graph.consumer_counts();
  // Working copies of the weights and biases of every layer in a pair, written back at the end.
  std::map<size_t, Tensor> weights, biases;
  std::map<size_t, LayerView> views;
  std::vector<std::pair<size_t, size_t>> pairs;
  for (size_t b = 0; b < graph.nodes.size(); ++b) {
    const Node& nb = graph.nodes[b];
    LayerView vb = view(graph, nb);
    if (!vb.ok) continue;
    ValueId x = nb.inputs[0];
    int a = producer[static_cast<size_t>(x)];
    if (a < 0 || consumers[static_cast<size_t>(x)] != 1 || std::find(graph.outputs.begin(), graph.outputs.end(), x) != graph.outputs.end())
      continue;
    const Node& na = graph.nodes[static_cast<size_t>(a)];
    LayerView va = view(graph, na);
    if (!va.ok || na.op != nb.op || va.out != vb.in || na.outputs[0] != x) continue;
    bool clamp_ok = na.op == OpType::kConv ? relu_or_linear(na.attr<ConvAttrs>().clamp_lo, na.attr<ConvAttrs>().clamp_hi)
                                           : relu_or_linear(na.attr<GemmAttrs>().clamp_lo, na.attr<GemmAttrs>().clamp_hi);
    if (!clamp_ok) continue;
    for (size_t k : {static_cast<size_t>(a), b}) {
      const Node& n = graph.nodes[k];
      if (weights.count(k)) continue;
      weights[k] = graph.constant(n.inputs[1]).clone();
      if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) biases[k] = graph.constant(n.inputs[2]).clone();
      views[k] = view(graph, n);
    }
    pairs.emplace_back(static_cast<size_t>(a), b);
    report.pairs.emplace_back(na.name, nb.name);
  }
  if (pairs.empty()) return report;

  for (report.sweeps = 1; report.sweeps <= 32; ++report.sweeps) {
    double moved = 0;
    for (auto [a, b] : pairs) {
      Tensor& wa = weights[a];
      Tensor& wb = weights[b];
      const LayerView& va = views[a];
      const LayerView& vb = views[b];
      int64_t per_row = wa.size() / va.out;
      for (int64_t i = 0; i < va.out; ++i) {
        float* row = wa.data<float>() + i * per_row;
        float ra = 0, rb = 0;
        for (int64_t k = 0; k < per_row; ++k) ra = std::max(ra, std::fabs(row[k]));
        for_input_channel(wb, vb, i, [&](float& w) { rb = std::max(rb, std::fabs(w)); });
        if (!(ra > 0) || !(rb > 0) || !std::isfinite(ra) || !std::isfinite(rb)) continue;
        float s = std::clamp(std::sqrt(ra / rb), 1e-4f, 1e4f);
        moved = std::max(moved, std::fabs(std::log(static_cast<double>(s))));
        for (int64_t k = 0; k < per_row; ++k) row[k] /= s;
        if (auto it = biases.find(a); it != biases.end()) it->second.data<float>()[i] /= s;
        for_input_channel(wb, vb, i, [&](float& w) { w *= s; });
      }
    }
    if (moved < 1e-3) break;
  }
  report.sweeps = std::min(report.sweeps, 32);
  for (auto& [k, w] : weights) {
    Node& n = graph.nodes[k];
    n.inputs[1] = graph.add_constant(n.name + ".weight_equalized", std::move(w));
    if (auto it = biases.find(k); it != biases.end()) n.inputs[2] = graph.add_constant(n.name + ".bias_equalized", std::move(it->second));
  }
  return report;
}

namespace {

// A constant of D elements over the last axis (shape [D], [1, D], [1, 1, D], ...).
bool per_last_channel(const Graph& g, ValueId v, int64_t d) {
  if (!g.is_constant(v)) return false;
  const Tensor& t = g.constant(v);
  if (t.dtype() != DataType::kFloat32 || t.rank() < 1 || t.size() != d || t.shape().back() != d) return false;
  return true;
}

// The constants to divide by s for a smoothable value: gamma (and beta), or none.
std::vector<ValueId*> affine_source(Graph& g, ValueId x, int64_t d, const std::vector<int>& producer,
                                    const std::vector<int>& consumers) {
  int p = producer[static_cast<size_t>(x)];
  if (p < 0) return {};
  Node& n = g.nodes[static_cast<size_t>(p)];
  // Moves that keep the channels on the last axis (a Transpose to sequence-first, a Reshape that
  // merges leading dims) commute with a per-channel scale: look through them when they alone read
  // their input.
  if ((n.op == OpType::kTranspose || n.op == OpType::kReshape) && !n.inputs.empty()) {
    ValueId in = n.inputs[0];
    const Shape& si = g.value(in).shape;
    const Shape& so = g.value(x).shape;
    bool keeps_last = !si.empty() && !so.empty() && si.back() == d && so.back() == d;
    if (n.op == OpType::kTranspose) {
      const std::vector<int64_t>& perm = n.attr<TransposeAttrs>().perm;
      keeps_last = keeps_last && !perm.empty() && perm.back() == static_cast<int64_t>(si.size()) - 1;
    }
    if (!keeps_last || g.is_constant(in) || consumers[static_cast<size_t>(in)] != 1 ||
        std::find(g.outputs.begin(), g.outputs.end(), in) != g.outputs.end())
      return {};
    return affine_source(g, in, d, producer, consumers);
  }
  if (n.op == OpType::kLayerNormalization) {
    if (n.attr<LayerNormAttrs>().axis != -1 && n.attr<LayerNormAttrs>().axis != static_cast<int64_t>(g.value(x).shape.size()) - 1)
      return {};
    if (n.inputs.size() < 2 || !per_last_channel(g, n.inputs[1], d)) return {};
    std::vector<ValueId*> c = {&n.inputs[1]};
    if (n.inputs.size() > 2 && n.inputs[2] != kNoValue) {
      if (!per_last_channel(g, n.inputs[2], d)) return {};
      c.push_back(&n.inputs[2]);
    }
    return c;
  }
  auto constant_side = [&](Node& m) -> int {
    if (m.inputs.size() != 2) return -1;
    for (int k = 0; k < 2; ++k)
      if (per_last_channel(g, m.inputs[static_cast<size_t>(k)], d) && !g.is_constant(m.inputs[static_cast<size_t>(1 - k)])) return k;
    return -1;
  };
  if (n.op == OpType::kMul) {
    int k = constant_side(n);
    if (k < 0) return {};
    return {&n.inputs[static_cast<size_t>(k)]};
  }
  if (n.op != OpType::kAdd) return {};
  int k = constant_side(n);
  if (k < 0) return {};
  ValueId y = n.inputs[static_cast<size_t>(1 - k)];
  int q = producer[static_cast<size_t>(y)];
  if (q < 0 || consumers[static_cast<size_t>(y)] != 1 || std::find(g.outputs.begin(), g.outputs.end(), y) != g.outputs.end())
    return {};
  Node& mul = g.nodes[static_cast<size_t>(q)];
  if (mul.op != OpType::kMul) return {};
  int j = constant_side(mul);
  if (j < 0) return {};
  return {&mul.inputs[static_cast<size_t>(j)], &n.inputs[static_cast<size_t>(k)]};
}

}  // namespace

SmoothingReport smooth_activations(Graph& graph, const Tensor& calibration, double alpha, int64_t batch, ThreadPool* pool) {
  check(alpha >= 0 && alpha <= 1, "smoothing alpha must be in [0, 1]");
  check(batch >= 1, "smoothing: the batch must be >= 1");
  SmoothingReport report;
  report.alpha = alpha;
  std::vector<int> producer = graph.producers();
  std::vector<int> consumers = graph.consumer_counts();
  // Candidates: values read only by Gemm layers (as their data input) with constant [N, D] weights.
  std::map<ValueId, std::vector<size_t>> readers;
  std::map<ValueId, int> reads;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    for (size_t k = 0; k < graph.nodes[i].inputs.size(); ++k) {
      ValueId v = graph.nodes[i].inputs[k];
      if (v == kNoValue || graph.nodes[i].op == OpType::kShape) continue;  // a Shape reads no values
      ++reads[v];
      const Node& n = graph.nodes[i];
      if (k == 0 && n.op == OpType::kGemm && view(graph, n).ok) readers[v].push_back(i);
    }
  struct Candidate {
    ValueId x;
    int64_t d;
    std::vector<size_t> gemms;
    std::vector<ValueId*> constants;
  };
  std::vector<Candidate> cands;
  for (auto& [x, gemms] : readers) {
    if (static_cast<int>(gemms.size()) != reads[x] || std::find(graph.outputs.begin(), graph.outputs.end(), x) != graph.outputs.end())
      continue;
    int64_t d = graph.constant(graph.nodes[gemms[0]].inputs[1]).dim(1);
    std::vector<ValueId*> c = affine_source(graph, x, d, producer, consumers);
    if (!c.empty()) cands.push_back({x, d, gemms, c});
  }
  if (cands.empty()) return report;

  // max |x_j| per channel over the calibration images.
  std::vector<ValueId> ids;
  for (const Candidate& c : cands) ids.push_back(c.x);
  std::vector<std::vector<float>> amax(cands.size());
  for (size_t k = 0; k < cands.size(); ++k) amax[k].assign(static_cast<size_t>(cands[k].d), 0.0f);
  quant::for_each_batch(graph, ids, calibration, batch, pool, [&](const std::vector<Tensor>& out) {
    for (size_t k = 0; k < cands.size(); ++k) {
      const Tensor& t = out[k];
      int64_t d = cands[k].d;
      check(t.dtype() == DataType::kFloat32 && t.size() % d == 0, graph.source + ": smoothing: value '" +
                                                                       graph.value(cands[k].x).name + "' does not have " +
                                                                       std::to_string(d) + " channels last");
      const float* p = t.data<float>();
      for (int64_t i = 0; i < t.size(); ++i) {
        float& m = amax[k][static_cast<size_t>(i % d)];
        m = std::max(m, std::fabs(p[i]));
      }
    }
  });

  for (size_t k = 0; k < cands.size(); ++k) {
    Candidate& c = cands[k];
    std::vector<Tensor> w;
    std::vector<float> wmax(static_cast<size_t>(c.d), 0.0f);
    for (size_t gi : c.gemms) {
      w.push_back(graph.constant(graph.nodes[gi].inputs[1]).clone());
      const Tensor& t = w.back();
      for (int64_t i = 0; i < t.size(); ++i) wmax[static_cast<size_t>(i % c.d)] = std::max(wmax[static_cast<size_t>(i % c.d)], std::fabs(t.data<float>()[i]));
    }
    std::vector<float> s(static_cast<size_t>(c.d), 1.0f);
    for (int64_t j = 0; j < c.d; ++j) {
      float a = amax[k][static_cast<size_t>(j)], b = wmax[static_cast<size_t>(j)];
      if (a > 0 && b > 0 && std::isfinite(a) && std::isfinite(b))
        s[static_cast<size_t>(j)] = std::clamp(static_cast<float>(std::pow(a, alpha) / std::pow(b, 1 - alpha)), 1e-5f, 1e5f);
    }
    for (size_t gi = 0; gi < c.gemms.size(); ++gi) {
      Tensor& t = w[gi];
      for (int64_t i = 0; i < t.size(); ++i) t.data<float>()[i] *= s[static_cast<size_t>(i % c.d)];
      Node& n = graph.nodes[c.gemms[gi]];
      n.inputs[1] = graph.add_constant(n.name + ".weight_smoothed", std::move(t));
    }
    for (ValueId* v : c.constants) {
      Tensor t = graph.constant(*v).clone();
      for (int64_t j = 0; j < c.d; ++j) t.data<float>()[j] /= s[static_cast<size_t>(j)];
      *v = graph.add_constant(graph.value(*v).name + ".smoothed", std::move(t));
    }
    report.inputs.push_back(graph.value(c.x).name);
  }
  return report;
}

}  // namespace tern
