#include <limits>

#include "tern/error.h"
#include "tern/evaluate.h"

namespace tern {

namespace {

// The batch dim at 1; any other dim the model leaves dynamic stays unknown (kDynamicDim, shown
// as "?"), never a silent 1.
Shape at_batch_one(Shape s, bool batch_leading) {
  if (!s.empty() && s[0] < 0 && batch_leading) s[0] = 1;
  return s;
}

// Product of dims, -1 when one is unknown; Error naming `who` past 2^63.
int64_t checked_product(std::initializer_list<int64_t> factors, const std::string& who) {
  int64_t n = 1;
  for (int64_t f : factors) {
    if (f < 0) return -1;
    check(!__builtin_mul_overflow(n, f, &n), who + ": its multiply-accumulate count overflows 64 bits");
  }
  return n;
}

int64_t element_product(const Shape& s, size_t begin, const std::string& who) {
  int64_t n = 1;
  for (size_t i = begin; i < s.size(); ++i) {
    if (s[i] < 0) return -1;
    check(!__builtin_mul_overflow(n, s[i], &n), who + ": its multiply-accumulate count overflows 64 bits");
  }
  return n;
}

}  // namespace

ModelSummary summarize(const Graph& graph) {
  ModelSummary summary;
  for (const Node& node : graph.nodes) {
    std::string who = (graph.source.empty() ? "" : graph.source + ": ") + "node '" + node.name + "'";
    LayerSummary layer;
    layer.name = node.name;
    layer.op = to_string(node.op);
    const Value& out = graph.value(node.outputs[0]);
    layer.output = at_batch_one(out.shape, out.batch_leading);
    for (ValueId id : node.inputs)
      if (id != kNoValue && graph.is_constant(id) && graph.constant(id).dtype() == DataType::kFloat32 &&
          (node.op == OpType::kConv || node.op == OpType::kGemm || node.op == OpType::kMatMul ||
           node.op == OpType::kBatchNormalization || node.op == OpType::kConvTranspose ||
           node.op == OpType::kLayerNormalization || node.op == OpType::kInstanceNormalization ||
           node.op == OpType::kPRelu || node.op == OpType::kLSTM || node.op == OpType::kGRU || node.op == OpType::kRNN))
        check(!__builtin_add_overflow(layer.parameters, graph.constant(id).size(), &layer.parameters),
              who + ": parameter count overflows 64 bits");
    // Per image: the output at batch 1. Any other dimension the model does not declare makes
    // the count unknown (-1), never a guess.
    const bool out_known = out.shape_known && !out.shape.empty();
    int64_t per_image_out = -1;
    if (out_known) {
      Shape one = out.shape;
      if (one[0] < 0) one[0] = 1;  // the dynamic batch
      per_image_out = element_product(one, 0, who);
    }
    auto input_shape = [&](size_t i) -> const Shape* {
      if (i >= node.inputs.size() || node.inputs[i] == kNoValue) return nullptr;
      const Value& v = graph.value(node.inputs[i]);
      return v.shape_known ? &v.shape : nullptr;
    };
    float lo = -std::numeric_limits<float>::infinity(), hi = std::numeric_limits<float>::infinity();
    if (node.op == OpType::kConv) {
      const Shape* w = input_shape(1);
      layer.macs = w && w->size() >= 2 ? checked_product({per_image_out, element_product(*w, 1, who)}, who) : -1;
      lo = node.attr<ConvAttrs>().clamp_lo;
      hi = node.attr<ConvAttrs>().clamp_hi;
    } else if (node.op == OpType::kGemm) {
      const auto& a = node.attr<GemmAttrs>();
      const Shape* x = input_shape(0);
      int64_t k = x && x->size() == 2 ? (*x)[a.trans_a ? 0 : 1] : -1;
      layer.macs = checked_product({per_image_out, k}, who);
      lo = a.clamp_lo;
      hi = a.clamp_hi;
    } else if (node.op == OpType::kMatMul) {
      const Shape* x = input_shape(0);
      int64_t k = x && !x->empty() ? x->back() : -1;
      layer.macs = checked_product({per_image_out, k}, who);
    } else if (node.op == OpType::kConvTranspose || node.op == OpType::kConvInteger || node.op == OpType::kMatMulInteger ||
               node.op == OpType::kLSTM || node.op == OpType::kGRU || node.op == OpType::kRNN) {
      layer.macs = -1;  // not counted yet: "?" rather than a silent 0
    }
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
