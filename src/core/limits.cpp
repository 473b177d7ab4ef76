#include "tern/limits.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "tern/error.h"

namespace tern {

namespace {

std::atomic<int64_t> configured_limit{0};  // 0: not set yet

// A container's memory limit (cgroup v2, then v1), when it is below the machine's.
double cgroup_memory_limit() {
  for (const char* path : {"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}) {
    if (std::FILE* f = std::fopen(path, "r")) {
      char text[64] = {};
      bool got = std::fgets(text, sizeof text, f) != nullptr;
      std::fclose(f);
      char* end = nullptr;
      double v = got ? std::strtod(text, &end) : 0;
      if (got && end != text && v > 0) return v;  // "max" (no limit) parses as nothing
    }
  }
  return INFINITY;
}

int64_t default_memory_limit() {
  long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  double physical = pages > 0 && page > 0 ? static_cast<double>(pages) * static_cast<double>(page) : 0x1p33;
  return static_cast<int64_t>(std::min(physical, cgroup_memory_limit()) * 0.75);
}

}  // namespace

int64_t parse_byte_size(const std::string& text, const std::string& what) {
  auto bad = [&]() {
    return Error(what + ": expected a size in bytes (optionally with K, M, G or T), got '" + text + "'");
  };
  if (text.empty()) throw bad();
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::logic_error&) {
    throw bad();
  }
  std::string suffix = text.substr(used);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  if (suffix == "i" || (suffix.size() == 2 && suffix[1] == 'i')) suffix = suffix.substr(0, suffix.size() - 1);
  double unit = 1;
  if (suffix == "K" || suffix == "k") unit = 0x1p10;
  else if (suffix == "M" || suffix == "m") unit = 0x1p20;
  else if (suffix == "G" || suffix == "g") unit = 0x1p30;
  else if (suffix == "T" || suffix == "t") unit = 0x1p40;
  else if (!suffix.empty()) throw bad();
  double bytes = value * unit;
  if (!std::isfinite(bytes) || bytes < 1 || bytes > 0x1p62) throw bad();
  return static_cast<int64_t>(bytes);
}

std::string format_bytes(double bytes) {
  const char* units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  while (bytes >= 1024 && u < 6) {
    bytes /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0) std::snprintf(buf, sizeof buf, "%.0f bytes", bytes);
  else std::snprintf(buf, sizeof buf, "%.1f %s", bytes, units[u]);
  return buf;
}

int64_t memory_limit() {
  int64_t v = configured_limit.load(std::memory_order_relaxed);
  if (v > 0) return v;
  const char* env = std::getenv("TERN_MAX_MEMORY");
  v = env && *env ? parse_byte_size(env, "TERN_MAX_MEMORY") : default_memory_limit();
  configured_limit.store(v, std::memory_order_relaxed);
  return v;
}

void set_memory_limit(int64_t bytes) {
  check(bytes > 0, "memory limit must be positive");
  configured_limit.store(bytes, std::memory_order_relaxed);
}

void check_memory(double bytes, const std::string& who, const std::string& what) {
  double limit = static_cast<double>(memory_limit());
  if (!(bytes <= limit))
    throw Error(who + " needs " + format_bytes(bytes) + " (" + what + "), above the memory limit of " +
                format_bytes(limit) + " (TERN_MAX_MEMORY raises it)");
}

int threads_from_environment() {
  const char* env = std::getenv("TERN_THREADS");
  if (!env) return 0;
  std::string text = env;
  try {
    size_t used = 0;
    long long n = std::stoll(text, &used);
    if (used == text.size() && n >= 1 && n <= 1024) return static_cast<int>(n);
  } catch (const std::logic_error&) {
  }
  throw Error("TERN_THREADS: expected an integer in [1, 1024], got '" + text + "'");
}

void check_environment() {
  threads_from_environment();
  memory_limit();
}

}  // namespace tern
