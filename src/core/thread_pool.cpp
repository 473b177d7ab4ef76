#include "tern/thread_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace tern {

namespace {
thread_local bool in_parallel_region = false;

int default_thread_count() {
  if (const char* env = std::getenv("TERN_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return std::min(n, 256);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

void chunk_bounds(int64_t count, int chunks, int index, int64_t* begin, int64_t* end) {
  int64_t base = count / chunks, extra = count % chunks;
  *begin = index * base + std::min<int64_t>(index, extra);
  *end = *begin + base + (index < extra ? 1 : 0);
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  int n = threads > 0 ? threads : default_thread_count();
  for (int i = 1; i < n; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
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

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(int64_t, int64_t)>* job;
    int64_t count;
    int chunks;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
      count = job_count_;
      chunks = job_chunks_;
    }
    if (index < chunks) {
      int64_t begin, end;
      chunk_bounds(count, chunks, index, &begin, &end);
      in_parallel_region = true;
      try {
        (*job)(begin, end);
      } catch (...) {
        std::lock_guard lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      in_parallel_region = false;
    }
    {
      std::lock_guard lock(mutex_);
      if (--pending_ == 0) done_.notify_one();
    }
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
  {
    std::lock_guard lock(mutex_);
    job_ = &fn;
    job_count_ = count;
    job_chunks_ = chunks;
    pending_ = static_cast<int>(workers_.size());
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  std::exception_ptr caller_error;
  int64_t begin, end;
  chunk_bounds(count, chunks, 0, &begin, &end);
  in_parallel_region = true;
  try {
    fn(begin, end);
  } catch (...) {
    caller_error = std::current_exception();
  }
  in_parallel_region = false;
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return pending_ == 0; });
  std::exception_ptr error = caller_error ? caller_error : error_;
  job_ = nullptr;
  lock.unlock();
  if (error) std::rethrow_exception(error);
}

}  // namespace tern
