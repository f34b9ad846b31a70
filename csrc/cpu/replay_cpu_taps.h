// Fixed-point resampling taps of the CPU resize (the weights of replay_math.h's
// raw_weight / norm_weight, as _reference.resample_weights computes them), built once per
// view and axis. Part of replay_cpu.cpp (one translation unit).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "replay_cpu_types.h"
#include "replay_math.h"

namespace reinforced_data {
namespace {

// The weights of resample_weights() in _reference.py for `filter` (0 triangle, 1 bicubic):
// raw_weight over the inputs j within the filter's support, normalised by their total with
// norm_weight. (tap_range() bounds the same set with slack; any range holding it gives the same
// total and weights, as raw is 0 outside the support.) With R = filter_support (2s triangle, 4s
// bicubic; s = max(n, m)), j is in the support <=> (2i+1)n - R < (2j+1)m < (2i+1)n + R <=>
// j in [jlo, jhi] with
//   jlo = floor(((2i+1)n - R + m) / 2m),  jhi = floor(((2i+1)n + R - m - 1) / 2m),
// stepped here without divisions (numerators grow by 2n per output). Zero normalised weights at
// either end are dropped too (they add nothing), then every row is padded to the longest, K.
// Bicubic weights may be negative; |w| < 2^15 (they fit int16) and a row's sum of |w| is below
// 1.3 * 2^14 (tests/test_kernels_interpolation_padding_mix.py checks both over many sizes).
// Output o of a flipped row takes the weights of output m - 1 - o.
void build_taps(int64_t n, int64_t m, bool flip, int filter, Taps& t, Scratch& s) {
  const int64_t R = M::filter_support(n, m, filter);
  const int64_t cap = R / m + 3;  // > jhi - jlo + 1
  s.first.resize(m);
  s.count.resize(m);
  s.wbuf.resize(m * cap);
  s.raw.resize(cap);
  const int64_t D = 2 * m, step_q = (2 * n) / D, step_r = (2 * n) % D;
  int64_t qlo = M::floor_div(n - R + m, D), rlo = (n - R + m) - qlo * D;
  int64_t qhi = M::floor_div(n + R - m - 1, D), rhi = (n + R - m - 1) - qhi * D;
  int64_t K = 1;
  for (int64_t i = 0; i < m; ++i) {
    const int64_t lo = std::max<int64_t>(qlo, 0), hi = std::min<int64_t>(qhi, n - 1);
    qlo += step_q;
    rlo += step_r;
    if (rlo >= D) rlo -= D, ++qlo;
    qhi += step_q;
    rhi += step_r;
    if (rhi >= D) rhi -= D, ++qhi;
    const int64_t c = hi - lo + 1;
    int64_t total = 0;
    for (int64_t k = 0; k < c; ++k) {
      s.raw[k] = M::raw_weight(i, lo + k, n, m, filter);
      total += s.raw[k];
    }
    // norm_weight(raw, total) = floor(num / total) with num = raw * 2^14 + total / 2 (total > 0),
    // without a division per tap: the double quotient is within one of it (|quotient| < 2^15,
    // relative error ~2^-52), and the integer corrections make it exactly the floor whatever the
    // error and whatever the sign of num (the cast truncates towards zero; the loops step down
    // while q * total > num and up while (q + 1) * total <= num).
    int32_t* w = s.wbuf.data() + i * cap;
    const double inv = 1.0 / (double)total;
    for (int64_t k = 0; k < c; ++k) {
      const int64_t num = s.raw[k] * (1 << M::WEIGHT_BITS) + total / 2;
      int64_t q = (int64_t)((double)num * inv);
      while (q * total > num) --q;
      while ((q + 1) * total <= num) ++q;
      w[k] = (int32_t)q;
    }
    int64_t a = 0, b = c;
    while (a < b - 1 && w[a] == 0) ++a;
    while (b > a + 1 && w[b - 1] == 0) --b;
    if (a > 0) std::memmove(w, w + a, (b - a) * sizeof(int32_t));
    s.first[i] = (int32_t)(lo + a);
    s.count[i] = (int32_t)(b - a);
    K = std::max<int64_t>(K, b - a);
  }
  t.K = K;
  t.start.resize(m);
  t.w.assign(m * K, 0);
  for (int64_t o = 0; o < m; ++o) {
    const int64_t i = flip ? m - 1 - o : o;
    int64_t st = s.first[i], shift = 0;
    if (st + K > n) {  // keep start + K <= n: move the window left and the weights right
      shift = st + K - n;
      st -= shift;
    }
    t.start[o] = (int32_t)st;
    const int32_t* w = s.wbuf.data() + i * cap;
    for (int64_t k = 0; k < s.count[i]; ++k) t.w[o * K + shift + k] = (int16_t)w[k];
  }
}

}  // namespace
}  // namespace reinforced_data
