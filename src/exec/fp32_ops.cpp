#include "exec/fp32_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "graph/shape_inference.h"
#include "kernels/fp32/sgemm.h"
#include "tern/calibration.h"
#include "tern/error.h"

namespace tern::ops {

namespace {

using kernels::MatrixView;

// Row-major strides of a shape.
std::vector<int64_t> strides_of(const Shape& shape) {
  std::vector<int64_t> s(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) s[i - 1] = s[i] * shape[i];
  return s;
}

// Strides that read `in` broadcast to `out` (0 along broadcast axes).
std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
  std::vector<int64_t> s(out.size(), 0);
  std::vector<int64_t> own = strides_of(in);
  size_t offset = out.size() - in.size();
  for (size_t i = 0; i < in.size(); ++i) s[offset + i] = in[i] == 1 ? 0 : own[i];
  return s;
}

void require_float(const OpContext& ctx, const Tensor& t, const char* what) {
  check(t.dtype() == DataType::kFloat32, ctx.who + ": " + what + " must be float32, got " + to_string(t.dtype()));
}

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

// FakeQuantize (graph.h): the same codes as quant::quantize_activation (x / scale in float, clamp,
// round half away from zero), times the scale. NaN stays NaN. The loop is quant::fake_quantize, which
// fine-tuning shares.
Tensor fake_quantize(const OpContext& ctx, const Tensor& x, const FakeQuantAttrs& a) {
  require_float(ctx, x, "input");
  const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
  const float hi = static_cast<float>(qmax);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  const int64_t images = x.rank() > 0 ? x.dim(0) : 1;
  const int64_t per_image = images > 0 ? x.size() / images : 0;
  for (int64_t n = 0; n < images; ++n) {
    const float* in = x.data<float>() + n * per_image;
    float* out = y.data<float>() + n * per_image;
    float scale = a.scale;
    if (a.dynamic) {
      float t = 0.0f;
      for (int64_t i = 0; i < per_image; ++i) t = std::max(t, a.is_unsigned ? in[i] : std::fabs(in[i]));
      check(std::isfinite(t), ctx.who + ": image " + std::to_string(n) + " holds an infinite value");
      if (t == 0.0f) {  // nothing above zero: every code is 0
        for (int64_t i = 0; i < per_image; ++i) out[i] = std::isnan(in[i]) ? in[i] : 0.0f;
        continue;
      }
      scale = a.power_of_two ? quant::power_of_two_scale(t, qmax) : t / hi;
    }
    auto body = [&](int64_t b, int64_t e) {
      quant::fake_quantize({in + b, static_cast<size_t>(e - b)}, {out + b, static_cast<size_t>(e - b)}, scale, qmax,
                           a.is_unsigned);
    };
    if (ctx.pool) ctx.pool->parallel_for(per_image, body, 1 << 14);
    else body(0, per_image);
  }
  return y;
}

template <typename T, typename F>
void binary_typed(const Tensor& a, const Tensor& b, Tensor& y, F f, ThreadPool* pool = nullptr) {
  const Shape& out = y.shape();
  const T* pa = a.data<T>();
  const T* pb = b.data<T>();
  T* py = y.data<T>();
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

template <typename T>
void binary_arith(const OpContext& ctx, const Tensor& a, const Tensor& b, Tensor& y) {
  switch (ctx.node.op) {
    case OpType::kAdd: binary_typed<T>(a, b, y, [](T p, T q) { return static_cast<T>(p + q); }, ctx.pool); break;
    case OpType::kSub: binary_typed<T>(a, b, y, [](T p, T q) { return static_cast<T>(p - q); }); break;
    case OpType::kMul: binary_typed<T>(a, b, y, [](T p, T q) { return static_cast<T>(p * q); }); break;
    default: {
      bool zero_division = false;
      binary_typed<T>(a, b, y, [&](T p, T q) {
        if constexpr (std::is_integral_v<T>) {
          if (q == 0) {
            zero_division = true;
            return T(0);
          }
        }
        return static_cast<T>(p / q);
      });
      check(!zero_division, ctx.who + ": integer division by zero");
    }
  }
}

Tensor binary(const OpContext& ctx, const Tensor& a, const Tensor& b, const Shape& out_shape) {
  check(a.dtype() == b.dtype(), ctx.who + ": inputs have different types " + to_string(a.dtype()) + " and " +
                                    to_string(b.dtype()));
  Tensor y = Tensor::uninitialized(a.dtype(), out_shape);
  switch (a.dtype()) {
    case DataType::kFloat32: binary_arith<float>(ctx, a, b, y); break;
    case DataType::kInt64: binary_arith<int64_t>(ctx, a, b, y); break;
    case DataType::kInt32: binary_arith<int32_t>(ctx, a, b, y); break;
    case DataType::kInt8: binary_arith<int8_t>(ctx, a, b, y); break;
    case DataType::kUInt8: binary_arith<uint8_t>(ctx, a, b, y); break;
    default: throw Error(ctx.who + ": unsupported data type " + to_string(a.dtype()));
  }
  return y;
}

Tensor gemm(const OpContext& ctx, std::span<const Tensor* const> in, const Shape& out_shape) {
  const auto& a = ctx.node.attr<GemmAttrs>();
  const Tensor& A = *in[0];
  const Tensor& B = *in[1];
  require_float(ctx, A, "A");
  require_float(ctx, B, "B");
  int64_t M = out_shape[0], N = out_shape[1], K = a.trans_a ? A.dim(0) : A.dim(1);
  MatrixView va{A.data<float>(), a.trans_a ? 1 : K, a.trans_a ? M : 1};
  MatrixView vb{B.data<float>(), a.trans_b ? 1 : N, a.trans_b ? K : 1};
  Tensor Y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  kernels::GemmEpilogue epi;
  const Tensor* C = in.size() > 2 ? in[2] : nullptr;
  bool simple = a.alpha == 1.0f && (!C || a.beta == 1.0f);
  if (simple && C && C->size() == N && C->shape().back() == N && N != 1) {
    epi.bias = C->data<float>();
    epi.bias_kind = kernels::BiasKind::kPerColumn;
  } else if (simple && C && C->rank() == 2 && C->dim(0) == M && C->dim(1) == 1 && M != 1) {
    epi.bias = C->data<float>();
    epi.bias_kind = kernels::BiasKind::kPerRow;
  } else if (C || !simple) {
    // General alpha, beta and broadcast C: product first, then combine.
    kernels::sgemm(M, N, K, va, vb, Y.data<float>(), N, epi, ctx.pool);
    float* y = Y.data<float>();
    std::vector<int64_t> sc = C ? broadcast_strides(C->shape(), out_shape) : std::vector<int64_t>{0, 0};
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float v = a.alpha * y[i * N + j];
        if (C) v += a.beta * C->data<float>()[i * sc[0] + j * sc[1]];
        y[i * N + j] = std::clamp(v, a.clamp_lo, a.clamp_hi);
      }
    return Y;
  }
  epi.clamp_lo = a.clamp_lo;
  epi.clamp_hi = a.clamp_hi;
  kernels::sgemm(M, N, K, va, vb, Y.data<float>(), N, epi, ctx.pool);
  return Y;
}

Tensor matmul(const OpContext& ctx, const Tensor& A, const Tensor& B, const Shape& out_shape) {
  require_float(ctx, A, "A");
  require_float(ctx, B, "B");
  Shape a = A.shape(), b = B.shape();
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  int64_t M = a[a.size() - 2], K = a.back(), N = b.back();
  Shape batch(out_shape.begin(), out_shape.end() - static_cast<int64_t>((A.rank() > 1) + (B.rank() > 1)));
  Shape a_batch(a.begin(), a.end() - 2), b_batch(b.begin(), b.end() - 2);
  std::vector<int64_t> sa = broadcast_strides(a_batch, batch), sb = broadcast_strides(b_batch, batch);
  Tensor Y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  int64_t count = batch.empty() ? 1 : element_count(batch);
  std::vector<int64_t> index(batch.size(), 0);
  for (int64_t n = 0; n < count; ++n) {
    int64_t oa = 0, ob = 0;
    for (size_t d = 0; d < batch.size(); ++d) {
      oa += index[d] * sa[d];
      ob += index[d] * sb[d];
    }
    kernels::sgemm(M, N, K, MatrixView{A.data<float>() + oa * M * K, K, 1}, MatrixView{B.data<float>() + ob * K * N, N, 1},
                   Y.data<float>() + n * M * N, N, {}, ctx.pool);
    for (size_t d = batch.size(); d-- > 0;) {
      if (++index[d] < batch[d]) break;
      index[d] = 0;
    }
  }
  return Y;
}

Tensor batchnorm(const OpContext& ctx, std::span<const Tensor* const> in) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  float eps = ctx.node.attr<BatchNormAttrs>().epsilon;
  int64_t N = x.dim(0), C = x.dim(1), inner = x.size() / std::max<int64_t>(1, N * C);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  for (int64_t c = 0; c < C; ++c) {
    float s = in[1]->data<float>()[c] / std::sqrt(in[4]->data<float>()[c] + eps);
    float t = in[2]->data<float>()[c] - in[3]->data<float>()[c] * s;
    for (int64_t n = 0; n < N; ++n) {
      const float* p = x.data<float>() + (n * C + c) * inner;
      float* q = y.data<float>() + (n * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) q[i] = p[i] * s + t;
    }
  }
  return y;
}

// Sliding-window pooling over 1-3 spatial axes (generic index arithmetic; pooling is a small part
// of every CNN's time).
template <typename T>
Tensor pool(const OpContext& ctx, const Tensor& x, const Shape& out_shape) {
  const auto& a = ctx.node.attr<PoolAttrs>();
  bool is_max = ctx.node.op == OpType::kMaxPool;
  size_t spatial = static_cast<size_t>(x.rank() - 2);
  check(spatial >= 1 && spatial <= 3, ctx.who + ": only 1-D to 3-D pooling is supported");
  Shape in_sp(x.shape().begin() + 2, x.shape().end()), out_sp(out_shape.begin() + 2, out_shape.end());
  int64_t in_plane = element_count(in_sp), out_plane = element_count(out_sp);
  int64_t planes = x.dim(0) * x.dim(1);
  Tensor y = Tensor::uninitialized(x.dtype(), out_shape);
  // Pad to 3 spatial axes so one loop nest serves all ranks.
  int64_t ih[3] = {1, 1, 1}, oh[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pb[3] = {0, 0, 0},
          pe[3] = {0, 0, 0};
  for (size_t i = 0; i < spatial; ++i) {
    size_t j = 3 - spatial + i;
    ih[j] = in_sp[i];
    oh[j] = out_sp[i];
    k[j] = a.kernel[i];
    s[j] = a.strides[i];
    d[j] = a.dilations[i];
    pb[j] = a.pads[i];
    pe[j] = a.pads[i + spatial];
  }
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* src = x.data<T>() + p * in_plane;
      T* dst = y.data<T>() + p * out_plane;
      for (int64_t o0 = 0; o0 < oh[0]; ++o0)
        for (int64_t o1 = 0; o1 < oh[1]; ++o1)
          for (int64_t o2 = 0; o2 < oh[2]; ++o2) {
            float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;  // exact for 8-bit T
            int64_t count = 0, padded_count = 1;
            int64_t start[3] = {o0 * s[0] - pb[0], o1 * s[1] - pb[1], o2 * s[2] - pb[2]};
            for (int j = 0; j < 3; ++j) {
              // Window cells inside input + padding (count_include_pad counts padding, not the
              // ceil_mode overhang beyond it).
              int64_t hi = std::min(start[j] + (k[j] - 1) * d[j], ih[j] + pe[j] - 1);
              padded_count *= (hi - start[j]) / d[j] + 1;
            }
            for (int64_t k0 = 0; k0 < k[0]; ++k0) {
              int64_t i0 = start[0] + k0 * d[0];
              if (i0 < 0 || i0 >= ih[0]) continue;
              for (int64_t k1 = 0; k1 < k[1]; ++k1) {
                int64_t i1 = start[1] + k1 * d[1];
                if (i1 < 0 || i1 >= ih[1]) continue;
                for (int64_t k2 = 0; k2 < k[2]; ++k2) {
                  int64_t i2 = start[2] + k2 * d[2];
                  if (i2 < 0 || i2 >= ih[2]) continue;
                  float v = static_cast<float>(src[(i0 * ih[1] + i1) * ih[2] + i2]);
                  acc = is_max ? std::max(acc, v) : acc + v;
                  ++count;
                }
              }
            }
            if (!is_max) acc = count ? acc / static_cast<float>(a.count_include_pad ? padded_count : count) : 0.0f;
            dst[(o0 * oh[1] + o1) * oh[2] + o2] = static_cast<T>(acc);
          }
    }
  };
  if (ctx.pool) ctx.pool->parallel_for(planes, body);
  else body(0, planes);
  return y;
}

Tensor global_pool(const OpContext& ctx, const Tensor& x, const Shape& out_shape) {
  require_float(ctx, x, "input");
  bool is_max = ctx.node.op == OpType::kGlobalMaxPool;
  int64_t planes = x.dim(0) * x.dim(1), inner = x.size() / std::max<int64_t>(1, planes);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  for (int64_t p = 0; p < planes; ++p) {
    const float* src = x.data<float>() + p * inner;
    float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t i = 0; i < inner; ++i) acc = is_max ? std::max(acc, src[i]) : acc + src[i];
    y.data<float>()[p] = is_max ? acc : acc / static_cast<float>(inner);
  }
  return y;
}

Tensor reduce_mean(const OpContext& ctx, const Tensor& x, const Shape& out_shape) {
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<ReduceAttrs>();
  size_t rank = static_cast<size_t>(x.rank());
  std::vector<bool> reduce(rank, a.axes.empty());
  for (int64_t axis : a.axes) reduce[static_cast<size_t>(axis)] = true;
  // Output index space = input dims with reduced axes set to 1.
  Shape kept = x.shape();
  int64_t reduced_count = 1;
  for (size_t i = 0; i < rank; ++i)
    if (reduce[i]) {
      reduced_count *= kept[i];
      kept[i] = 1;
    }
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  std::vector<double> acc(static_cast<size_t>(element_count(kept)), 0.0);
  std::vector<int64_t> ks = strides_of(kept);
  std::vector<int64_t> index(rank, 0);
  const float* src = x.data<float>();
  for (int64_t i = 0; i < x.size(); ++i) {
    int64_t o = 0;
    for (size_t d = 0; d < rank; ++d) o += reduce[d] ? 0 : index[d] * ks[d];
    acc[static_cast<size_t>(o)] += src[i];
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < x.dim(static_cast<int64_t>(d))) break;
      index[d] = 0;
    }
  }
  for (size_t i = 0; i < acc.size(); ++i)
    y.data<float>()[i] = reduced_count ? static_cast<float>(acc[i] / static_cast<double>(reduced_count)) : NAN;
  return y;
}

Tensor concat(const OpContext& ctx, std::span<const Tensor* const> in, const Shape& out_shape) {
  int64_t axis = ctx.node.attr<AxisAttrs>().axis;
  DataType type = in[0]->dtype();
  size_t es = element_size(type);
  Tensor y = Tensor::uninitialized(type, out_shape);
  int64_t outer = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out_shape[static_cast<size_t>(d)];
  int64_t out_block = y.size() / std::max<int64_t>(1, outer);
  int64_t offset = 0;
  for (const Tensor* t : in) {
    check(t->dtype() == type, ctx.who + ": inputs have different types");
    int64_t block = t->size() / std::max<int64_t>(1, outer);
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(y.raw() + (o * out_block + offset) * es, t->raw() + o * block * es, static_cast<size_t>(block) * es);
    offset += block;
  }
  return y;
}

Tensor transpose(const OpContext& ctx, const Tensor& x, const Shape& out_shape) {
  const auto& perm = ctx.node.attr<TransposeAttrs>().perm;
  size_t rank = static_cast<size_t>(x.rank()), es = element_size(x.dtype());
  Tensor y = Tensor::uninitialized(x.dtype(), out_shape);
  std::vector<int64_t> in_strides = strides_of(x.shape()), s(rank);
  for (size_t i = 0; i < rank; ++i) s[i] = in_strides[static_cast<size_t>(perm[i])];
  std::vector<int64_t> index(rank, 0);
  for (int64_t o = 0; o < y.size(); ++o) {
    int64_t src = 0;
    for (size_t d = 0; d < rank; ++d) src += index[d] * s[d];
    std::memcpy(y.raw() + o * static_cast<int64_t>(es), x.raw() + src * static_cast<int64_t>(es), es);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out_shape[d]) break;
      index[d] = 0;
    }
  }
  return y;
}

Tensor softmax(const OpContext& ctx, const Tensor& x) {
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<AxisAttrs>();
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < x.rank(); ++d) {
    int64_t dim = x.dim(d);
    if (d < a.axis) outer *= dim;
    else if (d == a.axis || a.coerce_2d) n *= dim;
    else inner *= dim;
  }
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < inner; ++i) {
      const float* src = x.data<float>() + o * n * inner + i;
      float* dst = y.data<float>() + o * n * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, src[j * inner]);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) sum += dst[j * inner] = std::exp(src[j * inner] - m);
      for (int64_t j = 0; j < n; ++j) dst[j * inner] /= sum;
    }
  return y;
}

Tensor gather(const OpContext& ctx, const Tensor& data, const Tensor& indices, const Shape& out_shape) {
  int64_t axis = ctx.node.attr<AxisAttrs>().axis;
  size_t es = element_size(data.dtype());
  int64_t outer = 1, inner = 1, dim = data.dim(axis);
  for (int64_t d = 0; d < data.rank(); ++d) {
    if (d < axis) outer *= data.dim(d);
    else if (d > axis) inner *= data.dim(d);
  }
  check(indices.dtype() == DataType::kInt64 || indices.dtype() == DataType::kInt32,
        ctx.who + ": indices must be int64 or int32");
  Tensor y = Tensor::uninitialized(data.dtype(), out_shape);
  int64_t count = indices.size();
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t i = 0; i < count; ++i) {
      int64_t idx = indices.dtype() == DataType::kInt64 ? indices.data<int64_t>()[i] : indices.data<int32_t>()[i];
      check(idx >= -dim && idx < dim, ctx.who + ": index " + std::to_string(idx) + " out of range for dimension " +
                                          std::to_string(dim));
      if (idx < 0) idx += dim;
      std::memcpy(y.raw() + ((o * count + i) * inner) * static_cast<int64_t>(es),
                  data.raw() + ((o * dim + idx) * inner) * static_cast<int64_t>(es), static_cast<size_t>(inner) * es);
    }
  return y;
}

template <typename From>
void cast_from(const Tensor& x, Tensor& y) {
  const From* src = x.data<From>();
  int64_t n = x.size();
  switch (y.dtype()) {
    case DataType::kFloat32: for (int64_t i = 0; i < n; ++i) y.data<float>()[i] = static_cast<float>(src[i]); break;
    case DataType::kInt64: for (int64_t i = 0; i < n; ++i) y.data<int64_t>()[i] = static_cast<int64_t>(src[i]); break;
    case DataType::kInt32: for (int64_t i = 0; i < n; ++i) y.data<int32_t>()[i] = static_cast<int32_t>(src[i]); break;
    case DataType::kInt8: for (int64_t i = 0; i < n; ++i) y.data<int8_t>()[i] = static_cast<int8_t>(src[i]); break;
    case DataType::kUInt8: for (int64_t i = 0; i < n; ++i) y.data<uint8_t>()[i] = static_cast<uint8_t>(src[i]); break;
    case DataType::kBool: for (int64_t i = 0; i < n; ++i) y.data<uint8_t>()[i] = src[i] != From(0); break;
    case DataType::kUndefined: break;
  }
}

// A float outside the integer type's range (NaN, infinity, or too large) has no integer value: the
// conversion would be undefined behaviour, and in a shape computation a nonsense dimension.
template <typename To>
void check_castable(const OpContext& ctx, const Tensor& x, DataType to) {
  constexpr double lo = static_cast<double>(std::numeric_limits<To>::min()) - 1.0;  // truncation toward zero
  constexpr double hi = static_cast<double>(std::numeric_limits<To>::max()) + 1.0;
  for (float v : x.floats())
    if (!(static_cast<double>(v) > lo && static_cast<double>(v) < hi))
      throw Error(ctx.who + ": cannot cast " + std::to_string(v) + " to " + to_string(to) + " (outside its range)");
}

Tensor cast_to(const OpContext& ctx, const Tensor& x, DataType to) {
  if (x.dtype() == DataType::kFloat32) {
    if (to == DataType::kInt64) check_castable<int64_t>(ctx, x, to);
    if (to == DataType::kInt32) check_castable<int32_t>(ctx, x, to);
    if (to == DataType::kInt8) check_castable<int8_t>(ctx, x, to);
    if (to == DataType::kUInt8) check_castable<uint8_t>(ctx, x, to);
  }
  Tensor y = Tensor::uninitialized(to, x.shape());
  switch (x.dtype()) {
    case DataType::kFloat32: cast_from<float>(x, y); break;
    case DataType::kInt64: cast_from<int64_t>(x, y); break;
    case DataType::kInt32: cast_from<int32_t>(x, y); break;
    case DataType::kInt8: cast_from<int8_t>(x, y); break;
    case DataType::kUInt8:
    case DataType::kBool: cast_from<uint8_t>(x, y); break;
    case DataType::kUndefined: throw Error(ctx.who + ": undefined input type");
  }
  return y;
}

Tensor pad(const OpContext& ctx, std::span<const Tensor* const> in, const Shape& out_shape) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  PadAttrs a = ctx.node.attr<PadAttrs>();
  if (in.size() > 1) a.pads.assign(in[1]->data<int64_t>(), in[1]->data<int64_t>() + in[1]->size());
  if (in.size() > 2 && in[2]) {
    require_float(ctx, *in[2], "constant_value");
    a.value = in[2]->data<float>()[0];
  }
  size_t rank = static_cast<size_t>(x.rank());
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  std::fill(y.data<float>(), y.data<float>() + y.size(), a.value);
  std::vector<int64_t> ys = strides_of(out_shape), index(rank, 0);
  for (int64_t i = 0; i < x.size(); ++i) {
    int64_t o = 0;
    bool inside = true;
    for (size_t d = 0; d < rank; ++d) {
      int64_t p = index[d] + a.pads[d];
      inside &= p >= 0 && p < out_shape[d];
      o += p * ys[d];
    }
    if (inside) y.data<float>()[o] = x.data<float>()[i];
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < x.dim(static_cast<int64_t>(d))) break;
      index[d] = 0;
    }
  }
  return y;
}

Tensor slice(const OpContext& ctx, std::span<const Tensor* const> in, const Shape& out_shape) {
  const Tensor& x = *in[0];
  SliceAttrs a = ctx.node.attr<SliceAttrs>();
  auto ints = [&](size_t i) {
    return i < in.size() && in[i] ? std::vector<int64_t>(in[i]->data<int64_t>(), in[i]->data<int64_t>() + in[i]->size())
                                   : std::vector<int64_t>{};
  };
  if (in.size() > 1) a = {ints(1), ints(2), ints(3), ints(4)};
  size_t rank = static_cast<size_t>(x.rank()), es = element_size(x.dtype());
  std::vector<int64_t> start(rank, 0), step(rank, 1);
  for (const auto& r : slice_ranges(a, x.shape(), ctx.who)) {
    start[static_cast<size_t>(r.axis)] = r.start;
    step[static_cast<size_t>(r.axis)] = r.step;
  }
  std::vector<int64_t> in_strides = strides_of(x.shape()), index(rank, 0);
  Tensor y = Tensor::uninitialized(x.dtype(), out_shape);
  for (int64_t o = 0; o < y.size(); ++o) {
    int64_t src = 0;
    for (size_t d = 0; d < rank; ++d) src += (start[d] + index[d] * step[d]) * in_strides[d];
    std::memcpy(y.raw() + o * static_cast<int64_t>(es), x.raw() + src * static_cast<int64_t>(es), es);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out_shape[d]) break;
      index[d] = 0;
    }
  }
  return y;
}

std::vector<Tensor> layer_norm(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out_shapes) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<LayerNormAttrs>();
  int64_t inner = 1;
  for (int64_t d = a.axis; d < x.rank(); ++d) inner *= x.dim(d);
  int64_t outer = inner ? x.size() / inner : 0;
  Shape norm_shape(x.shape().begin() + a.axis, x.shape().end());
  const Tensor* scale = in[1];
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  std::vector<int64_t> ss = broadcast_strides(scale->shape(), norm_shape);
  std::vector<int64_t> bs = bias ? broadcast_strides(bias->shape(), norm_shape) : std::vector<int64_t>{};
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  Tensor means = Tensor::uninitialized(DataType::kFloat32, out_shapes[1]);
  Tensor inv_stds = Tensor::uninitialized(DataType::kFloat32, out_shapes[2]);
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = x.data<float>() + o * inner;
    float* dst = y.data<float>() + o * inner;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < inner; ++i) mean += src[i];
    mean /= static_cast<double>(inner);
    for (int64_t i = 0; i < inner; ++i) var += (src[i] - mean) * (src[i] - mean);
    var /= static_cast<double>(inner);
    float inv = static_cast<float>(1.0 / std::sqrt(var + a.epsilon));
    means.data<float>()[o] = static_cast<float>(mean);
    inv_stds.data<float>()[o] = inv;
    std::vector<int64_t> index(norm_shape.size(), 0);
    for (int64_t i = 0; i < inner; ++i) {
      int64_t si = 0, bi = 0;
      for (size_t d = 0; d < index.size(); ++d) {
        si += index[d] * ss[d];
        if (bias) bi += index[d] * bs[d];
      }
      float v = (src[i] - static_cast<float>(mean)) * inv * scale->data<float>()[si];
      dst[i] = bias ? v + bias->data<float>()[bi] : v;
      for (size_t d = index.size(); d-- > 0;) {
        if (++index[d] < norm_shape[d]) break;
        index[d] = 0;
      }
    }
  }
  std::vector<Tensor> out = {y, means, inv_stds};
  out.resize(ctx.node.outputs.size());
  return out;
}

Tensor shape_of(const OpContext& ctx, const Tensor& x) {
  auto [begin, end] = shape_slice(ctx.node.attr<ShapeAttrs>(), x.rank());
  std::vector<int64_t> dims(x.shape().begin() + begin, x.shape().begin() + end);
  return Tensor::from_int64s({static_cast<int64_t>(dims.size())}, dims);
}

template <typename T>
Tensor clip_typed(const OpContext& ctx, std::span<const Tensor* const> in) {
  const auto& a = ctx.node.attr<ClipAttrs>();
  auto bound = [&](size_t i, float fallback, T limit) -> T {
    if (i < in.size() && in[i]) {
      check(in[i]->dtype() == in[0]->dtype() && in[i]->size() == 1, ctx.who + ": min/max must be scalars of the input's type");
      return in[i]->data<T>()[0];
    }
    if constexpr (std::is_floating_point_v<T>) return static_cast<T>(fallback);
    // A float bound beyond the integer type (or infinite) clamps nothing on that side; NaN neither.
    double f = fallback;
    if (std::isnan(f)) return limit;
    if (f <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (f >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(f);
  };
  T lo = bound(1, a.lo, std::numeric_limits<T>::lowest()), hi = bound(2, a.hi, std::numeric_limits<T>::max());
  const Tensor& x = *in[0];
  Tensor y = Tensor::uninitialized(x.dtype(), x.shape());
  for (int64_t i = 0; i < x.size(); ++i) y.data<T>()[i] = std::min(std::max(x.data<T>()[i], lo), hi);
  return y;
}

Tensor clip(const OpContext& ctx, std::span<const Tensor* const> in) {
  switch (in[0]->dtype()) {
    case DataType::kFloat32: {
      const auto& a = ctx.node.attr<ClipAttrs>();
      if (in.size() == 1) return unary(ctx, *in[0], [lo = a.lo, hi = a.hi](float v) { return std::min(std::max(v, lo), hi); });
      return clip_typed<float>(ctx, in);
    }
    case DataType::kInt8: return clip_typed<int8_t>(ctx, in);
    case DataType::kUInt8: return clip_typed<uint8_t>(ctx, in);
    case DataType::kInt32: return clip_typed<int32_t>(ctx, in);
    case DataType::kInt64: return clip_typed<int64_t>(ctx, in);
    default: throw Error(ctx.who + ": unsupported data type " + to_string(in[0]->dtype()));
  }
}

}  // namespace

kernels::Conv2dShape conv_shape(const ConvAttrs& a, const Shape& x, const Shape& w) {
  kernels::Conv2dShape s;
  bool one_d = x.size() == 3;
  s.batch = x[0];
  s.in_channels = x[1];
  s.in_h = one_d ? 1 : x[2];
  s.in_w = one_d ? x[2] : x[3];
  s.out_channels = w[0];
  s.kernel_h = one_d ? 1 : a.kernel[0];
  s.kernel_w = one_d ? a.kernel[0] : a.kernel[1];
  s.stride_h = one_d ? 1 : a.strides[0];
  s.stride_w = one_d ? a.strides[0] : a.strides[1];
  s.dilation_h = one_d ? 1 : a.dilations[0];
  s.dilation_w = one_d ? a.dilations[0] : a.dilations[1];
  if (one_d) {
    s.pad_left = a.pads[0];
    s.pad_right = a.pads[1];
  } else {
    s.pad_top = a.pads[0];
    s.pad_left = a.pads[1];
    s.pad_bottom = a.pads[2];
    s.pad_right = a.pads[3];
  }
  s.groups = a.group;
  return s;
}

Tensor conv_packed(const OpContext& ctx, const Tensor& input, const kernels::PackedConvWeights& weights,
                   const Tensor* bias, const Shape& out_shape) {
  require_float(ctx, input, "input");
  const auto& a = ctx.node.attr<ConvAttrs>();
  kernels::Conv2dShape s = weights.shape();
  bool one_d = input.rank() == 3;
  s.batch = input.dim(0);
  s.in_h = one_d ? 1 : input.dim(2);
  s.in_w = one_d ? input.dim(2) : input.dim(3);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  kernels::conv2d(s, input.data<float>(), weights, bias ? bias->data<float>() : nullptr, y.data<float>(),
                  {a.clamp_lo, a.clamp_hi}, ctx.pool);
  return y;
}

std::optional<PackedGemm> pack_gemm(const Node& node, const Graph& graph) {
  const auto& a = node.attr<GemmAttrs>();
  if (a.trans_a || !graph.is_constant(node.inputs[1])) return std::nullopt;
  const Tensor& w = graph.constant(node.inputs[1]);
  if (w.dtype() != DataType::kFloat32 || w.rank() != 2) return std::nullopt;
  int64_t n = a.trans_b ? w.dim(0) : w.dim(1), k = a.trans_b ? w.dim(1) : w.dim(0);
  PackedGemm p;
  if (node.inputs.size() > 2 && node.inputs[2] != kNoValue) {
    if (!graph.is_constant(node.inputs[2])) return std::nullopt;
    const Tensor& c = graph.constant(node.inputs[2]);
    if (c.dtype() != DataType::kFloat32) return std::nullopt;
    bool per_column = c.size() == n && c.rank() >= 1 && c.shape().back() == n;
    if (!per_column && c.size() != 1) return std::nullopt;
    p.bias.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) p.bias[static_cast<size_t>(j)] = a.beta * c.data<float>()[per_column ? j : 0];
  }
  std::vector<float> scaled;
  const float* data = w.data<float>();
  if (a.alpha != 1.0f) {
    scaled.assign(data, data + w.size());
    for (float& v : scaled) v *= a.alpha;
    data = scaled.data();
  }
  p.weights = kernels::PackedMatrixA(n, k, a.trans_b ? MatrixView{data, k, 1} : MatrixView{data, 1, n});
  return p;
}

Tensor gemm_packed(const OpContext& ctx, const Tensor& x, const PackedGemm& packed, const Shape& out_shape) {
  require_float(ctx, x, "A");
  const auto& a = ctx.node.attr<GemmAttrs>();
  int64_t m = out_shape[0], n = out_shape[1], k = packed.weights.depth();
  kernels::GemmEpilogue epi;
  epi.bias = packed.bias.empty() ? nullptr : packed.bias.data();
  epi.bias_kind = packed.bias.empty() ? kernels::BiasKind::kNone : kernels::BiasKind::kPerRow;
  epi.clamp_lo = a.clamp_lo;
  epi.clamp_hi = a.clamp_hi;
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  if (m == 1) {  // [N, 1] and [1, N] share a layout
    kernels::sgemm_packed(packed.weights, 1, MatrixView{x.data<float>(), 1, k}, y.data<float>(), 1, epi, ctx.pool);
    return y;
  }
  Tensor z = Tensor::uninitialized(DataType::kFloat32, {n, m});
  kernels::sgemm_packed(packed.weights, m, MatrixView{x.data<float>(), 1, k}, z.data<float>(), m, epi, ctx.pool);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y.data<float>()[i * n + j] = z.data<float>()[j * m + i];
  return y;
}

std::vector<Tensor> run(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out_shapes) {
  const Node& node = ctx.node;
  const Shape& out = out_shapes[0];
  switch (node.op) {
    case OpType::kConv: {
      check(in[0]->rank() == 3 || in[0]->rank() == 4, ctx.who + ": only 1-D and 2-D convolutions are supported");
      require_float(ctx, *in[1], "weights");
      kernels::PackedConvWeights packed(conv_shape(node.attr<ConvAttrs>(), in[0]->shape(), in[1]->shape()),
                                        in[1]->data<float>());
      const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
      return {conv_packed(ctx, *in[0], packed, bias, out)};
    }
    case OpType::kBatchNormalization: return {batchnorm(ctx, in)};
    case OpType::kRelu: return {unary(ctx, *in[0], [](float v) { return v > 0.0f ? v : 0.0f; })};
    case OpType::kClip: return {clip(ctx, in)};
    case OpType::kLeakyRelu: {
      float alpha = node.attr<LeakyReluAttrs>().alpha;
      return {unary(ctx, *in[0], [alpha](float v) { return v >= 0.0f ? v : v * alpha; })};
    }
    case OpType::kSigmoid: return {unary(ctx, *in[0], [](float v) { return 1.0f / (1.0f + std::exp(-v)); })};
    case OpType::kTanh: return {unary(ctx, *in[0], [](float v) { return std::tanh(v); })};
    case OpType::kMaxPool:
    case OpType::kAveragePool:
      if (in[0]->dtype() == DataType::kFloat32) return {pool<float>(ctx, *in[0], out)};
      check(node.op == OpType::kMaxPool && (in[0]->dtype() == DataType::kUInt8 || in[0]->dtype() == DataType::kInt8),
            ctx.who + ": unsupported data type " + to_string(in[0]->dtype()));
      return {in[0]->dtype() == DataType::kUInt8 ? pool<uint8_t>(ctx, *in[0], out) : pool<int8_t>(ctx, *in[0], out)};
    case OpType::kGlobalAveragePool:
    case OpType::kGlobalMaxPool: return {global_pool(ctx, *in[0], out)};
    case OpType::kReduceMean: return {reduce_mean(ctx, *in[0], out)};
    case OpType::kAdd:
    case OpType::kSub:
    case OpType::kMul:
    case OpType::kDiv: return {binary(ctx, *in[0], *in[1], out)};
    case OpType::kConcat: return {concat(ctx, in, out)};
    case OpType::kGemm: return {gemm(ctx, in, out)};
    case OpType::kMatMul: return {matmul(ctx, *in[0], *in[1], out)};
    case OpType::kFlatten:
    case OpType::kReshape:
    case OpType::kSqueeze:
    case OpType::kUnsqueeze: return {in[0]->reshaped(out)};
    case OpType::kIdentity: {
      if (node.outputs.size() == 1) return {*in[0]};
      Tensor mask(DataType::kBool, out);  // inference-mode Dropout keeps everything
      std::fill(mask.data<uint8_t>(), mask.data<uint8_t>() + mask.size(), uint8_t{1});
      return {*in[0], mask};
    }
    case OpType::kTranspose: return {transpose(ctx, *in[0], out)};
    case OpType::kSoftmax: return {softmax(ctx, *in[0])};
    case OpType::kShape: return {shape_of(ctx, *in[0])};
    case OpType::kGather: return {gather(ctx, *in[0], *in[1], out)};
    case OpType::kCast: return {cast_to(ctx, *in[0], node.attr<CastAttrs>().to)};
    case OpType::kPad: return {pad(ctx, in, out)};
    case OpType::kSlice: return {slice(ctx, in, out)};
    case OpType::kSqrt: return {unary(ctx, *in[0], [](float v) { return std::sqrt(v); })};
    case OpType::kErf: return {unary(ctx, *in[0], [](float v) { return std::erf(v); })};
    case OpType::kPow: {
      if (in[0]->dtype() == DataType::kFloat32 && in[1]->dtype() == DataType::kFloat32) {
        Tensor y = Tensor::uninitialized(DataType::kFloat32, out);
        binary_typed<float>(*in[0], *in[1], y, [](float p, float q) { return q == 2.0f ? p * p : std::pow(p, q); });
        return {y};
      }
      // Mixed types (ONNX allows any numeric pair; the result has the base's type): via double.
      Tensor base = cast_to(ctx, *in[0], DataType::kFloat32), exponent = cast_to(ctx, *in[1], DataType::kFloat32);
      Tensor y = Tensor::uninitialized(DataType::kFloat32, out);
      binary_typed<float>(base, exponent, y, [](float p, float q) {
        return static_cast<float>(std::pow(static_cast<double>(p), static_cast<double>(q)));
      });
      return {in[0]->dtype() == DataType::kFloat32 ? y : cast_to(ctx, y, in[0]->dtype())};
    }
    case OpType::kLayerNormalization: return layer_norm(ctx, in, out_shapes);
    case OpType::kHardSigmoid: {
      const auto& a = node.attr<AffineAttrs>();
      return {unary(ctx, *in[0], [a](float v) {
        float h = std::min(std::max(a.alpha * v + a.beta, 0.0f), 1.0f);
        return a.multiply_input ? v * h : h;
      })};
    }
    case OpType::kFakeQuantize: return {fake_quantize(ctx, *in[0], node.attr<FakeQuantAttrs>())};
    case OpType::kConstant: break;
  }
  throw Error(ctx.who + ": operator has no implementation");
}

}  // namespace tern::ops
