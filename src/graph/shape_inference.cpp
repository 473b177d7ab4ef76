// Shape inference: each operator's rule is in its record (src/ops/); this file runs them over a
// graph and holds the helpers several rules share.
#include "graph/shape_inference.h"

#include <algorithm>
#include <numeric>
#include <set>

#include "ops/op.h"
#include "tern/error.h"

namespace tern {

std::vector<SliceRange> slice_ranges(const SliceAttrs& a, const Shape& x, const std::string& who) {
  size_t n = a.starts.size();
  check(a.ends.size() == n && (a.axes.empty() || a.axes.size() == n) && (a.steps.empty() || a.steps.size() == n),
        who + ": starts, ends, axes and steps differ in length");
  int64_t rank = static_cast<int64_t>(x.size());
  std::vector<SliceRange> ranges;
  std::vector<bool> seen(x.size(), false);
  for (size_t i = 0; i < n; ++i) {
    int64_t axis = normalize_axis(a.axes.empty() ? static_cast<int64_t>(i) : a.axes[i], rank, who);
    check(!seen[static_cast<size_t>(axis)], who + ": repeated axis");
    seen[static_cast<size_t>(axis)] = true;
    int64_t step = a.steps.empty() ? 1 : a.steps[i];
    check(step != 0, who + ": step must not be 0");
    int64_t d = x[static_cast<size_t>(axis)];
    check(d >= 0, who + ": cannot slice a dynamic dimension");
    // Clamp as ONNX specifies, saturating so INT64_MIN/MAX sentinels cannot overflow.
    auto resolve = [d](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v = v < -d ? -1 - d : v;  // keeps v + d >= -1
      if (v < 0) v += d;
      return std::clamp(v, lo, hi);
    };
    int64_t start, end, length;
    if (step > 0) {
      start = resolve(a.starts[i], 0, d);
      end = resolve(a.ends[i], 0, d);
      length = end > start ? (end - start - 1) / step + 1 : 0;  // no overflow for any step
    } else {
      start = resolve(a.starts[i], 0, d - 1);
      end = resolve(a.ends[i], -1, d - 1);
      length = start > end ? 1 - (start - end - 1) / step : 0;
    }
    ranges.push_back({axis, start, step, length});
  }
  return ranges;
}

bool shape_depends_on_value(const Node& node, size_t input_index) {
  return input_index < 32 && (ops::record(node.op).shape_reads_inputs >> input_index & 1u) != 0;
}

std::pair<int64_t, int64_t> shape_slice(const ShapeAttrs& attrs, int64_t rank) {
  auto clamp = [rank](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + rank : i, 0, rank); };
  int64_t begin = clamp(attrs.start), end = clamp(attrs.end);
  return {begin, std::max(begin, end)};
}

int64_t normalize_axis(int64_t axis, int64_t rank, const std::string& what) {
  check(axis >= -rank && axis < rank, what + ": axis " + std::to_string(axis) + " out of range for rank " +
                                          std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& what) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == 1) out[i] = db;
    else if (db == 1) out[i] = da;
    else if (da < 0 || db < 0) out[i] = da < 0 ? db : da;
    else {
      check(da == db, what + ": shapes " + to_string(a) + " and " + to_string(b) + " do not broadcast");
      out[i] = da;
    }
  }
  return out;
}

std::vector<Shape> infer_output_shapes(Node& node, std::span<const Shape> in, std::span<const Tensor* const> values,
                                       const InferenceContext& ctx) {
  const ops::OpRecord& r = ops::record(node.op);
  std::string who = ops::node_who(ctx.source ? *ctx.source : std::string(), node);
  check(r.shapes != nullptr, who + ": no shape inference for this operator");
  check(!in.empty(), who + ": expects at least 1 inputs, got 0");
  ops::ShapeCall call{node, in, values, ctx, who};
  return r.shapes(call);
}

DataType infer_output_type(const Node& node, std::span<const DataType> input_types, size_t output_index) {
  const ops::OpRecord& r = ops::record(node.op);
  if (r.type) return r.type(node, input_types, output_index);
  return input_types.empty() ? DataType::kFloat32 : input_types[0];
}

namespace {

// Where the graph's batch is in a node's outputs, given where it is in input 0 (-1: nowhere):
// dim 0 stays dim 0 through the operators whose record says so; a Transpose moves it with its
// dim; a Reshape or Expand puts it where its target names it (kSymbolicBatch: a class token
// expanded to the batch, a sequence-first view [T, N, D]), and any other known target loses it.
int output_batch_axis(const Graph& graph, const Node& node, int in_axis, std::span<const Tensor* const> values,
                      const std::vector<Shape>& out) {
  if ((node.op == OpType::kReshape || node.op == OpType::kExpand) && values.size() == 2 && values[1] &&
      values[1]->dtype() == DataType::kInt64 && values[1]->size() > 0) {
    std::span<const int64_t> target(values[1]->data<int64_t>(), static_cast<size_t>(values[1]->size()));
    if (std::count(target.begin(), target.end(), kSymbolicBatch) == 1)
      return static_cast<int>(std::find(target.begin(), target.end(), kSymbolicBatch) - target.begin());
    // ONNX's 0: "copy this dim of the input" (without allowzero), so a batch there stays there.
    if (node.op == OpType::kReshape && in_axis >= 0 && !node.attr<ReshapeAttrs>().allow_zero &&
        static_cast<size_t>(in_axis) < target.size() && target[static_cast<size_t>(in_axis)] == 0)
      return in_axis;
    if (node.op == OpType::kReshape) return -1;
  }
  if (in_axis < 0) return -1;
  if (node.op == OpType::kTranspose) {
    const std::vector<int64_t>& perm = node.attr<TransposeAttrs>().perm;
    const int64_t rank = static_cast<int64_t>(graph.value(node.inputs[0]).shape.size());
    for (int64_t k = 0; k < rank; ++k)
      if ((perm.empty() ? rank - 1 - k : perm[static_cast<size_t>(k)]) == in_axis) return static_cast<int>(k);
    return -1;
  }
  const ops::OpRecord& r = ops::record(node.op);
  if (in_axis == 0) return r.keeps_batch && r.keeps_batch(node, graph) ? 0 : -1;
  // Elsewhere (sequence-first tokens [T, N, D]): kept by linear layers on the last dim and by
  // element-wise operators of the same rank.
  const size_t rank = graph.value(node.inputs[0]).shape.size();
  if (out.empty() || out[0].size() != rank) return -1;
  const bool last_dim_only = (node.op == OpType::kGemm && !node.attr<GemmAttrs>().trans_a) || node.op == OpType::kMatMul ||
                             (node.op == OpType::kFakeQuantize && !node.attr<FakeQuantAttrs>().dynamic);
  static const std::set<OpType> elementwise = {OpType::kRelu, OpType::kClip,    OpType::kSigmoid, OpType::kHardSigmoid,
                                                OpType::kTanh, OpType::kErf,     OpType::kAdd,     OpType::kSub,
                                                OpType::kMul,  OpType::kDiv,     OpType::kIdentity};
  if ((last_dim_only && static_cast<size_t>(in_axis) + 1 < rank) || elementwise.count(node.op)) return in_axis;
  return -1;
}

}  // namespace

void mark_batch_leading_inputs(Graph& graph) {
  for (ValueId id : graph.inputs) {
    Value& v = graph.value(id);
    v.batch_axis = v.shape_known && !v.shape.empty() && v.shape[0] < 0 ? 0 : -1;
  }
}

void infer_shapes(Graph& graph) {
  mark_batch_leading_inputs(graph);
  for (Node& node : graph.nodes) infer_node_shapes(graph, node);
}

void infer_node_shapes(Graph& graph, Node& node) {
  InferenceContext ctx;
  ctx.source = &graph.source;
  {
    std::vector<Shape> shapes;
    std::vector<const Tensor*> values;
    std::vector<DataType> types;
    std::vector<Tensor> partial;  // known_content as tensors, for rules that read partial contents
    partial.reserve(node.inputs.size());
    bool unknown = false;
    bool reads_partial = ops::record(node.op).shape_reads_partial;
    for (ValueId id : node.inputs) {
      if (id == kNoValue) {
        shapes.emplace_back();
        values.push_back(nullptr);
        types.push_back(DataType::kUndefined);
        continue;
      }
      const Value& v = graph.value(id);
      const Tensor* value = v.constant ? &*v.constant : nullptr;
      if (!value && reads_partial && v.has_known_content && v.shape_known && v.shape.size() == 1 &&
          v.shape[0] == static_cast<int64_t>(v.known_content.size())) {
        partial.push_back(Tensor::from_int64s({v.shape[0]}, v.known_content));
        value = &partial.back();
      }
      if (!v.shape_known || (shape_depends_on_value(node, shapes.size()) && !value)) unknown = true;
      shapes.push_back(v.shape);
      values.push_back(value);
      types.push_back(v.dtype);
    }
    if (unknown) {  // known only at run time, when the executor infers again with real inputs
      for (size_t i = 0; i < node.outputs.size(); ++i) {
        Value& v = graph.value(node.outputs[i]);
        v.shape_known = false;
        v.dtype = infer_output_type(node, types, i);
      }
      return;
    }
    std::vector<int8_t> axes;
    for (ValueId id : node.inputs) axes.push_back(static_cast<int8_t>(id == kNoValue ? -1 : graph.value(id).batch_axis));
    ctx.batch_axis = axes;
    std::vector<Shape> out = infer_output_shapes(node, shapes, values, ctx);
    const int out_axis = output_batch_axis(graph, node, axes.empty() ? -1 : axes[0], values, out);
    for (size_t i = 0; i < node.outputs.size() && i < out.size(); ++i) {
      Value& v = graph.value(node.outputs[i]);
      v.shape = out[i];
      v.shape_known = true;
      v.dtype = infer_output_type(node, types, i);
      const bool dynamic = out_axis >= 0 && static_cast<size_t>(out_axis) < v.shape.size() &&
                           v.shape[static_cast<size_t>(out_axis)] < 0;
      v.batch_axis = dynamic ? out_axis : -1;
    }
  }
}

}  // namespace tern
