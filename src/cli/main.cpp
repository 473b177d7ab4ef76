// tern: the command-line tool. A thin layer over the library: parse options, call the API, print.
// Every failure is one line on stderr ("tern: <input>: <problem>") and a non-zero exit code.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"

namespace {

using tern::check;
using tern::Error;

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

const char* kUsage = R"(usage: tern <command> [options]

commands:
  eval MODEL --data SPEC [--labels Y.npy] [--split test|train] [--limit N] [--batch B] [--json]
             [--scale S] [--mean M[,M..]] [--std S[,S..]]
      top-1/top-5 accuracy and images/s. SPEC: fashion-mnist (Debian's copy), an IDX directory,
      or an .npy image array together with --labels.
  run MODEL --input X.npy --output Y.npy [--batch B]
      runs the model on an .npy input batch (already normalized) and writes the first output.
  inspect MODEL [--json]
      layers, output shapes, parameters and multiply-accumulates per layer, totals.
  bench MODEL [--batch B] [--seconds S] [--json] [--profile]
      end-to-end images/s on random inputs; --profile adds time per layer (on stderr).
  version
)";

struct UsageError : Error {
  using Error::Error;
};

// Options of one command: --name value pairs and bare flags; positionals in order.
class Args {
 public:
  Args(const std::string& command, int argc, char** argv, int first, const std::set<std::string>& valued,
       const std::set<std::string>& flags) {
    for (int i = first; i < argc; ++i) {
      std::string a = argv[i];
      if (a.rfind("--", 0) == 0) {
        std::string name = a.substr(2), value;
        size_t eq = name.find('=');
        if (eq != std::string::npos) {
          value = name.substr(eq + 1);
          name = name.substr(0, eq);
        }
        if (flags.count(name)) {
          if (eq != std::string::npos) throw UsageError("option '--" + name + "' takes no value");
          flags_.insert(name);
        } else if (valued.count(name)) {
          if (eq == std::string::npos) {
            if (i + 1 >= argc) throw UsageError("option '--" + name + "' needs a value");
            value = argv[++i];
          }
          values_[name] = value;
        } else {
          throw UsageError("unknown option '" + a + "' for 'tern " + command + "'");
        }
      } else {
        positional_.push_back(a);
      }
    }
  }
  bool flag(const std::string& n) const { return flags_.count(n) != 0; }
  bool has(const std::string& n) const { return values_.count(n) != 0; }
  std::string get(const std::string& n, const std::string& fallback = "") const {
    auto it = values_.find(n);
    return it == values_.end() ? fallback : it->second;
  }
  int64_t get_int(const std::string& n, int64_t fallback, int64_t lo, int64_t hi) const {
    if (!has(n)) return fallback;
    std::string v = get(n);
    try {
      size_t used = 0;
      long long x = std::stoll(v, &used);
      if (used == v.size() && x >= lo && x <= hi) return x;
    } catch (const std::logic_error&) {
    }
    throw UsageError("--" + n + ": expected an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "], got '" + v + "'");
  }
  double get_double(const std::string& n, double fallback, double lo, double hi) const {
    if (!has(n)) return fallback;
    std::string v = get(n);
    try {
      size_t used = 0;
      double x = std::stod(v, &used);
      if (used == v.size() && x >= lo && x <= hi) return x;
    } catch (const std::logic_error&) {
    }
    throw UsageError("--" + n + ": expected a number in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                     "], got '" + v + "'");
  }
  const std::vector<std::string>& positional() const { return positional_; }
  std::string model(const std::string& command) const {
    if (positional_.size() != 1)
      throw UsageError("'tern " + command + "' takes exactly one MODEL argument, got " +
                       std::to_string(positional_.size()));
    return positional_[0];
  }

 private:
  std::map<std::string, std::string> values_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

std::vector<float> parse_list(const std::string& option, const std::string& text) {
  std::vector<float> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t used = 0;
      float v = std::stof(item, &used);
      if (used == item.size()) {
        out.push_back(v);
        continue;
      }
    } catch (const std::logic_error&) {
    }
    throw UsageError("--" + option + ": not a number: '" + item + "'");
  }
  if (out.empty()) throw UsageError("--" + option + ": empty list");
  return out;
}

tern::Normalization normalization(const Args& args, const tern::Graph& graph) {
  tern::Normalization n = tern::normalization_from_metadata(graph);
  if (args.has("scale")) n.scale = args.get_double("scale", 1, 1e-12, 1e12);
  if (args.has("mean")) n.mean = parse_list("mean", args.get("mean"));
  if (args.has("std")) {
    n.std = parse_list("std", args.get("std"));
    for (float s : n.std)
      if (!(s > 0)) throw UsageError("--std: values must be positive");
  }
  return n;
}

tern::Dataset load_data(const Args& args) {
  if (!args.has("data")) throw UsageError("--data is required (fashion-mnist, an IDX directory, or X.npy with --labels)");
  std::string spec = args.get("data");
  bool npy = spec.size() > 4 && spec.substr(spec.size() - 4) == ".npy";
  if (npy) {
    if (!args.has("labels")) throw UsageError("--data " + spec + " needs --labels Y.npy");
    return tern::load_npy_dataset(spec, args.get("labels"));
  }
  if (args.has("labels")) throw UsageError("--labels goes with an .npy --data array");
  return tern::load_idx_dataset(spec, args.get("split", "test"));
}

std::string json_shape(const tern::Shape& s) {
  nlohmann::json j = s;
  return j.dump();
}

int cmd_eval(int argc, char** argv) {
  Args args("eval", argc, argv, 2, {"data", "labels", "split", "limit", "batch", "scale", "mean", "std"}, {"json"});
  std::string model = args.model("eval");
  tern::EvalOptions options;
  options.limit = args.get_int("limit", 0, 0, int64_t{1} << 40);
  options.batch = args.get_int("batch", 100, 1, 1 << 16);
  tern::Graph graph = tern::import_onnx(model);
  tern::Normalization norm = normalization(args, graph);
  tern::Dataset data = load_data(args);
  tern::Executor executor(std::move(graph));
  tern::EvalResult r = tern::evaluate_classifier(executor, data, norm, options);
  if (args.flag("json")) {
    nlohmann::json j = {{"model", model}, {"data", data.name},           {"engine", "fp32"},
                        {"top1", r.top1}, {"top5", r.top5},              {"images", r.images},
                        {"seconds", r.seconds}, {"images_per_s", r.images_per_s}, {"batch", options.batch},
                        {"threads", tern::ThreadPool::global().size()},
                        {"isa", tern::kernels::to_string(tern::kernels::active_isa())}};
    std::cout << j.dump() << "\n";
  } else {
    std::printf("model       %s (fp32)\n", model.c_str());
    std::printf("data        %s, %lld images\n", data.name.c_str(), static_cast<long long>(r.images));
    std::printf("input       %s\n", norm.describe().c_str());
    std::printf("top-1       %.2f %%\n", r.top1);
    std::printf("top-5       %.2f %%\n", r.top5);
    std::printf("throughput  %.0f images/s (batch %lld, %d threads, %s kernels)\n", r.images_per_s,
                static_cast<long long>(options.batch), tern::ThreadPool::global().size(),
                tern::kernels::to_string(tern::kernels::active_isa()));
  }
  return 0;
}

int cmd_run(int argc, char** argv) {
  Args args("run", argc, argv, 2, {"input", "output"}, {});
  std::string model = args.model("run");
  if (!args.has("input") || !args.has("output")) throw UsageError("'tern run' needs --input X.npy and --output Y.npy");
  tern::Graph graph = tern::import_onnx(model);
  tern::Tensor x = tern::read_npy(args.get("input"));
  tern::Executor executor(std::move(graph));
  tern::Tensor y;
  try {
    y = executor.run(x);
  } catch (const Error& e) {
    throw Error(args.get("input") + ": " + e.what());
  }
  tern::write_npy(args.get("output"), y);
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  Args args("inspect", argc, argv, 2, {}, {"json"});
  std::string model = args.model("inspect");
  tern::Graph graph = tern::import_onnx(model);
  tern::ModelSummary s = tern::summarize(graph);
  if (args.flag("json")) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : s.layers)
      layers.push_back({{"name", l.name}, {"op", l.op}, {"output", l.output}, {"parameters", l.parameters},
                        {"macs", l.macs}});
    nlohmann::json inputs = nlohmann::json::array();
    for (tern::ValueId id : graph.inputs)
      inputs.push_back({{"name", graph.value(id).name}, {"shape", graph.value(id).shape}});
    std::cout << nlohmann::json{{"model", model}, {"opset", graph.opset}, {"inputs", inputs}, {"layers", layers},
                                {"parameters", s.parameters}, {"macs", s.macs}}
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("model   %s (opset %lld)\n", model.c_str(), static_cast<long long>(graph.opset));
  for (tern::ValueId id : graph.inputs)
    std::printf("input   %s %s\n", graph.value(id).name.c_str(), tern::to_string(graph.value(id).shape).c_str());
  for (tern::ValueId id : graph.outputs)
    std::printf("output  %s %s\n", graph.value(id).name.c_str(), tern::to_string(graph.value(id).shape).c_str());
  std::printf("\n%-36s %-22s %-18s %12s %14s\n", "layer", "op", "output (batch 1)", "parameters", "MACs");
  for (const auto& l : s.layers) {
    std::string shape = json_shape(l.output);
    std::printf("%-36s %-22s %-18s %12lld %14lld\n", l.name.c_str(), l.op.c_str(), shape.c_str(),
                static_cast<long long>(l.parameters), static_cast<long long>(l.macs));
  }
  std::printf("%-36s %-22s %-18s %12lld %14lld\n", "total", "", "", static_cast<long long>(s.parameters),
              static_cast<long long>(s.macs));
  return 0;
}

int cmd_bench(int argc, char** argv) {
  Args args("bench", argc, argv, 2, {"batch", "seconds"}, {"json", "profile"});
  std::string model = args.model("bench");
  int64_t batch = args.get_int("batch", 1, 1, 1 << 16);
  double seconds = args.get_double("seconds", 2.0, 0.01, 3600);
  tern::Graph graph = tern::import_onnx(model);
  check(graph.inputs.size() == 1, model + ": bench supports single-input models");
  tern::Shape shape = graph.value(graph.inputs[0]).shape;
  check(!shape.empty(), model + ": input has no shape");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 && i == 0) shape[i] = batch;
    check(shape[i] >= 0, model + ": input dimension " + std::to_string(i) + " is dynamic; bench needs static dims");
  }
  tern::Tensor x(tern::DataType::kFloat32, shape);
  uint32_t state = 12345;
  for (float& v : x.floats()) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
  }
  tern::ExecutorOptions exec_options;
  exec_options.profile = args.flag("profile");
  tern::Executor executor(std::move(graph), exec_options);
  executor.run(x);  // warm-up: first-touch allocations, caches
  std::vector<double> times;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds || times.size() < 5) {
    auto t0 = std::chrono::steady_clock::now();
    executor.run(x);
    auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double>(t1 - t0).count());
    elapsed = std::chrono::duration<double>(t1 - start).count();
  }
  if (args.flag("profile")) {
    auto nodes = executor.profile();
    double total = 0;
    for (const auto& n : nodes) total += n.seconds;
    std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
    std::fprintf(stderr, "%-40s %-18s %10s %7s\n", "node", "op", "ms/run", "share");
    for (const auto& n : nodes)
      std::fprintf(stderr, "%-40s %-18s %10.3f %6.1f%%\n", n.name.c_str(), n.op.c_str(),
                   1e3 * n.seconds / static_cast<double>(std::max<int64_t>(1, n.runs)), 100.0 * n.seconds / total);
  }
  std::sort(times.begin(), times.end());
  double median = times[times.size() / 2];
  double ips = static_cast<double>(batch) / median;
  if (args.flag("json")) {
    std::cout << nlohmann::json{{"model", model}, {"engine", "fp32"}, {"batch", batch}, {"runs", times.size()},
                                {"median_ms", median * 1e3}, {"min_ms", times.front() * 1e3},
                                {"images_per_s", ips}, {"threads", tern::ThreadPool::global().size()},
                                {"isa", tern::kernels::to_string(tern::kernels::active_isa())}}
                     .dump()
              << "\n";
  } else {
    std::printf("%s fp32 batch %lld: median %.3f ms (min %.3f), %.0f images/s, %zu runs, %d threads, %s kernels\n",
                model.c_str(), static_cast<long long>(batch), median * 1e3, times.front() * 1e3, ips, times.size(),
                tern::ThreadPool::global().size(), tern::kernels::to_string(tern::kernels::active_isa()));
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitUsage : 0;
  }
  std::string command = argv[1];
  try {
    if (command == "eval") return cmd_eval(argc, argv);
    if (command == "run") return cmd_run(argc, argv);
    if (command == "inspect") return cmd_inspect(argc, argv);
    if (command == "bench") return cmd_bench(argc, argv);
    if (command == "version" || command == "--version") {
      std::printf("tern %s\n", TERN_VERSION);
      return 0;
    }
    throw UsageError("unknown command '" + command + "' (try 'tern --help')");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tern: %s\n", e.what());
    return kExitUsage;
  } catch (const Error& e) {
    std::fprintf(stderr, "tern: %s\n", e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tern: out of memory\n");
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern: internal error: %s\n", e.what());
    return kExitError;
  }
}
