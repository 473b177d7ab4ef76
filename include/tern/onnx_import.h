// ONNX import: reads a model with the ONNX project's own protobuf classes (libonnx) and builds
// tern's graph IR, with shapes inferred and, by default, the standard passes applied.
#pragma once

#include <string>
#include <string_view>

#include "tern/graph.h"
#include "tern/tensor.h"

namespace tern {

struct ImportOptions {
  bool optimize = true;  // run the default passes (see passes.h)
};

// Throws Error ("PATH: problem") for a missing, unreadable, truncated or non-ONNX file, an
// unsupported operator (naming the op type and the node), or shapes that do not fit.
Graph import_onnx(const std::string& path, const ImportOptions& options = {});
Graph import_onnx_bytes(std::string_view bytes, const std::string& source_name, const ImportOptions& options = {});

// Reads a serialized onnx.TensorProto (the input_N.pb / output_N.pb files of ONNX's node tests).
Tensor read_onnx_tensor(const std::string& path);

// Operator types the importer accepts (ONNX op_type names), for messages and documentation.
const std::vector<std::string>& supported_onnx_operators();

}  // namespace tern
