// `tern quantize`'s options (args.h: quantize_options), shared with the Python package.
#include "cli/args.h"
#include "core/file_io.h"
#include "tern/quantized_model.h"

namespace tern::cli {

tern::quant::QuantizeOptions quantize_options(const Args& args) {
  namespace q = tern::quant;
  q::QuantizeOptions options;
  q::WeightQuantConfig& w = options.plan.weights;
  try {
    q::parse_weight_spec(args.get("weights", "ternary"), w, "--weights");
    if (args.has("method")) {
      check(w.format == q::WeightFormat::kTernary, "--method applies to ternary weights only");
      w.method = q::parse_ternary_method(args.get("method"), "--method");
    }
    std::string group = args.get("group", w.format == q::WeightFormat::kInt ? "channel" : "4");
    check(group != "tensor" || w.format == q::WeightFormat::kInt, "--group tensor applies to int weights only");
    w.group_size = q::parse_group_size(group, "--group");
    check(!(w.method == q::TernaryMethod::kCluster && w.group_size == q::kWholeFilter),
          "--method cluster needs --group N (filters per cluster)");
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  std::string acts = args.get("acts", "8");
  if (acts == "8" || acts == "4") options.plan.activation_bits = std::stoi(acts);
  else if (acts == "float" || acts == "float32") options.plan.activation_bits = 0;
  else throw UsageError("--acts: expected 8, 4 or float, got '" + acts + "'");
  std::string act_scale = args.get("act-scale", "real");
  if (act_scale != "real" && act_scale != "pow2") throw UsageError("--act-scale: expected real or pow2, got '" + act_scale + "'");
  options.power_of_two = act_scale == "pow2";
  std::string act_codes = args.get("act-codes", "auto");
  if (act_codes != "auto" && act_codes != "symmetric")
    throw UsageError("--act-codes: expected auto or symmetric, got '" + act_codes + "'");
  options.asymmetric = act_codes == "auto";
  std::string attention = args.get("attention", "float");
  if (attention != "float" && attention != "int8")
    throw UsageError("--attention: expected int8 or float, got '" + attention + "'");
  if (attention == "int8" && options.plan.activation_bits == 0) throw UsageError("--attention int8 needs quantized activations (--acts 8 or 4)");
  options.quantize_attention = attention == "int8";
  options.per_token_scales = args.flag("token-scales");
  if (options.per_token_scales && options.plan.activation_bits == 0) throw UsageError("--token-scales needs quantized activations (--acts 8 or 4)");
  options.plan.first_last_8bit = !args.flag("all-layers");
  options.plan.depthwise_8bit = !args.flag("all-layers");
  std::string rounding = args.get("rounding", "output");
  if (rounding != "output" && rounding != "weight")
    throw UsageError("--rounding: expected output or weight, got '" + rounding + "'");
  options.output_aware = rounding == "output";
  options.bias_correction = args.flag("bias-correction");
  options.equalize = args.flag("equalize");
  if (args.has("smooth")) options.smooth_alpha = args.get_double("smooth", 0.5, 0, 1);
  if (options.equalize && args.get("data-free", "") == "batchnorm")
    throw UsageError("--equalize rescales layers, and --data-free batchnorm reads ranges from the BatchNorm statistics they had");
  if (options.smooth_alpha && args.has("data-free") && !args.has("data"))
    throw UsageError("--smooth measures activations on calibration images: give --data (--data-free reads none by default)");
  if (options.bias_correction && args.has("data-free") && !args.has("data"))
    throw UsageError("--bias-correction measures means on calibration images: give --data (--data-free reads none by default)");
  std::string group_scales = args.get("group-scales", "u8");
  if (group_scales != "u8" && group_scales != "log8" && group_scales != "f32")
    throw UsageError("--group-scales: expected u8, log8 or f32, got '" + group_scales + "'");
  options.plan.weights.float_scales = group_scales == "f32";
  options.plan.weights.log_scales = group_scales == "log8";
  if (args.has("residual-terms")) {  // every ternary layer with K terms: uniform, all edges stored
    for (const char* o : {"residual", "residual-ranking", "residual-max-terms", "fallback"})
      if (args.has(o)) throw UsageError(std::string("--residual-terms is a shorthand that excludes --") + o);
    options.residual_max_terms = static_cast<int>(args.get_int("residual-terms", 1, 1, 16));
    options.residual.kind = q::ResidualBudget::Kind::kAll;
    options.residual_ranking = q::ResidualRanking::kUniform;
    options.residual_fallback = false;
  }
  if (args.has("max-drop")) {
    for (const char* o : {"residual", "residual-terms"})
      if (args.has(o)) throw UsageError(std::string("--max-drop is a budget of its own; it excludes --") + o);
    options.residual.kind = q::ResidualBudget::Kind::kDrop;
    options.residual.value = args.get_double("max-drop", 1, 0, 100);
  } else {
    for (const char* o : {"drop-images", "drop-data", "drop-labels"})
      if (args.has(o)) throw UsageError(std::string("--") + o + " goes with --max-drop");
  }
  if (args.has("drop-labels") && !(args.has("drop-data") && is_npy_spec(args.get("drop-data"))))
    throw UsageError("--drop-labels goes with an .npy --drop-data array");
  if (args.has("residual")) {
    try {
      options.residual = q::parse_residual_budget(args.get("residual"));
    } catch (const Error& e) {
      throw UsageError(std::string("--residual: ") + e.what());
    }
  } else if (!args.has("max-drop")) {
    for (const char* o : {"residual-ranking", "residual-max-terms", "fallback", "sensitivity-images", "seed"})
      if (args.has(o)) throw UsageError(std::string("--") + o + " goes with --residual");
  }
  if (args.has("residual-ranking")) {
    try {
      options.residual_ranking = q::parse_residual_ranking(args.get("residual-ranking"));
    } catch (const Error& e) {
      throw UsageError(std::string("--residual-ranking: ") + e.what());
    }
  } else if ((args.has("residual") || args.has("max-drop")) && args.has("data-free")) {
    options.residual_ranking = q::ResidualRanking::kWeights;  // no images to measure on
  }
  if (args.has("residual-max-terms"))
    options.residual_max_terms = static_cast<int>(args.get_int("residual-max-terms", 3, 1, 16));
  std::string fallback = args.get("fallback", "int8");
  if (fallback != "int8" && fallback != "none") throw UsageError("--fallback: expected int8 or none, got '" + fallback + "'");
  if (args.has("fallback")) options.residual_fallback = fallback == "int8";
  options.sensitivity_images = args.get_int("sensitivity-images", 256, 1, 1 << 20);
  options.residual_seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, int64_t{1} << 62));
  if (args.has("data-free")) {
    std::string mode = args.get("data-free");
    if (mode != "dynamic" && mode != "batchnorm")
      throw UsageError("--data-free: expected dynamic or batchnorm, got '" + mode + "'");
    for (const char* o : {"calibration", "percentile", "calib-images"})
      if (args.has(o)) throw UsageError(std::string("--") + o + " does not apply with --data-free");
    options.activation_mode = q::parse_activation_mode(mode);
  }
  options.choose_calibration = args.get("calibration", "percentile") == "auto";
  try {
    if (!options.choose_calibration)
      options.calibration = q::parse_calibration_method(args.get("calibration", "percentile"));
  } catch (const Error& e) {
    throw UsageError(std::string("--calibration: ") + e.what() + " or auto");
  }
  if (args.has("percentile") && (options.calibration != q::CalibrationMethod::kPercentile || options.choose_calibration))
    throw UsageError("--percentile goes with --calibration percentile");
  options.percentile = args.get_double("percentile", 99.99, 1e-9, 100);
  options.batch = args.get_int("batch", 64, 1, 1 << 16);
  if (args.has("config")) {
    options.config_json = tern::read_whole_file(args.get("config"));
    options.config_name = args.get("config");
  }

  return options;
}

}  // namespace tern::cli
