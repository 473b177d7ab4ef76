// A small persistent thread pool. parallel_for splits [0, count) into one contiguous chunk per
// thread (the same bounds whichever thread runs a chunk). Chunk i belongs to thread i: the caller
// runs chunk 0, worker i chunk i, so a layer finds in its core's cache what the same split of the
// layer before wrote there. A pool of T threads owns T-1 workers and never oversubscribes the
// machine. Nested parallel_for calls run serially on the caller.
//
// Waking a sleeping thread costs 20-100 us on a VM, as much as a whole batch-1 convolution, so
// workers spin (with pause) for a short while after each job before they sleep, and the caller
// spins while waiting for the last chunk. A worker still asleep when the caller has run its own
// chunk does not hold the job up: the caller claims the chunks still unclaimed itself (the first
// layer of a batch-1 run after an idle gap took 8x its time waiting for the worker).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace tern {

class ThreadPool {
 public:
  // threads <= 0: TERN_THREADS from the environment if set, else the hardware's thread count.
  explicit ThreadPool(int threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Calls fn(begin, end) on disjoint chunks covering [0, count); at most size() chunks, none
  // smaller than min_chunk items (except the last). Returns when every chunk is done; rethrows the
  // first exception a chunk threw.
  void parallel_for(int64_t count, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk = 1);

  // The process-wide pool the executor uses by default.
  static ThreadPool& global();

 private:
  void worker_loop(int index);
  // Claims chunk `index` of the job that `state` names and runs it; false if it was claimed.
  bool claim_and_run(uint64_t state, int index, bool caller);

  static constexpr int kChunkBits = 16;
  static constexpr int kMaxThreads = (1 << kChunkBits) - 1;
  static int chunk_count(uint64_t state) { return static_cast<int>(state & ((uint64_t{1} << kChunkBits) - 1)); }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one parallel_for at a time when several threads share a pool
  std::mutex mutex_;      // guards sleeping and waking
  std::condition_variable wake_, done_;
  // The current job; written before state_ names its generation (release), read after (acquire).
  std::atomic<const std::function<void(int64_t, int64_t)>*> job_{nullptr};
  std::atomic<int64_t> job_count_{0};
  // The job's generation (high 48 bits) and its chunk count (low 16 bits), published together.
  std::atomic<uint64_t> state_{0};
  // Per chunk, the last generation that claimed it. A chunk of the job whose generation a thread
  // read is unclaimed only while that job runs (it ends when every chunk is done), so a claim
  // that succeeds is always of the current job.
  std::unique_ptr<std::atomic<uint64_t>[]> claimed_;
  std::atomic<int> chunks_done_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex error_mutex_;
  std::exception_ptr error_;
};

}  // namespace tern
