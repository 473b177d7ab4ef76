// Bounds tern checks before it allocates, and the environment settings that move them.
//
// Every size a file or an option can make tern allocate (a tensor, an initializer, a folded
// constant, a batch's activations, a data set) is checked against memory_limit() first, so a tiny
// hostile file is refused with the figure it would need instead of exhausting the machine.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

namespace tern {

// The most memory (bytes) one model, data set or run may plan to use. TERN_MAX_MEMORY (bytes, or
// with a K/M/G/T suffix, powers of 1024) sets it; the default is 3/4 of physical memory, or of the
// container's (cgroup) limit when that is lower.
int64_t memory_limit();
void set_memory_limit(int64_t bytes);

// "8G", "512M", "1.5G", "1000000" -> bytes; Error naming `what` on anything else (or <= 0).
int64_t parse_byte_size(const std::string& text, const std::string& what);

// 1536 -> "1.5 KiB", 20e9 -> "18.6 GiB".
std::string format_bytes(double bytes);

// Error "WHO needs N (what), above the memory limit of L (TERN_MAX_MEMORY ...)" when bytes exceed it.
void check_memory(double bytes, const std::string& who, const std::string& what);

// The same for hot paths (a check per tensor, per node run): describe() returns {who, what} and is
// called only when the check fails, so no message is built otherwise.
template <typename Describe>
void check_memory(double bytes, Describe&& describe) {
  if (bytes <= static_cast<double>(memory_limit())) return;
  const auto [who, what] = describe();
  check_memory(bytes, who, what);
}

// TERN_THREADS when set: an integer in [1, 1024]; Error naming the variable otherwise. 0: not set.
int threads_from_environment();

// Validates TERN_THREADS and TERN_MAX_MEMORY now (the CLI calls it first, with TERN_ISA's own
// parser, so a typo is a usage error before any work); throws Error naming the variable.
void check_environment();

}  // namespace tern
