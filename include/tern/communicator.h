// Communication between the ranks of a data-parallel job, without MPI types in the interface.
//
// Two implementations: a single-process communicator (size 1, every operation trivial) and an MPI
// one (make_mpi_communicator; only in builds with TERN_HAVE_MPI, see mpi_available()).
//
// Ordering: as in MPI, every rank must start the collective operations in the same order. The
// non-blocking ones progress only inside calls to this object (OpenMPI progresses non-blocking
// collectives only inside MPI calls), so call progress() now and then while computing.
//
// Threads: not thread-safe; calls may come from any thread, one at a time.
//
// Faults: every wait polls with a deadline. When an operation does not complete within the
// timeout, the call throws tern::Error with one line such as
//   "rank 1 of 2: no answer from the other ranks for 60 s during all-reduce (a rank died or hung)"
// After that the communicator is broken (the collectives cannot be resumed): the caller should
// call abort(message), which ends every rank. Destroying a broken MPI communicator skips
// MPI_Finalize (it would wait for the missing rank), so the process can still exit, and mpirun
// then ends the job because a rank exited without finalizing.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tern::dist {

// Handle of a non-blocking operation. Valid until wait() returns (or take_gathered() for an
// allgatherv); the buffers given to the operation must stay alive until then.
struct Request {
  std::uint64_t id = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "rank R of P": the prefix of this communicator's error messages.
  std::string describe() const;

  // Non-blocking sum all-reduce of data in place (each rank's data.size() must be equal).
  virtual Request start_allreduce_sum(std::span<float> data) = 0;
  // Non-blocking allgatherv of byte buffers of any size (the sizes are exchanged first); the
  // result comes from take_gathered() after wait().
  virtual Request start_allgatherv(std::vector<std::uint8_t> mine) = 0;
  // Progresses every pending operation; true when `request` is complete. Never blocks.
  virtual bool test(Request request) = 0;
  // Progresses every pending operation without waiting.
  virtual void progress() = 0;
  // Blocks until `request` is complete; throws Error after the timeout.
  virtual void wait(Request request) = 0;
  // After wait() on an allgatherv request: every rank's buffer, indexed by rank. Releases it.
  virtual std::vector<std::vector<std::uint8_t>> take_gathered(Request request) = 0;

  // Blocking operations (same timeout as wait()).
  virtual std::vector<std::uint64_t> allgather(std::uint64_t value) = 0;
  std::vector<std::vector<std::uint8_t>> allgatherv(std::span<const std::uint8_t> mine);
  // Rank 0's buffer replaces `buffer` on every other rank (its size too).
  virtual void broadcast(std::vector<std::uint8_t>& buffer) = 0;
  virtual void barrier() = 0;

  // Prints "tern: <message>" on stderr and ends every rank (MPI_Abort; exit status 1). Never returns.
  [[noreturn]] virtual void abort(const std::string& message) = 0;
};

std::unique_ptr<Communicator> make_single_process_communicator();

// Whether this build has MPI (configured with TERN_MPI=ON, or AUTO with MPI found).
bool mpi_available();

// Over MPI_COMM_WORLD (on private duplicates of it). Calls MPI_Init_thread (asking for
// MPI_THREAD_SERIALIZED: calls may come from any thread, one at a time) unless MPI is already
// initialized, and then MPI_Finalize in its destructor. timeout_seconds <= 0 waits forever.
// Throws Error when this build has no MPI. Create one per process: MPI cannot be initialized again
// after the communicator that initialized it has finalized it.
std::unique_ptr<Communicator> make_mpi_communicator(double timeout_seconds);

}  // namespace tern::dist
