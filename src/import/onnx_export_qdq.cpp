// tern export (tern/onnx_export.h): tern's graph IR written as an ONNX ModelProto, each node by
// its operator's record (src/ops/), quantized layers' weights and biases as integers behind
// DequantizeLinear.
#include <onnx/checker.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <set>

#include "exec/integer_layers.h"
#include "ops/op.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_export.h"
#include "tern/onnx_import.h"

namespace tern {

namespace {

static_assert(std::endian::native == std::endian::little, "ONNX raw_data is little-endian; tern copies it as is");

std::string unique_name(std::set<std::string>& used, const std::string& base) {
  std::string name = base.empty() ? std::string("value") : base;
  for (int i = 1; used.count(name); ++i) name = base + "_" + std::to_string(i);
  used.insert(name);
  return name;
}

void fill_tensor(onnx::TensorProto& t, const std::string& name, const Tensor& v) {
  t.set_name(name);
  t.set_data_type(static_cast<int32_t>(v.dtype()));  // tern's numbering is ONNX's
  for (int64_t d : v.shape()) t.add_dims(d);
  t.set_raw_data(std::string(reinterpret_cast<const char*>(v.raw()), v.bytes()));
}

void fill_value_info(onnx::ValueInfoProto& info, const Value& v) {
  info.set_name(v.name);
  auto* type = info.mutable_type()->mutable_tensor_type();
  type->set_elem_type(static_cast<int32_t>(v.dtype == DataType::kUndefined ? DataType::kFloat32 : v.dtype));
  if (!v.shape_known) return;
  auto* shape = type->mutable_shape();
  for (size_t d = 0; d < v.shape.size(); ++d) {
    auto* dim = shape->add_dim();
    if (v.shape[d] >= 0) dim->set_dim_value(v.shape[d]);
    else dim->set_dim_param(d == 0 ? std::string("N") : "d" + std::to_string(d));
  }
}

class ProtoWriter final : public ops::OnnxWriter {
 public:
  ProtoWriter(const Node& node, const Graph& graph, std::string who, onnx::GraphProto& out, std::set<std::string>& used,
              std::vector<std::string>& notes)
      : OnnxWriter(node, graph, std::move(who)), out_(out), used_(used), notes_(notes) {}

  size_t emit(const std::string& op_type, std::vector<std::string> ins, std::vector<std::string> outs) override {
    onnx::NodeProto* n = out_.add_node();
    n->set_op_type(op_type);
    n->set_name(unique_name(used_, emitted_++ == 0 ? node.name : node.name + "/" + op_type));
    while (!ins.empty() && ins.back().empty()) ins.pop_back();
    for (const std::string& i : ins) n->add_input(i);
    for (const std::string& o : outs) n->add_output(o);
    return static_cast<size_t>(out_.node_size() - 1);
  }
  void attr(size_t n, const std::string& name, int64_t value) override {
    auto* a = add(n, name, onnx::AttributeProto::INT);
    a->set_i(value);
  }
  void attr(size_t n, const std::string& name, float value) override {
    auto* a = add(n, name, onnx::AttributeProto::FLOAT);
    a->set_f(value);
  }
  void attr(size_t n, const std::string& name, const std::string& value) override {
    auto* a = add(n, name, onnx::AttributeProto::STRING);
    a->set_s(value);
  }
  void attr(size_t n, const std::string& name, const std::vector<int64_t>& value) override {
    auto* a = add(n, name, onnx::AttributeProto::INTS);
    for (int64_t v : value) a->add_ints(v);
  }
  std::string constant(const std::string& hint, const Tensor& value) override {
    std::string name = unique_name(used_, hint);
    fill_tensor(*out_.add_initializer(), name, value);
    return name;
  }
  std::string temp(const std::string& hint) override { return unique_name(used_, hint); }
  void note(const std::string& what) override { notes_.push_back(who + ": " + what); }

 private:
  onnx::AttributeProto* add(size_t n, const std::string& name, onnx::AttributeProto::AttributeType type) {
    onnx::AttributeProto* a = out_.mutable_node(static_cast<int>(n))->add_attribute();
    a->set_name(name);
    a->set_type(type);
    return a;
  }
  onnx::GraphProto& out_;
  std::set<std::string>& used_;
  std::vector<std::string>& notes_;
  int emitted_ = 0;
};

// A constant written as integers behind a DequantizeLinear: value = (q - zero) * scale along axis.
struct Dequantized {
  Tensor q;          // int8 weights or int32 biases, the constant's shape
  Tensor scale;      // [channels]
  Tensor zero;       // [channels], q's type
  int64_t axis = 0;
};

// Records exporters emit nodes in any order (a fused clamp before its Conv): sorts them so that
// every input is produced before it is read, as ONNX requires.
void sort_topologically(onnx::GraphProto& g) {
  std::map<std::string, int> producer;
  for (int i = 0; i < g.node_size(); ++i)
    for (const std::string& o : g.node(i).output()) producer[o] = i;
  std::vector<int> order, state(static_cast<size_t>(g.node_size()), 0);
  // Depth-first from each node in its original order (iterative: graphs may be deep).
  for (int start = 0; start < g.node_size(); ++start) {
    if (state[static_cast<size_t>(start)]) continue;
    std::vector<std::pair<int, int>> stack = {{start, 0}};
    state[static_cast<size_t>(start)] = 1;
    while (!stack.empty()) {
      auto& [n, next] = stack.back();
      const auto& inputs = g.node(n).input();
      if (next < inputs.size()) {
        auto it = producer.find(inputs[next++]);
        if (it == producer.end() || it->second == n) continue;
        int p = it->second;
        if (state[static_cast<size_t>(p)] == 1) throw Error("export: the written graph has a cycle through node '" + g.node(p).name() + "'");
        if (state[static_cast<size_t>(p)] == 0) {
          state[static_cast<size_t>(p)] = 1;
          stack.push_back({p, 0});
        }
        continue;
      }
      state[static_cast<size_t>(n)] = 2;
      order.push_back(n);
      stack.pop_back();
    }
  }
  google::protobuf::RepeatedPtrField<onnx::NodeProto> sorted;
  for (int i : order) *sorted.Add() = g.node(i);
  g.mutable_node()->Swap(&sorted);
}

std::string write_graph(const Graph& g, const std::map<std::string, Dequantized>& dequantized, OnnxExportReport& r) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("tern");
  auto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(ops::kExportOpset);
  for (const auto& [key, value] : g.metadata) {
    auto* prop = model.add_metadata_props();
    prop->set_key(key);
    prop->set_value(value);
  }
  onnx::GraphProto& out = *model.mutable_graph();
  out.set_name("tern");
  std::set<std::string> used;
  for (const Value& v : g.values) used.insert(v.name);

  for (const Node& node : g.nodes) {
    const ops::OpRecord& rec = ops::record(node.op);
    ProtoWriter w(node, g, ops::node_who(g.source, node), out, used, r.notes);
    for (ValueId id : node.inputs) w.inputs.push_back(id == kNoValue ? std::string() : g.value(id).name);
    for (ValueId id : node.outputs) w.outputs.push_back(g.value(id).name);
    if (rec.export_onnx) {
      rec.export_onnx(w);
    } else if (!rec.attrs.kind && std::find(rec.onnx_names.begin(), rec.onnx_names.end(), rec.name) != rec.onnx_names.end()) {
      w.emit(std::string(rec.name), w.inputs, w.outputs);
    } else {
      w.fail(std::string(rec.name));
    }
  }
  // Constants the written nodes or the graph read (an exporter may have replaced one, as Reshape
  // does its batch-relative target): initializers, or integers behind a DequantizeLinear.
  std::set<std::string> read;
  for (const onnx::NodeProto& n : out.node()) read.insert(n.input().begin(), n.input().end());
  for (ValueId id : g.outputs) read.insert(g.value(id).name);
  for (const Value& v : g.values) {
    if (!v.constant || !read.count(v.name)) continue;
    auto it = dequantized.find(v.name);
    if (it == dequantized.end()) {
      fill_tensor(*out.add_initializer(), v.name, *v.constant);
      continue;
    }
    const Dequantized& d = it->second;
    const std::string q = unique_name(used, v.name + "_quantized"), s = unique_name(used, v.name + "_scale"),
                      z = unique_name(used, v.name + "_zero_point");
    fill_tensor(*out.add_initializer(), q, d.q);
    fill_tensor(*out.add_initializer(), s, d.scale);
    fill_tensor(*out.add_initializer(), z, d.zero);
    onnx::NodeProto* n = out.add_node();
    n->set_op_type("DequantizeLinear");
    n->set_name(unique_name(used, v.name + "/DequantizeLinear"));
    n->add_input(q);
    n->add_input(s);
    n->add_input(z);
    n->add_output(v.name);
    auto* a = n->add_attribute();
    a->set_name("axis");
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(d.axis);
  }

  sort_topologically(out);

  for (ValueId id : g.inputs) fill_value_info(*out.add_input(), g.value(id));
  for (ValueId id : g.outputs) fill_value_info(*out.add_output(), g.value(id));
  r.nodes = out.node_size();
  r.opset = ops::kExportOpset;
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    throw Error(std::string("export: the written model fails ONNX's checker (a tern bug): ") + e.what());
  }
  std::string bytes;
  check(model.SerializeToString(&bytes), "export: cannot serialize the model (larger than 2 GiB?)");
  return bytes;
}

const Node* find_node(const Graph& g, const std::string& name) {
  for (const Node& n : g.nodes)
    if (n.name == name) return &n;
  return nullptr;
}

// The integer weights of layer l's active terms in the weight's own layout, with a step per output
// channel; nullopt with `why` when they have no exact int8 form.
std::optional<Dequantized> integer_weights(const quant::QuantizedLayer& l, const Node& node, const Graph& g,
                                           std::vector<float>& step, std::string& why) {
  const int64_t out = l.out, in = l.in, taps = l.taps;
  std::vector<int32_t> sum(static_cast<size_t>(out * in * taps), 0);  // tap-major, as term_integer_weights
  for (int j = 0; j < l.active_terms; ++j) {
    std::vector<float> term_step;
    std::optional<std::vector<int8_t>> w = integer::term_integer_weights(l, l.terms[static_cast<size_t>(j)], term_step, why);
    if (!w) return std::nullopt;
    if (j == 0) step = term_step;
    else if (term_step != step) {
      why = "residual terms with different steps per filter (exported as their float sum)";
      return std::nullopt;
    }
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += (*w)[i];
  }
  for (int32_t v : sum)
    if (v < -127 || v > 127) {
      why = "the residual terms' sum exceeds int8 (exported as their float sum)";
      return std::nullopt;
    }
  const Value& wv = g.value(node.inputs[1]);
  const Tensor& w = *wv.constant;
  check(w.size() == out * in * taps, "export: layer '" + l.node + "': weight size does not match its codes");
  // Gemm weights [in][out] without transB: the output channel is axis 1.
  const bool by_column = node.op == OpType::kGemm && !node.attr<GemmAttrs>().trans_b;
  Dequantized d;
  d.axis = by_column ? 1 : 0;
  d.q = Tensor(DataType::kInt8, w.shape());
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        const int64_t at = by_column ? c * out + o : (o * in + c) * taps + t;
        d.q.data<int8_t>()[at] = static_cast<int8_t>(sum[static_cast<size_t>((o * taps + t) * in + c)]);
      }
  d.scale = Tensor::from_floats({out}, step);
  d.zero = Tensor(DataType::kInt8, {out});
  return d;
}

}  // namespace

std::string graph_onnx_bytes(const Graph& graph, OnnxExportReport* report) {
  OnnxExportReport r;
  std::string bytes = write_graph(graph, {}, r);
  if (report) *report = std::move(r);
  return bytes;
}

std::string qdq_onnx_bytes(const quant::QuantizedModel& model, OnnxExportReport* report) {
  OnnxExportReport r;
  const Graph sim = quant::simulation_graph(model);
  std::map<std::string, Dequantized> dequantized;
  for (const quant::QuantizedLayer& l : model.layers) {
    const Node* node = find_node(sim, l.node);
    check(node != nullptr && node->inputs.size() >= 2 && sim.is_constant(node->inputs[1]),
          "export: layer '" + l.node + "' has no constant weights in the graph");
    const std::string who = ops::node_who(sim.source, *node) + ": ";
    std::vector<float> step;
    std::string why;
    std::optional<Dequantized> w = integer_weights(l, *node, sim, step, why);
    if (!w) {
      r.notes.push_back(who + "float32 weights (" + why + ")");
      ++r.float_layers;
      continue;
    }
    // The integer weights times their step must be the simulation's weights, bit for bit.
    const Tensor& ref = sim.constant(node->inputs[1]);
    const int64_t per_channel = ref.size() / l.out;
    int64_t differing = 0;
    for (int64_t i = 0; i < ref.size(); ++i) {
      const int64_t o = w->axis == 1 ? i % l.out : i / per_channel;
      differing += static_cast<float>(w->q.data<int8_t>()[i]) * step[static_cast<size_t>(o)] != ref.data<float>()[i];
    }
    if (differing) r.notes.push_back(who + std::to_string(differing) + " weights differ from tern's by rounding");
    dequantized[sim.value(node->inputs[1]).name] = std::move(*w);
    ++r.int8_layers;

    // The bias in int32 at input scale x weight step, where ONNX Runtime's QDQ fusion looks for it.
    if (!l.input || l.input->dynamic || node->inputs.size() < 3 || node->inputs[2] == kNoValue ||
        !sim.is_constant(node->inputs[2]))
      continue;
    const Tensor& b = sim.constant(node->inputs[2]);
    Dequantized d;
    d.q = Tensor(DataType::kInt32, b.shape());
    d.scale = Tensor(DataType::kFloat32, {b.size()});
    d.zero = Tensor(DataType::kInt32, {b.size()});
    double worst = 0;  // in accumulator steps
    bool fits = b.size() == l.out;
    for (int64_t o = 0; fits && o < b.size(); ++o) {
      // A filter of zero weights has a zero step: no int32 at that scale holds its bias.
      const float s = l.input->scale * step[static_cast<size_t>(o)];
      const double k = s > 0 && std::isfinite(s) ? std::nearbyint(static_cast<double>(b.data<float>()[o]) / s) : NAN;
      fits = std::fabs(k) < 2147483647.0;
      if (!fits) break;
      d.q.data<int32_t>()[o] = static_cast<int32_t>(k);
      d.scale.data<float>()[o] = s;
      worst = std::max(worst, static_cast<double>(std::fabs(static_cast<float>(k) * s - b.data<float>()[o]) / s));
    }
    if (!fits) {
      r.notes.push_back(who + "float32 bias (it has no int32 form at the input scale times the weight step)");
      continue;
    }
    if (worst > 0.01)
      r.notes.push_back(who + "int32 bias within " + std::to_string(worst) + " accumulator steps of tern's");
    dequantized[sim.value(node->inputs[2]).name] = std::move(d);
  }
  for (const Node& n : sim.nodes) r.quantized_activations += n.op == OpType::kFakeQuantize && !n.attr<FakeQuantAttrs>().dynamic;
  std::string bytes = write_graph(sim, dequantized, r);
  if (report) *report = std::move(r);
  return bytes;
}

ExportCheck check_export(const Graph& simulation, const std::string& onnx_bytes, const Tensor& inputs) {
  Graph exported = import_onnx_bytes(onnx_bytes, "exported.onnx");
  Executor a(simulation), b(std::move(exported));
  std::vector<Tensor> ra = a.run(std::span<const Tensor>(&inputs, 1)), rb = b.run(std::span<const Tensor>(&inputs, 1));
  check(ra.size() == rb.size(), "export: the exported model has " + std::to_string(rb.size()) + " outputs, tern's " +
                                    std::to_string(ra.size()));
  ExportCheck c;
  for (size_t k = 0; k < ra.size(); ++k) {
    check(ra[k].shape() == rb[k].shape() && ra[k].dtype() == rb[k].dtype(),
          "export: output " + std::to_string(k) + " differs in shape or type from tern's");
    if (ra[k].dtype() != DataType::kFloat32) {
      c.differing += std::memcmp(ra[k].raw(), rb[k].raw(), ra[k].bytes()) != 0;
      continue;
    }
    for (int64_t i = 0; i < ra[k].size(); ++i) {
      const float x = ra[k].data<float>()[i], y = rb[k].data<float>()[i];
      c.max_abs_reference = std::max(c.max_abs_reference, static_cast<double>(std::fabs(x)));
      c.max_abs_diff = std::max(c.max_abs_diff, static_cast<double>(std::fabs(x - y)));
      c.differing += std::memcmp(&x, &y, sizeof x) != 0;
      ++c.values;
    }
  }
  return c;
}

}  // namespace tern
