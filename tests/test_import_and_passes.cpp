// ONNX import, shape inference and graph passes on small models built in the test.
#include <gtest/gtest.h>

#include <map>

#include <algorithm>
#include <cmath>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"

namespace tern::testing {
namespace {

using B = OnnxBuilder;

bool has_op(const Graph& g, OpType op) {
  return std::any_of(g.nodes.begin(), g.nodes.end(), [op](const Node& n) { return n.op == op; });
}

Tensor random_tensor(Shape shape, uint32_t seed) {
  Tensor t(DataType::kFloat32, shape);
  auto v = random_floats(static_cast<size_t>(t.size()), seed);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape(), b.shape());
  float m = 0;
  for (int64_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a.data<float>()[i] - b.data<float>()[i]));
  return m;
}

// Conv -> BatchNorm -> Relu -> Dropout -> x.view(x.size(0), -1) -> Gemm, as PyTorch exports it
// with training-mode BatchNorm kept (do_constant_folding=False).
B conv_bn_model() {
  B b;
  b.input("x", {-1, 3, 6, 5});
  b.floats("w", {4, 3, 3, 3}, random_floats(4 * 27, 1));
  b.floats("gamma", {4}, {1.5f, 0.5f, -1.0f, 2.0f});
  b.floats("beta", {4}, {0.1f, -0.2f, 0.3f, 0.0f});
  b.floats("mean", {4}, {0.05f, -0.1f, 0.2f, 0.0f});
  b.floats("var", {4}, {0.9f, 1.1f, 0.5f, 2.0f});
  b.floats("fc_w", {2, 4 * 3 * 3}, random_floats(72, 2));
  b.floats("fc_b", {2}, {0.5f, -0.5f});
  b.ints("zero", {1}, {0});
  b.ints("minus_one", {1}, {-1});
  auto& conv = b.node("Conv", {"x", "w"}, {"c"}, "conv");
  B::attr(conv, "strides", std::vector<int64_t>{2, 2});
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("BatchNormalization", {"c", "gamma", "beta", "mean", "var"}, {"bn"}, "bn");
  b.node("Relu", {"bn"}, {"r"}, "relu");
  b.node("Dropout", {"r"}, {"d"}, "dropout");
  b.node("Shape", {"d"}, {"shape"}, "shape");
  b.node("Gather", {"shape", "zero"}, {"batch"}, "gather");  // Gather of a 1-D index keeps rank 1
  b.node("Concat", {"batch", "minus_one"}, {"target"}, "concat").add_attribute()->CopyFrom([] {
    onnx::AttributeProto a;
    a.set_name("axis");
    a.set_type(onnx::AttributeProto::INT);
    a.set_i(0);
    return a;
  }());
  b.node("Reshape", {"d", "target"}, {"flat"}, "reshape");
  auto& fc = b.node("Gemm", {"flat", "fc_w", "fc_b"}, {"y"}, "fc");
  B::attr(fc, "transB", int64_t{1});
  b.output("y");
  return b;
}

TEST(Import, FoldsShapeSubgraphBatchNormDropoutAndRelu) {
  B b = conv_bn_model();
  Graph plain = import_onnx_bytes(b.bytes(), "conv_bn", {.optimize = false, .input_shapes = {}});
  Graph opt = import_onnx_bytes(b.bytes(), "conv_bn");
  EXPECT_TRUE(has_op(plain, OpType::kBatchNormalization));
  EXPECT_FALSE(has_op(opt, OpType::kBatchNormalization));
  EXPECT_FALSE(has_op(opt, OpType::kRelu));
  EXPECT_FALSE(has_op(opt, OpType::kIdentity));
  EXPECT_FALSE(has_op(opt, OpType::kShape));
  EXPECT_FALSE(has_op(opt, OpType::kGather));
  ASSERT_EQ(opt.nodes.size(), 3u);  // Conv(+Relu), Reshape, Gemm
  EXPECT_EQ(opt.nodes[0].attr<ConvAttrs>().clamp_lo, 0.0f);
  const Value& flat = opt.value(opt.nodes[1].outputs[0]);
  EXPECT_EQ(flat.shape, (Shape{kDynamicDim, 36}));
  EXPECT_EQ(opt.value(opt.outputs[0]).shape, (Shape{kDynamicDim, 2}));

  // The optimized graph computes what the unoptimized one does, at several batch sizes.
  Executor reference(plain), fast(opt);
  for (int64_t batch : {1, 3, 8}) {
    Tensor x = random_tensor({batch, 3, 6, 5}, static_cast<uint32_t>(batch));
    Tensor a = reference.run(x), c = fast.run(x);
    EXPECT_EQ(c.shape(), (Shape{batch, 2}));
    EXPECT_LT(max_abs_diff(a, c), 1e-5f);
  }
}

TEST(Import, UnsupportedOperatorNamesOpAndNode) {
  B b;
  b.input("x", {1, 4});
  b.node("Relu", {"x"}, {"r"}, "first");
  b.node("Resize", {"r"}, {"y"}, "the_resize_node");
  b.output("y");
  try {
    import_onnx_bytes(b.bytes(), "model.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("model.onnx"), std::string::npos) << m;
    EXPECT_NE(m.find("Resize"), std::string::npos) << m;
    EXPECT_NE(m.find("the_resize_node"), std::string::npos) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "one line: " << m;
  }
}

TEST(Import, EveryTruncationAndByteFlipIsACleanError) {
  std::string bytes = conv_bn_model().bytes();
  int errors = 0;
  for (size_t n = 0; n < bytes.size(); ++n) {
    try {
      Graph g = import_onnx_bytes(std::string_view(bytes.data(), n), "truncated.onnx");
      Executor e(g);  // a prefix that still parses must still be a consistent graph
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, static_cast<int>(bytes.size()) * 9 / 10);
  uint32_t seed = 7;
  for (int trial = 0; trial < 2000; ++trial) {
    std::string corrupt = bytes;
    for (int k = 0; k < 3; ++k) {
      seed = seed * 1664525u + 1013904223u;
      corrupt[(seed >> 8) % corrupt.size()] ^= static_cast<char>(1 + (seed & 0x7f));
    }
    try {
      Graph g = import_onnx_bytes(corrupt, "flipped.onnx");
      Executor e(g);
      e.run(random_tensor({2, 3, 6, 5}, 3));
    } catch (const Error&) {
    }
  }
}

TEST(Import, NotOnnxAndEmptyInputsAreErrors) {
  EXPECT_THROW(import_onnx_bytes("", "empty.onnx"), Error);
  EXPECT_THROW(import_onnx_bytes("this is plain text, not a protobuf", "text.onnx"), Error);
  EXPECT_THROW(import_onnx("/nonexistent/model.onnx"), Error);
  B b;  // a model with no nodes
  b.input("x", {1});
  b.output("x");
  EXPECT_THROW(import_onnx_bytes(b.bytes(), "no_nodes.onnx"), Error);
}

TEST(Import, SortsNodesTopologically) {
  B b;
  b.input("x", {2, 3});
  b.node("Sigmoid", {"r"}, {"y"}, "second");  // listed before its producer
  b.node("Relu", {"x"}, {"r"}, "first");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "unsorted");
  ASSERT_EQ(g.nodes.size(), 2u);
  EXPECT_EQ(g.nodes[0].name, "first");
}

TEST(Import, CycleIsAnError) {
  B b;
  b.input("x", {2});
  b.node("Add", {"x", "b"}, {"a"}, "n1");
  b.node("Relu", {"a"}, {"b"}, "n2");
  b.output("b");
  EXPECT_THROW(import_onnx_bytes(b.bytes(), "cycle"), Error);
}

TEST(Import, MetadataAndDynamicBatch) {
  B b;
  b.input("x", {-1, 1, 4, 4});
  b.node("GlobalAveragePool", {"x"}, {"y"});
  b.output("y");
  b.metadata("tern.mean", "0.5");
  Graph g = import_onnx_bytes(b.bytes(), "meta");
  EXPECT_EQ(g.metadata.at("tern.mean"), "0.5");
  EXPECT_EQ(g.value(g.inputs[0]).shape, (Shape{kDynamicDim, 1, 4, 4}));
  EXPECT_EQ(g.value(g.outputs[0]).shape, (Shape{kDynamicDim, 1, 1, 1}));
}

TEST(ShapeInference, ConvShapeMismatchNamesTheNode) {
  B b;
  b.input("x", {1, 3, 8, 8});
  b.floats("w", {4, 2, 3, 3}, std::vector<float>(72, 0.1f));  // expects 2 input channels
  b.node("Conv", {"x", "w"}, {"y"}, "bad_conv");
  b.output("y");
  try {
    import_onnx_bytes(b.bytes(), "m.onnx");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad_conv"), std::string::npos) << e.what();
  }
}

TEST(ShapeInference, AutoPadSameUpperAndCeilModePooling) {
  B b;
  b.input("x", {1, 2, 7, 7});
  b.floats("w", {2, 2, 3, 3}, random_floats(36, 4));
  auto& conv = b.node("Conv", {"x", "w"}, {"c"}, "conv");
  B::attr(conv, "strides", std::vector<int64_t>{2, 2});
  auto* a = conv.add_attribute();
  a->set_name("auto_pad");
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s("SAME_UPPER");
  auto& pool = b.node("MaxPool", {"c"}, {"y"}, "pool");
  B::attr(pool, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(pool, "strides", std::vector<int64_t>{2, 2});
  B::attr(pool, "ceil_mode", int64_t{1});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "pads");
  EXPECT_EQ(g.value(g.nodes[0].outputs[0]).shape, (Shape{1, 2, 4, 4}));  // ceil(7/2)
  EXPECT_EQ(g.nodes[0].attr<ConvAttrs>().pads, (std::vector<int64_t>{1, 1, 1, 1}));
  EXPECT_EQ(g.value(g.outputs[0]).shape, (Shape{1, 2, 2, 2}));
}

TEST(Executor, WrongInputShapeNamesTheInput) {
  B b = conv_bn_model();
  Executor e(import_onnx_bytes(b.bytes(), "m.onnx"));
  try {
    e.run(random_tensor({1, 3, 7, 5}, 1));
    FAIL();
  } catch (const Error& err) {
    std::string m = err.what();
    EXPECT_NE(m.find("input 'x'"), std::string::npos) << m;
    EXPECT_NE(m.find("[1,3,7,5]"), std::string::npos) << m;
  }
  Tensor ints(DataType::kInt64, {1, 3, 6, 5});
  EXPECT_THROW(e.run(ints), Error);
}

TEST(Passes, BatchNormFoldsIntoGemm) {
  B b;
  b.input("x", {-1, 5});
  b.floats("w", {5, 3}, random_floats(15, 9));
  b.floats("c", {3}, {0.1f, 0.2f, 0.3f});
  b.floats("gamma", {3}, {1.0f, 2.0f, 0.5f});
  b.floats("beta", {3}, {0.0f, 1.0f, -1.0f});
  b.floats("mean", {3}, {0.5f, 0.0f, -0.5f});
  b.floats("var", {3}, {1.0f, 4.0f, 0.25f});
  auto& g = b.node("Gemm", {"x", "w", "c"}, {"g"}, "gemm");
  B::attr(g, "alpha", 0.5f);
  b.node("BatchNormalization", {"g", "gamma", "beta", "mean", "var"}, {"y"}, "bn");
  b.output("y");
  Graph plain = import_onnx_bytes(b.bytes(), "gemm_bn", {.optimize = false, .input_shapes = {}});
  Graph opt = import_onnx_bytes(b.bytes(), "gemm_bn");
  EXPECT_FALSE(has_op(opt, OpType::kBatchNormalization));
  Executor r(plain), f(opt);
  Tensor x = random_tensor({4, 5}, 11);
  EXPECT_LT(max_abs_diff(r.run(x), f.run(x)), 1e-5f);
}

// The executor's prepared Gemm (weights packed once, alpha/beta folded) against the unprepared op.
TEST(Executor, PreparedGemmMatchesReference) {
  struct Case {
    bool trans_b;
    float alpha, beta;
    std::vector<int64_t> bias_dims;  // empty: no bias
  };
  for (const Case& c : {Case{true, 1.0f, 1.0f, {7}}, Case{false, 0.5f, 2.0f, {1, 7}}, Case{true, 1.0f, 1.0f, {}},
                        Case{false, 1.0f, 0.25f, {1}}, Case{true, -1.5f, 1.0f, {7}}}) {
    B b;
    b.input("x", {-1, 9});
    std::vector<int64_t> w_dims = c.trans_b ? std::vector<int64_t>{7, 9} : std::vector<int64_t>{9, 7};
    b.floats("w", w_dims, random_floats(63, 3));
    std::vector<std::string> inputs = {"x", "w"};
    if (!c.bias_dims.empty()) {
      int64_t n = 1;
      for (int64_t d : c.bias_dims) n *= d;
      b.floats("c", c.bias_dims, random_floats(static_cast<size_t>(n), 4));
      inputs.push_back("c");
    }
    auto& g = b.node("Gemm", inputs, {"g"}, "gemm");
    B::attr(g, "transB", int64_t{c.trans_b});
    B::attr(g, "alpha", c.alpha);
    B::attr(g, "beta", c.beta);
    b.node("Relu", {"g"}, {"y"}, "relu");
    b.output("y");
    Graph graph = import_onnx_bytes(b.bytes(), "gemm");
    Executor prepared(graph);
    for (int64_t batch : {1, 5}) {
      Tensor x = random_tensor({batch, 9}, static_cast<uint32_t>(batch + 10));
      std::vector<const Tensor*> in;
      for (ValueId id : graph.nodes[0].inputs) in.push_back(id == graph.inputs[0] ? &x : &graph.constant(id));
      Tensor want = evaluate_node(graph.nodes[0], in, batch, nullptr)[0];
      EXPECT_LT(max_abs_diff(prepared.run(x), want), 1e-5f) << "trans_b " << c.trans_b << " alpha " << c.alpha;
    }
  }
}

TEST(Passes, MatMulAndUntransposedGemmBecomeCanonicalGemm) {
  B b;
  b.input("x", {-1, 6});
  b.floats("w1", {6, 5}, random_floats(30, 12));
  b.floats("w2", {5, 3}, random_floats(15, 13));
  b.floats("c2", {3}, {1, 2, 3});
  b.node("MatMul", {"x", "w1"}, {"h"}, "matmul");
  b.node("Gemm", {"h", "w2", "c2"}, {"y"}, "gemm");
  b.output("y");
  Graph plain = import_onnx_bytes(b.bytes(), "mm", {.optimize = false, .input_shapes = {}});
  Graph opt = import_onnx_bytes(b.bytes(), "mm");
  ASSERT_EQ(opt.nodes.size(), 2u);
  for (const Node& n : opt.nodes) {
    ASSERT_EQ(n.op, OpType::kGemm);
    EXPECT_TRUE(n.attr<GemmAttrs>().trans_b);
  }
  EXPECT_EQ(opt.constant(opt.nodes[0].inputs[1]).shape(), (Shape{5, 6}));
  Executor r(plain), f(opt);
  Tensor x = random_tensor({3, 6}, 14);
  EXPECT_LT(max_abs_diff(r.run(x), f.run(x)), 1e-5f);
}

TEST(Passes, ArithmeticOnTheDynamicBatchRunsAtRunTime) {
  B b;
  b.input("x", {-1, 4});
  b.ints("idx", {1}, {0});
  b.ints("two", {1}, {2});
  b.node("Shape", {"x"}, {"s"});
  b.node("Gather", {"s", "idx"}, {"n"});
  b.node("Mul", {"n", "two"}, {"y"});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "dyn");
  EXPECT_EQ(g.nodes.size(), 3u);  // known only at run time
  Executor e(g);
  Tensor y = e.run(random_tensor({3, 4}, 1));
  ASSERT_EQ(y.dtype(), DataType::kInt64);
  EXPECT_EQ(y.data<int64_t>()[0], 6);
  EXPECT_EQ(y.size(), 1);
}

// Paddle's idiom: the shape cast to int32, sliced, joined with constants, cast back to int64 and
// used as a Reshape target, on a dynamic batch. The target is known up to the batch, so the whole
// sub-graph folds into a constant target.
TEST(Passes, PaddleShapeCastSliceConcatReshapeFolds) {
  B b;
  b.input("x", {-1, 2, 3, 4});
  b.model().mutable_graph()->add_initializer()->CopyFrom([] {
    onnx::TensorProto t;
    t.set_name("tail");
    t.set_data_type(onnx::TensorProto::INT32);
    t.add_dims(2);
    t.add_int32_data(-1);
    t.add_int32_data(4);
    return t;
  }());
  b.ints("starts", {1}, {0});
  b.ints("ends", {1}, {1});
  b.node("Shape", {"x"}, {"s"});
  auto& c32 = b.node("Cast", {"s"}, {"s32"});
  B::attr(c32, "to", int64_t{onnx::TensorProto::INT32});
  b.node("Slice", {"s32", "starts", "ends"}, {"n"});
  auto& cat = b.node("Concat", {"n", "tail"}, {"t32"});
  B::attr(cat, "axis", int64_t{0});
  auto& c64 = b.node("Cast", {"t32"}, {"t"});
  B::attr(c64, "to", int64_t{onnx::TensorProto::INT64});
  b.node("Reshape", {"x", "t"}, {"y"});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "paddle.onnx");
  ASSERT_EQ(g.nodes.size(), 1u);
  EXPECT_EQ(g.nodes[0].op, OpType::kReshape);
  EXPECT_EQ(g.value(g.outputs[0]).shape, (Shape{kDynamicDim, 6, 4}));
  Tensor x = random_tensor({5, 2, 3, 4}, 2);
  Tensor y = Executor(g).run(x);
  EXPECT_EQ(y.shape(), (Shape{5, 6, 4}));
  EXPECT_TRUE(std::equal(y.floats().begin(), y.floats().end(), x.floats().begin()));
}

// torchvision's ViT: a class token expanded to the batch (Shape -> Gather -> Concat with -1s ->
// Reshape -> Equal(shape, -1) -> Where -> Expand), concatenated with the patch tokens, then a
// linear layer. The shapes are known at import with the batch dynamic, so the MatMul by constant
// weights becomes a Gemm (quantizable) and the batch stays the batch.
TEST(Passes, ClassTokenExpandedToTheBatchKeepsShapesKnown) {
  B b;
  b.input("x", {-1, 4, 8});
  b.floats("token", {1, 1, 8}, random_floats(8, 1));
  b.floats("w", {8, 5}, random_floats(40, 2));
  b.ints("zero", {}, {0});
  b.ints("axes0", {1}, {0});
  b.ints("minus", {1}, {-1});
  b.ints("three", {1}, {3});
  b.ints("all_minus", {3}, {-1, -1, -1});
  b.ints("ones", {3}, {1, 1, 1});
  b.node("Shape", {"x"}, {"s"});
  auto& gather = b.node("Gather", {"s", "zero"}, {"n"});
  B::attr(gather, "axis", int64_t{0});
  b.node("Unsqueeze", {"n", "axes0"}, {"n1"});
  auto& cat = b.node("Concat", {"n1", "minus", "minus"}, {"target"});
  B::attr(cat, "axis", int64_t{0});
  b.node("Reshape", {"target", "three"}, {"target3"});
  b.node("Equal", {"target3", "all_minus"}, {"eq"});
  b.node("Where", {"eq", "ones", "target3"}, {"shape"});
  b.node("Expand", {"token", "shape"}, {"cls"});
  auto& join = b.node("Concat", {"cls", "x"}, {"tokens"});
  B::attr(join, "axis", int64_t{1});
  b.node("MatMul", {"tokens", "w"}, {"y"});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "vit.onnx");
  const Value& y = g.value(g.outputs[0]);
  ASSERT_TRUE(y.shape_known);
  EXPECT_EQ(y.shape, (Shape{kDynamicDim, 5, 5}));
  EXPECT_TRUE(y.batch_leading());
  bool gemm = false;
  for (const Node& n : g.nodes) gemm = gemm || n.op == OpType::kGemm;
  EXPECT_TRUE(gemm) << "the MatMul by constant weights did not become a Gemm";
  Tensor x = random_tensor({3, 4, 8}, 3);
  Tensor out = Executor(g).run(x);
  ASSERT_EQ(out.shape(), (Shape{3, 5, 5}));
  std::vector<float> token = random_floats(8, 1), w = random_floats(40, 2);
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = 0; j < 5; ++j) {
      double cls = 0, first = 0;
      for (int64_t k = 0; k < 8; ++k) {
        cls += double(token[static_cast<size_t>(k)]) * w[static_cast<size_t>(k * 5 + j)];
        first += double(x.floats()[static_cast<size_t>(i * 32 + k)]) * w[static_cast<size_t>(k * 5 + j)];
      }
      EXPECT_NEAR(out.floats()[static_cast<size_t>(i * 25 + j)], cls, 1e-5);
      EXPECT_NEAR(out.floats()[static_cast<size_t>(i * 25 + 5 + j)], first, 1e-5);
    }
}

// Shapes that depend on dynamic spatial sizes stay computations, run for the real input: the
// reshape to [N, C, H*W] of a model whose H and W are dynamic.
TEST(Passes, ShapeArithmeticOnDynamicSpatialSizesRunsForEachInput) {
  B b;
  b.input("x", {-1, 3, -1, -1});
  b.ints("i01", {2}, {0, 1});
  b.ints("i2", {1}, {2});
  b.ints("i3", {1}, {3});
  b.node("Shape", {"x"}, {"s"});
  b.node("Gather", {"s", "i01"}, {"nc"});
  b.node("Gather", {"s", "i2"}, {"h"});
  b.node("Gather", {"s", "i3"}, {"w"});
  b.node("Mul", {"h", "w"}, {"hw"});
  auto& cat = b.node("Concat", {"nc", "hw"}, {"t"});
  B::attr(cat, "axis", int64_t{0});
  b.node("Reshape", {"x", "t"}, {"y"});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "dynhw.onnx");
  const Value& y = g.value(g.outputs[0]);
  ASSERT_TRUE(y.shape_known);
  EXPECT_EQ(y.shape, (Shape{kDynamicDim, 3, kDynamicDim}));  // C known, H*W not until run time
  Executor e(g);
  for (Shape s : {Shape{2, 3, 4, 5}, Shape{1, 3, 7, 2}}) {
    Tensor x = random_tensor(s, 3);
    Tensor out = e.run(x);
    EXPECT_EQ(out.shape(), (Shape{s[0], 3, s[2] * s[3]}));
    EXPECT_TRUE(std::equal(out.floats().begin(), out.floats().end(), x.floats().begin()));
  }
}

// Where the batch is: a Reshape that copies the batch dim (ONNX's 0) keeps it there; one that
// names no batch (-1 merges it with other dims) loses it; a Transpose moves it and moves it back.
TEST(Import, TracesTheBatchThroughReshapesAndTransposes) {
  OnnxBuilder b;
  b.input("x", {-1, 4, 6});
  b.ints("copy_batch", {2}, {0, -1});
  b.ints("merged", {2}, {-1, 6});
  b.node("Reshape", {"x", "copy_batch"}, {"flat"}, "flat");
  b.node("Reshape", {"x", "merged"}, {"rows"}, "rows");
  auto& t1 = b.node("Transpose", {"x"}, {"seq"}, "to_sequence_first");
  OnnxBuilder::attr(t1, "perm", std::vector<int64_t>{1, 0, 2});
  auto& t2 = b.node("Transpose", {"seq"}, {"back"}, "to_batch_first");
  OnnxBuilder::attr(t2, "perm", std::vector<int64_t>{1, 0, 2});
  for (const char* out : {"flat", "rows", "seq", "back"}) b.output(out);
  Graph g = import_onnx_bytes(b.bytes(), "batch.onnx", {.optimize = false, .input_shapes = {}});
  std::map<std::string, int> axis;
  for (ValueId v : g.outputs) axis[g.value(v).name] = g.value(v).batch_axis;
  EXPECT_EQ(axis["flat"], 0);
  EXPECT_EQ(axis["rows"], -1);
  EXPECT_EQ(axis["seq"], 1);
  EXPECT_EQ(axis["back"], 0);
}

}  // namespace
}  // namespace tern::testing
