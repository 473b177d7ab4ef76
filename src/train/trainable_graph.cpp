#include "train/trainable_graph.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tern/error.h"
#include "train/fake_quant.h"

namespace tern::train {
namespace {

std::string who(const Graph& g, const Node& n) {
  return (g.source.empty() ? std::string() : g.source + ": ") + "node '" + n.name + "' (" + to_string(n.op) + ")";
}

bool is_graph_output(const Graph& g, ValueId id) {
  return std::find(g.outputs.begin(), g.outputs.end(), id) != g.outputs.end();
}

// ONNX pads (begin..., end...) -> symmetric per-axis padding, or nullopt when begin != end.
std::optional<std::vector<int64_t>> symmetric(const std::vector<int64_t>& pads, size_t axes) {
  std::vector<int64_t> p(axes, 0);
  if (pads.empty()) return p;
  if (pads.size() != 2 * axes) return std::nullopt;
  for (size_t i = 0; i < axes; ++i) {
    if (pads[i] != pads[i + axes]) return std::nullopt;
    p[i] = pads[i];
  }
  return p;
}

// Pads the trailing `axes` spatial dims explicitly (torch wants last-axis pairs first).
torch::Tensor pad_spatial(const torch::Tensor& x, const std::vector<int64_t>& pads, size_t axes, double value) {
  std::vector<int64_t> p;
  for (size_t i = axes; i-- > 0;) {
    p.push_back(pads[i]);
    p.push_back(pads[i + axes]);
  }
  return torch::constant_pad_nd(x, p, value);
}

std::vector<int64_t> or_ones(const std::vector<int64_t>& v, size_t n) { return v.empty() ? std::vector<int64_t>(n, 1) : v; }

torch::Tensor clamp_if(const torch::Tensor& x, float lo, float hi) {
  bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
  if (has_lo && has_hi) return torch::clamp(x, lo, hi);
  if (has_lo) return torch::clamp_min(x, lo);
  if (has_hi) return torch::clamp_max(x, hi);
  return x;
}

int64_t axis_of(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

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
      case OpType::kRelu: case OpType::kClip: case OpType::kLeakyRelu: case OpType::kSigmoid: case OpType::kTanh:
      case OpType::kMaxPool: case OpType::kAveragePool: case OpType::kGlobalAveragePool: case OpType::kGlobalMaxPool:
      case OpType::kReduceMean: case OpType::kAdd: case OpType::kSub: case OpType::kMul: case OpType::kDiv:
      case OpType::kConcat: case OpType::kFlatten: case OpType::kTranspose: case OpType::kSoftmax:
      case OpType::kIdentity: case OpType::kHardSigmoid: case OpType::kUnsqueeze: case OpType::kSqueeze:
        break;
      case OpType::kReshape:
        check(n.inputs.size() > 1 && graph_.is_constant(n.inputs[1]), who(graph_, n) + ": the target shape must be constant");
        break;
      case OpType::kPad:
        check(n.inputs.size() == 1, who(graph_, n) + ": pads must be attributes (constant)");
        break;
      default:
        throw Error(who(graph_, n) + ": operator not supported for fine-tuning");
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
    auto pads = symmetric(a.pads, axes);
    if (!pads) {
      x = pad_spatial(x, a.pads, axes, 0.0);
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
        } else {
          torch::Tensor x = get(n.inputs[0]), w = get(n.inputs[1]);
          torch::Tensor b = n.inputs.size() > 2 ? get(n.inputs[2]) : torch::Tensor();
          if (n.op == OpType::kConv) {
            throw Error(who(graph_, n) + ": a convolution with computed weights is not supported for fine-tuning");
          }
          const auto& a = n.attr<GemmAttrs>();
          y = torch::matmul(a.trans_a ? x.t() : x, a.trans_b ? w.t() : w) * static_cast<double>(a.alpha);
          if (b.defined()) y = y + b * static_cast<double>(a.beta);
          y = clamp_if(y, a.clamp_lo, a.clamp_hi);
        }
        break;
      }
      case OpType::kMatMul: y = torch::matmul(get(n.inputs[0]), get(n.inputs[1])); break;
      case OpType::kBatchNormalization: {
        torch::Tensor x = get(n.inputs[0]);
        torch::Tensor s = get(n.inputs[1]) / torch::sqrt(get(n.inputs[4]) + static_cast<double>(n.attr<BatchNormAttrs>().epsilon));
        std::vector<int64_t> view(static_cast<size_t>(x.dim()), 1);
        view[1] = -1;
        y = (x - get(n.inputs[3]).view(view)) * s.view(view) + get(n.inputs[2]).view(view);
        break;
      }
      case OpType::kRelu: y = torch::relu(get(n.inputs[0])); break;
      case OpType::kClip: y = clamp_if(get(n.inputs[0]), n.attr<ClipAttrs>().lo, n.attr<ClipAttrs>().hi); break;
      case OpType::kLeakyRelu: y = torch::leaky_relu(get(n.inputs[0]), n.attr<LeakyReluAttrs>().alpha); break;
      case OpType::kSigmoid: y = torch::sigmoid(get(n.inputs[0])); break;
      case OpType::kTanh: y = torch::tanh(get(n.inputs[0])); break;
      case OpType::kHardSigmoid: {
        const auto& a = n.attr<AffineAttrs>();
        torch::Tensor x = get(n.inputs[0]);
        y = torch::clamp(x * static_cast<double>(a.alpha) + static_cast<double>(a.beta), 0.0, 1.0);
        if (a.multiply_input) y = x * y;
        break;
      }
      case OpType::kMaxPool:
      case OpType::kAveragePool: {
        const auto& a = n.attr<PoolAttrs>();
        torch::Tensor x = get(n.inputs[0]);
        size_t axes = a.kernel.size();
        check(axes == 2 && x.dim() == 4, who(graph_, n) + ": only 2-D pooling is supported for fine-tuning");
        bool max = n.op == OpType::kMaxPool;
        auto pads = symmetric(a.pads, axes);
        if (!pads) {
          check(max, who(graph_, n) + ": asymmetric average-pool padding is not supported for fine-tuning");
          x = pad_spatial(x, a.pads, axes, -std::numeric_limits<double>::infinity());
          pads = std::vector<int64_t>(axes, 0);
        }
        std::vector<int64_t> strides = or_ones(a.strides, axes);
        if (max) {
          y = torch::max_pool2d(x, a.kernel, strides, *pads, or_ones(a.dilations, axes), a.ceil_mode);
        } else {
          check(a.dilations.empty() || a.dilations == std::vector<int64_t>(axes, 1),
                who(graph_, n) + ": dilated average pooling is not supported for fine-tuning");
          y = torch::avg_pool2d(x, a.kernel, strides, *pads, a.ceil_mode, a.count_include_pad);
        }
        break;
      }
      case OpType::kGlobalAveragePool:
      case OpType::kGlobalMaxPool: {
        torch::Tensor x = get(n.inputs[0]);
        std::vector<int64_t> dims;
        for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
        y = n.op == OpType::kGlobalAveragePool ? x.mean(dims, true) : x.amax(dims, true);
        break;
      }
      case OpType::kReduceMean: {
        const auto& a = n.attr<ReduceAttrs>();
        torch::Tensor x = get(n.inputs[0]);
        std::vector<int64_t> dims;
        for (int64_t d : a.axes) dims.push_back(axis_of(d, x.dim()));
        if (dims.empty())
          for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
        y = x.mean(dims, a.keepdims);
        break;
      }
      case OpType::kAdd: y = get(n.inputs[0]) + get(n.inputs[1]); break;
      case OpType::kSub: y = get(n.inputs[0]) - get(n.inputs[1]); break;
      case OpType::kMul: y = get(n.inputs[0]) * get(n.inputs[1]); break;
      case OpType::kDiv: y = get(n.inputs[0]) / get(n.inputs[1]); break;
      case OpType::kConcat: {
        std::vector<torch::Tensor> parts;
        for (ValueId id : n.inputs) parts.push_back(get(id));
        y = torch::cat(parts, axis_of(n.attr<AxisAttrs>().axis, parts[0].dim()));
        break;
      }
      case OpType::kFlatten: {
        torch::Tensor x = get(n.inputs[0]);
        int64_t axis = axis_of(n.attr<AxisAttrs>().axis, x.dim());
        int64_t outer = 1;
        for (int64_t d = 0; d < axis; ++d) outer *= x.size(d);
        y = x.reshape({outer, -1});
        break;
      }
      case OpType::kReshape: {
        torch::Tensor x = get(n.inputs[0]);
        std::vector<int64_t> shape;
        auto target = graph_.constant(n.inputs[1]).int64s();
        for (size_t d = 0; d < target.size(); ++d) {
          int64_t s = target[d];
          if (s == kSymbolicBatch) s = x.size(0);
          else if (s == 0 && !n.attr<ReshapeAttrs>().allow_zero) s = x.size(static_cast<int64_t>(d));
          shape.push_back(s);
        }
        y = x.reshape(shape);
        break;
      }
      case OpType::kTranspose: {
        torch::Tensor x = get(n.inputs[0]);
        std::vector<int64_t> perm = n.attr<TransposeAttrs>().perm;
        if (perm.empty())
          for (int64_t d = x.dim(); d-- > 0;) perm.push_back(d);
        y = x.permute(perm);
        break;
      }
      case OpType::kSoftmax: {
        torch::Tensor x = get(n.inputs[0]);
        check(!n.attr<AxisAttrs>().coerce_2d || axis_of(n.attr<AxisAttrs>().axis, x.dim()) == x.dim() - 1,
              who(graph_, n) + ": opset < 13 Softmax over several axes is not supported for fine-tuning");
        y = torch::softmax(x, axis_of(n.attr<AxisAttrs>().axis, x.dim()));
        break;
      }
      case OpType::kIdentity: y = get(n.inputs[0]); break;
      case OpType::kUnsqueeze: {
        y = get(n.inputs[0]);
        std::vector<int64_t> axes = n.attr<AxesAttrs>().axes;
        int64_t rank = y.dim() + static_cast<int64_t>(axes.size());
        for (int64_t& a : axes) a = axis_of(a, rank);
        std::sort(axes.begin(), axes.end());
        for (int64_t a : axes) y = y.unsqueeze(a);
        break;
      }
      case OpType::kSqueeze: {
        y = get(n.inputs[0]);
        std::vector<int64_t> axes = n.attr<AxesAttrs>().axes;
        if (axes.empty()) {
          y = y.squeeze();
          break;
        }
        for (int64_t& a : axes) a = axis_of(a, y.dim());
        std::sort(axes.rbegin(), axes.rend());
        for (int64_t a : axes) y = y.squeeze(a);
        break;
      }
      case OpType::kPad: {
        const auto& a = n.attr<PadAttrs>();
        torch::Tensor x = get(n.inputs[0]);
        size_t rank = static_cast<size_t>(x.dim());
        check(a.pads.size() == 2 * rank, who(graph_, n) + ": pads do not match the input rank");
        y = pad_spatial(x, a.pads, rank, static_cast<double>(a.value));
        break;
      }
      default:
        throw Error(who(graph_, n) + ": operator not supported for fine-tuning");
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
