// Recurrent layers: LSTM, GRU and RNN (ONNX semantics: forward, reverse or bidirectional;
// sequence_lens; initial states; LSTM peepholes and input_forget; clip; the activation functions
// by name with their alpha/beta; layout 0 [seq, batch, ...] or 1 [batch, seq, ...]).
// FP32: the input projections of every step in one GEMM per direction, then one small GEMM per step.
#ifndef TERN_OPS_TORCH
#include <cstring>
#include <limits>

#include "kernels/fp32/sgemm.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

enum class Act { kSigmoid, kTanh, kRelu, kHardSigmoid, kLeakyRelu, kAffine, kScaledTanh, kThresholdedRelu, kElu, kSoftsign, kSoftplus };

struct RecurrentAttrs {
  int64_t hidden = 0;
  int64_t direction = 0;  // 0 forward, 1 reverse, 2 bidirectional
  int64_t layout = 0;
  float clip = 0.0f;      // 0: none
  bool input_forget = false;
  bool linear_before_reset = false;
  std::vector<int64_t> activations;  // Act per gate function, per direction
  std::vector<float> alphas, betas;  // per entry of activations
};

int gates_of(OpType op) { return op == OpType::kLSTM ? 4 : op == OpType::kGRU ? 3 : 1; }
int functions_of(OpType op) { return op == OpType::kLSTM ? 3 : op == OpType::kGRU ? 2 : 1; }

void import_recurrent(OnnxNode& n) {
  OpType op = n.node.op;
  n.need_inputs(3, op == OpType::kLSTM ? 8 : 6);
  RecurrentAttrs a;
  a.hidden = n.get_int("hidden_size", 0);
  check(a.hidden >= 1, n.who + ": hidden_size is required");
  std::string dir = n.get_string("direction", "forward");
  if (dir == "forward") a.direction = 0;
  else if (dir == "reverse") a.direction = 1;
  else if (dir == "bidirectional") a.direction = 2;
  else throw Error(n.who + ": unknown direction '" + dir + "'");
  a.layout = n.get_int("layout", 0);
  check(a.layout == 0 || a.layout == 1, n.who + ": layout must be 0 or 1");
  a.clip = n.has("clip") ? n.get_float("clip", 0.0f) : 0.0f;
  check(a.clip >= 0, n.who + ": clip must be positive");
  a.input_forget = n.get_int("input_forget", 0) != 0;
  a.linear_before_reset = n.get_int("linear_before_reset", 0) != 0;
  int dirs = a.direction == 2 ? 2 : 1, funcs = functions_of(op);
  std::vector<std::string> names = n.get_strings("activations");
  std::vector<float> alpha = n.get_floats("activation_alpha"), beta = n.get_floats("activation_beta");
  if (names.empty()) {
    for (int d = 0; d < dirs; ++d) {
      if (op == OpType::kRNN) names.push_back("Tanh");
      else if (op == OpType::kGRU) names.insert(names.end(), {"Sigmoid", "Tanh"});
      else names.insert(names.end(), {"Sigmoid", "Tanh", "Tanh"});
    }
  }
  check(names.size() == static_cast<size_t>(dirs * funcs),
        n.who + ": expects " + std::to_string(dirs * funcs) + " activations, got " + std::to_string(names.size()));
  // alpha/beta are consumed in order by the functions that take them; the ONNX defaults otherwise.
  size_t ai = 0, bi = 0;
  for (const std::string& name : names) {
    static const std::pair<const char*, Act> table[] = {
        {"Sigmoid", Act::kSigmoid}, {"Tanh", Act::kTanh}, {"Relu", Act::kRelu}, {"HardSigmoid", Act::kHardSigmoid},
        {"LeakyRelu", Act::kLeakyRelu}, {"Affine", Act::kAffine}, {"ScaledTanh", Act::kScaledTanh},
        {"ThresholdedRelu", Act::kThresholdedRelu}, {"Elu", Act::kElu}, {"Softsign", Act::kSoftsign},
        {"Softplus", Act::kSoftplus}};
    const auto* it = std::find_if(std::begin(table), std::end(table), [&](const auto& e) {
      std::string lower = name;
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string want = e.first;
      for (char& c : want) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return lower == want;
    });
    check(it != std::end(table), n.who + ": activation '" + name + "' is not supported");
    Act act = it->second;
    float def_a = act == Act::kHardSigmoid ? 0.2f : act == Act::kLeakyRelu ? 0.01f : 1.0f;
    float def_b = act == Act::kHardSigmoid ? 0.5f : act == Act::kAffine ? 0.0f : 1.0f;
    bool takes_a = act == Act::kHardSigmoid || act == Act::kLeakyRelu || act == Act::kAffine || act == Act::kScaledTanh ||
                   act == Act::kThresholdedRelu || act == Act::kElu;
    bool takes_b = act == Act::kHardSigmoid || act == Act::kAffine || act == Act::kScaledTanh;
    a.activations.push_back(static_cast<int64_t>(act));
    a.alphas.push_back(takes_a && ai < alpha.size() ? alpha[ai++] : def_a);
    a.betas.push_back(takes_b && bi < beta.size() ? beta[bi++] : def_b);
  }
  n.max_outputs = n.kept_outputs = op == OpType::kLSTM ? 3 : 2;
  n.node.attrs = a;
}

constexpr auto describe_recurrent = [](auto& a, auto&& field) {
  field("hidden", a.hidden, 1, int64_t{1} << 24);
  field("direction", a.direction, 0, 2);
  field("layout", a.layout, 0, 1);
  field("clip", a.clip);
  field("input_forget", a.input_forget);
  field("linear_before_reset", a.linear_before_reset);
  field("activations", a.activations);
  field("alphas", a.alphas);
  field("betas", a.betas);
};

void validate_recurrent(const RecurrentAttrs& a) {
  for (int64_t f : a.activations) check(f >= 0 && f <= static_cast<int64_t>(Act::kSoftplus), "invalid activation");
  check(a.alphas.size() == a.activations.size() && a.betas.size() == a.activations.size(), "activation parameters differ in count");
}

std::vector<Shape> recurrent_shapes(ShapeCall& c) {
  c.need_inputs(3);
  const auto& a = c.node.attr<RecurrentAttrs>();
  OpType op = c.node.op;
  const Shape& x = c.in[0];
  check(x.size() == 3, c.who + ": X must be 3-D, got " + to_string(x));
  int64_t dirs = a.direction == 2 ? 2 : 1, g = gates_of(op), h = a.hidden;
  check(static_cast<int64_t>(a.activations.size()) == dirs * functions_of(op), c.who + ": activations do not match the direction");
  int64_t seq = a.layout == 0 ? x[0] : x[1], batch = a.layout == 0 ? x[1] : x[0];
  check(c.in[1].size() == 3 && c.in[1][0] == dirs && c.in[1][1] == g * h && c.in[1][2] >= 0 && (x[2] < 0 || c.in[1][2] == x[2]),
        c.who + ": W " + to_string(c.in[1]) + " does not fit X " + to_string(x) + " and hidden_size " + std::to_string(h));
  check(c.in[2] == (Shape{dirs, g * h, h}), c.who + ": R " + to_string(c.in[2]) + " is not [" + std::to_string(dirs) + "," +
                                                std::to_string(g * h) + "," + std::to_string(h) + "]");
  auto optional_is = [&](size_t i, const Shape& want, const char* what) {
    if (i < c.in.size() && c.node.inputs.size() > i && c.node.inputs[i] != kNoValue) {
      bool fits = c.in[i].size() == want.size();
      for (size_t d = 0; fits && d < want.size(); ++d) fits = c.in[i][d] < 0 || want[d] < 0 || c.in[i][d] == want[d];
      check(fits, c.who + ": " + what + " " + to_string(c.in[i]) + " should be " + to_string(want));
    }
  };
  optional_is(3, {dirs, 2 * g * h}, "B");
  optional_is(4, {batch}, "sequence_lens");
  Shape state = a.layout == 0 ? Shape{dirs, batch, h} : Shape{batch, dirs, h};
  optional_is(5, state, "initial_h");
  if (op == OpType::kLSTM) {
    optional_is(6, state, "initial_c");
    optional_is(7, {dirs, 3 * h}, "P");
  }
  Shape y = a.layout == 0 ? Shape{seq, dirs, batch, h} : Shape{batch, seq, dirs, h};
  std::vector<Shape> out = {y, state};
  if (op == OpType::kLSTM) out.push_back(state);
  out.resize(c.node.outputs.size());
  return out;
}

float activate(Act act, float x, float alpha, float beta) {
  switch (act) {
    case Act::kSigmoid: return 1.0f / (1.0f + std::exp(-x));
    case Act::kTanh: return std::tanh(x);
    case Act::kRelu: return x > 0 ? x : 0.0f;
    case Act::kHardSigmoid: return std::min(1.0f, std::max(0.0f, alpha * x + beta));
    case Act::kLeakyRelu: return x >= 0 ? x : alpha * x;
    case Act::kAffine: return alpha * x + beta;
    case Act::kScaledTanh: return alpha * std::tanh(beta * x);
    case Act::kThresholdedRelu: return x > alpha ? x : 0.0f;
    case Act::kElu: return x >= 0 ? x : alpha * (std::exp(x) - 1.0f);
    case Act::kSoftsign: return x / (1.0f + std::fabs(x));
    case Act::kSoftplus: return std::log1p(std::exp(x));
  }
  return x;
}

std::vector<Tensor> run_recurrent(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const auto& a = ctx.node.attr<RecurrentAttrs>();
  OpType op = ctx.node.op;
  for (size_t i : {0, 1, 2}) require_float(ctx, *in[i], "X, W and R");
  const Tensor& X = *in[0];
  const Tensor& W = *in[1];
  const Tensor& R = *in[2];
  auto input = [&](size_t i) -> const Tensor* { return i < in.size() ? in[i] : nullptr; };
  const Tensor* B = input(3);
  const Tensor* lens = input(4);
  const Tensor* h0 = input(5);
  const Tensor* c0 = op == OpType::kLSTM ? input(6) : nullptr;
  const Tensor* P = op == OpType::kLSTM ? input(7) : nullptr;
  for (const Tensor* t : {B, h0, c0, P})
    if (t) require_float(ctx, *t, "B, initial states and P");
  int64_t dirs = a.direction == 2 ? 2 : 1, g = gates_of(op), H = a.hidden, I = X.dim(2);
  int64_t seq = a.layout == 0 ? X.dim(0) : X.dim(1), batch = a.layout == 0 ? X.dim(1) : X.dim(0);
  int funcs = functions_of(op);
  std::vector<int64_t> length(static_cast<size_t>(batch), seq);
  if (lens) {
    check(lens->dtype() == DataType::kInt32 || lens->dtype() == DataType::kInt64, ctx.who + ": sequence_lens must be int32");
    for (int64_t b = 0; b < batch; ++b) {
      int64_t l = lens->dtype() == DataType::kInt32 ? lens->data<int32_t>()[b] : lens->data<int64_t>()[b];
      check(l >= 0 && l <= seq, ctx.who + ": sequence length " + std::to_string(l) + " outside [0, " + std::to_string(seq) + "]");
      length[static_cast<size_t>(b)] = l;
    }
  }
  // X as [seq, batch, I] rows, whatever the layout.
  auto x_at = [&](int64_t t, int64_t b) {
    return X.data<float>() + (a.layout == 0 ? (t * batch + b) : (b * seq + t)) * I;
  };
  std::vector<Tensor> result;
  Tensor Y(DataType::kFloat32, outs[0].empty() ? Shape{seq, dirs, batch, H} : outs[0]);
  Shape state_shape = a.layout == 0 ? Shape{dirs, batch, H} : Shape{batch, dirs, H};
  Tensor Yh(DataType::kFloat32, state_shape), Yc(DataType::kFloat32, state_shape);
  auto state_index = [&](int64_t d, int64_t b) { return a.layout == 0 ? (d * batch + b) * H : (b * dirs + d) * H; };
  auto y_index = [&](int64_t t, int64_t d, int64_t b) {
    return a.layout == 0 ? ((t * dirs + d) * batch + b) * H : ((b * seq + t) * dirs + d) * H;
  };
  std::vector<float> xw(static_cast<size_t>(std::max<int64_t>(1, seq * batch * g * H)));
  std::vector<float> xs(static_cast<size_t>(std::max<int64_t>(1, seq * batch * I)));
  std::vector<float> hr(static_cast<size_t>(batch * g * H)), h(static_cast<size_t>(batch * H)), c(static_cast<size_t>(batch * H));
  std::vector<float> rh(static_cast<size_t>(H)), gated(static_cast<size_t>(batch * H));  // rh: GRU's r (.) H_{t-1}
  for (int64_t t = 0; t < seq; ++t)
    for (int64_t b = 0; b < batch; ++b) std::memcpy(&xs[static_cast<size_t>((t * batch + b) * I)], x_at(t, b), static_cast<size_t>(I) * 4);
  for (int64_t d = 0; d < dirs; ++d) {
    bool reverse = a.direction == 1 || d == 1;
    const float* w = W.data<float>() + d * g * H * I;
    const float* r = R.data<float>() + d * g * H * H;
    const float* wb = B ? B->data<float>() + d * 2 * g * H : nullptr;
    const float* rb = B ? wb + g * H : nullptr;
    const float* p = P ? P->data<float>() + d * 3 * H : nullptr;
    Act f = static_cast<Act>(a.activations[static_cast<size_t>(d * funcs)]);
    float fa = a.alphas[static_cast<size_t>(d * funcs)], fb = a.betas[static_cast<size_t>(d * funcs)];
    Act gf = funcs > 1 ? static_cast<Act>(a.activations[static_cast<size_t>(d * funcs + 1)]) : f;
    float ga = funcs > 1 ? a.alphas[static_cast<size_t>(d * funcs + 1)] : fa, gb = funcs > 1 ? a.betas[static_cast<size_t>(d * funcs + 1)] : fb;
    Act hf = funcs > 2 ? static_cast<Act>(a.activations[static_cast<size_t>(d * funcs + 2)]) : gf;
    float ha = funcs > 2 ? a.alphas[static_cast<size_t>(d * funcs + 2)] : ga, hb = funcs > 2 ? a.betas[static_cast<size_t>(d * funcs + 2)] : gb;
    // Every step's input projection at once: [seq*batch, I] x W^T -> [seq*batch, g*H].
    if (seq * batch > 0)
      kernels::sgemm(seq * batch, g * H, I, kernels::MatrixView{xs.data(), I, 1}, kernels::MatrixView{w, 1, I}, xw.data(),
                     g * H, {}, ctx.pool);
    for (int64_t b = 0; b < batch; ++b) {
      for (int64_t k = 0; k < H; ++k) {
        h[static_cast<size_t>(b * H + k)] = h0 ? h0->data<float>()[state_index(d, b) + k] : 0.0f;
        c[static_cast<size_t>(b * H + k)] = c0 ? c0->data<float>()[state_index(d, b) + k] : 0.0f;
      }
    }
    auto clip = [&](float v) { return a.clip > 0 ? std::min(a.clip, std::max(-a.clip, v)) : v; };
    for (int64_t step = 0; step < seq; ++step) {
      int64_t t = reverse ? seq - 1 - step : step;
      // H_{t-1} R^T: [batch, H] x [H, g*H].
      kernels::sgemm(batch, g * H, H, kernels::MatrixView{h.data(), H, 1}, kernels::MatrixView{r, 1, H}, hr.data(), g * H, {}, nullptr);
      for (int64_t b = 0; b < batch; ++b) {
        bool active = reverse ? t < length[static_cast<size_t>(b)] : step < length[static_cast<size_t>(b)];
        const float* xg = &xw[static_cast<size_t>((t * batch + b) * g * H)];
        const float* hg = &hr[static_cast<size_t>(b * g * H)];
        float* hb_ = &h[static_cast<size_t>(b * H)];
        float* cb = &c[static_cast<size_t>(b * H)];
        auto bias = [&](int gate, int64_t k) {
          return wb ? wb[gate * H + k] + rb[gate * H + k] : 0.0f;
        };
        if (!active) continue;
        if (op == OpType::kLSTM) {  // gates i, o, f, c
          for (int64_t k = 0; k < H; ++k) {
            float cp = cb[k];
            float i_ = clip(xg[k] + hg[k] + bias(0, k) + (p ? p[k] * cp : 0.0f));
            float f_ = clip(xg[2 * H + k] + hg[2 * H + k] + bias(2, k) + (p ? p[2 * H + k] * cp : 0.0f));
            float c_ = clip(xg[3 * H + k] + hg[3 * H + k] + bias(3, k));
            float it = activate(f, i_, fa, fb);
            float ft = a.input_forget ? 1.0f - it : activate(f, f_, fa, fb);
            float ct = activate(gf, c_, ga, gb);
            float cn = ft * cp + it * ct;
            float o_ = clip(xg[H + k] + hg[H + k] + bias(1, k) + (p ? p[H + k] * cn : 0.0f));
            float ot = activate(f, o_, fa, fb);
            gated[static_cast<size_t>(b * H + k)] = ot * activate(hf, cn, ha, hb);
            cb[k] = cn;
          }
        } else if (op == OpType::kGRU) {  // gates z, r, h
          // The candidate's recurrent term: (r (.) H_{t-1}) Rh^T, or r (.) (H_{t-1} Rh^T + Rbh)
          // with linear_before_reset (hg already holds H_{t-1} Rh^T).
          const float* rh_w = r + 2 * H * H;
          for (int64_t k = 0; k < H; ++k)
            rh[static_cast<size_t>(k)] = activate(f, clip(xg[H + k] + hg[H + k] + bias(1, k)), fa, fb) * (a.linear_before_reset ? 1.0f : hb_[k]);
          for (int64_t k = 0; k < H; ++k) {
            float z = activate(f, clip(xg[k] + hg[k] + bias(0, k)), fa, fb);
            float recurrent_term;
            if (a.linear_before_reset) {
              recurrent_term = rh[static_cast<size_t>(k)] * (hg[2 * H + k] + (rb ? rb[2 * H + k] : 0.0f));
            } else {
              recurrent_term = rb ? rb[2 * H + k] : 0.0f;
              for (int64_t j = 0; j < H; ++j) recurrent_term += rh[static_cast<size_t>(j)] * rh_w[k * H + j];
            }
            float ht = activate(gf, clip(xg[2 * H + k] + recurrent_term + (wb ? wb[2 * H + k] : 0.0f)), ga, gb);
            gated[static_cast<size_t>(b * H + k)] = (1.0f - z) * ht + z * hb_[k];
          }
        } else {  // RNN
          for (int64_t k = 0; k < H; ++k) gated[static_cast<size_t>(b * H + k)] = activate(f, clip(xg[k] + hg[k] + bias(0, k)), fa, fb);
        }
      }
      for (int64_t b = 0; b < batch; ++b) {
        bool active = reverse ? t < length[static_cast<size_t>(b)] : step < length[static_cast<size_t>(b)];
        if (!active) continue;  // Y stays 0 past a sequence's end; its state stays the last valid one
        std::memcpy(&h[static_cast<size_t>(b * H)], &gated[static_cast<size_t>(b * H)], static_cast<size_t>(H) * 4);
        std::memcpy(Y.data<float>() + y_index(t, d, b), &h[static_cast<size_t>(b * H)], static_cast<size_t>(H) * 4);
      }
    }
    for (int64_t b = 0; b < batch; ++b) {
      std::memcpy(Yh.data<float>() + state_index(d, b), &h[static_cast<size_t>(b * H)], static_cast<size_t>(H) * 4);
      std::memcpy(Yc.data<float>() + state_index(d, b), &c[static_cast<size_t>(b * H)], static_cast<size_t>(H) * 4);
    }
  }
  result = {Y, Yh};
  if (op == OpType::kLSTM) result.push_back(Yc);
  result.resize(ctx.node.outputs.size());
  return result;
}

bool recurrent_keeps_batch(const Node& n, const Graph&) { return n.attr<RecurrentAttrs>().layout == 1; }

// Per sequence: every step multiplies x by W and the hidden state by R, in every direction.
int64_t recurrent_macs(const CostCall& c) {
  const Value& xv = c.graph.value(c.node.inputs[0]);
  std::optional<Shape> w = c.input(1), r = c.input(2);
  if (!xv.shape_known || xv.shape.size() != 3 || !w || !r) return -1;
  int64_t steps = xv.shape[c.node.attr<RecurrentAttrs>().layout == 1 ? 1 : 0];
  int64_t we = mac_elements(*w, 0, c.who), re = mac_elements(*r, 0, c.who), per_step = 0;
  if (we < 0 || re < 0) return -1;
  check(!__builtin_add_overflow(we, re, &per_step), c.who + ": its multiply-accumulate count overflows 64 bits");
  return mac_product({steps, per_step}, c.who);
}

OpRecord recurrent(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_recurrent;
  r.attrs = attrs_codec<RecurrentAttrs, describe_recurrent, validate_recurrent>("recurrent");
  r.shapes = recurrent_shapes;
  r.run = run_recurrent;
  r.keeps_batch = recurrent_keeps_batch;
  r.counts_parameters = true;
  r.macs = recurrent_macs;
  return r;
}
OpRecord lstm() { return recurrent("LSTM"); }
OpRecord gru() { return recurrent("GRU"); }
OpRecord rnn() { return recurrent("RNN"); }

}  // namespace

TERN_REGISTER_OP(LSTM, lstm)
TERN_REGISTER_OP(GRU, gru)
TERN_REGISTER_OP(RNN, rnn)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
TERN_REGISTER_TORCH_OP(LSTM)
TERN_REGISTER_TORCH_OP(GRU)
TERN_REGISTER_TORCH_OP(RNN)
}  // namespace tern::train
#endif
