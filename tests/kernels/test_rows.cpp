// FP32 row kernels (kernels/fp32/rows.h) on every ISA: the same bits as the reference build, and
// the function they compute.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/fp32/rows.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;

class RowsTest : public IsaTest {};

TEST_P(RowsTest, SoftmaxMatchesTheReferenceAndTheFunction) {
  std::mt19937 gen(11);
  std::normal_distribution<float> d(0.0f, 4.0f);
  for (int64_t n : {1, 5, 8, 13, 16, 65, 197, 1000}) {
    const int64_t rows = 7;
    std::vector<float> x(static_cast<size_t>(rows * n));
    for (float& v : x) v = d(gen);
    x[0] = 80.0f;  // e^(x - max) of the other values underflows toward 0
    std::vector<float> y(x.size()), ref(x.size());
    softmax_rows_reference(x.data(), ref.data(), rows, n);
    softmax_rows(x.data(), y.data(), rows, n);
    ASSERT_EQ(std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)), 0) << "n=" << n;
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x.data() + r * n;
      double m = xr[0], sum = 0;
      for (int64_t j = 0; j < n; ++j) m = std::max(m, double(xr[j]));
      for (int64_t j = 0; j < n; ++j) sum += std::exp(double(xr[j]) - m);
      for (int64_t j = 0; j < n; ++j)
        ASSERT_NEAR(y[static_cast<size_t>(r * n + j)], std::exp(double(xr[j]) - m) / sum, 1e-6) << "n=" << n << " row " << r;
    }
    std::vector<float> in_place = x;  // y may alias x
    softmax_rows(in_place.data(), in_place.data(), rows, n);
    ASSERT_EQ(in_place, y) << "n=" << n;
  }
}

// LayerNorm as the exporters' nodes compute it: the same bits on every ISA, those of the node chain
// computed one node at a time (ReduceMean's double sum in four parts), and the function itself.
TEST_P(RowsTest, LayerNormIsTheNodeChainOnEveryIsa) {
  std::mt19937 gen(12);
  std::normal_distribution<float> d(0.5f, 3.0f);
  for (int64_t n : {1, 3, 4, 7, 16, 65, 192, 768}) {
    const int64_t rows = 7;  // a block of four, a pair, a last row alone
    std::vector<float> x(static_cast<size_t>(rows * n)), gamma(static_cast<size_t>(n)), beta(static_cast<size_t>(n));
    for (float& v : x) v = d(gen);
    for (float& v : gamma) v = d(gen);
    for (float& v : beta) v = d(gen);
    for (int variant = 0; variant < 3; ++variant) {  // gamma and beta, gamma alone, neither
      const float* g = variant < 2 ? gamma.data() : nullptr;
      const float* b = variant < 1 ? beta.data() : nullptr;
      std::vector<float> y(x.size()), ref(x.size());
      layer_norm_rows_reference(x.data(), n, ref.data(), n, rows, n, 1e-5f, g, b);
      layer_norm_rows(x.data(), n, y.data(), n, rows, n, 1e-5f, g, b);
      ASSERT_EQ(std::memcmp(y.data(), ref.data(), y.size() * sizeof(float)), 0) << "n=" << n << " variant " << variant;
      // Rows apart in the output (a buffer's padded pixels): the same values, the gaps untouched.
      std::vector<float> wide(static_cast<size_t>(rows * (n + 3)), -7.0f);
      layer_norm_rows(x.data(), n, wide.data(), n + 3, rows, n, 1e-5f, g, b);
      for (int64_t r = 0; r < rows; ++r) {
        ASSERT_EQ(std::memcmp(wide.data() + r * (n + 3), y.data() + r * n, static_cast<size_t>(n) * sizeof(float)), 0) << "n=" << n;
        for (int64_t j = n; j < n + 3; ++j) ASSERT_EQ(wide[static_cast<size_t>(r * (n + 3) + j)], -7.0f);
      }
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x.data() + r * n;
        auto mean = [n](const std::vector<float>& v) {
          double s[4] = {0, 0, 0, 0};
          for (int64_t j = 0; j < n; ++j) s[j < n / 4 * 4 ? j % 4 : 0] += double(v[static_cast<size_t>(j)]);
          return static_cast<float>(((s[0] + s[1]) + (s[2] + s[3])) / double(n));
        };
        std::vector<float> row(xr, xr + n), dev(row), sq(row);
        const float m = mean(row);
        for (int64_t j = 0; j < n; ++j) dev[static_cast<size_t>(j)] = row[static_cast<size_t>(j)] - m;
        for (int64_t j = 0; j < n; ++j) sq[static_cast<size_t>(j)] = dev[static_cast<size_t>(j)] * dev[static_cast<size_t>(j)];
        const float var = mean(sq);
        double exact_mean = 0, exact_var = 0;
        for (int64_t j = 0; j < n; ++j) exact_mean += double(xr[j]) / double(n);
        for (int64_t j = 0; j < n; ++j) exact_var += (double(xr[j]) - exact_mean) * (double(xr[j]) - exact_mean) / double(n);
        for (int64_t j = 0; j < n; ++j) {
          const size_t k = static_cast<size_t>(j);
          volatile float root = std::sqrt(var + 1e-5f);
          volatile float v = dev[k] / root;
          if (g) v = v * g[k];
          if (b) v = v + b[k];
          ASSERT_EQ(y[static_cast<size_t>(r * n + j)], v) << "n=" << n << " row " << r << " j " << j;
          double want = (double(xr[j]) - exact_mean) / std::sqrt(exact_var + 1e-5);
          if (g) want *= g[k];
          if (b) want += b[k];
          ASSERT_NEAR(y[static_cast<size_t>(r * n + j)], want, 1e-4 * (1.0 + std::fabs(want))) << "n=" << n;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, RowsTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

}  // namespace
}  // namespace tern::kernels
