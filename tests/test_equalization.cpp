// Function-preserving rescalings (tern/equalization.h): cross-layer equalization keeps the FP32
// outputs, balances every pair's channel ranges, stops at a clamp that is not scale-equivariant,
// and makes per-tensor int8 weights more accurate; SmoothQuant keeps the outputs and lowers the
// W8A8 error of a linear layer whose input has outlier channels.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "onnx_builder.h"
#include "tern/equalization.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"

namespace tern::testing {
namespace {

namespace q = tern::quant;
using B = OnnxBuilder;

// Scales output channel o of [O, ...] weights by 10^((o % 5) - 2): ranges 100x apart.
std::vector<float> uneven_rows(int64_t rows, int64_t per_row, uint32_t seed) {
  std::vector<float> w = random_floats(static_cast<size_t>(rows * per_row), seed);
  for (int64_t o = 0; o < rows; ++o)
    for (int64_t k = 0; k < per_row; ++k) w[static_cast<size_t>(o * per_row + k)] *= std::pow(10.0f, static_cast<float>(o % 5 - 2));
  return w;
}

double relative_gap(const Tensor& a, const Tensor& b) {
  double d = 0, m = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    d = std::max(d, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
    m = std::max(m, std::fabs(static_cast<double>(b.data<float>()[i])));
  }
  return d / m;
}

double squared_error(const Tensor& a, const Tensor& b) {
  double e = 0;
  for (int64_t i = 0; i < a.size(); ++i) e += std::pow(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i], 2);
  return e;
}

// x -> pointwise (ReLU) -> depthwise 3x3 -> pointwise -> Clip(0, 6) -> pointwise.
Graph chain() {
  B b;
  b.input("x", {-1, 3, 6, 6});
  b.floats("w1", {8, 3, 1, 1}, uneven_rows(8, 3, 1));
  b.floats("b1", {8}, random_floats(8, 2));
  b.floats("w2", {8, 1, 3, 3}, random_floats(72, 3));
  b.floats("w3", {4, 8, 1, 1}, random_floats(32, 4));
  b.floats("w4", {2, 4, 1, 1}, random_floats(8, 5));
  b.node("Conv", {"x", "w1", "b1"}, {"a"}, "pw1");
  b.node("Relu", {"a"}, {"ar"});
  auto& dw = b.node("Conv", {"ar", "w2"}, {"d"}, "dw");
  B::attr(dw, "group", int64_t{8});
  B::attr(dw, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Conv", {"d", "w3"}, {"p"}, "pw2");
  b.floats("zero", {}, {0.0f});
  b.floats("six", {}, {6.0f});
  b.node("Clip", {"p", "zero", "six"}, {"pc"});
  b.node("Conv", {"pc", "w4"}, {"y"}, "pw3");
  b.output("y");
  return import_onnx_bytes(b.bytes(), "chain.onnx");
}

const Tensor& weights_of(const Graph& g, const std::string& node) {
  for (const Node& n : g.nodes)
    if (n.name == node) return g.constant(n.inputs[1]);
  throw Error("no node " + node);
}

TEST(CrossLayerEqualization, KeepsTheFunctionAndBalancesEveryPair) {
  Graph g = chain();
  Graph e = g;
  EqualizationReport r = equalize_cross_layer(e);
  ASSERT_EQ(r.pairs.size(), 2u);  // pw1-dw and dw-pw2; the ReLU6 (clip 0..6) ends the chain
  EXPECT_EQ(r.pairs[0], std::make_pair(std::string("pw1"), std::string("dw")));
  EXPECT_EQ(r.pairs[1], std::make_pair(std::string("dw"), std::string("pw2")));
  EXPECT_LT(r.sweeps, 32);
  Tensor x = Tensor::from_floats({4, 3, 6, 6}, random_floats(432, 9));
  EXPECT_LT(relative_gap(Executor(e).run(x), Executor(g).run(x)), 1e-5);
  // Balanced: in each pair, output channel i of the first and input channel i of the second have
  // the same max |w| (the depthwise channel's one filter serves as both).
  const Tensor& w1 = weights_of(e, "pw1");
  const Tensor& w2 = weights_of(e, "dw");
  const Tensor& w3 = weights_of(e, "pw2");
  for (int64_t i = 0; i < 8; ++i) {
    float r1 = 0, r2 = 0, r3 = 0;
    for (int64_t k = 0; k < 3; ++k) r1 = std::max(r1, std::fabs(w1.data<float>()[i * 3 + k]));
    for (int64_t k = 0; k < 9; ++k) r2 = std::max(r2, std::fabs(w2.data<float>()[i * 9 + k]));
    for (int64_t o = 0; o < 4; ++o) r3 = std::max(r3, std::fabs(w3.data<float>()[o * 8 + i]));
    EXPECT_NEAR(r1 / r2, 1.0, 0.01) << "channel " << i;
    EXPECT_NEAR(r2 / r3, 1.0, 0.01) << "channel " << i;
  }
  // pw3 after the clip is untouched.
  const Tensor& w4 = weights_of(e, "pw3");
  const Tensor& w4_before = weights_of(g, "pw3");
  for (int64_t i = 0; i < w4.size(); ++i) EXPECT_EQ(w4.data<float>()[i], w4_before.data<float>()[i]);
}

// x -> 3x3 Conv (ReLU) -> 1x1 Conv, a balanced pair with a hidden channel rescaling: output channel
// i of the first divided by 10^((i % 5) - 2), the second's input channel i multiplied by it (what
// BatchNorm folding often leaves). The function is the balanced pair's.
Graph hidden_scales() {
  B b;
  b.input("x", {-1, 3, 6, 6});
  std::vector<float> w1 = random_floats(8 * 27, 31), w2 = random_floats(4 * 8, 32);
  for (int64_t i = 0; i < 8; ++i) {
    float s = std::pow(10.0f, static_cast<float>(i % 5 - 2));
    for (int64_t k = 0; k < 27; ++k) w1[static_cast<size_t>(i * 27 + k)] /= s;
    for (int64_t o = 0; o < 4; ++o) w2[static_cast<size_t>(o * 8 + i)] *= s;
  }
  b.floats("w1", {8, 3, 3, 3}, w1);
  b.floats("w2", {4, 8, 1, 1}, w2);
  auto& c = b.node("Conv", {"x", "w1"}, {"a"}, "conv1");
  B::attr(c, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"a"}, {"ar"});
  b.node("Conv", {"ar", "w2"}, {"y"}, "conv2");
  b.output("y");
  return import_onnx_bytes(b.bytes(), "hidden.onnx");
}

TEST(CrossLayerEqualization, MakesPerTensorInt8WeightsMoreAccurate) {
  Graph g = hidden_scales();
  Tensor x = Tensor::from_floats({32, 3, 6, 6}, random_floats(32 * 108, 11));
  Tensor want = Executor(g).run(x);
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, -1};  // one scale per tensor
  o.plan.activation_bits = 0;                                                  // weights alone
  double plain = squared_error(Executor(q::simulation_graph(q::quantize_model(g, o, &x))).run(x), want);
  o.equalize = true;
  q::QuantizedModel m = q::quantize_model(g, o, &x);
  double equalized = squared_error(Executor(q::simulation_graph(m)).run(x), want);
  EXPECT_LT(equalized, 0.1 * plain) << "plain " << plain << ", equalized " << equalized;
  auto prov = nlohmann::json::parse(m.provenance_json);
  EXPECT_EQ(prov["equalization"]["pairs"].size(), 1u);
  // The weights it replaced are gone: the model is no larger than without equalization.
  o.equalize = false;
  q::QuantizedModel plain_model = q::quantize_model(g, o, &x);
  EXPECT_EQ(q::model_size(m).fp32, q::model_size(plain_model).fp32);
  EXPECT_EQ(q::model_size(m).quantized, q::model_size(plain_model).quantized);
  auto constants = [](const Graph& graph) {
    int64_t n = 0;
    for (const Value& v : graph.values) n += v.constant.has_value();
    return n;
  };
  EXPECT_EQ(constants(m.graph), constants(plain_model.graph));
}

// x [N, T, 16] -> Mul(gamma) -> Add(beta) -> MatMul(W [16, 8]) (a LayerNorm's tail and a linear
// layer); channels 3 and 11 of x are outliers (50x).
// transposed: a Transpose to sequence-first ([T, N, 16], the channels still last) before the MatMul,
// as torchvision's attention does.
Graph linear_after_affine(bool transposed = false) {
  B b;
  b.input("x", {-1, 5, 16});
  std::vector<float> gamma = random_floats(16, 21);
  for (float& v : gamma) v = 1.0f + 0.2f * v;
  gamma[3] *= 50.0f;
  gamma[11] *= -50.0f;
  b.floats("gamma", {16}, gamma);
  b.floats("beta", {16}, random_floats(16, 22));
  b.floats("w", {16, 8}, random_floats(128, 23));
  b.node("Mul", {"x", "gamma"}, {"g"});
  b.node("Add", {"g", "beta"}, {"h"});
  if (transposed) {
    auto& t = b.node("Transpose", {"h"}, {"ht"});
    B::attr(t, "perm", std::vector<int64_t>{1, 0, 2});
  }
  b.node("MatMul", {transposed ? "ht" : "h", "w"}, {"y"}, "fc");
  b.output("y");
  return import_onnx_bytes(b.bytes(), "affine.onnx");
}

TEST(SmoothQuant, KeepsTheFunctionAndLowersTheInt8Error) {
  Graph g = linear_after_affine();
  Tensor x = Tensor::from_floats({64, 5, 16}, random_floats(64 * 80, 24));
  Graph s = g;
  SmoothingReport r = smooth_activations(s, x, 0.5, 16);
  ASSERT_EQ(r.inputs.size(), 1u);
  Tensor want = Executor(g).run(x);
  EXPECT_LT(relative_gap(Executor(s).run(x), want), 1e-5);

  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
  o.calibration = q::CalibrationMethod::kMinMax;
  double plain = squared_error(Executor(q::simulation_graph(q::quantize_model(g, o, &x))).run(x), want);
  o.smooth_alpha = 0.5;
  q::QuantizedModel m = q::quantize_model(g, o, &x);
  double smoothed = squared_error(Executor(q::simulation_graph(m)).run(x), want);
  EXPECT_LT(smoothed, 0.5 * plain) << "plain " << plain << ", smoothed " << smoothed;
  EXPECT_EQ(nlohmann::json::parse(m.provenance_json)["smoothing"]["inputs"].size(), 1u);
  o.smooth_alpha = 1.5;
  EXPECT_THROW(q::quantize_model(g, o, &x), Error);
  o.smooth_alpha = 0.5;
  EXPECT_THROW(q::quantize_model(g, o, nullptr), Error);  // nothing to measure on
}

TEST(SmoothQuant, SeesThroughATransposeThatKeepsTheChannelsLast) {
  Graph g = linear_after_affine(true);
  Tensor x = Tensor::from_floats({8, 5, 16}, random_floats(8 * 80, 26));
  Graph s = g;
  ASSERT_EQ(smooth_activations(s, x, 0.5, 8).inputs.size(), 1u);
  EXPECT_LT(relative_gap(Executor(s).run(x), Executor(g).run(x)), 1e-5);
}

TEST(SmoothQuant, LeavesAValueOtherNodesReadAlone) {
  Graph g = linear_after_affine();
  // A second reader (a residual Add) of the affine output: scaling it would change that path.
  Graph g2 = g;
  ValueId h = g2.find_value("h");
  ASSERT_NE(h, kNoValue);
  Node add;
  add.op = OpType::kAdd;
  add.name = "residual";
  add.inputs = {h, h};
  Value r;
  r.name = "r";
  add.outputs = {g2.add_value(r)};
  g2.nodes.push_back(add);
  g2.outputs.push_back(add.outputs[0]);
  Tensor x = Tensor::from_floats({8, 5, 16}, random_floats(8 * 80, 25));
  EXPECT_TRUE(smooth_activations(g2, x, 0.5, 8).inputs.empty());
}

}  // namespace
}  // namespace tern::testing
