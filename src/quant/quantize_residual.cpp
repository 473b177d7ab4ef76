// The residual step of quantize_model(): expand ternary layers into residual terms, rank the
// upgrades (next terms, int8 fallbacks, and under an accuracy budget float32 as a last resort) and
// keep those the budget allows (see tern/residual.h).
//
// An accuracy budget (--max-drop PP) measures, never guesses. The ranked upgrades are taken in
// order and the drop is measured on held-out images (QuantizeOptions::drop_images): their first
// half chooses the smallest prefix of the ranking within the budget by one standard error (a
// binary search: the drop falls, up to noise, as upgrades are added); their second half, which
// took no part in the choice, estimates the chosen model's drop. Choosing and estimating on the same images reports the
// luckiest prefix (the old calibration-image estimate said 1 pp where the test said 3).
#include <algorithm>
#include <cmath>
#include <map>

#include "quant/batches.h"
#include "quant/pipeline.h"
#include "tern/error.h"
#include "tern/executor.h"

namespace tern::quant {

namespace {

double relative_weight_error(const std::vector<float>& w, const std::vector<float>& approx) {
  double signal = 0, noise = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    signal += static_cast<double>(w[i]) * w[i];
    noise += (static_cast<double>(w[i]) - approx[i]) * (static_cast<double>(w[i]) - approx[i]);
  }
  return signal > 0 ? noise / signal : 0.0;
}

// A layer's stored options: its (ternary) expansion, its int8 fallback, and whether float32 is
// offered (accuracy budgets).
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

bool below_int8(const WeightQuantConfig& c) { return c.format != WeightFormat::kInt || c.bits < 8; }

// Puts the first `count` moves into the model: layers, their active terms and weights, edge order.
// Layers kept float stay in `m` (at their base term) and are returned: float_layers() takes them out.
std::vector<size_t> apply_moves(QuantizedModel& m, const std::vector<Expansion>& expansions,
                                const std::vector<ResidualCandidate>& cands, const std::vector<ResidualMove>& moves,
                                size_t count, const std::string& why) {
  ResidualAllocation a = allocation_from_moves(cands, moves, count);
  std::vector<size_t> edges(expansions.size(), 0), kept_float;
  for (const ResidualMove& e : a.edges) ++edges[e.layer];
  for (size_t k = 0; k < expansions.size(); ++k) {
    const Expansion& x = expansions[k];
    QuantizedLayer& l = m.layers[x.layer];
    if (a.kept_float[k]) kept_float.push_back(x.layer);
    if (a.fallback[k]) {
      l.config = int8_per_channel();
      l.terms = {*x.fallback};
      l.reason = x.reason + "; int8 (" + why + ")";
    } else {
      l.config = x.config;
      l.terms.assign(x.terms.begin(), x.terms.begin() + static_cast<std::ptrdiff_t>(1 + edges[k]));
      l.reason = x.reason;
    }
    l.active_terms = static_cast<int>(l.terms.size());
    l.weight_sqnr_db = l.terms.back().sqnr_db;
    Tensor& w = *m.graph.value(m.graph.find_value(l.weight_value)).constant;
    w = active_weights(l, w.shape());
  }
  m.edges.clear();
  for (const ResidualMove& e : a.edges)
    m.edges.push_back({m.layers[expansions[e.layer].layer].node, e.term, e.bytes, e.gain});
  m.level = m.max_level();
  return kept_float;
}

// Takes layers `which` (indices into m.layers) out of the quantized model: their weights and biases
// back to the FP32 values, their inputs float, their plan entries float32 with the reason.
void keep_float(QuantizedModel& m, std::vector<size_t> which, const Graph& fp32, const std::string& why) {
  std::sort(which.begin(), which.end());
  for (auto it = which.rbegin(); it != which.rend(); ++it) {
    const QuantizedLayer& l = m.layers[*it];
    for (const std::string& name : {l.weight_value, l.bias_value}) {
      if (name.empty()) continue;
      ValueId id = m.graph.find_value(name), source = fp32.find_value(name);
      check(id != kNoValue && source != kNoValue, "layer '" + l.node + "': value '" + name + "' is missing");
      *m.graph.value(id).constant = fp32.constant(source);
    }
    for (LayerPlan& p : m.plan)
      if (p.node == l.node) {
        p.weights.format = WeightFormat::kFloat32;
        p.weights.bits = 32;
        p.activation_bits = 0;
        p.reason = "kept float32: " + why;
      }
    m.layers.erase(m.layers.begin() + static_cast<std::ptrdiff_t>(*it));
  }
}

// The first output of `graph` on `images`, batch by batch.
std::vector<Tensor> first_output(const Graph& graph, const Tensor& images, int64_t batch, ThreadPool* pool) {
  Graph g = graph;
  check(!g.outputs.empty(), graph.source + ": the model has no output");
  g.outputs.resize(1);
  ExecutorOptions options;
  options.pool = pool;
  Executor exec(std::move(g), options);
  std::vector<Tensor> out;
  for (int64_t b = 0; b < images.dim(0); b += batch)
    out.push_back(exec.run(slice_images(images, b, std::min(batch, images.dim(0) - b))));
  return out;
}

// For each expansion, the relative output distortion with that layer alone quantized at its base
// term, input activation quantization included (every other layer FP32).
std::vector<double> isolated_distortions(const QuantizedModel& m, const std::vector<Expansion>& expansions,
                                         const Graph& fp32, const Tensor& images, int64_t batch, ThreadPool* pool,
                                         const QuantizeOptions& o) {
  std::vector<Tensor> reference = first_output(fp32, images, batch, pool);
  double signal = 0;
  for (const Tensor& t : reference)
    for (float v : t.floats()) signal += static_cast<double>(v) * v;
  std::vector<double> d;
  for (const Expansion& x : expansions) {
    QuantizedModel solo;
    solo.graph = fp32;
    QuantizedLayer l = m.layers[x.layer];
    l.terms = {x.terms[0]};
    l.active_terms = 1;
    Value& w = solo.graph.value(solo.graph.find_value(l.weight_value));
    *w.constant = active_weights(l, w.constant->shape());
    solo.layers = {std::move(l)};
    quantize_biases(solo, fp32);
    d.push_back(signal > 0 ? squared_distance(first_output(simulation_graph(solo), images, batch, pool), reference) / signal
                           : 0.0);
    if (o.progress) o.progress("measuring sensitivities", static_cast<int64_t>(d.size()), static_cast<int64_t>(expansions.size()));
  }
  return d;
}

// Held-out images scored against the truth: the labels for [N, classes] outputs when given, else
// the FP32 model's own top-1 at every scored position ([N, ..., classes]: a recogniser's characters).
class DropMeter {
 public:
  DropMeter(const Graph& fp32, Tensor images, const std::vector<int64_t>& labels, int64_t batch, ThreadPool* pool)
      : images_(std::move(images)), batch_(batch), pool_(pool) {
    std::vector<int64_t> top1 = predictions(fp32);
    labelled_ = !labels.empty() && per_image_ == 1;
    truth_ = labelled_ ? labels : top1;
    fp32_right_ = correct(top1);
  }
  bool labelled() const { return labelled_; }
  int64_t images() const { return images_.dim(0); }
  double fp32_accuracy() const {
    double s = 0;
    for (double c : fp32_right_) s += c;
    return 100.0 * s / static_cast<double>(fp32_right_.size());
  }
  // The drop in percentage points (FP32 accuracy - the model's, paired image by image) and its
  // standard error.
  std::pair<double, double> drop(const Graph& model) const {
    std::vector<double> right = correct(predictions(model));
    const double n = static_cast<double>(right.size());
    double mean = 0, sq = 0;
    for (size_t i = 0; i < right.size(); ++i) mean += fp32_right_[i] - right[i];
    mean /= n;
    for (size_t i = 0; i < right.size(); ++i) sq += (fp32_right_[i] - right[i] - mean) * (fp32_right_[i] - right[i] - mean);
    return {100.0 * mean, n > 1 ? 100.0 * std::sqrt(sq / (n - 1) / n) : 0.0};
  }

 private:
  std::vector<int64_t> predictions(const Graph& graph) const {
    std::vector<int64_t> top1;
    for (const Tensor& y : first_output(graph, images_, batch_, pool_)) {
      check(y.dtype() == DataType::kFloat32 && y.rank() >= 2 && y.dim(y.rank() - 1) >= 2,
            graph.source + ": an accuracy budget needs class scores [N, classes] or [N, ..., classes] as the first output, not " +
                to_string(y.shape()));
      const int64_t classes = y.dim(y.rank() - 1);
      for (int64_t r = 0; r < y.size() / classes; ++r) {
        const float* row = y.data<float>() + r * classes;
        top1.push_back(std::max_element(row, row + classes) - row);
      }
    }
    per_image_ = static_cast<int64_t>(top1.size()) / images_.dim(0);
    return top1;
  }
  // Per image, the share of its scored positions that match the truth.
  std::vector<double> correct(const std::vector<int64_t>& top1) const {
    std::vector<double> right(static_cast<size_t>(images_.dim(0)), 0.0);
    for (size_t i = 0; i < top1.size(); ++i) right[i / static_cast<size_t>(per_image_)] += top1[i] == truth_[i];
    for (double& r : right) r /= static_cast<double>(per_image_);
    return right;
  }

  Tensor images_;
  int64_t batch_;
  ThreadPool* pool_;
  mutable int64_t per_image_ = 1;
  bool labelled_ = false;
  std::vector<int64_t> truth_;
  std::vector<double> fp32_right_;
};

// Every layer's expansion (ternary layers) or plain term, with sizes and errors of each option.
struct Candidates {
  std::vector<Expansion> expansions;
  std::vector<ResidualCandidate> cands;
  std::vector<double> base_weight_error;
};

Candidates make_candidates(const QuantizedModel& m, const ResidualContext& ctx, bool accuracy_budget) {
  const QuantizeOptions& o = ctx.options;
  Candidates r;
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
      x.terms = l.config.format == WeightFormat::kTernary
                    ? expand_residual(w, l.terms[0], o.residual_max_terms, quantizer(l.config))
                    : std::vector<QuantizedWeights>{l.terms[0]};
      if (o.residual_fallback && below_int8(l.config)) x.fallback = quantizer(int8_per_channel())(w);
    } catch (const Error& e) {
      throw Error(ctx.fp32.source + ": layer '" + l.node + "': " + e.what());
    }
    bool output_error = o.residual_ranking == ResidualRanking::kMeasured && cov;
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
    r.base_weight_error.push_back(relative_weight_error(w, x.terms[0].dequantize()));
    if (x.fallback) {
      c.fallback_bytes = term_bytes(*x.fallback, int8_per_channel());
      c.fallback_error = error_of(x.fallback->dequantize());
    }
    if (accuracy_budget) c.float_bytes = 4 * static_cast<int64_t>(w.size());
    r.expansions.push_back(std::move(x));
    r.cands.push_back(std::move(c));
  }
  return r;
}

// Sensitivities D_l (and, for accuracy budgets, what keeping each layer float adds beyond its weights).
void set_sensitivities(const QuantizedModel& m, const ResidualContext& ctx, Candidates& c, bool accuracy_budget) {
  const QuantizeOptions& o = ctx.options;
  if (o.residual_ranking != ResidualRanking::kMeasured) {
    std::vector<std::string> nodes;
    for (const Expansion& x : c.expansions) nodes.push_back(m.layers[x.layer].node);
    std::vector<double> gains = propagation_gains(ctx.fp32, nodes);
    for (size_t k = 0; k < c.cands.size(); ++k) c.cands[k].sensitivity = gains[k] * c.base_weight_error[k];
    return;
  }
  std::vector<std::string> weight_values;
  std::vector<Tensor> base;
  for (const Expansion& x : c.expansions) {
    QuantizedLayer alone = m.layers[x.layer];
    alone.terms = {x.terms[0]};
    alone.active_terms = 1;
    ValueId v = ctx.fp32.find_value(alone.weight_value);
    check(v != kNoValue && ctx.fp32.is_constant(v), ctx.fp32.source + ": layer '" + alone.node + "' has no constant weights");
    weight_values.push_back(alone.weight_value);
    base.push_back(active_weights(alone, ctx.fp32.constant(v).shape()));
  }
  Tensor images = slice_images(*ctx.calibration, 0, std::min(o.sensitivity_images, ctx.calibration->dim(0)));
  std::vector<double> d = measured_sensitivities(ctx.fp32, weight_values, base, images, o.batch, ctx.pool);
  for (size_t k = 0; k < c.cands.size(); ++k) c.cands[k].sensitivity = d[k];
  if (!accuracy_budget) return;
  std::vector<double> full = isolated_distortions(m, c.expansions, ctx.fp32, images, o.batch, ctx.pool, o);
  for (size_t k = 0; k < c.cands.size(); ++k) c.cands[k].float_extra = std::max(0.0, full[k] - d[k]);
}

// --max-drop: how many of `moves` to take (see the file comment), with the measurements for provenance.
size_t search_drop(QuantizedModel& m, const ResidualContext& ctx, const Candidates& c,
                   const std::vector<ResidualMove>& moves, nlohmann::json& summary) {
  const QuantizeOptions& o = ctx.options;
  const Tensor& held = *o.drop_images;
  const std::string& src = ctx.fp32.source;
  check(held.dim(0) >= 2, src + ": an accuracy budget needs at least 2 held-out images");
  check(o.drop_labels.empty() || static_cast<int64_t>(o.drop_labels.size()) == held.dim(0),
        src + ": the held-out labels do not match the held-out images");
  const int64_t half = held.dim(0) / 2;
  auto labels = [&](int64_t begin, int64_t count) {
    return o.drop_labels.empty() ? std::vector<int64_t>{}
                                 : std::vector<int64_t>(o.drop_labels.begin() + begin, o.drop_labels.begin() + begin + count);
  };
  DropMeter choose(ctx.fp32, slice_images(held, 0, half), labels(0, half), o.batch, ctx.pool);
  DropMeter estimate(ctx.fp32, slice_images(held, half, held.dim(0) - half), labels(half, held.dim(0) - half), o.batch,
                     ctx.pool);
  const std::string why = "--max-drop " + nlohmann::json(o.residual.value).dump() + " pp";
  // Drop measurements: two bisections and three more at most.
  const int64_t steps = 2 * static_cast<int64_t>(std::ceil(std::log2(static_cast<double>(moves.size()) + 1))) + 3;
  int64_t step = 0;
  auto model_at = [&](size_t k) {
    if (o.progress) o.progress("searching --max-drop", std::min(++step, steps - 1), steps);
    QuantizedModel e = m;
    keep_float(e, apply_moves(e, c.expansions, c.cands, moves, k, why), ctx.fp32, why);
    ctx.finish_biases(e);
    return simulation_graph(e);
  };
  // The smallest k in [lo, moves.size()] whose drop on the choosing half is within `target` by one
  // standard error (a drop measured on a thousand images is uncertain by about half a point).
  auto smallest_within = [&](size_t lo, double target) {
    size_t hi = moves.size();
    while (lo < hi) {
      size_t mid = (lo + hi) / 2;
      std::pair<double, double> d = choose.drop(model_at(mid));
      if (d.first + d.second <= target) hi = mid;
      else lo = mid + 1;
    }
    return hi;
  };
  const double target = o.residual.value;
  size_t k = smallest_within(0, target);
  std::pair<double, double> held_out = estimate.drop(model_at(k));
  // When the estimating half disagrees, the choice is tightened once by the excess. Only this
  // stopping rule looks at the estimating half.
  int rounds = 1;
  if (held_out.first > target && k < moves.size()) {
    k = smallest_within(k + 1, target - (held_out.first - target));
    held_out = estimate.drop(model_at(k));
    rounds = 2;
  }
  const double choosing = choose.drop(model_at(k)).first;
  if (o.progress) o.progress("searching --max-drop", steps, steps);
  summary["drop"] = {{"target_pp", target},
                     {"measured_on", choose.labelled() ? "labelled held-out images" : "agreement with FP32 top-1"},
                     {"choosing_images", choose.images()},
                     {"choosing_drop_pp", choosing},
                     {"estimating_images", estimate.images()},
                     {"estimated_drop_pp", held_out.first},
                     {"standard_error_pp", held_out.second},
                     {"reference_top1", estimate.fp32_accuracy()},
                     {"rounds", rounds},
                     {"met", held_out.first <= target}};
  return k;
}

}  // namespace

nlohmann::json allocate_residual(QuantizedModel& m, const ResidualContext& ctx) {
  const QuantizeOptions& o = ctx.options;
  const std::string& src = m.graph.source;
  const ResidualRanking ranking = o.residual_ranking;
  const bool accuracy_budget = o.residual.kind == ResidualBudget::Kind::kDrop;
  check(o.residual_max_terms >= 1 && o.residual_max_terms <= 16, "residual terms per layer must be in [1, 16]");
  check(ranking != ResidualRanking::kMeasured || ctx.calibration,
        src + ": the measured residual ranking needs calibration images (use the weights ranking without data)");
  check(!accuracy_budget || (ctx.calibration && o.drop_images),
        src + ": an accuracy budget is measured on held-out images, and there are none");
  check(o.sensitivity_images >= 1, "sensitivity images must be >= 1");

  Candidates c = make_candidates(m, ctx, accuracy_budget);
  check(!c.expansions.empty(), src + (accuracy_budget ? ": an accuracy budget needs quantized layers, and the plan has none"
                                                      : ": residual edges need ternary layers, and the plan has none"));
  set_sensitivities(m, ctx, c, accuracy_budget);

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
  std::vector<ResidualMove> moves = order_residual_moves(c.cands, ranking, max_bytes, o.residual_seed);
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
  if (accuracy_budget) count = search_drop(m, ctx, c, moves, summary);
  const std::string why = accuracy_budget ? "--max-drop " + nlohmann::json(o.residual.value).dump() + " pp" : "residual ranking";
  std::vector<size_t> kept_float = apply_moves(m, c.expansions, c.cands, moves, count, why);
  ResidualAllocation a = allocation_from_moves(c.cands, moves, count);
  summary["moves_taken"] = count;
  summary["estimated_distortion_base"] = allocation_from_moves(c.cands, moves, 0).estimated_distortion;
  summary["estimated_distortion"] = a.estimated_distortion;
  nlohmann::json layers = nlohmann::json::array();
  for (size_t k = 0; k < c.cands.size(); ++k) {
    const ResidualCandidate& cand = c.cands[k];
    layers.push_back({{"layer", m.layers[c.expansions[k].layer].node},
                      {"sensitivity", cand.sensitivity},
                      {"errors", cand.error},
                      {"term_bytes", cand.term_bytes},
                      {"fallback_error", cand.fallback_bytes >= 0 ? nlohmann::json(cand.fallback_error) : nullptr},
                      {"fallback_bytes", cand.fallback_bytes >= 0 ? nlohmann::json(cand.fallback_bytes) : nullptr},
                      {"fallback", a.fallback[k]}});
    if (accuracy_budget) {
      layers.back()["activation_sensitivity"] = cand.float_extra;
      layers.back()["kept_float"] = a.kept_float[k];
    }
  }
  summary["layers"] = layers;
  keep_float(m, kept_float, ctx.fp32, why);
  return summary;
}

}  // namespace tern::quant
