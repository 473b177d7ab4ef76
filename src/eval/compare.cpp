#include "tern/compare.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "quant/batches.h"
#include "tern/error.h"
#include "tern/executor.h"

namespace tern {

namespace {

double db(double signal, double noise) {
  if (noise <= 0) return std::numeric_limits<double>::infinity();
  if (signal <= 0) return -std::numeric_limits<double>::infinity();
  return 10.0 * std::log10(signal / noise);
}

const Node* node_named(const Graph& g, const std::string& name) {
  for (const Node& n : g.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

}  // namespace

void OutputComparer::add(const std::vector<Tensor>& ref, const std::vector<Tensor>& out, const std::vector<int64_t>* labels,
                         const std::vector<std::string>& names) {
  check(ref.size() == out.size(), "compare: the models have " + std::to_string(ref.size()) + " and " +
                                      std::to_string(out.size()) + " outputs");
  if (sums_.empty()) sums_.resize(ref.size());
  for (size_t o = 0; o < ref.size(); ++o) {
    const Tensor& r = ref[o];
    const Tensor& q = out[o];
    std::string name = o < names.size() ? names[o] : "output " + std::to_string(o);
    check(r.dtype() == DataType::kFloat32 && q.dtype() == DataType::kFloat32,
          "compare: output '" + name + "' is not float32 in both models");
    check(r.shape() == q.shape(), "compare: output '" + name + "' is " + to_string(r.shape()) + " in the reference but " +
                                      to_string(q.shape()) + " in the model");
    Sums& s = sums_[o];
    s.name = name;
    s.shape = r.shape();
    const float* pr = r.data<float>();
    const float* pq = q.data<float>();
    for (int64_t k = 0; k < r.size(); ++k) {
      double a = pr[k], b = pq[k];
      s.signal += a * a;
      s.noise += (a - b) * (a - b);
      s.dot += a * b;
      s.out_sq += b * b;
      s.max_err = std::max(s.max_err, std::abs(a - b));
      s.ref_max = std::max(s.ref_max, std::abs(a));
    }
    // Scores: [N, C, ...] with C >= 2; argmax over C per image (and position).
    if (r.rank() >= 2 && r.dim(1) >= 2) {
      s.scores = true;
      int64_t n = r.dim(0), c = r.dim(1), inner = r.size() / std::max<int64_t>(1, n * c);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t p = 0; p < inner; ++p) {
          int64_t ar = 0, aq = 0;
          for (int64_t k = 1; k < c; ++k) {
            if (pr[(i * c + k) * inner + p] > pr[(i * c + ar) * inner + p]) ar = k;
            if (pq[(i * c + k) * inner + p] > pq[(i * c + aq) * inner + p]) aq = k;
          }
          ++s.positions;
          s.agree += ar == aq;
          if (labels && inner == 1 && o == 0) {
            int64_t label = (*labels)[static_cast<size_t>(i)];  // this batch's labels
            ++s.labelled;
            s.ref_correct += ar == label;
            s.correct += aq == label;
          }
        }
    }
  }
  images_ += ref.empty() ? 0 : ref[0].dim(0);
}

std::vector<OutputComparison> OutputComparer::result() const {
  std::vector<OutputComparison> out;
  for (const Sums& s : sums_) {
    OutputComparison c;
    c.name = s.name;
    c.shape = s.shape;
    c.sqnr_db = db(s.signal, s.noise);
    c.cosine = s.signal > 0 && s.out_sq > 0 ? s.dot / std::sqrt(s.signal * s.out_sq) : (s.signal == s.out_sq ? 1.0 : 0.0);
    c.max_abs_error = s.max_err;
    c.ref_max_abs = s.ref_max;
    if (s.scores && s.positions > 0) c.top1_agreement = 100.0 * static_cast<double>(s.agree) / static_cast<double>(s.positions);
    if (s.labelled > 0) {
      c.ref_top1 = 100.0 * static_cast<double>(s.ref_correct) / static_cast<double>(s.labelled);
      c.top1 = 100.0 * static_cast<double>(s.correct) / static_cast<double>(s.labelled);
    }
    out.push_back(std::move(c));
  }
  return out;
}

quant::QuantizedModel keep_quantized(const quant::QuantizedModel& model, const Graph& reference,
                                     const std::vector<std::string>& keep) {
  quant::QuantizedModel m = model;
  for (quant::QuantizedLayer& l : m.layers) {
    if (std::find(keep.begin(), keep.end(), l.node) != keep.end()) continue;
    l.input.reset();
    for (const std::string& name : {l.weight_value, l.bias_value}) {
      if (name.empty()) continue;
      ValueId r = reference.find_value(name), v = m.graph.find_value(name);
      check(r != kNoValue && reference.is_constant(r), "compare: the reference model has no weight '" + name + "' (layer '" +
                                                           l.node + "'): compare with the model it was quantized from");
      check(v != kNoValue && reference.constant(r).shape() == m.graph.constant(v).shape(),
            "compare: weight '" + name + "' differs in shape from the reference's");
      m.graph.values[static_cast<size_t>(v)].constant = reference.constant(r);
    }
  }
  return m;
}

std::vector<LayerComparison> compare_layers(const quant::QuantizedModel& model, const Graph& reference, const Tensor& images,
                                            int64_t batch) {
  check(batch >= 1 && images.rank() >= 1 && images.dim(0) >= 1, "compare: no images for the per-layer analysis");
  if (reference.fixed_batch() > 0) batch = reference.fixed_batch();  // the exporter's fixed batch
  std::vector<LayerComparison> layers;
  std::vector<std::optional<double>> accumulated = quant::output_sqnr(model, reference, images, batch);
  // The reference's outputs once; then each layer alone.
  Executor ref_exec(reference);
  std::vector<Tensor> ref_out;
  for (int64_t b = 0; b < images.dim(0); b += batch) {
    Tensor x = quant::slice_images(images, b, std::min(batch, images.dim(0) - b));
    ref_out.push_back(ref_exec.run(std::span<const Tensor>(&x, 1)).at(0));
  }
  for (size_t i = 0; i < model.layers.size(); ++i) {
    const quant::QuantizedLayer& l = model.layers[i];
    check(node_named(model.graph, l.node) != nullptr, "compare: layer '" + l.node + "' is not in the graph");
    Executor alone(quant::simulation_graph(keep_quantized(model, reference, {l.node})));
    double signal = 0, noise = 0;
    size_t k = 0;
    for (int64_t b = 0; b < images.dim(0); b += batch, ++k) {
      Tensor x = quant::slice_images(images, b, std::min(batch, images.dim(0) - b));
      Tensor y = alone.run(std::span<const Tensor>(&x, 1)).at(0);
      const Tensor& r = ref_out[k];
      check(y.shape() == r.shape() && y.dtype() == DataType::kFloat32, "compare: layer '" + l.node + "' changes the output's shape");
      for (int64_t e = 0; e < r.size(); ++e) {
        double a = r.data<float>()[e], d = a - y.data<float>()[e];
        signal += a * a;
        noise += d * d;
      }
    }
    LayerComparison c;
    c.node = l.node;
    c.precision = quant::describe_weights(l) + (l.input ? ", input " + quant::describe_activation(*l.input) : "");
    if (signal > 0) c.alone_sqnr_db = db(signal, noise);
    c.accumulated_sqnr_db = accumulated[i];
    layers.push_back(std::move(c));
  }
  return layers;
}

}  // namespace tern
