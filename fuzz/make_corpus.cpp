// Writes the fuzz target's seed corpus (fuzz/corpus/): small, valid .tern files that between them
// use every section, every attribute kind the importer produces and the quantized model's
// layouts (two-level and float scales, two scales per group, residual terms and edges, int32
// biases, static and dynamic activations). Deterministic: the same files on every run.
//
//   tern_fuzz_make_corpus OUT_DIR
#include <cstdio>
#include <fstream>
#include <string>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/model_io.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"
#include "tern/residual.h"
#include "tern/tern_file.h"

namespace {

using tern::testing::OnnxBuilder;
using tern::testing::random_floats;
namespace q = tern::quant;
using B = OnnxBuilder;

// x[?,4,6,6] -> conv1 (4->8, 3x3, pad 1, bias) -> Relu -> conv2 (8->6, 3x3) -> Relu
// -> GlobalAveragePool -> Flatten -> fc (6->5, bias). conv2's 8 inputs give N=4 two groups a filter.
std::string conv_model() {
  B b;
  b.input("x", {-1, 4, 6, 6});
  b.floats("w1", {8, 4, 3, 3}, random_floats(288, 11));
  b.floats("b1", {8}, random_floats(8, 12));
  b.floats("w2", {6, 8, 3, 3}, random_floats(432, 13));
  b.floats("wf", {5, 6}, random_floats(30, 14));
  b.floats("bf", {5}, random_floats(5, 15));
  auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  B::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c1"}, {"r1"}, "relu1");
  b.node("Conv", {"r1", "w2"}, {"c2"}, "conv2");
  b.node("Relu", {"c2"}, {"r2"}, "relu2");
  b.node("GlobalAveragePool", {"r2"}, {"p"}, "pool");
  auto& flat = b.node("Flatten", {"p"}, {"f"}, "flatten");
  B::attr(flat, "axis", int64_t{1});
  auto& fc = b.node("Gemm", {"f", "wf", "bf"}, {"y"}, "fc");
  B::attr(fc, "transB", int64_t{1});
  b.output("y");
  return b.bytes();
}

// Many operators and attribute kinds in one small graph (imported without the passes, so that
// BatchNormalization, Clip, Reshape, Transpose, ... stay in it).
std::string op_zoo_model() {
  B b;
  b.input("x", {-1, 2, 6, 6});
  b.floats("w", {4, 2, 3, 3}, random_floats(72, 21));
  b.floats("wd", {4, 1, 3, 3}, random_floats(36, 22));
  for (const char* p : {"scale", "bias", "mean"}) b.floats(p, {4}, random_floats(4, 23));
  b.floats("var", {4}, {0.5f, 1.0f, 1.5f, 2.0f});
  b.floats("lnw", {16}, random_floats(16, 24));
  b.floats("mm", {16, 3}, random_floats(48, 25));
  b.floats("two", {1}, {2.0f});
  b.ints("shape", {3}, {0, 4, 16});
  b.ints("starts", {1}, {1});
  b.ints("ends", {1}, {3});
  b.ints("axes1", {1}, {1});
  b.ints("pads", {8}, {0, 0, 1, 0, 0, 0, 0, 1});
  b.ints("idx", {2}, {0, 2});
  auto& conv = b.node("Conv", {"x", "w"}, {"c"}, "conv");
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  B::attr(conv, "strides", std::vector<int64_t>{1, 1});
  b.node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"bn"}, "bn");
  b.floats("lo", {}, {0.0f});
  b.floats("hi", {}, {6.0f});
  b.node("Clip", {"bn", "lo", "hi"}, {"cl"}, "clip");
  auto& dw = b.node("Conv", {"cl", "wd"}, {"d"}, "depthwise");
  B::attr(dw, "group", int64_t{4});
  {
    auto* a = dw.add_attribute();
    a->set_name("auto_pad");
    a->set_type(onnx::AttributeProto::STRING);
    a->set_s("SAME_UPPER");
  }
  auto& lr = b.node("LeakyRelu", {"d"}, {"l"}, "leaky");
  B::attr(lr, "alpha", 0.1f);
  auto& mp = b.node("MaxPool", {"l"}, {"mp"}, "maxpool");
  B::attr(mp, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(mp, "strides", std::vector<int64_t>{2, 2});
  auto& ap = b.node("AveragePool", {"l"}, {"ap"}, "avgpool");
  B::attr(ap, "kernel_shape", std::vector<int64_t>{3, 3});
  B::attr(ap, "strides", std::vector<int64_t>{2, 2});
  B::attr(ap, "pads", std::vector<int64_t>{0, 0, 1, 1});
  B::attr(ap, "ceil_mode", int64_t{1});
  B::attr(ap, "count_include_pad", int64_t{1});
  b.node("Sub", {"mp", "ap"}, {"sub"}, "sub");
  auto& cat = b.node("Concat", {"mp", "sub"}, {"cat"}, "concat");
  B::attr(cat, "axis", int64_t{1});
  b.node("Slice", {"cat", "starts", "ends", "axes1"}, {"sl"}, "slice");
  b.node("Pad", {"sl", "pads"}, {"pd"}, "pad");
  auto& tr = b.node("Transpose", {"pd"}, {"tr"}, "transpose");
  B::attr(tr, "perm", std::vector<int64_t>{0, 1, 3, 2});
  auto& hs = b.node("HardSigmoid", {"tr"}, {"hs"}, "hardsigmoid");
  B::attr(hs, "alpha", 0.25f);
  b.node("Mul", {"tr", "hs"}, {"mu"}, "mul");
  b.node("Reshape", {"mu", "shape"}, {"rs"}, "reshape");
  auto& ln = b.node("LayerNormalization", {"rs", "lnw"}, {"ln"}, "layernorm");
  B::attr(ln, "axis", int64_t{-1});
  b.node("Pow", {"ln", "two"}, {"pw"}, "pow");
  b.node("Sqrt", {"pw"}, {"sq"}, "sqrt");
  b.node("Erf", {"sq"}, {"erf"}, "erf");
  b.node("MatMul", {"erf", "mm"}, {"m"}, "matmul");
  auto& g = b.node("Gather", {"m", "idx"}, {"ga"}, "gather");
  B::attr(g, "axis", int64_t{1});
  auto& rm = b.node("ReduceMean", {"ga"}, {"rm"}, "reducemean");
  B::attr(rm, "axes", std::vector<int64_t>{1});
  B::attr(rm, "keepdims", int64_t{0});
  b.node("Unsqueeze", {"rm", "axes1"}, {"us"}, "unsqueeze");
  b.node("Squeeze", {"us", "axes1"}, {"sqz"}, "squeeze");
  b.node("Tanh", {"sqz"}, {"th"}, "tanh");
  b.node("Sigmoid", {"th"}, {"sg"}, "sigmoid");
  auto& sm = b.node("Softmax", {"sg"}, {"y"}, "softmax");
  B::attr(sm, "axis", int64_t{-1});
  b.output("y");
  return b.bytes();
}

void write(const std::string& dir, const std::string& name, const std::vector<std::byte>& bytes) {
  std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw tern::Error(path + ": cannot write");
  // Every seed must load: a seed the loader rejects teaches the fuzzer nothing.
  tern::TernFile f = tern::TernFile::from_bytes(bytes, path);
  if (q::is_quantized(f)) q::load_quantized_model(f);
  else tern::load_graph(f);
  std::printf("%-40s %6zu bytes\n", name.c_str(), bytes.size());
}

tern::Tensor images(int64_t n) { return tern::Tensor::from_floats({n, 4, 6, 6}, random_floats(static_cast<size_t>(n * 144), 31)); }

q::QuantizeOptions options(q::WeightFormat format, int bits, int64_t group, q::TernaryMethod method = q::TernaryMethod::kFgq) {
  q::QuantizeOptions o;
  o.plan.weights = {format, method, bits, group};
  o.batch = 8;
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1];
  try {
    const tern::Graph conv = tern::import_onnx_bytes(conv_model(), "conv.onnx");
    tern::ImportOptions raw;
    raw.optimize = false;
    const tern::Graph zoo = tern::import_onnx_bytes(op_zoo_model(), "zoo.onnx", raw);
    const tern::Tensor calib = images(16);

    write(dir, "fp32_conv.tern", tern::serialize_tern_file(tern::graph_sections(conv, "{}")));
    write(dir, "fp32_op_zoo.tern", tern::serialize_tern_file(tern::graph_sections(zoo, R"({"source":"zoo.onnx"})")));

    // Ternary FGQ N=4 on every layer: two-level scales (u8 units, one float step per filter),
    // calibrated static activations, int32 biases.
    q::QuantizeOptions t = options(q::WeightFormat::kTernary, 2, 4);
    t.plan.first_last_8bit = false;
    write(dir, "ternary_fgq4_two_level.tern", q::serialize_quantized_model(q::quantize_model(conv, t, &calib)));

    // Asymmetric ternary (two scales per group) on the log8 grid, power-of-two activations; the
    // first and last layers int8.
    q::QuantizeOptions a = options(q::WeightFormat::kTernary, 2, 2, q::TernaryMethod::kFgqAsymmetric);
    a.plan.weights.log_scales = true;
    a.power_of_two = true;
    write(dir, "ternary_asym_log8.tern", q::serialize_quantized_model(q::quantize_model(conv, a, &calib)));

    // Residual expansion: up to 3 ternary terms a layer, every edge stored, stored level 1.
    q::QuantizeOptions r = options(q::WeightFormat::kTernary, 2, 4);
    r.plan.first_last_8bit = false;
    r.residual = q::parse_residual_budget("all");
    r.residual_ranking = q::ResidualRanking::kUniform;
    r.residual_fallback = false;
    r.residual_max_terms = 3;
    q::QuantizedModel rm = q::quantize_model(conv, r, &calib);
    if (rm.max_level() > 1) q::set_level(rm, 1);
    write(dir, "ternary_residual_edges.tern", q::serialize_quantized_model(rm));

    // Data-free int8 per channel with dynamic activations (float biases).
    q::QuantizeOptions d = options(q::WeightFormat::kInt, 8, 0);
    d.activation_mode = q::ActivationMode::kDynamic;
    write(dir, "int8_dynamic.tern", q::serialize_quantized_model(q::quantize_model(conv, d, nullptr)));

    // Binary with float32 group scales, int4 per tensor elsewhere via a config; 4-bit activations.
    q::QuantizeOptions bi = options(q::WeightFormat::kBinary, 1, 4);
    bi.plan.weights.float_scales = true;
    bi.plan.activation_bits = 4;
    bi.config_json = R"({"layers": [{"name": "fc", "weights": "int4", "group_size": "tensor"},
                                     {"name": "conv1", "weights": "ternary", "method": "cluster", "group_size": 2}]})";
    write(dir, "binary_float_scales_mixed.tern", q::serialize_quantized_model(q::quantize_model(conv, bi, &calib)));

    // Layers kept float32 (a Conv and the Gemm the quantized model leaves to the FP32 graph),
    // static 4-bit activations elsewhere.
    q::QuantizeOptions f = options(q::WeightFormat::kTernary, 2, q::kWholeFilter, q::TernaryMethod::kTwn);
    f.plan.activation_bits = 4;
    f.config_json = R"({"layers": [{"name": "conv2", "weights": "float32"}, {"name": "fc", "weights": "float32"}]})";
    write(dir, "ternary_twn_float_layer.tern", q::serialize_quantized_model(q::quantize_model(conv, f, &calib)));
  } catch (const tern::Error& e) {
    std::fprintf(stderr, "tern_fuzz_make_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
