// Fixtures for the exchange tests: seeded gradients, and a communicator that records its calls.
#pragma once

#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "tern/communicator.h"
#include "tern/gradient_exchange.h"

namespace tern::testing {

inline std::vector<std::vector<float>> random_gradients(const std::vector<dist::TensorSpec>& specs, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> grads;
  for (const dist::TensorSpec& spec : specs) {
    std::vector<float> g(spec.elements);
    for (float& v : g) v = normal(rng);
    grads.push_back(std::move(g));
  }
  return grads;
}

// A two-rank communicator in one process whose other rank is its mirror: every all-reduce sum
// doubles the data (so the average is the data itself), an allgather returns two copies. It
// completes every operation at once and records each call, in order, in `events`: "allreduce",
// "allgatherv", "test", "progress", "wait", "allgather", "broadcast", "barrier".
class RecordingCommunicator : public dist::Communicator {
 public:
  std::vector<std::string> events;

  int rank() const override { return 0; }
  int size() const override { return 2; }
  dist::Request start_allreduce_sum(std::span<float> data) override {
    events.push_back("allreduce");
    for (float& v : data) v *= 2.0f;
    return {++next_};
  }
  dist::Request start_allgatherv(std::vector<std::uint8_t> mine) override {
    events.push_back("allgatherv");
    gathered_[++next_] = {mine, mine};
    return {next_};
  }
  bool test(dist::Request) override {
    events.push_back("test");
    return true;
  }
  void progress() override { events.push_back("progress"); }
  void wait(dist::Request) override { events.push_back("wait"); }
  std::vector<std::vector<std::uint8_t>> take_gathered(dist::Request request) override {
    std::vector<std::vector<std::uint8_t>> out = std::move(gathered_.at(request.id));
    gathered_.erase(request.id);
    return out;
  }
  std::vector<std::uint64_t> allgather(std::uint64_t value) override {
    events.push_back("allgather");
    return {value, value};
  }
  void broadcast(std::vector<std::uint8_t>&) override { events.push_back("broadcast"); }
  void barrier() override { events.push_back("barrier"); }
  [[noreturn]] void abort(const std::string& message) override { throw std::runtime_error(message); }

 private:
  std::uint64_t next_ = 0;
  std::map<std::uint64_t, std::vector<std::vector<std::uint8_t>>> gathered_;
};

}  // namespace tern::testing
