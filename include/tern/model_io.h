// Saving and loading tern's graph IR in the .tern container (see tern_file.h): the graph as JSON in
// the kGraph section, tensor payloads 64-byte aligned in kTensors, provenance in kProvenance.
#pragma once

#include <string>

#include "tern/graph.h"
#include "tern/tern_file.h"

namespace tern {

// provenance_json: a JSON object (text) stored verbatim; "{}" when there is nothing to say.
std::vector<std::pair<SectionType, std::vector<std::byte>>> graph_sections(const Graph& graph,
                                                                           const std::string& provenance_json);
void save_graph(const std::string& path, const Graph& graph, const std::string& provenance_json = "{}");

// Rebuilds and re-validates the graph (structure, attribute types, tensor bounds, shapes); any
// inconsistency is an Error naming the file.
Graph load_graph(const TernFile& file);
Graph load_graph(const std::string& path);

// True when the file starts with the .tern magic (to tell it from an ONNX file).
bool is_tern_file(const std::string& path);

}  // namespace tern
