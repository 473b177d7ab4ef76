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

INSTANTIATE_TEST_SUITE_P(Isas, RowsTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

}  // namespace
}  // namespace tern::kernels
