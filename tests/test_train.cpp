// tern train's numerics and loop: tensor fixed-point rounding equals the scalar reference, the
// rounder rounds values forward and gradients backward, reduced-precision accumulation products
// equal torch's at full width, training lowers the loss in every numeric mode, round-to-nearest
// freezes weights whose updates are below half a step while stochastic rounding moves them,
// checkpoints resume exactly, and bad options are clear errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "gradient_fixtures.h"
#include "temp_dir.h"
#include "tern/error.h"
#include "tern/fixed_point.h"
#include "tern/train.h"
#include "train/fixed_point_ops.h"
#include "train/reduced_accumulation_ops.h"
#include "train/trainable_graph.h"
#include "training_fixtures.h"

using namespace tern;
using tern::testing::OnnxBuilder;
using tern::testing::random_floats;
using tern::testing::small_model_bytes;
using tern::testing::synthetic_dataset;
using tern::testing::TempDir;
using tern::testing::ThreadsGuard;
using tern::testing::training_graph;

namespace {

train::TrainOptions small_options() {
  train::TrainOptions o;
  o.epochs = 4;
  o.batch = 16;
  o.lr = 0.05;
  o.weight_decay = 0;
  o.progress = false;
  o.augment = false;
  return o;
}

Preprocess plain_normalization() {
  Preprocess n;
  n.mean = {0.4f};
  n.std = {0.3f};
  return n;
}

double first_epoch_loss(const train::TrainResult& r) { return r.epochs.front().loss; }

}  // namespace

TEST(FixedPointOps, TensorRoundingEqualsScalarReference) {
  const numerics::FixedFormat f{4, 6};
  std::vector<double> x;
  for (int i = -1200; i <= 1200; ++i) x.push_back(i * (f.step() / 4) + (i % 3) * 1e-4);  // ties included
  x.push_back(1e9);
  x.push_back(-1e9);
  torch::Tensor t = torch::tensor(x, torch::kFloat64);
  torch::Tensor nearest = train::round_fixed_nearest(t, f);
  std::vector<double> u;
  for (size_t i = 0; i < x.size(); ++i) u.push_back(numerics::counter_uniform(3, i));
  torch::Tensor stochastic = train::round_fixed_stochastic(t, f, torch::tensor(u, torch::kFloat64));
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(nearest[static_cast<int64_t>(i)].item<double>(), numerics::round_nearest(x[i], f)) << x[i];
    ASSERT_EQ(stochastic[static_cast<int64_t>(i)].item<double>(), numerics::round_stochastic(x[i], f, u[i])) << x[i];
  }
}

TEST(FixedPointOps, RounderRoundsValuesForwardAndGradientsBackward) {
  const numerics::FixedFormat f{4, 4};  // eps 1/16
  train::FixedPointRounder rounder(f, numerics::Rounding::kNearest, 1);
  torch::Tensor x = torch::tensor({0.3, -0.71, 2.0, 9.0, -8.5}, torch::kFloat64).set_requires_grad(true);
  torch::Tensor y = rounder.values(x);
  EXPECT_EQ(y[0].item<double>(), 5.0 / 16);   // 4.8 steps -> 5
  EXPECT_EQ(y[1].item<double>(), -11.0 / 16);  // -11.36 -> -11
  EXPECT_EQ(y[3].item<double>(), 8.0 - 1.0 / 16);  // saturated
  EXPECT_EQ(y[4].item<double>(), -8.0);
  (y * torch::tensor({0.01, 0.2, 1.0 / 3, 1.0, 1.0}, torch::kFloat64)).sum().backward();
  torch::Tensor g = x.grad();
  EXPECT_EQ(g[0].item<double>(), 0.0);        // 0.16 steps -> 0: a small gradient vanishes under nearest
  EXPECT_EQ(g[1].item<double>(), 3.0 / 16);   // 3.2 steps -> 3
  EXPECT_EQ(g[2].item<double>(), 5.0 / 16);   // 5.33 steps -> 5
  EXPECT_EQ(g[3].item<double>(), 0.0);        // saturated values pass no gradient (the clamp's derivative)
  EXPECT_EQ(g[4].item<double>(), 0.0);

  // Gradients in a format of their own: values still on 1/16, gradients on 2^-10.
  train::FixedPointRounder split(f, numerics::Rounding::kNearest, 1, numerics::FixedFormat{1, 10});
  torch::Tensor x2 = torch::tensor({0.3, 9.0}, torch::kFloat64).set_requires_grad(true);
  torch::Tensor y2 = split.values(x2);
  EXPECT_EQ(y2[0].item<double>(), 5.0 / 16);
  (y2 * torch::tensor({0.01, 0.01}, torch::kFloat64)).sum().backward();
  EXPECT_EQ(x2.grad()[0].item<double>(), 10.0 / 1024);  // 10.24 steps of 2^-10 -> 10
  EXPECT_EQ(x2.grad()[1].item<double>(), 0.0);          // the value saturated: still no gradient
  EXPECT_EQ(split.round_gradient(torch::tensor({3.0}, torch::kFloat64)).item<double>(), 1.0 - 1.0 / 1024);
}

TEST(ReducedAccumulation, FullWidthProductsMatchTorch) {
  torch::manual_seed(3);
  train::AccumulationBits wide{23, 23, 23, 0}, chunked{23, 23, 23, 7};
  torch::Tensor a = torch::randn({5, 37}).set_requires_grad(true), b = torch::randn({37, 6}).set_requires_grad(true);
  for (const auto& bits : {wide, chunked}) {
    torch::Tensor c = train::reduced_matmul(a, b, true, bits);
    torch::Tensor ref = torch::matmul(a, b);
    EXPECT_TRUE(torch::allclose(c, ref, 1e-5, 1e-5));
    torch::Tensor w = torch::randn({5, 6});
    auto grads = torch::autograd::grad({(c * w).sum()}, {a, b});
    auto ref_grads = torch::autograd::grad({(ref * w).sum()}, {a, b});
    EXPECT_TRUE(torch::allclose(grads[0], ref_grads[0], 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(grads[1], ref_grads[1], 1e-5, 1e-5));
  }
  // A convolution lowered to im2col + GEMM, with stride, padding and groups.
  Graph g = training_graph(small_model_bytes());
  const Node* conv = nullptr;
  for (const Node& n : g.nodes)
    if (n.op == OpType::kConv) conv = &n;
  ASSERT_NE(conv, nullptr);
  for (int64_t size : {9, 10}) {  // 10: the strided output leaves the last input row unused
    torch::Tensor x = torch::randn({2, 4, size, 9}).set_requires_grad(true);
    torch::Tensor w = torch::randn({6, 2, 3, 3}).set_requires_grad(true);
    torch::Tensor y = train::reduced_accumulation_product({*conv, x, w, {2, 1}, {1, 0}, {1, 1}, 2}, wide);
    torch::Tensor ref = torch::conv2d(x, w, {}, {2, 1}, {1, 0}, {1, 1}, 2);
    ASSERT_EQ(y.sizes(), ref.sizes());
    EXPECT_TRUE(torch::allclose(y, ref, 1e-4, 1e-4));
    torch::Tensor up = torch::randn(ref.sizes());
    auto grads = torch::autograd::grad({(y * up).sum()}, {x, w});
    auto ref_grads = torch::autograd::grad({(ref * up).sum()}, {x, w});
    EXPECT_TRUE(torch::allclose(grads[0], ref_grads[0], 1e-4, 1e-4)) << "input gradient, size " << size;
    EXPECT_TRUE(torch::allclose(grads[1], ref_grads[1], 1e-4, 1e-4)) << "weight gradient, size " << size;
  }
  torch::Tensor x = torch::randn({2, 4, 9, 9}), w = torch::randn({6, 2, 3, 3});
  torch::Tensor ref = torch::conv2d(x, w, {}, {2, 1}, {1, 0}, {1, 1}, 2);
  // Few mantissa bits lose precision: the product is visibly different.
  torch::Tensor coarse = train::reduced_accumulation_product({*conv, x, w, {2, 1}, {1, 0}, {1, 1}, 2}, {3, 3, 3, 0});
  EXPECT_GT((coarse - ref).abs().max().item<double>(), 1e-2);
}

TEST(Train, EveryNumericModeLowersTheLoss) {
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(96);
  train::TrainOptions o = small_options();
  o.init = train::Init::kPretrained;
  std::vector<train::NumericOptions> modes(5);
  modes[1].fixed = true;  // fixed:4.12 stochastic
  modes[2].fixed = true;
  modes[2].format = {4, 20};
  modes[2].rounding = numerics::Rounding::kNearest;  // a wide format: nearest is fine here
  modes[3].accumulate_forward = modes[3].accumulate_backward = modes[3].accumulate_weight_grad = 12;
  modes[4].fixed = true;
  modes[4].exact_compute = false;  // float32 sums
  for (const auto& mode : modes) {
    o.numeric = mode;
    train::TrainResult r = train::train_network(g, data, plain_normalization(), o);
    ASSERT_EQ(r.epochs.size(), 4u) << mode.name();
    EXPECT_LT(r.epochs.back().loss, 0.8 * first_epoch_loss(r)) << mode.name();
    EXPECT_EQ(r.steps, 4 * 6);
    EXPECT_FALSE(r.curve.empty());
  }
}

TEST(Train, NearestRoundingFreezesSmallUpdatesStochasticMovesThem) {
  // With lr * gradient below half a step, round-to-nearest returns every weight unchanged (the
  // mechanism that stalls 16-bit training in Gupta et al.); stochastic rounding still moves them.
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(64);
  train::TrainOptions o = small_options();
  o.init = train::Init::kPretrained;
  o.epochs = 1;
  o.momentum = 0;
  o.lr = 1e-4;
  o.numeric.fixed = true;
  o.numeric.format = {4, 8};  // eps 1/256: lr * |g| is far below eps / 2
  o.numeric.rounding = numerics::Rounding::kNearest;
  train::TrainResult nearest = train::train_network(g, data, plain_normalization(), o);
  o.numeric.rounding = numerics::Rounding::kStochastic;
  train::TrainResult stochastic = train::train_network(g, data, plain_normalization(), o);
  // The starting weights, rounded once to the format, are what nearest ends with.
  o.max_steps = 0;
  o.lr = 1e-300;
  o.numeric.rounding = numerics::Rounding::kNearest;
  train::TrainResult start = train::train_network(g, data, plain_normalization(), o);
  EXPECT_EQ(nearest.epochs.back().weights_hash, start.epochs.back().weights_hash);
  EXPECT_NE(stochastic.epochs.back().weights_hash, start.epochs.back().weights_hash);
}

TEST(Train, RandomInitIsSeededAndResumeIsExact) {
  ThreadsGuard one_thread;
  TempDir dir;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(64);
  train::TrainOptions o = small_options();
  o.numeric.fixed = true;  // stochastic rounding: the generators' states must resume too
  o.epochs = 2;
  Dataset held_out = synthetic_dataset(30);
  o.test = &held_out;  // evaluated with stochastic rounding too: the same on a resumed run
  train::TrainResult full = train::train_network(g, data, plain_normalization(), o);
  train::TrainResult again = train::train_network(g, data, plain_normalization(), o);
  EXPECT_EQ(full.epochs.back().weights_hash, again.epochs.back().weights_hash);
  o.seed = 2;
  EXPECT_NE(train::train_network(g, data, plain_normalization(), o).epochs.back().weights_hash,
            full.epochs.back().weights_hash);
  o.seed = 1;
  o.checkpoint_path = dir.file("run.ckpt");
  o.checkpoint_every = 3;
  o.max_steps = 5;  // stops after a checkpoint at step 3 and one at the stop
  train::train_network(g, data, plain_normalization(), o);
  o.max_steps = 0;
  o.resume_path = o.checkpoint_path;
  o.checkpoint_path = dir.file("rest.ckpt");
  train::TrainResult resumed = train::train_network(g, data, plain_normalization(), o);
  EXPECT_EQ(resumed.epochs.back().weights_hash, full.epochs.back().weights_hash);
  ASSERT_EQ(resumed.epochs.size(), full.epochs.size());
  EXPECT_EQ(resumed.epochs[0].loss, full.epochs[0].loss);
  EXPECT_EQ(resumed.epochs.back().test_top1, full.epochs.back().test_top1);
  EXPECT_GE(full.epochs.back().test_top1, 0.0);
}

TEST(Train, TestEveryEvaluatesOnlyEveryKthEpochAndTheLast) {
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(32);
  Dataset held_out = synthetic_dataset(20);
  train::TrainOptions o = small_options();
  o.epochs = 5;
  o.test = &held_out;
  train::TrainResult every = train::train_network(g, data, plain_normalization(), o);
  o.test_every = 2;
  train::TrainResult sparse = train::train_network(g, data, plain_normalization(), o);
  ASSERT_EQ(sparse.epochs.size(), 5u);
  for (const train::TrainEpoch& e : sparse.epochs) {
    const bool due = e.epoch % 2 == 0 || e.epoch == 5;
    SCOPED_TRACE(e.epoch);
    if (due) {
      EXPECT_EQ(e.test_top1, every.epochs[static_cast<size_t>(e.epoch - 1)].test_top1);  // evaluation changes nothing
      EXPECT_GE(e.test_top1, 0.0);
    } else {
      EXPECT_EQ(e.test_top1, -1.0);
    }
  }
  EXPECT_EQ(sparse.epochs.back().weights_hash, every.epochs.back().weights_hash);
}

TEST(Train, BadOptionsAreClearErrors) {
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(32);
  train::TrainOptions o = small_options();
  auto message = [&](const train::TrainOptions& opts) {
    try {
      train::train_network(g, data, plain_normalization(), opts);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  train::TrainOptions bad = o;
  bad.numeric.fixed = true;
  bad.numeric.format = {20, 13};
  EXPECT_NE(message(bad).find("IL + FL <= 32"), std::string::npos) << message(bad);
  bad = o;
  bad.numeric.fixed = true;
  bad.numeric.gradient_format = numerics::FixedFormat{0, 15};
  EXPECT_NE(message(bad).find("gradient format"), std::string::npos) << message(bad);
  bad = o;
  bad.numeric.accumulate_forward = 30;
  EXPECT_NE(message(bad).find("1..23"), std::string::npos);
  bad = o;
  bad.lr = -1;
  EXPECT_NE(message(bad).find("--lr"), std::string::npos);
  bad = o;
  bad.distributed.compression = "zip";
  EXPECT_NE(message(bad).find("zip"), std::string::npos);
  Dataset empty;
  empty.name = "empty-set";
  try {
    train::train_network(g, empty, plain_normalization(), o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty-set"), std::string::npos);
  }
  TempDir dir;
  o.resume_path = dir.file("missing.ckpt");
  EXPECT_NE(message(o).find("missing.ckpt"), std::string::npos);
}

TEST(Train, RandomStartZeroesTheLastLayerOfEachResidualBranch) {
  // x -> Conv(w1) -> Relu -> Conv(w2) -> Add(., x) -> Relu -> GAP -> Gemm(w3): w2 ends the branch.
  OnnxBuilder b;
  b.input("x", {-1, 2, 6, 6}).output("y");
  b.floats("w1", {2, 2, 3, 3}, random_floats(36, 1));
  b.floats("w2", {2, 2, 3, 3}, random_floats(36, 2));
  b.floats("w3", {3, 2}, random_floats(6, 3));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"c1"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  auto& c2 = b.node("Conv", {"r1", "w2"}, {"c2"}, "conv2");
  OnnxBuilder::attr(c2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Add", {"c2", "x"}, {"s"}, "add");
  b.node("Relu", {"s"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"g"}, "gap");
  b.node("Flatten", {"g"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "w3"}, {"y"}, "fc");
  OnnxBuilder::attr(fc, "transB", int64_t{1});
  Graph g = training_graph(b.bytes());
  train::TrainableGraph net(g, {});
  EXPECT_EQ(net.residual_branch_weights(), std::vector<std::string>{"w2"});
  // The small model has no residual Add: nothing to zero.
  train::TrainableGraph plain(training_graph(small_model_bytes()), {});
  EXPECT_TRUE(plain.residual_branch_weights().empty());
}

TEST(Train, RandomStartUsesFreshBatchNormStatisticsAndLeavesTheModelAlone) {
  // Running statistics far from a random layer's (mean -3, variance 1e-4) would scale its output by
  // 100 and shift it by +300: a random start must use a new layer's (0 and 1) instead.
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  auto stat = [&](const std::string& name) -> std::optional<Tensor>& {
    for (Value& v : g.values)
      if (v.name == name) return v.constant;
    throw Error("no value " + name);
  };
  stat("mean") = Tensor::from_floats({4}, std::vector<float>(4, -3.0f));
  stat("var") = Tensor::from_floats({4}, std::vector<float>(4, 1e-4f));
  Dataset data = synthetic_dataset(32);
  train::TrainOptions o = small_options();
  o.init = train::Init::kRandom;
  o.epochs = 1;
  o.max_steps = 1;
  train::TrainResult r = train::train_network(g, data, plain_normalization(), o);
  EXPECT_LT(first_epoch_loss(r), 3.0);  // ln 3 = 1.1 for an even guess over three classes
  EXPECT_EQ(stat("mean")->floats()[0], -3.0f);  // the caller's graph is unchanged
  EXPECT_EQ(stat("var")->floats()[0], 1e-4f);
  o.init = train::Init::kPretrained;  // the model's own statistics stay with its own weights
  EXPECT_GT(first_epoch_loss(train::train_network(g, data, plain_normalization(), o)), 3.0);
}

TEST(Train, TimelineRecordsWhenBackpropProducesEachGradient) {
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  train::TrainOptions o = small_options();
  o.epochs = 1;
  o.timeline = true;
  train::TrainResult r = train::train_network(g, synthetic_dataset(64), plain_normalization(), o);
  nlohmann::json t = nlohmann::json::parse(r.timeline_json);
  EXPECT_EQ(t["steps"].get<int64_t>(), 4);
  EXPECT_GT(t["forward_ms"].get<double>(), 0);
  const auto& p = t["parameters"];
  ASSERT_EQ(p.size(), 7u);  // w1, gamma, beta, w2, b2, w3, b3
  EXPECT_EQ(p.front()["name"], "b3");  // the last layer's gradients come first
  EXPECT_EQ(p.back()["name"], "w1");
  EXPECT_LE(p.front()["ready_ms"].get<double>(), p.back()["ready_ms"].get<double>());
  EXPECT_LE(p.back()["ready_ms"].get<double>(), t["backward_ms"].get<double>());
}

// Data parallel: the first all-reduce of a step starts from a gradient hook while backprop still
// runs (more gradients are handed in after it, each followed by a progress call), not after
// backprop in finish(). The communicator is a two-rank mirror that records its calls.
TEST(Train, DataParallelAllReduceStartsDuringBackprop) {
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  tern::testing::RecordingCommunicator comm;
  train::TrainOptions o = small_options();
  o.epochs = 1;
  o.distributed.communicator = &comm;
  o.distributed.bucket_bytes = 64;  // 16 floats: several buckets even for this small model
  train::TrainResult r = train::train_network(g, synthetic_dataset(64), plain_normalization(), o);
  EXPECT_TRUE(std::isfinite(first_epoch_loss(r)));
  const std::vector<std::string>& e = comm.events;
  const auto first_start = std::find(e.begin(), e.end(), "allreduce");
  ASSERT_NE(first_start, e.end());
  const auto first_wait = std::find(first_start, e.end(), "wait");
  ASSERT_NE(first_wait, e.end());
  // One progress call ends each gradient_ready; two or more after the first start mean at least
  // one more gradient arrived after the first bucket had started.
  EXPECT_GE(std::count(first_start, first_wait, "progress"), 2);
}
