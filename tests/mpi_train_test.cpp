// Data-parallel training across ranks. A plain program run by ctest as
//   mpirun -np 2 mpi_train_test      exit status 0 = pass, 1 = fail
// Every rank trains the small test model for a few steps with 2 ranks, and also alone (a
// single-process communicator), and checks: the ranks end with identical weights; 2 ranks equal one
// process with the same global batch within float tolerance; AdaComp with a bin of 1, a zero
// threshold and exact values equals the uncompressed exchange bit for bit; default AdaComp trains,
// keeps the ranks identical and compresses, and resumes from a checkpoint to the same weights.
#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "tern/communicator.h"
#include "tern/error.h"
#include "tern/train.h"
#include "training_fixtures.h"

using namespace tern;

namespace {

int failures = 0;

void expect(bool condition, const std::string& what, const dist::Communicator& comm) {
  if (condition) return;
  std::fprintf(stderr, "FAIL %s: %s\n", comm.describe().c_str(), what.c_str());
  ++failures;
}

double max_difference(const train::TrainResult& a, const train::TrainResult& b) {
  double worst = 0;
  for (const auto& [name, t] : a.trained_values) {
    const Tensor& u = b.trained_values.at(name);
    for (int64_t i = 0; i < t.size(); ++i)
      worst = std::max(worst, std::fabs(static_cast<double>(t.data<float>()[i]) - u.data<float>()[i]));
  }
  return worst;
}

}  // namespace

int main() {
  std::unique_ptr<dist::Communicator> comm;
  try {
    comm = dist::make_mpi_communicator(60);
  } catch (const Error& e) {
    std::fprintf(stderr, "mpi_train_test: %s\n", e.what());
    return 1;
  }
  torch::set_num_threads(1);
  try {
    Graph g = testing::training_graph(testing::small_model_bytes());
    Dataset data = testing::synthetic_dataset(96);
    Preprocess norm;
    norm.mean = {0.4f};
    norm.std = {0.3f};
    train::TrainOptions o;
    o.init = train::Init::kPretrained;
    o.epochs = 2;
    o.batch = 16;
    o.lr = 0.05;
    o.progress = false;
    train::TrainResult alone = train::train_network(g, data, norm, o);

    o.distributed.communicator = comm.get();
    train::TrainResult two = train::train_network(g, data, norm, o);  // checks the hashes every epoch
    expect(two.ranks == 2, "two ranks", *comm);
    const double diff = max_difference(two, alone);
    expect(diff < 1e-4, "2 ranks vs one process: max weight difference " + std::to_string(diff), *comm);
    expect(std::fabs(two.epochs.back().loss - alone.epochs.back().loss) < 1e-4, "same loss as one process", *comm);

    o.distributed.bucket_bytes = 64;  // many buckets
    train::TrainResult small_buckets = train::train_network(g, data, norm, o);
    expect(max_difference(small_buckets, two) < 1e-5, "bucket size does not change the result", *comm);

    o.distributed.bucket_bytes = 1 << 20;
    o.distributed.compression = "adacomp";
    o.distributed.bin_conv = o.distributed.bin_fc = 1;
    o.distributed.threshold_scale = 0;
    o.distributed.exact_values = true;
    train::TrainResult lossless = train::train_network(g, data, norm, o);
    expect(max_difference(lossless, two) == 0.0, "lossless AdaComp equals the uncompressed exchange", *comm);

    o.distributed.bin_conv = 50;
    o.distributed.bin_fc = 500;
    o.distributed.threshold_scale = 1;
    o.distributed.exact_values = false;
    train::TrainResult compressed = train::train_network(g, data, norm, o);
    // Checkpoint mid-run (rank 0 writes every rank's AdaComp residuals), resume on every rank:
    // the same weights as the uninterrupted run.
    std::vector<uint8_t> dir_name;
    if (comm->rank() == 0) {
      char pattern[] = "/tmp/tern_mpi_train_XXXXXX";
      const char* made = mkdtemp(pattern);
      std::string d = made ? made : "/tmp";
      dir_name.assign(d.begin(), d.end());
    }
    comm->broadcast(dir_name);
    const std::string dir(dir_name.begin(), dir_name.end());
    train::TrainOptions part = o;
    part.checkpoint_path = dir + "/run.ckpt";
    part.checkpoint_every = 4;
    part.max_steps = 7;
    train::train_network(g, data, norm, part);
    comm->barrier();  // rank 0 has renamed the checkpoint into place
    part.max_steps = 0;
    part.resume_path = dir + "/run.ckpt";
    part.checkpoint_path = dir + "/rest.ckpt";
    train::TrainResult resumed = train::train_network(g, data, norm, part);
    expect(resumed.epochs.back().weights_hash == compressed.epochs.back().weights_hash,
           "resuming an AdaComp run from its checkpoint gives the uninterrupted weights", *comm);
    comm->barrier();
    if (comm->rank() == 0) std::filesystem::remove_all(dir);

    nlohmann::json stats = nlohmann::json::parse(compressed.exchange_json);
    expect(stats["conv"]["compression"].get<double>() > 2, "AdaComp compresses conv gradients", *comm);
    expect(compressed.epochs.back().loss < compressed.epochs.front().loss * 1.1, "AdaComp still trains", *comm);
  } catch (const Error& e) {
    std::fprintf(stderr, "FAIL %s: %s\n", comm->describe().c_str(), e.what());
    ++failures;
  }
  std::vector<uint64_t> all = comm->allgather(static_cast<uint64_t>(failures));
  uint64_t total = 0;
  for (uint64_t f : all) total += f;
  if (comm->rank() == 0) std::printf("mpi_train_test: %s\n", total ? "FAILED" : "passed");
  return total ? 1 : 0;
}
