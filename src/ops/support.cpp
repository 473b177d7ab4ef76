#include "ops/support.h"

#include <cstring>

namespace tern::ops {

int64_t dims_product(const Shape& shape, size_t begin, size_t end, const std::string& who) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) {
    if (shape[i] < 0) return kDynamicDim;
    p = dim_mul(p, shape[i], who);
  }
  return p;
}

int64_t mac_product(std::initializer_list<int64_t> factors, const std::string& who) {
  int64_t n = 1;
  for (int64_t f : factors) {
    if (f < 0) return -1;
    check(!__builtin_mul_overflow(n, f, &n), who + ": its multiply-accumulate count overflows 64 bits");
  }
  return n;
}

int64_t mac_elements(const Shape& shape, size_t begin, const std::string& who) {
  int64_t n = 1;
  for (size_t i = begin; i < shape.size(); ++i) {
    if (shape[i] < 0) return -1;
    n = mac_product({n, shape[i]}, who);
  }
  return n;
}

int64_t macs_per_output_times_last_dim(const CostCall& c) {
  std::optional<Shape> x = c.input(0);
  return mac_product({c.outputs_per_image, x && !x->empty() ? x->back() : -1}, c.who);
}

int64_t macs_per_output_times_weight(const CostCall& c) {
  std::optional<Shape> w = c.input(1);
  return mac_product({c.outputs_per_image, w && w->size() >= 2 ? mac_elements(*w, 1, c.who) : -1}, c.who);
}

std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

void strided_copy(const std::byte* x, int64_t offset, const Shape& shape, std::span<const int64_t> stride, size_t es,
                  std::byte* y) {
  // (extent, stride) per output dimension, outermost first, without size-1 dimensions, merged.
  std::vector<std::pair<int64_t, int64_t>> dims;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return;
    if (shape[d] == 1) continue;
    if (!dims.empty() && dims.back().second == stride[d] * shape[d]) dims.back() = {dims.back().first * shape[d], stride[d]};
    else dims.emplace_back(shape[d], stride[d]);
  }
  const std::byte* base = x + offset * static_cast<int64_t>(es);
  if (dims.empty()) {
    std::memcpy(y, base, es);
    return;
  }
  const auto [inner, inner_stride] = dims.back();
  dims.pop_back();
  const size_t run = static_cast<size_t>(inner) * es;
  std::vector<int64_t> index(dims.size(), 0);
  for (;;) {
    int64_t src = 0;
    for (size_t d = 0; d < dims.size(); ++d) src += index[d] * dims[d].second;
    const std::byte* from = base + src * static_cast<int64_t>(es);
    if (inner_stride == 1) {
      std::memcpy(y, from, run);
    } else {
      const int64_t step = inner_stride * static_cast<int64_t>(es);
      switch (es) {
        case 4:
          for (int64_t j = 0; j < inner; ++j) std::memcpy(y + j * 4, from + j * step, 4);
          break;
        case 8:
          for (int64_t j = 0; j < inner; ++j) std::memcpy(y + j * 8, from + j * step, 8);
          break;
        case 2:
          for (int64_t j = 0; j < inner; ++j) std::memcpy(y + j * 2, from + j * step, 2);
          break;
        case 1:
          for (int64_t j = 0; j < inner; ++j) y[j] = from[j * step];
          break;
        default:
          for (int64_t j = 0; j < inner; ++j) std::memcpy(y + static_cast<int64_t>(es) * j, from + j * step, es);
      }
    }
    y += run;
    size_t d = dims.size();
    for (; d-- > 0;) {
      if (++index[d] < dims[d].first) break;
      index[d] = 0;
    }
    if (d == static_cast<size_t>(-1)) return;
  }
}

std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  std::vector<int64_t> own = strides_of(in);
  size_t offset = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) s[offset + i] = in[i] == 1 ? 0 : own[i];
  return s;
}

void require_float(const OpContext& ctx, const Tensor& t, const char* what) {
  if (t.dtype() != DataType::kFloat32)  // (every run: the message is built only on failure)
    throw Error(ctx.who + ": " + what + " must be float32, got " + to_string(t.dtype()));
}

int64_t window_output(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_begin, int64_t pad_end,
                      bool ceil_mode, const std::string& who) {
  if (in < 0) return kDynamicDim;
  int64_t span = dim_add(dim_add(in, pad_begin, who), pad_end, who) - dim_mul(dilation, kernel - 1, who) - 1;
  if (span < 0) return -2;
  int64_t out = (ceil_mode ? span / stride + (span % stride != 0) : span / stride) + 1;
  if (ceil_mode && dim_mul(out - 1, stride, who) >= in + pad_begin) --out;
  return out;
}

void fill_default(std::vector<int64_t>& v, size_t n, int64_t value) {
  if (v.empty()) v.assign(n, value);
}

void resolve_auto_pad(AutoPad& auto_pad, std::vector<int64_t>& pads, const Shape& in_shape,
                      const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                      const std::vector<int64_t>& dilations, const std::string& who) {
  size_t n = kernel.size();
  if (auto_pad == AutoPad::kNotSet) return;
  // SAME padding depends on the input size: with a dynamic one it is resolved at run time.
  if (auto_pad != AutoPad::kValid)
    for (size_t i = 0; i < n; ++i)
      if (in_shape[2 + i] < 0) return;
  pads.assign(2 * n, 0);
  if (auto_pad != AutoPad::kValid) {
    for (size_t i = 0; i < n; ++i) {
      int64_t in = in_shape[2 + i];
      check(in >= 0, who + ": auto_pad SAME needs a known spatial size");
      int64_t out = in / strides[i] + (in % strides[i] != 0);
      int64_t total = std::max<int64_t>(
          0, dim_add(dim_add(dim_mul(std::max<int64_t>(out - 1, 0), strides[i], who), dim_mul(dilations[i], kernel[i] - 1, who), who), 1, who) - in);
      int64_t small = total / 2, large = total - small;
      pads[i] = auto_pad == AutoPad::kSameUpper ? small : large;
      pads[i + n] = auto_pad == AutoPad::kSameUpper ? large : small;
    }
  }
  auto_pad = AutoPad::kNotSet;
}

void check_window_attrs(const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                        const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, size_t spatial,
                        const std::string& who) {
  check(kernel.size() == spatial && strides.size() == spatial && dilations.size() == spatial &&
            pads.size() == 2 * spatial,
        who + ": kernel/strides/pads/dilations do not match the input's " + std::to_string(spatial) +
            " spatial axes");
  for (size_t i = 0; i < spatial; ++i) {
    check(kernel[i] >= 1 && strides[i] >= 1 && dilations[i] >= 1, who + ": kernel, strides and dilations must be >= 1");
    check(pads[i] >= 0 && pads[i + spatial] >= 0, who + ": negative pads are not supported");
  }
}

AutoPad parse_auto_pad(const OnnxNode& n) {
  std::string s = n.get_string("auto_pad", "NOTSET");
  if (s == "NOTSET" || s.empty()) return AutoPad::kNotSet;
  if (s == "SAME_UPPER") return AutoPad::kSameUpper;
  if (s == "SAME_LOWER") return AutoPad::kSameLower;
  if (s == "VALID") return AutoPad::kValid;
  throw Error(n.who + ": unknown auto_pad '" + s + "'");
}

void export_window(OnnxWriter& w, size_t n, AutoPad auto_pad, const std::vector<int64_t>& kernel,
                   const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                   const std::vector<int64_t>& dilations) {
  w.attr(n, "kernel_shape", kernel);
  if (!strides.empty()) w.attr(n, "strides", strides);
  if (!dilations.empty()) w.attr(n, "dilations", dilations);
  if (auto_pad != AutoPad::kNotSet) {
    static const char* const kNames[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
    w.attr(n, "auto_pad", std::string(kNames[static_cast<int>(auto_pad)]));
  } else if (!pads.empty()) {
    w.attr(n, "pads", pads);
  }
}

std::vector<Shape> same_shape(ShapeCall& c) {
  c.need_inputs(1);
  return {c.in[0]};
}

Shape broadcast_all(std::span<const Shape> shapes, const std::string& who) {
  Shape out;
  for (const Shape& s : shapes) out = broadcast_shapes(out, s, who);
  return out;
}

std::vector<Shape> broadcast_shape(ShapeCall& c) {
  c.need_inputs(1);  // the import checked the count
  return {broadcast_all(c.in, c.who)};
}

std::optional<Content> content_of_input0(const ContentCall& c) {
  if (c.in.empty() || !c.in[0]) return std::nullopt;
  return *c.in[0];
}

bool is_known(int64_t element) { return element != kSymbolicBatch && element != kUnknownElement; }

}  // namespace tern::ops
