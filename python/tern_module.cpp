// tern's Python package, the compiled part (_tern): the library API over numpy arrays. The Python
// side (python/tern/__init__.py) documents it and adds conveniences. Errors are tern.Error with
// tern's one-line message; the GIL is released while a model runs or is quantized.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "core/file_io.h"
#include "tern/batchnorm_ranges.h"
#include "tern/compare.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/executor.h"
#include "tern/integer_executor.h"
#include "tern/model_io.h"
#include "tern/onnx_export.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"
#include "tern/quantized_model.h"

namespace py = pybind11;

namespace tern::python {
namespace {

// ---- numpy <-> Tensor -----------------------------------------------------------------------------

template <typename T>
Tensor tensor_of(const py::array& a, DataType type) {
  auto c = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(a);
  if (!c) throw Error("cannot convert the array to " + to_string(type));
  Shape shape(c.shape(), c.shape() + c.ndim());
  Tensor t = Tensor::uninitialized(type, shape);
  if (t.bytes()) std::memcpy(t.raw(), c.data(), t.bytes());
  return t;
}

Tensor to_tensor(const py::handle& obj, DataType type, const std::string& what) {
  py::array a = py::array::ensure(obj);
  if (!a) throw Error(what + ": expected a numpy array");
  switch (type) {
    case DataType::kFloat32: return tensor_of<float>(a, type);
    case DataType::kInt64: return tensor_of<int64_t>(a, type);
    case DataType::kInt32: return tensor_of<int32_t>(a, type);
    case DataType::kUInt8: return tensor_of<uint8_t>(a, type);
    case DataType::kInt8: return tensor_of<int8_t>(a, type);
    case DataType::kBool: return tensor_of<bool>(a, type);
    default: throw Error(what + ": unsupported input type " + to_string(type));
  }
}

template <typename T>
py::array array_as(const Tensor& t) {
  py::array_t<T> a(std::vector<py::ssize_t>(t.shape().begin(), t.shape().end()));
  if (t.bytes()) std::memcpy(a.mutable_data(), t.raw(), t.bytes());
  return a;
}

py::array to_array(const Tensor& t) {
  switch (t.dtype()) {
    case DataType::kFloat32: return array_as<float>(t);
    case DataType::kInt64: return array_as<int64_t>(t);
    case DataType::kInt32: return array_as<int32_t>(t);
    case DataType::kUInt8: return array_as<uint8_t>(t);
    case DataType::kInt8: return array_as<int8_t>(t);
    case DataType::kBool: return array_as<bool>(t);
    default: throw Error("output of unsupported type " + to_string(t.dtype()));
  }
}

// An array, or an iterable of arrays concatenated along axis 0 (batches of calibration inputs).
Tensor batch_of(const py::handle& obj, const std::string& what) {
  if (py::isinstance<py::array>(obj)) return to_tensor(obj, DataType::kFloat32, what);
  std::vector<Tensor> parts;
  for (const py::handle& item : py::iter(obj)) parts.push_back(to_tensor(item, DataType::kFloat32, what));
  if (parts.empty()) throw Error(what + ": no arrays");
  Shape shape = parts[0].shape();
  check(!shape.empty(), what + ": arrays need a batch axis");
  shape[0] = 0;
  for (const Tensor& p : parts) {
    check(p.rank() == static_cast<int64_t>(shape.size()) && std::equal(p.shape().begin() + 1, p.shape().end(), shape.begin() + 1),
          what + ": the arrays differ in shape past the batch axis");
    shape[0] += p.dim(0);
  }
  Tensor t = Tensor::uninitialized(DataType::kFloat32, shape);
  size_t at = 0;
  for (const Tensor& p : parts) {
    std::memcpy(t.raw() + at, p.raw(), p.bytes());
    at += p.bytes();
  }
  return t;
}

py::object json_to_py(const nlohmann::json& j) { return py::module_::import("json").attr("loads")(j.dump()); }

// ---- models ------------------------------------------------------------------------------------

class Model {
 public:
  Model(std::string path, Graph graph, std::optional<quant::QuantizedModel> q)
      : path_(std::move(path)), graph_(std::move(graph)), quantized_(std::move(q)) {}

  static Model load(const std::string& path, std::optional<int> level) {
    std::optional<quant::QuantizedModel> q;
    Graph g;
    if (is_tern_file(path)) {
      TernFile file = TernFile::open(path);
      if (quant::is_quantized(file)) {
        q = quant::load_quantized_model(file);
        if (level) quant::set_level(*q, *level < 0 ? q->max_level() : *level);
        g = quant::simulation_graph(*q);
      } else {
        g = load_graph(file);
      }
    } else {
      g = import_onnx(path);
    }
    check(!level || q, path + ": a level needs a quantized .tern model");
    return Model(path, std::move(g), std::move(q));
  }

  py::object run(const py::object& x, const std::string& engine) {
    std::vector<Tensor> inputs;
    if (py::isinstance<py::list>(x) || py::isinstance<py::tuple>(x)) {
      for (const py::handle& item : x) inputs.push_back(input(inputs.size(), item));
    } else {
      inputs.push_back(input(0, x));
    }
    check(inputs.size() == graph_.inputs.size(), who() + ": takes " + std::to_string(graph_.inputs.size()) + " inputs, got " +
                                                     std::to_string(inputs.size()));
    InferenceEngine& e = engine_for(engine);
    std::vector<Tensor> out;
    {
      py::gil_scoped_release unlocked;
      out = e.run(std::span<const Tensor>(inputs));
    }
    if (out.size() == 1) return to_array(out[0]);
    py::list l;
    for (const Tensor& t : out) l.append(to_array(t));
    return l;
  }

  void set_level(int level) {
    check(quantized_.has_value(), who() + ": has no residual levels (not a quantized model)");
    quant::set_level(*quantized_, level);
    graph_ = quant::simulation_graph(*quantized_);
    simulated_.reset();
    if (integer_) integer_->set_level(level);
  }
  int level() const { return quantized_ ? quantized_->level : 0; }
  int max_level() const { return quantized_ ? quantized_->max_level() : 0; }
  bool is_quantized() const { return quantized_.has_value(); }
  const std::string& path() const { return path_; }

  void save(const std::string& out) const {
    if (quantized_) quant::save_quantized_model(out, *quantized_);
    else save_graph(out, graph_);
  }

  py::dict export_onnx(const std::string& out) const {
    OnnxExportReport r;
    std::string bytes = quantized_ ? qdq_onnx_bytes(*quantized_, &r) : graph_onnx_bytes(graph_, &r);
    write_file_atomically(out, {std::span<const char>(bytes.data(), bytes.size())});
    py::dict d;
    d["path"] = out;
    d["bytes"] = bytes.size();
    d["opset"] = r.opset;
    d["nodes"] = r.nodes;
    d["int8_layers"] = r.int8_layers;
    d["float_layers"] = r.float_layers;
    d["quantized_activations"] = r.quantized_activations;
    d["notes"] = r.notes;
    return d;
  }

  py::object inspect() const {
    ModelSummary s = summarize(graph_);
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : s.layers)
      layers.push_back({{"name", l.name}, {"op", l.op}, {"output", l.output}, {"parameters", l.parameters},
                        {"macs", l.macs >= 0 ? nlohmann::json(l.macs) : nlohmann::json(nullptr)}});
    nlohmann::json j = {{"path", path_}, {"inputs", value_list(graph_.inputs)}, {"outputs", value_list(graph_.outputs)},
                        {"layers", layers}, {"parameters", s.parameters}, {"macs", s.macs}};
    if (quantized_) {
      const quant::QuantizedModel& q = *quantized_;
      quant::ModelSize size = quant::model_size(q);
      nlohmann::json ql = nlohmann::json::array();
      for (const quant::QuantizedLayer& l : q.layers)
        ql.push_back({{"node", l.node}, {"weights", quant::describe_weights(l)},
                      {"input", l.input ? quant::describe_activation(*l.input) : std::string("float32")},
                      {"active_terms", l.active_terms}, {"reason", l.reason},
                      {"weight_sqnr_db", std::isfinite(l.weight_sqnr_db) ? nlohmann::json(l.weight_sqnr_db) : nlohmann::json("inf")}});
      j["quantization"] = {{"layers", ql}, {"level", q.level}, {"max_level", q.max_level()},
                           {"size_bytes", size.quantized}, {"fp32_bytes", size.fp32}, {"int8_bytes", size.int8},
                           {"mults_eliminated", size.mults_eliminated()},
                           {"provenance", nlohmann::json::parse(q.provenance_json)}};
    }
    return json_to_py(j);
  }

  const Graph& graph() const { return graph_; }
  const std::optional<quant::QuantizedModel>& quantized() const { return quantized_; }
  InferenceEngine& reference_engine() { return engine_for("simulated"); }
  std::string who() const { return path_.empty() ? std::string("model") : path_; }

 private:
  Tensor input(size_t i, const py::handle& x) const {
    check(i < graph_.inputs.size(), who() + ": takes " + std::to_string(graph_.inputs.size()) + " inputs");
    const Value& v = graph_.value(graph_.inputs[i]);
    return to_tensor(x, v.dtype == DataType::kUndefined ? DataType::kFloat32 : v.dtype, who() + ": input '" + v.name + "'");
  }

  InferenceEngine& engine_for(const std::string& engine) {
    if (engine == "integer") {
      check(quantized_.has_value(), who() + ": engine 'integer' runs quantized models (this one is float)");
      if (!integer_) integer_ = std::make_unique<IntegerExecutor>(*quantized_);
      return *integer_;
    }
    check(engine == "simulated" || engine == "fp32",
          "engine: expected 'simulated', 'integer' or 'fp32', got '" + engine + "'");
    check(engine == "simulated" || !quantized_, who() + ": engine 'fp32' runs float models (this one is quantized: "
                                                       "'simulated' or 'integer')");
    if (!simulated_) simulated_ = std::make_unique<Executor>(graph_);
    return *simulated_;
  }

  nlohmann::json value_list(const std::vector<ValueId>& ids) const {
    nlohmann::json l = nlohmann::json::array();
    for (ValueId id : ids) {
      const Value& v = graph_.value(id);
      nlohmann::json shape = nlohmann::json::array();
      for (int64_t d : v.shape) shape.push_back(d >= 0 ? nlohmann::json(d) : nlohmann::json(nullptr));
      l.push_back({{"name", v.name}, {"dtype", to_string(v.dtype)}, {"shape", shape}});
    }
    return l;
  }

  std::string path_;
  Graph graph_;  // the FP32 graph, or the simulation graph of quantized_
  std::optional<quant::QuantizedModel> quantized_;
  std::unique_ptr<Executor> simulated_;
  std::unique_ptr<IntegerExecutor> integer_;
};

// ---- quantize -----------------------------------------------------------------------------------

// Options the command line takes as files or that concern its output; the package takes arrays.
const std::set<std::string> kFileOptions = {"output", "data", "labels", "drop-data", "drop-labels", "eval", "json",
                                            "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout",
                                            "input-shape"};

Model quantize(const std::string& onnx_path, const py::object& calib, const py::object& drop_images,
               const py::object& drop_labels, const py::kwargs& kwargs) {
  namespace q = tern::quant;
  // The command line's options, from keyword arguments: weights="ternary" is --weights ternary,
  // bias_correction=True is --bias-correction; checked by the same code as `tern quantize`.
  std::vector<std::string> words = {"tern", "quantize", onnx_path};
  std::string call = "tern.quantize('" + onnx_path + "'";
  for (const auto& [key, value] : kwargs) {
    std::string name = py::str(key);
    std::replace(name.begin(), name.end(), '_', '-');
    if (kFileOptions.count(name))
      throw Error("tern.quantize: '" + std::string(py::str(key)) +
                  "' is a command-line option; pass arrays instead (calib=, drop_images=, drop_labels=)");
    if (py::isinstance<py::bool_>(value)) {
      if (value.cast<bool>()) words.push_back("--" + name);
      else if (!cli::kQuantizeFlags.count(name)) throw Error("tern.quantize: " + name + "=False is not an option");
    } else {
      words.push_back("--" + name);
      words.push_back(py::str(value));
    }
    call += ", " + std::string(py::str(key)) + "=" + std::string(py::repr(value));
  }
  call += ")";
  std::vector<char*> argv;
  for (std::string& w : words) argv.push_back(w.data());
  cli::Args args("quantize", static_cast<int>(argv.size()), argv.data(), 2, cli::kQuantizeValued, cli::kQuantizeFlags);
  q::QuantizeOptions options = cli::quantize_options(args);

  std::optional<Tensor> images, held;
  if (!calib.is_none()) {
    images = batch_of(calib, "calib");
    if (args.has("calib-images")) {
      int64_t n = std::min(images->dim(0), args.get_int("calib-images", 512, 1, 1 << 20));
      Shape s = images->shape();
      s[0] = n;
      Tensor t = Tensor::uninitialized(DataType::kFloat32, s);
      std::memcpy(t.raw(), images->raw(), t.bytes());
      images = std::move(t);
    }
  }
  check(images || options.activation_mode != q::ActivationMode::kCalibrated,
        "tern.quantize: calibration needs calib= (an array of model inputs, or batches of them), or data_free='dynamic'");
  const bool drop_budget = options.residual.kind == q::ResidualBudget::Kind::kDrop;
  check(drop_budget == !drop_images.is_none(), drop_budget ? "tern.quantize: max_drop measures the drop on drop_images= "
                                                             "(held-out model inputs) and drop_labels="
                                                           : "tern.quantize: drop_images= goes with max_drop=");
  if (drop_budget) {
    held = batch_of(drop_images, "drop_images");
    options.drop_images = &*held;
    if (!drop_labels.is_none()) {
      Tensor l = to_tensor(drop_labels, DataType::kInt64, "drop_labels");
      check(l.size() == held->dim(0), "drop_labels: " + std::to_string(l.size()) + " labels for " +
                                          std::to_string(held->dim(0)) + " images");
      options.drop_labels.assign(l.data<int64_t>(), l.data<int64_t>() + l.size());
    }
  }

  ImportOptions import_options;
  import_options.optimize = options.activation_mode != q::ActivationMode::kBatchNorm;
  Graph graph = import_onnx(onnx_path, import_options);
  check(graph.inputs.size() == 1, onnx_path + ": quantize supports single-input models");
  if (images) {  // dynamic dims past the batch: the calibration inputs' size
    const Value& x = graph.value(graph.inputs[0]);
    if (x.shape_known && images->rank() == static_cast<int64_t>(x.shape.size()) &&
        std::any_of(x.shape.begin() + 1, x.shape.end(), [](int64_t d) { return d < 0; })) {
      InputShape s{x.name, images->shape()};
      s.dims.front() = x.shape[0] >= 0 ? x.shape[0] : kDynamicDim;
      set_input_shapes(graph, {s});
    }
    // The input's range, measured on the calibration inputs (float arrays: nothing is proved).
    cli::InputRange range = cli::measured_range(*images);
    options.input_non_negative = range.non_negative();
    if (options.activation_mode == q::ActivationMode::kBatchNorm) {
      for (const auto& [name, r] : q::batchnorm_ranges(graph, std::make_pair(range.lo, range.hi)))
        options.static_thresholds[name] = {r.threshold, r.source};
      optimize(graph);
    }
  } else {
    check(options.activation_mode != q::ActivationMode::kBatchNorm,
          "tern.quantize: data_free='batchnorm' needs calib= to know the input's range");
  }
  q::QuantizedModel model;
  {
    py::gil_scoped_release unlocked;
    model = q::quantize_model(graph, options, images ? &*images : nullptr);
  }
  nlohmann::json prov = nlohmann::json::parse(model.provenance_json);
  prov["source"] = onnx_path;
  prov["command"] = call;
  if (images) prov["calibration_data"] = "calib= array of " + std::to_string(images->dim(0)) + " inputs";
  model.provenance_json = prov.dump();
  Graph sim = q::simulation_graph(model);
  return Model("", std::move(sim), std::move(model));
}

// ---- compare, data -----------------------------------------------------------------------------

py::list compare(Model& reference, Model& model, const py::object& x, const py::object& labels) {
  check(reference.graph().inputs.size() == 1 && model.graph().inputs.size() == 1, "compare supports single-input models");
  Tensor in = to_tensor(x, DataType::kFloat32, "x");
  std::vector<int64_t> label_list;
  if (!labels.is_none()) {
    Tensor l = to_tensor(labels, DataType::kInt64, "labels");
    check(l.size() == in.dim(0), "labels: " + std::to_string(l.size()) + " labels for " + std::to_string(in.dim(0)) + " inputs");
    label_list.assign(l.data<int64_t>(), l.data<int64_t>() + l.size());
  }
  std::vector<std::string> names;
  for (ValueId id : reference.graph().outputs) names.push_back(reference.graph().value(id).name);
  OutputComparer comparer;
  {
    py::gil_scoped_release unlocked;
    std::vector<Tensor> r = reference.reference_engine().run(std::span<const Tensor>(&in, 1));
    std::vector<Tensor> q = model.reference_engine().run(std::span<const Tensor>(&in, 1));
    comparer.add(r, q, labels.is_none() ? nullptr : &label_list, names);
  }
  py::list out;
  for (const OutputComparison& c : comparer.result()) {
    py::dict d;
    d["name"] = c.name;
    d["sqnr_db"] = c.sqnr_db;
    d["cosine"] = c.cosine;
    d["max_abs_error"] = c.max_abs_error;
    d["ref_max_abs"] = c.ref_max_abs;
    d["top1_agreement"] = c.top1_agreement ? py::cast(*c.top1_agreement) : py::none();
    d["ref_top1"] = c.ref_top1 ? py::cast(*c.ref_top1) : py::none();
    d["top1"] = c.top1 ? py::cast(*c.top1) : py::none();
    out.append(d);
  }
  return out;
}

// Images of a data set SPEC (as the command line's --data) made into `model`'s inputs by the
// preprocessing its metadata names; labels when the set has them.
py::tuple load_images(const std::string& spec, const Model& model, const std::string& split, int64_t limit) {
  Dataset data = load_dataset(spec, "", split);
  const Graph& g = model.graph();
  check(g.inputs.size() == 1, "load_images: the model must have one input");
  int64_t n = limit > 0 ? std::min(limit, data.size()) : data.size();
  Tensor x = make_batch(data, 0, n, preprocess_from_metadata(g), g.value(g.inputs[0]).shape);
  py::object labels = py::none();
  if (data.labelled()) {
    py::array_t<int64_t> l(n);
    std::copy(data.labels.begin(), data.labels.begin() + n, l.mutable_data());
    labels = l;
  }
  return py::make_tuple(to_array(x), labels);
}

}  // namespace
}  // namespace tern::python

PYBIND11_MODULE(_tern, m) {
  using namespace tern::python;
  m.doc() = "tern's compiled core (see the tern package)";
  static py::exception<tern::Error> error(m, "Error", PyExc_RuntimeError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const tern::Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });
  py::class_<Model>(m, "Model")
      .def("run", &Model::run, py::arg("x"), py::arg("engine") = "simulated")
      .def("set_level", &Model::set_level, py::arg("level"))
      .def_property_readonly("level", &Model::level)
      .def_property_readonly("max_level", &Model::max_level)
      .def_property_readonly("quantized", &Model::is_quantized)
      .def_property_readonly("path", &Model::path)
      .def("save", &Model::save, py::arg("path"))
      .def("export", &Model::export_onnx, py::arg("path"))
      .def("inspect", &Model::inspect);
  m.def("load", &Model::load, py::arg("path"), py::arg("level") = std::optional<int>());
  m.def("quantize", &quantize, py::arg("onnx_path"), py::arg("calib") = py::none(), py::arg("drop_images") = py::none(),
        py::arg("drop_labels") = py::none());
  m.def("compare", &compare, py::arg("reference"), py::arg("model"), py::arg("x"), py::arg("labels") = py::none());
  m.def("load_images", &load_images, py::arg("spec"), py::arg("model"), py::arg("split") = "test", py::arg("limit") = 0);
}
