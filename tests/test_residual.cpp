// Residual edges (residual.h): budgets, the allocator, data-free propagation gains, measured
// sensitivities, levels (set_level, QuantizedSession) and their storage.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <tuple>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"
#include "tern/residual.h"

namespace tern::testing {
namespace {

namespace q = tern::quant;

TEST(ResidualBudget, ParsesEveryFormAndRejectsNonsense) {
  EXPECT_EQ(q::parse_residual_budget("size:150000").kind, q::ResidualBudget::Kind::kSize);
  EXPECT_DOUBLE_EQ(q::parse_residual_budget("size:150k").value, 150000);
  EXPECT_DOUBLE_EQ(q::parse_residual_budget("size:1.5M").value, 1.5e6);
  q::ResidualBudget pct = q::parse_residual_budget("size:60%");
  EXPECT_TRUE(pct.percent_of_int8);
  EXPECT_DOUBLE_EQ(pct.value, 60);
  EXPECT_EQ(q::parse_residual_budget("edges:12").kind, q::ResidualBudget::Kind::kEdges);
  EXPECT_DOUBLE_EQ(q::parse_residual_budget("drop:0.5").value, 0.5);
  EXPECT_EQ(q::parse_residual_budget("all").kind, q::ResidualBudget::Kind::kAll);
  for (const char* bad : {"", "size", "size:", "size:-5", "size:abc", "size:12x", "edges:1.5", "edges:-1", "drop:101",
                          "drop:nan", "speed:3", "size:inf", "size:5000%"})
    EXPECT_THROW(q::parse_residual_budget(bad), Error) << bad;
}

// Three layers: A is sensitive and cheap, B insensitive, C sensitive but expensive.
std::vector<q::ResidualCandidate> table() {
  std::vector<q::ResidualCandidate> t(3);
  t[0] = {{100, 100, 100}, {0.10, 0.03, 0.01}, -1, 0, 1.0};
  t[1] = {{100, 100, 100}, {0.10, 0.03, 0.01}, -1, 0, 0.01};
  t[2] = {{1000, 1000, 1000}, {0.10, 0.03, 0.01}, 3000, 0.0001, 1.0};
  return t;
}

TEST(ResidualAllocator, GreedyByGainPerByteKeepsTermOrderAndBudget) {
  std::vector<q::ResidualCandidate> t = table();
  std::vector<q::ResidualMove> all = q::order_residual_moves(t, q::ResidualRanking::kMeasured);
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all[0].layer, 0u);  // the cheap sensitive layer first
  EXPECT_EQ(all[0].term, 1);
  EXPECT_NEAR(all[0].gain, 1.0 * (0.10 - 0.03) / 0.10, 1e-12);
  std::vector<int> terms(3, 1);
  for (const q::ResidualMove& m : all) {
    if (m.term == 0) continue;
    EXPECT_EQ(m.term, terms[m.layer]) << "term out of order";
    terms[m.layer] = m.term + 1;
  }
  for (size_t i = 1; i < all.size(); ++i) {  // diminishing: gain per byte never rises along the ranking
    if (all[i].bytes > 0 && all[i - 1].bytes > 0) {
      EXPECT_LE(all[i].gain / static_cast<double>(all[i].bytes), all[i - 1].gain / static_cast<double>(all[i - 1].bytes) + 1e-12);
    }
  }
  for (int64_t budget : {0, 150, 250, 1200, 2500}) {
    std::vector<q::ResidualMove> some = q::order_residual_moves(t, q::ResidualRanking::kMeasured, budget);
    int64_t spent = 0;
    for (const q::ResidualMove& m : some) spent += m.bytes;
    EXPECT_LE(spent, budget);
  }
  EXPECT_TRUE(q::order_residual_moves(t, q::ResidualRanking::kMeasured, 0).empty());
}

TEST(ResidualAllocator, FallbackReplacesTheLayersEdges) {
  std::vector<q::ResidualCandidate> t = table();
  std::vector<q::ResidualMove> all = q::order_residual_moves(t, q::ResidualRanking::kMeasured);
  auto fb = std::find_if(all.begin(), all.end(), [](const q::ResidualMove& m) { return m.term == 0; });
  ASSERT_NE(fb, all.end());
  EXPECT_EQ(fb->layer, 2u);
  for (auto it = fb + 1; it != all.end(); ++it) EXPECT_NE(it->layer, 2u) << "a layer at int8 takes no more terms";
  q::ResidualAllocation a = q::allocation_from_moves(t, all, all.size());
  EXPECT_TRUE(a.fallback[2]);
  EXPECT_FALSE(a.fallback[0]);
  for (const q::ResidualMove& e : a.edges) EXPECT_NE(e.layer, 2u);
  q::ResidualAllocation none = q::allocation_from_moves(t, all, 0);
  EXPECT_TRUE(none.edges.empty());
  EXPECT_NEAR(none.estimated_distortion, 1.0 + 0.01 + 1.0, 1e-12);
  EXPECT_LT(a.estimated_distortion, none.estimated_distortion);
  EXPECT_THROW(q::allocation_from_moves(t, all, all.size() + 1), Error);
}

TEST(ResidualAllocator, UniformAndRandomBaselines) {
  std::vector<q::ResidualCandidate> t = table();
  std::vector<q::ResidualMove> u = q::order_residual_moves(t, q::ResidualRanking::kUniform);
  ASSERT_EQ(u.size(), 6u);  // two extra terms for each of three layers, no fallbacks
  for (size_t i = 0; i < u.size(); ++i) {
    EXPECT_EQ(u[i].layer, i % 3);
    EXPECT_EQ(u[i].term, static_cast<int>(i / 3) + 1);
  }
  std::vector<q::ResidualMove> r1 = q::order_residual_moves(t, q::ResidualRanking::kRandom, 100000, 7);
  std::vector<q::ResidualMove> r2 = q::order_residual_moves(t, q::ResidualRanking::kRandom, 100000, 7);
  ASSERT_EQ(r1.size(), r2.size());
  for (size_t i = 0; i < r1.size(); ++i) EXPECT_EQ(r1[i].layer, r2[i].layer);  // seeded
  std::vector<int> terms(3, 1);
  for (const q::ResidualMove& m : r1) {
    EXPECT_NE(m.term, 0) << "random distributes edges only";
    EXPECT_EQ(m.term, terms[m.layer]);
    terms[m.layer] = m.term + 1;
  }
}

// x -> conv -> relu -> conv -> y: the relative perturbation of a plain chain reaches the output
// whole (g = 1 for both layers); y = x + conv(x) dilutes it by f / (1 + f).
TEST(PropagationGains, ChainKeepsAndResidualAddDilutes) {
  {
    OnnxBuilder b;
    b.input("x", {-1, 3, 5, 5});
    b.floats("w1", {4, 3, 3, 3}, random_floats(108, 1));
    b.floats("w2", {2, 4, 1, 1}, random_floats(8, 2));
    b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
    b.node("Relu", {"c1"}, {"r"}, "relu");
    b.node("Conv", {"r", "w2"}, {"y"}, "conv2");
    b.output("y");
    Graph g = import_onnx_bytes(b.bytes(), "chain.onnx");
    std::vector<double> gains = q::propagation_gains(g, {"conv1", "conv2"});
    EXPECT_NEAR(gains[0], 1.0, 1e-9);
    EXPECT_NEAR(gains[1], 1.0, 1e-9);
    EXPECT_THROW(q::propagation_gains(g, {"relu"}), Error);
  }
  {
    OnnxBuilder b;
    b.input("x", {-1, 2, 4, 4});
    std::vector<float> w = random_floats(4, 3);
    b.floats("w", {2, 2, 1, 1}, w);
    b.node("Conv", {"x", "w"}, {"c"}, "conv");
    b.node("Add", {"x", "c"}, {"y"}, "add");
    b.output("y");
    Graph g = import_onnx_bytes(b.bytes(), "skip.onnx");
    double f = 0;
    for (float v : w) f += static_cast<double>(v) * v;
    f /= 2;  // ||W||^2 / out
    EXPECT_NEAR(q::propagation_gains(g, {"conv"})[0], f / (1 + f), 1e-9);
  }
}

// Squeeze-excitation blocks (x times a HardSigmoid or Sigmoid gate computed from x): the gates'
// energies are bounded, so the gains stay finite and positive however many blocks there are
// (passed through unbounded, the Muls squared the energies until they overflowed and every gain
// came out 0, which left the data-free ranking with nothing to rank on MobileNetV3).
TEST(PropagationGains, StayFiniteThroughSqueezeExcitationGates) {
  OnnxBuilder b;
  b.input("x", {-1, 16, 4, 4});
  std::vector<std::string> layers;
  std::string x = "x";
  for (int k = 0; k < 12; ++k) {
    const std::string i = std::to_string(k);
    std::vector<float> w = random_floats(256, 20 + k), w1 = random_floats(64, 40 + k), w2 = random_floats(64, 60 + k);
    for (float& v : w) v *= 4.0f;  // energies grow 16x per convolution
    b.floats("w" + i, {16, 16, 1, 1}, w);
    b.floats("a" + i, {4, 16, 1, 1}, w1);
    b.floats("b" + i, {16, 4, 1, 1}, w2);
    b.node("Conv", {x, "w" + i}, {"c" + i}, "conv" + i);
    b.node("GlobalAveragePool", {"c" + i}, {"p" + i}, "pool" + i);
    b.node("Conv", {"p" + i, "a" + i}, {"s" + i}, "squeeze" + i);
    b.node("Relu", {"s" + i}, {"r" + i}, "relu" + i);
    b.node("Conv", {"r" + i, "b" + i}, {"e" + i}, "excite" + i);
    b.node(k % 2 ? "Sigmoid" : "HardSigmoid", {"e" + i}, {"g" + i}, "gate" + i);
    b.node("Mul", {"c" + i, "g" + i}, {"m" + i}, "scale" + i);
    x = "m" + i;
    for (const char* l : {"conv", "squeeze", "excite"}) layers.push_back(l + i);
  }
  b.output(x);
  Graph g = import_onnx_bytes(b.bytes(), "se.onnx");
  std::vector<double> gains = q::propagation_gains(g, layers);
  for (size_t l = 0; l < layers.size(); ++l) {
    EXPECT_TRUE(std::isfinite(gains[l])) << layers[l];
    EXPECT_GT(gains[l], 0.0) << layers[l];
  }
  // The main path's convolutions matter more than the gates' layers feeding a slope of 1/4 or less.
  EXPECT_GT(gains[layers.size() - 3], gains[layers.size() - 1]);
}

TEST(MeasuredSensitivity, ZeroForTheSameWeightsOneForNone) {
  OnnxBuilder b;
  b.input("x", {-1, 6});
  std::vector<float> w = random_floats(24, 4);
  b.floats("w", {4, 6}, w);
  auto& n = b.node("Gemm", {"x", "w"}, {"y"}, "fc");
  OnnxBuilder::attr(n, "transB", int64_t{1});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "fc.onnx");
  Tensor images = Tensor::from_floats({10, 6}, random_floats(60, 5));
  std::string name = g.value(g.nodes[0].inputs[1]).name;
  std::vector<double> d = q::measured_sensitivities(g, {name, name}, {Tensor::from_floats({4, 6}, w), Tensor(DataType::kFloat32, {4, 6})},
                                                    images, 3);
  EXPECT_NEAR(d[0], 0.0, 1e-12);
  EXPECT_NEAR(d[1], 1.0, 1e-9);  // all-zero weights: the whole output is error
  EXPECT_THROW(q::measured_sensitivities(g, {name}, {Tensor(DataType::kFloat32, {3, 6})}, images, 3), Error);
}

// A small classifier whose every Conv/Gemm is ternary (first/last layers included).
struct Classifier {
  Graph graph;
  Tensor images;
  std::vector<int64_t> labels;
};

// fc_bias: the Gemm's bias (none when empty); output "f" (the pooled features) instead of "y";
// sequence: output [N, 2, 5], a recogniser's scores per position (y, then -y).
Classifier classifier(const std::vector<float>& fc_bias = {}, bool features = false, bool sequence = false) {
  OnnxBuilder b;
  b.input("x", {-1, 4, 6, 6});
  b.floats("w1", {8, 4, 3, 3}, random_floats(288, 11));
  b.floats("b1", {8}, random_floats(8, 12));
  b.floats("w2", {8, 8, 3, 3}, random_floats(576, 13));
  b.floats("w3", {8, 8, 3, 3}, random_floats(576, 14));
  b.floats("wf", {5, 8}, random_floats(40, 15));
  for (auto [in, w, out, name] : {std::tuple{"x", "w1", "c1", "conv1"}, {"r1", "w2", "c2", "conv2"}, {"r2", "w3", "c3", "conv3"}}) {
    std::vector<std::string> inputs = {in, w};
    if (std::string(name) == "conv1") inputs.push_back("b1");
    auto& c = b.node("Conv", inputs, {out}, name);
    OnnxBuilder::attr(c, "pads", std::vector<int64_t>{1, 1, 1, 1});
    b.node("Relu", {out}, {std::string("r") + name[4]}, std::string("relu") + name[4]);
  }
  b.node("GlobalAveragePool", {"r3"}, {"p"}, "pool");
  b.node("Flatten", {"p"}, {"f"}, "flatten");
  std::vector<std::string> fc_inputs = {"f", "wf"};
  if (!fc_bias.empty()) {
    b.floats("bf", {5}, fc_bias);
    fc_inputs.push_back("bf");
  }
  auto& fc = b.node("Gemm", fc_inputs, {"y"}, "fc");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  if (sequence) {
    b.node("Neg", {"y"}, {"neg"}, "neg");
    auto& cat = b.node("Concat", {"y", "neg"}, {"both"}, "concat");
    OnnxBuilder::attr(cat, "axis", int64_t{1});
    b.ints("shape", {3}, {-1, 2, 5});
    b.node("Reshape", {"both", "shape"}, {"seq"}, "reshape");
  }
  b.output(features ? "f" : sequence ? "seq" : "y");
  Classifier c;
  c.graph = import_onnx_bytes(b.bytes(), "classifier.onnx");
  c.images = Tensor::from_floats({24, 4, 6, 6}, random_floats(24 * 144, 16));
  for (int64_t i = 0; i < 24; ++i) c.labels.push_back(i % 5);
  return c;
}

q::QuantizeOptions residual_options(const std::string& budget, q::ResidualRanking ranking = q::ResidualRanking::kMeasured) {
  q::QuantizeOptions o;
  o.plan.first_last_8bit = false;
  o.output_aware = true;
  o.residual = q::parse_residual_budget(budget);
  o.residual_ranking = ranking;
  o.residual_fallback = false;
  o.residual_max_terms = 3;
  o.batch = 7;  // several calibration batches, one short
  return o;
}

Tensor run(Executor& e, const Tensor& x) { return e.run(x); }

bool same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::equal(a.floats().begin(), a.floats().end(), b.floats().begin());
}

TEST(ResidualLevels, LevelKIsTheModelQuantizedWithThoseKEdgeSets) {
  Classifier c = classifier();
  q::QuantizedModel full = q::quantize_model(c.graph, residual_options("all"), &c.images);
  ASSERT_GE(full.max_level(), 3);
  EXPECT_EQ(full.level, full.max_level());
  for (int k : {0, 1, full.max_level() / 2, full.max_level()}) {
    q::QuantizedModel exact = q::quantize_model(c.graph, residual_options("edges:" + std::to_string(k)), &c.images);
    ASSERT_EQ(exact.max_level(), k);
    q::QuantizedModel at_k = full;
    q::set_level(at_k, k);
    Executor a(q::simulation_graph(at_k)), b(q::simulation_graph(exact));
    EXPECT_TRUE(same(run(a, c.images), run(b, c.images))) << "level " << k;
    q::ModelSize sa = q::model_size(at_k), sb = q::model_size(exact);
    EXPECT_EQ(sa.quantized, sb.quantized);
    EXPECT_EQ(sa.multiplies_per_image, sb.multiplies_per_image);
    EXPECT_EQ(sa.stored, q::model_size(full).stored);
  }
}

TEST(ResidualLevels, SwitchingUpDownAndBackIsExactAndNeedsNoReload) {
  Classifier c = classifier();
  std::string path = ::testing::TempDir() + "/levels.tern";
  q::save_quantized_model(path, q::quantize_model(c.graph, residual_options("all"), &c.images));
  q::QuantizedSession session(q::load_quantized_model(path));
  std::remove(path.c_str());  // from here on, nothing can be reloaded
  const int top = session.max_level();
  ASSERT_GE(top, 2);
  EXPECT_EQ(session.level(), top);
  std::vector<Tensor> outputs;
  std::vector<int64_t> bytes;
  for (int k = 0; k <= top; ++k) {
    session.set_level(k);
    outputs.push_back(session.run(c.images));
    bytes.push_back(q::model_size(session.model()).quantized);
    if (k > 0) {
      EXPECT_FALSE(same(outputs[static_cast<size_t>(k)], outputs[static_cast<size_t>(k - 1)])) << "level " << k << " changed nothing";
      EXPECT_EQ(bytes[static_cast<size_t>(k)] - bytes[static_cast<size_t>(k - 1)], session.model().edges[static_cast<size_t>(k - 1)].bytes);
    }
  }
  for (int k : {top, 0, 1, top, top - 1, 0, top}) {
    session.set_level(k);
    EXPECT_TRUE(same(session.run(c.images), outputs[static_cast<size_t>(k)])) << "back at level " << k;
  }
  // One step changes exactly one layer's weights.
  q::QuantizedModel m = session.model();
  q::set_level(m, 0);
  EXPECT_EQ(q::set_level(m, 1).size(), 1u);
  EXPECT_TRUE(q::set_level(m, 1).empty());
  EXPECT_THROW(session.set_level(top + 1), Error);
  EXPECT_THROW(session.set_level(-1), Error);
  EXPECT_TRUE(same(session.run(c.images), outputs[static_cast<size_t>(top)])) << "a refused switch changes nothing";
}

TEST(ResidualLevels, StoredLevelAndEdgesRoundTrip) {
  Classifier c = classifier();
  q::QuantizedModel m = q::quantize_model(c.graph, residual_options("all", q::ResidualRanking::kWeights), &c.images);
  q::set_level(m, 1);
  std::string path = ::testing::TempDir() + "/level1.tern";
  q::save_quantized_model(path, m);
  q::QuantizedModel back = q::load_quantized_model(path);
  std::remove(path.c_str());
  EXPECT_EQ(back.level, 1);
  ASSERT_EQ(back.edges.size(), m.edges.size());
  for (size_t i = 0; i < m.edges.size(); ++i) {
    EXPECT_EQ(back.edges[i].layer, m.edges[i].layer);
    EXPECT_EQ(back.edges[i].term, m.edges[i].term);
    EXPECT_EQ(back.edges[i].bytes, m.edges[i].bytes);
  }
  Executor a(q::simulation_graph(m)), b(q::simulation_graph(back));
  EXPECT_TRUE(same(run(a, c.images), run(b, c.images)));
}

TEST(ResidualBudgets, SizeIsRespectedAndImpossibleBudgetsAreErrors) {
  Classifier c = classifier();
  q::QuantizeOptions base = residual_options("edges:0");
  int64_t plain = q::model_size(q::quantize_model(c.graph, base, &c.images)).quantized;
  for (int64_t extra : {int64_t{0}, int64_t{300}, int64_t{1000}}) {
    q::QuantizedModel m = q::quantize_model(c.graph, residual_options("size:" + std::to_string(plain + extra)), &c.images);
    EXPECT_LE(q::model_size(m).quantized, plain + extra);
  }
  EXPECT_THROW(q::quantize_model(c.graph, residual_options("size:" + std::to_string(plain - 1)), &c.images), Error);
  // The data-driven pieces need data.
  q::QuantizeOptions data_free = residual_options("all");
  data_free.activation_mode = q::ActivationMode::kDynamic;
  EXPECT_THROW(q::quantize_model(c.graph, data_free, nullptr), Error);  // measured ranking without images
  data_free.residual_ranking = q::ResidualRanking::kWeights;
  EXPECT_GE(q::quantize_model(c.graph, data_free, nullptr).max_level(), 1);
  data_free.residual = q::parse_residual_budget("drop:1");
  EXPECT_THROW(q::quantize_model(c.graph, data_free, nullptr), Error);
  // No ternary layer to expand.
  q::QuantizeOptions int4 = residual_options("all");
  int4.plan.weights = q::WeightQuantConfig{q::WeightFormat::kInt, q::TernaryMethod::kFgq, 4, q::kWholeFilter};
  EXPECT_THROW(q::quantize_model(c.graph, int4, &c.images), Error);
}

// Top-1 of every image ([N, classes] scores).
std::vector<int64_t> top1(const Graph& g, const Tensor& x) {
  Executor e(g);
  Tensor y = e.run(x);
  std::vector<int64_t> p;
  for (int64_t i = 0; i < y.dim(0); ++i) {
    const float* row = y.data<float>() + i * y.dim(1);
    p.push_back(std::max_element(row, row + y.dim(1)) - row);
  }
  return p;
}

// Percent of images [begin, begin + n) whose top-1 is `truth`'s.
double accuracy(const Graph& g, const Tensor& images, const std::vector<int64_t>& truth, int64_t begin, int64_t n) {
  Shape s = images.shape();
  s[0] = n;
  int64_t per = images.size() / images.dim(0);
  std::vector<float> part(images.floats().begin() + begin * per, images.floats().begin() + (begin + n) * per);
  std::vector<int64_t> p = top1(g, Tensor::from_floats(s, part));
  int64_t right = 0;
  for (int64_t i = 0; i < n; ++i) right += p[static_cast<size_t>(i)] == truth[static_cast<size_t>(begin + i)];
  return 100.0 * static_cast<double>(right) / static_cast<double>(n);
}

TEST(ResidualAllocator, FloatIsALastResortThatEndsTheLayersMoves) {
  std::vector<q::ResidualCandidate> t = table();
  // Layer B's weights barely matter, but quantizing its input costs a lot: only float helps it.
  t[1].float_bytes = 400;
  t[1].float_extra = 5.0;
  std::vector<q::ResidualMove> all = q::order_residual_moves(t, q::ResidualRanking::kMeasured);
  auto fl = std::find_if(all.begin(), all.end(), [](const q::ResidualMove& m) { return m.term == q::kFloatMove; });
  ASSERT_NE(fl, all.end());
  EXPECT_EQ(fl->layer, 1u);
  EXPECT_EQ(fl, all.begin()) << "5.0 per 300 bytes beats every edge";
  EXPECT_EQ(fl->bytes, 300);  // 400 float bytes replace the 100-byte base term
  for (auto it = fl + 1; it != all.end(); ++it) EXPECT_NE(it->layer, 1u) << "a float layer takes no more moves";
  q::ResidualAllocation before = q::allocation_from_moves(t, all, 0), after = q::allocation_from_moves(t, all, 1);
  EXPECT_TRUE(after.kept_float[1]);
  EXPECT_FALSE(after.fallback[1]);
  EXPECT_NEAR(before.estimated_distortion - after.estimated_distortion, 0.01 + 5.0, 1e-12);
  // Without an accuracy budget nothing is offered float (float_bytes < 0 in the table).
  for (const q::ResidualMove& m : q::order_residual_moves(table(), q::ResidualRanking::kMeasured)) EXPECT_NE(m.term, q::kFloatMove);
}

// Held-out images for accuracy budgets, and a classifier whose classes differ between them: the
// fc bias centres the logits over the images (random ReLU features share a large mean, which alone
// would pick one class for every image). Labels: FP32's top-1, changed for every fourth image.
struct HeldOut {
  Classifier c;
  Tensor images;
  std::vector<int64_t> labels;
};
HeldOut held_out(int64_t n, bool sequence = false) {
  HeldOut h;
  h.images = Tensor::from_floats({n, 4, 6, 6}, random_floats(n * 144, 17));
  Executor features(classifier({}, true).graph);
  Tensor f = features.run(h.images);  // [n, 8]
  std::vector<float> wf = random_floats(40, 15), bias(5, 0.0f);  // classifier()'s fc weights
  for (int64_t i = 0; i < n; ++i)
    for (int k = 0; k < 5; ++k)
      for (int j = 0; j < 8; ++j) bias[static_cast<size_t>(k)] -= wf[static_cast<size_t>(k * 8 + j)] * f.data<float>()[i * 8 + j] / static_cast<float>(n);
  h.c = classifier(bias, false, sequence);
  if (sequence) return h;
  h.labels = top1(h.c.graph, h.images);
  for (size_t i = 0; i < h.labels.size(); i += 4) h.labels[i] = (h.labels[i] + 1) % 5;
  return h;
}

TEST(AccuracyBudget, TheTestClassifierGivesEveryClass) {
  HeldOut h = held_out(200);
  std::vector<int> count(5, 0);
  for (int64_t l : top1(h.c.graph, h.images)) ++count[static_cast<size_t>(l)];
  for (int k = 0; k < 5; ++k) EXPECT_GE(count[static_cast<size_t>(k)], 3) << "class " << k;
}

TEST(AccuracyBudget, ChosenOnOneHeldOutHalfAndEstimatedOnTheOther) {
  HeldOut h = held_out(200);
  const Classifier& c = h.c;
  for (double target : {0.0, 3.0}) {
    q::QuantizeOptions o = residual_options("drop:" + std::to_string(target));
    o.residual_fallback = true;
    o.drop_images = &h.images;
    o.drop_labels = h.labels;
    q::QuantizedModel m = q::quantize_model(c.graph, o, &c.images);
    nlohmann::json r = nlohmann::json::parse(m.provenance_json)["residual"];
    const nlohmann::json& d = r["drop"];
    EXPECT_EQ(d["choosing_images"].get<int64_t>(), 100);
    EXPECT_EQ(d["estimating_images"].get<int64_t>(), 100);
    EXPECT_EQ(d["measured_on"].get<std::string>(), "labelled held-out images");
    // Both reported drops are those of the model as stored, each on its own half.
    Graph sim = q::simulation_graph(m);
    double choosing = accuracy(c.graph, h.images, h.labels, 0, 100) - accuracy(sim, h.images, h.labels, 0, 100);
    double estimate = accuracy(c.graph, h.images, h.labels, 100, 100) - accuracy(sim, h.images, h.labels, 100, 100);
    EXPECT_NEAR(d["choosing_drop_pp"].get<double>(), choosing, 1e-9) << target;
    EXPECT_NEAR(d["estimated_drop_pp"].get<double>(), estimate, 1e-9) << target;
    EXPECT_NEAR(d["reference_top1"].get<double>(), accuracy(c.graph, h.images, h.labels, 100, 100), 1e-9);
    EXPECT_LE(choosing, target);
    EXPECT_EQ(d["met"].get<bool>(), estimate <= target);
    // Its standard error: of the paired per-image differences (right in FP32 - right quantized).
    std::vector<int64_t> p_fp32 = top1(c.graph, h.images), p_sim = top1(sim, h.images);
    double sum = 0, sq = 0;
    for (size_t i = 100; i < 200; ++i) sum += (p_fp32[i] == h.labels[i]) - (p_sim[i] == h.labels[i]);
    for (size_t i = 100; i < 200; ++i) sq += std::pow((p_fp32[i] == h.labels[i]) - (p_sim[i] == h.labels[i]) - sum / 100, 2);
    EXPECT_NEAR(d["standard_error_pp"].get<double>(), 100.0 * std::sqrt(sq / 99 / 100), 1e-9);
    if (target == 0.0) EXPECT_GT(r["moves_taken"].get<int64_t>(), 0) << "the ternary base model loses images; upgrades are needed";
  }
}

TEST(AccuracyBudget, UpgradesInt8LayersToFloatAndWithoutLabelsKeepsFp32sAnswers) {
  HeldOut h = held_out(160);
  const Classifier& c = h.c;
  q::QuantizeOptions o = residual_options("drop:0");
  o.plan.weights = q::WeightQuantConfig{q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, q::kWholeFilter};
  o.plan.activation_bits = 4;  // coarse inputs: weights at int8 cannot remove their error
  o.drop_images = &h.images;   // no labels: the drop is disagreement with FP32's top-1
  q::QuantizedModel m = q::quantize_model(c.graph, o, &c.images);
  nlohmann::json d = nlohmann::json::parse(m.provenance_json)["residual"]["drop"];
  EXPECT_EQ(d["measured_on"].get<std::string>(), "agreement with FP32 top-1");
  EXPECT_DOUBLE_EQ(d["reference_top1"].get<double>(), 100.0);
  Graph sim = q::simulation_graph(m);
  std::vector<int64_t> reference = top1(c.graph, h.images);
  EXPECT_DOUBLE_EQ(accuracy(sim, h.images, reference, 0, 80), 100.0);
  EXPECT_NEAR(d["estimated_drop_pp"].get<double>(), 100.0 - accuracy(sim, h.images, reference, 80, 80), 1e-9);
  // Layers kept float leave the quantized layers and say why in the plan.
  int kept_float = 0;
  for (const q::LayerPlan& p : m.plan)
    if (p.weights.format == q::WeightFormat::kFloat32) {
      ++kept_float;
      EXPECT_EQ(m.find(p.node), nullptr);
      EXPECT_NE(p.reason.find("--max-drop"), std::string::npos) << p.reason;
    }
  EXPECT_GT(kept_float, 0);
  EXPECT_EQ(m.layers.size() + static_cast<size_t>(kept_float), m.plan.size());
  // No held-out images: an error, not a guess on the calibration images.
  o.drop_images = nullptr;
  EXPECT_THROW(q::quantize_model(c.graph, o, &c.images), Error);
}

TEST(AccuracyBudget, ScoresPerPositionAgainstFp32ForSequenceOutputs) {
  HeldOut h = held_out(120, true);
  const Classifier& c = h.c;
  q::QuantizeOptions o = residual_options("drop:0");
  o.residual_fallback = true;
  o.drop_images = &h.images;
  o.drop_labels.assign(120, 0);  // one label per image cannot score [N, 2, 5]: ignored
  q::QuantizedModel m = q::quantize_model(c.graph, o, &c.images);
  nlohmann::json r = nlohmann::json::parse(m.provenance_json)["residual"], d = r["drop"];
  EXPECT_EQ(d["measured_on"].get<std::string>(), "agreement with FP32 top-1");
  // The estimate: the share of (image, position) top-1s on the second half that differ from FP32's.
  auto top1s = [&](const Graph& g) {
    Executor e(g);
    Tensor y = e.run(h.images);
    EXPECT_EQ(y.shape(), (Shape{120, 2, 5}));
    std::vector<int64_t> p;
    for (int64_t r = 0; r < 240; ++r) p.push_back(std::max_element(y.data<float>() + r * 5, y.data<float>() + r * 5 + 5) - (y.data<float>() + r * 5));
    return p;
  };
  std::vector<int64_t> a = top1s(c.graph), b = top1s(q::simulation_graph(m));
  int64_t differ = 0;
  for (size_t i = 120; i < 240; ++i) differ += a[i] != b[i];
  EXPECT_NEAR(d["estimated_drop_pp"].get<double>(), 100.0 * static_cast<double>(differ) / 120.0, 1e-9);
  EXPECT_GT(r["moves_taken"].get<int64_t>(), 0);
}

}  // namespace
}  // namespace tern::testing
