// The integer engine: runs a quantized model's Conv/Gemm layers with integer arithmetic.
//
// Each quantized layer quantizes its input to its u8/s8 activation codes (the same rounding as the
// simulation's FakeQuantize), multiplies them by its integer weights with int32 accumulation
// (kernels/int8/qgemm.h: AVX-512 VNNI, AVX2 or scalar) and scales the sums back:
//     y[o] = sum_terms (acc_j[o] * input_scale * step_j[o]) + bias[o], clamped (fused ReLU/ReLU6).
// Integer weights: a ternary code times its 7-bit group unit (two-level scales), an int8/int4
// code, or a +-1 code with one scale per filter; step_j[o] is the term's per-filter step (or the
// filter's scale). Ternary layers keep their codes at 2 bits (kernels/int8/ternary_panels.h) and
// decode them to int8 panels right before each use; no int8 copy of ternary weights is kept.
// Residual edges are separate terms over the same activation codes; set_level() changes which
// terms run, without repacking anything.
//
// Layers whose weights have no exact integer form (float32 group scales with several groups per
// filter, logarithmic scale units, int4 codes times group units above 127) run their simulation
// in float; layers() says which kernel every layer uses and why. Other ops (pooling, Add, ...)
// run on the FP32 executor, so activations between layers are float tensors in this version.
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
  std::string kernel;  // e.g. "ternary-panels x2 avx512-vnni", "int8 avx2", "float32 (why)"
};

class IntegerExecutor {
 public:
  explicit IntegerExecutor(quant::QuantizedModel model, ExecutorOptions options = {});
  ~IntegerExecutor();
  IntegerExecutor(IntegerExecutor&&) noexcept;
  IntegerExecutor& operator=(IntegerExecutor&&) noexcept;

  std::vector<Tensor> run(std::span<const Tensor> inputs);
  Tensor run(const Tensor& input);

  // Residual levels (quantized_model.h): takes effect at the next run(); throws Error outside
  // 0..max_level() and leaves the level as it was.
  void set_level(int level);
  int level() const;
  int max_level() const;

  const std::vector<IntegerLayerInfo>& layers() const;
  Executor& executor();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern
