// Fixtures shared by the training tests (test_finetune, test_train): a small model with every
// part training treats specially, and a synthetic data set it can learn.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <string>

#include "onnx_builder.h"
#include "tern/data.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"

namespace tern::testing {

// Conv(1->4, no bias) + BatchNorm + Relu, Conv(4->8, stride 2, bias) + Relu, global average pool,
// Flatten, Gemm(8->3): every part fine-tuning treats specially, in 12x12 images.
inline std::string small_model_bytes() {
  OnnxBuilder b;
  b.input("x", {-1, 1, 12, 12}).output("y");
  b.floats("w1", {4, 1, 3, 3}, random_floats(36, 1));
  b.floats("gamma", {4}, {1.0f, 0.8f, 1.2f, 0.9f});
  b.floats("beta", {4}, {0.1f, -0.1f, 0.05f, 0.0f});
  b.floats("mean", {4}, {0.02f, -0.03f, 0.01f, 0.0f});
  b.floats("var", {4}, {0.5f, 0.7f, 0.9f, 1.1f});
  b.floats("w2", {8, 4, 3, 3}, random_floats(288, 2));
  b.floats("b2", {8}, random_floats(8, 3));
  std::vector<float> w3 = random_floats(24, 4);
  b.floats("w3", {3, 8}, w3);
  b.floats("b3", {3}, {0.0f, 0.1f, -0.1f});
  auto& c1 = b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("BatchNormalization", {"c1", "gamma", "beta", "mean", "var"}, {"n1"}, "bn1");
  b.node("Relu", {"n1"}, {"r1"}, "relu1");
  auto& c2 = b.node("Conv", {"r1", "w2", "b2"}, {"c2"}, "conv2");
  OnnxBuilder::attr(c2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(c2, "strides", std::vector<int64_t>{2, 2});
  b.node("Relu", {"c2"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "w3", "b3"}, {"y"}, "fc");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  return b.bytes();
}

inline Graph training_graph(const std::string& bytes) {
  ImportOptions raw;
  raw.optimize = false;
  Graph g = import_onnx_bytes(bytes, "small.onnx", raw);
  optimize(g, OptimizeOptions{.fold_batchnorm = false, .fuse_activations = false});
  return g;
}

// Three classes a small network can learn after global pooling: horizontal stripes, vertical
// stripes, a plain bright square; with noise.
inline Dataset synthetic_dataset(int64_t n) {
  Dataset d;
  d.name = "synthetic";
  d.images = Tensor(DataType::kUInt8, {n, 12, 12});
  std::vector<float> noise = random_floats(static_cast<size_t>(n * 144), 7);
  for (int64_t i = 0; i < n; ++i) {
    int64_t label = i % 3;
    d.labels.push_back(label);
    for (int64_t y = 0; y < 12; ++y)
      for (int64_t x = 0; x < 12; ++x) {
        bool on = label == 0 ? y % 2 == 0 : label == 1 ? x % 2 == 0 : (y >= 3 && y < 9 && x >= 3 && x < 9);
        float v = (on ? 160.0f : 50.0f) + 40.0f * noise[static_cast<size_t>(i * 144 + y * 12 + x)];
        d.images.data<uint8_t>()[i * 144 + y * 12 + x] = static_cast<uint8_t>(std::clamp(v, 0.0f, 255.0f));
      }
  }
  return d;
}

struct ThreadsGuard {  // one thread: results must be exactly reproducible
  int before = torch::get_num_threads();
  ThreadsGuard() { torch::set_num_threads(1); }
  ~ThreadsGuard() { torch::set_num_threads(before); }
};

}  // namespace tern::testing
