// Structure-aware libFuzzer target for the ONNX importer: the same entry as fuzz_onnx_import.cpp
// (load_onnx_input.h: import, summary, normalization, one FP32 run of small graphs), with a custom
// mutator that edits the model as an onnx::ModelProto and serializes it again, so that nearly every
// input is a well-formed protobuf and the fuzzer's time goes into the importer, shape inference,
// the passes and the executor rather than into protobuf's framing checks. Debian has no
// libprotobuf-mutator; the edits are written here, one function per kind:
//   tensor dims (mostly with the data fitted to them) and values (boundary numbers: 0, -1, 2^31,
//   2^62, NaN, inf...), raw_data cut or extended, data types changed, attribute values and
//   attribute sets, operator types, node inputs rewired to other values (mostly ones defined
//   before the node, so the graph stays well formed) and outputs renamed, a node inserted on a
//   value, nodes repeated, dropped or moved, value_info shapes, graph inputs and outputs, the
//   opset, metadata.
// When the input does not parse as a model (and rarely otherwise) libFuzzer's byte mutations run.
// Crash inputs are plain .onnx files: the regression test loads them as they are.
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "load_onnx_input.h"
#include "tern/onnx_import.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using Rng = std::minstd_rand;

size_t pick(Rng& rng, size_t n) { return n ? static_cast<size_t>(rng() % n) : 0; }

template <typename T, size_t N>
T pick_from(Rng& rng, const T (&values)[N]) {
  return values[pick(rng, N)];
}

int64_t interesting_int(Rng& rng) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
  static const int64_t values[] = {0,  1,  -1, 2,  3,   -2,  4,   5,   7,   8,   16,  17,  255,  256,
                                   -3, 64, 65, 1 << 16, (int64_t{1} << 31) - 1, int64_t{1} << 31, -(int64_t{1} << 31),
                                   int64_t{1} << 32, int64_t{1} << 40, int64_t{1} << 62, -(int64_t{1} << 62),
                                   kMax, kMax - 1, kMin, kMin + 1};
  return pick_from(rng, values);
}

float interesting_float(Rng& rng) {
  static const float values[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 2.0f, 6.0f, 1e-45f, 1e-38f, 1e30f, -1e30f,
                                 std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
                                 std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                                 -std::numeric_limits<float>::infinity(), 2147483648.0f, 9.3e18f};
  return pick_from(rng, values);
}

// A number near `v`, or a boundary value.
int64_t nudged_int(int64_t v, Rng& rng) {
  if (rng() % 2) return interesting_int(rng);
  static const int64_t deltas[] = {1, -1, 2, -2};
  int64_t d = pick_from(rng, deltas);
  if ((d > 0 && v > std::numeric_limits<int64_t>::max() - d) || (d < 0 && v < std::numeric_limits<int64_t>::min() - d))
    return v;
  return v + d;
}

// Moves the last element of a repeated field to position `to`.
template <typename Field>
void move_last_to(Field& field, int to) {
  for (int i = field.size() - 1; i > to; --i) field.SwapElements(i, i - 1);
}

// ---- what the model holds --------------------------------------------------------------------------

// Every tensor: initializers, and the tensor attributes of nodes (Constant's value).
std::vector<onnx::TensorProto*> tensors(onnx::GraphProto& g) {
  std::vector<onnx::TensorProto*> out;
  for (auto& t : *g.mutable_initializer()) out.push_back(&t);
  for (auto& n : *g.mutable_node())
    for (auto& a : *n.mutable_attribute())
      if (a.has_t()) out.push_back(a.mutable_t());
  return out;
}

std::vector<onnx::AttributeProto*> attributes(onnx::GraphProto& g) {
  std::vector<onnx::AttributeProto*> out;
  for (auto& n : *g.mutable_node())
    for (auto& a : *n.mutable_attribute()) out.push_back(&a);
  return out;
}

std::vector<onnx::ValueInfoProto*> value_infos(onnx::GraphProto& g) {
  std::vector<onnx::ValueInfoProto*> out;
  for (auto* field : {g.mutable_input(), g.mutable_output(), g.mutable_value_info()})
    for (auto& v : *field) out.push_back(&v);
  return out;
}

// Every value name the graph mentions (inputs, initializers, node inputs and outputs).
std::vector<std::string> value_names(const onnx::GraphProto& g) {
  std::vector<std::string> out;
  for (const auto& v : g.input()) out.push_back(v.name());
  for (const auto& t : g.initializer()) out.push_back(t.name());
  for (const auto& n : g.node()) {
    for (const auto& i : n.input()) out.push_back(i);
    for (const auto& o : n.output()) out.push_back(o);
  }
  return out;
}

// A name from the graph, mostly; sometimes one it does not define, or the empty (omitted) name.
std::string some_value_name(const onnx::GraphProto& g, Rng& rng) {
  unsigned what = rng() % 16;
  if (what == 0) return "";
  if (what == 1) return "undefined_value";
  std::vector<std::string> names = value_names(g);
  return names.empty() ? "x" : names[pick(rng, names.size())];
}

// ---- one function per kind of edit; each returns false when the model has nothing to edit ---------

// Elements of a tensor's dims, or -1 when negative or above `limit`.
int64_t element_count(const onnx::TensorProto& t, int64_t limit) {
  int64_t n = 1;
  for (int64_t d : t.dims()) {
    if (d < 0 || (d > 0 && n > limit / d)) return -1;
    n *= d;
  }
  return n;
}

// The stored values resized to what the dims need (repeating the last value, or 1), so that a
// reshaped weight gets past the importer's data check into shape inference.
void fit_data_to_dims(onnx::TensorProto& t) {
  int64_t n = element_count(t, 1 << 14);
  if (n < 0) return;
  auto fit = [n](auto& field, auto fill) {
    if (field.size() > 0) fill = field.Get(field.size() - 1);
    while (field.size() > n) field.RemoveLast();
    while (field.size() < n) field.Add(fill);
  };
  if (t.has_raw_data()) {
    size_t width = t.data_type() == onnx::TensorProto::INT64 || t.data_type() == onnx::TensorProto::DOUBLE ? 8
                   : t.data_type() == onnx::TensorProto::FLOAT || t.data_type() == onnx::TensorProto::INT32 ? 4 : 1;
    t.mutable_raw_data()->resize(static_cast<size_t>(n) * width, '\1');
  } else if (t.data_type() == onnx::TensorProto::FLOAT) {
    fit(*t.mutable_float_data(), 1.0f);
  } else if (t.data_type() == onnx::TensorProto::INT64) {
    fit(*t.mutable_int64_data(), int64_t{1});
  } else {
    fit(*t.mutable_int32_data(), int32_t{1});
  }
}

// A dimension of a tensor set to a boundary value or nudged, or a dimension added or dropped;
// mostly with the data then fitted to the new shape.
bool mutate_tensor_dims(onnx::ModelProto& m, Rng& rng) {
  auto ts = tensors(*m.mutable_graph());
  if (ts.empty()) return false;
  onnx::TensorProto& t = *ts[pick(rng, ts.size())];
  auto& dims = *t.mutable_dims();
  unsigned what = rng() % 8;
  if (what == 0 || dims.empty()) dims.Add(rng() % 2 ? interesting_int(rng) : 1 + static_cast<int64_t>(rng() % 4));
  else if (what == 1) dims.RemoveLast();
  else {
    int i = static_cast<int>(pick(rng, dims.size()));
    dims.Set(i, nudged_int(dims.Get(i), rng));
  }
  if (rng() % 4) fit_data_to_dims(t);
  return true;
}

// One stored value of a tensor set to a boundary value (Reshape targets, Slice starts and ends,
// axes, pads, Clip bounds, weights: NaN, inf).
bool mutate_tensor_values(onnx::ModelProto& m, Rng& rng) {
  auto ts = tensors(*m.mutable_graph());
  if (ts.empty()) return false;
  onnx::TensorProto& t = *ts[pick(rng, ts.size())];
  if (t.int64_data_size()) {
    int i = static_cast<int>(pick(rng, t.int64_data_size()));
    t.set_int64_data(i, nudged_int(t.int64_data(i), rng));
  } else if (t.float_data_size()) {
    int i = static_cast<int>(pick(rng, t.float_data_size()));
    t.set_float_data(i, interesting_float(rng));
  } else if (t.int32_data_size()) {
    int i = static_cast<int>(pick(rng, t.int32_data_size()));
    t.set_int32_data(i, static_cast<int32_t>(interesting_int(rng)));
  } else if (t.raw_data().size() >= 4) {
    std::string& raw = *t.mutable_raw_data();
    bool wide = t.data_type() == onnx::TensorProto::INT64 && raw.size() >= 8;
    size_t width = wide ? 8 : 4;
    size_t at = pick(rng, raw.size() / width) * width;
    if (wide) {
      int64_t v = interesting_int(rng);
      std::memcpy(raw.data() + at, &v, 8);
    } else if (t.data_type() == onnx::TensorProto::FLOAT) {
      float v = interesting_float(rng);
      std::memcpy(raw.data() + at, &v, 4);
    } else {
      int32_t v = static_cast<int32_t>(interesting_int(rng));
      std::memcpy(raw.data() + at, &v, 4);
    }
  } else {
    return false;
  }
  return true;
}

// raw_data cut short or extended, typed values moved into raw_data, a value dropped or added, or
// the data cleared.
bool mutate_tensor_data(onnx::ModelProto& m, Rng& rng) {
  auto ts = tensors(*m.mutable_graph());
  if (ts.empty()) return false;
  onnx::TensorProto& t = *ts[pick(rng, ts.size())];
  switch (rng() % 6) {
    case 0:
      if (!t.has_raw_data()) return false;
      t.mutable_raw_data()->resize(pick(rng, t.raw_data().size() + 1));
      break;
    case 1:
      if (!t.has_raw_data()) return false;
      t.mutable_raw_data()->append(1 + pick(rng, 16), static_cast<char>(rng()));
      break;
    case 2: {  // typed -> raw (little-endian, as ONNX stores it)
      std::string raw;
      for (float v : t.float_data()) raw.append(reinterpret_cast<const char*>(&v), 4);
      for (int64_t v : t.int64_data()) raw.append(reinterpret_cast<const char*>(&v), 8);
      for (int32_t v : t.int32_data()) raw.append(reinterpret_cast<const char*>(&v), 4);
      t.clear_float_data();
      t.clear_int64_data();
      t.clear_int32_data();
      t.set_raw_data(raw);
      break;
    }
    case 3:  // one value more or fewer than the shape needs
      if (t.float_data_size() && rng() % 2) t.mutable_float_data()->RemoveLast();
      else if (t.int64_data_size() && rng() % 2) t.mutable_int64_data()->RemoveLast();
      else if (t.float_data_size()) t.add_float_data(1.0f);
      else if (t.int64_data_size()) t.add_int64_data(1);
      else t.add_int32_data(1);
      break;
    case 4:  // both raw and typed data, or double data
      if (rng() % 2) t.add_double_data(1.0);
      else t.mutable_raw_data()->append(4, '\0');
      break;
    default:
      t.clear_raw_data();
      t.clear_float_data();
      t.clear_int64_data();
      t.clear_int32_data();
      break;
  }
  return true;
}

int some_data_type(Rng& rng) {
  static const int types[] = {onnx::TensorProto::UNDEFINED, onnx::TensorProto::FLOAT,  onnx::TensorProto::UINT8,
                              onnx::TensorProto::INT8,      onnx::TensorProto::INT32,  onnx::TensorProto::INT64,
                              onnx::TensorProto::BOOL,      onnx::TensorProto::DOUBLE, onnx::TensorProto::FLOAT16,
                              onnx::TensorProto::STRING,    onnx::TensorProto::UINT64, 99, -1};
  return pick_from(rng, types);
}

// The element type of a tensor, of a graph input/output, or Cast's target.
bool mutate_data_type(onnx::ModelProto& m, Rng& rng) {
  onnx::GraphProto& g = *m.mutable_graph();
  switch (rng() % 3) {
    case 0: {
      auto ts = tensors(g);
      if (ts.empty()) return false;
      ts[pick(rng, ts.size())]->set_data_type(some_data_type(rng));
      return true;
    }
    case 1: {
      auto vs = value_infos(g);
      if (vs.empty()) return false;
      vs[pick(rng, vs.size())]->mutable_type()->mutable_tensor_type()->set_elem_type(some_data_type(rng));
      return true;
    }
    default:
      for (auto* a : attributes(g))
        if (a->name() == "to") {
          a->set_i(some_data_type(rng));
          return true;
        }
      return false;
  }
}

// An attribute's value: a boundary number, a list element changed, added or dropped, or another string.
bool mutate_attribute_value(onnx::ModelProto& m, Rng& rng) {
  auto as = attributes(*m.mutable_graph());
  if (as.empty()) return false;
  onnx::AttributeProto& a = *as[pick(rng, as.size())];
  switch (a.type()) {
    case onnx::AttributeProto::INT: a.set_i(nudged_int(a.i(), rng)); break;
    case onnx::AttributeProto::FLOAT: a.set_f(interesting_float(rng)); break;
    case onnx::AttributeProto::INTS: {
      auto& v = *a.mutable_ints();
      unsigned what = rng() % 6;
      if (what == 0 || v.empty()) v.Add(interesting_int(rng));
      else if (what == 1) v.RemoveLast();
      else if (what == 2) {
        int64_t x = interesting_int(rng);
        for (int i = 0; i < v.size(); ++i) v.Set(i, x);
      } else {
        int i = static_cast<int>(pick(rng, v.size()));
        v.Set(i, nudged_int(v.Get(i), rng));
      }
      break;
    }
    case onnx::AttributeProto::FLOATS: {
      auto& v = *a.mutable_floats();
      if (v.empty() || rng() % 4 == 0) v.Add(interesting_float(rng));
      else v.Set(static_cast<int>(pick(rng, v.size())), interesting_float(rng));
      break;
    }
    case onnx::AttributeProto::STRING: {
      static const char* strings[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "constant", "reflect", "edge", "", "x"};
      a.set_s(pick_from(rng, strings));
      break;
    }
    default: return false;  // tensors: mutate_tensor_*
  }
  return true;
}

// A known attribute with a value of its usual type (or not), for the node to have.
void set_known_attribute(onnx::AttributeProto& a, Rng& rng) {
  static const char* ints_names[] = {"kernel_shape", "strides", "pads", "dilations", "perm", "axes", "shape", "starts", "ends"};
  static const char* int_names[] = {"axis", "group", "transA", "transB", "keepdims", "ceil_mode", "count_include_pad", "allowzero",
                                    "to", "start", "end", "storage_order", "training_mode", "spatial", "stash_type",
                                    "noop_with_empty_axes", "is_test", "broadcast", "value_int"};
  static const char* float_names[] = {"alpha", "beta", "epsilon", "min", "max", "value_float", "momentum"};
  a.Clear();
  switch (rng() % 4) {
    case 0: {
      a.set_name(pick_from(rng, ints_names));
      a.set_type(onnx::AttributeProto::INTS);
      for (int i = 0, n = static_cast<int>(rng() % 5); i < n; ++i) a.add_ints(rng() % 2 ? interesting_int(rng) : 1);
      break;
    }
    case 1:
      a.set_name(pick_from(rng, int_names));
      a.set_type(onnx::AttributeProto::INT);
      a.set_i(interesting_int(rng));
      break;
    case 2:
      a.set_name(pick_from(rng, float_names));
      a.set_type(onnx::AttributeProto::FLOAT);
      a.set_f(interesting_float(rng));
      break;
    default:
      a.set_name("auto_pad");
      a.set_type(rng() % 8 ? onnx::AttributeProto::STRING : onnx::AttributeProto::INT);  // sometimes the wrong type
      a.set_s(rng() % 2 ? "SAME_UPPER" : "VALID");
      break;
  }
}

// A node's attribute set: one dropped, copied from another node, retyped, or a known one added.
bool mutate_attribute_set(onnx::ModelProto& m, Rng& rng) {
  onnx::GraphProto& g = *m.mutable_graph();
  if (g.node_size() == 0) return false;
  onnx::NodeProto& n = *g.mutable_node(static_cast<int>(pick(rng, g.node_size())));
  switch (rng() % 4) {
    case 0:
      if (n.attribute_size() == 0) return false;
      n.mutable_attribute()->DeleteSubrange(static_cast<int>(pick(rng, n.attribute_size())), 1);
      return true;
    case 1: {
      auto as = attributes(g);
      if (as.empty()) return false;
      onnx::AttributeProto copy = *as[pick(rng, as.size())];
      *n.add_attribute() = std::move(copy);  // possibly a second attribute of the same name
      return true;
    }
    case 2: {
      if (n.attribute_size() == 0) return false;
      static const onnx::AttributeProto::AttributeType types[] = {
          onnx::AttributeProto::UNDEFINED, onnx::AttributeProto::INT, onnx::AttributeProto::FLOAT,
          onnx::AttributeProto::INTS, onnx::AttributeProto::STRING, onnx::AttributeProto::TENSOR};
      n.mutable_attribute(static_cast<int>(pick(rng, n.attribute_size())))->set_type(pick_from(rng, types));
      return true;
    }
    default: set_known_attribute(*n.add_attribute(), rng); return true;
  }
}

// A node's operator: another supported one, one from elsewhere in the graph, or an unsupported one.
bool mutate_op_type(onnx::ModelProto& m, Rng& rng) {
  onnx::GraphProto& g = *m.mutable_graph();
  if (g.node_size() == 0) return false;
  onnx::NodeProto& n = *g.mutable_node(static_cast<int>(pick(rng, g.node_size())));
  unsigned what = rng() % 16;
  if (what < 10) {
    const auto& ops = tern::supported_onnx_operators();
    n.set_op_type(ops[pick(rng, ops.size())]);
  } else if (what < 14) {
    n.set_op_type(g.node(static_cast<int>(pick(rng, g.node_size()))).op_type());
  } else if (what == 14) {
    static const char* others[] = {"Resize", "Split", "Upsample", "Loop", "", "conv"};
    n.set_op_type(pick_from(rng, others));
  } else {
    static const char* domains[] = {"ai.onnx", "com.microsoft", "ai.onnx.ml", ""};
    n.set_domain(pick_from(rng, domains));
  }
  return true;
}

// Names defined before node `index`: graph inputs, initializers, earlier nodes' outputs.
std::vector<std::string> names_before(const onnx::GraphProto& g, int index) {
  std::vector<std::string> out;
  for (const auto& v : g.input()) out.push_back(v.name());
  for (const auto& t : g.initializer()) out.push_back(t.name());
  for (int i = 0; i < index && i < g.node_size(); ++i)
    for (const auto& o : g.node(i).output()) out.push_back(o);
  return out;
}

// A node's input rewired to another value defined before it (mostly: a well-formed graph with
// other shapes), or to any name of the graph (a cycle, a use before definition, an omitted
// optional input, an undefined name); rarely an output renamed (a value defined twice), or an
// input or output added or dropped.
bool mutate_node_io(onnx::ModelProto& m, Rng& rng) {
  onnx::GraphProto& g = *m.mutable_graph();
  if (g.node_size() == 0) return false;
  int index = static_cast<int>(pick(rng, g.node_size()));
  onnx::NodeProto& n = *g.mutable_node(index);
  std::vector<std::string> before = names_before(g, index);
  std::string name = rng() % 4 && !before.empty() ? before[pick(rng, before.size())] : some_value_name(g, rng);
  bool output = rng() % 8 == 0;
  auto& names = output ? *n.mutable_output() : *n.mutable_input();
  switch (rng() % 6) {
    case 0: *names.Add() = name; break;
    case 1:
      if (names.empty()) return false;
      names.RemoveLast();
      break;
    default:
      if (names.empty()) return false;
      *names.Mutable(static_cast<int>(pick(rng, names.size()))) = name;
      break;
  }
  return true;
}

// A new node on a value: its consumers then read the new node's output (Relu after a Conv, a
// Transpose before a Gemm, an Add of the value to itself...), so that operators meet inputs of
// shapes the seeds never gave them.
bool mutate_insert_node(onnx::ModelProto& m, Rng& rng) {
  onnx::GraphProto& g = *m.mutable_graph();
  if (g.node_size() == 0) return false;
  int index = static_cast<int>(pick(rng, g.node_size()));
  if (g.node(index).output_size() == 0) return false;
  const std::string value = g.node(index).output(0);
  const std::string out = value + "_i" + std::to_string(rng() % 1000);
  const auto& ops = tern::supported_onnx_operators();
  onnx::NodeProto n;
  n.set_op_type(rng() % 2 ? ops[pick(rng, ops.size())] : g.node(static_cast<int>(pick(rng, g.node_size()))).op_type());
  n.set_name("inserted_" + out);
  n.add_input(value);
  if (rng() % 2) n.add_input(rng() % 2 ? value : some_value_name(g, rng));  // binary ops; Reshape/Gather/... targets
  n.add_output(out);
  if (rng() % 2) set_known_attribute(*n.add_attribute(), rng);
  for (auto& consumer : *g.mutable_node())
    for (auto& input : *consumer.mutable_input())
      if (input == value) input = out;
  for (auto& o : *g.mutable_output())
    if (o.name() == value) o.set_name(out);
  *g.add_node() = std::move(n);
  move_last_to(*g.mutable_node(), index + 1);
  return true;
}

// The node list: a node repeated (same outputs: defined twice; or at another place), dropped,
// or two nodes swapped (a use before the definition, which the importer must sort or reject).
bool mutate_node_list(onnx::ModelProto& m, Rng& rng) {
  auto& nodes = *m.mutable_graph()->mutable_node();
  if (nodes.empty()) return false;
  int i = static_cast<int>(pick(rng, nodes.size()));
  switch (rng() % 3) {
    case 0: {
      onnx::NodeProto copy = nodes.Get(i);
      if (rng() % 2 && copy.output_size()) *copy.mutable_output(0) += "_copy";  // a valid second branch
      *nodes.Add() = std::move(copy);
      move_last_to(nodes, static_cast<int>(pick(rng, nodes.size())));
      break;
    }
    case 1: nodes.DeleteSubrange(i, 1); break;
    default: nodes.SwapElements(i, static_cast<int>(pick(rng, nodes.size()))); break;
  }
  return true;
}

// A value_info (graph input, output, annotation): its shape dropped, a dimension set to a boundary
// value, made symbolic, dropped or added; or the type cleared.
bool mutate_value_info(onnx::ModelProto& m, Rng& rng) {
  auto vs = value_infos(*m.mutable_graph());
  if (vs.empty()) return false;
  onnx::ValueInfoProto& v = *vs[pick(rng, vs.size())];
  auto& tt = *v.mutable_type()->mutable_tensor_type();
  unsigned what = rng() % 16;
  if (what == 0) {
    tt.clear_shape();
  } else if (what == 1) {
    v.clear_type();
  } else if (what == 2 || tt.shape().dim_size() == 0) {
    tt.mutable_shape()->add_dim()->set_dim_value(rng() % 2 ? 1 : interesting_int(rng));
  } else if (what == 3) {
    tt.mutable_shape()->mutable_dim()->RemoveLast();
  } else {
    auto& d = *tt.mutable_shape()->mutable_dim(static_cast<int>(pick(rng, tt.shape().dim_size())));
    if (rng() % 4 == 0) d.set_dim_param(rng() % 2 ? "batch" : "N");
    else d.set_dim_value(nudged_int(d.has_dim_value() ? d.dim_value() : 1, rng));
  }
  return true;
}

// The graph's inputs and outputs: one dropped or repeated, an intermediate value made an output,
// an initializer also listed as an input (as IR version < 4 models do).
bool mutate_graph_io(onnx::ModelProto& m, Rng& rng) {
  onnx::GraphProto& g = *m.mutable_graph();
  switch (rng() % 5) {
    case 0:
      if (g.output_size() == 0) return false;
      g.mutable_output()->DeleteSubrange(static_cast<int>(pick(rng, g.output_size())), 1);
      return true;
    case 1:
      if (g.input_size() == 0) return false;
      g.mutable_input()->DeleteSubrange(static_cast<int>(pick(rng, g.input_size())), 1);
      return true;
    case 2: {
      if (g.input_size() == 0) return false;
      onnx::ValueInfoProto copy = g.input(static_cast<int>(pick(rng, g.input_size())));
      if (rng() % 2) copy.set_name(copy.name() + "_2");  // a second input
      *g.add_input() = std::move(copy);
      return true;
    }
    case 3: {
      onnx::ValueInfoProto* out = g.add_output();
      out->set_name(some_value_name(g, rng));
      out->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
      return true;
    }
    default: {
      if (g.initializer_size() == 0) return false;
      const onnx::TensorProto& t = g.initializer(static_cast<int>(pick(rng, g.initializer_size())));
      onnx::ValueInfoProto* in = g.add_input();
      in->set_name(t.name());
      auto* tt = in->mutable_type()->mutable_tensor_type();
      tt->set_elem_type(t.data_type());
      for (int64_t d : t.dims()) tt->mutable_shape()->add_dim()->set_dim_value(d);
      return true;
    }
  }
}

// The operator set version (the importer reads attributes by opset), its domain, or the IR version.
bool mutate_opset(onnx::ModelProto& m, Rng& rng) {
  static const int64_t versions[] = {1, 5, 6, 7, 9, 10, 11, 12, 13, 14, 17, 18, 19, 0, -1, int64_t{1} << 40};
  switch (rng() % 4) {
    case 0: m.set_ir_version(rng() % 2 ? interesting_int(rng) : 3 + static_cast<int64_t>(rng() % 7)); return true;
    case 1: {
      auto* op = m.add_opset_import();
      op->set_domain(rng() % 2 ? "" : "ai.onnx");
      op->set_version(pick_from(rng, versions));
      return true;
    }
    default:
      if (m.opset_import_size() == 0) return false;
      m.mutable_opset_import(static_cast<int>(pick(rng, m.opset_import_size())))->set_version(pick_from(rng, versions));
      return true;
  }
}

// tern's normalization metadata (tern.scale, tern.mean, tern.std): boundary or malformed values.
bool mutate_metadata(onnx::ModelProto& m, Rng& rng) {
  static const char* keys[] = {"tern.scale", "tern.mean", "tern.std"};
  static const char* values[] = {"0", "-1", "nan", "inf", "1e400", "0.5,0.5,0.5", ",", "", "1,", "0.1,x", "1e-45", "3"};
  auto* p = m.add_metadata_props();
  p->set_key(pick_from(rng, keys));
  p->set_value(pick_from(rng, values));
  return true;
}

using Mutation = bool (*)(onnx::ModelProto&, Rng&);
struct Weighted {
  unsigned weight;
  Mutation mutate;
};
const Weighted kMutations[] = {
    {20, mutate_attribute_value}, {12, mutate_tensor_values}, {10, mutate_tensor_dims}, {6, mutate_tensor_data},
    {5, mutate_data_type},        {6, mutate_attribute_set},  {6, mutate_op_type},      {12, mutate_node_io},
    {8, mutate_insert_node},      {8, mutate_node_list},      {8, mutate_value_info},   {5, mutate_graph_io},
    {3, mutate_opset},            {2, mutate_metadata},
};

void mutate_model(onnx::ModelProto& m, Rng& rng) {
  unsigned total = 0;
  for (const Weighted& w : kMutations) total += w.weight;
  for (int tries = 0; tries < 8; ++tries) {  // until an edit applies
    unsigned r = static_cast<unsigned>(rng() % total);
    for (const Weighted& w : kMutations) {
      if (r < w.weight) {
        if (w.mutate(m, rng)) return;
        break;
      }
      r -= w.weight;
    }
  }
}

size_t emit(const onnx::ModelProto& m, uint8_t* data, size_t max_size) {
  std::string bytes;
  if (!m.SerializeToString(&bytes) || bytes.empty() || bytes.size() > max_size) return 0;
  std::memcpy(data, bytes.data(), bytes.size());
  return bytes.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::fuzz::load_onnx_input(data, size);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed ? seed : 1);
  onnx::ModelProto m;
  if (rng() % 32 == 0 || !m.ParseFromArray(data, static_cast<int>(size)) || !m.has_graph())
    return LLVMFuzzerMutate(data, size, max_size);
  for (int k = rng() % 4 == 0 ? 2 + static_cast<int>(rng() % 3) : 1; k > 0; --k) mutate_model(m, rng);
  size_t n = emit(m, data, max_size);
  return n ? n : LLVMFuzzerMutate(data, size, max_size);
}

// Crossover: a node of one model (with the initializers it reads that the other lacks) put into
// the other, at a random place.
extern "C" size_t LLVMFuzzerCustomCrossOver(const uint8_t* data1, size_t size1, const uint8_t* data2, size_t size2,
                                            uint8_t* out, size_t max_out_size, unsigned int seed) {
  Rng rng(seed ? seed : 1);
  onnx::ModelProto a, b;
  if (!a.ParseFromArray(data1, static_cast<int>(size1)) || !b.ParseFromArray(data2, static_cast<int>(size2)) ||
      b.graph().node_size() == 0)
    return 0;
  onnx::GraphProto& g = *a.mutable_graph();
  const onnx::NodeProto& n = b.graph().node(static_cast<int>(pick(rng, b.graph().node_size())));
  std::vector<std::string> have = value_names(g);
  for (const std::string& input : n.input()) {
    if (std::find(have.begin(), have.end(), input) != have.end()) continue;
    for (const auto& t : b.graph().initializer())
      if (t.name() == input) *g.add_initializer() = t;
  }
  *g.add_node() = n;
  move_last_to(*g.mutable_node(), static_cast<int>(pick(rng, g.node_size())));
  return emit(a, out, max_out_size);
}
