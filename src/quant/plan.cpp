#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "tern/error.h"
#include "tern/quant_plan.h"

namespace tern::quant {

namespace {

using json = nlohmann::json;

void validate(const LayerPlan& p, const std::string& who) {
  const WeightQuantConfig& w = p.weights;
  check(p.activation_bits == 0 || (p.activation_bits >= 2 && p.activation_bits <= 8),
        who + ": activation bits must be 2 to 8 (tern uses 4 or 8), got " + std::to_string(p.activation_bits));
  if (w.format == WeightFormat::kTernary || w.format == WeightFormat::kBinary)
    check(w.group_size >= 0, who + ": group size must be >= 1 or 'channel' ('tensor' is for int weights)");
  if (w.format == WeightFormat::kTernary && w.method == TernaryMethod::kCluster)
    check(w.group_size >= 1, who + ": cluster ternarization needs a cluster size >= 1");
  if (w.format == WeightFormat::kInt)
    check(w.bits >= 2 && w.bits <= 8 && w.group_size >= -1, who + ": integer weights need 2..8 bits");
}

// Applies the keys of one JSON object (top level or a layer entry) to a layer plan.
void apply(const json& j, LayerPlan& p, const std::string& who) {
  static const std::set<std::string> known = {"weights", "method", "group_size", "activation_bits", "first_last_8bit",
                                              "depthwise_8bit", "layers", "name", "match"};
  for (auto it = j.begin(); it != j.end(); ++it)
    check(known.count(it.key()) != 0, who + ": unknown key '" + it.key() + "'");
  if (j.contains("weights")) parse_weight_spec(j.at("weights").get<std::string>(), p.weights, who + ": weights");
  if (j.contains("method")) p.weights.method = parse_ternary_method(j.at("method").get<std::string>(), who + ": method");
  if (j.contains("group_size")) {
    const json& g = j.at("group_size");
    p.weights.group_size = g.is_string() ? parse_group_size(g.get<std::string>(), who + ": group_size") : g.get<int64_t>();
    check(g.is_string() || p.weights.group_size >= 1, who + ": group_size must be >= 1 or \"channel\"");
  }
  if (j.contains("activation_bits")) {
    p.activation_bits = j.at("activation_bits").get<int>();
    check(p.activation_bits == 4 || p.activation_bits == 8 || p.activation_bits == 0,
          who + ": activation_bits must be 4, 8 (or 0 for float32), got " + std::to_string(p.activation_bits));
  }
}

}  // namespace

void parse_weight_spec(const std::string& spec, WeightQuantConfig& c, const std::string& what) {
  if (spec == "ternary") c.format = WeightFormat::kTernary, c.bits = 2;
  else if (spec == "binary") c.format = WeightFormat::kBinary, c.bits = 1;
  else if (spec == "float32" || spec == "fp32") c.format = WeightFormat::kFloat32, c.bits = 32;
  else if (spec.size() == 4 && spec.rfind("int", 0) == 0 && spec[3] >= '2' && spec[3] <= '8') {
    c.format = WeightFormat::kInt;
    c.bits = spec[3] - '0';
  } else {
    throw Error(what + ": unknown weight format '" + spec + "' (ternary, binary, int2..int8, float32)");
  }
}

TernaryMethod parse_ternary_method(const std::string& name, const std::string& what) {
  if (name == "fgq") return TernaryMethod::kFgq;
  if (name == "fgq-asym") return TernaryMethod::kFgqAsymmetric;
  if (name == "twn") return TernaryMethod::kTwn;
  if (name == "tnt") return TernaryMethod::kTnt;
  if (name == "cluster") return TernaryMethod::kCluster;
  throw Error(what + ": unknown method '" + name + "' (fgq, fgq-asym, twn, tnt, cluster)");
}

int64_t parse_group_size(const std::string& text, const std::string& what) {
  if (text == "channel") return kWholeFilter;
  if (text == "tensor") return -1;  // integer weights only (validate() rejects it for the others)
  try {
    size_t used = 0;
    long long n = std::stoll(text, &used);
    if (used == text.size() && n >= 1 && n <= (1 << 20)) return n;
  } catch (const std::logic_error&) {
  }
  throw Error(what + ": group size must be a positive integer or 'channel', got '" + text + "'");
}

std::vector<LayerPlan> make_plan(const Graph& graph, const PlanOptions& options,
                                 const std::optional<std::string>& config_json, const std::string& config_name) {
  LayerPlan base;
  base.weights = options.weights;
  base.activation_bits = options.activation_bits;
  base.reason = "default";
  bool first_last_8bit = options.first_last_8bit, depthwise_8bit = options.depthwise_8bit;
  json config;
  if (config_json) {
    try {
      config = json::parse(*config_json);
    } catch (const json::exception& e) {
      throw Error(config_name + ": not valid JSON (" + std::string(e.what()) + ")");
    }
    check(config.is_object(), config_name + ": the config must be a JSON object");
    try {
      apply(config, base, config_name);
      if (config.contains("first_last_8bit")) first_last_8bit = config.at("first_last_8bit").get<bool>();
      if (config.contains("depthwise_8bit")) depthwise_8bit = config.at("depthwise_8bit").get<bool>();
    } catch (const json::exception& e) {
      throw Error(config_name + ": " + e.what());
    }
  }
  std::vector<LayerPlan> plan;
  for (const Node& n : graph.nodes)
    if (n.op == OpType::kConv || n.op == OpType::kGemm) {
      LayerPlan p = base;
      p.node = n.name;
      bool depthwise = n.op == OpType::kConv && n.attr<ConvAttrs>().group > 1 && n.inputs.size() > 1 &&
                       graph.is_constant(n.inputs[1]) && graph.constant(n.inputs[1]).rank() >= 2 &&
                       graph.constant(n.inputs[1]).dim(1) == 1;
      const bool below_8bit = p.weights.format == WeightFormat::kTernary || p.weights.format == WeightFormat::kBinary ||
                              (p.weights.format == WeightFormat::kInt && p.weights.bits < 8);
      if (depthwise_8bit && depthwise && below_8bit) {
        p.weights.format = WeightFormat::kInt;
        p.weights.bits = 8;
        p.weights.group_size = 0;  // per output channel
        p.reason = "depthwise (int8)";
      }
      plan.push_back(p);
    }
  check(!plan.empty(), graph.source + ": the model has no Conv or Gemm layer to quantize");
  if (first_last_8bit) {
    for (LayerPlan* p : {&plan.front(), &plan.back()})
      if (p->weights.format != WeightFormat::kFloat32) {
        p->weights.format = WeightFormat::kInt;
        p->weights.bits = 8;
        p->weights.group_size = 0;  // per output channel
        p->activation_bits = std::max(p->activation_bits, 8);
        p->reason = p == &plan.front() ? "first layer (int8)" : "last layer (int8)";
      }
  }
  if (config_json && config.contains("layers")) {
    try {
      const json& layers = config.at("layers");
      check(layers.is_array(), config_name + ": 'layers' must be an array");
      for (size_t i = 0; i < layers.size(); ++i) {
        const json& entry = layers[i];
        std::string who = config_name + ": layers[" + std::to_string(i) + "]";
        check(entry.is_object() && (entry.contains("name") != entry.contains("match")),
              who + ": needs exactly one of 'name' or 'match'");
        check(!entry.contains("layers") && !entry.contains("first_last_8bit") && !entry.contains("depthwise_8bit"),
              who + ": nested settings are not allowed here");
        std::string pattern = entry.contains("name") ? entry.at("name").get<std::string>() : entry.at("match").get<std::string>();
        std::optional<std::regex> re;
        if (entry.contains("match")) {
          try {
            re.emplace(pattern);
          } catch (const std::regex_error& e) {
            throw Error(who + ": bad regular expression '" + pattern + "'");
          }
        }
        int matched = 0;
        for (LayerPlan& p : plan) {
          bool hit = re ? std::regex_match(p.node, *re) : p.node == pattern;
          if (!hit) continue;
          apply(entry, p, who);
          p.reason = "config: " + pattern;
          ++matched;
        }
        check(matched > 0, who + ": no layer " + (re ? "matches '" : "is named '") + pattern + "'");
      }
    } catch (const json::exception& e) {
      throw Error(config_name + ": " + e.what());
    }
  }
  for (const LayerPlan& p : plan) validate(p, config_name + ": layer '" + p.node + "'");
  return plan;
}

}  // namespace tern::quant
