// The baseline build of requantize_impl.h (the reference) and the per-ISA dispatch.
#define REQUANT_SUFFIX _reference
#include "kernels/int8/requantize_impl.h"

#include "kernels/cpu_features.h"

namespace tern::kernels {

void requantize_block(const RequantArgs& a) {
  switch (active_isa()) {
    case Isa::kAvx512: return requantize_block_avx512(a);
    case Isa::kAvx2: return requantize_block_avx2(a);
    default: return requantize_block_reference(a);
  }
}

void depthwise_row_int8(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                        const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  switch (active_isa()) {
    case Isa::kAvx512:
      // Four taps per vpdpbusd in chunks of 64 elements: a stride-1 row is one run of elements,
      // else each pixel's channels are, and fewer than 64 would leave lanes idle (the vpmaddwd
      // kernel's blocks are 32 wide).
      if (cpu_features().avx512vnni && (x_step == channels || channels >= 64))
        return depthwise_row_int8_avx512_vnni(x_row, x_step, tap_offset, taps, w, channels, out_w, acc);
      return depthwise_row_int8_avx512(x_row, x_step, tap_offset, taps, w, channels, out_w, acc);
    case Isa::kAvx2:
      if (cpu_features().avx_vnni && (x_step == channels || channels >= 32))  // as AVX-512 VNNI, 32 wide
        return depthwise_row_int8_avxvnni(x_row, x_step, tap_offset, taps, w, channels, out_w, acc);
      return depthwise_row_int8_avx2(x_row, x_step, tap_offset, taps, w, channels, out_w, acc);
    default: return depthwise_row_int8_reference(x_row, x_step, tap_offset, taps, w, channels, out_w, acc);
  }
}

}  // namespace tern::kernels
