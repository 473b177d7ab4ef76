// Einsum: numpy's Einstein summation, explicit ("ij,jk->ik") or implicit ("ij,jk": the labels that
// appear once, in ASCII order), with "..." for broadcast leading dims and repeated labels within an
// operand (diagonals). Two operands without diagonals or one-sided sums run as a batched GEMM
// (attention's "bhqd,bhkd->bhqk"); everything else as a direct sum.
#include <string>

#include "tern/graph.h"

namespace tern::ops {
// Shared with the torch half (a named namespace: std::any compares types across the two builds).
struct EinsumAttrs {
  std::string equation;
};
}  // namespace tern::ops

#ifndef TERN_OPS_TORCH
#include <algorithm>
#include <cstring>

#include "kernels/fp32/sgemm.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// Labels are numbered in ASCII order ('A'..'Z' = 0..25, 'a'..'z' = 26..51); the dims "..." stands
// for are labels 52.. (right-aligned: an operand whose "..." covers fewer dims takes the last ones).
constexpr int kEllipsisLabel = 52;

struct Equation {
  std::vector<std::vector<int>> in;  // each operand's label per dim
  std::vector<int> out;
  int labels = kEllipsisLabel;       // label ids are < labels
};

int letter_label(char ch) { return ch >= 'A' && ch <= 'Z' ? ch - 'A' : ch >= 'a' && ch <= 'z' ? 26 + ch - 'a' : -1; }

// One term's letters, with -1 where "..." stands; throws on any other character.
std::vector<int> parse_term(const std::string& term, const std::string& who) {
  std::vector<int> labels;
  bool ellipsis = false;
  for (size_t i = 0; i < term.size(); ++i) {
    if (term.compare(i, 3, "...") == 0) {
      check(!ellipsis, who + ": equation term '" + term + "' has more than one '...'");
      ellipsis = true;
      labels.push_back(-1);
      i += 2;
      continue;
    }
    int l = letter_label(term[i]);
    check(l >= 0, who + ": equation term '" + term + "' has '" + std::string(1, term[i]) + "', not a letter or '...'");
    labels.push_back(l);
  }
  return labels;
}

Equation parse_equation(const std::string& text, std::span<const Shape> shapes, const std::string& who) {
  std::string eq;
  for (char ch : text)
    if (ch != ' ') eq += ch;
  size_t arrow = eq.find("->");
  std::string lhs = eq.substr(0, arrow);
  std::vector<std::string> terms;
  for (size_t start = 0;;) {
    size_t comma = lhs.find(',', start);
    terms.push_back(lhs.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  check(terms.size() == shapes.size(), who + ": equation '" + text + "' has " + std::to_string(terms.size()) +
                                           " operand terms for " + std::to_string(shapes.size()) + " inputs");
  Equation e;
  int ellipsis_rank = 0;
  for (size_t k = 0; k < terms.size(); ++k) {
    std::vector<int> t = parse_term(terms[k], who);
    bool has_ellipsis = std::count(t.begin(), t.end(), -1) > 0;
    int64_t letters = static_cast<int64_t>(t.size()) - has_ellipsis;
    int64_t rank = static_cast<int64_t>(shapes[k].size());
    check(has_ellipsis ? rank >= letters : rank == letters,
          who + ": equation term '" + terms[k] + "' does not fit input " + std::to_string(k) + " of shape " + to_string(shapes[k]));
    std::vector<int> labels;
    for (int l : t) {
      if (l >= 0) {
        labels.push_back(l);
        continue;
      }
      int covered = static_cast<int>(rank - letters);
      ellipsis_rank = std::max(ellipsis_rank, covered);
      for (int d = 0; d < covered; ++d) labels.push_back(-100 - (covered - d));  // -100 - distance from the end, fixed below
    }
    e.in.push_back(std::move(labels));
  }
  // "..." dims right-aligned: the one `dist` from its end is label kEllipsisLabel + ellipsis_rank - dist.
  for (auto& labels : e.in)
    for (int& l : labels)
      if (l <= -100) l = kEllipsisLabel + ellipsis_rank - (-100 - l);
  e.labels = kEllipsisLabel + ellipsis_rank;
  std::vector<int> count(static_cast<size_t>(e.labels), 0);
  for (const auto& labels : e.in)
    for (int l : labels) ++count[static_cast<size_t>(l)];
  if (arrow == std::string::npos) {
    for (int l = kEllipsisLabel; l < e.labels; ++l) e.out.push_back(l);
    for (int l = 0; l < kEllipsisLabel; ++l)
      if (count[static_cast<size_t>(l)] == 1) e.out.push_back(l);
    return e;
  }
  std::string rhs = eq.substr(arrow + 2);
  check(rhs.find("->") == std::string::npos && rhs.find(',') == std::string::npos,
        who + ": equation '" + text + "' has more than one output term");
  std::vector<bool> seen(static_cast<size_t>(e.labels), false);
  for (int l : parse_term(rhs, who)) {
    if (l < 0) {
      for (int d = kEllipsisLabel; d < e.labels; ++d) e.out.push_back(d);
      continue;
    }
    check(count[static_cast<size_t>(l)] > 0, who + ": output label in '" + text + "' appears in no input");
    check(!seen[static_cast<size_t>(l)], who + ": output label repeated in '" + text + "'");
    seen[static_cast<size_t>(l)] = true;
    e.out.push_back(l);
  }
  return e;
}

// Each label's size: equal wherever it appears, except that "..." dims broadcast (1 against n).
// kDynamicDim where no operand knows it.
std::vector<int64_t> label_sizes(const Equation& e, std::span<const Shape> shapes, const std::string& who) {
  std::vector<int64_t> size(static_cast<size_t>(e.labels), kDynamicDim);
  for (size_t k = 0; k < e.in.size(); ++k)
    for (size_t d = 0; d < e.in[k].size(); ++d) {
      int l = e.in[k][d];
      int64_t s = shapes[k][d], &known = size[static_cast<size_t>(l)];
      if (s < 0) continue;
      if (known < 0 || (l >= kEllipsisLabel && known == 1)) {
        known = s;
        continue;
      }
      check(s == known || (l >= kEllipsisLabel && s == 1),
            who + ": a label has size " + std::to_string(s) + " in input " + std::to_string(k) + " but " + std::to_string(known) + " elsewhere");
    }
  return size;
}

void import_einsum(OnnxNode& n) {
  n.need_inputs(1, 1u << 10);
  check(n.has("equation"), n.who + ": equation is required");
  n.node.attrs = EinsumAttrs{n.get_string("equation", "")};
}

constexpr auto describe_einsum = [](auto& a, auto&& field) { field("equation", a.equation); };

std::vector<Shape> einsum_shapes(ShapeCall& c) {
  c.need_inputs(1);
  Equation e = parse_equation(c.node.attr<EinsumAttrs>().equation, c.in, c.who);
  std::vector<int64_t> size = label_sizes(e, c.in, c.who);
  Shape out;
  for (int l : e.out) out.push_back(size[static_cast<size_t>(l)]);
  return {out};
}

// An operand's element stride per label (summed over repeated labels: a diagonal; 0 where a "..."
// dim of size 1 broadcasts).
std::vector<int64_t> label_strides(const std::vector<int>& labels, const Shape& shape, int count) {
  std::vector<int64_t> strides(static_cast<size_t>(count), 0), dense = strides_of(shape);
  for (size_t d = 0; d < labels.size(); ++d)
    if (shape[d] != 1) strides[static_cast<size_t>(labels[d])] += dense[d];
  return strides;
}

// Calls f(offsets) for every index over `dims` in row-major order, where offsets[k] is
// sum(index[i] * strides[k][i]).
template <typename F>
void for_each_index(const std::vector<int64_t>& dims, const std::vector<std::vector<int64_t>>& strides, F f) {
  for (int64_t d : dims)
    if (d == 0) return;
  std::vector<int64_t> index(dims.size(), 0), offsets(strides.size(), 0);
  for (;;) {
    f(offsets);
    size_t d = dims.size();
    for (; d-- > 0;) {
      for (size_t k = 0; k < strides.size(); ++k) offsets[k] += strides[k][d];
      if (++index[d] < dims[d]) break;
      for (size_t k = 0; k < strides.size(); ++k) offsets[k] -= strides[k][d] * dims[d];
      index[d] = 0;
    }
    if (d == static_cast<size_t>(-1)) return;
  }
}

// Copies `src` (element strides per label) into a dense array laid out in `order`.
void gather(const float* src, const std::vector<int64_t>& strides, const std::vector<int>& order,
            const std::vector<int64_t>& size, float* dst) {
  std::vector<int64_t> dims, st;
  for (int l : order) {
    dims.push_back(size[static_cast<size_t>(l)]);
    st.push_back(strides[static_cast<size_t>(l)]);
  }
  for_each_index(dims, {st}, [&](const std::vector<int64_t>& o) { *dst++ = src[o[0]]; });
}

// The direct sum: every output element adds the product over all summed labels.
void direct_sum(const Equation& e, std::span<const Tensor* const> in, const std::vector<int64_t>& size, float* y) {
  std::vector<int> summed;
  std::vector<bool> is_out(static_cast<size_t>(e.labels), false);
  for (int l : e.out) is_out[static_cast<size_t>(l)] = true;
  std::vector<bool> used(static_cast<size_t>(e.labels), false);
  for (const auto& labels : e.in)
    for (int l : labels) used[static_cast<size_t>(l)] = true;
  for (int l = 0; l < e.labels; ++l)
    if (used[static_cast<size_t>(l)] && !is_out[static_cast<size_t>(l)]) summed.push_back(l);
  std::vector<std::vector<int64_t>> out_strides, sum_strides;
  std::vector<int64_t> out_dims, sum_dims;
  for (int l : e.out) out_dims.push_back(size[static_cast<size_t>(l)]);
  for (int l : summed) sum_dims.push_back(size[static_cast<size_t>(l)]);
  for (size_t k = 0; k < in.size(); ++k) {
    std::vector<int64_t> st = label_strides(e.in[k], in[k]->shape(), e.labels);
    std::vector<int64_t> so, ss;
    for (int l : e.out) so.push_back(st[static_cast<size_t>(l)]);
    for (int l : summed) ss.push_back(st[static_cast<size_t>(l)]);
    out_strides.push_back(std::move(so));
    sum_strides.push_back(std::move(ss));
  }
  for_each_index(out_dims, out_strides, [&](const std::vector<int64_t>& ob) {
    double acc = 0.0;
    for_each_index(sum_dims, sum_strides, [&](const std::vector<int64_t>& os) {
      double p = 1.0;
      for (size_t k = 0; k < in.size(); ++k) p *= in[k]->data<float>()[ob[k] + os[k]];
      acc += p;
    });
    *y++ = static_cast<float>(acc);
  });
}

// Two operands, no label repeated within one, every label either in both or in the output, no
// broadcasting: permute to [batch, left, k] x [batch, k, right] and multiply.
bool batched_gemm(const Equation& e, std::span<const Tensor* const> in, const std::vector<int64_t>& size, const OpContext& ctx,
                  float* y) {
  if (in.size() != 2) return false;
  std::vector<int> where(static_cast<size_t>(e.labels), 0);  // bit 0: A, bit 1: B, bit 2: output
  for (int k = 0; k < 2; ++k)
    for (size_t d = 0; d < e.in[k].size(); ++d) {
      int l = e.in[k][d];
      if (where[static_cast<size_t>(l)] & (1 << k)) return false;  // a diagonal
      if (in[k]->dim(static_cast<int64_t>(d)) != size[static_cast<size_t>(l)]) return false;  // broadcast
      where[static_cast<size_t>(l)] |= 1 << k;
    }
  for (int l : e.out) where[static_cast<size_t>(l)] |= 4;
  std::vector<int> batch, left, right, inner;
  for (int l = 0; l < e.labels; ++l) switch (where[static_cast<size_t>(l)]) {
      case 0: break;
      case 7: batch.push_back(l); break;
      case 5: left.push_back(l); break;
      case 6: right.push_back(l); break;
      case 3: inner.push_back(l); break;
      default: return false;  // summed within one operand
    }
  auto product = [&](const std::vector<int>& ls) {
    int64_t p = 1;
    for (int l : ls) p *= size[static_cast<size_t>(l)];
    return p;
  };
  int64_t nb = product(batch), M = product(left), N = product(right), K = product(inner);
  auto concat = [](std::vector<int> a, const std::vector<int>& b, const std::vector<int>& c) {
    a.insert(a.end(), b.begin(), b.end());
    a.insert(a.end(), c.begin(), c.end());
    return a;
  };
  std::vector<float> a(static_cast<size_t>(nb * M * K)), b(static_cast<size_t>(nb * K * N)), c(static_cast<size_t>(nb * M * N));
  gather(in[0]->data<float>(), label_strides(e.in[0], in[0]->shape(), e.labels), concat(batch, left, inner), size, a.data());
  gather(in[1]->data<float>(), label_strides(e.in[1], in[1]->shape(), e.labels), concat(batch, inner, right), size, b.data());
  for (int64_t i = 0; i < nb; ++i)
    kernels::sgemm(M, N, K, kernels::MatrixView{a.data() + i * M * K, K, 1}, kernels::MatrixView{b.data() + i * K * N, N, 1},
                   c.data() + i * M * N, N, {}, ctx.pool);
  // c is laid out [batch, left, right]: read it in the output's label order.
  std::vector<int> c_labels = concat(batch, left, right);
  Shape c_shape;
  for (int l : c_labels) c_shape.push_back(size[static_cast<size_t>(l)]);
  gather(c.data(), label_strides(c_labels, c_shape, e.labels), e.out, size, y);
  return true;
}

std::vector<Tensor> run_einsum(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  std::vector<Shape> shapes;
  for (size_t k = 0; k < in.size(); ++k) {
    require_float(ctx, *in[k], "input");
    shapes.push_back(in[k]->shape());
  }
  Equation e = parse_equation(ctx.node.attr<EinsumAttrs>().equation, shapes, ctx.who);
  std::vector<int64_t> size = label_sizes(e, shapes, ctx.who);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, outs[0]);
  if (y.size() > 0 && !batched_gemm(e, in, size, ctx, y.data<float>())) direct_sum(e, in, size, y.data<float>());
  return {y};
}

// One multiply-accumulate per combination of all labels (per batch image when the first operand's
// first dim is the batch).
int64_t einsum_macs(const CostCall& c) {
  std::vector<Shape> shapes;
  for (size_t i = 0; i < c.node.inputs.size(); ++i) {
    std::optional<Shape> s = c.input(i);
    if (!s) return -1;
    shapes.push_back(*s);
  }
  Equation e = parse_equation(c.node.attr<EinsumAttrs>().equation, shapes, c.who);
  std::vector<int64_t> size = label_sizes(e, shapes, c.who);
  std::vector<bool> used(size.size(), false);
  for (const auto& labels : e.in)
    for (int l : labels) used[static_cast<size_t>(l)] = true;
  int64_t n = 1;
  for (size_t l = 0; l < size.size(); ++l)
    if (used[l]) n = mac_product({n, size[l]}, c.who);
  return n;
}

OpRecord einsum() {
  OpRecord r;
  r.onnx_names = {"Einsum"};
  r.import = import_einsum;
  r.attrs = attrs_codec<EinsumAttrs, describe_einsum>("einsum");
  r.shapes = einsum_shapes;
  r.run = run_einsum;
  r.counts_parameters = true;
  r.macs = einsum_macs;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Einsum, einsum)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor einsum_forward(TorchCall& c) {
  std::vector<torch::Tensor> xs;
  for (size_t i = 0; i < c.node.inputs.size(); ++i) xs.push_back(c.input(i));
  return torch::einsum(c.node.attr<ops::EinsumAttrs>().equation, xs);
}

}  // namespace

TERN_REGISTER_TORCH_OP(Einsum, einsum_forward)

}  // namespace tern::train
#endif
