// Data the CPU kernels work on: a source image as they read it (Source), resampling taps
// (Taps) and the per-thread scratch buffers (Scratch), plus two scalar byte loops that both
// ISA builds use. Part of replay_cpu.cpp (one translation unit): everything here has
// internal linkage.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

#include "replay_math.h"

namespace reinforced_data {
namespace {

namespace M = math;

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
  std::vector<int32_t> blur_row;   // [out_w + 2 * radius]: GaussianBlur's reflected row
  std::vector<uint16_t> blur_mid;  // [out_h, out_w]: GaussianBlur's horizontal pass (Q8)
  std::vector<int32_t> blur_acc;   // [out_w]: GaussianBlur's vertical sums
  // AVX2 horizontal pass: per block of 32 outputs, 8 window starts and the shuffle controls
  // and weights of each tap pair
  std::vector<int32_t> hbase;
  std::vector<uint8_t> hctl;
  std::vector<int16_t> hwt;
  std::vector<uint8_t> rowpad;
  std::vector<uint8_t> padded;  // [3, ch, cw]: a crop reaching outside the image, padded
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

}  // namespace
}  // namespace reinforced_data
