// Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
// ReduceSumSquare (axes as an attribute, or a constant or run-time input: ReduceSum from opset 13,
// the others from 18), and ArgMax / ArgMin.
#ifndef TERN_OPS_TORCH
#include <algorithm>
#include <limits>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

void import_reduce(OnnxNode& n) {
  ReduceAttrs a;
  a.keepdims = n.get_int("keepdims", 1) != 0;
  a.noop_with_empty_axes = n.get_int("noop_with_empty_axes", 0) != 0;
  bool axes_input = n.opset >= (n.op_type == "ReduceSum" ? 13 : 18);
  if (axes_input) {
    n.need_inputs(1, 2);
    if (n.node.inputs.size() > 1 && n.constant_input(1)) {  // else read at run time
      a.axes = n.constant_ints(1, "axes");
      n.node.inputs.resize(1);
    }
  } else {
    n.need_inputs(1, 1);
    a.axes = n.get_ints("axes");
  }
  n.node.attrs = a;
}

constexpr auto describe_reduce = [](auto& a, auto&& field) {
  field("axes", a.axes);
  field("keepdims", a.keepdims);
  field.optional("noop_with_empty_axes", a.noop_with_empty_axes);
};

// Which axes a node reduces for an input of `rank`: normalized, one flag per axis.
std::vector<bool> reduced_axes(const ReduceAttrs& a, std::span<const int64_t> axes, size_t rank, const std::string& who) {
  std::vector<bool> reduce(rank, axes.empty() && !a.noop_with_empty_axes);
  for (int64_t axis : axes) reduce[static_cast<size_t>(normalize_axis(axis, static_cast<int64_t>(rank), who))] = true;
  return reduce;
}

std::vector<Shape> reduce_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<ReduceAttrs>();
  std::vector<int64_t> axes = c.in.size() > 1 ? c.ints(1, "axes") : a.axes;
  if (c.in.size() == 1)
    for (auto& axis : a.axes) axis = normalize_axis(axis, static_cast<int64_t>(x.size()), c.who);
  std::vector<bool> reduce = reduced_axes(a, axes, x.size(), c.who);
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!reduce[i]) out.push_back(x[i]);
    else if (a.keepdims) out.push_back(1);
  }
  return {out};
}

std::vector<Tensor> run_reduce(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& x = *in[0];
  const auto& a = ctx.node.attr<ReduceAttrs>();
  OpType op = ctx.node.op;
  bool float_only = op != OpType::kReduceMax && op != OpType::kReduceMin && op != OpType::kReduceSum &&
                    op != OpType::kReduceProd;
  if (float_only || x.dtype() != DataType::kInt64) require_float(ctx, x, "input");
  size_t rank = static_cast<size_t>(x.rank());
  std::vector<int64_t> axes = in.size() > 1 && in[1] ? std::vector<int64_t>(in[1]->data<int64_t>(), in[1]->data<int64_t>() + in[1]->size()) : a.axes;
  std::vector<bool> reduce = reduced_axes(a, axes, rank, ctx.who);
  Shape kept = x.shape();
  int64_t reduced_count = 1;
  for (size_t i = 0; i < rank; ++i)
    if (reduce[i]) {
      reduced_count *= kept[i];
      kept[i] = 1;
    }
  double init = op == OpType::kReduceMax ? -std::numeric_limits<double>::infinity()
                : op == OpType::kReduceMin ? std::numeric_limits<double>::infinity()
                : op == OpType::kReduceProd ? 1.0 : 0.0;
  std::vector<double> acc(static_cast<size_t>(element_count(kept)), init);
  std::vector<int64_t> ks = strides_of(kept);
  std::vector<int64_t> index(rank, 0);
  bool is_int = x.dtype() == DataType::kInt64;
  // One element into an output's running value.
  auto step = [op](double r, double v) {
    switch (op) {
      case OpType::kReduceMax: return std::isnan(v) || std::isnan(r) ? NAN : std::max(r, v);
      case OpType::kReduceMin: return std::isnan(v) || std::isnan(r) ? NAN : std::min(r, v);
      case OpType::kReduceProd: return r * v;
      case OpType::kReduceL1: return r + std::fabs(v);
      case OpType::kReduceL2:
      case OpType::kReduceSumSquare: return r + v * v;
      default: return r + v;  // Mean, Sum
    }
  };
  // Trailing axes only (a LayerNorm's last axis, a pool's H and W): each output reduces one
  // contiguous run, in the same order as the general loop below (so to the same bits).
  size_t first = rank;
  while (first > 0 && reduce[first - 1]) --first;
  const bool trailing = !is_int && std::none_of(reduce.begin(), reduce.begin() + static_cast<int64_t>(first), [](bool r) { return r; });
  if (trailing) {
    const int64_t inner = reduced_count, outer = inner > 0 ? x.size() / inner : 0;
    const float* data = x.data<float>();
    for (int64_t o = 0; o < outer; ++o) {
      double r = init;
      for (int64_t j = 0; j < inner; ++j) r = step(r, static_cast<double>(data[o * inner + j]));
      acc[static_cast<size_t>(o)] = r;
    }
  } else {
    for (int64_t i = 0; i < x.size(); ++i) {
      int64_t o = 0;
      for (size_t d = 0; d < rank; ++d) o += reduce[d] ? 0 : index[d] * ks[d];
      const double v = is_int ? static_cast<double>(x.data<int64_t>()[i]) : static_cast<double>(x.data<float>()[i]);
      acc[static_cast<size_t>(o)] = step(acc[static_cast<size_t>(o)], v);
      for (size_t d = rank; d-- > 0;) {
        if (++index[d] < x.dim(static_cast<int64_t>(d))) break;
        index[d] = 0;
      }
    }
  }
  Tensor y = Tensor::uninitialized(x.dtype(), out[0]);
  for (size_t i = 0; i < acc.size(); ++i) {
    double r = acc[i];
    if (op == OpType::kReduceMean) r = reduced_count ? r / static_cast<double>(reduced_count) : NAN;
    if (op == OpType::kReduceL2) r = std::sqrt(r);
    if (is_int) y.data<int64_t>()[i] = static_cast<int64_t>(r);
    else y.data<float>()[i] = static_cast<float>(r);
  }
  return {y};
}

bool reduce_keeps_batch(const Node& n, const Graph&) {
  const auto& a = n.attr<ReduceAttrs>();
  if (n.inputs.size() > 1 || a.axes.empty()) return a.noop_with_empty_axes && n.inputs.size() == 1;
  return std::none_of(a.axes.begin(), a.axes.end(), [](int64_t axis) { return axis == 0; });  // normalized
}

// Opset 17: ReduceSum reads its axes from an input, the others from an attribute.
void export_reduce(OnnxWriter& w) {
  const ReduceAttrs& a = w.node.attr<ReduceAttrs>();
  const std::string op = to_string(w.node.op);
  std::vector<std::string> ins = w.inputs;
  const bool input_axes = op == "ReduceSum";
  if (input_axes && ins.size() == 1 && !a.axes.empty())
    ins.push_back(w.constant(w.outputs[0] + "/axes", Tensor::from_int64s({static_cast<int64_t>(a.axes.size())}, a.axes)));
  if (!input_axes && ins.size() > 1) w.fail("run-time axes of " + op + " (opset 18)");
  size_t n = w.emit(op, ins, w.outputs);
  if (!input_axes && !a.axes.empty()) w.attr(n, "axes", a.axes);
  w.attr(n, "keepdims", int64_t{a.keepdims});
  if (a.noop_with_empty_axes) {
    if (!input_axes) w.fail("noop_with_empty_axes of " + op + " (opset 18)");
    w.attr(n, "noop_with_empty_axes", int64_t{1});
  }
}

OpRecord reduction(std::string_view name, SignRule sign) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_reduce;
  r.attrs = attrs_codec<ReduceAttrs, describe_reduce>("reduce");
  r.shapes = reduce_shapes;
  r.shape_reads_inputs = 1u << 1;
  r.run = run_reduce;
  r.keeps_batch = reduce_keeps_batch;
  r.non_negative = sign;
  r.export_onnx = export_reduce;
  return r;
}

OpRecord reduce_mean() {
  OpRecord r = reduction("ReduceMean", like_input0);
  r.integer = IntegerUse::kFloat;
  return r;
}
OpRecord reduce_sum() { return reduction("ReduceSum", like_input0); }
OpRecord reduce_max() { return reduction("ReduceMax", like_input0); }
OpRecord reduce_min() { return reduction("ReduceMin", like_input0); }
OpRecord reduce_prod() { return reduction("ReduceProd", like_input0); }
OpRecord reduce_l1() { return reduction("ReduceL1", always_non_negative); }
OpRecord reduce_l2() { return reduction("ReduceL2", always_non_negative); }
OpRecord reduce_sum_square() { return reduction("ReduceSumSquare", always_non_negative); }

// ---- ArgMax / ArgMin along one axis (int64 indices; the first extreme unless select_last_index).

struct ArgAttrs {
  int64_t axis = 0;
  bool keepdims = true;
  bool select_last_index = false;
};

void import_arg(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.node.attrs = ArgAttrs{n.get_int("axis", 0), n.get_int("keepdims", 1) != 0, n.get_int("select_last_index", 0) != 0};
}

constexpr auto describe_arg = [](auto& a, auto&& field) {
  field("axis", a.axis);
  field("keepdims", a.keepdims);
  field("select_last_index", a.select_last_index);
};

std::vector<Shape> arg_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<ArgAttrs>();
  a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), c.who);
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    if (static_cast<int64_t>(i) != a.axis) out.push_back(x[i]);
    else if (a.keepdims) out.push_back(1);
  }
  return {out};
}

DataType int64_type(const Node&, std::span<const DataType>, size_t) { return DataType::kInt64; }

std::vector<Tensor> run_arg(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<ArgAttrs>();
  bool is_max = ctx.node.op == OpType::kArgMax;
  int64_t outer = 1, inner = 1, dim = x.dim(a.axis);
  check(dim > 0, ctx.who + ": cannot take the index of an empty axis");
  for (int64_t d = 0; d < x.rank(); ++d) {
    if (d < a.axis) outer *= x.dim(d);
    else if (d > a.axis) inner *= x.dim(d);
  }
  Tensor y = Tensor::uninitialized(DataType::kInt64, out[0]);
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* p = x.data<float>() + o * dim * inner + i;
      int64_t best = 0;
      for (int64_t k = 1; k < dim; ++k) {
        float v = p[k * inner], b = p[best * inner];
        bool better = is_max ? (v > b || (a.select_last_index && v == b)) : (v < b || (a.select_last_index && v == b));
        if (better) best = k;
      }
      y.data<int64_t>()[o * inner + i] = best;
    }
  return {y};
}

bool arg_keeps_batch(const Node& n, const Graph&) { return n.attr<ArgAttrs>().axis != 0; }

void export_arg(OnnxWriter& w) {
  const ArgAttrs& a = w.node.attr<ArgAttrs>();
  size_t n = w.emit(to_string(w.node.op), w.inputs, w.outputs);
  w.attr(n, "axis", a.axis);
  w.attr(n, "keepdims", int64_t{a.keepdims});
  w.attr(n, "select_last_index", int64_t{a.select_last_index});
}

OpRecord arg(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_arg;
  r.attrs = attrs_codec<ArgAttrs, describe_arg>("arg");
  r.shapes = arg_shapes;
  r.type = int64_type;
  r.run = run_arg;
  r.keeps_batch = arg_keeps_batch;
  r.non_negative = always_non_negative;
  r.export_onnx = export_arg;
  return r;
}
OpRecord arg_max() { return arg("ArgMax"); }
OpRecord arg_min() { return arg("ArgMin"); }

}  // namespace

TERN_REGISTER_OP(ReduceMean, reduce_mean)
TERN_REGISTER_OP(ReduceSum, reduce_sum)
TERN_REGISTER_OP(ReduceMax, reduce_max)
TERN_REGISTER_OP(ReduceMin, reduce_min)
TERN_REGISTER_OP(ReduceProd, reduce_prod)
TERN_REGISTER_OP(ReduceL1, reduce_l1)
TERN_REGISTER_OP(ReduceL2, reduce_l2)
TERN_REGISTER_OP(ReduceSumSquare, reduce_sum_square)
TERN_REGISTER_OP(ArgMax, arg_max)
TERN_REGISTER_OP(ArgMin, arg_min)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

void reduce_check(const Node& n, const Graph&, const std::string& who) {
  check(n.inputs.size() == 1, who + ": axes must be constant");
}

torch::Tensor reduce_forward(TorchCall& c) {
  const auto& a = c.node.attr<ReduceAttrs>();
  torch::Tensor x = c.input(0);
  std::vector<int64_t> dims;
  for (int64_t d : a.axes) dims.push_back(torch_axis(d, x.dim()));
  if (dims.empty()) {
    if (a.noop_with_empty_axes) return x;
    for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
  }
  switch (c.node.op) {
    case OpType::kReduceSum: return x.sum(dims, a.keepdims);
    case OpType::kReduceMax: return x.amax(dims, a.keepdims);
    case OpType::kReduceMin: return x.amin(dims, a.keepdims);
    case OpType::kReduceL1: return x.abs().sum(dims, a.keepdims);
    case OpType::kReduceL2: return x.pow(2).sum(dims, a.keepdims).sqrt();
    case OpType::kReduceSumSquare: return x.pow(2).sum(dims, a.keepdims);
    case OpType::kReduceProd: throw Error(c.who + ": ReduceProd is not supported for fine-tuning");
    default: return x.mean(dims, a.keepdims);
  }
}

}  // namespace

TERN_REGISTER_TORCH_OP(ReduceMean, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ReduceSum, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ReduceMax, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ReduceMin, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ReduceProd)
TERN_REGISTER_TORCH_OP(ReduceL1, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ReduceL2, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ReduceSumSquare, reduce_forward, reduce_check)
TERN_REGISTER_TORCH_OP(ArgMax)
TERN_REGISTER_TORCH_OP(ArgMin)

}  // namespace tern::train
#endif
