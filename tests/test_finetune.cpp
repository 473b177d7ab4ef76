// Fine-tuning on libtorch: fake quantization equals tern's quantizers bit for bit, straight-through
// gradients, the graph as a torch network equals the executor, a short fine-tune lowers the loss and
// round-trips through .tern, resume reproduces an uninterrupted run, bad inputs are clear errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "onnx_builder.h"
#include "temp_dir.h"
#include "training_fixtures.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/finetune.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"
#include "tern/quantized_model.h"
#include "train/fake_quant.h"
#include "train/trainable_graph.h"

namespace fs = std::filesystem;
using namespace tern;
using tern::testing::OnnxBuilder;
using tern::testing::random_floats;
using tern::testing::TempDir;
using tern::testing::small_model_bytes;
using tern::testing::synthetic_dataset;
using tern::testing::ThreadsGuard;
using tern::testing::training_graph;

namespace {

train::FinetuneOptions small_options() {
  train::FinetuneOptions o;
  o.plan.weights.format = quant::WeightFormat::kTernary;
  o.plan.weights.group_size = 4;
  o.plan.first_last_8bit = false;  // every layer ternary: the hardest case for the loss
  o.epochs = 6;
  o.batch = 16;
  o.lr = 0.5;
  o.calibration_images = 32;
  o.progress = false;
  o.input_non_negative = true;
  o.input_threshold = 1.0f;
  return o;
}

}  // namespace

TEST(FakeQuant, ActivationForwardIsTheQuantizerBitForBit) {
  for (bool is_unsigned : {false, true})
    for (int bits : {4, 8}) {
      quant::ActivationQuant a;
      a.bits = bits;
      a.is_unsigned = is_unsigned;
      a.scale = bits == 8 ? 0.0371f : 0.25f;  // not a power of two: x / scale rounds
      std::vector<float> v = random_floats(4096, 11);
      for (float& x : v) x *= 6.0f;
      int32_t qmax = quant::activation_qmax(bits, is_unsigned);
      v.push_back(0.5f * a.scale);  // ties round away from zero
      v.push_back(-1.5f * a.scale);
      v.push_back(static_cast<float>(qmax) * a.scale);
      torch::Tensor x = torch::from_blob(v.data(), {static_cast<int64_t>(v.size())}, torch::kFloat32).clone();
      torch::Tensor y = train::fake_quantize_activation(x, a);
      for (size_t i = 0; i < v.size(); ++i) {
        float expected = static_cast<float>(quant::quantize_activation(v[i], a.scale, bits, is_unsigned)) * a.scale;
        ASSERT_EQ(y[static_cast<int64_t>(i)].item<float>(), expected) << "x = " << v[i] << " bits " << bits;
      }
    }
}

TEST(FakeQuant, ActivationGradientIsIdentityInsideTheRangeAndZeroOutside) {
  quant::ActivationQuant a;
  a.bits = 4;
  a.is_unsigned = false;
  a.scale = 0.5f;  // codes -7..7: values in [-3.5, 3.5] pass
  std::vector<float> v = {-10.0f, -3.6f, -3.5f, -1.2f, 0.0f, 0.26f, 3.49f, 3.5f, 3.51f, 8.0f};
  torch::Tensor x = torch::tensor(v).set_requires_grad(true);
  torch::Tensor upstream = torch::arange(1, static_cast<int64_t>(v.size()) + 1, torch::kFloat32);
  (train::fake_quantize_activation(x, a) * upstream).sum().backward();
  for (size_t i = 0; i < v.size(); ++i) {
    float expected = std::abs(v[i]) <= 3.5f ? upstream[static_cast<int64_t>(i)].item<float>() : 0.0f;
    EXPECT_EQ(x.grad()[static_cast<int64_t>(i)].item<float>(), expected) << "x = " << v[i];
  }
  a.is_unsigned = true;  // codes 0..15: negatives are clipped
  torch::Tensor x2 = torch::tensor(std::vector<float>{-0.1f, 0.0f, 7.5f, 7.6f}).set_requires_grad(true);
  train::fake_quantize_activation(x2, a).sum().backward();
  EXPECT_EQ(x2.grad()[0].item<float>(), 0.0f);
  EXPECT_EQ(x2.grad()[1].item<float>(), 1.0f);
  EXPECT_EQ(x2.grad()[2].item<float>(), 1.0f);
  EXPECT_EQ(x2.grad()[3].item<float>(), 0.0f);
  a.dynamic = true;
  EXPECT_THROW(train::fake_quantize_activation(x2, a), Error);
}

TEST(FakeQuant, WeightsAreTheQuantizersDequantizedCodesWithIdentityGradient) {
  const int64_t out = 6, in = 16, taps = 9;
  std::vector<float> w = random_floats(static_cast<size_t>(out * in * taps), 5);
  struct Case { quant::WeightFormat format; int bits; int64_t group; };
  for (Case c : {Case{quant::WeightFormat::kTernary, 2, 4}, Case{quant::WeightFormat::kTernary, 2, 64},
                 Case{quant::WeightFormat::kInt, 4, 0}, Case{quant::WeightFormat::kInt, 8, 0}}) {
    quant::QuantizedLayer layer;
    layer.node = "conv";
    layer.out = out, layer.in = in, layer.taps = taps;
    layer.config.format = c.format;
    layer.config.bits = c.bits;
    layer.config.group_size = c.group;
    torch::Tensor t = torch::from_blob(w.data(), {out, in, 3, 3}, torch::kFloat32).clone().set_requires_grad(true);
    torch::Tensor q = train::fake_quantize_weights(t, layer);
    std::vector<float> expected = quant::quantize_weights(w, out, in, taps, layer.config).dequantize();
    std::vector<float> got = train::to_vector(q);
    ASSERT_EQ(got.size(), expected.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expected[i]) << "weight " << i << " group " << c.group;
    ASSERT_EQ(layer.terms.size(), 1u);
    torch::Tensor upstream = torch::randn({out, in, 3, 3});
    (q * upstream).sum().backward();
    EXPECT_TRUE(torch::equal(t.grad(), upstream));

    // The bias on its int32 grid, as quantize_model stores it.
    layer.input = quant::ActivationQuant{};
    layer.input->scale = 0.125f;
    std::vector<float> bias = random_floats(static_cast<size_t>(out), 9);
    torch::Tensor tb = torch::tensor(bias).set_requires_grad(true);
    torch::Tensor qb = train::fake_quantize_bias(tb, layer);
    quant::QuantizedLayer copy = layer;
    std::vector<float> expected_bias = quant::quantize_layer_bias(copy, bias);
    for (int64_t o = 0; o < out; ++o) EXPECT_EQ(qb[o].item<float>(), expected_bias[static_cast<size_t>(o)]);
  }
}

TEST(TrainableGraph, MatchesTheExecutorInFp32AndTheSimulationWhenQuantized) {
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(24);
  Tensor x = make_batch(data, 0, 24, Preprocess{}, g.value(g.inputs[0]).shape);

  train::TrainableGraph fp32(g, {});
  Tensor expected = Executor(g).run(x);
  std::vector<float> got = train::to_vector(fp32.forward(train::to_torch(x)).detach());
  for (int64_t i = 0; i < expected.size(); ++i) EXPECT_NEAR(got[static_cast<size_t>(i)], expected.floats()[static_cast<size_t>(i)], 1e-5);

  Graph folded = g;
  optimize(folded);
  quant::QuantizeOptions q;
  q.plan = small_options().plan;
  q.power_of_two = true;
  q.input_non_negative = true;
  q.input_threshold = 1.0f;
  quant::QuantizedModel model = quant::quantize_model(folded, q, &x);
  train::TrainableGraph net(g, model.layers);
  Tensor simulated = Executor(quant::simulation_graph(model)).run(x);
  std::vector<float> y = train::to_vector(net.forward(train::to_torch(x)).detach());
  for (int64_t i = 0; i < simulated.size(); ++i) EXPECT_NEAR(y[static_cast<size_t>(i)], simulated.floats()[static_cast<size_t>(i)], 1e-4);
  // The forward pass quantized the weights to exactly the model's codes.
  for (size_t l = 0; l < model.layers.size(); ++l) EXPECT_EQ(net.layers()[l].terms[0].codes, model.layers[l].terms[0].codes);
}

TEST(Finetune, ShortRunLowersTheLossAndRoundTripsThroughTern) {
  ThreadsGuard one_thread;
  TempDir dir;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(96);
  train::FinetuneResult r = train::finetune(g, data, Preprocess{}, small_options());
  ASSERT_EQ(r.epochs.size(), 6u);
  EXPECT_LT(r.epochs.back().loss, r.epochs.front().loss * 0.8) << "first " << r.epochs.front().loss;
  EXPECT_EQ(r.steps, 6 * (96 / 16));
  EXPECT_GT(r.weight_cosine, 0.5);
  EXPECT_LT(r.weight_cosine, 1.0);  // it did train
  EXPECT_TRUE(r.trained_values.count("gamma"));  // BatchNorm trained and stays a separate value

  std::string path = dir.file("small.tern");
  quant::save_quantized_model(path, r.model);
  quant::QuantizedModel loaded = quant::load_quantized_model(path);
  Tensor x = make_batch(data, 0, 24, Preprocess{}, g.value(g.inputs[0]).shape);
  Tensor a = Executor(quant::simulation_graph(r.model)).run(x);
  Tensor b = Executor(quant::simulation_graph(loaded)).run(x);
  ASSERT_EQ(a.size(), b.size());
  for (int64_t i = 0; i < a.size(); ++i) EXPECT_EQ(a.floats()[static_cast<size_t>(i)], b.floats()[static_cast<size_t>(i)]);
  // The fine-tuned network scores better than its quantized starting point on the training data.
  auto correct = [&](const quant::QuantizedModel& m) {
    Tensor y = Executor(quant::simulation_graph(m)).run(make_batch(data, 0, 96, Preprocess{}, g.value(g.inputs[0]).shape));
    int hits = 0;
    for (int64_t i = 0; i < 96; ++i) {
      const float* row = y.data<float>() + i * 3;
      hits += std::max_element(row, row + 3) - row == data.labels[static_cast<size_t>(i)];
    }
    return hits;
  };
  EXPECT_GT(correct(r.model), correct(r.start));
}

TEST(Finetune, ResumeFromACheckpointReproducesTheUninterruptedRun) {
  ThreadsGuard one_thread;
  TempDir dir;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(64);
  train::FinetuneOptions o = small_options();
  o.epochs = 2;
  train::FinetuneResult full = train::finetune(g, data, Preprocess{}, o);
  train::FinetuneResult again = train::finetune(g, data, Preprocess{}, o);

  o.checkpoint_path = dir.file("run.ckpt");
  o.max_steps = 5;  // stops mid-epoch 2 (4 steps per epoch)
  train::finetune(g, data, Preprocess{}, o);
  ASSERT_TRUE(fs::exists(o.checkpoint_path));
  o.max_steps = 0;
  o.resume_path = o.checkpoint_path;
  train::FinetuneResult resumed = train::finetune(g, data, Preprocess{}, o);
  EXPECT_EQ(resumed.steps, full.steps);
  for (const auto& [name, value] : full.trained_values) {
    const Tensor& other = resumed.trained_values.at(name);
    const Tensor& rerun = again.trained_values.at(name);
    for (int64_t i = 0; i < value.size(); ++i) {
      ASSERT_EQ(value.floats()[static_cast<size_t>(i)], rerun.floats()[static_cast<size_t>(i)]) << name << " (rerun)";
      ASSERT_EQ(value.floats()[static_cast<size_t>(i)], other.floats()[static_cast<size_t>(i)]) << name << " (resumed)";
    }
  }
  ASSERT_EQ(resumed.epochs.size(), full.epochs.size());
  EXPECT_EQ(resumed.epochs.back().loss, full.epochs.back().loss);

  // A checkpoint from other options is refused.
  o.seed = 2;
  try {
    train::finetune(g, data, Preprocess{}, o);
    FAIL() << "mismatched checkpoint accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("different"), std::string::npos) << e.what();
  }
}

// Gradient noise: zero when every minibatch is the whole (unaugmented) training set, and about
// four times smaller at four times the batch (the variance of a mean of B draws falls as 1/B).
TEST(Finetune, GradientNoiseVanishesOnTheFullSetAndFallsWithTheBatch) {
  ThreadsGuard one_thread;
  Graph g = training_graph(small_model_bytes());
  Dataset data = synthetic_dataset(96);
  train::FinetuneOptions o = small_options();
  o.epochs = 2;  // two steps at batch 96: the end is measured too
  o.max_steps = 2;
  o.augment = false;
  o.gradient_noise_batches = 12;
  auto noise = [&](int64_t batch) {
    o.batch = batch;
    train::FinetuneResult r = train::finetune(g, data, Preprocess{}, o);
    EXPECT_EQ(r.gradient_noise.size(), 3u);
    for (const train::GradientNoise& n : r.gradient_noise) {
      EXPECT_EQ(n.batches, 12);
      EXPECT_EQ(n.batch, batch);
      EXPECT_EQ(n.layers.size(), 3u);  // the Conv, Conv and Gemm weights
      double v = 0;
      for (const auto& l : n.layers) v += l.variance;
      EXPECT_NEAR(v, n.variance, 1e-12 * n.variance);
    }
    return r.gradient_noise;
  };
  std::vector<train::GradientNoise> whole = noise(96);
  ASSERT_EQ(whole.size(), 3u);
  EXPECT_EQ(whole[0].network, "fp32 start");
  EXPECT_EQ(whole[1].network, "quantized start");
  EXPECT_EQ(whole[2].network, "quantized end");
  for (const train::GradientNoise& n : whole) {
    EXPECT_GT(n.signal, 0);
    EXPECT_LT(n.variance, 1e-8 * n.signal) << n.network;  // the same images each time: summation order only
  }
  std::vector<train::GradientNoise> b4 = noise(4), b16 = noise(16);
  ASSERT_EQ(b4.size(), 3u);
  ASSERT_EQ(b16.size(), 3u);
  for (size_t i = 0; i < 2; ++i) {  // the start points: the same weights at both batch sizes
    EXPECT_GT(b4[i].variance, 0);
    const double ratio = b4[i].variance / b16[i].variance;
    EXPECT_GT(ratio, 2.0) << b4[i].network;
    EXPECT_LT(ratio, 8.0) << b4[i].network;
  }
  o.max_steps = 1;  // one step: no end measurement
  EXPECT_EQ(train::finetune(g, data, Preprocess{}, o).gradient_noise.size(), 2u);
  o.gradient_noise_batches = 1;
  EXPECT_THROW(train::finetune(g, data, Preprocess{}, o), Error);
}

TEST(Finetune, BadInputsAreClearErrors) {
  TempDir dir;
  Graph g = training_graph(small_model_bytes());
  train::FinetuneOptions o = small_options();
  auto message = [&](auto&& call) -> std::string {
    try {
      call();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };

  Dataset empty;
  empty.name = "empty-set";
  EXPECT_NE(message([&] { train::finetune(g, empty, Preprocess{}, o); }).find("empty-set: no training images"),
            std::string::npos);

  OnnxBuilder b;  // nothing to train: Relu and pooling only
  b.input("x", {-1, 1, 12, 12}).output("y");
  b.node("Relu", {"x"}, {"r"}, "relu");
  b.node("GlobalAveragePool", {"r"}, {"y"}, "gap");
  Graph no_layers = training_graph(b.bytes());
  EXPECT_NE(message([&] { train::TrainableGraph net(no_layers, {}); }).find("no trainable layers"), std::string::npos);

  Dataset data = synthetic_dataset(32);
  data.labels[3] = 7;  // the model has 3 classes
  EXPECT_NE(message([&] { train::finetune(g, data, Preprocess{}, o); }).find("label 7"), std::string::npos);
  data.labels[3] = 0;

  o.checkpoint_path = dir.file("good.ckpt");
  o.max_steps = 2;
  train::finetune(g, data, Preprocess{}, o);
  std::string bytes;
  {
    std::ifstream f(o.checkpoint_path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  bytes[bytes.size() / 2] ^= 0x5a;
  std::string corrupt = dir.file("corrupt.ckpt");
  std::ofstream(corrupt, std::ios::binary) << bytes;
  o.checkpoint_path.clear();
  o.resume_path = corrupt;
  std::string m = message([&] { train::finetune(g, data, Preprocess{}, o); });
  EXPECT_NE(m.find("corrupt.ckpt"), std::string::npos) << m;
  std::ofstream(dir.file("text.ckpt")) << "not a checkpoint";
  o.resume_path = dir.file("text.ckpt");
  m = message([&] { train::finetune(g, data, Preprocess{}, o); });
  EXPECT_NE(m.find("text.ckpt"), std::string::npos) << m;
}
