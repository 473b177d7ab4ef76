#include "train/trainable_graph.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tern/error.h"
#include "train/fake_quant.h"
#include "train/torch_op.h"

namespace tern::train {
namespace {

std::string who(const Graph& g, const Node& n) {
  return (g.source.empty() ? std::string() : g.source + ": ") + "node '" + n.name + "' (" + to_string(n.op) + ")";
}

bool is_graph_output(const Graph& g, ValueId id) {
  return std::find(g.outputs.begin(), g.outputs.end(), id) != g.outputs.end();
}

}  // namespace

TrainableGraph::TrainableGraph(const Graph& graph, std::vector<quant::QuantizedLayer> layers)
    : graph_(graph), layers_(std::move(layers)), skipped_(graph.nodes.size(), false) {
  const std::string src = graph_.source.empty() ? std::string("model") : graph_.source;
  check(graph_.inputs.size() == 1 && !graph_.outputs.empty(), src + ": fine-tuning needs one input and an output");
  for (size_t i = 0; i < layers_.size(); ++i) layer_of_node_[layers_[i].node] = i;
  std::vector<int> producer = graph_.producers();
  std::vector<int> consumers = graph_.consumer_counts();

  auto add_parameter = [&](ValueId id, bool decay, bool scale = false) {
    if (id == kNoValue || parameter_of_value_.count(id)) return;
    const Value& v = graph_.value(id);
    check(v.constant && v.constant->dtype() == DataType::kFloat32, src + ": '" + v.name + "' is not a float32 constant");
    parameter_of_value_[id] = parameters_.size();
    parameters_.push_back({v.name, to_torch(*v.constant).set_requires_grad(true), decay, scale});
  };

  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const Node& n = graph_.nodes[i];
    if (n.op != OpType::kBatchNormalization) continue;
    int p = producer[static_cast<size_t>(n.inputs[0])];
    bool params_constant = n.inputs.size() == 5;
    for (size_t k = 1; k < n.inputs.size(); ++k) params_constant &= graph_.is_constant(n.inputs[k]);
    if (!params_constant || p < 0 || consumers[static_cast<size_t>(n.inputs[0])] != 1 ||
        is_graph_output(graph_, n.inputs[0]))
      continue;
    const Node& op = graph_.nodes[static_cast<size_t>(p)];
    if ((op.op != OpType::kConv && op.op != OpType::kGemm) || !graph_.is_constant(op.inputs[1])) continue;
    if (op.inputs.size() > 2 && op.inputs[2] != kNoValue && !graph_.is_constant(op.inputs[2])) continue;
    int64_t channels = graph_.constant(n.inputs[1]).size();
    if (op.op == OpType::kGemm) {  // what fold_batchnorm folds: [out][in] weights, per-output bias
      const auto& a = op.attr<GemmAttrs>();
      if (!a.trans_b || a.trans_a || a.alpha != 1.0f || a.beta != 1.0f || graph_.constant(op.inputs[1]).dim(0) != channels)
        continue;
      if (op.inputs.size() > 2 && op.inputs[2] != kNoValue && graph_.constant(op.inputs[2]).size() != channels) continue;
    }
    folded_[static_cast<size_t>(p)] = {i, n.inputs[1], n.inputs[2], n.inputs[3], n.inputs[4],
                                       n.attr<BatchNormAttrs>().epsilon};
    skipped_[i] = true;
  }

  bool trainable = false;
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    const Node& n = graph_.nodes[i];
    switch (n.op) {
      case OpType::kConv:
      case OpType::kGemm:
      case OpType::kMatMul:
        if (n.inputs.size() > 1 && graph_.is_constant(n.inputs[1])) {
          add_parameter(n.inputs[1], true);
          if (n.inputs.size() > 2 && n.inputs[2] != kNoValue && graph_.is_constant(n.inputs[2]))
            add_parameter(n.inputs[2], false);
          trainable = true;
        }
        if (auto f = folded_.find(i); f != folded_.end()) {
          add_parameter(f->second.gamma, false, true);
          add_parameter(f->second.beta, false);
        }
        if (layer_of_node_.count(n.name)) {
          const auto& l = layers_[layer_of_node_.at(n.name)];
          check(graph_.is_constant(n.inputs[1]), who(graph_, n) + ": a quantized layer needs constant weights");
          check(n.op != OpType::kGemm || n.attr<GemmAttrs>().trans_b, who(graph_, n) + ": quantized Gemm weights must be [out][in]");
          check(n.op != OpType::kGemm || (n.attr<GemmAttrs>().alpha == 1.0f && n.attr<GemmAttrs>().beta == 1.0f),
                who(graph_, n) + ": quantized Gemm with alpha or beta other than 1 is not supported for fine-tuning");
          check(graph_.constant(n.inputs[1]).size() == l.out * l.in * l.taps,
                who(graph_, n) + ": weights do not match the quantization plan's layer");
        }
        break;
      case OpType::kBatchNormalization:
        if (!skipped_[i]) {  // a BatchNorm on its own: its scale and shift train
          for (size_t k = 3; k < n.inputs.size(); ++k)
            check(graph_.is_constant(n.inputs[k]), who(graph_, n) + ": running statistics must be constant");
          add_parameter(n.inputs[1], false, true);
          add_parameter(n.inputs[2], false);
          trainable = true;
        }
        break;
      default: {
        const TorchRecord& r = torch_record(n.op);
        if (!r.forward) throw Error(who(graph_, n) + ": operator not supported for fine-tuning");
        if (r.check) r.check(n, graph_, who(graph_, n));
        break;
      }
    }
  }
  for (const auto& [node, index] : layer_of_node_) {
    bool found = std::any_of(graph_.nodes.begin(), graph_.nodes.end(), [&](const Node& n) { return n.name == node; });
    check(found, src + ": quantized layer '" + node + "' is not in the graph");
  }
  check(trainable, src + ": no trainable layers (no Conv, Gemm or MatMul with constant weights, no BatchNormalization)");

  // A trailing Softmax produces probabilities; the loss wants the logits before it.
  logits_ = graph_.outputs[0];
  int last = producer[static_cast<size_t>(logits_)];
  if (last >= 0 && graph_.nodes[static_cast<size_t>(last)].op == OpType::kSoftmax) {
    logits_ = graph_.nodes[static_cast<size_t>(last)].inputs[0];
    skipped_[static_cast<size_t>(last)] = true;
  }
}

torch::Tensor TrainableGraph::value(ValueId id) {
  if (auto p = parameter_of_value_.find(id); p != parameter_of_value_.end()) return parameters_[p->second].value;
  if (auto c = constants_.find(id); c != constants_.end()) return c->second;
  if (id == kNoValue || !graph_.is_constant(id) || graph_.constant(id).dtype() != DataType::kFloat32) return {};
  return constants_[id] = to_torch(graph_.constant(id)).to(dtype_);  // converted once, on first use
}

std::vector<std::string> TrainableGraph::residual_branch_weights() const {
  std::vector<int> producer = graph_.producers();
  std::vector<std::string> names;
  for (const Node& n : graph_.nodes) {
    if (n.op != OpType::kAdd || n.inputs.size() != 2 || graph_.is_constant(n.inputs[0]) || graph_.is_constant(n.inputs[1]))
      continue;
    int p = producer[static_cast<size_t>(n.inputs[0])];
    if (p >= 0 && graph_.nodes[static_cast<size_t>(p)].op == OpType::kBatchNormalization)  // folded into its conv
      for (const auto& [conv, bn] : folded_)
        if (bn.bn_node == static_cast<size_t>(p)) p = static_cast<int>(conv);
    if (p < 0) continue;
    const Node& layer = graph_.nodes[static_cast<size_t>(p)];
    if ((layer.op == OpType::kConv || layer.op == OpType::kGemm) && graph_.is_constant(layer.inputs[1]))
      names.push_back(graph_.value(layer.inputs[1]).name);
  }
  return names;
}

void TrainableGraph::set_dtype(torch::ScalarType dtype) {
  dtype_ = dtype;
  constants_.clear();
  for (Parameter& p : parameters_) p.value = p.value.detach().to(dtype).set_requires_grad(true);
}

torch::Tensor TrainableGraph::run_layer(const Node& n, const std::vector<torch::Tensor>& v) {
  torch::Tensor x = v[static_cast<size_t>(n.inputs[0])];
  torch::Tensor w = value(n.inputs[1]);
  torch::Tensor b = n.inputs.size() > 2 && n.inputs[2] != kNoValue ? value(n.inputs[2]) : torch::Tensor();
  size_t index = static_cast<size_t>(&n - graph_.nodes.data());
  if (auto f = folded_.find(index); f != folded_.end()) {
    const Folded& bn = f->second;
    torch::Tensor s = value(bn.gamma) / torch::sqrt(value(bn.var) + static_cast<double>(bn.epsilon));
    std::vector<int64_t> view(static_cast<size_t>(w.dim()), 1);
    view[0] = -1;
    w = w * s.view(view);
    b = (b.defined() ? b - value(bn.mean) : -value(bn.mean)) * s + value(bn.beta);
  }
  if (auto l = layer_of_node_.find(n.name); l != layer_of_node_.end()) {
    quant::QuantizedLayer& layer = layers_[l->second];
    if (layer.input) x = fake_quantize_activation(x, *layer.input);
    w = fake_quantize_weights(w, layer);
    if (b.defined() && !layer.bias_value.empty()) b = fake_quantize_bias(b, layer);
  }
  if (n.op == OpType::kConv) {
    const auto& a = n.attr<ConvAttrs>();
    size_t axes = static_cast<size_t>(x.dim() - 2);
    check(axes == 1 || axes == 2, who(graph_, n) + ": only 1-D and 2-D convolutions are supported for fine-tuning");
    auto pads = symmetric_pads(a.pads, axes);
    if (!pads) {
      x = pad_trailing(x, a.pads, axes, 0.0);
      pads = std::vector<int64_t>(axes, 0);
    }
    std::vector<int64_t> strides = or_ones(a.strides, axes), dilations = or_ones(a.dilations, axes);
    torch::Tensor y;
    if (layer_product_ && axes == 2) y = layer_product_({n, x, w, strides, *pads, dilations, a.group});
    if (y.defined()) {
      if (b.defined()) y = y + b.view({1, -1, 1, 1});
    } else {
      y = axes == 2 ? torch::conv2d(x, w, b, strides, *pads, dilations, a.group)
                    : torch::conv1d(x, w, b, strides, *pads, dilations, a.group);
    }
    return clamp_if(y, a.clamp_lo, a.clamp_hi);
  }
  const auto& a = n.attr<GemmAttrs>();
  torch::Tensor lhs = a.trans_a ? x.t() : x;
  torch::Tensor rhs = a.trans_b ? w.t() : w;
  torch::Tensor y;
  if (layer_product_) y = layer_product_({n, lhs, rhs, {}, {}, {}, 1});
  if (!y.defined()) y = torch::matmul(lhs, rhs);
  if (a.alpha != 1.0f) y = y * static_cast<double>(a.alpha);
  if (b.defined()) y = y + (a.beta != 1.0f ? b * static_cast<double>(a.beta) : b);
  return clamp_if(y, a.clamp_lo, a.clamp_hi);
}

torch::Tensor TrainableGraph::forward(const torch::Tensor& input) {
  std::vector<torch::Tensor> v(graph_.values.size());
  v[static_cast<size_t>(graph_.inputs[0])] = value_transform_ ? value_transform_(input.to(dtype_)) : input.to(dtype_);
  auto get = [&](ValueId id) -> torch::Tensor {
    if (id == kNoValue) return {};
    if (v[static_cast<size_t>(id)].defined()) return v[static_cast<size_t>(id)];
    torch::Tensor t = value(id);
    check(t.defined(), graph_.source + ": value '" + graph_.value(id).name + "' is not available to fine-tuning");
    return t;
  };
  for (size_t i = 0; i < graph_.nodes.size(); ++i) {
    if (skipped_[i]) continue;
    const Node& n = graph_.nodes[i];
    torch::Tensor y;
    switch (n.op) {
      case OpType::kConv:
      case OpType::kGemm: {
        if (graph_.is_constant(n.inputs[1])) {
          v[static_cast<size_t>(n.inputs[0])] = get(n.inputs[0]);
          y = run_layer(n, v);
          if (auto f = folded_.find(i); f != folded_.end()) {  // the output is the BatchNorm's
            v[static_cast<size_t>(graph_.nodes[f->second.bn_node].outputs[0])] = value_transform_ ? value_transform_(y) : y;
            continue;
          }
        } else {  // computed weights: the plain product
          TorchCall call{n, graph_, [&](size_t k) { return k < n.inputs.size() ? get(n.inputs[k]) : torch::Tensor(); }, who(graph_, n)};
          y = torch_record(n.op).forward(call);
        }
        break;
      }
      default: {
        TorchCall call{n, graph_, [&](size_t k) { return k < n.inputs.size() ? get(n.inputs[k]) : torch::Tensor(); }, who(graph_, n)};
        y = torch_record(n.op).forward(call);
        break;
      }
    }
    check(n.outputs.size() == 1, who(graph_, n) + ": multi-output nodes are not supported for fine-tuning");
    v[static_cast<size_t>(n.outputs[0])] = value_transform_ ? value_transform_(y) : y;
  }
  torch::Tensor logits = v[static_cast<size_t>(logits_)];
  check(logits.defined(), graph_.source + ": the output was not computed");
  return logits;
}

Graph TrainableGraph::trained_graph() const {
  Graph g = graph_;
  for (const auto& [id, index] : parameter_of_value_) {
    const Parameter& p = parameters_[index];
    Tensor t = to_tern(p.value);
    *g.value(id).constant = t.reshaped(g.value(id).constant->shape());
  }
  return g;
}

}  // namespace tern::train
