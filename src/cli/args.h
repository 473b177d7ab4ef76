// What every tern command shares: option parsing, usage errors, input normalization and data sets
// from the command line.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <new>
#include <stdexcept>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tern/data.h"
#include "tern/error.h"
#include "tern/graph.h"
#include "tern/passes.h"

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

inline std::vector<float> parse_list(const std::string& option, const std::string& text) {
  std::vector<float> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t used = 0;
      float v = std::stof(item, &used);
      if (used == item.size() && std::isfinite(v)) {
        out.push_back(v);
        continue;
      }
    } catch (const std::logic_error&) {
    }
    throw UsageError("--" + option + ": not a finite number: '" + item + "'");
  }
  if (out.empty()) throw UsageError("--" + option + ": empty list");
  return out;
}

inline tern::Normalization normalization(const Args& args, const tern::Graph& graph) {
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

inline bool is_npy_spec(const std::string& spec) { return spec.size() > 4 && spec.substr(spec.size() - 4) == ".npy"; }

inline tern::Dataset load_data(const Args& args) {
  if (!args.has("data")) throw UsageError("--data is required (fashion-mnist, an IDX directory, or X.npy with --labels)");
  std::string spec = args.get("data");
  bool npy = is_npy_spec(spec);
  if (npy) {
    if (!args.has("labels")) throw UsageError("--data " + spec + " needs --labels Y.npy");
    return tern::load_npy_dataset(spec, args.get("labels"));
  }
  if (args.has("labels")) throw UsageError("--labels goes with an .npy --data array");
  return tern::load_idx_dataset(spec, args.get("split", "test"));
}

// The exact range of the model input: pixels 0..255 through the normalization. Layers reading the
// graph input quantize with it (nothing to calibrate for a known, bounded input).
struct InputRange {
  float lo = INFINITY, hi = -INFINITY;
  bool non_negative() const { return lo >= 0.0f; }
  float threshold() const { return non_negative() ? hi : std::max(-lo, hi); }
};
inline InputRange input_range(const tern::Normalization& norm) {
  InputRange r;
  for (size_t c = 0; c < std::max(norm.mean.size(), norm.std.size()); ++c) {
    float mean = norm.mean[std::min(c, norm.mean.size() - 1)], sd = norm.std[std::min(c, norm.std.size() - 1)];
    r.lo = std::min(r.lo, static_cast<float>((0.0 * norm.scale - mean) / sd));
    r.hi = std::max(r.hi, static_cast<float>((255.0 * norm.scale - mean) / sd));
  }
  return r;
}

// tern finetune (finetune_command.cpp; built with libtorch only).
int cmd_finetune(int argc, char** argv);
int cmd_accum(int argc, char** argv);   // accum_command.cpp
int cmd_train(int argc, char** argv);   // train_command.cpp (libtorch)

}  // namespace tern::cli
