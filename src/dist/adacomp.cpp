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

std::uint64_t stream_bits(std::uint64_t elements, std::uint64_t bin, std::uint64_t selected) {
  const std::uint64_t bins = (elements + bin - 1) / bin;
  return bins + selected * static_cast<std::uint64_t>(position_bits(bin) + 2);
}

// Bits appended least significant first, bytes in order.
class BitWriter {
 public:
  void put(std::uint32_t value, int bits) {
    for (int b = 0; b < bits; ++b) {
      if (used_ % 8 == 0) bytes_.push_back(0);
      if ((value >> b) & 1u) bytes_.back() |= static_cast<std::uint8_t>(1u << (used_ % 8));
      ++used_;
    }
  }
  std::vector<std::uint8_t>& bytes() { return bytes_; }

 private:
  std::vector<std::uint8_t> bytes_;
  std::uint64_t used_ = 0;
};

// Reads the stream of a validated length; every read is bounds-checked.
class BitReader {
 public:
  BitReader(const std::uint8_t* data, std::size_t bytes) : data_(data), bits_(std::uint64_t{bytes} * 8) {}
  std::uint32_t get(int bits) {
    check(pos_ + static_cast<std::uint64_t>(bits) <= bits_, "adacomp message: the packed entries end early");
    std::uint32_t value = 0;
    for (int b = 0; b < bits; ++b, ++pos_) value |= std::uint32_t{(data_[pos_ / 8] >> (pos_ % 8)) & 1u} << b;
    return value;
  }
  std::uint64_t position() const { return pos_; }

 private:
  const std::uint8_t* data_;
  std::uint64_t bits_, pos_ = 0;
};

}  // namespace

int position_bits(std::size_t bin) {
  int bits = 0;
  while ((std::size_t{1} << bits) < bin) ++bits;
  return bits;
}

std::size_t message_bytes(std::size_t elements, std::size_t bin, std::size_t selected, ValueMode mode) {
  return kHeaderBytes + static_cast<std::size_t>((stream_bits(elements, bin, selected) + 7) / 8) +
         selected * value_bytes_per_entry(mode);
}

std::vector<std::uint8_t> encode(std::span<float> residual, std::span<const float> gradient,
                                 const EncodeOptions& options) {
  check(residual.size() == gradient.size(),
        "adacomp: residual has " + std::to_string(residual.size()) + " elements, gradient " +
            std::to_string(gradient.size()));
  check(residual.size() <= kMaxElements,
        "adacomp: a tensor of " + std::to_string(residual.size()) +
            " elements exceeds the format's limit of 2^31");
  check(options.bin >= 1 && options.bin <= kMaxBin, "adacomp: bin size must be in 1.." + std::to_string(kMaxBin));
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

  // Pass 2: select, pack each bin's count (unary) and entries (position within the bin, sign),
  // keep the values (exact mode), subtract what was sent.
  const int pbits = position_bits(bin);
  BitWriter stream;
  std::vector<float> values;
  std::vector<std::uint32_t> entries;  // one bin's (position << 1 | sign)
  std::size_t selected = 0;
  for (std::size_t b = 0; b < bins; ++b) {
    const std::size_t end = std::min(n, (b + 1) * bin);
    const float threshold = options.threshold_scale * bin_max[b];
    entries.clear();
    for (std::size_t i = b * bin; i < end; ++i) {
      const float r = residual[i];
      if (r == 0.0f) continue;
      const float h = r + gradient[i];
      if (!(std::fabs(h) >= threshold)) continue;
      const bool negative = std::signbit(r);
      entries.push_back(static_cast<std::uint32_t>(i - b * bin) << 1 | (negative ? 1u : 0u));
      if (mode == ValueMode::exact) {
        values.push_back(r);
        residual[i] = 0.0f;
      } else {
        residual[i] = r - (negative ? -scale : scale);
      }
    }
    for (std::size_t k = 0; k < entries.size(); ++k) stream.put(1, 1);
    stream.put(0, 1);
    for (std::uint32_t e : entries) {
      stream.put(e >> 1, pbits);
      stream.put(e & 1u, 1);
    }
    selected += entries.size();
  }

  std::vector<std::uint8_t> message(message_bytes(n, bin, selected, mode));
  std::uint8_t* out = message.data();
  out[0] = kMagic;
  out[1] = kVersion;
  out[2] = static_cast<std::uint8_t>(mode);
  out[3] = 0;
  put_u32(out + 4, static_cast<std::uint32_t>(n));
  put_u32(out + 8, static_cast<std::uint32_t>(selected));
  put_f32(out + 12, scale);
  put_u32(out + 16, static_cast<std::uint32_t>(bin));
  put_u32(out + 20, static_cast<std::uint32_t>(stream.bytes().size()));
  out += kHeaderBytes;
  std::memcpy(out, stream.bytes().data(), stream.bytes().size());
  out += stream.bytes().size();
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
  info.bin = get_u32(in + 16);
  info.stream_bytes = get_u32(in + 20);
  check(info.elements <= kMaxElements, "adacomp message: element count " + std::to_string(info.elements) +
                                           " exceeds 2^31");
  check(info.selected <= info.elements, "adacomp message: " + std::to_string(info.selected) +
                                            " selected of " + std::to_string(info.elements) + " elements");
  check(!(info.scale < 0.0f), "adacomp message: negative scale");
  check(info.bin >= 1 && info.bin <= kMaxBin, "adacomp message: bin size " + std::to_string(info.bin) + " outside 1.." +
                                                  std::to_string(kMaxBin));
  const std::size_t expected = message_bytes(info.elements, info.bin, info.selected, info.mode);
  check(kHeaderBytes + std::size_t{info.stream_bytes} + std::size_t{info.selected} * value_bytes_per_entry(info.mode) ==
            expected,
        "adacomp message: " + std::to_string(info.stream_bytes) + " packed bytes for " + std::to_string(info.selected) +
            " entries in bins of " + std::to_string(info.bin));
  check(message.size() == expected, "adacomp message: " + std::to_string(message.size()) +
                                        " bytes, the header announces " + std::to_string(expected));
  return info;
}

void decode_add(std::span<const std::uint8_t> message, std::span<float> sum) {
  const MessageInfo info = read_header(message);
  check(info.elements == sum.size(), "adacomp message: for " + std::to_string(info.elements) +
                                         " elements, the tensor has " + std::to_string(sum.size()));
  const std::uint8_t* stream = message.data() + kHeaderBytes;
  const std::uint8_t* values = stream + info.stream_bytes;

  // Unpack and validate every entry before touching sum, so a bad message changes nothing.
  const std::size_t n = info.elements, bin = info.bin, bins = (n + bin - 1) / bin;
  const int pbits = position_bits(bin);
  BitReader in(stream, info.stream_bytes);
  std::vector<std::uint32_t> entries;  // index << 1 | sign
  entries.reserve(info.selected);
  for (std::size_t b = 0; b < bins; ++b) {
    const std::size_t length = std::min(bin, n - b * bin);
    std::size_t count = 0;
    while (in.get(1)) {
      ++count;
      check(count <= length, "adacomp message: bin " + std::to_string(b) + " claims more than its " +
                                 std::to_string(length) + " elements");
    }
    check(entries.size() + count <= info.selected, "adacomp message: more entries than the " +
                                                       std::to_string(info.selected) + " announced");
    std::int64_t previous = -1;
    for (std::size_t k = 0; k < count; ++k) {
      const std::uint32_t position = in.get(pbits), sign = in.get(1);
      check(position < length, "adacomp message: position " + std::to_string(position) + " outside bin " +
                                   std::to_string(b) + " of " + std::to_string(length) + " elements");
      check(static_cast<std::int64_t>(position) > previous,
            "adacomp message: positions not strictly increasing in bin " + std::to_string(b));
      previous = position;
      entries.push_back(static_cast<std::uint32_t>(b * bin + position) << 1 | sign);
    }
  }
  check(entries.size() == info.selected, "adacomp message: " + std::to_string(entries.size()) + " entries, " +
                                             std::to_string(info.selected) + " announced");
  // The stream's padding: fewer than 8 bits, all zero.
  const std::uint64_t used = in.position();
  const int pad = static_cast<int>(std::uint64_t{info.stream_bytes} * 8 - used);
  check(pad < 8 && in.get(pad) == 0, "adacomp message: non-zero or excess padding after the entries");
  for (std::size_t k = 0; k < entries.size(); ++k) {
    const std::size_t index = entries[k] >> 1;
    if (info.mode == ValueMode::exact) sum[index] += get_f32(values + 4 * k);
    else sum[index] += (entries[k] & 1u) ? -info.scale : info.scale;
  }
}

}  // namespace tern::adacomp
