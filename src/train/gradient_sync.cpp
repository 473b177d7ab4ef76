#include "train/gradient_sync.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "tern/error.h"

namespace tern::train {

using nlohmann::json;

GradientSync::GradientSync(const DistributedOptions& options) : options_(options), comm_(options.communicator) {
  if (!comm_) {
    single_ = dist::make_single_process_communicator();
    comm_ = single_.get();
  }
  rank_ = comm_->rank();
  size_ = comm_->size();
  check(options.compression == "none" || options.compression == "adacomp",
        "training: --compress '" + options.compression + "': expected none or adacomp");
  check(options.bin_conv >= 1 && options.bin_fc >= 1 && options.bin_conv <= 65536 && options.bin_fc <= 65536,
        "training: AdaComp bins must be in 1..65536");
  check(options.threshold_scale >= 0, "training: the AdaComp threshold scale must be >= 0");
  check(options.bucket_bytes >= 4, "training: the all-reduce bucket must hold at least one float");
}

std::string GradientSync::describe() const {
  if (size_ == 1) return "one process";
  if (options_.compression == "adacomp")
    return "adacomp bins " + std::to_string(options_.bin_conv) + "/" + std::to_string(options_.bin_fc) + " threshold " +
           std::to_string(options_.threshold_scale) + (options_.exact_values ? " exact" : "");
  return "all-reduce buckets of " + std::to_string(options_.bucket_bytes) + " bytes";
}

void GradientSync::set_parameters(const std::vector<Parameter>& params) {
  names_.clear();
  buffers_.assign(params.size(), {});
  handed_.assign(params.size(), false);
  slot_of_param_.assign(params.size(), 0);
  if (size_ == 1) return;
  std::vector<dist::TensorSpec> specs;
  for (size_t k = params.size(); k-- > 0;) {  // backprop produces the last layer's gradients first
    const Parameter& p = params[k];
    dist::TensorKind kind = !p.decay ? dist::TensorKind::other
                            : p.value.dim() >= 3 ? dist::TensorKind::conv
                                                 : dist::TensorKind::fc;
    slot_of_param_[k] = specs.size();
    specs.push_back({p.name, static_cast<size_t>(p.value.numel()), kind});
    buffers_[k].resize(static_cast<size_t>(p.value.numel()));
  }
  for (const Parameter& p : params) names_.push_back(p.name);
  dist::ExchangeOptions o;
  o.bucket_bytes = static_cast<size_t>(options_.bucket_bytes);
  o.compression = options_.compression == "adacomp" ? dist::Compression::adacomp : dist::Compression::none;
  o.bin_conv = static_cast<size_t>(options_.bin_conv);
  o.bin_fc = static_cast<size_t>(options_.bin_fc);
  o.threshold_scale = static_cast<float>(options_.threshold_scale);
  o.exact_values = options_.exact_values;
  exchange_ = std::make_unique<dist::GradientExchange>(*comm_, std::move(specs), o);
}

void GradientSync::begin_step() {
  if (!exchange_) return;
  std::fill(handed_.begin(), handed_.end(), false);
  exchange_->begin_step();
}

void GradientSync::gradient_ready(size_t i, const torch::Tensor& gradient) {
  if (!exchange_) return;
  torch::Tensor g = gradient.detach().to(torch::kFloat32).contiguous();
  std::memcpy(buffers_[i].data(), g.data_ptr<float>(), buffers_[i].size() * sizeof(float));
  handed_[i] = true;
  exchange_->gradient_ready(slot_of_param_[i], buffers_[i]);
}

void GradientSync::finish(std::vector<torch::Tensor>& grads, const std::vector<Parameter>& params) {
  if (!exchange_) return;
  for (size_t i = 0; i < params.size(); ++i)
    if (!handed_[i]) {  // no gradient this step (an unused parameter): every rank hands in zeros
      std::fill(buffers_[i].begin(), buffers_[i].end(), 0.0f);
      exchange_->gradient_ready(slot_of_param_[i], buffers_[i]);
    }
  exchange_->finish();
  for (size_t i = 0; i < params.size(); ++i)
    grads[i] = torch::from_blob(buffers_[i].data(), params[i].value.sizes(), torch::kFloat32)
                   .to(params[i].value.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
}

std::pair<double, int64_t> GradientSync::sum_metrics(double loss_sum, int64_t correct) {
  if (size_ == 1) return {loss_sum, correct};
  std::vector<float> v = {static_cast<float>(loss_sum), static_cast<float>(correct)};
  comm_->wait(comm_->start_allreduce_sum(v));
  return {v[0], static_cast<int64_t>(std::llround(v[1]))};
}

void GradientSync::check_same_weights(const std::string& hash, int epoch) {
  if (size_ == 1) return;
  std::vector<uint64_t> all = comm_->allgather(std::stoull(hash, nullptr, 16));
  for (size_t r = 1; r < all.size(); ++r)
    check(all[r] == all[0], "ranks disagree on the weights after epoch " + std::to_string(epoch) + ": rank 0 hash " +
                                hash + ", rank " + std::to_string(r) + " differs");
}

std::vector<CheckpointTensor> GradientSync::state_tensors() {
  std::vector<CheckpointTensor> t;
  if (!exchange_) return t;
  for (int r = 0; r < size_; ++r)
    for (size_t i = 0; i < names_.size(); ++i)
      if (exchange_->has_residual(slot_of_param_[i]))
        t.push_back({"rank " + std::to_string(r) + "/" + names_[i], "residual",
                     torch::zeros({static_cast<int64_t>(buffers_[i].size())}, torch::kFloat32)});
  return t;
}

void GradientSync::gather_state(std::vector<CheckpointTensor>& tensors) {
  if (!exchange_) return;
  std::vector<uint8_t> mine;
  for (size_t i = 0; i < names_.size(); ++i)
    if (exchange_->has_residual(slot_of_param_[i])) {
      std::span<const float> r = exchange_->residual(slot_of_param_[i]);
      const auto* bytes = reinterpret_cast<const uint8_t*>(r.data());
      mine.insert(mine.end(), bytes, bytes + r.size() * sizeof(float));
    }
  std::vector<std::vector<uint8_t>> all = comm_->allgatherv(mine);
  // Residual tensors are listed rank by rank, in parameter order: copy each rank's bytes in turn.
  size_t offset = 0;
  int current = -1;
  for (auto& t : tensors) {
    if (t.role != "residual") continue;
    const int r = std::stoi(t.name.substr(5));
    if (r != current) current = r, offset = 0;
    const std::vector<uint8_t>& src = all[static_cast<size_t>(r)];
    const size_t bytes = static_cast<size_t>(t.tensor.numel()) * sizeof(float);
    check(offset + bytes <= src.size(), "checkpoint: rank " + std::to_string(r) + " sent short AdaComp residuals");
    std::memcpy(t.tensor.data_ptr<float>(), src.data() + offset, bytes);
    offset += bytes;
  }
}

void GradientSync::restore_state(const std::vector<CheckpointTensor>& tensors) {
  if (!exchange_) return;
  const std::string prefix = "rank " + std::to_string(rank_) + "/";
  for (const CheckpointTensor& t : tensors) {
    if (t.role != "residual" || t.name.rfind(prefix, 0) != 0) continue;
    std::string name = t.name.substr(prefix.size());
    for (size_t i = 0; i < names_.size(); ++i)
      if (names_[i] == name) {
        torch::Tensor c = t.tensor.contiguous();
        exchange_->set_residual(slot_of_param_[i], {c.data_ptr<float>(), static_cast<size_t>(c.numel())});
      }
  }
}

std::string GradientSync::stats_json() const {
  if (!exchange_) return json{{"ranks", size_}}.dump();
  const dist::ExchangeStats& s = exchange_->total_stats();
  auto traffic = [](const dist::Traffic& t) {
    return json{{"elements", t.elements}, {"selected", t.selected}, {"bytes", t.bytes},
                {"dense_bytes", t.dense_bytes()}, {"compression", t.compression_ratio()}};
  };
  json tensors = json::array();
  for (size_t k = 0; k < exchange_->tensors().size(); ++k) {
    json t = traffic(s.tensors[k]);
    t["name"] = exchange_->tensors()[k].name;
    t["kind"] = dist::tensor_kind_name(exchange_->tensors()[k].kind);
    tensors.push_back(t);
  }
  return json{{"ranks", size_},
              {"exchange", describe()},
              {"steps", s.steps},
              {"buckets", exchange_->bucket_count()},
              {"conv", traffic(s.conv)},
              {"fc", traffic(s.fc)},
              {"other", traffic(s.other)},
              {"total", traffic(s.total)},
              {"tensors", tensors}}
      .dump();
}

}  // namespace tern::train
