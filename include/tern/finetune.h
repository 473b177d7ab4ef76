// Fine-tuning after quantization (FAQ, arXiv 1809.04191): start from the pretrained FP32 network,
// quantize it (weights with the plan's quantizers, activations at a high percentile rounded to a
// power of two), then train briefly with momentum SGD, large batches and an annealed learning rate
// while every forward pass runs the exact quantized values (fake quantization through tern's own
// quantizers, straight-through gradients). BatchNorm trains and is folded at the end. The result
// is an ordinary quantized model (.tern) and the fine-tuned FP32 graph.
//
// Runs on libtorch (CPU). Deterministic for a given seed and thread count; one thread gives the
// same result on every run. Checkpoints are .tern containers with a kCheckpoint section, written
// atomically; resuming one reproduces the uninterrupted run exactly.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "tern/data.h"
#include "tern/graph.h"
#include "tern/quantized_model.h"

namespace tern::train {

enum class LrSchedule {
  kExponential,  // lr * (lr_final / lr)^(t / T): FAQ's schedule
  kCosine,       // lr_final + (lr - lr_final) * (1 + cos(pi t / T)) / 2
  kStep,         // lr, then lr / 10 from T/2, lr / 100 from 3T/4 (lr_final unused)
};
LrSchedule parse_lr_schedule(const std::string& name);  // exp | cosine | step; Error otherwise
const char* lr_schedule_name(LrSchedule schedule);
// The learning rate of step t of T (0-based).
double learning_rate(LrSchedule schedule, double lr, double lr_final, int64_t step, int64_t total_steps);

struct FinetuneOptions {
  quant::PlanOptions plan;        // weights, activation bits, first/last layers at 8 bits
  int epochs = 1;
  int64_t batch = 256;
  double lr = 1e-4;
  double lr_final = -1;           // < 0: lr / 1000
  LrSchedule schedule = LrSchedule::kExponential;
  double momentum = 0.9;
  double weight_decay = 1e-4;     // on Conv/Gemm weights
  double label_smoothing = 0;     // cross-entropy label smoothing (the bundled models trained with 0.05)
  uint64_t seed = 1;              // data order and augmentation
  bool augment = true;            // random crop (2-pixel padding) and horizontal flip of 2-D images
  int64_t train_images = 0;       // the first N training images (0: all)
  int64_t calibration_images = 512;  // the first N training images calibrate activation ranges
  double percentile = 0;          // 0: FAQ's choice, 99.99 for 8-bit activations, 99.9 below
  int64_t max_steps = 0;          // stop after this many steps in total (0: the epochs' worth)
  std::string checkpoint_path;    // "" : no checkpoints
  int64_t checkpoint_every = 0;   // steps between checkpoints; 0: at the end of every epoch
  std::string resume_path;        // continue from this checkpoint (same model, data and options)
  bool progress = true;           // progress bar on stderr
  // > 0: measure the gradient noise (see GradientNoise) over this many minibatches of `batch`
  // images, for the FP32 and the quantized network at the start and (after more than one step)
  // the quantized one at the end.
  int64_t gradient_noise_batches = 0;
  // The graph input's range, as `tern quantize` derives it from the normalization.
  bool input_non_negative = false;
  std::optional<float> input_threshold;
};

struct EpochRecord {
  int epoch = 0;           // 1-based
  int64_t steps = 0;       // optimizer steps in this epoch
  double loss = 0;         // mean training loss over the epoch (fake-quantized forward)
  double accuracy = 0;     // training top-1 %, augmented images
  double seconds = 0;      // wall time (this process's share when resumed mid-epoch)
};

// Gradient noise (FAQ, arXiv 1809.04191: quantization adds noise to the gradient estimates, larger
// batches remove it): the K minibatch gradients g_i of the Conv/Gemm weights at fixed weights (the
// training loss, augmentation and data order of the run's first K steps, no update), their mean
// gbar; variance = sum_i ||g_i - gbar||^2 / (K - 1), the expected squared distance of one
// minibatch's gradient from the full gradient; signal = ||gbar||^2 - variance / K, an unbiased
// estimate of the full gradient's squared norm; relative = variance / signal.
struct GradientNoise {
  std::string network;   // "fp32 start", "quantized start", "quantized end"
  int64_t batches = 0, batch = 0;
  double variance = 0, signal = 0, relative = 0;
  double loss = 0;       // mean training loss over the K minibatches
  struct Layer {
    std::string name;    // the weight's graph value
    double variance = 0, signal = 0;
  };
  std::vector<Layer> layers;
};

struct FinetuneResult {
  quant::QuantizedModel start;   // the quantized model before fine-tuning (same calibration)
  quant::QuantizedModel model;   // after fine-tuning: the one to save
  Graph trained;                 // the fine-tuned FP32 graph, BatchNorm not folded
  std::map<std::string, Tensor> trained_values;  // every trained constant, by value name
  std::vector<EpochRecord> epochs;
  int64_t steps = 0;
  double seconds = 0;            // training wall time in this process
  // Cosine similarity of the fine-tuned and original FP32 weights (BatchNorm folded) over every
  // quantized layer, and the lowest single layer's.
  double weight_cosine = 1;
  double min_layer_cosine = 1;
  std::string min_layer;
  std::string provenance_json;   // what the run did, merged into the model's provenance
  std::vector<GradientNoise> gradient_noise;  // with FinetuneOptions::gradient_noise_batches
};

// `graph`: the FP32 model optimized with OptimizeOptions{.fold_batchnorm = false,
// .fuse_activations = false}; `train`: images and labels (Dataset); `norm`: the model's input
// normalization. Throws Error for a model without trainable layers, an empty dataset, images that
// do not fit the model, labels outside the model's classes, a corrupt or mismatched checkpoint,
// or a loss that diverges.
FinetuneResult finetune(const Graph& graph, const Dataset& train, const Preprocess& norm,
                        const FinetuneOptions& options);

}  // namespace tern::train
