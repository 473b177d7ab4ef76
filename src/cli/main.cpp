// tern: the command-line tool. A thin layer over the library: parse options, call the API, print.
// Every failure is one line on stderr ("tern: <input>: <problem>") and a non-zero exit code.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/args.h"
#include "cli/entry.h"
#include "core/file_io.h"
#include "kernels/cpu_features.h"
#include "tern/batchnorm_ranges.h"
#include "tern/compare.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/evaluate.h"
#include "tern/executor.h"
#include "tern/integer_executor.h"
#include "tern/limits.h"
#include "tern/model_io.h"
#include "tern/onnx_export.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"
#include "tern/quantized_model.h"

namespace {

using tern::check;
using tern::Error;


const char* kUsage = R"(usage: tern <command> [options]

MODEL is an ONNX file or a .tern file (FP32, or quantized by 'tern quantize': run as an exact
simulation of its quantized values).

commands:
  quantize IN.onnx -o OUT.tern [--weights ternary|binary|int2..int8|float32] [--method fgq|fgq-asym|twn|tnt|cluster]
             [--group N|channel|tensor] [--acts 8|4|float] [--act-scale real|pow2] [--act-codes auto|symmetric]
             [--attention float|int8] [--token-scales] [--calibration percentile|minmax|mse|entropy|auto] [--percentile P] [--calib-images N]
             [--data SPEC [--labels Y.npy]] [preprocessing] [--data-free dynamic|batchnorm] [--config PLAN.json] [--all-layers]
             [--rounding output|weight] [--group-scales u8|log8|f32] [--eval] [--json]
             [--residual size:BYTES|size:P%|edges:K|drop:PP|all] [--residual-ranking measured|weights|uniform|random]
             [--residual-max-terms K] [--fallback int8|none] [--sensitivity-images N] [--seed S] [--residual-terms K]
             [--max-drop PP [--drop-images N] [--drop-data SPEC [--drop-labels Y.npy]]] [--bias-correction]
             [--equalize] [--smooth ALPHA]
      post-training quantization. Defaults: ternary fgq N=4 weights, 8-bit activations calibrated
      on the first 512 training images of --data (default: the data set the model's metadata
      names, tern.dataset; the bundled models name fashion-mnist) at the 99.99th percentile; first
      and last layers int8, and under weights below 8 bits depthwise layers too (--all-layers
      quantizes them like the rest). The model input's range is
      proved from the preprocessing for pixels, measured on the calibration batch for float arrays
      (inputs outside it are clipped), never assumed.
      --rounding output (default with images): codes chosen to minimize each layer's output error
      on the calibration images (GPTQ-style error feedback), keeping the method's group scales;
      weight: each group alone minimizes its weight error (the papers' post-training methods).
      --group-scales u8 (default): fine-grained group scales as 7-bit multiples (0..127) of one float32 step
      per filter; log8: 8-bit codes on a logarithmic grid below the filter's largest scale
      (2^(k/16) steps); f32: every group scale float32.
      --calibration auto: per layer input, every method's range (minmax, percentile 99.9, 99.99,
      99.999, mse, entropy) is tried on 128 calibration images; the one giving the layers that read
      it the least output error (their quantized weights, against FP32) is kept.
      --attention int8: attention MatMuls (both operands computed: Q x K^T, softmax x V) quantize
      both operands like a layer's input, at the --acts bits (default float: they stay float32).
      --token-scales: Gemm (fully connected) layers quantize their input with a scale per row chosen
      at run time from its max |x|: per token for a transformer's linear layers (outlier tokens).
      --act-codes auto (default): a calibrated input that may be negative gets asymmetric u8 codes
      with a zero point where their step is at least 10 % finer than symmetric s8's (the short
      negative side of SiLU, HardSwish, GELU); symmetric: s8 codes for every such input.
      --equalize: cross-layer equalization (Nagel et al. 2019) first: in each Conv/Gemm pair joined
      by nothing or a ReLU, output channel i of the first is divided by s_i and the second's
      weights reading it multiplied by s_i, so both have range sqrt(r1 r2) (the FP32 function is
      unchanged).
      --smooth ALPHA: SmoothQuant (Xiao et al. 2023) first: the input channels of Gemm layers after
      a per-channel affine map (a LayerNorm's gamma and beta) are divided by
      max|x_j|^ALPHA / max|w_j|^(1-ALPHA), measured on the calibration images, and the weights
      multiplied by it: activation outliers move into the per-channel weight scales (0.5 usual).
      --bias-correction: empirical bias correction (Nagel et al. 2019): every layer's bias absorbs
      the shift quantization gives its mean output per channel on 256 calibration images.
      --residual BUDGET: ternary residual edges. Every ternary layer is expanded into up to
      --residual-max-terms (default 3) ternary terms, each quantizing what the previous ones left;
      the extra terms ("edge sets") and int8 fallbacks are ranked by estimated output error removed
      per byte and taken until the budget: the total size in bytes (k/M suffixes) or in % of the
      int8 model, K upgrades, drop:PP (= --max-drop PP), or all that help. Ranking: measured (default with images: per-layer sensitivity on calibration
      images), weights (data-free: from the weights alone), uniform, random (baselines). The file
      stores the edges in importance order: level k = the first k (see --level).
      --residual-terms K: shorthand for every ternary layer with K terms (--residual all, uniform).
      --max-drop PP: accuracy-driven precision. Every quantized layer's sensitivity is measured on
      calibration images; the upgrades (ternary residual edges, int8 weights for layers below 8
      bits, float32 as a last resort) are ranked, and the fewest are taken whose top-1 drop on
      held-out images is within PP points by one standard error. The held-out images
      (--drop-images, default 10000 or 1 GB of inputs) are never calibrated on: half choose, the
      other half estimate the drop, which is reported (with its standard error) and stored. They
      come from --drop-data SPEC (a validation set, any --data form; --drop-labels for an .npy
      array; an IDX directory's train split), else from --data after the calibration images (at
      most half of it). Give --drop-data when the model was trained on --data: a drop measured
      on images the model has seen is smaller than on new ones. With labels the drop is in accuracy; without, or for [N, ..., classes]
      outputs (a recogniser), it is the share of top-1 predictions that change from FP32's.
      --data-free: no images; activation scales per image at run time (dynamic) or from BatchNorm
      statistics where the model has them. --eval: also evaluate FP32 and quantized on the test set.
  eval MODEL --data SPEC [--labels Y.npy] [--split test|train] [--limit N] [--batch B] [--json]
             [preprocessing] [--level K|max|all] [--engine simulated|integer] [--verbose]
      top-1/top-5 accuracy and images/s. A quantized model adds its per-layer table.
      --level all evaluates every residual level of one loaded model, switching between them.
      --engine integer runs a quantized model's Conv/Gemm layers on the integer kernels (default:
      simulated, FP32 kernels on the exact quantized values); --verbose names each layer's kernel
      and, in the fused integer program, every step in order.
  compare REFERENCE MODEL --data SPEC [--labels Y.npy] [--limit N] [--batch B] [--layer-images N]
             [preprocessing] [--level K|max] [--engine simulated|integer] [--json]
      how far MODEL's outputs are from REFERENCE's (an FP32 .onnx or .tern) on the same inputs
      (default the first 1000): per output SQNR, cosine, max error, top-1 agreement where the output
      looks like scores (argmax over dim 1), accuracy when the data have labels. For a quantized
      MODEL also per layer, worst first (on --layer-images, default 64; 0: skip): the model output's
      SQNR with only that layer quantized ("alone"), and that layer's output SQNR in MODEL
      ("accumulated"). REFERENCE is the model MODEL was quantized from.
  run MODEL --input X.npy|IMAGE --output Y.npy [--level K|max] [--engine simulated|integer] [preprocessing]
      runs the model and writes the first output. A JPEG/PNG file or a uint8 array is pixels (made
      into the model input by the preprocessing); any other array is the model input as it is.
  inspect MODEL [--json] [--level K|max]
      layers, output shapes, parameters and multiply-accumulates per layer, totals; for a quantized
      model also its per-layer quantization table, sizes and residual levels (JSON: "quantization").
  bench MODEL [--batch B] [--seconds S] [--json] [--profile] [--level K|max] [--engine simulated|integer] [--switch-levels]
             [--verbose]
      end-to-end images/s on random inputs; --profile adds time per layer (on stderr).
      --switch-levels (integer engine, a residual model): the cost of switching levels between
      runs, alternating level 0 and every edge: set_level and the first run after it, beside the
      steady runs at each level.
  export MODEL -o OUT.onnx [--level K|max] [--json]
      writes the model as standard ONNX (opset 17) for other runtimes: a quantized model as QDQ
      (int8 weights times a step per output channel behind DequantizeLinear, int32 biases, each
      quantized activation as QuantizeLinear -> DequantizeLinear), which ONNX Runtime runs with its
      int8 kernels. Ternary and int4 weights are written as the int8 values they are (codes times
      group units). Then re-reads the file and runs it beside tern's simulation on random inputs:
      prints where ONNX cannot state what tern computes and the largest output difference.

  SPEC (--data): a folder of JPEG/PNG images, one sub-folder per class (ImageNet layout; sorted
  names are labels 0, 1, ...) or the images alone (unlabelled: calibration); fashion-mnist
  (Debian's copy) or an IDX directory (--split); or an .npy array (--labels Y.npy for labels).
  Pixels (image files, IDX, uint8 arrays) go through the preprocessing; float arrays are model
  inputs as they are. preprocessing, in this order (from the model's metadata_props tern.<key>,
  flags override; quantize stores them in the .tern file):
      --channels rgb|bgr|grey   order (default: as stored; grey replicated for a 3-channel model)
      --resize HxW|S|Hx         exact, shorter side S (torchvision's Resize(S)), or height H with
                                the width by aspect ratio; bilinear, antialiased when shrinking (PIL)
      --crop HxW|S              center crop (zero-padded when larger than the image)
      --scale S --mean M[,M..] --std S[,S..]   input = (pixel * S - mean[c]) / std[c] (S: 1/255)
      --pad HxW                 pad bottom/right with 0 after normalization (a larger image is
                                squeezed to fit)
      --layout nchw|nhwc        the model input's layout (default nchw)

  Every command also takes --input-shape [NAME=]DIMS (repeatable; NAME may be left out when the
  model has one input): fixes a model input's dimensions before shapes are inferred, e.g.
  x=Nx3x48x320 (a name such as N or ? keeps that dimension dynamic; x or commas separate them).
  Without it, dynamic dimensions take the size of the data given (eval, run, quantize); bench
  needs every dimension but the batch.

  Every command also takes --max-memory SIZE (e.g. 8G): the most memory a model, data set or run
  may plan to use (default: TERN_MAX_MEMORY, else 3/4 of physical memory); larger plans are refused
  before anything is allocated.

  --level K: run a quantized model with its K most important residual edge sets (0: base terms
  only; default: the level it was saved at, normally max).
  finetune IN.onnx -o OUT.tern [--weights ternary:N|int4|int8|...] [--acts 8|4] [--epochs E] [--batch B]
             [--lr LR] [--lr-final LR] [--schedule exp|cosine|step] [--momentum M] [--weight-decay WD] [--label-smoothing S]
             [--data fashion-mnist|DIR|X.npy --labels Y.npy] [--train-images N] [--calib-images N]
             [--percentile P] [--seed S] [--threads T] [--checkpoint PATH] [--checkpoint-every STEPS]
             [--resume CKPT] [--onnx-out PATH] [--steps N] [--gradient-noise K] [--all-layers] [--no-augment]
             [--no-progress] [--eval] [--json]
      fine-tuning after quantization (FAQ) on libtorch: quantize (activations at the 99.99th
      percentile for 8 bits, 99.9th for 4, rounded up to a power of two; first and last layers
      int8 unless --all-layers), then train with fake quantization and straight-through gradients,
      momentum SGD, an annealed learning rate (default exp from LR to LR/1000) and BatchNorm
      trainable (running statistics frozen), folded at the end. Writes OUT.tern and the fine-tuned
      FP32 model (--onnx-out, default OUT.onnx). Checkpoints every epoch (or every STEPS steps) to
      --checkpoint (default OUT.tern.ckpt, removed when the run completes); --resume continues one
      exactly. Deterministic for a seed with --threads 1. --eval: test top-1 of FP32, PTQ, FAQ
      (simulated) and FAQ on the integer engine.
      --gradient-noise K: the gradient noise of FAQ's argument (quantization adds noise to the
      gradient, larger batches remove it), measured over the run's first K minibatches at fixed
      weights: the variance of one minibatch's Conv/Gemm weight gradient around their mean, and
      relative to the mean's squared norm; for the FP32 and the quantized network at the start and,
      after more than one step, the quantized one at the end (docs/finetune.md).
  train MODEL.onnx -o OUT.onnx [--init random|pretrained] [--numeric float32|fixed:IL.FL]
        [--gradient-numeric fixed:IL.FL] [--rounding stochastic|nearest] [--fixed-compute float64|float32] [--accumulate M | --accumulate-forward M --accumulate-backward M
        --accumulate-weight-grad M] [--accumulate-chunk C] [--epochs E] [--batch B] [--lr LR]
        [--lr-final LR] [--schedule cosine|exp|step] [--momentum M] [--weight-decay WD]
        [--label-smoothing S] [--data fashion-mnist|DIR|X.npy --labels Y.npy] [--train-images N]
        [--test-images N] [--test-every K] [--no-test] [--seed S] [--threads T] [--checkpoint PATH]
        [--checkpoint-every STEPS] [--resume CKPT] [--steps N] [--curve-every STEPS] [--no-augment]
        [--no-progress] [--json] [--timeline]
        [--distributed [--compress none|adacomp] [--bin-conv 50] [--bin-fc 500] [--threshold-scale 1]
        [--exact-values] [--bucket-kb 256] [--timeout 120]]
      training on libtorch from the model's graph (random He-normal start, or its own weights):
      float32; fixed:IL.FL rounds weights, activations, gradients and updates to IL.FL fixed point
      (IL counts the sign; IL + FL <= 32; --gradient-numeric: gradients and momentum in a format
      of their own) with stochastic or nearest rounding, computed in float64
      (exact dot products; --fixed-compute float32: faster, sums rounded at 24 bits); --accumulate emulates
      float accumulators of M mantissa bits in the Conv/Gemm products (forward, input gradient,
      weight gradient). Test top-1 after every epoch. --distributed: data parallel under
      mpirun -np P (the global batch split among the ranks, gradients all-reduced in buckets from
      backprop's hooks or exchanged with AdaComp; weight hashes compared every epoch; a rank that
      dies or hangs ends the job within --timeout seconds). --timeline: forward and backprop time
      per step and when each gradient is ready (the scaling model's input). docs/training.md
  accum --n N [--m M|LO..HI] [--chunk C] [--estimate analytic|monte-carlo] [--trials T] [--seed S]
        [--terms normal|product] [--criterion variance-lost[:C]|error-variance[:C]|retention[:EPS]] [--json]
  accum MODEL.onnx [--batch B] [--chunk C] [--estimate ...] [--trials T] [--seed S] [--terms normal|product]
        [--criterion ...] [--json]
      reduced-precision accumulation (Sakr et al. 2019): with --m, the variance retention ratio
      and the accumulation error's variance of N-term sums at M mantissa bits (unchunked, and in
      chunks of C), Monte-Carlo beside the analytic model; without --m, the smallest M that keeps
      the sum (default: the analytic model and the paper's criterion, the variance lost below
      ln 50 terms'; --estimate monte-carlo simulates T sums instead). For a model: each
      Conv/Gemm/MatMul's accumulation lengths and minimal M for its forward, input-gradient and
      weight-gradient GEMMs (batch 128, chunks of 64 by default). docs/accumulation.md
  version
)";

using namespace tern::cli;

// "1x3x224x224"-style dims for a message: the batch, then the model's dims with 224 for unknown ones.
std::string example_dims(const tern::Shape& shape, int64_t batch) {
  std::string s;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s.push_back('x');
    s.append(std::to_string(shape[i] >= 0 ? shape[i] : i == 0 ? batch : 224));
  }
  return s;
}

// A shape as JSON: dims the model leaves dynamic are null.
// Layers a residual quantization replaced by int8 weights ("fallbacks"): fixed, at every level.
int int8_fallbacks(const tern::quant::QuantizedModel& q) {
  nlohmann::json prov = nlohmann::json::parse(q.provenance_json, nullptr, false);
  if (!prov.is_object() || !prov.contains("residual") || !prov["residual"].is_object()) return 0;
  const nlohmann::json& r = prov["residual"];
  int count = 0;
  if (r.contains("layers") && r["layers"].is_array())
    for (const nlohmann::json& l : r["layers"]) count += l.is_object() && l.value("fallback", false);
  return count;
}

nlohmann::json dims_json(const tern::Shape& s) {
  nlohmann::json j = nlohmann::json::array();
  for (int64_t d : s) j.push_back(d >= 0 ? nlohmann::json(d) : nlohmann::json(nullptr));
  return j;
}


// Any model file: ONNX (imported and optimized), a .tern FP32 graph, or a quantized .tern (its
// simulation graph; `quantized` keeps the layer records for the report).
struct LoadedModel {
  tern::Graph graph;
  std::optional<tern::quant::QuantizedModel> quantized;
  int64_t file_bytes = 0;
  const char* engine() const { return quantized ? "simulated" : "fp32"; }
};

// --level K|max for a quantized model (nullopt: not given; -1: max).
std::optional<int> level_option(const Args& args) {
  if (!args.has("level")) return std::nullopt;
  if (args.get("level") == "max") return -1;
  return static_cast<int>(args.get_int("level", 0, 0, 1 << 20));
}

// float_weights false: a quantized model for the integer engine alone, without its dequantized
// weights (the engine runs the codes; tern::quant::LoadOptions).
LoadedModel load_model_unnamed(const std::string& path, std::optional<int> level,
                               const std::vector<tern::InputShape>& shapes, bool float_weights) {
  LoadedModel m;
  if (tern::is_tern_file(path)) {
    tern::TernFile file = tern::TernFile::open(path);
    if (tern::quant::is_quantized(file)) {
      m.quantized = tern::quant::load_quantized_model(file, {.float_weights = float_weights});
      if (level) {
        try {
          tern::quant::set_level(*m.quantized, *level < 0 ? m.quantized->max_level() : *level);
        } catch (const Error& e) {
          throw Error(path + ": " + e.what());
        }
      }
      m.graph = tern::quant::simulation_graph(*m.quantized, float_weights ? tern::quant::Placeholders::kRejected
                                                                          : tern::quant::Placeholders::kAccepted);
    } else {
      m.graph = tern::load_graph(file);
    }
    tern::set_input_shapes(m.graph, shapes);
  } else {
    tern::ImportOptions options;
    options.input_shapes = shapes;
    m.graph = tern::import_onnx(path, options);
  }
  check(!level || m.quantized, path + ": --level needs a quantized .tern model (this one has no residual levels)");
  struct stat st;
  m.file_bytes = ::stat(path.c_str(), &st) == 0 ? static_cast<int64_t>(st.st_size) : 0;
  return m;
}

LoadedModel load_model(const std::string& path, std::optional<int> level = std::nullopt,
                       const std::vector<tern::InputShape>& shapes = {}, bool float_weights = true) {
  return naming(path, [&] { return load_model_unnamed(path, level, shapes, float_weights); });
}

std::string db_text(const std::optional<double>& db) {
  if (!db) return "-";
  if (std::isinf(*db)) return "exact";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", *db);
  return buf;
}

nlohmann::json db_json(const std::optional<double>& db) {
  if (!db) return nullptr;
  if (std::isinf(*db)) return "inf";
  return *db;
}

// Weight SQNR of a layer's active terms (each term records the SQNR of the sum up to it).
double active_sqnr(const tern::quant::QuantizedLayer& l) {
  return l.terms[static_cast<size_t>(std::clamp<int>(l.active_terms, 1, static_cast<int>(l.terms.size())) - 1)].sqnr_db;
}

nlohmann::json quant_report_json(const tern::quant::QuantizedModel& q, int64_t file_bytes) {
  using namespace tern::quant;
  ModelSize size = model_size(q);
  nlohmann::json layers = nlohmann::json::array();
  for (const LayerPlan& p : q.plan) {
    const QuantizedLayer* l = q.find(p.node);
    nlohmann::json j = {{"name", p.node}, {"reason", l ? l->reason : p.reason}};
    if (!l) {
      j["weights"] = "float32";
      layers.push_back(j);
      continue;
    }
    j["weights"] = describe_weights(*l);
    j["bits"] = l->terms[0].bits;
    j["group_size"] = l->config.group_size;
    j["grouping"] = l->terms[0].grouping.describe();
    j["terms"] = l->terms.size();
    j["active_terms"] = l->active_terms;
    j["zero_fraction"] = l->zero_fraction();
    j["weight_sqnr_db"] = db_json(active_sqnr(*l));
    j["output_sqnr_db"] = db_json(l->output_sqnr_db);
    j["macs"] = l->macs_per_image();
    j["multiplies"] = l->multiplies_per_image();
    j["bytes"] = layer_bytes(*l);
    if (l->input)
      j["activation"] = {{"bits", l->input->bits},       {"unsigned", l->input->is_unsigned},
                         {"dynamic", l->input->dynamic}, {"power_of_two", l->input->power_of_two},
                         {"scale", l->input->scale},     {"threshold", l->input->threshold},
                         {"source", l->input->source},   {"zero_point", l->input->zero_point}};
    else
      j["activation"] = nullptr;
    layers.push_back(j);
  }
  nlohmann::json operands = nlohmann::json::array();
  for (const tern::quant::QuantizedInput& in : q.inputs)
    operands.push_back({{"node", in.node}, {"input", in.input}, {"activation", describe_activation(in.quant)}});
  nlohmann::json j = {{"size_bytes", size.quantized},
                      {"fp32_bytes", size.fp32},
                      {"int8_bytes", size.int8},
                      {"ratio_to_fp32", static_cast<double>(size.fp32) / static_cast<double>(size.quantized)},
                      {"ratio_to_int8", static_cast<double>(size.int8) / static_cast<double>(size.quantized)},
                      {"macs", size.macs_per_image},
                      {"multiplies", size.multiplies_per_image},
                      {"mults_eliminated", size.mults_eliminated()},
                      {"stored_bytes", size.stored},
                      {"level", q.level},
                      {"attention_operands", operands},
                      {"max_level", q.max_level()},
                      {"layers", layers}};
  nlohmann::json edges = nlohmann::json::array();
  for (const ResidualEdge& e : q.edges)
    edges.push_back({{"layer", e.layer}, {"term", e.term}, {"bytes", e.bytes}, {"gain", e.gain}});
  j["edges"] = edges;
  j["int8_fallbacks"] = int8_fallbacks(q);  // fixed: part of every level
  nlohmann::json prov = nlohmann::json::parse(q.provenance_json, nullptr, false);
  if (prov.is_object()) j["provenance"] = prov;
  if (file_bytes) j["file_bytes"] = file_bytes;
  return j;
}

// What --max-drop measured on its held-out images, from a quantized model's provenance.
struct DropEstimate {
  double target = 0, estimate = 0, standard_error = 0;
  int64_t images = 0, choosing_images = 0;
  std::string measured_on;
  bool met = false;
};
std::optional<DropEstimate> drop_estimate(const tern::quant::QuantizedModel& q) {
  nlohmann::json prov = nlohmann::json::parse(q.provenance_json, nullptr, false);
  if (!prov.is_object() || !prov.contains("residual") || !prov["residual"].contains("drop")) return std::nullopt;
  const nlohmann::json& d = prov["residual"]["drop"];
  if (!d.contains("estimated_drop_pp")) return std::nullopt;  // models from before held-out estimates
  return DropEstimate{d.value("target_pp", 0.0), d.value("estimated_drop_pp", 0.0), d.value("standard_error_pp", 0.0),
                      d.value("estimating_images", int64_t{0}), d.value("choosing_images", int64_t{0}),
                      d.value("measured_on", std::string()), d.value("met", false)};
}

void print_quant_report(const tern::quant::QuantizedModel& q, int64_t file_bytes) {
  using namespace tern::quant;
  int width = 5;
  for (const LayerPlan& p : q.plan) width = std::max(width, static_cast<int>(p.node.size()));
  std::printf("%-*s %-24s %6s %7s %-30s %8s %11s %9s\n", width, "layer", "weights", "zero%", "W SQNR", "input",
              "out SQNR", "mults/img", "bytes");
  for (const LayerPlan& p : q.plan) {
    const QuantizedLayer* l = q.find(p.node);
    if (!l) {
      std::printf("%-*s %-24s   (%s)\n", width, p.node.c_str(), "float32", p.reason.c_str());
      continue;
    }
    std::string act = l->input ? describe_activation(*l->input) : "float32";
    std::printf("%-*s %-24s %6.1f %7s %-30s %8s %11lld %9lld\n", width, l->node.c_str(), describe_weights(*l).c_str(),
                100.0 * l->zero_fraction(), db_text(active_sqnr(*l)).c_str(), act.c_str(),
                db_text(l->output_sqnr_db).c_str(), static_cast<long long>(l->multiplies_per_image()),
                static_cast<long long>(layer_bytes(*l)));
  }
  for (const tern::quant::QuantizedInput& in : q.inputs)
    std::printf("attention   %s operand %d: %s\n", in.node.c_str(), in.input, describe_activation(in.quant).c_str());
  ModelSize size = model_size(q);
  nlohmann::json prov = nlohmann::json::parse(q.provenance_json, nullptr, false);
  if (prov.is_object() && prov.contains("activations") && prov["activations"].is_object()) {
    const nlohmann::json& a = prov["activations"];
    bool aware = a.value("output_aware", false);
    std::printf("rounding    %s\n", aware ? ("output-aware, on " + std::to_string(a.value("calibration_images", 0)) +
                                             " calibration images").c_str()
                                          : "per group (each group minimizes its own weight error)");
  }
  std::printf("size        %lld bytes of weights, scales and biases: %.2fx smaller than FP32 (%lld), %.2fx than int8 (%lld)\n",
              static_cast<long long>(size.quantized), static_cast<double>(size.fp32) / static_cast<double>(size.quantized),
              static_cast<long long>(size.fp32), static_cast<double>(size.int8) / static_cast<double>(size.quantized),
              static_cast<long long>(size.int8));
  if (file_bytes) std::printf("file        %lld bytes (with the graph and provenance)\n", static_cast<long long>(file_bytes));
  if (q.max_level() > 0) {
    std::printf("levels      level %d of %d in use; all %d edge sets stored: %lld bytes (%.2fx smaller than int8)\n", q.level,
                q.max_level(), q.max_level(), static_cast<long long>(size.stored),
                static_cast<double>(size.int8) / static_cast<double>(size.stored));
    if (const int f = int8_fallbacks(q); f > 0)
      std::printf("            %d layer%s replaced by int8 weights (fallbacks): fixed, at every level, level 0 included\n", f,
                  f == 1 ? "" : "s");
    int64_t cumulative = size.quantized;
    for (int k = q.level; k > 0; --k) cumulative -= q.edges[static_cast<size_t>(k - 1)].bytes;
    std::printf("            %5s  %-*s %5s %9s %12s %10s\n", "level", width, "adds layer", "term", "bytes", "total bytes",
                "est. gain");
    std::printf("            %5d  %-*s %5s %9s %12lld %10s\n", 0, width, "(base terms)", "", "", static_cast<long long>(cumulative), "");
    for (int k = 1; k <= q.max_level(); ++k) {
      const ResidualEdge& e = q.edges[static_cast<size_t>(k - 1)];
      cumulative += e.bytes;
      std::printf("          %s%5d  %-*s %5d %9lld %12lld %10.3g\n", k == q.level ? "->" : "  ", k, width, e.layer.c_str(),
                  e.term, static_cast<long long>(e.bytes), static_cast<long long>(cumulative), e.gain);
    }
  }
  if (prov.contains("equalization"))
    std::printf("equalized   %zu Conv/Gemm pairs (cross-layer equalization, %d sweeps)\n", prov["equalization"]["pairs"].size(),
                prov["equalization"]["sweeps"].get<int>());
  if (prov.contains("smoothing"))
    std::printf("smoothed    %zu Gemm inputs (SmoothQuant, alpha %g)\n", prov["smoothing"]["inputs"].size(),
                prov["smoothing"]["alpha"].get<double>());
  if (std::optional<DropEstimate> d = drop_estimate(q)) {
    int fallbacks = 0, kept_float = 0;
    for (const auto& l : prov["residual"]["layers"]) {
      fallbacks += l.value("fallback", false);
      kept_float += l.value("kept_float", false);
    }
    std::printf("max-drop    target %g pp: estimated drop %.2f +- %.2f pp on %lld held-out images (%s; chosen on %lld others)%s\n",
                d->target, d->estimate, d->standard_error, static_cast<long long>(d->images), d->measured_on.c_str(),
                static_cast<long long>(d->choosing_images), d->met ? "" : " - TARGET MISSED");
    std::printf("            upgrades: %d layers to int8, %d kept float32, %d residual edge sets\n", fallbacks, kept_float,
                q.max_level());
  }
  std::printf("multiplies  %.1f %% eliminated (%lld of %lld per image left; one per group of N)\n",
              100.0 * size.mults_eliminated(), static_cast<long long>(size.multiplies_per_image),
              static_cast<long long>(size.macs_per_image));
}

// --engine simulated|integer (validated).
bool integer_engine(const Args& args) {
  std::string name = args.get("engine", "simulated");
  if (name != "simulated" && name != "integer") throw UsageError("--engine: expected simulated or integer, got '" + name + "'");
  return name == "integer";
}

// What eval and bench run: the graph on the FP32 kernels (a quantized model's simulation), or with
// --engine integer the integer engine (--verbose names each layer's kernel on stderr).
struct Runner {
  std::optional<tern::IntegerExecutor> integer;
  std::optional<tern::Executor> plain;
  const char* engine = "fp32";
  tern::InferenceEngine& executor() { return integer ? static_cast<tern::InferenceEngine&>(*integer) : *plain; }
};

Runner make_runner(const Args& args, const std::string& model, tern::Graph graph,
                   std::optional<tern::quant::QuantizedModel>& quantized, const char* engine,
                   tern::ExecutorOptions options = {}) {
  Runner r;
  r.engine = engine;
  if (!integer_engine(args)) {
    naming(model, [&] { r.plain.emplace(std::move(graph), options); });
    return r;
  }
  check(quantized.has_value(), model + ": --engine integer needs a quantized .tern model");
  naming(model, [&] { r.integer.emplace(std::move(*quantized), options); });
  r.engine = "integer";
  if (args.flag("verbose")) {
    std::fprintf(stderr, "integer engine: %s\n", r.integer->mode().c_str());
    for (const tern::IntegerLayerInfo& l : r.integer->layers()) std::fprintf(stderr, "%-44s %s\n", l.node.c_str(), l.kernel.c_str());
    // The fused program's steps in order, each with what runs it (integer kernels, fused
    // float operations, FP32 kernels on the values between layers).
    const std::vector<std::string> steps = r.integer->steps();
    if (!steps.empty()) std::fprintf(stderr, "program: %zu steps\n", steps.size());
    for (const std::string& step : steps) std::fprintf(stderr, "  %s\n", step.c_str());
  }
  return r;
}

// eval --level all: one loaded model, every residual level in turn (switched, not reloaded).
int eval_levels(const Args& args, const std::string& model, const tern::EvalOptions& options) {
  using namespace tern::quant;
  LoadedModel loaded = load_model(model, std::nullopt, input_shapes(args));
  check(loaded.quantized.has_value(), model + ": --level needs a quantized .tern model (this one has no residual levels)");
  tern::Preprocess norm = preprocess(args, loaded.graph);
  tern::Dataset data = load_data(args, nullptr);
  // One switchable runner: the simulation, or the integer engine (--engine integer).
  const char* engine_name = integer_engine(args) ? "integer" : "simulated";
  QuantizedModel levels_model = *loaded.quantized;  // follows the level: sizes and edge names
  std::optional<QuantizedSession> simulated;
  std::optional<tern::IntegerExecutor> integer;
  if (integer_engine(args)) integer.emplace(std::move(*loaded.quantized));
  else simulated.emplace(std::move(*loaded.quantized));
  struct Runner {
    QuantizedModel& m;
    std::optional<QuantizedSession>& s;
    std::optional<tern::IntegerExecutor>& i;
    void set_level(int k) {
      if (i) i->set_level(k);
      else s->set_level(k);
      tern::quant::set_level(m, k);
    }
    int max_level() const { return m.max_level(); }
    const QuantizedModel& model() const { return m; }
    tern::InferenceEngine& executor() { return i ? static_cast<tern::InferenceEngine&>(*i) : s->executor(); }
  } session{levels_model, simulated, integer};
  nlohmann::json levels = nlohmann::json::array();
  bool json = args.flag("json");
  int width = 12;
  for (const ResidualEdge& e : session.model().edges) width = std::max(width, static_cast<int>(e.layer.size()) + 7);
  if (!json)
    std::printf("%5s  %-*s %8s %12s %9s %9s %11s\n", "level", width, "adds", "top-1 %", "bytes", "vs FP32", "vs int8",
                "mults elim");
  for (int k = 0; k <= session.max_level(); ++k) {
    session.set_level(k);
    tern::EvalResult r = tern::evaluate_classifier(session.executor(), data, norm, options);
    ModelSize size = model_size(session.model());
    std::string adds = k == 0 ? "(base terms)"
                              : session.model().edges[static_cast<size_t>(k - 1)].layer + " term " +
                                    std::to_string(session.model().edges[static_cast<size_t>(k - 1)].term);
    double vs_fp32 = static_cast<double>(size.fp32) / static_cast<double>(size.quantized);
    double vs_int8 = static_cast<double>(size.int8) / static_cast<double>(size.quantized);
    levels.push_back({{"level", k}, {"adds", adds}, {"top1", r.top1}, {"top5", r.top5}, {"size_bytes", size.quantized},
                      {"ratio_to_fp32", vs_fp32}, {"ratio_to_int8", vs_int8}, {"multiplies", size.multiplies_per_image},
                      {"mults_eliminated", size.mults_eliminated()}, {"images", r.images}});
    if (!json)
      std::printf("%5d  %-*s %8.2f %12lld %8.2fx %8.2fx %10.1f%%\n", k, width, adds.c_str(), r.top1,
                  static_cast<long long>(size.quantized), vs_fp32, vs_int8, 100.0 * size.mults_eliminated());
  }
  if (json)
    std::cout << nlohmann::json{{"model", model}, {"data", data.name}, {"engine", engine_name}, {"levels", levels}}.dump()
              << "\n";
  return 0;
}

int cmd_eval(int argc, char** argv) {
  Args args("eval", argc, argv, 2, {"data", "labels", "split", "limit", "batch", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout", "level", "engine", "input-shape"},
            {"json", "verbose"});
  std::string model = args.model("eval");
  tern::EvalOptions options;
  if (!args.flag("json")) options.progress = [](int64_t done, int64_t total) { progress_line("evaluating", done, total); };
  options.limit = args.get_int("limit", 0, 0, int64_t{1} << 40);
  options.batch = args.get_int("batch", 100, 1, 1 << 16);
  if (args.get("level") == "all") return eval_levels(args, model, options);
  LoadedModel loaded = load_model(model, level_option(args), input_shapes(args), !integer_engine(args));
  tern::Preprocess norm = preprocess(args, loaded.graph);
  tern::Dataset data = load_data(args, nullptr);
  Runner runner = make_runner(args, model, std::move(loaded.graph), loaded.quantized, loaded.engine());
  const char* engine = runner.engine;
  tern::InferenceEngine& executor = runner.executor();
  tern::EvalResult r = tern::evaluate_classifier(executor, data, norm, options);
  if (args.flag("json")) {
    nlohmann::json j = {{"model", model}, {"data", data.name},           {"engine", engine},
                        {"top1", r.top1}, {"top5", r.top5},              {"images", r.images},
                        {"seconds", r.seconds}, {"images_per_s", r.images_per_s}, {"batch", options.batch},
                        {"threads", tern::ThreadPool::global().size()},
                        {"isa", tern::kernels::to_string(tern::kernels::active_isa())}};
    if (loaded.quantized) j.update(quant_report_json(*loaded.quantized, loaded.file_bytes));
    std::cout << j.dump() << "\n";
  } else {
    if (loaded.quantized) {
      print_quant_report(*loaded.quantized, loaded.file_bytes);
      std::printf("\n");
    }
    std::printf("model       %s (%s)\n", model.c_str(), engine);
    std::printf("data        %s, %lld images\n", data.name.c_str(), static_cast<long long>(r.images));
    std::printf("input       %s\n", norm.describe().c_str());
    std::printf("top-1       %.2f %%\n", r.top1);
    std::printf("top-5       %.2f %%\n", r.top5);
    std::printf("throughput  %.0f images/s (batch %lld, %d threads, %s kernels)\n", r.images_per_s,
                static_cast<long long>(options.batch), tern::ThreadPool::global().size(),
                tern::kernels::to_string(tern::kernels::active_isa()));
  }
  return 0;
}

// A quantized model keeps the dynamic batch; its other dims are fixed, to what --input-shape says
// or else to the calibration images' size (said on stderr).
void fix_dynamic_dims_to_batch(tern::Graph& graph, const tern::Shape& batch, const std::string& model) {
  const tern::Value& x = graph.value(graph.inputs[0]);
  if (!x.shape_known || std::all_of(x.shape.begin() + std::min<size_t>(1, x.shape.size()), x.shape.end(),
                                    [](int64_t d) { return d >= 0; }))
    return;
  check(batch.size() == x.shape.size(), model + ": input '" + x.name + "' " + tern::to_string(x.shape) +
                                            " does not fit the data's batches " + tern::to_string(batch));
  tern::InputShape s{x.name, batch};
  s.dims.front() = x.shape[0] >= 0 ? x.shape[0] : tern::kDynamicDim;
  naming(model, [&] { tern::set_input_shapes(graph, {s}); });  // (x is stale from here: values were compacted)
  std::fprintf(stderr, "tern: note: %s: input '%s' has dynamic dims; quantizing at the data's size %s (--input-shape chooses)\n",
               model.c_str(), s.name.c_str(), tern::to_string(graph.value(graph.inputs[0]).shape).c_str());
}

void require_static_dims(const tern::Graph& graph, const std::string& model) {
  for (tern::ValueId id : graph.inputs) {
    const tern::Value& x = graph.value(id);
    for (size_t d = 1; d < x.shape.size(); ++d)
      check(x.shape[d] >= 0, model + ": input '" + x.name + "' " + tern::to_string(x.shape) +
                                 " has dynamic dims past the batch; give them with --input-shape, e.g. " + x.name + "=" +
                                 example_dims(x.shape, 1));
  }
}

int cmd_quantize(int argc, char** argv) {
  namespace q = tern::quant;
  Args args("quantize", argc, argv, 2, kQuantizeValued, kQuantizeFlags);
  std::string in_path = args.model("quantize");
  if (!args.has("output")) throw UsageError("'tern quantize' needs -o OUT.tern");
  std::string out_path = args.get("output");
  if (out_path.empty()) throw UsageError("-o: empty path");
  if (args.has("labels") && !is_npy_spec(args.get("data")))
    throw UsageError("--labels goes with an .npy --data array" +
                     std::string(args.has("data") ? ", not --data " + args.get("data") : " (no --data given)"));
  tern::check_output_paths({in_path, args.get("config"), args.get("data"), args.get("labels")}, {out_path});

  // Every option is checked before any work, so a bad one never leaves a file behind.
  q::QuantizeOptions options = quantize_options(args);
  if (!args.flag("json"))
    options.progress = [](const std::string& stage, int64_t done, int64_t total) {
      progress_line(stage, done, total, stage == "calibrating" ? "images" : stage == "measuring sensitivities" ? "layers" : "steps");
    };
  int64_t calib_images = args.get_int("calib-images", 512, 1, 1 << 20);
  // Import. BatchNorm statistics must be read before the passes fold BatchNorm into the convolutions.
  std::string bytes = tern::read_whole_file(in_path);
  tern::ImportOptions import_options;
  import_options.optimize = options.activation_mode != q::ActivationMode::kBatchNorm;
  import_options.input_shapes = input_shapes(args);
  tern::Graph graph = naming(in_path, [&] { return tern::import_onnx_bytes(bytes, in_path, import_options); });
  tern::Preprocess norm = preprocess(args, graph);

  // Calibration images: the first N of the training split (never test images).
  std::optional<tern::Tensor> calibration, drop_images;
  const bool drop_budget = options.residual.kind == q::ResidualBudget::Kind::kDrop;
  bool want_images = options.activation_mode == q::ActivationMode::kCalibrated || args.has("data") || drop_budget;
  tern::Dataset train;
  if (drop_budget && args.has("data-free") && !args.has("data"))
    throw UsageError("--max-drop measures the drop on held-out images: give --data (--data-free reads none by default)");
  if (want_images) {
    if (!has_data(args, &graph))
      throw UsageError("calibration needs --data (a folder of images, fashion-mnist, an IDX directory or X.npy), or --data-free");
    train = load_data(args, &graph, "train", false);
    check(graph.inputs.size() == 1, in_path + ": quantize supports single-input models");
    // An accuracy budget holds out images: from --drop-data, else after the calibration ones (at
    // most half the data).
    tern::Dataset validation;
    if (args.has("drop-data")) {
      if (args.get("drop-data") == data_spec(args, &graph))
        throw UsageError("--drop-data " + args.get("drop-data") + ": the held-out images must not be the calibration data (--data)");
      validation = tern::load_dataset(args.get("drop-data"), args.get("drop-labels", ""), "train");
    }
    const tern::Dataset& held_from = args.has("drop-data") ? validation : train;
    int64_t held = 0;
    if (drop_budget) {
      // Default: 10000 images (an estimate within about 0.2 pp), fewer where they would take over 1 GB.
      int64_t per_image = tern::make_batch(held_from, 0, 1, norm, graph.value(graph.inputs[0]).shape).size();
      int64_t fits = (int64_t{1} << 30) / (4 * std::max<int64_t>(1, per_image));
      int64_t available = args.has("drop-data") ? held_from.size() : train.size() / 2;
      held = std::min(args.get_int("drop-images", std::clamp<int64_t>(fits, 1000, 10000), 20, 1 << 20), available);
      check(held >= 20, held_from.name + ": --max-drop holds out images to measure the drop on, and " +
                            std::to_string(held_from.size()) + " images are too few (at least " +
                            (args.has("drop-data") ? "20" : "40") + ")");
    }
    int64_t calib_n = std::min<int64_t>(calib_images, args.has("drop-data") ? train.size() : train.size() - held);
    const int64_t first_held = args.has("drop-data") ? 0 : calib_n;
    if (calib_n < calib_images && held > 0 && !args.has("drop-data"))
      std::fprintf(stderr, "tern: note: %s: %lld images: %lld calibrate, %lld are held out for --max-drop\n", train.name.c_str(),
                   static_cast<long long>(train.size()), static_cast<long long>(calib_n), static_cast<long long>(held));
    calibration = tern::make_batch(train, 0, calib_n, norm, graph.value(graph.inputs[0]).shape);
    fix_dynamic_dims_to_batch(graph, calibration->shape(), in_path);
    if (held > 0) {
      drop_images = tern::make_batch(held_from, first_held, held, norm, graph.value(graph.inputs[0]).shape);
      options.drop_images = &*drop_images;
      if (held_from.labelled())
        options.drop_labels.assign(held_from.labels.begin() + first_held, held_from.labels.begin() + first_held + held);
    }
  }
  if (!calibration) require_static_dims(graph, in_path);

  // The input's range: proved for pixels, measured for float arrays, never assumed.
  // Dynamic activations measure every batch: an unknown range only means signed input codes.
  InputRange range;
  if (calibration && !train.pixels()) range = measured_range(*calibration);
  else if (calibration || norm.given) range = input_range(norm);
  else if (options.activation_mode == q::ActivationMode::kBatchNorm)
    throw UsageError(in_path + ": the model input's range is unknown (no tern.* preprocessing in its metadata): give --data, "
                     "or the preprocessing that makes its inputs from 8-bit pixels (--scale, --mean, --std)");
  options.input_non_negative = range.non_negative();
  const bool range_proved = !calibration || train.pixels();  // from the preprocessing, not measured
  if (range.known() && range_proved) options.input_threshold = range.threshold();
  if (options.activation_mode == q::ActivationMode::kBatchNorm) {
    for (const auto& [name, r] : q::batchnorm_ranges(graph, std::make_pair(range.lo, range.hi)))
      options.static_thresholds[name] = {r.threshold, r.source};
    tern::optimize(graph);
  }
  for (const auto& [key, value] : norm.metadata()) graph.metadata[key] = value;  // eval and run read it from the .tern
  q::QuantizedModel model =
      naming(in_path, [&] { return q::quantize_model(graph, options, calibration ? &*calibration : nullptr); });

  nlohmann::json prov = nlohmann::json::parse(model.provenance_json);
  prov["source"] = in_path;
  prov["source_sha256"] = tern::sha256_hex(bytes);
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  prov["command"] = command;
  if (calibration) prov["calibration_data"] = train.name + " (train split, first " + std::to_string(calibration->dim(0)) + ")";
  if (range.known()) prov["input_range"] = {{"lo", range.lo}, {"hi", range.hi}, {"source", range.source}};
  else prov["input_range"] = "unknown: measured per batch (dynamic activations), signed codes";
  model.provenance_json = prov.dump();
  naming(in_path, [&] { q::save_quantized_model(out_path, model); });  // loads its bytes back first

  int64_t file_bytes = 0;
  if (struct stat st; ::stat(out_path.c_str(), &st) == 0 && S_ISREG(st.st_mode)) file_bytes = static_cast<int64_t>(st.st_size);
  nlohmann::json report = quant_report_json(model, file_bytes);
  report["model"] = out_path;
  report["source"] = in_path;
  report["input_range"] = prov["input_range"];
  if (!args.flag("json")) {
    std::printf("quantized   %s -> %s\n", in_path.c_str(), out_path.c_str());
    if (range.known())
      std::printf("input range [%g, %g], %s%s\n", range.lo, range.hi, range.source.c_str(),
                  range_proved ? "" : "; inputs outside it are clipped");
    std::printf("\n");
    print_quant_report(model, file_bytes);
  }
  if (args.flag("eval")) {
    tern::Dataset test = load_data(args, &graph, "test");
    tern::EvalOptions eval_options;
    if (!args.flag("json")) eval_options.progress = [](int64_t done, int64_t total) { progress_line("evaluating", done, total); };
    tern::Executor reference(graph);
    tern::Executor simulated(q::simulation_graph(model));
    tern::EvalResult a = tern::evaluate_classifier(reference, test, norm, eval_options);
    tern::EvalResult b = tern::evaluate_classifier(simulated, test, norm, eval_options);
    report["fp32_top1"] = a.top1;
    report["top1"] = b.top1;
    report["top1_drop_pp"] = a.top1 - b.top1;
    if (std::optional<DropEstimate> d = drop_estimate(model)) report["max_drop_estimate_pp"] = d->estimate;
    report["eval_data"] = test.name;
    report["eval_images"] = b.images;
    if (!args.flag("json")) {
      tern::quant::ModelSize size = tern::quant::model_size(model);
      std::printf("\n%-12s %8s %14s %12s %14s\n", "", "top-1 %", "size (bytes)", "vs FP32", "mults left");
      std::printf("%-12s %8.2f %14lld %11.2fx %13.1f%%\n", "FP32", a.top1, static_cast<long long>(size.fp32), 1.0, 100.0);
      std::printf("%-12s %8.2f %14lld %11.2fx %13.1f%%\n", "quantized", b.top1, static_cast<long long>(size.quantized),
                  static_cast<double>(size.fp32) / static_cast<double>(size.quantized), 100.0 * (1 - size.mults_eliminated()));
      std::printf("top-1 change %+.2f pp on %lld %s test images\n", b.top1 - a.top1, static_cast<long long>(b.images),
                  test.name.c_str());
      if (std::optional<DropEstimate> d = drop_estimate(model))
        std::printf("max-drop     estimated %.2f +- %.2f pp, measured %.2f pp\n", d->estimate, d->standard_error, a.top1 - b.top1);
    }
  }
  if (args.flag("json")) std::cout << report.dump() << "\n";
  return 0;
}

// tern compare REFERENCE MODEL --data SPEC: every output's error, and for a quantized MODEL each
// layer's, on the same inputs.
int cmd_compare(int argc, char** argv) {
  Args args("compare", argc, argv, 2,
            {"data", "labels", "split", "limit", "batch", "layer-images", "engine", "level", "input-shape", "scale", "mean", "std",
             "resize", "crop", "pad", "channels", "layout"},
            {"json", "verbose"});
  if (args.positional().size() != 2)
    throw UsageError("'tern compare' takes REFERENCE and MODEL, got " + std::to_string(args.positional().size()) + " arguments");
  const std::string ref_path = args.positional()[0], model_path = args.positional()[1];
  const int64_t limit = args.get_int("limit", 1000, 1, int64_t{1} << 40);
  const int64_t layer_images = args.get_int("layer-images", 64, 0, 1 << 20);
  LoadedModel ref = load_model(ref_path, std::nullopt, input_shapes(args));
  check(!ref.quantized, ref_path + ": the reference must be a float model (.onnx or an FP32 .tern)");
  LoadedModel loaded = load_model(model_path, level_option(args), input_shapes(args));
  check(ref.graph.inputs.size() == 1 && loaded.graph.inputs.size() == 1, "compare supports single-input models");
  // The inputs: the quantized model's stored preprocessing when it has one, else the reference's.
  tern::Preprocess pre = tern::preprocess_from_metadata(loaded.graph).given ? preprocess(args, loaded.graph) : preprocess(args, ref.graph);
  tern::Dataset data = load_data(args, nullptr, "", false);
  int64_t total = std::min(limit, data.size());
  // A batch fixed in the model's input shape is the batch (a tail shorter than it is left out).
  const int64_t fixed = ref.graph.fixed_batch();
  const int64_t batch = fixed > 0 ? fixed : args.get_int("batch", 50, 1, 1 << 16);
  if (fixed > 1) {
    check(total >= fixed, ref_path + ": the input's batch is fixed at " + std::to_string(fixed) + " and there are only " +
                              std::to_string(total) + " images");
    total = total / fixed * fixed;
  }
  std::optional<tern::quant::QuantizedModel> quantized = loaded.quantized;
  Runner runner = make_runner(args, model_path, loaded.graph, quantized, loaded.engine());
  tern::Executor reference = naming(ref_path, [&] { return tern::Executor(ref.graph); });
  std::vector<std::string> names;
  for (tern::ValueId id : ref.graph.outputs) names.push_back(ref.graph.value(id).name);
  const tern::Shape& model_input = loaded.graph.value(loaded.graph.inputs[0]).shape;
  tern::OutputComparer comparer;
  for (int64_t b = 0; b < total; b += batch) {
    int64_t count = std::min(batch, total - b);
    tern::Tensor x = tern::make_batch(data, b, count, pre, model_input);
    std::vector<tern::Tensor> r = naming(ref_path, [&] { return reference.run(std::span<const tern::Tensor>(&x, 1)); });
    std::vector<tern::Tensor> q = naming(model_path, [&] { return runner.executor().run(std::span<const tern::Tensor>(&x, 1)); });
    std::vector<int64_t> labels;
    if (data.labelled()) labels.assign(data.labels.begin() + b, data.labels.begin() + b + count);
    comparer.add(r, q, data.labelled() ? &labels : nullptr, names);
    if (!args.flag("json")) progress_line("comparing", b + count, total);
  }
  std::vector<tern::OutputComparison> outputs = comparer.result();
  std::vector<tern::LayerComparison> layers;
  const int64_t layer_count = fixed > 1 ? std::min(layer_images, data.size()) / fixed * fixed : std::min(layer_images, data.size());
  if (loaded.quantized && layer_count > 0) {
    tern::Tensor x = tern::make_batch(data, 0, layer_count, pre, model_input);
    layers = naming(model_path, [&] { return tern::compare_layers(*loaded.quantized, ref.graph, x); });
  }
  std::vector<size_t> order(layers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return layers[a].alone_sqnr_db.value_or(INFINITY) < layers[b].alone_sqnr_db.value_or(INFINITY);
  });
  auto opt = [](const std::optional<double>& v) -> nlohmann::json { return v ? nlohmann::json(*v) : nlohmann::json(nullptr); };
  if (args.flag("json")) {
    nlohmann::json j = {{"reference", ref_path}, {"model", model_path}, {"engine", runner.engine}, {"data", data.name},
                        {"images", comparer.images()}, {"input", pre.describe()}};
    for (const auto& o : outputs)
      j["outputs"].push_back({{"name", o.name}, {"shape", o.shape}, {"sqnr_db", db_json(o.sqnr_db)}, {"cosine", o.cosine},
                              {"max_abs_error", o.max_abs_error}, {"ref_max_abs", o.ref_max_abs},
                              {"top1_agreement", opt(o.top1_agreement)}, {"ref_top1", opt(o.ref_top1)}, {"top1", opt(o.top1)}});
    j["layers"] = nlohmann::json::array();
    for (size_t i : order)
      j["layers"].push_back({{"node", layers[i].node}, {"precision", layers[i].precision},
                             {"alone_sqnr_db", db_json(layers[i].alone_sqnr_db)},
                             {"accumulated_sqnr_db", db_json(layers[i].accumulated_sqnr_db)}});
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("reference   %s\nmodel       %s (%s)\ndata        %s, %lld images\ninput       %s\n\n", ref_path.c_str(),
              model_path.c_str(), runner.engine, data.name.c_str(), static_cast<long long>(comparer.images()), pre.describe().c_str());
  std::printf("%-24s %-18s %8s %9s %12s %12s %10s\n", "output", "shape", "SQNR dB", "cosine", "max |error|", "max |ref|", "top-1 agree");
  for (const auto& o : outputs) {
    std::string agree = o.top1_agreement ? std::to_string(*o.top1_agreement).substr(0, 6) + " %" : "-";
    std::printf("%-24s %-18s %8s %9.6f %12.4g %12.4g %10s\n", o.name.c_str(), tern::to_string(o.shape).c_str(),
                db_text(o.sqnr_db).c_str(), o.cosine, o.max_abs_error, o.ref_max_abs, agree.c_str());
    if (o.ref_top1)
      std::printf("%-24s top-1 %.2f %% (reference) vs %.2f %% (model), %+.2f pp\n", "", *o.ref_top1, *o.top1, *o.top1 - *o.ref_top1);
  }
  if (!layers.empty()) {
    std::printf("\nper layer, on %lld images, worst first. alone: SQNR of the model output with only this layer quantized;\n"
                "accumulated: SQNR of this layer's output in the quantized model\n",
                static_cast<long long>(layer_count));
    std::printf("%-48s %-44s %9s %12s\n", "layer", "precision", "alone dB", "accum. dB");
    for (size_t i : order)
      std::printf("%-48s %-44s %9s %12s\n", layers[i].node.c_str(), layers[i].precision.c_str(), db_text(layers[i].alone_sqnr_db).c_str(),
                  db_text(layers[i].accumulated_sqnr_db).c_str());
  }
  return 0;
}

int cmd_run(int argc, char** argv) {
  Args args("run", argc, argv, 2,
            {"input", "output", "level", "input-shape", "engine", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout"},
            {"verbose"});
  std::string model = args.model("run");
  if (!args.has("input") || !args.has("output")) throw UsageError("'tern run' needs --input X.npy|IMAGE and --output Y.npy");
  const std::string in = args.get("input");
  tern::check_output_paths({model, in}, {args.get("output")});
  LoadedModel loaded = load_model(model, level_option(args), input_shapes(args), !integer_engine(args));
  // One rule with eval: pixels (a JPEG/PNG file, a uint8 array) go through the preprocessing; any
  // other array is the model input as it is.
  tern::Dataset pixels;
  tern::Tensor x;
  if (!is_npy_spec(in)) {
    pixels.name = in;
    pixels.files = {in};
  } else {
    x = tern::read_npy(in);
    if (x.dtype() == tern::DataType::kUInt8 && (x.rank() == 3 || x.rank() == 4)) {
      pixels.name = in;
      pixels.images = std::move(x);
    }
  }
  if (pixels.size() > 0) {
    check(loaded.graph.inputs.size() == 1, model + ": images go to single-input models; give a float array for each input");
    tern::Preprocess pre = preprocess(args, loaded.graph);
    x = naming(in, [&] { return tern::make_batch(pixels, 0, pixels.size(), pre, loaded.graph.value(loaded.graph.inputs[0]).shape); });
  }
  Runner runner = make_runner(args, model, std::move(loaded.graph), loaded.quantized, loaded.engine());
  std::vector<tern::Tensor> ys = naming(in, [&] { return runner.executor().run(std::span<const tern::Tensor>(&x, 1)); });
  tern::write_npy(args.get("output"), ys.at(0));  // the first output (the usage says so)
  return 0;
}

int cmd_export(int argc, char** argv) {
  Args args("export", argc, argv, 2, {"output", "level", "input-shape"}, {"json"});
  std::string model = args.model("export");
  if (!args.has("output")) throw UsageError("'tern export' needs -o OUT.onnx");
  const std::string out = args.get("output");
  tern::check_output_paths({model}, {out});
  LoadedModel loaded = load_model(model, level_option(args), input_shapes(args));
  tern::OnnxExportReport report;
  std::string bytes = naming(model, [&] {
    return loaded.quantized ? tern::qdq_onnx_bytes(*loaded.quantized, &report) : tern::graph_onnx_bytes(loaded.graph, &report);
  });
  // Random inputs (batch 2 where the batch is free) through both: the file must compute tern's model.
  check(loaded.graph.inputs.size() == 1, model + ": export checks single-input models");
  const tern::Value& in = loaded.graph.value(loaded.graph.inputs[0]);
  check(in.shape_known && in.dtype == tern::DataType::kFloat32, model + ": export checks a float input of known rank");
  tern::Shape shape = in.shape;
  for (size_t d = 0; d < shape.size(); ++d)
    if (shape[d] < 0) shape[d] = d == 0 ? 2 : 1;
  // Within the range the first quantized layer's codes cover (beyond it ONNX saturates s8 codes at
  // -128, tern at -127), else standard normal.
  float lo = 0, hi = 0;
  for (const tern::Node& n : loaded.graph.nodes)
    if (n.op == tern::OpType::kFakeQuantize && n.inputs[0] == loaded.graph.inputs[0] && !n.attr<tern::FakeQuantAttrs>().dynamic) {
      const auto& a = n.attr<tern::FakeQuantAttrs>();
      const float qmax = static_cast<float>(tern::quant::activation_qmax(a.bits, a.is_unsigned));
      lo = a.is_unsigned ? -static_cast<float>(a.zero_point) * a.scale : -qmax * a.scale;
      hi = (qmax - static_cast<float>(a.zero_point)) * a.scale;
    }
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> uniform(0.99f * lo, 0.99f * hi);
  std::vector<float> x(static_cast<size_t>(tern::element_count(shape)));
  for (float& v : x) v = hi > lo ? uniform(rng) : normal(rng);
  tern::ExportCheck c = naming(out, [&] { return tern::check_export(loaded.graph, bytes, tern::Tensor::from_floats(shape, x)); });
  tern::write_file_atomically(out, {std::span<const char>(bytes.data(), bytes.size())});
  if (args.flag("json")) {
    nlohmann::json j = {{"model", model}, {"output", out}, {"bytes", bytes.size()}, {"opset", report.opset}, {"nodes", report.nodes},
                        {"int8_layers", report.int8_layers}, {"float_layers", report.float_layers},
                        {"quantized_activations", report.quantized_activations}, {"notes", report.notes},
                        {"check", {{"inputs", tern::to_string(shape)}, {"values", c.values}, {"differing", c.differing},
                                   {"max_abs_diff", c.max_abs_diff}, {"max_abs_reference", c.max_abs_reference}}}};
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("wrote   %s (%zu bytes, opset %lld, %lld nodes)\n", out.c_str(), bytes.size(),
              static_cast<long long>(report.opset), static_cast<long long>(report.nodes));
  if (loaded.quantized)
    std::printf("layers  %lld with int8 weights + DequantizeLinear, %lld with float32 weights; %lld quantized activations\n",
                static_cast<long long>(report.int8_layers), static_cast<long long>(report.float_layers),
                static_cast<long long>(report.quantized_activations));
  for (const std::string& n : report.notes) std::printf("note    %s\n", n.c_str());
  std::printf("check   on random inputs %s: %lld of %lld output values differ from tern's, by at most %.3g (outputs up to %.3g)\n",
              tern::to_string(shape).c_str(), static_cast<long long>(c.differing), static_cast<long long>(c.values),
              c.max_abs_diff, c.max_abs_reference);
  return 0;
}

int cmd_inspect(int argc, char** argv) {
  Args args("inspect", argc, argv, 2, {"level", "input-shape"}, {"json"});
  std::string model = args.model("inspect");
  LoadedModel loaded = load_model(model, level_option(args), input_shapes(args));
  const tern::Graph& graph = loaded.graph;
  tern::ModelSummary s = naming(model, [&] { return tern::summarize(graph); });
  if (args.flag("json")) {
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : s.layers)
      layers.push_back({{"name", l.name}, {"op", l.op}, {"output", dims_json(l.output)}, {"parameters", l.parameters},
                        {"macs", l.macs >= 0 ? nlohmann::json(l.macs) : nlohmann::json(nullptr)}});
    nlohmann::json inputs = nlohmann::json::array();
    for (tern::ValueId id : graph.inputs)
      inputs.push_back({{"name", graph.value(id).name}, {"shape", dims_json(graph.value(id).shape)}});
    nlohmann::json j = {{"model", model},   {"opset", graph.opset},        {"inputs", inputs},
                        {"layers", layers}, {"parameters", s.parameters}, {"macs", s.macs},
                        {"layers_with_unknown_macs", s.unknown_macs}};
    if (loaded.quantized) j["quantization"] = quant_report_json(*loaded.quantized, loaded.file_bytes);
    std::cout << j.dump() << "\n";
    return 0;
  }
  std::printf("model   %s (opset %lld)\n", model.c_str(), static_cast<long long>(graph.opset));
  for (tern::ValueId id : graph.inputs)
    std::printf("input   %s %s\n", graph.value(id).name.c_str(), tern::to_string(graph.value(id).shape).c_str());
  for (tern::ValueId id : graph.outputs)
    std::printf("output  %s %s\n", graph.value(id).name.c_str(), tern::to_string(graph.value(id).shape).c_str());
  std::printf("\n%-36s %-22s %-18s %12s %14s\n", "layer", "op", "output (batch 1)", "parameters", "MACs");
  for (const auto& l : s.layers) {
    std::string shape = tern::to_string(l.output);
    std::string macs = l.macs >= 0 ? std::to_string(l.macs) : "?";
    std::printf("%-36s %-22s %-18s %12lld %14s\n", l.name.c_str(), l.op.c_str(), shape.c_str(),
                static_cast<long long>(l.parameters), macs.c_str());
  }
  std::printf("%-36s %-22s %-18s %12lld %14lld%s\n", "total", "", "", static_cast<long long>(s.parameters),
              static_cast<long long>(s.macs),
              s.unknown_macs ? (" (+ " + std::to_string(s.unknown_macs) + " layers of unknown size: ?)").c_str() : "");
  bool dynamic_input = false;
  for (tern::ValueId id : graph.inputs)
    for (size_t d = 1; d < graph.value(id).shape.size(); ++d) dynamic_input |= graph.value(id).shape[d] < 0;
  if (s.unknown_macs && dynamic_input)
    std::printf("(dims the model leaves dynamic are '?'; give them with --input-shape, e.g. %s)\n",
                (graph.value(graph.inputs[0]).name + "=" + example_dims(graph.value(graph.inputs[0]).shape, 1)).c_str());
  if (loaded.quantized) {
    std::printf("\n");
    print_quant_report(*loaded.quantized, loaded.file_bytes);
  }
  return 0;
}

// The process's peak resident memory so far (Linux: ru_maxrss is in KiB).
int64_t peak_rss_bytes() {
  struct rusage usage {};
  return getrusage(RUSAGE_SELF, &usage) == 0 ? static_cast<int64_t>(usage.ru_maxrss) * 1024 : 0;
}

int cmd_bench(int argc, char** argv) {
  Args args("bench", argc, argv, 2, {"batch", "seconds", "level", "engine", "input-shape"},
            {"json", "profile", "verbose", "switch-levels"});
  std::string model = args.model("bench");
  int64_t batch = args.get_int("batch", 1, 1, 1 << 16);
  double seconds = args.get_double("seconds", 2.0, 0.01, 3600);
  LoadedModel loaded = load_model(model, level_option(args), input_shapes(args), !integer_engine(args));
  const char* engine = loaded.engine();
  tern::Graph graph = std::move(loaded.graph);
  check(graph.inputs.size() == 1, model + ": bench supports single-input models");
  tern::Shape shape = graph.value(graph.inputs[0]).shape;
  check(!shape.empty(), model + ": input has no shape");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < 0 && i == 0) shape[i] = batch;
    check(shape[i] >= 0, model + ": input '" + graph.value(graph.inputs[0]).name + "' dimension " + std::to_string(i) +
                             " is dynamic (" + tern::to_string(shape) + "); give its size with --input-shape, e.g. " +
                             graph.value(graph.inputs[0]).name + "=" + example_dims(shape, batch));
  }
  tern::Tensor x = naming(model, [&] { return tern::Tensor(tern::DataType::kFloat32, shape); });
  uint32_t state = 12345;
  for (float& v : x.floats()) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(state >> 8) / static_cast<float>(1 << 24) * 2.0f - 1.0f;
  }
  tern::ExecutorOptions exec_options;
  exec_options.profile = args.flag("profile");
  Runner runner = make_runner(args, model, std::move(graph), loaded.quantized, engine, exec_options);
  engine = runner.engine;
  tern::InferenceEngine& executor = runner.executor();
  executor.run(x);  // warm-up: first-touch allocations, caches
  std::vector<double> times;
  auto start = std::chrono::steady_clock::now();
  double elapsed = 0;
  while (elapsed < seconds || times.size() < 5) {
    auto t0 = std::chrono::steady_clock::now();
    executor.run(x);
    auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double>(t1 - t0).count());
    elapsed = std::chrono::duration<double>(t1 - start).count();
  }
  // --switch-levels: the cost of a level switch itself on the integer engine. Alternating between
  // level 0 and every edge, each switch is timed (set_level) with the first run after it, beside
  // the median of the runs that follow at that level.
  nlohmann::json switching;
  if (args.flag("switch-levels")) {
    if (!runner.integer) throw UsageError("--switch-levels goes with --engine integer");
    tern::IntegerExecutor& engine_levels = *runner.integer;
    const int top = engine_levels.max_level();
    check(top > 0, model + ": --switch-levels needs a model with residual levels (quantize with --residual)");
    const int start_level = engine_levels.level();
    std::vector<double> set_us, first_ms[2], steady_ms[2];
    auto ms_since = [](auto t) { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count(); };
    const auto begin = std::chrono::steady_clock::now();
    for (int round = 0; round < 10 || ms_since(begin) < 1e3 * seconds; ++round) {
      const int side = round % 2, level = side ? top : 0;
      auto t0 = std::chrono::steady_clock::now();
      engine_levels.set_level(level);
      set_us.push_back(1e3 * ms_since(t0));
      auto t1 = std::chrono::steady_clock::now();
      executor.run(x);
      first_ms[side].push_back(ms_since(t1));
      for (int k = 0; k < 3; ++k) {
        auto t2 = std::chrono::steady_clock::now();
        executor.run(x);
        steady_ms[side].push_back(ms_since(t2));
      }
    }
    engine_levels.set_level(start_level);
    auto median = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    switching = {{"levels", {0, top}},
                 {"switches", set_us.size()},
                 {"set_level_us", median(set_us)},
                 {"first_run_ms", {median(first_ms[0]), median(first_ms[1])}},
                 {"steady_run_ms", {median(steady_ms[0]), median(steady_ms[1])}}};
    if (!args.flag("json"))
      std::printf("level switch 0 <-> %d (%zu switches): set_level %.1f us; first run after it %.3f / %.3f ms, "
                  "steady %.3f / %.3f ms (level 0 / %d)\n",
                  top, set_us.size(), median(set_us), median(first_ms[0]), median(first_ms[1]), median(steady_ms[0]),
                  median(steady_ms[1]), top);
  }
  if (args.flag("profile")) {
    auto nodes = executor.profile();
    double total = 0;
    for (const auto& n : nodes) total += n.seconds;
    std::sort(nodes.begin(), nodes.end(), [](const auto& a, const auto& b) { return a.seconds > b.seconds; });
    std::fprintf(stderr, "%-40s %-18s %10s %7s\n", "node", "op", "ms/run", "share");
    for (const auto& n : nodes)
      std::fprintf(stderr, "%-40s %-18s %10.3f %6.1f%%\n", n.name.c_str(), n.op.c_str(),
                   1e3 * n.seconds / static_cast<double>(std::max<int64_t>(1, n.runs)), 100.0 * n.seconds / total);
  }
  std::sort(times.begin(), times.end());
  double median = times[times.size() / 2];
  double ips = static_cast<double>(batch) / median;
  if (args.flag("json")) {
    std::cout << nlohmann::json{{"model", model}, {"engine", engine}, {"batch", batch}, {"runs", times.size()},
                                {"median_ms", median * 1e3}, {"min_ms", times.front() * 1e3},
                                {"images_per_s", ips}, {"peak_rss_bytes", peak_rss_bytes()},
                                {"threads", tern::ThreadPool::global().size()},
                                {"isa", tern::kernels::to_string(tern::kernels::active_isa())},
                                {"level_switch", switching}}
                     .dump()
              << "\n";
  } else {
    std::printf("%s %s batch %lld: median %.3f ms (min %.3f), %.0f images/s, %zu runs, %d threads, %s kernels, peak RSS %.1f MiB\n",
                model.c_str(), engine, static_cast<long long>(batch), median * 1e3, times.front() * 1e3, ips, times.size(),
                tern::ThreadPool::global().size(), tern::kernels::to_string(tern::kernels::active_isa()),
                static_cast<double>(peak_rss_bytes()) / (1 << 20));
  }
  return 0;
}

// finetune and train live in tern-train beside this executable (libtorch is large: loading it
// for every command cost half a second); it replaces this process, arguments unchanged.
[[noreturn]] void exec_training_command(const std::string& command, char** argv) {
  char self[4096];
  ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  check(n > 0, "cannot locate the tern executable (/proc/self/exe)");
  self[n] = '\0';
  std::string dir(self);
  dir = dir.substr(0, dir.rfind('/'));
  std::string trainer = dir + "/tern-train";
  if (::access(trainer.c_str(), X_OK) != 0)
    throw Error("this tern was built without libtorch: 'tern " + command + "' needs " + trainer +
                " (apt-get install libtorch-dev, rebuild)");
  std::fflush(nullptr);
  ::execv(trainer.c_str(), argv);
  throw Error("cannot run " + trainer + " (" + std::strerror(errno) + ")");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? kExitUsage : 0;
  }
  if (!std::strcmp(argv[1], "finetune") || !std::strcmp(argv[1], "train")) {
    try {
      exec_training_command(argv[1], argv);
    } catch (const Error& e) {
      std::fprintf(stderr, "tern: %s\n", e.what());
      return kExitError;
    }
  }
  return run_command(argc, argv, [](const std::string& command, int n, char** args) {
    if (command == "quantize") return cmd_quantize(n, args);
    if (command == "eval") return cmd_eval(n, args);
    if (command == "run") return cmd_run(n, args);
    if (command == "compare") return cmd_compare(n, args);
    if (command == "inspect") return cmd_inspect(n, args);
    if (command == "export") return cmd_export(n, args);
    if (command == "bench") return cmd_bench(n, args);
    if (command == "accum") return cmd_accum(n, args);
    if (command == "version" || command == "--version") {
      std::printf("tern %s\n", TERN_VERSION);
      return 0;
    }
    throw UsageError("unknown command '" + command + "' (try 'tern --help')");
  });
}
