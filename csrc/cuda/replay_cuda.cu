// CUDA kernels of reinforced_data::augment, ::mix, ::augmix and ::normalize.
//
// Every output byte is computed with the integer formulas of replay_math.h, the same
// ones the C++ CPU kernel uses, so the two backends and reinforced_data/_reference.py
// agree bit for bit. No float arithmetic anywhere (the build also passes --fmad=false).
//
// augment runs as a short sequence of batch-wide kernels, each a 1-D grid of
// B x T blocks (T blocks per view, every block walking its view's pixels with a stride):
//
//   weights   one thread per (view, output column or row): tap range and normalised
//             fixed-point triangle weights, into a global table
//   hpass     crop + horizontal resize (+ flip) into a uint8 [3, crop_h, out_w]
//             intermediate per view
//   vpass     vertical resize into buffer 0 (or straight into the output, with erasing,
//             when no view has RandAugment ops)
//   per RandAugment step s (s < max num_ops):
//     stats   (only when some view's op s needs whole-image state) per-view gray sum
//             (Contrast), per-channel min/max (AutoContrast) or histograms (Equalize),
//             reduced in shared memory, then one global atomic per block and value
//     op      applies op s, reading buffer s % 2 and writing buffer (s + 1) % 2, or the
//             output (with erasing) for the last step; views with fewer ops copy
//
// Per-view geometry (source pointer and strides, scratch offsets) and the validated
// argument row travel in one ViewDesc per view, built on the host from the CPU copy of
// args that replay_checks.h validated, and copied to the device in one go.
//
// RD_EMULATE: the kernels and launchers below use only a small part of CUDA
// (__syncthreads, static __shared__ arrays, atomicAdd/atomicMax, threadIdx/blockIdx,
// RD_LAUNCH), so a host test harness can compile this file with RD_EMULATE defined and
// shims for those names, and run the very same code on CPU tensors. Without RD_EMULATE
// (the normal build) this is an ordinary CUDA translation unit.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/util/Exception.h>

#ifndef RD_EMULATE
// c10/cuda only: ATen/cuda/CUDAContext.h would pull in the cuBLAS/cuSPARSE headers,
// which a bare CUDA toolkit need not have.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "replay_args.h"
#include "replay_checks.h"
#include "replay_math.h"

#ifndef RD_EMULATE
#define RD_LAUNCH(kernel, blocks, threads, ...)                                            \
  do {                                                                                     \
    kernel<<<(blocks), (threads), 0, c10::cuda::getCurrentCUDAStream()>>>(__VA_ARGS__);    \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                        \
  } while (0)
#endif

// Pixels per thread a launch aims at; the emulation harness lowers it to get many
// blocks per view out of small test images.
#ifndef RD_ITEMS_PER_THREAD
#define RD_ITEMS_PER_THREAD 4
#endif

namespace reinforced_data {
namespace cuda {
namespace {

using namespace args;
namespace rm = ::reinforced_data::math;

constexpr int kThreads = 256;  // every kernel; the Equalize LUT scan needs exactly 256
static_assert(kThreads == 256, "the Equalize LUT is built with one thread per histogram bin");
constexpr int64_t kMaxBlocksPerView = 1024;

// Per-view statistics of one RandAugment step, int32 slots:
//   [0, 2)  gray sum (uint64, 8-byte aligned)       Contrast
//   [2, 5)  per-channel max                           AutoContrast
//   [5, 8)  per-channel 255 - min (so zero-init works with atomicMax)
//   [8, 8 + 3*256)  per-channel histograms            Equalize
constexpr int kStatSum = 0, kStatMax = 2, kStatNegMin = 5, kStatHist = 8;
constexpr int64_t kStatsStride = kStatHist + 3 * 256;
static_assert((kStatsStride * 4) % 8 == 0, "the uint64 gray sum must stay 8-byte aligned");

struct ViewDesc {
  int64_t src;             // address of the source image [3, H, W] (uint8)
  int64_t sc, sh, sw;      // its strides, in elements
  int64_t tmp_off;         // offset of this view's [3, crop_h, out_w] intermediate
  int64_t wx_off, wy_off;  // offsets (int32 elements) of its column / row weight tables
  int32_t kx, ky;          // weight slots per output column / row
  int32_t H, W;            // the source's height and width (crop pixels outside read PAD_FILL)
  int32_t row[NUM_ARGS];   // the validated argument row
};
static_assert(sizeof(ViewDesc) == 72 + 4 * NUM_ARGS, "ViewDesc layout");

// Upper bound on the slots tap_range's taps need for n inputs -> m outputs with `filter`: the
// inputs with non-zero weight (|(2j+1)m - (2i+1)n| < R, R = 2s triangle, 4s bicubic, s = max(n, m))
// span less than R/m + 1, and tap_range's range starts at most two before them; never more than n.
int32_t max_taps(int64_t n, int64_t m, int filter) {
  const int64_t R = rm::filter_support(n, m, filter);
  return (int32_t)std::min<int64_t>(n, (R + m - 1) / m + 3);
}

int blocks_per_view(int64_t work, int64_t B) {
  const int64_t per_block = (int64_t)kThreads * RD_ITEMS_PER_THREAD;
  int64_t t = (work + per_block - 1) / per_block;
  t = std::min(t, kMaxBlocksPerView);
  t = std::min(t, (int64_t)std::numeric_limits<int32_t>::max() / std::max<int64_t>(B, 1));
  return (int)std::max<int64_t>(t, 1);
}

__device__ __forceinline__ int step_op(const int32_t* r, int step) {
  return step < r[NUM_OPS] ? r[OPS + step * OP_STRIDE] : (int)IDENTITY;
}

// Writes one output position's three channels; in the last stage, erasing overrides them.
__device__ __forceinline__ void store_px(uint8_t* o, int plane, int p, int y, int x, int oh, int ow, int v0,
                                         int v1, int v2, bool final_stage, const int32_t* r) {
  if (final_stage && r[ERASE_H] > 0 && r[ERASE_W] > 0 && y >= r[ERASE_TOP] && y < r[ERASE_TOP] + r[ERASE_H] &&
      x >= r[ERASE_LEFT] && x < r[ERASE_LEFT] + r[ERASE_W]) {
    if (r[ERASE_VALUE] < 0) {
      const uint32_t seed = (uint32_t)r[ERASE_SEED];
      v0 = rm::erase_noise(seed, rm::erase_key(0, y, x, oh, ow));
      v1 = rm::erase_noise(seed, rm::erase_key(1, y, x, oh, ow));
      v2 = rm::erase_noise(seed, rm::erase_key(2, y, x, oh, ow));
    } else {
      v0 = r[ERASE_VALUE];
      v1 = r[ERASE_VALUE + 1];
      v2 = r[ERASE_VALUE + 2];
    }
  }
  o[p] = (uint8_t)v0;
  o[plane + p] = (uint8_t)v1;
  o[2 * plane + p] = (uint8_t)v2;
}

// ------------------------------------------------------------------ resize
// meta: [B][out_w + out_h][2] (first tap, tap count): columns first, then rows.
// w: per view, the column weights [kx][out_w] at wx_off and the row weights [ky][out_h]
// at wy_off (tap-major, so that a warp's neighbouring outputs read neighbouring slots).
__global__ void __launch_bounds__(kThreads)
    weights_kernel(const ViewDesc* __restrict__ descs, int32_t* __restrict__ meta, int32_t* __restrict__ w,
                   int64_t B, int oh, int ow) {
  const int64_t idx = (int64_t)blockIdx.x * kThreads + threadIdx.x;
  const int64_t per_view = (int64_t)ow + oh;
  if (idx >= B * per_view) return;
  const int64_t b = idx / per_view;
  const int64_t i = idx - b * per_view;
  const ViewDesc& d = descs[b];
  const bool horizontal = i < ow;
  const int64_t n = horizontal ? d.row[CROP_W] : d.row[CROP_H];
  const int64_t m = horizontal ? ow : oh;
  const int64_t o = horizontal ? i : i - ow;
  const int64_t slots = horizontal ? d.kx : d.ky;
  const int filter = d.row[RESIZE_FILTER];
  int32_t* wt = w + (horizontal ? d.wx_off : d.wy_off) + o;  // slot k at wt[k * m]
  int64_t first = 0, count = 0;
  rm::tap_range(o, n, m, filter, &first, &count);
  if (count > slots) count = slots;  // only zero-weight taps past the support (max_taps); keeps writes in bounds
  int64_t total = 0;
  for (int64_t k = 0; k < count; ++k) total += rm::raw_weight(o, first + k, n, m, filter);
  for (int64_t k = 0; k < count; ++k)
    wt[k * m] = rm::norm_weight(rm::raw_weight(o, first + k, n, m, filter), total);
  meta[idx * 2] = (int32_t)first;
  meta[idx * 2 + 1] = (int32_t)count;
}

// tmp[c, y, x] = round(sum_k crop[c, y, first + k] * wx[x', k]), x' = flip ? out_w-1-x : x;
// crop pixels outside the source image read PAD_FILL.
__global__ void __launch_bounds__(kThreads)
    hpass_kernel(const ViewDesc* __restrict__ descs, const int32_t* __restrict__ meta,
                 const int32_t* __restrict__ w, uint8_t* __restrict__ tmp, int oh, int ow, int T) {
  const int64_t b = blockIdx.x / T;
  const int t = blockIdx.x - (int)(b * T);
  const ViewDesc& d = descs[b];
  const int64_t top = d.row[CROP_TOP], left = d.row[CROP_LEFT];
  const int ch = d.row[CROP_H];
  const bool flip = d.row[FLIP] != 0;
  const int64_t sc = d.sc, sh = d.sh, sw = d.sw;
  const uint8_t* __restrict__ src = reinterpret_cast<const uint8_t*>(d.src);
  uint8_t* __restrict__ dst = tmp + d.tmp_off;
  const int32_t* __restrict__ vm = meta + b * ((int64_t)ow + oh) * 2;
  const int32_t* __restrict__ wx = w + d.wx_off;
  const int64_t H = d.H, W = d.W;
  const int32_t f0 = d.row[PAD_FILL], f1 = d.row[PAD_FILL + 1], f2 = d.row[PAD_FILL + 2];
  const bool inside = top >= 0 && left >= 0 && top + ch <= H && left + d.row[CROP_W] <= W;
  const int plane = ch * ow;
  for (int p = t * kThreads + threadIdx.x; p < plane; p += T * kThreads) {
    const int y = p / ow;
    const int x = p - y * ow;
    const int wi = flip ? ow - 1 - x : x;
    const int first = vm[2 * wi], count = vm[2 * wi + 1];
    const int32_t* __restrict__ wk = wx + wi;  // tap k at wk[k * ow]
    // |acc| < 255 * max(2^14 + count, 1.3 * 2^14) < 2^31 (bicubic weights: sum |w| < 1.3 * 2^14): int32 is exact
    int32_t a0 = 0, a1 = 0, a2 = 0;
    if (inside) {
      const uint8_t* __restrict__ q = src + (top + y) * sh + (left + first) * sw;
      for (int k = 0; k < count; ++k) {
        const int32_t wv = wk[k * ow];
        const uint8_t* __restrict__ qk = q + k * sw;
        a0 += (int32_t)qk[0] * wv;
        a1 += (int32_t)qk[sc] * wv;
        a2 += (int32_t)qk[2 * sc] * wv;
      }
    } else {  // a padded crop: taps outside the image read PAD_FILL
      const int64_t sy = top + y;
      const bool row_in = sy >= 0 && sy < H;
      for (int k = 0; k < count; ++k) {
        const int32_t wv = wk[k * ow];
        const int64_t sx = left + first + k;
        int32_t v0 = f0, v1 = f1, v2 = f2;
        if (row_in && sx >= 0 && sx < W) {
          const uint8_t* __restrict__ qk = src + sy * sh + sx * sw;
          v0 = qk[0];
          v1 = qk[sc];
          v2 = qk[2 * sc];
        }
        a0 += v0 * wv;
        a1 += v1 * wv;
        a2 += v2 * wv;
      }
    }
    dst[p] = rm::round_weighted(a0);
    dst[plane + p] = rm::round_weighted(a1);
    dst[2 * plane + p] = rm::round_weighted(a2);
  }
}

// out[c, y, x] = round(sum_k tmp[c, first + k, x] * wy[y, k])
__global__ void __launch_bounds__(kThreads)
    vpass_kernel(const ViewDesc* __restrict__ descs, const int32_t* __restrict__ meta,
                 const int32_t* __restrict__ w, const uint8_t* __restrict__ tmp, uint8_t* __restrict__ out,
                 int oh, int ow, int T, bool final_stage) {
  const int64_t b = blockIdx.x / T;
  const int t = blockIdx.x - (int)(b * T);
  const ViewDesc& d = descs[b];
  const int32_t* r = d.row;
  const int ch = r[CROP_H];
  const uint8_t* __restrict__ src = tmp + d.tmp_off;
  const int src_plane = ch * ow;
  const int32_t* __restrict__ vm = meta + (b * ((int64_t)ow + oh) + ow) * 2;
  const int32_t* __restrict__ wy = w + d.wy_off;
  const int plane = oh * ow;
  uint8_t* o = out + b * 3 * (int64_t)plane;
  for (int p = t * kThreads + threadIdx.x; p < plane; p += T * kThreads) {
    const int y = p / ow;
    const int x = p - y * ow;
    const int first = vm[2 * y], count = vm[2 * y + 1];
    const int32_t* __restrict__ wk = wy + y;  // tap k at wk[k * oh]
    const uint8_t* __restrict__ q = src + first * ow + x;
    int32_t a0 = 0, a1 = 0, a2 = 0;
    for (int k = 0; k < count; ++k) {
      const int32_t wv = wk[k * oh];
      const uint8_t* __restrict__ qk = q + k * ow;
      a0 += (int32_t)qk[0] * wv;
      a1 += (int32_t)qk[src_plane] * wv;
      a2 += (int32_t)qk[2 * src_plane] * wv;
    }
    store_px(o, plane, p, y, x, oh, ow, rm::round_weighted(a0), rm::round_weighted(a1), rm::round_weighted(a2),
             final_stage, r);
  }
}

// ------------------------------------------------------------------ RandAugment
// Whole-image state of step `step` for the views whose op there needs it. stats points
// at this step's [B][kStatsStride] slice, zeroed by the host.
__global__ void __launch_bounds__(kThreads)
    stats_kernel(const ViewDesc* __restrict__ descs, const uint8_t* __restrict__ src, int32_t* __restrict__ stats,
                 int step, int oh, int ow, int T) {
  const int64_t b = blockIdx.x / T;
  const int t = blockIdx.x - (int)(b * T);
  const int op = step_op(descs[b].row, step);
  if (op != CONTRAST && op != AUTOCONTRAST && op != EQUALIZE) return;  // uniform over the block
  const int plane = oh * ow;
  const uint8_t* __restrict__ s = src + b * 3 * (int64_t)plane;
  int32_t* st = stats + b * kStatsStride;
  const int tid = threadIdx.x;
  if (op == CONTRAST) {
    __shared__ unsigned long long red_sum[kThreads];
    unsigned long long sum = 0;
    for (int p = t * kThreads + tid; p < plane; p += T * kThreads)
      sum += (unsigned long long)rm::gray(s[p], s[plane + p], s[2 * plane + p]);
    red_sum[tid] = sum;
    __syncthreads();
    for (int k = kThreads / 2; k > 0; k >>= 1) {
      if (tid < k) red_sum[tid] += red_sum[tid + k];
      __syncthreads();
    }
    if (tid == 0 && red_sum[0] != 0)
      atomicAdd(reinterpret_cast<unsigned long long*>(st + kStatSum), red_sum[0]);
  } else if (op == AUTOCONTRAST) {
    __shared__ int32_t red_mm[6][kThreads];
    int32_t m[6] = {0, 0, 0, 0, 0, 0};  // max v_c, then max 255 - v_c
    for (int p = t * kThreads + tid; p < plane; p += T * kThreads) {
      for (int c = 0; c < 3; ++c) {
        const int32_t v = s[c * plane + p];
        m[c] = max(m[c], v);
        m[3 + c] = max(m[3 + c], 255 - v);
      }
    }
    for (int i = 0; i < 6; ++i) red_mm[i][tid] = m[i];
    __syncthreads();
    for (int k = kThreads / 2; k > 0; k >>= 1) {
      if (tid < k)
        for (int i = 0; i < 6; ++i) red_mm[i][tid] = max(red_mm[i][tid], red_mm[i][tid + k]);
      __syncthreads();
    }
    if (tid < 6) {
      const int32_t v = red_mm[tid][0];
      if (v != 0) atomicMax(st + (tid < 3 ? kStatMax + tid : kStatNegMin + tid - 3), v);
    }
  } else {  // EQUALIZE
    __shared__ unsigned int hist[3 * 256];
    for (int i = tid; i < 3 * 256; i += kThreads) hist[i] = 0;
    __syncthreads();
    for (int p = t * kThreads + tid; p < plane; p += T * kThreads) {
      atomicAdd(&hist[s[p]], 1u);
      atomicAdd(&hist[256 + s[plane + p]], 1u);
      atomicAdd(&hist[512 + s[2 * plane + p]], 1u);
    }
    __syncthreads();
    for (int i = tid; i < 3 * 256; i += kThreads)
      if (hist[i] != 0) atomicAdd(reinterpret_cast<unsigned int*>(st + kStatHist + i), hist[i]);
  }
}

// Applies step `step` of every view (a copy where the view has no op there), reading
// src and writing dst; the last step also erases.
__global__ void __launch_bounds__(kThreads)
    op_kernel(const ViewDesc* __restrict__ descs, const uint8_t* __restrict__ src, uint8_t* __restrict__ dst,
              const int32_t* __restrict__ stats, int step, int oh, int ow, int T, bool final_stage) {
  const int64_t b = blockIdx.x / T;
  const int t = blockIdx.x - (int)(b * T);
  const int32_t* r = descs[b].row;
  const int op = step_op(r, step);
  const int32_t* prm = r + OPS + step * OP_STRIDE + 1;  // only read when op != IDENTITY
  const int plane = oh * ow;
  const uint8_t* __restrict__ s = src + b * 3 * (int64_t)plane;
  uint8_t* __restrict__ o = dst + b * 3 * (int64_t)plane;
  const int tid = threadIdx.x;

  __shared__ int32_t lut[3][256];  // Equalize
  __shared__ int32_t hsh[3][256];
  __shared__ int32_t cum[2][3][256];
  __shared__ int32_t last_bin[3];
  if (op == EQUALIZE) {  // uniform over the block: every thread reaches every barrier
    const int32_t* hist = stats + b * kStatsStride + kStatHist;
    if (tid < 3) last_bin[tid] = 0;
    for (int c = 0; c < 3; ++c) {
      hsh[c][tid] = hist[c * 256 + tid];
      cum[0][c][tid] = hsh[c][tid];
    }
    __syncthreads();
    for (int c = 0; c < 3; ++c)
      if (hsh[c][tid] != 0) atomicMax(&last_bin[c], tid);
    int cur = 0;  // inclusive scan (Hillis-Steele, double-buffered)
    for (int off = 1; off < 256; off <<= 1) {
      for (int c = 0; c < 3; ++c)
        cum[1 - cur][c][tid] = cum[cur][c][tid] + (tid >= off ? cum[cur][c][tid - off] : 0);
      __syncthreads();
      cur = 1 - cur;
    }
    for (int c = 0; c < 3; ++c) {
      const int32_t step_c = (int32_t)rm::equalize_step(plane, hsh[c][last_bin[c]]);
      if (step_c == 0)
        lut[c][tid] = tid;  // channel unchanged
      else
        lut[c][tid] = tid == 0 ? 0 : rm::equalize_entry(cum[cur][c][tid - 1], step_c);
    }
    __syncthreads();
  }
  int64_t mean_q16 = 0;
  int32_t lo[3] = {0, 0, 0}, hi[3] = {0, 0, 0};
  if (op == CONTRAST) {
    const int32_t* st = stats + b * kStatsStride;
    const int64_t sum = (int64_t) * reinterpret_cast<const unsigned long long*>(st + kStatSum);
    mean_q16 = rm::contrast_mean_q16(sum, plane);
  } else if (op == AUTOCONTRAST) {
    const int32_t* st = stats + b * kStatsStride;
    for (int c = 0; c < 3; ++c) {
      hi[c] = st[kStatMax + c];
      lo[c] = 255 - st[kStatNegMin + c];
    }
  }

  for (int p = t * kThreads + tid; p < plane; p += T * kThreads) {
    const int y = p / ow;
    const int x = p - y * ow;
    int v0 = s[p], v1 = s[plane + p], v2 = s[2 * plane + p];
    switch (op) {
      case SHEAR_X: case SHEAR_Y: case TRANSLATE_X: case TRANSLATE_Y: case ROTATE: {
        const int64_t x2 = 2 * x + 1 - ow, y2 = 2 * y + 1 - oh;
        const int interp = prm[OP_INTERP - 1];
        if (interp != INTERP_NEAREST) {  // bilinear / bicubic: replay_math.h's interp_taps, interp_round
          const int64_t nx = (int64_t)prm[0] * x2 + (int64_t)prm[1] * y2 + prm[2];
          const int64_t ny = (int64_t)prm[3] * x2 + (int64_t)prm[4] * y2 + prm[5];
          int64_t x0, y0;
          int32_t wx[4], wy[4];
          const int nt = rm::interp_taps(interp, nx, &x0, wx);
          rm::interp_taps(interp, ny, &y0, wy);
          int32_t acc[3] = {0, 0, 0};  // exact in int32 (see interp_round)
          for (int j = 0; j < nt; ++j) {
            const int64_t sy = y0 + j;
            int32_t rs[3] = {0, 0, 0};
            for (int i = 0; i < nt; ++i) {
              const int64_t sx = x0 + i;
              if (sx >= 0 && sx < ow && sy >= 0 && sy < oh) {
                const int q = (int)sy * ow + (int)sx;
                rs[0] += wx[i] * (int32_t)s[q];
                rs[1] += wx[i] * (int32_t)s[plane + q];
                rs[2] += wx[i] * (int32_t)s[2 * plane + q];
              } else {
                rs[0] += wx[i] * r[FILL];
                rs[1] += wx[i] * r[FILL + 1];
                rs[2] += wx[i] * r[FILL + 2];
              }
            }
            for (int c = 0; c < 3; ++c) acc[c] += wy[j] * rs[c];
          }
          v0 = rm::interp_round(acc[0]);
          v1 = rm::interp_round(acc[1]);
          v2 = rm::interp_round(acc[2]);
          break;
        }
        const int64_t sx = rm::affine_src(prm[0], prm[1], prm[2], x2, y2);
        const int64_t sy = rm::affine_src(prm[3], prm[4], prm[5], x2, y2);
        if (sx >= 0 && sx < ow && sy >= 0 && sy < oh) {
          const int q = (int)sy * ow + (int)sx;
          v0 = s[q];
          v1 = s[plane + q];
          v2 = s[2 * plane + q];
        } else {
          v0 = r[FILL];
          v1 = r[FILL + 1];
          v2 = r[FILL + 2];
        }
        break;
      }
      case BRIGHTNESS:
        v0 = rm::brightness(v0, prm[0]);
        v1 = rm::brightness(v1, prm[0]);
        v2 = rm::brightness(v2, prm[0]);
        break;
      case COLOR: {
        const int64_t g = rm::gray(v0, v1, v2);
        v0 = rm::blend_q16(v0, g, prm[0]);
        v1 = rm::blend_q16(v1, g, prm[0]);
        v2 = rm::blend_q16(v2, g, prm[0]);
        break;
      }
      case CONTRAST:
        v0 = rm::contrast(v0, mean_q16, prm[0]);
        v1 = rm::contrast(v1, mean_q16, prm[0]);
        v2 = rm::contrast(v2, mean_q16, prm[0]);
        break;
      case SHARPNESS:
        if (y > 0 && y < oh - 1 && x > 0 && x < ow - 1) {  // the border stays as it is
          int32_t acc[3];
          for (int c = 0; c < 3; ++c) {
            const uint8_t* __restrict__ q = s + c * plane + p;
            acc[c] = (int32_t)q[-ow - 1] + q[-ow] + q[-ow + 1] + q[-1] + 5 * (int32_t)q[0] + q[1] + q[ow - 1] +
                     q[ow] + q[ow + 1];
          }
          v0 = rm::sharpness(v0, acc[0], prm[0]);
          v1 = rm::sharpness(v1, acc[1], prm[0]);
          v2 = rm::sharpness(v2, acc[2], prm[0]);
        }
        break;
      case POSTERIZE:
        v0 &= prm[0];
        v1 &= prm[0];
        v2 &= prm[0];
        break;
      case SOLARIZE:
        v0 = rm::solarize(v0, prm[0]);
        v1 = rm::solarize(v1, prm[0]);
        v2 = rm::solarize(v2, prm[0]);
        break;
      case AUTOCONTRAST:
        v0 = rm::autocontrast(v0, lo[0], hi[0]);
        v1 = rm::autocontrast(v1, lo[1], hi[1]);
        v2 = rm::autocontrast(v2, lo[2], hi[2]);
        break;
      case EQUALIZE:
        v0 = lut[0][v0];
        v1 = lut[1][v1];
        v2 = lut[2][v2];
        break;
      case INVERT:
        v0 = rm::invert(v0);
        v1 = rm::invert(v1);
        v2 = rm::invert(v2);
        break;
      case SOLARIZE_ADD:
        v0 = rm::solarize_add(v0, prm[0], prm[1]);
        v1 = rm::solarize_add(v1, prm[0], prm[1]);
        v2 = rm::solarize_add(v2, prm[0], prm[1]);
        break;
      case HUE: {
        int h[3];
        rm::hue(v0, v1, v2, prm[0], h);
        v0 = h[0];
        v1 = h[1];
        v2 = h[2];
        break;
      }
      case GRAYSCALE: {
        const int g = (int)rm::grayscale(v0, v1, v2, prm[0]);
        v0 = g;
        v1 = g;
        v2 = g;
        break;
      }
      case GAUSSIAN_BLUR: {  // the CPU's two separable passes, evaluated per output pixel (same integers)
        const int R = rm::blur_radius(prm);
        int32_t acc[3] = {0, 0, 0};
        for (int dy = -R; dy <= R; ++dy) {
          const int sy = (int)rm::reflect_index(y + dy, oh);
          const int32_t ty = rm::blur_tap(prm, dy < 0 ? -dy : dy);
          for (int c = 0; c < 3; ++c) {
            const uint8_t* __restrict__ q = s + c * plane + sy * ow;
            int32_t hsum = 0;
            for (int dx = -R; dx <= R; ++dx)
              hsum += rm::blur_tap(prm, dx < 0 ? -dx : dx) * (int32_t)q[rm::reflect_index(x + dx, ow)];
            acc[c] += ty * rm::blur_mid(hsum);
          }
        }
        v0 = rm::blur_out(acc[0]);
        v1 = rm::blur_out(acc[1]);
        v2 = rm::blur_out(acc[2]);
        break;
      }
      default:  // IDENTITY
        break;
    }
    store_px(o, plane, p, y, x, oh, ow, v0, v1, v2, final_stage, r);
  }
}

// ------------------------------------------------------------------ mix / normalize
__global__ void __launch_bounds__(kThreads)
    mix_kernel(const uint8_t* __restrict__ a, const uint8_t* __restrict__ bb, uint8_t* __restrict__ out,
               const int32_t* __restrict__ rows, int64_t C, int64_t H, int64_t W, int T) {
  const int64_t v = blockIdx.x / T;
  const int t = blockIdx.x - (int)(v * T);
  const int32_t* r = rows + v * NUM_MIX_ARGS;
  const int mode = r[MIX_MODE];
  const uint32_t q = (uint32_t)r[MIX_LAM];
  const int64_t top = r[MIX_BOX], left = r[MIX_BOX + 1], bh = r[MIX_BOX + 2], bw = r[MIX_BOX + 3];
  const int64_t hw = H * W, n = C * hw, base = v * n;
  for (int64_t e = (int64_t)t * kThreads + threadIdx.x; e < n; e += (int64_t)T * kThreads) {
    const int64_t i = base + e;
    uint8_t res = a[i];
    if (mode == 1 || mode == 3) res = rm::mixup(a[i], bb[i], q);  // MixUp (mode 3: then CutMix)
    if (mode == 2 || mode == 3) {
      const int64_t pix = e % hw;
      const int64_t y = pix / W, x = pix - y * W;
      if (y >= top && y < top + bh && x >= left && x < left + bw) res = bb[i];
    }
    out[i] = res;
  }
}

// One thread a byte of a view's crop; chain k's byte lies k * n further in the view's chains.
__global__ void __launch_bounds__(kThreads)
    augmix_kernel(const uint8_t* __restrict__ orig, const uint8_t* __restrict__ chains, uint8_t* __restrict__ out,
                  const int32_t* __restrict__ rows, int64_t n, int64_t K, int T) {
  const int64_t v = blockIdx.x / T;
  const int t = blockIdx.x - (int)(v * T);
  const int32_t* r = rows + v * NUM_AUGMIX_ARGS;
  for (int64_t e = (int64_t)t * kThreads + threadIdx.x; e < n; e += (int64_t)T * kThreads) {
    out[v * n + e] = rm::augmix_px(orig[v * n + e], chains + v * K * n + e, n, r);
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kThreads)
    normalize_kernel(const uint8_t* __restrict__ x, const scalar_t* __restrict__ lut, scalar_t* __restrict__ out,
                     int64_t C, int64_t hw, int T, bool channels_last) {
  const int64_t v = blockIdx.x / T;
  const int t = blockIdx.x - (int)(v * T);
  const uint8_t* __restrict__ xv = x + v * C * hw;
  scalar_t* __restrict__ ov = out + v * C * hw;
  for (int64_t p = (int64_t)t * kThreads + threadIdx.x; p < hw; p += (int64_t)T * kThreads) {
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t val = lut[c * 256 + xv[c * hw + p]];
      if (channels_last)
        ov[p * C + c] = val;
      else
        ov[c * hw + p] = val;
    }
  }
}

// ------------------------------------------------------------------ launchers
bool needs_stats(int op) { return op == CONTRAST || op == AUTOCONTRAST || op == EQUALIZE; }

// images and args_cpu already validated (check_augment); images live on `device`.
at::Tensor augment_impl(const std::vector<at::Tensor>& images, const at::Tensor& args_cpu, int64_t out_h,
                        int64_t out_w, at::Device device) {
  const int64_t B = args_cpu.size(0);
  const auto bytes = at::TensorOptions().dtype(at::kByte).device(device);
  at::Tensor out = at::empty({B, 3, out_h, out_w}, bytes);
  if (B == 0) return out;
  TORCH_CHECK(B <= std::numeric_limits<int32_t>::max() / 2, "augment: too many views (", B, ")");
  const int oh = (int)out_h, ow = (int)out_w;
  const at::Tensor rows = args_cpu.contiguous();
  const int32_t* a = rows.data_ptr<int32_t>();

  at::Tensor desc_host = at::empty({B * (int64_t)sizeof(ViewDesc)},
                                   at::TensorOptions().dtype(at::kByte).pinned_memory(device.is_cuda()));
  ViewDesc* descs = reinterpret_cast<ViewDesc*>(desc_host.data_ptr<uint8_t>());
  int64_t tmp_total = 0, w_total = 0, max_crop_h = 0;
  int num_steps = 0;
  bool step_stats[MAX_OPS] = {false, false, false, false};
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor& img = images[b];
    ViewDesc& d = descs[b];
    std::memset(&d, 0, sizeof(d));
    std::memcpy(d.row, a + b * NUM_ARGS, sizeof(d.row));
    d.src = (int64_t) reinterpret_cast<intptr_t>(img.data_ptr<uint8_t>());
    d.sc = img.stride(0);
    d.sh = img.stride(1);
    d.sw = img.stride(2);
    // (a crop reaches at most 2 * 65535 pixels from the origin: clamping larger sizes changes nothing)
    d.H = (int32_t)std::min<int64_t>(img.size(1), std::numeric_limits<int32_t>::max());
    d.W = (int32_t)std::min<int64_t>(img.size(2), std::numeric_limits<int32_t>::max());
    const int64_t ch = d.row[CROP_H], cw = d.row[CROP_W];
    d.tmp_off = tmp_total;
    tmp_total += 3 * ch * out_w;
    d.kx = max_taps(cw, out_w, d.row[RESIZE_FILTER]);
    d.ky = max_taps(ch, out_h, d.row[RESIZE_FILTER]);
    d.wx_off = w_total;
    w_total += out_w * d.kx;
    d.wy_off = w_total;
    w_total += out_h * d.ky;
    max_crop_h = std::max(max_crop_h, ch);
    num_steps = std::max(num_steps, (int)d.row[NUM_OPS]);
    for (int s = 0; s < d.row[NUM_OPS]; ++s) step_stats[s] |= needs_stats(d.row[OPS + s * OP_STRIDE]);
  }
  const at::Tensor desc_dev = desc_host.to(device, at::kByte, /*non_blocking=*/true);
  const ViewDesc* dd = reinterpret_cast<const ViewDesc*>(desc_dev.data_ptr<uint8_t>());

  // resize weights: meta (first, count) per column and row, then the weight slots
  const int64_t meta_size = B * (out_w + out_h) * 2;
  at::Tensor wtab = at::empty({meta_size + w_total}, at::TensorOptions().dtype(at::kInt).device(device));
  int32_t* meta = wtab.data_ptr<int32_t>();
  int32_t* wts = meta + meta_size;
  const int64_t nw = B * (out_w + out_h);
  RD_LAUNCH(weights_kernel, (unsigned)((nw + kThreads - 1) / kThreads), kThreads, dd, meta, wts, B, oh, ow);

  at::Tensor tmp = at::empty({tmp_total}, bytes);
  const int th = blocks_per_view(max_crop_h * out_w, B);
  RD_LAUNCH(hpass_kernel, (unsigned)(B * th), kThreads, dd, meta, wts, tmp.data_ptr<uint8_t>(), oh, ow, th);

  const int tv = blocks_per_view(out_h * out_w, B);
  at::Tensor buf[2];
  if (num_steps >= 1) buf[0] = at::empty({B, 3, out_h, out_w}, bytes);
  if (num_steps >= 2) buf[1] = at::empty({B, 3, out_h, out_w}, bytes);
  uint8_t* first_dst = num_steps == 0 ? out.data_ptr<uint8_t>() : buf[0].data_ptr<uint8_t>();
  RD_LAUNCH(vpass_kernel, (unsigned)(B * tv), kThreads, dd, meta, wts, tmp.data_ptr<uint8_t>(), first_dst, oh, ow,
            tv, num_steps == 0);

  // stats of every step that needs them, zeroed at once: [num_steps][B][kStatsStride]
  bool any_stats = false;
  for (int s = 0; s < num_steps; ++s) any_stats |= step_stats[s];
  at::Tensor stats;
  if (any_stats) stats = at::zeros({num_steps * B * kStatsStride}, at::TensorOptions().dtype(at::kInt).device(device));
  for (int s = 0; s < num_steps; ++s) {
    const uint8_t* src = buf[s % 2].data_ptr<uint8_t>();
    const bool last = s == num_steps - 1;
    uint8_t* dst = last ? out.data_ptr<uint8_t>() : buf[(s + 1) % 2].data_ptr<uint8_t>();
    // read by the kernels only for views whose op at step s has stats (then step_stats[s])
    int32_t* st = step_stats[s] ? stats.data_ptr<int32_t>() + s * B * kStatsStride : nullptr;
    if (step_stats[s]) RD_LAUNCH(stats_kernel, (unsigned)(B * tv), kThreads, dd, src, st, s, oh, ow, tv);
    RD_LAUNCH(op_kernel, (unsigned)(B * tv), kThreads, dd, src, dst, st, s, oh, ow, tv, last);
  }
  return out;
}

// a, b, args_cpu validated (check_mix); args_dev: the same rows on a's device.
at::Tensor mix_impl(const at::Tensor& a, const at::Tensor& b, const at::Tensor& args_dev) {
  at::Tensor result = at::empty_like(a);
  if (a.numel() == 0) return result;
  const at::Tensor ac = a.contiguous(), bc = b.contiguous(), rows = args_dev.contiguous();
  at::Tensor out = result.is_contiguous() ? result : at::empty_like(ac, at::MemoryFormat::Contiguous);
  const int64_t B = a.size(0), C = a.size(1), H = a.size(2), W = a.size(3);
  const int T = blocks_per_view(C * H * W, B);
  RD_LAUNCH(mix_kernel, (unsigned)(B * T), kThreads, ac.data_ptr<uint8_t>(), bc.data_ptr<uint8_t>(),
            out.data_ptr<uint8_t>(), rows.data_ptr<int32_t>(), C, H, W, T);
  if (!out.is_same(result)) result.copy_(out);
  return result;
}

// orig, chains, args_cpu validated (check_augmix); args_dev: the same rows on orig's device.
at::Tensor augmix_impl(const at::Tensor& orig, const at::Tensor& chains, const at::Tensor& args_dev) {
  at::Tensor out = at::empty(orig.sizes(), orig.options());
  if (orig.numel() == 0) return out;
  const at::Tensor oc = orig.contiguous(), cc = chains.contiguous(), rows = args_dev.contiguous();
  const int64_t B = orig.size(0), n = orig.size(1) * orig.size(2) * orig.size(3);
  const int T = blocks_per_view(n, B);
  RD_LAUNCH(augmix_kernel, (unsigned)(B * T), kThreads, oc.data_ptr<uint8_t>(), cc.data_ptr<uint8_t>(),
            out.data_ptr<uint8_t>(), rows.data_ptr<int32_t>(), n, chains.size(1), T);
  return out;
}

// x, lut validated (check_normalize).
at::Tensor normalize_impl(const at::Tensor& x, const at::Tensor& lut, bool channels_last) {
  at::Tensor out = at::empty(x.sizes(), lut.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                                                  : at::MemoryFormat::Contiguous));
  if (x.numel() == 0) return out;
  const at::Tensor xc = x.contiguous(), lc = lut.contiguous();
  const int64_t B = x.size(0), C = x.size(1), hw = x.size(2) * x.size(3);
  const int T = blocks_per_view(hw, B);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, lut.scalar_type(), "reinforced_data_normalize", [&] {
    RD_LAUNCH(normalize_kernel<scalar_t>, (unsigned)(B * T), kThreads, xc.data_ptr<uint8_t>(),
              lc.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), C, hw, T, channels_last);
  });
  return out;
}

#ifndef RD_EMULATE
// ------------------------------------------------------------------ op entry points
void check_on(const at::Tensor& t, const at::Device& device, const char* what, const char* owner) {
  TORCH_CHECK(t.is_cuda() && t.device() == device, what, " is on ", t.device(), " but must be on ", device,
              " (the CUDA device of ", owner, ")");
}

// args may be on the CPU (saves a copy, and no host-device synchronisation: they are
// validated on the host anyway, and the per-view table reaches the device from pinned memory)
// or on the images' CUDA device (then copied to the host first, which waits for the stream).
at::Tensor augment_cuda(at::TensorList images, const at::Tensor& args, int64_t out_h, int64_t out_w) {
  TORCH_CHECK(!images.empty() || args.is_cuda(), "augment: got no images and CPU args: nothing says which GPU");
  const at::Device device = images.empty() ? args.device() : images[0].device();
  std::vector<at::Tensor> imgs(images.begin(), images.end());
  for (size_t b = 0; b < imgs.size(); ++b) {
    TORCH_CHECK(imgs[b].is_cuda() && imgs[b].device() == device, "augment: images[", b, "] is on ",
                imgs[b].device(), " but must be on ", device, " (the device of images[0])");
  }
  TORCH_CHECK(args.is_cpu() || args.device() == device, "augment: args is on ", args.device(),
              " but must be on the CPU or on ", device, " (the images' device)");
  c10::cuda::CUDAGuard guard(device);
  const at::Tensor args_cpu = args.to(at::kCPU).contiguous();
  check_augment(imgs, args_cpu, out_h, out_w);
  return augment_impl(imgs, args_cpu, out_h, out_w, device);
}

// Rows validated on the host, on their way to `device` without blocking the host: copied into
// a fresh pinned block (so a later change to the caller's tensor cannot reach the kernel) and
// from there asynchronously on the current stream; the caching host allocator keeps the block
// until that copy has run. A copy from pageable memory would make the host wait for the stream.
at::Tensor rows_to_device(const at::Tensor& rows_cpu, at::Device device) {
  at::Tensor pinned = at::empty(rows_cpu.sizes(), rows_cpu.options().pinned_memory(true));
  pinned.copy_(rows_cpu);
  return pinned.to(device, at::kInt, /*non_blocking=*/true);
}

// args may be on the CPU (the fast path, and what replay() passes: validated there, then
// copied as above) or on a's device (then copied to the host for validation, which waits for
// the stream: a host-device synchronisation).
at::Tensor mix_cuda(const at::Tensor& a, const at::Tensor& b, const at::Tensor& args) {
  TORCH_CHECK(a.is_cuda(), "mix: a must be a CUDA tensor, got ", a.device());
  check_on(b, a.device(), "mix: b", "a");
  TORCH_CHECK(args.is_cpu() || args.device() == a.device(), "mix: args is on ", args.device(),
              " but must be on the CPU or on ", a.device(), " (the device of a)");
  c10::cuda::CUDAGuard guard(a.device());
  if (args.is_cpu()) {
    const at::Tensor args_cpu = args.contiguous();
    check_mix(a, b, args_cpu);
    return mix_impl(a, b, rows_to_device(args_cpu, a.device()));
  }
  check_mix(a, b, args.to(at::kCPU).contiguous());
  return mix_impl(a, b, args);
}

// args as mix_cuda's: on the CPU (validated, then copied without blocking) or on orig's device.
at::Tensor augmix_cuda(const at::Tensor& orig, const at::Tensor& chains, const at::Tensor& args) {
  TORCH_CHECK(orig.is_cuda(), "augmix: orig must be a CUDA tensor, got ", orig.device());
  check_on(chains, orig.device(), "augmix: chains", "orig");
  TORCH_CHECK(args.is_cpu() || args.device() == orig.device(), "augmix: args is on ", args.device(),
              " but must be on the CPU or on ", orig.device(), " (the device of orig)");
  c10::cuda::CUDAGuard guard(orig.device());
  if (args.is_cpu()) {
    const at::Tensor args_cpu = args.contiguous();
    check_augmix(orig, chains, args_cpu);
    return augmix_impl(orig, chains, rows_to_device(args_cpu, orig.device()));
  }
  check_augmix(orig, chains, args.to(at::kCPU).contiguous());
  return augmix_impl(orig, chains, args);
}

at::Tensor normalize_cuda(const at::Tensor& x, const at::Tensor& lut, bool channels_last) {
  TORCH_CHECK(x.is_cuda(), "normalize: x must be a CUDA tensor, got ", x.device());
  check_normalize(x, lut);
  c10::cuda::CUDAGuard guard(x.device());
  return normalize_impl(x, lut, channels_last);
}
#endif  // RD_EMULATE

}  // namespace
}  // namespace cuda
}  // namespace reinforced_data

#ifndef RD_EMULATE
TORCH_LIBRARY_IMPL(reinforced_data, CUDA, m) {
  m.impl("augment", &reinforced_data::cuda::augment_cuda);
  m.impl("mix", &reinforced_data::cuda::mix_cuda);
  m.impl("augmix", &reinforced_data::cuda::augmix_cuda);
  m.impl("normalize", &reinforced_data::cuda::normalize_cuda);
}
#endif
