// The operator table (src/ops/): one complete record per OpType, and what the stages built on it
// promise: every unsupported operator named at once, attributes that survive a .tern round trip.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>

#include "onnx_builder.h"
#include "ops/op.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/executor.h"
#include "tern/model_io.h"
#include "tern/onnx_import.h"
#include "temp_dir.h"

namespace tern::testing {
namespace {

using B = OnnxBuilder;

std::vector<OpType> all_ops() {
  std::vector<OpType> ops;
  for (int i = 0; to_string(static_cast<OpType>(i)) != "?"; ++i) ops.push_back(static_cast<OpType>(i));
  return ops;
}

TEST(OperatorRecords, EveryOperatorHasOneCompleteRecord) {
  std::vector<OpType> ops = all_ops();
  ASSERT_GE(ops.size(), 38u);
  std::set<std::string> onnx_names;
  for (OpType op : ops) {
    const ops::OpRecord& r = ops::record(op);
    SCOPED_TRACE(to_string(op));
    EXPECT_EQ(r.op, op);
    EXPECT_EQ(std::string(r.name), to_string(op));
    for (std::string_view n : r.onnx_names) {
      EXPECT_TRUE(onnx_names.insert(std::string(n)).second) << n << " imported by two records";
      EXPECT_EQ(ops::onnx_record(n), &r) << n;
      EXPECT_NE(r.import, nullptr);
    }
    if (op == OpType::kConstant) continue;  // imported as a value, never a node
    EXPECT_NE(r.shapes, nullptr);
    EXPECT_NE(r.run, nullptr);
    EXPECT_NE(r.non_negative, nullptr);
    // An attribute codec reads back what it writes.
    if (r.attrs.kind) {
      EXPECT_NE(r.attrs.to_json, nullptr);
      EXPECT_NE(r.attrs.from_json, nullptr);
    }
  }
  EXPECT_EQ(ops::onnx_record("NoSuchOperator"), nullptr);
  const auto& supported = supported_onnx_operators();
  EXPECT_EQ(std::set<std::string>(supported.begin(), supported.end()), onnx_names);
  EXPECT_TRUE(onnx_names.count("HardSwish") && onnx_names.count("Dropout"));
}

TEST(OperatorRecords, EveryUnsupportedOperatorIsListedAtOnce) {
  B b;
  b.input("x", {1, 3, 8, 8});
  b.node("Relu", {"x"}, {"r"});
  b.node("NoSuchResize", {"r"}, {"a"}, "resize_a");
  b.node("NoSuchResize", {"a"}, {"b"}, "resize_b");
  b.node("NoSuchTranspose", {"b"}, {"c"}, "deconv");
  auto& custom = b.node("FusedThing", {"c"}, {"y"}, "fused");
  custom.set_domain("com.example");
  b.output("y");
  try {
    import_onnx_bytes(b.bytes(), "model.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m, "model.onnx: unsupported operators: NoSuchResize (2 nodes, first 'resize_a'), "
                 "NoSuchTranspose (1 node: 'deconv'), com.example.FusedThing (1 node: 'fused')");
  }
}

// Attributes of every kind the bundled and exporter-style graphs carry survive save and load:
// the JSON each record writes is the JSON it reads.
TEST(OperatorRecords, AttributesRoundTripThroughTernFiles) {
  B b(13);
  b.input("x", {-1, 3, 8, 8});
  b.floats("w", {4, 3, 3, 3}, random_floats(108, 1));
  b.floats("g", {4}, {1, 2, 3, 4});
  b.floats("be", {4}, {0, 1, 0, 1});
  b.floats("m", {4}, {0, 0, 0, 0});
  b.floats("v", {4}, {1, 1, 1, 1});
  b.ints("axes", {2}, {2, 3});
  auto& conv = b.node("Conv", {"x", "w"}, {"c"});
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("BatchNormalization", {"c", "g", "be", "m", "v"}, {"bn"});
  auto& leaky = b.node("LeakyRelu", {"bn"}, {"l"});
  B::attr(leaky, "alpha", 0.25f);
  b.node("HardSwish", {"l"}, {"hs"});
  auto& pool = b.node("MaxPool", {"hs"}, {"p"});
  B::attr(pool, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(pool, "strides", std::vector<int64_t>{2, 2});
  auto& avg = b.node("AveragePool", {"p"}, {"ap"});
  B::attr(avg, "kernel_shape", std::vector<int64_t>{3, 3});
  B::attr(avg, "pads", std::vector<int64_t>{1, 1, 1, 1});
  B::attr(avg, "count_include_pad", int64_t{1});
  auto& tr = b.node("Transpose", {"ap"}, {"t"});
  B::attr(tr, "perm", std::vector<int64_t>{0, 2, 3, 1});
  auto& sm = b.node("Softmax", {"t"}, {"s"});
  B::attr(sm, "axis", int64_t{-1});
  b.node("Unsqueeze", {"s", "axes"}, {"u"});
  auto& rm = b.node("ReduceMean", {"u"}, {"y"});
  B::attr(rm, "axes", std::vector<int64_t>{2, 3});
  B::attr(rm, "keepdims", int64_t{0});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "model.onnx", {.optimize = false, .input_shapes = {}});
  TempDir dir;
  std::string path = dir.file("g.tern");
  save_graph(path, g, "{}");
  Graph back = load_graph(path);
  ASSERT_EQ(back.nodes.size(), g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) EXPECT_EQ(back.nodes[i].op, g.nodes[i].op);
  const auto& a = back.nodes[2].attr<LeakyReluAttrs>();
  EXPECT_EQ(a.alpha, 0.25f);
  EXPECT_TRUE(back.nodes[3].attr<AffineAttrs>().multiply_input);
  EXPECT_TRUE(back.nodes[5].attr<PoolAttrs>().count_include_pad);
  EXPECT_EQ(back.nodes[6].attr<TransposeAttrs>().perm, (std::vector<int64_t>{0, 2, 3, 1}));
  EXPECT_FALSE(back.nodes[9].attr<ReduceAttrs>().keepdims);
  // Infinite clamps are stored as null and read back as infinite.
  EXPECT_TRUE(std::isinf(back.nodes[0].attr<ConvAttrs>().clamp_hi));
  Tensor x = Tensor::from_floats({2, 3, 8, 8}, random_floats(384, 2));
  Tensor y0 = Executor(g).run(x), y1 = Executor(back).run(x);
  ASSERT_EQ(y0.shape(), y1.shape());
  for (int64_t i = 0; i < y0.size(); ++i) EXPECT_EQ(y0.data<float>()[i], y1.data<float>()[i]);
}

TEST(OperatorRecords, AttributesOfTheWrongKindAreRefused) {
  Node n;
  n.name = "c";
  n.op = OpType::kConv;
  n.attrs = PoolAttrs{};
  try {
    (void)n.attr<ConvAttrs>();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("node 'c' (Conv)"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(n.has_attrs<PoolAttrs>());
  EXPECT_FALSE(n.has_attrs<ConvAttrs>());
}

// Einsum through import, shape inference and the kernel, against loops written out for each case.
struct Operand {
  std::vector<int64_t> shape;
  std::vector<float> data;
  float at(std::initializer_list<int64_t> index) const {
    int64_t off = 0, i = 0;
    for (int64_t v : index) off = off * shape[static_cast<size_t>(i++)] + v;
    return data[static_cast<size_t>(off)];
  }
};

Operand operand(std::vector<int64_t> shape, uint32_t seed) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return {shape, random_floats(static_cast<size_t>(n), seed)};
}

Tensor einsum(const std::string& equation, const std::vector<Operand>& xs, std::vector<int64_t> dynamic = {}) {
  B b(13);
  std::vector<std::string> names;
  std::vector<Tensor> feeds;
  for (size_t i = 0; i < xs.size(); ++i) {
    names.push_back("x" + std::to_string(i));
    std::vector<int64_t> dims = xs[i].shape;
    if (!dynamic.empty() && dynamic[i]) dims[0] = -1;
    b.input(names.back(), dims);
    feeds.push_back(Tensor::from_floats(xs[i].shape, xs[i].data));
  }
  B::attr(b.node("Einsum", names, {"y"}), "equation", equation);
  b.output("y");
  Executor e(import_onnx_bytes(b.bytes(), "einsum.onnx"));
  return e.run(feeds).at(0);
}

void expect_values(const Tensor& y, const std::vector<int64_t>& shape, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(y.shape(), shape) << what;
  ASSERT_EQ(static_cast<size_t>(y.size()), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(y.data<float>()[i], want[i], 1e-5) << what << " element " << i;
}

TEST(OperatorRecords, EinsumBatchedProductAsAttentionWritesIt) {
  Operand q = operand({2, 3, 4, 5}, 1), k = operand({2, 3, 6, 5}, 2);
  std::vector<double> want;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 6; ++j) {
          double s = 0;
          for (int64_t d = 0; d < 5; ++d) s += double(q.at({b, h, i, d})) * k.at({b, h, j, d});
          want.push_back(s);
        }
  expect_values(einsum("bhqd,bhkd->bhqk", {q, k}), {2, 3, 4, 6}, want, "bhqd,bhkd->bhqk");
  expect_values(einsum("bhqd,bhkd->bhqk", {q, k}, {1, 1}), {2, 3, 4, 6}, want, "with a dynamic batch");
  // The output in another order: the product is permuted.
  Tensor t = einsum("bhqd,bhkd->kbqh", {q, k});
  ASSERT_EQ(t.shape(), (Shape{6, 2, 4, 3}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t h = 0; h < 3; ++h)
      for (int64_t i = 0; i < 4; ++i)
        for (int64_t j = 0; j < 6; ++j)
          EXPECT_NEAR(t.data<float>()[((j * 2 + b) * 4 + i) * 3 + h], want[static_cast<size_t>(((b * 3 + h) * 4 + i) * 6 + j)], 1e-5);
}

TEST(OperatorRecords, EinsumDiagonalsSumsImplicitOutputsAndEllipsis) {
  Operand a = operand({3, 3}, 3);
  expect_values(einsum("ii->i", {a}), {3}, {a.at({0, 0}), a.at({1, 1}), a.at({2, 2})}, "diagonal");
  expect_values(einsum("ii", {a}), {}, {double(a.at({0, 0})) + a.at({1, 1}) + a.at({2, 2})}, "trace (implicit)");
  // Implicit output: the labels that appear once, in ASCII order ("ji" is a transpose).
  std::vector<double> tr;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 3; ++j) tr.push_back(a.at({j, i}));
  expect_values(einsum("ji", {a}), {3, 3}, tr, "implicit transpose");
  // A label summed within one operand, and three operands.
  Operand m = operand({2, 3}, 4), n = operand({3, 4}, 5), p = operand({4, 2}, 6);
  std::vector<double> rows, chain;
  for (int64_t i = 0; i < 2; ++i) rows.push_back(double(m.at({i, 0})) + m.at({i, 1}) + m.at({i, 2}));
  expect_values(einsum("ij->i", {m}), {2}, rows, "row sums");
  for (int64_t i = 0; i < 2; ++i)
    for (int64_t l = 0; l < 2; ++l) {
      double s = 0;
      for (int64_t j = 0; j < 3; ++j)
        for (int64_t k = 0; k < 4; ++k) s += double(m.at({i, j})) * n.at({j, k}) * p.at({k, l});
      chain.push_back(s);
    }
  expect_values(einsum("ij,jk,kl->il", {m, n, p}), {2, 2}, chain, "three operands");
  // "..." broadcasts like numpy: [2,1,3,4] x [5,4,2] -> [2,5,3,2].
  Operand x = operand({2, 1, 3, 4}, 7), w = operand({5, 4, 2}, 8);
  std::vector<double> bc;
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 5; ++c)
      for (int64_t i = 0; i < 3; ++i)
        for (int64_t k = 0; k < 2; ++k) {
          double s = 0;
          for (int64_t j = 0; j < 4; ++j) s += double(x.at({b, 0, i, j})) * w.at({c, j, k});
          bc.push_back(s);
        }
  expect_values(einsum("...ij,...jk->...ik", {x, w}), {2, 5, 3, 2}, bc, "ellipsis");
  expect_values(einsum("...ij,...jk", {x, w}), {2, 5, 3, 2}, bc, "ellipsis, implicit");
}

TEST(OperatorRecords, EinsumRefusesEquationsThatDoNotFit) {
  Operand a = operand({2, 3}, 1), b = operand({4, 5}, 2);
  auto error = [&](const std::string& eq, std::vector<Operand> xs) {
    try {
      einsum(eq, xs);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(error("ij,jk->ik", {a, b}).find("a label has size"), std::string::npos) << error("ij,jk->ik", {a, b});
  EXPECT_NE(error("ijk->i", {a}).find("does not fit input 0"), std::string::npos);
  EXPECT_NE(error("ij->ix", {a}).find("appears in no input"), std::string::npos);
  EXPECT_NE(error("i1->i", {a}).find("not a letter"), std::string::npos);
  EXPECT_NE(error("ij,jk->ik", {a}).find("2 operand terms for 1 inputs"), std::string::npos);
}

// inspect's counts come from the records: parameters of weighted layers, MACs per image by each
// operator's rule, unknown (-1) where the model leaves a dim the count needs dynamic.
TEST(OperatorRecords, InspectCountsEachOperatorsMultiplyAccumulates) {
  B b(13);
  b.input("x", {-1, 3, 8, 8});
  b.input("s", {5, -1, 6});
  b.input("m", {-1, 4, 5});
  b.floats("w", {4, 3, 3, 3}, random_floats(108, 1));
  b.floats("wt", {4, 2, 2, 2}, random_floats(32, 2));
  b.floats("W", {1, 16, 6}, random_floats(96, 3));
  b.floats("R", {1, 16, 4}, random_floats(64, 4));
  b.floats("k", {5, 7}, random_floats(35, 5));
  auto& conv = b.node("Conv", {"x", "w"}, {"c"}, "conv");
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c"}, {"r"}, "relu");
  auto& ct = b.node("ConvTranspose", {"r", "wt"}, {"t"}, "deconv");
  B::attr(ct, "strides", std::vector<int64_t>{2, 2});
  auto& lstm = b.node("LSTM", {"s", "W", "R"}, {"y"}, "lstm");
  B::attr(lstm, "hidden_size", int64_t{4});
  B::attr(b.node("Einsum", {"m", "k"}, {"e"}, "einsum"), "equation", std::string("bij,jk->bik"));
  b.node("MatMul", {"m", "k"}, {"mm"}, "matmul");
  for (const char* o : {"t", "y", "e", "mm"}) b.output(o);
  ModelSummary s = summarize(import_onnx_bytes(b.bytes(), "costs.onnx", {.optimize = false, .input_shapes = {}}));
  std::map<std::string, LayerSummary> by_name;
  for (const auto& l : s.layers) by_name[l.name] = l;
  EXPECT_EQ(by_name["conv"].macs, 4 * 8 * 8 * 27);
  EXPECT_EQ(by_name["conv"].parameters, 108);
  EXPECT_EQ(by_name["relu"].macs, 0);
  EXPECT_EQ(by_name["deconv"].macs, 4 * 8 * 8 * 8);  // every input element x (C_out x 2 x 2)
  EXPECT_EQ(by_name["deconv"].parameters, 32);
  EXPECT_EQ(by_name["lstm"].macs, 5 * (96 + 64));     // 5 steps x (W + R)
  EXPECT_EQ(by_name["lstm"].parameters, 96 + 64);
  EXPECT_EQ(by_name["einsum"].macs, 4 * 5 * 7);
  EXPECT_EQ(by_name["matmul"].macs, 4 * 5 * 7);
  EXPECT_EQ(s.unknown_macs, 0);
  // A dynamic height leaves the convolutions' counts unknown, never a guess.
  B d(13);
  d.input("x", {1, 3, -1, 8});
  d.floats("w", {4, 3, 3, 3}, random_floats(108, 1));
  d.node("Conv", {"x", "w"}, {"c"}, "conv");
  d.output("c");
  ModelSummary u = summarize(import_onnx_bytes(d.bytes(), "dynamic.onnx", {.optimize = false, .input_shapes = {}}));
  EXPECT_EQ(u.layers.at(0).macs, -1);
  EXPECT_EQ(u.unknown_macs, 1);
  // Heads merged into the batch dim ([N, 6, 8] -> [2N, 6, 4], as attention exports do): a MatMul
  // on them counts both heads of the image, from the shapes of one run at batch 1.
  B h(13);
  h.input("x", {-1, 6, 8});
  h.ints("heads", {3}, {-1, 6, 4});
  h.floats("k", {4, 5}, random_floats(20, 6));
  h.node("Reshape", {"x", "heads"}, {"xh"}, "split_heads");
  h.node("MatMul", {"xh", "k"}, {"y"}, "per_head");
  h.output("y");
  ModelSummary m = summarize(import_onnx_bytes(h.bytes(), "heads.onnx", {.optimize = false, .input_shapes = {}}));
  std::map<std::string, LayerSummary> heads;
  for (const auto& l : m.layers) heads[l.name] = l;
  EXPECT_EQ(heads["per_head"].macs, 2 * 6 * 5 * 4);
  EXPECT_EQ(heads["per_head"].output, (Shape{2, 6, 5}));
  // The same split as exporters write it: the target computed from the input's Shape (batch x 2
  // heads), which the default import folds into a symbolic-batch constant. Both graphs count it.
  B c(13);
  c.input("x", {-1, 6, 8});
  c.floats("k", {4, 5}, random_floats(20, 6));
  c.ints("zero", {}, {0});
  c.ints("two", {}, {2});
  c.ints("axis0", {1}, {0});
  c.ints("rest", {2}, {6, 4});
  c.node("Shape", {"x"}, {"xs"}, "shape");
  B::attr(c.node("Gather", {"xs", "zero"}, {"n"}, "batch"), "axis", int64_t{0});
  c.node("Mul", {"n", "two"}, {"nh"}, "times_heads");
  c.node("Unsqueeze", {"nh", "axis0"}, {"nh1"}, "as_dim");
  B::attr(c.node("Concat", {"nh1", "rest"}, {"target"}, "target"), "axis", int64_t{0});
  c.node("Reshape", {"x", "target"}, {"xh"}, "split_heads");
  c.node("MatMul", {"xh", "k"}, {"y"}, "per_head");
  c.output("y");
  for (bool optimize : {false, true}) {
    ModelSummary cs = summarize(import_onnx_bytes(c.bytes(), "computed.onnx", {.optimize = optimize, .input_shapes = {}}));
    std::map<std::string, LayerSummary> computed;
    for (const auto& l : cs.layers) computed[l.name] = l;
    EXPECT_EQ(computed["per_head"].macs, 2 * 6 * 5 * 4) << "optimize " << optimize;
    EXPECT_EQ(computed["per_head"].output, (Shape{2, 6, 5})) << "optimize " << optimize;
  }
  // Sequence-first tokens ([N, 6, 8] -> [6, N, 8], as nn.MultiheadAttention exports): the batch
  // is dim 1, so a linear layer on them counts 6 tokens of one image.
  B q(13);
  q.input("x", {-1, 6, 8});
  q.floats("k", {8, 5}, random_floats(40, 7));
  B::attr(q.node("Transpose", {"x"}, {"t"}, "to_sequence_first"), "perm", std::vector<int64_t>{1, 0, 2});
  q.node("MatMul", {"t", "k"}, {"y"}, "linear");
  q.output("y");
  ModelSummary sf = summarize(import_onnx_bytes(q.bytes(), "seq.onnx", {.optimize = false, .input_shapes = {}}));
  std::map<std::string, LayerSummary> seq;
  for (const auto& l : sf.layers) seq[l.name] = l;
  EXPECT_EQ(seq["linear"].macs, 6 * 8 * 5);
  EXPECT_EQ(seq["linear"].output, (Shape{6, 1, 5}));
  EXPECT_EQ(sf.unknown_macs, 0);
}

// Transpose: where only axes of extent 1 move, the values keep their order and the output shares
// the input's buffer; other permutations move values. Both against the index arithmetic.
TEST(OperatorRecords, TransposeMovesValuesOrSharesTheBuffer) {
  struct Case {
    Shape shape;
    std::vector<int64_t> perm;
  };
  for (const Case& c : {Case{{3, 1, 4}, {1, 0, 2}}, Case{{2, 1, 3}, {2, 1, 0}}, Case{{1, 4, 1, 2}, {2, 0, 1, 3}},
                        Case{{2, 3, 4}, {0, 2, 1}}}) {
    B b;
    b.input("x", c.shape);
    auto& t = b.node("Transpose", {"x"}, {"y"});
    B::attr(t, "perm", c.perm);
    b.output("y");
    Graph g = import_onnx_bytes(b.bytes(), "t.onnx", {.optimize = false, .input_shapes = {}});
    std::vector<float> v(static_cast<size_t>(element_count(c.shape)));
    for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(k);
    Tensor x = Tensor::from_floats(c.shape, v);
    Tensor y = Executor(g).run(x);
    Shape out;
    for (int64_t p : c.perm) out.push_back(c.shape[static_cast<size_t>(p)]);
    ASSERT_EQ(y.shape(), out);
    std::vector<int64_t> xs(c.shape.size(), 1), index(out.size(), 0);
    for (size_t d = c.shape.size() - 1; d-- > 0;) xs[d] = xs[d + 1] * c.shape[d + 1];
    for (int64_t k = 0; k < y.size(); ++k) {
      int64_t src = 0;
      for (size_t d = 0; d < out.size(); ++d) src += index[d] * xs[static_cast<size_t>(c.perm[d])];
      ASSERT_EQ(y.data<float>()[k], v[static_cast<size_t>(src)]) << to_string(c.shape) << " element " << k;
      for (size_t d = out.size(); d-- > 0;) {
        if (++index[d] < out[d]) break;
        index[d] = 0;
      }
    }
  }
}

// The integer engine's float steps (NodeRunner) infer their output shapes once and again only when
// the batch, an input's shape or a small input's contents (here a Reshape target) change.
TEST(OperatorRecords, NodeRunnerInfersShapesAgainWhenWhatTheyDependOnChanges) {
  Node n;
  n.name = "reshape";
  n.op = OpType::kReshape;
  n.inputs = {0, 1};
  n.outputs = {2};
  n.attrs = ReshapeAttrs{};
  NodeRunner runner(n, "test.onnx");
  std::vector<float> values(24);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  auto shape_after = [&](Shape x_shape, std::vector<int64_t> target, int64_t batch) {
    const Tensor x = Tensor::from_floats(x_shape, std::span<const float>(values.data(), 12 * static_cast<size_t>(batch)));
    const Tensor t = Tensor::from_int64s({static_cast<int64_t>(target.size())}, target);
    const Tensor* in[] = {&x, &t};
    std::vector<Tensor> y = runner.run(in, batch, nullptr);
    EXPECT_EQ(std::memcmp(y[0].data<float>(), values.data(), y[0].bytes()), 0);
    return y[0].shape();
  };
  EXPECT_EQ(shape_after({1, 12}, {1, 3, 4}, 1), (Shape{1, 3, 4}));
  EXPECT_EQ(shape_after({1, 12}, {1, 3, 4}, 1), (Shape{1, 3, 4}));
  EXPECT_EQ(shape_after({1, 12}, {1, 4, 3}, 1), (Shape{1, 4, 3}));  // the target's contents changed
  EXPECT_EQ(shape_after({2, 12}, {2, 4, 3}, 2), (Shape{2, 4, 3}));  // the batch and the input's shape
  EXPECT_EQ(shape_after({2, 12}, {kSymbolicBatch, 6, 2}, 2), (Shape{2, 6, 2}));
  EXPECT_EQ(shape_after({1, 12}, {kSymbolicBatch, 6, 2}, 1), (Shape{1, 6, 2}));  // the batch alone
  EXPECT_THROW(shape_after({1, 12}, {1, 5, 3}, 1), Error);  // 15 values: refused, nothing cached
  EXPECT_EQ(shape_after({1, 12}, {1, 6, 2}, 1), (Shape{1, 6, 2}));
}

}  // namespace
}  // namespace tern::testing
