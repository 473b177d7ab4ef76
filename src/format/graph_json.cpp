// Graph IR <-> JSON + tensor payloads. Loading trusts nothing: every field is type-checked and
// every index and size bounds-checked; nlohmann's exceptions become tern::Error naming the file.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/file_io.h"
#include "format/graph_json.h"
#include "graph/shape_inference.h"
#include "tern/error.h"
#include "tern/model_io.h"

namespace tern {

namespace {

using json = format::Json;

const std::vector<std::pair<OpType, std::string>>& op_names() {
  static const std::vector<std::pair<OpType, std::string>> names = [] {
    std::vector<std::pair<OpType, std::string>> v;
    // Every OpType in order, until to_string stops knowing one: appended ops need no edit here.
    for (int i = static_cast<int>(OpType::kConv); to_string(static_cast<OpType>(i)) != "?"; ++i)
      v.emplace_back(static_cast<OpType>(i), to_string(static_cast<OpType>(i)));
    return v;
  }();
  return names;
}

OpType op_from_name(const std::string& name) {
  for (const auto& [op, n] : op_names())
    if (n == name) return op;
  throw Error("unknown operator '" + name + "'");
}

// Infinite clamps are stored as null (JSON has no infinity).
json bound(float v) { return std::isinf(v) ? json(nullptr) : json(v); }
float bound(const json& j, float fallback) { return j.is_null() ? fallback : j.get<float>(); }
constexpr float kInf = std::numeric_limits<float>::infinity();

json attrs_to_json(const NodeAttrs& attrs) {
  return std::visit(
      [](const auto& a) -> json {
        using T = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<T, std::monostate>) return json::object();
        else if constexpr (std::is_same_v<T, ConvAttrs>)
          return {{"kind", "conv"}, {"auto_pad", static_cast<int>(a.auto_pad)}, {"kernel", a.kernel},
                  {"strides", a.strides}, {"pads", a.pads}, {"dilations", a.dilations}, {"group", a.group},
                  {"clamp_lo", bound(a.clamp_lo)}, {"clamp_hi", bound(a.clamp_hi)}};
        else if constexpr (std::is_same_v<T, PoolAttrs>)
          return {{"kind", "pool"}, {"auto_pad", static_cast<int>(a.auto_pad)}, {"kernel", a.kernel},
                  {"strides", a.strides}, {"pads", a.pads}, {"dilations", a.dilations}, {"ceil_mode", a.ceil_mode},
                  {"count_include_pad", a.count_include_pad}};
        else if constexpr (std::is_same_v<T, GemmAttrs>)
          return {{"kind", "gemm"}, {"alpha", a.alpha}, {"beta", a.beta}, {"trans_a", a.trans_a},
                  {"trans_b", a.trans_b}, {"clamp_lo", bound(a.clamp_lo)}, {"clamp_hi", bound(a.clamp_hi)}};
        else if constexpr (std::is_same_v<T, BatchNormAttrs>) return {{"kind", "batchnorm"}, {"epsilon", a.epsilon}};
        else if constexpr (std::is_same_v<T, ClipAttrs>)
          return {{"kind", "clip"}, {"lo", bound(a.lo)}, {"hi", bound(a.hi)}};
        else if constexpr (std::is_same_v<T, LeakyReluAttrs>) return {{"kind", "leaky_relu"}, {"alpha", a.alpha}};
        else if constexpr (std::is_same_v<T, AxisAttrs>)
          return {{"kind", "axis"}, {"axis", a.axis}, {"coerce_2d", a.coerce_2d}};
        else if constexpr (std::is_same_v<T, ReduceAttrs>)
          return {{"kind", "reduce"}, {"axes", a.axes}, {"keepdims", a.keepdims}};
        else if constexpr (std::is_same_v<T, AxesAttrs>) return {{"kind", "axes"}, {"axes", a.axes}};
        else if constexpr (std::is_same_v<T, TransposeAttrs>) return {{"kind", "transpose"}, {"perm", a.perm}};
        else if constexpr (std::is_same_v<T, ReshapeAttrs>) return {{"kind", "reshape"}, {"allow_zero", a.allow_zero}};
        else if constexpr (std::is_same_v<T, CastAttrs>) return {{"kind", "cast"}, {"to", static_cast<int>(a.to)}};
        else if constexpr (std::is_same_v<T, PadAttrs>) return {{"kind", "pad"}, {"pads", a.pads}, {"value", a.value}};
        else if constexpr (std::is_same_v<T, ShapeAttrs>) return {{"kind", "shape"}, {"start", a.start}, {"end", a.end}};
        else if constexpr (std::is_same_v<T, SliceAttrs>)
          return {{"kind", "slice"}, {"starts", a.starts}, {"ends", a.ends}, {"axes", a.axes}, {"steps", a.steps}};
        else if constexpr (std::is_same_v<T, LayerNormAttrs>)
          return {{"kind", "layer_norm"}, {"axis", a.axis}, {"epsilon", a.epsilon}};
        else if constexpr (std::is_same_v<T, AffineAttrs>)
          return {{"kind", "affine"}, {"alpha", a.alpha}, {"beta", a.beta}, {"multiply_input", a.multiply_input}};
        else if constexpr (std::is_same_v<T, FakeQuantAttrs>)
          return {{"kind", "fake_quant"}, {"bits", a.bits}, {"is_unsigned", a.is_unsigned}, {"dynamic", a.dynamic},
                  {"power_of_two", a.power_of_two}, {"scale", a.scale}};
      },
      attrs);
}

AutoPad auto_pad_from(const json& j) {
  int v = j.get<int>();
  check(v >= 0 && v <= static_cast<int>(AutoPad::kValid), "invalid auto_pad");
  return static_cast<AutoPad>(v);
}

DataType dtype_from(const json& j) {
  int v = j.get<int>();
  switch (static_cast<DataType>(v)) {
    case DataType::kFloat32:
    case DataType::kUInt8:
    case DataType::kInt8:
    case DataType::kInt32:
    case DataType::kInt64:
    case DataType::kBool: return static_cast<DataType>(v);
    default: throw Error("invalid data type " + std::to_string(v));
  }
}

NodeAttrs attrs_from_json(const json& j) {
  if (!j.contains("kind")) return std::monostate{};
  std::string kind = j.at("kind").get<std::string>();
  if (kind == "conv") {
    ConvAttrs a;
    a.auto_pad = auto_pad_from(j.at("auto_pad"));
    a.kernel = j.at("kernel").get<std::vector<int64_t>>();
    a.strides = j.at("strides").get<std::vector<int64_t>>();
    a.pads = j.at("pads").get<std::vector<int64_t>>();
    a.dilations = j.at("dilations").get<std::vector<int64_t>>();
    a.group = j.at("group").get<int64_t>();
    a.clamp_lo = bound(j.at("clamp_lo"), -kInf);
    a.clamp_hi = bound(j.at("clamp_hi"), kInf);
    return a;
  }
  if (kind == "pool") {
    PoolAttrs a;
    a.auto_pad = auto_pad_from(j.at("auto_pad"));
    a.kernel = j.at("kernel").get<std::vector<int64_t>>();
    a.strides = j.at("strides").get<std::vector<int64_t>>();
    a.pads = j.at("pads").get<std::vector<int64_t>>();
    a.dilations = j.at("dilations").get<std::vector<int64_t>>();
    a.ceil_mode = j.at("ceil_mode").get<bool>();
    a.count_include_pad = j.at("count_include_pad").get<bool>();
    return a;
  }
  if (kind == "gemm") {
    GemmAttrs a;
    a.alpha = j.at("alpha").get<float>();
    a.beta = j.at("beta").get<float>();
    a.trans_a = j.at("trans_a").get<bool>();
    a.trans_b = j.at("trans_b").get<bool>();
    a.clamp_lo = bound(j.at("clamp_lo"), -kInf);
    a.clamp_hi = bound(j.at("clamp_hi"), kInf);
    return a;
  }
  if (kind == "batchnorm") return BatchNormAttrs{j.at("epsilon").get<float>()};
  if (kind == "clip") return ClipAttrs{bound(j.at("lo"), -kInf), bound(j.at("hi"), kInf)};
  if (kind == "leaky_relu") return LeakyReluAttrs{j.at("alpha").get<float>()};
  if (kind == "axis") return AxisAttrs{j.at("axis").get<int64_t>(), j.at("coerce_2d").get<bool>()};
  if (kind == "reduce") return ReduceAttrs{j.at("axes").get<std::vector<int64_t>>(), j.at("keepdims").get<bool>()};
  if (kind == "axes") return AxesAttrs{j.at("axes").get<std::vector<int64_t>>()};
  if (kind == "transpose") return TransposeAttrs{j.at("perm").get<std::vector<int64_t>>()};
  if (kind == "reshape") return ReshapeAttrs{j.at("allow_zero").get<bool>()};
  if (kind == "cast") return CastAttrs{dtype_from(j.at("to"))};
  if (kind == "pad") return PadAttrs{j.at("pads").get<std::vector<int64_t>>(), j.at("value").get<float>()};
  if (kind == "shape") return ShapeAttrs{j.at("start").get<int64_t>(), j.at("end").get<int64_t>()};
  if (kind == "slice")
    return SliceAttrs{j.at("starts").get<std::vector<int64_t>>(), j.at("ends").get<std::vector<int64_t>>(),
                      j.at("axes").get<std::vector<int64_t>>(), j.at("steps").get<std::vector<int64_t>>()};
  if (kind == "layer_norm") return LayerNormAttrs{j.at("axis").get<int64_t>(), j.at("epsilon").get<float>()};
  if (kind == "affine")
    return AffineAttrs{j.at("alpha").get<float>(), j.at("beta").get<float>(), j.at("multiply_input").get<bool>()};
  if (kind == "fake_quant") {
    FakeQuantAttrs a{j.at("bits").get<int>(), j.at("is_unsigned").get<bool>(), j.at("dynamic").get<bool>(),
                     j.at("power_of_two").get<bool>(), j.at("scale").get<float>()};
    check(a.bits >= 2 && a.bits <= 8, "fake_quant bits must be in [2, 8]");
    check(a.dynamic || (std::isfinite(a.scale) && a.scale > 0), "fake_quant scale must be positive and finite");
    return a;
  }
  throw Error("unknown attribute kind '" + kind + "'");
}

// The attribute struct each op must carry (index into NodeAttrs).
size_t expected_attrs(OpType op) {
  switch (op) {
    case OpType::kConv: return 1;
    case OpType::kMaxPool:
    case OpType::kAveragePool: return 2;
    case OpType::kGemm: return 3;
    case OpType::kBatchNormalization: return 4;
    case OpType::kClip: return 5;
    case OpType::kLeakyRelu: return 6;
    case OpType::kConcat:
    case OpType::kFlatten:
    case OpType::kSoftmax:
    case OpType::kGather: return 7;
    case OpType::kReduceMean: return 8;
    case OpType::kUnsqueeze:
    case OpType::kSqueeze: return 9;
    case OpType::kTranspose: return 10;
    case OpType::kReshape: return 11;
    case OpType::kCast: return 12;
    case OpType::kPad: return 13;
    case OpType::kShape: return 14;
    case OpType::kSlice: return 15;
    case OpType::kHardSigmoid: return 16;
    case OpType::kLayerNormalization: return 17;
    case OpType::kFakeQuantize: return 18;
    default: return 0;
  }
}

}  // namespace

namespace format {

std::vector<std::byte> to_bytes(const std::string& s) {
  std::vector<std::byte> b(s.size());
  std::memcpy(b.data(), s.data(), s.size());
  return b;
}

uint64_t append_aligned(std::vector<std::byte>& payload, const void* data, size_t bytes) {
  size_t offset = (payload.size() + kTernAlignment - 1) / kTernAlignment * kTernAlignment;
  payload.resize(offset + bytes);
  if (bytes) std::memcpy(payload.data() + offset, data, bytes);
  return offset;
}

std::span<const std::byte> payload_range(std::span<const std::byte> payload, const json& ref, const std::string& what) {
  uint64_t offset = ref.at("offset").get<uint64_t>(), bytes = ref.at("bytes").get<uint64_t>();
  check(offset % kTernAlignment == 0 && offset <= payload.size() && bytes <= payload.size() - offset,
        what + " lies outside the tensor section");
  return payload.subspan(offset, bytes);
}

json graph_to_json(const Graph& graph, std::vector<std::byte>& payload, const std::set<std::string>& external) {
  json values = json::array(), tensors = json::array(), nodes = json::array();
  for (const Value& v : graph.values) {
    json jv = {{"name", v.name}, {"dtype", static_cast<int>(v.dtype)}, {"shape", v.shape}, {"shape_known", v.shape_known}};
    if (v.constant && external.count(v.name)) {
      jv["external"] = true;
    } else if (v.constant) {
      const Tensor& t = *v.constant;
      uint64_t offset = append_aligned(payload, t.raw(), t.bytes());
      jv["tensor"] = tensors.size();
      tensors.push_back({{"dtype", static_cast<int>(t.dtype())}, {"shape", t.shape()}, {"offset", offset}, {"bytes", t.bytes()}});
    }
    values.push_back(jv);
  }
  for (const Node& n : graph.nodes)
    nodes.push_back({{"name", n.name}, {"op", to_string(n.op)}, {"inputs", n.inputs}, {"outputs", n.outputs},
                     {"attrs", attrs_to_json(n.attrs)}});
  return {{"source", graph.source}, {"opset", graph.opset},   {"metadata", graph.metadata},
          {"inputs", graph.inputs}, {"outputs", graph.outputs}, {"values", values},
          {"tensors", tensors},     {"nodes", nodes}};
}

json parse_json_section(std::span<const std::byte> text, const std::string& what) {
  try {
    return json::parse(reinterpret_cast<const char*>(text.data()), reinterpret_cast<const char*>(text.data()) + text.size());
  } catch (const json::exception& e) {
    throw Error("malformed " + what + " section (" + std::string(e.what()) + ")");
  }
}

Graph graph_from_json(const json& j, std::span<const std::byte> payload, const std::string& n, std::set<ValueId>& external) {
  Graph g;
  g.source = n;
  g.opset = j.at("opset").get<int64_t>();
  g.metadata = j.at("metadata").get<std::map<std::string, std::string>>();
  const json& tensors = j.at("tensors");
  std::vector<bool> tensor_used(tensors.size(), false);
  for (const json& jv : j.at("values")) {
    Value v;
    v.name = jv.at("name").get<std::string>();
    v.dtype = dtype_from(jv.at("dtype"));
    v.shape = jv.at("shape").get<Shape>();
    v.shape_known = jv.at("shape_known").get<bool>();
    check(v.shape.size() <= 16, "value '" + v.name + "' has rank > 16");
    for (int64_t d : v.shape)
      check(d >= kDynamicDim && d < (int64_t{1} << 31), "value '" + v.name + "' has an invalid dimension");
    if (jv.contains("external")) {
      check(jv.at("external").get<bool>() && !jv.contains("tensor"), "value '" + v.name + "' is both external and stored");
      check(v.shape_known, "external value '" + v.name + "' needs a known shape");
      for (int64_t d : v.shape) check(d >= 0, "external value '" + v.name + "' has a dynamic dimension");
      external.insert(static_cast<ValueId>(g.values.size()));
    }
    if (jv.contains("tensor")) {
      size_t ti = jv.at("tensor").get<size_t>();
      check(ti < tensors.size() && !tensor_used[ti], "value '" + v.name + "' refers to a bad tensor index");
      tensor_used[ti] = true;
      const json& jt = tensors[ti];
      DataType dt = dtype_from(jt.at("dtype"));
      Shape shape = jt.at("shape").get<Shape>();
      for (int64_t d : shape) check(d >= 0 && d < (int64_t{1} << 40), "tensor of value '" + v.name + "' has a bad shape");
      check(shape.size() <= 16, "tensor of value '" + v.name + "' has rank > 16");
      double expected = static_cast<double>(element_size(dt));
      for (int64_t d : shape) expected *= static_cast<double>(d);
      check(static_cast<double>(jt.at("bytes").get<uint64_t>()) == expected,
            "tensor of value '" + v.name + "' has the wrong byte count");
      std::span<const std::byte> bytes = payload_range(payload, jt, "tensor of value '" + v.name + "'");
      Tensor t(dt, shape);
      if (!bytes.empty()) std::memcpy(t.raw(), bytes.data(), bytes.size());
      v.constant = std::move(t);
    }
    g.values.push_back(std::move(v));
  }
  auto id_ok = [&](int64_t id, bool optional) {
    return (optional && id == kNoValue) || (id >= 0 && static_cast<size_t>(id) < g.values.size());
  };
  for (const json& jn : j.at("nodes")) {
    Node node;
    node.name = jn.at("name").get<std::string>();
    node.op = op_from_name(jn.at("op").get<std::string>());
    check(node.op != OpType::kConstant, "node '" + node.name + "': Constant nodes are stored as values");
    for (int64_t id : jn.at("inputs").get<std::vector<int64_t>>()) {
      check(id_ok(id, true), "node '" + node.name + "' has a bad input id");
      node.inputs.push_back(static_cast<ValueId>(id));
    }
    for (int64_t id : jn.at("outputs").get<std::vector<int64_t>>()) {
      check(id_ok(id, false), "node '" + node.name + "' has a bad output id");
      node.outputs.push_back(static_cast<ValueId>(id));
    }
    check(!node.outputs.empty(), "node '" + node.name + "' has no outputs");
    node.attrs = attrs_from_json(jn.at("attrs"));
    check(node.attrs.index() == expected_attrs(node.op), "node '" + node.name + "' has attributes of the wrong kind");
    g.nodes.push_back(std::move(node));
  }
  for (int64_t id : j.at("inputs").get<std::vector<int64_t>>()) {
    check(id_ok(id, false), "bad graph input id");
    g.inputs.push_back(static_cast<ValueId>(id));
  }
  for (int64_t id : j.at("outputs").get<std::vector<int64_t>>()) {
    check(id_ok(id, false), "bad graph output id");
    g.outputs.push_back(static_cast<ValueId>(id));
  }
  return g;
}

void finish_graph(Graph& g) {
  g.validate();
  infer_shapes(g);  // shapes are re-derived, not trusted: a graph that does not type-check is rejected
}

json parse_provenance(const std::string& provenance_json) {
  json provenance;
  try {
    provenance = json::parse(provenance_json);
  } catch (const json::exception&) {
    throw Error("provenance is not valid JSON");
  }
  check(provenance.is_object(), "provenance must be a JSON object");
  return provenance;
}

}  // namespace format

std::vector<std::pair<SectionType, std::vector<std::byte>>> graph_sections(const Graph& graph,
                                                                           const std::string& provenance_json) {
  std::vector<std::byte> payload;
  json g = format::graph_to_json(graph, payload, {});
  json provenance = format::parse_provenance(provenance_json);
  return {{SectionType::kGraph, format::to_bytes(g.dump())},
          {SectionType::kTensors, std::move(payload)},
          {SectionType::kProvenance, format::to_bytes(provenance.dump())}};
}

void save_graph(const std::string& path, const Graph& graph, const std::string& provenance_json) {
  write_tern_file(path, graph_sections(graph, provenance_json), [](const TernFile& file) { load_graph(file); });
}

Graph load_graph(const TernFile& file) {
  const std::string& n = file.name();
  Graph g;
  try {
    json j = format::parse_json_section(file.section(SectionType::kGraph), "graph");
    std::set<ValueId> external;
    g = format::graph_from_json(j, file.section(SectionType::kTensors), n, external);
    check(external.empty(), "the graph has quantized layers; load it as a quantized model");
  } catch (const json::exception& e) {
    throw Error(n + ": malformed graph section (" + std::string(e.what()) + ")");
  } catch (const Error& e) {
    std::string m = e.what();
    throw Error(m.rfind(n, 0) == 0 ? m : n + ": " + m);
  }
  format::finish_graph(g);
  return g;
}

Graph load_graph(const std::string& path) { return load_graph(TernFile::open(path)); }

bool is_tern_file(const std::string& path) {
  return file_starts_with(path, std::string_view(kTernMagic, 8));
}

}  // namespace tern
