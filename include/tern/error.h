// tern's one error type. The library never aborts on bad input: it throws tern::Error with a
// one-line message that names the input and the problem; the CLI prints it and exits non-zero.
#pragma once

#include <stdexcept>
#include <string>

namespace tern {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws Error(message) when condition is false. For validating inputs, not internal invariants.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}
// The same for a literal message: no std::string is made unless it fails (a check on a hot path,
// as every sgemm call's, would otherwise allocate its message each time).
inline void check(bool condition, const char* message) {
  if (!condition) throw Error(message);
}

}  // namespace tern
