// Pieces of the graph <-> JSON codec shared by the FP32 and the quantized model files.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "tern/graph.h"

namespace tern::format {

std::vector<std::byte> to_bytes(const std::string& s);
// Appends bytes at the next 64-byte aligned offset of the payload; returns that offset.
uint64_t append_aligned(std::vector<std::byte>& payload, const void* data, size_t bytes);
// The bytes a {"offset", "bytes"} reference names, after checking alignment and bounds.
std::span<const std::byte> payload_range(std::span<const std::byte> payload, const nlohmann::json& ref,
                                         const std::string& what);
nlohmann::json parse_json_section(std::span<const std::byte> text, const std::string& what);
nlohmann::json parse_provenance(const std::string& provenance_json);

// Constants named in `external` are written without data (flagged "external"): another section
// holds them (a quantized layer's packed weights).
nlohmann::json graph_to_json(const Graph& graph, std::vector<std::byte>& payload, const std::set<std::string>& external);
// The graph as stored, not yet validated; ids of external values (left without a constant) go to
// `external`. Throws Error or nlohmann::json::exception.
Graph graph_from_json(const nlohmann::json& j, std::span<const std::byte> payload, const std::string& name,
                      std::set<ValueId>& external);
// validate() and shape inference: a graph that does not type-check is rejected.
void finish_graph(Graph& g);

}  // namespace tern::format
