// What the ONNX fuzz targets (fuzz_onnx_import.cpp, fuzz_onnx_structured.cpp) and the regression
// test (tests/test_fuzz_regressions.cpp) do with one input: import it as `tern` does, then what a
// user does next cheaply (the normalization from metadata, `tern inspect`'s summary, one FP32 run
// on a zero batch when the graph is small). A hostile input may only make this throw tern::Error;
// any other exception (std::bad_alloc included: sizes must be checked before allocating) escapes,
// and a crash, hang or sanitizer report is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_environment.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/executor.h"
#include "tern/graph.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"

namespace tern::fuzz {

// The executor runs only on graphs whose every activation is known and small, so that the fuzzer
// spends its time on hostile graphs, not on large legitimate ones. Our own bound, not tern's.
inline constexpr int64_t kMaxRunElements = int64_t{1} << 20;  // all activations at batch 1, summed
inline constexpr int64_t kMaxRunMacs = int64_t{1} << 24;      // summarize()'s count at batch 1

// Elements of all non-constant values at batch 1 (the graph's dynamic batch as 1), or -1 when a
// shape is unknown or the sum passes kMaxRunElements (computed without overflow). A dynamic dim
// that is not the value's batch axis counts as unknown: it may be the batch grown by an operator
// (a Pad of the batch axis made a 1-image run 33 s long).
inline int64_t activation_elements(const Graph& g) {
  int64_t total = 0;
  for (const Value& v : g.values) {
    if (v.constant) continue;
    if (!v.shape_known) return -1;
    int64_t n = 1;
    for (size_t axis = 0; axis < v.shape.size(); ++axis) {
      const int64_t d = v.shape[axis];
      if (d < 0 && d != kDynamicDim) return -1;
      if (d == kDynamicDim && static_cast<int64_t>(axis) != v.batch_axis) return -1;
      int64_t e = d == kDynamicDim ? 1 : d;
      if (e != 0 && n > kMaxRunElements / e) return -1;
      n *= e;
    }
    total += n;
    if (total > kMaxRunElements) return -1;
  }
  return total;
}

// One FP32 run on zeros (dynamic dims as 1) when the graph is small; the outputs are not checked.
inline void run_if_small(const Graph& g, const ModelSummary& summary) {
  if (summary.macs < 0 || summary.macs > kMaxRunMacs || activation_elements(g) < 0) return;
  std::vector<Tensor> inputs;
  for (ValueId id : g.inputs) {
    Shape shape = g.value(id).shape;
    for (int64_t& d : shape)
      if (d == kDynamicDim) d = 1;
    inputs.emplace_back(g.value(id).dtype, shape);
  }
  Executor executor(g);
  executor.run(inputs);
}

// True when the input imported, false when it was rejected with tern::Error (its message to
// *error). Imports without the passes first (as `tern quantize --data-free batchnorm` and the
// trainers do), then optimizes as the default import does, and uses both graphs.
inline bool load_onnx_input(const uint8_t* data, size_t size, std::string* error = nullptr) {
  try {
    ImportOptions raw_options;
    raw_options.optimize = false;
    Graph raw = import_onnx_bytes(std::string_view(reinterpret_cast<const char*>(data), size), "input.onnx", raw_options);
    (void)preprocess_from_metadata(raw);
    ModelSummary raw_summary = summarize(raw);
    Graph optimized = raw;
    optimize(optimized);
    ModelSummary summary = summarize(optimized);
    run_if_small(raw, raw_summary);
    run_if_small(optimized, summary);
    return true;
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

}  // namespace tern::fuzz
