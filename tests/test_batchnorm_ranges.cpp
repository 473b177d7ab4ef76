// Data-free activation thresholds from BatchNorm statistics.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <filesystem>
#include <numbers>
#include <random>
#include <set>

#include "onnx_builder.h"
#include "tern/batchnorm_ranges.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"

namespace tern::testing {
namespace {

using B = OnnxBuilder;
using quant::batchnorm_ranges;
using quant::BatchNormRange;
using quant::clipped_gaussian_moments;

constexpr double kInf = std::numeric_limits<double>::infinity();

Tensor random_tensor(Shape shape, uint32_t seed) {
  Tensor t(DataType::kFloat32, shape);
  auto v = random_floats(static_cast<size_t>(t.size()), seed);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

onnx::AttributeProto int_attr(const std::string& name, int64_t v) {
  onnx::AttributeProto a;
  a.set_name(name);
  a.set_type(onnx::AttributeProto::INT);
  a.set_i(v);
  return a;
}

void add_bn(B& b, const std::string& in, const std::string& out, const std::string& prefix,
            const std::vector<float>& gamma, const std::vector<float>& beta, const std::vector<float>& mean,
            const std::vector<float>& var) {
  int64_t c = static_cast<int64_t>(gamma.size());
  b.floats(prefix + ".gamma", {c}, gamma);
  b.floats(prefix + ".beta", {c}, beta);
  b.floats(prefix + ".mean", {c}, mean);
  b.floats(prefix + ".var", {c}, var);
  b.node("BatchNormalization", {in, prefix + ".gamma", prefix + ".beta", prefix + ".mean", prefix + ".var"}, {out},
         prefix);
}

void add_conv(B& b, const std::string& in, const std::string& out, const std::string& name, int64_t cout,
              int64_t cin, int64_t kernel, uint32_t seed) {
  b.floats(name + ".w", {cout, cin, kernel, kernel},
           random_floats(static_cast<size_t>(cout * cin * kernel * kernel), seed));
  auto& conv = b.node("Conv", {in, name + ".w"}, {out}, name);
  int64_t p = kernel / 2;
  B::attr(conv, "pads", std::vector<int64_t>{p, p, p, p});
}

double bn_threshold(const std::vector<float>& gamma, const std::vector<float>& beta, double k, double hi = kInf,
                    bool relu = false) {
  double t = 0;
  for (size_t c = 0; c < gamma.size(); ++c) {
    double lo_end = beta[c] - k * std::fabs(gamma[c]), hi_end = beta[c] + k * std::fabs(gamma[c]);
    t = std::max(t, relu ? std::clamp(hi_end, 0.0, hi) : std::max(std::fabs(lo_end), std::fabs(hi_end)));
  }
  return t;
}

// Whether `name` in the unfolded graph is a BN output seen through ops that keep its statistics
// (activations, pools, reshapes, residual Adds of such values): the values batchnorm_ranges must know.
bool from_batchnorm_path(const Graph& plain, const std::string& name) {
  std::vector<int> producer = plain.producers();
  std::function<bool(ValueId)> walk = [&](ValueId id) {
    int p = producer[static_cast<size_t>(id)];
    if (p < 0) return false;
    const Node& n = plain.nodes[static_cast<size_t>(p)];
    switch (n.op) {
      case OpType::kBatchNormalization: return true;
      case OpType::kRelu: case OpType::kClip: case OpType::kIdentity: case OpType::kMaxPool:
      case OpType::kAveragePool: case OpType::kGlobalAveragePool: case OpType::kFlatten: case OpType::kReshape:
        return walk(n.inputs[0]);
      case OpType::kAdd:
        return std::all_of(n.inputs.begin(), n.inputs.end(), [&](ValueId v) { return plain.is_constant(v) || walk(v); });
      default: return false;
    }
  };
  for (size_t id = 0; id < plain.values.size(); ++id)
    if (plain.values[id].name == name) return walk(static_cast<ValueId>(id));
  return false;
}

// --- 1a. Closed-form moments of the clipped Gaussian against Monte-Carlo sampling -------------------

TEST(BatchNormRanges, ClippedGaussianMomentsMatchMonteCarlo) {
  struct Case {
    double mean, stddev, lo, hi;
  };
  const Case cases[] = {{0, 1, 0, kInf},    {0.5, 2, 0, kInf},  {-1, 0.7, 0, kInf}, {3, 1.5, 0, 6},
                        {5, 2, 0, 6},       {-0.5, 1, -1, 1},   {2, 1, -kInf, 1.5}, {0, 3, 0, 6}};
  std::mt19937_64 rng(42);
  const int n = 4'000'000;
  for (const Case& c : cases) {
    std::normal_distribution<double> dist(c.mean, c.stddev);
    double sum = 0, sum2 = 0;
    for (int i = 0; i < n; ++i) {
      double y = std::clamp(dist(rng), c.lo, c.hi);
      sum += y;
      sum2 += y * y;
    }
    double mc_mean = sum / n, mc_var = sum2 / n - mc_mean * mc_mean;
    auto m = clipped_gaussian_moments(c.mean, c.stddev, c.lo, c.hi);
    SCOPED_TRACE(::testing::Message() << "N(" << c.mean << ", " << c.stddev << "^2) clipped to [" << c.lo << ", "
                                      << c.hi << "]");
    // 1%, with a floor of a few Monte-Carlo standard errors for small means.
    EXPECT_NEAR(m.mean, mc_mean, std::max(0.01 * std::fabs(mc_mean), 5 * c.stddev / std::sqrt(n)));
    EXPECT_NEAR(m.variance, mc_var, 0.01 * mc_var);
  }
  // Known closed forms: Relu of N(0, 1) has mean 1/sqrt(2 pi), variance 1/2 - 1/(2 pi).
  auto relu = clipped_gaussian_moments(0, 1, 0, kInf);
  EXPECT_NEAR(relu.mean, 1 / std::sqrt(2 * std::numbers::pi), 1e-12);
  EXPECT_NEAR(relu.variance, 0.5 - 1 / (2 * std::numbers::pi), 1e-12);
  auto none = clipped_gaussian_moments(1.5, 2, -kInf, kInf);
  EXPECT_NEAR(none.mean, 1.5, 1e-12);
  EXPECT_NEAR(none.variance, 4, 1e-12);
  auto point = clipped_gaussian_moments(7, 0, 0, 6);
  EXPECT_EQ(point.mean, 6);
  EXPECT_EQ(point.variance, 0);
  auto far = clipped_gaussian_moments(-50, 1, 0, kInf);  // all mass clipped
  EXPECT_NEAR(far.mean, 0, 1e-12);
  EXPECT_NEAR(far.variance, 0, 1e-12);
}

// --- 1b. Conv -> BN -> Relu -> Conv: prediction against the FP32 executor ---------------------------

TEST(BatchNormRanges, ThresholdMatchesEmpiricalPercentileOfExecutor) {
  const int64_t channels = 8, size = 12, batch = 64;
  const std::vector<float> gamma = {1.5f, 0.5f, -1.0f, 2.0f, 0.8f, 1.0f, -0.3f, 1.2f};
  const std::vector<float> beta = {0.1f, -0.2f, 0.3f, 0.0f, 0.5f, -0.5f, 1.0f, 0.0f};

  // The BN's running statistics are those of the Conv output on this input distribution, so the BN
  // output is close to N(beta, gamma^2) as the method assumes.
  std::vector<float> mean(channels), var(channels);
  {
    B b;
    b.input("x", {-1, 3, size, size});
    add_conv(b, "x", "c", "conv1", channels, 3, 3, 11);
    b.output("c");
    Executor e(import_onnx_bytes(b.bytes(), "conv_only", {.optimize = false, .input_shapes = {}}));
    Tensor c = e.run(random_tensor({batch, 3, size, size}, 5));
    int64_t hw = size * size;
    for (int64_t ch = 0; ch < channels; ++ch) {
      double s = 0, s2 = 0;
      for (int64_t n = 0; n < batch; ++n)
        for (int64_t i = 0; i < hw; ++i) {
          double v = c.data<float>()[(n * channels + ch) * hw + i];
          s += v;
          s2 += v * v;
        }
      double count = static_cast<double>(batch * hw);
      mean[static_cast<size_t>(ch)] = static_cast<float>(s / count);
      var[static_cast<size_t>(ch)] = static_cast<float>(s2 / count - (s / count) * (s / count));
    }
  }

  B b;
  b.input("x", {-1, 3, size, size});
  add_conv(b, "x", "c", "conv1", channels, 3, 3, 11);
  add_bn(b, "c", "bn", "bn1", gamma, beta, mean, var);
  b.node("Relu", {"bn"}, {"r"}, "relu");
  add_conv(b, "r", "y", "conv2", 4, channels, 3, 12);
  b.output("y");
  std::string bytes = b.bytes();

  Graph plain = import_onnx_bytes(bytes, "conv_bn_relu_conv", {.optimize = false, .input_shapes = {}});
  auto ranges = batchnorm_ranges(plain, std::nullopt);
  ASSERT_TRUE(ranges.count("r"));
  const BatchNormRange& r = ranges.at("r");
  EXPECT_TRUE(r.non_negative);
  EXPECT_EQ(r.source, "batchnorm 4 sigma");
  EXPECT_NEAR(r.threshold, bn_threshold(gamma, beta, 4, kInf, true), 1e-5);
  EXPECT_EQ(ranges.count("c"), 0u);  // a Conv output without BN: unknown
  EXPECT_EQ(ranges.count("y"), 0u);
  ASSERT_TRUE(ranges.count("bn"));
  EXPECT_FALSE(ranges.at("bn").non_negative);

  // The optimized graph's second Conv reads "r" (the fused Conv+BN+Relu output keeps the Relu's name).
  Graph opt = import_onnx_bytes(bytes, "conv_bn_relu_conv");
  ASSERT_EQ(opt.nodes.size(), 2u);
  EXPECT_EQ(opt.value(opt.nodes[1].inputs[0]).name, "r");

  // Empirical 99.99th percentile of the Relu output, per channel, on fresh inputs (the unoptimized
  // graph with "r" as an extra output).
  b.output("r");
  Executor e(import_onnx_bytes(b.bytes(), "with_r", {.optimize = false, .input_shapes = {}}));
  std::vector<std::vector<float>> per_channel(static_cast<size_t>(channels));
  for (uint32_t run = 0; run < 12; ++run) {
    Tensor x = random_tensor({batch, 3, size, size}, 100 + run);
    std::vector<Tensor> outs = e.run(std::span<const Tensor>(&x, 1));
    const Tensor& rt = outs.at(1);
    int64_t hw = size * size;
    for (int64_t n = 0; n < batch; ++n)
      for (int64_t ch = 0; ch < channels; ++ch)
        for (int64_t i = 0; i < hw; ++i)
          per_channel[static_cast<size_t>(ch)].push_back(rt.data<float>()[(n * channels + ch) * hw + i]);
  }
  double empirical = 0;
  std::vector<float> all;
  for (auto& v : per_channel) {
    std::sort(v.begin(), v.end());
    empirical = std::max(empirical, static_cast<double>(v[static_cast<size_t>(0.9999 * static_cast<double>(v.size()))]));
    all.insert(all.end(), v.begin(), v.end());
  }
  std::sort(all.begin(), all.end());
  double pooled = all[static_cast<size_t>(0.9999 * static_cast<double>(all.size()))];
  double ratio = r.threshold / empirical;
  // 4 sigma vs the 99.99th percentile (3.72 sigma for a Gaussian; a sum of 27 uniform terms has
  // slightly lighter tails): expect the prediction a little above, never far off.
  EXPECT_GT(ratio, 0.9) << "predicted " << r.threshold << ", empirical " << empirical;
  EXPECT_LT(ratio, 1.3) << "predicted " << r.threshold << ", empirical " << empirical;
  EXPECT_GT(r.threshold / pooled, 0.7) << "pooled 99.99th percentile " << pooled;
  EXPECT_LT(r.threshold / pooled, 1.5) << "pooled 99.99th percentile " << pooled;
}

// --- 2. Names the optimized graph uses --------------------------------------------------------------

// conv1-bn1-relu -> maxpool -> conv2-bn2 (+ shortcut) -> relu -> dropout -> conv3-bn3 -> conv4-bn4-relu6
// -> global pool -> flatten -> gemm.
B residual_model() {
  const int64_t c = 4;
  B b;
  b.input("x", {-1, 3, 8, 8});
  add_conv(b, "x", "c1", "conv1", c, 3, 3, 1);
  add_bn(b, "c1", "b1", "bn1", {1.0f, 0.5f, -2.0f, 0.25f}, {0.0f, 0.5f, -0.5f, 1.0f}, {0, 0, 0, 0}, {1, 1, 1, 1});
  b.node("Relu", {"b1"}, {"r1"}, "relu1");
  auto& pool = b.node("MaxPool", {"r1"}, {"p1"}, "pool1");
  B::attr(pool, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(pool, "strides", std::vector<int64_t>{2, 2});
  add_conv(b, "p1", "c2", "conv2", c, c, 3, 2);
  add_bn(b, "c2", "b2", "bn2", {0.6f, 0.7f, 0.8f, 0.9f}, {0.1f, 0.2f, 0.3f, -0.4f}, {0.1f, 0, 0, 0}, {2, 1, 1, 1});
  b.node("Add", {"b2", "p1"}, {"s"}, "add");
  b.node("Relu", {"s"}, {"r2"}, "relu2");
  b.node("Dropout", {"r2"}, {"d"}, "dropout");
  add_conv(b, "d", "c3", "conv3", c, c, 3, 3);
  add_bn(b, "c3", "b3", "bn3", {1.5f, -1.0f, 0.5f, 0.2f}, {-1.0f, 0.0f, 2.0f, 0.0f}, {0, 0, 0, 0}, {1, 1, 1, 1});
  add_conv(b, "b3", "c4", "conv4", c, c, 1, 4);
  add_bn(b, "c4", "b4", "bn4", {2.0f, 2.0f, 1.0f, 1.0f}, {1.0f, 0.0f, 5.0f, 0.0f}, {0, 0, 0, 0}, {1, 1, 1, 1});
  b.floats("zero", {}, {0.0f});
  b.floats("six", {}, {6.0f});
  b.node("Clip", {"b4", "zero", "six"}, {"r4"}, "relu6");
  b.node("GlobalAveragePool", {"r4"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"f"}, "flatten").add_attribute()->CopyFrom(int_attr("axis", 1));
  b.floats("fc.w", {2, c}, random_floats(2 * c, 5));
  auto& fc = b.node("Gemm", {"f", "fc.w"}, {"y"}, "fc");
  B::attr(fc, "transB", int64_t{1});
  b.output("y");
  return b;
}

TEST(BatchNormRanges, NamesSurviveOptimization) {
  std::string bytes = residual_model().bytes();
  Graph plain = import_onnx_bytes(bytes, "residual", {.optimize = false, .input_shapes = {}});
  Graph opt = import_onnx_bytes(bytes, "residual");
  for (const Node& n : opt.nodes) EXPECT_NE(n.op, OpType::kBatchNormalization);

  auto ranges = batchnorm_ranges(plain, std::nullopt);
  std::set<std::string> layer_inputs;
  for (const Node& n : opt.nodes) {
    if (n.op != OpType::kConv && n.op != OpType::kGemm) continue;
    const std::string& name = opt.value(n.inputs[0]).name;
    layer_inputs.insert(name);
    if (name == "x") continue;  // the graph input: known only from an input range
    EXPECT_TRUE(from_batchnorm_path(plain, name)) << name;
    EXPECT_TRUE(ranges.count(name)) << "no threshold for '" << name << "', the input of " << n.name;
  }
  // Folding renames: Conv+BN keeps the BN output's name, Conv+BN+Relu(6) the activation's, and the
  // dropped Dropout's consumer reads the Relu output.
  EXPECT_EQ(layer_inputs, (std::set<std::string>{"x", "p1", "r2", "b3", "f"}));

  // The unfolded names that vanish are unknown or BN-derived in the plain graph; raw Conv outputs are absent.
  for (const char* raw : {"c1", "c2", "c3", "c4", "y"}) EXPECT_EQ(ranges.count(raw), 0u) << raw;

  const std::vector<float> g3 = {1.5f, -1.0f, 0.5f, 0.2f}, beta3 = {-1.0f, 0.0f, 2.0f, 0.0f};
  EXPECT_NEAR(ranges.at("b3").threshold, bn_threshold(g3, beta3, 4), 1e-5);  // |-1 - 6| = 7
  EXPECT_FALSE(ranges.at("b3").non_negative);
  EXPECT_TRUE(ranges.at("p1").non_negative);
  EXPECT_TRUE(ranges.at("r2").non_negative);
  EXPECT_EQ(ranges.at("d").threshold, ranges.at("r2").threshold);
  // Relu6 after BN: channel 0 reaches 1 + 8 = 9 -> cut at 6.
  EXPECT_EQ(ranges.at("f").threshold, 6.0f);
  EXPECT_EQ(ranges.at("f").source, "relu6 bound");
  EXPECT_TRUE(ranges.at("f").non_negative);
  EXPECT_EQ(ranges.at("g").threshold, 6.0f);

  // With an input range every layer input has a threshold, the first layer's included.
  auto with_input = batchnorm_ranges(plain, std::pair{-1.0f, 1.0f});
  for (const std::string& name : layer_inputs) EXPECT_TRUE(with_input.count(name)) << name;
  EXPECT_EQ(with_input.at("x").source, "input range");
}

TEST(BatchNormRanges, ResidualAddSumsMeansAndVariances) {
  Graph plain = import_onnx_bytes(residual_model().bytes(), "residual", {.optimize = false, .input_shapes = {}});
  double k = 3;
  auto ranges = batchnorm_ranges(plain, std::nullopt, k);
  // s = b2 + p1 per channel; p1 keeps relu(b1)'s moments (MaxPool keeps statistics).
  const double g1[] = {1.0, 0.5, -2.0, 0.25}, be1[] = {0.0, 0.5, -0.5, 1.0};
  const double g2[] = {0.6, 0.7, 0.8, 0.9}, be2[] = {0.1, 0.2, 0.3, -0.4};
  double t = 0;
  for (int c = 0; c < 4; ++c) {
    auto r = clipped_gaussian_moments(be1[c], std::fabs(g1[c]), 0, kInf);
    double m = be2[c] + r.mean, s = std::sqrt(g2[c] * g2[c] + r.variance);
    t = std::max({t, std::fabs(m - k * s), std::fabs(m + k * s)});
  }
  ASSERT_TRUE(ranges.count("s"));
  EXPECT_NEAR(ranges.at("s").threshold, t, 1e-5);
  EXPECT_EQ(ranges.at("s").source, "batchnorm 3 sigma");
  EXPECT_FALSE(ranges.at("s").non_negative);
}

// --- 3. Input ranges, unknown values, graphs without BN ---------------------------------------------

TEST(BatchNormRanges, InputRangeThroughReluAndMaxPoolWithoutBatchNorm) {
  B b;
  b.input("x", {-1, 3, 8, 8});
  b.node("Relu", {"x"}, {"r"}, "relu");
  auto& pool = b.node("MaxPool", {"r"}, {"p"}, "pool");
  B::attr(pool, "kernel_shape", std::vector<int64_t>{2, 2});
  add_conv(b, "p", "c", "conv", 4, 3, 3, 7);
  b.node("Relu", {"c"}, {"cr"}, "relu2");
  add_conv(b, "cr", "y", "conv2", 2, 4, 1, 8);
  b.output("y");
  Graph plain = import_onnx_bytes(b.bytes(), "no_bn", {.optimize = false, .input_shapes = {}});

  auto ranges = batchnorm_ranges(plain, std::pair{-3.0f, 2.0f});
  std::set<std::string> names;
  for (const auto& [name, range] : ranges) names.insert(name);
  EXPECT_EQ(names, (std::set<std::string>{"x", "r", "p"}));
  EXPECT_EQ(ranges.at("x").threshold, 3.0f);
  EXPECT_FALSE(ranges.at("x").non_negative);
  EXPECT_EQ(ranges.at("r").threshold, 2.0f);
  EXPECT_TRUE(ranges.at("r").non_negative);
  EXPECT_EQ(ranges.at("p").threshold, 2.0f);
  EXPECT_TRUE(ranges.at("p").non_negative);
  for (const auto& [name, range] : ranges) EXPECT_EQ(range.source, "input range") << name;

  EXPECT_TRUE(batchnorm_ranges(plain, std::nullopt).empty());
}

TEST(BatchNormRanges, ClipBoundsAndInputNormalization) {
  // (x - 0.5) / 0.25 on x in [0, 1] -> [-2, 2]; a Conv's Relu6 bounds its output without BN.
  B b;
  b.input("x", {-1, 3, 4, 4});
  b.floats("half", {}, {0.5f});
  b.floats("quarter", {1, 3, 1, 1}, {0.25f, 0.5f, 1.0f});
  b.node("Sub", {"x", "half"}, {"centered"}, "sub");
  b.node("Div", {"centered", "quarter"}, {"normalized"}, "div");
  add_conv(b, "normalized", "c", "conv", 2, 3, 3, 9);
  b.floats("zero", {}, {0.0f});
  b.floats("six", {}, {6.0f});
  b.node("Clip", {"c", "zero", "six"}, {"r6"}, "relu6");
  add_conv(b, "r6", "y", "conv2", 2, 2, 1, 10);
  b.output("y");
  Graph plain = import_onnx_bytes(b.bytes(), "norm", {.optimize = false, .input_shapes = {}});
  auto ranges = batchnorm_ranges(plain, std::pair{0.0f, 1.0f});
  EXPECT_EQ(ranges.at("centered").threshold, 0.5f);
  EXPECT_EQ(ranges.at("normalized").threshold, 2.0f);  // channel 0: 0.5 / 0.25
  EXPECT_EQ(ranges.at("r6").threshold, 6.0f);
  EXPECT_TRUE(ranges.at("r6").non_negative);
  EXPECT_EQ(ranges.at("r6").source, "relu6 bound");
  EXPECT_EQ(ranges.count("c"), 0u);

  // Optimized, the Relu6 is fused into the Conv; the fused output keeps the name "r6".
  Graph opt = import_onnx_bytes(b.bytes(), "norm");
  bool found = false;
  for (const Node& n : opt.nodes)
    if (n.op == OpType::kConv && opt.value(n.inputs[0]).name == "r6") found = true;
  EXPECT_TRUE(found);
}

// The bundled models: every Conv/Gemm input of the optimized graph that the unfolded graph derives
// from a BN output has a threshold under the name the optimized graph uses. (Models exported with BN
// already folded into the Conv carry no statistics for those layers.)
TEST(BatchNormRanges, BundledModelsHaveEveryBatchNormLayerInput) {
  std::error_code ec;
  int checked = 0;
  for (const auto& e : std::filesystem::directory_iterator(std::string(TERN_SOURCE_DIR) + "/models", ec)) {
    if (e.path().extension() != ".onnx") continue;
    Graph plain = import_onnx(e.path().string(), {.optimize = false, .input_shapes = {}});
    Graph opt = import_onnx(e.path().string());
    auto ranges = batchnorm_ranges(plain, std::nullopt);
    for (const Node& n : opt.nodes) {
      if (n.op != OpType::kConv && n.op != OpType::kGemm) continue;
      const std::string& name = opt.value(n.inputs[0]).name;
      if (!from_batchnorm_path(plain, name)) continue;
      ++checked;
      ASSERT_TRUE(ranges.count(name)) << e.path().filename() << ": no threshold for '" << name << "'";
      EXPECT_GT(ranges.at(name).threshold, 0.0f) << name;
      EXPECT_TRUE(std::isfinite(ranges.at(name).threshold)) << name;
    }
  }
  EXPECT_GT(checked, 0) << "the bundled models are trained with BatchNormalization: some layer input must derive from it";
  RecordProperty("layer_inputs_checked", checked);
}

TEST(BatchNormRanges, RejectsBadArguments) {
  Graph plain = import_onnx_bytes(residual_model().bytes(), "residual", {.optimize = false, .input_shapes = {}});
  EXPECT_THROW(batchnorm_ranges(plain, std::nullopt, 0.0), Error);
  EXPECT_THROW(batchnorm_ranges(plain, std::nullopt, -1.0), Error);
  EXPECT_THROW(batchnorm_ranges(plain, std::pair{1.0f, -1.0f}), Error);
  EXPECT_THROW(batchnorm_ranges(plain, std::pair{0.0f, std::numeric_limits<float>::infinity()}), Error);
}

}  // namespace
}  // namespace tern::testing
