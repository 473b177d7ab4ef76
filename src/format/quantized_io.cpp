// Quantized models in .tern files. The graph section stores the FP32 graph with every quantized
// layer's weights (and int32 bias) marked "external": their only copy is the packed codes, scales
// and int32 biases in the tensor section, described by the kQuantization JSON. Loading checks every
// field, offset, length and code before rebuilding the dequantized weights.
#include <cmath>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "format/graph_json.h"
#include "tern/error.h"
#include "tern/quantized_model.h"

namespace tern::quant {

namespace {

using json = format::Json;
constexpr int kQuantizationVersion = 1;

// JSON has no infinity: an exact (infinite) SQNR is stored as the string "inf".
json db_to_json(double db) { return std::isinf(db) ? json("inf") : json(db); }
double db_from_json(const json& j) {
  if (j.is_string()) {
    check(j.get<std::string>() == "inf", "bad dB value");
    return INFINITY;
  }
  return j.get<double>();
}

json blob(std::vector<std::byte>& payload, const void* data, size_t bytes) {
  return {{"offset", format::append_aligned(payload, data, bytes)}, {"bytes", bytes}};
}

json activation_json(const ActivationQuant& a) {
  return {{"bits", a.bits},           {"is_unsigned", a.is_unsigned}, {"power_of_two", a.power_of_two},
          {"dynamic", a.dynamic},     {"scale", a.scale},             {"threshold", a.threshold},
          {"source", a.source},       {"zero_point", a.zero_point},   {"per_token", a.per_token}};
}

ActivationQuant activation_from(const json& j) {
  ActivationQuant a;
  a.bits = j.at("bits").get<int>();
  a.is_unsigned = j.at("is_unsigned").get<bool>();
  a.power_of_two = j.at("power_of_two").get<bool>();
  a.dynamic = j.at("dynamic").get<bool>();
  a.scale = j.at("scale").get<float>();
  a.threshold = j.at("threshold").get<float>();
  a.source = j.at("source").get<std::string>();
  check(a.bits >= 2 && a.bits <= 8, "activation bits must be in [2, 8]");
  check(a.dynamic || (std::isfinite(a.scale) && a.scale > 0), "activation scale must be positive and finite");
  if (j.contains("zero_point")) a.zero_point = j.at("zero_point").get<int32_t>();  // files before asymmetric codes lack it
  if (j.contains("per_token")) a.per_token = j.at("per_token").get<bool>();
  check(!a.per_token || a.dynamic, "activation per-token scales must be dynamic");
  check(a.zero_point == 0 || (a.is_unsigned && !a.dynamic && !a.power_of_two && a.zero_point > 0 &&
                              a.zero_point <= activation_qmax(a.bits, true)),
        "activation zero point " + std::to_string(a.zero_point) + " is outside the unsigned codes of a static scale");
  if (a.power_of_two && !a.dynamic) {
    int e = 0;
    check(std::frexp(a.scale, &e) == 0.5f, "activation scale is not a power of two");
  }
  return a;
}

json plan_json(const LayerPlan& p) {
  return {{"node", p.node},
          {"format", static_cast<int>(p.weights.format)},
          {"method", static_cast<int>(p.weights.method)},
          {"bits", p.weights.bits},
          {"group_size", p.weights.group_size},
          {"float_scales", p.weights.float_scales},
          {"log_scales", p.weights.log_scales},
          {"activation_bits", p.activation_bits},
          {"reason", p.reason}};
}

WeightQuantConfig config_from(const json& j) {
  WeightQuantConfig c;
  int format = j.at("format").get<int>(), method = j.at("method").get<int>();
  check(format >= 0 && format <= static_cast<int>(WeightFormat::kInt), "unknown weight format " + std::to_string(format));
  check(method >= 0 && method <= static_cast<int>(TernaryMethod::kCluster), "unknown ternary method " + std::to_string(method));
  c.format = static_cast<WeightFormat>(format);
  c.method = static_cast<TernaryMethod>(method);
  c.bits = j.at("bits").get<int>();
  c.group_size = j.at("group_size").get<int64_t>();
  c.float_scales = j.contains("float_scales") && j.at("float_scales").get<bool>();
  c.log_scales = j.contains("log_scales") && j.at("log_scales").get<bool>();
  int expected_bits = c.format == WeightFormat::kTernary ? 2 : c.format == WeightFormat::kBinary ? 1 : c.format == WeightFormat::kFloat32 ? 32 : c.bits;
  check(c.bits == expected_bits && (c.format != WeightFormat::kInt || (c.bits >= 2 && c.bits <= 8)),
        "weight bits do not fit the format");
  return c;
}

template <typename T>
std::vector<T> read_array(std::span<const std::byte> payload, const json& ref, size_t count, const std::string& what) {
  std::span<const std::byte> bytes = format::payload_range(payload, ref, what);
  check(bytes.size() == count * sizeof(T), what + " has the wrong length");
  std::vector<T> v(count);
  if (count) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

}  // namespace

namespace {

std::vector<std::pair<SectionType, std::vector<std::byte>>> quantized_sections(const QuantizedModel& m) {
  std::vector<std::byte> payload;
  std::set<std::string> external;
  for (const QuantizedLayer& l : m.layers) {
    external.insert(l.weight_value);
    if (!l.bias.empty()) external.insert(l.bias_value);
  }
  json graph = format::graph_to_json(m.graph, payload, external);
  json layers = json::array(), plan = json::array();
  for (const QuantizedLayer& l : m.layers) {
    check(!l.terms.empty(), "layer '" + l.node + "' has no weights");
    json terms = json::array();
    for (const QuantizedWeights& t : l.terms) {
      std::vector<uint8_t> packed = pack_codes(t.codes, t.format, t.bits);
      json jt = {{"codes", blob(payload, packed.data(), packed.size())}, {"sqnr_db", db_to_json(t.sqnr_db)}};
      check(t.filter_steps.empty() == !uses_filter_steps(t.grouping, l.config),
            "layer '" + l.node + "': scale layout does not match its configuration");
      if (t.filter_steps.empty()) {
        std::vector<float> scales;
        for (const ScalePair& s : t.scales) {
          scales.push_back(s.positive);
          if (scales_per_group(l.config) == 2) scales.push_back(s.negative);
        }
        jt["scales"] = blob(payload, scales.data(), scales.size() * sizeof(float));
      } else {  // two-level: u8 per group, one float32 step per filter
        std::vector<uint8_t> units;
        const int64_t per_filter = t.grouping.groups_per_filter();
        for (size_t gi = 0; gi < t.scales.size(); ++gi) {
          float step = t.filter_steps[gi / static_cast<size_t>(per_filter)];
          for (int k = 0; k < scales_per_group(l.config); ++k) {
            float v = k == 0 ? t.scales[gi].positive : t.scales[gi].negative;
            uint8_t u = scale_unit(v, step, l.config.log_scales);
            if (unit_scale(u, step, l.config.log_scales) != v)  // per group: the message only on failure
              throw Error("layer '" + l.node + "': a group scale is off its 8-bit grid");
            units.push_back(u);
          }
        }
        jt["scale_units"] = blob(payload, units.data(), units.size());
        jt["filter_steps"] = blob(payload, t.filter_steps.data(), t.filter_steps.size() * sizeof(float));
      }
      terms.push_back(jt);
    }
    json jl = {{"node", l.node},
               {"weight_value", l.weight_value},
               {"bias_value", l.bias_value},
               {"format", static_cast<int>(l.config.format)},
               {"method", static_cast<int>(l.config.method)},
               {"bits", l.config.bits},
               {"group_size", l.config.group_size},
               {"float_scales", l.config.float_scales},
               {"log_scales", l.config.log_scales},
               {"out", l.out},
               {"in", l.in},
               {"taps", l.taps},
               {"code_bits", code_field_bits(l.config.format, l.config.bits)},
               {"scales_per_group", scales_per_group(l.config)},
               {"terms", terms},
               {"input", l.input ? activation_json(*l.input) : json(nullptr)},
               {"reason", l.reason},
               {"weight_sqnr_db", db_to_json(l.weight_sqnr_db)},
               {"output_sqnr_db", l.output_sqnr_db ? db_to_json(*l.output_sqnr_db) : json(nullptr)},
               {"outputs_per_image", l.outputs_per_image}};
    if (!l.bias.empty()) {
      jl["bias"] = blob(payload, l.bias.data(), l.bias.size() * sizeof(int32_t));
      jl["bias_scale"] = blob(payload, l.bias_scale.data(), l.bias_scale.size() * sizeof(float));
    }
    layers.push_back(jl);
  }
  for (const LayerPlan& p : m.plan) plan.push_back(plan_json(p));
  json edges = json::array();
  for (const ResidualEdge& e : m.edges)
    edges.push_back({{"layer", e.layer}, {"term", e.term}, {"bytes", e.bytes}, {"gain", e.gain}});
  json quant = {{"version", kQuantizationVersion}, {"layers", layers}, {"plan", plan}, {"edges", edges}, {"level", m.level}};
  if (!m.inputs.empty()) {  // absent in files without quantized attention operands
    json inputs = json::array();
    for (const QuantizedInput& q : m.inputs)
      inputs.push_back({{"node", q.node}, {"input", q.input}, {"activation", activation_json(q.quant)}});
    quant["inputs"] = inputs;
  }
  json provenance = format::parse_provenance(m.provenance_json);
  return {{SectionType::kGraph, format::to_bytes(graph.dump())},
          {SectionType::kTensors, std::move(payload)},
          {SectionType::kQuantization, format::to_bytes(quant.dump())},
          {SectionType::kProvenance, format::to_bytes(provenance.dump())}};
}

}  // namespace

std::vector<std::byte> serialize_quantized_model(const QuantizedModel& m) {
  return serialize_tern_file(quantized_sections(m));
}

void save_quantized_model(const std::string& path, const QuantizedModel& m) {
  write_tern_file(path, quantized_sections(m), [](const TernFile& file) {
    QuantizedModel back = load_quantized_model(file);
    simulation_graph(back).validate();  // what both engines start from
  });
}

bool is_quantized(const TernFile& file) { return file.has_section(SectionType::kQuantization); }

QuantizedModel load_quantized_model(const TernFile& file, const LoadOptions& options) {
  const std::string& n = file.name();
  QuantizedModel m;
  try {
    check(is_quantized(file), "not a quantized model (no quantization section)");
    std::span<const std::byte> payload = file.section(SectionType::kTensors);
    json jg = format::parse_json_section(file.section(SectionType::kGraph), "graph");
    json jq = format::parse_json_section(file.section(SectionType::kQuantization), "quantization");
    json jp = format::parse_json_section(file.section(SectionType::kProvenance), "provenance");
    check(jp.is_object(), "provenance must be a JSON object");
    m.provenance_json = jp.dump();
    std::set<ValueId> external;
    m.graph = format::graph_from_json(jg, payload, n, external);
    Graph& g = m.graph;
    check(jq.at("version").get<int>() == kQuantizationVersion,
          "quantization section version " + jq.at("version").dump() + " is not supported");
    std::map<std::string, size_t> node_index, value_index;
    for (size_t i = 0; i < g.nodes.size(); ++i) node_index[g.nodes[i].name] = i;
    for (size_t i = 0; i < g.values.size(); ++i) value_index[g.values[i].name] = i;
    std::set<ValueId> claimed;
    auto claim = [&](const std::string& name, const std::string& who) -> Value& {
      auto it = value_index.find(name);
      check(it != value_index.end(), who + ": no value named '" + name + "'");
      ValueId id = static_cast<ValueId>(it->second);
      check(external.count(id) && claimed.insert(id).second, who + ": value '" + name + "' is not an unclaimed external value");
      return g.values[it->second];
    };
    for (const json& jl : jq.at("layers")) {
      QuantizedLayer l;
      l.node = jl.at("node").get<std::string>();
      std::string who = "layer '" + l.node + "'";
      auto ni = node_index.find(l.node);
      check(ni != node_index.end(), who + ": no such node");
      const Node& node = g.nodes[ni->second];
      check(node.op == OpType::kConv || node.op == OpType::kGemm, who + ": not a Conv or Gemm");
      check(m.find(l.node) == nullptr, who + ": described twice");
      l.config = config_from(jl);
      check(l.config.format != WeightFormat::kFloat32, who + ": float32 layers are not stored as quantized");
      l.out = jl.at("out").get<int64_t>();
      l.in = jl.at("in").get<int64_t>();
      l.taps = jl.at("taps").get<int64_t>();
      check(l.out >= 1 && l.in >= 1 && l.taps >= 1 && l.out <= (int64_t{1} << 24) && l.in <= (int64_t{1} << 24) &&
                l.taps <= (int64_t{1} << 16) && l.out * l.in <= (int64_t{1} << 34) / l.taps,
            who + ": bad weight dimensions");
      l.weight_value = jl.at("weight_value").get<std::string>();
      check(node.inputs.size() >= 2 && node.inputs[1] != kNoValue && g.value(node.inputs[1]).name == l.weight_value,
            who + ": weight value is not the node's weight input");
      Value& wv = claim(l.weight_value, who);
      int64_t count = element_count(wv.shape);  // external values have static shapes
      check(wv.dtype == DataType::kFloat32 && wv.shape.size() >= 2 && wv.shape[0] == l.out && count == l.out * l.in * l.taps,
            who + ": weight shape " + to_string(wv.shape) + " does not match the stored codes");
      int64_t taps = 1;
      for (size_t d = 2; d < wv.shape.size(); ++d) taps *= wv.shape[d];
      check(wv.shape[1] == l.in && taps == l.taps, who + ": in/taps do not match the weight shape " + to_string(wv.shape));
      if (node.op == OpType::kGemm) {
        const auto& a = node.attr<GemmAttrs>();
        check(a.trans_b && !a.trans_a && a.alpha == 1.0f && wv.shape.size() == 2, who + ": Gemm is not in canonical form");
      }
      check(jl.at("code_bits").get<int>() == code_field_bits(l.config.format, l.config.bits) &&
                jl.at("scales_per_group").get<int>() == scales_per_group(l.config),
            who + ": code or scale layout does not match the format");
      WeightGrouping grouping = grouping_for(l.out, l.in, l.taps, l.config);
      const json& jt = jl.at("terms");
      check(jt.is_array() && !jt.empty() && jt.size() <= 64, who + ": needs 1 to 64 weight terms");
      for (size_t k = 0; k < jt.size(); ++k) {
        std::string what = who + " term " + std::to_string(k);
        QuantizedWeights q;
        q.grouping = grouping;
        q.format = l.config.format;
        q.bits = l.config.bits;
        std::span<const std::byte> codes = format::payload_range(payload, jt[k].at("codes"), what + " codes");
        q.codes = unpack_codes(reinterpret_cast<const uint8_t*>(codes.data()), codes.size(), count, q.format, q.bits, what);
        int spg = scales_per_group(l.config);
        std::vector<float> s;
        if (uses_filter_steps(grouping, l.config)) {
          check(!jt[k].contains("scales"), what + ": float scales where two-level scales belong");
          q.filter_steps = read_array<float>(payload, jt[k].at("filter_steps"), static_cast<size_t>(l.out), what + " filter steps");
          // (Messages are built only on failure: a check per element built one string per group.)
          for (float v : q.filter_steps)
            if (!(std::isfinite(v) && v >= 0.0f)) throw Error(what + ": filter steps must be finite and >= 0");
          std::vector<uint8_t> units = read_array<uint8_t>(payload, jt[k].at("scale_units"),
                                                           static_cast<size_t>(grouping.count() * spg), what + " scale units");
          const int64_t per_filter = grouping.groups_per_filter();
          for (size_t i = 0; i < units.size(); ++i)
            if (!(l.config.log_scales || units[i] <= kScaleUnitMax))
              throw Error(what + ": scale unit " + std::to_string(units[i]) + " above " + std::to_string(kScaleUnitMax));
          s.reserve(units.size());
          for (size_t i = 0; i < units.size(); ++i)
            s.push_back(unit_scale(units[i], q.filter_steps[i / static_cast<size_t>(spg * per_filter)], l.config.log_scales));
        } else {
          check(!jt[k].contains("filter_steps"), what + ": two-level scales where float scales belong");
          s = read_array<float>(payload, jt[k].at("scales"), static_cast<size_t>(grouping.count() * spg), what + " scales");
          for (float v : s)
            if (!(std::isfinite(v) && v >= 0.0f)) throw Error(what + ": scales must be finite and >= 0");
        }
        q.scales.reserve(static_cast<size_t>(grouping.count()));
        for (int64_t gi = 0; gi < grouping.count(); ++gi) {
          float pos = s[static_cast<size_t>(gi * spg)];
          q.scales.push_back({pos, spg == 2 ? s[static_cast<size_t>(gi * spg + 1)] : pos});
        }
        int64_t zeros = 0;
        for (int8_t c : q.codes) zeros += c == 0;
        q.zero_fraction = static_cast<double>(zeros) / static_cast<double>(count);
        q.sqnr_db = db_from_json(jt[k].at("sqnr_db"));
        l.terms.push_back(std::move(q));
      }
      wv.constant = Tensor::lazy_zeros(DataType::kFloat32, wv.shape);  // the level below sets the weights
      if (!jl.at("input").is_null()) l.input = activation_from(jl.at("input"));
      l.bias_value = jl.at("bias_value").get<std::string>();
      if (!l.bias_value.empty())
        check(node.inputs.size() > 2 && node.inputs[2] != kNoValue && g.value(node.inputs[2]).name == l.bias_value,
              who + ": bias value is not the node's bias input");
      if (jl.contains("bias")) {
        check(!l.bias_value.empty() && l.input && !l.input->dynamic, who + ": int32 bias without a static input scale");
        l.bias = read_array<int32_t>(payload, jl.at("bias"), static_cast<size_t>(l.out), who + " bias");
        l.bias_scale = read_array<float>(payload, jl.at("bias_scale"), static_cast<size_t>(l.out), who + " bias scale");
        for (float v : l.bias_scale)
          if (!(std::isfinite(v) && v > 0.0f)) throw Error(who + ": bias scales must be positive and finite");
        Value& bv = claim(l.bias_value, who);
        int64_t bcount = element_count(bv.shape);
        check(bv.dtype == DataType::kFloat32 && bcount == l.out, who + ": bias shape does not match");
        bv.constant = Tensor(DataType::kFloat32, bv.shape);
        for (int64_t o = 0; o < l.out; ++o)
          bv.constant->data<float>()[o] = static_cast<float>(l.bias[static_cast<size_t>(o)] *
                                                             static_cast<double>(l.bias_scale[static_cast<size_t>(o)]));
      }
      l.reason = jl.at("reason").get<std::string>();
      l.weight_sqnr_db = db_from_json(jl.at("weight_sqnr_db"));
      if (!jl.at("output_sqnr_db").is_null()) l.output_sqnr_db = db_from_json(jl.at("output_sqnr_db"));
      l.outputs_per_image = jl.at("outputs_per_image").get<int64_t>();
      check(l.outputs_per_image >= 1 && l.outputs_per_image <= (int64_t{1} << 40) &&
                l.outputs_per_image <= (int64_t{1} << 50) / (l.in * l.taps),  // MACs per image: counts stay in 64 bits
            who + ": bad output count");
      m.layers.push_back(std::move(l));
    }
    for (ValueId id : external) check(claimed.count(id), "external value '" + g.value(id).name + "' belongs to no layer");
    // Residual edges: each layer's terms 1.. in order, one edge each. Files without the list (from
    // before levels) get the uniform order: every layer's term 1, then term 2, ...
    std::map<std::string, int> edge_count;
    if (jq.contains("edges")) {
      const json& je = jq.at("edges");
      check(je.is_array(), "edges must be a list");
      for (const json& e : je) {
        ResidualEdge edge{e.at("layer").get<std::string>(), e.at("term").get<int>(), e.at("bytes").get<int64_t>(),
                          e.at("gain").get<double>()};
        std::string who = "edge " + std::to_string(m.edges.size()) + " (layer '" + edge.layer + "')";
        check(m.find(edge.layer) != nullptr, who + ": no such quantized layer");
        check(edge.term == ++edge_count[edge.layer], who + ": term " + std::to_string(edge.term) + " out of order");
        check(edge.bytes >= 0 && std::isfinite(edge.gain), who + ": bad bytes or gain");
        m.edges.push_back(std::move(edge));
      }
    } else {
      size_t rounds = 0;
      for (const QuantizedLayer& l : m.layers) rounds = std::max(rounds, l.terms.size());
      for (size_t j = 1; j < rounds; ++j)
        for (const QuantizedLayer& l : m.layers)
          if (j < l.terms.size()) {
            m.edges.push_back({l.node, static_cast<int>(j), term_bytes(l.terms[j], l.config), 0.0});
            ++edge_count[l.node];
          }
    }
    for (QuantizedLayer& l : m.layers) {
      check(l.terms.size() == static_cast<size_t>(1 + edge_count[l.node]),
            "layer '" + l.node + "': " + std::to_string(l.terms.size()) + " terms but " +
                std::to_string(edge_count[l.node]) + " residual edges");
      l.active_terms = 0;  // set_level below sets every layer's weights
    }
    m.float_weights = options.float_weights;
    int level = jq.contains("level") ? jq.at("level").get<int>() : m.max_level();
    check(level >= 0 && level <= m.max_level(),
          "level " + std::to_string(level) + " is outside the stored levels 0.." + std::to_string(m.max_level()));
    set_level(m, level);
    if (jq.contains("inputs")) {
      const json& ji = jq.at("inputs");
      check(ji.is_array(), "inputs must be a list");
      std::set<std::pair<std::string, int>> seen;
      for (const json& e : ji) {
        QuantizedInput q;
        q.node = e.at("node").get<std::string>();
        q.input = e.at("input").get<int>();
        std::string who = "quantized input " + std::to_string(q.input) + " of node '" + q.node + "'";
        auto ni = node_index.find(q.node);
        check(ni != node_index.end(), who + ": no such node");
        const Node& node = g.nodes[ni->second];
        check(node.op == OpType::kMatMul, who + ": not a MatMul");
        check(q.input >= 0 && static_cast<size_t>(q.input) < node.inputs.size() && node.inputs[static_cast<size_t>(q.input)] != kNoValue &&
                  !g.is_constant(node.inputs[static_cast<size_t>(q.input)]),
              who + ": not a computed operand");
        check(seen.insert({q.node, q.input}).second, who + ": described twice");
        q.quant = activation_from(e.at("activation"));
        m.inputs.push_back(std::move(q));
      }
    }
    for (const json& jp2 : jq.at("plan")) {
      LayerPlan p;
      p.node = jp2.at("node").get<std::string>();
      check(node_index.count(p.node), "plan names a node '" + p.node + "' that does not exist");
      p.weights = config_from(jp2);
      p.activation_bits = jp2.at("activation_bits").get<int>();
      p.reason = jp2.at("reason").get<std::string>();
      m.plan.push_back(std::move(p));
    }
  } catch (const json::exception& e) {
    throw Error(n + ": malformed quantized model (" + std::string(e.what()) + ")");
  } catch (const Error& e) {
    std::string msg = e.what();
    throw Error(msg.rfind(n, 0) == 0 ? msg : n + ": " + msg);
  }
  try {
    format::finish_graph(m.graph);
    for (ValueId id : m.graph.inputs)  // what quantization calibrated and both engines feed
      check(m.graph.value(id).dtype == DataType::kFloat32, "input '" + m.graph.value(id).name + "' is " +
                                                               to_string(m.graph.value(id).dtype) +
                                                               "; a quantized model's inputs are float32");
    for (const QuantizedLayer& l : m.layers)  // now that shapes are inferred: the stored count must agree
      for (const Node& node : m.graph.nodes)
        if (node.name == l.node) {
          const Value& y = m.graph.value(node.outputs[0]);
          std::optional<int64_t> count = y.shape_known && !y.shape.empty() ? values_per_image(y.shape) : std::nullopt;
          check(count && *count == l.outputs_per_image, "layer '" + l.node + "': outputs_per_image does not match the graph");
        }
  } catch (const Error& e) {
    std::string msg = e.what();
    throw Error(msg.rfind(n, 0) == 0 ? msg : n + ": " + msg);
  }
  return m;
}

QuantizedModel load_quantized_model(const std::string& path, const LoadOptions& options) {
  return load_quantized_model(TernFile::open(path), options);
}

}  // namespace tern::quant
