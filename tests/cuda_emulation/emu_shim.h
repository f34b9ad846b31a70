// Host emulation of the small part of CUDA that csrc/cuda/replay_cuda.cu uses when it is
// compiled with RD_EMULATE defined (see the comment near the top of that file).
// Used by tests/test_cuda_emulation.py through emu_ext.cpp.
//
// Blocks run one after another; the threads of a block run as real OS threads, so
// __syncthreads is a real barrier and a missing one shows up as a data race (under
// ThreadSanitizer) or a wrong result. A thread leaving the kernel while others wait at a
// barrier is counted (divergent __syncthreads, emu::g_divergent).
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <thread>
#include <vector>

struct dim3 {
  unsigned x, y, z;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace emu {
struct Barrier {
  std::mutex m;
  std::condition_variable cv;
  int expected, arrived = 0;
  uint64_t gen = 0;
  explicit Barrier(int n) : expected(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> l(m);
    const uint64_t g = gen;
    if (++arrived >= expected) {
      arrived = 0;
      ++gen;
      cv.notify_all();
    } else {
      cv.wait(l, [&] { return gen != g; });
    }
  }
  // a thread leaving the kernel
  bool arrive_and_drop() {
    std::unique_lock<std::mutex> l(m);
    const bool divergent = arrived > 0;
    --expected;
    if (arrived > 0 && arrived >= expected) {
      arrived = 0;
      ++gen;
      cv.notify_all();
    }
    return divergent;
  }
  void reset(int n) {
    std::lock_guard<std::mutex> l(m);
    expected = n;
    arrived = 0;
  }
};

inline thread_local dim3 tl_threadIdx, tl_blockIdx;
inline dim3 g_blockDim, g_gridDim;
inline Barrier* g_sync = nullptr;
inline std::atomic<long> g_divergent{0};
inline std::atomic<long> g_launches{0};

template <class F>
void launch(unsigned blocks, unsigned threads, F f) {
  g_gridDim = dim3(blocks);
  g_blockDim = dim3(threads);
  g_launches++;
  if (blocks == 0) return;
  Barrier sync((int)threads), end((int)threads);
  g_sync = &sync;
  std::vector<std::thread> ts;
  ts.reserve(threads);
  for (unsigned tx = 0; tx < threads; ++tx) {
    ts.emplace_back([&, tx] {
      tl_threadIdx = dim3(tx);
      for (unsigned bx = 0; bx < blocks; ++bx) {
        tl_blockIdx = dim3(bx);
        f();
        if (sync.arrive_and_drop()) g_divergent++;
        // last thread of the block resets the sync barrier while all others wait here
        {
          std::unique_lock<std::mutex> l(end.m);
          const uint64_t g = end.gen;
          if (++end.arrived >= end.expected) {
            sync.reset((int)threads);
            end.arrived = 0;
            ++end.gen;
            end.cv.notify_all();
          } else {
            end.cv.wait(l, [&] { return end.gen != g; });
          }
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  g_sync = nullptr;
}

inline unsigned long long atomicAdd(unsigned long long* p, unsigned long long v) {
  return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
inline unsigned atomicAdd(unsigned* p, unsigned v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
inline int atomicMax(int* p, int v) {
  int old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
  while (old < v && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
  }
  return old;
}
}  // namespace emu

using emu::atomicAdd;
using emu::atomicMax;
inline int max(int a, int b) { return a > b ? a : b; }
inline int min(int a, int b) { return a < b ? a : b; }

#define threadIdx emu::tl_threadIdx
#define blockIdx emu::tl_blockIdx
#define blockDim emu::g_blockDim
#define gridDim emu::g_gridDim
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __syncthreads() emu::g_sync->arrive_and_wait()
#define RD_LAUNCH(kernel, blocks, threads, ...) emu::launch((blocks), (threads), [&] { kernel(__VA_ARGS__); })
