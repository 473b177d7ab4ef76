#include "tern/passes.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <set>

#include "graph/shape_inference.h"
#include "ops/op.h"
#include "tern/error.h"
#include "tern/executor.h"

namespace tern {

namespace {

std::string who(const Graph& g, const Node& n) {
  return (g.source.empty() ? "" : g.source + ": ") + "node '" + n.name + "' (" + to_string(n.op) + ")";
}

// What is known of a value's elements: a small integer (or integral float) constant's data, or
// the content analysis recorded for a computed one; null when nothing is.
std::optional<ops::Content> content_of(const Graph& graph, ValueId id) {
  if (id == kNoValue) return std::nullopt;
  const Value& v = graph.value(id);
  if (v.constant) {
    const Tensor& t = *v.constant;
    if (t.rank() > 1 || static_cast<size_t>(t.size()) > ops::kMaxContent) return std::nullopt;
    ops::Content c;
    for (int64_t i = 0; i < t.size(); ++i) {
      switch (t.dtype()) {
        case DataType::kInt64: c.push_back(t.data<int64_t>()[i]); break;
        case DataType::kInt32: c.push_back(t.data<int32_t>()[i]); break;
        case DataType::kFloat32: {
          float f = t.data<float>()[i];
          if (!(std::fabs(f) < 9.0e15f) || f != std::floor(f)) return std::nullopt;
          c.push_back(static_cast<int64_t>(f));
          break;
        }
        default: return std::nullopt;
      }
    }
    return c;
  }
  if (v.has_known_content) return v.known_content;
  return std::nullopt;
}

bool fully_known(const ops::Content& c) {
  return std::all_of(c.begin(), c.end(), [](int64_t e) { return e != kSymbolicBatch && e != kUnknownElement; });
}

// The node's output content from its record's rule (single-output nodes with integer or float
// outputs, inputs of at most kMaxContent elements).
std::optional<ops::Content> node_content(const Graph& graph, const Node& node) {
  const ops::OpRecord& r = ops::record(node.op);
  if (!r.content || node.outputs.size() != 1) return std::nullopt;
  std::vector<std::optional<ops::Content>> held;
  held.reserve(node.inputs.size());
  std::vector<const ops::Content*> in;
  std::vector<const Value*> values;
  std::vector<int8_t> leads;
  for (ValueId id : node.inputs) {
    held.push_back(content_of(graph, id));
    in.push_back(held.back() ? &*held.back() : nullptr);
    values.push_back(id == kNoValue ? nullptr : &graph.value(id));
    leads.push_back(static_cast<int8_t>(id == kNoValue ? -1 : graph.value(id).batch_axis));
  }
  std::optional<ops::Content> out = r.content({node, in, values, leads});
  if (out && out->size() > ops::kMaxContent) return std::nullopt;
  return out;
}

// A tensor of `type` and `shape` holding `content` (all numbers), or null when they do not fit.
std::optional<Tensor> tensor_from_content(const ops::Content& content, DataType type, const Shape& shape) {
  if (!is_static(shape) || element_count(shape) != static_cast<int64_t>(content.size())) return std::nullopt;
  Tensor t(type, shape);
  for (size_t i = 0; i < content.size(); ++i) {
    int64_t v = content[i];
    switch (type) {
      case DataType::kInt64: t.data<int64_t>()[i] = v; break;
      case DataType::kInt32:
        if (v < INT32_MIN || v > INT32_MAX) return std::nullopt;
        t.data<int32_t>()[i] = static_cast<int32_t>(v);
        break;
      case DataType::kFloat32: t.data<float>()[i] = static_cast<float>(v); break;
      default: return std::nullopt;
    }
  }
  return t;
}

// Replaces every use of `from` (node inputs and graph outputs) by `to`.
void replace_uses(Graph& graph, ValueId from, ValueId to) {
  for (Node& n : graph.nodes)
    for (ValueId& id : n.inputs)
      if (id == from) id = to;
  for (ValueId& id : graph.outputs)
    if (id == from) id = to;
}

bool is_graph_output(const Graph& graph, ValueId id) {
  return std::find(graph.outputs.begin(), graph.outputs.end(), id) != graph.outputs.end();
}

// Folding materializes a node's outputs in the model: a few bytes of Pad or Expand could ask for
// gigabytes. Larger results stay nodes, computed at run time under the executor's memory plan.
constexpr double kMaxFoldedBytes = 64.0 * (1 << 20);

double folded_bytes(const Graph& graph, const Node& node, const std::vector<const Tensor*>& inputs) {
  Node copy = node;
  std::vector<Shape> shapes;
  for (const Tensor* t : inputs) shapes.push_back(t ? t->shape() : Shape{});
  InferenceContext ictx{kDynamicDim, &graph.source, {}};
  double bytes = 0;
  for (const Shape& shape : infer_output_shapes(copy, shapes, inputs, ictx)) {
    double count = 1;
    for (int64_t d : shape) count *= d < 0 ? 1.0 : static_cast<double>(d);
    bytes += count * 8;  // the widest element type
  }
  return bytes;
}

}  // namespace

int fold_constants(Graph& graph) {
  int folded = 0;
  std::vector<Node> kept;
  mark_batch_leading_inputs(graph);
  for (Node& node : graph.nodes) {
    if (node.op == OpType::kClip && node.inputs.size() > 1) {
      auto& a = node.attr<ClipAttrs>();
      bool all_constant = true;
      for (size_t i = 1; i < node.inputs.size(); ++i)
        all_constant &= node.inputs[i] == kNoValue || graph.is_constant(node.inputs[i]);
      if (all_constant) {
        for (size_t i = 1; i < node.inputs.size(); ++i) {
          if (node.inputs[i] == kNoValue) continue;
          const Tensor& t = graph.constant(node.inputs[i]);
          check(t.dtype() == DataType::kFloat32 && t.size() == 1, who(graph, node) + ": min/max must be float scalars");
          (i == 1 ? a.lo : a.hi) = t.data<float>()[0];
        }
        node.inputs.resize(1);
      }
    }
    // A Reshape target that shape analysis knows up to the dynamic batch becomes a constant
    // (kSymbolicBatch for the batch): the Shape/Gather/Concat sub-graphs exporters emit for
    // x.view(x.size(0), -1) vanish, and the integer engine sees a plain reshape.
    if (node.op == OpType::kReshape && node.inputs.size() == 2 && !graph.is_constant(node.inputs[1])) {
      std::optional<ops::Content> target = content_of(graph, node.inputs[1]);
      if (target && std::none_of(target->begin(), target->end(), [](int64_t e) { return e == kUnknownElement; }))
        node.inputs[1] = graph.add_constant(node.name + ".target",
                                            Tensor::from_int64s({static_cast<int64_t>(target->size())}, *target));
    }
    bool all_constant = !node.inputs.empty();
    std::vector<const Tensor*> inputs;
    for (ValueId id : node.inputs) {
      if (id == kNoValue) {
        inputs.push_back(nullptr);
        continue;
      }
      all_constant &= graph.is_constant(id);
      inputs.push_back(graph.is_constant(id) ? &graph.constant(id) : nullptr);
    }
    if (all_constant && folded_bytes(graph, node, inputs) > kMaxFoldedBytes)
      all_constant = false;  // computed at run time instead, where the memory plan bounds it
    if (all_constant) {
      std::vector<Tensor> outputs = evaluate_node(node, inputs, kDynamicDim, nullptr, graph.source);
      for (size_t i = 0; i < node.outputs.size() && i < outputs.size(); ++i) {
        Value& v = graph.value(node.outputs[i]);
        v.shape = outputs[i].shape();
        v.shape_known = true;
        v.dtype = outputs[i].dtype();
        v.constant = std::move(outputs[i]);
      }
      ++folded;
      continue;
    }
    infer_node_shapes(graph, node);
    if (std::optional<ops::Content> content = node_content(graph, node)) {
      Value& out = graph.value(node.outputs[0]);
      std::optional<Tensor> t;
      if (fully_known(*content) && out.shape_known) t = tensor_from_content(*content, out.dtype, out.shape);
      if (t) {  // a shape known at import, though computed from a dynamic tensor
        out.constant = std::move(*t);
        ++folded;
        continue;
      }
      out.known_content = std::move(*content);
      out.has_known_content = true;
    }
    kept.push_back(std::move(node));
  }
  graph.nodes = std::move(kept);
  // Shape computations nothing reads any more (their Reshape took a constant target).
  for (bool removed = true; removed;) {
    removed = false;
    std::vector<int> uses = graph.consumer_counts();
    std::vector<Node> live;
    for (Node& node : graph.nodes) {
      bool dead = ops::record(node.op).content &&
                  std::all_of(node.outputs.begin(), node.outputs.end(), [&](ValueId id) { return uses[static_cast<size_t>(id)] == 0; });
      if (dead) {
        removed = true;
        ++folded;
        continue;
      }
      live.push_back(std::move(node));
    }
    graph.nodes = std::move(live);
  }
  return folded;
}

InputShape parse_input_shape(const std::string& text) {
  InputShape s;
  std::string dims = text;
  if (size_t eq = text.find('='); eq != std::string::npos) {
    s.name = text.substr(0, eq);
    dims = text.substr(eq + 1);
    check(!s.name.empty(), "input shape '" + text + "': the name before '=' is empty");
  }
  char separator = dims.find(',') != std::string::npos ? ',' : 'x';
  size_t start = 0;
  while (true) {
    size_t end = dims.find(separator, start);
    std::string d = dims.substr(start, end == std::string::npos ? std::string::npos : end - start);
    check(!d.empty(), "input shape '" + text + "': an empty dimension (expected e.g. x=Nx3x224x224)");
    bool number = std::all_of(d.begin(), d.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (number) {
      check(d.size() <= 12, "input shape '" + text + "': dimension " + d + " is too large");
      int64_t v = std::stoll(d);
      check(v >= 1, "input shape '" + text + "': dimension " + d + " must be at least 1");
      s.dims.push_back(v);
    } else {
      bool symbol = d == "?" || std::all_of(d.begin(), d.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; });
      check(symbol, "input shape '" + text + "': '" + d + "' is neither a size nor a name for a dynamic dimension");
      s.dims.push_back(kDynamicDim);
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  check(s.dims.size() <= 16, "input shape '" + text + "': more than 16 dimensions");
  return s;
}

void set_input_shapes(Graph& graph, const std::vector<InputShape>& shapes) {
  if (shapes.empty()) return;
  const std::string src = graph.source.empty() ? std::string("model") : graph.source;
  std::vector<ValueId> inputs;
  for (ValueId id : graph.inputs)
    if (!graph.is_constant(id)) inputs.push_back(id);
  std::string names;
  for (ValueId id : inputs) names += (names.empty() ? "" : ", ") + graph.value(id).name;
  std::set<ValueId> seen;
  for (const InputShape& s : shapes) {
    ValueId id = kNoValue;
    if (s.name.empty()) {
      check(inputs.size() == 1, src + ": the model has " + std::to_string(inputs.size()) + " inputs (" + names +
                                    "): name one, as NAME=DIMS");
      id = inputs[0];
    } else {
      for (ValueId i : inputs)
        if (graph.value(i).name == s.name) id = i;
      check(id != kNoValue, src + ": no input named '" + s.name + "' (inputs: " + names + ")");
    }
    check(seen.insert(id).second, src + ": input '" + graph.value(id).name + "' is given two shapes");
    Value& v = graph.value(id);
    std::string who = src + ": input '" + v.name + "'";
    if (v.shape_known) {
      check(v.shape.size() == s.dims.size(), who + " has " + std::to_string(v.shape.size()) + " dimensions " +
                                                 to_string(v.shape) + ", the given shape " + std::to_string(s.dims.size()));
      for (size_t d = 0; d < s.dims.size(); ++d)
        check(v.shape[d] < 0 || v.shape[d] == s.dims[d],
              who + ": dimension " + std::to_string(d) + " is " + std::to_string(v.shape[d]) + " in the model, not " +
                  (s.dims[d] < 0 ? std::string("dynamic") : std::to_string(s.dims[d])));
    }
    v.shape = s.dims;
    v.shape_known = true;
  }
  fold_constants(graph);  // infers every shape again, folding shape computations that became known
  graph.compact();
}

int fold_batchnorm(Graph& graph) {
  int folded = 0;
  std::vector<int> producer = graph.producers();
  std::vector<int> consumers = graph.consumer_counts();
  std::vector<bool> removed(graph.nodes.size(), false);
  for (size_t bn_index = 0; bn_index < graph.nodes.size(); ++bn_index) {
    Node& bn = graph.nodes[bn_index];
    if (bn.op != OpType::kBatchNormalization) continue;
    bool params_constant = true;
    for (size_t i = 1; i < 5; ++i) params_constant &= graph.is_constant(bn.inputs[i]);
    int p = producer[static_cast<size_t>(bn.inputs[0])];
    if (!params_constant || p < 0 || consumers[static_cast<size_t>(bn.inputs[0])] != 1 ||
        is_graph_output(graph, bn.inputs[0]))
      continue;
    Node& op = graph.nodes[static_cast<size_t>(p)];
    if (op.op != OpType::kConv && op.op != OpType::kGemm) continue;
    if (!graph.is_constant(op.inputs[1])) continue;
    if (op.inputs.size() > 2 && op.inputs[2] != kNoValue && !graph.is_constant(op.inputs[2])) continue;

    const float* gamma = graph.constant(bn.inputs[1]).data<float>();
    const float* beta = graph.constant(bn.inputs[2]).data<float>();
    const float* mean = graph.constant(bn.inputs[3]).data<float>();
    const float* var = graph.constant(bn.inputs[4]).data<float>();
    float eps = bn.attr<BatchNormAttrs>().epsilon;
    int64_t channels = graph.constant(bn.inputs[1]).size();

    Tensor w = graph.constant(op.inputs[1]).clone();
    std::vector<float> bias(static_cast<size_t>(channels), 0.0f);
    if (op.op == OpType::kConv) {
      check(w.dim(0) == channels, who(graph, bn) + ": channel count differs from the Conv's");
      if (op.inputs.size() > 2 && op.inputs[2] != kNoValue) {
        const Tensor& b = graph.constant(op.inputs[2]);
        std::copy(b.data<float>(), b.data<float>() + channels, bias.begin());
      }
      int64_t per_channel = w.size() / channels;
      for (int64_t c = 0; c < channels; ++c) {
        float s = gamma[c] / std::sqrt(var[c] + eps);
        for (int64_t k = 0; k < per_channel; ++k) w.data<float>()[c * per_channel + k] *= s;
        bias[static_cast<size_t>(c)] = (bias[static_cast<size_t>(c)] - mean[c]) * s + beta[c];
      }
    } else {
      auto& a = op.attr<GemmAttrs>();
      int64_t n = a.trans_b ? w.dim(0) : w.dim(1);
      if (n != channels) continue;
      if (op.inputs.size() > 2 && op.inputs[2] != kNoValue) {
        const Tensor& c = graph.constant(op.inputs[2]);
        if (c.size() == 1) std::fill(bias.begin(), bias.end(), c.data<float>()[0] * a.beta);
        else if (c.size() == channels && c.shape().back() == channels)
          for (int64_t j = 0; j < channels; ++j) bias[static_cast<size_t>(j)] = c.data<float>()[j] * a.beta;
        else continue;  // a per-row C cannot be folded
      }
      for (int64_t j = 0; j < channels; ++j) {
        float s = gamma[j] / std::sqrt(var[j] + eps);
        int64_t k_dim = a.trans_b ? w.dim(1) : w.dim(0);
        for (int64_t k = 0; k < k_dim; ++k) {
          float& wk = a.trans_b ? w.data<float>()[j * k_dim + k] : w.data<float>()[k * channels + j];
          wk *= s * a.alpha;
        }
        bias[static_cast<size_t>(j)] = (bias[static_cast<size_t>(j)] - mean[j]) * s + beta[j];
      }
      a.alpha = 1.0f;
      a.beta = 1.0f;
    }
    op.inputs.resize(3);
    op.inputs[1] = graph.add_constant(op.name + ".weight_bn_folded", std::move(w));
    op.inputs[2] = graph.add_constant(op.name + ".bias_bn_folded", Tensor::from_floats({channels}, bias));
    graph.value(op.outputs[0]).name = graph.value(bn.outputs[0]).name;
    replace_uses(graph, bn.outputs[0], op.outputs[0]);
    removed[bn_index] = true;
    ++folded;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    if (!removed[i]) kept.push_back(std::move(graph.nodes[i]));
  graph.nodes = std::move(kept);
  return folded;
}

int canonicalize_gemm(Graph& graph) {
  int changed = 0;
  for (Node& node : graph.nodes) {
    bool matmul = node.op == OpType::kMatMul;
    if ((!matmul && node.op != OpType::kGemm) || !graph.is_constant(node.inputs[1])) continue;
    const Tensor& w = graph.constant(node.inputs[1]);
    const Value& x = graph.value(node.inputs[0]);
    if (w.dtype() != DataType::kFloat32 || w.rank() != 2) continue;
    // A MatMul by constant weights: x [..., K] (any leading dims) x W [K, N], tern's Gemm.
    if (matmul && !(x.shape_known && x.shape.size() >= 2)) continue;
    if (!matmul && node.attr<GemmAttrs>().trans_b) continue;
    int64_t k = w.dim(0), n = w.dim(1);
    Tensor t = Tensor::uninitialized(DataType::kFloat32, {n, k});
    for (int64_t i = 0; i < k; ++i)
      for (int64_t j = 0; j < n; ++j) t.data<float>()[j * k + i] = w.data<float>()[i * n + j];
    node.inputs[1] = graph.add_constant(node.name + ".weight_transposed", std::move(t));
    if (matmul) {
      node.op = OpType::kGemm;
      node.attrs = GemmAttrs{};
    }
    node.attr<GemmAttrs>().trans_b = true;
    ++changed;
  }
  return changed;
}

int fuse_gemm_bias(Graph& graph) {
  int fused = 0;
  std::vector<int> producer = graph.producers();
  std::vector<int> consumers = graph.consumer_counts();
  std::vector<bool> removed(graph.nodes.size(), false);
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    Node& add = graph.nodes[i];
    if (add.op != OpType::kAdd || add.inputs.size() != 2) continue;
    for (int side = 0; side < 2; ++side) {
      ValueId x = add.inputs[static_cast<size_t>(side)], b = add.inputs[static_cast<size_t>(1 - side)];
      int p = producer[static_cast<size_t>(x)];
      if (p < 0 || !graph.is_constant(b) || consumers[static_cast<size_t>(x)] != 1 || is_graph_output(graph, x)) continue;
      Node& gemm = graph.nodes[static_cast<size_t>(p)];
      if (gemm.op != OpType::kGemm || (gemm.inputs.size() > 2 && gemm.inputs[2] != kNoValue)) continue;
      const auto& a = gemm.attr<GemmAttrs>();
      if (!a.trans_b || a.trans_a || a.alpha != 1.0f || a.clamp_lo != -std::numeric_limits<float>::infinity() ||
          a.clamp_hi != std::numeric_limits<float>::infinity() || !graph.is_constant(gemm.inputs[1]))
        continue;
      const Tensor& bias = graph.constant(b);
      int64_t n = graph.constant(gemm.inputs[1]).dim(0);
      const Value& y = graph.value(gemm.outputs[0]);
      bool per_column = bias.dtype() == DataType::kFloat32 && bias.size() == n && bias.rank() >= 1 && bias.shape().back() == n &&
                        static_cast<size_t>(bias.rank()) <= y.shape.size();
      if (!per_column) continue;
      gemm.inputs.resize(3);
      gemm.inputs[2] = graph.add_constant(gemm.name + ".bias", Tensor::from_floats({n}, std::vector<float>(bias.data<float>(), bias.data<float>() + n)));
      gemm.attr<GemmAttrs>().beta = 1.0f;
      graph.value(gemm.outputs[0]).name = graph.value(add.outputs[0]).name;
      replace_uses(graph, add.outputs[0], gemm.outputs[0]);
      removed[i] = true;
      ++fused;
      break;
    }
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    if (!removed[i]) kept.push_back(std::move(graph.nodes[i]));
  graph.nodes = std::move(kept);
  return fused;
}

int drop_identities(Graph& graph) {
  int dropped = 0;
  std::vector<int> producer = graph.producers();
  std::vector<Node> kept;
  for (Node& node : graph.nodes) {
    if (node.op != OpType::kIdentity || node.outputs.size() != 1) {
      kept.push_back(std::move(node));
      continue;
    }
    ValueId in = node.inputs[0], out = node.outputs[0];
    bool in_is_graph_input = std::find(graph.inputs.begin(), graph.inputs.end(), in) != graph.inputs.end();
    if (is_graph_output(graph, out) && (in_is_graph_input || graph.is_constant(in) || is_graph_output(graph, in))) {
      kept.push_back(std::move(node));  // the output must keep its own name and identity
      continue;
    }
    if (is_graph_output(graph, out)) graph.value(in).name = graph.value(out).name;
    replace_uses(graph, out, in);
    ++dropped;
  }
  graph.nodes = std::move(kept);
  return dropped;
}

int fuse_activations(Graph& graph) {
  int fused = 0;
  std::vector<int> producer = graph.producers();
  std::vector<int> consumers = graph.consumer_counts();
  std::vector<bool> removed(graph.nodes.size(), false);
  for (size_t i = 0; i < graph.nodes.size(); ++i) {
    Node& act = graph.nodes[i];
    if (act.op != OpType::kRelu && !(act.op == OpType::kClip && act.inputs.size() == 1)) continue;
    ValueId x = act.inputs[0];
    int p = producer[static_cast<size_t>(x)];
    if (p < 0 || consumers[static_cast<size_t>(x)] != 1 || is_graph_output(graph, x)) continue;
    Node& op = graph.nodes[static_cast<size_t>(p)];
    float lo = act.op == OpType::kRelu ? 0.0f : act.attr<ClipAttrs>().lo;
    float hi = act.op == OpType::kRelu ? std::numeric_limits<float>::infinity() : act.attr<ClipAttrs>().hi;
    if (op.op == OpType::kConv) {
      auto& a = op.attr<ConvAttrs>();
      a.clamp_lo = std::max(a.clamp_lo, lo);
      a.clamp_hi = std::min(a.clamp_hi, hi);
    } else if (op.op == OpType::kGemm) {
      auto& a = op.attr<GemmAttrs>();
      a.clamp_lo = std::max(a.clamp_lo, lo);
      a.clamp_hi = std::min(a.clamp_hi, hi);
    } else {
      continue;
    }
    op.outputs[0] = act.outputs[0];
    removed[i] = true;
    ++fused;
  }
  std::vector<Node> kept;
  for (size_t i = 0; i < graph.nodes.size(); ++i)
    if (!removed[i]) kept.push_back(std::move(graph.nodes[i]));
  graph.nodes = std::move(kept);
  return fused;
}

void optimize(Graph& graph, const OptimizeOptions& options) {
  fold_constants(graph);
  canonicalize_gemm(graph);
  fuse_gemm_bias(graph);
  if (options.fold_batchnorm) fold_batchnorm(graph);
  drop_identities(graph);
  if (options.fuse_activations) fuse_activations(graph);
  graph.compact();
  graph.validate();
}

}  // namespace tern
