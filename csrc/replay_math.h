// The integer formulas of replay, shared by the CPU and CUDA kernels so that both
// compute every output byte with the same arithmetic. reinforced_data/_reference.py is
// the same specification written with torch tensor ops; docs/replay.md states it in prose.
#pragma once

#include <cstdint>

#include "replay_args.h"

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

// floor(a / b) for b > 0 (C++ division truncates towards zero)
RD_HD int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

// Unnormalised resampling weight of input j (of n) for output i (of m). With s = max(n, m),
// d = |(2j+1)m - (2i+1)n| and D = 2s (the filter's unit support, widened by n/m when shrinking):
//   filter 0 (triangle): max(0, D - d)
//   filter 1 (bicubic, Keys a = -0.5, scaled by 2 D^2): floor((3d^3 - 5d^2 D + 2D^3) / D) for d < D,
//     floor((-d^3 + 5d^2 D - 8d D^2 + 4D^3) / D) for d < 2D, else 0 (may be negative).
// int64 is exact: d < 2D <= 4 * 65535 where the cubic terms are evaluated, so d^3 < 2^56.
RD_HD int64_t raw_weight(int64_t i, int64_t j, int64_t n, int64_t m, int filter) {
  const int64_t s = n > m ? n : m;
  int64_t d = (2 * j + 1) * m - (2 * i + 1) * n;
  if (d < 0) d = -d;
  const int64_t D = 2 * s;
  if (filter == 0) return d < D ? D - d : 0;
  if (d < D) return floor_div(3 * d * d * d - 5 * d * d * D + 2 * D * D * D, D);
  if (d < 2 * D) return floor_div(-d * d * d + 5 * d * d * D - 8 * d * D * D + 4 * D * D * D, D);
  return 0;
}

// Half-width of the filter's support in the units of d: 2s (triangle) or 4s (bicubic).
RD_HD int64_t filter_support(int64_t n, int64_t m, int filter) {
  const int64_t s = n > m ? n : m;
  return filter == 0 ? 2 * s : 4 * s;
}

// Inputs [*first, *first + *count) hold every input with a non-zero weight for output i.
RD_HD void tap_range(int64_t i, int64_t n, int64_t m, int filter, int64_t* first, int64_t* count) {
  const int64_t R = filter_support(n, m, filter);
  // |(2j+1)m - (2i+1)n| < R  <=>  (2i+1)n - R < (2j+1)m < (2i+1)n + R
  int64_t lo = ((2 * i + 1) * n - R) / (2 * m) - 1;  // may undershoot by one: harmless
  int64_t hi = ((2 * i + 1) * n + R) / (2 * m) + 1;
  if (lo < 0) lo = 0;
  if (hi > n - 1) hi = n - 1;
  *first = lo;
  *count = hi - lo + 1;
}

// Normalised fixed-point weight: floor((raw * 2^14 + floor(total / 2)) / total), total > 0;
// floored also for a negative raw (bicubic).
RD_HD int32_t norm_weight(int64_t raw, int64_t total) {
  return (int32_t)floor_div(raw * (1 << WEIGHT_BITS) + total / 2, total);
}

// Clamped (acc + 2^13) >> 14; the arithmetic shift floors a negative acc (bicubic weights).
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

RD_HD uint8_t invert(int64_t x) { return (uint8_t)(255 - x); }

// x < threshold ? clamp(x + add, 0, 255) : x
RD_HD uint8_t solarize_add(int64_t x, int64_t threshold, int64_t add) {
  return x < threshold ? clamp_u8(x + add) : (uint8_t)x;
}

// Hue shift (ColorJitter's hue) of one pixel by k / 65536 of a turn, |k| <= 32768: torchvision's
// adjust_hue (RGB -> HSV, h += k / 65536 mod 1, HSV -> RGB, float -> uint8 by floor(y * 255.999))
// evaluated exactly in integers. With M = max, m = min, C = M - m > 0, the hue times 6C is N in
// [0, 6C) (M == r: g - b; else M == g: 2C + b - r; else 4C + r - g; +6C if negative). The shifted
// hue in units of 1 / (6 * C * 2^16) of a turn is H = (N * 2^16 + 6kC) mod (6C * 2^16); its sector
// i = H div (C * 2^16) and R = H mod (C * 2^16) give the middle channel X = m + R / 2^16 (sectors
// 0, 2, 4: torchvision's t) or M - R / 2^16 (1, 3, 5: its q), output floor(X * 255999 / 255000);
// the largest channel stays M and the smallest m (both exact integers). Grey pixels (C = 0) stay.
RD_HD void hue(int64_t r, int64_t g, int64_t b, int64_t k, int* out) {
  const int64_t M = r > g ? (r > b ? r : b) : (g > b ? g : b);
  const int64_t m = r < g ? (r < b ? r : b) : (g < b ? g : b);
  const int64_t C = M - m;
  if (C == 0) {
    out[0] = (int)r;
    out[1] = (int)g;
    out[2] = (int)b;
    return;
  }
  int64_t N = M == r ? g - b : (M == g ? 2 * C + b - r : 4 * C + r - g);
  if (N < 0) N += 6 * C;
  const int64_t unit = C << 16, period = 6 * unit;
  int64_t H = (N << 16) + 6 * k * C;  // in [-period / 2, 1.5 period)
  if (H < 0) H += period;
  if (H >= period) H -= period;
  const int64_t i = (H >> 16) / C;  // = H div (C * 2^16)
  const int64_t R = H - i * unit;
  const int64_t X = (i & 1) ? (M << 16) - R : (m << 16) + R;  // the middle channel in Q16
  const int mid = (int)(X * 255999 / (255000LL << 16));
  const int hi = (int)M, lo = (int)m;
  switch (i) {  // torchvision's sector table: (v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)
    case 0: out[0] = hi; out[1] = mid; out[2] = lo; break;
    case 1: out[0] = mid; out[1] = hi; out[2] = lo; break;
    case 2: out[0] = lo; out[1] = hi; out[2] = mid; break;
    case 3: out[0] = lo; out[1] = mid; out[2] = hi; break;
    case 4: out[0] = mid; out[1] = lo; out[2] = hi; break;
    default: out[0] = hi; out[1] = lo; out[2] = mid; break;
  }
}

// Grayscale: formula 0 is gray() above (torchvision's rgb_to_grayscale), 1 PIL's convert("L"), exactly.
RD_HD int64_t gray_pil(int64_t r, int64_t g, int64_t b) { return (19595 * r + 38470 * g + 7471 * b + 32768) >> 16; }
RD_HD int64_t grayscale(int64_t r, int64_t g, int64_t b, int64_t formula) {
  return formula == 1 ? gray_pil(r, g, b) : gray(r, g, b);
}

// GaussianBlur: tap d (d = 0..11) of the packed parameters p[0..5], p[j] = t[2j] | t[2j+1] << 16.
RD_HD int32_t blur_tap(const int32_t* p, int d) { return (p[d >> 1] >> (16 * (d & 1))) & 0xFFFF; }
// The largest distance with a non-zero tap.
RD_HD int blur_radius(const int32_t* p) {
  int r = 0;
  for (int d = 1; d < 12; ++d)
    if (blur_tap(p, d) != 0) r = d;
  return r;
}
// torch's "reflect" padding index (the edge is not repeated), for any i; n >= 1.
RD_HD int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * (n - 1);
  i %= period;
  if (i < 0) i += period;
  return i >= n ? period - i : i;
}
// Horizontal pass sum (Q14, < 2^22) -> the Q8 intermediate; vertical sum (Q22) -> the output byte.
RD_HD int32_t blur_mid(int32_t hsum) { return (hsum + 32) >> 6; }
RD_HD uint8_t blur_out(int32_t vsum) { return clamp_u8((vsum + (1 << 21)) >> 22); }

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

// Interpolated sampling of the geometric ops. N = a*(2x+1-W) + b*(2y+1-H) + t (int64) is the
// source coordinate in units of 2^-17 pixel (pixel k's centre at k * 2^17). Returns the number of
// taps (2 bilinear, 4 bicubic), sets *first to the first tap's index and w to the taps' Q11
// weights (they sum to 2048):
//   bilinear: taps x0, x0 + 1 with (2048 - f, f), x0 = N >> 17, f = (N >> 6) & 2047;
//   bicubic (Keys a = -0.5): taps x0 - 1 .. x0 + 2 with, for S = 2048,
//     w[-1] = floor((-f^3 + 2f^2 S - f S^2) / 2S^2), w[1] = floor((-3f^3 + 4f^2 S + f S^2) / 2S^2),
//     w[2] = floor((f^3 - f^2 S) / 2S^2), w[0] = S - the other three.
RD_HD void cubic_q11(int64_t f, int32_t* w) {
  const int64_t S = 2048, S2 = 2 * S * S;
  const int64_t f2 = f * f, f3 = f2 * f;
  const int64_t wm1 = floor_div(-f3 + 2 * f2 * S - f * S * S, S2);
  const int64_t wp1 = floor_div(-3 * f3 + 4 * f2 * S + f * S * S, S2);
  const int64_t wp2 = floor_div(f3 - f2 * S, S2);
  w[0] = (int32_t)wm1;
  w[1] = (int32_t)(S - wm1 - wp1 - wp2);
  w[2] = (int32_t)wp1;
  w[3] = (int32_t)wp2;
}

RD_HD int interp_taps(int interp, int64_t N, int64_t* first, int32_t* w) {
  const int64_t x0 = N >> 17, f = (N >> 6) & 2047;  // arithmetic shifts: floor
  if (interp == 1) {
    *first = x0;
    w[0] = (int32_t)(2048 - f);
    w[1] = (int32_t)f;
    return 2;
  }
  *first = x0 - 1;
  cubic_q11(f, w);
  return 4;
}

// The interpolated value from acc = sum_j wy[j] * sum_i wx[i] * P(tap): Q22, rounded half up (floor
// of acc + 2^21 over 2^22, also for negative acc) and clamped. |acc| <= 255 * (sum |w|)^2 with
// sum |w| <= 2562 over the four bicubic taps (2048 bilinear): < 1.68e9, so with the rounding term
// it fits int32 (checked for every f in tests).
RD_HD uint8_t interp_round(int32_t acc) { return clamp_u8((acc + (1 << 21)) >> 22); }

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

// AugMix blend of one byte: x the crop's, a[k * stride] chain k's; r an augmix row (replay_args.h), weights Q15
// (B = 2^15). Mode 1 (timm): m = (sum w_k a_k) >> 15, then (o x + (B - o) m) >> 15. Mode 2 (torchvision):
// (o x + sum w_k a_k) >> 15. Mode 3 (timm blended): y = x, then y = ((B - w_k) y + w_k a_k) >> 15 per chain.
// Weights are checked to sum as the mode needs (check_augmix), so every sum is < 2^24 and the result <= 255.
RD_HD uint8_t augmix_px(uint32_t x, const uint8_t* a, int64_t stride, const int32_t* r) {
  const int mode = r[args::AM_MODE], n = r[args::AM_CHAINS];
  const uint32_t one = 1u << args::AUGMIX_BITS, o = (uint32_t)r[args::AM_ORIG];
  const int32_t* w = r + args::AM_WEIGHTS;
  if (mode == args::AUGMIX_BLENDED) {
    uint32_t y = x;
    for (int k = 0; k < n; ++k) y = ((one - (uint32_t)w[k]) * y + (uint32_t)w[k] * a[k * stride]) >> args::AUGMIX_BITS;
    return (uint8_t)y;
  }
  uint32_t s = 0;
  for (int k = 0; k < n; ++k) s += (uint32_t)w[k] * a[k * stride];
  if (mode == args::AUGMIX_TIMM) return (uint8_t)((o * x + (one - o) * (s >> args::AUGMIX_BITS)) >> args::AUGMIX_BITS);
  return (uint8_t)((o * x + s) >> args::AUGMIX_BITS);
}

}  // namespace math
}  // namespace reinforced_data
