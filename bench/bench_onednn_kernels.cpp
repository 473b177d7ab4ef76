// oneDNN's matmul and convolution on the shapes tern's int8/fp32 kernels are compared on: the peer
// each tern kernel benchmark should sit beside (same names, same counters).
//
//   matmul/{fp32,int8_s32,int8_u8}/N:*/K:*/M:*/omp_threads:{1,2}
//       src [M x K] (f32, or u8) times constant weights [N x K] (f32, or s8), dst [M x N] (f32, s32,
//       or u8 with a per-column output scale). N x K = 4096 x 4096 and 11008 x 4096; M = 1, 8, 64;
//       and N x K = 32768 x 16384 at M = 1 (int8_u8, fp32), whose weights exceed the usable L3.
//   conv/{fp32,int8_u8}/C:*to*/HW:*/stride:*/batch:*/omp_threads:{1,2}
//       3x3 pad-1 convolution + bias + ReLU, ResNet-20 (28x28 input) shapes; int8 is u8 src, s8
//       weights, s32 bias, u8 dst with a per-channel output scale. Batch 1 and 64.
//   conv/int8_u8/resnet50/C:*to*/HW:*/k:{1,3}/omp_threads:{1,2}
//       ResNet-50's convolutions at batch 1 (224x224 input; 1x1 pad 0 and 3x3 pad 1, stride 1),
//       one per stage and kind, as above.
//
// Every primitive is created once per benchmark (not timed) with format_tag::any for the weights
// (and, for convolutions, the activations), so oneDNN picks its preferred layouts; the weights and
// the input are reordered into them once, outside the loop. The timed loop is execute() + wait().
// Labels name the implementation oneDNN chose (impl_info_str) and the layouts. Counters: GMAC/s
// (M*N*K, or batch*OH*OW*Cout*Cin*9) and, for matmuls, weight_GB/s (weight bytes / time: a GEMV
// streams its weights once, so at M = 1 this is the bandwidth it achieved).
//
// oneDNN (Debian's build) runs on OpenMP; each benchmark sets omp_set_num_threads(omp_threads)
// before creating its primitive, since oneDNN picks its blocking for the thread count it sees then.
//
//   tern/{int8,ternary_n4,ternary_n64,int4}/N:*/K:*/M:*/threads:{1,2}
//   tern-conv-gemm/{int8,ternary_n4}/C:*to*/HW:*/stride:*/batch:*/threads:{1,2}
//       tern's integer kernels on the same shapes (a Conv as the GEMM of its im2col; no im2col,
//       requantization or bias in the time), tern's own thread pool. weight_GB/s counts the
//       bytes the packed weights occupy (ternary: masks + units; int4: nibbles).
//   tern-conv/int8/resnet50/C:*to*/HW:*/k:{1,3}/threads:{1,2}
//       the integer engine's convolution kernel on ResNet-50's shapes: qgemm_indirect (implicit
//       GEMM, read in place from a padded NHWC input) over output rows, split as the engine splits
//       a layer (rows of output pixels; blocks of 4 panels where the map has few rows). No
//       requantization in the time (oneDNN's includes its u8 output).
//
// usage: bench_onednn_kernels [--benchmark_filter=REGEX] [--benchmark_min_time=0.2]
//                             [--benchmark_format=json] [...other --benchmark_* flags]
#include <benchmark/benchmark.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "bench_support.h"
#include "kernels/int8/int4_panels.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_indirect.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/thread_pool.h"

namespace {

using tern::ThreadPool;
namespace kernels = tern::kernels;

using dnnl::memory;
using Dt = memory::data_type;
using Tag = memory::format_tag;

// ------------------------------------------------------------------------------------------------
// Reusable helpers: an engine and stream, deterministic data, layouts and ISA names for reports,
// and OneDnnKernel, a primitive with all its arguments bound.

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& cpu_stream() {
  static dnnl::stream stream(cpu_engine());
  return stream;
}

// Fills a plain-layout memory with deterministic pseudo-random values: f32 in [-1, 1), s8 in
// [-127, 127], u8 in [0, 255], s32 in [-1000, 1000].
void fill(memory& m) {
  const memory::desc md = m.get_desc();
  const size_t bytes = md.get_size();
  uint32_t state = 12345;
  auto next = [&state] {
    state = state * 1664525u + 1013904223u;
    return state >> 8;  // 24 random bits
  };
  void* data = m.get_data_handle();
  switch (md.data_type()) {
    case Dt::f32: {
      float* p = static_cast<float*>(data);
      for (size_t i = 0; i < bytes / sizeof(float); ++i)
        p[i] = static_cast<float>(next()) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
      break;
    }
    case Dt::s8: {
      int8_t* p = static_cast<int8_t*>(data);
      for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<int8_t>(static_cast<int>(next() % 255) - 127);
      break;
    }
    case Dt::u8: {
      uint8_t* p = static_cast<uint8_t*>(data);
      for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(next());
      break;
    }
    case Dt::s32: {
      int32_t* p = static_cast<int32_t*>(data);
      for (size_t i = 0; i < bytes / sizeof(int32_t); ++i) p[i] = static_cast<int32_t>(next() % 2001) - 1000;
      break;
    }
    default:
      std::memset(data, 0, bytes);
  }
}

memory filled(const memory::desc& md) {
  memory m(md, cpu_engine());
  fill(m);
  return m;
}

// `src` in layout `md`: itself if it already is, else a reordered copy (a one-off, not timed).
memory reordered(memory src, const memory::desc& md) {
  if (src.get_desc() == md) return src;
  memory dst(md, cpu_engine());
  dnnl::reorder(src, dst).execute(cpu_stream(), src, dst);
  cpu_stream().wait();
  return dst;
}

// A layout in oneDNN's verbose notation: dims outermost first ("acdb" is NHWC for a 4-D
// activation), upper case for blocked dims, then the inner blocks ("aBcd16b"); "+comp" when
// oneDNN appended compensation data (int8 weights on some ISAs).
std::string layout(const memory::desc& md) {
  const dnnl_memory_desc_t& d = md.data;
  if (d.format_kind != dnnl_blocked) return "opaque";
  const dnnl_blocking_desc_t& blocking = d.format_desc.blocking;
  std::vector<int> order(static_cast<size_t>(d.ndims));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return blocking.strides[a] > blocking.strides[b]; });
  std::string s;
  for (int dim : order) {
    bool blocked = false;
    for (int j = 0; j < blocking.inner_nblks; ++j) blocked |= blocking.inner_idxs[j] == dim;
    s += static_cast<char>((blocked ? 'A' : 'a') + dim);
  }
  for (int j = 0; j < blocking.inner_nblks; ++j)
    s += std::to_string(blocking.inner_blks[j]) + static_cast<char>('a' + blocking.inner_idxs[j]);
  if (d.extra.flags != 0) s += "+comp";
  return s;
}

const char* isa_name(dnnl::cpu_isa isa) {
  switch (isa) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    default: return "other";
  }
}

std::string onednn_version() {
  const dnnl::version_t* v = dnnl::version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

// A primitive with every argument bound: running it is execute() + wait().
struct OneDnnKernel {
  dnnl::primitive primitive;
  std::unordered_map<int, memory> args;
  std::string impl;     // pd.impl_info_str(), e.g. "brg:avx512_core_amx"
  std::string layouts;  // "src:... wei:... dst:..."
  double macs = 0;            // per execution
  double weight_bytes = 0;    // in the layout oneDNN chose
  void run() {
    primitive.execute(cpu_stream(), args);
    cpu_stream().wait();
  }
};

enum class Precision { kFp32, kInt8S32, kInt8U8 };

const char* to_string(Precision p) {
  switch (p) {
    case Precision::kFp32: return "fp32";
    case Precision::kInt8S32: return "int8_s32";
    case Precision::kInt8U8: return "int8_u8";
  }
  return "?";
}

Dt activation_type(Precision p) { return p == Precision::kFp32 ? Dt::f32 : Dt::u8; }
Dt weight_type(Precision p) { return p == Precision::kFp32 ? Dt::f32 : Dt::s8; }
Dt output_type(Precision p) {
  return p == Precision::kFp32 ? Dt::f32 : p == Precision::kInt8S32 ? Dt::s32 : Dt::u8;
}

// ------------------------------------------------------------------------------------------------
// matmul: dst[M x N] = src[M x K] * weights[N x K]^T. oneDNN's weights are K x N; a model's N x K
// row-major matrix is K x N in layout "ba", which is how the user copy is made before the reorder.

struct MatmulSpec {
  int64_t m, n, k;
  Precision precision;
};

OneDnnKernel make_matmul(const MatmulSpec& spec) {
  const Precision p = spec.precision;
  memory::desc src_md({spec.m, spec.k}, activation_type(p), Tag::ab);
  memory::desc weights_any({spec.k, spec.n}, weight_type(p), Tag::any);
  memory::desc dst_md({spec.m, spec.n}, output_type(p), Tag::ab);
  dnnl::primitive_attr attr;
  // Per-column scales, as per-output-channel weight quantization gives; sized so the u8 outputs
  // mostly fall inside [0, 255] (saturation does not change the speed anyway).
  if (p == Precision::kInt8U8)
    attr.set_output_scales(1 << 1, std::vector<float>(static_cast<size_t>(spec.n), 1.0f / (64.0f * spec.k)));
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src_md, weights_any, dst_md), attr, cpu_engine());

  OneDnnKernel kernel;
  memory weights = reordered(filled(memory::desc({spec.k, spec.n}, weight_type(p), Tag::ba)), pd.weights_desc());
  kernel.args = {{DNNL_ARG_SRC, filled(pd.src_desc())},
                 {DNNL_ARG_WEIGHTS, weights},
                 {DNNL_ARG_DST, memory(pd.dst_desc(), cpu_engine())}};
  kernel.primitive = dnnl::matmul(pd);
  kernel.impl = pd.impl_info_str();
  kernel.layouts = "wei:" + layout(pd.weights_desc());
  kernel.macs = static_cast<double>(spec.m) * static_cast<double>(spec.n) * static_cast<double>(spec.k);
  kernel.weight_bytes = static_cast<double>(pd.weights_desc().get_size());
  return kernel;
}

// ------------------------------------------------------------------------------------------------
// convolution: 3x3, pad 1, bias, ReLU post-op; NHWC user input reordered once into the layout
// oneDNN chose; weights from ONNX's OIHW.

struct ConvSpec {
  int64_t batch, c_in, c_out, hw, stride;
  Precision precision;
  int64_t kernel = 3;  // pad (kernel - 1) / 2
  int64_t pad() const { return (kernel - 1) / 2; }
  int64_t out_hw() const { return (hw + 2 * pad() - kernel) / stride + 1; }
};

OneDnnKernel make_conv(const ConvSpec& spec) {
  const Precision p = spec.precision;
  const int64_t oh = spec.out_hw();
  memory::desc src_any({spec.batch, spec.c_in, spec.hw, spec.hw}, activation_type(p), Tag::any);
  const int64_t k = spec.kernel, pad = spec.pad();
  memory::desc weights_any({spec.c_out, spec.c_in, k, k}, weight_type(p), Tag::any);
  memory::desc bias_md({spec.c_out}, p == Precision::kFp32 ? Dt::f32 : Dt::s32, Tag::x);
  memory::desc dst_any({spec.batch, spec.c_out, oh, oh}, output_type(p), Tag::any);
  dnnl::primitive_attr attr;
  dnnl::post_ops ops;
  ops.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
  attr.set_post_ops(ops);
  if (p != Precision::kFp32)
    attr.set_output_scales(1 << 1, std::vector<float>(static_cast<size_t>(spec.c_out), 1.0f / (64.0f * k * k * spec.c_in)));
  dnnl::convolution_forward::desc desc(dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
                                       src_any, weights_any, bias_md, dst_any, {spec.stride, spec.stride}, {pad, pad},
                                       {pad, pad});
  dnnl::convolution_forward::primitive_desc pd(desc, attr, cpu_engine());

  OneDnnKernel kernel;
  memory src = reordered(filled(memory::desc({spec.batch, spec.c_in, spec.hw, spec.hw}, activation_type(p), Tag::nhwc)),
                         pd.src_desc());
  memory weights =
      reordered(filled(memory::desc({spec.c_out, spec.c_in, k, k}, weight_type(p), Tag::oihw)), pd.weights_desc());
  kernel.args = {{DNNL_ARG_SRC, src},
                 {DNNL_ARG_WEIGHTS, weights},
                 {DNNL_ARG_BIAS, filled(pd.bias_desc())},
                 {DNNL_ARG_DST, memory(pd.dst_desc(), cpu_engine())}};
  kernel.primitive = dnnl::convolution_forward(pd);
  kernel.impl = pd.impl_info_str();
  kernel.layouts = "src:" + layout(pd.src_desc()) + " wei:" + layout(pd.weights_desc()) + " dst:" + layout(pd.dst_desc());
  kernel.macs = static_cast<double>(spec.batch * oh * oh * spec.c_out * spec.c_in * k * k);
  kernel.weight_bytes = static_cast<double>(pd.weights_desc().get_size());
  return kernel;
}

// ------------------------------------------------------------------------------------------------
// Benchmarks. Google Benchmark calls a benchmark's function several times while it sizes the run;
// a one-entry cache keeps the primitive (and its reordered weights) between those calls and frees
// it when the next benchmark starts, so at most one set of weights is resident.

OneDnnKernel& cached_kernel(const std::string& key, const std::function<OneDnnKernel()>& make) {
  static std::string cached_key;
  static std::unique_ptr<OneDnnKernel> cached;
  if (!cached || cached_key != key) {
    cached.reset();
    cached = std::make_unique<OneDnnKernel>(make());
    cached_key = key;
    std::fprintf(stderr, "%s: %s %s\n", key.c_str(), cached->impl.c_str(), cached->layouts.c_str());
  }
  return *cached;
}

void run_kernel(benchmark::State& state, const std::string& name, const std::function<OneDnnKernel()>& make,
                bool report_weight_bandwidth) {
  const int threads = static_cast<int>(state.range(0));
  omp_set_num_threads(threads);  // before creation: oneDNN sizes its work split to the thread count
  OneDnnKernel* kernel;
  try {
    kernel = &cached_kernel(name + "/omp_threads:" + std::to_string(threads), make);
    kernel->run();  // warm-up: first-touch of the destination, scratchpad allocation
  } catch (const dnnl::error& e) {
    state.SkipWithError((std::string("oneDNN: ") + e.what()).c_str());
    return;
  }
  for (auto _ : state) kernel->run();
  state.counters["GMAC/s"] = benchmark::Counter(kernel->macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  if (report_weight_bandwidth)
    state.counters["weight_GB/s"] =
        benchmark::Counter(kernel->weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(kernel->impl + " " + kernel->layouts);
}

void register_kernel(const std::string& name, std::function<OneDnnKernel()> make, bool report_weight_bandwidth) {
  benchmark::RegisterBenchmark(name.c_str(),
                               [name, make, report_weight_bandwidth](benchmark::State& state) {
                                 run_kernel(state, name, make, report_weight_bandwidth);
                               })
      ->ArgName("omp_threads")
      ->Arg(2)
      ->Arg(1)
      ->UseRealTime()  // multi-threaded: the main thread's CPU time means nothing
      ->Unit(benchmark::kMicrosecond);
}

// The GEMV/small-batch shapes (a 7B transformer's attention and MLP projections; their weights fit
// this machine's L3 at every precision up to int8) and one whose weights do not (256 MB ternary
// N=4 / int4, 512 MB int8, 2 GiB fp32; 128 MB still came partly from L3 here): a DRAM-bound GEMV.
constexpr int64_t kMatmulNk[][2] = {{4096, 4096}, {11008, 4096}};
constexpr int64_t kDramNk[2] = {32768, 16384};

void register_matmul(const MatmulSpec& spec) {
  std::string name = std::string("matmul/") + to_string(spec.precision) + "/N:" + std::to_string(spec.n) +
                     "/K:" + std::to_string(spec.k) + "/M:" + std::to_string(spec.m);
  register_kernel(name, [spec] { return make_matmul(spec); }, true);
}

void register_matmuls() {
  for (Precision p : {Precision::kInt8U8, Precision::kInt8S32, Precision::kFp32})
    for (const auto& nk : kMatmulNk)
      for (int64_t m : {1, 8, 64}) register_matmul({m, nk[0], nk[1], p});
  for (Precision p : {Precision::kInt8U8, Precision::kFp32}) register_matmul({1, kDramNk[0], kDramNk[1], p});
}

void register_convs() {
  struct Shape {
    int64_t c_in, c_out, hw, stride;
  };
  // ResNet-20's 3x3 convolutions on a 28x28 input: the three stages and the two downsampling ones.
  const Shape kShapes[] = {{16, 16, 28, 1}, {32, 32, 14, 1}, {64, 64, 7, 1}, {16, 32, 28, 2}, {32, 64, 14, 2}};
  for (Precision p : {Precision::kInt8U8, Precision::kFp32})
    for (const Shape& s : kShapes)
      for (int64_t batch : {1, 64}) {
        ConvSpec spec{batch, s.c_in, s.c_out, s.hw, s.stride, p};
        std::string name = std::string("conv/") + to_string(p) + "/C:" + std::to_string(s.c_in) + "to" +
                           std::to_string(s.c_out) + "/HW:" + std::to_string(s.hw) +
                           "/stride:" + std::to_string(s.stride) + "/batch:" + std::to_string(batch);
        register_kernel(name, [spec] { return make_conv(spec); }, false);
      }
}

// ResNet-50's convolutions at batch 1 (224x224 input): each stage's 3x3, its expanding and its
// reducing 1x1 (stride 1; the stem and the strided ones left out).
struct Resnet50Conv {
  int64_t c_in, c_out, hw, kernel;
};
constexpr Resnet50Conv kResnet50Convs[] = {{64, 64, 56, 3},    {64, 256, 56, 1},  {256, 64, 56, 1},
                                           {128, 128, 28, 3},  {128, 512, 28, 1}, {512, 128, 28, 1},
                                           {256, 256, 14, 3},  {256, 1024, 14, 1}, {1024, 256, 14, 1},
                                           {512, 512, 7, 3},   {512, 2048, 7, 1}, {2048, 512, 7, 1}};

std::string resnet50_name(const Resnet50Conv& s) {
  return "/resnet50/C:" + std::to_string(s.c_in) + "to" + std::to_string(s.c_out) + "/HW:" + std::to_string(s.hw) +
         "/k:" + std::to_string(s.kernel);
}

void register_resnet50_convs() {
  for (const Resnet50Conv& s : kResnet50Convs) {
    ConvSpec spec{1, s.c_in, s.c_out, s.hw, 1, Precision::kInt8U8, s.kernel};
    register_kernel("conv/int8_u8" + resnet50_name(s), [spec] { return make_conv(spec); }, false);
  }
}

// ------------------------------------------------------------------------------------------------
// tern's integer kernels on the same shapes: int8 weights (qgemm on packed panels), ternary
// weights with one 7-bit unit per 4 (N=4) or 64 (N=64) values of K and plain int4 codes
// (ternary_qgemm / int4_qgemm: decoded in registers and streamed for up to 64 columns on
// AVX-512, decoded + qgemm for more). A Conv shape is measured as the GEMM of its im2col: rows =
// C_out, depth = 9 C_in, columns = batch x OH x OW.

enum class TernWeights { kInt8, kTernary, kInt4 };

struct TernGemm {
  int64_t rows, depth, cols;
  TernWeights weights;
  int64_t group = 4;  // ternary: values of K per unit
};

struct TernGemmData {
  TernGemm spec{};
  kernels::QPackedWeights dense;
  std::optional<kernels::TernaryPanels> ternary;
  std::optional<kernels::Int4Panels> int4;
  std::vector<int32_t> row_sums;
  std::vector<uint8_t> x;
  std::vector<int32_t> c;
  std::vector<int8_t> scratch;
  int64_t stride = 0;
  double weight_bytes = 0;  // bytes a call streams: the packed weights (masks + units, nibbles)
};

// A cheap generator: the 32768 x 16384 shapes have 537M weights to fill.
struct FastRandom {
  uint64_t state = 0x9E3779B97F4A7C15ULL;
  uint32_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state >> 32);
  }
  int below(int n) { return static_cast<int>((static_cast<uint64_t>(next()) * static_cast<uint64_t>(n)) >> 32); }
};

std::unique_ptr<TernGemmData> make_tern_gemm(const TernGemm& g) {
  auto d = std::make_unique<TernGemmData>();
  d->spec = g;
  FastRandom gen;
  const int64_t steps = (g.depth + 3) / 4;
  d->stride = steps * 4;
  switch (g.weights) {
    case TernWeights::kInt8: {
      std::vector<int8_t> w(static_cast<size_t>(g.rows * g.depth));
      for (int8_t& v : w) v = static_cast<int8_t>(gen.below(255) - 127);
      d->dense = kernels::QPackedWeights::pack(w.data(), g.rows, g.depth, g.depth);
      d->weight_bytes = static_cast<double>(g.rows * g.depth);
      break;
    }
    case TernWeights::kTernary: {
      d->ternary.emplace(g.rows, g.depth, std::max<int64_t>(1, g.group / 4));
      for (int64_t r = 0; r < g.rows; ++r) {
        for (int64_t k = 0; k < g.depth; ++k) d->ternary->set_code(r, k, gen.below(3) - 1);
        for (int64_t s = 0; s < steps; s += d->ternary->steps_per_unit()) d->ternary->set_unit(r, s, 1 + gen.below(127));
      }
      d->weight_bytes = static_cast<double>(d->ternary->bytes());
      break;
    }
    case TernWeights::kInt4: {
      d->int4.emplace(g.rows, g.depth);
      for (int64_t r = 0; r < g.rows; ++r)
        for (int64_t k = 0; k < g.depth; ++k) d->int4->set_code(r, k, gen.below(16) - 8);
      d->weight_bytes = static_cast<double>(d->int4->bytes());
      break;
    }
  }
  // Row sums only matter to the AVX2 kernels without AVX-VNNI (and the sums' speed not at all).
  d->row_sums.assign(static_cast<size_t>((g.rows + 15) / 16 * 16), 0);
  d->x.resize(static_cast<size_t>(g.cols * d->stride));
  for (uint8_t& v : d->x) v = static_cast<uint8_t>(gen.next());
  d->c.resize(static_cast<size_t>(g.cols * g.rows));
  return d;
}

// One-entry cache, as for oneDNN's kernels: the data survive Google Benchmark's repeated calls
// (and the change of thread count), and at most one set of weights is resident.
TernGemmData& cached_tern_gemm(const TernGemm& g) {
  static std::unique_ptr<TernGemmData> cached;
  auto same = [&](const TernGemm& a) {
    return a.rows == g.rows && a.depth == g.depth && a.cols == g.cols && a.weights == g.weights && a.group == g.group;
  };
  if (!cached || !same(cached->spec)) {
    cached.reset();
    cached = make_tern_gemm(g);
  }
  return *cached;
}

void run_tern_gemm(benchmark::State& state, const TernGemm& g) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  TernGemmData& d = cached_tern_gemm(g);
  auto once = [&] {
    if (d.ternary)
      kernels::ternary_qgemm(*d.ternary, d.row_sums.data(), g.cols, d.x.data(), d.stride, d.c.data(), g.rows, d.scratch,
                             &pool);
    else if (d.int4)
      kernels::int4_qgemm(*d.int4, d.row_sums.data(), g.cols, d.x.data(), d.stride, d.c.data(), g.rows, d.scratch, &pool);
    else
      kernels::qgemm(d.dense, g.cols, d.x.data(), d.stride, d.c.data(), g.rows, &pool);
  };
  once();
  for (auto _ : state) once();
  double macs = static_cast<double>(g.rows) * static_cast<double>(g.depth) * static_cast<double>(g.cols);
  state.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] = benchmark::Counter(d.weight_bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  const double weights = static_cast<double>(g.rows) * static_cast<double>(g.depth);
  const std::string bits = std::to_string(d.weight_bytes * 8 / weights).substr(0, 4);
  std::string kind = " int8";
  if (d.ternary)
    kind = " ternary " + std::to_string(g.group) + (kernels::ternary_streams(g.cols) ? " streamed" : " decoded");
  else if (d.int4)
    kind = std::string(" int4") + (kernels::int4_streams(g.cols) ? " streamed" : " decoded");
  state.SetLabel(std::string(kernels::qgemm_kernel_name()) + kind + " (" + bits + " bits/weight)");
}

void register_tern(const std::string& name, const TernGemm& g) {
  benchmark::RegisterBenchmark(name.c_str(), [g](benchmark::State& state) { run_tern_gemm(state, g); })
      ->ArgName("threads")
      ->Arg(2)
      ->Arg(1)
      ->UseRealTime()
      ->Unit(benchmark::kMicrosecond);
}

void register_tern_gemms(int64_t n, int64_t k, int64_t m) {
  std::string shape = "/N:" + std::to_string(n) + "/K:" + std::to_string(k) + "/M:" + std::to_string(m);
  register_tern("tern/int8" + shape, {n, k, m, TernWeights::kInt8});
  register_tern("tern/ternary_n4" + shape, {n, k, m, TernWeights::kTernary, 4});
  register_tern("tern/ternary_n64" + shape, {n, k, m, TernWeights::kTernary, 64});
  register_tern("tern/int4" + shape, {n, k, m, TernWeights::kInt4});
}

void register_tern_kernels() {
  for (const auto& nk : kMatmulNk)
    for (int64_t m : {1, 8, 64}) register_tern_gemms(nk[0], nk[1], m);
  register_tern_gemms(kDramNk[0], kDramNk[1], 1);
  struct ConvShape {
    int64_t c_in, c_out, hw, stride;
  };
  const ConvShape kShapes[] = {{16, 16, 28, 1}, {32, 32, 14, 1}, {64, 64, 7, 1}, {16, 32, 28, 2}, {32, 64, 14, 2}};
  for (const ConvShape& s : kShapes)
    for (int64_t batch : {1, 64}) {
      int64_t out_hw = s.hw / s.stride;
      TernGemm g{s.c_out, 9 * s.c_in, batch * out_hw * out_hw, TernWeights::kInt8};
      std::string name = "/C:" + std::to_string(s.c_in) + "to" + std::to_string(s.c_out) + "/HW:" + std::to_string(s.hw) +
                         "/stride:" + std::to_string(s.stride) + "/batch:" + std::to_string(batch);
      register_tern("tern-conv-gemm/int8" + name, g);
      g.weights = TernWeights::kTernary;
      register_tern("tern-conv-gemm/ternary_n4" + name, g);
    }
}

// The integer engine's convolution kernel on a padded NHWC input (random codes and weights).
struct TernConvData {
  Resnet50Conv spec{};
  kernels::QPackedWeights w;
  std::vector<uint8_t> x;  // (hw + 2 pad)^2 pixels of c_in codes
  std::vector<int64_t> offset;
  std::vector<int32_t> c;  // out pixels x c_out
};

std::unique_ptr<TernConvData> make_tern_conv(const Resnet50Conv& s) {
  auto d = std::make_unique<TernConvData>();
  d->spec = s;
  FastRandom gen;
  const int64_t depth = s.kernel * s.kernel * s.c_in, pad = (s.kernel - 1) / 2, wp = s.hw + 2 * pad;
  std::vector<int8_t> w(static_cast<size_t>(s.c_out * depth));
  for (int8_t& v : w) v = static_cast<int8_t>(gen.below(255) - 127);
  d->w = kernels::QPackedWeights::pack(w.data(), s.c_out, depth, depth);
  d->x.resize(static_cast<size_t>(wp * wp * s.c_in));
  for (uint8_t& v : d->x) v = static_cast<uint8_t>(gen.next());
  for (int64_t t = 0; t < s.kernel * s.kernel; ++t)  // tap-major K, 4 channels per step
    for (int64_t ch = 0; ch < s.c_in; ch += 4) d->offset.push_back(((t / s.kernel) * wp + t % s.kernel) * s.c_in + ch);
  d->c.resize(static_cast<size_t>(s.hw * s.hw * s.c_out));
  return d;
}

void run_tern_conv(benchmark::State& state, const Resnet50Conv& s) {
  const int threads = static_cast<int>(state.range(0));
  ThreadPool pool(threads);
  static std::unique_ptr<TernConvData> cached;
  if (!cached || cached->spec.c_in != s.c_in || cached->spec.c_out != s.c_out || cached->spec.hw != s.hw ||
      cached->spec.kernel != s.kernel)
    cached = make_tern_conv(s);
  TernConvData& d = *cached;
  const int64_t pad = (s.kernel - 1) / 2, wp = s.hw + 2 * pad, steps = d.w.steps();
  const int64_t panel_bytes = steps * kernels::kQPanelRows * kernels::kQStep;
  // As the integer engine: one item per output row; a map with fewer rows than 8 per thread
  // also splits the channels into blocks of 4 panels.
  const bool split = threads > 1 && s.hw < 8 * threads && s.c_out > 2 * kernels::kQPanelRows;
  const int64_t block_rows = split ? (s.c_out >= 8 * kernels::kQPanelRows ? 4 : 2) * kernels::kQPanelRows : s.c_out;
  const int64_t blocks = (s.c_out + block_rows - 1) / block_rows;
  auto once = [&] {
    pool.parallel_for(s.hw * blocks, [&](int64_t begin, int64_t end) {
      std::vector<const uint8_t*> base(static_cast<size_t>(s.hw));
      for (int64_t item = begin; item < end; ++item) {
        const int64_t oh = item / blocks, r0 = item % blocks * block_rows;
        for (int64_t ow = 0; ow < s.hw; ++ow) base[static_cast<size_t>(ow)] = d.x.data() + (oh * wp + ow) * s.c_in;
        kernels::qgemm_indirect(d.w.data() + r0 / kernels::kQPanelRows * panel_bytes, d.w.row_sums() + r0,
                                std::min(block_rows, s.c_out - r0), steps, s.hw, base.data(), d.offset.data(),
                                d.c.data() + oh * s.hw * s.c_out + r0, s.c_out);
      }
    });
  };
  once();
  for (auto _ : state) once();
  const double macs = static_cast<double>(s.hw * s.hw) * static_cast<double>(s.c_out) *
                      static_cast<double>(s.kernel * s.kernel * s.c_in);
  state.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(std::string(kernels::qgemm_indirect_kernel_name()) + " implicit GEMM" + (split ? ", 4-panel blocks" : ""));
}

void register_tern_resnet50_convs() {
  for (const Resnet50Conv& s : kResnet50Convs)
    benchmark::RegisterBenchmark(("tern-conv/int8" + resnet50_name(s)).c_str(),
                                 [s](benchmark::State& state) { run_tern_conv(state, s); })
        ->ArgName("threads")
        ->Arg(2)
        ->Arg(1)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
}

int run(int argc, char** argv) {
  if (!tern::bench::initialize_with_defaults(argc, argv, {"--benchmark_min_time=0.2"})) return 1;
  benchmark::AddCustomContext("onednn_version", onednn_version());
  benchmark::AddCustomContext("onednn_isa", isa_name(dnnl::get_effective_cpu_isa()));
  const char* wait_policy = std::getenv("OMP_WAIT_POLICY");
  benchmark::AddCustomContext("omp_wait_policy", wait_policy ? wait_policy : "default");
  register_matmuls();
  register_convs();
  register_resnet50_convs();
  register_tern_kernels();
  register_tern_resnet50_convs();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  tern::bench::rerun_with_passive_omp_wait(argv, "bench_onednn_kernels");
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_onednn_kernels: %s\n", e.what());
    return 1;
  }
}
