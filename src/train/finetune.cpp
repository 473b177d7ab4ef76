#include "tern/finetune.h"

#include <torch/torch.h>


#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "format/graph_json.h"
#include "tern/error.h"
#include "tern/passes.h"
#include "tern/tern_file.h"
#include "train/fake_quant.h"
#include "train/trainable_graph.h"
#include "train/training_loop.h"

namespace tern::train {

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "exp") return LrSchedule::kExponential;
  if (name == "cosine") return LrSchedule::kCosine;
  if (name == "step") return LrSchedule::kStep;
  throw Error("unknown learning-rate schedule '" + name + "' (expected exp, cosine or step)");
}

const char* lr_schedule_name(LrSchedule s) {
  switch (s) {
    case LrSchedule::kExponential: return "exp";
    case LrSchedule::kCosine: return "cosine";
    case LrSchedule::kStep: return "step";
  }
  return "?";
}

double learning_rate(LrSchedule s, double lr, double lr_final, int64_t step, int64_t total) {
  double t = total > 1 ? static_cast<double>(step) / static_cast<double>(total - 1) : 0.0;
  switch (s) {
    case LrSchedule::kExponential: return lr * std::pow(lr_final / lr, t);
    case LrSchedule::kCosine: return lr_final + (lr - lr_final) * 0.5 * (1.0 + std::cos(M_PI * t));
    case LrSchedule::kStep: return t < 0.5 ? lr : t < 0.75 ? lr / 10 : lr / 100;
  }
  return lr;
}

namespace {

using nlohmann::json;
constexpr const char* kCheckpointKind = "tern-finetune-checkpoint";
constexpr int kCheckpointVersion = 1;

// The optimizer's state: what a checkpoint must hold to continue exactly.
struct TrainingState {
  int64_t step = 0;                      // completed steps
  std::vector<torch::Tensor> momentum;   // one per parameter
  std::vector<EpochRecord> epochs;       // completed epochs
  double loss_sum = 0;                   // the current epoch so far
  int64_t correct = 0, seen = 0, epoch_steps = 0;
};

void save_finetune_checkpoint(const std::string& path, const std::string& fingerprint, std::vector<Parameter>& params,
                              const TrainingState& s) {
  std::vector<CheckpointTensor> tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    tensors.push_back({params[i].name, "parameter", params[i].value});
    tensors.push_back({params[i].name, "momentum", s.momentum[i]});
  }
  json epochs = json::array();
  for (const EpochRecord& e : s.epochs)
    epochs.push_back({{"epoch", e.epoch}, {"steps", e.steps}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"seconds", e.seconds}});
  json j = {{"step", s.step},       {"epochs", epochs}, {"loss_sum", s.loss_sum},
            {"correct", s.correct}, {"seen", s.seen},   {"epoch_steps", s.epoch_steps}};
  save_checkpoint(path, kCheckpointKind, kCheckpointVersion, fingerprint, j, tensors);
}

void load_finetune_checkpoint(const std::string& path, const std::string& fingerprint, std::vector<Parameter>& params,
                              TrainingState& s) {
  std::vector<CheckpointTensor> tensors;
  for (size_t i = 0; i < params.size(); ++i) {
    tensors.push_back({params[i].name, "parameter", params[i].value});
    tensors.push_back({params[i].name, "momentum", s.momentum[i]});
  }
  json j = load_checkpoint(path, kCheckpointKind, kCheckpointVersion, fingerprint, tensors);
  try {
    s.step = j.at("step").get<int64_t>();
    s.loss_sum = j.at("loss_sum").get<double>();
    s.correct = j.at("correct").get<int64_t>();
    s.seen = j.at("seen").get<int64_t>();
    s.epoch_steps = j.at("epoch_steps").get<int64_t>();
    check(s.step >= 0 && s.seen >= 0 && s.correct >= 0 && s.epoch_steps >= 0, path + ": negative counters");
    s.epochs.clear();
    for (const json& e : j.at("epochs"))
      s.epochs.push_back({e.at("epoch").get<int>(), e.at("steps").get<int64_t>(), e.at("loss").get<double>(),
                          e.at("accuracy").get<double>(), e.at("seconds").get<double>()});
  } catch (const json::exception& e) {
    throw Error(path + ": malformed checkpoint: " + e.what());
  }
}

double cosine(const Tensor& a, const Tensor& b, double* dot_out = nullptr, double* aa_out = nullptr,
              double* bb_out = nullptr) {
  double dot = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < a.size(); ++i) {
    double x = a.data<float>()[i], y = b.data<float>()[i];
    dot += x * y;
    aa += x * x;
    bb += y * y;
  }
  if (dot_out) *dot_out += dot, *aa_out += aa, *bb_out += bb;
  return aa > 0 && bb > 0 ? dot / std::sqrt(aa * bb) : 1.0;
}

const Tensor& constant_named(const Graph& g, const std::string& name) {
  for (const Value& v : g.values)
    if (v.name == name && v.constant) return *v.constant;
  throw Error(g.source + ": no constant '" + name + "'");
}

// The loss fine-tuning minimizes on images `indices` (step `step`'s augmentation).
torch::Tensor training_loss(TrainableGraph& net, const TrainingData& data, const std::vector<int64_t>& indices, int64_t step,
                            const FinetuneOptions& options, torch::Tensor* logits_out = nullptr) {
  std::mt19937_64 augment_rng = augmentation_rng(options.seed, step);
  torch::Tensor x = make_training_batch(data, indices, options.augment, augment_rng);
  torch::Tensor y = batch_labels(data, indices);
  torch::Tensor logits = net.forward(x);
  if (logits_out) *logits_out = logits;
  return torch::nn::functional::cross_entropy(
      logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing));
}

// GradientNoise of `net` at its current weights over the run's first `batches` minibatches.
// Welford's update per element, in float64: no K copies of the gradient are kept.
GradientNoise gradient_noise(TrainableGraph& net, const TrainingData& data, int64_t batches, int64_t batch,
                             const FinetuneOptions& options, const std::string& network) {
  GradientNoise r;
  r.network = network;
  r.batches = batches;
  r.batch = batch;
  std::vector<Parameter>& params = net.parameters();
  std::vector<size_t> weights;
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].decay) weights.push_back(i);
  std::vector<torch::Tensor> mean;
  std::vector<double> m2(weights.size(), 0.0);
  for (size_t i : weights) mean.push_back(torch::zeros_like(params[i].value, torch::kFloat64));
  const int64_t n = data.size(), per_epoch = n / batch;
  std::vector<int64_t> order;
  double loss_sum = 0;
  for (int64_t k = 0; k < batches; ++k) {
    const int64_t epoch = k / per_epoch, pos = k % per_epoch;
    if (pos == 0) order = epoch_order(options.seed, epoch, n);
    std::vector<int64_t> indices(order.begin() + pos * batch, order.begin() + (pos + 1) * batch);
    for (Parameter& p : params)
      if (p.value.grad().defined()) p.value.mutable_grad().zero_();
    torch::Tensor loss = training_loss(net, data, indices, k, options);
    loss_sum += loss.item<double>();
    loss.backward();
    torch::NoGradGuard no_grad;
    for (size_t j = 0; j < weights.size(); ++j) {
      torch::Tensor g = params[weights[j]].value.grad();
      g = g.defined() ? g.to(torch::kFloat64) : torch::zeros_like(mean[j]);
      torch::Tensor delta = g - mean[j];
      mean[j].add_(delta, 1.0 / static_cast<double>(k + 1));
      m2[j] += (delta * (g - mean[j])).sum().item<double>();
    }
  }
  for (Parameter& p : params)
    if (p.value.grad().defined()) p.value.mutable_grad().zero_();
  const double K = static_cast<double>(batches);
  for (size_t j = 0; j < weights.size(); ++j) {
    GradientNoise::Layer l;
    l.name = params[weights[j]].name;
    l.variance = batches > 1 ? m2[j] / (K - 1) : 0.0;
    l.signal = mean[j].square().sum().item<double>() - l.variance / K;
    r.variance += l.variance;
    r.signal += l.signal;
    r.layers.push_back(l);
  }
  r.relative = r.signal > 0 ? r.variance / r.signal : INFINITY;
  r.loss = loss_sum / K;
  return r;
}

nlohmann::json noise_json(const GradientNoise& g) {
  nlohmann::json layers = nlohmann::json::array();
  for (const GradientNoise::Layer& l : g.layers)
    layers.push_back({{"name", l.name}, {"variance", l.variance}, {"signal", l.signal}});
  return {{"network", g.network}, {"batches", g.batches}, {"batch", g.batch}, {"variance", g.variance},
          {"signal", g.signal}, {"relative", std::isfinite(g.relative) ? nlohmann::json(g.relative) : nlohmann::json()},
          {"loss", g.loss}, {"layers", layers}};
}

}  // namespace

FinetuneResult finetune(const Graph& graph, const Dataset& train, const Preprocess& norm,
                        const FinetuneOptions& options) {
  const std::string src = graph.source.empty() ? std::string("model") : graph.source;
  check(options.epochs >= 1, "fine-tuning: --epochs must be at least 1");
  check(options.batch >= 1, "fine-tuning: --batch must be at least 1");
  check(std::isfinite(options.lr) && options.lr > 0, "fine-tuning: --lr must be positive");
  check(options.momentum >= 0 && options.momentum < 1, "fine-tuning: --momentum must be in [0, 1)");
  check(options.weight_decay >= 0, "fine-tuning: --weight-decay must be >= 0");
  check(options.label_smoothing >= 0 && options.label_smoothing < 1, "fine-tuning: --label-smoothing must be in [0, 1)");
  const double lr_final = options.lr_final < 0 ? options.lr / 1000 : options.lr_final;
  check(lr_final > 0 || options.schedule != LrSchedule::kExponential, "fine-tuning: --lr-final must be positive for exp");
  check(train.size() > 0, train.name + ": no training images");
  check(graph.inputs.size() == 1, src + ": fine-tuning supports single-input models");
  const int64_t n_train = options.train_images > 0 ? std::min(options.train_images, train.size()) : train.size();
  const Shape& input_shape = graph.value(graph.inputs[0]).shape;

  FinetuneResult result;
  // The FP32 model as `tern quantize` sees it, and the quantized starting point. Activation ranges:
  // FAQ's high percentile, rounded up to a power of two, per layer by its activation bits.
  Graph folded = graph;
  optimize(folded);
  Tensor calibration = make_batch(train, 0, std::min(options.calibration_images, n_train), norm, input_shape);
  quant::QuantizeOptions q;
  q.plan = options.plan;
  q.activation_mode = quant::ActivationMode::kCalibrated;
  q.calibration = quant::CalibrationMethod::kPercentile;
  q.power_of_two = true;
  q.output_aware = false;
  q.input_non_negative = options.input_non_negative;
  q.input_threshold = options.input_threshold;
  auto percentile_for = [&](int bits) { return options.percentile > 0 ? options.percentile : bits >= 8 ? 99.99 : 99.9; };
  std::map<double, quant::QuantizedModel> by_percentile;
  for (const quant::LayerPlan& p : quant::make_plan(folded, options.plan))
    if (p.activation_bits > 0) by_percentile.try_emplace(percentile_for(p.activation_bits));
  if (by_percentile.empty()) by_percentile.try_emplace(percentile_for(8));
  for (auto& [pct, m] : by_percentile) {
    q.percentile = pct;
    m = quant::quantize_model(folded, q, &calibration);
  }
  if (by_percentile.size() == 1) {
    result.start = std::move(by_percentile.begin()->second);
  } else {  // one model with each layer's activation quantizer from its own percentile
    const quant::QuantizedModel& any = by_percentile.begin()->second;
    for (const quant::QuantizedLayer& l : any.layers)
      if (l.input) q.fixed_activations[l.node] = *by_percentile.at(percentile_for(l.input->bits)).find(l.node)->input;
    result.start = quant::quantize_model(folded, q, &calibration);
  }
  q.fixed_activations.clear();
  for (const quant::QuantizedLayer& l : result.start.layers)
    if (l.input) q.fixed_activations[l.node] = *l.input;

  TrainableGraph net(graph, result.start.layers);
  std::vector<Parameter>& params = net.parameters();

  TrainingData data = load_training_data(train, n_train, norm, input_shape);
  int64_t classes = 0;
  {
    torch::NoGradGuard no_grad;
    torch::Tensor probe = net.forward(data.images.slice(0, 0, 1));
    check(probe.dim() == 2, src + ": the output must be [batch, classes] logits to fine-tune a classifier");
    classes = probe.size(1);
  }
  for (int64_t i = 0; i < n_train; ++i)
    check(data.labels[static_cast<size_t>(i)] >= 0 && data.labels[static_cast<size_t>(i)] < classes,
          train.name + ": label " + std::to_string(data.labels[static_cast<size_t>(i)]) + " of image " + std::to_string(i) +
              " is outside the model's " + std::to_string(classes) + " classes");

  const int64_t batch = std::min(options.batch, n_train);
  const int64_t steps_per_epoch = n_train / batch;  // the last partial batch is dropped
  const int64_t total_steps = steps_per_epoch * options.epochs;
  const int64_t stop = options.max_steps > 0 ? std::min(options.max_steps, total_steps) : total_steps;

  Fingerprint fp;
  {
    json o = {{"weights", int(options.plan.weights.format)}, {"bits", options.plan.weights.bits},
              {"method", int(options.plan.weights.method)}, {"group", options.plan.weights.group_size},
              {"float_scales", options.plan.weights.float_scales}, {"log_scales", options.plan.weights.log_scales},
              {"acts", options.plan.activation_bits}, {"first_last", options.plan.first_last_8bit},
              {"epochs", options.epochs}, {"batch", batch}, {"lr", options.lr}, {"lr_final", lr_final},
              {"schedule", lr_schedule_name(options.schedule)}, {"momentum", options.momentum},
              {"wd", options.weight_decay}, {"ls", options.label_smoothing}, {"seed", options.seed}, {"augment", options.augment},
              {"images", n_train}, {"calibration", options.calibration_images}, {"percentile", options.percentile}};
    fp.add(o.dump());
    for (const Parameter& p : params) {
      fp.add(p.name);
      fp.add(p.value);
    }
    fp.add(data.images);
    fp.add(data.labels.data(), data.labels.size() * sizeof(int64_t));
  }

  TrainingState state;
  for (const Parameter& p : params) state.momentum.push_back(torch::zeros_like(p.value).set_requires_grad(false));
  if (!options.resume_path.empty()) {
    load_finetune_checkpoint(options.resume_path, fp.hex(), params, state);
    check(state.step <= total_steps, options.resume_path + ": checkpoint is past the end of this run");
  }

  const int64_t noise_batches = options.gradient_noise_batches;
  if (noise_batches > 0) {
    check(noise_batches >= 2, "fine-tuning: --gradient-noise needs at least 2 minibatches");
    check(noise_batches * batch <= 16 * n_train, "fine-tuning: --gradient-noise " + std::to_string(noise_batches) +
                                                     " minibatches of " + std::to_string(batch) +
                                                     " images is over 16 passes of the training images");
    TrainableGraph fp32(graph, {});
    result.gradient_noise.push_back(gradient_noise(fp32, data, noise_batches, batch, options, "fp32 start"));
    result.gradient_noise.push_back(gradient_noise(net, data, noise_batches, batch, options, "quantized start"));
  }

  ProgressBar bar(options.progress);
  auto t_start = std::chrono::steady_clock::now();
  auto epoch_start = t_start;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (; state.step < stop; ++state.step) {
    const int64_t epoch = state.step / steps_per_epoch, pos = state.step % steps_per_epoch;
    if (order_epoch != epoch) order = epoch_order(options.seed, epoch, n_train), order_epoch = epoch;
    std::vector<int64_t> indices(order.begin() + pos * batch, order.begin() + (pos + 1) * batch);
    const double lr = learning_rate(options.schedule, options.lr, lr_final, state.step, total_steps);
    torch::Tensor logits;
    torch::Tensor loss = training_loss(net, data, indices, state.step, options, &logits);
    torch::Tensor y = batch_labels(data, indices);
    const double loss_value = loss.item<double>();
    check(std::isfinite(loss_value), src + ": fine-tuning diverged at step " + std::to_string(state.step + 1) +
                                         " (loss " + std::to_string(loss_value) + "); lower --lr");
    for (Parameter& p : params)
      if (p.value.grad().defined()) p.value.mutable_grad().zero_();
    loss.backward();
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params.size(); ++i) {
        torch::Tensor g = params[i].value.grad();
        if (!g.defined()) continue;
        if (params[i].decay && options.weight_decay > 0) g = g + options.weight_decay * params[i].value;
        state.momentum[i].mul_(options.momentum).add_(g);
        params[i].value.sub_(state.momentum[i], lr);
      }
    }
    state.loss_sum += loss_value * static_cast<double>(batch);
    state.correct += logits.argmax(1).eq(y).sum().item<int64_t>();
    state.seen += batch;
    ++state.epoch_steps;

    auto now = std::chrono::steady_clock::now();
    const bool epoch_done = pos + 1 == steps_per_epoch;
    bar.step(static_cast<int>(epoch + 1), options.epochs, pos + 1, steps_per_epoch, state.loss_sum / state.seen,
             100.0 * static_cast<double>(state.correct) / static_cast<double>(state.seen), batch, stop - state.step - 1);
    if (epoch_done) {
      state.epochs.push_back({static_cast<int>(epoch + 1), state.epoch_steps, state.loss_sum / state.seen,
                              100.0 * static_cast<double>(state.correct) / static_cast<double>(state.seen),
                              std::chrono::duration<double>(now - epoch_start).count()});
      epoch_start = now;
      state.loss_sum = 0;
      state.correct = state.seen = state.epoch_steps = 0;
    }
    bool checkpoint_due = options.checkpoint_every > 0 ? (state.step + 1) % options.checkpoint_every == 0 : epoch_done;
    if (!options.checkpoint_path.empty() && (checkpoint_due || state.step + 1 == stop)) {
      TrainingState saved = state;
      ++saved.step;  // this step is complete
      save_finetune_checkpoint(options.checkpoint_path, fp.hex(), params, saved);
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  result.steps = state.step;
  result.epochs = state.epochs;
  if (state.epoch_steps > 0)  // a run stopped mid-epoch reports the partial epoch
    result.epochs.push_back({static_cast<int>(state.step / steps_per_epoch + 1), state.epoch_steps,
                             state.loss_sum / state.seen, 100.0 * static_cast<double>(state.correct) / state.seen,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count()});

  if (noise_batches > 0 && result.steps > 1)
    result.gradient_noise.push_back(gradient_noise(net, data, noise_batches, batch, options, "quantized end"));

  // The fine-tuned model: fold, quantize with the same plan and the activation scales it trained with.
  result.trained = net.trained_graph();
  for (const Parameter& p : params) result.trained_values[p.name] = constant_named(result.trained, p.name).clone();
  Graph trained_folded = result.trained;
  optimize(trained_folded);
  q.activation_mode = quant::ActivationMode::kDynamic;  // every quantized input is fixed above
  result.model = quant::quantize_model(trained_folded, q, nullptr);

  double dot = 0, aa = 0, bb = 0;
  for (const quant::QuantizedLayer& l : result.model.layers) {
    double c = cosine(constant_named(folded, l.weight_value), constant_named(trained_folded, l.weight_value), &dot, &aa, &bb);
    if (c < result.min_layer_cosine) result.min_layer_cosine = c, result.min_layer = l.node;
  }
  result.weight_cosine = aa > 0 && bb > 0 ? dot / std::sqrt(aa * bb) : 1.0;

  json epochs = json::array();
  for (const EpochRecord& e : result.epochs)
    epochs.push_back({{"epoch", e.epoch}, {"steps", e.steps}, {"loss", e.loss}, {"train_accuracy", e.accuracy}, {"seconds", e.seconds}});
  json ft = {{"method", "FAQ (fake quantization, straight-through gradients, momentum SGD)"},
             {"epochs", options.epochs}, {"steps", result.steps}, {"batch", batch}, {"lr", options.lr},
             {"lr_final", lr_final}, {"schedule", lr_schedule_name(options.schedule)}, {"momentum", options.momentum},
             {"weight_decay", options.weight_decay}, {"label_smoothing", options.label_smoothing}, {"seed", options.seed}, {"augment", options.augment},
             {"train_images", n_train}, {"threads", torch::get_num_threads()}, {"seconds", result.seconds},
             {"weight_cosine", result.weight_cosine}, {"min_layer_cosine", result.min_layer_cosine},
             {"history", epochs}};
  if (!result.gradient_noise.empty()) {
    json noise = json::array();
    for (const GradientNoise& g : result.gradient_noise) noise.push_back(noise_json(g));
    ft["gradient_noise"] = noise;
  }
  json prov = json::parse(result.start.provenance_json);
  prov["finetune"] = ft;
  result.provenance_json = prov.dump();
  result.model.provenance_json = result.provenance_json;
  return result;
}

}  // namespace tern::train
