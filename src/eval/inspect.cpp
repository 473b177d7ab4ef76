#include <algorithm>
#include <limits>
#include <map>
#include <tuple>

#include "ops/support.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/passes.h"

namespace tern {

namespace {

// The batch dim at 1; any other dim the model leaves dynamic stays unknown (kDynamicDim, shown
// as "?"), never a silent 1.
Shape at_batch_one(Shape s, int batch_axis) {
  if (batch_axis >= 0 && static_cast<size_t>(batch_axis) < s.size() && s[static_cast<size_t>(batch_axis)] < 0)
    s[static_cast<size_t>(batch_axis)] = 1;
  return s;
}

// Values whose first dim is dynamic but not the batch (attention heads merged into it: [N*H, T, d])
// have a size per image the declared shapes do not give. Their shapes at batch 1 come from shape
// inference on a copy whose inputs have batch 1 (the shape computations then fold), by value name;
// nothing runs, so a hostile graph costs no more than its import did. Empty when it cannot be done
// (an input with another dim dynamic, or one the copy rejects).
std::map<std::string, Shape> shapes_at_batch_one(const Graph& graph) {
  bool needed = false;
  for (const Node& node : graph.nodes)
    for (ValueId v : node.outputs) {
      const Value& val = graph.value(v);
      needed = needed || (val.shape_known && !val.shape.empty() && val.shape[0] < 0 && !val.batch_leading());
    }
  if (!needed) return {};
  std::vector<InputShape> at_one;
  for (ValueId id : graph.inputs) {
    if (graph.is_constant(id)) continue;
    const Value& in = graph.value(id);
    if (!in.shape_known) return {};
    InputShape s{in.name, in.shape};
    for (size_t d = 0; d < s.dims.size(); ++d)
      if (s.dims[d] < 0) {
        if (d > 0) return {};
        s.dims[d] = 1;
      }
    at_one.push_back(std::move(s));
  }
  Graph g = graph;
  try {
    set_input_shapes(g, at_one);
  } catch (const Error&) {
    return {};
  }
  std::map<std::string, Shape> shapes;
  for (const Value& v : g.values)
    if (v.shape_known && std::all_of(v.shape.begin(), v.shape.end(), [](int64_t d) { return d >= 0; }))
      shapes[v.name] = v.shape;
  return shapes;
}

}  // namespace

ModelSummary summarize(const Graph& graph) {
  ModelSummary summary;
  const std::map<std::string, Shape> concrete = shapes_at_batch_one(graph);
  for (const Node& node : graph.nodes) {
    std::string who = (graph.source.empty() ? "" : graph.source + ": ") + "node '" + node.name + "'";
    LayerSummary layer;
    layer.name = node.name;
    layer.op = to_string(node.op);
    const Value& out = graph.value(node.outputs[0]);
    layer.output = at_batch_one(out.shape, out.batch_axis);
    const ops::OpRecord& rec = ops::record(node.op);
    if (rec.counts_parameters)
      for (ValueId id : node.inputs)
        if (id != kNoValue && graph.is_constant(id) && graph.constant(id).dtype() == DataType::kFloat32)
          check(!__builtin_add_overflow(layer.parameters, graph.constant(id).size(), &layer.parameters),
                who + ": parameter count overflows 64 bits");
    // Per image: the output at batch 1. Any other dimension the model does not declare makes
    // the count unknown (-1), never a guess.
    int64_t per_image_out = -1;
    if (auto it = concrete.find(out.name); it != concrete.end() && !out.batch_leading() && !out.shape.empty() &&
                                                  out.shape[0] < 0) {
      layer.output = it->second;
      per_image_out = ops::mac_elements(it->second, 0, who);
    } else if (out.shape_known && !out.shape.empty()) {
      Shape one = at_batch_one(out.shape, out.batch_axis);  // the batch where it is (a sequence-first [T, N, D])
      if (one[0] < 0) one[0] = 1;                           // else a dynamic first dim
      per_image_out = ops::mac_elements(one, 0, who);
    }
    if (rec.macs) layer.macs = rec.macs(ops::CostCall{node, graph, per_image_out, who});
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (rec.fused_clamp) std::tie(lo, hi) = rec.fused_clamp(node);
    if (lo == 0 && hi == std::numeric_limits<float>::infinity()) layer.op += "+Relu";
    else if (lo != -std::numeric_limits<float>::infinity() || hi != std::numeric_limits<float>::infinity())
      layer.op += "+Clip";
    check(!__builtin_add_overflow(summary.parameters, layer.parameters, &summary.parameters),
          who + ": the model's parameter count overflows 64 bits");
    if (layer.macs < 0) ++summary.unknown_macs;
    else
      check(!__builtin_add_overflow(summary.macs, layer.macs, &summary.macs),
            who + ": the model's multiply-accumulate count overflows 64 bits");
    summary.layers.push_back(std::move(layer));
  }
  return summary;
}

}  // namespace tern
