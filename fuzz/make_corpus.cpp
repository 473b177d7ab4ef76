// Writes the fuzz targets' seed corpora (fuzz/corpus/<kind>/), small valid inputs each of which
// its target's entry accepts. Deterministic: the same files on every run.
//   tern_loader/  .tern files that between them use every section, every attribute kind the
//                 importer produces and the quantized model's layouts (two-level and float scales,
//                 two scales per group, residual terms and edges, int32 biases, static and dynamic
//                 activations);
//   onnx/         ONNX models (fuzz_onnx_import, fuzz_onnx_structured): every supported operator,
//                 old and new opsets, raw_data and typed initializers of each type, inputs read at
//                 run time, and a model in the PyTorch exporter's idiom;
//   npy/, idx/    arrays of each supported type and rank, IDX plain and gzip-compressed;
//   cli_args/     realistic command lines, one argv word a line.
//
//   tern_fuzz_make_corpus OUT_DIR      e.g. build/fuzz/fuzz/tern_fuzz_make_corpus fuzz/corpus
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "load_idx_input.h"
#include "load_npy_input.h"
#include "load_onnx_input.h"
#include "onnx_builder.h"
#include "parse_cli_input.h"
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

void write_tern(const std::string& dir, const std::string& name, const std::vector<std::byte>& bytes) {
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

// ---- ONNX seeds ------------------------------------------------------------------------------

// A Constant node holding a tensor (the exporters' way to write shape constants).
void constant(B& b, const std::string& output, onnx::TensorProto::DataType type, const std::vector<int64_t>& dims,
              const std::vector<int64_t>& ints, const std::vector<float>& floats = {}) {
  auto& n = b.node("Constant", {}, {output}, "/" + output);
  auto* a = n.add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  onnx::TensorProto* t = a->mutable_t();
  t->set_data_type(type);
  for (int64_t d : dims) t->add_dims(d);
  for (int64_t v : ints) t->add_int64_data(v);
  for (float v : floats) t->add_float_data(v);
}

// Float initializers stored as raw_data (little-endian bytes), as exporters write them.
void initializers_to_raw(onnx::ModelProto& m) {
  for (auto& t : *m.mutable_graph()->mutable_initializer()) {
    if (t.data_type() != onnx::TensorProto::FLOAT) continue;
    std::string raw(reinterpret_cast<const char*>(t.float_data().data()), 4 * static_cast<size_t>(t.float_data_size()));
    t.clear_float_data();
    t.set_raw_data(raw);
  }
}

void value_info(onnx::ModelProto& m, const std::string& name, const std::vector<int64_t>& dims) {
  auto* v = m.mutable_graph()->add_value_info();
  v->set_name(name);
  auto* tt = v->mutable_type()->mutable_tensor_type();
  tt->set_elem_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) {
    if (d < 0) tt->mutable_shape()->add_dim()->set_dim_param("batch_size");
    else tt->mutable_shape()->add_dim()->set_dim_value(d);
  }
}

// What torch.onnx.export writes for a small CNN at opset 11: "/module/Op" node names, named
// parameters in raw_data, a dynamic batch named batch_size, BatchNorm before folding, the
// Shape -> Gather -> Unsqueeze -> Concat -> Reshape flatten idiom with Constant nodes, Dropout,
// Clip with min/max inputs, value_info annotations and tern's normalization metadata.
std::string exporter_idiom_model() {
  B b(11);
  onnx::ModelProto& m = b.model();
  m.set_ir_version(6);
  m.set_producer_name("pytorch");
  m.set_producer_version("1.13.1");
  m.mutable_graph()->set_name("torch_jit");
  b.input("input", {-1, 1, 8, 8});
  m.mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(0)->set_dim_param("batch_size");
  b.floats("conv1.weight", {4, 1, 3, 3}, random_floats(36, 41));
  b.floats("conv1.bias", {4}, random_floats(4, 42));
  b.floats("bn1.weight", {4}, {1.0f, 0.9f, 1.1f, 1.2f});
  b.floats("bn1.bias", {4}, random_floats(4, 43));
  b.floats("bn1.running_mean", {4}, random_floats(4, 44));
  b.floats("bn1.running_var", {4}, {0.5f, 1.0f, 1.5f, 2.0f});
  b.floats("fc.weight", {10, 16}, random_floats(160, 45));
  b.floats("fc.bias", {10}, random_floats(10, 46));
  auto& conv = b.node("Conv", {"input", "conv1.weight", "conv1.bias"}, {"/conv1/Conv_output_0"}, "/conv1/Conv");
  B::attr(conv, "dilations", std::vector<int64_t>{1, 1});
  B::attr(conv, "group", int64_t{1});
  B::attr(conv, "kernel_shape", std::vector<int64_t>{3, 3});
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  B::attr(conv, "strides", std::vector<int64_t>{1, 1});
  auto& bn = b.node("BatchNormalization", {"/conv1/Conv_output_0", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"},
                    {"/bn1/BatchNormalization_output_0"}, "/bn1/BatchNormalization");
  B::attr(bn, "epsilon", 1e-5f);
  B::attr(bn, "momentum", 0.9f);
  b.node("Relu", {"/bn1/BatchNormalization_output_0"}, {"/relu/Relu_output_0"}, "/relu/Relu");
  auto& mp = b.node("MaxPool", {"/relu/Relu_output_0"}, {"/pool/MaxPool_output_0"}, "/pool/MaxPool");
  B::attr(mp, "ceil_mode", int64_t{0});
  B::attr(mp, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(mp, "pads", std::vector<int64_t>{0, 0, 0, 0});
  B::attr(mp, "strides", std::vector<int64_t>{2, 2});
  auto& ap = b.node("AveragePool", {"/pool/MaxPool_output_0"}, {"/avg/AveragePool_output_0"}, "/avg/AveragePool");
  B::attr(ap, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(ap, "strides", std::vector<int64_t>{2, 2});
  b.node("Shape", {"/avg/AveragePool_output_0"}, {"/Shape_output_0"}, "/Shape");
  constant(b, "Constant_output_0", onnx::TensorProto::INT64, {}, {0});
  auto& ga = b.node("Gather", {"/Shape_output_0", "Constant_output_0"}, {"/Gather_output_0"}, "/Gather");
  B::attr(ga, "axis", int64_t{0});
  auto& us = b.node("Unsqueeze", {"/Gather_output_0"}, {"/Unsqueeze_output_0"}, "/Unsqueeze");
  B::attr(us, "axes", std::vector<int64_t>{0});
  constant(b, "Constant_1_output_0", onnx::TensorProto::INT64, {1}, {-1});
  auto& cat = b.node("Concat", {"/Unsqueeze_output_0", "Constant_1_output_0"}, {"/Concat_output_0"}, "/Concat");
  B::attr(cat, "axis", int64_t{0});
  b.node("Reshape", {"/avg/AveragePool_output_0", "/Concat_output_0"}, {"/Reshape_output_0"}, "/Reshape");
  auto& fc = b.node("Gemm", {"/Reshape_output_0", "fc.weight", "fc.bias"}, {"/fc/Gemm_output_0"}, "/fc/Gemm");
  B::attr(fc, "alpha", 1.0f);
  B::attr(fc, "beta", 1.0f);
  B::attr(fc, "transB", int64_t{1});
  auto& drop = b.node("Dropout", {"/fc/Gemm_output_0"}, {"/dropout/Dropout_output_0"}, "/dropout/Dropout");
  B::attr(drop, "ratio", 0.5f);
  constant(b, "Constant_2_output_0", onnx::TensorProto::FLOAT, {}, {}, {-6.0f});
  constant(b, "Constant_3_output_0", onnx::TensorProto::FLOAT, {}, {}, {6.0f});
  b.node("Clip", {"/dropout/Dropout_output_0", "Constant_2_output_0", "Constant_3_output_0"}, {"/Clip_output_0"}, "/Clip");
  auto& sm = b.node("Softmax", {"/Clip_output_0"}, {"output"}, "/Softmax");
  B::attr(sm, "axis", int64_t{1});
  b.output("output");
  value_info(m, "/conv1/Conv_output_0", {-1, 4, 8, 8});
  value_info(m, "/Reshape_output_0", {-1, 16});
  b.metadata("tern.scale", "0.00392156862745098").metadata("tern.mean", "0.2860").metadata("tern.std", "0.3530");
  initializers_to_raw(m);
  return b.bytes();
}

// Opset 9: the attribute forms later opsets moved to inputs (Slice starts/ends/axes, Clip min/max,
// Pad pads/value, Unsqueeze/Squeeze axes), Softmax's coerce-to-2-D axis, Dropout's ratio.
std::string opset9_model() {
  B b(9);
  b.input("x", {-1, 3, 5, 5});
  b.floats("w", {2, 3, 1, 1}, random_floats(6, 51));
  auto& pad = b.node("Pad", {"x"}, {"p"}, "pad");
  B::attr(pad, "pads", std::vector<int64_t>{0, 0, 1, 1, 0, 0, 1, 1});
  B::attr(pad, "value", 0.5f);
  auto& sl = b.node("Slice", {"p"}, {"s"}, "slice");
  B::attr(sl, "starts", std::vector<int64_t>{1, 0});
  B::attr(sl, "ends", std::vector<int64_t>{7, 3});
  B::attr(sl, "axes", std::vector<int64_t>{2, 1});
  b.node("Conv", {"s", "w"}, {"c"}, "conv");
  auto& clip = b.node("Clip", {"c"}, {"cl"}, "clip");
  B::attr(clip, "min", -1.0f);
  B::attr(clip, "max", 1.0f);
  auto& us = b.node("Unsqueeze", {"cl"}, {"u"}, "unsqueeze");
  B::attr(us, "axes", std::vector<int64_t>{0});
  auto& sq = b.node("Squeeze", {"u"}, {"q"}, "squeeze");
  B::attr(sq, "axes", std::vector<int64_t>{0});
  auto& drop = b.node("Dropout", {"q"}, {"d"}, "dropout");
  B::attr(drop, "ratio", 0.1f);
  auto& rm = b.node("ReduceMean", {"d"}, {"r"}, "reducemean");
  B::attr(rm, "axes", std::vector<int64_t>{2, 3});
  auto& fl = b.node("Flatten", {"r"}, {"f"}, "flatten");
  B::attr(fl, "axis", int64_t{1});
  auto& sm = b.node("Softmax", {"f"}, {"y"}, "softmax");
  B::attr(sm, "axis", int64_t{1});
  b.output("y");
  return b.bytes();
}

// Opset 4: Reshape's target as an attribute.
std::string opset4_model() {
  B b(4);
  b.input("x", {1, 2, 4, 4});
  b.floats("w", {3, 2, 2, 2}, random_floats(24, 61));
  auto& conv = b.node("Conv", {"x", "w"}, {"c"}, "conv");
  B::attr(conv, "strides", std::vector<int64_t>{2, 2});
  b.node("Relu", {"c"}, {"r"}, "relu");
  auto& rs = b.node("Reshape", {"r"}, {"y"}, "reshape");
  B::attr(rs, "shape", std::vector<int64_t>{1, 12});
  b.output("y");
  return b.bytes();
}

// Opset 18: ReduceMean axes, Pad constant_value and Squeeze axes as inputs, LayerNormalization,
// HardSwish, Shape with start/end, MatMul broadcasting, GlobalMaxPool, Cast, Div, Erf, Pow, Sqrt.
std::string opset18_model() {
  B b(18);
  b.input("x", {-1, 2, 4, 4});
  b.ints("axes23", {2}, {2, 3});
  b.ints("axes2", {1}, {2});
  b.ints("pads", {8}, {0, 0, 0, 1, 0, 0, 1, 0});
  b.floats("padv", {}, {0.25f});
  b.floats("mm", {5, 3}, random_floats(15, 71));
  b.floats("lnw", {3}, {1.0f, 0.5f, 2.0f});
  b.floats("lnb", {3}, {0.0f, 0.1f, -0.1f});
  b.floats("half", {1}, {0.5f});
  b.node("HardSwish", {"x"}, {"hs"}, "hardswish");
  b.node("Pad", {"hs", "pads", "padv"}, {"pd"}, "pad");  // [?,2,5,5]
  b.node("ReduceMean", {"pd", "axes23"}, {"rm"}, "reducemean");
  b.node("GlobalMaxPool", {"pd"}, {"gm"}, "globalmaxpool");
  b.node("Add", {"rm", "gm"}, {"a"}, "add");
  b.node("Div", {"pd", "a"}, {"dv"}, "div");
  auto& tr = b.node("Transpose", {"dv"}, {"tr"}, "transpose");  // [?,5,2,5]
  B::attr(tr, "perm", std::vector<int64_t>{0, 2, 1, 3});
  b.node("MatMul", {"tr", "mm"}, {"mo"}, "matmul");  // [?,5,2,3]
  b.node("Erf", {"mo"}, {"e"}, "erf");
  b.node("Pow", {"e", "half"}, {"pw"}, "pow");
  b.node("Sqrt", {"pw"}, {"sq"}, "sqrt");
  auto& ln = b.node("LayerNormalization", {"sq", "lnw", "lnb"}, {"ln"}, "layernorm");
  B::attr(ln, "axis", int64_t{-1});
  B::attr(ln, "epsilon", 1e-5f);
  b.node("ReduceMean", {"ln", "axes2"}, {"lm"}, "reducemean2");  // [?,5,1,3]
  b.node("Squeeze", {"lm", "axes2"}, {"y"}, "squeeze");           // [?,5,3]
  auto& sh = b.node("Shape", {"dv"}, {"shp"}, "shape");
  B::attr(sh, "start", int64_t{1});
  B::attr(sh, "end", int64_t{-1});
  auto& cast = b.node("Cast", {"shp"}, {"shpf"}, "cast");
  B::attr(cast, "to", int64_t{onnx::TensorProto::FLOAT});
  b.output("y");
  b.output("shpf");
  return b.bytes();
}

// Initializers of every supported type, typed and raw, read through Cast, Gather and Add.
std::string typed_initializers_model() {
  B b(13);
  onnx::ModelProto& m = b.model();
  b.input("x", {-1, 4});
  auto add = [&](const std::string& name, onnx::TensorProto::DataType type, const std::vector<int32_t>& values, bool raw) {
    onnx::TensorProto* t = m.mutable_graph()->add_initializer();
    t->set_name(name);
    t->set_data_type(type);
    t->add_dims(static_cast<int64_t>(values.size()));
    if (!raw) {
      for (int32_t v : values) t->add_int32_data(v);
      return;
    }
    std::string bytes;
    for (int32_t v : values) {
      size_t width = type == onnx::TensorProto::INT32 ? 4 : 1;
      bytes.append(reinterpret_cast<const char*>(&v), width);
    }
    t->set_raw_data(bytes);
  };
  add("u8", onnx::TensorProto::UINT8, {0, 1, 127, 255}, false);
  add("i8", onnx::TensorProto::INT8, {-128, -1, 0, 127}, true);
  add("i32", onnx::TensorProto::INT32, {-2147483647 - 1, -1, 0, 2147483647}, false);
  add("b", onnx::TensorProto::BOOL, {0, 1, 1, 0}, true);
  b.ints("idx", {2}, {3, 0});
  std::string acc = "x";
  for (const char* name : {"u8", "i8", "i32", "b"}) {
    auto& cast = b.node("Cast", {name}, {std::string(name) + "_f"}, std::string("cast_") + name);
    B::attr(cast, "to", int64_t{onnx::TensorProto::FLOAT});
    b.node("Add", {acc, std::string(name) + "_f"}, {acc + "+" + name}, std::string("add_") + name);
    acc += std::string("+") + name;
  }
  auto& g = b.node("Gather", {acc, "idx"}, {"y"}, "gather");
  B::attr(g, "axis", int64_t{1});
  b.output("y");
  return b.bytes();
}

// Operands only known at run time: int64 graph inputs as Slice starts/ends, Pad pads and
// Unsqueeze axes (the executor reads them per run; the fuzz entry feeds zeros); two float inputs.
std::string runtime_inputs_model() {
  B b(13);
  b.input("x", {-1, 3, 4});
  b.input("z", {-1, 3, 4});
  b.input("starts", {1}, onnx::TensorProto::INT64);
  b.input("ends", {1}, onnx::TensorProto::INT64);
  b.input("pads", {6}, onnx::TensorProto::INT64);
  b.ints("axes", {1}, {2});
  b.node("Sub", {"x", "z"}, {"d"}, "sub");
  b.node("Slice", {"d", "starts", "ends", "axes"}, {"s"}, "slice");
  b.node("Pad", {"d", "pads"}, {"p"}, "pad");
  auto& cat = b.node("Concat", {"x", "z"}, {"c"}, "concat");
  B::attr(cat, "axis", int64_t{1});
  b.node("Tanh", {"c"}, {"t"}, "tanh");
  b.output("s");
  b.output("p");
  b.output("t");
  return b.bytes();
}

// Gemm with transA and a broadcast bias, MatMul of 2-D operands, Sigmoid, LeakyRelu, Identity.
std::string gemm_model() {
  B b(13);
  b.input("x", {3, 2});
  b.floats("w", {3, 4}, random_floats(12, 81));
  b.floats("bias", {1, 4}, random_floats(4, 82));
  b.floats("m", {4, 2}, random_floats(8, 83));
  auto& g = b.node("Gemm", {"x", "w", "bias"}, {"g"}, "gemm");
  B::attr(g, "transA", int64_t{1});
  B::attr(g, "alpha", 0.5f);
  B::attr(g, "beta", 2.0f);
  auto& lr = b.node("LeakyRelu", {"g"}, {"l"}, "leaky");
  B::attr(lr, "alpha", 0.2f);
  b.node("MatMul", {"l", "m"}, {"mm"}, "matmul");
  b.node("Identity", {"mm"}, {"i"}, "identity");
  b.node("Sigmoid", {"i"}, {"y"}, "sigmoid");
  b.output("y");
  return b.bytes();
}

void write_seed(const std::string& dir, const std::string& name, const std::string& bytes,
                bool (*entry)(const uint8_t*, size_t, std::string*)) {
  std::string path = dir + "/" + name;
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw tern::Error(path + ": cannot write");
  // Every seed must pass its target's entry: a seed it rejects teaches the fuzzer little.
  std::string error;
  if (!entry(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), &error))
    throw tern::Error(path + ": the seed is rejected: " + error);
  std::printf("%-40s %6zu bytes\n", (std::filesystem::path(dir).filename().string() + "/" + name).c_str(), bytes.size());
}

// op_zoo_model() with a Reshape that can run: its [?,2,4,4] becomes [?,4,8] (the .tern seed keeps
// the original [0,4,16] target, which the importer accepts but no run can satisfy).
std::string op_zoo_runnable_model() {
  onnx::ModelProto m;
  m.ParseFromString(op_zoo_model());
  for (auto& t : *m.mutable_graph()->mutable_initializer()) {
    if (t.name() == "shape") {
      t.clear_int64_data();
      for (int64_t d : {0, 4, 8}) t.add_int64_data(d);
    } else if (t.name() == "lnw" || t.name() == "mm") {
      t.set_dims(0, 8);
      t.mutable_float_data()->Truncate(t.name() == "lnw" ? 8 : 24);
    }
  }
  return m.SerializeAsString();
}

void write_onnx_seeds(const std::string& dir) {
  auto onnx = [&](const std::string& name, const std::string& bytes) { write_seed(dir, name, bytes, tern::fuzz::load_onnx_input); };
  onnx("conv.onnx", conv_model());
  onnx("op_zoo.onnx", op_zoo_runnable_model());
  onnx("exporter_idiom_opset11.onnx", exporter_idiom_model());
  onnx("opset9_attribute_forms.onnx", opset9_model());
  onnx("opset4_reshape_attribute.onnx", opset4_model());
  onnx("opset18_input_forms.onnx", opset18_model());
  onnx("typed_initializers.onnx", typed_initializers_model());
  onnx("runtime_inputs.onnx", runtime_inputs_model());
  onnx("gemm_matmul.onnx", gemm_model());
}

// ---- .npy and IDX seeds ---------------------------------------------------------------------------

// A .npy file: version 1 or 2 header with the given dict, padded to 64 bytes, then the data.
std::string npy(const std::string& descr, const std::string& shape, const std::string& data, int version = 1) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t prefix = version == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  for (size_t i = 0; i < prefix - 8; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  return out + header + data;
}

template <typename T>
std::string le_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

void write_npy_seeds(const std::string& dir) {
  auto seed = [&](const std::string& name, const std::string& bytes) { write_seed(dir, name, bytes, tern::fuzz::load_npy_input); };
  seed("images_f4_2x1x3x3.npy", npy("<f4", "(2, 1, 3, 3)", le_bytes(random_floats(18, 91))));
  seed("images_u1_3x4x4.npy", npy("|u1", "(3, 4, 4)", std::string(48, '\x80')));
  seed("images_f8_1x2x2x2.npy", npy("<f8", "(1, 2, 2, 2)", le_bytes(std::vector<double>{0.5, -1, 2, 1e30, 0, 1, 2, 3})));
  seed("labels_i8_4.npy", npy("<i8", "(4,)", le_bytes(std::vector<int64_t>{0, 9, 3, 1})));
  seed("labels_i4_3.npy", npy("<i4", "(3,)", le_bytes(std::vector<int32_t>{2, 0, 7})));
  seed("labels_u1_2.npy", npy("|u1", "(2,)", std::string("\x01\x05", 2)));
  seed("labels_i1_2.npy", npy("|i1", "(2,)", std::string("\x00\x03", 2)));
  seed("bool_2x2.npy", npy("|b1", "(2, 2)", std::string("\x01\x00\x00\x01", 4)));
  seed("scalar_f4.npy", npy("<f4", "()", le_bytes(std::vector<float>{1.5f})));
  seed("empty_f4_0x4x4.npy", npy("<f4", "(0, 4, 4)", ""));
  seed("version2_f4_2x2.npy", npy("<f4", "(2, 2)", le_bytes(std::vector<float>{1, 2, 3, 4}), 2));
}

std::string idx(uint8_t type, const std::vector<uint32_t>& dims, const std::string& data) {
  std::string out = {'\0', '\0', static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int shift = 24; shift >= 0; shift -= 8) out += static_cast<char>((d >> shift) & 0xff);
  return out + data;
}

std::string gzipped(const std::string& plain) {
  z_stream s{};
  if (deflateInit2(&s, 9, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw tern::Error("deflateInit2");
  std::string out(deflateBound(&s, static_cast<uLong>(plain.size())), '\0');
  s.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(plain.data()));
  s.avail_in = static_cast<uInt>(plain.size());
  s.next_out = reinterpret_cast<Bytef*>(out.data());
  s.avail_out = static_cast<uInt>(out.size());
  if (deflate(&s, Z_FINISH) != Z_STREAM_END) throw tern::Error("deflate");
  out.resize(s.total_out);
  deflateEnd(&s);
  return out;
}

void write_idx_seeds(const std::string& dir) {
  auto seed = [&](const std::string& name, const std::string& bytes) { write_seed(dir, name, bytes, tern::fuzz::load_idx_input); };
  std::string images(32, '\0');
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<char>(i * 8);
  std::string floats;  // big-endian float32
  for (float f : {0.0f, 1.5f, -2.0f, 1e-3f, 255.0f, 0.5f}) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    for (int shift = 24; shift >= 0; shift -= 8) floats += static_cast<char>((u >> shift) & 0xff);
  }
  seed("images_u8_2x4x4", idx(0x08, {2, 4, 4}, images));
  seed("images_u8_2x4x4.gz", gzipped(idx(0x08, {2, 4, 4}, images)));
  seed("labels_u8_5", idx(0x08, {5}, std::string("\x00\x01\x02\x09\x04", 5)));
  seed("labels_u8_5.gz", gzipped(idx(0x08, {5}, std::string("\x00\x01\x02\x09\x04", 5))));
  seed("images_u8_2x1x4x4.gz", gzipped(idx(0x08, {2, 1, 4, 4}, images)));
  seed("floats_f32_2x3", idx(0x0D, {2, 3}, floats));
  seed("floats_f32_1x2x3.gz", gzipped(idx(0x0D, {1, 2, 3}, floats)));
}

// ---- command-line seeds ---------------------------------------------------------------------------

void write_cli_seeds(const std::string& dir) {
  auto seed = [&](const std::string& name, const std::vector<std::string>& words) {
    std::string text;
    for (const std::string& w : words) text += w + "\n";
    write_seed(dir, name, text, tern::fuzz::parse_cli_input);
  };
  seed("quantize_default", {"quantize", "models/resnet20.onnx", "-o", "out.tern"});
  seed("quantize_all_options",
       {"quantize", "m.onnx", "--output=o.tern", "--weights", "int4", "--group", "channel", "--acts", "4", "--act-scale",
        "pow2", "--calibration", "mse", "--calib-images", "128", "--batch", "32", "--scale", "0.00392", "--mean",
        "0.5,0.4,0.3", "--std", "0.2,0.2,0.2", "--rounding", "weight", "--group-scales", "log8", "--all-layers", "--json"});
  seed("quantize_residual",
       {"quantize", "m.onnx", "-o", "o.tern", "--weights", "ternary", "--method", "fgq-asym", "--group", "4",
        "--residual", "size:60%", "--residual-ranking", "measured", "--residual-max-terms", "3", "--fallback", "int8",
        "--sensitivity-images", "64", "--seed", "7", "--percentile", "99.9", "--eval"});
  seed("quantize_data_free", {"quantize", "m.onnx", "-o", "o.tern", "--data-free", "batchnorm", "--weights", "binary"});
  seed("eval_npy", {"eval", "m.tern", "--data", "x.npy", "--labels", "y.npy", "--limit", "100", "--batch=50", "--level",
                    "max", "--engine", "integer", "--verbose"});
  seed("eval_idx", {"eval", "m.onnx", "--data", "fashion-mnist", "--split", "train", "--level", "all", "--json"});
  seed("run", {"run", "m.onnx", "--input", "x.npy", "--output", "y.npy", "--level", "2"});
  seed("inspect", {"inspect", "m.tern", "--json", "--level=1"});
  seed("bench", {"bench", "m.onnx", "--batch", "8", "--seconds", "0.5", "--profile", "--engine", "simulated"});
  seed("accum", {"accum", "--n", "4096", "--m", "8..12", "--trials", "64", "--terms", "product", "--chunk", "64"});
  seed("train_fixed",
       {"train", "m.onnx", "-o", "t.onnx", "--numeric", "fixed:4.12", "--rounding", "nearest", "--gradient-numeric",
        "fixed:2.14", "--epochs", "2", "--lr", "0.01", "--momentum", "0.9", "--weight-decay", "0.0005", "--distributed",
        "--compress", "adacomp", "--bin-conv", "50", "--bin-fc", "500", "--timeout", "60"});
  seed("train_accumulate", {"train", "m.onnx", "-o", "t.onnx", "--accumulate", "12", "--accumulate-chunk", "64",
                            "--lr-final", "0", "--label-smoothing", "0.1", "--steps", "10"});
  seed("finetune", {"finetune", "m.onnx", "-o", "f.tern", "--weights", "ternary", "--group", "64", "--acts", "8",
                    "--epochs", "4", "--lr", "0.01", "--schedule", "cosine", "--calib-images", "256", "--threads", "2"});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string root = argv[1];
  try {
    const std::string dir = root + "/tern_loader";
    for (const char* kind : {"tern_loader", "onnx", "npy", "idx", "cli_args"}) std::filesystem::create_directories(root + "/" + kind);
    const tern::Graph conv = tern::import_onnx_bytes(conv_model(), "conv.onnx");
    tern::ImportOptions raw;
    raw.optimize = false;
    const tern::Graph zoo = tern::import_onnx_bytes(op_zoo_model(), "zoo.onnx", raw);
    const tern::Tensor calib = images(16);

    write_tern(dir, "fp32_conv.tern", tern::serialize_tern_file(tern::graph_sections(conv, "{}")));
    write_tern(dir, "fp32_op_zoo.tern", tern::serialize_tern_file(tern::graph_sections(zoo, R"({"source":"zoo.onnx"})")));

    // Ternary FGQ N=4 on every layer: two-level scales (u8 units, one float step per filter),
    // calibrated static activations, int32 biases.
    q::QuantizeOptions t = options(q::WeightFormat::kTernary, 2, 4);
    t.plan.first_last_8bit = false;
    write_tern(dir, "ternary_fgq4_two_level.tern", q::serialize_quantized_model(q::quantize_model(conv, t, &calib)));

    // Asymmetric ternary (two scales per group) on the log8 grid, power-of-two activations; the
    // first and last layers int8.
    q::QuantizeOptions a = options(q::WeightFormat::kTernary, 2, 2, q::TernaryMethod::kFgqAsymmetric);
    a.plan.weights.log_scales = true;
    a.power_of_two = true;
    write_tern(dir, "ternary_asym_log8.tern", q::serialize_quantized_model(q::quantize_model(conv, a, &calib)));

    // Residual expansion: up to 3 ternary terms a layer, every edge stored, stored level 1.
    q::QuantizeOptions r = options(q::WeightFormat::kTernary, 2, 4);
    r.plan.first_last_8bit = false;
    r.residual = q::parse_residual_budget("all");
    r.residual_ranking = q::ResidualRanking::kUniform;
    r.residual_fallback = false;
    r.residual_max_terms = 3;
    q::QuantizedModel rm = q::quantize_model(conv, r, &calib);
    if (rm.max_level() > 1) q::set_level(rm, 1);
    write_tern(dir, "ternary_residual_edges.tern", q::serialize_quantized_model(rm));

    // Data-free int8 per channel with dynamic activations (float biases).
    q::QuantizeOptions d = options(q::WeightFormat::kInt, 8, 0);
    d.activation_mode = q::ActivationMode::kDynamic;
    write_tern(dir, "int8_dynamic.tern", q::serialize_quantized_model(q::quantize_model(conv, d, nullptr)));

    // Binary with float32 group scales, int4 per tensor elsewhere via a config; 4-bit activations.
    q::QuantizeOptions bi = options(q::WeightFormat::kBinary, 1, 4);
    bi.plan.weights.float_scales = true;
    bi.plan.activation_bits = 4;
    bi.config_json = R"({"layers": [{"name": "fc", "weights": "int4", "group_size": "tensor"},
                                     {"name": "conv1", "weights": "ternary", "method": "cluster", "group_size": 2}]})";
    write_tern(dir, "binary_float_scales_mixed.tern", q::serialize_quantized_model(q::quantize_model(conv, bi, &calib)));

    // Layers kept float32 (a Conv and the Gemm the quantized model leaves to the FP32 graph),
    // static 4-bit activations elsewhere.
    q::QuantizeOptions f = options(q::WeightFormat::kTernary, 2, q::kWholeFilter, q::TernaryMethod::kTwn);
    f.plan.activation_bits = 4;
    f.config_json = R"({"layers": [{"name": "conv2", "weights": "float32"}, {"name": "fc", "weights": "float32"}]})";
    write_tern(dir, "ternary_twn_float_layer.tern", q::serialize_quantized_model(q::quantize_model(conv, f, &calib)));

    write_onnx_seeds(root + "/onnx");
    write_npy_seeds(root + "/npy");
    write_idx_seeds(root + "/idx");
    write_cli_seeds(root + "/cli_args");
  } catch (const tern::Error& e) {
    std::fprintf(stderr, "tern_fuzz_make_corpus: %s\n", e.what());
    return 1;
  }
  return 0;
}
