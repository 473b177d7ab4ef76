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

namespace {

namespace F = torch::nn::functional;

// y [N][Cout][Ho][Wo] = conv2d(x, w): per group, W [Cout/g][C/g kh kw] @ im2col(x) at the forward
// bits. Backward: dW = dY @ im2col(x)^T (sums N Ho Wo products) at the weight-gradient bits;
// dX = the transposed convolution as one GEMM (sums Cout/g kh kw products) at the backward bits:
// dY dilated by the stride and padded, im2col'd, times W flipped and transposed.
struct ReducedConv2d : torch::autograd::Function<ReducedConv2d> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               std::vector<int64_t> strides, std::vector<int64_t> pads, std::vector<int64_t> dilations,
                               int64_t groups, std::vector<int64_t> bits) {
    const int64_t n = x.size(0), cout = w.size(0), kh = w.size(2), kw = w.size(3);
    torch::Tensor cols = F::unfold(x, F::UnfoldFuncOptions({kh, kw}).dilation(dilations).padding(pads).stride(strides));
    const int64_t rows = cols.size(1) / groups, positions = cols.size(2);
    const int64_t ho = (x.size(2) + 2 * pads[0] - dilations[0] * (kh - 1) - 1) / strides[0] + 1;
    const int64_t wo = (x.size(3) + 2 * pads[1] - dilations[1] * (kw - 1) - 1) / strides[1] + 1;
    std::vector<torch::Tensor> outs;
    for (int64_t g = 0; g < groups; ++g) {
      torch::Tensor b = cols.slice(1, g * rows, (g + 1) * rows).permute({1, 0, 2}).reshape({rows, n * positions});
      torch::Tensor a = w.slice(0, g * cout / groups, (g + 1) * cout / groups).reshape({cout / groups, rows});
      outs.push_back(gemm(a, b, static_cast<int>(bits[0]), bits[3]).reshape({cout / groups, n, positions}).permute({1, 0, 2}));
    }
    ctx->save_for_backward({x, w});
    ctx->saved_data["strides"] = strides;
    ctx->saved_data["pads"] = pads;
    ctx->saved_data["dilations"] = dilations;
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["bits"] = bits;
    return (groups == 1 ? outs[0] : torch::cat(outs, 1)).reshape({n, cout, ho, wo});
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto saved = ctx->get_saved_variables();
    const torch::Tensor &x = saved[0], &w = saved[1];
    const torch::Tensor dy = grad[0].contiguous();
    const auto strides = ctx->saved_data["strides"].toIntVector(), pads = ctx->saved_data["pads"].toIntVector(),
               dilations = ctx->saved_data["dilations"].toIntVector(), bits = ctx->saved_data["bits"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), wd = x.size(3);
    const int64_t cout = w.size(0), kh = w.size(2), kw = w.size(3), ho = dy.size(2), wo = dy.size(3);
    const int64_t cg = cin / groups, og = cout / groups;
    torch::Tensor cols = F::unfold(x, F::UnfoldFuncOptions({kh, kw}).dilation(dilations).padding(pads).stride(strides));
    // dY dilated by the stride (zeros add nothing), then padded so that a stride-1 correlation with
    // the flipped kernel gives dX; extra rows/columns where the forward output dropped some input.
    torch::Tensor up = torch::zeros({n, cout, (ho - 1) * strides[0] + 1, (wo - 1) * strides[1] + 1}, dy.options());
    up.index_put_({torch::indexing::Slice(), torch::indexing::Slice(),
                   torch::indexing::Slice(torch::indexing::None, torch::indexing::None, strides[0]),
                   torch::indexing::Slice(torch::indexing::None, torch::indexing::None, strides[1])},
                  dy);
    const int64_t eh = dilations[0] * (kh - 1), ew = dilations[1] * (kw - 1);
    const int64_t extra_h = h + 2 * pads[0] - eh - ((ho - 1) * strides[0] + 1);
    const int64_t extra_w = wd + 2 * pads[1] - ew - ((wo - 1) * strides[1] + 1);
    torch::Tensor padded = torch::constant_pad_nd(up, {ew - pads[1], ew - pads[1] + extra_w, eh - pads[0], eh - pads[0] + extra_h});
    torch::Tensor dy_cols = F::unfold(padded, F::UnfoldFuncOptions({kh, kw}).dilation(dilations));  // [N][Cout kh kw][H W]
    std::vector<torch::Tensor> dxs, dws;
    for (int64_t g = 0; g < groups; ++g) {
      torch::Tensor dyg = dy.slice(1, g * og, (g + 1) * og).permute({1, 0, 2, 3}).reshape({og, n * ho * wo});
      torch::Tensor colg = cols.slice(1, g * cg * kh * kw, (g + 1) * cg * kh * kw).permute({1, 0, 2}).reshape({cg * kh * kw, n * ho * wo});
      dws.push_back(gemm(dyg, colg.t(), static_cast<int>(bits[2]), bits[3]).reshape({og, cg, kh, kw}));
      // W flipped in space, input and output channels swapped: [C/g][Cout/g kh kw].
      torch::Tensor wf = w.slice(0, g * og, (g + 1) * og).flip({2, 3}).permute({1, 0, 2, 3}).reshape({cg, og * kh * kw});
      torch::Tensor dcols = dy_cols.slice(1, g * og * kh * kw, (g + 1) * og * kh * kw).permute({1, 0, 2}).reshape({og * kh * kw, n * h * wd});
      dxs.push_back(gemm(wf, dcols, static_cast<int>(bits[1]), bits[3]).reshape({cg, n, h, wd}).permute({1, 0, 2, 3}));
    }
    torch::Tensor dx = groups == 1 ? dxs[0] : torch::cat(dxs, 1);
    torch::Tensor dw = groups == 1 ? dws[0] : torch::cat(dws, 0);
    return {dx, dw, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor reduced_accumulation_product(const TrainableGraph::LayerProduct& p, const AccumulationBits& bits) {
  if (p.strides.empty()) {  // Gemm: x [batch][in] @ w [in][out], the weight on the right
    check(p.x.dim() == 2 && p.w.dim() == 2, "reduced accumulation: node '" + p.node.name + "' is not a 2-D product");
    return reduced_matmul(p.x, p.w, /*weight_is_a=*/false, bits);
  }
  return ReducedConv2d::apply(p.x, p.w, p.strides, p.pads, p.dilations, p.groups,
                              std::vector<int64_t>{bits.forward, bits.backward, bits.weight_grad, bits.chunk});
}

}  // namespace tern::train
