// tern finetune: FAQ fine-tuning after quantization on libtorch (built when libtorch is found).
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/training_cli.h"
#include "core/file_io.h"
#include "tern/evaluate.h"
#include "tern/finetune.h"
#include "tern/integer_executor.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"
#include "tern/quantized_model.h"

namespace tern::cli {
int cmd_finetune(int argc, char** argv) {
  namespace q = tern::quant;
  Args args("finetune", argc, argv, 2,
            {"output", "weights", "method", "group", "acts", "epochs", "batch", "lr", "lr-final", "schedule", "momentum",
             "weight-decay", "label-smoothing", "data", "labels", "train-images", "calib-images", "percentile", "seed", "threads",
             "checkpoint", "checkpoint-every", "resume", "onnx-out", "steps", "gradient-noise", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout", "input-shape"},
            {"all-layers", "no-augment", "no-progress", "eval", "json"});
  std::string in_path = args.model("finetune");
  if (!args.has("output")) throw UsageError("'tern finetune' needs -o OUT.tern");
  std::string out_path = args.get("output");
  if (out_path.empty()) throw UsageError("-o: empty path");
  std::string onnx_out = args.get("onnx-out", (ends_with(out_path, ".tern") ? out_path.substr(0, out_path.size() - 5) : out_path) + ".onnx");
  check(onnx_out != in_path, "--onnx-out would overwrite the input model " + in_path);

  // Every option is checked before any work.
  train::FinetuneOptions o;
  q::WeightQuantConfig& w = o.plan.weights;
  try {
    std::string spec = args.get("weights", "ternary:4");
    std::string group = args.has("group") ? args.get("group") : "";
    if (size_t colon = spec.find(':'); colon != std::string::npos) {  // ternary:N
      check(!args.has("group"), "--weights " + spec + " already gives the group size; drop --group");
      group = spec.substr(colon + 1);
      spec = spec.substr(0, colon);
    }
    q::parse_weight_spec(spec, w, "--weights");
    check(w.format != q::WeightFormat::kFloat32, "--weights float32: nothing to quantize (fine-tuning is for quantized models)");
    if (args.has("method")) {
      check(w.format == q::WeightFormat::kTernary, "--method applies to ternary weights only");
      w.method = q::parse_ternary_method(args.get("method"), "--method");
    }
    if (group.empty()) group = w.format == q::WeightFormat::kInt ? "channel" : "4";
    w.group_size = q::parse_group_size(group, "--weights/--group");
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  std::string acts = args.get("acts", "8");
  if (acts != "8" && acts != "4") throw UsageError("--acts: expected 8 or 4, got '" + acts + "'");
  o.plan.activation_bits = std::stoi(acts);
  o.plan.first_last_8bit = !args.flag("all-layers");
  o.plan.depthwise_8bit = !args.flag("all-layers");
  o.epochs = static_cast<int>(args.get_int("epochs", 1, 1, 10000));
  o.batch = args.get_int("batch", 256, 1, 1 << 16);
  o.lr = args.get_double("lr", 1e-4, 1e-12, 10);
  o.lr_final = args.get_double("lr-final", -1, 0, 10);  // 0 only for cosine and step (checked by finetune)
  try {
    o.schedule = train::parse_lr_schedule(args.get("schedule", "exp"));
  } catch (const Error& e) {
    throw UsageError(std::string("--schedule: ") + e.what());
  }
  o.momentum = args.get_double("momentum", 0.9, 0, 0.999);
  o.weight_decay = args.get_double("weight-decay", 1e-4, 0, 1);
  o.label_smoothing = args.get_double("label-smoothing", 0, 0, 0.99);
  o.seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, int64_t{1} << 62));
  o.augment = !args.flag("no-augment");
  o.progress = !args.flag("no-progress") && !args.flag("json");
  o.train_images = args.get_int("train-images", 0, 0, int64_t{1} << 40);
  o.calibration_images = args.get_int("calib-images", 512, 1, 1 << 20);
  o.percentile = args.get_double("percentile", 0, 1e-9, 100);
  o.max_steps = args.get_int("steps", 0, 0, int64_t{1} << 40);
  o.gradient_noise_batches = args.get_int("gradient-noise", 0, 2, 1 << 16);
  // Checkpoints go to OUT.ckpt by default (every epoch) and are removed once the run has finished.
  const bool keep_checkpoint = args.has("checkpoint");
  o.checkpoint_path = args.get("checkpoint", out_path + ".ckpt");
  o.checkpoint_every = args.get_int("checkpoint-every", 0, 1, int64_t{1} << 40);
  o.resume_path = args.get("resume");
  // --resume may name the checkpoint it goes on writing; no other input may be an output.
  check_output_paths({in_path, args.get("data"), args.get("labels")}, {out_path, onnx_out, o.checkpoint_path});
  if (args.has("threads")) torch::set_num_threads(static_cast<int>(args.get_int("threads", 1, 1, 1024)));

  // The graph fine-tuning trains: BatchNorm and activations stay separate nodes.
  TrainingModel model = load_training_model(in_path, input_shapes(args));
  const std::string& bytes = model.bytes;
  const Graph& raw = model.raw;
  const Graph& graph = model.graph;
  Preprocess norm = preprocess(args, graph);
  std::string spec = data_spec(args, &graph);
  if (spec.empty()) throw UsageError("--data is required (labelled images: a folder with class sub-folders, fashion-mnist, an IDX directory, or X.npy with --labels)");
  if (is_npy_spec(spec) && !args.has("labels")) throw UsageError("--data " + spec + " needs --labels Y.npy");
  if (is_npy_spec(spec) && args.flag("eval"))
    throw UsageError("--eval needs a data set with a test split (fashion-mnist or an IDX directory), not .npy arrays");
  Dataset train = load_data(args, &graph, "train");
  check(train.labelled(), spec + ": fine-tuning needs labelled images (class sub-folders, or --labels)");
  // The input's range: proved for pixels, measured for float arrays (as quantize does).
  InputRange range = train.pixels() ? input_range(norm)
                                    : measured_range(make_batch(train, 0, std::min<int64_t>(o.calibration_images, train.size()), norm,
                                                                graph.value(graph.inputs[0]).shape));
  o.input_non_negative = range.non_negative();
  if (train.pixels()) o.input_threshold = range.threshold();

  train::FinetuneResult r = train::finetune(graph, train, norm, o);

  nlohmann::json prov = nlohmann::json::parse(r.model.provenance_json);
  prov["source"] = in_path;
  prov["source_sha256"] = sha256_hex(bytes);
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  prov["command"] = command;
  prov["training_data"] = train.name + " (train split)";
  r.model.provenance_json = prov.dump();
  write_onnx_with_initializers(in_path, onnx_out, onnx_replacements(raw, r.trained_values, in_path),
                               {{"tern.finetuned", command}});
  q::save_quantized_model(out_path, r.model);
  if (!keep_checkpoint) std::remove(o.checkpoint_path.c_str());

  nlohmann::json report = {{"model", out_path}, {"onnx", onnx_out}, {"source", in_path}, {"steps", r.steps},
                           {"seconds", r.seconds}, {"weight_cosine", r.weight_cosine},
                           {"min_layer_cosine", r.min_layer_cosine}, {"min_layer", r.min_layer},
                           {"threads", torch::get_num_threads()}};
  nlohmann::json epochs = nlohmann::json::array();
  for (const auto& e : r.epochs)
    epochs.push_back({{"epoch", e.epoch}, {"steps", e.steps}, {"loss", e.loss}, {"train_accuracy", e.accuracy}, {"seconds", e.seconds}});
  report["epochs"] = epochs;
  if (!r.gradient_noise.empty()) report["gradient_noise"] = prov["finetune"]["gradient_noise"];
  if (!args.flag("json")) {
    std::printf("fine-tuned  %s -> %s, %s\n", in_path.c_str(), out_path.c_str(), onnx_out.c_str());
    std::printf("%lld steps in %.1f s; weights' cosine similarity to FP32 %.4f (lowest layer %.4f, %s)\n",
                static_cast<long long>(r.steps), r.seconds, r.weight_cosine, r.min_layer_cosine, r.min_layer.c_str());
    if (!r.gradient_noise.empty())
      std::printf("\ngradient noise (%lld minibatches of %lld images; Conv/Gemm weights)\n%-16s %12s %12s %10s %8s\n",
                  static_cast<long long>(r.gradient_noise[0].batches), static_cast<long long>(r.gradient_noise[0].batch),
                  "network", "variance", "signal", "relative", "loss");
    for (const train::GradientNoise& g : r.gradient_noise)
      std::printf("%-16s %12.4g %12.4g %10.4g %8.4f\n", g.network.c_str(), g.variance, g.signal, g.relative, g.loss);
  }
  if (args.flag("eval")) {
    Dataset test = load_data(args, &graph, "test");
    Graph folded = raw;
    optimize(folded);
    Executor fp32(folded);
    Executor ptq(q::simulation_graph(r.start));
    Executor faq(q::simulation_graph(r.model));
    IntegerExecutor integer(r.model);
    struct Row { const char* name; InferenceEngine* engine; };
    const Row rows[] = {{"fp32", &fp32}, {"ptq", &ptq}, {"faq", &faq}, {"faq_integer", &integer}};
    if (!args.flag("json")) std::printf("\n%-22s %8s\n", "", "top-1 %");
    for (const Row& row : rows) {
      EvalResult e = evaluate_classifier(*row.engine, test, norm);
      report[std::string(row.name) + "_top1"] = e.top1;
      report["eval_images"] = e.images;
      if (!args.flag("json")) std::printf("%-22s %8.2f\n", row.name, e.top1);
    }
    report["integer_mode"] = integer.fused() ? "fused" : "hybrid";
    if (!args.flag("json"))
      std::printf("on %lld %s test images; integer engine: %s\n", static_cast<long long>(report["eval_images"].get<int64_t>()),
                  test.name.c_str(), integer.fused() ? "fused" : "hybrid");
  }
  if (args.flag("json")) std::cout << report.dump() << "\n";
  return 0;
}

}  // namespace tern::cli
