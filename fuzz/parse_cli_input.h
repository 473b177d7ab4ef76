// What the command-line fuzz target (fuzz_cli_args.cpp) and the regression test
// (tests/test_fuzz_regressions.cpp) do with one input: split it into argv words (at newlines and
// NULs; the first word is the command), parse the options with tern::cli::Args as that command
// does, and run every option value through the parser or range check the command applies to it.
// Parsing only: no file is read and no model loaded. The commands' validation that needs a model
// lives in src/cli/main.cpp; this reaches what args.h and the library's parse_* functions offer.
// An input may only make this throw tern::Error (UsageError is one); any other exception escapes,
// and a crash, hang or sanitizer report is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "fuzz_environment.h"
#include "cli/args.h"
#include "tern/accumulation.h"
#include "tern/calibration.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/fixed_point.h"
#include "tern/graph.h"
#include "tern/quant_plan.h"
#include "tern/quantized_model.h"
#include "tern/residual.h"

namespace tern::fuzz {

struct CliOptions {
  std::set<std::string> valued, flags;
};

// Each command's options as src/cli/main.cpp, accum_command.cpp, train_command.cpp and
// finetune_command.cpp declare them (keep in step when a command gains an option).
inline const std::map<std::string, CliOptions>& cli_commands() {
  static const std::map<std::string, CliOptions> commands = {
      {"eval",
       {{"data", "labels", "split", "limit", "batch", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout", "level", "engine"}, {"json", "verbose"}}},
      {"quantize",
       {{"output", "weights", "method", "group", "acts", "act-scale", "calibration", "percentile", "calib-images", "data",
         "labels", "data-free", "config", "batch", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout", "rounding", "group-scales", "residual-terms",
         "residual", "residual-ranking", "residual-max-terms", "fallback", "sensitivity-images", "seed"},
        {"all-layers", "eval", "json"}}},
      {"run", {{"input", "output", "level"}, {}}},
      {"inspect", {{"level"}, {"json"}}},
      {"bench", {{"batch", "seconds", "level", "engine"}, {"json", "profile", "verbose"}}},
      {"accum", {{"n", "m", "chunk", "trials", "seed", "terms", "criterion", "batch"}, {"json"}}},
      {"train",
       {{"output", "init", "numeric", "gradient-numeric", "rounding", "fixed-compute", "accumulate", "accumulate-forward",
         "accumulate-backward", "accumulate-weight-grad", "accumulate-chunk", "epochs", "batch", "lr", "lr-final",
         "schedule", "momentum", "weight-decay", "label-smoothing", "data", "labels", "train-images", "test-images", "seed",
         "threads", "checkpoint", "checkpoint-every", "resume", "steps", "curve-every", "compress", "bin-conv", "bin-fc",
         "threshold-scale", "bucket-kb", "timeout", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout"},
        {"no-augment", "no-progress", "no-test", "json", "distributed", "exact-values", "timeline"}}},
      {"finetune",
       {{"output", "weights", "method", "group", "acts", "epochs", "batch", "lr", "lr-final", "schedule", "momentum",
         "weight-decay", "label-smoothing", "data", "labels", "train-images", "calib-images", "percentile", "seed",
         "threads", "checkpoint", "checkpoint-every", "resume", "onnx-out", "steps", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout"},
        {"all-layers", "no-augment", "no-progress", "eval", "json"}}},
  };
  return commands;
}

// Integer options: the range each command's get_int() call gives (main.cpp and the command files).
struct IntRange {
  const char* name;
  int64_t fallback, lo, hi;
};
inline const std::vector<IntRange>& cli_int_options(const std::string& command) {
  static const std::map<std::string, std::vector<IntRange>> ranges = {
      {"eval", {{"limit", 0, 0, int64_t{1} << 40}, {"batch", 100, 1, 1 << 16}}},
      {"quantize",
       {{"residual-terms", 1, 1, 16}, {"residual-max-terms", 3, 1, 16}, {"sensitivity-images", 256, 1, 1 << 20},
        {"seed", 1, 0, int64_t{1} << 62}, {"calib-images", 512, 1, 1 << 20}, {"batch", 64, 1, 1 << 16}}},
      {"bench", {{"batch", 1, 1, 1 << 16}}},
      {"accum",
       {{"trials", 256, 2, int64_t{1} << 30}, {"seed", 1, 0, int64_t{1} << 62}, {"chunk", 0, 0, int64_t{1} << 40},
        {"batch", 128, 1, int64_t{1} << 30}, {"n", 1, 1, int64_t{1} << 26}}},
      {"train",
       {{"accumulate", 0, 1, 23}, {"accumulate-forward", 0, 1, 23}, {"accumulate-backward", 0, 1, 23},
        {"accumulate-weight-grad", 0, 1, 23}, {"accumulate-chunk", 0, 1, int64_t{1} << 30}, {"epochs", 10, 1, 10000},
        {"batch", 64, 1, 1 << 16}, {"seed", 1, 0, int64_t{1} << 62}, {"train-images", 0, 0, int64_t{1} << 40},
        {"test-images", 0, 0, int64_t{1} << 40}, {"steps", 0, 0, int64_t{1} << 40}, {"curve-every", 0, 1, int64_t{1} << 40},
        {"checkpoint-every", 0, 1, int64_t{1} << 40}, {"bin-conv", 50, 1, 1 << 24}, {"bin-fc", 500, 1, 1 << 24},
        {"bucket-kb", 256, 1, 1 << 20}, {"threads", 1, 1, 1024}}},
      {"finetune",
       {{"epochs", 1, 1, 10000}, {"batch", 256, 1, 1 << 16}, {"seed", 1, 0, int64_t{1} << 62},
        {"train-images", 0, 0, int64_t{1} << 40}, {"calib-images", 512, 1, 1 << 20}, {"steps", 0, 0, int64_t{1} << 40},
        {"checkpoint-every", 0, 1, int64_t{1} << 40}, {"threads", 1, 1, 1024}}},
  };
  static const std::vector<IntRange> none;
  auto it = ranges.find(command);
  return it == ranges.end() ? none : it->second;
}

// Floating-point options and their get_double() ranges.
struct DoubleRange {
  const char* name;
  double fallback, lo, hi;
};
inline const std::vector<DoubleRange>& cli_double_options(const std::string& command) {
  static const std::map<std::string, std::vector<DoubleRange>> ranges = {
      {"quantize", {{"percentile", 99.99, 1e-9, 100}}},
      {"bench", {{"seconds", 2.0, 0.01, 3600}}},
      {"train",
       {{"lr", 0.05, 1e-12, 10}, {"lr-final", 0, 0, 10}, {"momentum", 0.9, 0, 0.999}, {"weight-decay", 5e-4, 0, 1},
        {"label-smoothing", 0, 0, 0.99}, {"threshold-scale", 1.0, 0, 1e6}, {"timeout", 120, 1, 86400}}},
      {"finetune",
       {{"lr", 1e-4, 1e-12, 10}, {"lr-final", -1, 0, 10}, {"momentum", 0.9, 0, 0.999}, {"weight-decay", 1e-4, 0, 1},
        {"label-smoothing", 0, 0, 0.99}, {"percentile", 0, 1e-9, 100}}},
  };
  static const std::vector<DoubleRange> none;
  auto it = ranges.find(command);
  return it == ranges.end() ? none : it->second;
}

// argv words: the input split at '\n' and '\0' (a trailing separator ends the last word).
inline std::vector<std::string> cli_words(const uint8_t* data, size_t size) {
  std::vector<std::string> words;
  std::string word;
  for (size_t i = 0; i < size; ++i) {
    char c = static_cast<char>(data[i]);
    if (c == '\n' || c == '\0') {
      words.push_back(std::move(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (size && data[size - 1] != '\n' && data[size - 1] != '\0') words.push_back(std::move(word));
  return words;
}

// The value parsers the commands apply (library functions; the checks that combine options, or
// need a model, are main.cpp's and stay out of reach).
inline void check_cli_values(const std::string& command, const cli::Args& args) {
  namespace q = quant;
  for (const IntRange& r : cli_int_options(command)) (void)args.get_int(r.name, r.fallback, r.lo, r.hi);
  for (const DoubleRange& r : cli_double_options(command)) (void)args.get_double(r.name, r.fallback, r.lo, r.hi);
  if (args.has("level") && args.get("level") != "max" && args.get("level") != "all")
    (void)args.get_int("level", 0, 0, 1 << 20);
  if (args.has("weights")) {
    q::WeightQuantConfig w;
    q::parse_weight_spec(args.get("weights"), w, "--weights");
  }
  if (args.has("method")) (void)q::parse_ternary_method(args.get("method"), "--method");
  if (args.has("group")) (void)q::parse_group_size(args.get("group"), "--group");
  if (command == "quantize") {
    if (args.has("residual")) (void)q::parse_residual_budget(args.get("residual"));
    if (args.has("residual-ranking")) (void)q::parse_residual_ranking(args.get("residual-ranking"));
    if (args.has("data-free")) (void)q::parse_activation_mode(args.get("data-free"));
    if (args.has("calibration")) (void)q::parse_calibration_method(args.get("calibration"));
  }
  if (command == "accum") {
    if (args.has("terms")) (void)accum::parse_term_distribution(args.get("terms"));
    if (args.has("criterion")) (void)accum::parse_criterion(args.get("criterion"));
  }
  if (command == "train") {
    if (args.has("numeric") && args.get("numeric") != "float32") (void)numerics::parse_fixed_format(args.get("numeric"));
    if (args.has("gradient-numeric")) (void)numerics::parse_fixed_format(args.get("gradient-numeric"));
    if (args.has("rounding")) (void)numerics::parse_rounding(args.get("rounding"));
  }
  // --scale/--mean/--std over a model's metadata, and the input range quantize derives from them.
  for (bool with_metadata : {false, true}) {
    Graph g;
    if (with_metadata)
      g.metadata = {{"tern.scale", "0.00392156862745098"}, {"tern.mean", "0.5,0.4,0.3"}, {"tern.std", "0.2,0.25,0.3"},
                    {"tern.resize", "48x"}, {"tern.pad", "48x320"}};
    Preprocess n = cli::preprocess(args, g);
    (void)cli::input_range(n);
    (void)n.describe();
    (void)n.metadata();
  }
  if (command != "accum" || !args.positional().empty()) (void)args.model(command);  // last: the values above first
}

// True when the words parsed and every value passed, false when they were rejected with
// tern::Error (its message to *error).
inline bool parse_cli_input(const uint8_t* data, size_t size, std::string* error = nullptr) {
  std::vector<std::string> words = cli_words(data, size);
  try {
    check(!words.empty(), "no command");
    const std::string& command = words[0];
    auto it = cli_commands().find(command);
    check(it != cli_commands().end(), "unknown command '" + command + "'");
    std::vector<std::string> storage = {"tern"};
    storage.insert(storage.end(), words.begin(), words.end());
    std::vector<char*> argv;
    for (std::string& w : storage) argv.push_back(w.data());
    argv.push_back(nullptr);
    cli::Args args(command, static_cast<int>(storage.size()), argv.data(), 2, it->second.valued, it->second.flags);
    check_cli_values(command, args);
    return true;
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

}  // namespace tern::fuzz
