// Run-time CPU feature detection and the choice of kernel ISA. Kernels for each ISA are compiled
// with their own per-file flags (see kernels.cmake) and picked here, so one binary runs anywhere.
#pragma once

#include <optional>
#include <string_view>

namespace tern::kernels {

// What the CPU (and OS) support, detected once. New kernel families add their flags here.
struct CpuFeatures {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx_vnni = false;  // int8 dot products (vpdpbusd, zmm / ymm)
  bool avx512vbmi = false, avx512vpopcntdq = false;
};
const CpuFeatures& cpu_features();

// FP32 kernel ISA, ordered from least to most capable: an ISA implies every ISA before it.
enum class Isa { kScalar, kAvx2, kAvx512 };

// The best ISA this CPU supports (kAvx2 needs avx2+fma; kAvx512 also avx512f/bw/vl/dq).
Isa detected_isa();

// The ISA kernels should use: the override if set, else TERN_ISA=scalar|avx2|avx512 from the
// environment, else detected_isa(); always clamped to detected_isa(). Throws tern::Error on an
// unknown TERN_ISA value.
Isa active_isa();

// For tests and benchmarks: force an ISA (clamped to what the CPU has), or nullopt to go back to
// TERN_ISA / detection.
void set_isa_override(std::optional<Isa> isa);

bool isa_supported(Isa isa);  // isa <= detected_isa()

const char* to_string(Isa isa);

// Parses a TERN_ISA value ("scalar", "avx2", "avx512"), not clamped. Throws tern::Error naming
// TERN_ISA and the value otherwise.
Isa parse_isa(std::string_view value);

}  // namespace tern::kernels
