// End-to-end FP32 throughput of tern's Executor against oneDNN running the same imported graph.
//
// Both engines live in one process and Google Benchmark's random interleaving shuffles their
// repetitions, so background load (this runs on a shared 2-core VM) hits both alike and the ratio
// of their medians is meaningful even when the absolute figures drift. Before any timing, every
// model and batch is run through both engines on the same random input and the run fails if the
// outputs disagree: a fast wrong answer is not a data point.
//
// usage: bench_end_to_end [MODEL.onnx ...] [--batches=1,64] [--threads=2] [--tolerance=1e-3]
//                         [--benchmark_* flags, e.g. --benchmark_format=json]
// Models default to the bundled models/{resnet20,vgg_small,mobilenetv2_small}.onnx.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "bench_support.h"
#include "kernels/cpu_features.h"
#include "onednn_fp32_runner.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"
#include "tern/thread_pool.h"

namespace {

using tern::check;
using tern::Error;

// Applied before the command line's own --benchmark_* flags, which therefore override them.
const char* const kDefaultBenchmarkFlags[] = {
    "--benchmark_enable_random_interleaving=true",
    "--benchmark_repetitions=10",
    "--benchmark_min_time=0.2",
    "--benchmark_display_aggregates_only=true",
};

const char* const kBundledModels[] = {"resnet20", "vgg_small", "mobilenetv2_small"};

struct Options {
  std::vector<std::string> models;
  std::vector<int64_t> batches{1, 64};
  int threads = 2;
  double tolerance = 1e-3;
};

[[noreturn]] void usage_error(const std::string& message) {
  throw Error(message + " (usage: bench_end_to_end [MODEL.onnx ...] [--batches=1,64] [--threads=2] "
                        "[--tolerance=1e-3] [--benchmark_* flags])");
}

// What Google Benchmark left in argv: model paths and this program's own options.
Options parse_options(int argc, char** argv) {
  Options options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value_of = [&](const std::string& name) -> std::optional<std::string> {
      std::string prefix = "--" + name + "=";
      if (arg.rfind(prefix, 0) != 0) return std::nullopt;
      return arg.substr(prefix.size());
    };
    try {
      if (auto v = value_of("batches")) {
        options.batches.clear();
        for (size_t begin = 0; begin <= v->size();) {
          size_t end = std::min(v->find(',', begin), v->size());
          int64_t batch = std::stoll(v->substr(begin, end - begin));
          check(batch > 0, "--batches: batch sizes must be positive");
          options.batches.push_back(batch);
          begin = end + 1;
        }
      } else if (auto threads = value_of("threads")) {
        options.threads = std::stoi(*threads);
        check(options.threads > 0, "--threads must be positive");
      } else if (auto tolerance = value_of("tolerance")) {
        options.tolerance = std::stod(*tolerance);
      } else if (arg.rfind("--", 0) == 0) {
        usage_error("unknown option '" + arg + "'");
      } else {
        options.models.push_back(arg);
      }
    } catch (const std::logic_error&) {  // stoi/stod on a malformed number
      usage_error("malformed value in '" + arg + "'");
    }
  }
  if (options.models.empty()) {
    for (const char* name : kBundledModels) {
      std::string path = std::string(TERN_SOURCE_DIR) + "/models/" + name + ".onnx";
      check(std::filesystem::exists(path),
            path + " not found: train the bundled models (scripts/train_reference.py) or pass model paths");
      options.models.push_back(path);
    }
  }
  return options;
}

// Uniform in [-1, 1), deterministic: the same generator as `tern bench`.
tern::Tensor random_input(tern::Shape shape) {
  tern::Tensor x(tern::DataType::kFloat32, std::move(shape));
  uint32_t state = 12345;
  for (float& v : x.floats()) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
  }
  return x;
}

struct ModelEngines {
  std::string name;  // file stem, used in benchmark names
  std::unique_ptr<tern::Executor> tern;
  std::unique_ptr<tern::bench::OneDnnFp32Runner> onednn;
};

std::string model_name(const std::string& path) { return std::filesystem::path(path).stem().string(); }

std::string format(const char* fmt, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, fmt, value);
  return buffer;
}

// Runs both engines on the same input; throws when they disagree beyond `tolerance`.
void check_agreement(ModelEngines& model, const tern::Tensor& input, int64_t batch, double tolerance) {
  tern::Tensor expected = model.tern->run(input);
  tern::Tensor got = model.onednn->run(input);
  tern::bench::OutputAgreement agreement = tern::bench::compare_outputs(got, expected);
  std::string key = model.name + "/batch:" + std::to_string(batch);
  std::fprintf(stderr, "%s: max |oneDNN - tern| = %.3g, relative to max |tern| = %.3g (tolerance %.1g)\n",
               key.c_str(), agreement.max_abs_diff, agreement.relative(), tolerance);
  benchmark::AddCustomContext("max_relative_error/" + key, format("%.3g", agreement.relative()));
  check(agreement.relative() <= tolerance, key + ": oneDNN output differs from tern's by " +
                                               format("%.3g", agreement.relative()) + " (relative), over " +
                                               format("%.1g", tolerance));
}

template <typename Engine>
void register_engine(const std::string& name, Engine* engine, const tern::Tensor& input, int64_t batch) {
  benchmark::RegisterBenchmark(name.c_str(),
                               [engine, input, batch](benchmark::State& state) {
                                 for (auto _ : state) {
                                   tern::Tensor output = engine->run(input);
                                   benchmark::DoNotOptimize(output.raw());
                                 }
                                 state.counters["images_per_s"] = benchmark::Counter(
                                     static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
                                 state.counters["batch"] = static_cast<double>(batch);
                               })
      ->UseRealTime()  // both engines are multi-threaded: the main thread's CPU time means nothing
      ->Unit(benchmark::kMillisecond);
}

int run(int argc, char** argv) {
  std::vector<char*> args{argv[0]};
  for (const char* flag : kDefaultBenchmarkFlags) args.push_back(const_cast<char*>(flag));
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  int remaining = static_cast<int>(args.size());
  benchmark::Initialize(&remaining, args.data());
  Options options = parse_options(remaining, args.data());

  // Before the global pool exists: tern reads its thread count once, from the environment.
  setenv("TERN_THREADS", std::to_string(options.threads).c_str(), 1);
  benchmark::AddCustomContext("tern_isa", tern::kernels::to_string(tern::kernels::active_isa()));
  benchmark::AddCustomContext("tern_threads", std::to_string(tern::ThreadPool::global().size()));
  benchmark::AddCustomContext("onednn_threads", std::to_string(options.threads));
  benchmark::AddCustomContext("onednn_version", tern::bench::onednn_version());
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  benchmark::AddCustomContext("omp_wait_policy", wait_policy ? wait_policy : "default");

  std::vector<std::unique_ptr<ModelEngines>> models;
  for (const std::string& path : options.models) {
    tern::Graph graph = tern::import_onnx(path);
    check(graph.inputs.size() == 1, path + ": the benchmark supports single-input models");
    tern::Shape input_shape = graph.value(graph.inputs[0]).shape;
    check(!input_shape.empty() && input_shape[0] == tern::kDynamicDim,
          path + ": the benchmark needs a model with a dynamic batch dimension");
    auto model = std::make_unique<ModelEngines>();
    model->name = model_name(path);
    model->onednn = std::make_unique<tern::bench::OneDnnFp32Runner>(
        graph, tern::bench::OneDnnRunnerOptions{.threads = options.threads});
    model->tern = std::make_unique<tern::Executor>(std::move(graph));
    for (int64_t batch : options.batches) {
      input_shape[0] = batch;
      tern::Tensor input = random_input(input_shape);
      std::string summary = model->onednn->prepare(batch).to_string();
      benchmark::AddCustomContext("onednn_plan/" + model->name + "/batch:" + std::to_string(batch), summary);
      std::fprintf(stderr, "%s/batch:%lld: oneDNN %s\n", model->name.c_str(), static_cast<long long>(batch),
                   summary.c_str());
      check_agreement(*model, input, batch, options.tolerance);  // also the first warm-up run
      std::string prefix = model->name + "/batch:" + std::to_string(batch);
      register_engine(prefix + "/tern_fp32", model->tern.get(), input, batch);
      register_engine(prefix + "/onednn_fp32", model->onednn.get(), input, batch);
    }
    models.push_back(std::move(model));
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tern::bench::rerun_with_passive_omp_wait(argv, "bench_end_to_end");
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_end_to_end: %s\n", e.what());
    return 1;
  }
}
