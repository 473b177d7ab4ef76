// The AdaComp codec: selection rule, scale, residual update, wire format, hostile messages.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "tern/adacomp.h"
#include "tern/error.h"

namespace ac = tern::adacomp;

namespace {

std::vector<float> decode(const std::vector<std::uint8_t>& message, std::size_t elements) {
  std::vector<float> sum(elements, 0.0f);
  ac::decode_add(message, sum);
  return sum;
}

std::uint32_t u32_at(const std::vector<std::uint8_t>& bytes, std::size_t offset) {
  return std::uint32_t{bytes[offset]} | std::uint32_t{bytes[offset + 1]} << 8 |
         std::uint32_t{bytes[offset + 2]} << 16 | std::uint32_t{bytes[offset + 3]} << 24;
}

void set_u32(std::vector<std::uint8_t>& bytes, std::size_t offset, std::uint32_t value) {
  for (int i = 0; i < 4; ++i) bytes[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
}

ac::EncodeOptions options(std::size_t bin, float threshold_scale = 1.0f, bool exact = false) {
  ac::EncodeOptions o;
  o.bin = bin;
  o.threshold_scale = threshold_scale;
  o.exact_values = exact;
  return o;
}

}  // namespace

// Two bins of 4 from a zero residual: R = g, H = 2g; bin maxima 3 and 4, scale 3.5.
TEST(adacomp, HandComputedFirstStep) {
  std::vector<float> residual(8, 0.0f);
  const std::vector<float> gradient = {1, -3, 2, 0.5f, 0, 0, 4, -1};
  const std::vector<std::uint8_t> message = ac::encode(residual, gradient, options(4));

  // Selected: |H| >= bin max -> index 1 (|-6| >= 3), 2 (|4| >= 3), 6 (|8| >= 4). Packed, least
  // significant bit first: bin 0 count 2 (1 1 0), position 1 (1 0) negative (1), position 2 (0 1)
  // positive (0); bin 1 count 1 (1 0), position 2 (0 1) positive (0): 14 bits, 0xAB 0x12.
  const std::vector<std::uint8_t> expected = {
      0xAC, 2, 0, 0,           // magic, version, mode sign_scale, reserved
      8,    0, 0, 0,           // elements
      3,    0, 0, 0,           // selected
      0x00, 0x00, 0x60, 0x40,  // scale 3.5f
      4,    0, 0, 0,           // bin
      2,    0, 0, 0,           // packed bytes
      0xAB, 0x12,
  };
  EXPECT_EQ(message, expected);
  EXPECT_EQ(residual, (std::vector<float>{1, 0.5f, -1.5f, 0.5f, 0, 0, 0.5f, -1}));
  EXPECT_EQ(decode(message, 8), (std::vector<float>{0, -3.5f, 3.5f, 0, 0, 0, 3.5f, 0}));

  const ac::MessageInfo info = ac::read_header(message);
  EXPECT_EQ(info.elements, 8u);
  EXPECT_EQ(info.selected, 3u);
  EXPECT_EQ(info.mode, ac::ValueMode::sign_scale);
  EXPECT_EQ(info.scale, 3.5f);
}

// The residual from the first step takes part: R = [1.5, .5, -1.5, .5 | 0, 0, .5, -1], H = R + g.
TEST(adacomp, HandComputedSecondStepUsesResidual) {
  std::vector<float> residual = {1, 0.5f, -1.5f, 0.5f, 0, 0, 0.5f, -1};
  const std::vector<float> gradient = {0.5f, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<std::uint8_t> message = ac::encode(residual, gradient, options(4));
  // Bin maxima 1.5 and 1, scale 1.25; selected 0 (|2| >= 1.5), 2 (|-1.5| >= 1.5), 7 (|-1| >= 1).
  EXPECT_EQ(ac::read_header(message).scale, 1.25f);
  EXPECT_EQ(decode(message, 8), (std::vector<float>{1.25f, 0, -1.25f, 0, 0, 0, 0, -1.25f}));
  EXPECT_EQ(residual, (std::vector<float>{0.25f, 0.5f, -0.25f, 0.5f, 0, 0, 0.5f, 0.25f}));
}

// The last bin holds the remainder and counts as a bin in the mean of the maxima.
TEST(adacomp, PartialLastBinAndScale) {
  std::vector<float> residual(5, 0.0f);
  const std::vector<float> gradient = {1, 2, -4, 0, 3};  // bins {1,2} {-4,0} {3}: maxima 2, 4, 3
  const std::vector<std::uint8_t> message = ac::encode(residual, gradient, options(2));
  EXPECT_EQ(ac::read_header(message).scale, 3.0f);
  // H = 2g: selected 0 (|2| >= 2), 1 (4 >= 2), 2 (8 >= 4), 4 (6 >= 3); 3 is zero.
  EXPECT_EQ(decode(message, 5), (std::vector<float>{3, 3, -3, 0, 3}));
  EXPECT_EQ(residual, (std::vector<float>{-2, -1, -1, 0, 0}));
}

TEST(adacomp, ThresholdScaleControlsSelection) {
  const std::vector<float> gradient = {1, -2, 0, 4, 0.25f, -0.5f};
  {
    std::vector<float> residual(6, 0.0f);
    const auto message = ac::encode(residual, gradient, options(3, 0.0f));
    EXPECT_EQ(ac::read_header(message).selected, 5u);  // every non-zero element
  }
  {
    std::vector<float> residual(6, 0.0f);
    const auto message = ac::encode(residual, gradient, options(3, 2.5f));  // |2g| >= 2.5 max: none
    EXPECT_EQ(ac::read_header(message).selected, 0u);
    EXPECT_EQ(residual, gradient);
    EXPECT_EQ(message.size(), ac::kHeaderBytes + 1);  // two empty bins: two zero bits
    EXPECT_EQ(message.size(), ac::message_bytes(6, 3, 0, ac::ValueMode::sign_scale));
  }
}

// Bin 1, threshold 0, exact values: the message carries the gradient bit for bit.
TEST(adacomp, ExactModeIsLossless) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> gradient(1000);
  for (float& g : gradient) g = normal(rng) * 1e-3f;
  gradient[17] = 0.0f;
  std::vector<float> residual(gradient.size(), 0.0f);
  const auto message = ac::encode(residual, gradient, options(1, 0.0f, true));
  const ac::MessageInfo info = ac::read_header(message);
  EXPECT_EQ(info.mode, ac::ValueMode::exact);
  EXPECT_EQ(info.selected, 999u);  // the zero is not sent
  EXPECT_EQ(message.size(), ac::message_bytes(1000, 1, 999, ac::ValueMode::exact));
  const std::vector<float> decoded = decode(message, gradient.size());
  EXPECT_EQ(std::memcmp(decoded.data(), gradient.data(), gradient.size() * sizeof(float)), 0);
  for (float r : residual) EXPECT_EQ(r, 0.0f);
}

// Nothing is lost: after k steps, everything sent plus the residual is the sum of the gradients.
TEST(adacomp, ResidualCarriesWhatWasNotSent) {
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const std::size_t n = 2000;
  for (std::size_t bin : {1u, 7u, 50u, 500u}) {
    std::vector<float> residual(n, 0.0f);
    std::vector<double> gradient_sum(n, 0.0), sent_sum(n, 0.0);
    for (int step = 0; step < 12; ++step) {
      std::vector<float> gradient(n);
      for (std::size_t i = 0; i < n; ++i) {
        gradient[i] = normal(rng);
        gradient_sum[i] += gradient[i];
      }
      const auto message = ac::encode(residual, gradient, options(bin));
      const std::vector<float> sent = decode(message, n);
      for (std::size_t i = 0; i < n; ++i) sent_sum[i] += sent[i];
    }
    for (std::size_t i = 0; i < n; ++i) {
      ASSERT_NEAR(sent_sum[i] + residual[i], gradient_sum[i], 1e-4) << "bin " << bin << " element " << i;
    }
  }
}

TEST(adacomp, MessageSizeAccounting) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> gradient(64 * 64 * 9), residual(64 * 64 * 9, 0.0f);
  for (float& g : gradient) g = normal(rng);
  const auto message = ac::encode(residual, gradient, options(50));
  const ac::MessageInfo info = ac::read_header(message);
  // 738 bins of 50 (the last of 36): one bit each plus 6 + 2 bits per entry.
  EXPECT_EQ(message.size(), 24u + (738u + 8u * info.selected + 7u) / 8u);
  EXPECT_EQ(message.size(), ac::message_bytes(gradient.size(), 50, info.selected, ac::ValueMode::sign_scale));
  EXPECT_GT(info.selected, 0u);
  EXPECT_LT(info.selected, gradient.size());
  // Every selected element changed its residual by exactly the scale.
  std::size_t changed = 0;
  for (std::size_t i = 0; i < gradient.size(); ++i) changed += residual[i] != gradient[i];
  EXPECT_EQ(changed, info.selected);
}

TEST(adacomp, EmptyTensor) {
  std::vector<float> residual, gradient;
  const auto message = ac::encode(residual, gradient, options(50));
  EXPECT_EQ(message.size(), ac::kHeaderBytes);
  std::vector<float> sum;
  ac::decode_add(message, sum);
}

TEST(adacomp, EncodeRejectsBadArguments) {
  std::vector<float> residual(4, 0.0f), gradient(5, 1.0f), ok(4, 1.0f);
  EXPECT_THROW(ac::encode(residual, gradient, options(2)), tern::Error);
  EXPECT_THROW(ac::encode(residual, ok, options(0)), tern::Error);
  EXPECT_THROW(ac::encode(residual, ok, options(2, -1.0f)), tern::Error);
  EXPECT_THROW(ac::encode(residual, ok, options(2, NAN)), tern::Error);
}

// A message packed by hand from the format's description: per bin a unary count, then each
// entry's position (position_bits(bin) bits) and sign; `selected` and the packed length as the
// entries imply unless overridden.
std::vector<std::uint8_t> pack(std::uint32_t elements, std::uint32_t bin,
                               const std::vector<std::vector<std::pair<std::uint32_t, bool>>>& bins,
                               std::int64_t selected = -1) {
  std::vector<bool> bits;
  std::uint32_t count = 0;
  for (const auto& entries : bins) {
    for (std::size_t k = 0; k < entries.size(); ++k) bits.push_back(true);
    bits.push_back(false);
    for (const auto& [position, negative] : entries) {
      for (int b = 0; b < ac::position_bits(bin); ++b) bits.push_back((position >> b) & 1u);
      bits.push_back(negative);
      ++count;
    }
  }
  std::vector<std::uint8_t> m(24 + (bits.size() + 7) / 8, 0);
  m[0] = 0xAC;
  m[1] = 2;
  set_u32(m, 4, elements);
  set_u32(m, 8, selected >= 0 ? static_cast<std::uint32_t>(selected) : count);
  set_u32(m, 12, 0x3F800000u);  // scale 1
  set_u32(m, 16, bin);
  set_u32(m, 20, static_cast<std::uint32_t>((bits.size() + 7) / 8));
  for (std::size_t i = 0; i < bits.size(); ++i)
    if (bits[i]) m[24 + i / 8] |= static_cast<std::uint8_t>(1u << (i % 8));
  return m;
}

// Every malformed message is an Error, and a rejected message leaves the sum unchanged.
TEST(adacomp, RejectsCorruptMessages) {
  std::vector<float> residual(10, 0.0f);
  const std::vector<float> gradient = {5, -1, 0, 2, 0, -6, 1, 0, 3, 0};
  const std::vector<std::uint8_t> good = ac::encode(residual, gradient, options(2, 0.0f));
  ASSERT_EQ(ac::read_header(good).selected, 6u);

  auto rejected = [&](std::vector<std::uint8_t> message, std::size_t elements = 10) {
    std::vector<float> sum(elements, 1.0f);
    try {
      ac::decode_add(message, sum);
    } catch (const tern::Error& error) {
      EXPECT_EQ(std::string(error.what()).find('\n'), std::string::npos);
      for (float s : sum) EXPECT_EQ(s, 1.0f);
      return true;
    }
    return false;
  };

  EXPECT_FALSE(rejected(good));
  EXPECT_TRUE(rejected(good, 9));  // element count differs from the tensor
  EXPECT_TRUE(rejected({}));
  EXPECT_TRUE(rejected(std::vector<std::uint8_t>(good.begin(), good.begin() + 23)));  // truncated header
  EXPECT_TRUE(rejected(std::vector<std::uint8_t>(good.begin(), good.end() - 1)));     // truncated entries
  {
    auto longer = good;
    longer.push_back(0);
    EXPECT_TRUE(rejected(longer));
  }
  for (std::size_t byte : {0u, 1u, 2u, 3u}) {
    auto bad = good;
    bad[byte] ^= 0x40;
    EXPECT_TRUE(rejected(bad)) << "header byte " << byte;
  }
  {
    auto bad = good;  // more selected than elements
    set_u32(bad, 8, 11);
    EXPECT_TRUE(rejected(bad));
  }
  {
    auto bad = good;  // negative scale
    bad[15] |= 0x80;
    EXPECT_TRUE(rejected(bad));
  }
  for (std::uint32_t bin : {0u, 3u, 70000u}) {  // bin size 0, another size, over the limit
    auto bad = good;
    set_u32(bad, 16, bin);
    EXPECT_TRUE(rejected(bad)) << "bin " << bin;
  }
  {
    auto bad = good;  // packed length disagrees with the header
    set_u32(bad, 20, u32_at(bad, 20) + 1);
    bad.push_back(0);
    EXPECT_TRUE(rejected(bad));
  }
  // Hand-packed: the well-formed one decodes; each fault is an Error.
  const std::vector<std::vector<std::pair<std::uint32_t, bool>>> ok = {{{0, false}, {2, true}}, {}, {{1, false}}, {}};
  EXPECT_FALSE(rejected(pack(10, 3, ok)));  // bins of 3, 3, 3, 1
  {
    std::vector<float> sum(10, 0.0f);
    ac::decode_add(pack(10, 3, ok), sum);
    EXPECT_EQ(sum, (std::vector<float>{1, 0, -1, 0, 0, 0, 0, 1, 0, 0}));
  }
  EXPECT_TRUE(rejected(pack(10, 3, {{{3, false}}, {}, {}, {}})));               // position 3 in a bin of 3
  EXPECT_TRUE(rejected(pack(10, 3, {{}, {}, {}, {{1, false}}})));                // position 1 in the last bin of 1
  EXPECT_TRUE(rejected(pack(10, 3, {{{2, false}, {1, false}}, {}, {}, {}})));   // not increasing
  EXPECT_TRUE(rejected(pack(10, 3, {{{1, false}, {1, true}}, {}, {}, {}})));    // repeated
  EXPECT_TRUE(rejected(pack(10, 3, {{{0, false}, {1, false}, {2, false}, {2, false}}, {}, {}, {}})));  // 4 in a bin of 3
  EXPECT_TRUE(rejected(pack(10, 3, ok, 2)));  // 3 entries, 2 announced (the same packed length)
  EXPECT_TRUE(rejected(pack(10, 3, {{{0, false}}, {{0, false}}, {}, {}}, 3)));  // 2 entries, 3 announced
  {
    auto bad = pack(10, 3, ok);  // non-zero padding
    bad.back() |= 0x80;
    EXPECT_TRUE(rejected(bad));
  }
}

// Random corruption never crashes: each mutant decodes (valid by chance) or throws Error.
TEST(adacomp, RandomCorruptionNeverCrashes) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> gradient(300), residual(300, 0.0f);
  for (float& g : gradient) g = normal(rng);
  for (bool exact : {false, true}) {
    const auto good = ac::encode(residual, gradient, options(10, 1.0f, exact));
    for (int trial = 0; trial < 3000; ++trial) {
      auto mutant = good;
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) mutant[rng() % mutant.size()] = static_cast<std::uint8_t>(rng());
      if (rng() % 4 == 0) mutant.resize(rng() % (mutant.size() + 8));
      std::vector<float> sum(300, 0.0f);
      try {
        ac::decode_add(mutant, sum);
      } catch (const tern::Error&) {
      }
    }
  }
}
