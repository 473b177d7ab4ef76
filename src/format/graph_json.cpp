// Graph IR <-> JSON + tensor payloads. Loading trusts nothing: every field is type-checked and
// every index and size bounds-checked; nlohmann's exceptions become tern::Error naming the file.
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/file_io.h"
#include "format/graph_json.h"
#include "graph/shape_inference.h"
#include "ops/op.h"
#include "tern/error.h"
#include "tern/model_io.h"

namespace tern {

namespace {

using json = format::Json;

OpType op_from_name(const std::string& name) {
  for (int i = 0; to_string(static_cast<OpType>(i)) != "?"; ++i)
    if (to_string(static_cast<OpType>(i)) == name) return static_cast<OpType>(i);
  throw Error("unknown operator '" + name + "'");
}

// A node's attributes as JSON: its record's codec, with "kind" naming the struct.
json attrs_to_json(const Node& node) {
  const ops::AttrsCodec& codec = ops::record(node.op).attrs;
  if (!codec.kind) return json::object();
  json j = codec.to_json(node.attrs);
  j["kind"] = codec.kind;
  return j;
}

// The attributes the node's record expects, of the kind it names.
NodeAttrs attrs_from_json(OpType op, const json& j) {
  const ops::AttrsCodec& codec = ops::record(op).attrs;
  std::string kind = j.is_object() && j.contains("kind") ? j.at("kind").get<std::string>() : std::string();
  check(kind == (codec.kind ? codec.kind : ""), "attributes of the wrong kind");
  if (!codec.kind) return {};
  return codec.from_json(j);
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
    if (v.has_known_content && !v.constant) jv["known_content"] = v.known_content;  // what import knew of a computed shape
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
                     {"attrs", attrs_to_json(n)}});
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
    if (jv.contains("known_content")) {
      v.known_content = jv.at("known_content").get<std::vector<int64_t>>();
      check(v.known_content.size() <= 64, "value '" + v.name + "' has a known content of more than 64 elements");
      v.has_known_content = true;
    }
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
    try {
      node.attrs = attrs_from_json(node.op, jn.at("attrs"));
    } catch (const Error& e) {
      throw Error("node '" + node.name + "': " + e.what());
    }
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
