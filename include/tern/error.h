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

}  // namespace tern
