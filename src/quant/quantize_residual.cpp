// The residual step of quantize_model(): expand ternary layers into residual terms, rank the
// upgrades (next terms, int8 fallbacks) and keep those the budget allows (see tern/residual.h).
#include <algorithm>
#include <cmath>
#include <map>

#include "quant/batches.h"
#include "quant/pipeline.h"
#include "tern/error.h"
#include "tern/executor.h"

namespace tern::quant {

namespace {

// Top-1 class of every image (first output, [N, classes]).
std::vector<int64_t> predictions(const Graph& graph, const Tensor& images, int64_t batch, ThreadPool* pool) {
  Graph g = graph;
  g.outputs.resize(1);
  ExecutorOptions options;
  options.pool = pool;
  Executor exec(std::move(g), options);
  std::vector<int64_t> top1;
  for (int64_t b = 0; b < images.dim(0); b += batch) {
    Tensor y = exec.run(slice_images(images, b, std::min(batch, images.dim(0) - b)));
    check(y.rank() == 2 && y.dim(0) >= 1 && y.dim(1) >= 1, graph.source + ": a drop budget needs class scores [N, classes]");
    for (int64_t i = 0; i < y.dim(0); ++i) {
      const float* row = y.data<float>() + i * y.dim(1);
      top1.push_back(std::max_element(row, row + y.dim(1)) - row);
    }
  }
  return top1;
}

double percent_equal(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  int64_t same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += a[i] == b[i];
  return a.empty() ? 0.0 : 100.0 * static_cast<double>(same) / static_cast<double>(a.size());
}

double relative_weight_error(const std::vector<float>& w, const std::vector<float>& approx) {
  double signal = 0, noise = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    signal += static_cast<double>(w[i]) * w[i];
    noise += (static_cast<double>(w[i]) - approx[i]) * (static_cast<double>(w[i]) - approx[i]);
  }
  return signal > 0 ? noise / signal : 0.0;
}

// A ternary layer's stored options: its full expansion and its int8 fallback.
struct Expansion {
  size_t layer = 0;  // index into QuantizedModel::layers
  WeightQuantConfig config;
  std::string reason;
  std::vector<QuantizedWeights> terms;
  std::optional<QuantizedWeights> fallback;
};

WeightQuantConfig int8_per_channel() {
  WeightQuantConfig c;
  c.format = WeightFormat::kInt;
  c.bits = 8;
  c.group_size = kWholeFilter;
  return c;
}

// Puts the first `count` moves into the model: layers, their active terms and weights, edge order.
void apply_moves(QuantizedModel& m, const std::vector<Expansion>& expansions, const std::vector<ResidualCandidate>& cands,
                 const std::vector<ResidualMove>& moves, size_t count) {
  ResidualAllocation a = allocation_from_moves(cands, moves, count);
  std::vector<size_t> edges(expansions.size(), 0);
  for (const ResidualMove& e : a.edges) ++edges[e.layer];
  for (size_t k = 0; k < expansions.size(); ++k) {
    const Expansion& x = expansions[k];
    QuantizedLayer& l = m.layers[x.layer];
    if (a.fallback[k]) {
      l.config = int8_per_channel();
      l.terms = {*x.fallback};
      l.reason = x.reason + "; int8 fallback (residual ranking)";
    } else {
      l.config = x.config;
      l.terms.assign(x.terms.begin(), x.terms.begin() + static_cast<std::ptrdiff_t>(1 + edges[k]));
      l.reason = x.reason;
    }
    l.active_terms = static_cast<int>(l.terms.size());
    l.weight_sqnr_db = l.terms.back().sqnr_db;
    for (Value& v : m.graph.values)
      if (v.name == l.weight_value) *v.constant = active_weights(l, v.constant->shape());
  }
  m.edges.clear();
  for (const ResidualMove& e : a.edges)
    m.edges.push_back({m.layers[expansions[e.layer].layer].node, e.term, e.bytes, e.gain});
  m.level = m.max_level();
}

}  // namespace

nlohmann::json allocate_residual(QuantizedModel& m, const ResidualContext& ctx) {
  const QuantizeOptions& o = ctx.options;
  const std::string& src = m.graph.source;
  const ResidualRanking ranking = o.residual_ranking;
  check(o.residual_max_terms >= 1 && o.residual_max_terms <= 16, "residual terms per layer must be in [1, 16]");
  check(ranking != ResidualRanking::kMeasured || ctx.calibration,
        src + ": the measured residual ranking needs calibration images (use the weights ranking without data)");
  check(o.residual.kind != ResidualBudget::Kind::kDrop || ctx.calibration,
        src + ": a drop budget is measured on calibration images, and there are none");
  check(o.sensitivity_images >= 1, "sensitivity images must be >= 1");

  // Every ternary layer's expansion and fallback, with their sizes and errors.
  std::vector<Expansion> expansions;
  std::vector<ResidualCandidate> cands;
  std::vector<double> base_weight_error;
  for (size_t i = 0; i < m.layers.size(); ++i) {
    if (ctx.weights[i].empty()) continue;
    const QuantizedLayer& l = m.layers[i];
    const std::vector<float>& w = ctx.weights[i];
    const InputCovariance* cov = ctx.covariances[i] ? &*ctx.covariances[i] : nullptr;
    auto quantizer = [&](const WeightQuantConfig& config) {
      return [&, config](const std::vector<float>& target) {
        return cov ? quantize_weights_output_aware(target, l.out, l.in, l.taps, config, *cov, o.damping)
                   : quantize_weights(target, l.out, l.in, l.taps, config);
      };
    };
    Expansion x;
    x.layer = i;
    x.config = l.config;
    x.reason = l.reason;
    try {
      x.terms = expand_residual(w, l.terms[0], o.residual_max_terms, quantizer(l.config));
      if (o.residual_fallback) x.fallback = quantizer(int8_per_channel())(w);
    } catch (const Error& e) {
      throw Error(src + ": layer '" + l.node + "': " + e.what());
    }
    bool output_error = ranking == ResidualRanking::kMeasured && cov;
    auto error_of = [&](const std::vector<float>& approx) {
      return output_error ? relative_output_error(w, approx, *cov) : relative_weight_error(w, approx);
    };
    ResidualCandidate c;
    std::vector<float> sum(w.size(), 0.0f);
    for (const QuantizedWeights& t : x.terms) {
      std::vector<float> d = t.dequantize();
      for (size_t k = 0; k < d.size(); ++k) sum[k] += d[k];
      c.term_bytes.push_back(term_bytes(t, l.config));
      c.error.push_back(error_of(sum));
    }
    base_weight_error.push_back(relative_weight_error(w, x.terms[0].dequantize()));
    if (x.fallback) {
      c.fallback_bytes = term_bytes(*x.fallback, int8_per_channel());
      c.fallback_error = error_of(x.fallback->dequantize());
    }
    expansions.push_back(std::move(x));
    cands.push_back(std::move(c));
  }
  check(!expansions.empty(), src + ": residual edges need ternary layers, and the plan has none");

  // Sensitivities D_l.
  std::vector<std::string> nodes, weight_values;
  for (const Expansion& x : expansions) {
    nodes.push_back(m.layers[x.layer].node);
    weight_values.push_back(m.layers[x.layer].weight_value);
  }
  if (ranking == ResidualRanking::kMeasured) {
    std::vector<Tensor> base;
    for (const Expansion& x : expansions) {
      QuantizedLayer alone = m.layers[x.layer];
      alone.terms = {x.terms[0]};
      alone.active_terms = 1;
      const Value* v = nullptr;
      for (const Value& value : ctx.fp32.values)
        if (value.name == alone.weight_value) v = &value;
      check(v && v->constant, src + ": layer '" + alone.node + "' has no constant weights");
      base.push_back(active_weights(alone, v->constant->shape()));
    }
    int64_t n = std::min(o.sensitivity_images, ctx.calibration->dim(0));
    std::vector<double> d = measured_sensitivities(ctx.fp32, weight_values, base, slice_images(*ctx.calibration, 0, n),
                                                   o.batch, ctx.pool);
    for (size_t k = 0; k < cands.size(); ++k) cands[k].sensitivity = d[k];
  } else {
    std::vector<double> gains = propagation_gains(ctx.fp32, nodes);
    for (size_t k = 0; k < cands.size(); ++k) cands[k].sensitivity = gains[k] * base_weight_error[k];
  }

  // The budget.
  ModelSize base = model_size(m);
  int64_t max_bytes = std::numeric_limits<int64_t>::max();
  if (o.residual.kind == ResidualBudget::Kind::kSize) {
    double target = o.residual.percent_of_int8 ? o.residual.value / 100.0 * static_cast<double>(base.int8) : o.residual.value;
    check(target >= static_cast<double>(base.quantized),
          src + ": residual budget " + std::to_string(static_cast<int64_t>(target)) +
              " bytes is below the plain quantized model's " + std::to_string(base.quantized) + " bytes");
    max_bytes = static_cast<int64_t>(target) - base.quantized;
  }
  std::vector<ResidualMove> moves = order_residual_moves(cands, ranking, max_bytes, o.residual_seed);
  size_t count = moves.size();
  nlohmann::json summary = {{"ranking", residual_ranking_name(ranking)},
                            {"max_terms", o.residual_max_terms},
                            {"fallback", o.residual_fallback ? "int8" : "none"},
                            {"base_bytes", base.quantized},
                            {"int8_bytes", base.int8},
                            {"moves_ranked", moves.size()}};
  if (o.residual.kind == ResidualBudget::Kind::kSize) summary["budget_bytes"] = base.quantized + max_bytes;
  if (o.residual.kind == ResidualBudget::Kind::kEdges) {
    count = std::min(count, static_cast<size_t>(o.residual.value));
    summary["budget_edges"] = o.residual.value;
  }
  if (o.residual.kind == ResidualBudget::Kind::kDrop) {
    // The smallest prefix of the ranking whose measured top-1 drop on the calibration images is
    // within the budget (a binary search: the drop falls, up to noise, as upgrades are added).
    const Tensor& images = *ctx.calibration;
    const std::vector<int64_t>& labels = o.calibration_labels;
    check(labels.empty() || static_cast<int64_t>(labels.size()) == images.dim(0),
          src + ": calibration labels do not match the calibration images");
    std::vector<int64_t> reference = predictions(ctx.fp32, images, o.batch, ctx.pool);
    double reference_top1 = labels.empty() ? 100.0 : percent_equal(reference, labels);
    auto drop_at = [&](size_t k) {
      apply_moves(m, expansions, cands, moves, k);
      quantize_biases(m, ctx.fp32);
      std::vector<int64_t> p = predictions(simulation_graph(m), images, o.batch, ctx.pool);
      return reference_top1 - percent_equal(p, labels.empty() ? reference : labels);
    };
    size_t lo = 0, hi = moves.size();
    double drop_hi = drop_at(hi), achieved = drop_hi;
    if (drop_hi <= o.residual.value) {
      while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        double d = drop_at(mid);
        if (d <= o.residual.value) {
          hi = mid;
          achieved = d;
        } else {
          lo = mid + 1;
        }
      }
    }
    count = hi;
    summary["drop"] = {{"target_pp", o.residual.value},
                       {"measured_pp", achieved},
                       {"met", drop_hi <= o.residual.value},
                       {"measured_on", labels.empty() ? "agreement with FP32 top-1" : "labelled calibration images"},
                       {"images", images.dim(0)},
                       {"reference_top1", reference_top1}};
  }
  apply_moves(m, expansions, cands, moves, count);
  ResidualAllocation a = allocation_from_moves(cands, moves, count);
  summary["moves_taken"] = count;
  summary["estimated_distortion_base"] = allocation_from_moves(cands, moves, 0).estimated_distortion;
  summary["estimated_distortion"] = a.estimated_distortion;
  nlohmann::json layers = nlohmann::json::array();
  for (size_t k = 0; k < cands.size(); ++k)
    layers.push_back({{"layer", nodes[k]},
                      {"sensitivity", cands[k].sensitivity},
                      {"errors", cands[k].error},
                      {"term_bytes", cands[k].term_bytes},
                      {"fallback_error", cands[k].fallback_bytes >= 0 ? nlohmann::json(cands[k].fallback_error) : nullptr},
                      {"fallback_bytes", cands[k].fallback_bytes >= 0 ? nlohmann::json(cands[k].fallback_bytes) : nullptr},
                      {"fallback", a.fallback[k]}});
  summary["layers"] = layers;
  return summary;
}

}  // namespace tern::quant
