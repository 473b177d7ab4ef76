// CPU feature detection (once, via libgcc's cpuid wrappers) and the TERN_ISA / override choice.
#include "kernels/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <string>

#include "tern/error.h"

namespace tern::kernels {

namespace {

CpuFeatures detect() {
  __builtin_cpu_init();  // also checks that the OS saves the ymm/zmm state
  CpuFeatures f;
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
#if !defined(__clang__) || __clang_major__ >= 16  // older clang does not know "avxvnni" (the fuzz build)
  f.avx_vnni = __builtin_cpu_supports("avxvnni");
#endif
  f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
  f.avx512vpopcntdq = __builtin_cpu_supports("avx512vpopcntdq");
  return f;
}

Isa clamp_to_cpu(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(detected_isa()) ? isa : detected_isa(); }

Isa from_environment() {
  const char* env = std::getenv("TERN_ISA");
  if (env == nullptr || *env == '\0') return detected_isa();
  return clamp_to_cpu(parse_isa(env));
}

// -1: no override; else the Isa's value. Atomic because pool threads read it while tests set it.
std::atomic<int> isa_override{-1};

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

Isa detected_isa() {
  static const Isa isa = [] {
    const CpuFeatures& f = cpu_features();
    if (!f.avx2 || !f.fma) return Isa::kScalar;
    return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq ? Isa::kAvx512 : Isa::kAvx2;
  }();
  return isa;
}

Isa active_isa() {
  int forced = isa_override.load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<Isa>(forced);
  static const Isa from_env = from_environment();  // a throw leaves it unset, so it is retried
  return from_env;
}

void set_isa_override(std::optional<Isa> isa) {
  isa_override.store(isa ? static_cast<int>(clamp_to_cpu(*isa)) : -1, std::memory_order_relaxed);
}

bool isa_supported(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(detected_isa()); }

Isa parse_isa(std::string_view value) {
  if (value == "scalar") return Isa::kScalar;
  if (value == "avx2") return Isa::kAvx2;
  if (value == "avx512") return Isa::kAvx512;
  throw Error("TERN_ISA='" + std::string(value) + "' is not one of scalar, avx2, avx512");
}

const char* to_string(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "unknown";
}

}  // namespace tern::kernels
