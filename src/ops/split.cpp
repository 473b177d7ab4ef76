// Split (into several outputs) and the block rearrangements DepthToSpace and SpaceToDepth.
#ifndef TERN_OPS_TORCH
#include <cstring>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// ---- Split: sizes from the attribute (opset < 13) or input 1, else equal parts (opset 18:
// num_outputs, the last part smaller).

struct SplitAttrs {
  int64_t axis = 0;
  std::vector<int64_t> split;  // empty: equal parts, one per output
};

void import_split(OnnxNode& n) {
  SplitAttrs a;
  a.axis = n.get_int("axis", 0);
  if (n.opset < 13) {
    n.need_inputs(1, 1);
    a.split = n.get_ints("split");
  } else {
    n.need_inputs(1, 2);
    if (n.node.inputs.size() > 1 && n.constant_input(1)) {  // else read at run time
      a.split = n.constant_ints(1, "split");
      n.node.inputs.resize(1);
    }
  }
  check(n.output_count() >= 1, n.who + ": has no outputs");
  for (size_t i = 0; i < n.output_count(); ++i) check(n.output_used(i), n.who + ": every output must be named");
  check(a.split.empty() || a.split.size() == n.output_count(),
        n.who + ": split has " + std::to_string(a.split.size()) + " sizes for " + std::to_string(n.output_count()) + " outputs");
  n.max_outputs = n.kept_outputs = n.output_count();
  n.node.attrs = a;
}

constexpr auto describe_split = [](auto& a, auto&& field) {
  field("axis", a.axis);
  field("split", a.split);
};

std::vector<Shape> split_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<SplitAttrs>();
  a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), c.who);
  int64_t d = x[static_cast<size_t>(a.axis)];
  size_t parts = c.node.outputs.size();
  std::vector<Shape> out(parts, x);
  std::vector<int64_t> split = c.in.size() > 1 ? c.ints(1, "split") : a.split;
  if (!split.empty()) {
    check(split.size() == parts, c.who + ": split has " + std::to_string(split.size()) + " sizes for " +
                                     std::to_string(parts) + " outputs");
    int64_t total = 0;
    for (size_t i = 0; i < parts; ++i) {
      check(split[i] >= 0, c.who + ": negative split size");
      total = dim_add(total, split[i], c.who);
      out[i][static_cast<size_t>(a.axis)] = split[i];
    }
    check(d < 0 || total == d, c.who + ": split sizes add up to " + std::to_string(total) + ", not " + std::to_string(d));
    return out;
  }
  int64_t size = d < 0 ? kDynamicDim : (d + static_cast<int64_t>(parts) - 1) / static_cast<int64_t>(parts);
  for (size_t i = 0; i < parts; ++i)
    out[i][static_cast<size_t>(a.axis)] = d < 0 ? kDynamicDim : std::min(size, std::max<int64_t>(0, d - size * static_cast<int64_t>(i)));
  return out;
}

std::vector<Tensor> run_split(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& x = *in[0];
  int64_t axis = ctx.node.attr<SplitAttrs>().axis;
  size_t es = element_size(x.dtype());
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < x.rank(); ++d) {
    if (d < axis) outer *= x.dim(d);
    else if (d > axis) inner *= x.dim(d);
  }
  std::vector<Tensor> ys;
  int64_t offset = 0, dim = x.dim(axis);
  for (const Shape& s : out) {
    Tensor y = Tensor::uninitialized(x.dtype(), s);
    int64_t len = s[static_cast<size_t>(axis)];
    for (int64_t o = 0; o < outer; ++o)
      std::memcpy(y.raw() + o * len * inner * static_cast<int64_t>(es), x.raw() + (o * dim + offset) * inner * static_cast<int64_t>(es),
                  static_cast<size_t>(len * inner) * es);
    offset += len;
    ys.push_back(std::move(y));
  }
  return ys;
}

bool split_keeps_batch(const Node& n, const Graph&) { return n.attr<SplitAttrs>().axis != 0; }

void export_split(OnnxWriter& w) {
  const SplitAttrs& a = w.node.attr<SplitAttrs>();
  std::vector<std::string> ins = w.inputs;
  if (ins.size() == 1 && !a.split.empty())
    ins.push_back(w.constant(w.outputs[0] + "/split", Tensor::from_int64s({static_cast<int64_t>(a.split.size())}, a.split)));
  w.attr(w.emit("Split", ins, w.outputs), "axis", a.axis);
}

OpRecord split() {
  OpRecord r;
  r.onnx_names = {"Split"};
  r.import = import_split;
  r.attrs = attrs_codec<SplitAttrs, describe_split>("split");
  r.shapes = split_shapes;
  r.shape_reads_inputs = 1u << 1;
  r.run = run_split;
  r.keeps_batch = split_keeps_batch;
  r.non_negative = like_input0;
  r.export_onnx = export_split;
  return r;
}

// ---- DepthToSpace (DCR or CRD) and SpaceToDepth on NCHW.

struct BlockAttrs {
  int64_t blocksize = 1;
  bool crd = false;  // DepthToSpace's CRD mode (PixelShuffle); DCR otherwise
};

void import_block(OnnxNode& n) {
  n.need_inputs(1, 1);
  BlockAttrs a;
  a.blocksize = n.get_int("blocksize", 0);
  check(a.blocksize >= 1, n.who + ": blocksize must be >= 1");
  std::string mode = n.get_string("mode", "DCR");
  check(mode == "DCR" || mode == "CRD", n.who + ": unknown mode '" + mode + "'");
  a.crd = mode == "CRD";
  n.node.attrs = a;
}

constexpr auto describe_block = [](auto& a, auto&& field) {
  field("blocksize", a.blocksize, 1, 1 << 20);
  field("crd", a.crd);
};

std::vector<Shape> block_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  int64_t b = c.node.attr<BlockAttrs>().blocksize;
  check(x.size() == 4, c.who + ": input must be NCHW, got " + to_string(x));
  auto mul = [&](int64_t d) { return d < 0 ? kDynamicDim : dim_mul(d, b, c.who); };
  auto div = [&](int64_t d, const char* what) {
    check(d < 0 || d % b == 0, c.who + ": " + what + " " + std::to_string(d) + " is not a multiple of the block size");
    return d < 0 ? kDynamicDim : d / b;
  };
  if (c.node.op == OpType::kDepthToSpace) {
    check(x[1] < 0 || x[1] % (b * b) == 0, c.who + ": " + std::to_string(x[1]) + " channels are not a multiple of blocksize^2");
    return {{x[0], x[1] < 0 ? kDynamicDim : x[1] / (b * b), mul(x[2]), mul(x[3])}};
  }
  return {{x[0], x[1] < 0 ? kDynamicDim : dim_mul(x[1], b * b, c.who), div(x[2], "height"), div(x[3], "width")}};
}

std::vector<Tensor> run_block(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const auto& a = ctx.node.attr<BlockAttrs>();
  const Shape& out = outs[0];
  int64_t b = a.blocksize;
  Tensor y = Tensor::uninitialized(x.dtype(), out);
  size_t es = element_size(x.dtype());
  bool to_space = ctx.node.op == OpType::kDepthToSpace;
  // Index arithmetic over the smaller-spatial tensor: (n, c_small, h_small, w_small) with block (i, j).
  const Shape& big_depth = to_space ? x.shape() : out;  // [N, C*b*b, H, W]
  const Shape& big_space = to_space ? out : x.shape();  // [N, C, H*b, W*b]
  int64_t N = big_depth[0], C = big_space[1], H = big_depth[2], W = big_depth[3];
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < b; ++i)
        for (int64_t j = 0; j < b; ++j) {
          int64_t depth_c = to_space && a.crd ? (c * b + i) * b + j : (i * b + j) * C + c;
          for (int64_t h = 0; h < H; ++h)
            for (int64_t w = 0; w < W; ++w) {
              int64_t d = ((n * C * b * b + depth_c) * H + h) * W + w;
              int64_t s = ((n * C + c) * H * b + h * b + i) * W * b + w * b + j;
              const std::byte* src = x.raw() + (to_space ? d : s) * static_cast<int64_t>(es);
              std::memcpy(y.raw() + (to_space ? s : d) * static_cast<int64_t>(es), src, es);
            }
        }
  return {y};
}

void export_block(OnnxWriter& w) {
  const BlockAttrs& a = w.node.attr<BlockAttrs>();
  size_t n = w.emit(to_string(w.node.op), w.inputs, w.outputs);
  w.attr(n, "blocksize", a.blocksize);
  if (w.node.op == OpType::kDepthToSpace) w.attr(n, "mode", std::string(a.crd ? "CRD" : "DCR"));
}

OpRecord block(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_block;
  r.attrs = attrs_codec<BlockAttrs, describe_block>("block");
  r.shapes = block_shapes;
  r.run = run_block;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = like_input0;
  r.export_onnx = export_block;
  return r;
}
OpRecord depth_to_space() { return block("DepthToSpace"); }
OpRecord space_to_depth() { return block("SpaceToDepth"); }

}  // namespace

TERN_REGISTER_OP(Split, split)
TERN_REGISTER_OP(DepthToSpace, depth_to_space)
TERN_REGISTER_OP(SpaceToDepth, space_to_depth)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {

TERN_REGISTER_TORCH_OP(Split)
TERN_REGISTER_TORCH_OP(DepthToSpace)
TERN_REGISTER_TORCH_OP(SpaceToDepth)

}  // namespace tern::train
#endif
