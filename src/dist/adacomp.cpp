// AdaComp codec: selection, residual update and the message format of docs/adacomp-format.md.
#include "tern/adacomp.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "tern/error.h"

namespace tern::adacomp {
namespace {

// Byte-wise little-endian access, independent of the host's byte order and alignment.
void put_u32(std::uint8_t* out, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}
void put_f32(std::uint8_t* out, float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  put_u32(out, bits);
}
std::uint32_t get_u32(const std::uint8_t* in) {
  std::uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= std::uint32_t{in[i]} << (8 * i);
  return value;
}
float get_f32(const std::uint8_t* in) {
  const std::uint32_t bits = get_u32(in);
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

std::size_t value_bytes_per_entry(ValueMode mode) { return mode == ValueMode::exact ? 4 : 0; }

}  // namespace

std::size_t message_bytes(std::size_t selected, ValueMode mode) {
  return kHeaderBytes + selected * (4 + value_bytes_per_entry(mode));
}

std::vector<std::uint8_t> encode(std::span<float> residual, std::span<const float> gradient,
                                 const EncodeOptions& options) {
  check(residual.size() == gradient.size(),
        "adacomp: residual has " + std::to_string(residual.size()) + " elements, gradient " +
            std::to_string(gradient.size()));
  check(residual.size() <= kMaxElements,
        "adacomp: a tensor of " + std::to_string(residual.size()) +
            " elements exceeds the format's limit of 2^31");
  check(options.bin >= 1, "adacomp: bin size must be at least 1");
  check(std::isfinite(options.threshold_scale) && options.threshold_scale >= 0.0f,
        "adacomp: threshold_scale must be finite and >= 0");

  const std::size_t n = residual.size();
  const std::size_t bin = options.bin;
  const ValueMode mode = options.exact_values ? ValueMode::exact : ValueMode::sign_scale;

  // Pass 1: R += g and the bin maxima (they define the scale, which every sent value uses).
  const std::size_t bins = (n + bin - 1) / bin;
  std::vector<float> bin_max(bins, 0.0f);
  double max_sum = 0.0;
  for (std::size_t b = 0; b < bins; ++b) {
    const std::size_t end = std::min(n, (b + 1) * bin);
    float gmax = 0.0f;
    for (std::size_t i = b * bin; i < end; ++i) {
      residual[i] += gradient[i];
      gmax = std::max(gmax, std::fabs(residual[i]));
    }
    bin_max[b] = gmax;
    max_sum += gmax;
  }
  const float scale =
      mode == ValueMode::exact || bins == 0 ? 0.0f : static_cast<float>(max_sum / static_cast<double>(bins));

  // Pass 2: select, write entries (and values), subtract what was sent.
  std::vector<std::uint32_t> entries;
  std::vector<float> values;
  for (std::size_t b = 0; b < bins; ++b) {
    const std::size_t end = std::min(n, (b + 1) * bin);
    const float threshold = options.threshold_scale * bin_max[b];
    for (std::size_t i = b * bin; i < end; ++i) {
      const float r = residual[i];
      if (r == 0.0f) continue;
      const float h = r + gradient[i];
      if (!(std::fabs(h) >= threshold)) continue;
      const bool negative = std::signbit(r);
      entries.push_back((static_cast<std::uint32_t>(i) << 1) | (negative ? 1u : 0u));
      if (mode == ValueMode::exact) {
        values.push_back(r);
        residual[i] = 0.0f;
      } else {
        residual[i] = r - (negative ? -scale : scale);
      }
    }
  }

  std::vector<std::uint8_t> message(message_bytes(entries.size(), mode));
  std::uint8_t* out = message.data();
  out[0] = kMagic;
  out[1] = kVersion;
  out[2] = static_cast<std::uint8_t>(mode);
  out[3] = 0;
  put_u32(out + 4, static_cast<std::uint32_t>(n));
  put_u32(out + 8, static_cast<std::uint32_t>(entries.size()));
  put_f32(out + 12, scale);
  out += kHeaderBytes;
  for (std::uint32_t entry : entries) {
    put_u32(out, entry);
    out += 4;
  }
  for (float value : values) {
    put_f32(out, value);
    out += 4;
  }
  return message;
}

MessageInfo read_header(std::span<const std::uint8_t> message) {
  check(message.size() >= kHeaderBytes, "adacomp message: truncated (" + std::to_string(message.size()) +
                                            " bytes, the header alone is " + std::to_string(kHeaderBytes) + ")");
  const std::uint8_t* in = message.data();
  check(in[0] == kMagic, "adacomp message: bad magic byte " + std::to_string(in[0]));
  check(in[1] == kVersion, "adacomp message: unsupported version " + std::to_string(in[1]));
  check(in[2] <= 1, "adacomp message: unknown value mode " + std::to_string(in[2]));
  check(in[3] == 0, "adacomp message: reserved byte is not 0");
  MessageInfo info;
  info.mode = static_cast<ValueMode>(in[2]);
  info.elements = get_u32(in + 4);
  info.selected = get_u32(in + 8);
  info.scale = get_f32(in + 12);
  check(info.elements <= kMaxElements, "adacomp message: element count " + std::to_string(info.elements) +
                                           " exceeds 2^31");
  check(info.selected <= info.elements, "adacomp message: " + std::to_string(info.selected) +
                                            " selected of " + std::to_string(info.elements) + " elements");
  check(!(info.scale < 0.0f), "adacomp message: negative scale");
  const std::size_t expected = message_bytes(info.selected, info.mode);
  check(message.size() == expected, "adacomp message: " + std::to_string(message.size()) +
                                        " bytes, the header announces " + std::to_string(expected));
  return info;
}

void decode_add(std::span<const std::uint8_t> message, std::span<float> sum) {
  const MessageInfo info = read_header(message);
  check(info.elements == sum.size(), "adacomp message: for " + std::to_string(info.elements) +
                                         " elements, the tensor has " + std::to_string(sum.size()));
  const std::uint8_t* entries = message.data() + kHeaderBytes;
  const std::uint8_t* values = entries + std::size_t{info.selected} * 4;

  // Validate every index before touching sum, so a bad message changes nothing.
  std::uint64_t previous = 0;
  for (std::uint32_t k = 0; k < info.selected; ++k) {
    const std::uint64_t index = get_u32(entries + 4 * std::size_t{k}) >> 1;
    check(index < info.elements, "adacomp message: index " + std::to_string(index) + " out of range for " +
                                     std::to_string(info.elements) + " elements");
    check(k == 0 || index > previous, "adacomp message: indices not strictly increasing at entry " +
                                          std::to_string(k));
    previous = index;
  }
  for (std::uint32_t k = 0; k < info.selected; ++k) {
    const std::uint32_t entry = get_u32(entries + 4 * std::size_t{k});
    const std::size_t index = entry >> 1;
    if (info.mode == ValueMode::exact) {
      sum[index] += get_f32(values + 4 * std::size_t{k});
    } else {
      sum[index] += (entry & 1u) ? -info.scale : info.scale;
    }
  }
}

}  // namespace tern::adacomp
