// Issue 19's experiment: can a lookup-table ternary kernel (T-MAC / bitnet.cpp TL style) beat
// tern's multiply-based ternary kernels on x86, with the engine's exact arithmetic (u8
// activations, int32 results equal to the reference)?
//
//   tern/lut_avx2/...        the table kernel (ternary_lut_avx2, AVX2): for each pair of K values and each
//                            column, a 9-entry table of t0*x0 + t1*x1 (t in {-1, 0, 1}) split into
//                            a low and a high byte table; each row's 4-bit pair index (3(t0+1) +
//                            (t1+1), 2 bits per weight, as tern's masks) picks its entry with two
//                            vpshufb; vpunpck{l,h}bw makes int16 partial sums, summed over a
//                            unit block (64 values of K: 32 pairs x 510 fits int16), then times
//                            the row's unit into int32. The tables are built per call (timed).
//   tern/stream_maddubs/...  ternary_stream_avx2_maddubs (AVX2 alone: decode in registers +
//                            vpmaddubsw/vpmaddwd), what an AVX2 CPU without VNNI runs today
//   tern/stream_avxvnni/...  ternary_stream_avxvnni (vpdpbusd ymm)
//   tern/stream_avx512/...   ternary_stream_avx512 (vpdpbusd zmm)
//   tern/int8_qgemm/...      qgemm on the same weights as int8 panels (the active ISA)
//
// Weights: ternary, one 7-bit unit per 64 values of K per row (FGQ N = 64: the table needs a
// run of K without a unit change; with N = 4 every 4 values would need a multiply, and the table
// saves nothing). One thread; N x K = 1024 x 1024 (weights in L2) and 4096 x 4096 (in L3);
// M = 1, 4, 8 columns. Before timing, every kernel's result is compared with a scalar reference;
// a mismatch ends the program with an error.
//
// usage: bench_ternary_lut [--benchmark_filter=REGEX] [--benchmark_min_time=0.2]
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "bench_support.h"
#include "kernels/cpu_features.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/ternary_panels.h"

namespace tern {
namespace {

constexpr int64_t kLutUnitK = 64;  // values of K per unit

enum class Kernel { kLutAvx2, kStreamMaddubs, kStreamAvxVnni, kStreamAvx512, kInt8Qgemm };

struct Shape {
  int64_t rows, depth, cols;
};

struct Data {
  Shape shape{};
  std::vector<int8_t> t;    // codes [rows][depth]
  std::vector<uint8_t> u;   // units [rows][depth / 64]
  std::vector<uint8_t> x;   // [cols][depth]
  std::vector<int32_t> reference, c, row_sums;
  kernels::TernaryPanels panels;
  kernels::QPackedWeights dense;
  std::vector<int8_t> scratch;
};

std::unique_ptr<Data> make_data(const Shape& s) {
  auto d = std::make_unique<Data>();
  d->shape = s;
  uint64_t state = 0x9E3779B97F4A7C15ULL;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state >> 32);
  };
  const int64_t blocks = s.depth / kLutUnitK;
  d->t.resize(static_cast<size_t>(s.rows * s.depth));
  for (int8_t& v : d->t) v = static_cast<int8_t>(static_cast<int>(next() % 3) - 1);
  d->u.resize(static_cast<size_t>(s.rows * blocks));
  for (uint8_t& v : d->u) v = static_cast<uint8_t>(1 + next() % 127);
  d->x.resize(static_cast<size_t>(s.cols * s.depth));
  for (uint8_t& v : d->x) v = static_cast<uint8_t>(next());
  d->panels = kernels::TernaryPanels(s.rows, s.depth, kLutUnitK / 4);
  std::vector<int8_t> dense(static_cast<size_t>(s.rows * s.depth));
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int64_t k = 0; k < s.depth; ++k) {
      const int t = d->t[static_cast<size_t>(r * s.depth + k)], u = d->u[static_cast<size_t>(r * blocks + k / kLutUnitK)];
      d->panels.set_code(r, k, t);
      dense[static_cast<size_t>(r * s.depth + k)] = static_cast<int8_t>(t * u);
    }
    for (int64_t b = 0; b < blocks; ++b) d->panels.set_unit(r, b * (kLutUnitK / 4), d->u[static_cast<size_t>(r * blocks + b)]);
  }
  d->dense = kernels::QPackedWeights::pack(dense.data(), s.rows, s.depth, s.depth);
  d->row_sums.assign(static_cast<size_t>(s.rows), 0);
  for (int64_t r = 0; r < s.rows; ++r)
    for (int64_t k = 0; k < s.depth; ++k) d->row_sums[static_cast<size_t>(r)] += dense[static_cast<size_t>(r * s.depth + k)];
  d->reference.assign(static_cast<size_t>(s.cols * s.rows), 0);
  for (int64_t col = 0; col < s.cols; ++col)
    for (int64_t r = 0; r < s.rows; ++r) {
      int64_t sum = 0;
      for (int64_t k = 0; k < s.depth; ++k)
        sum += int64_t{dense[static_cast<size_t>(r * s.depth + k)]} * d->x[static_cast<size_t>(col * s.depth + k)];
      d->reference[static_cast<size_t>(col * s.rows + r)] = static_cast<int32_t>(sum);
    }
  d->c.resize(d->reference.size());
  return d;
}

void run(Data& d, Kernel kernel) {
  const Shape& s = d.shape;
  const int64_t panels = d.panels.panels();
  switch (kernel) {
    case Kernel::kLutAvx2: kernels::ternary_lut_gemm(d.panels, s.cols, d.x.data(), s.depth, d.c.data(), s.rows, nullptr); break;
    case Kernel::kStreamMaddubs:
      kernels::ternary_stream_avx2_maddubs(d.panels, d.row_sums.data(), 0, panels, s.cols, d.x.data(), s.depth, d.c.data(),
                                           s.rows);
      break;
    case Kernel::kStreamAvxVnni:
      kernels::ternary_stream_avxvnni(d.panels, 0, panels, s.cols, d.x.data(), s.depth, d.c.data(), s.rows);
      break;
    case Kernel::kStreamAvx512:
      for (int64_t col = 0; col < s.cols; col += kernels::kTernaryStreamCols)
        kernels::ternary_stream_avx512(d.panels, 0, panels, std::min(kernels::kTernaryStreamCols, s.cols - col),
                                       d.x.data() + col * s.depth, s.depth, d.c.data() + col * s.rows, s.rows);
      break;
    case Kernel::kInt8Qgemm: kernels::qgemm(d.dense, s.cols, d.x.data(), s.depth, d.c.data(), s.rows, nullptr); break;
  }
}

bool available(Kernel kernel) {
  const kernels::CpuFeatures& f = kernels::cpu_features();
  switch (kernel) {
    case Kernel::kStreamAvxVnni: return f.avx_vnni;
    case Kernel::kStreamAvx512: return f.avx512vnni && f.avx512bw;
    default: return f.avx2;
  }
}

void bench(benchmark::State& state, const std::string& name, Shape shape, Kernel kernel) {
  static std::unique_ptr<Data> cached;
  if (!cached || cached->shape.rows != shape.rows || cached->shape.depth != shape.depth || cached->shape.cols != shape.cols)
    cached = make_data(shape);
  Data& d = *cached;
  if (!available(kernel)) {
    state.SkipWithError("this CPU lacks the kernel's instructions");
    return;
  }
  std::fill(d.c.begin(), d.c.end(), -1);
  run(d, kernel);
  if (d.c != d.reference) {
    std::fprintf(stderr, "bench_ternary_lut: %s differs from the reference\n", name.c_str());
    std::exit(1);
  }
  for (auto _ : state) run(d, kernel);
  const double macs = static_cast<double>(shape.rows) * static_cast<double>(shape.depth) * static_cast<double>(shape.cols);
  state.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void register_all() {
  const std::pair<const char*, Kernel> kernels[] = {{"lut_avx2", Kernel::kLutAvx2},
                                                    {"stream_maddubs", Kernel::kStreamMaddubs},
                                                    {"stream_avxvnni", Kernel::kStreamAvxVnni},
                                                    {"stream_avx512", Kernel::kStreamAvx512},
                                                    {"int8_qgemm", Kernel::kInt8Qgemm}};
  for (int64_t n : {1024, 4096})
    for (int64_t m : {1, 4, 8})
      for (const auto& [name, kernel] : kernels) {
        const Shape s{n, n, m};
        const std::string label = std::string("tern/") + name + "/N:" + std::to_string(n) + "/K:" + std::to_string(n) +
                                  "/M:" + std::to_string(m);
        benchmark::RegisterBenchmark(label.c_str(), [label, s, kernel = kernel](benchmark::State& st) { bench(st, label, s, kernel); })
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
}

}  // namespace
}  // namespace tern

int main(int argc, char** argv) {
  tern::register_all();
  if (!tern::bench::initialize_with_defaults(argc, argv, {"--benchmark_min_time=0.3"})) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
