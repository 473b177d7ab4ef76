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

  // Selected: |H| >= bin max -> index 1 (|-6| >= 3), 2 (|4| >= 3), 6 (|8| >= 4).
  const std::vector<std::uint8_t> expected = {
      0xAC, 1, 0, 0,           // magic, version, mode sign_scale, reserved
      8,    0, 0, 0,           // elements
      3,    0, 0, 0,           // selected
      0x00, 0x00, 0x60, 0x40,  // scale 3.5f
      3,    0, 0, 0,           // (1 << 1) | negative
      4,    0, 0, 0,           // (2 << 1)
      12,   0, 0, 0,           // (6 << 1)
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
    EXPECT_EQ(message.size(), ac::kHeaderBytes);
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
  EXPECT_EQ(message.size(), ac::message_bytes(999, ac::ValueMode::exact));
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
  EXPECT_EQ(message.size(), 16u + 4u * info.selected);
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

// Every malformed message is an Error, and a rejected message leaves the sum unchanged.
TEST(adacomp, RejectsCorruptMessages) {
  std::vector<float> residual(10, 0.0f);
  const std::vector<float> gradient = {5, -1, 0, 2, 0, -6, 1, 0, 3, 0};
  const std::vector<std::uint8_t> good = ac::encode(residual, gradient, options(2, 0.0f));
  ASSERT_GE(ac::read_header(good).selected, 3u);

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
  EXPECT_TRUE(rejected(std::vector<std::uint8_t>(good.begin(), good.begin() + 15)));  // truncated header
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
    auto bad = good;  // index == element count, last entry
    const std::size_t last = bad.size() - 4;
    set_u32(bad, last, (10u << 1) | (u32_at(bad, last) & 1u));
    EXPECT_TRUE(rejected(bad));
  }
  {
    auto bad = good;  // a huge index
    set_u32(bad, 16, 0xFFFFFFFEu);
    EXPECT_TRUE(rejected(bad));
  }
  {
    auto bad = good;  // duplicate index
    set_u32(bad, 20, u32_at(bad, 16));
    EXPECT_TRUE(rejected(bad));
  }
  {
    auto bad = good;  // negative scale
    bad[15] |= 0x80;
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
