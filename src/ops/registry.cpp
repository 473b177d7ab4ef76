// The operator table: one record per OpType, collected from the op files in ops.def order.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>

#include "ops/op.h"

namespace tern::ops {

namespace {

constexpr size_t kOpCount = 0
#define TERN_OP(name) +1
#include "tern/ops.def"
#undef TERN_OP
    ;

struct Registry {
  std::array<const OpRecord*, kOpCount> by_op{};
  std::map<std::string_view, const OpRecord*, std::less<>> by_onnx_name;

  Registry() {
    size_t i = 0;
#define TERN_OP(name) by_op[i++] = &record_##name();
#include "tern/ops.def"
#undef TERN_OP
    for (size_t k = 0; k < kOpCount; ++k) {
      const OpRecord* r = by_op[k];
      if (static_cast<size_t>(r->op) != k) throw Error("operator table: record '" + std::string(r->name) + "' is out of order");
      for (std::string_view n : r->onnx_names)
        if (!by_onnx_name.emplace(n, r).second) throw Error("operator table: ONNX operator '" + std::string(n) + "' twice");
    }
  }
};

const Registry& registry() {
  static const Registry r;
  return r;
}

}  // namespace

const OpRecord& record(OpType op) {
  size_t i = static_cast<size_t>(op);
  check(i < kOpCount, "unknown operator " + std::to_string(i));
  return *registry().by_op[i];
}

const OpRecord* onnx_record(std::string_view name) {
  const auto& m = registry().by_onnx_name;
  auto it = m.find(name);
  return it == m.end() ? nullptr : it->second;
}

std::vector<std::string> onnx_operator_names() {
  std::vector<std::string> names;
  for (const auto& [n, r] : registry().by_onnx_name) names.emplace_back(n);
  return names;
}

std::string OnnxWriter::clamped_output(float lo, float hi) {
  const float inf = std::numeric_limits<float>::infinity();
  if (lo == -inf && hi == inf) return outputs[0];
  std::string raw = temp(outputs[0] + "/unclamped");
  if (lo == 0.0f && hi == inf) {
    emit("Relu", {raw}, {outputs[0]});
    return raw;
  }
  auto bound = [&](float v, const char* hint) {
    return std::isfinite(v) ? constant(outputs[0] + hint, Tensor::from_floats({}, std::vector<float>{v})) : std::string();
  };
  std::vector<std::string> ins = {raw, bound(lo, "/min"), bound(hi, "/max")};
  while (ins.back().empty()) ins.pop_back();
  emit("Clip", ins, {outputs[0]});
  return raw;
}

std::string node_who(const std::string& source, const Node& node) {
  return (source.empty() ? "" : source + ": ") + "node '" + node.name + "' (" + to_string(node.op) + ")";
}

std::optional<Shape> CostCall::input(size_t i) const {
  if (i >= node.inputs.size() || node.inputs[i] == kNoValue) return std::nullopt;
  const Value& v = graph.value(node.inputs[i]);
  if (!v.shape_known) return std::nullopt;
  Shape s = v.shape;
  if (v.batch_axis >= 0 && static_cast<size_t>(v.batch_axis) < s.size() && s[static_cast<size_t>(v.batch_axis)] < 0)
    s[static_cast<size_t>(v.batch_axis)] = 1;
  return s;
}

// ---- OnnxNode helpers -------------------------------------------------------------------------------

void OnnxNode::need_inputs(size_t lo, size_t hi) const {
  check(node.inputs.size() >= lo && node.inputs.size() <= hi,
        who + ": expects " + std::to_string(lo) + (lo == hi ? "" : " to " + std::to_string(hi)) + " inputs, got " +
            std::to_string(node.inputs.size()));
  for (size_t i = 0; i < lo; ++i) check(node.inputs[i] != kNoValue, who + ": required input " + std::to_string(i) + " is missing");
}

const Tensor* OnnxNode::constant_input(size_t i) const {
  if (i >= node.inputs.size() || node.inputs[i] == kNoValue) return nullptr;
  const Value& v = graph.value(node.inputs[i]);
  return v.constant ? &*v.constant : nullptr;
}

std::vector<int64_t> OnnxNode::constant_ints(size_t i, const char* what) const {
  const Tensor* t = constant_input(i);
  check(t != nullptr, who + ": input '" + what + "' must be a constant");
  check(t->dtype() == DataType::kInt64 && t->rank() <= 1, who + ": input '" + what + "' must be a 1-D int64 tensor");
  return {t->data<int64_t>(), t->data<int64_t>() + t->size()};
}

bool OnnxNode::constant_inputs_from(size_t first) const {
  for (size_t i = first; i < node.inputs.size(); ++i)
    if (node.inputs[i] != kNoValue && !constant_input(i)) return false;
  return true;
}

void OnnxNode::require(bool ok, const std::string& what) const {
  check(ok, who + ": " + what + " is not supported");
}

// ---- ShapeCall helpers ------------------------------------------------------------------------------

void ShapeCall::need_inputs(size_t n) const {
  check(in.size() >= n, who + ": expects at least " + std::to_string(n) + " inputs, got " + std::to_string(in.size()));
}

std::vector<int64_t> ShapeCall::ints(size_t i, const char* what) const {
  check(i < values.size() && values[i] != nullptr, who + ": input '" + what + "' must be known");
  const Tensor& t = *values[i];
  check(t.dtype() == DataType::kInt64 && t.rank() <= 1, who + ": input '" + what + "' must be a 1-D int64 tensor");
  return {t.data<int64_t>(), t.data<int64_t>() + t.size()};
}

// ---- sign rules -------------------------------------------------------------------------------------

bool never_non_negative(const SignCall&) { return false; }
bool always_non_negative(const SignCall&) { return true; }
bool like_input0(const SignCall& c) { return c.input_non_negative(0); }
bool like_all_inputs(const SignCall& c) {
  for (size_t i = 0; i < c.node.inputs.size(); ++i)
    if (c.node.inputs[i] != kNoValue && !c.input_non_negative(i)) return false;
  return true;
}

bool keeps_batch_always(const Node&, const Graph&) { return true; }

bool keeps_batch_broadcast(const Node& node, const Graph& graph) {
  if (node.inputs.empty() || node.inputs[0] == kNoValue || !graph.value(node.inputs[0]).shape_known) return false;
  size_t rank = graph.value(node.inputs[0]).shape.size();
  for (ValueId id : node.inputs)
    if (id != kNoValue && (!graph.value(id).shape_known || graph.value(id).shape.size() > rank)) return false;
  return rank > 0;
}

}  // namespace tern::ops

namespace tern {

std::string to_string(OpType op) {
  static const char* const names[] = {
#define TERN_OP(name) #name,
#include "tern/ops.def"
#undef TERN_OP
  };
  size_t i = static_cast<size_t>(op);
  return i < std::size(names) ? names[i] : "?";
}

void Node::throw_wrong_attrs() const {
  throw Error("node '" + name + "' (" + to_string(op) + "): its attributes are not of the kind this operator carries");
}

}  // namespace tern
