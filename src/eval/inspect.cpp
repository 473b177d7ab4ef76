#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <tuple>

#include "graph/shape_inference.h"
#include "ops/support.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/executor.h"

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
// have a size per image the declared shapes do not give. Their shapes at batch 1 come from a walk
// of the graph that infers every node's output shape at batch 1 and evaluates only the small shape
// computations (Shape, and nodes whose inputs are all known and small: the Gather / Concat /
// Unsqueeze that build a Reshape target). No activation is computed, so a hostile graph costs no
// more here than at import. By value name; empty when it cannot be done (an input with another dim
// dynamic, a shape rule that needs a content the walk did not compute).
std::map<std::string, Shape> shapes_at_batch_one(const Graph& graph) {
  constexpr int64_t kSmall = 64;  // elements of a shape computation's tensors
  bool needed = false;
  for (const Node& node : graph.nodes)
    for (ValueId v : node.outputs) {
      const Value& val = graph.value(v);
      needed = needed || (val.shape_known && !val.shape.empty() && val.shape[0] < 0 && !val.batch_leading());
    }
  if (!needed) return {};
  std::vector<Shape> shapes(graph.values.size());
  std::vector<std::optional<Tensor>> contents(graph.values.size());  // the small values computed
  for (ValueId id : graph.inputs) {
    const Value& in = graph.value(id);
    if (graph.is_constant(id)) continue;
    if (!in.shape_known) return {};
    Shape s = in.shape;
    for (size_t d = 0; d < s.size(); ++d)
      if (s[d] < 0) {
        if (d > 0) return {};
        s[d] = 1;
      }
    shapes[static_cast<size_t>(id)] = s;
  }
  const InferenceContext one{1, &graph.source, {}};
  auto small_shape = [&](const Shape& s) {
    int64_t n = 1;
    for (int64_t d : s) {
      if (d < 0 || d > kSmall) return false;
      n *= d;
      if (n > kSmall) return false;
    }
    return true;
  };
  try {
    for (const Node& node : graph.nodes) {
      std::vector<Shape> in_shapes;
      std::vector<const Tensor*> in_values;
      bool all_small = true;
      for (ValueId id : node.inputs) {
        const Tensor* t = nullptr;
        if (id != kNoValue && graph.is_constant(id)) t = &graph.constant(id);
        else if (id != kNoValue && contents[static_cast<size_t>(id)]) t = &*contents[static_cast<size_t>(id)];
        in_shapes.push_back(id == kNoValue ? Shape{} : t ? t->shape() : shapes[static_cast<size_t>(id)]);
        in_values.push_back(t);
        all_small = all_small && (id == kNoValue || (t && t->size() <= kSmall));
      }
      Node copy = node;
      std::vector<Shape> out = infer_output_shapes(copy, in_shapes, in_values, one);
      for (size_t i = 0; i < out.size() && i < node.outputs.size(); ++i) shapes[static_cast<size_t>(node.outputs[i])] = out[i];
      if (node.op == OpType::kShape && !node.outputs.empty()) {
        const Shape& x = in_shapes.at(0);
        auto [b, e] = shape_slice(node.attr<ShapeAttrs>(), static_cast<int64_t>(x.size()));
        Tensor dims(DataType::kInt64, {std::max<int64_t>(e - b, 0)});
        for (int64_t d = b; d < e; ++d) dims.data<int64_t>()[d - b] = x[static_cast<size_t>(d)];
        contents[static_cast<size_t>(node.outputs[0])] = std::move(dims);
      } else if (all_small && !node.inputs.empty() &&
                 std::all_of(out.begin(), out.end(), small_shape)) {
        std::vector<Tensor> values = evaluate_node(node, in_values, 1, nullptr, graph.source);
        for (size_t i = 0; i < values.size() && i < node.outputs.size(); ++i)
          contents[static_cast<size_t>(node.outputs[i])] = std::move(values[i]);
      }
    }
  } catch (const Error&) {
    return {};
  }
  std::map<std::string, Shape> at_one;
  for (const Node& node : graph.nodes)
    for (ValueId v : node.outputs) at_one[graph.value(v).name] = shapes[static_cast<size_t>(v)];
  return at_one;
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
