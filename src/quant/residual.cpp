// Residual edge allocation: budgets, the greedy ranking, data-free propagation gains and measured
// sensitivities (see tern/residual.h).
#include "tern/residual.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "quant/batches.h"
#include "tern/error.h"
#include "tern/executor.h"

namespace tern::quant {

const char* residual_ranking_name(ResidualRanking r) {
  switch (r) {
    case ResidualRanking::kMeasured: return "measured";
    case ResidualRanking::kWeights: return "weights";
    case ResidualRanking::kUniform: return "uniform";
    case ResidualRanking::kRandom: return "random";
  }
  return "?";
}

ResidualRanking parse_residual_ranking(const std::string& name) {
  if (name == "measured") return ResidualRanking::kMeasured;
  if (name == "weights") return ResidualRanking::kWeights;
  if (name == "uniform") return ResidualRanking::kUniform;
  if (name == "random") return ResidualRanking::kRandom;
  throw Error("unknown residual ranking '" + name + "' (measured, weights, uniform, random)");
}

ResidualBudget parse_residual_budget(const std::string& text) {
  ResidualBudget b;
  if (text == "all") {
    b.kind = ResidualBudget::Kind::kAll;
    return b;
  }
  auto bad = [&](const std::string& why) { return Error("residual budget '" + text + "': " + why); };
  size_t colon = text.find(':');
  if (colon == std::string::npos) throw bad("expected size:BYTES, size:P%, edges:K, drop:PP or all");
  std::string kind = text.substr(0, colon), value = text.substr(colon + 1);
  double scale = 1;
  if (kind == "size" && !value.empty()) {
    char last = value.back();
    if (last == '%') b.percent_of_int8 = true;
    else if (last == 'k' || last == 'K') scale = 1e3;
    else if (last == 'M') scale = 1e6;
    if (b.percent_of_int8 || scale != 1) value.pop_back();
  }
  double v = 0;
  try {
    size_t used = 0;
    v = std::stod(value, &used);
    if (used != value.size()) throw bad("'" + value + "' is not a number");
  } catch (const std::logic_error&) {
    throw bad("'" + value + "' is not a number");
  }
  v *= scale;
  if (!std::isfinite(v) || v < 0) throw bad("the value must be a finite number >= 0");
  if (kind == "size") {
    b.kind = ResidualBudget::Kind::kSize;
    if (b.percent_of_int8 ? v > 1000 : v > 1e12) throw bad("absurdly large size");
  } else if (kind == "edges") {
    b.kind = ResidualBudget::Kind::kEdges;
    if (v != std::floor(v) || v > 1e6) throw bad("the edge count must be a whole number <= 1000000");
  } else if (kind == "drop") {
    b.kind = ResidualBudget::Kind::kDrop;
    if (v > 100) throw bad("an accuracy drop is at most 100 percentage points");
  } else {
    throw bad("unknown budget kind '" + kind + "' (size, edges, drop, all)");
  }
  b.value = v;
  return b;
}

namespace {

// Where each layer stands while moves are applied.
struct LayerState {
  int terms = 1;
  bool fallback = false;
  bool kept_float = false;
};

double error_scale(const ResidualCandidate& c) { return c.error[0] > 0 ? c.sensitivity / c.error[0] : 0.0; }

double current_error(const ResidualCandidate& c, const LayerState& s) {
  if (s.kept_float) return 0.0;
  return s.fallback ? c.fallback_error : c.error[static_cast<size_t>(s.terms - 1)];
}

int64_t current_bytes(const ResidualCandidate& c, const LayerState& s) {
  if (s.kept_float) return c.float_bytes;
  if (s.fallback) return c.fallback_bytes;
  int64_t b = 0;
  for (int j = 0; j < s.terms; ++j) b += c.term_bytes[static_cast<size_t>(j)];
  return b;
}

void apply_move(std::vector<LayerState>& state, const ResidualMove& m) {
  if (m.term == kFloatMove) state[m.layer] = {1, false, true};
  else if (m.term == 0) state[m.layer].fallback = true;
  else state[m.layer].terms = m.term + 1;
}

}  // namespace

std::vector<ResidualMove> order_residual_moves(const std::vector<ResidualCandidate>& layers, ResidualRanking ranking,
                                               int64_t max_bytes, uint64_t seed) {
  for (const ResidualCandidate& c : layers)
    check(!c.term_bytes.empty() && c.term_bytes.size() == c.error.size() && c.error[0] >= 0,
          "residual allocation: every layer needs a base term and one error per term");
  std::vector<LayerState> state(layers.size());
  std::vector<ResidualMove> moves;
  int64_t spent = 0;
  auto edge_move = [&](size_t l) {
    const ResidualCandidate& c = layers[l];
    const LayerState& s = state[l];
    ResidualMove m{l, s.terms, c.term_bytes[static_cast<size_t>(s.terms)], 0.0};
    m.gain = error_scale(c) * (current_error(c, s) - c.error[static_cast<size_t>(s.terms)]);
    return m;
  };
  auto fits = [&](const ResidualMove& m) { return m.bytes <= max_bytes - spent; };

  if (ranking == ResidualRanking::kUniform) {  // term 1 everywhere, then term 2, ...
    size_t rounds = 0;
    for (const ResidualCandidate& c : layers) rounds = std::max(rounds, c.term_bytes.size());
    for (size_t j = 1; j < rounds; ++j)
      for (size_t l = 0; l < layers.size(); ++l) {
        if (static_cast<size_t>(state[l].terms) != j || j >= layers[l].term_bytes.size()) continue;
        ResidualMove m = edge_move(l);
        if (!fits(m)) continue;
        spent += m.bytes;
        apply_move(state, m);
        moves.push_back(m);
      }
    return moves;
  }

  std::mt19937_64 rng(seed);
  for (;;) {
    std::vector<ResidualMove> options;
    for (size_t l = 0; l < layers.size(); ++l) {
      const ResidualCandidate& c = layers[l];
      const LayerState& s = state[l];
      if (s.kept_float) continue;
      if (c.float_bytes >= 0 && ranking != ResidualRanking::kRandom)
        options.push_back({l, kFloatMove, c.float_bytes - current_bytes(c, s),
                           error_scale(c) * current_error(c, s) + c.float_extra});
      if (s.fallback) continue;
      if (static_cast<size_t>(s.terms) < c.term_bytes.size()) options.push_back(edge_move(l));
      if (c.fallback_bytes >= 0 && ranking != ResidualRanking::kRandom)  // random distributes edges only
        options.push_back({l, 0, c.fallback_bytes - current_bytes(c, s),
                           error_scale(c) * (current_error(c, s) - c.fallback_error)});
    }
    std::erase_if(options, [&](const ResidualMove& m) {
      return !fits(m) || (ranking != ResidualRanking::kRandom && !(m.gain > 0));
    });
    if (options.empty()) break;
    size_t pick = 0;
    if (ranking == ResidualRanking::kRandom) {
      pick = std::uniform_int_distribution<size_t>(0, options.size() - 1)(rng);
    } else {
      // Best gain per added byte; an upgrade that saves bytes and helps comes first.
      auto better = [](const ResidualMove& a, const ResidualMove& b) {
        bool a_free = a.bytes <= 0, b_free = b.bytes <= 0;
        if (a_free != b_free) return a_free;
        if (a_free) return a.gain > b.gain;
        return a.gain * static_cast<double>(b.bytes) > b.gain * static_cast<double>(a.bytes);
      };
      for (size_t i = 1; i < options.size(); ++i)
        if (better(options[i], options[pick])) pick = i;
    }
    ResidualMove m = options[pick];
    spent += m.bytes;
    apply_move(state, m);
    moves.push_back(m);
  }
  return moves;
}

ResidualAllocation allocation_from_moves(const std::vector<ResidualCandidate>& layers,
                                         const std::vector<ResidualMove>& moves, size_t count) {
  check(count <= moves.size(), "residual allocation: more moves requested than ranked");
  std::vector<LayerState> state(layers.size());
  ResidualAllocation a;
  a.fallback.assign(layers.size(), false);
  a.kept_float.assign(layers.size(), false);
  for (size_t i = 0; i < count; ++i) {
    const ResidualMove& m = moves[i];
    check(m.layer < layers.size(), "residual allocation: move names no layer");
    apply_move(state, m);
    if (m.term == 0 || m.term == kFloatMove) {
      (m.term == 0 ? a.fallback : a.kept_float)[m.layer] = true;
      if (m.term == kFloatMove) a.fallback[m.layer] = false;
      std::erase_if(a.edges, [&](const ResidualMove& e) { return e.layer == m.layer; });
    } else {
      a.edges.push_back(m);
    }
  }
  for (size_t l = 0; l < layers.size(); ++l)
    a.estimated_distortion +=
        error_scale(layers[l]) * current_error(layers[l], state[l]) + (state[l].kept_float ? 0.0 : layers[l].float_extra);
  return a;
}

std::vector<double> propagation_gains(const Graph& g, const std::vector<std::string>& layers) {
  const size_t L = layers.size();
  std::map<std::string, size_t> layer_of;
  for (size_t l = 0; l < L; ++l) layer_of[layers[l]] = l;
  struct Energy {
    double signal = 0;
    std::vector<double> noise;
  };
  std::vector<std::optional<Energy>> e(g.values.size());
  for (ValueId in : g.inputs) e[static_cast<size_t>(in)] = Energy{1.0, std::vector<double>(L, 0.0)};
  auto mean_square = [](const Tensor& t) {
    double s = 0;
    if (t.dtype() != DataType::kFloat32 || t.size() == 0) return 0.0;
    for (float v : t.floats()) s += static_cast<double>(v) * v;
    return s / static_cast<double>(t.size());
  };
  auto scaled = [](Energy x, double f) {
    x.signal *= f;
    for (double& n : x.noise) n *= f;
    return x;
  };
  std::vector<size_t> found(L, 0);
  for (const Node& n : g.nodes) {
    std::vector<const Energy*> ins;
    std::vector<ValueId> in_ids;
    for (ValueId id : n.inputs)
      if (id != kNoValue && !g.is_constant(id) && e[static_cast<size_t>(id)]) {
        ins.push_back(&*e[static_cast<size_t>(id)]);
        in_ids.push_back(id);
      }
    if (ins.empty()) continue;  // a node on constants only (shape arithmetic)
    Energy y = *ins[0];
    switch (n.op) {
      case OpType::kConv:
      case OpType::kGemm: {
        if (n.inputs.size() < 2 || !g.is_constant(n.inputs[1])) break;
        const Tensor& w = g.constant(n.inputs[1]);
        bool trans_b = n.op == OpType::kConv || n.attr<GemmAttrs>().trans_b;
        int64_t out = trans_b ? w.dim(0) : w.dim(w.rank() - 1);
        double f = mean_square(w) * static_cast<double>(w.size()) / static_cast<double>(std::max<int64_t>(1, out));
        if (n.op == OpType::kGemm) f *= static_cast<double>(n.attr<GemmAttrs>().alpha) * n.attr<GemmAttrs>().alpha;
        double s_in = y.signal;
        y = scaled(y, f);
        if (auto it = layer_of.find(n.name); it != layer_of.end()) {
          y.noise[it->second] += f * s_in;
          found[it->second] = 1;
        }
        float lo = n.op == OpType::kConv ? n.attr<ConvAttrs>().clamp_lo : n.attr<GemmAttrs>().clamp_lo;
        if (lo >= 0.0f) y = scaled(y, 0.5);  // fused ReLU / ReLU6
        break;
      }
      case OpType::kRelu: y = scaled(y, 0.5); break;
      case OpType::kSigmoid:
      case OpType::kHardSigmoid: {
        if (n.op == OpType::kHardSigmoid && n.attr<AffineAttrs>().multiply_input) break;  // HardSwish: passes
        // A gate: in its linear part the output's energy is its mean's (about 1/4) plus the slope
        // squared times the input's, and a perturbation passes times the slope; the output lies in
        // [0, 1], so past an energy of 1 the gate saturates and both shrink alike (the relative
        // perturbation is what the linear part gives). Passed through unbounded, each
        // squeeze-excitation Mul (x times a gate computed from x) squared the energies, and after
        // a few blocks they overflowed.
        const double slope = n.op == OpType::kSigmoid ? 0.25 : static_cast<double>(n.attr<AffineAttrs>().alpha);
        const double linear = 0.25 + slope * slope * y.signal, bounded = std::min(1.0, linear);
        for (double& noise : y.noise) noise *= slope * slope * bounded / linear;
        y.signal = bounded;
        break;
      }
      case OpType::kClip:
        if (n.attr<ClipAttrs>().lo >= 0.0f) y = scaled(y, 0.5);
        break;
      case OpType::kAdd:
        for (size_t i = 1; i < ins.size(); ++i) {
          y.signal += ins[i]->signal;
          for (size_t l = 0; l < L; ++l) y.noise[l] += ins[i]->noise[l];
        }
        for (ValueId id : n.inputs)
          if (id != kNoValue && g.is_constant(id)) y.signal += mean_square(g.constant(id));
        break;
      case OpType::kMul:
        if (ins.size() == 2) {  // product rule: relative perturbations add
          for (size_t l = 0; l < L; ++l) y.noise[l] = ins[0]->noise[l] * ins[1]->signal + ins[1]->noise[l] * ins[0]->signal;
          y.signal = ins[0]->signal * ins[1]->signal;
        } else {
          for (ValueId id : n.inputs)
            if (id != kNoValue && g.is_constant(id)) y = scaled(y, mean_square(g.constant(id)));
        }
        break;
      case OpType::kConcat: {
        double total = 0;
        Energy sum{0.0, std::vector<double>(L, 0.0)};
        for (size_t i = 0; i < ins.size(); ++i) {
          const Value& v = g.value(in_ids[i]);
          double c = v.shape_known && v.shape.size() > 1 && v.shape[1] > 0 ? static_cast<double>(v.shape[1]) : 1.0;
          total += c;
          sum.signal += c * ins[i]->signal;
          for (size_t l = 0; l < L; ++l) sum.noise[l] += c * ins[i]->noise[l];
        }
        y = scaled(sum, 1.0 / total);
        break;
      }
      default: break;  // pools, reshapes, normalizations: energies pass through
    }
    for (ValueId out : n.outputs)
      if (out != kNoValue) e[static_cast<size_t>(out)] = y;
  }
  check(!g.outputs.empty() && e[static_cast<size_t>(g.outputs[0])], g.source + ": propagation gains: the output is not reached");
  const Energy& out = *e[static_cast<size_t>(g.outputs[0])];
  std::vector<double> gains(L, 0.0);
  for (size_t l = 0; l < L; ++l) {
    check(found[l], g.source + ": propagation gains: no Conv/Gemm node '" + layers[l] + "'");
    gains[l] = out.signal > 0 ? out.noise[l] / out.signal : 0.0;
  }
  return gains;
}

std::vector<double> measured_sensitivities(const Graph& graph, const std::vector<std::string>& weight_values,
                                           const std::vector<Tensor>& replacements, const Tensor& images,
                                           int64_t batch, ThreadPool* pool) {
  check(weight_values.size() == replacements.size(), "measured sensitivities: one replacement per weight value");
  check(batch >= 1 && images.rank() >= 1 && images.dim(0) >= 1, "measured sensitivities: need images");
  Graph g = graph;
  check(!g.outputs.empty(), graph.source + ": the model has no output");
  g.outputs.resize(1);
  ExecutorOptions options;
  options.pool = pool;
  Executor exec(std::move(g), options);
  auto run_all = [&] {
    std::vector<Tensor> out;
    for (int64_t b = 0; b < images.dim(0); b += batch)
      out.push_back(exec.run(slice_images(images, b, std::min(batch, images.dim(0) - b))));
    return out;
  };
  std::vector<Tensor> reference = run_all();
  double signal = 0;
  for (const Tensor& t : reference)
    for (float v : t.floats()) signal += static_cast<double>(v) * v;
  std::vector<double> d(weight_values.size(), 0.0);
  for (size_t l = 0; l < weight_values.size(); ++l) {
    Tensor original;
    for (const Value& v : exec.graph().values)
      if (v.name == weight_values[l] && v.constant) original = *v.constant;
    exec.set_constant(weight_values[l], replacements[l]);
    std::vector<Tensor> out = run_all();
    exec.set_constant(weight_values[l], original);
    d[l] = signal > 0 ? squared_distance(out, reference) / signal : 0.0;
  }
  return d;
}

}  // namespace tern::quant
