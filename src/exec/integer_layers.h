// The integer form of a quantized Conv/Gemm layer, shared by the integer engine's two modes (the
// fused integer program and the hybrid FP32 graph; see tern/integer_executor.h).
#pragma once

#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kernels/int8/int4_panels.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/graph.h"
#include "tern/quantized_model.h"
#include "tern/thread_pool.h"

namespace tern::integer {

// One term's integer weights for one convolution group: rows = filters of the group, depth =
// taps * channels, K tap-major (k = tap * channels + channel, an NHWC patch's order).
struct TermGroup {
  std::optional<kernels::TernaryPanels> ternary;  // when every row-step has one magnitude
  std::optional<kernels::Int4Panels> int4;        // int4 layers: 4-bit codes (times units)
  kernels::QPackedWeights dense;                  // otherwise: int8
  std::vector<int32_t> row_sums;                  // padded to whole panels
  // Writes the group's int8 panels (qgemm.h's layout) to `out`: decoded codes or a copy.
  void panels(int8_t* out) const;
  void panels(int8_t* out, int64_t begin, int64_t end) const;  // panels [begin, end) only, at their place
  int64_t panel_bytes() const;  // of all its panels
  int64_t panel_count() const;
  // C[col][row] for `cols` activation rows, on the kernel of its form (ternary/int4 stream their
  // packed codes for few columns); scratch holds decoded panels.
  void gemm(int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc, std::vector<int8_t>& scratch,
            ThreadPool* pool) const;
  const char* kind() const;  // "ternary", "int4", "int8"
  std::vector<int8_t> weights() const;  // row-major int8 (decoded; for repacking)
};

// The integer weights w (row-major rows x depth, values in [-127, 127]) in their most compact
// exact form: ternary panels, int4 panels (int4 layers: plain codes, or `codes` times `units` when
// given), else int8 panels.
TermGroup make_term_group(const int8_t* w, int64_t rows, int64_t depth, bool int4 = false,
                          const int8_t* codes = nullptr, const uint8_t* units = nullptr);

struct IntTerm {
  std::vector<TermGroup> groups;
  std::vector<float> step;  // per output filter: the integer weight's real value is w * step
  // Depthwise layers: the weights as int8, [tap][channel] (9 per channel: the direct kernel reads
  // them per tap across channels; the only int8 copy of ternary weights the engine keeps).
  std::vector<int8_t> depthwise;
};

struct IntLayer {
  std::string node;
  bool gemm = false;
  ConvAttrs conv;
  Shape weight_shape;
  int64_t out = 0, in = 0, taps = 0, groups = 1;  // in: channels per group
  quant::ActivationQuant input;
  std::vector<IntTerm> terms;  // every stored term
  int active = 1;
  std::vector<float> bias;     // dequantized, per filter (empty: none)
  float clamp_lo = -INFINITY, clamp_hi = INFINITY;
  std::string weights_kind() const;  // "ternary", "int4", "int8" or "mixed" (of every term)
  // The active terms' weights as int8 panels (ternary and int4 decoded, terms stacked), per group
  // and level, made once for every program that runs this layer (each thread's copy included):
  // see integer_program.cpp's shared_panels.
  struct DecodedCache {
    std::mutex mutex;
    int active = -1;
    std::map<int64_t, std::shared_ptr<const std::vector<int8_t>>> groups;
  };
  std::shared_ptr<DecodedCache> decoded = std::make_shared<DecodedCache>();

  int64_t rows() const { return out / groups; }
  int64_t depth() const { return in * taps; }
  bool depthwise() const { return !gemm && in == 1 && groups > 1 && rows() == 1; }
};

// The exact integer form of one term of layer l: w[o][k], K tap-major within each group
// (k = tap * channels + channel), values in [-127, 127], with w * step[o] the term's dequantized
// weight. nullopt and `why` when there is none (logarithmic or float32 group scales, codes times
// units above 127). units (when not null) receives each weight's group unit (1 without two-level
// scales), same order.
std::optional<std::vector<int8_t>> term_integer_weights(const quant::QuantizedLayer& l, const quant::QuantizedWeights& q,
                                                        std::vector<float>& step, std::string& why,
                                                        std::vector<uint8_t>* units = nullptr);

// Builds the integer form of quantized layer `l` (its node in `g`); nullopt and `why` when it has
// none (float32 input, logarithmic or per-group float scales, codes times units above 127, ...).
std::optional<IntLayer> build_int_layer(const quant::QuantizedLayer& l, const Node& node, const Graph& g,
                                        std::string& why);

// The work buffers of run_layer, kept between layers and runs: allocating (and first touching)
// tens of MB per layer at batch 64 cost more than the arithmetic.
struct LayerScratch {
  std::vector<uint8_t> codes, patches;
  std::vector<int32_t> acc;
  std::vector<float> sum;
  std::vector<int8_t> panels;  // decoded ternary panels (ternary_qgemm)
};

// A layer's ternary / int4 weights as int8 panels per (group, term), decoded on first use when
// the columns are too many for the streaming kernels: kept by whoever runs that layer again.
struct DecodedPanels {
  const IntLayer* layer = nullptr;
  std::vector<std::vector<int8_t>> panels;
};

// Layer L on a whole float tensor x (NCHW images for a Conv, [..., K] rows for a Gemm), quantized
// as the simulation's FakeQuantize does it (the layer's scale, or per image or per token when
// dynamic); out_shape is the output's. The hybrid graph's layers, and the fused program's layers
// on values that are not batches of images (a sequence-first attention input, per-token scales).
Tensor run_layer(const IntLayer& L, const Tensor& x, const Shape& out_shape, LayerScratch& scratch, ThreadPool* pool,
                 DecodedPanels* decoded = nullptr);

}  // namespace tern::integer
