#include <limits>

#include "tern/evaluate.h"

namespace tern {

namespace {
Shape at_batch_one(Shape s) {
  for (int64_t& d : s)
    if (d < 0) d = 1;
  return s;
}
int64_t count(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}
}  // namespace

ModelSummary summarize(const Graph& graph) {
  ModelSummary summary;
  for (const Node& node : graph.nodes) {
    LayerSummary layer;
    layer.name = node.name;
    layer.op = to_string(node.op);
    const Value& out = graph.value(node.outputs[0]);
    layer.output = at_batch_one(out.shape);
    for (ValueId id : node.inputs)
      if (graph.is_constant(id) && graph.constant(id).dtype() == DataType::kFloat32 &&
          (node.op == OpType::kConv || node.op == OpType::kGemm || node.op == OpType::kMatMul ||
           node.op == OpType::kBatchNormalization))
        layer.parameters += graph.constant(id).size();
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (node.op == OpType::kConv) {
      const Shape& w = graph.value(node.inputs[1]).shape;
      layer.macs = count(layer.output) * count(Shape(w.begin() + 1, w.end()));
      lo = node.attr<ConvAttrs>().clamp_lo;
      hi = node.attr<ConvAttrs>().clamp_hi;
    } else if (node.op == OpType::kGemm) {
      const auto& a = node.attr<GemmAttrs>();
      const Shape& x = graph.value(node.inputs[0]).shape;
      layer.macs = count(layer.output) * (a.trans_a ? x[0] : x[1]);
      lo = a.clamp_lo;
      hi = a.clamp_hi;
    } else if (node.op == OpType::kMatMul) {
      const Shape& x = graph.value(node.inputs[0]).shape;
      layer.macs = count(layer.output) * (x.empty() ? 1 : x.back());
    }
    if (lo == 0 && hi == std::numeric_limits<float>::infinity()) layer.op += "+Relu";
    else if (lo != -std::numeric_limits<float>::infinity() || hi != std::numeric_limits<float>::infinity())
      layer.op += "+Clip";
    summary.parameters += layer.parameters;
    summary.macs += layer.macs;
    summary.layers.push_back(std::move(layer));
  }
  return summary;
}

}  // namespace tern
