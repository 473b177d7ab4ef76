// ONNX -> tern graph IR. Parses with libonnx's generated protobuf classes; converts each node's
// attributes into tern's typed attribute structs, honouring the operator's opset version.
#include "tern/onnx_import.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <map>
#include <queue>
#include <set>
#include <sstream>

#include "core/file_io.h"
#include "graph/shape_inference.h"
#include "tern/error.h"
#include "tern/limits.h"
#include "tern/passes.h"

namespace tern {

namespace {

constexpr int64_t kMinOpset = 1;
constexpr int64_t kMaxOpset = 18;

DataType convert_type(int32_t onnx_type, const std::string& who) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT: return DataType::kFloat32;
    case onnx::TensorProto::UINT8: return DataType::kUInt8;
    case onnx::TensorProto::INT8: return DataType::kInt8;
    case onnx::TensorProto::INT32: return DataType::kInt32;
    case onnx::TensorProto::INT64: return DataType::kInt64;
    case onnx::TensorProto::BOOL: return DataType::kBool;
    default: break;
  }
  throw Error(who + ": unsupported tensor data type " + std::to_string(onnx_type) +
              " (tern supports float32, int64, int32, int8, uint8, bool)");
}

Tensor tensor_from_proto(const onnx::TensorProto& proto, const std::string& who) {
  check(proto.data_location() != onnx::TensorProto::EXTERNAL, who + ": external tensor data is not supported");
  check(!proto.has_segment(), who + ": segmented tensors are not supported");
  DataType type = convert_type(proto.data_type(), who);
  Shape shape(proto.dims().begin(), proto.dims().end());
  for (int64_t d : shape) check(d >= 0, who + ": negative dimension in tensor");
  int64_t count = 1;
  for (int64_t d : shape)
    check(!__builtin_mul_overflow(count, d, &count), who + ": shape " + to_string(shape) + " is too large");
  // The data the file holds must match the shape before anything is allocated: a few bytes of
  // protobuf must not be able to ask for gigabytes.
  size_t n = static_cast<size_t>(count);
  if (proto.has_raw_data()) {
    double need = static_cast<double>(count) * static_cast<double>(element_size(type));
    check(static_cast<double>(proto.raw_data().size()) == need,
          who + ": raw data holds " + std::to_string(proto.raw_data().size()) + " bytes, shape " + to_string(shape) +
              " needs " + format_bytes(need));
    Tensor t = Tensor::uninitialized(type, shape);
    std::memcpy(t.raw(), proto.raw_data().data(), t.bytes());  // little-endian, as ONNX specifies
    return t;
  }
  size_t held = 0;
  switch (type) {
    case DataType::kFloat32: held = static_cast<size_t>(proto.float_data().size()); break;
    case DataType::kInt64: held = static_cast<size_t>(proto.int64_data().size()); break;
    default: held = static_cast<size_t>(proto.int32_data().size()); break;
  }
  check(held == n, who + ": holds " + std::to_string(held) + " values, shape " + to_string(shape) + " needs " +
                       std::to_string(n));
  Tensor t = Tensor::uninitialized(type, shape);
  auto fill = [&](const auto& field, auto* out) {
    check(static_cast<size_t>(field.size()) == n, who + ": holds " + std::to_string(field.size()) +
                                                      " values, shape " + to_string(shape) + " needs " +
                                                      std::to_string(n));
    for (size_t i = 0; i < n; ++i) out[i] = static_cast<std::remove_pointer_t<decltype(out)>>(field.Get(static_cast<int>(i)));
  };
  switch (type) {
    case DataType::kFloat32: fill(proto.float_data(), t.data<float>()); break;
    case DataType::kInt64: fill(proto.int64_data(), t.data<int64_t>()); break;
    case DataType::kInt32: fill(proto.int32_data(), t.data<int32_t>()); break;
    case DataType::kInt8: fill(proto.int32_data(), t.data<int8_t>()); break;
    case DataType::kUInt8: fill(proto.int32_data(), t.data<uint8_t>()); break;
    case DataType::kBool: fill(proto.int32_data(), t.data<uint8_t>()); break;
    case DataType::kUndefined: break;
  }
  return t;
}

// Attribute access with type checks; `who` names the node for errors.
class Attributes {
 public:
  Attributes(const onnx::NodeProto& node, std::string who) : who_(std::move(who)) {
    for (const auto& a : node.attribute()) by_name_[a.name()] = &a;
  }
  bool has(const std::string& name) const { return by_name_.count(name) != 0; }
  int64_t get_int(const std::string& name, int64_t fallback) const {
    const auto* a = find(name, onnx::AttributeProto::INT);
    return a ? a->i() : fallback;
  }
  float get_float(const std::string& name, float fallback) const {
    const auto* a = find(name, onnx::AttributeProto::FLOAT);
    return a ? a->f() : fallback;
  }
  std::string get_string(const std::string& name, const std::string& fallback) const {
    const auto* a = find(name, onnx::AttributeProto::STRING);
    return a ? a->s() : fallback;
  }
  std::vector<int64_t> get_ints(const std::string& name) const {
    const auto* a = find(name, onnx::AttributeProto::INTS);
    return a ? std::vector<int64_t>(a->ints().begin(), a->ints().end()) : std::vector<int64_t>{};
  }
  std::vector<float> get_floats(const std::string& name) const {
    const auto* a = find(name, onnx::AttributeProto::FLOATS);
    return a ? std::vector<float>(a->floats().begin(), a->floats().end()) : std::vector<float>{};
  }
  const onnx::AttributeProto* find(const std::string& name, onnx::AttributeProto::AttributeType type) const {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return nullptr;
    check(it->second->type() == type || it->second->type() == onnx::AttributeProto::UNDEFINED,
          who_ + ": attribute '" + name + "' has the wrong type");
    return it->second;
  }

 private:
  std::string who_;
  std::map<std::string, const onnx::AttributeProto*> by_name_;
};

AutoPad parse_auto_pad(const Attributes& attrs, const std::string& who) {
  std::string s = attrs.get_string("auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  throw Error(who + ": unknown auto_pad '" + s + "'");
}

class Importer {
 public:
  Importer(const onnx::ModelProto& model, std::string source) : model_(model) { graph_.source = std::move(source); }

  Graph run() {
    const std::string& src = graph_.source;
    check(model_.has_graph(), src + ": not an ONNX model (no graph)");
    check(model_.ir_version() > 0, src + ": not an ONNX model (no IR version)");
    for (const auto& op : model_.opset_import())
      if (op.domain().empty() || op.domain() == "ai.onnx") graph_.opset = op.version();
    check(graph_.opset > 0, src + ": the model imports no version of the default ONNX operator set");
    check(graph_.opset >= kMinOpset && graph_.opset <= kMaxOpset,
          src + ": opset " + std::to_string(graph_.opset) + " is not supported (tern reads opsets " +
              std::to_string(kMinOpset) + " to " + std::to_string(kMaxOpset) + ")");
    for (const auto& p : model_.metadata_props()) graph_.metadata[p.key()] = p.value();

    const onnx::GraphProto& g = model_.graph();
    for (const auto& init : g.initializer()) {
      check(!init.name().empty(), src + ": an initializer has no name");
      define(init.name(), graph_.add_constant(init.name(), tensor_from_proto(init, src + ": initializer '" + init.name() + "'")));
    }
    for (const auto& input : g.input()) {
      if (names_.count(input.name())) continue;  // an initializer listed as input (IR < 4 style)
      graph_.inputs.push_back(define(input.name(), graph_.add_value(value_from_info(input))));
    }
    check(!g.node().empty(), src + ": the graph has no nodes");
    for (int i : topological_order(g)) convert_node(g.node(i), i);
    for (const auto& output : g.output()) {
      auto it = names_.find(output.name());
      check(it != names_.end(), src + ": graph output '" + output.name() + "' is never produced");
      graph_.outputs.push_back(it->second);
    }
    check(!graph_.outputs.empty(), src + ": the graph has no outputs");
    graph_.validate();
    return std::move(graph_);
  }

 private:
  ValueId define(const std::string& name, ValueId id) {
    check(names_.emplace(name, id).second, graph_.source + ": value '" + name + "' is defined twice");
    return id;
  }

  Value value_from_info(const onnx::ValueInfoProto& info) {
    std::string who = graph_.source + ": graph input '" + info.name() + "'";
    check(info.type().has_tensor_type(), who + ": only tensor inputs are supported");
    const auto& tt = info.type().tensor_type();
    Value v;
    v.name = info.name();
    v.dtype = convert_type(tt.elem_type(), who);
    if (tt.has_shape()) {
      v.shape_known = true;
      for (const auto& d : tt.shape().dim()) {
        check(!d.has_dim_value() || d.dim_value() >= 0,
              who + ": dimension " + std::to_string(d.dim_value()) +
                  " is negative (a dynamic dimension has a name or no value)");
        v.shape.push_back(d.has_dim_value() ? d.dim_value() : kDynamicDim);
      }
    }
    return v;
  }

  // ONNX requires sorted nodes, but exporters have shipped unsorted graphs; sort defensively.
  std::vector<int> topological_order(const onnx::GraphProto& g) {
    std::map<std::string, int> producer;
    for (int i = 0; i < g.node_size(); ++i)
      for (const auto& out : g.node(i).output())
        if (!out.empty()) producer[out] = i;
    std::vector<std::vector<int>> users(static_cast<size_t>(g.node_size()));
    std::vector<int> missing(static_cast<size_t>(g.node_size()), 0);
    for (int i = 0; i < g.node_size(); ++i)
      for (const auto& in : g.node(i).input()) {
        auto it = producer.find(in);
        if (in.empty() || names_.count(in) || it == producer.end()) continue;
        users[static_cast<size_t>(it->second)].push_back(i);
        ++missing[static_cast<size_t>(i)];
      }
    std::priority_queue<int, std::vector<int>, std::greater<int>> ready;  // keep file order when possible
    for (int i = 0; i < g.node_size(); ++i)
      if (missing[static_cast<size_t>(i)] == 0) ready.push(i);
    std::vector<int> order;
    while (!ready.empty()) {
      int i = ready.top();
      ready.pop();
      order.push_back(i);
      for (int u : users[static_cast<size_t>(i)])
        if (--missing[static_cast<size_t>(u)] == 0) ready.push(u);
    }
    check(order.size() == static_cast<size_t>(g.node_size()), graph_.source + ": the graph has a cycle");
    return order;
  }

  std::string unique_node_name(const onnx::NodeProto& node, int index) {
    std::string base = node.name().empty() ? node.op_type() + "_" + std::to_string(index) : node.name();
    std::string name = base;
    for (int k = 1; !node_names_.insert(name).second; ++k) name = base + "_" + std::to_string(k);
    return name;
  }

  ValueId lookup(const std::string& name, const std::string& who) {
    if (name.empty()) return kNoValue;
    auto it = names_.find(name);
    check(it != names_.end(), who + ": input '" + name + "' is not defined");
    return it->second;
  }

  // The content of a constant input (e.g. Reshape's shape, Unsqueeze's axes), or null.
  const Tensor* constant_input(const Node& node, size_t i) {
    if (i >= node.inputs.size() || node.inputs[i] == kNoValue) return nullptr;
    const Value& v = graph_.value(node.inputs[i]);
    return v.constant ? &*v.constant : nullptr;
  }

  std::vector<int64_t> constant_ints(const Node& node, size_t i, const std::string& who, const char* what) {
    const Tensor* t = constant_input(node, i);
    check(t != nullptr, who + ": input '" + what + "' must be a constant");
    check(t->dtype() == DataType::kInt64 && t->rank() <= 1, who + ": input '" + what + "' must be a 1-D int64 tensor");
    return {t->data<int64_t>(), t->data<int64_t>() + t->size()};
  }

  void convert_node(const onnx::NodeProto& proto, int index) {
    Node node;
    node.name = unique_node_name(proto, index);
    std::string who = graph_.source + ": node '" + node.name + "' (" + proto.op_type() + ")";
    if (!proto.domain().empty() && proto.domain() != "ai.onnx")
      throw Error(graph_.source + ": unsupported operator '" + proto.domain() + "." + proto.op_type() + "' (node '" +
                  node.name + "')");
    Attributes attrs(proto, who);
    for (const auto& in : proto.input()) node.inputs.push_back(lookup(in, who));
    // Trailing omitted inputs carry no meaning.
    while (!node.inputs.empty() && node.inputs.back() == kNoValue) node.inputs.pop_back();
    int64_t opset = graph_.opset;
    const std::string& op = proto.op_type();
    size_t max_outputs = 1;
    auto need_inputs = [&](size_t lo, size_t hi) {
      check(node.inputs.size() >= lo && node.inputs.size() <= hi,
            who + ": expects " + std::to_string(lo) + (lo == hi ? "" : " to " + std::to_string(hi)) + " inputs, got " +
                std::to_string(node.inputs.size()));
      for (size_t i = 0; i < lo; ++i) check(node.inputs[i] != kNoValue, who + ": required input " + std::to_string(i) + " is missing");
    };

    if (op == "Constant") {
      check(proto.output_size() == 1, who + ": expects one output");
      Tensor t;
      if (const auto* a = attrs.find("value", onnx::AttributeProto::TENSOR)) t = tensor_from_proto(a->t(), who);
      else if (attrs.has("value_float")) t = Tensor::from_floats({}, std::vector<float>{attrs.get_float("value_float", 0)});
      else if (attrs.has("value_floats")) {
        auto v = attrs.get_floats("value_floats");
        t = Tensor::from_floats({static_cast<int64_t>(v.size())}, v);
      } else if (attrs.has("value_int")) t = Tensor::from_int64s({}, std::vector<int64_t>{attrs.get_int("value_int", 0)});
      else if (attrs.has("value_ints")) {
        auto v = attrs.get_ints("value_ints");
        t = Tensor::from_int64s({static_cast<int64_t>(v.size())}, v);
      } else throw Error(who + ": unsupported Constant form (tern reads value, value_float(s), value_int(s))");
      define(proto.output(0), graph_.add_constant(proto.output(0), std::move(t)));
      return;
    } else if (op == "Conv") {
      need_inputs(2, 3);
      ConvAttrs a;
      a.auto_pad = parse_auto_pad(attrs, who);
      a.kernel = attrs.get_ints("kernel_shape");
      a.strides = attrs.get_ints("strides");
      a.pads = attrs.get_ints("pads");
      a.dilations = attrs.get_ints("dilations");
      a.group = attrs.get_int("group", 1);
      node.op = OpType::kConv;
      node.attrs = a;
    } else if (op == "MaxPool" || op == "AveragePool") {
      need_inputs(1, 1);
      PoolAttrs a;
      a.auto_pad = parse_auto_pad(attrs, who);
      a.kernel = attrs.get_ints("kernel_shape");
      check(!a.kernel.empty(), who + ": kernel_shape is required");
      a.strides = attrs.get_ints("strides");
      a.pads = attrs.get_ints("pads");
      a.dilations = attrs.get_ints("dilations");
      a.ceil_mode = attrs.get_int("ceil_mode", 0) != 0;
      a.count_include_pad = attrs.get_int("count_include_pad", 0) != 0;
      check(attrs.get_int("storage_order", 0) == 0, who + ": storage_order=1 is not supported");
      check(proto.output_size() < 2 || proto.output(1).empty(), who + ": the Indices output is not supported");
      max_outputs = 2;
      node.op = op == "MaxPool" ? OpType::kMaxPool : OpType::kAveragePool;
      node.attrs = a;
    } else if (op == "BatchNormalization") {
      need_inputs(5, 5);
      check(attrs.get_int("training_mode", 0) == 0, who + ": training_mode=1 is not supported (inference only)");
      check(attrs.get_int("spatial", 1) == 1, who + ": spatial=0 is not supported");
      for (int i = 1; i < proto.output_size(); ++i)
        check(proto.output(i).empty(), who + ": training outputs (running mean/variance) are not supported");
      max_outputs = 5;
      node.op = OpType::kBatchNormalization;
      node.attrs = BatchNormAttrs{attrs.get_float("epsilon", 1e-5f)};
    } else if (op == "Relu" || op == "Sigmoid" || op == "Tanh" || op == "Sqrt" || op == "Erf") {
      need_inputs(1, 1);
      node.op = op == "Relu" ? OpType::kRelu : op == "Sigmoid" ? OpType::kSigmoid : op == "Tanh" ? OpType::kTanh
                : op == "Sqrt" ? OpType::kSqrt : OpType::kErf;
    } else if (op == "Pow") {
      need_inputs(2, 2);
      node.op = OpType::kPow;
    } else if (op == "LayerNormalization") {
      need_inputs(2, 3);
      check(attrs.get_int("stash_type", 1) == 1, who + ": only float32 stash_type is supported");
      max_outputs = 3;
      node.op = OpType::kLayerNormalization;
      node.attrs = LayerNormAttrs{attrs.get_int("axis", -1), attrs.get_float("epsilon", 1e-5f)};
    } else if (op == "LeakyRelu") {
      need_inputs(1, 1);
      node.op = OpType::kLeakyRelu;
      node.attrs = LeakyReluAttrs{attrs.get_float("alpha", 0.01f)};
    } else if (op == "Clip") {
      ClipAttrs a;
      if (opset < 11) {
        need_inputs(1, 1);
        a.lo = attrs.get_float("min", a.lo);
        a.hi = attrs.get_float("max", a.hi);
      } else {
        need_inputs(1, 3);  // min/max stay inputs unless constant (see passes: canonicalize)
      }
      node.op = OpType::kClip;
      node.attrs = a;
    } else if (op == "GlobalAveragePool" || op == "GlobalMaxPool") {
      need_inputs(1, 1);
      node.op = op == "GlobalAveragePool" ? OpType::kGlobalAveragePool : OpType::kGlobalMaxPool;
    } else if (op == "ReduceMean") {
      ReduceAttrs a;
      a.keepdims = attrs.get_int("keepdims", 1) != 0;
      if (opset >= 18) {
        need_inputs(1, 2);
        if (node.inputs.size() > 1) a.axes = constant_ints(node, 1, who, "axes");
        check(!(a.axes.empty() && attrs.get_int("noop_with_empty_axes", 0)), who + ": noop_with_empty_axes is not supported");
        node.inputs.resize(1);
      } else {
        need_inputs(1, 1);
        a.axes = attrs.get_ints("axes");
      }
      node.op = OpType::kReduceMean;
      node.attrs = a;
    } else if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div") {
      need_inputs(2, 2);
      // Before opset 7, broadcast=1 with an axis aligned B at that axis; numpy rules cover axis-free use.
      check(opset >= 7 || !attrs.has("axis"), who + ": legacy broadcast with an axis attribute is not supported");
      node.op = op == "Add" ? OpType::kAdd : op == "Sub" ? OpType::kSub : op == "Mul" ? OpType::kMul : OpType::kDiv;
    } else if (op == "Concat") {
      need_inputs(1, 1u << 20);
      check(attrs.has("axis"), who + ": axis is required");
      node.op = OpType::kConcat;
      node.attrs = AxisAttrs{attrs.get_int("axis", 0)};
    } else if (op == "Gemm") {
      need_inputs(2, 3);
      GemmAttrs a;
      a.alpha = attrs.get_float("alpha", 1.0f);
      a.beta = attrs.get_float("beta", 1.0f);
      a.trans_a = attrs.get_int("transA", 0) != 0;
      a.trans_b = attrs.get_int("transB", 0) != 0;
      check(opset >= 7 || !attrs.has("broadcast"), who + ": legacy broadcast attribute");
      node.op = OpType::kGemm;
      node.attrs = a;
    } else if (op == "MatMul") {
      need_inputs(2, 2);
      node.op = OpType::kMatMul;
    } else if (op == "Flatten") {
      need_inputs(1, 1);
      node.op = OpType::kFlatten;
      node.attrs = AxisAttrs{attrs.get_int("axis", 1)};
    } else if (op == "Reshape") {
      if (opset < 5) {  // the target was an attribute
        need_inputs(1, 1);
        std::vector<int64_t> target = attrs.get_ints("shape");
        node.inputs.push_back(graph_.add_constant(node.name + ".shape",
                                                  Tensor::from_int64s({static_cast<int64_t>(target.size())}, target)));
      }
      need_inputs(2, 2);
      node.op = OpType::kReshape;
      node.attrs = ReshapeAttrs{attrs.get_int("allowzero", 0) != 0};
    } else if (op == "Transpose") {
      need_inputs(1, 1);
      node.op = OpType::kTranspose;
      node.attrs = TransposeAttrs{attrs.get_ints("perm")};
    } else if (op == "Softmax") {
      need_inputs(1, 1);
      node.op = OpType::kSoftmax;
      node.attrs = AxisAttrs{attrs.get_int("axis", opset >= 13 ? -1 : 1), opset < 13};
    } else if (op == "Dropout") {
      need_inputs(1, 3);
      if (node.inputs.size() == 3) {
        const Tensor* training = constant_input(node, 2);
        check(training != nullptr, who + ": training_mode must be a constant");
        check(training->size() == 1 && training->raw()[0] == std::byte{0}, who + ": training_mode=true is not supported");
      }
      check(attrs.get_int("is_test", 1) != 0 || opset >= 7, who + ": training-mode Dropout is not supported");
      max_outputs = 2;
      node.inputs.resize(1);
      node.op = OpType::kIdentity;  // inference: output = input, mask = all true
    } else if (op == "Identity") {
      need_inputs(1, 1);
      node.op = OpType::kIdentity;
    } else if (op == "Shape") {
      need_inputs(1, 1);
      node.op = OpType::kShape;
      ShapeAttrs a;
      a.start = attrs.get_int("start", 0);
      a.end = attrs.get_int("end", a.end);
      node.attrs = a;
    } else if (op == "Gather") {
      need_inputs(2, 2);
      node.op = OpType::kGather;
      node.attrs = AxisAttrs{attrs.get_int("axis", 0)};
    } else if (op == "Unsqueeze" || op == "Squeeze") {
      AxesAttrs a;
      if (opset >= 13) {
        need_inputs(op == "Unsqueeze" ? 2 : 1, 2);
        if (node.inputs.size() > 1 && constant_input(node, 1)) {  // else read at run time
          a.axes = constant_ints(node, 1, who, "axes");
          node.inputs.resize(1);
        }
      } else {
        need_inputs(1, 1);
        a.axes = attrs.get_ints("axes");
      }
      check(op == "Squeeze" || !a.axes.empty() || node.inputs.size() > 1, who + ": axes must not be empty");
      node.op = op == "Unsqueeze" ? OpType::kUnsqueeze : OpType::kSqueeze;
      node.attrs = a;
    } else if (op == "Cast") {
      need_inputs(1, 1);
      node.op = OpType::kCast;
      node.attrs = CastAttrs{convert_type(static_cast<int32_t>(attrs.get_int("to", 1)), who)};
    } else if (op == "Slice") {
      SliceAttrs a;
      if (opset < 10) {
        need_inputs(1, 1);
        a.starts = attrs.get_ints("starts");
        a.ends = attrs.get_ints("ends");
        a.axes = attrs.get_ints("axes");
      } else {
        need_inputs(3, 5);
        bool all_constant = true;
        for (size_t i = 1; i < node.inputs.size(); ++i)
          all_constant &= node.inputs[i] == kNoValue || constant_input(node, i) != nullptr;
        if (all_constant) {  // else read at run time
          a.starts = constant_ints(node, 1, who, "starts");
          a.ends = constant_ints(node, 2, who, "ends");
          if (node.inputs.size() > 3 && node.inputs[3] != kNoValue) a.axes = constant_ints(node, 3, who, "axes");
          if (node.inputs.size() > 4 && node.inputs[4] != kNoValue) a.steps = constant_ints(node, 4, who, "steps");
          node.inputs.resize(1);
        }
      }
      node.op = OpType::kSlice;
      node.attrs = a;
    } else if (op == "HardSigmoid" || op == "HardSwish") {
      need_inputs(1, 1);
      AffineAttrs a;
      if (op == "HardSwish") a = {1.0f / 6.0f, 0.5f, true};
      else a = {attrs.get_float("alpha", 0.2f), attrs.get_float("beta", 0.5f), false};
      node.op = OpType::kHardSigmoid;
      node.attrs = a;
    } else if (op == "Pad") {
      PadAttrs a;
      std::string mode = attrs.get_string("mode", "constant");
      check(mode == "constant", who + ": pad mode '" + mode + "' is not supported (only constant)");
      if (opset >= 11) {
        need_inputs(2, 3);
        const Tensor* v = node.inputs.size() > 2 ? constant_input(node, 2) : nullptr;
        if (constant_input(node, 1) && (node.inputs.size() < 3 || v)) {  // else read at run time
          a.pads = constant_ints(node, 1, who, "pads");
          if (v) {
            check(v->dtype() == DataType::kFloat32 && v->size() == 1, who + ": constant_value must be a float scalar");
            a.value = v->data<float>()[0];
          }
          node.inputs.resize(1);
        }
      } else {
        need_inputs(1, 1);
        a.pads = attrs.get_ints("pads");
        a.value = attrs.get_float("value", 0.0f);
      }
      node.op = OpType::kPad;
      node.attrs = a;
    } else {
      throw Error(graph_.source + ": unsupported operator '" + op + "' (node '" + node.name + "')");
    }

    check(proto.output_size() >= 1 && !proto.output(0).empty(), who + ": has no output");
    check(static_cast<size_t>(proto.output_size()) <= max_outputs,
          who + ": expects " + std::to_string(max_outputs) + " output(s), got " + std::to_string(proto.output_size()));
    bool multi_output = node.op == OpType::kIdentity || node.op == OpType::kLayerNormalization;
    size_t outputs = multi_output ? std::min<size_t>(static_cast<size_t>(proto.output_size()), max_outputs) : 1;
    for (size_t i = 0; i < outputs; ++i) {
      if (proto.output(static_cast<int>(i)).empty()) break;
      Value out;
      out.name = proto.output(static_cast<int>(i));
      node.outputs.push_back(define(out.name, graph_.add_value(out)));
    }
    graph_.nodes.push_back(std::move(node));
  }

  const onnx::ModelProto& model_;
  Graph graph_;
  std::map<std::string, ValueId> names_;
  std::set<std::string> node_names_;
};

}  // namespace

Graph import_onnx_bytes(std::string_view bytes, const std::string& source_name, const ImportOptions& options) {
  onnx::ModelProto model;
  check(!bytes.empty(), source_name + ": empty file, not an ONNX model");
  check(bytes.size() < (size_t{1} << 31), source_name + ": larger than 2 GiB (external data is not supported)");
  check(model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())),
        source_name + ": not an ONNX model, or truncated (protobuf parse failed)");
  Graph graph = Importer(model, source_name).run();
  fold_constants(graph);  // infers shapes as it goes: Reshape targets need folded Shape sub-graphs
  if (options.optimize) optimize(graph);
  return graph;
}

Graph import_onnx(const std::string& path, const ImportOptions& options) {
  std::string bytes = read_whole_file(path);
  return import_onnx_bytes(bytes, path, options);
}

Tensor read_onnx_tensor(const std::string& path) {
  std::string bytes = read_whole_file(path);
  onnx::TensorProto proto;
  check(proto.ParseFromString(bytes), path + ": not a serialized ONNX tensor");
  return tensor_from_proto(proto, path);
}

const std::vector<std::string>& supported_onnx_operators() {
  static const std::vector<std::string> ops = {
      "Add", "AveragePool", "BatchNormalization", "Cast", "Clip", "Concat", "Constant", "Conv", "Div", "Dropout",
      "Flatten", "Gather", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Identity", "LeakyRelu", "MatMul",
      "MaxPool", "Mul", "Pad", "ReduceMean", "Relu", "Reshape", "Shape", "Sigmoid", "Softmax", "Squeeze", "Sub",
      "Tanh", "Transpose", "Unsqueeze", "Slice", "HardSigmoid", "HardSwish", "Sqrt", "Erf", "Pow", "LayerNormalization"};
  return ops;
}

}  // namespace tern
