// tern accum: reduced-precision accumulation (Sakr et al. 2019). The variance retention ratio of
// n-term sums at m mantissa bits, the smallest m that keeps it, and a model's per-layer table.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "tern/accumulation.h"
#include "tern/onnx_import.h"
#include "tern/thread_pool.h"

namespace tern::cli {
namespace {

namespace ac = tern::accum;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// --m M or a range LO..HI (also LO-HI).
std::pair<int, int> parse_m(const Args& args) {
  const std::string text = args.get("m");
  size_t sep = text.find("..");
  size_t skip = 2;
  if (sep == std::string::npos) {
    sep = text.find('-', 1);
    skip = 1;
  }
  auto number = [&](const std::string& s) {
    try {
      size_t used = 0;
      long long v = std::stoll(s, &used);
      if (used == s.size() && v >= 1 && v <= ac::kDoubleMantissaBits) return static_cast<int>(v);
    } catch (const std::logic_error&) {
    }
    throw UsageError("--m: expected mantissa bits in [1, 52] or a range LO..HI, got '" + text + "'");
  };
  if (sep == std::string::npos) {
    int m = number(text);
    return {m, m};
  }
  int lo = number(text.substr(0, sep)), hi = number(text.substr(sep + skip));
  if (lo > hi) throw UsageError("--m: empty range '" + text + "'");
  return {lo, hi};
}

nlohmann::json estimate_json(const ac::VrrEstimate& e) {
  return {{"m", e.mantissa_bits},
          {"vrr", e.vrr},
          {"std_error", e.std_error},
          {"error_ratio", e.error_ratio},
          {"error_std_error", e.error_std_error}};
}

}  // namespace

int cmd_accum(int argc, char** argv) {
  Args args("accum", argc, argv, 2, {"n", "m", "chunk", "trials", "seed", "terms", "criterion", "batch", "estimate"},
            {"json"});
  const bool json = args.flag("json");
  const bool model_mode = !args.positional().empty();
  if (model_mode && args.has("n")) throw UsageError("'tern accum' takes either MODEL.onnx or --n N, not both");
  if (!model_mode && !args.has("n")) throw UsageError("'tern accum' needs --n N (a sum length) or a MODEL.onnx");
  if (model_mode && args.has("m")) throw UsageError("--m goes with --n (for a model, tern accum finds m per layer)");
  if (!model_mode && args.has("batch")) throw UsageError("--batch goes with a MODEL.onnx");

  ac::MantissaSearch search;
  search.vrr.trials = args.get_int("trials", 256, 2, int64_t{1} << 30);
  search.vrr.seed = static_cast<uint64_t>(args.get_int("seed", 1, 0, int64_t{1} << 62));
  try {
    search.vrr.terms = ac::parse_term_distribution(args.get("terms", "normal"));
  } catch (const Error& e) {
    throw UsageError(std::string("--terms: ") + e.what());
  }
  try {
    search.estimator = ac::parse_estimator(args.get("estimate", "analytic"));
  } catch (const Error& e) {
    throw UsageError(std::string("--estimate: ") + e.what());
  }
  const bool monte_carlo = search.estimator == ac::Estimator::kMonteCarlo;
  if (!monte_carlo && (args.has("trials") || args.has("seed")) && !args.has("m"))
    throw UsageError("--trials and --seed go with --estimate monte-carlo (the analytic model draws nothing)");
  try {
    if (args.has("criterion")) search.criterion = ac::parse_criterion(args.get("criterion"));
  } catch (const Error& e) {
    throw UsageError(std::string("--criterion: ") + e.what());
  }
  const int64_t chunk = args.get_int("chunk", model_mode ? 64 : 0, 0, int64_t{1} << 40);
  const auto start = std::chrono::steady_clock::now();
  nlohmann::json report = {{"estimate", ac::estimator_name(search.estimator)},
                           {"terms", ac::term_distribution_name(search.vrr.terms)}, {"chunk", chunk},
                           {"threads", ThreadPool::global().size()}};
  if (monte_carlo || args.has("m")) report["trials"] = search.vrr.trials, report["seed"] = search.vrr.seed;
  const char* terms = ac::term_distribution_name(search.vrr.terms);
  // "analytic model, normal terms" or "256 trials of normal terms, seed 1".
  auto how = [&] {
    char buf[128];
    if (monte_carlo)
      std::snprintf(buf, sizeof buf, "%lld trials of %s terms, seed %llu", static_cast<long long>(search.vrr.trials),
                    terms, static_cast<unsigned long long>(search.vrr.seed));
    else
      std::snprintf(buf, sizeof buf, "analytic model, %s terms", terms);
    return std::string(buf);
  };

  if (model_mode) {
    const std::string path = args.model("accum");
    const int64_t batch = args.get_int("batch", 128, 1, int64_t{1} << 30);
    Graph graph = import_onnx(path);
    std::vector<ac::LayerAccumulation> layers = ac::layer_accumulation(graph, batch, chunk, search);
    const double seconds = seconds_since(start);
    report["model"] = path;
    report["batch"] = batch;
    report["criterion"] = search.criterion.name();
    report["seconds"] = seconds;
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& l : layers) {
      nlohmann::json backward = {{"n", l.backward_n}, {"m", l.backward_m}, {"m_chunked", l.backward_m_chunked}};
      rows.push_back({{"node", l.node},
                      {"op", l.op},
                      {"forward", {{"n", l.forward_n}, {"m", l.forward_m}, {"m_chunked", l.forward_m_chunked}}},
                      {"backward", backward},
                      {"input_gradient", l.input_gradient},
                      {"weight_gradient",
                       {{"n", l.weight_grad_n}, {"m", l.weight_grad_m}, {"m_chunked", l.weight_grad_m_chunked}}}});
    }
    report["layers"] = rows;
    if (json) {
      std::cout << report.dump() << "\n";
      return 0;
    }
    std::printf("%s: minimal accumulator mantissa bits per training GEMM (batch %lld, %s, %s)\n", path.c_str(),
                static_cast<long long>(batch), search.criterion.name().c_str(), how().c_str());
    char chunked[32];
    std::snprintf(chunked, sizeof chunked, "m@%lld", static_cast<long long>(chunk));
    int width = 5;
    for (const auto& l : layers) width = std::max(width, static_cast<int>(l.node.size()));
    std::printf("%-*s %-6s | %8s %3s %5s | %8s %3s %5s | %8s %3s %5s\n", width, "layer", "op", "fwd n", "m", chunked,
                "bwd n", "m", chunked, "wgrad n", "m", chunked);
    for (const auto& l : layers) {
      std::printf("%-*s %-6s | %8lld %3d %5d | ", width, l.node.c_str(), l.op.c_str(),
                  static_cast<long long>(l.forward_n), l.forward_m, l.forward_m_chunked);
      if (l.input_gradient)
        std::printf("%8lld %3d %5d | ", static_cast<long long>(l.backward_n), l.backward_m, l.backward_m_chunked);
      else
        std::printf("%8s %3s %5s | ", "-", "-", "-");
      std::printf("%8lld %3d %5d\n", static_cast<long long>(l.weight_grad_n), l.weight_grad_m, l.weight_grad_m_chunked);
    }
    std::printf("(bwd '-': the layer reads the model input, no input-gradient GEMM; %s: chunks of %lld terms)\n"
                "%zu layers in %.1f s, %d threads\n",
                chunked, static_cast<long long>(chunk), layers.size(), seconds, ThreadPool::global().size());
    return 0;
  }

  const int64_t n = args.get_int("n", 1, 1, int64_t{1} << 26);
  report["n"] = n;
  if (args.has("m")) {
    if (args.has("criterion")) throw UsageError("--criterion goes with the search for m (drop --m)");
    auto [lo, hi] = parse_m(args);
    std::vector<ac::VrrEstimate> plain = ac::vrr_curve(n, lo, hi, 0, search.vrr), chunked;
    if (chunk > 0) chunked = ac::vrr_curve(n, lo, hi, chunk, search.vrr);
    report["seconds"] = seconds_since(start);
    // The analytic model beside each Monte-Carlo estimate.
    auto analytic = [&](int m, int64_t c) {
      const ac::AnalyticVrr a = ac::analytic_vrr(n, m, c, search.vrr.terms);
      return nlohmann::json{{"vrr", a.vrr}, {"error_ratio", a.error_ratio}, {"swamped", a.swamped}};
    };
    nlohmann::json rows = nlohmann::json::array();
    for (size_t i = 0; i < plain.size(); ++i) {
      nlohmann::json row = estimate_json(plain[i]);
      row["analytic"] = analytic(plain[i].mantissa_bits, 0);
      if (!chunked.empty()) {
        row["chunked"] = estimate_json(chunked[i]);
        row["chunked"].erase("m");
        row["chunked"]["analytic"] = analytic(plain[i].mantissa_bits, chunk);
      }
      rows.push_back(row);
    }
    report["estimates"] = rows;
    if (json) {
      std::cout << report.dump() << "\n";
      return 0;
    }
    std::printf("%lld-term sums, %lld trials of %s terms (seed %llu): variance retention ratio VRR and the error's\n"
                "variance in units of one term's, n * E[(s_m - s)^2] / E[s^2], each +- its standard error; then\n"
                "the analytic model's error (the variance lost, in terms)\n",
                static_cast<long long>(n), static_cast<long long>(search.vrr.trials), terms,
                static_cast<unsigned long long>(search.vrr.seed));
    std::printf("%4s  %-49s", "m", "unchunked: VRR, error (terms), analytic");
    if (chunk > 0) std::printf("  chunks of %lld: VRR, error (terms), analytic", static_cast<long long>(chunk));
    std::printf("\n");
    const double terms_per_ratio = static_cast<double>(n);
    auto cell = [&](const ac::VrrEstimate& e, const nlohmann::json& a) {
      std::printf("%.6f +- %.6f  %9.3g +- %-9.2g %9.3g", e.vrr, e.std_error, e.error_ratio * terms_per_ratio,
                  e.error_std_error * terms_per_ratio, a["error_ratio"].get<double>() * terms_per_ratio);
    };
    for (size_t i = 0; i < plain.size(); ++i) {
      std::printf("%4d  ", plain[i].mantissa_bits);
      cell(plain[i], rows[i]["analytic"]);
      if (chunk > 0) {
        std::printf("  ");
        cell(chunked[i], rows[i]["chunked"]["analytic"]);
      }
      std::printf("\n");
    }
    return 0;
  }

  const int m_plain = ac::min_mantissa_bits(n, 0, search);
  const int m_chunked = chunk > 0 ? ac::min_mantissa_bits(n, chunk, search) : m_plain;
  report["criterion"] = search.criterion.name();
  report["min_m"] = m_plain;
  if (chunk > 0) report["min_m_chunked"] = m_chunked;
  report["seconds"] = seconds_since(start);
  if (json) {
    std::cout << report.dump() << "\n";
    return 0;
  }
  std::printf("n = %lld: minimal accumulator mantissa %d bits", static_cast<long long>(n), m_plain);
  if (chunk > 0) std::printf(", %d bits in chunks of %lld", m_chunked, static_cast<long long>(chunk));
  std::printf(" (%s, %s)\n", search.criterion.name().c_str(), how().c_str());
  return 0;
}

}  // namespace tern::cli
