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
#include "ops/op.h"
#include "tern/error.h"
#include "tern/limits.h"
#include "tern/passes.h"

namespace tern {

namespace {

constexpr int64_t kMinOpset = 1;
constexpr int64_t kMaxOpset = 18;

// float16 and double models run in float32: their tensors are converted as they are read (weights
// and constants exactly, float16 being a subset of float32; doubles rounded), and values and Casts
// of those types are float32. Outputs then differ from an fp16 runtime's by fp16's own rounding.
DataType convert_type(int32_t onnx_type, const std::string& who) {
  switch (onnx_type) {
    case onnx::TensorProto::FLOAT:
    case onnx::TensorProto::FLOAT16:
    case onnx::TensorProto::DOUBLE: return DataType::kFloat32;
    case onnx::TensorProto::UINT8: return DataType::kUInt8;
    case onnx::TensorProto::INT8: return DataType::kInt8;
    case onnx::TensorProto::INT32: return DataType::kInt32;
    case onnx::TensorProto::INT64: return DataType::kInt64;
    case onnx::TensorProto::BOOL: return DataType::kBool;
    default: break;
  }
  throw Error(who + ": unsupported tensor data type " + std::to_string(onnx_type) +
              " (tern supports float32, float16 and double (run as float32), int64, int32, int8, uint8, bool)");
}

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity, NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else if (mantissa == 0) {
    bits = sign;
  } else {  // subnormal: normalize
    int shift = 0;
    while (!(mantissa & 0x400u)) {
      mantissa <<= 1;
      ++shift;
    }
    bits = sign | (static_cast<uint32_t>(113 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// A float16 or double tensor as float32 (see convert_type).
Tensor widened_tensor(const onnx::TensorProto& proto, const Shape& shape, int64_t count, const std::string& who) {
  bool half = proto.data_type() == onnx::TensorProto::FLOAT16;
  size_t width = half ? 2 : 8;
  size_t n = static_cast<size_t>(count);
  if (proto.has_raw_data()) {
    check(proto.raw_data().size() == n * width, who + ": raw data holds " + std::to_string(proto.raw_data().size()) +
                                                    " bytes, shape " + to_string(shape) + " needs " + std::to_string(n * width));
  } else {
    size_t held = half ? static_cast<size_t>(proto.int32_data().size()) : static_cast<size_t>(proto.double_data().size());
    check(held == n, who + ": holds " + std::to_string(held) + " values, shape " + to_string(shape) + " needs " + std::to_string(n));
  }
  Tensor t = Tensor::uninitialized(DataType::kFloat32, shape);
  float* out = t.data<float>();
  const char* raw = proto.has_raw_data() ? proto.raw_data().data() : nullptr;
  for (size_t i = 0; i < n; ++i) {
    if (half) {
      uint16_t h;
      if (raw) std::memcpy(&h, raw + 2 * i, 2);
      else h = static_cast<uint16_t>(proto.int32_data(static_cast<int>(i)));
      out[i] = half_to_float(h);
    } else {
      double d;
      if (raw) std::memcpy(&d, raw + 8 * i, 8);
      else d = proto.double_data(static_cast<int>(i));
      out[i] = static_cast<float>(d);
    }
  }
  return t;
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
  if (proto.data_type() == onnx::TensorProto::FLOAT16 || proto.data_type() == onnx::TensorProto::DOUBLE) {
    check_memory(static_cast<double>(count) * 4.0, who, "a tensor of shape " + to_string(shape));
    return widened_tensor(proto, shape, count, who);
  }
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

// An ONNX node as the operator records see it (src/ops/op.h): attribute access over the protobuf.
class ProtoNode final : public ops::OnnxNode {
 public:
  ProtoNode(const onnx::NodeProto& proto, Node& node, Graph& graph, int64_t opset, std::string who)
      : OnnxNode(node, graph, proto.op_type(), opset, who), proto_(proto), attrs_(proto, who) {}
  bool has(const std::string& name) const override { return attrs_.has(name); }
  int64_t get_int(const std::string& name, int64_t fallback) const override { return attrs_.get_int(name, fallback); }
  float get_float(const std::string& name, float fallback) const override { return attrs_.get_float(name, fallback); }
  std::string get_string(const std::string& name, const std::string& fallback) const override {
    return attrs_.get_string(name, fallback);
  }
  std::vector<int64_t> get_ints(const std::string& name) const override { return attrs_.get_ints(name); }
  std::vector<float> get_floats(const std::string& name) const override { return attrs_.get_floats(name); }
  std::vector<std::string> get_strings(const std::string& name) const override {
    const auto* a = attrs_.find(name, onnx::AttributeProto::STRINGS);
    return a ? std::vector<std::string>(a->strings().begin(), a->strings().end()) : std::vector<std::string>{};
  }
  bool has_tensor(const std::string& name) const override {
    return attrs_.find(name, onnx::AttributeProto::TENSOR) != nullptr;
  }
  Tensor get_tensor(const std::string& name) const override {
    const auto* a = attrs_.find(name, onnx::AttributeProto::TENSOR);
    check(a != nullptr, who + ": attribute '" + name + "' is required");
    return tensor_from_proto(a->t(), who + ": attribute '" + name + "'");
  }
  DataType data_type(int64_t onnx_type) const override {
    check(onnx_type >= INT32_MIN && onnx_type <= INT32_MAX, who + ": invalid data type " + std::to_string(onnx_type));
    return convert_type(static_cast<int32_t>(onnx_type), who);
  }
  size_t output_count() const override { return static_cast<size_t>(proto_.output_size()); }
  bool output_used(size_t i) const override {
    return i < output_count() && !proto_.output(static_cast<int>(i)).empty();
  }

 private:
  const onnx::NodeProto& proto_;
  Attributes attrs_;
};

// The ONNX operators no record imports, each with its node count and a first node: one message
// for all of them, so a user sees the whole list at once.
std::string unsupported_operators(const onnx::GraphProto& g) {
  std::map<std::string, std::pair<int, std::string>> missing;
  std::vector<std::string> order;
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& node = g.node(i);
    bool default_domain = node.domain().empty() || node.domain() == "ai.onnx";
    if (default_domain && ops::onnx_record(node.op_type())) continue;
    std::string op = default_domain ? node.op_type() : node.domain() + "." + node.op_type();
    auto [it, inserted] = missing.try_emplace(op, 0, node.name().empty() ? node.op_type() + "_" + std::to_string(i) : node.name());
    if (inserted) order.push_back(op);
    ++it->second.first;
  }
  std::string text;
  for (const std::string& op : order) {
    const auto& [count, first] = missing[op];
    if (!text.empty()) text += ", ";
    text += op + " (" + std::to_string(count) + (count == 1 ? " node: '" : " nodes, first '") + first + "')";
  }
  return text;
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
    if (std::string missing = unsupported_operators(g); !missing.empty())
      throw Error(src + ": unsupported operators: " + missing);
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

  void convert_node(const onnx::NodeProto& proto, int index) {
    Node node;
    node.name = unique_node_name(proto, index);
    std::string who = graph_.source + ": node '" + node.name + "' (" + proto.op_type() + ")";
    bool default_domain = proto.domain().empty() || proto.domain() == "ai.onnx";
    const ops::OpRecord* record = default_domain ? ops::onnx_record(proto.op_type()) : nullptr;
    check(record != nullptr && record->import != nullptr,
          graph_.source + ": unsupported operator '" + (default_domain ? "" : proto.domain() + ".") + proto.op_type() +
              "' (node '" + node.name + "')");
    for (const auto& in : proto.input()) node.inputs.push_back(lookup(in, who));
    // Trailing omitted inputs carry no meaning.
    while (!node.inputs.empty() && node.inputs.back() == kNoValue) node.inputs.pop_back();
    node.op = record->op;
    ProtoNode n(proto, node, graph_, graph_.opset, who);
    record->import(n);
    if (n.constant_output) {  // Constant: a value, not a node
      define(proto.output(0), graph_.add_constant(proto.output(0), std::move(*n.constant_output)));
      return;
    }
    check(std::any_of(proto.output().begin(), proto.output().end(), [](const std::string& o) { return !o.empty(); }),
          who + ": has no output");
    check(static_cast<size_t>(proto.output_size()) <= n.max_outputs,
          who + ": expects " + std::to_string(n.max_outputs) + " output(s), got " + std::to_string(proto.output_size()));
    // Outputs up to the last named one; an omitted one before it (an RNN's Y when only Y_h is
    // read) gets a placeholder value nothing reads.
    size_t outputs = std::min<size_t>(static_cast<size_t>(proto.output_size()), n.kept_outputs);
    while (outputs > 1 && proto.output(static_cast<int>(outputs - 1)).empty()) --outputs;
    for (size_t i = 0; i < outputs; ++i) {
      Value out;
      out.name = proto.output(static_cast<int>(i));
      if (out.name.empty()) {
        out.name = node.name + ".unused_output_" + std::to_string(i);
        node.outputs.push_back(graph_.add_value(out));
        continue;
      }
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
  // Shape inference runs as constants fold (Reshape targets need folded Shape sub-graphs), with the
  // input shapes the user gave, if any.
  if (options.input_shapes.empty()) fold_constants(graph);
  else set_input_shapes(graph, options.input_shapes);
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
  static const std::vector<std::string> ops = ops::onnx_operator_names();
  return ops;
}

}  // namespace tern
