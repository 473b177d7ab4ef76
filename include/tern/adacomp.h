// AdaComp gradient compression (Chen et al. 2017, arXiv 1712.02679): the codec, without MPI or
// libtorch, so it can be tested on its own. GradientExchange (gradient_exchange.h) uses it.
//
// Per worker and tensor a residual R (starts at 0) keeps what was not sent yet. One step with
// gradient g:
//   R += g                                  R is now G, the accumulated gradient
//   H  = R + g                              the "look-ahead" value used only for selection
//   bins of T consecutive elements (the last bin holds the remainder)
//   gmax_b = max |R_i| over bin b
//   select i when R_i != 0 and |H_i| >= threshold_scale * gmax_b
//   scale  = mean of gmax_b over all bins of the tensor (one scale per tensor)
//   sent_i = sign(R_i) * scale              (exact_values: sent_i = R_i)
//   R_i   -= sent_i                         for every selected i
// threshold_scale 0 selects every non-zero element (elements with R_i == 0 carry nothing and are
// never sent). The message format is in docs/adacomp-format.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tern::adacomp {

// Wire format constants: little-endian, append-only (receivers check both bytes).
inline constexpr std::uint8_t kMagic = 0xAC;
inline constexpr std::uint8_t kVersion = 2;
inline constexpr std::size_t kHeaderBytes = 24;
// Element counts are u32 in the header; tensors are kept below 2^31 elements.
inline constexpr std::uint64_t kMaxElements = std::uint64_t{1} << 31;
// Bins are at most 2^16 elements (a position within a bin takes at most 16 bits).
inline constexpr std::size_t kMaxBin = std::size_t{1} << 16;

enum class ValueMode : std::uint8_t {
  sign_scale = 0,  // each selected element is sign * the tensor's scale (AdaComp)
  exact = 1,       // each selected element carries its float value (verification only)
};

struct EncodeOptions {
  std::size_t bin = 50;         // T: elements per bin (1..kMaxBin)
  float threshold_scale = 1.0f;  // select |H| >= threshold_scale * gmax; 0 selects every non-zero
  bool exact_values = false;     // send R_i itself instead of sign * scale
};

// What a message says about itself (validated header).
struct MessageInfo {
  std::uint32_t elements = 0;
  std::uint32_t selected = 0;
  ValueMode mode = ValueMode::sign_scale;
  float scale = 0.0f;  // 0 in exact mode
  std::uint32_t bin = 0;
  std::uint32_t stream_bytes = 0;  // the packed bins' bytes
};

// Bits of one entry's position within a bin of `bin` elements: ceil(log2 bin) (0 for bin 1).
int position_bits(std::size_t bin);
// Bytes of a message of `elements` elements in bins of `bin` with `selected` entries: the header,
// then per bin a unary count (count + 1 bits) and per entry its position and sign, packed
// (docs/adacomp-format.md), then 4 bytes per entry in exact mode.
std::size_t message_bytes(std::size_t elements, std::size_t bin, std::size_t selected, ValueMode mode);

// Adds gradient to residual, selects, writes the message and subtracts what it sends from
// residual. residual and gradient must have the same length (<= kMaxElements); throws Error
// otherwise or on invalid options.
std::vector<std::uint8_t> encode(std::span<float> residual, std::span<const float> gradient,
                                 const EncodeOptions& options);

// Reads and validates the header and that the message length matches it. Throws Error on a
// truncated or malformed message.
MessageInfo read_header(std::span<const std::uint8_t> message);

// sum[i] += the value the message sends for element i. Validates everything before it writes:
// header, length, element count == sum.size(), every bin's count and positions (within the bin,
// strictly increasing), the total count, zero padding. A bad message throws Error and leaves sum
// unchanged.
void decode_add(std::span<const std::uint8_t> message, std::span<float> sum);

}  // namespace tern::adacomp
