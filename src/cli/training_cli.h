// What the training commands share (finetune_command.cpp, train_command.cpp).
#pragma once

#include <map>
#include <set>
#include <string>

#include "core/file_io.h"
#include "tern/error.h"
#include "tern/graph.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"
#include "tern/tensor.h"

namespace tern::cli {

inline bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Trained values by ONNX initializer name. Gemm weights the import transposed to [out][in]
// ("<node>.weight_transposed") go back to the initializer the node read, transposed back.
inline std::map<std::string, Tensor> onnx_replacements(const Graph& raw, const std::map<std::string, Tensor>& trained,
                                                const std::string& path) {
  std::set<std::string> initializers;
  for (const Value& v : raw.values)
    if (v.constant) initializers.insert(v.name);
  std::map<std::string, Tensor> out;
  const std::string kTransposed = ".weight_transposed";
  for (const auto& [name, value] : trained) {
    if (initializers.count(name)) {
      out[name] = value;
      continue;
    }
    bool mapped = false;
    if (ends_with(name, kTransposed) && value.rank() == 2) {
      std::string node = name.substr(0, name.size() - kTransposed.size());
      for (const Node& n : raw.nodes)
        if (n.name == node && n.inputs.size() > 1 && initializers.count(raw.value(n.inputs[1]).name)) {
          Tensor t(DataType::kFloat32, {value.dim(1), value.dim(0)});
          for (int64_t i = 0; i < value.dim(0); ++i)
            for (int64_t j = 0; j < value.dim(1); ++j) t.data<float>()[j * value.dim(0) + i] = value.data<float>()[i * value.dim(1) + j];
          out[raw.value(n.inputs[1]).name] = t;
          mapped = true;
        }
    }
    check(mapped, path + ": trained value '" + name + "' is not an initializer of the ONNX model (cannot write the fine-tuned ONNX)");
  }
  return out;
}


// A model as training sees it: `raw` as imported (to write the trained ONNX against), `graph` with
// the usual passes except BatchNorm folding and activation fusion (BatchNorm trains as a node).
struct TrainingModel {
  std::string bytes;
  Graph raw, graph;
};
inline TrainingModel load_training_model(const std::string& path, const std::vector<InputShape>& shapes = {}) {
  TrainingModel m;
  m.bytes = read_whole_file(path);
  ImportOptions raw_import;
  raw_import.optimize = false;
  raw_import.input_shapes = shapes;
  m.raw = import_onnx_bytes(m.bytes, path, raw_import);
  m.graph = m.raw;
  optimize(m.graph, OptimizeOptions{.fold_batchnorm = false, .fuse_activations = false});
  return m;
}

}  // namespace tern::cli
