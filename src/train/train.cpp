#include "tern/train.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>

#include "tern/error.h"
#include "train/fake_quant.h"
#include "train/fixed_point_ops.h"
#include "train/gradient_sync.h"
#include "train/reduced_accumulation_ops.h"
#include "train/trainable_graph.h"
#include "train/training_loop.h"

namespace tern::train {

std::string NumericOptions::name() const {
  if (fixed)
    return format.name() + " " + numerics::rounding_name(rounding) +
           (gradient_format ? ", gradients " + gradient_format->name() : "") + (exact_compute ? "" : " (float32 sums)");
  if (accumulate_forward || accumulate_backward || accumulate_weight_grad) {
    std::string s = "float32, accumulators " + std::to_string(accumulate_forward) + "/" +
                    std::to_string(accumulate_backward) + "/" + std::to_string(accumulate_weight_grad) + " mantissa bits";
    return accumulate_chunk > 0 ? s + " (chunks of " + std::to_string(accumulate_chunk) + ")" : s;
  }
  return "float32";
}

namespace {

using nlohmann::json;
constexpr const char* kCheckpointKind = "tern-train-checkpoint";
constexpr int kCheckpointVersion = 1;

void check_options(const TrainOptions& o) {
  check(o.epochs >= 1, "training: --epochs must be at least 1");
  check(o.batch >= 1, "training: --batch must be at least 1");
  check(std::isfinite(o.lr) && o.lr > 0, "training: --lr must be positive");
  check(o.lr_final >= 0 && (o.lr_final > 0 || o.schedule != LrSchedule::kExponential),
        "training: --lr-final must be positive for the exp schedule");
  check(o.momentum >= 0 && o.momentum < 1, "training: --momentum must be in [0, 1)");
  check(o.weight_decay >= 0, "training: --weight-decay must be >= 0");
  check(o.label_smoothing >= 0 && o.label_smoothing < 1, "training: --label-smoothing must be in [0, 1)");
  const NumericOptions& n = o.numeric;
  if (n.fixed) {
    check(n.format.fraction_bits >= 0 && n.format.integer_bits >= 1 && n.format.word_bits() <= 32,
          "training: fixed-point format " + n.format.name() + " needs IL >= 1, FL >= 0, IL + FL <= 32");
    if (n.gradient_format)
      check(n.gradient_format->fraction_bits >= 0 && n.gradient_format->integer_bits >= 1 &&
                n.gradient_format->word_bits() <= 32,
            "training: gradient format " + n.gradient_format->name() + " needs IL >= 1, FL >= 0, IL + FL <= 32");
    check(n.exact_compute || n.gradient().word_bits() <= 24,
          "training: " + n.gradient().name() + " has more than 24 bits: float32 compute cannot hold it (use float64)");
    check(n.exact_compute || n.format.word_bits() <= 24,
          "training: " + n.format.name() + " has more than 24 bits: float32 compute cannot hold it (use float64)");
    check(!(n.accumulate_forward || n.accumulate_backward || n.accumulate_weight_grad),
          "training: reduced-precision accumulation applies to float32 training, not fixed point");
  }
  for (int m : {n.accumulate_forward, n.accumulate_backward, n.accumulate_weight_grad})
    check(m == 0 || (m >= 1 && m <= 23), "training: accumulator mantissa bits must be in 1..23 (0: off)");
  check(n.accumulate_chunk >= 0, "training: accumulation chunk must be >= 0");
}

// He-normal weights (fan-in, ReLU gain), zero biases: the usual start for ReLU networks; the
// layers that end residual branches start at zero (`zeroed`).
void initialize_randomly(std::vector<Parameter>& params, const std::vector<std::string>& zeroed, uint64_t seed) {
  torch::NoGradGuard no_grad;
  at::Generator gen = at::detail::createCPUGenerator(seed);
  for (Parameter& p : params) {
    if (!p.decay) {  // biases and BatchNorm shifts start at 0, BatchNorm scales at 1
      p.value.fill_(p.scale ? 1.0 : 0.0);
      continue;
    }
    int64_t fan_in = p.value.numel() / p.value.size(0);
    double std = std::sqrt(2.0 / static_cast<double>(std::max<int64_t>(1, fan_in)));
    torch::Tensor w = torch::randn(p.value.sizes(), gen, torch::TensorOptions().dtype(p.value.scalar_type()));
    p.value.copy_(w * std);
    if (std::find(zeroed.begin(), zeroed.end(), p.name) != zeroed.end()) p.value.zero_();
  }
}

// A random start is a freshly built network: BatchNorm running statistics (frozen during training,
// folded at the end) are those of a new layer, mean 0 and variance 1, not the trained model's.
// Kept, they would rescale random activations by the old statistics (vgg_small diverged at once).
Graph with_fresh_batchnorm_statistics(const Graph& graph) {
  Graph fresh = graph;
  for (const Node& n : fresh.nodes) {
    if (n.op != OpType::kBatchNormalization || n.inputs.size() != 5) continue;
    for (size_t k : {size_t{3}, size_t{4}}) {
      if (!fresh.is_constant(n.inputs[k])) continue;
      std::optional<Tensor>& stat = fresh.value(n.inputs[k]).constant;
      if (stat->dtype() != DataType::kFloat32) continue;
      Tensor reset(DataType::kFloat32, stat->shape());  // a new buffer: the copy shares the old one
      if (k == 4)
        for (float& x : reset.floats()) x = 1.0f;
      stat = std::move(reset);
    }
  }
  return fresh;
}

std::string weights_hash(const std::vector<Parameter>& params) {
  Fingerprint fp;
  for (const Parameter& p : params) fp.add(p.value.detach().to(torch::kFloat32).contiguous());
  return fp.hex();
}

struct TrainingState {
  int64_t step = 0;
  std::vector<torch::Tensor> momentum;
  std::vector<TrainEpoch> epochs;
  std::vector<std::pair<int64_t, double>> curve;
  double loss_sum = 0, curve_sum = 0;
  int64_t correct = 0, seen = 0, epoch_steps = 0, curve_steps = 0;
};

// Top-1 % on the first `count` images of `test`, in batches, with the training numerics. Fixed
// point: stochastic draws from a generator of its own, seeded by (seed, epoch), so evaluating
// changes nothing in training and a resumed run evaluates the same.
double evaluate_top1(TrainableGraph& net, const TrainingData& test, int64_t count, FixedPointRounder*& active,
                     uint64_t seed, int epoch) {
  torch::NoGradGuard no_grad;
  FixedPointRounder* saved = active;
  std::unique_ptr<FixedPointRounder> eval_rounder;
  if (active) {
    eval_rounder = std::make_unique<FixedPointRounder>(active->format(), active->rounding(),
                                                       seed * 2 + 3 + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(epoch));
    active = eval_rounder.get();
  }
  int64_t correct = 0;
  for (int64_t begin = 0; begin < count; begin += 500) {
    int64_t end = std::min(count, begin + 500);
    torch::Tensor logits = net.forward(test.images.slice(0, begin, end));
    std::vector<int64_t> idx(static_cast<size_t>(end - begin));
    for (int64_t i = begin; i < end; ++i) idx[static_cast<size_t>(i - begin)] = i;
    correct += logits.argmax(1).eq(batch_labels(test, idx)).sum().item<int64_t>();
  }
  active = saved;
  return 100.0 * static_cast<double>(correct) / static_cast<double>(std::max<int64_t>(1, count));
}

// The run's numerics: rounders on every value and update (fixed point, computed in float64 unless
// float32 sums were asked for), or emulated accumulators in the Conv/Gemm products; float32 when
// neither. `active` is the rounder the value transform reads (evaluation swaps in its own), so the
// object must stay where it is while `net` runs.
struct RunNumerics {
  std::unique_ptr<FixedPointRounder> value_rounder, update_rounder;
  FixedPointRounder* active = nullptr;

  RunNumerics(const NumericOptions& numeric, TrainableGraph& net, std::vector<Parameter>& params, uint64_t seed,
              int rank) {
    if (numeric.fixed) {
      if (numeric.exact_compute) net.set_dtype(torch::kFloat64);
      // Activations and their gradients differ per rank; the update draws must agree on every rank.
      value_rounder = std::make_unique<FixedPointRounder>(
          numeric.format, numeric.rounding, seed * 2 + 1 + 0x10000ull * static_cast<uint64_t>(rank), numeric.gradient());
      update_rounder = std::make_unique<FixedPointRounder>(numeric.format, numeric.rounding, seed * 2 + 2,
                                                           numeric.gradient());
      active = value_rounder.get();
      net.set_value_transform([this](const torch::Tensor& x) { return active->values(x); });
      torch::NoGradGuard no_grad;
      for (Parameter& p : params) p.value.copy_(update_rounder->round(p.value));
    }
    if (numeric.accumulate_forward || numeric.accumulate_backward || numeric.accumulate_weight_grad) {
      AccumulationBits bits{numeric.accumulate_forward, numeric.accumulate_backward, numeric.accumulate_weight_grad,
                            numeric.accumulate_chunk};
      net.set_layer_product([bits](const TrainableGraph::LayerProduct& p) { return reduced_accumulation_product(p, bits); });
    }
  }
  RunNumerics(const RunNumerics&) = delete;
  RunNumerics& operator=(const RunNumerics&) = delete;
};

json epoch_to_json(const TrainEpoch& e) {
  return json{{"epoch", e.epoch}, {"steps", e.steps}, {"loss", e.loss}, {"train_accuracy", e.train_accuracy},
              {"test_top1", e.test_top1}, {"seconds", e.seconds}, {"weights_hash", e.weights_hash}};
}

// The loop's counters, epochs and curve as a checkpoint holds them (tensors travel beside).
json state_to_json(const TrainingState& s) {
  json epochs = json::array(), curve = json::array();
  for (const TrainEpoch& e : s.epochs) epochs.push_back(epoch_to_json(e));
  for (const auto& [step, loss] : s.curve) curve.push_back({step, loss});
  return {{"step", s.step},       {"loss_sum", s.loss_sum},       {"curve_sum", s.curve_sum},
          {"correct", s.correct}, {"seen", s.seen},               {"epoch_steps", s.epoch_steps},
          {"curve_steps", s.curve_steps}, {"epochs", epochs},     {"curve", curve}};
}

void state_from_json(const json& j, const std::string& path, TrainingState& s) {
  try {
    s.step = j.at("step").get<int64_t>();
    s.loss_sum = j.at("loss_sum").get<double>();
    s.curve_sum = j.at("curve_sum").get<double>();
    s.correct = j.at("correct").get<int64_t>();
    s.seen = j.at("seen").get<int64_t>();
    s.epoch_steps = j.at("epoch_steps").get<int64_t>();
    s.curve_steps = j.at("curve_steps").get<int64_t>();
    for (const json& e : j.at("epochs"))
      s.epochs.push_back({e.at("epoch").get<int>(), e.at("steps").get<int64_t>(), e.at("loss").get<double>(),
                          e.at("train_accuracy").get<double>(), e.at("test_top1").get<double>(),
                          e.at("seconds").get<double>(), e.at("weights_hash").get<std::string>()});
    for (const json& c : j.at("curve")) s.curve.emplace_back(c.at(0).get<int64_t>(), c.at(1).get<double>());
  } catch (const json::exception& e) {
    throw Error(path + ": malformed checkpoint: " + e.what());
  }
}

// One momentum-SGD step from the gradients (the exchanged ones with several ranks, else .grad),
// weight decay on the layers that take it. Fixed point: gradient and momentum rounded to the
// gradient format, the weights to theirs.
void apply_update(std::vector<Parameter>& params, const std::vector<torch::Tensor>& exchanged, bool use_exchanged,
                  std::vector<torch::Tensor>& momentum, const TrainOptions& options, double lr,
                  FixedPointRounder* update_rounder) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    torch::Tensor g = use_exchanged ? exchanged[i] : params[i].value.grad();
    if (!g.defined()) continue;
    if (params[i].decay && options.weight_decay > 0) g = g + options.weight_decay * params[i].value;
    if (update_rounder) {
      g = update_rounder->round_gradient(g);
      momentum[i].copy_(update_rounder->round_gradient(momentum[i] * options.momentum + g));
      params[i].value.copy_(update_rounder->round(params[i].value - lr * momentum[i]));
    } else {
      momentum[i].mul_(options.momentum).add_(g);
      params[i].value.sub_(momentum[i], lr);
    }
  }
}

}  // namespace

TrainResult train_network(const Graph& graph, const Dataset& train, const Preprocess& norm,
                          const TrainOptions& options) {
  check_options(options);
  const std::string src = graph.source.empty() ? std::string("model") : graph.source;
  check(train.size() > 0, train.name + ": no training images");
  check(graph.inputs.size() == 1, src + ": training supports single-input models");
  const NumericOptions& numeric = options.numeric;
  GradientSync sync(options.distributed);
  const int rank = sync.rank(), ranks = sync.size();
  check(options.batch % ranks == 0, "training: --batch " + std::to_string(options.batch) +
                                        " must divide among the " + std::to_string(ranks) + " ranks");

  const int64_t n_train = options.train_images > 0 ? std::min(options.train_images, train.size()) : train.size();
  const Shape& input_shape = graph.value(graph.inputs[0]).shape;
  TrainableGraph net(options.init == Init::kRandom ? with_fresh_batchnorm_statistics(graph) : graph, {});
  std::vector<Parameter>& params = net.parameters();
  if (options.init == Init::kRandom) initialize_randomly(params, net.residual_branch_weights(), options.seed);

  RunNumerics run_numerics(numeric, net, params, options.seed, rank);
  FixedPointRounder*& active = run_numerics.active;
  FixedPointRounder* const value_rounder = run_numerics.value_rounder.get();
  FixedPointRounder* const update_rounder = run_numerics.update_rounder.get();

  sync.set_parameters(params);

  TrainingData data = load_training_data(train, n_train, norm, input_shape);
  TrainingData test;
  int64_t n_test = 0;
  if (options.test) {
    n_test = options.test_images > 0 ? std::min(options.test_images, options.test->size()) : options.test->size();
    test = load_training_data(*options.test, n_test, norm, input_shape);
  }
  int64_t classes = 0;
  {
    torch::NoGradGuard no_grad;
    torch::Tensor probe = net.forward(data.images.slice(0, 0, 1));
    check(probe.dim() == 2, src + ": the output must be [batch, classes] logits to train a classifier");
    classes = probe.size(1);
  }
  for (const TrainingData* d : {&data, &test})
    for (size_t i = 0; i < d->labels.size(); ++i)
      check(d->labels[i] >= 0 && d->labels[i] < classes,
            (d == &data ? train.name : options.test->name) + ": label " + std::to_string(d->labels[i]) + " of image " +
                std::to_string(i) + " is outside the model's " + std::to_string(classes) + " classes");

  const int64_t batch = std::min(options.batch, n_train - n_train % ranks);
  check(batch >= ranks, train.name + ": too few images for " + std::to_string(ranks) + " ranks");
  const int64_t local = batch / ranks;
  const int64_t steps_per_epoch = n_train / batch;
  const int64_t total_steps = steps_per_epoch * options.epochs;
  const int64_t stop = options.max_steps > 0 ? std::min(options.max_steps, total_steps) : total_steps;
  const int64_t curve_every = options.curve_every > 0 ? options.curve_every : std::max<int64_t>(1, steps_per_epoch / 20);

  Fingerprint fp;
  {
    json o = {{"init", options.init == Init::kRandom ? "random" : "pretrained"}, {"numeric", numeric.name()},
              {"epochs", options.epochs}, {"batch", batch}, {"lr", options.lr}, {"lr_final", options.lr_final},
              {"schedule", lr_schedule_name(options.schedule)}, {"momentum", options.momentum},
              {"wd", options.weight_decay}, {"ls", options.label_smoothing}, {"seed", options.seed},
              {"augment", options.augment}, {"images", n_train}, {"ranks", ranks}, {"exchange", sync.describe()},
              {"curve_every", curve_every}};
    fp.add(o.dump());
    for (const Parameter& p : params) {
      fp.add(p.name);
      fp.add(p.value.detach());
    }
    fp.add(data.images);
    fp.add(data.labels.data(), data.labels.size() * sizeof(int64_t));
  }

  TrainingState state;
  for (const Parameter& p : params) state.momentum.push_back(torch::zeros_like(p.value).set_requires_grad(false));
  auto checkpoint_tensors = [&]() {
    std::vector<CheckpointTensor> t;
    for (size_t i = 0; i < params.size(); ++i) {
      t.push_back({params[i].name, "parameter", params[i].value});
      t.push_back({params[i].name, "momentum", state.momentum[i]});
    }
    if (value_rounder) {
      t.push_back({"values", "generator", value_rounder->generator_state()});
      t.push_back({"updates", "generator", update_rounder->generator_state()});
    }
    for (CheckpointTensor& r : sync.state_tensors()) t.push_back(r);
    return t;
  };
  if (!options.resume_path.empty()) {
    std::vector<CheckpointTensor> t = checkpoint_tensors();
    json j = load_checkpoint(options.resume_path, kCheckpointKind, kCheckpointVersion, fp.hex(), t);
    state_from_json(j, options.resume_path, state);
    check(state.step >= 0 && state.step <= total_steps, options.resume_path + ": checkpoint is past the end of this run");
    if (value_rounder) {
      value_rounder->set_generator_state(t[2 * params.size()].tensor);
      update_rounder->set_generator_state(t[2 * params.size() + 1].tensor);
    }
    sync.restore_state(t);
  }

  // Gradients: each parameter's hook hands its gradient to the exchange as backprop produces it.
  std::vector<torch::Tensor> grads(params.size());
  using Clock = std::chrono::steady_clock;
  Clock::time_point backward_start;
  std::vector<double> ready_ms(params.size(), 0.0);  // summed over the timed steps
  double forward_ms = 0, backward_ms = 0;
  int64_t timed_steps = 0;
  if (ranks > 1 || options.timeline)
    for (size_t i = 0; i < params.size(); ++i)
      params[i].value.register_hook([&, i](torch::Tensor g) {
        if (options.timeline)
          ready_ms[i] += std::chrono::duration<double, std::milli>(Clock::now() - backward_start).count();
        if (ranks > 1) sync.gradient_ready(i, g);
        return g;
      });

  ProgressBar bar(options.progress && rank == 0);
  auto t_start = std::chrono::steady_clock::now();
  auto epoch_start = t_start;
  std::vector<int64_t> order;
  int64_t order_epoch = -1;
  for (; state.step < stop; ++state.step) {
    if (state.step == options.exit_at_step) std::_Exit(3);
    const int64_t epoch = state.step / steps_per_epoch, pos = state.step % steps_per_epoch;
    if (order_epoch != epoch) order = epoch_order(options.seed, epoch, n_train), order_epoch = epoch;
    // The global batch, augmented the same way on every rank; this rank trains on its slice.
    std::vector<int64_t> indices(order.begin() + pos * batch, order.begin() + (pos + 1) * batch);
    std::mt19937_64 augment_rng = augmentation_rng(options.seed, state.step);
    torch::Tensor x = make_training_batch(data, indices, options.augment, augment_rng).slice(0, rank * local, (rank + 1) * local);
    torch::Tensor y = batch_labels(data, indices).slice(0, rank * local, (rank + 1) * local);

    const double lr = learning_rate(options.schedule, options.lr, options.lr_final, state.step, total_steps);
    sync.begin_step();
    const Clock::time_point forward_start = Clock::now();
    torch::Tensor logits = net.forward(x);
    torch::Tensor loss = torch::nn::functional::cross_entropy(
        logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing));
    for (Parameter& p : params)
      if (p.value.grad().defined()) p.value.mutable_grad().zero_();
    backward_start = Clock::now();
    loss.backward();
    if (options.timeline) {
      forward_ms += std::chrono::duration<double, std::milli>(backward_start - forward_start).count();
      backward_ms += std::chrono::duration<double, std::milli>(Clock::now() - backward_start).count();
      ++timed_steps;
    }
    sync.finish(grads, params);  // data parallel: the average over the ranks (one process: .grad)
    const auto [loss_value, correct] =
        sync.sum_metrics(loss.item<double>() * static_cast<double>(local), logits.argmax(1).eq(y).sum().item<int64_t>());
    check(std::isfinite(loss_value), src + ": training diverged at step " + std::to_string(state.step + 1) + "; lower --lr");
    apply_update(params, grads, ranks > 1, state.momentum, options, lr, update_rounder);
    state.loss_sum += loss_value;
    state.curve_sum += loss_value / static_cast<double>(batch);
    state.correct += correct;
    state.seen += batch;
    ++state.epoch_steps;
    ++state.curve_steps;
    if (state.curve_steps == curve_every) {
      state.curve.emplace_back(state.step + 1, state.curve_sum / static_cast<double>(state.curve_steps));
      state.curve_sum = 0;
      state.curve_steps = 0;
    }

    auto now = std::chrono::steady_clock::now();
    const bool epoch_done = pos + 1 == steps_per_epoch;
    bar.step(static_cast<int>(epoch + 1), options.epochs, pos + 1, steps_per_epoch, state.loss_sum / state.seen,
             100.0 * static_cast<double>(state.correct) / static_cast<double>(state.seen), batch, stop - state.step - 1);
    if (epoch_done) {
      TrainEpoch e{static_cast<int>(epoch + 1), state.epoch_steps, state.loss_sum / state.seen,
                   100.0 * static_cast<double>(state.correct) / static_cast<double>(state.seen), -1,
                   std::chrono::duration<double>(now - epoch_start).count(), weights_hash(params)};
      sync.check_same_weights(e.weights_hash, e.epoch);
      const bool test_due = e.epoch % std::max(1, options.test_every) == 0 || e.epoch == options.epochs;
      if (options.test && test_due) e.test_top1 = evaluate_top1(net, test, n_test, active, options.seed, e.epoch);
      if (rank == 0 && options.progress && options.test && test_due)
        std::fprintf(stderr, "epoch %d: test top-1 %.2f%%\n", e.epoch, e.test_top1);
      state.epochs.push_back(e);
      epoch_start = std::chrono::steady_clock::now();
      state.loss_sum = 0;
      state.correct = state.seen = state.epoch_steps = 0;
    }
    bool checkpoint_due = options.checkpoint_every > 0 ? (state.step + 1) % options.checkpoint_every == 0 : epoch_done;
    if (!options.checkpoint_path.empty() && (checkpoint_due || state.step + 1 == stop)) {
      std::vector<CheckpointTensor> t = checkpoint_tensors();
      sync.gather_state(t);  // every rank's exchange state (AdaComp residuals) to rank 0
      if (rank == 0) {
        json j = state_to_json(state);
        j["step"] = state.step + 1;  // (this step is done; the loop's counter moves on after it)
        save_checkpoint(options.checkpoint_path, kCheckpointKind, kCheckpointVersion, fp.hex(), j, t);
      }
    }
  }

  TrainResult result;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  result.steps = state.step;
  result.epochs = state.epochs;
  result.curve = state.curve;
  result.ranks = ranks;
  if (state.epoch_steps > 0) {  // a run stopped mid-epoch reports the partial epoch
    TrainEpoch e{static_cast<int>(state.step / steps_per_epoch + 1), state.epoch_steps, state.loss_sum / state.seen,
                 100.0 * static_cast<double>(state.correct) / static_cast<double>(state.seen), -1,
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start).count(),
                 weights_hash(params)};
    if (options.test) e.test_top1 = evaluate_top1(net, test, n_test, active, options.seed, e.epoch);
    result.epochs.push_back(e);
  }
  result.trained = net.trained_graph();
  for (const Parameter& p : params)
    for (const Value& v : result.trained.values)
      if (v.name == p.name && v.constant) result.trained_values[p.name] = v.constant->clone();
  result.exchange_json = sync.stats_json();
  if (options.timeline && timed_steps > 0) {
    json layers = json::array();
    for (size_t k = params.size(); k-- > 0;)  // backprop order
      layers.push_back({{"name", params[k].name}, {"elements", params[k].value.numel()},
                        {"ready_ms", ready_ms[k] / static_cast<double>(timed_steps)}});
    result.timeline_json = json{{"steps", timed_steps}, {"batch_per_rank", local},
                                {"forward_ms", forward_ms / static_cast<double>(timed_steps)},
                                {"backward_ms", backward_ms / static_cast<double>(timed_steps)},
                                {"parameters", layers}}.dump();
  }

  json history = json::array();
  for (const TrainEpoch& e : result.epochs) history.push_back(epoch_to_json(e));
  json prov = {{"method", "tern train (momentum SGD on libtorch)"},
               {"init", options.init == Init::kRandom ? "random" : "pretrained"},
               {"numeric", numeric.name()},
               {"epochs", options.epochs},
               {"steps", result.steps},
               {"batch", batch},
               {"ranks", ranks},
               {"lr", options.lr},
               {"lr_final", options.lr_final},
               {"schedule", lr_schedule_name(options.schedule)},
               {"momentum", options.momentum},
               {"weight_decay", options.weight_decay},
               {"label_smoothing", options.label_smoothing},
               {"seed", options.seed},
               {"augment", options.augment},
               {"train_images", n_train},
               {"threads", torch::get_num_threads()},
               {"seconds", result.seconds},
               {"history", history}};
  result.provenance_json = prov.dump();
  return result;
}

}  // namespace tern::train
