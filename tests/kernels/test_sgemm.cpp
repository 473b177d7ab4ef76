// sgemm fast paths vs sgemm_reference on every ISA the CPU has: size sweeps that hit every
// row/column/K-block tail, strided operands, epilogues, pre-packed A, and a real thread pool.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/cpu_features.h"
#include "kernels/fp32/sgemm.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;
using testing::random_floats;

struct GemmCase {
  int64_t M, N, K;
  bool trans_a = false, trans_b = false;
  int64_t pad_a = 0, pad_b = 0, pad_c = 0;  // extra leading-dimension slack
  bool accumulate = false;
  BiasKind bias_kind = BiasKind::kNone;
  bool clamp = false;
};

std::string describe(const GemmCase& c) {
  return "M=" + std::to_string(c.M) + " N=" + std::to_string(c.N) + " K=" + std::to_string(c.K) +
         (c.trans_a ? " A^T" : "") + (c.trans_b ? " B^T" : "") + " ldc+" + std::to_string(c.pad_c) +
         (c.accumulate ? " acc" : "") + (c.bias_kind == BiasKind::kPerRow      ? " row-bias"
                                          : c.bias_kind == BiasKind::kPerColumn ? " col-bias"
                                                                                : "") +
         (c.clamp ? " clamp" : "");
}

// Operands for one case; A and B in either orientation, with leading-dimension slack.
struct GemmData {
  GemmCase c;
  std::vector<float> a, b, bias, c_init;
  MatrixView av, bv;
  int64_t ldc;
  GemmEpilogue ep;

  GemmData(const GemmCase& gc, uint32_t seed) : c(gc) {
    const int64_t lda = (c.trans_a ? c.M : c.K) + c.pad_a, ldb = (c.trans_b ? c.K : c.N) + c.pad_b;
    a = random_floats((c.trans_a ? c.K : c.M) * lda + 1, seed);
    b = random_floats((c.trans_b ? c.N : c.K) * ldb + 1, seed + 1);
    av = c.trans_a ? MatrixView{a.data(), 1, lda} : MatrixView{a.data(), lda, 1};
    bv = c.trans_b ? MatrixView{b.data(), 1, ldb} : MatrixView{b.data(), ldb, 1};
    ldc = c.N + c.pad_c;
    c_init = random_floats(c.M * ldc + 1, seed + 2);
    bias = random_floats(std::max(c.M, c.N) + 1, seed + 3);
    ep.accumulate = c.accumulate;
    ep.bias_kind = c.bias_kind;
    ep.bias = c.bias_kind == BiasKind::kNone ? nullptr : bias.data();
    if (c.clamp) {
      ep.clamp_lo = -0.25f;
      ep.clamp_hi = 0.5f;
    }
  }

  float A(int64_t i, int64_t k) const { return av.data[i * av.row_stride + k * av.col_stride]; }
  float B(int64_t k, int64_t j) const { return bv.data[k * bv.row_stride + j * bv.col_stride]; }

  std::vector<float> reference() const {
    std::vector<float> out = c_init;
    sgemm_reference(c.M, c.N, c.K, av, bv, out.data(), ldc, ep);
    return out;
  }

  // Checks every element against the reference within the reordering bound, and that the ldc
  // slack was left alone.
  void expect_close(const std::vector<float>& got, const std::vector<float>& want) const {
    int64_t bad = 0;
    std::string first;
    for (int64_t i = 0; i < c.M; ++i) {
      for (int64_t j = 0; j < ldc; ++j) {
        const int64_t at = i * ldc + j;
        if (j >= c.N) {
          if (got[at] != c_init[at] && bad++ == 0) first = "wrote past N in row " + std::to_string(i);
          continue;
        }
        double mag = 0;
        for (int64_t k = 0; k < c.K; ++k) mag += std::fabs(double(A(i, k)) * B(k, j));
        if (c.accumulate) mag += std::fabs(c_init[at]);
        if (c.bias_kind == BiasKind::kPerRow) mag += std::fabs(bias[i]);
        if (c.bias_kind == BiasKind::kPerColumn) mag += std::fabs(bias[j]);
        const double tol = 1e-5 * mag + 1e-6;
        if (!(std::fabs(double(got[at]) - want[at]) <= tol) && bad++ == 0) {
          first = "(" + std::to_string(i) + "," + std::to_string(j) + "): got " + std::to_string(got[at]) + " want " +
                  std::to_string(want[at]);
        }
      }
    }
    EXPECT_EQ(bad, 0) << describe(c) << " ISA " << to_string(active_isa()) << ": first mismatch " << first;
  }
};

std::vector<float> run_fast(const GemmData& d, ThreadPool* pool) {
  std::vector<float> out = d.c_init;
  sgemm(d.c.M, d.c.N, d.c.K, d.av, d.bv, out.data(), d.ldc, d.ep, pool);
  return out;
}

void check_case(const GemmCase& c, ThreadPool* pool = nullptr, uint32_t seed = 1) {
  GemmData d(c, seed);
  d.expect_close(run_fast(d, pool), d.reference());
}

const std::vector<int64_t> kSizes = {1, 2, 3, 5, 7, 9, 15, 16, 17, 31, 33, 64, 100, 257, 300};

class SgemmTest : public IsaTest {};

TEST_P(SgemmTest, SweepM) {
  for (int64_t m : kSizes) check_case({m, 37, 19});
}

TEST_P(SgemmTest, SweepN) {
  for (int64_t n : kSizes) check_case({13, n, 23});
}

TEST_P(SgemmTest, SweepKAcrossBlocks) {
  for (int64_t k : kSizes) check_case({11, 29, k});
  for (int64_t k : {255, 256, 511, 512, 513, 600, 1000}) check_case({9, 33, k});
}

TEST_P(SgemmTest, RowAndColumnTails) {
  for (int64_t m : {1, 5, 6, 7, 8, 9, 12, 17}) {
    for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 65}) {
      check_case({m, n, 3});
      check_case({m, n, 257});
    }
  }
}

TEST_P(SgemmTest, OneRowOneColumn) {
  check_case({1, 300, 100});
  check_case({300, 1, 100});
  check_case({1, 1, 300});
  check_case({10, 1, 64});
}

TEST_P(SgemmTest, TransposedOperands) {
  for (auto [ta, tb] : {std::pair{true, false}, {false, true}, {true, true}}) {
    for (auto [m, n, k] : {std::tuple{17, 33, 31}, {64, 100, 257}, {1, 9, 5}, {9, 1, 300}}) {
      GemmCase c{m, n, k, ta, tb};
      check_case(c);
      c.pad_a = 3;
      c.pad_b = 5;
      check_case(c);
    }
  }
}

TEST_P(SgemmTest, LdcLargerThanN) {
  for (auto [m, n, k] : {std::tuple{7, 17, 9}, {33, 31, 64}, {16, 1, 3}}) {
    GemmCase c{m, n, k};
    c.pad_c = 7;
    check_case(c);
  }
}

TEST_P(SgemmTest, Epilogues) {
  for (auto [m, n, k] : {std::tuple{17, 33, 31}, {9, 47, 600}, {64, 100, 257}, {1, 1, 1}}) {
    for (BiasKind bias : {BiasKind::kNone, BiasKind::kPerRow, BiasKind::kPerColumn}) {
      for (bool acc : {false, true}) {
        for (bool clamp : {false, true}) {
          GemmCase c{m, n, k};
          c.bias_kind = bias;
          c.accumulate = acc;
          c.clamp = clamp;
          c.pad_c = 2;
          check_case(c);
        }
      }
    }
  }
}

TEST_P(SgemmTest, EmptyK) {
  GemmCase c{5, 19, 0};
  c.accumulate = true;
  c.bias_kind = BiasKind::kPerColumn;
  c.clamp = true;
  check_case(c);
  std::vector<float> out(1, 42.0f);
  sgemm(0, 0, 5, {}, {}, out.data(), 0, {}, nullptr);  // nothing to do, touches nothing
  EXPECT_EQ(out[0], 42.0f);
}

TEST_P(SgemmTest, PackedEqualsUnpacked) {
  for (auto [m, n, k] : {std::tuple{17, 33, 31}, {64, 784, 576}, {10, 1, 64}, {3, 300, 257}}) {
    GemmCase c{m, n, k};
    c.bias_kind = BiasKind::kPerRow;
    c.clamp = true;
    GemmData d(c, 7);
    PackedMatrixA packed(m, k, d.av);
    EXPECT_EQ(packed.rows(), m);
    EXPECT_EQ(packed.depth(), k);
    std::vector<float> out = d.c_init;
    sgemm_packed(packed, n, d.bv, out.data(), d.ldc, d.ep, nullptr);
    EXPECT_EQ(out, run_fast(d, nullptr)) << describe(c);
    d.expect_close(out, d.reference());
  }
}

TEST_P(SgemmTest, TwoThreadsMatchOne) {
  ThreadPool pool(2);
  // All above the split threshold: N-split, M-split (narrow N), both tails, packed and in-place B.
  for (auto [m, n, k] : {std::tuple{64, 784, 576}, {16, 784, 144}, {64, 49, 576}, {256, 16, 512}, {7, 1000, 300},
                         {300, 3, 2570}, {1, 20000, 100}}) {
    GemmCase c{m, n, k};
    c.bias_kind = BiasKind::kPerColumn;
    c.accumulate = true;
    GemmData d(c, 11);
    std::vector<float> threaded = run_fast(d, &pool);
    EXPECT_EQ(threaded, run_fast(d, nullptr)) << describe(c);
    d.expect_close(threaded, d.reference());
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, SgemmTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

TEST(Sgemm, PackedMatrixKeepsItsIsa) {
  // Weights packed under one ISA stay usable after the active ISA changes.
  GemmData d(GemmCase{19, 45, 70}, 3);
  set_isa_override(Isa::kScalar);
  PackedMatrixA packed(19, 70, d.av);
  set_isa_override(detected_isa());
  std::vector<float> out = d.c_init;
  sgemm_packed(packed, 45, d.bv, out.data(), d.ldc, d.ep, nullptr);
  set_isa_override(std::nullopt);
  EXPECT_EQ(packed.isa(), Isa::kScalar);
  d.expect_close(out, d.reference());
}

TEST(Sgemm, RejectsBadArguments) {
  std::vector<float> a(16, 1.0f), b(16, 1.0f), c(16, 0.0f);
  MatrixView av{a.data(), 4, 1}, bv{b.data(), 4, 1};
  EXPECT_THROW(sgemm(4, 4, 4, av, bv, c.data(), 3, {}, nullptr), Error);  // ldc < N
  EXPECT_THROW(sgemm(-1, 4, 4, av, bv, c.data(), 4, {}, nullptr), Error);
  GemmEpilogue no_bias;
  no_bias.bias_kind = BiasKind::kPerRow;
  EXPECT_THROW(sgemm(4, 4, 4, av, bv, c.data(), 4, no_bias, nullptr), Error);
  EXPECT_THROW(sgemm(4, 4, 4, av, MatrixView{}, c.data(), 4, {}, nullptr), Error);
}

TEST(CpuFeatures, ParsesAndClampsIsa) {
  EXPECT_EQ(parse_isa("scalar"), Isa::kScalar);
  EXPECT_EQ(parse_isa("avx2"), Isa::kAvx2);
  EXPECT_EQ(parse_isa("avx512"), Isa::kAvx512);
  try {
    parse_isa("sse9");
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("TERN_ISA"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("sse9"), std::string::npos);
  }
  EXPECT_TRUE(isa_supported(Isa::kScalar));
  EXPECT_TRUE(isa_supported(detected_isa()));
  set_isa_override(Isa::kAvx512);
  EXPECT_EQ(active_isa(), detected_isa());  // clamped to the CPU
  set_isa_override(Isa::kScalar);
  EXPECT_EQ(active_isa(), Isa::kScalar);
  set_isa_override(std::nullopt);
  EXPECT_STREQ(to_string(Isa::kAvx2), "avx2");
}

}  // namespace
}  // namespace tern::kernels
