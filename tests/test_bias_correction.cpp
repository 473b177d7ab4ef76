// Empirical bias correction (quantize_model with bias_correction): a corrected layer's mean output
// per channel equals the FP32 layer's on the calibration images, padding, strides and groups included.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"

namespace tern::testing {
namespace {

namespace q = tern::quant;

// Mean of every channel (dim 1 of [N, C, ...], or the last dim of [N, C]) of the graph's output.
std::vector<double> channel_means(const Graph& g, const Tensor& x) {
  Executor e(g);
  Tensor y = e.run(x);
  const int64_t C = y.dim(1), spatial = y.size() / (y.dim(0) * C);
  std::vector<double> m(static_cast<size_t>(C), 0.0);
  for (int64_t n = 0; n < y.dim(0); ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t s = 0; s < spatial; ++s) m[static_cast<size_t>(c)] += y.data<float>()[(n * C + c) * spatial + s];
  for (double& v : m) v /= static_cast<double>(y.dim(0) * spatial);
  return m;
}

// Weights whose ternary rounding shifts the means: mostly small and positive, a few large.
std::vector<float> skewed(size_t n, uint32_t seed) {
  std::vector<float> w = random_floats(n, seed);
  for (size_t i = 0; i < n; ++i) w[i] = i % 7 == 0 ? 2.0f * w[i] : 0.1f * std::fabs(w[i]) + 0.02f;
  return w;
}

q::QuantizeOptions ternary(bool correct) {
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.depthwise_8bit = false;
  o.bias_correction = correct;
  o.bias_correction_images = 1000;  // every calibration image
  o.batch = 5;                      // several batches, one short
  return o;
}

double largest_gap(const std::vector<double>& a, const std::vector<double>& b) {
  double d = 0;
  for (size_t i = 0; i < a.size(); ++i) d = std::max(d, std::fabs(a[i] - b[i]));
  return d;
}

// One layer: after correction, its mean output per channel is FP32's (exactly, up to float sums).
void expect_means_restored(const Graph& g, const Tensor& images) {
  std::vector<double> fp32 = channel_means(g, images);
  q::QuantizedModel plain = q::quantize_model(g, ternary(false), &images);
  q::QuantizedModel corrected = q::quantize_model(g, ternary(true), &images);
  double before = largest_gap(channel_means(q::simulation_graph(plain), images), fp32);
  double after = largest_gap(channel_means(q::simulation_graph(corrected), images), fp32);
  EXPECT_GT(before, 1e-2) << "the test needs quantization that shifts the means";
  // Exact but for the int32 bias's rounding: half a step of input scale x weight scale.
  ASSERT_EQ(corrected.layers.size(), 1u);
  const std::vector<float>& step = corrected.layers[0].bias_scale;
  ASSERT_FALSE(step.empty());
  EXPECT_LT(after, 0.5 * *std::max_element(step.begin(), step.end()) + 1e-4) << "before " << before;
  EXPECT_LT(after, before / 10);
  nlohmann::json prov = nlohmann::json::parse(corrected.provenance_json);
  EXPECT_EQ(prov["bias_correction"]["layers_corrected"].get<int>(), 1);
}

TEST(BiasCorrection, ConvWithPaddingStridesAndGroupsGetsFp32sMeans) {
  OnnxBuilder b;
  b.input("x", {-1, 4, 9, 7});
  b.floats("w", {6, 2, 3, 3}, skewed(108, 1));
  b.floats("b", {6}, random_floats(6, 2));
  auto& c = b.node("Conv", {"x", "w", "b"}, {"y"}, "conv");
  OnnxBuilder::attr(c, "pads", std::vector<int64_t>{1, 2, 0, 1});
  OnnxBuilder::attr(c, "strides", std::vector<int64_t>{2, 1});
  OnnxBuilder::attr(c, "group", int64_t{2});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "conv.onnx");
  std::vector<float> x = random_floats(12 * 4 * 9 * 7, 3);
  for (float& v : x) v = v + 0.7f;  // non-zero means, so the weights' shift shows
  expect_means_restored(g, Tensor::from_floats({12, 4, 9, 7}, x));
}

// x [N, 16] -> Gemm with skewed weights and a bias -> y [N, 5].
Graph skewed_gemm() {
  OnnxBuilder b;
  b.input("x", {-1, 16});
  b.floats("w", {16, 5}, skewed(80, 4));
  b.floats("b", {5}, random_floats(5, 5));
  b.node("Gemm", {"x", "w", "b"}, {"y"}, "fc");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "fc.onnx");
  return g;
}

TEST(BiasCorrection, GemmGetsFp32sMeans) {
  Graph g = skewed_gemm();
  std::vector<float> x = random_floats(40 * 16, 6);
  for (float& v : x) v = v + 0.5f;
  expect_means_restored(g, Tensor::from_floats({40, 16}, x));
}

TEST(BiasCorrection, NeedsCalibrationImages) {
  Graph g = skewed_gemm();
  q::QuantizeOptions o = ternary(true);
  o.activation_mode = q::ActivationMode::kDynamic;
  EXPECT_THROW(q::quantize_model(g, o, nullptr), Error);
}

}  // namespace
}  // namespace tern::testing
