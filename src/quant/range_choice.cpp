// Per-layer choice of calibration method (--calibration auto): every method's range for a layer
// input is tried on calibration images, and the one whose quantization gives the layers reading
// that input the smallest output error (their quantized weights, against FP32) is kept.
#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include "quant/batches.h"
#include "quant/pipeline.h"
#include "tern/calibration.h"
#include "tern/error.h"
#include "tern/executor.h"

namespace tern::quant {

void choose_activation_ranges(QuantizedModel& m, const Graph& fp32, const RangeCandidates& candidates,
                              const Tensor& images, int64_t batch, ThreadPool* pool) {
  const Graph& g = m.graph;  // quantized weights in place, float biases
  std::map<std::string, int> node_index;
  for (size_t i = 0; i < g.nodes.size(); ++i) node_index[g.nodes[i].name] = static_cast<int>(i);
  // The layers reading each input with candidates, and the values a batch must hand over: the
  // inputs and the FP32 outputs of those layers.
  std::map<ValueId, std::vector<QuantizedLayer*>> readers;
  for (QuantizedLayer& l : m.layers) {
    if (!l.input) continue;
    ValueId in = g.nodes[static_cast<size_t>(node_index.at(l.node))].inputs[0];
    if (auto it = candidates.find(in); it != candidates.end() && it->second.size() > 1) readers[in].push_back(&l);
  }
  if (readers.empty()) return;
  std::vector<ValueId> ids;
  for (auto& [in, layers] : readers) {
    ids.push_back(in);
    for (QuantizedLayer* l : layers) ids.push_back(g.nodes[static_cast<size_t>(node_index.at(l->node))].outputs[0]);
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto slot = [&](ValueId v) { return static_cast<size_t>(std::lower_bound(ids.begin(), ids.end(), v) - ids.begin()); };

  std::map<ValueId, std::vector<double>> error;
  for (auto& [in, layers] : readers) error[in].assign(candidates.at(in).size(), 0.0);
  for_each_batch(fp32, ids, images, batch, pool, [&](std::vector<Tensor>& values) {
    for (auto& [in, layers] : readers) {
      const Tensor& x = values[slot(in)];
      const std::vector<ActivationQuant>& options = candidates.at(in);
      Tensor xq = Tensor::uninitialized(DataType::kFloat32, x.shape());
      for (size_t c = 0; c < options.size(); ++c) {
        const ActivationQuant& a = options[c];
        fake_quantize(x.floats(), xq.floats(), a.scale, activation_qmax(a.bits, a.is_unsigned), a.is_unsigned,
                      a.zero_point);
        for (QuantizedLayer* l : layers) {
          const Node& n = g.nodes[static_cast<size_t>(node_index.at(l->node))];
          std::vector<const Tensor*> args = {&xq};
          for (size_t k = 1; k < n.inputs.size(); ++k)
            args.push_back(n.inputs[k] == kNoValue ? nullptr : &g.constant(n.inputs[k]));
          std::vector<Tensor> y = evaluate_node(n, args, x.dim(0), pool, g.source);
          error[in][c] += squared_distance({y[0]}, {values[slot(n.outputs[0])]});
        }
      }
    }
  });
  for (auto& [in, layers] : readers) {
    const std::vector<double>& e = error.at(in);
    size_t best = static_cast<size_t>(std::min_element(e.begin(), e.end()) - e.begin());
    ActivationQuant a = candidates.at(in)[best];
    a.source += ", chosen by layer output error";
    for (QuantizedLayer* l : layers) *l->input = a;
  }
}

}  // namespace tern::quant
