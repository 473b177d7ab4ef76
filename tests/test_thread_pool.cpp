// ThreadPool: chunks cover the range exactly once, errors propagate, nesting and concurrent callers
// are safe, and rapid back-to-back jobs (the spin/sleep hand-off) never lose work.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "tern/thread_pool.h"

namespace tern {
namespace {

TEST(ThreadPool, CoversEveryIndexOnce) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    EXPECT_EQ(pool.size(), threads);
    for (int64_t count : {1, 2, 3, 7, 100, 1001}) {
      std::vector<std::atomic<int>> hits(static_cast<size_t>(count));
      pool.parallel_for(count, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)]++;
      });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
  }
}

TEST(ThreadPool, RespectsMinChunk) {
  ThreadPool pool(4);
  std::atomic<int> chunks{0};
  pool.parallel_for(10, [&](int64_t, int64_t) { chunks++; }, 6);
  EXPECT_EQ(chunks.load(), 1);
}

TEST(ThreadPool, PropagatesExceptionsAndStaysUsable) {
  ThreadPool pool(2);
  for (int chunk_that_throws : {0, 1}) {
    EXPECT_THROW(pool.parallel_for(2,
                                   [&](int64_t b, int64_t) {
                                     if (b == chunk_that_throws) throw std::runtime_error("boom");
                                   }),
                 std::runtime_error);
  }
  std::atomic<int64_t> sum{0};
  pool.parallel_for(100, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 100);
}

TEST(ThreadPool, NestedCallsRunSerially) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  pool.parallel_for(4, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) pool.parallel_for(10, [&](int64_t ib, int64_t ie) { sum += ie - ib; });
  });
  EXPECT_EQ(sum.load(), 40);
}

TEST(ThreadPool, RapidJobsAndSleepWakeHandOff) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  for (int round = 0; round < 20000; ++round) pool.parallel_for(2, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 40000);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // let the worker fall asleep
  pool.parallel_for(2, [&](int64_t b, int64_t e) { sum += e - b; });
  EXPECT_EQ(sum.load(), 40002);
}

// Chunk i belongs to thread i: the caller always runs chunk 0, and chunk i >= 1 runs on worker i or,
// when that worker is asleep, on the caller; never on another worker.
TEST(ThreadPool, EachChunkRunsOnItsOwnThread) {
  for (int threads : {2, 3}) {
    ThreadPool pool(threads);
    const std::thread::id caller = std::this_thread::get_id();
    std::vector<std::set<std::thread::id>> workers_seen(static_cast<size_t>(threads));
    for (int round = 0; round < 5000; ++round) {
      std::vector<std::thread::id> ran(static_cast<size_t>(threads));
      pool.parallel_for(threads, [&](int64_t b, int64_t) { ran[static_cast<size_t>(b)] = std::this_thread::get_id(); });
      ASSERT_EQ(ran[0], caller) << "round " << round;
      for (int i = 1; i < threads; ++i)
        if (ran[static_cast<size_t>(i)] != caller) workers_seen[static_cast<size_t>(i)].insert(ran[static_cast<size_t>(i)]);
      if (round == 2500) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // and once after the workers slept
    }
    std::set<std::thread::id> all;
    for (int i = 1; i < threads; ++i) {
      EXPECT_LE(workers_seen[static_cast<size_t>(i)].size(), 1u) << "chunk " << i << " ran on two workers";
      for (auto id : workers_seen[static_cast<size_t>(i)]) EXPECT_TRUE(all.insert(id).second) << "a worker ran two chunks";
    }
  }
}

TEST(ThreadPool, ConcurrentCallersShareOnePool) {
  ThreadPool pool(2);
  std::atomic<int64_t> sum{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t)
    callers.emplace_back([&] {
      for (int round = 0; round < 2000; ++round) pool.parallel_for(8, [&](int64_t b, int64_t e) { sum += e - b; });
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(sum.load(), 3 * 2000 * 8);
}

}  // namespace
}  // namespace tern
