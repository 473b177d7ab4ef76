#include "tern/thread_pool.h"

#include "tern/limits.h"

#include <sched.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TERN_PAUSE() _mm_pause()
#else
#define TERN_PAUSE() ((void)0)
#endif

namespace tern {

namespace {
thread_local bool in_parallel_region = false;

// Long enough to cover the gap between consecutive layers, short enough not to steal a core from
// other processes when the pool is idle.
constexpr auto kSpin = std::chrono::microseconds(200);

int default_thread_count() {
  if (int n = threads_from_environment(); n > 0) return n;  // a bad value is an Error, never ignored
  return std::max(1u, std::thread::hardware_concurrency());
}

void chunk_bounds(int64_t count, int chunks, int index, int64_t* begin, int64_t* end) {
  int64_t base = count / chunks, extra = count % chunks;
  *begin = index * base + std::min<int64_t>(index, extra);
  *end = *begin + base + (index < extra ? 1 : 0);
}

// Spins until pred() or the spin budget is spent; returns pred().
template <typename Pred>
bool spin_until(Pred pred) {
  auto deadline = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0;; ++i) {
    if (pred()) return true;
    TERN_PAUSE();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) return pred();
  }
}

// The CPUs this process may run on, in order.
std::vector<int> allowed_cpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  return cpus;
}

}  // namespace

ThreadPool::ThreadPool(int threads) {
  int n = threads > 0 ? threads : default_thread_count();
  n = std::min(n, kMaxThreads);
  claimed_ = std::make_unique<std::atomic<uint64_t>[]>(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) claimed_[i].store(0, std::memory_order_relaxed);
  // Worker i runs on the i-th allowed CPU (TERN_BIND=0: wherever the OS puts it). Unbound, the
  // scheduler of this 2-vCPU VM sometimes leaves a worker on the caller's CPU, and every
  // parallel_for then waits out a time slice: a batch-1 ResNet-20 took 8.7 ms instead of 0.24.
  const char* bind_env = std::getenv("TERN_BIND");
  const bool bind = !(bind_env && std::string(bind_env) == "0");
  std::vector<int> cpus = allowed_cpus();
  for (int i = 1; i < n; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
    if (bind && static_cast<int>(cpus.size()) >= n) {
      cpu_set_t set;
      CPU_ZERO(&set);
      CPU_SET(cpus[static_cast<size_t>(i)], &set);
      pthread_setaffinity_np(workers_.back().native_handle(), sizeof set, &set);
    }
  }
}


ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool;
  return pool;
}

bool ThreadPool::claim_and_run(uint64_t state, int index, bool caller) {
  const uint64_t generation = state >> kChunkBits;
  const int chunks = chunk_count(state);
  if (index >= chunks) return false;
  uint64_t last = claimed_[index].load(std::memory_order_acquire);
  // Claimed in this generation already, or in a later one (then this thread read a finished job).
  if (last >= generation) return false;
  if (!claimed_[index].compare_exchange_strong(last, generation, std::memory_order_acq_rel)) return false;
  int64_t begin, end;
  chunk_bounds(job_count_.load(std::memory_order_relaxed), chunks, index, &begin, &end);
  in_parallel_region = true;
  try {
    (*job_.load(std::memory_order_relaxed))(begin, end);
  } catch (...) {
    std::lock_guard lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
  in_parallel_region = false;
  if (chunks_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks && !caller) {
    std::lock_guard lock(mutex_);  // the caller may be asleep in done_.wait
    done_.notify_one();
  }
  return true;
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto has_work = [&] {
      return stop_.load(std::memory_order_acquire) || (state_.load(std::memory_order_acquire) >> kChunkBits) != seen;
    };
    if (!spin_until(has_work)) {
      sleepers_.fetch_add(1);
      std::unique_lock lock(mutex_);
      wake_.wait(lock, has_work);
      lock.unlock();
      sleepers_.fetch_sub(1);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    const uint64_t state = state_.load(std::memory_order_acquire);
    seen = state >> kChunkBits;
    claim_and_run(state, index, false);
  }
}

void ThreadPool::parallel_for(int64_t count, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk) {
  if (count <= 0) return;
  int64_t max_chunks = std::max<int64_t>(1, count / std::max<int64_t>(1, min_chunk));
  int chunks = static_cast<int>(std::min<int64_t>(size(), max_chunks));
  if (chunks == 1 || in_parallel_region) {
    fn(0, count);
    return;
  }
  std::lock_guard run_lock(run_mutex_);
  job_.store(&fn, std::memory_order_relaxed);
  job_count_.store(count, std::memory_order_relaxed);
  chunks_done_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  uint64_t state;
  {
    std::lock_guard lock(mutex_);  // pairs with a worker about to sleep: no lost wake-up
    state = (((state_.load(std::memory_order_relaxed) >> kChunkBits) + 1) << kChunkBits) | static_cast<uint64_t>(chunks);
    state_.store(state, std::memory_order_release);
  }
  if (sleepers_.load() > 0) wake_.notify_all();
  claim_and_run(state, 0, true);
  // A chunk beyond its own only from a worker still asleep: one that is awake claims its chunk
  // within a moment, and that chunk's data is in its cache.
  for (int i = 1; i < chunks && sleepers_.load(std::memory_order_acquire) > 0; ++i) claim_and_run(state, i, true);
  auto finished = [&] { return chunks_done_.load(std::memory_order_acquire) == chunks; };
  if (!spin_until(finished)) {
    std::unique_lock lock(mutex_);
    done_.wait(lock, finished);
  }
  std::exception_ptr error;
  {
    std::lock_guard lock(error_mutex_);
    error = error_;
    error_ = nullptr;
  }
  job_.store(nullptr, std::memory_order_relaxed);
  if (error) std::rethrow_exception(error);
}

}  // namespace tern
