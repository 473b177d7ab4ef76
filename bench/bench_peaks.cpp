// This machine's compute and memory peaks, as the ceiling the kernel benchmarks are judged against:
//   - int8 dot products: AVX-512 VNNI (vpdpbusd zmm), AVX-VNNI (vpdpbusd ymm, VEX), plain AVX2
//     (vpmaddubsw + vpmaddwd + vpaddd) and AMX (tdpbusd), in GMAC/s;
//   - fp32 FMA on zmm and ymm, in GFMA/s and GFLOP/s;
//   - read-only streaming bandwidth from L1 (16 KiB), L2 (1 MiB) and DRAM (1 GiB), in bytes/s.
// Each runs on one thread (rates per CPU second: the per-core peak) and on two (->Threads(2),
// rates per wall-clock second summed over the threads: the whole machine's).
//
// The compute loops keep many independent accumulator chains so that throughput, not latency,
// limits them (vpdpbusd/vfmadd latency is 4-5 cycles at up to 2 per cycle: >= 10 chains needed).
// Every ISA-specific function carries its own target attribute, so the file needs no -march and
// the binary runs anywhere: a benchmark whose ISA the CPU (or OS) lacks is skipped with an error.
//
// usage: bench_peaks [--benchmark_filter=REGEX] [--benchmark_min_time=0.3 (default)] [--benchmark_format=json]
#include <benchmark/benchmark.h>

#include "bench_support.h"
#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace {

// ------------------------------------------------------------------------------------------------
// Run-time CPU features (CPUID + the OS's XCR0: a feature counts only if the OS saves its state).

struct Features {
  bool avx2 = false, fma = false;
  bool avx512f = false, avx512bw = false, avx512vnni = false;
  bool avxvnni = false;
  bool amx_int8 = false;  // CPU and OS state; the per-process permission is requested separately
};

uint64_t read_xcr0() {
  uint32_t eax, edx;
  asm volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<uint64_t>(edx) << 32) | eax;
}

Features detect_features() {
  Features f;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27), avx = ecx & (1u << 28), fma = ecx & (1u << 12);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = read_xcr0();
  const bool ymm_state = (xcr0 & 0x6) == 0x6;             // SSE + AVX
  const bool zmm_state = ymm_state && (xcr0 & 0xe0) == 0xe0;  // opmask + ZMM_Hi256 + Hi16_ZMM
  const bool tile_state = (xcr0 & 0x60000) == 0x60000;    // XTILECFG + XTILEDATA
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  const unsigned max_subleaf = eax;
  f.avx2 = ymm_state && (ebx & (1u << 5));
  f.fma = ymm_state && fma;
  f.avx512f = zmm_state && (ebx & (1u << 16));
  f.avx512bw = zmm_state && (ebx & (1u << 30));
  f.avx512vnni = f.avx512f && f.avx512bw && (ecx & (1u << 11));
  f.amx_int8 = tile_state && (edx & (1u << 24)) && (edx & (1u << 25));  // AMX-TILE, AMX-INT8
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avxvnni = ymm_state && (eax & (1u << 4));
  }
  return f;
}

const Features& features() {
  static const Features f = detect_features();
  return f;
}

// Linux hands out AMX tile state only to processes that ask for it (kernel 5.16+).
bool request_amx_permission() {
#if defined(__linux__) && defined(SYS_arch_prctl)
  static const bool granted = [] {
    constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
#else
  return false;
#endif
}

// Every peak is registered twice: on one thread timed by its CPU time (the per-core peak, which
// time-sharing with other processes does not dilute), and on two threads timed by the wall clock
// (Google Benchmark sums the threads' counters: the whole machine's rate, which other load does).
#define TERN_PEAK(fn) \
  BENCHMARK(fn);      \
  BENCHMARK(fn)->Threads(2)->UseRealTime()

// Inner-loop trip count per benchmark iteration: ~1M instructions, well under a millisecond.
constexpr int64_t kLoopTrips = 1 << 16;

// ------------------------------------------------------------------------------------------------
// int8 dot products. The loops are whole inline-asm blocks on fixed registers: written with
// intrinsics over an array of accumulators, GCC 12 spills some of them to the stack inside the loop
// (and would hoist the accumulator-independent half of the AVX2 idiom out of it). Each accumulator
// is its own dependency chain; the sources are constants (the data does not change the timing).
// `trips` must be positive. Blocks end with vzeroupper, as compiled AVX code does.

constexpr int kZmmChains = 16;  // of 32 zmm registers: zmm0-15 accumulate, zmm16-17 are sources
constexpr int kYmmChains = 12;  // of 16 ymm registers (VEX encodings reach only ymm0-15)

#define TERN_X16(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11) M(12) M(13) M(14) M(15)
#define TERN_X12(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
#define TERN_ZMM_CLOBBERS                                                                                  \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
      "xmm13", "xmm14", "xmm15", "xmm16", "xmm17"
#define TERN_YMM_CLOBBERS                                                                                  \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", \
      "xmm13", "xmm14", "xmm15"

#define TERN_ZERO_ZMM(i) "vpxord %%zmm" #i ", %%zmm" #i ", %%zmm" #i "\n\t"
#define TERN_ZERO_YMM(i) "vpxor %%ymm" #i ", %%ymm" #i ", %%ymm" #i "\n\t"

// zmm_i += dot4(u8 zmm16, s8 zmm17): 64 MACs.
#define TERN_VPDPBUSD_ZMM(i) "vpdpbusd %%zmm17, %%zmm16, %%zmm" #i "\n\t"
__attribute__((target("avx512f,avx512bw,avx512vnni"))) void vnni_zmm_loop(int64_t trips) {
  const int32_t a = 0x01010101, b = 0x7f7f7f7f;
  asm volatile("vpbroadcastd %k[a], %%zmm16\n\t"
               "vpbroadcastd %k[b], %%zmm17\n\t" TERN_X16(TERN_ZERO_ZMM)
               "1:\n\t" TERN_X16(TERN_VPDPBUSD_ZMM)
               "dec %[n]\n\t"
               "jnz 1b\n\t"
               "vzeroupper"
               : [n] "+r"(trips)
               : [a] "r"(a), [b] "r"(b)
               : TERN_ZMM_CLOBBERS, "cc");
}

// The VEX (AVX-VNNI) encoding, which "{vex}" forces (written %{ %} in an asm template): without it
// the assembler picks the EVEX (AVX512-VL) one.
#define TERN_VPDPBUSD_YMM(i) "%{vex%} vpdpbusd %%ymm13, %%ymm12, %%ymm" #i "\n\t"
__attribute__((target("avx2,avxvnni"))) void avxvnni_ymm_loop(int64_t trips) {
  alignas(32) static const int32_t kA[8] = {0x01010101, 0x01010101, 0x01010101, 0x01010101,
                                            0x01010101, 0x01010101, 0x01010101, 0x01010101};
  alignas(32) static const int32_t kB[8] = {0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f,
                                            0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f};
  asm volatile("vmovdqa %[a], %%ymm12\n\t"
               "vmovdqa %[b], %%ymm13\n\t" TERN_X12(TERN_ZERO_YMM)
               "1:\n\t" TERN_X12(TERN_VPDPBUSD_YMM)
               "dec %[n]\n\t"
               "jnz 1b\n\t"
               "vzeroupper"
               : [n] "+r"(trips)
               : [a] "m"(kA), [b] "m"(kB)
               : TERN_YMM_CLOBBERS, "cc");
}

// The pre-VNNI idiom: u8 x s8 pairs summed to s16 (vpmaddubsw), s16 pairs to s32 (vpmaddwd with
// ones), then accumulated (vpaddd): three instructions per 32 MACs. ymm15 is every chain's
// temporary; register renaming makes the reuse free.
#define TERN_MADD_YMM(i)                   \
  "vpmaddubsw %%ymm13, %%ymm12, %%ymm15\n\t" \
  "vpmaddwd %%ymm14, %%ymm15, %%ymm15\n\t"   \
  "vpaddd %%ymm15, %%ymm" #i ", %%ymm" #i "\n\t"
__attribute__((target("avx2"))) void avx2_madd_loop(int64_t trips) {
  alignas(32) static const int32_t kA[8] = {0x01010101, 0x01010101, 0x01010101, 0x01010101,
                                            0x01010101, 0x01010101, 0x01010101, 0x01010101};
  alignas(32) static const int32_t kB[8] = {0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f,
                                            0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f, 0x7f7f7f7f};
  alignas(32) static const int32_t kOnes[8] = {0x00010001, 0x00010001, 0x00010001, 0x00010001,
                                               0x00010001, 0x00010001, 0x00010001, 0x00010001};
  asm volatile("vmovdqa %[a], %%ymm12\n\t"
               "vmovdqa %[b], %%ymm13\n\t"
               "vmovdqa %[ones], %%ymm14\n\t" TERN_X12(TERN_ZERO_YMM)
               "1:\n\t" TERN_X12(TERN_MADD_YMM)
               "dec %[n]\n\t"
               "jnz 1b\n\t"
               "vzeroupper"
               : [n] "+r"(trips)
               : [a] "m"(kA), [b] "m"(kB), [ones] "m"(kOnes)
               : TERN_YMM_CLOBBERS, "cc");
}

// AMX: four 16x16 s32 accumulator tiles fed by two A tiles (16 rows x 64 u8) and two B tiles (16
// rows of 4-byte groups x 16 columns): each tdpbusd is 16*16*64 = 16384 MACs.
struct alignas(64) TileConfig {
  uint8_t palette_id = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
constexpr int64_t kMacsPerTdpbusd = 16 * 16 * 64;
constexpr int kTdpbusdPerTrip = 4;

__attribute__((target("amx-tile,amx-int8"))) void amx_loop(int64_t trips) {
  TileConfig config;
  config.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    config.rows[t] = 16;
    config.colsb[t] = 64;
  }
  // Not _tile_loadconfig: GCC 12's version tells the compiler it reads only the first 8 bytes, so
  // the stores of rows/colsb above were dropped as dead and ldtilecfg faulted.
  asm volatile("ldtilecfg %0" : : "m"(config));
  alignas(64) static const uint8_t kA[16 * 64] = {1};
  alignas(64) static const int8_t kB[16 * 64] = {-1};
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  _tile_loadd(4, kA, 64);
  _tile_loadd(5, kA, 64);
  _tile_loadd(6, kB, 64);
  _tile_loadd(7, kB, 64);
  for (int64_t t = 0; t < trips; ++t) {  // trips may be any count here
    _tile_dpbusd(0, 4, 6);
    _tile_dpbusd(1, 4, 7);
    _tile_dpbusd(2, 5, 6);
    _tile_dpbusd(3, 5, 7);
  }
  _tile_release();  // the tile intrinsics are volatile asm: nothing above is optimized away
}

// Runs `loop` and reports GMAC/s. `macs_per_trip` is per inner-loop trip.
template <typename Loop>
void run_int8_peak(benchmark::State& state, Loop loop, int64_t macs_per_trip, int64_t trips = kLoopTrips) {
  for (auto _ : state) loop(trips);
  const double macs = static_cast<double>(state.iterations()) * static_cast<double>(trips * macs_per_trip);
  state.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GOP/s"] = benchmark::Counter(2 * macs * 1e-9, benchmark::Counter::kIsRate);
}

void BM_int8_vnni_zmm(benchmark::State& state) {
  if (!features().avx512vnni) return state.SkipWithError("CPU lacks AVX-512 VNNI (avx512f+bw+vnni)");
  state.SetLabel("vpdpbusd zmm, 16 chains");
  run_int8_peak(state, vnni_zmm_loop, kZmmChains * 64);
}
TERN_PEAK(BM_int8_vnni_zmm);

void BM_int8_avxvnni_ymm(benchmark::State& state) {
  if (!features().avxvnni) return state.SkipWithError("CPU lacks AVX-VNNI");
  state.SetLabel("{vex} vpdpbusd ymm, 12 chains");
  run_int8_peak(state, avxvnni_ymm_loop, kYmmChains * 32);
}
TERN_PEAK(BM_int8_avxvnni_ymm);

void BM_int8_avx2_maddubs(benchmark::State& state) {
  if (!features().avx2) return state.SkipWithError("CPU lacks AVX2");
  state.SetLabel("vpmaddubsw+vpmaddwd+vpaddd ymm, 12 chains");
  run_int8_peak(state, avx2_madd_loop, kYmmChains * 32);
}
TERN_PEAK(BM_int8_avx2_maddubs);

void BM_int8_amx(benchmark::State& state) {
  if (!features().amx_int8) return state.SkipWithError("CPU or OS lacks AMX-INT8");
  if (!request_amx_permission()) return state.SkipWithError("the kernel refused AMX tile state (arch_prctl)");
  state.SetLabel("tdpbusd 16x16x64, 4 accumulator tiles");
  run_int8_peak(state, amx_loop, kTdpbusdPerTrip * kMacsPerTdpbusd, kLoopTrips / 16);
}
TERN_PEAK(BM_int8_amx);

// ------------------------------------------------------------------------------------------------
// fp32 FMA, in the same style: acc += a * b with a = 1e-7, b = 1 stays finite and normal over any
// run length (denormals or infinities could change the timing).

#define TERN_FMA_ZMM(i) "vfmadd231ps %%zmm17, %%zmm16, %%zmm" #i "\n\t"
__attribute__((target("avx512f"))) void fma_zmm_loop(int64_t trips) {
  const float a = 1e-7f, b = 1.0f;
  asm volatile("vbroadcastss %[a], %%zmm16\n\t"
               "vbroadcastss %[b], %%zmm17\n\t" TERN_X16(TERN_ZERO_ZMM)
               "1:\n\t" TERN_X16(TERN_FMA_ZMM)
               "dec %[n]\n\t"
               "jnz 1b\n\t"
               "vzeroupper"
               : [n] "+r"(trips)
               : [a] "m"(a), [b] "m"(b)
               : TERN_ZMM_CLOBBERS, "cc");
}

#define TERN_FMA_YMM(i) "vfmadd231ps %%ymm13, %%ymm12, %%ymm" #i "\n\t"
__attribute__((target("avx2,fma"))) void fma_ymm_loop(int64_t trips) {
  const float a = 1e-7f, b = 1.0f;
  asm volatile("vbroadcastss %[a], %%ymm12\n\t"
               "vbroadcastss %[b], %%ymm13\n\t" TERN_X12(TERN_ZERO_YMM)
               "1:\n\t" TERN_X12(TERN_FMA_YMM)
               "dec %[n]\n\t"
               "jnz 1b\n\t"
               "vzeroupper"
               : [n] "+r"(trips)
               : [a] "m"(a), [b] "m"(b)
               : TERN_YMM_CLOBBERS, "cc");
}

template <typename Loop>
void run_fma_peak(benchmark::State& state, Loop loop, int64_t fmas_per_trip) {
  for (auto _ : state) loop(kLoopTrips);
  const double fmas = static_cast<double>(state.iterations()) * static_cast<double>(kLoopTrips * fmas_per_trip);
  state.counters["GFMA/s"] = benchmark::Counter(fmas * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(2 * fmas * 1e-9, benchmark::Counter::kIsRate);
}

void BM_fp32_fma_zmm(benchmark::State& state) {
  if (!features().avx512f) return state.SkipWithError("CPU lacks AVX-512F");
  state.SetLabel("vfmadd231ps zmm, 16 chains");
  run_fma_peak(state, fma_zmm_loop, kZmmChains * 16);
}
TERN_PEAK(BM_fp32_fma_zmm);

void BM_fp32_fma_ymm(benchmark::State& state) {
  if (!features().avx2 || !features().fma) return state.SkipWithError("CPU lacks AVX2+FMA");
  state.SetLabel("vfmadd231ps ymm, 12 chains");
  run_fma_peak(state, fma_ymm_loop, kYmmChains * 8);
}
TERN_PEAK(BM_fp32_fma_ymm);

// ------------------------------------------------------------------------------------------------
// Read bandwidth: every byte of the buffer is folded into a checksum with 8 independent
// accumulators, using the widest loads the CPU has. Buffers are 4 KiB-aligned multiples of 1 KiB.
// AVX-512 folds two loads per instruction (acc ^= x ^ y, one vpternlogq): with one vpaddq per load
// the ALU capped the L1 figure at ~270 GB/s on the dev VM; this gets ~300 (bare loads whose data
// is never used: ~420).

__attribute__((target("avx512f"))) uint64_t sum_avx512(const uint8_t* p, size_t bytes) {
  __m512i s[8];
  for (auto& x : s) x = _mm512_setzero_si512();
  for (size_t off = 0; off < bytes; off += 1024) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      s[i] = _mm512_ternarylogic_epi64(s[i], _mm512_load_si512(reinterpret_cast<const void*>(p + off + 128 * i)),
                                       _mm512_load_si512(reinterpret_cast<const void*>(p + off + 128 * i + 64)),
                                       0x96);  // a ^ b ^ c
  }
  for (int i = 1; i < 8; ++i) s[0] = _mm512_xor_si512(s[0], s[i]);
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, s[0]);
  uint64_t total = 0;
  for (uint64_t v : lanes) total ^= v;
  return total;
}

__attribute__((target("avx2"))) uint64_t sum_avx2(const uint8_t* p, size_t bytes) {
  __m256i s[8];
  for (auto& x : s) x = _mm256_setzero_si256();
  for (size_t off = 0; off < bytes; off += 256) {
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i)
      s[i] = _mm256_add_epi64(s[i], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + off + 32 * i)));
  }
  for (int i = 1; i < 8; ++i) s[0] = _mm256_add_epi64(s[0], s[i]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s[0]);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
}

uint64_t sum_generic(const uint8_t* p, size_t bytes) {
  uint64_t s[4] = {};
  for (size_t off = 0; off < bytes; off += 32)
    for (int i = 0; i < 4; ++i) {
      uint64_t v;
      std::memcpy(&v, p + off + 8 * i, 8);
      s[i] += v;
    }
  return s[0] + s[1] + s[2] + s[3];
}

using SumFn = uint64_t (*)(const uint8_t*, size_t);

SumFn best_sum(const char** isa) {
  if (features().avx512f) {
    *isa = "avx512";
    return sum_avx512;
  }
  if (features().avx2) {
    *isa = "avx2";
    return sum_avx2;
  }
  *isa = "generic";
  return sum_generic;
}

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

// Aligned, transparent-huge-page backed where possible (fewer TLB misses over the DRAM buffer), and
// written once so every page is faulted in before timing.
Buffer make_buffer(size_t bytes) {
  const size_t align = bytes >= (size_t{2} << 20) ? (size_t{2} << 20) : 4096;
  Buffer buffer(static_cast<uint8_t*>(std::aligned_alloc(align, bytes)));
  if (!buffer) return buffer;
#ifdef __linux__
  if (bytes >= (size_t{2} << 20)) madvise(buffer.get(), bytes, MADV_HUGEPAGE);
#endif
  std::memset(buffer.get(), 1, bytes);
  return buffer;
}

// The DRAM buffer is shared and split between the threads (allocated once, on first use); cache-
// sized buffers are per thread, since each core has its own L1 and L2.
constexpr size_t kDramBytes = size_t{1} << 30;

const uint8_t* dram_buffer() {
  static const Buffer buffer = make_buffer(kDramBytes);
  return buffer.get();
}

void BM_read_bandwidth(benchmark::State& state) {
  const size_t bytes = static_cast<size_t>(state.range(0));
  const char* isa = nullptr;
  const SumFn sum = best_sum(&isa);
  Buffer own;
  const uint8_t* p;
  size_t span;  // this thread's share
  if (bytes == kDramBytes) {
    span = bytes / static_cast<size_t>(state.threads());
    p = dram_buffer();
    if (!p) return state.SkipWithError("could not allocate the 1 GiB buffer");
    p += span * static_cast<size_t>(state.thread_index());
  } else {
    own = make_buffer(bytes);
    if (!own) return state.SkipWithError("could not allocate the buffer");
    p = own.get();
    span = bytes;
  }
  // Small buffers are swept many times per iteration, so timer overhead stays negligible.
  const size_t sweeps = span >= (size_t{16} << 20) ? 1 : (size_t{16} << 20) / span;
  for (auto _ : state)
    for (size_t i = 0; i < sweeps; ++i) benchmark::DoNotOptimize(sum(p, span));
  const double total = static_cast<double>(state.iterations()) * static_cast<double>(sweeps * span);
  state.SetBytesProcessed(static_cast<int64_t>(total));
  state.counters["GB/s"] = benchmark::Counter(total * 1e-9, benchmark::Counter::kIsRate);
  state.SetLabel(std::string(isa) + " loads");
}
void read_sizes(benchmark::internal::Benchmark* b) {
  // L1, L2, L3 (8 and 32 MiB: the packed weights of the 4096 x 4096 GEMV benchmarks), DRAM.
  b->ArgName("bytes")->Arg(16 << 10)->Arg(1 << 20)->Arg(8 << 20)->Arg(32 << 20)->Arg(int64_t{1} << 30);
}
BENCHMARK(BM_read_bandwidth)->Apply(read_sizes);
BENCHMARK(BM_read_bandwidth)->Apply(read_sizes)->Threads(2)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  if (!tern::bench::initialize_with_defaults(argc, argv, {"--benchmark_min_time=0.3"})) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
