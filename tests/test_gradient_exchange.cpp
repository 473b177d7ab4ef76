// GradientExchange and the communicator interface in one process (the MPI side:
// mpi_exchange_test.cpp).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "tern/adacomp.h"
#include "tern/communicator.h"
#include "tern/error.h"
#include "tern/gradient_exchange.h"

#include "gradient_fixtures.h"

using tern::dist::Compression;
using tern::dist::ExchangeOptions;
using tern::dist::GradientExchange;
using tern::dist::TensorKind;
using tern::dist::TensorSpec;

using tern::testing::random_gradients;
using tern::testing::RecordingCommunicator;

namespace {

// Backprop order: last layer first; a conv larger than the small buckets below, an empty tensor.
std::vector<TensorSpec> model_tensors() {
  return {{"fc.weight", 640, TensorKind::fc},   {"fc.bias", 10, TensorKind::other},
          {"conv2.weight", 2304, TensorKind::conv}, {"bn2.scale", 16, TensorKind::other},
          {"empty", 0, TensorKind::other},       {"conv1.weight", 432, TensorKind::conv},
          {"conv1.bias", 16, TensorKind::other}};
}

void run_step(GradientExchange& exchange, std::vector<std::vector<float>>& grads,
              const std::vector<std::size_t>& order) {
  exchange.begin_step();
  for (std::size_t index : order) exchange.gradient_ready(index, grads[index]);
  exchange.finish();
}

std::vector<std::size_t> in_order(std::size_t n) {
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  return order;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

}  // namespace

TEST(exchange_communicator, SingleProcessTrivialCollectives) {
  auto comm = tern::dist::make_single_process_communicator();
  EXPECT_EQ(comm->rank(), 0);
  EXPECT_EQ(comm->size(), 1);
  EXPECT_EQ(comm->describe(), "rank 0 of 1");
  std::vector<float> data = {1, 2, 3};
  const auto request = comm->start_allreduce_sum(data);
  EXPECT_TRUE(comm->test(request));
  comm->wait(request);
  EXPECT_EQ(data, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(comm->allgather(42), (std::vector<std::uint64_t>{42}));
  const std::vector<std::uint8_t> bytes = {1, 2, 3};
  EXPECT_EQ(comm->allgatherv(bytes), (std::vector<std::vector<std::uint8_t>>{bytes}));
  std::vector<std::uint8_t> buffer = {9, 8};
  comm->broadcast(buffer);
  EXPECT_EQ(buffer, (std::vector<std::uint8_t>{9, 8}));
  comm->barrier();
}

TEST(exchange_communicator, SingleProcessMpiAvailabilityMatchesTheBuild) {
#ifdef TERN_HAVE_MPI
  EXPECT_TRUE(tern::dist::mpi_available());
#else
  EXPECT_FALSE(tern::dist::mpi_available());
  EXPECT_THROW(tern::dist::make_mpi_communicator(1.0), tern::Error);
#endif
}

// One rank: the average is the gradient itself, for buckets smaller than, equal to and larger than
// the tensors, and whatever order the gradients arrive in.
TEST(gradient_exchange, UncompressedSingleRankReturnsGradients) {
  auto comm = tern::dist::make_single_process_communicator();
  const auto specs = model_tensors();
  const std::size_t total = 640 + 10 + 2304 + 16 + 432 + 16;
  for (std::size_t bucket_bytes : {4u, 12u, 100u, 2560u, 4096u, 9216u, 1u << 20}) {
    ExchangeOptions options;
    options.bucket_bytes = bucket_bytes;
    GradientExchange exchange(*comm, specs, options);
    const std::size_t bucket_elements = bucket_bytes / 4;
    EXPECT_EQ(exchange.bucket_count(), (total + bucket_elements - 1) / bucket_elements) << bucket_bytes;
    for (unsigned step = 0; step < 3; ++step) {
      auto grads = random_gradients(specs, 100 + step);
      const auto original = grads;
      auto order = in_order(specs.size());
      if (step == 2) std::reverse(order.begin(), order.end());
      run_step(exchange, grads, order);
      for (std::size_t t = 0; t < specs.size(); ++t) {
        EXPECT_TRUE(bit_equal(grads[t], original[t])) << specs[t].name << " bucket " << bucket_bytes;
      }
    }
    const auto& stats = exchange.total_stats();
    EXPECT_EQ(stats.steps, 3u);
    EXPECT_EQ(stats.total.elements, 3 * total);
    EXPECT_EQ(stats.total.bytes, 3 * 4 * total);
    EXPECT_EQ(stats.total.compression_ratio(), 1.0);
    EXPECT_EQ(stats.conv.elements, 3u * (2304 + 432));
    EXPECT_EQ(exchange.step_stats().tensors[2].bytes, 2304u * 4);
    EXPECT_FALSE(exchange.has_residual(2));
    EXPECT_TRUE(exchange.residual(2).empty());
  }
}

// Bin 1, threshold 0, exact values: lossless, and the residuals end at zero.
TEST(gradient_exchange, AdaCompExactModeIsLossless) {
  auto comm = tern::dist::make_single_process_communicator();
  const auto specs = model_tensors();
  ExchangeOptions options;
  options.compression = Compression::adacomp;
  options.bin_conv = 1;
  options.bin_fc = 1;
  options.threshold_scale = 0.0f;
  options.exact_values = true;
  GradientExchange exchange(*comm, specs, options);
  for (unsigned step = 0; step < 2; ++step) {
    auto grads = random_gradients(specs, 7 + step);
    const auto original = grads;
    run_step(exchange, grads, in_order(specs.size()));
    for (std::size_t t = 0; t < specs.size(); ++t) {
      EXPECT_TRUE(bit_equal(grads[t], original[t])) << specs[t].name;
      for (float r : exchange.residual(t)) EXPECT_EQ(r, 0.0f);
    }
  }
}

// Default AdaComp on one rank: the output is what the codec sends; sent + residual = gradients;
// the traffic counts every message and the 8-byte size word.
TEST(gradient_exchange, AdaCompAccounting) {
  auto comm = tern::dist::make_single_process_communicator();
  const auto specs = model_tensors();
  ExchangeOptions options;
  options.compression = Compression::adacomp;
  GradientExchange exchange(*comm, specs, options);
  EXPECT_TRUE(exchange.has_residual(0));
  EXPECT_FALSE(exchange.has_residual(1));
  EXPECT_EQ(exchange.bucket_count(), 1u);  // the four small "other" tensors

  std::vector<std::vector<double>> gradient_sum(specs.size()), sent_sum(specs.size());
  for (std::size_t t = 0; t < specs.size(); ++t) {
    gradient_sum[t].assign(specs[t].elements, 0.0);
    sent_sum[t].assign(specs[t].elements, 0.0);
  }
  std::uint64_t conv_bytes = 0, conv_elements = 0;
  for (unsigned step = 0; step < 5; ++step) {
    auto grads = random_gradients(specs, 20 + step);
    for (std::size_t t = 0; t < specs.size(); ++t)
      for (std::size_t i = 0; i < grads[t].size(); ++i) gradient_sum[t][i] += grads[t][i];
    const auto original = grads;
    run_step(exchange, grads, in_order(specs.size()));
    const auto& stats = exchange.step_stats();
    for (std::size_t t = 0; t < specs.size(); ++t) {
      for (std::size_t i = 0; i < grads[t].size(); ++i) sent_sum[t][i] += grads[t][i];
      const auto& traffic = stats.tensors[t];
      EXPECT_EQ(traffic.elements, specs[t].elements);
      if (!exchange.has_residual(t)) {
        EXPECT_TRUE(bit_equal(grads[t], original[t]));
        EXPECT_EQ(traffic.bytes, 4 * specs[t].elements);
        continue;
      }
      std::size_t nonzero = 0;
      for (float v : grads[t]) nonzero += v != 0.0f;
      EXPECT_EQ(traffic.selected, nonzero) << specs[t].name;
      const std::size_t bin = specs[t].kind == TensorKind::conv ? options.bin_conv : options.bin_fc;
      EXPECT_EQ(traffic.bytes,
                tern::adacomp::message_bytes(specs[t].elements, bin, nonzero, tern::adacomp::ValueMode::sign_scale) + 8);
      if (specs[t].kind == TensorKind::conv) {
        conv_bytes += traffic.bytes;
        conv_elements += traffic.elements;
      }
    }
    EXPECT_EQ(stats.total.bytes, stats.conv.bytes + stats.fc.bytes + stats.other.bytes);
  }
  const auto& total = exchange.total_stats();
  EXPECT_EQ(total.steps, 5u);
  EXPECT_EQ(total.conv.bytes, conv_bytes);
  EXPECT_EQ(total.conv.elements, conv_elements);
  EXPECT_DOUBLE_EQ(total.kind(TensorKind::conv).compression_ratio(), 4.0 * conv_elements / conv_bytes);
  EXPECT_GT(total.fc.compression_ratio(), 1.0);
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const auto residual = exchange.residual(t);
    for (std::size_t i = 0; i < specs[t].elements; ++i) {
      const double carried = residual.empty() ? 0.0 : residual[i];
      ASSERT_NEAR(sent_sum[t][i] + carried, gradient_sum[t][i], 1e-4) << specs[t].name << " " << i;
    }
  }
}

// Restoring the residuals reproduces the exchange exactly (checkpoints).
TEST(gradient_exchange, ResidualRestoreIsExact) {
  auto comm = tern::dist::make_single_process_communicator();
  const auto specs = model_tensors();
  ExchangeOptions options;
  options.compression = Compression::adacomp;
  GradientExchange first(*comm, specs, options);
  for (unsigned step = 0; step < 3; ++step) {
    auto grads = random_gradients(specs, 40 + step);
    run_step(first, grads, in_order(specs.size()));
  }
  GradientExchange second(*comm, specs, options);
  for (std::size_t t = 0; t < specs.size(); ++t) {
    const auto r = first.residual(t);
    second.set_residual(t, std::vector<float>(r.begin(), r.end()));
  }
  auto a = random_gradients(specs, 99);
  auto b = a;
  run_step(first, a, in_order(specs.size()));
  run_step(second, b, in_order(specs.size()));
  for (std::size_t t = 0; t < specs.size(); ++t) {
    EXPECT_TRUE(bit_equal(a[t], b[t])) << specs[t].name;
    const auto ra = first.residual(t), rb = second.residual(t);
    EXPECT_TRUE(std::equal(ra.begin(), ra.end(), rb.begin(), rb.end()));
  }
  EXPECT_THROW(second.set_residual(0, std::vector<float>(3)), tern::Error);
  EXPECT_THROW(second.set_residual(1, std::vector<float>(10)), tern::Error);  // no residual
}

TEST(gradient_exchange, MisuseIsAnError) {
  auto comm = tern::dist::make_single_process_communicator();
  const auto specs = model_tensors();
  GradientExchange exchange(*comm, specs);
  auto grads = random_gradients(specs, 1);
  EXPECT_THROW(exchange.gradient_ready(0, grads[0]), tern::Error);  // no begin_step
  EXPECT_THROW(exchange.finish(), tern::Error);
  exchange.begin_step();
  EXPECT_THROW(exchange.begin_step(), tern::Error);
  EXPECT_THROW(exchange.gradient_ready(specs.size(), grads[0]), tern::Error);
  EXPECT_THROW(exchange.gradient_ready(0, grads[1]), tern::Error);  // wrong size
  exchange.gradient_ready(0, grads[0]);
  EXPECT_THROW(exchange.gradient_ready(0, grads[0]), tern::Error);  // twice
  try {
    exchange.finish();
    FAIL() << "finish() with missing tensors";
  } catch (const tern::Error& error) {
    EXPECT_NE(std::string(error.what()).find("fc.bias"), std::string::npos) << error.what();
  }

  ExchangeOptions bad;
  bad.bucket_bytes = 2;
  EXPECT_THROW(GradientExchange(*comm, specs, bad), tern::Error);
  bad = ExchangeOptions{};
  bad.compression = Compression::adacomp;
  bad.bin_conv = 0;
  EXPECT_THROW(GradientExchange(*comm, specs, bad), tern::Error);
  bad.bin_conv = 50;
  bad.threshold_scale = -1.0f;
  EXPECT_THROW(GradientExchange(*comm, specs, bad), tern::Error);
}

// Overlap: a bucket's all-reduce starts in the gradient_ready call that completes it, while the
// later tensors (the earlier layers) are still to come, not in finish().
TEST(gradient_exchange, FirstBucketStartsBeforeTheLastGradientArrives) {
  for (Compression c : {Compression::none, Compression::adacomp}) {
    RecordingCommunicator comm;
    ExchangeOptions o;
    o.compression = c;
    o.bucket_bytes = 64 * sizeof(float);  // fc.weight alone fills the first buckets
    std::vector<TensorSpec> specs = model_tensors();
    GradientExchange exchange(comm, specs, o);
    std::vector<std::vector<float>> grads = random_gradients(specs, 3), sent = grads;
    exchange.begin_step();
    exchange.gradient_ready(0, grads[0]);
    const auto started = [&] {
      return std::count(comm.events.begin(), comm.events.end(), c == Compression::none ? "allreduce" : "allgatherv");
    };
    EXPECT_GE(started(), 1) << "nothing started after the first (last layer's) gradient";
    const auto before_rest = started();
    for (std::size_t i = 1; i < specs.size(); ++i) exchange.gradient_ready(i, grads[i]);
    EXPECT_GT(started(), before_rest) << "the other tensors' exchanges start as they arrive";
    EXPECT_EQ(std::count(comm.events.begin(), comm.events.end(), "wait"), 0) << "nothing waits before finish()";
    exchange.finish();
    // The mirror rank sent the same gradients: dense tensors come back as they were.
    for (std::size_t i = 0; i < specs.size(); ++i)
      if (c == Compression::none || specs[i].kind == TensorKind::other) EXPECT_TRUE(bit_equal(grads[i], sent[i])) << specs[i].name;
  }
}
