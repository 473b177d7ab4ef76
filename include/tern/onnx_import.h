// ONNX import: reads a model with the ONNX project's own protobuf classes (libonnx) and builds
// tern's graph IR, with shapes inferred and, by default, the standard passes applied.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "tern/graph.h"
#include "tern/passes.h"
#include "tern/tensor.h"

namespace tern {

struct ImportOptions {
  bool optimize = true;  // run the default passes (see passes.h)
  std::vector<InputShape> input_shapes;  // fix these inputs' dims before shapes are inferred
};

// Throws Error ("PATH: problem") for a missing, unreadable, truncated or non-ONNX file, an
// unsupported operator (naming the op type and the node), or shapes that do not fit.
Graph import_onnx(const std::string& path, const ImportOptions& options = {});
Graph import_onnx_bytes(std::string_view bytes, const std::string& source_name, const ImportOptions& options = {});

// Reads a serialized onnx.TensorProto (the input_N.pb / output_N.pb files of ONNX's node tests).
Tensor read_onnx_tensor(const std::string& path);

// Operator types the importer accepts (ONNX op_type names), for messages and documentation.
const std::vector<std::string>& supported_onnx_operators();

// Writes the ONNX model `source_path` again to `out_path` with the float32 initializers named in
// `replacements` given new values (what fine-tuning produces): same element count; a 2-D tensor
// whose stored dims are the transpose of the new one's is written transposed back (tern's IR
// stores Gemm weights [out][in]; a square one cannot be told apart and is written as given).
// Every other byte of the model (graph, metadata, opsets) is kept; `metadata` entries are added to
// metadata_props (replacing equal keys). Atomic: a temporary file, then rename. Throws Error naming
// the file and the initializer when a name is not an initializer of the main graph, is not
// float32, or its size differs.
void write_onnx_with_initializers(const std::string& source_path, const std::string& out_path,
                                  const std::map<std::string, Tensor>& replacements,
                                  const std::map<std::string, std::string>& metadata = {});

}  // namespace tern
