// libFuzzer target for the .npy reader: read_npy, the write_npy round trip and the .npy dataset
// loader; see load_npy_input.h. The header is text (a Python dict), so plain byte mutations with
// the dictionary (npy.dict) reach it well. Run it with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "load_npy_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::fuzz::load_npy_input(data, size);
  return 0;
}
