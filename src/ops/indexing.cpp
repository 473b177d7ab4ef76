// Shape, Gather, Slice, Concat, Cast, Pad: selecting, joining, converting and padding tensors
// (also the int64 shape arithmetic exporters emit).
#ifndef TERN_OPS_TORCH
#include <cstring>
#include <limits>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// ---- Shape (opset 15: start/end)

void import_shape(OnnxNode& n) {
  n.need_inputs(1, 1);
  ShapeAttrs a;
  a.start = n.get_int("start", 0);
  a.end = n.get_int("end", a.end);
  n.node.attrs = a;
}

constexpr auto describe_shape = [](auto& a, auto&& field) {
  field("start", a.start);
  field("end", a.end);
};

std::vector<Shape> shape_shapes(ShapeCall& c) {
  c.need_inputs(1);
  auto [begin, end] = shape_slice(c.node.attr<ShapeAttrs>(), static_cast<int64_t>(c.in[0].size()));
  return {{end - begin}};
}

DataType int64_type(const Node&, std::span<const DataType>, size_t) { return DataType::kInt64; }

std::vector<Tensor> run_shape(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  auto [begin, end] = shape_slice(ctx.node.attr<ShapeAttrs>(), x.rank());
  std::vector<int64_t> dims(x.shape().begin() + begin, x.shape().begin() + end);
  return {Tensor::from_int64s({static_cast<int64_t>(dims.size())}, dims)};
}

// The input's dims as far as they are known at import: a dynamic leading dim is the batch when
// analysis traced it to the graph input's (ContentCall::batch_axis), else unknown.
std::optional<Content> shape_content(const ContentCall& c) {
  const Value* x = c.values.empty() ? nullptr : c.values[0];
  if (!x || !x->shape_known) return std::nullopt;
  auto [begin, end] = shape_slice(c.node.attr<ShapeAttrs>(), static_cast<int64_t>(x->shape.size()));
  Content out;
  for (int64_t i = begin; i < end; ++i) {
    int64_t d = x->shape[static_cast<size_t>(i)];
    bool batch = !c.batch_axis.empty() && i == c.batch_axis[0];
    out.push_back(d >= 0 ? d : batch ? kSymbolicBatch : kUnknownElement);
  }
  return out;
}

void export_shape(OnnxWriter& w) {
  const ShapeAttrs& a = w.node.attr<ShapeAttrs>();
  size_t n = w.emit("Shape", w.inputs, w.outputs);
  if (a.start != 0) w.attr(n, "start", a.start);
  if (a.end != std::numeric_limits<int64_t>::max()) w.attr(n, "end", a.end);
}

OpRecord shape() {
  OpRecord r;
  r.onnx_names = {"Shape"};
  r.import = import_shape;
  r.attrs = attrs_codec<ShapeAttrs, describe_shape>("shape");
  r.shapes = shape_shapes;
  r.type = int64_type;
  r.content = shape_content;
  r.run = run_shape;
  r.export_onnx = export_shape;
  return r;
}

// ---- Gather along one axis

void import_gather(OnnxNode& n) {
  n.need_inputs(2, 2);
  n.node.attrs = AxisAttrs{n.get_int("axis", 0)};
}

std::vector<Shape> gather_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<AxisAttrs>();
  a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), c.who);
  Shape out(x.begin(), x.begin() + a.axis);
  out.insert(out.end(), c.in[1].begin(), c.in[1].end());
  out.insert(out.end(), x.begin() + a.axis + 1, x.end());
  return {out};
}

std::vector<Tensor> run_gather(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& data = *in[0];
  const Tensor& indices = *in[1];
  int64_t axis = ctx.node.attr<AxisAttrs>().axis;
  size_t es = element_size(data.dtype());
  int64_t outer = 1, inner = 1, dim = data.dim(axis);
  for (int64_t d = 0; d < data.rank(); ++d) {
    if (d < axis) outer *= data.dim(d);
    else if (d > axis) inner *= data.dim(d);
  }
  check(indices.dtype() == DataType::kInt64 || indices.dtype() == DataType::kInt32,
        ctx.who + ": indices must be int64 or int32");
  Tensor y = Tensor::uninitialized(data.dtype(), out[0]);
  int64_t count = indices.size();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < count; ++i) {
      int64_t idx = indices.dtype() == DataType::kInt64 ? indices.data<int64_t>()[i] : indices.data<int32_t>()[i];
      if (idx < -dim || idx >= dim)  // (the message built only on failure: this runs per index)
        throw Error(ctx.who + ": index " + std::to_string(idx) + " out of range for dimension " + std::to_string(dim));
      if (idx < 0) idx += dim;
      std::memcpy(y.raw() + ((o * count + i) * inner) * static_cast<int64_t>(es),
                  data.raw() + ((o * dim + idx) * inner) * static_cast<int64_t>(es), static_cast<size_t>(inner) * es);
    }
  return {y};
}

std::optional<Content> gather_content(const ContentCall& c) {
  if (c.in.size() != 2 || !c.in[0] || !c.in[1] || !c.values[0] || !c.values[0]->shape_known ||
      c.values[0]->shape.size() != 1)
    return std::nullopt;
  const Content& data = *c.in[0];
  Content out;
  for (int64_t i : *c.in[1]) {
    int64_t n = static_cast<int64_t>(data.size());
    if (!is_known(i) || i < -n || i >= n) return std::nullopt;
    out.push_back(data[static_cast<size_t>(i < 0 ? i + n : i)]);
  }
  return out;
}

bool gather_keeps_batch(const Node& n, const Graph&) { return n.attr<AxisAttrs>().axis != 0; }

void export_gather(OnnxWriter& w) { w.attr(w.emit("Gather", w.inputs, w.outputs), "axis", w.node.attr<AxisAttrs>().axis); }

OpRecord gather() {
  OpRecord r;
  r.onnx_names = {"Gather"};
  r.import = import_gather;
  r.attrs = attrs_codec<AxisAttrs, describe_axis>("axis");
  r.shapes = gather_shapes;
  r.content = gather_content;
  r.run = run_gather;
  r.keeps_batch = gather_keeps_batch;
  r.non_negative = like_input0;
  r.export_onnx = export_gather;
  return r;
}

// ---- Slice: starts/ends/axes/steps as attributes (opset < 10), or inputs (folded into the
// attributes when constant, else read at run time).

void import_slice(OnnxNode& n) {
  SliceAttrs a;
  if (n.opset < 10) {
    n.need_inputs(1, 1);
    a.starts = n.get_ints("starts");
    a.ends = n.get_ints("ends");
    a.axes = n.get_ints("axes");
  } else {
    n.need_inputs(3, 5);
    if (n.constant_inputs_from(1)) {
      a.starts = n.constant_ints(1, "starts");
      a.ends = n.constant_ints(2, "ends");
      if (n.node.inputs.size() > 3 && n.node.inputs[3] != kNoValue) a.axes = n.constant_ints(3, "axes");
      if (n.node.inputs.size() > 4 && n.node.inputs[4] != kNoValue) a.steps = n.constant_ints(4, "steps");
      n.node.inputs.resize(1);
    }
  }
  n.node.attrs = a;
}

constexpr auto describe_slice = [](auto& a, auto&& field) {
  field("starts", a.starts);
  field("ends", a.ends);
  field("axes", a.axes);
  field("steps", a.steps);
};

SliceAttrs slice_attrs(const Node& node, std::span<const Shape> in, const std::function<std::vector<int64_t>(size_t, const char*)>& ints) {
  SliceAttrs a = node.attr<SliceAttrs>();
  if (in.size() > 1) {
    a.starts = ints(1, "starts");
    a.ends = ints(2, "ends");
    a.axes = in.size() > 3 && !in[3].empty() ? ints(3, "axes") : std::vector<int64_t>{};
    a.steps = in.size() > 4 && !in[4].empty() ? ints(4, "steps") : std::vector<int64_t>{};
  }
  return a;
}

std::vector<Shape> slice_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  SliceAttrs a = slice_attrs(c.node, c.in, [&](size_t i, const char* what) { return c.ints(i, what); });
  Shape out = x;
  for (const auto& r : slice_ranges(a, x, c.who)) out[static_cast<size_t>(r.axis)] = r.length;
  return {out};
}

std::vector<Tensor> run_slice(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const Shape& out_shape = outs[0];
  SliceAttrs a = ctx.node.attr<SliceAttrs>();
  auto ints = [&](size_t i) {
    return i < in.size() && in[i] ? std::vector<int64_t>(in[i]->data<int64_t>(), in[i]->data<int64_t>() + in[i]->size())
                                   : std::vector<int64_t>{};
  };
  if (in.size() > 1) a = {ints(1), ints(2), ints(3), ints(4)};
  size_t rank = static_cast<size_t>(x.rank()), es = element_size(x.dtype());
  std::vector<int64_t> start(rank, 0), step(rank, 1);
  for (const auto& r : slice_ranges(a, x.shape(), ctx.who)) {
    start[static_cast<size_t>(r.axis)] = r.start;
    step[static_cast<size_t>(r.axis)] = r.step;
  }
  std::vector<int64_t> in_strides = strides_of(x.shape()), s(rank);
  int64_t offset = 0;
  for (size_t d = 0; d < rank; ++d) {
    offset += start[d] * in_strides[d];
    s[d] = step[d] * in_strides[d];
  }
  Tensor y = Tensor::uninitialized(x.dtype(), out_shape);
  strided_copy(x.raw(), offset, out_shape, s, es, y.raw());
  return {y};
}

std::optional<Content> slice_content(const ContentCall& c) {
  if (c.in.empty() || !c.in[0]) return std::nullopt;
  const Content& data = *c.in[0];
  bool known_params = true;
  auto ints = [&](size_t i, const char*) -> std::vector<int64_t> {
    if (i >= c.in.size() || !c.in[i]) {
      known_params = false;
      return {};
    }
    for (int64_t v : *c.in[i]) known_params &= is_known(v);
    return *c.in[i];
  };
  std::vector<Shape> shapes;
  for (const Value* v : c.values) shapes.push_back(v ? v->shape : Shape{});
  SliceAttrs a = slice_attrs(c.node, shapes, ints);
  if (!known_params) return std::nullopt;
  try {
    std::vector<SliceRange> ranges = slice_ranges(a, {static_cast<int64_t>(data.size())}, "");
    Content out;
    int64_t start = 0, step = 1, length = static_cast<int64_t>(data.size());
    for (const auto& r : ranges) start = r.start, step = r.step, length = r.length;
    for (int64_t i = 0; i < length; ++i) out.push_back(data[static_cast<size_t>(start + i * step)]);
    return out;
  } catch (const Error&) {
    return std::nullopt;  // the shape rule reports it
  }
}

bool slice_keeps_batch(const Node& n, const Graph& g) {
  const auto& a = n.attr<SliceAttrs>();
  const Value& x = g.value(n.inputs[0]);
  if (n.inputs.size() > 1 || a.axes.empty() || !x.shape_known) return false;
  int64_t rank = static_cast<int64_t>(x.shape.size());
  return std::none_of(a.axes.begin(), a.axes.end(), [rank](int64_t axis) { return axis == 0 || axis == -rank; });
}

void export_slice(OnnxWriter& w) {
  const SliceAttrs& a = w.node.attr<SliceAttrs>();
  std::vector<std::string> ins = w.inputs;
  if (ins.size() == 1) {  // constant starts/ends folded into the attributes
    auto list = [&](const std::vector<int64_t>& v, const char* hint) {
      return w.constant(w.outputs[0] + hint, Tensor::from_int64s({static_cast<int64_t>(v.size())}, v));
    };
    ins.push_back(list(a.starts, "/starts"));
    ins.push_back(list(a.ends, "/ends"));
    if (!a.axes.empty() || !a.steps.empty()) {
      std::vector<int64_t> axes = a.axes;
      if (axes.empty())
        for (size_t i = 0; i < a.starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
      ins.push_back(list(axes, "/axes"));
    }
    if (!a.steps.empty()) ins.push_back(list(a.steps, "/steps"));
  }
  w.emit("Slice", ins, w.outputs);
}

OpRecord slice() {
  OpRecord r;
  r.onnx_names = {"Slice"};
  r.import = import_slice;
  r.attrs = attrs_codec<SliceAttrs, describe_slice>("slice");
  r.shapes = slice_shapes;
  r.shape_reads_inputs = ~1u;
  r.content = slice_content;
  r.run = run_slice;
  r.keeps_batch = slice_keeps_batch;
  r.non_negative = like_input0;
  r.export_onnx = export_slice;
  return r;
}

// ---- Concat

void import_concat(OnnxNode& n) {
  n.need_inputs(1, 1u << 20);
  check(n.has("axis"), n.who + ": axis is required");
  n.node.attrs = AxisAttrs{n.get_int("axis", 0)};
}

std::vector<Shape> concat_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<AxisAttrs>();
  int64_t rank = static_cast<int64_t>(x.size());
  check(rank >= 1, c.who + ": cannot concatenate scalars");
  a.axis = normalize_axis(a.axis, rank, c.who);
  Shape out = x;
  for (size_t i = 1; i < c.in.size(); ++i) {
    check(c.in[i].size() == x.size(), c.who + ": inputs have different ranks");
    for (size_t d = 0; d < x.size(); ++d) {
      if (static_cast<int64_t>(d) == a.axis) {
        out[d] = (out[d] < 0 || c.in[i][d] < 0) ? kDynamicDim : dim_add(out[d], c.in[i][d], c.who);
      } else if (out[d] < 0) {
        out[d] = c.in[i][d];
      } else {
        check(c.in[i][d] < 0 || c.in[i][d] == out[d], c.who + ": input " + std::to_string(i) + " shape " +
                                                          to_string(c.in[i]) + " does not fit " + to_string(x));
      }
    }
  }
  return {out};
}

std::vector<Tensor> run_concat(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Shape& out_shape = outs[0];
  int64_t axis = ctx.node.attr<AxisAttrs>().axis;
  DataType type = in[0]->dtype();
  size_t es = element_size(type);
  Tensor y = Tensor::uninitialized(type, out_shape);
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out_shape[static_cast<size_t>(d)];
  int64_t out_block = y.size() / std::max<int64_t>(1, outer);
  int64_t offset = 0;
  for (const Tensor* t : in) {
    check(t->dtype() == type, ctx.who + ": inputs have different types");
    int64_t block = t->size() / std::max<int64_t>(1, outer);
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(y.raw() + (o * out_block + offset) * es, t->raw() + o * block * es, static_cast<size_t>(block) * es);
    offset += block;
  }
  return {y};
}

std::optional<Content> concat_content(const ContentCall& c) {
  Content out;
  for (size_t i = 0; i < c.in.size(); ++i) {
    if (!c.in[i] || !c.values[i] || !c.values[i]->shape_known || c.values[i]->shape.size() != 1) return std::nullopt;
    out.insert(out.end(), c.in[i]->begin(), c.in[i]->end());
  }
  return out;
}

bool concat_keeps_batch(const Node& n, const Graph&) { return n.attr<AxisAttrs>().axis != 0; }

void export_concat(OnnxWriter& w) { w.attr(w.emit("Concat", w.inputs, w.outputs), "axis", w.node.attr<AxisAttrs>().axis); }

OpRecord concat() {
  OpRecord r;
  r.onnx_names = {"Concat"};
  r.import = import_concat;
  r.attrs = attrs_codec<AxisAttrs, describe_axis>("axis");
  r.shapes = concat_shapes;
  r.content = concat_content;
  r.run = run_concat;
  r.keeps_batch = concat_keeps_batch;
  r.non_negative = like_all_inputs;
  r.integer = IntegerUse::kOnCodes;
  r.export_onnx = export_concat;
  return r;
}

// ---- Cast

void import_cast(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.node.attrs = CastAttrs{n.data_type(n.get_int("to", 1))};
}

void validate_cast(const CastAttrs& a) {
  switch (a.to) {
    case DataType::kFloat32:
    case DataType::kUInt8:
    case DataType::kInt8:
    case DataType::kInt32:
    case DataType::kInt64:
    case DataType::kBool: return;
    default: throw Error("invalid data type " + std::to_string(static_cast<int>(a.to)));
  }
}

constexpr auto describe_cast = [](auto& a, auto&& field) { field("to", a.to); };

DataType cast_type(const Node& node, std::span<const DataType>, size_t) { return node.attr<CastAttrs>().to; }

template <typename From>
void cast_from(const Tensor& x, Tensor& y) {
  const From* src = x.data<From>();
  int64_t n = x.size();
  switch (y.dtype()) {
    case DataType::kFloat32: for (int64_t i = 0; i < n; ++i) y.data<float>()[i] = static_cast<float>(src[i]); break;
    case DataType::kInt64: for (int64_t i = 0; i < n; ++i) y.data<int64_t>()[i] = static_cast<int64_t>(src[i]); break;
    case DataType::kInt32: for (int64_t i = 0; i < n; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(src[i]); break;
    case DataType::kInt8: for (int64_t i = 0; i < n; ++i) y.data<int8_t>()[i] = static_cast<int8_t>(src[i]); break;
    case DataType::kUInt8: for (int64_t i = 0; i < n; ++i) y.data<uint8_t>()[i] = static_cast<uint8_t>(src[i]); break;
    case DataType::kBool: for (int64_t i = 0; i < n; ++i) y.data<uint8_t>()[i] = src[i] != From(0); break;
    case DataType::kUndefined: break;
  }
}

// A float outside the integer type's range (NaN, infinity, or too large) has no integer value: the
// conversion would be undefined behaviour, and in a shape computation a nonsense dimension.
template <typename To>
void check_castable(const OpContext& ctx, const Tensor& x, DataType to) {
  constexpr double lo = static_cast<double>(std::numeric_limits<To>::min()) - 1.0;  // truncation toward zero
  constexpr double hi = static_cast<double>(std::numeric_limits<To>::max()) + 1.0;
  for (float v : x.floats())
    if (!(static_cast<double>(v) > lo && static_cast<double>(v) < hi))
      throw Error(ctx.who + ": cannot cast " + std::to_string(v) + " to " + to_string(to) + " (outside its range)");
}

std::vector<Tensor> run_cast(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  DataType to = ctx.node.attr<CastAttrs>().to;
  if (x.dtype() == DataType::kFloat32) {
    if (to == DataType::kInt64) check_castable<int64_t>(ctx, x, to);
    if (to == DataType::kInt32) check_castable<int32_t>(ctx, x, to);
    if (to == DataType::kInt8) check_castable<int8_t>(ctx, x, to);
    if (to == DataType::kUInt8) check_castable<uint8_t>(ctx, x, to);
  }
  Tensor y = Tensor::uninitialized(to, x.shape());
  switch (x.dtype()) {
    case DataType::kFloat32: cast_from<float>(x, y); break;
    case DataType::kInt64: cast_from<int64_t>(x, y); break;
    case DataType::kInt32: cast_from<int32_t>(x, y); break;
    case DataType::kInt8: cast_from<int8_t>(x, y); break;
    case DataType::kUInt8:
    case DataType::kBool: cast_from<uint8_t>(x, y); break;
    case DataType::kUndefined: throw Error(ctx.who + ": undefined input type");
  }
  return {y};
}

bool cast_non_negative(const SignCall& c) {
  return c.node.attr<CastAttrs>().to == DataType::kFloat32 && c.input_non_negative(0);
}

// Casting a shape between number types keeps its elements (Paddle's int32 shape arithmetic).
std::optional<Content> cast_content(const ContentCall& c) {
  if (c.node.attr<CastAttrs>().to == DataType::kBool) return std::nullopt;
  return content_of_input0(c);
}

void export_cast(OnnxWriter& w) {
  w.attr(w.emit("Cast", w.inputs, w.outputs), "to", static_cast<int64_t>(w.node.attr<CastAttrs>().to));  // ONNX numbering
}

OpRecord cast() {
  OpRecord r;
  r.onnx_names = {"Cast"};
  r.import = import_cast;
  r.attrs = attrs_codec<CastAttrs, describe_cast, validate_cast>("cast");
  r.shapes = same_shape;
  r.type = cast_type;
  r.content = cast_content;
  r.run = run_cast;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = cast_non_negative;
  r.export_onnx = export_cast;
  return r;
}

// ---- Pad: constant, reflect, edge or wrap; pads and value as attributes (opset < 11), or inputs
// (folded when constant; opset 18's axes input spread over the full rank).

void import_pad(OnnxNode& n) {
  PadAttrs a;
  std::string mode = n.get_string("mode", "constant");
  if (mode == "constant") a.mode = PadMode::kConstant;
  else if (mode == "reflect") a.mode = PadMode::kReflect;
  else if (mode == "edge") a.mode = PadMode::kEdge;
  else if (mode == "wrap") a.mode = PadMode::kWrap;
  else throw Error(n.who + ": unknown pad mode '" + mode + "'");
  if (n.opset >= 11) {
    n.need_inputs(2, 4);
    const Tensor* v = n.node.inputs.size() > 2 ? n.constant_input(2) : nullptr;
    bool axes_known = n.node.inputs.size() < 4 || n.node.inputs[3] == kNoValue || n.constant_input(3);
    if (n.constant_input(1) && (n.node.inputs.size() < 3 || n.node.inputs[2] == kNoValue || v) && axes_known) {
      a.pads = n.constant_ints(1, "pads");  // else read at run time
      if (v) {
        check(v->dtype() == DataType::kFloat32 && v->size() == 1, n.who + ": constant_value must be a float scalar");
        a.value = v->data<float>()[0];
      }
      if (n.node.inputs.size() > 3 && n.node.inputs[3] != kNoValue) {
        std::vector<int64_t> axes = n.constant_ints(3, "axes");
        check(a.pads.size() == 2 * axes.size(), n.who + ": pads has " + std::to_string(a.pads.size()) + " entries for " +
                                                    std::to_string(axes.size()) + " axes");
        const Value& x = n.graph.value(n.node.inputs[0]);
        check(x.shape_known, n.who + ": pads with axes need the input's rank");
        int64_t rank = static_cast<int64_t>(x.shape.size());
        std::vector<int64_t> full(2 * static_cast<size_t>(rank), 0);
        for (size_t i = 0; i < axes.size(); ++i) {
          int64_t axis = normalize_axis(axes[i], rank, n.who);
          full[static_cast<size_t>(axis)] = a.pads[i];
          full[static_cast<size_t>(axis + rank)] = a.pads[i + axes.size()];
        }
        a.pads = full;
      }
      n.node.inputs.resize(1);
    } else {
      check(axes_known && (n.node.inputs.size() < 4 || n.node.inputs[3] == kNoValue),
            n.who + ": run-time pads with an axes input are not supported");
    }
  } else {
    n.need_inputs(1, 1);
    a.pads = n.get_ints("pads");
    a.value = n.get_float("value", 0.0f);
  }
  n.node.attrs = a;
}

constexpr auto describe_pad = [](auto& a, auto&& field) {
  field("pads", a.pads);
  field("value", a.value);
  field.optional("mode", a.mode, 0, static_cast<int64_t>(PadMode::kWrap));
};

std::vector<Shape> pad_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  const auto& attrs = c.node.attr<PadAttrs>();
  std::vector<int64_t> pads = c.in.size() > 1 ? c.ints(1, "pads") : attrs.pads;
  check(pads.size() == 2 * x.size(), c.who + ": pads has " + std::to_string(pads.size()) + " entries for rank " +
                                         std::to_string(x.size()));
  Shape out = x;
  for (size_t i = 0; i < x.size(); ++i) {
    if (out[i] < 0) continue;
    int64_t lo = pads[i], hi = pads[i + x.size()];
    if (attrs.mode == PadMode::kReflect && (lo > 0 || hi > 0))
      check(lo < x[i] && hi < x[i], c.who + ": reflect padding " + std::to_string(std::max(lo, hi)) +
                                        " is not smaller than the dimension " + std::to_string(x[i]));
    if (attrs.mode != PadMode::kConstant && (lo > 0 || hi > 0))
      check(x[i] > 0, c.who + ": cannot " + (attrs.mode == PadMode::kEdge ? "edge" : "wrap") + "-pad an empty dimension");
    out[i] = dim_add(out[i], dim_add(lo, hi, c.who), c.who);
    check(out[i] >= 0, c.who + ": negative output size");
  }
  return {out};
}

// The input index an output index reads along one axis of size n (begin padding p), or -1 for the
// constant value.
int64_t pad_source(int64_t o, int64_t p, int64_t n, PadMode mode) {
  int64_t i = o - p;
  if (i >= 0 && i < n) return i;
  switch (mode) {
    case PadMode::kConstant: return -1;
    case PadMode::kEdge: return i < 0 ? 0 : n - 1;
    case PadMode::kWrap: return ((i % n) + n) % n;
    case PadMode::kReflect: {
      if (n == 1) return 0;
      int64_t period = 2 * (n - 1);
      int64_t m = ((i % period) + period) % period;
      return m < n ? m : period - m;
    }
  }
  return -1;
}

std::vector<Tensor> run_pad(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const Shape& out_shape = outs[0];
  PadAttrs a = ctx.node.attr<PadAttrs>();
  if (in.size() > 1) a.pads.assign(in[1]->data<int64_t>(), in[1]->data<int64_t>() + in[1]->size());
  if (in.size() > 2 && in[2]) {
    require_float(ctx, *in[2], "constant_value");
    a.value = in[2]->data<float>()[0];
  }
  size_t rank = static_cast<size_t>(x.rank());
  if (x.dtype() != DataType::kFloat32) check(a.value == 0.0f, ctx.who + ": a non-zero pad value needs float32 data");
  size_t es = element_size(x.dtype());
  Tensor y(x.dtype(), out_shape);  // zero-filled: the constant 0 of every type
  if (x.dtype() == DataType::kFloat32 && a.value != 0.0f) std::fill(y.data<float>(), y.data<float>() + y.size(), a.value);
  std::vector<int64_t> xs = strides_of(x.shape()), index(rank, 0);
  for (int64_t o = 0; o < y.size(); ++o) {
    int64_t src = 0;
    bool inside = true;
    for (size_t d = 0; d < rank && inside; ++d) {
      int64_t i = pad_source(index[d], a.pads[d], x.dim(static_cast<int64_t>(d)), a.mode);
      inside = i >= 0;
      src += i * xs[d];
    }
    if (inside) std::memcpy(y.raw() + o * static_cast<int64_t>(es), x.raw() + src * static_cast<int64_t>(es), es);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out_shape[d]) break;
      index[d] = 0;
    }
  }
  return {y};
}

bool pad_non_negative(const SignCall& c) {
  const auto& a = c.node.attr<PadAttrs>();
  return (a.mode != PadMode::kConstant || a.value >= 0.0f) && c.input_non_negative(0);
}

bool pad_keeps_batch(const Node& n, const Graph&) {
  const auto& p = n.attr<PadAttrs>().pads;
  return n.inputs.size() == 1 && !p.empty() && p.size() % 2 == 0 && p[0] == 0 && p[p.size() / 2] == 0;
}

void export_pad(OnnxWriter& w) {
  const PadAttrs& a = w.node.attr<PadAttrs>();
  std::vector<std::string> ins = w.inputs;
  if (ins.size() == 1) {
    ins.push_back(w.constant(w.outputs[0] + "/pads", Tensor::from_int64s({static_cast<int64_t>(a.pads.size())}, a.pads)));
    if (a.value != 0.0f) ins.push_back(w.constant(w.outputs[0] + "/value", Tensor::from_floats({}, std::vector<float>{a.value})));
  }
  static const char* const kModes[] = {"constant", "reflect", "edge", "wrap"};
  if (a.mode == PadMode::kWrap) w.fail("Pad mode 'wrap' (opset 19)");
  w.attr(w.emit("Pad", ins, w.outputs), "mode", std::string(kModes[static_cast<int>(a.mode)]));
}

OpRecord pad() {
  OpRecord r;
  r.onnx_names = {"Pad"};
  r.import = import_pad;
  r.attrs = attrs_codec<PadAttrs, describe_pad>("pad");
  r.shapes = pad_shapes;
  r.shape_reads_inputs = 1u << 1;
  r.run = run_pad;
  r.keeps_batch = pad_keeps_batch;
  r.non_negative = pad_non_negative;
  r.export_onnx = export_pad;
  return r;
}

// ---- ScatterND(data, indices, updates): data with the slices indices name replaced by updates
// (reduction none; later updates win where indices repeat, as the ONNX reference loops).

void import_scatter_nd(OnnxNode& n) {
  n.need_inputs(3, 3);
  std::string reduction = n.get_string("reduction", "none");
  n.require(reduction == "none", "reduction '" + reduction + "'");
}

std::vector<Shape> scatter_nd_shapes(ShapeCall& c) {
  c.need_inputs(3);
  const Shape& data = c.in[0];
  const Shape& idx = c.in[1];
  check(!idx.empty(), c.who + ": indices must have rank >= 1");
  int64_t k = idx.back();
  check(k < 0 || (k >= 1 && k <= static_cast<int64_t>(data.size())), c.who + ": indices' last dimension " +
                                                                         std::to_string(k) + " does not fit data " + to_string(data));
  if (k >= 0) {
    Shape want(idx.begin(), idx.end() - 1);
    want.insert(want.end(), data.begin() + k, data.end());
    check(c.in[2].size() == want.size(), c.who + ": updates " + to_string(c.in[2]) + " do not fit " + to_string(want));
  }
  return {data};
}

std::vector<Tensor> run_scatter_nd(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& data = *in[0];
  const Tensor& idx = *in[1];
  const Tensor& upd = *in[2];
  check(idx.dtype() == DataType::kInt64, ctx.who + ": indices must be int64");
  check(upd.dtype() == data.dtype(), ctx.who + ": updates and data differ in type");
  int64_t k = idx.dim(idx.rank() - 1), rank = data.rank();
  int64_t slice = 1;
  for (int64_t d = k; d < rank; ++d) slice *= data.dim(d);
  int64_t count = k ? idx.size() / k : 0;
  if (upd.size() != count * slice) throw Error(ctx.who + ": updates " + to_string(upd.shape()) + " do not fit the indices");
  Tensor y = Tensor::uninitialized(data.dtype(), data.shape());  // a copy of the data
  std::memcpy(y.raw(), data.raw(), data.bytes());
  std::vector<int64_t> ds = strides_of(data.shape());
  size_t es = element_size(data.dtype());
  for (int64_t i = 0; i < count; ++i) {
    int64_t offset = 0;
    for (int64_t j = 0; j < k; ++j) {
      int64_t v = idx.data<int64_t>()[i * k + j], dim = data.dim(j);
      if (v < -dim || v >= dim)
        throw Error(ctx.who + ": index " + std::to_string(v) + " out of range for dimension " + std::to_string(dim));
      offset += (v < 0 ? v + dim : v) * ds[static_cast<size_t>(j)];
    }
    std::memcpy(y.raw() + offset * static_cast<int64_t>(es), upd.raw() + i * slice * static_cast<int64_t>(es),
                static_cast<size_t>(slice) * es);
  }
  return {y};
}

OpRecord scatter_nd() {
  OpRecord r;
  r.onnx_names = {"ScatterND"};
  r.import = import_scatter_nd;
  r.shapes = scatter_nd_shapes;
  r.run = run_scatter_nd;
  r.keeps_batch = keeps_batch_always;
  return r;
}

}  // namespace

TERN_REGISTER_OP(ScatterND, scatter_nd)
TERN_REGISTER_OP(Shape, shape)
TERN_REGISTER_OP(Gather, gather)
TERN_REGISTER_OP(Slice, slice)
TERN_REGISTER_OP(Concat, concat)
TERN_REGISTER_OP(Cast, cast)
TERN_REGISTER_OP(Pad, pad)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor concat_forward(TorchCall& c) {
  std::vector<torch::Tensor> parts;
  for (size_t i = 0; i < c.node.inputs.size(); ++i) parts.push_back(c.input(i));
  return torch::cat(parts, torch_axis(c.node.attr<AxisAttrs>().axis, parts[0].dim()));
}

void pad_check(const Node& n, const Graph&, const std::string& who) {
  check(n.inputs.size() == 1, who + ": pads must be attributes (constant)");
  check(n.attr<PadAttrs>().mode == PadMode::kConstant, who + ": only constant padding is supported for fine-tuning");
}

torch::Tensor pad_forward(TorchCall& c) {
  const auto& a = c.node.attr<PadAttrs>();
  torch::Tensor x = c.input(0);
  size_t rank = static_cast<size_t>(x.dim());
  check(a.pads.size() == 2 * rank, c.who + ": pads do not match the input rank");
  return pad_trailing(x, a.pads, rank, static_cast<double>(a.value));
}

}  // namespace

TERN_REGISTER_TORCH_OP(ScatterND)
TERN_REGISTER_TORCH_OP(Shape)
TERN_REGISTER_TORCH_OP(Gather)
TERN_REGISTER_TORCH_OP(Slice)
TERN_REGISTER_TORCH_OP(Concat, concat_forward)
TERN_REGISTER_TORCH_OP(Cast)
TERN_REGISTER_TORCH_OP(Pad, pad_forward, pad_check)

}  // namespace tern::train
#endif
