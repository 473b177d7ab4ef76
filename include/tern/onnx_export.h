// tern export: a quantized model as a standard QDQ ONNX model that other runtimes (ONNX Runtime,
// OpenVINO, TensorRT) load and run with their own int8 kernels.
//
// The model written is the simulation graph of the model at its current level
// (quant::simulation_graph), operator by operator at opset 17 (each operator's record writes it,
// src/ops/), with:
//   - every quantized layer's weights as int8 values times a float step per output channel
//     (DequantizeLinear, axis 0, zero point 0). Ternary codes times their group's 7-bit unit, int4
//     and int8 codes are all such integers, so the ONNX weights equal tern's quantized weights;
//     several active residual terms are folded into one integer tensor where they share each
//     filter's step and fit int8, else written as the float sum;
//   - its bias as int32 at the input scale times the weight step (what ONNX Runtime's QDQ fusion
//     expects);
//   - every FakeQuantize as QuantizeLinear -> DequantizeLinear at its scale and zero point.
// Where ONNX cannot state what tern computes, the report says so (notes): ONNX rounds x / scale
// half to even, tern half away from zero (codes differ by one at exact ties); s8 codes saturate at
// -128 in ONNX, -127 in tern; a dynamic activation scale stays float32; a layer without an exact
// integer form keeps float weights. check_export measures the difference on given inputs.
#pragma once

#include <string>
#include <vector>

#include "tern/quantized_model.h"
#include "tern/tensor.h"

namespace tern {

struct OnnxExportReport {
  int64_t opset = 0;                // of the default domain
  int64_t nodes = 0;                // ONNX nodes written
  int64_t int8_layers = 0;          // quantized layers with int8 weights + DequantizeLinear
  int64_t float_layers = 0;         // quantized layers written with float32 weights (see notes)
  int64_t quantized_activations = 0;  // QuantizeLinear -> DequantizeLinear pairs
  std::vector<std::string> notes;   // where the ONNX model does not compute exactly what tern does
};

// The model as ONNX bytes (a serialized ModelProto that passes onnx::checker). Throws Error
// naming the node for an operator with no ONNX form at opset 17.
std::string qdq_onnx_bytes(const quant::QuantizedModel& model, OnnxExportReport* report = nullptr);
// A float graph (an FP32 .tern) as ONNX bytes, the same way.
std::string graph_onnx_bytes(const Graph& graph, OnnxExportReport* report = nullptr);

// How far the exported model's outputs are from tern's simulation on `inputs` (one batch for the
// model's single input), both run by tern's executor (the ONNX file re-imported).
struct ExportCheck {
  double max_abs_diff = 0;      // over every output value
  double max_abs_reference = 0; // the largest |value| tern's simulation gives
  int64_t values = 0;
  int64_t differing = 0;        // values that are not bit-identical
};
ExportCheck check_export(const Graph& simulation, const std::string& onnx_bytes, const Tensor& inputs);

}  // namespace tern
