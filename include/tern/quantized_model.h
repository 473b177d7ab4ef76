// A post-training-quantized model: the FP32 graph plus, for every quantized Conv/Gemm, its weight
// codes and group scales, its int32 bias and how its input activations become integer codes.
//
// quantize_model() makes one from an FP32 graph (plan, weights, activation calibration);
// simulation_graph() turns it back into an ordinary graph the FP32 executor runs with exact
// quantized values: weights are the dequantized codes (alpha_g * q), biases the int32 values times
// their scale, and a FakeQuantize node rounds every quantized layer's input to its integer grid.
// Only the accumulation is float instead of integer. save_quantized_model() / load_quantized_model()
// store it in a .tern file with codes packed at 1, 2, 4 or 8 bits (see docs/tern-format.md).
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tern/calibration.h"
#include "tern/executor.h"
#include "tern/graph.h"
#include "tern/quant_plan.h"
#include "tern/residual.h"
#include "tern/tensor.h"
#include "tern/tern_file.h"
#include "tern/thread_pool.h"
#include "tern/weight_quantization.h"

namespace tern::quant {

// How activation scales are chosen.
enum class ActivationMode {
  kCalibrated,  // from calibration images (histograms, see calibration.h)
  kDynamic,     // data-free: per image at run time from its max |x| (dynamic fixed point)
  kBatchNorm,   // data-free: from BatchNorm statistics where the model has them, else dynamic
};

// How one quantized layer's input activations become integer codes.
struct ActivationQuant {
  int bits = 8;               // 2..8
  bool is_unsigned = false;   // [0, 2^b - 1] (the input is provably >= 0, e.g. after a ReLU)
  int32_t zero_point = 0;     // unsigned, static: asymmetric codes, x ~= (code - zero_point) * scale
  bool power_of_two = false;  // dynamic fixed point: the scale is a power of two
  bool dynamic = false;       // scale chosen per image at run time; scale/threshold unused
  bool per_token = false;     // dynamic only: a scale per token (per slice along the last axis)
  float scale = 0.0f;         // static: x ~= code * scale
  float threshold = 0.0f;     // the clipping point the scale was derived from
  std::string source;         // how: "percentile 99.99", "minmax", "batchnorm", "input range", "dynamic"
};

// One quantized Conv/Gemm layer. Weights are in the canonical layout of weight_quantization.h.
struct QuantizedLayer {
  std::string node;          // the Conv/Gemm node
  std::string weight_value;  // its weight input (materialized as dequantized FP32 in the graph)
  std::string bias_value;    // its bias input, or "" when it has none
  WeightQuantConfig config;
  // The weight expansion W ~= sum_j terms[j]; one term for plain quantization (the residual
  // expansion adds terms). Every term shares the grouping of terms[0]. terms[1..] are residual
  // edge sets listed in QuantizedModel::edges; the model's level decides how many are in use.
  std::vector<QuantizedWeights> terms;
  int active_terms = 1;  // terms[0 .. active_terms) make the weights at the current level
  std::optional<ActivationQuant> input;  // nullopt: the input stays float32
  // int32 bias at bias_scale[o] = input scale * reference weight scale of filter o (static
  // activation scales only; with dynamic ones the bias stays float32 in the graph).
  std::vector<int32_t> bias;
  std::vector<float> bias_scale;
  std::string reason;        // why this precision ("default", "first layer (int8)", "config: ...")

  // Measured when quantized (stored for the report).
  double weight_sqnr_db = 0;                 // of the whole expansion against the FP32 weights
  std::optional<double> output_sqnr_db;      // layer output, simulated vs FP32, on the calibration batch
  int64_t out = 0, in = 0, taps = 0;         // canonical weight dims
  int64_t outputs_per_image = 0;             // output values per image (out * spatial)

  int64_t macs_per_image() const { return outputs_per_image * in * taps; }
  // Multiplications left per image at the current level: one per group per active term (two for
  // asymmetric ternary) for ternary/binary codes, every MAC for integer and float weights (FGQ's count).
  int64_t multiplies_per_image() const;
  double zero_fraction() const;  // of the base term's codes
};

// A residual edge set: term `term` (>= 1) of layer `layer`.
struct ResidualEdge {
  std::string layer;
  int term = 1;
  int64_t bytes = 0;  // its stored codes and scales
  double gain = 0;    // estimated output distortion it removes (the ranking's estimate)
};

// One input of a node without weights quantized like a layer's: both operands of an attention
// MatMul (activation by activation: Q x K^T, softmax x V) with --attention int8.
struct QuantizedInput {
  std::string node;
  int input = 0;  // which operand
  ActivationQuant quant;
};

struct QuantizedModel {
  Graph graph;  // FP32 graph; quantized layers' weights and biases hold their dequantized values
  std::vector<QuantizedLayer> layers;        // quantized layers, in graph order
  std::vector<QuantizedInput> inputs;        // operands of weightless nodes, in graph order
  std::vector<LayerPlan> plan;               // every Conv/Gemm, quantized or kept float
  // Residual edge sets, most important first: level k runs every layer's term 0 plus the first k.
  // A layer's edges appear in term order (term j only after term j - 1).
  std::vector<ResidualEdge> edges;
  int level = 0;  // edges in use (0 .. max_level())
  std::string provenance_json = "{}";
  // Whether `graph` holds the quantized layers' dequantized weights. A model loaded for the
  // integer engine alone (LoadOptions::float_weights false) holds zero placeholders that cost no
  // memory instead; dequantize_weights() makes them real.
  bool float_weights = true;

  const QuantizedLayer* find(const std::string& node) const;
  int max_level() const { return static_cast<int>(edges.size()); }
};

// Switches the model to `level` (0 .. max_level()): each layer's active_terms and its dequantized
// weights in `graph` follow (without float weights: only active_terms). Returns the weight values
// that changed. Throws Error for a level outside the stored range.
std::vector<std::string> set_level(QuantizedModel& model, int level);
// Puts every quantized layer's dequantized weights (its active terms summed) into the graph of a
// model loaded without them; nothing when it has them.
void dequantize_weights(QuantizedModel& model);
// The dequantized weights of a layer's active terms, summed (canonical layout).
Tensor active_weights(const QuantizedLayer& layer, const Shape& shape);
// Quantizes a layer's FP32 bias to int32 at bias_scale[o] = input scale * the largest group scale of
// filter o's base term (so the integer runtime adds it to the accumulator unscaled); fills
// layer.bias and layer.bias_scale and returns the dequantized bias the simulation uses. Empty
// (nothing stored) for a layer without static input scale. The one bias quantizer: quantize_model
// and fine-tuning call it.
std::vector<float> quantize_layer_bias(QuantizedLayer& layer, std::span<const float> bias);

// Runs a quantized model (its simulation graph) and switches residual levels between runs without
// reloading: set_level() rewrites only the weights of the layers whose edges change, from the
// codes already in memory. (The integer runtime will instead skip disabled terms' codes.)
class QuantizedSession {
 public:
  explicit QuantizedSession(QuantizedModel model, ExecutorOptions options = {});
  void set_level(int level);  // takes effect at the next run(); throws Error for a level out of range
  int level() const { return model_.level; }
  int max_level() const { return model_.max_level(); }
  const QuantizedModel& model() const { return model_; }
  Executor& executor() { return executor_; }
  std::vector<Tensor> run(std::span<const Tensor> inputs) { return executor_.run(inputs); }
  Tensor run(const Tensor& input) { return executor_.run(input); }

 private:
  QuantizedModel model_;
  Executor executor_;
};

struct QuantizeOptions {
  PlanOptions plan;
  std::optional<std::string> config_json;  // precision plan (quant_plan.h)
  std::string config_name = "config";
  ActivationMode activation_mode = ActivationMode::kCalibrated;
  CalibrationMethod calibration = CalibrationMethod::kPercentile;
  double percentile = 99.99;
  // Per-layer choice (--calibration auto): every method's range (minmax, percentile 99.9 / 99.99 /
  // 99.999, mse, entropy) is tried on up to choice_images calibration images and each layer input
  // keeps the one giving its layers the least output error; `calibration` is then unused.
  bool choose_calibration = false;
  int64_t choice_images = 128;
  bool power_of_two = false;      // power-of-two activation scales (dynamic fixed point)
  // Calibrated inputs that may be negative take asymmetric codes (unsigned with a zero point) where
  // their step is at least 10 % finer than symmetric signed codes' (a SiLU's or HardSwish's short
  // negative side); false keeps every such input symmetric.
  bool asymmetric = true;
  // Attention MatMuls (both operands computed, none a weight) get static activation codes on both
  // operands, calibrated like a layer's input, at plan.activation_bits (--attention int8).
  bool quantize_attention = false;
  // Gemm (fully connected) layers quantize their input with a dynamic scale per row (--token-scales):
  // per token for a transformer's linear layers on [N, T, K] (or flattened [T * N, K]) tokens, per
  // image for [N, K]; each row's max |x| at run time.
  bool per_token_scales = false;
  // Output-aware rounding (output_aware.h) from the calibration images' input covariances; plain
  // per-group quantization of the weights alone when false or without images.
  bool output_aware = false;
  double damping = 0.01;
  // Before anything else, function-preserving rescalings (tern/equalization.h): cross-layer
  // equalization of Conv/Gemm pairs (--equalize), and SmoothQuant's migration of activation
  // outliers into the weights of Gemm layers after a per-channel affine map, with this alpha
  // (--smooth ALPHA; needs calibration images). The stored FP32 graph is the rescaled one.
  bool equalize = false;
  std::optional<double> smooth_alpha;
  // Empirical bias correction (Nagel et al. 2019) on up to bias_correction_images calibration
  // images: each layer's bias absorbs the shift quantization gives its mean output per channel.
  bool bias_correction = false;
  int64_t bias_correction_images = 256;
  // Layers with more inputs per output (in * taps) keep per-group rounding: H takes (in*taps)^2
  // doubles and its inverse O((in*taps)^3) time (2048: 32 MB, a few seconds).
  int64_t output_aware_max_inputs = 2048;
  // Residual edges (residual.h): with a budget, every ternary layer is expanded to up to
  // residual_max_terms ternary terms, and the upgrades (next terms, int8 fallbacks) are ranked and
  // taken until the budget is spent. The stored edges define levels 0 .. max_level (the default).
  ResidualBudget residual;
  ResidualRanking residual_ranking = ResidualRanking::kMeasured;  // kMeasured needs calibration images
  int residual_max_terms = 3;
  bool residual_fallback = true;        // offer int8 per-channel weights as an upgrade of ternary layers
  int64_t sensitivity_images = 256;     // calibration images the measured ranking runs per layer
  uint64_t residual_seed = 1;           // kRandom
  // kDrop (--max-drop): every quantized layer may be upgraded (int8 weights, float32 as a last
  // resort), and the drop is measured on `drop_images`, never used for calibration: the first half
  // chooses how many upgrades, the second half estimates the drop of that choice. Not owned; must
  // outlive the call. `drop_labels` (one per image, for [N, classes] outputs): the drop in top-1
  // accuracy; without them, the share of top-1 predictions that differ from FP32's.
  const Tensor* drop_images = nullptr;
  std::vector<int64_t> drop_labels;
  int histogram_bins = 2048;
  int64_t batch = 64;             // images per calibration run
  // The CLI's progress bar; may be empty. Called with a stage and how much of it is done:
  // "calibrating" (images), "measuring sensitivities" (layers, accuracy budgets) and
  // "searching --max-drop" (drop measurements; the total is an upper bound).
  std::function<void(const std::string& stage, int64_t done, int64_t total)> progress;
  bool input_non_negative = false;  // the graph input is >= 0 (unsigned codes for the first layer)
  // The exact max |x| of the graph input when known (pixels 0..255 through the normalization).
  // Layers reading the graph input then use it in every mode but dynamic: clipping a known, bounded
  // input gains nothing, and histogram methods misjudge an image's spike at the background value.
  std::optional<float> input_threshold;
  // kBatchNorm: data-free thresholds by value name, with where each came from (see
  // batchnorm_ranges.h); layer inputs not listed get dynamic scales.
  std::map<std::string, std::pair<float, std::string>> static_thresholds;
  // Activation quantization taken as given, by layer (node) name, in every mode: fine-tuning keeps
  // the scales it calibrated and trained with.
  std::map<std::string, ActivationQuant> fixed_activations;
};

// Quantizes a (passes-optimized) FP32 graph. `calibration` holds normalized images [n, ...] for
// kCalibrated (and for the per-layer output SQNR in any mode); it may be null for the data-free
// modes. Throws Error for a bad plan or options, or calibration data that does not fit the model.
QuantizedModel quantize_model(const Graph& graph, const QuantizeOptions& options, const Tensor* calibration,
                              ThreadPool* pool = nullptr);

// Values per image of a layer output: the product of every dim but the batch, which is the one
// dynamic dim wherever it stands (a sequence-first [T, N, D] attention projection), else dim 0.
// Nullopt when more than one dim is dynamic or the count overflows.
std::optional<int64_t> values_per_image(const Shape& shape);

// The executable simulation of the quantized model (see the file comment). A model without its
// float weights throws Error, unless `placeholders` says the caller runs the quantized layers
// some other way (the integer engine) and wants the graph for everything else.
enum class Placeholders { kRejected, kAccepted };
Graph simulation_graph(const QuantizedModel& model, Placeholders placeholders = Placeholders::kRejected);

// Per-layer output SQNR (dB) of the simulated model against the FP32 `reference` graph on `images`,
// indexed like model.layers (nullopt where the reference output is all zero).
std::vector<std::optional<double>> output_sqnr(const QuantizedModel& model, const Graph& reference,
                                               const Tensor& images, int64_t batch = 64, ThreadPool* pool = nullptr);

// Stored sizes, in bytes, of everything needed to run the model: packed codes, scales, biases and
// every float constant left in the graph. fp32 and int8 are the same graph with every Conv/Gemm
// at float32, and at int8 per output channel (the usual 8-bit baseline).
struct ModelSize {
  int64_t quantized = 0, fp32 = 0, int8 = 0;  // quantized: at the current level
  int64_t stored = 0;                          // quantized with every stored residual edge
  int64_t macs_per_image = 0;        // Conv/Gemm multiply-accumulates
  int64_t multiplies_per_image = 0;  // left after quantization (FGQ's count)
  double mults_eliminated() const {
    return macs_per_image ? 1.0 - static_cast<double>(multiplies_per_image) / static_cast<double>(macs_per_image) : 0.0;
  }
};
ModelSize model_size(const QuantizedModel& model);
// Bytes of one layer's weights (codes, scales) and bias: of its active terms, or of every stored term.
int64_t layer_bytes(const QuantizedLayer& layer, bool all_terms = false);
// Bytes of one term's codes and scales.
int64_t term_bytes(const QuantizedWeights& term, const WeightQuantConfig& config);

// Bits each stored code takes: 1 (binary), 2 (ternary, int2), 4 (int3, int4) or 8 (int5 .. int8).
int code_field_bits(WeightFormat format, int bits);
// Codes packed little-endian: code i in bits [(i % k) * w, (i % k + 1) * w) of byte i / k, with
// w = code_field_bits and k = 8 / w, as w-bit two's complement (binary: 1 = +1, 0 = -1).
std::vector<uint8_t> pack_codes(const std::vector<int8_t>& codes, WeightFormat format, int bits);
// Throws Error (naming `what`) for a code the format cannot hold (e.g. 0b10 in a ternary field).
std::vector<int8_t> unpack_codes(const uint8_t* packed, size_t packed_bytes, int64_t count, WeightFormat format,
                                 int bits, const std::string& what);

// .tern storage: the graph (quantized weights and int32 biases stored once, packed, not as FP32),
// a kQuantization section describing every layer, and provenance. Atomic write.
void save_quantized_model(const std::string& path, const QuantizedModel& model);
std::vector<std::byte> serialize_quantized_model(const QuantizedModel& model);
struct LoadOptions {
  // false: the graph's quantized weights are zero placeholders (QuantizedModel::float_weights), for
  // the integer engine, which runs the codes: its peak memory at load was the float weights (four
  // bytes a weight: 102 MB for a ResNet-50 whose ternary file is 14 MB).
  bool float_weights = true;
};
// Validates everything (see tern_file.h and model_io.h) and rebuilds the dequantized weights.
QuantizedModel load_quantized_model(const TernFile& file, const LoadOptions& options = {});
QuantizedModel load_quantized_model(const std::string& path, const LoadOptions& options = {});
bool is_quantized(const TernFile& file);

// Text and names used by the CLI and reports.
std::string describe_weights(const QuantizedLayer& layer);  // "ternary fgq N=4", "int8 per-channel", ...
std::string describe_activation(const ActivationQuant& a);  // "u8 2^-5 (percentile 99.99)", ...
const char* activation_mode_name(ActivationMode mode);
ActivationMode parse_activation_mode(const std::string& name);  // calibrated | dynamic | batchnorm

}  // namespace tern::quant
