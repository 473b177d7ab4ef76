// Operators that move or relabel data without computing: Flatten, Reshape, Transpose, Squeeze,
// Unsqueeze, Identity (and inference-mode Dropout), Constant.
#ifndef TERN_OPS_TORCH
#include <algorithm>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

std::vector<Tensor> run_reshaped(const OpContext&, std::span<const Tensor* const> in, std::span<const Shape> out) {
  return {in[0]->reshaped(out[0])};
}

// ---- Flatten

void import_flatten(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.node.attrs = AxisAttrs{n.get_int("axis", 1)};
}

std::vector<Shape> flatten_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<AxisAttrs>();
  int64_t rank = static_cast<int64_t>(x.size());
  check(a.axis >= -rank && a.axis <= rank, c.who + ": axis out of range");
  if (a.axis < 0) a.axis += rank;
  size_t axis = static_cast<size_t>(a.axis);
  return {{dims_product(x, 0, axis, c.who), dims_product(x, axis, x.size(), c.who)}};
}

bool flatten_keeps_batch(const Node& n, const Graph&) { return n.attr<AxisAttrs>().axis == 1; }

void export_flatten(OnnxWriter& w) { w.attr(w.emit("Flatten", w.inputs, w.outputs), "axis", w.node.attr<AxisAttrs>().axis); }

OpRecord flatten() {
  OpRecord r;
  r.onnx_names = {"Flatten"};
  r.import = import_flatten;
  r.attrs = attrs_codec<AxisAttrs, describe_axis>("axis");
  r.shapes = flatten_shapes;
  r.keeps_batch = flatten_keeps_batch;
  r.run = run_reshaped;
  r.non_negative = like_input0;
  r.integer = IntegerUse::kOnCodes;
  r.export_onnx = export_flatten;
  return r;
}

// ---- Reshape: the target is input 1 (an attribute before opset 5). In a folded target,
// kSymbolicBatch stands for the graph's dynamic batch.

void import_reshape(OnnxNode& n) {
  if (n.opset < 5) {
    n.need_inputs(1, 1);
    std::vector<int64_t> target = n.get_ints("shape");
    n.node.inputs.push_back(
        n.graph.add_constant(n.node.name + ".shape", Tensor::from_int64s({static_cast<int64_t>(target.size())}, target)));
  }
  n.need_inputs(2, 2);
  n.node.attrs = ReshapeAttrs{n.get_int("allowzero", 0) != 0};
}

constexpr auto describe_reshape = [](auto& a, auto&& field) { field("allow_zero", a.allow_zero); };

std::vector<Shape> reshape_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const std::string& who = c.who;
  check(c.values.size() > 1 && c.values[1] != nullptr,
        who + ": the target shape must be a constant or computable at import time");
  const Tensor& target = *c.values[1];
  check(target.dtype() == DataType::kInt64 && target.rank() == 1, who + ": target shape must be a 1-D int64 tensor");
  const Shape& x = c.in[0];
  bool allow_zero = c.node.attr<ReshapeAttrs>().allow_zero;
  Shape out;
  int infer_at = -1, batch_at = -1;
  bool unknown_elements = false;
  for (int64_t i = 0; i < target.size(); ++i) {
    int64_t d = target.data<int64_t>()[i];
    if (d == kSymbolicBatch) {
      batch_at = static_cast<int>(i);
      out.push_back(c.context.batch);
    } else if (d == kUnknownElement && c.context.batch < 0) {  // known only at run time
      out.push_back(kDynamicDim);
      unknown_elements = true;
    } else if (d == -1) {
      check(infer_at < 0, who + ": target shape has more than one -1");
      infer_at = static_cast<int>(i);
      out.push_back(kDynamicDim);
    } else if (d == 0 && !allow_zero) {
      check(static_cast<size_t>(i) < x.size(), who + ": target copies dimension " + std::to_string(i) +
                                                   " that the input " + to_string(x) + " lacks");
      out.push_back(x[static_cast<size_t>(i)]);
    } else {
      check(d >= 0, who + ": invalid target dimension " + std::to_string(d));
      out.push_back(d);
    }
  }
  // Element counts with the dynamic batch divided out on both sides when it is the only unknown
  // and the input's first dim is that batch (x.view(x.size(0), -1) at import time).
  bool input_batch = !x.empty() && x[0] < 0 && !c.context.batch_axis.empty() && c.context.batch_axis[0] == 0;
  int64_t total = dims_product(x, 0, x.size(), who);
  int64_t known = 1;
  bool unknown = false;
  for (size_t i = 0; i < out.size(); ++i) {
    if (static_cast<int>(i) == infer_at) continue;
    if (out[i] >= 0) known = dim_mul(known, out[i], who);
    else if (static_cast<int>(i) == batch_at && total < 0 && input_batch) continue;
    else unknown = true;
  }
  if (total < 0 && batch_at >= 0 && input_batch && out[static_cast<size_t>(batch_at)] < 0)
    total = dims_product(x, 1, x.size(), who);
  if (total >= 0 && !unknown && !unknown_elements) {
    if (infer_at >= 0) {
      check(known != 0 && total % known == 0, who + ": cannot reshape " + to_string(x) + " to the target");
      out[static_cast<size_t>(infer_at)] = total / known;
    } else {
      check(known == total, who + ": cannot reshape " + to_string(x) + " to " + to_string(out));
    }
  }
  return {out};
}

// A target import made constant up to the dynamic batch (kSymbolicBatch) says the batch as ONNX
// does: 0 (copy the input's dim) where the batch stays in place, else -1 (inferred).
void export_reshape(OnnxWriter& w) {
  const bool allow_zero = w.node.attr<ReshapeAttrs>().allow_zero;
  std::vector<std::string> ins = w.inputs;
  const ValueId target = w.node.inputs[1];
  if (w.graph.is_constant(target)) {
    std::vector<int64_t> dims(w.graph.constant(target).int64s().begin(), w.graph.constant(target).int64s().end());
    if (std::find(dims.begin(), dims.end(), kSymbolicBatch) != dims.end()) {
      const Value& x = w.graph.value(w.node.inputs[0]);
      const bool inferred = std::find(dims.begin(), dims.end(), int64_t{-1}) != dims.end();
      for (size_t d = 0; d < dims.size(); ++d) {
        if (dims[d] != kSymbolicBatch) continue;
        if (d == 0 && x.batch_leading() && !allow_zero) dims[d] = 0;
        else if (!inferred && std::count(dims.begin(), dims.end(), kSymbolicBatch) == 1) dims[d] = -1;
        else w.fail("a Reshape target with the batch at dim " + std::to_string(d));
      }
      ins[1] = w.constant(w.outputs[0] + "/shape", Tensor::from_int64s({static_cast<int64_t>(dims.size())}, dims));
    }
  }
  size_t n = w.emit("Reshape", ins, w.outputs);
  if (allow_zero) w.attr(n, "allowzero", int64_t{1});
}

OpRecord reshape() {
  OpRecord r;
  r.onnx_names = {"Reshape"};
  r.import = import_reshape;
  r.attrs = attrs_codec<ReshapeAttrs, describe_reshape>("reshape");
  r.shapes = reshape_shapes;
  r.shape_reads_inputs = 1u << 1;
  r.shape_reads_partial = true;
  r.content = content_of_input0;  // the elements in the same order
  r.run = run_reshaped;
  r.non_negative = like_input0;
  r.integer = IntegerUse::kOnCodes;
  r.export_onnx = export_reshape;
  return r;
}

// ---- Transpose

void import_transpose(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.node.attrs = TransposeAttrs{n.get_ints("perm")};
}

constexpr auto describe_transpose = [](auto& a, auto&& field) { field("perm", a.perm); };

std::vector<Shape> transpose_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<TransposeAttrs>();
  size_t rank = x.size();
  if (a.perm.empty())
    for (size_t i = 0; i < rank; ++i) a.perm.push_back(static_cast<int64_t>(rank - 1 - i));
  check(a.perm.size() == rank, c.who + ": perm has " + std::to_string(a.perm.size()) + " entries for rank " +
                                   std::to_string(rank));
  std::vector<bool> seen(rank, false);
  Shape out;
  for (int64_t p : a.perm) {
    check(p >= 0 && p < static_cast<int64_t>(rank) && !seen[static_cast<size_t>(p)], c.who + ": perm is not a permutation");
    seen[static_cast<size_t>(p)] = true;
    out.push_back(x[static_cast<size_t>(p)]);
  }
  return {out};
}

std::vector<Tensor> run_transpose(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const Shape& out_shape = outs[0];
  const auto& perm = ctx.node.attr<TransposeAttrs>().perm;
  size_t rank = static_cast<size_t>(x.rank()), es = element_size(x.dtype());
  // Only axes of extent 1 move (a sequence-first [T, 1, D] at batch 1 and back): the values keep
  // their order, and the output is the input's buffer under the new shape (as a Reshape).
  int64_t last = -1;
  bool in_order = true;
  for (size_t i = 0; i < rank && in_order; ++i) {
    if (x.dim(perm[i]) == 1) continue;
    in_order = perm[i] > last;
    last = perm[i];
  }
  if (in_order) return {x.reshaped(out_shape)};
  Tensor y = Tensor::uninitialized(x.dtype(), out_shape);
  std::vector<int64_t> in_strides = strides_of(x.shape()), s(rank);
  for (size_t i = 0; i < rank; ++i) s[i] = in_strides[static_cast<size_t>(perm[i])];
  strided_copy(x.raw(), 0, out_shape, s, es, y.raw());
  return {y};
}

bool transpose_keeps_batch(const Node& n, const Graph&) {
  const auto& perm = n.attr<TransposeAttrs>().perm;
  return !perm.empty() && perm[0] == 0;
}

void export_transpose(OnnxWriter& w) {
  size_t n = w.emit("Transpose", w.inputs, w.outputs);
  if (!w.node.attr<TransposeAttrs>().perm.empty()) w.attr(n, "perm", w.node.attr<TransposeAttrs>().perm);
}

OpRecord transpose() {
  OpRecord r;
  r.onnx_names = {"Transpose"};
  r.import = import_transpose;
  r.attrs = attrs_codec<TransposeAttrs, describe_transpose>("transpose");
  r.shapes = transpose_shapes;
  r.run = run_transpose;
  r.keeps_batch = transpose_keeps_batch;
  r.non_negative = like_input0;
  r.export_onnx = export_transpose;
  return r;
}

// ---- Unsqueeze / Squeeze: axes as an attribute, or (opset 13) a constant or run-time input.

void import_axes(OnnxNode& n) {
  AxesAttrs a;
  bool unsqueeze = n.op_type == "Unsqueeze";
  if (n.opset >= 13) {
    n.need_inputs(unsqueeze ? 2 : 1, 2);
    if (n.node.inputs.size() > 1 && n.constant_input(1)) {  // else read at run time
      a.axes = n.constant_ints(1, "axes");
      n.node.inputs.resize(1);
    }
  } else {
    n.need_inputs(1, 1);
    a.axes = n.get_ints("axes");
  }
  check(!unsqueeze || !a.axes.empty() || n.node.inputs.size() > 1, n.who + ": axes must not be empty");
  n.node.attrs = a;
}

constexpr auto describe_axes = [](auto& a, auto&& field) { field("axes", a.axes); };

std::vector<Shape> unsqueeze_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  AxesAttrs a = c.node.attr<AxesAttrs>();
  if (c.in.size() > 1) a.axes = c.ints(1, "axes");
  int64_t rank = static_cast<int64_t>(x.size() + a.axes.size());
  std::vector<bool> inserted(static_cast<size_t>(rank), false);
  for (auto& axis : a.axes) {
    axis = normalize_axis(axis, rank, c.who);
    check(!inserted[static_cast<size_t>(axis)], c.who + ": repeated axis");
    inserted[static_cast<size_t>(axis)] = true;
  }
  Shape out;
  size_t next = 0;
  for (int64_t i = 0; i < rank; ++i) out.push_back(inserted[static_cast<size_t>(i)] ? 1 : x[next++]);
  return {out};
}

std::vector<Shape> squeeze_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  AxesAttrs a = c.node.attr<AxesAttrs>();
  if (c.in.size() > 1) a.axes = c.ints(1, "axes");
  int64_t rank = static_cast<int64_t>(x.size());
  std::vector<bool> drop(x.size(), false);
  if (a.axes.empty()) {
    for (size_t i = 0; i < x.size(); ++i) {
      check(x[i] >= 0, c.who + ": squeeze without axes needs a static shape");
      if (x[i] == 1) a.axes.push_back(static_cast<int64_t>(i));
    }
  }
  for (auto& axis : a.axes) {
    axis = normalize_axis(axis, rank, c.who);
    check(x[static_cast<size_t>(axis)] == 1 || x[static_cast<size_t>(axis)] < 0,
          c.who + ": cannot squeeze axis " + std::to_string(axis) + " of " + to_string(x));
    drop[static_cast<size_t>(axis)] = true;
  }
  Shape out;
  for (size_t i = 0; i < x.size(); ++i)
    if (!drop[i]) out.push_back(x[i]);
  return {out};
}

bool axes_keep_batch(const Node& n, const Graph&) {
  const auto& axes = n.attr<AxesAttrs>().axes;  // normalized by shape inference
  return n.inputs.size() == 1 && !axes.empty() && std::none_of(axes.begin(), axes.end(), [](int64_t a) { return a == 0; });
}

// Unsqueeze / Squeeze: axes as an input (opset 13).
void export_axes(OnnxWriter& w) {
  const std::vector<int64_t>& axes = w.node.attr<AxesAttrs>().axes;
  std::vector<std::string> ins = w.inputs;
  if (ins.size() == 1 && !axes.empty())
    ins.push_back(w.constant(w.outputs[0] + "/axes", Tensor::from_int64s({static_cast<int64_t>(axes.size())}, axes)));
  w.emit(w.node.op == OpType::kUnsqueeze ? "Unsqueeze" : "Squeeze", ins, w.outputs);
}

OpRecord axes_record(std::string_view name, ShapeRule shapes) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_axes;
  r.attrs = attrs_codec<AxesAttrs, describe_axes>("axes");
  r.shapes = shapes;
  r.shape_reads_inputs = 1u << 1;
  r.content = content_of_input0;
  r.keeps_batch = axes_keep_batch;
  r.run = run_reshaped;
  r.non_negative = like_input0;
  r.export_onnx = export_axes;
  return r;
}
OpRecord unsqueeze() { return axes_record("Unsqueeze", unsqueeze_shapes); }
OpRecord squeeze() { return axes_record("Squeeze", squeeze_shapes); }

// ---- Identity, and Dropout in inference mode (output = input, mask = all true).

void import_identity(OnnxNode& n) {
  if (n.op_type == "Identity") {
    n.need_inputs(1, 1);
    return;
  }
  n.need_inputs(1, 3);
  if (n.node.inputs.size() == 3) {
    const Tensor* training = n.constant_input(2);
    check(training != nullptr, n.who + ": training_mode must be a constant");
    check(training->size() == 1, n.who + ": training_mode must be a scalar");
    // Training mode with a ratio of 0 keeps everything too (torchvision 0.14's Swin exports that).
    const Tensor* ratio = n.constant_input(1);
    bool keeps_all = ratio && ratio->dtype() == DataType::kFloat32 && ratio->size() == 1 && ratio->data<float>()[0] == 0.0f;
    check(training->raw()[0] == std::byte{0} || keeps_all, n.who + ": training_mode=true is not supported");
  }
  check(n.get_int("is_test", 1) != 0 || n.opset >= 7, n.who + ": training-mode Dropout is not supported");
  n.max_outputs = n.kept_outputs = 2;
  n.node.inputs.resize(1);
}

std::vector<Shape> identity_shapes(ShapeCall& c) {
  c.need_inputs(1);
  if (c.node.outputs.size() == 2) return {c.in[0], c.in[0]};  // Dropout's mask
  return {c.in[0]};
}

DataType identity_type(const Node&, std::span<const DataType> in, size_t output) {
  return output == 1 ? DataType::kBool : in[0];
}

std::vector<Tensor> run_identity(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  if (ctx.node.outputs.size() == 1) return {*in[0]};
  Tensor mask(DataType::kBool, out[0]);  // inference-mode Dropout keeps everything
  std::fill(mask.data<uint8_t>(), mask.data<uint8_t>() + mask.size(), uint8_t{1});
  return {*in[0], mask};
}

OpRecord identity() {
  OpRecord r;
  r.onnx_names = {"Identity", "Dropout"};
  r.import = import_identity;
  r.shapes = identity_shapes;
  r.type = identity_type;
  r.content = content_of_input0;
  r.run = run_identity;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = like_input0;
  r.integer = IntegerUse::kOnCodes;
  return r;
}

// ---- Constant: imported as a constant value, never a node.

void import_constant(OnnxNode& n) {
  check(n.output_count() == 1, n.who + ": expects one output");
  Tensor t;
  if (n.has_tensor("value")) t = n.get_tensor("value");
  else if (n.has("value_float")) t = Tensor::from_floats({}, std::vector<float>{n.get_float("value_float", 0)});
  else if (n.has("value_floats")) {
    auto v = n.get_floats("value_floats");
    t = Tensor::from_floats({static_cast<int64_t>(v.size())}, v);
  } else if (n.has("value_int")) t = Tensor::from_int64s({}, std::vector<int64_t>{n.get_int("value_int", 0)});
  else if (n.has("value_ints")) {
    auto v = n.get_ints("value_ints");
    t = Tensor::from_int64s({static_cast<int64_t>(v.size())}, v);
  } else throw Error(n.who + ": unsupported Constant form (tern reads value, value_float(s), value_int(s))");
  n.constant_output = std::move(t);
}

OpRecord constant() {
  OpRecord r;
  r.onnx_names = {"Constant"};
  r.import = import_constant;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Flatten, flatten)
TERN_REGISTER_OP(Reshape, reshape)
TERN_REGISTER_OP(Transpose, transpose)
TERN_REGISTER_OP(Unsqueeze, unsqueeze)
TERN_REGISTER_OP(Squeeze, squeeze)
TERN_REGISTER_OP(Identity, identity)
TERN_REGISTER_OP(Constant, constant)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor flatten_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  int64_t axis = torch_axis(c.node.attr<AxisAttrs>().axis, x.dim());
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
  return x.reshape({outer, -1});
}

void reshape_check(const Node& n, const Graph& g, const std::string& who) {
  check(n.inputs.size() > 1 && g.is_constant(n.inputs[1]), who + ": the target shape must be constant");
}

torch::Tensor reshape_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  std::vector<int64_t> shape;
  auto target = c.graph.constant(c.node.inputs[1]).int64s();
  for (size_t d = 0; d < target.size(); ++d) {
    int64_t s = target[d];
    if (s == kSymbolicBatch) s = x.size(0);
    else if (s == 0 && !c.node.attr<ReshapeAttrs>().allow_zero) s = x.size(static_cast<int64_t>(d));
    shape.push_back(s);
  }
  return x.reshape(shape);
}

torch::Tensor transpose_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  std::vector<int64_t> perm = c.node.attr<TransposeAttrs>().perm;
  if (perm.empty())
    for (int64_t d = x.dim(); d-- > 0;) perm.push_back(d);
  return x.permute(perm);
}

void axes_check(const Node& n, const Graph&, const std::string& who) {
  check(n.inputs.size() == 1, who + ": axes must be constant");
}

torch::Tensor unsqueeze_forward(TorchCall& c) {
  torch::Tensor y = c.input(0);
  std::vector<int64_t> axes = c.node.attr<AxesAttrs>().axes;
  int64_t rank = y.dim() + static_cast<int64_t>(axes.size());
  for (int64_t& a : axes) a = torch_axis(a, rank);
  std::sort(axes.begin(), axes.end());
  for (int64_t a : axes) y = y.unsqueeze(a);
  return y;
}

torch::Tensor squeeze_forward(TorchCall& c) {
  torch::Tensor y = c.input(0);
  std::vector<int64_t> axes = c.node.attr<AxesAttrs>().axes;
  if (axes.empty()) return y.squeeze();
  for (int64_t& a : axes) a = torch_axis(a, y.dim());
  std::sort(axes.rbegin(), axes.rend());
  for (int64_t a : axes) y = y.squeeze(a);
  return y;
}

torch::Tensor identity_forward(TorchCall& c) { return c.input(0); }

}  // namespace

TERN_REGISTER_TORCH_OP(Flatten, flatten_forward)
TERN_REGISTER_TORCH_OP(Reshape, reshape_forward, reshape_check)
TERN_REGISTER_TORCH_OP(Transpose, transpose_forward)
TERN_REGISTER_TORCH_OP(Unsqueeze, unsqueeze_forward, axes_check)
TERN_REGISTER_TORCH_OP(Squeeze, squeeze_forward, axes_check)
TERN_REGISTER_TORCH_OP(Identity, identity_forward)
TERN_REGISTER_TORCH_OP(Constant)

}  // namespace tern::train
#endif
