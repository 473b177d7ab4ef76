#include "train/reduced_accumulation_ops.h"

#include "tern/accumulation.h"
#include "tern/error.h"

namespace tern::train {
namespace {

// a [M][K] @ b [K][N] with the sum held at `bits` mantissa bits (0: torch's float32 matmul).
torch::Tensor gemm(const torch::Tensor& a, const torch::Tensor& b, int bits, int64_t chunk) {
  if (bits == 0) return torch::matmul(a, b);
  torch::Tensor ac = a.to(torch::kFloat32).contiguous(), bc = b.to(torch::kFloat32).contiguous();
  const int64_t M = ac.size(0), K = ac.size(1), N = bc.size(1);
  torch::Tensor c = torch::empty({M, N}, torch::kFloat32);
  accum::gemm_reduced_accumulation(ac.data_ptr<float>(), bc.data_ptr<float>(), c.data_ptr<float>(), M, N, K, bits, chunk);
  return c;
}

struct ReducedMatmul : torch::autograd::Function<ReducedMatmul> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& a, const torch::Tensor& b,
                               bool weight_is_a, int64_t forward_bits, int64_t backward_bits, int64_t weight_grad_bits,
                               int64_t chunk) {
    ctx->save_for_backward({a, b});
    ctx->saved_data["weight_is_a"] = weight_is_a;
    ctx->saved_data["backward"] = backward_bits;
    ctx->saved_data["weight_grad"] = weight_grad_bits;
    ctx->saved_data["chunk"] = chunk;
    return gemm(a, b, static_cast<int>(forward_bits), chunk);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &a = saved[0], &b = saved[1], &dc = grad[0];
    const bool weight_is_a = ctx->saved_data["weight_is_a"].toBool();
    const int backward_bits = static_cast<int>(ctx->saved_data["backward"].toInt());
    const int weight_grad_bits = static_cast<int>(ctx->saved_data["weight_grad"].toInt());
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    // dA = dC @ B^T sums over N; dB = A^T @ dC sums over M.
    torch::Tensor da = gemm(dc, b.t(), weight_is_a ? weight_grad_bits : backward_bits, chunk);
    torch::Tensor db = gemm(a.t(), dc, weight_is_a ? backward_bits : weight_grad_bits, chunk);
    return {da, db, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor reduced_matmul(const torch::Tensor& a, const torch::Tensor& b, bool weight_is_a, const AccumulationBits& bits) {
  return ReducedMatmul::apply(a, b, weight_is_a, bits.forward, bits.backward, bits.weight_grad, bits.chunk);
}

torch::Tensor reduced_accumulation_product(const TrainableGraph::LayerProduct& p, const AccumulationBits& bits) {
  if (p.strides.empty()) {  // Gemm: x [batch][in] @ w [in][out], the weight on the right
    check(p.x.dim() == 2 && p.w.dim() == 2, "reduced accumulation: node '" + p.node.name + "' is not a 2-D product");
    return reduced_matmul(p.x, p.w, /*weight_is_a=*/false, bits);
  }
  const torch::Tensor& x = p.x;  // [N][C][H][W]
  const torch::Tensor& w = p.w;  // [Cout][C/g][kh][kw]
  const int64_t n = x.size(0), g = p.groups, cout = w.size(0), kh = w.size(2), kw = w.size(3);
  const int64_t ho = (x.size(2) + 2 * p.pads[0] - p.dilations[0] * (kh - 1) - 1) / p.strides[0] + 1;
  const int64_t wo = (x.size(3) + 2 * p.pads[1] - p.dilations[1] * (kw - 1) - 1) / p.strides[1] + 1;
  namespace F = torch::nn::functional;
  torch::Tensor cols = F::unfold(x, F::UnfoldFuncOptions({kh, kw}).dilation(p.dilations).padding(p.pads).stride(p.strides));
  const int64_t rows = cols.size(1) / g, positions = cols.size(2);  // [N][C kh kw][L]
  std::vector<torch::Tensor> outs;
  for (int64_t k = 0; k < g; ++k) {
    torch::Tensor b = cols.slice(1, k * rows, (k + 1) * rows).permute({1, 0, 2}).reshape({rows, n * positions});
    torch::Tensor a = w.slice(0, k * cout / g, (k + 1) * cout / g).reshape({cout / g, rows});
    outs.push_back(reduced_matmul(a, b, /*weight_is_a=*/true, bits).reshape({cout / g, n, positions}).permute({1, 0, 2}));
  }
  torch::Tensor y = g == 1 ? outs[0] : torch::cat(outs, 1);
  return y.reshape({n, cout, ho, wo});
}

}  // namespace tern::train
