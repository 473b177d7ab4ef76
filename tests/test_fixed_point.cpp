// Fixed-point rounding (tern::numerics, the reference the training code is tested against):
// formats parse and reject, round-to-nearest ties to even and saturates, stochastic rounding is
// unbiased, never leaves the two neighbours and saturates.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "tern/error.h"
#include "tern/fixed_point.h"

using namespace tern;
using namespace tern::numerics;

TEST(FixedFormat, ParsesAndDescribes) {
  FixedFormat f = parse_fixed_format("fixed:4.12");
  EXPECT_EQ(f.integer_bits, 4);
  EXPECT_EQ(f.fraction_bits, 12);
  EXPECT_EQ(f.word_bits(), 16);
  EXPECT_EQ(f.step(), 1.0 / 4096);
  EXPECT_EQ(f.lowest(), -8.0);
  EXPECT_EQ(f.highest(), 8.0 - 1.0 / 4096);
  EXPECT_EQ(f.name(), "fixed:4.12");
  EXPECT_EQ(parse_fixed_format("2.14").fraction_bits, 14);
  EXPECT_EQ(parse_fixed_format("fixed:32.0").word_bits(), 32);
}

TEST(FixedFormat, RejectsBadFormatsNamingThem) {
  for (const char* bad : {"fixed:20.13", "fixed:4.-1", "fixed:0.8", "fixed:a.b", "fixed:4", "fixed:.4", "fixed:4.",
                          "fixed:4.12x", "fixed:-3.8"}) {
    try {
      parse_fixed_format(bad);
      FAIL() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(parse_rounding("up"), Error);
  EXPECT_EQ(parse_rounding("stochastic"), Rounding::kStochastic);
}

TEST(RoundNearest, TiesToEvenAndSaturates) {
  const FixedFormat f{4, 2};  // eps 0.25, range [-8, 7.75]
  EXPECT_EQ(round_nearest(0.125, f), 0.0);    // 0.5 steps -> 0 (even)
  EXPECT_EQ(round_nearest(0.375, f), 0.5);    // 1.5 steps -> 2 (even)
  EXPECT_EQ(round_nearest(0.625, f), 0.5);    // 2.5 steps -> 2
  EXPECT_EQ(round_nearest(-0.375, f), -0.5);
  EXPECT_EQ(round_nearest(0.3, f), 0.25);
  EXPECT_EQ(round_nearest(0.13, f), 0.25);
  EXPECT_EQ(round_nearest(7.9, f), 7.75);     // saturates at the top
  EXPECT_EQ(round_nearest(100.0, f), 7.75);
  EXPECT_EQ(round_nearest(-8.1, f), -8.0);
  EXPECT_EQ(round_nearest(-1e30, f), -8.0);
  EXPECT_TRUE(std::isnan(round_nearest(NAN, f)));
  const FixedFormat wide{1, 31};  // a 32-bit word: still exact in double
  EXPECT_EQ(round_nearest(0.1, wide), std::nearbyint(0.1 * 2147483648.0) / 2147483648.0);
  EXPECT_EQ(round_nearest(1.0, wide), 1.0 - 1.0 / 2147483648.0);
}

TEST(RoundStochastic, PicksOneOfTheTwoNeighboursByTheDraw) {
  const FixedFormat f{4, 2};
  // 0.3 = 1.2 steps: up to 0.5 when uniform < 0.2, else down to 0.25.
  EXPECT_EQ(round_stochastic(0.3, f, 0.0), 0.5);
  EXPECT_EQ(round_stochastic(0.3, f, 0.19), 0.5);
  EXPECT_EQ(round_stochastic(0.3, f, 0.21), 0.25);
  EXPECT_EQ(round_stochastic(0.3, f, 0.999), 0.25);
  EXPECT_EQ(round_stochastic(-0.3, f, 0.79), -0.25);  // -1.2 steps: floor -2, fraction 0.8
  EXPECT_EQ(round_stochastic(-0.3, f, 0.81), -0.5);
  for (double u : {0.0, 0.5, 0.999999}) {
    EXPECT_EQ(round_stochastic(1.25, f, u), 1.25);  // representable values never move
    EXPECT_EQ(round_stochastic(7.8, f, u), 7.75);   // saturation, whatever the draw
    EXPECT_EQ(round_stochastic(50.0, f, u), 7.75);
    EXPECT_EQ(round_stochastic(-9.0, f, u), -8.0);
  }
}

TEST(RoundStochastic, IsUnbiased) {
  const FixedFormat f{4, 12};
  const double eps = f.step();
  for (double x : {0.3, -1.23456, 3.0 * eps + eps / 7, 1e-5}) {
    const int n = 200000;
    double sum = 0;
    std::vector<double> values(n, x);
    round_fixed(values, f, Rounding::kStochastic, 42);
    std::set<double> seen(values.begin(), values.end());
    for (double v : values) sum += v;
    const double mean = sum / n;
    const double down = std::floor(x / eps) * eps, p = (x - down) / eps;
    const double sigma = eps * std::sqrt(p * (1 - p) / n);
    EXPECT_NEAR(mean, x, 5 * sigma + 1e-15) << x;
    EXPECT_LE(seen.size(), 2u) << x;  // only the two neighbours
    for (double v : seen) EXPECT_TRUE(v == down || v == down + eps) << x << " -> " << v;
  }
  // Round-to-nearest is biased for the same value: it always returns one neighbour.
  EXPECT_EQ(round_nearest(1e-5, f), 0.0);
}

TEST(RoundFixed, SpanVersionEqualsScalarReference) {
  const FixedFormat f{3, 5};
  std::vector<double> x;
  for (int i = -300; i <= 300; ++i) x.push_back(i * 0.0137);
  std::vector<double> nearest = x, stochastic = x;
  round_fixed(nearest, f, Rounding::kNearest, 7);
  round_fixed(stochastic, f, Rounding::kStochastic, 7);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(nearest[i], round_nearest(x[i], f));
    EXPECT_EQ(stochastic[i], round_stochastic(x[i], f, counter_uniform(7, i)));
  }
  double u = counter_uniform(1, 0);
  EXPECT_GE(u, 0.0);
  EXPECT_LT(u, 1.0);
  EXPECT_NE(counter_uniform(1, 0), counter_uniform(1, 1));
  EXPECT_NE(counter_uniform(1, 0), counter_uniform(2, 0));
}
