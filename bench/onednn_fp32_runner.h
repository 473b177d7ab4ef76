// A oneDNN FP32 network built from tern's own graph, as the "best available library" peer in speed
// comparisons. Building it from the imported Graph (rather than from the ONNX file) means it runs
// exactly tern's model: the same folded BatchNorm, the same weights, the same fused activations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tern/graph.h"
#include "tern/tensor.h"

namespace tern::bench {

// What the lowering did for one batch size, so a report can say which fusions oneDNN got.
struct OneDnnPlanSummary {
  int primitives = 0;         // executed per run, reorders included
  int convolutions = 0;
  int fused_sums = 0;         // residual Adds folded into a convolution as a sum post-op
  int fused_activations = 0;  // Relu/Clip nodes folded into the preceding primitive
  int reorders = 0;           // executed per run: layout changes and the copy-out (not the one-off weight reorders)
  std::string to_string() const;
};

struct OneDnnRunnerOptions {
  // OpenMP's thread count (Debian's oneDNN uses OpenMP), set for the constructing thread.
  int threads = 2;
  // Residual Adds as sum post-ops and Relu/Clip nodes as eltwise post-ops. Off: one primitive
  // per node, to measure what the fusion is worth.
  bool fuse = true;
};

class OneDnnFp32Runner {
 public:
  // Keeps a copy of the graph; primitives are created lazily, once per batch size.
  explicit OneDnnFp32Runner(const Graph& graph, OneDnnRunnerOptions options = {});
  ~OneDnnFp32Runner();
  OneDnnFp32Runner(const OneDnnFp32Runner&) = delete;
  OneDnnFp32Runner& operator=(const OneDnnFp32Runner&) = delete;

  // Creates the primitives and reorders the weights for this batch size (run() does it on first
  // use; call it up front to keep setup out of timings). Throws Error naming the node for an
  // operator or attribute the lowering does not support.
  const OneDnnPlanSummary& prepare(int64_t batch);

  // Runs one NCHW float batch; returns the single graph output in plain (row-major) layout.
  Tensor run(const Tensor& input);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// How far two outputs are apart, scaled by the reference's magnitude: per-element relative error is
// meaningless for logits near zero.
struct OutputAgreement {
  double max_abs_diff = 0;
  double max_abs_reference = 0;
  double relative() const { return max_abs_reference > 0 ? max_abs_diff / max_abs_reference : max_abs_diff; }
};

// Throws Error when the shapes differ.
OutputAgreement compare_outputs(const Tensor& got, const Tensor& reference);

// The oneDNN library actually loaded, e.g. "2.6.3", for reports.
std::string onednn_version();

}  // namespace tern::bench
