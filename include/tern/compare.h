// How far one model's outputs are from another's on the same inputs (`tern compare`): per output,
// and for a quantized model per layer, the error each quantized layer adds alone and what has
// accumulated at its output (as ONNX Runtime's qdq_loss_debug and AIMET's QuantAnalyzer show).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/quantized_model.h"
#include "tern/tensor.h"

namespace tern {

struct OutputComparison {
  std::string name;
  Shape shape;                   // of one batch
  double sqnr_db = 0;            // 10 log10(|ref|^2 / |ref - out|^2); +inf when equal
  double cosine = 1;             // of the flattened outputs
  double max_abs_error = 0;
  double ref_max_abs = 0;        // for scale: the largest |ref| value
  // The output looks like scores ([N, C] or [N, C, ...] with C >= 2): how often the argmax over C
  // agrees (per image, or per position for dense outputs), percent.
  std::optional<double> top1_agreement;
  std::optional<double> ref_top1, top1;  // accuracy against labels, percent, when the data have them
};

// Accumulates the comparison batch by batch (outputs in graph-output order; `labels`: this
// batch's, or null).
class OutputComparer {
 public:
  void add(const std::vector<Tensor>& ref, const std::vector<Tensor>& out, const std::vector<int64_t>* labels,
           const std::vector<std::string>& names);
  std::vector<OutputComparison> result() const;
  int64_t images() const { return images_; }

 private:
  struct Sums {
    std::string name;
    Shape shape;
    double signal = 0, noise = 0, dot = 0, out_sq = 0, max_err = 0, ref_max = 0;
    int64_t positions = 0, agree = 0, labelled = 0, ref_correct = 0, correct = 0;
    bool scores = false;
  };
  std::vector<Sums> sums_;
  int64_t images_ = 0;
};

struct LayerComparison {
  std::string node;
  std::string precision;              // "ternary fgq N=4", "int8 per-channel", ...
  std::optional<double> alone_sqnr_db;  // model output 0 with only this layer quantized (others FP32)
  std::optional<double> accumulated_sqnr_db;  // this layer's output in the quantized model vs FP32
};

// The per-layer analysis of a quantized model against its FP32 graph (same value names: the
// optimized import of the source model) on `images` (normalized inputs). Layers in model order.
std::vector<LayerComparison> compare_layers(const quant::QuantizedModel& model, const Graph& reference, const Tensor& images,
                                            int64_t batch = 64);

// The model with only the layers in `keep` quantized: the others get the reference's FP32 weights
// and biases and a float input. Throws Error naming a weight the reference lacks.
quant::QuantizedModel keep_quantized(const quant::QuantizedModel& model, const Graph& reference,
                                     const std::vector<std::string>& keep);

}  // namespace tern
