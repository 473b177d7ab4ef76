// tern train: training on libtorch at float32, fixed point (stochastic or nearest rounding) or with
// reduced-precision accumulation; data parallel over MPI with --distributed (mpirun -np P).
#include <torch/torch.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/args.h"
#include "cli/training_cli.h"
#include "core/file_io.h"
#include "tern/communicator.h"
#include "tern/onnx_import.h"
#include "tern/passes.h"
#include "tern/train.h"

namespace tern::cli {
namespace {

train::NumericOptions numeric_options(const Args& args) {
  train::NumericOptions n;
  std::string spec = args.get("numeric", "float32");
  if (spec != "float32") {
    if (spec.rfind("fixed:", 0) != 0) throw UsageError("--numeric: expected float32 or fixed:IL.FL, got '" + spec + "'");
    try {
      n.format = numerics::parse_fixed_format(spec);
    } catch (const Error& e) {
      throw UsageError(std::string("--numeric: ") + e.what());
    }
    n.fixed = true;
  }
  try {
    n.rounding = numerics::parse_rounding(args.get("rounding", "stochastic"));
  } catch (const Error& e) {
    throw UsageError(std::string("--rounding: ") + e.what());
  }
  if (args.has("rounding") && !n.fixed) throw UsageError("--rounding applies to --numeric fixed:IL.FL only");
  if (args.has("gradient-numeric")) {
    if (!n.fixed) throw UsageError("--gradient-numeric applies to --numeric fixed:IL.FL only");
    const std::string g = args.get("gradient-numeric", "");
    if (g.rfind("fixed:", 0) != 0) throw UsageError("--gradient-numeric: expected fixed:IL.FL, got '" + g + "'");
    try {
      n.gradient_format = numerics::parse_fixed_format(g);
    } catch (const Error& e) {
      throw UsageError(std::string("--gradient-numeric: ") + e.what());
    }
  }
  const std::string compute = args.get("fixed-compute", "float64");
  if (compute != "float64" && compute != "float32")
    throw UsageError("--fixed-compute: expected float64 or float32, got '" + compute + "'");
  if (args.has("fixed-compute") && !n.fixed) throw UsageError("--fixed-compute applies to --numeric fixed:IL.FL only");
  n.exact_compute = compute == "float64";
  const int all = static_cast<int>(args.get_int("accumulate", 0, 1, 23));
  n.accumulate_forward = static_cast<int>(args.get_int("accumulate-forward", all, 1, 23));
  n.accumulate_backward = static_cast<int>(args.get_int("accumulate-backward", all, 1, 23));
  n.accumulate_weight_grad = static_cast<int>(args.get_int("accumulate-weight-grad", all, 1, 23));
  n.accumulate_chunk = args.get_int("accumulate-chunk", 0, 1, int64_t{1} << 30);
  if (n.fixed && (n.accumulate_forward || n.accumulate_backward || n.accumulate_weight_grad))
    throw UsageError("--accumulate* emulate float accumulators: use them with --numeric float32");
  if (n.accumulate_chunk && !(n.accumulate_forward || n.accumulate_backward || n.accumulate_weight_grad))
    throw UsageError("--accumulate-chunk needs --accumulate M (or a per-GEMM --accumulate-*)");
  return n;
}

// A hidden hook for the fault tests: TERN_TEST_EXIT_RANK=R TERN_TEST_EXIT_STEP=S makes rank R
// exit abruptly (no MPI_Finalize) when it reaches step S, as a crashed worker would.
void install_fault_hook(train::TrainOptions& o, int rank) {
  const char* r = std::getenv("TERN_TEST_EXIT_RANK");
  const char* s = std::getenv("TERN_TEST_EXIT_STEP");
  if (!r || !s || std::atoi(r) != rank) return;
  o.exit_at_step = std::atoll(s);
}

}  // namespace

int cmd_train(int argc, char** argv) {
  Args args("train", argc, argv, 2,
            {"output", "init", "numeric", "gradient-numeric", "rounding", "fixed-compute", "accumulate", "accumulate-forward", "accumulate-backward",
             "accumulate-weight-grad", "accumulate-chunk", "epochs", "batch", "lr", "lr-final", "schedule", "momentum",
             "weight-decay", "label-smoothing", "data", "labels", "train-images", "test-images", "test-every", "seed", "threads",
             "checkpoint", "checkpoint-every", "resume", "steps", "curve-every", "compress", "bin-conv", "bin-fc",
             "threshold-scale", "bucket-kb", "timeout", "scale", "mean", "std", "resize", "crop", "pad", "channels", "layout", "input-shape"},
            {"no-augment", "no-progress", "no-test", "json", "distributed", "exact-values", "timeline"});
  std::string in_path = args.model("train");
  if (!args.has("output")) throw UsageError("'tern train' needs -o OUT.onnx (the trained FP32 model)");
  const std::string out_path = args.get("output");
  if (out_path.empty()) throw UsageError("-o: empty path");
  if (out_path == in_path) throw UsageError("-o would overwrite the input model " + in_path);

  train::TrainOptions o;
  const std::string init = args.get("init", "random");
  if (init != "random" && init != "pretrained") throw UsageError("--init: expected random or pretrained, got '" + init + "'");
  o.init = init == "random" ? train::Init::kRandom : train::Init::kPretrained;
  o.numeric = numeric_options(args);
  o.epochs = static_cast<int>(args.get_int("epochs", 10, 1, 10000));
  o.batch = args.get_int("batch", 64, 1, 1 << 16);
  o.lr = args.get_double("lr", 0.05, 1e-12, 10);
  o.lr_final = args.get_double("lr-final", 0, 0, 10);
  try {
    o.schedule = train::parse_lr_schedule(args.get("schedule", "cosine"));
  } catch (const Error& e) {
    throw UsageError(std::string("--schedule: ") + e.what());
  }
  if (o.schedule == train::LrSchedule::kExponential && !(o.lr_final > 0))
    throw UsageError("--schedule exp needs --lr-final > 0");
  o.momentum = args.get_double("momentum", 0.9, 0, 0.999);
  o.weight_decay = args.get_double("weight-decay", 5e-4, 0, 1);
  o.label_smoothing = args.get_double("label-smoothing", 0, 0, 0.99);
  o.seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, int64_t{1} << 62));
  o.augment = !args.flag("no-augment");
  o.train_images = args.get_int("train-images", 0, 0, int64_t{1} << 40);
  o.test_images = args.get_int("test-images", 0, 0, int64_t{1} << 40);
  o.test_every = static_cast<int>(args.get_int("test-every", 1, 1, 1 << 20));
  o.max_steps = args.get_int("steps", 0, 0, int64_t{1} << 40);
  o.curve_every = args.get_int("curve-every", 0, 1, int64_t{1} << 40);
  const bool keep_checkpoint = args.has("checkpoint");
  o.checkpoint_path = args.get("checkpoint", out_path + ".ckpt");
  o.checkpoint_every = args.get_int("checkpoint-every", 0, 1, int64_t{1} << 40);
  o.resume_path = args.get("resume");
  // --resume may name the checkpoint it goes on writing; no other input may be an output.
  check_output_paths({in_path, args.get("data"), args.get("labels")}, {out_path, o.checkpoint_path});
  train::DistributedOptions& d = o.distributed;
  d.compression = args.get("compress", "none");
  if (d.compression != "none" && d.compression != "adacomp")
    throw UsageError("--compress: expected none or adacomp, got '" + d.compression + "'");
  d.bin_conv = args.get_int("bin-conv", 50, 1, 1 << 24);
  d.bin_fc = args.get_int("bin-fc", 500, 1, 1 << 24);
  d.threshold_scale = args.get_double("threshold-scale", 1.0, 0, 1e6);
  d.exact_values = args.flag("exact-values");
  d.bucket_bytes = args.get_int("bucket-kb", 256, 1, 1 << 20) * 1024;
  const double timeout = args.get_double("timeout", 120, 1, 86400);
  const bool distributed = args.flag("distributed");
  if (!distributed)
    for (const char* opt : {"compress", "bin-conv", "bin-fc", "threshold-scale", "bucket-kb", "timeout"})
      if (args.has(opt)) throw UsageError(std::string("--") + opt + " needs --distributed (run under mpirun)");

  std::unique_ptr<dist::Communicator> comm;
  if (distributed) {
    if (!dist::mpi_available()) throw Error("this tern was built without MPI: --distributed needs it (apt-get install libopenmpi-dev, rebuild)");
    comm = dist::make_mpi_communicator(timeout);
    d.communicator = comm.get();
  }
  const int rank = comm ? comm->rank() : 0, ranks = comm ? comm->size() : 1;
  // One machine's cores shared among its ranks (torch would otherwise start a thread per core in each).
  const int threads = static_cast<int>(args.get_int(
      "threads", std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / ranks), 1, 1024));
  torch::set_num_threads(threads);
  o.progress = !args.flag("no-progress") && !args.flag("json");
  o.timeline = args.flag("timeline");
  install_fault_hook(o, rank);

  try {
    TrainingModel model = load_training_model(in_path, input_shapes(args));
    const Graph& raw = model.raw;
    const Graph& graph = model.graph;
    Preprocess norm = preprocess(args, graph);
    std::string spec = args.get("data", "fashion-mnist");
    bool npy = is_npy_spec(spec);
    if (npy && !args.has("labels")) throw UsageError("--data " + spec + " needs --labels Y.npy");
    Dataset train_set = load_dataset(spec, args.get("labels", ""), "train");
    check(train_set.size() > 0, spec + ": no training images");
    Dataset test_set;
    if (!npy && !args.flag("no-test")) {
      test_set = load_dataset(spec, "", "test");
      o.test = &test_set;
    }

    train::TrainResult r = train::train_network(graph, train_set, norm, o);

    nlohmann::json report = nlohmann::json::parse(r.provenance_json);
    report["model"] = out_path;
    report["source"] = in_path;
    report["exchange"] = nlohmann::json::parse(r.exchange_json);
    nlohmann::json curve = nlohmann::json::array();
    for (const auto& [step, loss] : r.curve) curve.push_back({step, loss});
    report["curve"] = curve;
    if (!r.timeline_json.empty()) report["timeline"] = nlohmann::json::parse(r.timeline_json);
    if (rank == 0) {
      std::string command;
      for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
      write_onnx_with_initializers(in_path, out_path, onnx_replacements(raw, r.trained_values, in_path),
                                   {{"tern.trained", command}, {"tern.numeric", o.numeric.name()}});
      if (!keep_checkpoint) std::remove(o.checkpoint_path.c_str());
      if (args.flag("json")) {
        std::cout << report.dump() << "\n";
      } else {
        std::printf("trained  %s -> %s: %s, %d rank%s, %lld steps in %.1f s\n", in_path.c_str(), out_path.c_str(),
                    o.numeric.name().c_str(), ranks, ranks == 1 ? "" : "s", static_cast<long long>(r.steps), r.seconds);
        std::printf("%6s %10s %10s %10s\n", "epoch", "loss", "train %", "test %");
        for (const train::TrainEpoch& e : r.epochs)
          if (e.test_top1 < 0)
            std::printf("%6d %10.4f %10.2f %10s\n", e.epoch, e.loss, e.train_accuracy, "-");
          else
            std::printf("%6d %10.4f %10.2f %10.2f\n", e.epoch, e.loss, e.train_accuracy, e.test_top1);
      }
    }
  } catch (const Error& e) {
    if (comm && ranks > 1) comm->abort(e.what());  // ends every rank, not only this one
    throw;
  }
  return 0;
}

}  // namespace tern::cli
