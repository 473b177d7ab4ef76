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
  // Worker i runs on the i-th allowed CPU (TERN_BIND=0: wherever the OS puts it). Unbound, the
  // scheduler of this 2-vCPU VM sometimes leaves a worker on the caller's CPU, and every
  // parallel_for then waits out a time slice: a batch-1 ResNet-20 took 8.7 ms instead of 0.24.
  const char* bind_env = std::getenv("TERN_BIND");
  const bool bind = !(bind_env && std::string(bind_env) == "0");
  std::vector<int> cpus = allowed_cpus();
  for (int i = 1; i < n; ++i) {
    workers_.emplace_back([this] { worker_loop(); });
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

void ThreadPool::run_chunk(int index) {
  int64_t begin, end;
  chunk_bounds(job_count_.load(std::memory_order_relaxed), job_chunks_.load(std::memory_order_relaxed), index, &begin,
               &end);
  in_parallel_region = true;
  try {
    (*job_.load(std::memory_order_relaxed))(begin, end);
  } catch (...) {
    std::lock_guard lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
  in_parallel_region = false;
}

void ThreadPool::work_on(uint64_t generation, bool caller) {
  for (int claimed = 0;; ++claimed) {
    // The caller takes a chunk beyond its first only from a worker still asleep: one that is
    // awake claims it within a moment, and its chunk's data is in that worker's cache (the same
    // split ran the layer before).
    if (caller && claimed > 0 && sleepers_.load(std::memory_order_acquire) == 0) return;
    uint64_t s = state_.load(std::memory_order_acquire);
    const int chunks = job_chunks_.load(std::memory_order_relaxed);
    const int next = static_cast<int>(s & 0xffffffffu);
    if ((s >> 32) != (generation & 0xffffffffu) || next >= chunks) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
      --claimed;
      continue;
    }
    run_chunk(next);
    if (chunks_done_.fetch_add(1, std::memory_order_acq_rel) + 1 == chunks && !caller) {
      std::lock_guard lock(mutex_);  // the caller may be asleep in done_.wait
      done_.notify_one();
    }
  }
}

void ThreadPool::worker_loop() {
  uint64_t seen = 0;
  for (;;) {
    auto has_work = [&] {
      return stop_.load(std::memory_order_acquire) || (state_.load(std::memory_order_acquire) >> 32) != seen;
    };
    if (!spin_until(has_work)) {
      sleepers_.fetch_add(1);
      std::unique_lock lock(mutex_);
      wake_.wait(lock, has_work);
      lock.unlock();
      sleepers_.fetch_sub(1);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = state_.load(std::memory_order_acquire) >> 32;
    work_on(seen, false);
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
  job_chunks_.store(chunks, std::memory_order_relaxed);
  chunks_done_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  uint64_t generation;
  {
    std::lock_guard lock(mutex_);  // pairs with a worker about to sleep: no lost wake-up
    generation = ((state_.load(std::memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
    if (generation == 0) generation = 1;  // 0 is what a new worker has seen
    state_.store(generation << 32, std::memory_order_release);
  }
  if (sleepers_.load() > 0) wake_.notify_all();
  work_on(generation, true);
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
