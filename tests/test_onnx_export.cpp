// Writing fine-tuned ONNX models: initializers replaced, everything else kept, bad requests refused.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "core/file_io.h"
#include "onnx_builder.h"
#include "temp_dir.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;
using B = OnnxBuilder;


void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

Tensor random_tensor(Shape shape, uint32_t seed) {
  Tensor t(DataType::kFloat32, shape);
  auto v = random_floats(static_cast<size_t>(t.size()), seed);
  std::copy(v.begin(), v.end(), t.data<float>());
  return t;
}

Tensor transposed(const Tensor& t) {
  Tensor out(DataType::kFloat32, {t.dim(1), t.dim(0)});
  for (int64_t r = 0; r < t.dim(0); ++r)
    for (int64_t c = 0; c < t.dim(1); ++c) out.data<float>()[c * t.dim(0) + r] = t.data<float>()[r * t.dim(1) + c];
  return out;
}

const Tensor& constant_named(const Graph& g, const std::string& name) {
  for (const Value& v : g.values)
    if (v.name == name && v.constant) return *v.constant;
  throw Error("no constant '" + name + "' in the graph");
}

void expect_same(const Tensor& actual, const Tensor& expected) {
  ASSERT_EQ(actual.shape(), expected.shape());
  for (int64_t i = 0; i < actual.size(); ++i) ASSERT_EQ(actual.data<float>()[i], expected.data<float>()[i]) << i;
}

// x[2,2,4,4] -> Conv(3x3, pad 1) -> Reshape [2,48] -> Gemm transB=1 [5,48] -> Gemm transB=0 stored [5,4] -> y[2,4].
B small_model() {
  B b;
  b.input("x", {2, 2, 4, 4});
  b.floats("conv_w", {3, 2, 3, 3}, random_floats(54, 1));
  b.floats("conv_b", {3}, {0.1f, -0.2f, 0.3f});
  b.ints("flat_shape", {2}, {2, 48});
  b.floats("fc1_w", {5, 48}, random_floats(240, 2));
  b.floats("fc1_b", {5}, random_floats(5, 3));
  b.floats("fc2_w", {5, 4}, random_floats(20, 4));
  b.floats("fc2_b", {4}, random_floats(4, 5));
  B::attr(b.node("Conv", {"x", "conv_w", "conv_b"}, {"c"}, "conv"), "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Reshape", {"c", "flat_shape"}, {"f"}, "flatten");
  B::attr(b.node("Gemm", {"f", "fc1_w", "fc1_b"}, {"h"}, "fc1"), "transB", int64_t{1});
  b.node("Gemm", {"h", "fc2_w", "fc2_b"}, {"y"}, "fc2");  // transB = 0: tern stores it transposed
  b.output("y");
  b.metadata("author", "test").metadata("kept", "yes");
  return b;
}

TEST(OnnxExport, ReplacesInitializersAndKeepsTheRest) {
  TempDir dir;
  B source = small_model();
  write_bytes(dir.file("in.onnx"), source.bytes());
  Tensor conv_w = random_tensor({3, 2, 3, 3}, 11), conv_b = random_tensor({3}, 12);
  Tensor fc1_w = random_tensor({5, 48}, 13);
  Tensor fc2_w_canonical = random_tensor({4, 5}, 14);  // [out][in], the transpose of the stored [5,4]
  write_onnx_with_initializers(dir.file("in.onnx"), dir.file("out.onnx"),
                               {{"conv_w", conv_w}, {"conv_b", conv_b}, {"fc1_w", fc1_w}, {"fc2_w", fc2_w_canonical}},
                               {{"author", "fine-tuned"}, {"epochs", "3"}});
  EXPECT_FALSE(fs::exists(dir.file("out.onnx.tmp")));

  Graph g = import_onnx(dir.file("out.onnx"), {.optimize = false, .input_shapes = {}});
  expect_same(constant_named(g, "conv_w"), conv_w);
  expect_same(constant_named(g, "conv_b"), conv_b);
  expect_same(constant_named(g, "fc1_w"), fc1_w);
  expect_same(constant_named(g, "fc2_w"), transposed(fc2_w_canonical));
  EXPECT_EQ(g.metadata,
            (std::map<std::string, std::string>{{"author", "fine-tuned"}, {"kept", "yes"}, {"epochs", "3"}}));

  // Everything but the replaced values and the metadata is the source's, byte for byte.
  onnx::ModelProto out;
  ASSERT_TRUE(out.ParseFromString(read_whole_file(dir.file("out.onnx"))));
  const onnx::ModelProto& in = source.model();
  EXPECT_EQ(out.ir_version(), in.ir_version());
  ASSERT_EQ(out.opset_import_size(), in.opset_import_size());
  EXPECT_EQ(out.opset_import(0).SerializeAsString(), in.opset_import(0).SerializeAsString());
  ASSERT_EQ(out.graph().node_size(), in.graph().node_size());
  for (int i = 0; i < in.graph().node_size(); ++i)
    EXPECT_EQ(out.graph().node(i).SerializeAsString(), in.graph().node(i).SerializeAsString());
  ASSERT_EQ(out.graph().initializer_size(), in.graph().initializer_size());
  for (int i = 0; i < in.graph().initializer_size(); ++i) {
    const auto& before = in.graph().initializer(i);
    const auto& after = out.graph().initializer(i);
    EXPECT_EQ(after.name(), before.name());
    EXPECT_EQ(after.dims().size(), before.dims().size());
    bool replaced = before.name() == "conv_w" || before.name() == "conv_b" || before.name() == "fc1_w" ||
                    before.name() == "fc2_w";
    if (replaced) EXPECT_EQ(after.float_data_size(), 0) << after.name();
    else EXPECT_EQ(after.SerializeAsString(), before.SerializeAsString()) << after.name();
  }
}

// Fine-tuning sees tern's canonical graph, where a transB=0 Gemm weight is a new [out][in] constant;
// written back under the ONNX name, the re-imported model must compute what the tuned graph did.
TEST(OnnxExport, TransposedGemmRoundTripsThroughTheCanonicalLayout) {
  TempDir dir;
  write_bytes(dir.file("in.onnx"), small_model().bytes());
  Graph tuned = import_onnx(dir.file("in.onnx"));
  ASSERT_EQ(constant_named(tuned, "fc2.weight_transposed").shape(), (Shape{4, 5}));
  Tensor fc2_w = random_tensor({4, 5}, 21), conv_w = random_tensor({3, 2, 3, 3}, 22);
  write_onnx_with_initializers(dir.file("in.onnx"), dir.file("out.onnx"), {{"fc2_w", fc2_w}, {"conv_w", conv_w}});

  Graph reimported = import_onnx(dir.file("out.onnx"));
  expect_same(constant_named(reimported, "fc2.weight_transposed"), fc2_w);
  Executor expected(tuned);
  expected.set_constant("fc2.weight_transposed", fc2_w);
  expected.set_constant("conv_w", conv_w);
  Tensor x = random_tensor({2, 2, 4, 4}, 23);
  expect_same(Executor(reimported).run(x), expected.run(x));
}

TEST(OnnxExport, TransposedGemmMatchesAHandComputation) {
  TempDir dir;
  B b;
  b.input("x", {2, 3});
  b.floats("w", {3, 2}, random_floats(6, 31));  // [in][out]
  b.floats("bias", {2}, {0.5f, -1.0f});
  b.node("Gemm", {"x", "w", "bias"}, {"y"}, "fc");
  b.output("y");
  write_bytes(dir.file("in.onnx"), b.bytes());
  Tensor w = Tensor::from_floats({2, 3}, std::vector<float>{1, 2, 3, -1, 0.5f, 4});  // [out][in]
  write_onnx_with_initializers(dir.file("in.onnx"), dir.file("out.onnx"), {{"w", w}});
  Tensor x = Tensor::from_floats({2, 3}, std::vector<float>{1, -2, 0.25f, 3, 1, -1});
  Tensor y = Executor(import_onnx(dir.file("out.onnx"))).run(x);
  // y[b][o] = sum_i x[b][i] * w[o][i] + bias[o]
  expect_same(y, Tensor::from_floats({2, 2}, std::vector<float>{1 - 4 + 0.75f + 0.5f, -1 - 1 + 1 - 1.0f,
                                                                  3 + 2 - 3 + 0.5f, -3 + 0.5f - 4 - 1.0f}));
}

void expect_refused(const std::function<void()>& write, const std::vector<std::string>& named,
                    const std::string& out_path) {
  try {
    write();
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    for (const auto& s : named)
      EXPECT_NE(std::string(e.what()).find(s), std::string::npos) << e.what() << " lacks " << s;
  }
  EXPECT_FALSE(fs::exists(out_path));
  EXPECT_FALSE(fs::exists(out_path + ".tmp"));
}

TEST(OnnxExport, RefusesBadReplacementsAndSourcesWithoutWritingAnything) {
  TempDir dir;
  std::string in = dir.file("in.onnx"), out = dir.file("out.onnx");
  write_bytes(in, small_model().bytes());
  auto write = [&](const std::string& source, std::map<std::string, Tensor> replacements) {
    return [=] { write_onnx_with_initializers(source, out, replacements); };
  };
  Tensor three = random_tensor({3}, 41);
  expect_refused(write(in, {{"conv_b", three}, {"no_such_weight", three}}), {in, "'no_such_weight'"}, out);
  expect_refused(write(in, {{"c", three}}), {in, "'c'"}, out);  // a node output, not an initializer
  expect_refused(write(in, {{"conv_b", random_tensor({4}, 42)}}), {in, "'conv_b'"}, out);
  expect_refused(write(in, {{"fc2_w", random_tensor({4, 4}, 43)}}), {in, "'fc2_w'"}, out);
  expect_refused(write(in, {{"flat_shape", random_tensor({2}, 44)}}), {in, "'flat_shape'", "float32"}, out);
  expect_refused(write(in, {{"conv_b", Tensor::from_int64s({3}, std::vector<int64_t>{1, 2, 3})}}),
                 {in, "'conv_b'", "float32"}, out);

  std::string corrupt = dir.file("corrupt.onnx");
  write_bytes(corrupt, "\x0a\xff\xff\xff\x0f not protobuf");
  expect_refused(write(corrupt, {{"conv_b", three}}), {corrupt}, out);
  std::string empty = dir.file("empty.onnx");
  write_bytes(empty, "");
  expect_refused(write(empty, {{"conv_b", three}}), {empty}, out);
  expect_refused(write(dir.file("missing.onnx"), {{"conv_b", three}}), {dir.file("missing.onnx")}, out);
}

}  // namespace
}  // namespace tern::testing
