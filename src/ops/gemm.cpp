// Gemm (Y = alpha * A' B' + beta * C, with a fused activation clamp) and MatMul (numpy-style
// batched matrix product). tern's Gemm also takes an A with leading dims ([..., K], not
// transposed): a MatMul by constant weights (a transformer's linear layer) becomes one at import
// (passes.cpp, canonicalize_gemm), so it is quantized like any fully connected layer.
#ifndef TERN_OPS_TORCH
#include "kernels/fp32/sgemm.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

using kernels::MatrixView;

void import_gemm(OnnxNode& n) {
  n.need_inputs(2, 3);
  GemmAttrs a;
  a.alpha = n.get_float("alpha", 1.0f);
  a.beta = n.get_float("beta", 1.0f);
  a.trans_a = n.get_int("transA", 0) != 0;
  a.trans_b = n.get_int("transB", 0) != 0;
  check(n.opset >= 7 || !n.has("broadcast"), n.who + ": legacy broadcast attribute");
  n.node.attrs = a;
}

constexpr auto describe_gemm = [](auto& a, auto&& field) {
  field("alpha", a.alpha);
  field("beta", a.beta);
  field("trans_a", a.trans_a);
  field("trans_b", a.trans_b);
  field("clamp_lo", a.clamp_lo);
  field("clamp_hi", a.clamp_hi);
};

std::vector<Shape> gemm_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const auto& in = c.in;
  const std::string& who = c.who;
  const auto& a = c.node.attr<GemmAttrs>();
  check(a.clamp_lo <= a.clamp_hi, who + ": fused clamp [" + std::to_string(a.clamp_lo) + ", " +
                                      std::to_string(a.clamp_hi) + "] is empty or NaN");
  check((in[0].size() == 2 || (in[0].size() > 2 && !a.trans_a)) && in[1].size() == 2,
        who + ": Gemm inputs must be 2-D (A may have leading dims when not transposed), got " + to_string(in[0]) + " and " +
            to_string(in[1]));
  int64_t m = a.trans_a ? in[0][1] : in[0][in[0].size() - 2], ka = a.trans_a ? in[0][0] : in[0].back();
  int64_t kb = a.trans_b ? in[1][1] : in[1][0], n = a.trans_b ? in[1][0] : in[1][1];
  check(ka < 0 || kb < 0 || ka == kb, who + ": inner dimensions differ: " + to_string(in[0]) + " x " +
                                          to_string(in[1]));
  Shape out = a.trans_a ? Shape{m, n} : Shape(in[0].begin(), in[0].end() - 1);
  if (!a.trans_a) out.push_back(n);
  if (in.size() > 2 && !in[2].empty()) {
    Shape last2 = {m, n};
    Shape cs = broadcast_shapes(last2, in[2], who + " (bias C)");
    bool per_column = std::all_of(in[2].begin(), in[2].end() - 1, [](int64_t d) { return d == 1; });  // [N], [1, N], [1]
    check(cs.size() == 2 && (m < 0 || cs[0] == m) && (n < 0 || cs[1] == n) && (out.size() == 2 || per_column),
          who + ": bias C " + to_string(in[2]) + " does not broadcast to " + to_string(out));
  }
  return {out};
}

std::vector<Tensor> run_gemm(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Shape& out_shape = outs[0];
  const auto& a = ctx.node.attr<GemmAttrs>();
  const Tensor& A = *in[0];
  const Tensor& B = *in[1];
  require_float(ctx, A, "A");
  require_float(ctx, B, "B");
  // A with leading dims: its rows are every leading index ([..., K] -> [M, K]).
  int64_t N = out_shape.back(), K = a.trans_a ? A.dim(0) : A.shape().back();
  int64_t M = a.trans_a ? out_shape[0] : (K > 0 ? A.size() / K : element_count(Shape(out_shape.begin(), out_shape.end() - 1)));
  MatrixView va{A.data<float>(), a.trans_a ? 1 : K, a.trans_a ? M : 1};
  MatrixView vb{B.data<float>(), a.trans_b ? 1 : N, a.trans_b ? K : 1};
  Tensor Y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  kernels::GemmEpilogue epi;
  const Tensor* C = in.size() > 2 ? in[2] : nullptr;
  bool simple = a.alpha == 1.0f && (!C || a.beta == 1.0f);
  if (simple && C && C->size() == N && C->shape().back() == N && N != 1) {
    epi.bias = C->data<float>();
    epi.bias_kind = kernels::BiasKind::kPerColumn;
  } else if (simple && C && out_shape.size() == 2 && C->rank() == 2 && C->dim(0) == M && C->dim(1) == 1 && M != 1) {
    epi.bias = C->data<float>();
    epi.bias_kind = kernels::BiasKind::kPerRow;
  } else if (C || !simple) {
    // General alpha, beta and broadcast C: product first, then combine.
    kernels::sgemm(M, N, K, va, vb, Y.data<float>(), N, epi, ctx.pool);
    float* y = Y.data<float>();
    std::vector<int64_t> sc = C ? broadcast_strides(C->shape(), {M, N}) : std::vector<int64_t>{0, 0};
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        float v = a.alpha * y[i * N + j];
        if (C) v += a.beta * C->data<float>()[i * sc[0] + j * sc[1]];
        y[i * N + j] = std::clamp(v, a.clamp_lo, a.clamp_hi);
      }
    return {Y};
  }
  epi.clamp_lo = a.clamp_lo;
  epi.clamp_hi = a.clamp_hi;
  kernels::sgemm(M, N, K, va, vb, Y.data<float>(), N, epi, ctx.pool);
  return {Y};
}

bool gemm_non_negative(const SignCall& c) { return c.node.attr<GemmAttrs>().clamp_lo >= 0.0f; }

bool gemm_keeps_batch(const Node& n, const Graph&) { return !n.attr<GemmAttrs>().trans_a; }

int64_t gemm_macs(const CostCall& c) {
  std::optional<Shape> x = c.input(0);
  bool trans_a = c.node.attr<GemmAttrs>().trans_a;
  int64_t k = x && x->size() >= 2 ? (trans_a ? (*x)[0] : x->back()) : -1;
  return mac_product({c.outputs_per_image, k}, c.who);
}

std::pair<float, float> gemm_clamp(const Node& n) { return {n.attr<GemmAttrs>().clamp_lo, n.attr<GemmAttrs>().clamp_hi}; }

// ONNX's Gemm takes matrices only: tern's Gemm on rows of a higher rank ([N, T, K] tokens, a
// MatMul by constant weights at import) is written back as MatMul (by B transposed where transB)
// and Add of the bias, scaled where alpha or beta is not 1.
void export_token_gemm(OnnxWriter& w, const GemmAttrs& a, const std::string& out) {
  if (a.trans_a) w.fail("a Gemm with transA on rank-" + std::to_string(w.graph.value(w.node.inputs[0]).shape.size()) + " rows");
  std::string b = w.inputs[1];
  if (a.trans_b) {
    const std::string t = w.temp(w.outputs[0] + "/weights_t");
    w.attr(w.emit("Transpose", {b}, {t}), "perm", std::vector<int64_t>{1, 0});
    b = t;
  }
  const bool bias = w.inputs.size() > 2 && !w.inputs[2].empty();
  std::string product = bias || a.alpha != 1.0f ? w.temp(w.outputs[0] + "/matmul") : out;
  w.emit("MatMul", {w.inputs[0], b}, {product});
  if (a.alpha != 1.0f) {
    const std::string scaled = bias ? w.temp(w.outputs[0] + "/alpha") : out;
    w.emit("Mul", {product, w.constant(w.outputs[0] + "/alpha", Tensor::from_floats({}, std::vector<float>{a.alpha}))}, {scaled});
    product = scaled;
  }
  if (!bias) return;
  std::string c = w.inputs[2];
  if (a.beta != 1.0f) {
    const std::string scaled = w.temp(w.outputs[0] + "/beta");
    w.emit("Mul", {c, w.constant(w.outputs[0] + "/beta", Tensor::from_floats({}, std::vector<float>{a.beta}))}, {scaled});
    c = scaled;
  }
  w.emit("Add", {product, c}, {out});
}

void export_gemm(OnnxWriter& w) {
  const GemmAttrs& a = w.node.attr<GemmAttrs>();
  std::string out = w.clamped_output(a.clamp_lo, a.clamp_hi);
  if (w.graph.value(w.node.inputs[0]).shape.size() != 2) return export_token_gemm(w, a, out);
  size_t n = w.emit("Gemm", w.inputs, {out});
  w.attr(n, "alpha", a.alpha);
  w.attr(n, "beta", a.beta);
  w.attr(n, "transA", int64_t{a.trans_a});
  w.attr(n, "transB", int64_t{a.trans_b});
}

OpRecord gemm() {
  OpRecord r;
  r.onnx_names = {"Gemm"};
  r.import = import_gemm;
  r.attrs = attrs_codec<GemmAttrs, describe_gemm>("gemm");
  r.shapes = gemm_shapes;
  r.run = run_gemm;
  r.keeps_batch = gemm_keeps_batch;
  r.non_negative = gemm_non_negative;
  r.counts_parameters = true;
  r.macs = gemm_macs;
  r.fused_clamp = gemm_clamp;
  r.export_onnx = export_gemm;
  return r;
}

std::vector<Shape> matmul_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const Shape& a0 = c.in[0];
  const Shape& b0 = c.in[1];
  check(!a0.empty() && !b0.empty(), c.who + ": MatMul inputs must have rank >= 1");
  Shape a = a0, b = b0;
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  int64_t ka = a.back(), kb = b[b.size() - 2];
  check(ka < 0 || kb < 0 || ka == kb, c.who + ": inner dimensions differ: " + to_string(a0) + " x " + to_string(b0));
  Shape out = broadcast_shapes(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2), c.who);
  if (!a_vec) out.push_back(a[a.size() - 2]);
  if (!b_vec) out.push_back(b.back());
  return {out};
}

std::vector<Tensor> run_matmul(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& A = *in[0];
  const Tensor& B = *in[1];
  const Shape& out_shape = outs[0];
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
  // Product n of the batch: its operands' offsets from n's index in the broadcast batch shape.
  auto product = [&](int64_t n, ThreadPool* pool) {
    int64_t oa = 0, ob = 0;
    for (size_t d = batch.size(), rest = static_cast<size_t>(n); d-- > 0;) {
      const int64_t i = static_cast<int64_t>(rest % static_cast<size_t>(batch[d]));
      rest /= static_cast<size_t>(batch[d]);
      oa += i * sa[d];
      ob += i * sb[d];
    }
    kernels::sgemm(M, N, K, MatrixView{A.data<float>() + oa * M * K, K, 1}, MatrixView{B.data<float>() + ob * K * N, N, 1},
                   Y.data<float>() + n * M * N, N, {}, pool);
  };
  // Many small products (attention's heads times images): whole products over the threads,
  // each on one core, rather than each product split over them. The same bits either way.
  if (ctx.pool && ctx.pool->size() > 1 && count >= 2 * ctx.pool->size() && M * N * K <= (int64_t{1} << 20)) {
    ctx.pool->parallel_for(count, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) product(n, nullptr);
    });
  } else {
    for (int64_t n = 0; n < count; ++n) product(n, ctx.pool);
  }
  return {Y};
}

bool matmul_keeps_batch(const Node& n, const Graph& g) {
  const Value& a = g.value(n.inputs[0]);
  const Value& b = g.value(n.inputs[1]);
  return a.shape_known && b.shape_known && a.shape.size() >= 2 && a.shape.size() >= b.shape.size();
}

OpRecord matmul() {
  OpRecord r;
  r.onnx_names = {"MatMul"};
  r.import = import_plain<2>;
  r.shapes = matmul_shapes;
  r.run = run_matmul;
  r.keeps_batch = matmul_keeps_batch;
  r.counts_parameters = true;
  r.macs = macs_per_output_times_last_dim;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Gemm, gemm)
TERN_REGISTER_OP(MatMul, matmul)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor gemm_forward(TorchCall& c) {
  const auto& a = c.node.attr<GemmAttrs>();
  torch::Tensor x = c.input(0), w = c.input(1), b = c.input(2);
  torch::Tensor y = torch::matmul(a.trans_a ? x.t() : x, a.trans_b ? w.t() : w);
  if (a.alpha != 1.0f) y = y * static_cast<double>(a.alpha);
  if (b.defined()) y = y + (a.beta != 1.0f ? b * static_cast<double>(a.beta) : b);
  return clamp_if(y, a.clamp_lo, a.clamp_hi);
}

torch::Tensor matmul_forward(TorchCall& c) { return torch::matmul(c.input(0), c.input(1)); }

}  // namespace

TERN_REGISTER_TORCH_OP(Gemm, gemm_forward)
TERN_REGISTER_TORCH_OP(MatMul, matmul_forward)

}  // namespace tern::train
#endif
