// CPU kernels of reinforced_data::augment, ::mix and ::normalize.
//
// Every output byte follows the integer formulas of replay_math.h (reinforced_data/
// _reference.py is the specification): the CPU, CUDA and reference backends agree bit for
// bit. Views are independent and run in parallel over the batch (at::parallel_for).
//
// The per-view kernels live in replay_cpu_kernels.h, compiled here twice on x86-64: for
// the baseline ISA (SSE2) and for AVX2 (chosen at run time when the CPU has it). The
// environment variable REINFORCED_DATA_CPU_ISA=baseline forces the baseline build (for
// testing both; "avx2" or unset: the best the CPU supports). Other architectures get
// the plain C++ version, which the compiler vectorises as it can.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "replay_args.h"
#include "replay_checks.h"
#include "replay_math.h"

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(RD_NO_SIMD)
#include <immintrin.h>
#define RD_X86 1
#else
#define RD_X86 0
#endif
#if RD_X86 && defined(__GNUC__) && !defined(__clang__)
// a second, AVX2 build of the kernels, picked at run time (GCC's target pragma; clang would
// need `#pragma clang attribute` instead, untested, so clang builds keep the baseline only)
#define RD_AVX2 1
#else
#define RD_AVX2 0
#endif

namespace reinforced_data {
namespace {

namespace M = math;

// ------------------------------------------------------------------ resampling taps

// Fixed-point resampling taps of m outputs from n inputs: output o reads inputs
// [start[o], start[o] + K) with weights w[o*K, o*K + K) (zero-padded; start + K <= n).
struct Taps {
  int64_t K = 0;
  std::vector<int32_t> start;  // [m]
  std::vector<int16_t> w;      // [m * K]; a normalised weight is at most 2^14
};

// Per-thread scratch buffers, reused across the views a thread processes.
struct Scratch {
  Taps th, tv;
  std::vector<int64_t> raw;
  std::vector<int32_t> first, count, wbuf;
  std::vector<uint8_t> cropT;  // [cw, 3*ch]: the crop, transposed
  std::vector<uint8_t> tmpT;   // [out_w, 3*ch]: horizontal pass, transposed
  std::vector<uint8_t> tmp;    // [3*ch, out_w]: horizontal pass
  std::vector<uint8_t> buf;    // [3, out_h, out_w]: second image buffer for the ops
  std::vector<uint8_t> tbuf;   // [2, 3, out_w, out_h]: transposed images (ShearY)
  std::vector<uint16_t> colsum;  // [out_w]: Sharpness column sums
  // AVX2 horizontal pass: per block of 32 outputs, 8 window starts and the shuffle controls
  // and weights of each tap pair
  std::vector<int32_t> hbase;
  std::vector<uint8_t> hctl;
  std::vector<int16_t> hwt;
  std::vector<uint8_t> rowpad;
};

// A source image as the kernels read it: channel c, row y, column x is the byte at
// p[c * sc + y * sh + x * px]. px == 1: planar (rows of one channel are contiguous; any
// channel and row strides, e.g. contiguous CHW, a crop view of it, or a gray plane expanded
// to three channels). px == 3 or 4 with sc == 1: interleaved, the channels-last view that
// decoders give (torchvision.io.decode_jpeg, or torch.from_numpy(HWC array).permute(2, 0, 1):
// strides (1, 3W, 3); px == 4 when an alpha channel was sliced off). end is one past the last
// byte the view spans: reads past a crop row (vector windows) never go beyond it.
struct Source {
  const uint8_t* p = nullptr;
  int64_t H = 0, W = 0, sc = 0, sh = 0, px = 1;
  const uint8_t* end = nullptr;
};

// floor(a / b) for b > 0
inline int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// The weights of resample_weights() in _reference.py: raw_weight over the inputs j with a
// non-zero raw weight, normalised by their total with norm_weight. (tap_range() bounds the same
// set with slack; any range holding it gives the same total and weights.) With s = max(n, m),
// raw > 0 <=> (2i+1)n - 2s < (2j+1)m < (2i+1)n + 2s <=> j in [jlo, jhi] with
//   jlo = floor(((2i+1)n - 2s + m) / 2m),  jhi = floor(((2i+1)n + 2s - m - 1) / 2m),
// stepped here without divisions (numerators grow by 2n per output). Zero normalised weights at
// either end are dropped too (they add nothing), then every row is padded to the longest, K.
// Output o of a flipped row takes the weights of output m - 1 - o.
void build_taps(int64_t n, int64_t m, bool flip, Taps& t, Scratch& s) {
  const int64_t smax = n > m ? n : m;
  const int64_t cap = 2 * smax / m + 3;  // > jhi - jlo + 1
  s.first.resize(m);
  s.count.resize(m);
  s.wbuf.resize(m * cap);
  s.raw.resize(cap);
  const int64_t D = 2 * m, step_q = (2 * n) / D, step_r = (2 * n) % D;
  int64_t qlo = floor_div(n - 2 * smax + m, D), rlo = (n - 2 * smax + m) - qlo * D;
  int64_t qhi = floor_div(n + 2 * smax - m - 1, D), rhi = (n + 2 * smax - m - 1) - qhi * D;
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
      s.raw[k] = M::raw_weight(i, lo + k, n, m);
      total += s.raw[k];
    }
    // norm_weight(raw, total) = floor(num / total) with num = raw * 2^14 + total / 2, without a
    // division per tap: the double quotient is within one of it (quotient <= 2^14 + 1, relative
    // error ~2^-52), and the integer corrections make it exact whatever the error.
    int32_t* w = s.wbuf.data() + i * cap;
    const double inv = 1.0 / (double)total;
    for (int64_t k = 0; k < c; ++k) {
      const int64_t num = (s.raw[k] << M::WEIGHT_BITS) + total / 2;
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

// ------------------------------------------------------------------ kernels, per ISA

// x[i] = lut[x[i]], eight bytes per load
inline void apply_lut_scalar(uint8_t* x, int64_t n, const uint8_t* lut) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    std::memcpy(&v, x + i, 8);
    uint64_t o = 0;
    for (int k = 0; k < 8; ++k) o |= (uint64_t)lut[(v >> (8 * k)) & 255] << (8 * k);
    std::memcpy(x + i, &o, 8);
  }
  for (; i < n; ++i) x[i] = lut[x[i]];
}

// r[x], g[x], b[x] = in[px*x], in[px*x + 1], in[px*x + 2] for x < n (px = 3 or 4)
inline void deinterleave(const uint8_t* in, int64_t n, int64_t px, uint8_t* r, uint8_t* g, uint8_t* b) {
  if (px == 3) {
    for (int64_t x = 0; x < n; ++x) {
      r[x] = in[3 * x];
      g[x] = in[3 * x + 1];
      b[x] = in[3 * x + 2];
    }
  } else {
    for (int64_t x = 0; x < n; ++x) {
      r[x] = in[px * x];
      g[x] = in[px * x + 1];
      b[x] = in[px * x + 2];
    }
  }
}

namespace k_base {
#if RD_X86
struct V {
  static constexpr bool kSimd = true, kGather = false, kDirectH = false;
  static constexpr int64_t N = 16;
  using T = __m128i;
  static T loadu(const void* p) { return _mm_loadu_si128((const T*)p); }
  static void storeu(void* p, T v) { _mm_storeu_si128((T*)p, v); }
  static void store_lane(void* p, T v, int) { _mm_storeu_si128((T*)p, v); }
  static T zero() { return _mm_setzero_si128(); }
  static T set1_32(int32_t v) { return _mm_set1_epi32(v); }
  static T unpacklo8(T a, T b) { return _mm_unpacklo_epi8(a, b); }
  static T unpackhi8(T a, T b) { return _mm_unpackhi_epi8(a, b); }
  static T unpacklo16(T a, T b) { return _mm_unpacklo_epi16(a, b); }
  static T unpackhi16(T a, T b) { return _mm_unpackhi_epi16(a, b); }
  static T unpacklo32(T a, T b) { return _mm_unpacklo_epi32(a, b); }
  static T unpackhi32(T a, T b) { return _mm_unpackhi_epi32(a, b); }
  static T unpacklo64(T a, T b) { return _mm_unpacklo_epi64(a, b); }
  static T unpackhi64(T a, T b) { return _mm_unpackhi_epi64(a, b); }
  static T madd16(T a, T b) { return _mm_madd_epi16(a, b); }
  static T add32(T a, T b) { return _mm_add_epi32(a, b); }
  static T srai32(T a, int n) { return _mm_srai_epi32(a, n); }
  static T packs32(T a, T b) { return _mm_packs_epi32(a, b); }
  static T packus16(T a, T b) { return _mm_packus_epi16(a, b); }
  static int64_t gather_row(const uint8_t*, int64_t, const int32_t*, int64_t, uint8_t*, const int32_t*) { return 0; }
  static void apply_lut(uint8_t* x, int64_t n, const uint8_t* lut) { apply_lut_scalar(x, n, lut); }
};
#else
struct V {
  static constexpr bool kSimd = false, kGather = false, kDirectH = false;
  static constexpr int64_t N = 16;
  static int64_t gather_row(const uint8_t*, int64_t, const int32_t*, int64_t, uint8_t*, const int32_t*) { return 0; }
  static void apply_lut(uint8_t* x, int64_t n, const uint8_t* lut) { apply_lut_scalar(x, n, lut); }
};
#endif
#include "replay_cpu_kernels.h"
}  // namespace k_base

#if RD_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")  // exactly what use_avx2() checks
namespace k_avx2 {
struct V {
  static constexpr bool kSimd = true, kGather = true, kDirectH = true;
  static constexpr int64_t N = 32;
  using T = __m256i;
  static T loadu(const void* p) { return _mm256_loadu_si256((const T*)p); }
  static void storeu(void* p, T v) { _mm256_storeu_si256((T*)p, v); }
  static void store_lane(void* p, T v, int lane) {
    _mm_storeu_si128((__m128i*)p, lane ? _mm256_extracti128_si256(v, 1) : _mm256_castsi256_si128(v));
  }
  static T zero() { return _mm256_setzero_si256(); }
  static T set1_32(int32_t v) { return _mm256_set1_epi32(v); }
  static T unpacklo8(T a, T b) { return _mm256_unpacklo_epi8(a, b); }
  static T unpackhi8(T a, T b) { return _mm256_unpackhi_epi8(a, b); }
  static T unpacklo16(T a, T b) { return _mm256_unpacklo_epi16(a, b); }
  static T unpackhi16(T a, T b) { return _mm256_unpackhi_epi16(a, b); }
  static T unpacklo32(T a, T b) { return _mm256_unpacklo_epi32(a, b); }
  static T unpackhi32(T a, T b) { return _mm256_unpackhi_epi32(a, b); }
  static T unpacklo64(T a, T b) { return _mm256_unpacklo_epi64(a, b); }
  static T unpackhi64(T a, T b) { return _mm256_unpackhi_epi64(a, b); }
  static T madd16(T a, T b) { return _mm256_madd_epi16(a, b); }
  static T add32(T a, T b) { return _mm256_add_epi32(a, b); }
  static T srai32(T a, int n) { return _mm256_srai_epi32(a, n); }
  static T packs32(T a, T b) { return _mm256_packs_epi32(a, b); }
  static T packus16(T a, T b) { return _mm256_packus_epi16(a, b); }

  // One row of resample_cols, P tap pairs.
  template <int P>
  static void hrow(const uint8_t* row, uint8_t* out, int64_t ow, int64_t nb, const int32_t* hbase,
                   const uint8_t* hctl, const int16_t* hwt) {
    const __m256i half = _mm256_set1_epi32(1 << (M::WEIGHT_BITS - 1));
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t x0 = std::min<int64_t>(32 * b, ow - 32);
      const int32_t* bs = hbase + b * 8;
      const uint8_t* ctl = hctl + b * P * 4 * 32;
      const int16_t* wt = hwt + b * P * 4 * 16;
      __m256i acc[4];
      for (int q = 0; q < 4; ++q) {
        const __m256i win = _mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)(row + bs[2 * q]))),
            _mm_loadu_si128((const __m128i*)(row + bs[2 * q + 1])), 1);
        __m256i a = half;
        for (int p = 0; p < P; ++p) {
          const __m256i c = _mm256_loadu_si256((const __m256i*)(ctl + (p * 4 + q) * 32));
          const __m256i w = _mm256_loadu_si256((const __m256i*)(wt + (p * 4 + q) * 16));
          a = _mm256_add_epi32(a, _mm256_madd_epi16(_mm256_shuffle_epi8(win, c), w));
        }
        acc[q] = _mm256_srai_epi32(a, M::WEIGHT_BITS);
      }
      // acc[q] = outputs x0 + 8q .. + 7 in order; values >= 0, saturation = the clamp
      const __m256i pk = _mm256_packus_epi16(_mm256_packs_epi32(acc[0], acc[1]), _mm256_packs_epi32(acc[2], acc[3]));
      _mm256_storeu_si256((__m256i*)(out + x0), _mm256_permutevar8x32_epi32(pk, perm));
    }
  }

  // The horizontal pass straight from the rows of the crop (no transposes):
  //   tmp[(c*ch + y) * ow + x] = round_weighted(sum_k w[x*K + k] * crop[c][y][start[x] + k]).
  // Each 16-byte lane computes 4 consecutive outputs from one 16-byte window of the row: pshufb
  // places the (pixel 2p, pixel 2p + 1) pairs of the 4 outputs as int16 pairs, pmaddwd applies
  // the weight pairs. Returns false (nothing done) when a window cannot hold 4 outputs' taps
  // (strong downscaling) or ow < 32; the caller then takes the transposing path.
  static bool resample_cols(const Source& src, int64_t top, int64_t left, int64_t ch, int64_t cw, const Taps& t,
                            int64_t ow, uint8_t* tmp, Scratch& s) {
    if (ow < 32) return false;
    const int64_t K = t.K, P = (K + 1) / 2, nb = (ow + 31) / 32;
    s.hbase.resize(nb * 8);
    s.hctl.resize(nb * P * 4 * 32);
    s.hwt.resize(nb * P * 4 * 16);
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t x0 = std::min<int64_t>(32 * b, ow - 32);  // last block overlaps
      for (int64_t g = 0; g < 8; ++g) {
        int64_t base = INT64_MAX;
        for (int64_t i = 0; i < 4; ++i) base = std::min<int64_t>(base, t.start[x0 + 4 * g + i]);
        for (int64_t i = 0; i < 4; ++i)
          if (t.start[x0 + 4 * g + i] - base + 2 * P > 16) return false;
        s.hbase[b * 8 + g] = (int32_t)base;
        const int64_t q = g / 2, half = g % 2;  // vector q holds groups 2q (low lane) and 2q+1
        for (int64_t p = 0; p < P; ++p) {
          uint8_t* ctl = s.hctl.data() + ((b * P + p) * 4 + q) * 32 + 16 * half;
          int16_t* wt = s.hwt.data() + ((b * P + p) * 4 + q) * 16 + 8 * half;
          for (int64_t i = 0; i < 4; ++i) {
            const int64_t x = x0 + 4 * g + i, off = t.start[x] - base + 2 * p;
            ctl[4 * i + 0] = (uint8_t)off;
            ctl[4 * i + 1] = 0x80;  // zero high byte
            ctl[4 * i + 2] = (uint8_t)(off + 1);
            ctl[4 * i + 3] = 0x80;
            wt[2 * i + 0] = 2 * p < K ? t.w[x * K + 2 * p] : 0;
            wt[2 * i + 1] = 2 * p + 1 < K ? t.w[x * K + 2 * p + 1] : 0;
          }
        }
      }
    }
    const auto run = [&](const uint8_t* row, uint8_t* out) {
      switch (P) {  // 2P <= 16 taps
        case 1: hrow<1>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        case 2: hrow<2>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        case 3: hrow<3>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        case 4: hrow<4>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        case 5: hrow<5>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        case 6: hrow<6>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        case 7: hrow<7>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
        default: hrow<8>(row, out, ow, nb, s.hbase.data(), s.hctl.data(), s.hwt.data()); break;
      }
    };
    const int64_t pad = cw + 16;  // windows may read up to 15 bytes past the crop row
    if (src.px == 1) {
      s.rowpad.assign(pad, 0);
      for (int64_t c = 0; c < 3; ++c)
        for (int64_t y = 0; y < ch; ++y) {
          const uint8_t* row = src.p + c * src.sc + (top + y) * src.sh + left;
          if (row + pad > src.end) {  // past the view's last byte: read a zero-padded copy
            std::memcpy(s.rowpad.data(), row, cw);
            row = s.rowpad.data();
          }
          run(row, tmp + (c * ch + y) * ow);
        }
    } else {  // interleaved: each crop row split into three zero-padded channel rows first
      s.rowpad.assign(3 * pad, 0);
      uint8_t* r0 = s.rowpad.data();
      for (int64_t y = 0; y < ch; ++y) {
        deinterleave(src.p + (top + y) * src.sh + left * src.px, cw, src.px, r0, r0 + pad, r0 + 2 * pad);
        for (int64_t c = 0; c < 3; ++c) run(r0 + c * pad, tmp + (c * ch + y) * ow);
      }
    }
    return true;
  }

  // x[i] = lut[x[i]] with dword gathers from a widened copy of the table, 32 bytes a step.
  static void apply_lut(uint8_t* x, int64_t n, const uint8_t* lut) {
    alignas(32) int32_t t[256];
    for (int v = 0; v < 256; ++v) t[v] = lut[v];
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
      const __m256i v = _mm256_loadu_si256((const __m256i*)(x + i));
      const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
      const __m256i g0 = _mm256_i32gather_epi32(t, _mm256_cvtepu8_epi32(lo), 4);
      const __m256i g1 = _mm256_i32gather_epi32(t, _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)), 4);
      const __m256i g2 = _mm256_i32gather_epi32(t, _mm256_cvtepu8_epi32(hi), 4);
      const __m256i g3 = _mm256_i32gather_epi32(t, _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8)), 4);
      const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(g0, g1), _mm256_packus_epi32(g2, g3));
      _mm256_storeu_si256((__m256i*)(x + i), _mm256_permutevar8x32_epi32(p, perm));
    }
    apply_lut_scalar(x + i, n - i, lut);
  }

  // out[c * n + x] = ix[x] >= 0 ? in[c * n + ix[x]] : fill[c] for x < a multiple of 32, c < 3;
  // returns how many x it did. Dword gathers read 4 bytes: planes 0 and 1 read forward
  // (in + c*n + ix .. + 3 stays inside the 3n buffer), plane 2 reads backward (from ix - 3)
  // and keeps the top byte, so no byte outside [in, in + 3n) is touched (n >= 32 here).
  static int64_t gather_row(const uint8_t* in, int64_t n, const int32_t* ix, int64_t w, uint8_t* out,
                            const int32_t* fill) {
    if (n < 32) return 0;
    const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    const __m256i lowbyte = _mm256_set1_epi32(0xFF);
    int64_t x = 0;
    for (; x + 32 <= w; x += 32) {
      __m256i idx[4], mask[4];
      for (int k = 0; k < 4; ++k) {
        idx[k] = _mm256_loadu_si256((const __m256i*)(ix + x + 8 * k));
        mask[k] = _mm256_cmpgt_epi32(idx[k], _mm256_set1_epi32(-1));
      }
      for (int c = 0; c < 3; ++c) {
        const int* base = (const int*)(in + c * n - (c == 2 ? 3 : 0));
        const __m256i fv = _mm256_set1_epi32(c == 2 ? fill[c] << 24 : fill[c]);
        __m256i g[4];
        for (int k = 0; k < 4; ++k) {
          g[k] = _mm256_mask_i32gather_epi32(fv, base, idx[k], mask[k], 1);
          g[k] = c == 2 ? _mm256_srli_epi32(g[k], 24) : _mm256_and_si256(g[k], lowbyte);
        }
        const __m256i p = _mm256_packus_epi16(_mm256_packus_epi32(g[0], g[1]), _mm256_packus_epi32(g[2], g[3]));
        _mm256_storeu_si256((__m256i*)(out + c * n + x), _mm256_permutevar8x32_epi32(p, perm));
      }
    }
    return x;
  }
};
#include "replay_cpu_kernels.h"
}  // namespace k_avx2
#pragma GCC pop_options
#endif  // RD_AVX2

// ------------------------------------------------------------------ dispatch

using AugmentViewFn = void (*)(const Source&, const int32_t*, int64_t, int64_t, uint8_t*, Scratch&);

bool use_avx2() {
#if RD_AVX2
  static const bool supported = __builtin_cpu_supports("avx2");
  const char* isa = std::getenv("REINFORCED_DATA_CPU_ISA");
  return supported && !(isa && (std::strcmp(isa, "baseline") == 0 || std::strcmp(isa, "sse2") == 0));
#else
  return false;
#endif
}

AugmentViewFn augment_view_fn() {
#if RD_AVX2
  if (use_avx2()) return &k_avx2::augment_view<>;
#endif
  return &k_base::augment_view<>;
}

// ------------------------------------------------------------------ ops

// How the kernels read images[b] (see Source): straight from its memory when it is planar
// or channels-last interleaved; other layouts (e.g. a column-strided slice) are read from a
// contiguous copy, kept alive in `copy`.
Source describe_source(const at::Tensor& img, at::Tensor& copy) {
  Source s;
  s.H = img.size(1);
  s.W = img.size(2);
  int64_t sc = img.stride(0), sh = img.stride(1), sw = img.stride(2);
  if (s.W == 1) sw = 1;  // only column 0 is read: any stride reads the same bytes
  const bool planar = sw == 1;
  const bool interleaved = sc == 1 && (sw == 3 || sw == 4);
  const at::Tensor& t = planar || interleaved ? img : (copy = img.contiguous());
  if (!(planar || interleaved)) sc = t.stride(0), sh = t.stride(1), sw = 1;
  s.p = t.data_ptr<uint8_t>();
  s.sc = sc;
  s.sh = sh;
  s.px = sw;
  s.end = s.p + 2 * sc + (s.H - 1) * sh + (s.W - 1) * sw + 1;  // strides are >= 0
  return s;
}

at::Tensor augment_cpu(at::TensorList images, const at::Tensor& args, int64_t out_h, int64_t out_w) {
  const at::Tensor rows = args.contiguous();
  check_augment(std::vector<at::Tensor>(images.begin(), images.end()), rows, out_h, out_w);
  const int64_t B = rows.size(0);
  std::vector<at::Tensor> copies(B);
  std::vector<Source> srcs(B);
  for (int64_t b = 0; b < B; ++b) srcs[b] = describe_source(images[b], copies[b]);
  at::Tensor out = at::empty({B, 3, out_h, out_w}, rows.options().dtype(at::kByte));
  if (B == 0) return out;
  const int32_t* a = rows.data_ptr<int32_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  const int64_t size = 3 * out_h * out_w;
  const AugmentViewFn fn = augment_view_fn();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    Scratch s;
    for (int64_t b = begin; b < end; ++b) fn(srcs[b], a + b * args::NUM_ARGS, out_h, out_w, o + b * size, s);
  });
  return out;
}

at::Tensor mix_cpu(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& args) {
  const at::Tensor rows = args.contiguous();
  check_mix(a_in, b_in, rows);
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
  at::Tensor out = at::empty(a.sizes(), a.options());
  if (out.numel() == 0) return out;
  const int32_t* r = rows.data_ptr<int32_t>();
  const uint8_t* pa = a.data_ptr<uint8_t>();
  const uint8_t* pb = b.data_ptr<uint8_t>();
  uint8_t* po = out.data_ptr<uint8_t>();
  const int64_t C = a.size(1), H = a.size(2), W = a.size(3), size = C * H * W;
  const bool avx2 = use_avx2();
  at::parallel_for(0, a.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
#if RD_AVX2
      if (avx2) {
        k_avx2::mix_view(pa + i * size, pb + i * size, po + i * size, C, H, W, r + i * args::NUM_MIX_ARGS);
        continue;
      }
#endif
      (void)avx2;
      k_base::mix_view(pa + i * size, pb + i * size, po + i * size, C, H, W, r + i * args::NUM_MIX_ARGS);
    }
  });
  return out;
}

// out[b, c, y, x] = lut[c, x[b, c, y, x]]: a copy of table entries, so the element type only
// matters through its size (any floating dtype, bit-exact).
template <typename T>
void normalize_plane(const uint8_t* src, const T* l, T* o, int64_t HW) {
  int64_t i = 0;
  for (; i + 8 <= HW; i += 8) {
    uint64_t v;
    std::memcpy(&v, src + i, 8);
    for (int k = 0; k < 8; ++k) o[i + k] = l[(v >> (8 * k)) & 255];
  }
  for (; i < HW; ++i) o[i] = l[src[i]];
}

#if RD_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")
// 4-byte elements with AVX2 gathers; streaming (non-temporal) stores when the output is much
// larger than the caches, so that the stores do not first read the lines they overwrite.
void normalize_plane_avx2(const uint8_t* src, const uint32_t* l, uint32_t* o, int64_t HW, bool stream) {
  int64_t i = 0;
  if (stream)
    for (; i < HW && ((uintptr_t)(o + i) & 31) != 0; ++i) o[i] = l[src[i]];
  for (; i + 32 <= HW; i += 32) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)(src + i));
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    const __m256i idx[4] = {_mm256_cvtepu8_epi32(lo), _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
                            _mm256_cvtepu8_epi32(hi), _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))};
    for (int k = 0; k < 4; ++k) {
      const __m256i g = _mm256_i32gather_epi32((const int*)l, idx[k], 4);
      if (stream) _mm256_stream_si256((__m256i*)(o + i + 8 * k), g);
      else _mm256_storeu_si256((__m256i*)(o + i + 8 * k), g);
    }
  }
  for (; i < HW; ++i) o[i] = l[src[i]];
}
#pragma GCC pop_options
#endif

template <typename T>
void normalize_impl(const uint8_t* x, const T* lut, T* out, int64_t B, int64_t C, int64_t HW, bool cl) {
  if (!cl) {
#if RD_AVX2
    const bool avx2 = sizeof(T) == 4 && use_avx2();
    const bool stream = avx2 && B * C * HW * (int64_t)sizeof(T) >= (int64_t(16) << 20);
#endif
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
#if RD_AVX2
        if (avx2) {
          normalize_plane_avx2(x + bc * HW, (const uint32_t*)lut + (bc % C) * 256, (uint32_t*)out + bc * HW, HW,
                               stream);
          continue;
        }
#endif
        normalize_plane(x + bc * HW, lut + (bc % C) * 256, out + bc * HW, HW);
      }
#if RD_AVX2
      if (stream) _mm_sfence();  // streaming stores are weakly ordered: each thread drains its own
#endif
    });
    return;
  }
  // channels last: out[b, y, x, c], written in order
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t* src = x + b * C * HW;
      T* o = out + b * C * HW;
      if (C == 3) {
        for (int64_t i = 0; i < HW; ++i) {
          o[3 * i] = lut[src[i]];
          o[3 * i + 1] = lut[256 + src[HW + i]];
          o[3 * i + 2] = lut[512 + src[2 * HW + i]];
        }
      } else {
        for (int64_t i = 0; i < HW; ++i)
          for (int64_t c = 0; c < C; ++c) o[i * C + c] = lut[c * 256 + src[c * HW + i]];
      }
    }
  });
}

at::Tensor normalize_cpu(const at::Tensor& x_in, const at::Tensor& lut_in, bool channels_last) {
  check_normalize(x_in, lut_in);
  const at::Tensor x = x_in.contiguous(), lut = lut_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor out = at::empty(x.sizes(), lut.options(),
                             channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const uint8_t* px = x.data_ptr<uint8_t>();
  switch (lut.element_size()) {
    case 1: normalize_impl(px, (const uint8_t*)lut.const_data_ptr(), (uint8_t*)out.data_ptr(), B, C, HW, channels_last); break;
    case 2: normalize_impl(px, (const uint16_t*)lut.const_data_ptr(), (uint16_t*)out.data_ptr(), B, C, HW, channels_last); break;
    case 4: normalize_impl(px, (const uint32_t*)lut.const_data_ptr(), (uint32_t*)out.data_ptr(), B, C, HW, channels_last); break;
    case 8: normalize_impl(px, (const uint64_t*)lut.const_data_ptr(), (uint64_t*)out.data_ptr(), B, C, HW, channels_last); break;
    default: TORCH_CHECK(false, "normalize: unsupported lut dtype ", lut.scalar_type());
  }
  return out;
}

}  // namespace
}  // namespace reinforced_data

TORCH_LIBRARY_IMPL(reinforced_data, CPU, m) {
  m.impl("augment", &reinforced_data::augment_cpu);
  m.impl("mix", &reinforced_data::mix_cpu);
  m.impl("normalize", &reinforced_data::normalize_cpu);
}
