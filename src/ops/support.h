// Helpers the operator files share: checked dimension arithmetic, strides and broadcasting,
// element-wise kernel loops, sliding-window geometry.
#pragma once

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <vector>

#include "ops/op.h"

namespace tern::ops {

// Dimension arithmetic on untrusted shapes and attributes: an Error instead of an overflow.
inline int64_t dim_mul(int64_t a, int64_t b, const std::string& who) {
  int64_t r = 0;
  check(!__builtin_mul_overflow(a, b, &r), who + ": dimensions overflow 64 bits");
  return r;
}
inline int64_t dim_add(int64_t a, int64_t b, const std::string& who) {
  int64_t r = 0;
  check(!__builtin_add_overflow(a, b, &r), who + ": dimensions overflow 64 bits");
  return r;
}
// Product of shape[begin, end), kDynamicDim when any of them is unknown.
int64_t dims_product(const Shape& shape, size_t begin, size_t end, const std::string& who);

// inspect's counts: the product of the factors, -1 when any is unknown (< 0); an Error naming
// `who` past 2^63.
int64_t mac_product(std::initializer_list<int64_t> factors, const std::string& who);
// Elements of shape[begin..) (-1 when one is unknown).
int64_t mac_elements(const Shape& shape, size_t begin, const std::string& who);
// MACs of a layer whose every output reads input 0's last dim (MatMul, MatMulInteger) or the
// weight's dims past the first (Conv, ConvInteger).
int64_t macs_per_output_times_last_dim(const CostCall& c);
int64_t macs_per_output_times_weight(const CostCall& c);

// Row-major strides of a shape; strides that read `in` broadcast to `out` (0 along broadcast axes).
std::vector<int64_t> strides_of(const Shape& shape);
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out);

// y (contiguous, row-major of `shape`) = the elements of x at offset + sum_d index[d] * stride[d]
// (in elements of `es` bytes): a Transpose, a Slice. Dimensions of size 1 are dropped and
// neighbours that stay neighbours merged, and the innermost run is one memcpy when contiguous, so
// a transpose that only moves size-1 axes is one copy.
void strided_copy(const std::byte* x, int64_t offset, const Shape& shape, std::span<const int64_t> stride, size_t es,
                  std::byte* y);

void require_float(const OpContext& ctx, const Tensor& t, const char* what);

// y = f(x) on float32, split over the pool for large tensors.
template <typename F>
Tensor unary(const OpContext& ctx, const Tensor& x, F f) {
  require_float(ctx, x, "input");
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  const float* in = x.data<float>();
  float* out = y.data<float>();
  auto body = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) out[i] = f(in[i]);
  };
  if (ctx.pool) ctx.pool->parallel_for(x.size(), body, 1 << 14);
  else body(0, x.size());
  return y;
}

// y = f(a, b) with numpy broadcasting; y is allocated with the output shape already.
template <typename T, typename U = T, typename F>
void binary_typed(const Tensor& a, const Tensor& b, Tensor& y, F f, ThreadPool* pool = nullptr) {
  const Shape& out = y.shape();
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  U* py = y.data<U>();
  if (a.shape() == out && b.shape() == out) {  // the residual Add of every ResNet: worth both cores
    auto body = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) py[i] = f(pa[i], pb[i]);
    };
    if (pool) pool->parallel_for(y.size(), body, 1 << 14);
    else body(0, y.size());
    return;
  }
  if (b.size() == 1 && a.shape() == out) {
    for (int64_t i = 0; i < y.size(); ++i) py[i] = f(pa[i], pb[0]);
    return;
  }
  std::vector<int64_t> sa = broadcast_strides(a.shape(), out), sb = broadcast_strides(b.shape(), out);
  size_t rank = out.size();
  if (rank == 0) {
    py[0] = f(pa[0], pb[0]);
    return;
  }
  if (y.size() == 0) return;
  std::vector<int64_t> index(rank, 0);
  int64_t inner = out[rank - 1], ia = 0, ib = 0;
  for (int64_t done = 0; done < y.size(); done += inner) {
    ia = ib = 0;
    for (size_t d = 0; d + 1 < rank; ++d) {
      ia += index[d] * sa[d];
      ib += index[d] * sb[d];
    }
    for (int64_t j = 0; j < inner; ++j) py[done + j] = f(pa[ia + j * sa[rank - 1]], pb[ib + j * sb[rank - 1]]);
    for (size_t d = rank - 1; d-- > 0;) {
      if (++index[d] < out[d]) break;
      index[d] = 0;
    }
  }
}

// Calls f(flat output index, flat index into each input) over `out` with numpy broadcasting of
// every input shape (any count: Where's three, Max's many).
template <typename F>
void for_each_broadcast(const Shape& out, std::span<const Shape> ins, F f) {
  size_t rank = out.size();
  std::vector<std::vector<int64_t>> strides;
  for (const Shape& s : ins) strides.push_back(broadcast_strides(s, out));
  std::vector<int64_t> index(rank, 0), at(ins.size(), 0);
  int64_t total = element_count(out);
  for (int64_t o = 0; o < total; ++o) {
    std::fill(at.begin(), at.end(), 0);
    for (size_t d = 0; d < rank; ++d)
      for (size_t k = 0; k < ins.size(); ++k) at[k] += index[d] * strides[k][d];
    f(o, at);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out[d]) break;
      index[d] = 0;
    }
  }
}

// Broadcast of any number of shapes (numpy rules); throws naming `who`.
Shape broadcast_all(std::span<const Shape> shapes, const std::string& who);

// Calls f(dtype tag) for the numeric types tern's tensors hold; throws for others.
template <typename F>
decltype(auto) dispatch_numeric(const OpContext& ctx, DataType type, F&& f) {
  switch (type) {
    case DataType::kFloat32: return f(float{});
    case DataType::kInt64: return f(int64_t{});
    case DataType::kInt32: return f(int32_t{});
    case DataType::kInt8: return f(int8_t{});
    case DataType::kUInt8: return f(uint8_t{});
    default: throw Error(ctx.who + ": unsupported data type " + to_string(type));
  }
}

// ---- sliding windows (Conv, pooling) ----------------------------------------------------------------

// Output length of a window along one axis; ceil_mode drops a last window that would start in the
// end padding (PyTorch and the ONNX reference agree). -2: the window is larger than the padded input.
int64_t window_output(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_begin, int64_t pad_end,
                      bool ceil_mode, const std::string& who);
void fill_default(std::vector<int64_t>& v, size_t n, int64_t value);
// Resolves auto_pad into explicit pads given the input's spatial sizes (then kNotSet).
void resolve_auto_pad(AutoPad& auto_pad, std::vector<int64_t>& pads, const Shape& in_shape,
                      const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                      const std::vector<int64_t>& dilations, const std::string& who);
void check_window_attrs(const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                        const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, size_t spatial,
                        const std::string& who);
AutoPad parse_auto_pad(const OnnxNode& n);
// tern export: a window's attributes on ONNX node n (Conv, pools): auto_pad only while unresolved.
void export_window(OnnxWriter& w, size_t n, AutoPad auto_pad, const std::vector<int64_t>& kernel,
                   const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                   const std::vector<int64_t>& dilations);

// Shape rule of element-wise unary operators: the input's shape.
std::vector<Shape> same_shape(ShapeCall& c);
// Shape rule of broadcasting operators (every present input).
std::vector<Shape> broadcast_shape(ShapeCall& c);

// The JSON fields of AxisAttrs (Concat, Flatten, Softmax, Gather share the struct).
inline constexpr auto describe_axis = [](auto& a, auto&& field) {
  field("axis", a.axis);
  field("coerce_2d", a.coerce_2d);
};

// ---- shape values (ContentRule) ---------------------------------------------------------------------

// Input 0's elements unchanged (Identity, Cast between numbers, Squeeze, Unsqueeze).
std::optional<Content> content_of_input0(const ContentCall& c);
bool is_known(int64_t element);  // a number, not kSymbolicBatch or kUnknownElement

// ---- integer data (quantize_linear.cpp)

// Element i of a uint8, int8, int32 or int64 tensor; throws for other types.
int64_t integer_at(const Tensor& t, int64_t i);
DataType int32_type(const Node&, std::span<const DataType>, size_t);

// ---- ONNX import helpers ----------------------------------------------------------------------------

// An operator with exactly n inputs and no attributes tern reads.
template <size_t N>
void import_plain(OnnxNode& n) {
  n.need_inputs(N, N);
}

}  // namespace tern::ops
