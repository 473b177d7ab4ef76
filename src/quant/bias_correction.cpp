// Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization through Weight
// Equalization and Bias Correction", section 4.2, with the expectations measured on calibration
// images): quantized weights and inputs shift each output channel's mean, and every later layer
// sees the shift. A layer computes y_o = sum_{i,t} W[o,i,t] x[i at tap t] + b_o, so
//     E[y_o] = sum_{i,t} W[o,i,t] E[x_i at tap t] + b_o,
// where the expectation runs over images and output positions (zero padding included). With the
// FP32 model's weights and inputs on one side and the quantized model's on the other, the bias
//     b_o' = b_o + sum_{i,t} (W[o,i,t] m[i,t] - W_q[o,i,t] m_q[i,t])
// gives the quantized layer the FP32 layer's mean. Correcting one layer moves the inputs of every
// later one, so the corrections are made in graph order, each from the quantized model's inputs
// with every earlier correction in place: one run of the simulation over all the images in one
// batch, in which each quantized layer measures its input, sets its bias and then computes.
// (Correcting every layer at once from one measurement overshoots: later layers see the earlier
// shifts twice, and on MobileNetV3 the errors grew layer by layer.)
#include <nlohmann/json.hpp>

#include "quant/batches.h"
#include "quant/pipeline.h"
#include "tern/error.h"

namespace tern::quant {

namespace {

// Means of a layer's input at each (input channel, weight tap), over images and the output
// positions the layer computes.
class TapMeans {
 public:
  // Conv (1-D or 2-D, explicit pads) on [N, C, (H,) W], or Gemm on [..., K]. ok() is false for
  // anything else.
  TapMeans(const Node& n, int64_t in_channels, int64_t taps) : channels_(in_channels), taps_(taps) {
    if (n.op == OpType::kGemm) {
      ok_ = taps == 1;
    } else if (n.op == OpType::kConv) {
      const ConvAttrs& a = n.attr<ConvAttrs>();
      const size_t k = a.kernel.size();
      ok_ = (k == 1 || k == 2) && a.auto_pad == AutoPad::kNotSet && a.strides.size() == k && a.dilations.size() == k &&
            a.pads.size() == 2 * k;
      if (ok_) {
        conv_ = true;
        kh_ = k == 2 ? a.kernel[0] : 1;
        kw_ = a.kernel[k - 1];
        sh_ = k == 2 ? a.strides[0] : 1;
        sw_ = a.strides[k - 1];
        dh_ = k == 2 ? a.dilations[0] : 1;
        dw_ = a.dilations[k - 1];
        pt_ = k == 2 ? a.pads[0] : 0;
        pl_ = a.pads[k - 1];
        pb_ = k == 2 ? a.pads[2] : 0;
        pr_ = a.pads[2 * k - 1];
        ok_ = kh_ * kw_ == taps;
      }
    }
    sum_.assign(static_cast<size_t>(channels_ * taps_), 0.0);
  }
  bool ok() const { return ok_; }

  void add(const Tensor& x) {
    if (!ok_) return;
    if (!conv_) {
      if (x.rank() < 2 || x.dim(x.rank() - 1) != channels_) return void(ok_ = false);
      const float* p = x.data<float>();
      const int64_t rows = x.size() / channels_;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < channels_; ++c) sum_[static_cast<size_t>(c)] += p[r * channels_ + c];
      count_ += rows;
      return;
    }
    const bool two_d = x.rank() == 4;
    if ((x.rank() != 3 && !two_d) || x.dim(1) != channels_) return void(ok_ = false);
    const int64_t H = two_d ? x.dim(2) : 1, W = x.dim(x.rank() - 1);
    const int64_t OH = (H + pt_ + pb_ - dh_ * (kh_ - 1) - 1) / sh_ + 1, OW = (W + pl_ + pr_ - dw_ * (kw_ - 1) - 1) / sw_ + 1;
    if (OH < 1 || OW < 1) return void(ok_ = false);
    const float* p = x.data<float>();
    for (int64_t n = 0; n < x.dim(0); ++n)
      for (int64_t c = 0; c < channels_; ++c) {
        const float* plane = p + (n * channels_ + c) * H * W;
        for (int64_t a = 0; a < kh_; ++a)
          for (int64_t b = 0; b < kw_; ++b) {
            double s = 0;
            for (int64_t oh = 0; oh < OH; ++oh) {
              int64_t ih = oh * sh_ + a * dh_ - pt_;
              if (ih < 0 || ih >= H) continue;
              for (int64_t ow = 0; ow < OW; ++ow) {
                int64_t iw = ow * sw_ + b * dw_ - pl_;
                if (iw >= 0 && iw < W) s += plane[ih * W + iw];
              }
            }
            sum_[static_cast<size_t>(c * taps_ + a * kw_ + b)] += s;
          }
      }
    count_ += x.dim(0) * OH * OW;
  }

  double mean(int64_t channel, int64_t tap) const {
    return count_ > 0 ? sum_[static_cast<size_t>(channel * taps_ + tap)] / static_cast<double>(count_) : 0.0;
  }

 private:
  int64_t channels_, taps_;
  bool ok_ = false, conv_ = false;
  int64_t kh_ = 1, kw_ = 1, sh_ = 1, sw_ = 1, dh_ = 1, dw_ = 1, pt_ = 0, pl_ = 0, pb_ = 0, pr_ = 0;
  std::vector<double> sum_;
  int64_t count_ = 0;
};

const Node& node_named(const Graph& g, const std::string& name) {
  for (const Node& n : g.nodes)
    if (n.name == name) return n;
  throw Error(g.source + ": no node '" + name + "'");
}

int64_t groups_of(const Node& n) { return n.op == OpType::kConv ? n.attr<ConvAttrs>().group : 1; }

// The means of every layer's input in `graph` (the FP32 model or the quantized model's simulation).
std::vector<TapMeans> measure(const Graph& graph, const std::vector<QuantizedLayer>& layers, const Tensor& images,
                              int64_t batch, ThreadPool* pool) {
  std::vector<TapMeans> means;
  std::vector<ValueId> ids;
  for (const QuantizedLayer& l : layers) {
    const Node& n = node_named(graph, l.node);
    means.emplace_back(n, l.in * groups_of(n), l.taps);
    ids.push_back(n.inputs[0]);
  }
  for_each_batch(graph, ids, images, batch, pool, [&](std::vector<Tensor>& values) {
    for (size_t k = 0; k < values.size(); ++k) means[k].add(values[k]);
  });
  return means;
}

// Every layer's FP32 bias into the quantized model: graph values, and int32 codes where the input
// scale is static.
void set_biases(QuantizedModel& m, const Graph& biases) {
  for (const QuantizedLayer& l : m.layers)
    if (!l.bias_value.empty())
      *m.graph.value(m.graph.find_value(l.bias_value)).constant = biases.constant(biases.find_value(l.bias_value));
  quantize_biases(m, biases);
}

}  // namespace

nlohmann::json correct_biases(QuantizedModel& m, const Graph& fp32, const Tensor& calibration, int64_t batch,
                              ThreadPool* pool) {
  // All images run as one batch: at most about 1 GB of activations (64 input-sized tensors).
  const int64_t per_image = calibration.size() / std::max<int64_t>(1, calibration.dim(0));
  const int64_t fits = std::max<int64_t>(8, (int64_t{1} << 30) / (64 * 4 * std::max<int64_t>(1, per_image)));
  const Tensor images = slice_images(calibration, 0, std::min(fits, calibration.dim(0)));
  std::vector<TapMeans> reference = measure(fp32, m.layers, images, batch, pool);
  set_biases(m, fp32);
  const Graph sim = simulation_graph(m);
  Graph biases = fp32;  // the corrected FP32 biases
  int corrected = 0, without_bias = 0, unsupported = 0;
  double largest = 0;  // the largest correction, relative to the layer's largest |bias|
  ExecutorOptions options;
  options.pool = pool;
  for (size_t k = 0; k < m.layers.size(); ++k) {
    const QuantizedLayer& layer = m.layers[k];
    if (layer.bias_value.empty()) {
      ++without_bias;
      continue;
    }
    const Node& node = node_named(sim, layer.node);
    if (!reference[k].ok() || node.inputs.size() < 3) {
      ++unsupported;
      continue;
    }
    options.node_kernels[layer.node] = [&, k, node](std::span<const Tensor* const> in, const std::vector<Shape>&,
                                                    ThreadPool* p) {
      QuantizedLayer& l = m.layers[k];
      TapMeans quantized(node, l.in * groups_of(node), l.taps);
      quantized.add(*in[0]);
      check(quantized.ok(), l.node + ": bias correction: unexpected input " + to_string(in[0]->shape()));
      const Tensor& w = fp32.constant(fp32.find_value(l.weight_value));
      const Tensor& b = fp32.constant(fp32.find_value(l.bias_value));
      const float* wq = in[1]->data<float>();
      const int64_t per_group = l.out / groups_of(node);
      std::vector<float> bias(b.data<float>(), b.data<float>() + b.size());
      double scale = 0;
      for (float v : bias) scale = std::max(scale, static_cast<double>(std::fabs(v)));
      for (int64_t o = 0; o < l.out; ++o) {
        const int64_t first = (o / per_group) * l.in;
        double delta = 0;
        for (int64_t i = 0; i < l.in; ++i)
          for (int64_t t = 0; t < l.taps; ++t) {
            const int64_t at = (o * l.in + i) * l.taps + t;
            delta += w.data<float>()[at] * reference[k].mean(first + i, t) - wq[at] * quantized.mean(first + i, t);
          }
        bias[static_cast<size_t>(o)] += static_cast<float>(delta);
        if (scale > 0) largest = std::max(largest, std::fabs(delta) / scale);
      }
      *biases.value(biases.find_value(l.bias_value)).constant = Tensor::from_floats(b.shape(), bias);
      ++corrected;
      std::vector<float> stored = quantize_layer_bias(l, bias);  // what the model will hold
      Tensor used = Tensor::from_floats(b.shape(), stored.empty() ? bias : stored);
      std::vector<const Tensor*> args(in.begin(), in.end());
      args[2] = &used;
      return evaluate_node(node, args, in[0]->dim(0), p, sim.source);
    };
  }
  Graph run = sim;
  run.outputs.resize(std::min<size_t>(run.outputs.size(), 1));
  Executor exec(std::move(run), options);
  exec.run(images);
  set_biases(m, biases);
  return {{"images", images.dim(0)},
          {"layers_corrected", corrected},
          {"layers_without_bias", without_bias},
          {"layers_unsupported", unsupported},
          {"largest_relative_correction", largest}};
}

}  // namespace tern::quant
