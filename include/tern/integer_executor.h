// The integer engine: runs a quantized model with integer arithmetic.
//
// Quantized Conv/Gemm layers multiply u8 activation codes (signed codes offset by 128: VNNI
// multiplies u8 x s8) by integer weights with int32 accumulation (kernels/int8/: AVX-512 VNNI,
// AVX2 or scalar, chosen from CPUID; TERN_ISA forces one) and scale the sums back:
//     y[o] = sum_terms acc_j[o] * input_scale * step_j[o] + bias[o], clamped (fused ReLU/ReLU6).
// Integer weights: a ternary code times its 7-bit group unit (two-level scales), an int8/int4
// code, or a +-1 code with one scale per filter; step_j[o] is the term's per-filter step. Ternary
// weights stay at 2 bits (kernels/int8/ternary_panels.h) and are decoded only into a transient
// buffer (or in registers, for the streaming GEMV). Residual edges are extra terms over the same
// activations; set_level() changes which terms run, without repacking anything.
//
// Two modes:
//  - the fused integer program (exec/integer_program.h), whenever every layer has an integer
//    form and every operation between them has an integer implementation: activations stay u8
//    codes from layer to layer (float32 only where the simulation needs the unrounded value: a
//    residual Add's operand, average pooling, the output), each layer's epilogue fuses bias,
//    ReLU, residual Add and requantization, and no float weights are kept;
//  - the hybrid graph otherwise: integer layers inside the FP32 executor's graph, float tensors
//    between them, layers without an exact integer form (float32 group scales with several groups
//    per filter, logarithmic units, int4 codes times units above 127) in float.
// Both compute the simulation's values up to float rounding (tests: within 1e-4 of its outputs).
// With a pool of several threads, the fused program is compiled once more per thread without one:
// a batch of several images runs each image whole on one thread (its activations stay in that
// core's caches, no layer waits for the other core), the same values as one image at a time.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tern/executor.h"
#include "tern/quantized_model.h"

namespace tern {

struct IntegerLayerInfo {
  std::string node;
  std::string kernel;  // e.g. "ternary implicit-GEMM avx512-vnni implicit + Add + Relu", "float32 (why)"
};

struct IntegerEngineOptions {
  bool fused = true;  // false: always the hybrid graph (for comparisons)
};

class IntegerExecutor : public InferenceEngine {
 public:
  explicit IntegerExecutor(quant::QuantizedModel model, ExecutorOptions options = {}, IntegerEngineOptions engine = {});
  ~IntegerExecutor() override;
  IntegerExecutor(IntegerExecutor&&) noexcept;
  IntegerExecutor& operator=(IntegerExecutor&&) noexcept;

  const Graph& graph() const override;
  std::vector<Tensor> run(std::span<const Tensor> inputs) override;
  using InferenceEngine::run;
  std::vector<NodeProfile> profile() const override;  // per program step (ExecutorOptions::profile)

  // Residual levels (quantized_model.h): takes effect at the next run(); throws Error outside
  // 0..max_level() and leaves the level as it was.
  void set_level(int level);
  int level() const;
  int max_level() const;

  const std::vector<IntegerLayerInfo>& layers() const;
  bool fused() const;
  // "fused integer program" (with ", batches image by image ..." where a batch of several images
  // runs each image through one thread's copy of the program) or "hybrid (why)".
  std::string mode() const;
  std::vector<std::string> steps() const;  // the fused program's steps, one line each

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern
