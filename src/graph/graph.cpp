#include "tern/graph.h"

#include <set>

#include "tern/error.h"

namespace tern {

// to_string(OpType) is in src/ops/registry.cpp, beside the operator table.

ValueId Graph::add_value(Value value) {
  values.push_back(std::move(value));
  return static_cast<ValueId>(values.size() - 1);
}

ValueId Graph::find_value(const std::string& name) const {
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i].name == name) return static_cast<ValueId>(i);
  return kNoValue;
}

ValueId Graph::add_constant(std::string name, Tensor tensor) {
  Value v;
  v.name = std::move(name);
  v.dtype = tensor.dtype();
  v.shape = tensor.shape();
  v.shape_known = true;
  v.constant = std::move(tensor);
  return add_value(std::move(v));
}

std::vector<int> Graph::producers() const {
  std::vector<int> producer(values.size(), -1);
  for (size_t n = 0; n < nodes.size(); ++n)
    for (ValueId id : nodes[n].outputs) producer.at(static_cast<size_t>(id)) = static_cast<int>(n);
  return producer;
}

std::vector<int> Graph::consumer_counts() const {
  std::vector<int> count(values.size(), 0);
  for (const Node& node : nodes)
    for (ValueId id : node.inputs)
      if (id != kNoValue) ++count.at(static_cast<size_t>(id));
  for (ValueId id : outputs) ++count.at(static_cast<size_t>(id));
  return count;
}

void Graph::validate() const {
  std::string prefix = source.empty() ? std::string() : source + ": ";
  auto in_range = [&](ValueId id) { return id >= 0 && static_cast<size_t>(id) < values.size(); };
  std::vector<bool> defined(values.size(), false);
  for (size_t i = 0; i < values.size(); ++i)
    if (values[i].constant) defined[i] = true;
  for (ValueId id : inputs) {
    check(in_range(id), prefix + "graph input id out of range");
    defined[static_cast<size_t>(id)] = true;
  }
  std::set<std::string> node_names;
  for (const Node& node : nodes) {
    std::string who = prefix + "node '" + node.name + "' (" + to_string(node.op) + ")";
    check(node_names.insert(node.name).second, who + ": duplicate node name");
    for (ValueId id : node.inputs) {
      if (id == kNoValue) continue;
      check(in_range(id), who + ": input id out of range");
      check(defined[static_cast<size_t>(id)], who + ": input '" + values[static_cast<size_t>(id)].name +
                                                  "' is used before it is produced (graph not in topological order?)");
    }
    for (ValueId id : node.outputs) {
      check(in_range(id), who + ": output id out of range");
      check(!defined[static_cast<size_t>(id)], who + ": output '" + values[static_cast<size_t>(id)].name +
                                                   "' is produced twice");
      defined[static_cast<size_t>(id)] = true;
    }
  }
  for (ValueId id : outputs) {
    check(in_range(id), prefix + "graph output id out of range");
    check(defined[static_cast<size_t>(id)], prefix + "graph output '" + values[static_cast<size_t>(id)].name +
                                                "' is never produced");
  }
}

int64_t Graph::fixed_batch() const {
  if (inputs.empty()) return 0;
  const Value& v = value(inputs[0]);
  return v.shape_known && !v.shape.empty() && v.shape[0] > 0 ? v.shape[0] : 0;
}

void Graph::compact() {
  std::vector<int> uses = consumer_counts();
  for (ValueId id : inputs) ++uses[static_cast<size_t>(id)];
  for (const Node& node : nodes)
    for (ValueId id : node.outputs) ++uses[static_cast<size_t>(id)];
  std::vector<ValueId> remap(values.size(), kNoValue);
  std::vector<Value> kept;
  for (size_t i = 0; i < values.size(); ++i) {
    if (uses[i] == 0) continue;
    remap[i] = static_cast<ValueId>(kept.size());
    kept.push_back(std::move(values[i]));
  }
  values = std::move(kept);
  auto fix = [&](ValueId& id) {
    if (id != kNoValue) id = remap[static_cast<size_t>(id)];
  };
  for (Node& node : nodes) {
    for (ValueId& id : node.inputs) fix(id);
    for (ValueId& id : node.outputs) fix(id);
  }
  for (ValueId& id : inputs) fix(id);
  for (ValueId& id : outputs) fix(id);
}

}  // namespace tern
