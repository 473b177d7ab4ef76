// Output-aware rounding (output_aware.h) and the data-free BatchNorm mode of quantize_model.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "onnx_builder.h"
#include "tern/batchnorm_ranges.h"
#include "tern/onnx_import.h"
#include "tern/output_aware.h"
#include "tern/passes.h"
#include "tern/quantized_model.h"
#include "tern/tern_file.h"

namespace tern::testing {
namespace {

namespace q = tern::quant;

// A Gemm layer and correlated inputs (a shared latent factor), so that H is far from diagonal:
// where per-weight rounding and output-aware rounding differ most.
struct GemmCase {
  Graph graph;
  Node node;
  std::vector<float> weights;
  Tensor inputs;
  int64_t out = 12, in = 24;
};

GemmCase gemm_case(uint32_t seed) {
  GemmCase c;
  OnnxBuilder b;
  b.input("x", {-1, c.in});
  c.weights = random_floats(static_cast<size_t>(c.out * c.in), seed);
  b.floats("w", {c.out, c.in}, c.weights);
  auto& n = b.node("Gemm", {"x", "w"}, {"y"}, "fc");
  OnnxBuilder::attr(n, "transB", int64_t{1});
  b.output("y");
  c.graph = import_onnx_bytes(b.bytes(), "gemm.onnx");
  c.node = c.graph.nodes.at(0);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  const int64_t samples = 400;
  std::vector<float> x(static_cast<size_t>(samples * c.in));
  for (int64_t s = 0; s < samples; ++s) {
    float shared = normal(rng);
    for (int64_t i = 0; i < c.in; ++i) x[static_cast<size_t>(s * c.in + i)] = shared + 0.3f * normal(rng);
  }
  c.inputs = Tensor::from_floats({samples, c.in}, x);
  return c;
}

TEST(OutputAware, NeverWorseOnTheOutputThanPerGroupRounding) {
  for (uint32_t seed : {1u, 2u, 3u}) {
    GemmCase c = gemm_case(seed);
    q::InputCovariance cov(c.graph, c.node, c.in, 1);
    cov.add(c.inputs, nullptr);
    EXPECT_EQ(cov.samples(), c.inputs.dim(0));
    for (q::TernaryMethod m : {q::TernaryMethod::kFgq, q::TernaryMethod::kTwn, q::TernaryMethod::kTnt}) {
      q::WeightQuantConfig config{q::WeightFormat::kTernary, m, 2, 4};
      q::QuantizedWeights plain = q::quantize_weights(c.weights, c.out, c.in, 1, config);
      q::QuantizedWeights aware = q::quantize_weights_output_aware(c.weights, c.out, c.in, 1, config, cov);
      double e_plain = q::relative_output_error(c.weights, plain, cov);
      double e_aware = q::relative_output_error(c.weights, aware, cov);
      EXPECT_LT(e_aware, e_plain) << "seed " << seed << " method " << static_cast<int>(m);
      // Same format: codes in range, two-level scales (u8 x the same per-filter steps).
      ASSERT_EQ(aware.codes.size(), plain.codes.size());
      for (int8_t code : aware.codes) EXPECT_TRUE(code >= -1 && code <= 1);
      ASSERT_EQ(aware.filter_steps.size(), plain.filter_steps.size());
      const int64_t per_filter = aware.grouping.groups_per_filter();
      for (size_t g = 0; g < aware.scales.size(); ++g) {
        float step = aware.filter_steps[g / static_cast<size_t>(per_filter)];
        float u = std::round(aware.scales[g].positive / step);
        EXPECT_TRUE(u >= 0 && u <= q::kScaleUnitMax && u * step == aware.scales[g].positive);
      }
    }
  }
}

TEST(OutputAware, TwoLevelGridCoversTheCompensatedScales) {
  // Error feedback can push a group's scale above every scale of the original weights; the 8-bit
  // grid must cover it rather than clamp it. Linear and logarithmic grids stay within their
  // resolution of the float-scale result.
  GemmCase c = gemm_case(9);
  q::InputCovariance cov(c.graph, c.node, c.in, 1);
  cov.add(c.inputs, nullptr);
  q::WeightQuantConfig config{q::WeightFormat::kTernary, q::TernaryMethod::kFgq, 2, 4};
  config.float_scales = true;
  double exact = q::relative_output_error(c.weights, q::quantize_weights_output_aware(c.weights, c.out, c.in, 1, config, cov), cov);
  for (bool log : {false, true}) {
    config.float_scales = false;
    config.log_scales = log;
    q::QuantizedWeights grid = q::quantize_weights_output_aware(c.weights, c.out, c.in, 1, config, cov);
    EXPECT_LT(q::relative_output_error(c.weights, grid, cov), exact * 1.1 + 1e-3) << (log ? "log" : "linear");
    for (size_t g = 0; g < grid.scales.size(); ++g) {
      float step = grid.filter_steps[g / static_cast<size_t>(grid.grouping.groups_per_filter())];
      EXPECT_EQ(q::unit_scale(q::scale_unit(grid.scales[g].positive, step, log), step, log), grid.scales[g].positive);
    }
  }
}

TEST(OutputAware, IntegerWeightsAndFloatScales) {
  GemmCase c = gemm_case(7);
  q::InputCovariance cov(c.graph, c.node, c.in, 1);
  cov.add(c.inputs, nullptr);
  q::WeightQuantConfig int4{q::WeightFormat::kInt, q::TernaryMethod::kFgq, 4, 8};
  int4.float_scales = true;
  q::QuantizedWeights plain = q::quantize_weights(c.weights, c.out, c.in, 1, int4);
  q::QuantizedWeights aware = q::quantize_weights_output_aware(c.weights, c.out, c.in, 1, int4, cov);
  EXPECT_TRUE(aware.filter_steps.empty());
  for (int8_t code : aware.codes) EXPECT_TRUE(code >= -7 && code <= 7);
  EXPECT_LE(q::relative_output_error(c.weights, aware, cov), q::relative_output_error(c.weights, plain, cov));
}

TEST(OutputAware, ConvCovarianceMatchesExplicitPatches) {
  // x[1,2,3,3], 2x2 kernel, pad 1 on the top/left only, stride 1: every im2col patch by hand.
  OnnxBuilder b;
  b.input("x", {-1, 2, 3, 3});
  b.floats("w", {1, 2, 2, 2}, random_floats(8, 3));
  auto& n = b.node("Conv", {"x", "w"}, {"y"}, "conv");
  OnnxBuilder::attr(n, "pads", std::vector<int64_t>{1, 1, 0, 0});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "conv.onnx");
  std::vector<float> xv = random_floats(18, 4);
  Tensor x = Tensor::from_floats({1, 2, 3, 3}, xv);
  q::InputCovariance cov(g, g.nodes.at(0), 2, 4);
  cov.add(x, nullptr);
  std::vector<double> h(64, 0.0);
  int64_t patches = 0;
  for (int64_t oy = 0; oy < 3; ++oy)
    for (int64_t ox = 0; ox < 3; ++ox, ++patches) {
      double p[8] = {};
      for (int64_t c = 0; c < 2; ++c)
        for (int64_t i = 0; i < 2; ++i)
          for (int64_t j = 0; j < 2; ++j) {
            int64_t yy = oy - 1 + i, xx = ox - 1 + j;
            if (yy >= 0 && yy < 3 && xx >= 0 && xx < 3) p[c * 4 + i * 2 + j] = xv[static_cast<size_t>(c * 9 + yy * 3 + xx)];
          }
      for (int a = 0; a < 8; ++a)
        for (int k = 0; k < 8; ++k) h[static_cast<size_t>(a * 8 + k)] += p[a] * p[k];
    }
  EXPECT_EQ(cov.samples(), patches);
  for (size_t i = 0; i < h.size(); ++i) EXPECT_NEAR(cov.matrix(0)[i], h[i], 1e-5) << i;
}

// Data-free quantization from BatchNorm statistics: Conv -> BN -> Relu -> Conv, as exported by a
// framework that keeps BatchNorm.
TEST(DataFree, BatchNormStatisticsGiveStaticScales) {
  OnnxBuilder b;
  b.input("x", {-1, 4, 6, 6});
  b.floats("w1", {8, 4, 3, 3}, random_floats(288, 21));
  b.floats("gamma", {8}, {1, 2, 0.5f, 1, 1, 3, 1, 1});
  b.floats("beta", {8}, {0, 1, 0, -1, 0.5f, 0, 0, 2});
  b.floats("mean", {8}, std::vector<float>(8, 0.1f));
  b.floats("var", {8}, std::vector<float>(8, 4.0f));
  b.floats("w2", {8, 8, 3, 3}, random_floats(576, 22));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("BatchNormalization", {"c1", "gamma", "beta", "mean", "var"}, {"bn"}, "bn1");
  b.node("Relu", {"bn"}, {"r"}, "relu");
  b.node("Conv", {"r", "w2"}, {"y"}, "conv2");
  b.output("y");
  ImportOptions raw;
  raw.optimize = false;
  Graph g = import_onnx_bytes(b.bytes(), "bn.onnx", raw);
  q::QuantizeOptions options;
  options.activation_mode = q::ActivationMode::kBatchNorm;
  options.plan.first_last_8bit = false;
  for (const auto& [name, r] : q::batchnorm_ranges(g, std::make_pair(-1.0f, 1.0f)))
    options.static_thresholds[name] = {r.threshold, r.source};
  optimize(g);
  q::QuantizedModel m = q::quantize_model(g, options, nullptr);
  ASSERT_EQ(m.layers.size(), 2u);
  const q::QuantizedLayer* second = m.find(g.nodes.back().name);
  ASSERT_NE(second, nullptr);
  ASSERT_TRUE(second->input.has_value());
  const q::ActivationQuant& a = *second->input;
  EXPECT_FALSE(a.dynamic);
  EXPECT_TRUE(a.is_unsigned);
  EXPECT_NE(a.source.find("batchnorm"), std::string::npos) << a.source;
  // After Relu, T = max_c min(beta_c + 4 |gamma_c|) = 0 + 4 * 3 = 12: the channel with gamma 3.
  EXPECT_NEAR(a.threshold, 12.0f, 1e-4);
  EXPECT_NEAR(a.scale, 12.0f / 255.0f, 1e-6);
  // The first layer reads the known input range; without it, it would be dynamic.
  EXPECT_FALSE(m.layers[0].input->dynamic);
  EXPECT_EQ(m.layers[0].input->source, "input range");
}

TEST(Calibration, TheModelInputUsesItsKnownRange) {
  OnnxBuilder b;
  b.input("x", {-1, 2, 5, 5});
  b.floats("w1", {4, 2, 3, 3}, random_floats(72, 31));
  b.floats("w2", {3, 4, 3, 3}, random_floats(108, 32));
  b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  b.node("Relu", {"c1"}, {"r"}, "relu");
  b.node("Conv", {"r", "w2"}, {"y"}, "conv2");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "two.onnx");
  // Images with a spike at the background value -0.8 (what misleads histogram calibration).
  std::vector<float> px = random_floats(16 * 50, 33);
  for (size_t i = 0; i < px.size(); ++i) px[i] = i % 3 ? -0.8f : 0.8f + std::fabs(px[i]);
  Tensor images = Tensor::from_floats({16, 2, 5, 5}, px);
  q::QuantizeOptions options;
  options.calibration = q::CalibrationMethod::kEntropy;
  options.input_threshold = 2.5f;
  q::QuantizedModel m = q::quantize_model(g, options, &images);
  ASSERT_EQ(m.layers.size(), 2u);
  EXPECT_EQ(m.layers[0].input->source, "input range");
  EXPECT_FLOAT_EQ(m.layers[0].input->threshold, 2.5f);
  EXPECT_FLOAT_EQ(m.layers[0].input->scale, 2.5f / 127.0f);  // signed input
  EXPECT_EQ(m.layers[1].input->source, "entropy");          // inner layers are calibrated
  options.input_threshold.reset();
  EXPECT_EQ(q::quantize_model(g, options, &images).layers[0].input->source, "entropy");
}

TEST(ResidualTerms, StoredSummedCountedAndRoundTripped) {
  OnnxBuilder b;
  b.input("x", {-1, 8, 5, 5});
  b.floats("w1", {8, 8, 3, 3}, random_floats(576, 41));
  b.floats("b1", {8}, random_floats(8, 42));
  b.floats("w2", {4, 8, 3, 3}, random_floats(288, 43));
  auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r"}, "relu");
  b.node("Conv", {"r", "w2"}, {"y"}, "conv2");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "res.onnx");
  Tensor images = Tensor::from_floats({8, 8, 5, 5}, random_floats(8 * 200, 44));
  q::QuantizeOptions options;
  options.plan.first_last_8bit = false;
  options.output_aware = true;
  q::QuantizedModel one = q::quantize_model(g, options, &images);
  options.residual.kind = q::ResidualBudget::Kind::kAll;  // every layer expanded to 3 terms
  options.residual_ranking = q::ResidualRanking::kUniform;
  options.residual_max_terms = 3;
  options.residual_fallback = false;
  q::QuantizedModel three = q::quantize_model(g, options, &images);
  for (size_t i = 0; i < three.layers.size(); ++i) {
    const q::QuantizedLayer& l = three.layers[i];
    ASSERT_GE(l.terms.size(), 2u);
    EXPECT_EQ(l.terms[0].codes, one.layers[i].terms[0].codes);  // the first term is the plain quantization
    EXPECT_GT(l.weight_sqnr_db, one.layers[i].weight_sqnr_db);
    EXPECT_EQ(l.multiplies_per_image(), one.layers[i].multiplies_per_image() * static_cast<int64_t>(l.terms.size()));
    // The graph holds the sum of the terms.
    std::vector<float> sum(l.terms[0].codes.size(), 0.0f);
    for (const q::QuantizedWeights& t : l.terms) {
      std::vector<float> d = t.dequantize();
      for (size_t k = 0; k < sum.size(); ++k) sum[k] += d[k];
    }
    for (const Node& n : three.graph.nodes)
      if (n.name == l.node) {
        const Tensor& w = three.graph.constant(n.inputs[1]);
        for (size_t k = 0; k < sum.size(); ++k) ASSERT_EQ(w.data<float>()[k], sum[k]);
      }
  }
  EXPECT_GT(q::model_size(three).quantized, q::model_size(one).quantized);
  q::QuantizedModel back = q::load_quantized_model(TernFile::from_bytes(q::serialize_quantized_model(three), "res.tern"));
  ASSERT_EQ(back.layers.size(), three.layers.size());
  for (size_t i = 0; i < back.layers.size(); ++i) {
    ASSERT_EQ(back.layers[i].terms.size(), three.layers[i].terms.size());
    for (size_t t = 0; t < back.layers[i].terms.size(); ++t) {
      EXPECT_EQ(back.layers[i].terms[t].codes, three.layers[i].terms[t].codes);
      EXPECT_EQ(back.layers[i].terms[t].filter_steps, three.layers[i].terms[t].filter_steps);
    }
  }
  back.graph.source = three.graph.source;  // the loader names the graph after the file it read
  EXPECT_EQ(q::serialize_quantized_model(back), q::serialize_quantized_model(three));
}

}  // namespace
}  // namespace tern::testing
