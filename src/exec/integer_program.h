// The fused integer program: a quantized model compiled into steps over NHWC buffers of u8
// activation codes, so that activations stay integer from one quantized layer to the next.
//
// Every value the graph computes is kept in the form its readers need:
//  - as u8 codes (NHWC, signed codes offset by 128, each image inside a border of zero codes as
//    wide as its convolutions' padding) when a quantized layer reads it through operations that
//    commute with rounding: ReLU/Clip, max pooling, Flatten/Reshape, Concat (each producer writes
//    its codes straight at the reader's scale: Concat's scale alignment);
//  - as float32 NHWC where an operation needs the unrounded value (a residual Add, average
//    pooling, the graph output), which is what the simulation computes too.
// A quantized Conv/Gemm multiplies codes by integer weights (implicit-GEMM convolution: no im2col;
// a direct depthwise kernel; GEMV/streaming kernels for fully connected layers) and its epilogue
// writes every form its readers need in one pass: bias, ReLU/ReLU6, a residual Add and the ReLU
// after it, and the requantization to the next layer's codes (kernels/int8/requantize.h). Residual
// edges are more weight rows of the same multiplication (one pass over the activations).
//
// compile() returns null (and why) for graphs with anything else (float layers, dynamic shapes
// beyond the batch, ops outside the list); the engine then runs its hybrid mode.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "exec/integer_layers.h"
#include "tern/executor.h"
#include "tern/thread_pool.h"

namespace tern::integer {

class Program {
 public:
  // `graph` is the model's simulation graph; `layers` the integer layers (by node name), which
  // must outlive the program (set_level changes their active terms between runs).
  static std::unique_ptr<Program> compile(const Graph& graph, const std::vector<IntLayer>& layers, ThreadPool* pool,
                                          bool profile, std::string& why_not);
  ~Program();

  std::vector<Tensor> run(std::span<const Tensor> inputs);
  std::vector<NodeProfile> profile() const;
  // What each integer layer runs: "ternary x2 implicit-GEMM avx512-vnni", ...
  std::string kernel_of(const std::string& node) const;
  // The program's steps, one line each (for --verbose).
  std::vector<std::string> describe() const;

  struct Impl;  // opaque (integer_program.cpp)

 private:
  Program() = default;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::integer
