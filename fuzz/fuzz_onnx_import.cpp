// libFuzzer target for the ONNX importer on raw bytes: import_onnx_bytes, then the summary,
// normalization and (small graphs) one FP32 run; see load_onnx_input.h. libFuzzer's byte
// mutations mostly break the protobuf framing: this target covers the parser's edges and the
// checks right after it; fuzz_onnx_structured.cpp reaches the importer's and executor's depths.
// Run it with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "load_onnx_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::fuzz::load_onnx_input(data, size);
  return 0;
}
