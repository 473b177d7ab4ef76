// The integer engine against the simulation it must reproduce: the same outputs up to float
// summation order for every weight format the engine runs, on every ISA, with signed and unsigned,
// static and dynamic activations, grouped and depthwise convolutions, residual levels; and the
// bundled ResNet-20's predictions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "kernels/cpu_features.h"
#include "onnx_builder.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/integer_executor.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"
#include "tern/tern_file.h"
#include "tern/thread_pool.h"

namespace tern::testing {
namespace {

namespace q = tern::quant;
using kernels::Isa;

// x[N,8,6,6] -> conv 3x3 (+bias) -> relu -> depthwise 3x3 -> clip(0,6) -> grouped 1x1 (2 groups)
// -> add(skip from the relu) -> conv 3x3 stride 2 -> GAP -> flatten -> gemm(+bias) -> y[N,5].
Graph model() {
  OnnxBuilder b;
  b.input("x", {-1, 8, 6, 6});
  b.floats("w1", {8, 8, 3, 3}, random_floats(576, 1));
  b.floats("b1", {8}, random_floats(8, 2));
  b.floats("wd", {8, 1, 3, 3}, random_floats(72, 3));
  b.floats("wg", {8, 4, 1, 1}, random_floats(32, 4));
  b.floats("w3", {12, 8, 3, 3}, random_floats(864, 5));
  b.floats("wf", {5, 12}, random_floats(60, 6));
  b.floats("bf", {5}, random_floats(5, 7));
  b.floats("lo", {}, {0.0f});
  b.floats("hi", {}, {6.0f});
  auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto& dw = b.node("Conv", {"r1", "wd"}, {"d"}, "depthwise");
  OnnxBuilder::attr(dw, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(dw, "group", int64_t{8});
  b.node("Clip", {"d", "lo", "hi"}, {"dc"}, "clip");
  auto& gc = b.node("Conv", {"dc", "wg"}, {"g"}, "grouped");
  OnnxBuilder::attr(gc, "group", int64_t{2});
  b.node("Add", {"g", "r1"}, {"s"}, "add");
  auto& c3 = b.node("Conv", {"s", "w3"}, {"c3"}, "conv3");
  OnnxBuilder::attr(c3, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(c3, "strides", std::vector<int64_t>{2, 2});
  b.node("GlobalAveragePool", {"c3"}, {"p"}, "gap");
  b.node("Flatten", {"p"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "wf", "bf"}, {"y"}, "fc");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  b.output("y");
  return import_onnx_bytes(b.bytes(), "integer.onnx");
}

Tensor images(int64_t n, uint32_t seed) { return Tensor::from_floats({n, 8, 6, 6}, random_floats(static_cast<size_t>(n * 288), seed)); }

// Integer and simulated outputs agree to float rounding: the only difference is the order in
// which the (exact) products are summed.
void expect_close(const Tensor& a, const Tensor& b, const std::string& what, double tolerance = 1e-4) {
  ASSERT_EQ(a.shape(), b.shape()) << what;
  double peak = 0, worst = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    peak = std::max(peak, std::fabs(static_cast<double>(b.data<float>()[i])));
    worst = std::max(worst, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  }
  EXPECT_LE(worst, tolerance * std::max(peak, 1.0)) << what;
}

struct Config {
  std::string name;
  q::QuantizeOptions options;
  std::string expect_kernel;  // of conv3 ("" = don't check)
  // Layers allowed to run in float: asymmetric scales with one group per filter have no single step.
  std::string float_ok;
};

std::vector<Config> configs() {
  std::vector<Config> c;
  auto base = [] {
    q::QuantizeOptions o;
    o.plan.first_last_8bit = false;
    return o;
  };
  q::QuantizeOptions o = base();
  c.push_back({"ternary fgq N=4", o, "ternary"});
  o.plan.weights.group_size = 64;
  c.push_back({"ternary fgq N=64", o, "ternary"});
  o.plan.weights.group_size = 2;
  c.push_back({"ternary fgq N=2", o, "int8"});  // a step spans two groups: dense int8 panels
  o = base();
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
  c.push_back({"int8 per channel", o, "int8"});
  o.plan.weights.bits = 4;
  c.push_back({"int4 per channel", o, "int4"});  // kept at 4 bits
  o = base();
  o.plan.weights.method = q::TernaryMethod::kFgqAsymmetric;
  c.push_back({"fgq-asym N=4", o, "int8", "grouped"});
  o = base();
  o.plan.weights.method = q::TernaryMethod::kTwn;
  o.plan.weights.group_size = q::kWholeFilter;
  c.push_back({"twn per filter (float scales)", o, "ternary"});
  o = base();
  o.plan.weights.method = q::TernaryMethod::kCluster;
  o.plan.weights.group_size = 4;
  c.push_back({"cluster of 4 filters", o, "ternary"});
  o = base();
  o.activation_mode = q::ActivationMode::kDynamic;
  c.push_back({"dynamic activations", o, "ternary"});
  o.power_of_two = true;
  c.push_back({"dynamic power-of-two activations", o, ""});
  o = base();
  o.plan.activation_bits = 4;
  c.push_back({"4-bit activations", o, ""});
  o = base();
  o.output_aware = true;
  o.residual = q::parse_residual_budget("all");
  o.residual_fallback = false;
  c.push_back({"residual terms", o, "ternary"});
  return c;
}

class IntegerEngine : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!kernels::isa_supported(GetParam())) GTEST_SKIP() << "CPU lacks " << kernels::to_string(GetParam());
    kernels::set_isa_override(GetParam());
  }
  void TearDown() override { kernels::set_isa_override(std::nullopt); }
};

TEST_P(IntegerEngine, MatchesTheSimulationForEveryFormat) {
  Graph g = model();
  Tensor calib = images(32, 11), x = images(9, 12);
  for (Config& c : configs()) {
    q::QuantizedModel m = q::quantize_model(g, c.options, &calib);
    Executor sim(q::simulation_graph(m));
    Tensor want = sim.run(x);
    for (bool fused : {true, false}) {
      IntegerExecutor engine(m, {}, IntegerEngineOptions{fused});
      std::string what = c.name + (fused ? " (fused)" : " (hybrid)");
      // Every model runs fused but the one with a float layer.
      EXPECT_EQ(engine.fused(), fused && c.float_ok.empty()) << what << ": " << engine.mode();
      for (const IntegerLayerInfo& l : engine.layers()) {
        if (l.node != c.float_ok) EXPECT_EQ(l.kernel.find("float32"), std::string::npos) << what << ": " << l.node << " [" << l.kernel << "]";
        if (l.node == "conv3" && !c.expect_kernel.empty()) EXPECT_EQ(l.kernel.rfind(c.expect_kernel, 0), 0u) << what << ": " << l.kernel;
      }
      expect_close(engine.run(x), want, what);
    }
  }
}

// The fused program's plan for the test model: the depthwise layer runs its direct kernel, the
// residual Add runs in the grouped layer's epilogue, activations between layers are codes.
TEST_P(IntegerEngine, FusesTheResidualAddAndKeepsCodesBetweenLayers) {
  Graph g = model();
  Tensor calib = images(16, 41);
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  IntegerExecutor engine(q::quantize_model(g, o, &calib));
  ASSERT_TRUE(engine.fused()) << engine.mode();
  std::map<std::string, std::string> kernel;
  for (const IntegerLayerInfo& l : engine.layers()) kernel[l.node] = l.kernel;
  EXPECT_NE(kernel["depthwise"].find("direct depthwise"), std::string::npos) << kernel["depthwise"];
  EXPECT_NE(kernel["grouped"].find("+ Add"), std::string::npos) << kernel["grouped"];
  EXPECT_NE(kernel["conv3"].find("implicit-GEMM"), std::string::npos) << kernel["conv3"];
  std::string steps;
  for (const std::string& s : engine.steps()) steps += s + "\n";
  EXPECT_EQ(steps.find("add:"), std::string::npos) << "the Add should not be a step of its own:\n" << steps;
}

// x[N,3,8,8] -> conv 3x3 (3 channels: padded to 4) -> relu -> maxpool 2x2 -> {conv 1x1 in 4
// groups of 2 channels (gathered patches) -> relu, conv 3x3 -> relu} -> concat -> maxpool 3x3
// stride 2 pad 1 -> flatten (NCHW order from NHWC codes) -> gemm -> relu -> gemm.
Graph branchy_model() {
  OnnxBuilder b;
  b.input("x", {-1, 3, 8, 8});
  b.floats("w1", {8, 3, 3, 3}, random_floats(216, 51));
  b.floats("wa", {4, 2, 1, 1}, random_floats(8, 52));
  b.floats("wb", {12, 8, 3, 3}, random_floats(864, 53));
  b.floats("wf", {7, 64}, random_floats(448, 54));
  b.floats("wg", {3, 7}, random_floats(21, 55));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto& p1 = b.node("MaxPool", {"r1"}, {"p1"}, "pool1");
  OnnxBuilder::attr(p1, "kernel_shape", std::vector<int64_t>{2, 2});
  OnnxBuilder::attr(p1, "strides", std::vector<int64_t>{2, 2});
  auto& ca = b.node("Conv", {"p1", "wa"}, {"a"}, "branch_a");
  OnnxBuilder::attr(ca, "group", int64_t{4});
  b.node("Relu", {"a"}, {"ra"}, "relu_a");
  auto& cb = b.node("Conv", {"p1", "wb"}, {"bb"}, "branch_b");
  OnnxBuilder::attr(cb, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"bb"}, {"rb"}, "relu_b");
  auto& cat = b.node("Concat", {"ra", "rb"}, {"cat"}, "concat");
  OnnxBuilder::attr(cat, "axis", int64_t{1});
  auto& p2 = b.node("MaxPool", {"cat"}, {"p2"}, "pool2");
  OnnxBuilder::attr(p2, "kernel_shape", std::vector<int64_t>{3, 3});
  OnnxBuilder::attr(p2, "strides", std::vector<int64_t>{2, 2});
  OnnxBuilder::attr(p2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Flatten", {"p2"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "wf"}, {"h"}, "fc1");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  b.node("Relu", {"h"}, {"rh"}, "relu_h");
  auto& fc2 = b.node("Gemm", {"rh", "wg"}, {"y"}, "fc2");
  OnnxBuilder::attr(fc2, "transB", int64_t{1});
  b.output("y");
  return import_onnx_bytes(b.bytes(), "branchy.onnx");
}

// Max pooling, Concat (each branch writes its codes at the reader's scale) and a Flatten of a
// spatial map run on codes, and give the simulation's outputs, static and dynamic.
TEST_P(IntegerEngine, PoolingConcatAndFlattenRunOnCodes) {
  Graph g = branchy_model();
  Tensor calib = Tensor::from_floats({16, 3, 8, 8}, random_floats(16 * 192, 61));
  Tensor x = Tensor::from_floats({5, 3, 8, 8}, random_floats(5 * 192, 62));
  for (q::ActivationMode mode : {q::ActivationMode::kCalibrated, q::ActivationMode::kDynamic}) {
    q::QuantizeOptions o;
    o.plan.first_last_8bit = false;
    o.activation_mode = mode;
    q::QuantizedModel m = q::quantize_model(g, o, &calib);
    Executor sim(q::simulation_graph(m));
    IntegerExecutor engine(m);
    ASSERT_TRUE(engine.fused()) << engine.mode();
    std::string steps;
    for (const std::string& s : engine.steps()) steps += s + "\n";
    if (mode == q::ActivationMode::kCalibrated) {
      for (const char* step : {"pool1: MaxPool on codes", "concat: Concat on codes", "pool2: MaxPool on codes",
                               "flatten: Flatten on codes"})
        EXPECT_NE(steps.find(step), std::string::npos) << step << " in\n" << steps;
      EXPECT_EQ(steps.find("f32"), std::string::npos) << "no float activations expected:\n" << steps;
    }
    expect_close(engine.run(x), sim.run(x), q::activation_mode_name(mode));
    std::map<std::string, std::string> kernel;
    for (const IntegerLayerInfo& l : engine.layers()) kernel[l.node] = l.kernel;
    EXPECT_NE(kernel["conv1"].find("implicit-GEMM"), std::string::npos) << kernel["conv1"];
    EXPECT_NE(kernel["branch_a"].find("im2col-block"), std::string::npos) << kernel["branch_a"];
    Tensor one = Tensor::from_floats({1, 3, 8, 8}, random_floats(192, 63));
    expect_close(engine.run(one), sim.run(one), std::string("batch 1, ") + q::activation_mode_name(mode));
  }
}

// Small maps at batch 1 split each layer's channels over the threads (blocks of 32, a last block of
// 8 here), with every residual term of a block in the same item: still the simulation's outputs.
TEST(IntegerEngine, ChannelSplitOfSmallMapsMatchesTheSimulation) {
  OnnxBuilder b;
  b.input("x", {-1, 8, 4, 4});
  b.floats("w1", {64, 8, 3, 3}, random_floats(64 * 72, 81));
  b.floats("w2", {40, 64, 3, 3}, random_floats(40 * 576, 82));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto& c2 = b.node("Conv", {"r1", "w2"}, {"y"}, "conv2");
  OnnxBuilder::attr(c2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "split.onnx");
  Tensor calib = Tensor::from_floats({16, 8, 4, 4}, random_floats(16 * 128, 83));
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.residual = q::parse_residual_budget("all");
  o.residual_fallback = false;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  ThreadPool pool(2);
  ExecutorOptions options;
  options.pool = &pool;
  IntegerExecutor engine(m, options);
  q::QuantizedSession sim(m);
  ASSERT_TRUE(engine.fused()) << engine.mode();
  for (int level : {0, m.max_level()}) {
    engine.set_level(level);
    sim.set_level(level);
    for (int64_t n : {1, 2}) {
      Tensor x = Tensor::from_floats({n, 8, 4, 4}, random_floats(static_cast<size_t>(n * 128), 84 + n));
      expect_close(engine.run(x), sim.run(x), "level " + std::to_string(level) + ", batch " + std::to_string(n));
    }
  }
}

// Inputs that do not fit the model are errors naming the input, not crashes.
TEST(IntegerEngine, RejectsInputsThatDoNotFit) {
  Graph g = branchy_model();
  Tensor calib = Tensor::from_floats({8, 3, 8, 8}, random_floats(8 * 192, 71));
  q::QuantizeOptions o;
  IntegerExecutor engine(q::quantize_model(g, o, &calib));
  ASSERT_TRUE(engine.fused());
  EXPECT_THROW(engine.run(Tensor::from_floats({1, 3, 8, 7}, random_floats(168, 72))), Error);
  EXPECT_THROW(engine.run(Tensor::from_floats({3, 8, 8}, random_floats(192, 73))), Error);
  Tensor nan = Tensor::from_floats({1, 3, 8, 8}, random_floats(192, 74));
  nan.data<float>()[17] = std::nanf("");
  EXPECT_THROW(engine.run(nan), Error);
  EXPECT_EQ(engine.run(Tensor::from_floats({2, 3, 8, 8}, random_floats(384, 75))).shape(), (Shape{2, 3}));
}

// model() with every residual edge stored (levels 0..max), calibrated on 32 images from `seed`.
q::QuantizedModel model_with_levels(uint32_t seed) {
  Tensor calib = images(32, seed);
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.residual = q::parse_residual_budget("all");
  o.residual_fallback = false;
  return q::quantize_model(model(), o, &calib);
}

TEST_P(IntegerEngine, LevelsSwitchLikeTheSimulation) {
  Tensor x = images(5, 22);
  q::QuantizedModel m = model_with_levels(21);
  ASSERT_GE(m.max_level(), 2);
  IntegerExecutor engine(m);
  q::QuantizedSession sim(m);
  for (int k : {0, m.max_level(), 1, 0, m.max_level()}) {
    engine.set_level(k);
    sim.set_level(k);
    EXPECT_EQ(engine.level(), k);
    expect_close(engine.run(x), sim.run(x), "level " + std::to_string(k));
  }
  EXPECT_THROW(engine.set_level(m.max_level() + 1), Error);
  EXPECT_EQ(engine.level(), m.max_level());
}

// Fully connected layers with a unit per 64 weights along K (FGQ N = 64, K = 128 and 64): at ISA
// avx2 they run the lookup-table kernel for a single image (ternary_qgemm's pick), the multiply
// kernels for a batch and at the other ISAs; every way equals the simulation.
TEST_P(IntegerEngine, TernaryGemmWithLongUnitsMatchesTheSimulation) {
  OnnxBuilder b;
  b.input("x", {-1, 128});
  b.floats("w1", {64, 128}, random_floats(64 * 128, 31));
  b.floats("b1", {64}, random_floats(64, 32));
  b.floats("w2", {64, 64}, random_floats(64 * 64, 33));
  b.floats("b2", {64}, random_floats(64, 34));
  b.floats("w3", {10, 64}, random_floats(640, 35));
  b.floats("b3", {10}, random_floats(10, 36));
  for (const char* n : {"fc1", "fc2", "fc3"}) {
    const std::string i(1, n[2]);
    auto& fc = b.node("Gemm", {i == "1" ? "x" : "r" + std::to_string(i[0] - '1'), "w" + i, "b" + i},
                      {i == "3" ? "y" : "h" + i}, n);
    OnnxBuilder::attr(fc, "transB", int64_t{1});
    if (i != "3") b.node("Relu", {"h" + i}, {"r" + i}, std::string("relu") + i);
  }
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "mlp.onnx");
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights.group_size = 64;
  Tensor calib = Tensor::from_floats({32, 128}, random_floats(32 * 128, 37));
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  Executor sim(q::simulation_graph(m));
  IntegerExecutor engine(m);
  // --verbose names the table kernel where it runs (avx2), and only there.
  const bool table = GetParam() == Isa::kAvx2;
  for (const IntegerLayerInfo& l : engine.layers())
    EXPECT_EQ(l.kernel.find("lookup table") != std::string::npos, table) << l.node << ": " << l.kernel;
  for (int64_t n : {1, 6}) {
    Tensor x = Tensor::from_floats({n, 128}, random_floats(static_cast<size_t>(n * 128), 38 + static_cast<uint32_t>(n)));
    expect_close(engine.run(x), sim.run(x), "batch " + std::to_string(n));
  }
}

// A batch of several images, with a pool of two threads, runs each image whole on one thread's copy
// of the program: the outputs equal those of each image run alone (to the bit) and the simulation's,
// at every level (the copies follow set_level); inputs that do not fit are refused as before.
TEST_P(IntegerEngine, BatchesRunImageByImageOnEachThread) {
  Tensor x = images(7, 92);
  q::QuantizedModel m = model_with_levels(91);
  ThreadPool two(2), one(1);
  ExecutorOptions on_two, on_one;
  on_two.pool = &two;
  on_one.pool = &one;
  IntegerExecutor engine(m, on_two), alone(m, on_one);
  EXPECT_NE(engine.mode().find("image by image"), std::string::npos) << engine.mode();
  EXPECT_EQ(alone.mode(), "fused integer program");
  q::QuantizedSession sim(m);
  for (int k : {m.max_level(), 0, 1}) {
    engine.set_level(k);
    alone.set_level(k);
    sim.set_level(k);
    const Tensor y = engine.run(x);
    ASSERT_EQ(y.shape(), (Shape{7, 5}));
    expect_close(y, sim.run(x), "level " + std::to_string(k));
    for (int64_t n = 0; n < 7; ++n) {
      const Tensor image = Tensor::from_floats({1, 8, 6, 6}, std::span<const float>(x.data<float>() + n * 288, 288));
      const Tensor want = alone.run(image);
      EXPECT_EQ(std::memcmp(y.data<float>() + n * 5, want.data<float>(), 5 * sizeof(float)), 0) << "image " << n << " level " << k;
    }
  }
  std::vector<float> bad(static_cast<size_t>(x.size()), 0.5f);
  bad[4 * 288 + 17] = NAN;
  EXPECT_THROW(engine.run(Tensor::from_floats(x.shape(), bad)), Error);
  try {
    engine.run(Tensor::from_floats({2, 8, 6, 5}, random_floats(480, 93)));
    ADD_FAILURE() << "a batch of the wrong shape ran";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[2,8,6,5]"), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, IntegerEngine, ::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                         [](const ::testing::TestParamInfo<Isa>& i) { return std::string(kernels::to_string(i.param)); });

TEST(IntegerEngine, LayersWithoutAnIntegerFormRunTheirSimulation) {
  Graph g = model();
  Tensor calib = images(16, 31), x = images(3, 32);
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights.log_scales = true;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  IntegerExecutor engine(m);
  bool any_float = false;
  for (const IntegerLayerInfo& l : engine.layers()) any_float = any_float || l.kernel.find("logarithmic") != std::string::npos;
  EXPECT_TRUE(any_float);
  Executor sim(q::simulation_graph(m));
  expect_close(engine.run(x), sim.run(x), "log scales");
}

// A model loaded for the integer engine alone (no float weights, zero placeholders): the fused
// program runs its codes exactly as from a full load, at every level; the hybrid engine and a
// simulation session get the weights first; a simulation graph of it is refused.
TEST(IntegerEngine, ModelsLoadedWithoutFloatWeightsRunTheSame) {
  Tensor x = images(4, 52);
  const std::vector<std::byte> bytes = q::serialize_quantized_model(model_with_levels(51));
  auto load = [&](bool float_weights) {
    return q::load_quantized_model(TernFile::from_bytes(bytes, "levels.tern"), {.float_weights = float_weights});
  };
  q::QuantizedModel full = load(true), codes = load(false);
  EXPECT_TRUE(full.float_weights);
  EXPECT_FALSE(codes.float_weights);
  ASSERT_GE(codes.max_level(), 2);
  // The placeholders are zeros, not the weights (so nothing below can pass by reading them).
  const q::QuantizedLayer& first = codes.layers.front();
  const Tensor& placeholder = codes.graph.constant(codes.graph.find_value(first.weight_value));
  EXPECT_TRUE(std::all_of(placeholder.floats().begin(), placeholder.floats().end(), [](float v) { return v == 0.0f; }));
  EXPECT_THROW(q::simulation_graph(codes), Error);
  for (bool fused : {true, false}) {
    IntegerExecutor a(full, {}, IntegerEngineOptions{fused}), b(codes, {}, IntegerEngineOptions{fused});
    EXPECT_EQ(b.fused(), fused);
    for (int k : {codes.max_level(), 0, 1}) {
      a.set_level(k);
      b.set_level(k);
      Tensor ya = a.run(x), yb = b.run(x);
      ASSERT_EQ(ya.shape(), yb.shape());
      EXPECT_EQ(std::memcmp(ya.raw(), yb.raw(), ya.bytes()), 0) << (fused ? "fused" : "hybrid") << " level " << k;
    }
  }
  q::QuantizedSession from_codes(codes), from_full(full);
  from_codes.set_level(1);
  from_full.set_level(1);
  Tensor sa = from_full.run(x), sb = from_codes.run(x);
  EXPECT_EQ(std::memcmp(sa.raw(), sb.raw(), sa.bytes()), 0);
  q::dequantize_weights(codes);
  EXPECT_TRUE(codes.float_weights);
  Tensor want = Executor(q::simulation_graph(full)).run(x), got = Executor(q::simulation_graph(codes)).run(x);
  EXPECT_EQ(std::memcmp(want.raw(), got.raw(), want.bytes()), 0);
  // Layers without an integer form (logarithmic group scales) run their simulation in the hybrid
  // engine: from real weights, not the placeholders.
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights.log_scales = true;
  Tensor calib = images(16, 53);
  q::QuantizedModel logs = q::quantize_model(model(), o, &calib);
  q::QuantizedModel logs_codes =
      q::load_quantized_model(TernFile::from_bytes(q::serialize_quantized_model(logs), "logs.tern"), {.float_weights = false});
  IntegerExecutor hybrid(logs_codes);
  EXPECT_FALSE(hybrid.fused());
  expect_close(hybrid.run(x), Executor(q::simulation_graph(logs)).run(x), "log scales loaded without float weights");
}

// A layer output that is mostly positive with a short negative side (a conv with a large bias;
// HardSwish and SiLU give the same shape) is the next layer's input in asymmetric u8 codes with a
// zero point, which padding must fill as the value 0. The engine, fused (codes written by conv1's
// epilogue) or not, reproduces the simulation; symmetric codes (--act-codes symmetric) are coarser.
TEST_P(IntegerEngine, AsymmetricCodesMatchTheSimulation) {
  OnnxBuilder b;
  b.input("x", {-1, 8, 6, 6});
  std::vector<float> w1 = random_floats(576, 61);
  for (float& v : w1) v *= 0.2f;
  b.floats("w1", {8, 8, 3, 3}, w1);
  b.floats("b1", {8}, std::vector<float>(8, 1.0f));  // conv1 ~ N(1, 0.57): a few % negative
  b.floats("w2", {8, 8, 3, 3}, random_floats(576, 63));
  b.floats("wf", {5, 8}, random_floats(40, 64));
  auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  auto& c2 = b.node("Conv", {"c1", "w2"}, {"c2"}, "conv2");
  OnnxBuilder::attr(c2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c2"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"p"}, "gap");
  b.node("Flatten", {"p"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "wf"}, {"y"}, "fc");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "asymmetric.onnx");
  Tensor calib = images(32, 65), x = images(16, 66);
  for (int bits : {8, 4}) {
    q::QuantizeOptions o;
    o.plan.first_last_8bit = false;
    o.plan.activation_bits = bits;
    o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
    q::QuantizedModel m = q::quantize_model(g, o, &calib);
    const q::QuantizedLayer* conv2 = m.find("conv2");
    ASSERT_NE(conv2, nullptr);
    ASSERT_TRUE(conv2->input && conv2->input->is_unsigned);
    EXPECT_GT(conv2->input->zero_point, 0);
    EXPECT_LT(conv2->input->zero_point, (1 << bits) / 2);  // the short side gets the fewer codes
    o.asymmetric = false;
    q::QuantizedModel symmetric = q::quantize_model(g, o, &calib);
    ASSERT_FALSE(symmetric.find("conv2")->input->is_unsigned);
    EXPECT_LT(conv2->input->scale, 0.9f * symmetric.find("conv2")->input->scale);
    Executor sim(q::simulation_graph(m));
    Tensor want = sim.run(x);
    for (bool fused : {true, false}) {
      IntegerExecutor engine(m, {}, IntegerEngineOptions{fused});
      EXPECT_EQ(engine.fused(), fused) << engine.mode();
      expect_close(engine.run(x), want, std::to_string(bits) + "-bit asymmetric" + (fused ? " (fused)" : " (hybrid)"));
    }
  }
}

// MobileNetV3's blocks: a depthwise layer with HardSwish, a squeeze-excitation (global pool, summed
// in the depthwise layer's epilogue -> 1x1 conv -> ReLU -> 1x1 conv -> HardSigmoid -> broadcasting
// Mul) and a layer kept float32. Nodes without an integer form run their FP32 kernels inside the
// fused program, between integer layers, as in the simulation.
TEST_P(IntegerEngine, OperationsWithoutAnIntegerFormRunInsideTheProgram) {
  OnnxBuilder b;
  b.input("x", {-1, 8, 6, 6});
  b.floats("w1", {8, 1, 3, 3}, random_floats(72, 81));
  b.floats("b1", {8}, random_floats(8, 82));
  b.floats("wr", {4, 8, 1, 1}, random_floats(32, 83));
  b.floats("br", {4}, random_floats(4, 84));
  b.floats("we", {8, 4, 1, 1}, random_floats(32, 85));
  b.floats("be", {8}, random_floats(8, 86));
  b.floats("w2", {8, 8, 1, 1}, random_floats(64, 87));
  b.floats("w3", {8, 8, 3, 3}, random_floats(576, 88));
  b.floats("wf", {5, 8}, random_floats(40, 89));
  auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(c1, "group", int64_t{8});
  b.node("HardSwish", {"c1"}, {"h1"}, "hswish");
  b.node("GlobalAveragePool", {"h1"}, {"s0"}, "se_pool");
  b.node("Conv", {"s0", "wr", "br"}, {"s1"}, "se_reduce");
  b.node("Relu", {"s1"}, {"s2"}, "se_relu");
  b.node("Conv", {"s2", "we", "be"}, {"s3"}, "se_expand");
  b.node("HardSigmoid", {"s3"}, {"gate"}, "se_gate");
  b.node("Mul", {"h1", "gate"}, {"m"}, "se_scale");
  b.node("Conv", {"m", "w2"}, {"c2"}, "project");
  b.node("Sigmoid", {"c2"}, {"g2"}, "sigmoid");
  auto& c3 = b.node("Conv", {"g2", "w3"}, {"c3"}, "kept_float");
  OnnxBuilder::attr(c3, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("GlobalAveragePool", {"c3"}, {"p"}, "gap");
  b.node("Flatten", {"p"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "wf"}, {"y"}, "fc");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "se.onnx");
  Tensor calib = images(32, 91), x = images(7, 92);
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.config_json = R"({"layers": [{"name": "kept_float", "weights": "float32"}]})";
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  ASSERT_EQ(m.find("kept_float"), nullptr);
  Executor sim(q::simulation_graph(m));
  Tensor want = sim.run(x);
  IntegerExecutor engine(m);
  ASSERT_TRUE(engine.fused()) << engine.mode();
  int fp32_steps = 0;
  for (const std::string& step : engine.steps()) fp32_steps += step.find("FP32 kernel") != std::string::npos;
  EXPECT_EQ(fp32_steps, 1);  // the float32 conv
  // HardSwish, HardSigmoid and Sigmoid run in their layers' epilogues, the squeeze-excitation's
  // broadcasting Mul on the NHWC pixels.
  std::string all;
  for (const std::string& step : engine.steps()) all += step + "\n";
  for (const char* fused : {"+ HardSwish", "+ HardSigmoid", "+ Sigmoid", "per-channel gate", "summed in conv1's epilogue"})
    EXPECT_NE(all.find(fused), std::string::npos) << all;
  expect_close(engine.run(x), want, "fused with FP32 steps");
  expect_close(engine.run(images(1, 93)), sim.run(images(1, 93)), "one image");
}

// EfficientNet's SiLU (x * Sigmoid(x), two nodes), MobileNetV3's HardSwish as exported at opset 13
// (x * HardSigmoid(x)) and a plain Sigmoid after integer layers run in the layers' epilogues, on the FP32 operators' own exp (activation_math.h): the engine's codes are
// the simulation's. A SiLU whose Sigmoid has another reader stays two FP32 steps.
TEST_P(IntegerEngine, ActivationsRunInTheLayersEpilogues) {
  for (bool shared_sigmoid : {false, true}) {
    OnnxBuilder b;
    b.input("x", {-1, 8, 6, 6});
    b.floats("w1", {8, 8, 3, 3}, random_floats(576, 101));
    b.floats("b1", {8}, random_floats(8, 102));
    b.floats("w2", {8, 8, 1, 1}, random_floats(64, 103));
    b.floats("w3", {8, 8, 3, 3}, random_floats(576, 104));
    b.floats("wf", {5, 8}, random_floats(40, 105));
    auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
    OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
    b.node("Sigmoid", {"c1"}, {"s1"}, "silu_sigmoid");
    b.node("Mul", {"c1", "s1"}, {"h1"}, "silu_mul");
    b.node("Conv", {"h1", "w2"}, {"c2"}, "conv2");
    b.node("Sigmoid", {"c2"}, {"g2"}, "sigmoid");
    auto& c3 = b.node("Conv", {"g2", "w3"}, {"c3"}, "conv3");
    OnnxBuilder::attr(c3, "pads", std::vector<int64_t>{1, 1, 1, 1});
    auto& hs = b.node("HardSigmoid", {"c3"}, {"hs3"}, "hswish_gate");  // MobileNetV3's HardSwish at opset 13
    OnnxBuilder::attr(hs, "alpha", 1.0f / 6.0f);
    OnnxBuilder::attr(hs, "beta", 0.5f);
    b.node("Mul", {"hs3", "c3"}, {"h3"}, "hswish_mul");
    std::string last = "h3";
    if (shared_sigmoid) {
      b.node("Add", {"h3", "s1"}, {"c3s"}, "reads_the_sigmoid");
      last = "c3s";
    }
    b.node("GlobalAveragePool", {last}, {"p"}, "gap");
    b.node("Flatten", {"p"}, {"f"}, "flatten");
    auto& fc = b.node("Gemm", {"f", "wf"}, {"y"}, "fc");
    OnnxBuilder::attr(fc, "transB", int64_t{1});
    b.output("y");
    Graph g = import_onnx_bytes(b.bytes(), "silu.onnx");
    Tensor calib = images(32, 106), x = images(9, 107);
    q::QuantizeOptions o;
    o.plan.first_last_8bit = false;
    o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
    q::QuantizedModel m = q::quantize_model(g, o, &calib);
    Executor sim(q::simulation_graph(m));
    IntegerExecutor engine(m);
    ASSERT_TRUE(engine.fused()) << engine.mode();
    std::string all;
    for (const std::string& step : engine.steps()) all += step + "\n";
    EXPECT_EQ(all.find("+ SiLU") != std::string::npos, !shared_sigmoid) << all;
    EXPECT_NE(all.find("+ Sigmoid"), std::string::npos) << all;
    EXPECT_NE(all.find("+ HardSwish"), std::string::npos) << all;
    expect_close(engine.run(x), sim.run(x), shared_sigmoid ? "SiLU unfused" : "SiLU fused");
  }
}

// A value that is not a float batch of images (an ArgMax's int64 indices) is kept whole between
// FP32 steps inside the program.
TEST(IntegerEngine, ValuesThatAreNotFloatImagesStayWholeBetweenFp32Steps) {
  OnnxBuilder b;
  b.input("x", {-1, 8, 6, 6});
  b.floats("w1", {8, 8, 3, 3}, random_floats(576, 101));
  b.floats("w2", {4, 8, 1, 1}, random_floats(32, 102));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  auto& am = b.node("ArgMax", {"c1"}, {"idx"}, "argmax");
  OnnxBuilder::attr(am, "axis", int64_t{1});
  auto& cast = b.node("Cast", {"idx"}, {"idxf"}, "cast");
  OnnxBuilder::attr(cast, "to", int64_t{1});
  b.node("Mul", {"c1", "idxf"}, {"m"}, "scale");
  b.node("Conv", {"m", "w2"}, {"y"}, "conv2");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "argmax.onnx");
  Tensor calib = images(16, 103), x = images(3, 104);
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  IntegerExecutor engine(m);
  std::string steps;
  for (const std::string& s : engine.steps()) steps += s + "\n";
  EXPECT_TRUE(engine.fused()) << engine.mode();
  EXPECT_NE(steps.find("ArgMax on a whole tensor"), std::string::npos) << steps;
  Executor sim(q::simulation_graph(m));
  expect_close(engine.run(x), sim.run(x), "whole tensors between FP32 steps");
}

// Self-attention on tokens [N, T, D]: Q, K, V projections (MatMul by weights: quantized layers),
// Q x K^T and softmax x V (MatMuls of two computed operands). --attention int8 quantizes both
// operands of those two: the values they multiply are on their grids (the softmax's unsigned),
// the file keeps them, and the integer engine runs the model fused as the simulation does.
TEST(IntegerEngine, AttentionMatMulsQuantizeBothOperands) {
  OnnxBuilder b;
  b.input("x", {-1, 6, 8});
  b.floats("wq", {8, 8}, random_floats(64, 111));
  b.floats("wk", {8, 8}, random_floats(64, 112));
  b.floats("wv", {8, 8}, random_floats(64, 113));
  b.node("MatMul", {"x", "wq"}, {"q"}, "q_proj");
  b.node("MatMul", {"x", "wk"}, {"k"}, "k_proj");
  b.node("MatMul", {"x", "wv"}, {"v"}, "v_proj");
  auto& t = b.node("Transpose", {"k"}, {"kt"}, "k_t");
  OnnxBuilder::attr(t, "perm", std::vector<int64_t>{0, 2, 1});
  b.node("MatMul", {"q", "kt"}, {"scores"}, "scores");
  auto& sm = b.node("Softmax", {"scores"}, {"p"}, "softmax");
  OnnxBuilder::attr(sm, "axis", int64_t{-1});
  b.node("MatMul", {"p", "v"}, {"y"}, "context");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "attention.onnx");
  Tensor calib = Tensor::from_floats({32, 6, 8}, random_floats(32 * 48, 114));
  Tensor x = Tensor::from_floats({4, 6, 8}, random_floats(4 * 48, 115));
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
  q::QuantizedModel plain = q::quantize_model(g, o, &calib);
  EXPECT_TRUE(plain.inputs.empty());
  o.quantize_attention = true;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  ASSERT_EQ(m.layers.size(), 3u);
  ASSERT_EQ(m.inputs.size(), 4u);
  for (const q::QuantizedInput& in : m.inputs) {
    EXPECT_TRUE(in.node == "scores" || in.node == "context") << in.node;
    EXPECT_FALSE(in.quant.dynamic);
    EXPECT_EQ(in.quant.is_unsigned, in.node == "context" && in.input == 0) << in.node << " " << in.input;  // probabilities
    if (in.node == "context" && in.input == 0) {  // [0, 1], proved: never clipped
      EXPECT_EQ(in.quant.source, "softmax range");
      EXPECT_FLOAT_EQ(in.quant.scale, 1.0f / 255);
    }
  }
  // The operands the MatMuls multiply are codes times the scale.
  Graph sim = q::simulation_graph(m);
  std::vector<std::pair<ValueId, const q::QuantizedInput*>> fed;
  for (const Node& n : sim.nodes)
    for (const q::QuantizedInput& in : m.inputs)
      if (n.name == in.node) fed.emplace_back(n.inputs[static_cast<size_t>(in.input)], &in);
  ASSERT_EQ(fed.size(), 4u);
  Graph probe = sim;
  probe.outputs.clear();
  for (auto& [v, in] : fed) probe.outputs.push_back(v);
  std::vector<Tensor> operands = Executor(probe).run(std::span<const Tensor>(&x, 1));
  for (size_t k = 0; k < operands.size(); ++k) {
    const q::ActivationQuant& a = fed[k].second->quant;
    for (float v : operands[k].floats()) {
      float code = v / a.scale;
      EXPECT_NEAR(code, std::round(code), 1e-3) << fed[k].second->node;
    }
  }
  // Close to FP32, and different from the float-attention model.
  Tensor want = Executor(g).run(x), got = Executor(sim).run(x), without = Executor(q::simulation_graph(plain)).run(x);
  double signal = 0, noise = 0, moved = 0;
  for (int64_t i = 0; i < want.size(); ++i) {
    signal += std::pow(double(want.data<float>()[i]), 2);
    noise += std::pow(double(want.data<float>()[i]) - got.data<float>()[i], 2);
    moved += std::fabs(double(got.data<float>()[i]) - without.data<float>()[i]);
  }
  EXPECT_GT(10 * std::log10(signal / noise), 25.0);
  EXPECT_GT(moved, 0.0);
  // The file keeps them.
  q::QuantizedModel back = q::load_quantized_model(TernFile::from_bytes(q::serialize_quantized_model(m), "attention.tern"));
  ASSERT_EQ(back.inputs.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_EQ(back.inputs[k].node, m.inputs[k].node);
    EXPECT_EQ(back.inputs[k].input, m.inputs[k].input);
    EXPECT_EQ(back.inputs[k].quant.scale, m.inputs[k].quant.scale);
    EXPECT_EQ(back.inputs[k].quant.zero_point, m.inputs[k].quant.zero_point);
  }
  expect_close(Executor(q::simulation_graph(back)).run(x), got, "reloaded");
  IntegerExecutor engine(m);
  EXPECT_TRUE(engine.fused()) << engine.mode();
  expect_close(engine.run(x), got, "integer engine, int8 attention");
}

// --token-scales: a Gemm on tokens quantizes each token with a scale of its own (its max |x| at
// run time): a token 50x larger than the others leaves their resolution intact. The hybrid engine
// runs it in integers as the simulation does, and the file keeps it.
TEST(IntegerEngine, PerTokenScalesGiveEachTokenItsOwnGrid) {
  OnnxBuilder b;
  b.input("x", {-1, 5, 8});
  b.floats("w1", {8, 6}, random_floats(48, 121));
  b.node("MatMul", {"x", "w1"}, {"y"}, "fc1");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "tokens.onnx");
  std::vector<float> v = random_floats(16 * 40, 122);
  for (size_t i = 0; i < 8; ++i) v[i] *= 50.0f;  // image 0, token 0: an outlier token
  Tensor calib = Tensor::from_floats({16, 5, 8}, v);
  Tensor x = Tensor::from_floats({2, 5, 8}, std::vector<float>(v.begin(), v.begin() + 80));
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
  o.per_token_scales = true;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  ASSERT_EQ(m.layers.size(), 1u);
  const q::ActivationQuant& a = *m.layers[0].input;
  EXPECT_TRUE(a.dynamic && a.per_token) << a.source;
  EXPECT_FALSE(a.is_unsigned);  // signed inputs stay signed (asymmetric codes are for static scales)
  // The simulation's quantized input: every token on the grid of its own max |x| / 127.
  Graph sim = q::simulation_graph(m);
  Graph probe = sim;
  probe.outputs = {sim.nodes[0].outputs[0]};
  ASSERT_EQ(sim.nodes[0].op, OpType::kFakeQuantize);
  Tensor xq = Executor(probe).run(x);
  for (int64_t t = 0; t < 10; ++t) {
    float peak = 0;
    for (int64_t k = 0; k < 8; ++k) peak = std::max(peak, std::fabs(x.data<float>()[t * 8 + k]));
    for (int64_t k = 0; k < 8; ++k) {
      float code = xq.data<float>()[t * 8 + k] / (peak / 127);
      EXPECT_NEAR(code, std::round(code), 2e-3) << "token " << t;
      EXPECT_NEAR(xq.data<float>()[t * 8 + k], x.data<float>()[t * 8 + k], 0.5f * peak / 127 * 1.001f) << "token " << t;
    }
  }
  Tensor want = Executor(sim).run(x);
  IntegerExecutor engine(m);
  EXPECT_TRUE(engine.fused()) << engine.mode();  // a whole-tensor layer step of the fused program
  for (const IntegerLayerInfo& l : engine.layers()) {
    EXPECT_EQ(l.kernel.find("float"), std::string::npos) << l.kernel;
    EXPECT_NE(l.kernel.find("per-token"), std::string::npos) << l.kernel;
  }
  expect_close(engine.run(x), want, "per-token scales");
  expect_close(IntegerExecutor(m, {}, IntegerEngineOptions{false}).run(x), want, "per-token scales (hybrid)");
  q::QuantizedModel back = q::load_quantized_model(TernFile::from_bytes(q::serialize_quantized_model(m), "tokens.tern"));
  EXPECT_TRUE(back.layers[0].input->per_token);
  expect_close(Executor(q::simulation_graph(back)).run(x), want, "reloaded");
}

// A linear layer on sequence-first tokens [T, N, D] (as exporters write nn.MultiheadAttention's
// input projection): not a batch of images, so the fused program runs it as a whole-tensor layer
// step, between the steps on batches of images, with static and with per-token scales; the
// layer after it (on [N, T, D] again) stays an integer layer on codes.
TEST(IntegerEngine, LayersOnSequenceFirstTokensStayInTheFusedProgram) {
  OnnxBuilder b;
  b.input("x", {-1, 5, 8});
  b.floats("w1", {8, 8}, random_floats(64, 131));
  b.floats("w2", {8, 6}, random_floats(48, 132));
  auto& t1 = b.node("Transpose", {"x"}, {"xt"}, "to_sequence_first");
  OnnxBuilder::attr(t1, "perm", std::vector<int64_t>{1, 0, 2});
  b.node("MatMul", {"xt", "w1"}, {"h"}, "in_proj");
  auto& t2 = b.node("Transpose", {"h"}, {"ht"}, "to_batch_first");
  OnnxBuilder::attr(t2, "perm", std::vector<int64_t>{1, 0, 2});
  b.node("Add", {"ht", "x"}, {"r"}, "residual");
  b.node("MatMul", {"r", "w2"}, {"y"}, "out");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "sequence_first.onnx");
  Tensor calib = Tensor::from_floats({16, 5, 8}, random_floats(640, 133));
  Tensor x = Tensor::from_floats({3, 5, 8}, random_floats(120, 134));
  for (bool per_token : {false, true}) {
    const std::string what = per_token ? "per-token scales" : "static scales";
    q::QuantizeOptions o;
    o.plan.first_last_8bit = false;
    o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
    o.per_token_scales = per_token;
    q::QuantizedModel m = q::quantize_model(g, o, &calib);
    ASSERT_EQ(m.layers.size(), 2u) << what;
    Tensor want = Executor(q::simulation_graph(m)).run(x);
    IntegerExecutor engine(m);
    ASSERT_TRUE(engine.fused()) << what << ": " << engine.mode();
    std::map<std::string, std::string> kernel;
    for (const IntegerLayerInfo& l : engine.layers()) kernel[l.node] = l.kernel;
    EXPECT_NE(kernel["in_proj"].find("whole-tensor"), std::string::npos) << what << ": " << kernel["in_proj"];
    if (!per_token) EXPECT_EQ(kernel["out"].find("whole-tensor"), std::string::npos) << kernel["out"];
    for (auto& [node, k] : kernel) EXPECT_EQ(k.find("float"), std::string::npos) << node << ": " << k;
    expect_close(engine.run(x), want, what);
    expect_close(engine.run(x), want, what + ", again");  // the scratch buffers reused
    Tensor one = Tensor::from_floats({1, 5, 8}, std::vector<float>(x.floats().begin(), x.floats().begin() + 40));
    expect_close(engine.run(one), Executor(q::simulation_graph(m)).run(one), what + ", batch 1");
  }
}

// A transformer block's float parts as torch.onnx writes them below opset 17: the decomposed
// LayerNorm (ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add) runs as one step, and
// the decomposed GELU after a linear layer (Div, Erf, Add, Mul, Mul) in that layer's epilogue;
// the engine's outputs are the simulation's.
TEST(IntegerEngine, DecomposedLayerNormAndGeluFuse) {
  for (bool halve_first : {false, true}) {
    SCOPED_TRACE(halve_first ? "GELU halved first" : "GELU halved last");
    OnnxBuilder b;
    b.input("x", {-1, 37, 8});  // 37 tokens: the LayerNorm step works in blocks of 32 rows
    b.floats("w1", {8, 16}, random_floats(128, 141));
    b.floats("w2", {16, 8}, random_floats(128, 142));
    std::vector<float> gamma = random_floats(8, 143), beta = random_floats(8, 144);
    for (float& v : gamma) v += 1.0f;
    b.floats("gamma", {8}, gamma);
    b.floats("beta", {8}, beta);
    b.floats("two", {}, {2.0f});
    b.floats("eps", {}, {1e-6f});
    b.floats("sqrt2", {}, {1.4142135f});
    b.floats("one", {}, {1.0f});
    b.floats("half", {}, {0.5f});
    auto mean = [&](const std::string& in, const std::string& out) {
      auto& n = b.node("ReduceMean", {in}, {out}, out);
      OnnxBuilder::attr(n, "axes", std::vector<int64_t>{-1});
      OnnxBuilder::attr(n, "keepdims", int64_t{1});
    };
    mean("x", "mu");
    b.node("Sub", {"x", "mu"}, {"d"}, "sub");
    b.node("Pow", {"d", "two"}, {"d2"}, "pow");
    mean("d2", "var");
    b.node("Add", {"var", "eps"}, {"ve"}, "add_eps");
    b.node("Sqrt", {"ve"}, {"sd"}, "sqrt");
    b.node("Div", {"d", "sd"}, {"n"}, "normalize");
    b.node("Mul", {"n", "gamma"}, {"ng"}, "scale");
    b.node("Add", {"ng", "beta"}, {"ln"}, "shift");
    b.node("MatMul", {"ln", "w1"}, {"h"}, "fc1");
    b.node("Div", {"h", "sqrt2"}, {"hs"}, "gelu_div");
    b.node("Erf", {"hs"}, {"he"}, "gelu_erf");
    b.node("Add", {"he", "one"}, {"h1"}, "gelu_add");
    if (halve_first) {  // paddle2onnx's order: (x * 0.5) * (erf + 1)
      b.node("Mul", {"h", "half"}, {"hh"}, "gelu_half");
      b.node("Mul", {"hh", "h1"}, {"g"}, "gelu_mul");
    } else {  // torch.onnx's: (x * (erf + 1)) * 0.5
      b.node("Mul", {"h", "h1"}, {"hm"}, "gelu_mul");
      b.node("Mul", {"hm", "half"}, {"g"}, "gelu_half");
    }
    b.node("MatMul", {"g", "w2"}, {"m"}, "fc2");
    b.node("Add", {"m", "x"}, {"y"}, "residual");
    b.output("y");
    Graph g = import_onnx_bytes(b.bytes(), "block.onnx");
    Tensor calib = Tensor::from_floats({16, 37, 8}, random_floats(16 * 37 * 8, 145));
    Tensor x = Tensor::from_floats({3, 37, 8}, random_floats(3 * 37 * 8, 146));
    for (const char* weights : {"int8", "ternary"}) {
      q::QuantizeOptions o;
      o.plan.first_last_8bit = false;
      if (std::string(weights) == "int8") o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, 0};
      q::QuantizedModel m = q::quantize_model(g, o, &calib);
      ASSERT_EQ(m.layers.size(), 2u) << weights;
      IntegerExecutor engine(m);
      ASSERT_TRUE(engine.fused()) << engine.mode();
      int layer_norms = 0, float_steps = 0;
      for (const std::string& step : engine.steps()) {
        layer_norms += step.find("LayerNorm") != std::string::npos;
        float_steps += step.find("FP32 kernel") != std::string::npos;
      }
      EXPECT_EQ(layer_norms, 1) << weights;
      EXPECT_EQ(float_steps, 0) << weights;  // nothing of the LayerNorm or the GELU left to run node by node
      for (const IntegerLayerInfo& l : engine.layers())
        if (l.node == "fc1") EXPECT_NE(l.kernel.find("GELU"), std::string::npos) << l.kernel;
      Tensor want = Executor(q::simulation_graph(m)).run(x);
      expect_close(engine.run(x), want, weights);
    }
  }
}

// LayerNormalization as one operator (opset 17) runs as a LayerNorm step too, computing exactly
// what its FP32 kernel computes.
TEST(IntegerEngine, LayerNormalizationOperatorRunsAsOneStep) {
  OnnxBuilder b(17);
  b.input("x", {-1, 5, 8});
  std::vector<float> gamma = random_floats(8, 171);
  for (float& v : gamma) v += 1.0f;
  b.floats("gamma", {8}, gamma);
  b.floats("beta", {8}, random_floats(8, 172));
  b.floats("w", {8, 6}, random_floats(48, 173));
  auto& ln = b.node("LayerNormalization", {"x", "gamma", "beta"}, {"n"}, "ln");
  OnnxBuilder::attr(ln, "axis", int64_t{-1});
  OnnxBuilder::attr(ln, "epsilon", 1e-5f);
  b.node("MatMul", {"n", "w"}, {"y"}, "fc");
  b.output("y");
  b.output("n");
  Graph g = import_onnx_bytes(b.bytes(), "ln17.onnx");
  Tensor calib = Tensor::from_floats({16, 5, 8}, random_floats(640, 174));
  Tensor x = Tensor::from_floats({3, 5, 8}, random_floats(120, 175));
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, 0};
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  IntegerExecutor engine(m);
  ASSERT_TRUE(engine.fused()) << engine.mode();
  int layer_norms = 0;
  for (const std::string& step : engine.steps()) layer_norms += step.find("LayerNorm on f32 (LayerNormalization") != std::string::npos;
  EXPECT_EQ(layer_norms, 1);
  std::vector<Tensor> got = engine.run(std::span<const Tensor>(&x, 1));
  std::vector<Tensor> want = Executor(q::simulation_graph(m)).run(std::span<const Tensor>(&x, 1));
  ASSERT_EQ(got.size(), 2u);
  expect_close(got[0], want[0], "LayerNormalization, then the layer");
  ASSERT_EQ(got[1].shape(), want[1].shape());
  for (int64_t k = 0; k < got[1].size(); ++k) ASSERT_EQ(got[1].data<float>()[k], want[1].data<float>()[k]) << "value " << k;  // bit for bit
}

// Reshape targets the graph computes at run time from the batch (Shape, Gather, Mul, Concat, as
// exporters write attention's x.view(T, N * heads, d)): computed once per batch size, and again
// for a batch of another size; the layer between the two views runs on the merged rows.
TEST(IntegerEngine, ShapesComputedFromTheBatchFollowItsSize) {
  OnnxBuilder b;
  b.input("x", {-1, 5, 8});
  b.floats("w1", {8, 6}, random_floats(48, 161));
  b.floats("w2", {6, 4}, random_floats(24, 162));
  b.ints("zero", {1}, {0});
  b.ints("five", {1}, {5});
  b.ints("six", {1}, {6});
  b.ints("twenty", {1}, {20});
  b.node("MatMul", {"x", "w1"}, {"h"}, "fc1");
  b.node("Relu", {"h"}, {"r"}, "relu");
  b.node("Shape", {"r"}, {"s"}, "shape");
  b.node("Gather", {"s", "zero"}, {"n"}, "batch");
  b.node("Mul", {"n", "five"}, {"n5"}, "rows");
  auto& cat = b.node("Concat", {"n5", "six"}, {"target"}, "target");
  OnnxBuilder::attr(cat, "axis", int64_t{0});
  b.node("Reshape", {"r", "target"}, {"f"}, "merge");
  b.node("MatMul", {"f", "w2"}, {"m"}, "fc2");
  b.node("Shape", {"x"}, {"sx"}, "shape_x");
  b.node("Gather", {"sx", "zero"}, {"nx"}, "batch_x");
  auto& back = b.node("Concat", {"nx", "twenty"}, {"target2"}, "target2");
  OnnxBuilder::attr(back, "axis", int64_t{0});
  b.node("Reshape", {"m", "target2"}, {"y"}, "split");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "view.onnx");
  Tensor calib = Tensor::from_floats({16, 5, 8}, random_floats(640, 163));
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, 0};
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  ASSERT_EQ(m.layers.size(), 2u);
  IntegerExecutor engine(m);
  ASSERT_TRUE(engine.fused()) << engine.mode();
  std::string steps;
  int once = 0;
  for (const std::string& step : engine.steps()) {
    steps += step + "\n";
    once += step.find("once per batch size") != std::string::npos;
  }
  EXPECT_GE(once, 2) << steps;  // the Shape and what is computed from it
  Executor sim(q::simulation_graph(m));
  for (int64_t batch : {3, 1, 3, 2}) {
    Tensor x = Tensor::from_floats({batch, 5, 8}, random_floats(static_cast<size_t>(batch * 40), 164 + static_cast<uint32_t>(batch)));
    Tensor got = engine.run(x);
    ASSERT_EQ(got.shape(), (Shape{batch, 20}));
    expect_close(got, sim.run(x), "batch " + std::to_string(batch));
  }
}

// A transformer's linear layers: MatMul by constant weights on [N, T, K] tokens (+ bias Add)
// imports as tern's Gemm, quantizes like any fully connected layer (int8 and ternary weights) and
// runs on the integer engine as the simulation does.
TEST(IntegerEngine, MatMulLinearLayersOnTokensQuantizeAndRun) {
  OnnxBuilder b;
  b.input("x", {-1, 5, 8});
  b.floats("w1", {8, 6}, random_floats(48, 41));
  b.floats("b1", {6}, random_floats(6, 42));
  b.floats("w2", {6, 4}, random_floats(24, 43));
  b.node("MatMul", {"x", "w1"}, {"m1"}, "fc1");
  b.node("Add", {"m1", "b1"}, {"a1"}, "bias1");
  b.node("Relu", {"a1"}, {"r1"}, "relu");
  b.node("MatMul", {"r1", "w2"}, {"y"}, "fc2");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "tokens.onnx");
  int gemms = 0;
  for (const Node& n : g.nodes) {
    EXPECT_TRUE(n.op == OpType::kGemm) << to_string(n.op) << " " << n.name;  // bias and Relu fused
    gemms += n.op == OpType::kGemm;
  }
  EXPECT_EQ(gemms, 2);
  Tensor x = Tensor::from_floats({3, 5, 8}, random_floats(120, 44));
  // FP32 against the product written out.
  Tensor y = Executor(g).run(x);
  ASSERT_EQ(y.shape(), (Shape{3, 5, 4}));
  std::vector<float> w1 = random_floats(48, 41), bias = random_floats(6, 42), w2 = random_floats(24, 43);
  for (int64_t t = 0; t < 15; ++t)
    for (int64_t o = 0; o < 4; ++o) {
      double acc = 0;
      for (int64_t h = 0; h < 6; ++h) {
        double z = bias[static_cast<size_t>(h)];
        for (int64_t k = 0; k < 8; ++k) z += double(x.data<float>()[t * 8 + k]) * w1[static_cast<size_t>(k * 6 + h)];
        acc += std::max(z, 0.0) * w2[static_cast<size_t>(h * 4 + o)];
      }
      EXPECT_NEAR(y.data<float>()[t * 4 + o], acc, 1e-5);
    }
  Tensor calib = Tensor::from_floats({16, 5, 8}, random_floats(640, 45));
  for (const char* weights : {"int8", "ternary"}) {
    q::QuantizeOptions o;
    o.plan.first_last_8bit = false;
    if (std::string(weights) == "int8") o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, 0};
    o.output_aware = true;
    q::QuantizedModel m = q::quantize_model(g, o, &calib);
    ASSERT_EQ(m.layers.size(), 2u) << weights;
    Tensor sim = Executor(q::simulation_graph(m)).run(x);
    IntegerExecutor engine(m);
    EXPECT_TRUE(engine.fused()) << engine.mode();  // tokens [N, T, D] as a row of T pixels
    for (const IntegerLayerInfo& l : engine.layers()) EXPECT_EQ(l.kernel.find("float"), std::string::npos) << l.node << ": " << l.kernel;
    expect_close(engine.run(x), sim, weights);
    expect_close(IntegerExecutor(m, {}, IntegerEngineOptions{false}).run(x), sim, std::string(weights) + " (hybrid)");
    // int8 stays close to FP32 on these tokens.
    if (std::string(weights) == "int8") {
      double signal = 0, noise = 0;
      for (int64_t i = 0; i < y.size(); ++i) {
        signal += double(y.data<float>()[i]) * y.data<float>()[i];
        noise += std::pow(double(y.data<float>()[i]) - sim.data<float>()[i], 2);
      }
      EXPECT_GT(10 * std::log10(signal / noise), 25.0) << "int8 output SQNR";  // 29.5 dB measured
    }
  }
}

// The bundled ResNet-20, FGQ N=4 W2A8 (quick per-group rounding): the integer engine predicts
// what the simulation predicts.
TEST(IntegerEngine, BundledResNet20PredictsLikeTheSimulation) {
  Graph g = import_onnx(std::string(TERN_SOURCE_DIR) + "/models/resnet20.onnx");
  Dataset train = load_idx_dataset("fashion-mnist", "train"), test = load_idx_dataset("fashion-mnist", "test");
  Preprocess norm = preprocess_from_metadata(g);
  Shape in_shape = g.value(g.inputs[0]).shape;
  Tensor calib = make_batch(train, 0, 64, norm, in_shape);
  q::QuantizeOptions o;
  o.input_non_negative = false;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  Executor sim(q::simulation_graph(m));
  IntegerExecutor engine(m);
  Tensor x = make_batch(test, 0, 200, norm, in_shape);
  Tensor a = engine.run(x), b = sim.run(x);
  int64_t same = 0;
  for (int64_t i = 0; i < a.dim(0); ++i) {
    const float* ra = a.data<float>() + i * a.dim(1);
    const float* rb = b.data<float>() + i * b.dim(1);
    same += (std::max_element(ra, ra + a.dim(1)) - ra) == (std::max_element(rb, rb + b.dim(1)) - rb);
  }
  EXPECT_GE(same, a.dim(0) - 1) << "of " << a.dim(0);
  // Twenty layers deep, float summation order occasionally moves an activation across a rounding
  // boundary (one code step); the logits stay within a percent.
  expect_close(a, b, "resnet20 logits", 1e-2);
}

}  // namespace
}  // namespace tern::testing
