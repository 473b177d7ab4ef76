// Integer forms of quantized layers (integer_layers.h).
#include "exec/integer_layers.h"

#include <algorithm>
#include <cstring>

#include "tern/error.h"

namespace tern::integer {

namespace {

using kernels::kQPanelRows;
using kernels::kQStep;


// The most K steps per block (16, 8, 4, 2 or 1) over which value_of(row, step) is one number
// wherever it is nonzero (0: "no value here").
template <typename F>
int64_t shared_steps(int64_t rows, int64_t steps, F value_of) {
  auto shares = [&](int64_t spu) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < steps; b += spu) {
        int unit = 0;
        for (int64_t s = b; s < std::min(steps, b + spu); ++s) {
          int m = value_of(r, s);
          if (m == 0) continue;
          if (unit == 0) unit = m;
          if (m != unit) return false;
        }
      }
    return true;
  };
  for (int64_t candidate : {16, 8, 4, 2})
    if (candidate <= steps && shares(candidate)) return candidate;
  return shares(1) ? 1 : 0;
}

// Int4 weights at 4 bits: plain codes in [-8, 7] (units folded into the filter step), or int4
// codes times one 7-bit unit per (row, block of steps). nullopt when neither describes w exactly.
std::optional<kernels::Int4Panels> int4_form(const int8_t* w, const int8_t* codes, const uint8_t* units, int64_t rows,
                                              int64_t depth) {
  const int64_t steps = (depth + kQStep - 1) / kQStep;
  bool plain = true;
  for (int64_t i = 0; i < rows * depth; ++i) plain = plain && w[i] >= -8 && w[i] <= 7;
  if (plain) {
    kernels::Int4Panels p(rows, depth, 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t k = 0; k < depth; ++k) p.set_code(r, k, w[r * depth + k]);
    return p;
  }
  if (!codes || !units) return std::nullopt;
  for (int64_t i = 0; i < rows * depth; ++i)
    if (codes[i] < -8 || codes[i] > 7) return std::nullopt;
  // The unit of each (row, step): 0 where every code is zero, -1 where two differ.
  std::vector<int> unit(static_cast<size_t>(rows * steps), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) {
      if (codes[r * depth + k] == 0) continue;
      int& u = unit[static_cast<size_t>(r * steps + k / kQStep)];
      int v = units[r * depth + k];
      if (u == 0) u = v;
      else if (u != v) u = -1;
    }
  for (int u : unit)
    if (u < 0 || u > 127) return std::nullopt;
  const int64_t spu = shared_steps(rows, steps, [&](int64_t r, int64_t s) { return unit[static_cast<size_t>(r * steps + s)]; });
  if (spu == 0) return std::nullopt;
  kernels::Int4Panels p(rows, depth, spu);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0; s < steps; ++s)
      if (int u = unit[static_cast<size_t>(r * steps + s)]) p.set_unit(r, s, u);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k)
      if (codes[r * depth + k] != 0) p.set_code(r, k, codes[r * depth + k]);
  return p;
}

}  // namespace

// (integer_layers.h) Also what `tern export` writes as a layer's int8 weights.
std::optional<std::vector<int8_t>> term_integer_weights(const quant::QuantizedLayer& l, const quant::QuantizedWeights& q,
                                                        std::vector<float>& step, std::string& why,
                                                        std::vector<uint8_t>* units) {
  using namespace quant;
  if (l.config.log_scales) {
    why = "logarithmic group scales";
    return std::nullopt;
  }
  const WeightGrouping& g = q.grouping;
  const int64_t out = g.out, in = g.in, taps = g.taps;
  const bool two_level = !q.filter_steps.empty();
  step.assign(static_cast<size_t>(out), 0.0f);
  std::vector<int8_t> w(static_cast<size_t>(out * in * taps));
  if (units) units->assign(w.size(), 1);
  for (int64_t o = 0; o < out; ++o) {
    const GroupScales& first = q.scales[static_cast<size_t>(g.group_of(o, 0, 0))];
    step[static_cast<size_t>(o)] = two_level ? q.filter_steps[static_cast<size_t>(o)] : first.positive;
    for (int64_t c = 0; c < in; ++c)
      for (int64_t t = 0; t < taps; ++t) {
        const GroupScales& s = q.scales[static_cast<size_t>(g.group_of(o, c, t))];
        int code = q.codes[static_cast<size_t>((o * in + c) * taps + t)];
        int value = code;
        if (two_level) {
          float st = q.filter_steps[static_cast<size_t>(o)];
          int unit = scale_unit(code >= 0 ? s.positive : s.negative, st, false);
          value = code * unit;
          if (units) (*units)[static_cast<size_t>((o * taps + t) * in + c)] = static_cast<uint8_t>(std::clamp(unit, 0, 255));
        } else if (s.positive != first.positive || s.negative != first.positive) {
          why = s.positive != s.negative ? "asymmetric float32 scales" : "float32 scales per group";
          return std::nullopt;
        }
        if (value < -127 || value > 127) {
          why = "codes times group units exceed int8";
          return std::nullopt;
        }
        w[static_cast<size_t>((o * taps + t) * in + c)] = static_cast<int8_t>(value);  // tap-major
      }
  }
  return w;
}

TermGroup make_term_group(const int8_t* w, int64_t rows, int64_t depth, bool int4, const int8_t* codes,
                          const uint8_t* units) {
  TermGroup tg;
  const int64_t steps = (depth + kQStep - 1) / kQStep;
  // The magnitude of each (row, step)'s nonzero weights: 0 when all are zero, -1 when they differ
  // (then the layer needs dense int8 panels).
  std::vector<int> magnitude(static_cast<size_t>(rows * steps), 0);
  bool ternary = true;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) {
      int v = std::abs(static_cast<int>(w[r * depth + k]));
      int& m = magnitude[static_cast<size_t>(r * steps + k / kQStep)];
      if (v == 0) continue;
      if (m == 0) m = v;
      if (m != v) ternary = false;
    }
  tg.row_sums.assign(static_cast<size_t>((rows + kQPanelRows - 1) / kQPanelRows * kQPanelRows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) tg.row_sums[static_cast<size_t>(r)] += w[r * depth + k];
  if (!ternary) {
    if (int4) tg.int4 = int4_form(w, codes, units, rows, depth);
    if (!tg.int4) tg.dense = kernels::QPackedWeights::pack(w, rows, depth, depth);
    return tg;
  }
  // The most steps that share one unit everywhere (groups of N = 4 * that along K).
  auto shares = [&](int64_t spu) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < steps; b += spu) {
        int unit = 0;
        for (int64_t s = b; s < std::min(steps, b + spu); ++s) {
          int m = magnitude[static_cast<size_t>(r * steps + s)];
          if (m == 0) continue;
          if (unit == 0) unit = m;
          if (m != unit) return false;
        }
      }
    return true;
  };
  int64_t spu = 1;
  for (int64_t candidate : {16, 8, 4, 2})
    if (candidate <= steps && shares(candidate)) {
      spu = candidate;
      break;
    }
  kernels::TernaryPanels panels(rows, depth, spu);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) {
      int v = w[r * depth + k];
      if (v == 0) continue;
      panels.set_code(r, k, v > 0 ? 1 : -1);
      panels.set_unit(r, k / kQStep, std::abs(v));
    }
  tg.ternary = std::move(panels);
  return tg;
}

std::vector<int8_t> TermGroup::weights() const {
  const int64_t rows = ternary ? ternary->rows() : int4 ? int4->rows() : dense.rows();
  const int64_t depth = ternary ? ternary->depth() : int4 ? int4->depth() : dense.depth();
  const int64_t steps = (depth + kQStep - 1) / kQStep;
  std::vector<int8_t> panel(static_cast<size_t>(panel_bytes()));
  panels(panel.data());
  std::vector<int8_t> w(static_cast<size_t>(rows * depth));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k)
      w[static_cast<size_t>(r * depth + k)] =
          panel[static_cast<size_t>((((r / kQPanelRows) * steps + k / kQStep) * kQPanelRows + r % kQPanelRows) * kQStep + k % kQStep)];
  return w;
}

void TermGroup::panels(int8_t* out) const { panels(out, 0, panel_count()); }

void TermGroup::panels(int8_t* out, int64_t begin, int64_t end) const {
  const int64_t bytes = panel_bytes() / std::max<int64_t>(1, panel_count());  // per panel
  if (ternary) kernels::decode_ternary(*ternary, begin, end, out + begin * bytes);
  else if (int4) kernels::decode_int4(*int4, begin, end, out + begin * bytes);
  else std::memcpy(out + begin * bytes, dense.data() + begin * bytes, static_cast<size_t>((end - begin) * bytes));
}

int64_t TermGroup::panel_count() const { return ternary ? ternary->panels() : int4 ? int4->panels() : dense.panels(); }

int64_t TermGroup::panel_bytes() const {
  const int64_t panels = ternary ? ternary->panels() : int4 ? int4->panels() : dense.panels();
  const int64_t steps = ternary ? ternary->steps() : int4 ? int4->steps() : dense.steps();
  return panels * steps * kQPanelRows * kQStep;
}

void TermGroup::gemm(int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc,
                     std::vector<int8_t>& scratch, ThreadPool* pool) const {
  if (ternary) kernels::ternary_qgemm(*ternary, row_sums.data(), cols, x, x_stride, c, ldc, scratch, pool);
  else if (int4) kernels::int4_qgemm(*int4, row_sums.data(), cols, x, x_stride, c, ldc, scratch, pool);
  else kernels::qgemm(dense, cols, x, x_stride, c, ldc, pool);
}

const char* TermGroup::kind() const { return ternary ? "ternary" : int4 ? "int4" : "int8"; }

std::string IntLayer::weights_kind() const {
  std::string kind;
  for (const IntTerm& t : terms)
    for (const TermGroup& g : t.groups) {
      if (kind.empty()) kind = g.kind();
      else if (kind != g.kind()) return "mixed";
    }
  return kind;
}

std::optional<IntLayer> build_int_layer(const quant::QuantizedLayer& l, const Node& node, const Graph& g,
                                      std::string& why_not) {
  auto fail = [&](std::string why) {
    why_not = std::move(why);
    return std::nullopt;
  };
  if (!l.input) return fail("float32 input");
  if (node.op == OpType::kConv && node.attr<ConvAttrs>().kernel.size() != 2) return fail("not a 2-D convolution");
  IntLayer L;
  L.node = l.node;
  L.gemm = node.op == OpType::kGemm;
  L.input = *l.input;
  L.out = l.out;
  L.taps = l.taps;
  L.groups = L.gemm ? 1 : node.attr<ConvAttrs>().group;
  L.in = l.in;
  if (L.gemm) {
    L.clamp_lo = node.attr<GemmAttrs>().clamp_lo;
    L.clamp_hi = node.attr<GemmAttrs>().clamp_hi;
  } else {
    L.conv = node.attr<ConvAttrs>();
    L.clamp_lo = L.conv.clamp_lo;
    L.clamp_hi = L.conv.clamp_hi;
  }
  L.weight_shape = g.value(node.inputs[1]).shape;
  if (node.inputs.size() > 2 && node.inputs[2] != kNoValue && g.is_constant(node.inputs[2])) {
    const Tensor& b = g.constant(node.inputs[2]);
    L.bias.assign(b.data<float>(), b.data<float>() + b.size());
  }
  const int64_t rows = L.out / L.groups, depth = L.in * L.taps;
  if (depth > kernels::kQMaxDepth) return fail("depth above the int32-safe maximum");
  for (const quant::QuantizedWeights& q : l.terms) {
    IntTerm term;
    std::string why;
    std::vector<uint8_t> units;
    std::optional<std::vector<int8_t>> w = term_integer_weights(l, q, term.step, why, &units);
    if (!w) return fail(why);
    // Int4 codes in the same tap-major order as w (for int4 codes times units).
    const bool int4 = l.config.format == quant::WeightFormat::kInt && l.config.bits <= 4;
    std::vector<int8_t> codes;
    if (int4) {
      codes.resize(w->size());
      for (int64_t o = 0; o < L.out; ++o)
        for (int64_t c = 0; c < L.in; ++c)
          for (int64_t t = 0; t < L.taps; ++t)
            codes[static_cast<size_t>((o * L.taps + t) * L.in + c)] = q.codes[static_cast<size_t>((o * L.in + c) * L.taps + t)];
    }
    if (L.depthwise()) {  // [tap][channel]: the direct kernel's order
      term.depthwise.resize(static_cast<size_t>(L.taps * L.groups));
      for (int64_t c = 0; c < L.groups; ++c)
        for (int64_t t = 0; t < L.taps; ++t) term.depthwise[static_cast<size_t>(t * L.groups + c)] = (*w)[static_cast<size_t>(c * L.taps + t)];
    }
    for (int64_t gi = 0; gi < L.groups; ++gi) {
      term.groups.push_back(make_term_group(w->data() + gi * rows * depth, rows, depth, int4,
                                            int4 ? codes.data() + gi * rows * depth : nullptr,
                                            units.data() + gi * rows * depth));
    }
    L.terms.push_back(std::move(term));
  }
  L.active = l.active_terms;
  return L;
}
}  // namespace tern::integer
