// The MPI communicator: non-blocking collectives on private duplicates of MPI_COMM_WORLD, every
// wait a polling loop (MPI_Test) with a deadline, so a dead or hung rank becomes a tern::Error
// instead of a hang. Built only with TERN_HAVE_MPI.
#include <mpi.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <map>
#include <sstream>
#include <thread>

#include "tern/communicator.h"
#include "tern/error.h"

namespace tern::dist {
namespace {

using Clock = std::chrono::steady_clock;

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<std::size_t>(length));
}

std::string seconds_text(double seconds) {
  std::ostringstream out;
  out << seconds;
  return out.str();
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_seconds) : timeout_seconds_(timeout_seconds) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    check(!finalized, "MPI communicator: MPI was already finalized in this process");
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        throw Error("MPI communicator: MPI_Init_thread failed");
      initialized_here_ = true;
      if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        throw Error("MPI communicator: this MPI library does not support MPI_THREAD_SERIALIZED");
      }
    }
    // Private communicators: our traffic never matches the caller's own MPI calls. Data phases of
    // allgatherv get their own, because they start in progress() (see progress()).
    for (MPI_Comm* comm : {&comm_, &data_comm_}) {
      if (MPI_Comm_dup(MPI_COMM_WORLD, comm) != MPI_SUCCESS) throw Error("MPI communicator: MPI_Comm_dup failed");
      MPI_Comm_set_errhandler(*comm, MPI_ERRORS_RETURN);
    }
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  ~MpiCommunicator() override {
    if (!broken_) {
      try {
        for (auto& entry : pending_) wait_until_done(entry.second);
      } catch (const Error&) {
        // broken_ is set: the other ranks are gone, do not wait for them in MPI_Finalize.
      }
    }
    if (broken_) return;
    MPI_Comm_free(&comm_);
    MPI_Comm_free(&data_comm_);
    if (initialized_here_) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Request start_allreduce_sum(std::span<float> data) override {
    check(data.size() <= static_cast<std::size_t>(INT_MAX),
          describe() + ": all-reduce of " + std::to_string(data.size()) + " floats exceeds MPI's int count");
    ensure_usable();
    Operation operation;
    operation.kind = Kind::allreduce;
    operation.phase = Phase::data;
    call(MPI_Iallreduce(MPI_IN_PLACE, data.data(), static_cast<int>(data.size()), MPI_FLOAT, MPI_SUM, comm_,
                        &operation.request),
         "all-reduce");
    return add(std::move(operation));
  }

  Request start_allgatherv(std::vector<std::uint8_t> mine) override {
    ensure_usable();
    Operation operation;
    operation.kind = Kind::allgatherv;
    operation.phase = Phase::sizes;
    operation.mine = std::move(mine);
    operation.my_size = operation.mine.size();
    operation.sizes.resize(static_cast<std::size_t>(size_));
    call(MPI_Iallgather(&operation.my_size, 1, MPI_UINT64_T, operation.sizes.data(), 1, MPI_UINT64_T, comm_,
                        &operation.request),
         "allgatherv");
    return add(std::move(operation));
  }

  bool test(Request request) override {
    progress();
    return find(request).phase == Phase::done;
  }

  // Tests every pending operation in the order they were started. An allgatherv posts its data
  // phase (on data_comm_) only after every earlier allgatherv has posted its own, so the data
  // phases start in the same order on every rank whatever order the size exchanges finish in.
  void progress() override {
    ensure_usable();
    bool earlier_gather_unposted = false;
    for (auto& [id, operation] : pending_) {
      if (operation.phase == Phase::sizes) {
        if (test_request(operation.request, "allgatherv")) operation.phase = Phase::sizes_known;
      }
      if (operation.phase == Phase::sizes_known && !earlier_gather_unposted) post_gather_data(operation);
      if (operation.phase == Phase::sizes || operation.phase == Phase::sizes_known) {
        earlier_gather_unposted = true;
        continue;
      }
      if (operation.phase == Phase::data) {
        const char* what = operation.kind == Kind::allreduce ? "all-reduce" : "allgatherv";
        if (test_request(operation.request, what)) operation.phase = Phase::done;
      }
    }
  }

  void wait(Request request) override {
    const auto found = pending_.find(request.id);
    check(found != pending_.end(), describe() + ": wait on an unknown request " + std::to_string(request.id));
    wait_until_done(found->second);
    if (found->second.kind == Kind::allreduce) pending_.erase(found);
  }

  std::vector<std::vector<std::uint8_t>> take_gathered(Request request) override {
    const auto found = pending_.find(request.id);
    check(found != pending_.end() && found->second.kind == Kind::allgatherv && found->second.phase == Phase::done,
          describe() + ": no finished allgatherv for request " + std::to_string(request.id));
    Operation& operation = found->second;
    std::vector<std::vector<std::uint8_t>> result(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      const auto begin = operation.received.begin() + operation.displacements[static_cast<std::size_t>(r)];
      result[static_cast<std::size_t>(r)].assign(begin, begin + operation.counts[static_cast<std::size_t>(r)]);
    }
    pending_.erase(found);
    return result;
  }

  std::vector<std::uint64_t> allgather(std::uint64_t value) override {
    ensure_usable();
    std::vector<std::uint64_t> values(static_cast<std::size_t>(size_));
    MPI_Request request;
    call(MPI_Iallgather(&value, 1, MPI_UINT64_T, values.data(), 1, MPI_UINT64_T, comm_, &request), "allgather");
    wait_request(request, "allgather");
    return values;
  }

  void broadcast(std::vector<std::uint8_t>& buffer) override {
    ensure_usable();
    std::uint64_t bytes = buffer.size();
    MPI_Request request;
    call(MPI_Ibcast(&bytes, 1, MPI_UINT64_T, 0, comm_, &request), "broadcast");
    wait_request(request, "broadcast");
    check(bytes <= static_cast<std::uint64_t>(INT_MAX),
          describe() + ": broadcast of " + std::to_string(bytes) + " bytes exceeds MPI's int count");
    buffer.resize(static_cast<std::size_t>(bytes));
    call(MPI_Ibcast(buffer.data(), static_cast<int>(bytes), MPI_BYTE, 0, comm_, &request), "broadcast");
    wait_request(request, "broadcast");
  }

  void barrier() override {
    ensure_usable();
    MPI_Request request;
    call(MPI_Ibarrier(comm_, &request), "barrier");
    wait_request(request, "barrier");
  }

  [[noreturn]] void abort(const std::string& message) override {
    std::fflush(stdout);
    std::fprintf(stderr, "tern: %s\n", message.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::_Exit(1);  // MPI_Abort does not return; this only satisfies [[noreturn]]
  }

 private:
  enum class Kind { allreduce, allgatherv };
  // allgatherv: sizes -> sizes_known -> data -> done; all-reduce: data -> done.
  enum class Phase { sizes, sizes_known, data, done };

  struct Operation {
    Kind kind = Kind::allreduce;
    Phase phase = Phase::data;
    MPI_Request request = MPI_REQUEST_NULL;
    std::vector<std::uint8_t> mine;
    std::uint64_t my_size = 0;
    std::vector<std::uint64_t> sizes;
    std::vector<int> counts;
    std::vector<int> displacements;
    std::vector<std::uint8_t> received;
  };

  Request add(Operation&& operation) {
    const Request request{next_id_++};
    pending_.emplace(request.id, std::move(operation));
    return request;
  }

  Operation& find(Request request) {
    const auto found = pending_.find(request.id);
    check(found != pending_.end(), describe() + ": unknown request " + std::to_string(request.id));
    return found->second;
  }

  void ensure_usable() const {
    check(!broken_, describe() + ": the communicator is unusable after an earlier failure");
  }

  void call(int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    broken_ = true;
    throw Error(describe() + ": MPI failed during " + what + ": " + mpi_error_text(code));
  }

  bool test_request(MPI_Request& request, const char* what) {
    int flag = 0;
    call(MPI_Test(&request, &flag, MPI_STATUS_IGNORE), what);
    return flag != 0;
  }

  void post_gather_data(Operation& operation) {
    std::uint64_t total = 0;
    operation.counts.resize(static_cast<std::size_t>(size_));
    operation.displacements.resize(static_cast<std::size_t>(size_));
    for (int r = 0; r < size_; ++r) {
      operation.displacements[static_cast<std::size_t>(r)] = static_cast<int>(total);
      total += operation.sizes[static_cast<std::size_t>(r)];
      if (total > static_cast<std::uint64_t>(INT_MAX)) {
        broken_ = true;
        throw Error(describe() + ": allgatherv of more than 2^31 bytes in all is not supported");
      }
      operation.counts[static_cast<std::size_t>(r)] = static_cast<int>(operation.sizes[static_cast<std::size_t>(r)]);
    }
    operation.received.resize(static_cast<std::size_t>(total));
    call(MPI_Iallgatherv(operation.mine.data(), static_cast<int>(operation.my_size), MPI_BYTE,
                         operation.received.data(), operation.counts.data(), operation.displacements.data(),
                         MPI_BYTE, data_comm_, &operation.request),
         "allgatherv");
    operation.phase = Phase::data;
  }

  // Polls until done() or the deadline: spins (yielding) for the first millisecond, then sleeps
  // 50 us between polls so a long wait does not take a core from the computation.
  template <class Done>
  void poll(Done done, const char* what) {
    const auto start = Clock::now();
    const auto deadline = start + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(timeout_seconds_));
    while (!done()) {
      const auto now = Clock::now();
      if (timeout_seconds_ > 0 && now > deadline) {
        broken_ = true;
        throw Error(describe() + ": no answer from the other ranks for " + seconds_text(timeout_seconds_) +
                    " s during " + what + " (a rank died or hung)");
      }
      if (now - start < std::chrono::milliseconds(1)) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }

  void wait_until_done(Operation& operation) {
    const char* what = operation.kind == Kind::allreduce ? "all-reduce" : "allgatherv";
    poll(
        [&] {
          progress();
          return operation.phase == Phase::done;
        },
        what);
  }

  void wait_request(MPI_Request& request, const char* what) {
    poll(
        [&] {
          progress();
          return test_request(request, what);
        },
        what);
  }

  double timeout_seconds_;
  bool initialized_here_ = false;
  bool broken_ = false;
  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm data_comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::uint64_t next_id_ = 1;
  std::map<std::uint64_t, Operation> pending_;  // ordered: progress() relies on start order
};

}  // namespace

bool mpi_available() { return true; }

std::unique_ptr<Communicator> make_mpi_communicator(double timeout_seconds) {
  return std::make_unique<MpiCommunicator>(timeout_seconds);
}

}  // namespace tern::dist
