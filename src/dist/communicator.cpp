// The communicator interface's shared parts and the single-process communicator.
#include "tern/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "tern/error.h"

namespace tern::dist {

std::string Communicator::describe() const {
  return "rank " + std::to_string(rank()) + " of " + std::to_string(size());
}

std::vector<std::vector<std::uint8_t>> Communicator::allgatherv(std::span<const std::uint8_t> mine) {
  const Request request = start_allgatherv(std::vector<std::uint8_t>(mine.begin(), mine.end()));
  wait(request);
  return take_gathered(request);
}

namespace {

// Size 1: a sum over one rank is the data itself, a gather returns the own buffer.
class SingleProcessCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }

  Request start_allreduce_sum(std::span<float>) override { return Request{next_id_++}; }
  Request start_allgatherv(std::vector<std::uint8_t> mine) override {
    const Request request{next_id_++};
    gathered_.emplace(request.id, std::move(mine));
    return request;
  }
  bool test(Request) override { return true; }
  void progress() override {}
  void wait(Request) override {}
  std::vector<std::vector<std::uint8_t>> take_gathered(Request request) override {
    const auto found = gathered_.find(request.id);
    check(found != gathered_.end(), "communicator: no allgatherv result for request " + std::to_string(request.id));
    std::vector<std::vector<std::uint8_t>> result;
    result.push_back(std::move(found->second));
    gathered_.erase(found);
    return result;
  }

  std::vector<std::uint64_t> allgather(std::uint64_t value) override { return {value}; }
  void broadcast(std::vector<std::uint8_t>&) override {}
  void barrier() override {}

  [[noreturn]] void abort(const std::string& message) override {
    std::fflush(stdout);
    std::fprintf(stderr, "tern: %s\n", message.c_str());
    std::fflush(stderr);
    std::_Exit(1);
  }

 private:
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::vector<std::uint8_t>> gathered_;
};

}  // namespace

std::unique_ptr<Communicator> make_single_process_communicator() {
  return std::make_unique<SingleProcessCommunicator>();
}

#ifndef TERN_HAVE_MPI
bool mpi_available() { return false; }

std::unique_ptr<Communicator> make_mpi_communicator(double) {
  throw Error("this build of tern has no MPI (install libopenmpi-dev and configure with -DTERN_MPI=ON)");
}
#endif

}  // namespace tern::dist
