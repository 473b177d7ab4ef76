#include "tern/finetune.h"

#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "format/graph_json.h"
#include "tern/error.h"
#include "tern/passes.h"
#include "tern/tern_file.h"
#include "train/fake_quant.h"
#include "train/trainable_graph.h"

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

// FNV-1a, 64-bit: tells one run's checkpoint from another's (not a security hash).
struct Fingerprint {
  uint64_t h = 1469598103934665603ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  }
  void add(const std::string& s) { add(s.data(), s.size()); }
  std::string hex() const {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
    return buf;
  }
};

// Progress on stderr: one redrawn line on a terminal, a line per tenth of an epoch otherwise.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO)) {}
  void update(int epoch, int epochs, int64_t pos, int64_t steps, double loss, double accuracy, double images_per_s,
              double eta_s, bool done) {
    if (!enabled_) return;
    auto now = std::chrono::steady_clock::now();
    int64_t tenth = steps >= 10 ? steps / 10 : 1;
    bool due = tty_ ? done || std::chrono::duration<double>(now - last_).count() > 0.25 : done || (pos % tenth == 0);
    if (!due) return;
    last_ = now;
    constexpr int kWidth = 24;
    int filled = static_cast<int>(kWidth * pos / std::max<int64_t>(1, steps));
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    int eta = static_cast<int>(std::lround(eta_s));
    std::fprintf(stderr, "%sepoch %d/%d [%s] %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s  ETA %d:%02d%s",
                 tty_ ? "\r" : "", epoch, epochs, bar.c_str(), static_cast<long long>(pos), static_cast<long long>(steps),
                 loss, accuracy, images_per_s, eta / 60, eta % 60, tty_ && !done ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point last_{};
};

// The optimizer's state: what a checkpoint must hold to continue exactly.
struct TrainingState {
  int64_t step = 0;                      // completed steps
  std::vector<torch::Tensor> momentum;   // one per parameter
  std::vector<EpochRecord> epochs;       // completed epochs
  double loss_sum = 0;                   // the current epoch so far
  int64_t correct = 0, seen = 0, epoch_steps = 0;
};

void save_checkpoint(const std::string& path, const std::string& fingerprint, const std::vector<Parameter>& params,
                     const TrainingState& s) {
  std::vector<std::byte> payload;
  json tensors = json::array();
  auto put = [&](const std::string& name, const std::string& role, const torch::Tensor& t) {
    std::vector<float> v = to_vector(t);
    size_t offset = payload.size();
    payload.resize(offset + v.size() * sizeof(float));
    std::memcpy(payload.data() + offset, v.data(), v.size() * sizeof(float));
    tensors.push_back({{"name", name}, {"role", role}, {"offset", offset}, {"count", v.size()}});
  };
  for (size_t i = 0; i < params.size(); ++i) {
    put(params[i].name, "parameter", params[i].value);
    put(params[i].name, "momentum", s.momentum[i]);
  }
  json epochs = json::array();
  for (const EpochRecord& e : s.epochs)
    epochs.push_back({{"epoch", e.epoch}, {"steps", e.steps}, {"loss", e.loss}, {"accuracy", e.accuracy}, {"seconds", e.seconds}});
  json j = {{"kind", kCheckpointKind}, {"version", kCheckpointVersion}, {"fingerprint", fingerprint},
            {"step", s.step},          {"epochs", epochs},                {"loss_sum", s.loss_sum},
            {"correct", s.correct},    {"seen", s.seen},                  {"epoch_steps", s.epoch_steps},
            {"tensors", tensors}};
  write_tern_file(path, {{SectionType::kCheckpoint, format::to_bytes(j.dump())}, {SectionType::kTensors, std::move(payload)}});
}

void load_checkpoint(const std::string& path, const std::string& fingerprint, std::vector<Parameter>& params,
                     TrainingState& s) {
  TernFile file = TernFile::open(path);  // checks magic, sizes, checksums: a corrupt file stops here
  check(file.has_section(SectionType::kCheckpoint), path + ": not a fine-tuning checkpoint (no checkpoint section)");
  json j = format::parse_json_section(file.section(SectionType::kCheckpoint), "checkpoint");
  std::span<const std::byte> payload = file.section(SectionType::kTensors);
  try {
    check(j.at("kind") == kCheckpointKind, path + ": not a fine-tuning checkpoint");
    check(j.at("version").get<int>() == kCheckpointVersion, path + ": unsupported checkpoint version");
    check(j.at("fingerprint").get<std::string>() == fingerprint,
          path + ": checkpoint of a different model, data set or options (resume with the options it was made with)");
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
    const json& tensors = j.at("tensors");
    check(tensors.is_array() && tensors.size() == 2 * params.size(), path + ": tensor table does not match the model");
    for (size_t i = 0; i < tensors.size(); ++i) {
      const json& t = tensors[i];
      Parameter& p = params[i / 2];
      std::string role = i % 2 ? "momentum" : "parameter";
      check(t.at("name").get<std::string>() == p.name && t.at("role").get<std::string>() == role,
            path + ": tensor " + std::to_string(i) + " is not " + role + " '" + p.name + "'");
      uint64_t offset = t.at("offset").get<uint64_t>(), count = t.at("count").get<uint64_t>();
      check(count == static_cast<uint64_t>(p.value.numel()), path + ": '" + p.name + "' has the wrong size");
      check(offset <= payload.size() && count * sizeof(float) <= payload.size() - offset,
            path + ": '" + p.name + "' lies outside the tensor section");
      torch::Tensor value = torch::empty_like(p.value, torch::TensorOptions().requires_grad(false));
      std::memcpy(value.data_ptr<float>(), payload.data() + offset, count * sizeof(float));
      torch::NoGradGuard no_grad;
      if (i % 2) s.momentum[i / 2].copy_(value);
      else p.value.copy_(value);
    }
  } catch (const json::exception& e) {
    throw Error(path + ": malformed checkpoint: " + e.what());
  }
}

// Float NCHW images of the whole training set, normalized once.
struct TrainingData {
  torch::Tensor images;  // [N, ...]
  std::vector<int64_t> labels;
  std::vector<float> pad_value;  // per channel: a black pixel, normalized (augmentation's border)
};

// One batch: images `indices`, randomly cropped from a 2-pixel border and flipped when augmenting.
torch::Tensor make_training_batch(const TrainingData& d, const std::vector<int64_t>& indices, bool augment,
                                  std::mt19937_64& rng) {
  std::vector<int64_t> dims(d.images.sizes().begin(), d.images.sizes().end());
  dims[0] = static_cast<int64_t>(indices.size());
  torch::Tensor out = torch::empty(dims, torch::kFloat32);
  const int64_t per_image = d.images.numel() / std::max<int64_t>(1, d.images.size(0));
  const float* src = d.images.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const bool spatial = augment && dims.size() == 4 && dims[2] >= 8 && dims[3] >= 8;
  for (size_t b = 0; b < indices.size(); ++b) {
    const float* in = src + indices[b] * per_image;
    float* o = dst + static_cast<int64_t>(b) * per_image;
    if (!spatial) {
      std::memcpy(o, in, static_cast<size_t>(per_image) * sizeof(float));
      continue;
    }
    const int64_t C = dims[1], H = dims[2], W = dims[3];
    const int64_t dy = static_cast<int64_t>(rng() % 5) - 2, dx = static_cast<int64_t>(rng() % 5) - 2;
    const bool flip = rng() & 1;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          int64_t sy = y + dy, sx = (flip ? W - 1 - x : x) + dx;
          o[(c * H + y) * W + x] = sy >= 0 && sy < H && sx >= 0 && sx < W
                                       ? in[(c * H + sy) * W + sx]
                                       : d.pad_value[std::min<size_t>(static_cast<size_t>(c), d.pad_value.size() - 1)];
        }
  }
  return out;
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

}  // namespace

FinetuneResult finetune(const Graph& graph, const Dataset& train, const Normalization& norm,
                        const FinetuneOptions& options) {
  const std::string src = graph.source.empty() ? std::string("model") : graph.source;
  check(options.epochs >= 1, "fine-tuning: --epochs must be at least 1");
  check(options.batch >= 1, "fine-tuning: --batch must be at least 1");
  check(std::isfinite(options.lr) && options.lr > 0, "fine-tuning: --lr must be positive");
  check(options.momentum >= 0 && options.momentum < 1, "fine-tuning: --momentum must be in [0, 1)");
  check(options.weight_decay >= 0, "fine-tuning: --weight-decay must be >= 0");
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

  TrainingData data;
  {
    Tensor images = make_batch(train, 0, n_train, norm, input_shape);
    data.images = to_torch(images);
    data.labels.assign(train.labels.begin(), train.labels.begin() + n_train);
    for (size_t c = 0; c < std::max(norm.mean.size(), norm.std.size()); ++c)
      data.pad_value.push_back(static_cast<float>((0.0 - norm.mean[std::min(c, norm.mean.size() - 1)]) /
                                                  norm.std[std::min(c, norm.std.size() - 1)]));
  }
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
              {"wd", options.weight_decay}, {"seed", options.seed}, {"augment", options.augment},
              {"images", n_train}, {"calibration", options.calibration_images}, {"percentile", options.percentile}};
    fp.add(o.dump());
    for (const Parameter& p : params) {
      fp.add(p.name);
      fp.add(p.value.data_ptr<float>(), static_cast<size_t>(p.value.numel()) * sizeof(float));
    }
    fp.add(data.images.data_ptr<float>(), static_cast<size_t>(data.images.numel()) * sizeof(float));
    fp.add(data.labels.data(), data.labels.size() * sizeof(int64_t));
  }

  TrainingState state;
  for (const Parameter& p : params) state.momentum.push_back(torch::zeros_like(p.value).set_requires_grad(false));
  if (!options.resume_path.empty()) {
    load_checkpoint(options.resume_path, fp.hex(), params, state);
    check(state.step <= total_steps, options.resume_path + ": checkpoint is past the end of this run");
  }

  ProgressBar bar(options.progress);
  auto t_start = std::chrono::steady_clock::now();
  auto epoch_start = t_start;
  int64_t steps_this_run = 0;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (; state.step < stop; ++state.step) {
    const int64_t epoch = state.step / steps_per_epoch, pos = state.step % steps_per_epoch;
    if (order_epoch != epoch) {  // the epoch's order depends on (seed, epoch) only: resumable
      order.resize(static_cast<size_t>(n_train));
      std::iota(order.begin(), order.end(), 0);
      std::mt19937_64 shuffle_rng(options.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
      for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[shuffle_rng() % i]);  // Fisher-Yates
      order_epoch = epoch;
    }
    std::vector<int64_t> indices(order.begin() + pos * batch, order.begin() + (pos + 1) * batch);
    std::mt19937_64 augment_rng(options.seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(state.step + 1)));
    torch::Tensor x = make_training_batch(data, indices, options.augment, augment_rng);
    std::vector<int64_t> label_values;
    for (int64_t i : indices) label_values.push_back(data.labels[static_cast<size_t>(i)]);
    torch::Tensor y = torch::tensor(label_values, torch::kInt64);

    const double lr = learning_rate(options.schedule, options.lr, lr_final, state.step, total_steps);
    torch::Tensor logits = net.forward(x);
    torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
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
    ++steps_this_run;

    auto now = std::chrono::steady_clock::now();
    double elapsed = std::chrono::duration<double>(now - t_start).count();
    double per_step = elapsed / static_cast<double>(steps_this_run);
    bool epoch_done = pos + 1 == steps_per_epoch;
    bar.update(static_cast<int>(epoch + 1), options.epochs, pos + 1, steps_per_epoch, state.loss_sum / state.seen,
               100.0 * static_cast<double>(state.correct) / static_cast<double>(state.seen),
               static_cast<double>(batch) / per_step, per_step * static_cast<double>(stop - state.step - 1),
               epoch_done || state.step + 1 == stop);
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
      save_checkpoint(options.checkpoint_path, fp.hex(), params, saved);
    }
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  result.steps = state.step;
  result.epochs = state.epochs;
  if (state.epoch_steps > 0)  // a run stopped mid-epoch reports the partial epoch
    result.epochs.push_back({static_cast<int>(state.step / steps_per_epoch + 1), state.epoch_steps,
                             state.loss_sum / state.seen, 100.0 * static_cast<double>(state.correct) / state.seen,
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count()});

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
             {"weight_decay", options.weight_decay}, {"seed", options.seed}, {"augment", options.augment},
             {"train_images", n_train}, {"threads", torch::get_num_threads()}, {"seconds", result.seconds},
             {"weight_cosine", result.weight_cosine}, {"min_layer_cosine", result.min_layer_cosine},
             {"history", epochs}};
  json prov = json::parse(result.start.provenance_json);
  prov["finetune"] = ft;
  result.provenance_json = prov.dump();
  result.model.provenance_json = result.provenance_json;
  return result;
}

}  // namespace tern::train
