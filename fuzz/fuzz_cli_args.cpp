// libFuzzer target for the command-line option parsing (tern::cli::Args and the option value
// parsers); see parse_cli_input.h. Inputs are argv words, one a line. Run it with scripts/fuzz.sh.
#include <cstddef>
#include <cstdint>

#include "parse_cli_input.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::fuzz::parse_cli_input(data, size);
  return 0;
}
