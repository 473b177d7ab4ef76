// A tern graph as a trainable libtorch network. There is no second model definition: the network
// is the graph IR, run node by node with torch ops, its Conv/Gemm weights and biases and its
// BatchNorm scales and shifts turned into parameters.
//
// BatchNorm stays a node (its gamma and beta train) but uses its running statistics: a Conv/Gemm
// that BatchNorm follows is folded on the fly, W' = W * gamma / sqrt(var + eps) and
// b' = (b - mean) * gamma / sqrt(var + eps) + beta, in the same float operations as
// tern::fold_batchnorm, and the fake quantizers see W' and b' - exactly the weights `tern quantize`
// will see once the trained graph is folded.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/quantized_model.h"

namespace tern::train {

struct Parameter {
  std::string name;     // the graph value it came from
  torch::Tensor value;  // requires grad
  bool decay = false;   // weight decay applies (Conv/Gemm weights, not biases or BatchNorm)
  bool scale = false;   // a BatchNorm scale (gamma): starts at 1 in a random start, shifts at 0
};

class TrainableGraph {
 public:
  // `graph`: optimized with OptimizeOptions{.fold_batchnorm = false, .fuse_activations = false}.
  // `layers`: the quantized layers (by node name; their configuration and input quantizers are
  // used, their codes are rewritten by every forward pass); empty for FP32 training. Throws Error
  // naming the node for an operator fine-tuning does not support, and when nothing is trainable.
  TrainableGraph(const Graph& graph, std::vector<quant::QuantizedLayer> layers);

  // Logits of the first graph output for an NCHW float batch. A final Softmax is left out (the
  // loss applies log-softmax itself).
  torch::Tensor forward(const torch::Tensor& input);

  std::vector<Parameter>& parameters() { return parameters_; }
  const std::vector<Parameter>& parameters() const { return parameters_; }
  // The quantized layers as the last forward pass quantized them.
  const std::vector<quant::QuantizedLayer>& layers() const { return layers_; }

  // The graph with the trained parameter values (BatchNorm still unfolded).
  Graph trained_graph() const;

  // The weights of the Conv/Gemm layers that end a residual branch: the producer (through a
  // BatchNorm) of the first input of each Add whose other input is computed too, as exporters
  // write `branch + shortcut`. Random starts zero them (Fixup-style, Zhang et al. 2019), so a
  // residual network without BatchNorm starts as a shallow one instead of exploding.
  std::vector<std::string> residual_branch_weights() const;

  // Low-precision training (tern train). Call before the first forward pass.
  // Runs the network in `dtype` (parameters converted, constants converted on first use).
  void set_dtype(torch::ScalarType dtype);
  // Applied to the graph input and to every node's output (a fixed-point rounding, say).
  void set_value_transform(std::function<torch::Tensor(const torch::Tensor&)> transform) {
    value_transform_ = std::move(transform);
  }
  // Replaces the Conv/Gemm product of constant-weight layers (reduced-precision accumulation, say):
  // returns y without bias or clamp; an undefined result falls back to torch's own.
  struct LayerProduct {
    const Node& node;
    torch::Tensor x, w;                  // x padded already when the padding was asymmetric
    std::vector<int64_t> strides, pads, dilations;  // Conv only
    int64_t groups = 1;
  };
  void set_layer_product(std::function<torch::Tensor(const LayerProduct&)> product) { layer_product_ = std::move(product); }

 private:
  struct Folded {  // a Conv/Gemm with the BatchNorm that follows it
    size_t bn_node = 0;
    ValueId gamma = kNoValue, beta = kNoValue, mean = kNoValue, var = kNoValue;
    float epsilon = 0;
  };
  torch::Tensor value(ValueId id);  // a parameter or a float constant; undefined otherwise
  torch::Tensor run_layer(const Node& node, const std::vector<torch::Tensor>& values);

  Graph graph_;
  std::vector<quant::QuantizedLayer> layers_;
  std::map<std::string, size_t> layer_of_node_;
  std::map<ValueId, size_t> parameter_of_value_;
  std::vector<Parameter> parameters_;
  std::map<ValueId, torch::Tensor> constants_;  // float constants that do not train
  std::map<size_t, Folded> folded_;             // by Conv/Gemm node index
  std::vector<bool> skipped_;                   // BatchNorm nodes folded into their producer
  ValueId logits_ = kNoValue;
  torch::ScalarType dtype_ = torch::kFloat32;
  std::function<torch::Tensor(const torch::Tensor&)> value_transform_;
  std::function<torch::Tensor(const LayerProduct&)> layer_product_;
};

}  // namespace tern::train
