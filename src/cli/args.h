// What every tern command shares: option parsing, usage errors, input normalization and data sets
// from the command line.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <new>
#include <stdexcept>
#include <set>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "tern/data.h"
#include "tern/error.h"
#include "tern/graph.h"
#include "tern/passes.h"
#include "tern/quantized_model.h"

namespace tern::cli {

using tern::check;
using tern::Error;

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
      if (a == "-o") a = "--output";
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
          all_[name].push_back(value);
        } else {
          throw UsageError("unknown option '" + a + "' for 'tern " + command + "'");
        }
      } else {
        positional_.push_back(a);
      }
    }
  }
  bool flag(const std::string& n) const { return flags_.count(n) != 0; }
  // Every value of a repeatable option, in order.
  std::vector<std::string> get_all(const std::string& n) const {
    auto it = all_.find(n);
    return it == all_.end() ? std::vector<std::string>{} : it->second;
  }
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
    char range[96];  // a tiny positive lower bound means "above zero"
    if (lo > 0 && lo < 1e-6) std::snprintf(range, sizeof range, "(0, %g]", hi);
    else std::snprintf(range, sizeof range, "[%g, %g]", lo, hi);
    throw UsageError("--" + n + ": expected a number in " + std::string(range) + ", got '" + v + "'");
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
  std::map<std::string, std::vector<std::string>> all_;
  std::set<std::string> flags_;
  std::vector<std::string> positional_;
};

// Runs f(); an error that does not already name `input` is re-thrown naming it, so that a problem
// found deep in a kernel or an allocation still says which file or option caused it.
template <typename F>
auto naming(const std::string& input, F&& f) -> decltype(f()) {
  auto rethrow = [&](const std::string& message) -> Error {
    if (message.find(input) != std::string::npos) return Error(message);
    return Error(input + ": " + message);
  };
  try {
    return f();
  } catch (const UsageError&) {
    throw;
  } catch (const Error& e) {
    throw rethrow(e.what());
  } catch (const std::bad_alloc&) {
    throw rethrow("out of memory");
  } catch (const std::length_error& e) {
    throw rethrow(std::string("a size is too large (") + e.what() + ")");
  }
}

// --input-shape NAME=DIMS (repeatable) as the library takes it.
inline std::vector<InputShape> input_shapes(const Args& args) {
  std::vector<InputShape> shapes;
  for (const std::string& text : args.get_all("input-shape")) {
    try {
      shapes.push_back(parse_input_shape(text));
    } catch (const Error& e) {
      throw UsageError(std::string("--input-shape: ") + e.what());
    }
  }
  return shapes;
}

// The preprocessing flags (each command that reads data lists them among its options).
inline const std::vector<std::string> kPreprocessOptions = {"resize", "crop", "pad", "channels", "layout", "scale", "mean", "std"};

// The model's preprocessing (metadata_props tern.*) with the command's flags over it.
inline tern::Preprocess preprocess(const Args& args, const tern::Graph& graph) {
  tern::Preprocess p = tern::preprocess_from_metadata(graph);
  for (const std::string& key : kPreprocessOptions)
    if (args.has(key)) {
      try {
        p.set(key, args.get(key), "--");
      } catch (const tern::Error& e) {
        throw UsageError(e.what());
      }
    }
  return p;
}

inline bool is_npy_spec(const std::string& spec) { return spec.size() > 4 && spec.substr(spec.size() - 4) == ".npy"; }

// --data SPEC [--labels Y.npy] [--split test|train]: Fashion-MNIST, an IDX directory, a folder of
// JPEG/PNG images (class sub-folders, or unlabelled), or an .npy array. Without --data, the data
// set the model's metadata names (tern.dataset: the bundled models say fashion-mnist), else an error.
inline std::string data_spec(const Args& args, const tern::Graph* graph) {
  if (args.has("data")) return args.get("data");
  if (graph)
    if (auto it = graph->metadata.find("tern.dataset"); it != graph->metadata.end()) return it->second;
  return "";
}
inline bool has_data(const Args& args, const tern::Graph* graph) { return !data_spec(args, graph).empty(); }
// `graph` null: --data is required. `labelled`: an .npy array needs --labels.
inline tern::Dataset load_data(const Args& args, const tern::Graph* graph, const std::string& split = "", bool labelled = true) {
  std::string spec = data_spec(args, graph);
  if (spec.empty())
    throw UsageError("--data is required (a folder of images, fashion-mnist, an IDX directory, or X.npy with --labels)");
  if (args.has("labels") && !is_npy_spec(spec)) throw UsageError("--labels goes with an .npy --data array");
  if (labelled && is_npy_spec(spec) && !args.has("labels")) throw UsageError("--data " + spec + " needs --labels Y.npy");
  return tern::load_dataset(spec, args.get("labels", ""), split.empty() ? args.get("split", "test") : split);
}

// A progress line on stderr ("\rcalibrating 256/512 images"), only when stderr is a terminal (logs
// and the tests' one-line errors stay clean); the line ends when done reaches total.
inline void progress_line(const std::string& stage, int64_t done, int64_t total, const char* unit = "images") {
  if (!isatty(STDERR_FILENO)) return;
  std::fprintf(stderr, "\r%s %lld/%lld %s", stage.c_str(), static_cast<long long>(done), static_cast<long long>(total), unit);
  if (done >= total) std::fprintf(stderr, "\r%*s\r", static_cast<int>(stage.size()) + 32, "");
  std::fflush(stderr);
}

// What quantization may take as the model input's range: proved from the preprocessing when the
// data are 8-bit pixels, measured on the calibration batch when they are float arrays, and
// unknown (the input calibrated like any activation) otherwise. Never assumed.
struct InputRange {
  float lo = INFINITY, hi = -INFINITY;
  bool known() const { return lo <= hi; }
  bool non_negative() const { return known() && lo >= 0.0f; }
  float threshold() const { return !known() ? 0.0f : non_negative() ? hi : std::max(-lo, hi); }
  std::string source;  // "proved from the preprocessing", "measured on N calibration images"
};
inline InputRange input_range(const tern::Preprocess& pre) {
  InputRange r;
  std::tie(r.lo, r.hi) = pre.input_range();
  r.source = "8-bit pixels through the preprocessing (" + pre.describe() + ")";
  return r;
}
inline InputRange measured_range(const tern::Tensor& batch) {
  InputRange r;
  for (int64_t i = 0; i < batch.size(); ++i) {
    r.lo = std::min(r.lo, batch.data<float>()[i]);
    r.hi = std::max(r.hi, batch.data<float>()[i]);
  }
  r.source = "measured on " + std::to_string(batch.dim(0)) + " calibration inputs";
  return r;
}

// `tern quantize`'s options (quantize_options.cpp; the Python package's tern.quantize takes the
// same): the valued ones and the flags, and the QuantizeOptions they make, every one checked (a
// bad one is a UsageError naming it, before any work). Data loading, the input range and the
// progress bar are the caller's.
inline const std::set<std::string> kQuantizeValued = {
    "output", "weights", "method", "group", "acts", "act-scale", "act-codes", "calibration", "percentile", "calib-images",
    "data", "labels", "data-free", "config", "batch", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout",
    "rounding", "group-scales", "residual-terms", "residual", "residual-ranking", "residual-max-terms", "fallback",
    "sensitivity-images", "seed", "input-shape", "max-drop", "drop-images", "drop-data", "drop-labels", "attention", "smooth"};
inline const std::set<std::string> kQuantizeFlags = {"all-layers", "eval", "json", "bias-correction", "token-scales", "equalize"};
tern::quant::QuantizeOptions quantize_options(const Args& args);

// tern finetune (finetune_command.cpp; built with libtorch only).
int cmd_finetune(int argc, char** argv);
int cmd_accum(int argc, char** argv);   // accum_command.cpp
int cmd_train(int argc, char** argv);   // train_command.cpp (libtorch)

}  // namespace tern::cli
