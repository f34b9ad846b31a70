// The integer formulas of replay, shared by the CPU and CUDA kernels so that both
// compute every output byte with the same arithmetic. reinforced_data/_reference.py is
// the same specification written with torch tensor ops; docs/replay.md states it in prose.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define RD_HD __host__ __device__ __forceinline__
#else
#define RD_HD inline
#endif

namespace reinforced_data {
namespace math {

constexpr int WEIGHT_BITS = 14;
constexpr int64_t Q16 = 1 << 16;

RD_HD int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }
RD_HD uint8_t clamp_u8(int64_t v) { return (uint8_t)clamp64(v, 0, 255); }

// Unnormalised triangle-filter weight of input j (of n) for output i (of m); s = max(n, m).
RD_HD int64_t raw_weight(int64_t i, int64_t j, int64_t n, int64_t m) {
  const int64_t s = n > m ? n : m;
  int64_t d = (2 * j + 1) * m - (2 * i + 1) * n;
  if (d < 0) d = -d;
  const int64_t w = 2 * s - d;
  return w > 0 ? w : 0;
}

// Inputs [*first, *first + *count) carry non-zero weight for output i.
RD_HD void tap_range(int64_t i, int64_t n, int64_t m, int64_t* first, int64_t* count) {
  const int64_t s = n > m ? n : m;
  // |(2j+1)m - (2i+1)n| < 2s  <=>  (2i+1)n - 2s < (2j+1)m < (2i+1)n + 2s
  int64_t lo = ((2 * i + 1) * n - 2 * s) / (2 * m) - 1;  // may undershoot by one: harmless
  int64_t hi = ((2 * i + 1) * n + 2 * s) / (2 * m) + 1;
  if (lo < 0) lo = 0;
  if (hi > n - 1) hi = n - 1;
  *first = lo;
  *count = hi - lo + 1;
}

// Normalised fixed-point weight: round(raw * 2^14 / total), half up.
RD_HD int32_t norm_weight(int64_t raw, int64_t total) {
  return (int32_t)(((raw << WEIGHT_BITS) + total / 2) / total);
}

RD_HD uint8_t round_weighted(int64_t acc) {
  return clamp_u8((acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS);
}

// floor(0.2989 r + 0.587 g + 0.114 b), Q16 coefficients
RD_HD int64_t gray(int64_t r, int64_t g, int64_t b) { return (19589 * r + 38470 * g + 7471 * b) >> 16; }

// clamp(floor(x*f + o*(1-f))) with f in Q16
RD_HD uint8_t blend_q16(int64_t x, int64_t other, int64_t f) {
  return (uint8_t)(clamp64(x * f + other * (Q16 - f), 0, (256LL << 16) - 1) >> 16);
}

RD_HD uint8_t brightness(int64_t x, int64_t f) { return clamp_u8((x * f) >> 16); }

// The image's mean gray in Q16, rounded half up: round(sum of gray(r, g, b) * 2^16 / n) over n pixels.
RD_HD int64_t contrast_mean_q16(int64_t gray_sum, int64_t n) { return (gray_sum * Q16 + n / 2) / n; }

// contrast blend with the image's mean gray in Q16: result in Q32, floored
RD_HD uint8_t contrast(int64_t x, int64_t mean_q16, int64_t f) {
  return (uint8_t)(clamp64(x * f * Q16 + mean_q16 * (Q16 - f), 0, (256LL << 32) - 1) >> 32);
}

// sharpness: s is the 3x3 sum with centre weight 5 (of 13)
RD_HD uint8_t sharpness(int64_t x, int64_t s, int64_t f) {
  const int64_t blur = (2 * s + 13) / 26;
  return (uint8_t)(clamp64(x * Q16 + (Q16 - f) * (blur - x), 0, (256LL << 16) - 1) >> 16);
}

RD_HD uint8_t solarize(int64_t x, int64_t threshold) { return (uint8_t)(x >= threshold ? 255 - x : x); }

RD_HD uint8_t autocontrast(int64_t x, int64_t lo, int64_t hi) {
  return hi > lo ? (uint8_t)((x - lo) * 255 / (hi - lo)) : (uint8_t)x;
}

// Equalize of one channel of n pixels whose highest value occurs last_count times: the
// step of its lookup table (0: the channel stays as it is) ...
RD_HD int64_t equalize_step(int64_t n, int64_t last_count) { return (n - last_count) / 255; }

// ... and the table's entry for a value v >= 1 (entry 0 is 0), from the number of pixels
// below v: clamp(round(below / step)), halves rounded up by step / 2 (floored).
RD_HD uint8_t equalize_entry(int64_t below, int64_t step) { return clamp_u8((below + step / 2) / step); }

// Nearest source coordinate of output (x, y) under the Q16 inverse map (a0, a1, t):
// floor((a0*(2x+1-W) + a1*(2y+1-H) + t + 2^16) / 2^17). Arithmetic shift = floor.
RD_HD int64_t affine_src(int64_t a0, int64_t a1, int64_t t, int64_t x2, int64_t y2) {
  return (a0 * x2 + a1 * y2 + t + Q16) >> 17;
}

// The key of pixel (c, y, x) of an H x W view for erase_noise: its index in [3, H, W],
// ((c*H + y)*W + x), as uint32 (below 3 * 4096^2: it fits).
RD_HD uint32_t erase_key(int64_t c, int64_t y, int64_t x, int64_t h, int64_t w) {
  return (uint32_t)((c * h + y) * w + x);
}

// Erase noise: murmur3 finaliser of erase_key(c, y, x) ^ (seed * 0x9E3779B9), low byte.
RD_HD uint8_t erase_noise(uint32_t seed, uint32_t key) {
  uint32_t k = key ^ (seed * 0x9E3779B9u);
  k ^= k >> 16;
  k *= 0x85EBCA6Bu;
  k ^= k >> 13;
  k *= 0xC2B2AE35u;
  k ^= k >> 16;
  return (uint8_t)(k & 0xFF);
}

// MixUp of bytes a and b with lambda q / 255 (q in [0, 255]): round(a*q/255 + b*(255-q)/255), halves up.
// In uint32: a*q + b*(255 - q) + 127 <= 255 * 255 + 127.
RD_HD uint8_t mixup(uint32_t a, uint32_t b, uint32_t q) { return (uint8_t)((a * q + b * (255 - q) + 127) / 255); }

}  // namespace math
}  // namespace reinforced_data
