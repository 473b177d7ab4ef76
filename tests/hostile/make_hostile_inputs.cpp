// Makes the inputs of the hostile-input regression suite (tests/hostile/test_hostile_inputs.cpp).
//
//   make_hostile_inputs committed DIR
//       the small inputs committed under tests/data/hostile/ (their cases are in its cases.tsv)
//   make_hostile_inputs generated DIR MODELS_DIR [FAMILY...]
//       the large inputs (gzip bombs) and the systematic families, made at test time, with their
//       cases in DIR/cases.tsv; FAMILY limits it to some categories (default: all):
//       alloc (the bombs), sys-truncated, sys-init-dims, sys-attrs, sys-npy, sys-idx, sys-tern-json
//
// Everything is deterministic: the same bytes and the same cases on every run. The manifest
// format (one case a line, tab-separated):
//   category  name  input  command  expect  needle  [checks]
// input: a file relative to the manifest's directory, '-' (none), 'fifo:NAME' (a FIFO made in the
// case's empty working directory) or 'link:NAME=TARGET' (a symlink made there). command: tern's
// arguments, with leading VAR=VALUE environment settings, and further steps after ' ;; ' that run
// only when the first exits 0 and must then exit 0 themselves (a file quantize wrote must load).
// Placeholders: {in}, {work} (the case's working directory, where outputs go), {data}
// (tests/data/hostile), {gen} (the generated family's directory), {models}. expect: the allowed
// exit codes, e.g. 1, 2, 0|1 (0 alone: a control case, which must succeed). needle: what the one
// stderr line must contain (placeholders allowed; empty only for controls). checks: 'nonneg' (on
// exit 0, stdout must hold no negative count).
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/model_io.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"
#include "tern/tern_file.h"

namespace {

using tern::testing::OnnxBuilder;
using tern::testing::random_floats;
using B = OnnxBuilder;
using json = nlohmann::json;
namespace q = tern::quant;

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();

// ---------------------------------------------------------------------------------------------
// Files

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw tern::Error(path + ": cannot write");
}

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
  write_file(path, std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw tern::Error(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw tern::Error(path + ": cannot create directory");
}

template <typename T>
std::string le_bytes(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

// An .npy file with exactly this header dict (padded as NumPy pads it) and payload.
std::string npy_raw(const std::string& dict, const std::string& payload, int major = 1) {
  std::string header = dict;
  size_t prefix = major == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = std::string("\x93NUMPY", 6) + static_cast<char>(major) + '\0';
  if (major == 1) {
    out += static_cast<char>(header.size() & 0xff);
    out += static_cast<char>(header.size() >> 8);
  } else {
    for (int i = 0; i < 4; ++i) out += static_cast<char>((header.size() >> (8 * i)) & 0xff);
  }
  return out + header + payload;
}

std::string npy_dict(const std::string& descr, const std::string& shape, const std::string& order = "False") {
  return "{'descr': '" + descr + "', 'fortran_order': " + order + ", 'shape': " + shape + ", }";
}

std::string npy_floats(const std::vector<int64_t>& shape, const std::vector<float>& values) {
  std::string s = "(";
  for (int64_t d : shape) s += std::to_string(d) + ",";
  if (shape.size() > 1) s.pop_back();
  s += ")";
  return npy_raw(npy_dict("<f4", s), le_bytes(values));
}

std::string npy_labels(const std::vector<int64_t>& labels) {
  return npy_raw(npy_dict("<i8", "(" + std::to_string(labels.size()) + ",)"), le_bytes(labels));
}

// An IDX header: magic 0 0 TYPE RANK, then RANK big-endian uint32 dims.
std::string idx_header(unsigned char type, const std::vector<uint32_t>& dims, int rank = -1) {
  std::string h = {'\0', '\0', static_cast<char>(type), static_cast<char>(rank < 0 ? dims.size() : rank)};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h += static_cast<char>((d >> s) & 0xff);
  return h;
}

// One gzip member holding `bytes` (gzread reads concatenated members as one stream).
std::string gzip_member(const std::string& bytes) {
  z_stream z{};
  if (deflateInit2(&z, 9, Z_DEFLATED, 31, 9, Z_DEFAULT_STRATEGY) != Z_OK) throw tern::Error("deflateInit2 failed");
  std::string out(deflateBound(&z, bytes.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&z, Z_FINISH);
  deflateEnd(&z);
  if (rc != Z_STREAM_END) throw tern::Error("deflate failed");
  out.resize(z.total_out);
  return out;
}

// ---------------------------------------------------------------------------------------------
// ONNX models

void string_attr(onnx::NodeProto& n, const std::string& name, const std::string& value) {
  auto* a = n.add_attribute();
  a->set_name(name);
  a->set_type(onnx::AttributeProto::STRING);
  a->set_s(value);
}

// x[?,1,4,4] -> conv (1->2, 3x3, pad 1, bias) -> Relu -> Flatten -> fc (32->3, bias) -> y[?,3].
B tiny_builder() {
  B b;
  b.input("x", {-1, 1, 4, 4});
  b.floats("w1", {2, 1, 3, 3}, random_floats(18, 1));
  b.floats("b1", {2}, random_floats(2, 2));
  b.floats("wf", {3, 32}, random_floats(96, 3));
  b.floats("bf", {3}, random_floats(3, 4));
  auto& c = b.node("Conv", {"x", "w1", "b1"}, {"c"}, "conv1");
  B::attr(c, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Relu", {"c"}, {"r"}, "relu1");
  auto& f = b.node("Flatten", {"r"}, {"f"}, "flatten");
  B::attr(f, "axis", int64_t{1});
  auto& fc = b.node("Gemm", {"f", "wf", "bf"}, {"y"}, "fc");
  B::attr(fc, "transB", int64_t{1});
  b.output("y");
  return b;
}

// Many operators and integer attributes/inputs in one small graph, x[?,2,6,6] -> y[?,4].
B zoo_builder() {
  B b;
  b.input("x", {-1, 2, 6, 6});
  b.floats("w", {4, 2, 3, 3}, random_floats(72, 21));
  b.floats("wd", {4, 1, 3, 3}, random_floats(36, 22));
  b.floats("scale", {4}, random_floats(4, 23));
  b.floats("bias", {4}, random_floats(4, 24));
  b.floats("mean", {4}, random_floats(4, 25));
  b.floats("var", {4}, {0.5f, 1.0f, 1.5f, 2.0f});
  b.floats("wf", {4, 8}, random_floats(32, 26));
  b.ints("shape", {2}, {0, -1});
  b.ints("starts", {1}, {0});
  b.ints("ends", {1}, {4});
  b.ints("axes", {1}, {1});
  b.ints("steps", {1}, {1});
  b.ints("pads", {8}, {0, 0, 1, 1, 0, 0, 1, 1});
  b.ints("idx", {2}, {0, 2});
  auto& conv = b.node("Conv", {"x", "w"}, {"c"}, "conv");
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  B::attr(conv, "strides", std::vector<int64_t>{1, 1});
  B::attr(conv, "dilations", std::vector<int64_t>{1, 1});
  B::attr(conv, "kernel_shape", std::vector<int64_t>{3, 3});
  B::attr(conv, "group", int64_t{1});
  b.node("BatchNormalization", {"c", "scale", "bias", "mean", "var"}, {"bn"}, "bn");
  b.node("Relu", {"bn"}, {"r"}, "relu");
  auto& dw = b.node("Conv", {"r", "wd"}, {"d"}, "depthwise");
  B::attr(dw, "group", int64_t{4});
  B::attr(dw, "pads", std::vector<int64_t>{1, 1, 1, 1});
  auto& mp = b.node("MaxPool", {"d"}, {"mp"}, "maxpool");
  B::attr(mp, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(mp, "strides", std::vector<int64_t>{2, 2});
  B::attr(mp, "pads", std::vector<int64_t>{0, 0, 0, 0});
  auto& ap = b.node("AveragePool", {"d"}, {"ap"}, "avgpool");
  B::attr(ap, "kernel_shape", std::vector<int64_t>{3, 3});
  B::attr(ap, "strides", std::vector<int64_t>{2, 2});
  B::attr(ap, "pads", std::vector<int64_t>{0, 0, 1, 1});
  B::attr(ap, "ceil_mode", int64_t{0});
  B::attr(ap, "count_include_pad", int64_t{1});
  b.node("Add", {"mp", "ap"}, {"sum"}, "add");
  auto& cat = b.node("Concat", {"mp", "sum"}, {"cat"}, "concat");
  B::attr(cat, "axis", int64_t{1});
  b.node("Slice", {"cat", "starts", "ends", "axes", "steps"}, {"sl"}, "slice");
  b.node("Pad", {"sl", "pads"}, {"pd"}, "pad");
  auto& tr = b.node("Transpose", {"pd"}, {"tr"}, "transpose");
  B::attr(tr, "perm", std::vector<int64_t>{0, 1, 3, 2});
  auto& g = b.node("Gather", {"tr", "idx"}, {"ga"}, "gather");
  B::attr(g, "axis", int64_t{2});
  auto& rm = b.node("ReduceMean", {"ga"}, {"rm"}, "reducemean");
  B::attr(rm, "axes", std::vector<int64_t>{2});
  B::attr(rm, "keepdims", int64_t{0});
  auto& fl = b.node("Flatten", {"rm"}, {"fl"}, "flatten");
  B::attr(fl, "axis", int64_t{1});
  b.node("Reshape", {"fl", "shape"}, {"rs"}, "reshape");
  auto& fc = b.node("Gemm", {"rs", "wf"}, {"fc"}, "fc");
  B::attr(fc, "transB", int64_t{1});
  B::attr(fc, "transA", int64_t{0});
  auto& sm = b.node("Softmax", {"fc"}, {"y"}, "softmax");
  B::attr(sm, "axis", int64_t{-1});
  b.output("y");
  return b;
}

// A Constant node holding a float tensor.
void constant_floats(B& b, const std::string& out, const std::vector<int64_t>& dims, const std::vector<float>& values) {
  auto& n = b.node("Constant", {}, {out}, out + "_const");
  auto* a = n.add_attribute();
  a->set_name("value");
  a->set_type(onnx::AttributeProto::TENSOR);
  auto* t = a->mutable_t();
  t->set_data_type(onnx::TensorProto::FLOAT);
  for (int64_t d : dims) t->add_dims(d);
  for (float v : values) t->add_float_data(v);
}

// x[?,1,4,4] reshaped by Constant(float shape) -> Cast(int64): a shape computed from `bad`.
std::string cast_reshape_model(float bad) {
  B b;
  b.input("x", {-1, 1, 4, 4});
  constant_floats(b, "shape_f", {2}, {bad, 16.0f});
  auto& cast = b.node("Cast", {"shape_f"}, {"shape_i"}, "cast");
  B::attr(cast, "to", int64_t{onnx::TensorProto::INT64});
  b.node("Reshape", {"x", "shape_i"}, {"y"}, "reshape");
  b.output("y");
  return b.bytes();
}

// x[N?,1,H,W] -> Conv(8 filters 3x3, pads) -> y: activations and MACs set by the shape alone.
std::string conv_shape_model(const std::vector<int64_t>& in, int64_t filters, int64_t kernel, int64_t pad) {
  B b;
  b.input("x", in);
  b.floats("w", {filters, 1, kernel, kernel}, random_floats(static_cast<size_t>(filters * kernel * kernel), 7));
  auto& c = b.node("Conv", {"x", "w"}, {"y"}, "conv");
  B::attr(c, "pads", std::vector<int64_t>{pad, pad, pad, pad});
  b.output("y");
  return b.bytes();
}

// ---------------------------------------------------------------------------------------------
// .tern files

using Sections = std::vector<std::pair<tern::SectionType, std::vector<std::byte>>>;

Sections split_sections(const std::vector<std::byte>& bytes) {
  tern::TernFile f = tern::TernFile::from_bytes(bytes, "generated.tern");
  Sections out;
  for (const auto& s : f.sections()) out.emplace_back(s.type, std::vector<std::byte>(s.bytes.begin(), s.bytes.end()));
  return out;
}

json section_json(const Sections& s, tern::SectionType type) {
  for (const auto& [t, b] : s)
    if (t == type) return json::parse(reinterpret_cast<const char*>(b.data()), reinterpret_cast<const char*>(b.data()) + b.size());
  throw tern::Error("no such section");
}

void set_section_json(Sections& s, tern::SectionType type, const json& j) {
  std::string text = j.dump();
  for (auto& [t, b] : s)
    if (t == type) {
      b.resize(text.size());
      std::memcpy(b.data(), text.data(), text.size());
    }
}

tern::Graph tiny_graph() { return tern::import_onnx_bytes(tiny_builder().bytes(), "tiny.onnx"); }

// The tiny model quantized data-free: int8 weights, dynamic activations.
std::vector<std::byte> tiny_quantized() {
  q::QuantizeOptions o;
  o.plan.weights = {q::WeightFormat::kInt, q::TernaryMethod::kFgq, 8, 0};
  o.activation_mode = q::ActivationMode::kDynamic;
  o.batch = 8;
  return q::serialize_quantized_model(q::quantize_model(tiny_graph(), o, nullptr));
}

// The tiny model quantized ternary (N=4, every layer) with calibrated static activations.
std::vector<std::byte> tiny_ternary() {
  q::QuantizeOptions o;
  o.plan.weights = {q::WeightFormat::kTernary, q::TernaryMethod::kFgq, 2, 4};
  o.plan.first_last_8bit = false;
  o.batch = 8;
  tern::Tensor calib = tern::Tensor::from_floats({8, 1, 4, 4}, random_floats(128, 41));
  return q::serialize_quantized_model(q::quantize_model(tiny_graph(), o, &calib));
}

std::vector<std::byte> tiny_fp32_tern() { return tern::serialize_tern_file(tern::graph_sections(tiny_graph(), "{}")); }

// Applies `edit` to the graph JSON of a .tern and re-checksums it: a file that passes every
// container check, so only the loaders' own validation stands between it and the kernels.
std::vector<std::byte> edit_graph(const std::vector<std::byte>& file, const std::function<void(json&)>& edit) {
  Sections s = split_sections(file);
  json g = section_json(s, tern::SectionType::kGraph);
  edit(g);
  set_section_json(s, tern::SectionType::kGraph, g);
  return tern::serialize_tern_file(s);
}

json& first_node_of_kind(json& g, const std::string& kind) {
  for (json& n : g.at("nodes"))
    if (n.at("attrs").value("kind", "") == kind) return n;
  throw tern::Error("no node with attrs of kind " + kind);
}

// ---------------------------------------------------------------------------------------------
// The committed inputs

void make_committed(const std::string& dir) {
  auto put = [&](const std::string& name, const std::string& bytes) { write_file(dir + "/" + name, bytes); };
  auto put_tern = [&](const std::string& name, const std::vector<std::byte>& bytes) { write_file(dir + "/" + name, bytes); };

  // Data the cases evaluate with.
  put("x_1x4x4.npy", npy_floats({2, 1, 4, 4}, random_floats(32, 5)));
  put("labels2.npy", npy_labels({0, 1}));
  put("labels_zero2.npy", npy_labels({0, 0}));
  std::vector<float> pixels(2 * 28 * 28);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<float>(i % 256);
  put("x_1x28x28.npy", npy_floats({2, 1, 28, 28}, pixels));
  put("neg_inf_1x28x28.npy", npy_floats({2, 1, 28, 28}, std::vector<float>(2 * 28 * 28, -INFINITY)));
  put("pos_inf_1x28x28.npy", npy_floats({2, 1, 28, 28}, std::vector<float>(2 * 28 * 28, INFINITY)));
  std::vector<float> one_nan = pixels;
  one_nan[100] = NAN;
  put("nan_1x28x28.npy", npy_floats({2, 1, 28, 28}, one_nan));
  // Header dims whose byte count overflows int64 (claimed: -9223372036854775808 bytes).
  put("npy_dims_overflow.npy", npy_raw(npy_dict("<f4", "(4294967296, 4294967296, 4)"), std::string(16, '\0')));
  put("npy_labels_dims_overflow.npy", npy_raw(npy_dict("<i8", "(9223372036854775807,)"), std::string(16, '\0')));
  // IDX directories whose header dims overflow the byte count (uint8 rank 3, float32 rank 4).
  make_dir(dir + "/idx_dims_overflow");
  put("idx_dims_overflow/t10k-images-idx3-ubyte", idx_header(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}) + std::string(16, '\0'));
  put("idx_dims_overflow/t10k-labels-idx1-ubyte", idx_header(0x08, {2}) + std::string(2, '\0'));
  make_dir(dir + "/idx_float_dims_overflow");
  put("idx_float_dims_overflow/t10k-images-idx3-ubyte",
      idx_header(0x0D, {0x80000000u, 0x80000000u, 0x80000000u, 0x80000000u}) + std::string(16, '\0'));
  put("idx_float_dims_overflow/t10k-labels-idx1-ubyte", idx_header(0x08, {2}) + std::string(2, '\0'));

  // --- crashes
  {
    B b;  // a Gemm whose input declares no shape at all
    auto* in = b.model().mutable_graph()->add_input();
    in->set_name("x");
    in->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    b.floats("w", {3, 16}, random_floats(48, 8));
    auto& g = b.node("Gemm", {"x", "w"}, {"y"}, "fc");
    B::attr(g, "transB", int64_t{1});
    b.output("y");
    put("gemm_input_no_shape.onnx", b.bytes());
  }
  {
    B b;  // SAME_UPPER padding with strides of 2^62
    b.input("x", {-1, 1, 4, 4});
    b.floats("w", {2, 1, 3, 3}, random_floats(18, 9));
    auto& c = b.node("Conv", {"x", "w"}, {"c"}, "conv");
    string_attr(c, "auto_pad", "SAME_UPPER");
    B::attr(c, "strides", std::vector<int64_t>{int64_t{1} << 62, int64_t{1} << 62});
    auto& f = b.node("Flatten", {"c"}, {"y"}, "flatten");
    B::attr(f, "axis", int64_t{1});
    b.output("y");
    put("conv_same_upper_stride_2e62.onnx", b.bytes());
  }
  // A checksum-valid quantized .tern whose graph output is a quantized (external) weight.
  put_tern("quantized_output_is_weight.tern", edit_graph(tiny_quantized(), [](json& g) {
             const json& values = g.at("values");
             for (size_t i = 0; i < values.size(); ++i)
               if (values[i].value("external", false)) {
                 g["outputs"] = json::array({i});
                 return;
               }
             throw tern::Error("no external value");
           }));

  // --- tiny files that allocate gigabytes
  {
    B b;  // Pad of a 1-element constant to 2^30 elements, folded at import: 4 GiB
    b.input("x", {1});
    b.floats("c", {1}, {0.0f});
    b.ints("p", {2}, {0, (int64_t{1} << 30) - 1});
    b.node("Pad", {"c", "p"}, {"pc"}, "pad");
    b.node("Add", {"x", "pc"}, {"y"}, "add");
    b.output("y");
    put("pad_constant_4gb.onnx", b.bytes());
  }
  {
    B b;  // an initializer declaring 1e9 floats and holding none
    b.input("x", {1});
    b.floats("w", {1000000000}, {});
    b.node("Add", {"x", "w"}, {"y"}, "add");
    b.output("y");
    put("initializer_1e9_empty.onnx", b.bytes());
  }
  // Conv pads that make a 20 GB activation (16 x 17678 x 17678 floats an image).
  {
    B b;
    b.input("x", {-1, 1, 4, 4});
    b.floats("w", {16, 1, 1, 1}, random_floats(16, 10));
    auto& c = b.node("Conv", {"x", "w"}, {"y"}, "conv");
    B::attr(c, "pads", std::vector<int64_t>{8837, 8837, 8837, 8837});
    b.output("y");
    put("conv_pads_20gb.onnx", b.bytes());
  }
  // Huge but valid shapes: MACs above 2^63 (8 x 9 x 2^60), and above 2^31 but well inside int64.
  put("conv_input_2e30.onnx", conv_shape_model({1, 1, int64_t{1} << 30, int64_t{1} << 30}, 8, 3, 1));
  put("conv_input_2e16.onnx", conv_shape_model({1, 1, int64_t{1} << 16, int64_t{1} << 16}, 8, 3, 1));
  {
    B b;  // an input of 2^93 elements through a Relu: nothing but its shape
    b.input("x", {1, 2147483647, 2147483647, 2147483647});
    b.node("Relu", {"x"}, {"y"}, "relu");
    b.output("y");
    put("input_dims_overflow.onnx", b.bytes());
  }

  // --- wrong answers with exit 0
  put("cast_nan_reshape.onnx", cast_reshape_model(NAN));
  put("cast_inf_reshape.onnx", cast_reshape_model(INFINITY));
  put("cast_1e30_reshape.onnx", cast_reshape_model(-1e30f));
  {
    B b;  // a Gemm with a [0, 4] weight
    b.input("x", {-1, 4});
    b.floats("w", {0, 4}, {});
    auto& g = b.node("Gemm", {"x", "w"}, {"y"}, "fc");
    B::attr(g, "transB", int64_t{1});
    b.output("y");
    put("zero_sized_weight.onnx", b.bytes());
  }
  {
    B b;  // a Conv with no filters
    b.input("x", {-1, 1, 4, 4});
    b.floats("w", {0, 1, 3, 3}, {});
    b.node("Conv", {"x", "w"}, {"y"}, "conv");
    b.output("y");
    put("zero_filter_conv.onnx", b.bytes());
  }
  {
    B b = tiny_builder();  // dim_value -5 for the channel count
    b.model().mutable_graph()->mutable_input(0)->mutable_type()->mutable_tensor_type()->mutable_shape()->mutable_dim(1)->set_dim_value(-5);
    put("negative_input_dim.onnx", b.bytes());
  }
  {
    B b;  // the Gemm's weight is a graph input without a shape
    b.input("x", {-1, 16});
    auto* w = b.model().mutable_graph()->add_input();
    w->set_name("w");
    w->mutable_type()->mutable_tensor_type()->set_elem_type(onnx::TensorProto::FLOAT);
    auto& g = b.node("Gemm", {"x", "w"}, {"y"}, "fc");
    B::attr(g, "transB", int64_t{1});
    b.output("y");
    put("weight_is_shapeless_input.onnx", b.bytes());
  }
  // Quantized .tern files the FP32 loader rejects: a clamp range upside down, an int8 graph input.
  auto invert_clamp = [](json& g) {
    json& n = first_node_of_kind(g, "conv");
    n["attrs"]["clamp_lo"] = 6.0;
    n["attrs"]["clamp_hi"] = 0.0;
  };
  auto int8_input = [](json& g) {
    size_t in = g.at("inputs").at(0).get<size_t>();
    g["values"][in]["dtype"] = static_cast<int>(tern::DataType::kInt8);
  };
  put_tern("quantized_clamp_inverted.tern", edit_graph(tiny_quantized(), invert_clamp));
  put_tern("quantized_int8_input.tern", edit_graph(tiny_quantized(), int8_input));

  // --- unclear errors
  put_tern("fp32_clamp_inverted.tern", edit_graph(tiny_fp32_tern(), invert_clamp));
  put_tern("fp32_int8_input.tern", edit_graph(tiny_fp32_tern(), int8_input));
  {
    B b;  // a Conv with zero input channels
    b.input("x", {1, 0, 4, 4});
    b.floats("w", {2, 0, 3, 3}, {});
    b.floats("b", {2}, {0.5f, -0.5f});
    b.node("Conv", {"x", "w", "b"}, {"y"}, "conv");
    b.output("y");
    put("zero_channel_conv.onnx", b.bytes());
  }
  put("tiny.onnx", tiny_builder().bytes());
}

// ---------------------------------------------------------------------------------------------
// The generated inputs and their cases

class Manifest {
 public:
  explicit Manifest(std::string dir) : dir_(std::move(dir)) {}
  void add(const std::string& category, const std::string& name, const std::string& input, const std::string& command,
           const std::string& expect, const std::string& needle = "{in}", const std::string& checks = "") {
    lines_ += category + "\t" + name + "\t" + input + "\t" + command + "\t" + expect + "\t" + needle + "\t" + checks + "\n";
    ++count_;
  }
  // Writes a file under the directory and returns its name relative to it.
  std::string file(const std::string& name, const std::string& bytes) {
    write_file(dir_ + "/" + name, bytes);
    return name;
  }
  std::string file(const std::string& name, const std::vector<std::byte>& bytes) {
    write_file(dir_ + "/" + name, bytes);
    return name;
  }
  const std::string& dir() const { return dir_; }
  void save() const {
    write_file(dir_ + "/cases.tsv", "# generated by make_hostile_inputs; see its header for the format\n" + lines_);
  }
  int count() const { return count_; }

 private:
  std::string dir_;
  std::string lines_;
  int count_ = 0;
};

// Sample sizes times HOSTILE_SAMPLE (default 1: about 1700 cases, which the suite runs in about a
// minute on two cores when tern refuses each input quickly).
size_t scaled(size_t k) {
  const char* env = std::getenv("HOSTILE_SAMPLE");
  double f = env && *env ? std::atof(env) : 1.0;
  return static_cast<size_t>(std::max(1.0, static_cast<double>(k) * f + 0.5));
}

// Deterministic choice of k of n items (all when k >= n), in order.
std::vector<size_t> sample(size_t n, size_t k, uint32_t seed) {
  std::vector<size_t> all(n);
  for (size_t i = 0; i < n; ++i) all[i] = i;
  if (k >= n) return all;
  for (size_t i = 0; i < k; ++i) {  // partial Fisher-Yates
    seed = seed * 1664525u + 1013904223u;
    size_t j = i + seed % (n - i);
    std::swap(all[i], all[j]);
  }
  all.resize(k);
  std::sort(all.begin(), all.end());
  return all;
}

const char* kEvalTiny = "--data {data}/x_1x4x4.npy --labels {data}/labels2.npy";
const char* kQuantizeFast = "-o {work}/out.tern --data-free dynamic --weights int8";

// 1.5 GiB of zeros after an IDX header, as 1536 gzip members of 1 MiB each (about 1.6 MB).
std::string bomb(const std::string& header) {
  static const std::string member = gzip_member(std::string(1 << 20, '\0'));
  std::string out = gzip_member(header);
  out.reserve(out.size() + 1536 * member.size());
  for (int i = 0; i < 1536; ++i) out += member;
  return out;
}

void make_bombs(Manifest& m) {
  const std::string labels10 = gzip_member(idx_header(0x08, {10}) + std::string(10, '\1'));
  const std::string images10 = gzip_member(idx_header(0x08, {10, 28, 28}) + std::string(10 * 28 * 28, '\x80'));
  struct Bomb {
    const char* name;
    std::string images, labels;
  };
  const Bomb bombs[] = {
      {"bomb_images_small_count", bomb(idx_header(0x08, {10, 28, 28})), labels10},
      {"bomb_images_inconsistent", bomb(idx_header(0x08, {3, 3, 3})), labels10},
      {"bomb_labels_small_count", images10, bomb(idx_header(0x08, {10}))},
  };
  for (const Bomb& b : bombs) {
    std::string d = b.name;
    make_dir(m.dir() + "/" + d);
    for (const char* split : {"t10k", "train"}) {
      m.file(d + "/" + split + "-images-idx3-ubyte.gz", b.images);
      m.file(d + "/" + split + "-labels-idx1-ubyte.gz", b.labels);
    }
    m.add("alloc", std::string(b.name) + "_eval", d, "eval {models}/lenet5.onnx --data {in}", "1");
    m.add("alloc", std::string(b.name) + "_quantize", d, "quantize {models}/lenet5.onnx -o {work}/out.tern --data {in}", "1");
  }
}

// Each model cut at offsets strictly inside its graph field (so no cut parses as a shorter valid
// model), each .tern and .npy cut anywhere.
void make_truncated(Manifest& m, const std::string& models) {
  struct Source {
    std::string name, bytes, kind;
  };
  std::vector<Source> sources = {{"tiny", tiny_builder().bytes(), "onnx"},
                                 {"zoo", zoo_builder().bytes(), "onnx"},
                                 {"lenet5", read_file(models + "/lenet5.onnx"), "onnx"},
                                 {"tiny_int8", [] { auto b = tiny_quantized(); return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }(), "tern"},
                                 {"tiny_ternary", [] { auto b = tiny_ternary(); return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }(), "tern"},
                                 {"tiny_fp32", [] { auto b = tiny_fp32_tern(); return std::string(reinterpret_cast<const char*>(b.data()), b.size()); }(), "tern"},
                                 {"x_1x4x4", npy_floats({2, 1, 4, 4}, random_floats(32, 5)), "npy"}};
  uint32_t seed = 1;
  for (const Source& s : sources) {
    size_t lo = 0, hi = s.bytes.size();  // cut points: lo < cut < hi
    if (s.kind == "onnx") {
      onnx::ModelProto model;
      if (!model.ParseFromString(s.bytes)) throw tern::Error(s.name + ": not a model");
      onnx::ModelProto before = model;
      before.clear_graph();
      before.clear_opset_import();
      before.clear_metadata_props();
      before.clear_training_info();
      before.clear_functions();
      // Fields 1..6 precede the graph (field 7) in the serialization; 8 and up follow it.
      lo = before.ByteSizeLong();
      onnx::ModelProto graph_only;
      *graph_only.mutable_graph() = model.graph();
      hi = lo + graph_only.ByteSizeLong();
      if (s.bytes.compare(lo, hi - lo, graph_only.SerializeAsString()) != 0)
        throw tern::Error(s.name + ": the graph field is not where expected");
    }
    size_t span = hi - lo - 1;
    size_t k = scaled(s.kind == "onnx" ? (s.name == "lenet5" ? 80 : 50) : s.kind == "tern" ? 40 : 20);
    for (size_t i : sample(span, k, seed++)) {
      size_t cut = lo + 1 + i;
      if (s.kind != "onnx" && i == 0) cut = 0;  // the empty file
      std::string name = "cut_" + s.name + "_" + std::to_string(cut) + "." + s.kind;
      std::string in = m.file(name, s.bytes.substr(0, cut));
      std::string case_name = s.name + "@" + std::to_string(cut);
      if (s.kind == "onnx") {
        if (i % 3 == 0)
          m.add("sys-truncated", case_name, in, std::string("quantize {in} ") + kQuantizeFast, "1");
        else
          m.add("sys-truncated", case_name, in, "inspect {in}", "1");
      } else if (s.kind == "tern") {
        if (i % 2 == 0) m.add("sys-truncated", case_name, in, "inspect {in}", "1");
        else m.add("sys-truncated", case_name, in, std::string("eval {in} --engine integer ") + kEvalTiny, "1");
      } else {
        m.add("sys-truncated", case_name, in, "run {data}/tiny.onnx --input {in} --output {work}/y.npy", "1");
      }
    }
  }
}

// Each used initializer's first and last dim set to 0, -1, 2^31, 2^62 (the data left as it is).
void make_init_dims(Manifest& m, const std::string& models) {
  struct Source {
    std::string name, bytes, eval;
  };
  const std::vector<Source> sources = {
      {"tiny", tiny_builder().bytes(), kEvalTiny},
      {"zoo", zoo_builder().bytes(), ""},
      {"lenet5", read_file(models + "/lenet5.onnx"), "--data {data}/x_1x28x28.npy --labels {data}/labels2.npy"}};
  const int64_t values[] = {0, -1, int64_t{1} << 31, int64_t{1} << 62};
  struct Mutation {
    std::string name, bytes, eval;
  };
  std::vector<Mutation> mutations;
  for (const Source& s : sources) {
    onnx::ModelProto model;
    if (!model.ParseFromString(s.bytes)) throw tern::Error(s.name + ": not a model");
    std::set<std::string> used;
    for (const auto& node : model.graph().node())
      for (const auto& i : node.input()) used.insert(i);
    for (int t = 0; t < model.graph().initializer_size(); ++t) {
      const onnx::TensorProto& init = model.graph().initializer(t);
      if (!used.count(init.name()) || init.dims_size() == 0) continue;
      std::set<int> positions = {0, init.dims_size() - 1};
      for (int pos : positions) {
        for (int64_t v : values) {
          if (init.dims(pos) == v) continue;
          onnx::ModelProto mutated = model;
          mutated.mutable_graph()->mutable_initializer(t)->set_dims(pos, v);
          std::string name = s.name + "_" + init.name() + "_dim" + std::to_string(pos) + "_" + std::to_string(v);
          mutations.push_back({name, mutated.SerializeAsString(), s.eval});
        }
      }
    }
  }
  int n = 0;
  for (size_t i : sample(mutations.size(), scaled(200), 55)) {
    const Mutation& mu = mutations[i];
    std::string in = m.file("dims_" + mu.name + ".onnx", mu.bytes);
    if (!mu.eval.empty() && n++ % 3 == 0) m.add("sys-init-dims", mu.name, in, "eval {in} " + mu.eval, "1");
    else m.add("sys-init-dims", mu.name, in, "inspect {in}", "1");
  }
}

// Every integer attribute element of every node of the zoo (and the tiny model) and every element
// of its int64 initializers (shapes, pads, slice bounds) set to boundary values. Many of these are
// still valid models: the contract is no crash, no hang, bounded memory, a one-line error or a
// sane result.
void make_attrs(Manifest& m) {
  const int64_t values[] = {0, -1, 2, (int64_t{1} << 31) - 1, int64_t{1} << 31, int64_t{1} << 62, kI64Min, kI64Max};
  m.file("x_2x6x6.npy", npy_floats({2, 2, 6, 6}, random_floats(144, 50)));
  struct Source {
    std::string name;
    B builder;
    std::string run;
  };
  std::vector<Source> sources = {{"zoo", zoo_builder(), "{gen}/x_2x6x6.npy"}, {"tiny", tiny_builder(), "{data}/x_1x4x4.npy"}};
  struct Mutation {
    std::string name;
    onnx::ModelProto model;
  };
  for (Source& s : sources) {
    const onnx::ModelProto& base = s.builder.model();
    std::vector<Mutation> mutations;
    for (int ni = 0; ni < base.graph().node_size(); ++ni) {
      const onnx::NodeProto& node = base.graph().node(ni);
      for (int ai = 0; ai < node.attribute_size(); ++ai) {
        const onnx::AttributeProto& a = node.attribute(ai);
        int elements = a.type() == onnx::AttributeProto::INT ? 1 : a.type() == onnx::AttributeProto::INTS ? a.ints_size() : 0;
        for (int e = 0; e < elements; ++e)
          for (int64_t v : values) {
            onnx::ModelProto mm = base;
            auto* ma = mm.mutable_graph()->mutable_node(ni)->mutable_attribute(ai);
            int64_t old = a.type() == onnx::AttributeProto::INT ? a.i() : a.ints(e);
            if (old == v) continue;
            if (a.type() == onnx::AttributeProto::INT) ma->set_i(v);
            else ma->set_ints(e, v);
            mutations.push_back({node.name() + "." + a.name() + "[" + std::to_string(e) + "]=" + std::to_string(v), mm});
          }
      }
    }
    for (int ti = 0; ti < base.graph().initializer_size(); ++ti) {
      const onnx::TensorProto& t = base.graph().initializer(ti);
      if (t.data_type() != onnx::TensorProto::INT64) continue;
      for (int e = 0; e < t.int64_data_size(); ++e)
        for (int64_t v : values) {
          if (t.int64_data(e) == v) continue;
          onnx::ModelProto mm = base;
          mm.mutable_graph()->mutable_initializer(ti)->set_int64_data(e, v);
          mutations.push_back({t.name() + "[" + std::to_string(e) + "]=" + std::to_string(v), mm});
        }
    }
    size_t k = scaled(s.name == "zoo" ? 300 : 80);
    int n = 0;
    for (size_t i : sample(mutations.size(), k, 77)) {
      const Mutation& mu = mutations[i];
      std::string name = s.name + ":" + mu.name;
      std::string in = m.file("attr_" + s.name + "_" + std::to_string(i) + ".onnx", mu.model.SerializeAsString());
      if (n++ % 2 == 0) m.add("sys-attrs", name, in, "inspect {in} --json", "0|1", "{in}", "nonneg");
      else m.add("sys-attrs", name, in, "run {in} --input " + s.run + " --output {work}/y.npy", "0|1");
    }
  }
}

// .npy files with hostile headers, used as run's input, eval's images and eval's labels.
void make_npy(Manifest& m) {
  const std::string data32(2 * 4 * 16, '\0');  // 2 x 1 x 4 x 4 floats
  struct Npy {
    std::string name, bytes;
  };
  auto f4 = [&](const std::string& shape, const std::string& payload) { return npy_raw(npy_dict("<f4", shape), payload); };
  std::vector<Npy> files = {
      {"shape_neg", f4("(-2, 1, 4, 4)", data32)},
      {"shape_2e31", f4("(2147483648, 1, 4, 4)", data32)},
      {"shape_2e62", f4("(4611686018427387904, 1, 4, 4)", data32)},
      {"shape_i64max", f4("(9223372036854775807,)", data32)},
      {"shape_beyond_i64", f4("(99999999999999999999, 1)", data32)},
      {"shape_product_overflow", f4("(4294967296, 4294967296, 4294967296, 4294967296)", data32)},
      {"shape_zero_times_huge", f4("(0, 9223372036854775807)", "")},
      {"shape_text", f4("(two, 1, 4, 4)", data32)},
      {"shape_unclosed", f4("(2, 1, 4, 4", data32)},
      {"shape_empty_items", f4("(2,,,1, 4, 4)", data32)},
      {"shape_scalar", f4("()", std::string(4, '\0'))},
      {"shape_rank_40", f4("(" + [] { std::string s; for (int i = 0; i < 40; ++i) s += "1, "; return s; }() + ")", std::string(4, '\0'))},
      {"shape_missing", npy_raw("{'descr': '<f4', 'fortran_order': False, }", data32)},
      {"descr_f2", npy_raw(npy_dict("<f2", "(2, 1, 4, 4)"), std::string(64, '\0'))},
      {"descr_big_endian", npy_raw(npy_dict(">f4", "(2, 1, 4, 4)"), data32)},
      {"descr_complex", npy_raw(npy_dict("<c8", "(2, 1, 4, 4)"), data32 + data32)},
      {"descr_object", npy_raw(npy_dict("|O", "(2, 1, 4, 4)"), data32)},
      {"descr_unicode", npy_raw(npy_dict("<U4", "(2, 1, 4, 4)"), data32 + data32)},
      {"descr_missing", npy_raw("{'fortran_order': False, 'shape': (2, 1, 4, 4), }", data32)},
      {"fortran_order", npy_raw(npy_dict("<f4", "(2, 1, 4, 4)", "True"), data32)},
      {"data_short", f4("(2, 1, 4, 4)", data32.substr(1))},
      {"data_long", f4("(2, 1, 4, 4)", data32 + "x")},
      {"header_len_beyond_file", [&] { std::string s = f4("(2, 1, 4, 4)", data32); s[8] = '\xff'; s[9] = '\xff'; return s; }()},
      {"header_len_zero", [&] { std::string s = f4("(2, 1, 4, 4)", data32); s[8] = 0; s[9] = 0; return s; }()},
      {"version2_len_4g", [&] { std::string s = npy_raw(npy_dict("<f4", "(2, 1, 4, 4)"), data32, 2); for (int i = 8; i < 12; ++i) s[i] = '\xff'; return s; }()},
      {"version3", npy_raw(npy_dict("<f4", "(2, 1, 4, 4)"), data32, 3)},
      {"version9", [&] { std::string s = f4("(2, 1, 4, 4)", data32); s[6] = 9; return s; }()},
      {"magic_only", std::string("\x93NUMPY", 6)},
      {"nul_in_header", f4(std::string("(2, 1,\0 4, 4)", 13), data32)},
      {"f8_nan_inf", npy_raw(npy_dict("<f8", "(2, 1, 4, 4)"), [] { std::vector<double> v(32, std::numeric_limits<double>::infinity()); v[3] = NAN; v[4] = 1e300; return le_bytes(v); }())},
      {"f4_huge_values", f4("(2, 1, 4, 4)", le_bytes(std::vector<float>(32, 3.4e38f)))},
  };
  // Odd but readable: a lenient parser may take these (run's input is used as it is; eval must
  // refuse non-finite images, as wrong-answer's cases check, but huge finite ones are its call).
  const std::set<std::string> lenient = {"shape_empty_items", "version3", "f4_huge_values"};
  for (const Npy& f : files) {
    std::string in = m.file("npy_" + f.name + ".npy", f.bytes);
    std::string expect = lenient.count(f.name) ? "0|1" : "1";
    m.add("sys-npy", f.name + ":run", in, "run {data}/tiny.onnx --input {in} --output {work}/y.npy",
          f.name == "f8_nan_inf" ? "0|1" : expect);
    m.add("sys-npy", f.name + ":eval-data", in, "eval {data}/tiny.onnx --data {in} --labels {data}/labels2.npy", expect);
    m.add("sys-npy", f.name + ":eval-labels", in, "eval {data}/tiny.onnx --data {data}/x_1x4x4.npy --labels {in}", "1");
  }
  // Label arrays with hostile values.
  struct Labels {
    std::string name, bytes;
  };
  const std::vector<Labels> labels = {
      {"labels_negative", npy_labels({-1, 0})},
      {"labels_i64min", npy_labels({kI64Min, 0})},
      {"labels_float", npy_raw(npy_dict("<f4", "(2,)"), le_bytes(std::vector<float>{0.5f, 1.0f}))},
      {"labels_2d", npy_raw(npy_dict("<i8", "(2, 1)"), le_bytes(std::vector<int64_t>{0, 1}))},
      {"labels_count_3", npy_labels({0, 1, 2})},
      {"labels_bool", npy_raw(npy_dict("|b1", "(2,)"), std::string("\x01\x00", 2))},
  };
  for (const Labels& l : labels) {
    std::string in = m.file("npy_" + l.name + ".npy", l.bytes);
    m.add("sys-npy", l.name, in, "eval {data}/tiny.onnx --data {data}/x_1x4x4.npy --labels {in}", "1");
  }
}

// IDX directories with hostile image or label headers, plain and gzip'd, through eval --data DIR.
void make_idx(Manifest& m) {
  const std::string labels2 = idx_header(0x08, {2}) + std::string(2, '\1');
  const std::string images2 = idx_header(0x08, {2, 28, 28}) + std::string(2 * 28 * 28, '\x40');
  struct Idx {
    std::string name, images, labels;
  };
  const std::string few(64, '\0');
  const std::vector<Idx> dirs = {
      {"images_rank0", idx_header(0x08, {}) + few, labels2},
      {"images_rank9", idx_header(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 2}) + few, labels2},
      {"images_rank255", idx_header(0x08, {2, 28, 28}, 255) + few, labels2},
      {"images_type09", idx_header(0x09, {2, 28, 28}) + std::string(2 * 28 * 28, '\0'), labels2},
      {"images_type0B", idx_header(0x0B, {2, 28, 28}) + std::string(2 * 28 * 28 * 2, '\0'), labels2},
      {"images_type0E", idx_header(0x0E, {2, 28, 28}) + std::string(2 * 28 * 28 * 8, '\0'), labels2},
      {"images_typeFF", idx_header(0xFF, {2, 28, 28}) + few, labels2},
      {"images_magic_nonzero", "\x01\x00\x08\x03" + images2.substr(4), labels2},
      {"images_dims_u32max", idx_header(0x08, {0xFFFFFFFFu, 28, 28}) + few, labels2},
      {"images_dims_2e31", idx_header(0x08, {0x80000000u, 0x80000000u, 0x80000000u}) + few, labels2},
      {"images_float_dims_overflow", idx_header(0x0D, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}) + few, labels2},
      {"images_zero_dims", idx_header(0x08, {2, 0, 0}), labels2},
      {"images_rank1", idx_header(0x08, {2}) + std::string(2, '\0'), labels2},
      {"images_rank2", idx_header(0x08, {2, 784}) + std::string(2 * 784, '\0'), labels2},
      {"images_wrong_size", idx_header(0x08, {2, 5, 5}) + std::string(50, '\0'), labels2},
      {"images_header_cut", idx_header(0x08, {2, 28, 28}).substr(0, 9), labels2},
      {"images_short_by_one", images2.substr(0, images2.size() - 1), labels2},
      {"images_long_by_one", images2 + "x", labels2},
      {"images_float_nan", idx_header(0x0D, {2, 28, 28}) + std::string(2 * 28 * 28 * 4, '\xff'), labels2},
      {"labels_count_mismatch", images2, idx_header(0x08, {3}) + std::string(3, '\1')},
      {"labels_rank2", images2, idx_header(0x08, {2, 1}) + std::string(2, '\1')},
      {"labels_float", images2, idx_header(0x0D, {2}) + std::string(8, '\0')},
      {"labels_u32max", images2, idx_header(0x08, {0xFFFFFFFFu}) + std::string(2, '\1')},
      {"labels_empty_file", images2, ""},
      {"labels_big", images2, idx_header(0x08, {2}) + std::string("\xff\xfe", 2)},
      {"no_labels", images2, "-"},
      {"images_empty_file", "", labels2},
  };
  for (const Idx& d : dirs) {
    for (bool gz : {false, true}) {

      std::string dir = "idx_" + d.name + (gz ? "_gz" : "");
      make_dir(m.dir() + "/" + dir);
      std::string suffix = gz ? ".gz" : "";
      auto body = [&](const std::string& b) { return gz ? gzip_member(b) : b; };
      m.file(dir + "/t10k-images-idx3-ubyte" + suffix, body(d.images));
      if (d.labels != "-") m.file(dir + "/t10k-labels-idx1-ubyte" + suffix, body(d.labels));
      // Two images of nothing are a valid (if pointless) data set: those may evaluate.
      std::string expect = d.name == "images_zero_dims" || d.name == "labels_big" || d.name == "images_float_nan" ? "0|1" : "1";
      m.add("sys-idx", dir, dir, "eval {models}/lenet5.onnx --data {in}", expect);
    }
  }
  // A corrupt gzip stream and a gzip of a plain file cut short.
  make_dir(m.dir() + "/idx_corrupt_gz");
  std::string z = gzip_member(images2);
  z[z.size() / 2] ^= 0x55;
  m.file("idx_corrupt_gz/t10k-images-idx3-ubyte.gz", z);
  m.file("idx_corrupt_gz/t10k-labels-idx1-ubyte.gz", gzip_member(labels2));
  m.add("sys-idx", "idx_corrupt_gz", "idx_corrupt_gz", "eval {models}/lenet5.onnx --data {in}", "1");
  make_dir(m.dir() + "/idx_cut_gz");
  z = gzip_member(images2);
  m.file("idx_cut_gz/t10k-images-idx3-ubyte.gz", z.substr(0, z.size() - 20));
  m.file("idx_cut_gz/t10k-labels-idx1-ubyte.gz", gzip_member(labels2));
  m.add("sys-idx", "idx_cut_gz", "idx_cut_gz", "eval {models}/lenet5.onnx --data {in}", "1");
}

// Numbers of the graph and quantization JSON of checksum-valid .tern files set to boundary values.
void make_tern_json(Manifest& m) {
  struct Source {
    std::string name;
    std::vector<std::byte> bytes;
  };
  const std::vector<Source> sources = {{"int8", tiny_quantized()}, {"ternary", tiny_ternary()}, {"fp32", tiny_fp32_tern()}};
  const json values[] = {json(0), json(-1), json(int64_t{1} << 31), json(int64_t{1} << 62), json(kI64Min), json(kI64Max),
                         json(1e300), json(-0.5), json(nullptr)};
  // Skipped: provenance and the human-readable fields that only reports print.
  const std::set<std::string> skip = {"source", "reason", "metadata", "opset", "sqnr_db", "output_sqnr_db", "weight_sqnr_db", "gain"};
  int n = 0;
  for (const Source& s : sources) {
    Sections base = split_sections(s.bytes);
    struct Site {
      tern::SectionType section;
      std::string path;  // JSON pointer
    };
    std::vector<Site> sites;
    std::function<void(const json&, const std::string&, tern::SectionType)> walk = [&](const json& j, const std::string& p,
                                                                                     tern::SectionType t) {
      if (j.is_number()) sites.push_back({t, p});
      if (j.is_object())
        for (auto it = j.begin(); it != j.end(); ++it)
          if (!skip.count(it.key())) walk(it.value(), p + "/" + it.key(), t);
      if (j.is_array())
        for (size_t i = 0; i < j.size(); ++i) walk(j[i], p + "/" + std::to_string(i), t);
    };
    for (tern::SectionType t : {tern::SectionType::kGraph, tern::SectionType::kQuantization}) {
      bool present = false;
      for (const auto& sec : base) present |= sec.first == t;
      if (present) walk(section_json(base, t), "", t);
    }
    std::vector<std::pair<size_t, size_t>> edits;  // (site, value)
    for (size_t i = 0; i < sites.size(); ++i)
      for (size_t v = 0; v < std::size(values); ++v) edits.emplace_back(i, v);
    size_t k = scaled(s.name == "fp32" ? 100 : 150);
    for (size_t e : sample(edits.size(), k, 99 + n)) {
      const Site& site = sites[edits[e].first];
      const json& value = values[edits[e].second];
      Sections sec = base;
      json j = section_json(sec, site.section);
      if (j.at(json::json_pointer(site.path)) == value) continue;
      j[json::json_pointer(site.path)] = value;
      set_section_json(sec, site.section, j);
      std::string where = site.section == tern::SectionType::kGraph ? "graph" : "quantization";
      std::string name = s.name + ":" + where + site.path + "=" + value.dump();
      std::string in = m.file("json_" + s.name + "_" + std::to_string(e) + ".tern", tern::serialize_tern_file(sec));
      switch (n++ % 4) {
        case 0: m.add("sys-tern-json", name, in, "inspect {in} --json", "0|1", "{in}", "nonneg"); break;
        case 1: m.add("sys-tern-json", name, in, std::string("eval {in} ") + kEvalTiny, "0|1"); break;
        case 2:
          if (s.name == "fp32") m.add("sys-tern-json", name, in, "run {in} --input {data}/x_1x4x4.npy --output {work}/y.npy", "0|1");
          else m.add("sys-tern-json", name, in, std::string("eval {in} --engine integer ") + kEvalTiny, "0|1");
          break;
        default: m.add("sys-tern-json", name, in, "bench {in} --seconds 0.01", "0|1"); break;
      }
    }
  }
}

void make_generated(const std::string& dir, const std::string& models, const std::set<std::string>& only) {
  Manifest m(dir);
  auto want = [&](const std::string& family) { return only.empty() || only.count(family) != 0; };
  if (want("alloc")) make_bombs(m);
  if (want("sys-truncated")) make_truncated(m, models);
  if (want("sys-init-dims")) make_init_dims(m, models);
  if (want("sys-attrs")) make_attrs(m);
  if (want("sys-npy")) make_npy(m);
  if (want("sys-idx")) make_idx(m);
  if (want("sys-tern-json")) make_tern_json(m);
  m.save();
  std::printf("%d generated cases in %s/cases.tsv\n", m.count(), dir.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "committed" && argc == 3) {
      make_committed(argv[2]);
      return 0;
    }
    if (mode == "generated" && argc >= 4) {
      std::set<std::string> only(argv + 4, argv + argc);
      make_generated(argv[2], argv[3], only);
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_hostile_inputs: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: %s committed DIR | generated DIR MODELS_DIR [FAMILY...]\n", argv[0]);
  return 2;
}
