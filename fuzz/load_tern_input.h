// What the .tern fuzz target (fuzz_tern_loader.cpp) and the regression test
// (tests/test_fuzz_regressions.cpp) do with one input: load it as tern does (the container, then
// the FP32 or the quantized loader) and use what loaded. A hostile input may only make this throw
// tern::Error; any other exception escapes, and a crash, hang or sanitizer report is a bug.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_environment.h"
#include "tern/error.h"
#include "tern/graph.h"
#include "tern/model_io.h"
#include "tern/quantized_model.h"
#include "tern/tern_file.h"

namespace tern::fuzz {

// True when the input loaded, false when it was rejected with tern::Error (its message to *error).
inline bool load_tern_input(const uint8_t* data, size_t size, std::string* error = nullptr) {
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  try {
    TernFile file = TernFile::from_bytes(std::move(bytes), "input.tern");
    if (!quant::is_quantized(file)) {
      Graph g = load_graph(file);
      return true;
    }
    quant::QuantizedModel m = quant::load_quantized_model(file);
    Graph sim = quant::simulation_graph(m);
    quant::ModelSize s = quant::model_size(m);
    for (const quant::QuantizedLayer& l : m.layers) {
      quant::describe_weights(l);
      if (l.input) quant::describe_activation(*l.input);
      (void)l.multiplies_per_image();
      (void)quant::layer_bytes(l, true);
    }
    (void)s.mults_eliminated();
    if (m.level != 0) quant::set_level(m, 0);  // every stored level is usable
    return true;
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

}  // namespace tern::fuzz
