// The MPI communicator and GradientExchange across ranks. A plain program, run by ctest as
//   mpirun -np 2 mpi_exchange_test            checks; exit status 0 = pass, 1 = fail
//   mpirun -np 2 mpi_exchange_test --timeout  rank 1 skips the exchange; rank 0 must time out
//                                             within 2 s and abort the job (mpi_timeout_test.sh)
//   mpirun -np 2 mpi_exchange_test --die      rank 1 exits without finalizing during the exchange
//   mpirun -np 2 mpi_exchange_test --bench    all-reduce timings and AdaComp compression ratios
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "tern/communicator.h"
#include "tern/error.h"
#include "tern/gradient_exchange.h"

#include "gradient_fixtures.h"

using namespace tern::dist;

using tern::testing::random_gradients;

namespace {

int failures = 0;

void expect(bool condition, const std::string& what, const Communicator& comm) {
  if (condition) return;
  std::fprintf(stderr, "FAIL %s: %s\n", comm.describe().c_str(), what.c_str());
  ++failures;
}

std::vector<TensorSpec> model_tensors() {
  // Backprop order; conv3 is larger than the 16 KiB buckets used below.
  return {{"fc.weight", 5120, TensorKind::fc},    {"fc.bias", 10, TensorKind::other},
          {"conv3.weight", 36864, TensorKind::conv}, {"bn3.shift", 64, TensorKind::other},
          {"conv2.weight", 2304, TensorKind::conv},  {"conv1.weight", 432, TensorKind::conv},
          {"conv1.bias", 16, TensorKind::other}};
}

// Halves of small integers, rank- and step-dependent: sums over two ranks and their halves are
// exact in float, so the expected average is exact.
float exact_value(int rank, int step, std::size_t tensor, std::size_t i) {
  const long k = static_cast<long>((i * 7 + tensor * 5 + static_cast<std::size_t>(rank) * 13 +
                                    static_cast<std::size_t>(step) * 3) % 23) - 11;
  return 0.5f * static_cast<float>(k);
}

std::vector<std::vector<float>> exact_gradients(const std::vector<TensorSpec>& specs, int rank, int step) {
  std::vector<std::vector<float>> grads;
  for (std::size_t t = 0; t < specs.size(); ++t) {
    std::vector<float> g(specs[t].elements);
    for (std::size_t i = 0; i < g.size(); ++i) g[i] = exact_value(rank, step, t, i);
    grads.push_back(std::move(g));
  }
  return grads;
}

void run_step(GradientExchange& exchange, std::vector<std::vector<float>>& grads) {
  exchange.begin_step();
  for (std::size_t t = 0; t < grads.size(); ++t) exchange.gradient_ready(t, grads[t]);
  exchange.finish();
}

std::uint64_t fnv1a(const void* data, std::size_t bytes, std::uint64_t hash = 1469598103934665603ull) {
  const auto* p = static_cast<const std::uint8_t*>(data);
  for (std::size_t i = 0; i < bytes; ++i) hash = (hash ^ p[i]) * 1099511628211ull;
  return hash;
}

std::uint64_t hash_of(const std::vector<std::vector<float>>& grads) {
  std::uint64_t hash = 1469598103934665603ull;
  for (const auto& g : grads) hash = fnv1a(g.data(), g.size() * sizeof(float), hash);
  return hash;
}

bool agree(Communicator& comm, std::uint64_t value) {
  const std::vector<std::uint64_t> all = comm.allgather(value);
  return std::all_of(all.begin(), all.end(), [&](std::uint64_t v) { return v == all[0]; });
}

void check_collectives(Communicator& comm) {
  const int P = comm.size();
  const std::vector<std::uint64_t> ranks = comm.allgather(static_cast<std::uint64_t>(comm.rank()) * 10 + 1);
  expect(static_cast<int>(ranks.size()) == P, "allgather size", comm);
  for (int r = 0; r < P && r < static_cast<int>(ranks.size()); ++r)
    expect(ranks[static_cast<std::size_t>(r)] == static_cast<std::uint64_t>(r) * 10 + 1, "allgather value", comm);

  std::vector<std::uint8_t> buffer;
  if (comm.rank() == 0) buffer = {'h', 'e', 'l', 'l', 'o'};
  comm.broadcast(buffer);
  expect(buffer == std::vector<std::uint8_t>{'h', 'e', 'l', 'l', 'o'}, "broadcast", comm);
  comm.barrier();

  // Interleaved non-blocking operations, waited for out of order: allgatherv data phases must
  // still match across ranks.
  auto bytes_for = [](int rank, int which) {
    std::vector<std::uint8_t> b(static_cast<std::size_t>(rank * 3 + which * 1000 + 1));
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = static_cast<std::uint8_t>(i * 31 + static_cast<std::size_t>(rank) + which);
    return b;
  };
  std::vector<float> sum(1000, static_cast<float>(comm.rank() + 1));
  const Request a = comm.start_allgatherv(bytes_for(comm.rank(), 0));
  const Request b = comm.start_allreduce_sum(sum);
  const Request c = comm.start_allgatherv(bytes_for(comm.rank(), 1));
  const Request d = comm.start_allgatherv({});
  comm.wait(d);
  comm.wait(c);
  comm.wait(b);
  comm.wait(a);
  const auto ga = comm.take_gathered(a), gc = comm.take_gathered(c), gd = comm.take_gathered(d);
  for (int r = 0; r < P; ++r) {
    expect(ga[static_cast<std::size_t>(r)] == bytes_for(r, 0), "allgatherv a from rank " + std::to_string(r), comm);
    expect(gc[static_cast<std::size_t>(r)] == bytes_for(r, 1), "allgatherv c from rank " + std::to_string(r), comm);
    expect(gd[static_cast<std::size_t>(r)].empty(), "empty allgatherv", comm);
  }
  const float expected_sum = static_cast<float>(P * (P + 1) / 2);
  expect(std::all_of(sum.begin(), sum.end(), [&](float v) { return v == expected_sum; }), "all-reduce sum", comm);
}

// Uncompressed and lossless AdaComp give the exact average; returns the uncompressed results.
void check_exchange(Communicator& comm) {
  const auto specs = model_tensors();
  const int P = comm.size();
  for (std::size_t bucket_bytes : {std::size_t{16384}, std::size_t{256 * 1024}}) {
    ExchangeOptions dense;
    dense.bucket_bytes = bucket_bytes;
    ExchangeOptions lossless;
    lossless.bucket_bytes = bucket_bytes;
    lossless.compression = Compression::adacomp;
    lossless.bin_conv = lossless.bin_fc = 1;
    lossless.threshold_scale = 0.0f;
    lossless.exact_values = true;
    GradientExchange dense_exchange(comm, specs, dense);
    GradientExchange lossless_exchange(comm, specs, lossless);
    for (int step = 0; step < 3; ++step) {
      auto grads = exact_gradients(specs, comm.rank(), step);
      auto lossless_grads = grads;
      run_step(dense_exchange, grads);
      run_step(lossless_exchange, lossless_grads);
      for (std::size_t t = 0; t < specs.size(); ++t) {
        bool exact = true;
        for (std::size_t i = 0; i < grads[t].size(); ++i) {
          float total = 0.0f;
          for (int r = 0; r < P; ++r) total += exact_value(r, step, t, i);
          exact = exact && grads[t][i] == total / static_cast<float>(P);
        }
        expect(exact, "uncompressed average of " + specs[t].name, comm);
        expect(std::memcmp(grads[t].data(), lossless_grads[t].data(), grads[t].size() * sizeof(float)) == 0,
               "lossless AdaComp equals uncompressed for " + specs[t].name, comm);
      }
      expect(agree(comm, hash_of(grads)), "hash agreement (uncompressed)", comm);
    }
  }
}

// Default AdaComp: different data per rank, identical results on every rank.
void check_adacomp_agreement(Communicator& comm) {
  const auto specs = model_tensors();
  ExchangeOptions options;
  options.compression = Compression::adacomp;
  GradientExchange exchange(comm, specs, options);
  for (int step = 0; step < 4; ++step) {
    auto grads = random_gradients(specs, static_cast<unsigned>(1000 * comm.rank() + step));
    run_step(exchange, grads);
    expect(agree(comm, hash_of(grads)), "AdaComp results identical on every rank", comm);
    bool nonzero = false;
    for (float v : grads[2]) nonzero = nonzero || v != 0.0f;
    expect(nonzero, "AdaComp sent something for conv3", comm);
  }
  // The residuals differ per rank (different data), so the per-rank traffic may too.
  expect(exchange.total_stats().conv.compression_ratio() > 1.0, "AdaComp compresses conv", comm);
}

// Rank 1 never joins; rank 0 waits in finish() and must throw the timeout error, then abort.
int timeout_case(Communicator& comm) {
  if (comm.rank() != 0) {
    std::this_thread::sleep_for(std::chrono::seconds(60));  // ended by rank 0's abort
    return 0;
  }
  const auto specs = model_tensors();
  GradientExchange exchange(comm, specs);
  auto grads = exact_gradients(specs, 0, 0);
  try {
    run_step(exchange, grads);
  } catch (const tern::Error& error) {
    comm.abort(error.what());
  }
  std::fprintf(stderr, "rank 0: the exchange finished without rank 1\n");
  return 0;
}

// Rank 1 dies without MPI_Finalize while rank 0 waits: mpirun must end the job.
int die_case(Communicator& comm) {
  if (comm.rank() != 0) std::_Exit(3);
  const auto specs = model_tensors();
  GradientExchange exchange(comm, specs);
  auto grads = exact_gradients(specs, 0, 0);
  try {
    run_step(exchange, grads);
  } catch (const tern::Error& error) {
    comm.abort(error.what());
  }
  return 0;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void bench(Communicator& comm) {
  for (std::size_t bytes : {std::size_t{4} << 10, std::size_t{256} << 10, std::size_t{1} << 20, std::size_t{10} << 20}) {
    std::vector<float> data(bytes / 4, 1.0f);
    std::vector<double> ms;
    for (int rep = 0; rep < 23; ++rep) {
      comm.barrier();
      const auto start = std::chrono::steady_clock::now();
      comm.wait(comm.start_allreduce_sum(data));
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    }
    ms.erase(ms.begin(), ms.begin() + 3);  // warm-up
    if (comm.rank() == 0)
      std::printf("all-reduce %8.0f KiB, %d ranks: median %.3f ms, min %.3f ms (%.2f GB/s of buffer)\n",
                  static_cast<double>(bytes) / 1024, comm.size(), median(ms),
                  *std::min_element(ms.begin(), ms.end()), static_cast<double>(bytes) / median(ms) / 1e6);
  }

  const std::vector<TensorSpec> specs = {{"conv 64x64x3x3", 64 * 64 * 9, TensorKind::conv},
                                         {"fc 512x10", 512 * 10, TensorKind::fc}};
  ExchangeOptions options;
  options.compression = Compression::adacomp;
  GradientExchange exchange(comm, specs, options);
  std::vector<double> ms;
  for (int step = 0; step < 10; ++step) {
    auto grads = random_gradients(specs, static_cast<unsigned>(7919 * comm.rank() + step));
    comm.barrier();
    const auto start = std::chrono::steady_clock::now();
    run_step(exchange, grads);
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
    if (comm.rank() == 0) {
      const auto& s = exchange.step_stats();
      std::printf("AdaComp step %d: conv %zu of %zu sent, ratio %.1fx; fc %zu of %zu sent, ratio %.1fx\n", step,
                  static_cast<std::size_t>(s.conv.selected), static_cast<std::size_t>(s.conv.elements),
                  s.conv.compression_ratio(), static_cast<std::size_t>(s.fc.selected),
                  static_cast<std::size_t>(s.fc.elements), s.fc.compression_ratio());
    }
  }
  if (comm.rank() == 0) {
    const auto& t = exchange.total_stats();
    std::printf("AdaComp over 10 steps, N(0,1) gradients, rank 0: conv (bin 50) %.1fx, fc (bin 500) %.1fx, "
                "median step %.3f ms\n",
                t.conv.compression_ratio(), t.fc.compression_ratio(), median(ms));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    const bool fault = mode == "--timeout" || mode == "--die";
    auto comm = make_mpi_communicator(fault && mode == "--timeout" ? 2.0 : 30.0);
    if (mode == "--timeout") return timeout_case(*comm);
    if (mode == "--die") return die_case(*comm);
    if (mode == "--bench") {
      bench(*comm);
      return 0;
    }
    if (comm->size() < 2) {
      std::fprintf(stderr, "mpi_exchange_test: run it with mpirun -np 2 (or more)\n");
      return 1;
    }
    check_collectives(*comm);
    check_exchange(*comm);
    check_adacomp_agreement(*comm);
    // Every rank's verdict decides: a failure on one rank fails the job on all.
    const bool all_passed = agree(*comm, static_cast<std::uint64_t>(failures)) && failures == 0;
    if (comm->rank() == 0) std::printf("mpi_exchange_test: %s (%d ranks)\n", all_passed ? "passed" : "FAILED", comm->size());
    return all_passed ? 0 : 1;
  } catch (const tern::Error& error) {
    std::fprintf(stderr, "mpi_exchange_test: %s\n", error.what());
    return 1;
  }
}
