// Per-view CPU kernels of reinforced_data::augment and ::mix.
//
// This file is included by replay_cpu.cpp once per instruction set: for the x86-64
// baseline (SSE2, or plain C++ on other architectures) and, on x86-64, a second time
// inside `#pragma GCC target("avx2")`, so that the hand-written vector code and every
// auto-vectorised loop get 256-bit versions; replay_cpu.cpp picks one at run time. The
// including namespace defines `struct V`, the vector traits (kSimd = false: no
// intrinsics). No include guard on purpose.
//
// Every output byte is the value the formulas of replay_math.h give (reinforced_data/
// _reference.py is the specification). Where a loop uses a cheaper but equal form, the
// comment says why it is equal; parameters outside the range where that holds take the
// scalar path that calls replay_math.h directly.

// ------------------------------------------------------------------------ resize

// dst[j * dstride + i] = src[i * sstride + j] for i < rows, j < cols.
template <class VV = V>
void transpose_u8(const uint8_t* src, int64_t sstride, int64_t rows, int64_t cols, uint8_t* dst,
                  int64_t dstride) {
  if constexpr (VV::kSimd) {
    constexpr int64_t L = VV::N / 16;  // 16x16 blocks side by side in one vector
    if (rows >= 16 && cols >= 16 * L) {
      // 16 rows x 16L columns per block; the last block of a row or column overlaps the
      // one before it (writing the same bytes twice is harmless).
      for (int64_t i0 = 0;; i0 += 16) {
        if (i0 + 16 > rows) i0 = rows - 16;
        for (int64_t j0 = 0;; j0 += 16 * L) {
          if (j0 + 16 * L > cols) j0 = cols - 16 * L;
          typename VV::T r[16], t[16];
          for (int k = 0; k < 16; ++k) r[k] = VV::loadu(src + (i0 + k) * sstride + j0);
          for (int k = 0; k < 8; ++k) {
            t[k] = VV::unpacklo8(r[2 * k], r[2 * k + 1]);
            t[k + 8] = VV::unpackhi8(r[2 * k], r[2 * k + 1]);
          }
          for (int k = 0; k < 8; ++k) {
            r[k] = VV::unpacklo16(t[2 * k], t[2 * k + 1]);
            r[k + 8] = VV::unpackhi16(t[2 * k], t[2 * k + 1]);
          }
          for (int k = 0; k < 8; ++k) {
            t[k] = VV::unpacklo32(r[2 * k], r[2 * k + 1]);
            t[k + 8] = VV::unpackhi32(r[2 * k], r[2 * k + 1]);
          }
          for (int k = 0; k < 8; ++k) {
            r[k] = VV::unpacklo64(t[2 * k], t[2 * k + 1]);
            r[k + 8] = VV::unpackhi64(t[2 * k], t[2 * k + 1]);
          }
          // r[k] holds (in each 16-byte lane l) column j0 + 16 l + bitreverse4(k).
          for (int k = 0; k < 16; ++k) {
            const int64_t j = ((k & 1) << 3) | ((k & 2) << 1) | ((k & 4) >> 1) | ((k & 8) >> 3);
            for (int64_t l = 0; l < L; ++l) VV::store_lane(dst + (j0 + 16 * l + j) * dstride + i0, r[k], (int)l);
          }
          if (j0 + 16 * L >= cols) break;
        }
        if (i0 + 16 >= rows) break;
      }
      return;
    }
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * dstride + i] = src[i * sstride + j];
}

template <typename Acc>
inline void resample_scalar(const uint8_t* src, int64_t sstride, int64_t x0, int64_t x1, const int16_t* w,
                            int64_t K, uint8_t* dst) {
  for (int64_t x = x0; x < x1; ++x) {
    Acc acc = 0;
    for (int64_t k = 0; k < K; ++k) acc += (Acc)w[k] * src[k * sstride + x];
    dst[x] = M::round_weighted(acc);
  }
}

// Resampling along the slow axis: for each output row o < m and x < width,
//   dst[o * dstride + x] = round_weighted(sum_k w[o*K + k] * src[(start[o] + k) * sstride + x]).
// int32 accumulation is exact: a row's triangle weights (>= 0) sum to at most 2^14 + K/2, and
// its bicubic weights (some negative) have sum |w| < 1.3 * 2^14 (replay_cpu_taps.h), so
// |acc| <= 255 * max(2^14 + K/2, 1.3 * 2^14) < 2^31 for K < 2^22 (larger K: int64 path).
template <class VV = V>
void resample_rows(const uint8_t* src, int64_t sstride, int64_t width, const Taps& t, int64_t m, uint8_t* dst,
                   int64_t dstride) {
  const int64_t K = t.K;
  if (K >= (int64_t(1) << 22)) {
    for (int64_t o = 0; o < m; ++o)
      resample_scalar<int64_t>(src + (int64_t)t.start[o] * sstride, sstride, 0, width, t.w.data() + o * K, K,
                               dst + o * dstride);
    return;
  }
  if constexpr (VV::kSimd) {
    if (width >= VV::N) {
      using T = typename VV::T;
      const int64_t P = K / 2;  // full pairs of taps; an odd last tap is paired with zero
      // pmaddwd multiplies int16 pairs (row 2p, row 2p+1) by (w[2p], w[2p+1]) and adds them:
      // pw[p] holds that weight pair, wv[p] the same broadcast (for up to 64 pairs)
      std::vector<int32_t> pw(P + 1);
      T wv[64];
      const bool cached = P + 1 <= 64;
      const T zero = VV::zero();
      const T half = VV::set1_32(1 << (M::WEIGHT_BITS - 1));
      for (int64_t o = 0; o < m; ++o) {
        const int16_t* w = t.w.data() + o * K;
        for (int64_t p = 0; p < P; ++p)
          pw[p] = (int32_t)(((uint32_t)(uint16_t)w[2 * p + 1] << 16) | (uint16_t)w[2 * p]);
        pw[P] = (K & 1) ? (int32_t)(uint16_t)w[K - 1] : 0;
        if (cached)
          for (int64_t p = 0; p <= P; ++p) wv[p] = VV::set1_32(pw[p]);
        const auto weight = [&](int64_t p) { return cached ? wv[p] : VV::set1_32(pw[p]); };
        const uint8_t* base = src + (int64_t)t.start[o] * sstride;
        uint8_t* out = dst + o * dstride;
        for (int64_t x = 0;; x += VV::N) {
          if (x + VV::N > width) x = width - VV::N;  // overlapping last block
          T a0 = zero, a1 = zero, a2 = zero, a3 = zero;
          const uint8_t* rp = base + x;
          for (int64_t p = 0; p < P; ++p, rp += 2 * sstride) {
            const T va = VV::loadu(rp), vb = VV::loadu(rp + sstride);
            const T lo = VV::unpacklo8(va, vb), hi = VV::unpackhi8(va, vb);
            const T wp = weight(p);
            a0 = VV::add32(a0, VV::madd16(VV::unpacklo8(lo, zero), wp));
            a1 = VV::add32(a1, VV::madd16(VV::unpackhi8(lo, zero), wp));
            a2 = VV::add32(a2, VV::madd16(VV::unpacklo8(hi, zero), wp));
            a3 = VV::add32(a3, VV::madd16(VV::unpackhi8(hi, zero), wp));
          }
          if (K & 1) {
            const T va = VV::loadu(rp);
            const T lo = VV::unpacklo8(va, zero), hi = VV::unpackhi8(va, zero);
            const T wp = weight(P);
            a0 = VV::add32(a0, VV::madd16(VV::unpacklo16(lo, zero), wp));
            a1 = VV::add32(a1, VV::madd16(VV::unpackhi16(lo, zero), wp));
            a2 = VV::add32(a2, VV::madd16(VV::unpacklo16(hi, zero), wp));
            a3 = VV::add32(a3, VV::madd16(VV::unpackhi16(hi, zero), wp));
          }
          a0 = VV::srai32(VV::add32(a0, half), M::WEIGHT_BITS);
          a1 = VV::srai32(VV::add32(a1, half), M::WEIGHT_BITS);
          a2 = VV::srai32(VV::add32(a2, half), M::WEIGHT_BITS);
          a3 = VV::srai32(VV::add32(a3, half), M::WEIGHT_BITS);
          // the arithmetic shift floors negative sums (bicubic) as round_weighted does; the values
          // lie in (-2^10, 2^10), so saturating to int16 (exact) and then to [0, 255] (packus) is
          // round_weighted's clamp (the unpack/pack pairs work within 16-byte lanes, so the byte
          // order is kept). pmaddwd multiplies the zero-extended pixels by signed int16 weights.
          VV::storeu(out + x, VV::packus16(VV::packs32(a0, a1), VV::packs32(a2, a3)));
          if (x + VV::N >= width) break;
        }
      }
      return;
    }
  }
  for (int64_t o = 0; o < m; ++o)
    resample_scalar<int32_t>(src + (int64_t)t.start[o] * sstride, sstride, 0, width, t.w.data() + o * K, K,
                             dst + o * dstride);
}

// Crop, resize (horizontal pass rounded to uint8, then vertical pass) and flip, into
// dst [3, oh, ow], with the row's resize filter. The horizontal pass runs straight on the rows
// where the ISA has byte shuffles (AVX2), else as a slow-axis pass over the transposed crop of all
// three channels ([cw, 3*ch]), so that both passes use the vectorised resample_rows. Both read the
// source in its own layout (Source): a planar crop is transposed channel by channel; an
// interleaved crop is one [ch, px*cw] byte matrix whose transpose has channel c of column x in
// row x*px + c, the [cw, 3*ch] layout itself when px == 3 (px == 4: one unused row per column,
// stepped over by the row stride px*ch).
// A crop box that reaches outside the image (or lies wholly outside it) is first copied into a
// planar [3, ch, cw] buffer holding PAD_FILL outside the image, which is then resized as a
// whole-image crop.
template <class VV = V>
void resize(const Source& src_in, const int32_t* r, int64_t oh, int64_t ow, uint8_t* dst, Scratch& s) {
  int64_t top = r[args::CROP_TOP], left = r[args::CROP_LEFT];
  const int64_t ch = r[args::CROP_H], cw = r[args::CROP_W];
  const int filter = r[args::RESIZE_FILTER];
  if (top == 0 && left == 0 && ch == src_in.H && cw == src_in.W && ch == oh && cw == ow && r[args::FLIP] == 0) {
    // An n -> n resize's weights are one tap of 2^14 per output (either filter): the image itself, copied
    // (AugMix's chains start from such identity crops of the view's crop).
    for (int c = 0; c < 3; ++c)
      for (int64_t y = 0; y < oh; ++y) {
        const uint8_t* in = src_in.p + c * src_in.sc + y * src_in.sh;
        uint8_t* out = dst + (c * oh + y) * ow;
        if (src_in.px == 1) std::memcpy(out, in, ow);
        else for (int64_t x = 0; x < ow; ++x) out[x] = in[x * src_in.px];
      }
    return;
  }
  Source src = src_in;
  if (top < 0 || left < 0 || top + ch > src_in.H || left + cw > src_in.W) {
    s.padded.resize(3 * ch * cw);
    uint8_t* pd = s.padded.data();
    const int64_t y0 = std::max<int64_t>(top, 0), y1 = std::min<int64_t>(top + ch, src_in.H);
    const int64_t x0 = std::max<int64_t>(left, 0), x1 = std::min<int64_t>(left + cw, src_in.W);
    for (int c = 0; c < 3; ++c) {
      uint8_t* plane = pd + c * ch * cw;
      const uint8_t fill = (uint8_t)r[args::PAD_FILL + c];
      if (y1 <= y0 || x1 <= x0) {
        std::memset(plane, fill, ch * cw);
        continue;
      }
      std::memset(plane, fill, (y0 - top) * cw);
      std::memset(plane + (y1 - top) * cw, fill, (top + ch - y1) * cw);
      for (int64_t y = y0; y < y1; ++y) {
        uint8_t* o = plane + (y - top) * cw;
        std::memset(o, fill, x0 - left);
        std::memset(o + (x1 - left), fill, left + cw - x1);
        const uint8_t* in = src_in.p + c * src_in.sc + y * src_in.sh;
        uint8_t* out = o + (x0 - left);
        if (src_in.px == 1) std::memcpy(out, in + x0, x1 - x0);
        else for (int64_t x = x0; x < x1; ++x) out[x - x0] = in[x * src_in.px];
      }
    }
    src.p = pd;
    src.H = ch;
    src.W = cw;
    src.sc = ch * cw;
    src.sh = cw;
    src.px = 1;
    src.end = pd + 3 * ch * cw;
    top = left = 0;
  }
  build_taps(cw, ow, r[args::FLIP] != 0, filter, s.th, s);
  build_taps(ch, oh, false, filter, s.tv, s);
  const int64_t rows3 = 3 * ch;
  s.tmp.resize(rows3 * ow);
  bool done = false;
  if constexpr (VV::kDirectH) done = VV::resample_cols(src, top, left, ch, cw, s.th, ow, s.tmp.data(), s);
  if (!done) {
    const uint8_t* corner = src.p + top * src.sh + left * src.px;
    s.tmpT.resize(ow * rows3);
    if (src.px == 1) {
      s.cropT.resize(cw * rows3);
      for (int c = 0; c < 3; ++c)
        transpose_u8<VV>(corner + c * src.sc, src.sh, ch, cw, s.cropT.data() + c * ch, rows3);
      resample_rows<VV>(s.cropT.data(), rows3, rows3, s.th, ow, s.tmpT.data(), rows3);
    } else {
      const int64_t cols = src.px * (cw - 1) + 3;  // the last pixel's unused channel is never read
      s.cropT.resize(cols * ch);
      transpose_u8<VV>(corner, src.sh, ch, cols, s.cropT.data(), ch);
      resample_rows<VV>(s.cropT.data(), src.px * ch, rows3, s.th, ow, s.tmpT.data(), rows3);
    }
    transpose_u8<VV>(s.tmpT.data(), rows3, ow, rows3, s.tmp.data(), ow);
  }
  for (int c = 0; c < 3; ++c) resample_rows<VV>(s.tmp.data() + c * ch * ow, ow, ow, s.tv, oh, dst + c * oh * ow, ow);
}

// ------------------------------------------------------------------------ RandAugment

inline uint8_t clamp255(int32_t v) { return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// x[i] = lut[x[i]]
inline void apply_lut(uint8_t* x, int64_t n, const uint8_t* lut) { V::apply_lut(x, n, lut); }

// gray(r, g, b) = (19589 r + 38470 g + 7471 b) >> 16 in 16-bit lanes: with P = 76r + 150g + 29b
// and Q = 133r + 70g + 47b (both < 2^16), the sum is 256 P + Q = 2^16 (P >> 8) + (256 (P & 255) + Q),
// whose last term is < 2^17: its carry is ((P & 255) * 2^7 + (Q >> 1)) >> 15 (256 P is even).
// Checked against the formula for all 2^24 inputs.
inline uint16_t gray16(uint16_t r, uint16_t g, uint16_t b) {
  const uint16_t P = (uint16_t)(76 * r + 150 * g + 29 * b);
  const uint16_t Q = (uint16_t)(133 * r + 70 * g + 47 * b);
  return (uint16_t)((P >> 8) + ((uint16_t)(((P & 255) << 7) + (Q >> 1)) >> 15));
}

// x -> clamp((x*f + C) >> 16, 0, 255), exact in int32 for 0 <= f <= 2^22 and |C| < 2^30
// (|x*f| < 2^30).
inline void levels(uint8_t* x, int64_t n, int32_t f, int32_t C) {
  for (int64_t i = 0; i < n; ++i) x[i] = clamp255(((int32_t)x[i] * f + C) >> 16);
}

inline void op_brightness(uint8_t* x, int64_t n, int64_t f) {
  if (f <= (int64_t(1) << 22)) {  // brightness(x, f) = clamp((x*f) >> 16)
    levels(x, n, (int32_t)f, 0);
    return;
  }
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = M::brightness(v, f);
  apply_lut(x, n, lut);
}

// blend_q16(x, o, f) = clamp(x*f + o*(2^16 - f), 0, 2^24 - 1) >> 16 = clamp(o + floor((x - o)*f / 2^16), 0, 255),
// since x*f + o*(2^16 - f) = o*2^16 + (x - o)*f. For f <= 2^22, split f = fh*2^16 + fl with
// fl in [-2^15, 2^15): floor(d*f / 2^16) = d*fh + mulhi_s16(d, fl), |d*fh| <= 255*64: 16-bit lanes.
inline void op_color(uint8_t* img, int64_t n, int64_t f) {
  uint8_t* R = img;
  uint8_t* G = img + n;
  uint8_t* B = img + 2 * n;
  if (f <= (int64_t(1) << 22)) {
    const int16_t fh = (int16_t)((f + 32768) >> 16);
    const int16_t fl = (int16_t)(f - (int64_t)fh * 65536);
    for (int64_t i = 0; i < n; ++i) {
      const int16_t r = R[i], g = G[i], b = B[i];
      const int16_t o = (int16_t)gray16(r, g, b);
      const int16_t dr = (int16_t)(r - o), dg = (int16_t)(g - o), db = (int16_t)(b - o);
      const int16_t vr = (int16_t)(o + dr * fh + (int16_t)(((int32_t)dr * fl) >> 16));
      const int16_t vg = (int16_t)(o + dg * fh + (int16_t)(((int32_t)dg * fl) >> 16));
      const int16_t vb = (int16_t)(o + db * fh + (int16_t)(((int32_t)db * fl) >> 16));
      R[i] = (uint8_t)(vr < 0 ? 0 : (vr > 255 ? 255 : vr));
      G[i] = (uint8_t)(vg < 0 ? 0 : (vg > 255 ? 255 : vg));
      B[i] = (uint8_t)(vb < 0 ? 0 : (vb > 255 ? 255 : vb));
    }
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int64_t o = M::gray(R[i], G[i], B[i]);
    R[i] = M::blend_q16(R[i], o, f);
    G[i] = M::blend_q16(G[i], o, f);
    B[i] = M::blend_q16(B[i], o, f);
  }
}

// contrast(x, mean, f) = clamp(x*f*2^16 + C, 0, 2^40 - 1) >> 32 with C = mean*(2^16 - f)
// = clamp((x*f + floor(C / 2^16)) >> 16, 0, 255): writing C = Ch*2^16 + Cl (0 <= Cl < 2^16), the
// dropped Cl/2^32 < 2^-16 cannot carry floor((x*f + Ch)/2^16) past an integer. For f <= 2^22,
// |Ch| <= 255 * (2^22 - 2^16) < 2^30 (mean <= 255 * 2^16), so levels() applies.
inline void op_contrast(uint8_t* img, int64_t n, int64_t f) {
  const uint8_t* R = img;
  const uint8_t* G = img + n;
  const uint8_t* B = img + 2 * n;
  int64_t sum = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 4096) {  // int32 partial sums: 4096 * 255 < 2^31
    const int64_t i1 = std::min<int64_t>(n, i0 + 4096);
    int32_t part = 0;
    for (int64_t i = i0; i < i1; ++i) part += gray16(R[i], G[i], B[i]);
    sum += part;
  }
  const int64_t mean = M::contrast_mean_q16(sum, n);
  if (f <= (int64_t(1) << 22)) {
    const int64_t C = mean * (M::Q16 - f);
    levels(img, 3 * n, (int32_t)f, (int32_t)(C >> 16));  // arithmetic shift = floor
    return;
  }
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = M::contrast(v, mean, f);
  apply_lut(img, 3 * n, lut);
}

// Sharpness of one channel, in -> out (border rows and columns copied).
// Fast path (f <= 2^22), in 16-bit lanes:
//  - blur = (2s + 13) / 26 = mulhi_u16(2s + 13, 40330) >> 4 for 0 <= s <= 13 * 255 (checked exhaustively);
//  - sharpness(x, s, f) = clamp(x*2^16 + h*(blur - x), 0, 2^24 - 1) >> 16 with h = 2^16 - f
//    = clamp(x + floor(e*h / 2^16), 0, 255) with e = blur - x (x*2^16 is a multiple of 2^16);
//  - with h = hh*2^16 + hl, hl in [-2^15, 2^15): floor(e*h / 2^16) = e*hh + mulhi_s16(e, hl),
//    and |e*hh| <= 255 * 64, so every intermediate fits int16.
inline void op_sharpness_channel(const uint8_t* a, uint8_t* o, int64_t h, int64_t w, int64_t f, uint16_t* colsum) {
  std::memcpy(o, a, w);
  std::memcpy(o + (h - 1) * w, a + (h - 1) * w, w);
  const bool fast = f <= (int64_t(1) << 22);
  const int32_t hq = (int32_t)(M::Q16 - (fast ? f : 0));
  const int16_t hh = (int16_t)((hq + 32768) >> 16);
  const int16_t hl = (int16_t)(hq - hh * 65536);
  for (int64_t y = 1; y < h - 1; ++y) {
    const uint8_t* a0 = a + (y - 1) * w;
    const uint8_t* a1 = a + y * w;
    const uint8_t* a2 = a + (y + 1) * w;
    uint8_t* out = o + y * w;
    out[0] = a1[0];
    out[w - 1] = a1[w - 1];
    for (int64_t x = 0; x < w; ++x) colsum[x] = (uint16_t)(a0[x] + a1[x] + a2[x]);
    if (fast) {
      const auto px = [&](int64_t x) -> uint8_t {
        // 3x3 sum with centre weight 5: three column sums plus 4 x
        const uint16_t sum = (uint16_t)(colsum[x - 1] + colsum[x] + colsum[x + 1] + 4 * a1[x]);
        const uint16_t v = (uint16_t)(2 * sum + 13);
        const uint16_t blur = (uint16_t)((uint16_t)(((uint32_t)v * 40330u) >> 16) >> 4);
        const int16_t xv = a1[x];
        const int16_t e = (int16_t)(blur - xv);
        const int16_t r = (int16_t)(xv + e * hh + (int16_t)(((int32_t)e * hl) >> 16));
        return (uint8_t)(r < 0 ? 0 : (r > 255 ? 255 : r));
      };
      if (w - 2 >= 32) {
        // blocks of 32 (a fixed trip count the compiler vectorises whole), the last one
        // overlapping, instead of a long scalar remainder
        for (int64_t x0 = 1;; x0 += 32) {
          if (x0 + 32 > w - 1) x0 = w - 1 - 32;
          for (int64_t k = 0; k < 32; ++k) out[x0 + k] = px(x0 + k);
          if (x0 + 32 >= w - 1) break;
        }
      } else {
        for (int64_t x = 1; x < w - 1; ++x) out[x] = px(x);
      }
    } else {
      for (int64_t x = 1; x < w - 1; ++x) {
        const int64_t sum = (int64_t)colsum[x - 1] + colsum[x] + colsum[x + 1] + 4 * a1[x];
        out[x] = M::sharpness(a1[x], sum, f);
      }
    }
  }
}

inline void op_posterize(uint8_t* x, int64_t n, int64_t mask) {
  const uint8_t m = (uint8_t)mask;
  for (int64_t i = 0; i < n; ++i) x[i] &= m;
}

inline void op_solarize(uint8_t* x, int64_t n, int64_t threshold) {
  if (threshold > 255) return;  // x >= 256 never holds
  const uint8_t t = (uint8_t)threshold;
  for (int64_t i = 0; i < n; ++i) x[i] = x[i] >= t ? (uint8_t)(255 - x[i]) : x[i];
}

inline void op_invert(uint8_t* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = (uint8_t)(255 - x[i]);
}

inline void op_solarize_add(uint8_t* x, int64_t n, int64_t threshold, int64_t add) {
  uint8_t lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = M::solarize_add(v, threshold, add);
  apply_lut(x, n, lut);
}

// Hue shift by k / 65536 of a turn: replay_math.h's hue in int32 and without branches, so the loop
// vectorises. Equal to it because:
//  - every intermediate fits int32: N * 2^16 < 6 * 256 * 2^16, |6kC| <= 6 * 2^15 * 255, H < 1.5 * 6C * 2^16;
//  - the sector H div (C * 2^16) is the number of multiples 1..5 of C * 2^16 that H reaches (H < 6C * 2^16);
//  - floor(X * 255999 / (255000 * 2^16)) with X = xi * 2^16 + xf (xf < 2^16) is xi or xi + 1 (X <= M * 2^16
//    <= 255 * 2^16, so X * 999 / 255000 < 2^16), and xi + 1 exactly when xf >= ceil(2^16 * (255000 - 999 xi) / 255999), which
//    equals ceil((kHueA - kHueB * xi) / 2^13) for each of the 256 values of xi (tests/test_jitter.py checks
//    all of them), i.e. when xf * 2^13 + kHueB * xi >= kHueA;
//  - a grey pixel (C = 0) keeps its value (selected at the end).
constexpr int32_t kHueA = 534775845, kHueB = 2095063;

// c ? a : b for c in {0, 1}, without a branch
inline int32_t select32(int32_t c, int32_t a, int32_t b) { return b ^ ((a ^ b) & -c); }

inline void op_hue(uint8_t* img, int64_t n, int64_t k) {
  uint8_t* R = img;
  uint8_t* G = img + n;
  uint8_t* B = img + 2 * n;
  const int32_t k6 = (int32_t)(6 * k);
  for (int64_t i = 0; i < n; ++i) {
    const int32_t r = R[i], g = G[i], b = B[i];
    const int32_t M = std::max(r, std::max(g, b)), m = std::min(r, std::min(g, b)), C = M - m;
    const int32_t is_r = M == r, is_g = (M == g) & (M != r);
    int32_t N = select32(is_r, g - b, select32(is_g, 2 * C + b - r, 4 * C + r - g));
    N += (6 * C) & -(int32_t)(N < 0);
    const int32_t unit = C << 16, period = 6 * unit;
    int32_t H = (N << 16) + k6 * C;
    H += period & -(int32_t)(H < 0);
    H -= period & -(int32_t)(H >= period);
    const int32_t sec = (H >= unit) + (H >= 2 * unit) + (H >= 3 * unit) + (H >= 4 * unit) + (H >= 5 * unit);
    const int32_t rem = H - sec * unit;
    const int32_t X = select32(sec & 1, (M << 16) - rem, (m << 16) + rem);
    const int32_t xi = X >> 16;
    const int32_t mid = xi + (((X & 65535) << 13) + kHueB * xi >= kHueA);
    // torchvision's sector table: r is M in sectors 0, 5 and m in 2, 3; g is M in 1, 2 and m in 4, 5;
    // b is M in 3, 4 and m in 0, 1; the middle value otherwise; a grey pixel (C = 0) keeps its values.
    // (Unsigned range tests rather than ||, which would keep the loop from vectorising.)
    const int32_t grey = C == 0;
    const int32_t ro = select32((uint32_t)(sec - 1) > 3u, M, select32((uint32_t)(sec - 2) < 2u, m, mid));
    const int32_t go = select32((uint32_t)(sec - 1) < 2u, M, select32(sec >= 4, m, mid));
    const int32_t bo = select32((uint32_t)(sec - 3) < 2u, M, select32(sec < 2, m, mid));
    R[i] = (uint8_t)select32(grey, r, ro);
    G[i] = (uint8_t)select32(grey, g, go);
    B[i] = (uint8_t)select32(grey, b, bo);
  }
}

// Grayscale: replay_math.h's grayscale() in all three channels (formula 0 torchvision, 1 PIL).
inline void op_grayscale(uint8_t* img, int64_t n, int64_t formula) {
  uint8_t* R = img;
  uint8_t* G = img + n;
  uint8_t* B = img + 2 * n;
  if (formula == 1) {
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t g = (uint8_t)((19595 * (int32_t)R[i] + 38470 * (int32_t)G[i] + 7471 * (int32_t)B[i] + 32768) >> 16);
      R[i] = G[i] = B[i] = g;
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t g = (uint8_t)((19589 * (int32_t)R[i] + 38470 * (int32_t)G[i] + 7471 * (int32_t)B[i]) >> 16);
      R[i] = G[i] = B[i] = g;
    }
  }
}

// GaussianBlur of one channel a -> o with the packed taps p (replay_math.h): horizontal pass over a
// reflected copy of each row into Q8 (uint16: at most 255 * 2^8), vertical pass with reflected row
// indices; int32 throughout (sums < 2^22 and < 2^30), in loops the compiler vectorises.
inline void op_blur_channel(const uint8_t* a, uint8_t* o, int64_t h, int64_t w, const int32_t* p, Scratch& s) {
  int32_t t[args::BLUR_TAPS];
  for (int d = 0; d < args::BLUR_TAPS; ++d) t[d] = M::blur_tap(p, d);
  const int R = M::blur_radius(p);
  s.blur_row.resize(w + 2 * R);
  s.blur_mid.resize(h * w);
  s.blur_acc.resize(w);
  int32_t* row = s.blur_row.data();
  uint16_t* mid = s.blur_mid.data();
  int32_t* acc = s.blur_acc.data();
  for (int64_t y = 0; y < h; ++y) {
    const uint8_t* in = a + y * w;
    for (int64_t x = 0; x < w; ++x) row[x + R] = in[x];
    for (int d = 1; d <= R; ++d) {
      row[R - d] = in[M::reflect_index(-d, w)];
      row[w - 1 + R + d] = in[M::reflect_index(w - 1 + d, w)];
    }
    uint16_t* m = mid + y * w;
    for (int64_t x = 0; x < w; ++x) acc[x] = t[0] * row[x + R];
    for (int d = 1; d <= R; ++d) {
      const int32_t td = t[d];
      const int32_t* lo = row + R - d;
      const int32_t* hi = row + R + d;
      for (int64_t x = 0; x < w; ++x) acc[x] += td * (lo[x] + hi[x]);
    }
    for (int64_t x = 0; x < w; ++x) m[x] = (uint16_t)M::blur_mid(acc[x]);
  }
  for (int64_t y = 0; y < h; ++y) {
    const uint16_t* c = mid + y * w;
    for (int64_t x = 0; x < w; ++x) acc[x] = t[0] * (int32_t)c[x];
    for (int d = 1; d <= R; ++d) {
      const int32_t td = t[d];
      const uint16_t* up = mid + M::reflect_index(y - d, h) * w;
      const uint16_t* dn = mid + M::reflect_index(y + d, h) * w;
      for (int64_t x = 0; x < w; ++x) acc[x] += td * ((int32_t)up[x] + (int32_t)dn[x]);
    }
    uint8_t* out = o + y * w;
    for (int64_t x = 0; x < w; ++x) out[x] = M::blur_out(acc[x]);
  }
}

inline void op_autocontrast(uint8_t* img, int64_t n) {
  for (int c = 0; c < 3; ++c) {
    uint8_t* a = img + c * n;
    uint8_t lo = 255, hi = 0;
    for (int64_t i = 0; i < n; ++i) {
      lo = a[i] < lo ? a[i] : lo;
      hi = a[i] > hi ? a[i] : hi;
    }
    if (hi <= lo) continue;  // constant channel: unchanged
    uint8_t lut[256];
    for (int v = 0; v < 256; ++v) lut[v] = v >= lo ? M::autocontrast(v, lo, hi) : (uint8_t)v;
    apply_lut(a, n, lut);
  }
}

inline void op_equalize(uint8_t* img, int64_t n) {
  for (int c = 0; c < 3; ++c) {
    uint8_t* a = img + c * n;
    // eight sub-histograms: a run of equal pixels (common) only revisits a counter every eighth
    // byte, which keeps the increments off the store-to-load forwarding chain
    uint32_t h8[8][256];
    std::memset(h8, 0, sizeof(h8));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t v;
      std::memcpy(&v, a + i, 8);
      for (int k = 0; k < 8; ++k) ++h8[k][(v >> (8 * k)) & 255];
    }
    for (; i < n; ++i) ++h8[0][a[i]];
    int64_t hist[256];
    for (int v = 0; v < 256; ++v) {
      int64_t t = 0;
      for (int k = 0; k < 8; ++k) t += h8[k][v];
      hist[v] = t;
    }
    int last = 255;
    while (hist[last] == 0) --last;
    const int64_t step = M::equalize_step(n, hist[last]);
    if (step == 0) continue;
    uint8_t lut[256];
    lut[0] = 0;
    int64_t cum = 0;
    for (int v = 1; v < 256; ++v) {
      cum += hist[v - 1];
      lut[v] = M::equalize_entry(cum, step);
    }
    apply_lut(a, n, lut);
  }
}

// out[x] = in[x + dx] where 0 <= x + dx < w, else the fill.
inline void shifted_row(const uint8_t* in, uint8_t* out, int64_t w, int64_t dx, uint8_t fill) {
  if (dx <= -w || dx >= w) {
    std::memset(out, fill, w);
    return;
  }
  const int64_t x0 = dx < 0 ? -dx : 0, x1 = dx > 0 ? w - dx : w;
  std::memset(out, fill, x0);
  std::memcpy(out + x0, in + x0 + dx, x1 - x0);
  std::memset(out + x1, fill, w - x1);
}

// Q11 tap weights of the 2048 fractions f: NT = 2 (bilinear) or 4 (bicubic) per f, as
// replay_math.h's interp_taps gives them.
template <int NT>
const int32_t* interp_table() {
  static const std::vector<int32_t> table = [] {
    std::vector<int32_t> t(2048 * NT);
    for (int64_t f = 0; f < 2048; ++f) {
      int64_t first;
      M::interp_taps(NT == 2 ? 1 : 2, f << 6, &first, t.data() + f * NT);
    }
    return t;
  }();
  return table.data();
}

// Geometric ops with bilinear (NT = 2) or bicubic (NT = 4) interpolation: for output (x, y),
// N = a*(2x+1-W) + b*(2y+1-H) + t per axis (int64; it steps by 2*a0, 2*a3 along a row), taps
// N >> 17 (- 1 for bicubic) onwards with the Q11 weights of f = (N >> 6) & 2047 (a table lookup),
//   out = interp_round(sum_j wy[j] * sum_i wx[i] * P(y0 + j, x0 + i)),  P = fill[c] outside the image.
// int32 is exact: |row sum| <= 255 * 2562 and |total| < 1.68e9 (see interp_round). Pixels whose
// taps all lie inside read them without checks.
template <int NT>
void affine_interp(const uint8_t* in, uint8_t* out, int64_t h, int64_t w, const int32_t* p, const int32_t* fill) {
  const int32_t* tab = interp_table<NT>();
  const int64_t n = h * w;
  const int64_t a0 = p[0], a1 = p[1], t0 = p[2], a3 = p[3], a4 = p[4], t1 = p[5];
  if (a0 == M::Q16 && a3 == 0) {
    // (ShearX, TranslateX/Y) Along a row N_y is constant and N_x steps by exactly 2^17: every
    // output of the row has the same weights wx, wy and taps shifted by one per pixel. Copy the
    // NT source rows it reads (fill outside the image) into `line`, then the same integer sums
    // as below, in an order the compiler vectorises: exact, so the bytes are equal.
    std::vector<uint8_t> line(NT * (w + NT));
    std::vector<int32_t> acc(w), rowsum(w);
    for (int64_t y = 0; y < h; ++y) {
      const int64_t y2 = 2 * y + 1 - h;
      const int64_t nx = a0 * (1 - w) + a1 * y2 + t0, ny = a4 * y2 + t1;
      const int64_t x0 = (nx >> 17) - (NT == 4), y0 = (ny >> 17) - (NT == 4);
      const int32_t* wx = tab + ((nx >> 6) & 2047) * NT;
      const int32_t* wy = tab + ((ny >> 6) & 2047) * NT;
      const int64_t L = w + NT - 1;  // source columns x0 .. x0 + L - 1
      const int64_t in0 = std::min<int64_t>(L, std::max<int64_t>(0, -x0));  // first column inside
      const int64_t in1 = std::max<int64_t>(in0, std::min<int64_t>(L, w - x0));  // one past the last
      for (int c = 0; c < 3; ++c) {
        for (int j = 0; j < NT; ++j) {
          uint8_t* ln = line.data() + j * (w + NT);
          const int64_t sy = y0 + j;
          if (sy < 0 || sy >= h) {
            std::memset(ln, fill[c], L);
            continue;
          }
          std::memset(ln, fill[c], in0);
          std::memcpy(ln + in0, in + c * n + sy * w + x0 + in0, in1 - in0);
          std::memset(ln + in1, fill[c], L - in1);
        }
        std::fill(acc.begin(), acc.end(), 0);
        for (int j = 0; j < NT; ++j) {
          const uint8_t* ln = line.data() + j * (w + NT);
          int32_t* rs = rowsum.data();
          for (int64_t x = 0; x < w; ++x) rs[x] = 0;
          for (int i = 0; i < NT; ++i) {
            const int32_t wi = wx[i];
            for (int64_t x = 0; x < w; ++x) rs[x] += wi * (int32_t)ln[x + i];
          }
          const int32_t wj = wy[j];
          for (int64_t x = 0; x < w; ++x) acc[x] += wj * rs[x];
        }
        uint8_t* o = out + c * n + y * w;
        for (int64_t x = 0; x < w; ++x) o[x] = M::interp_round(acc[x]);
      }
    }
    return;
  }
  for (int64_t y = 0; y < h; ++y) {
    const int64_t y2 = 2 * y + 1 - h;
    int64_t nx = a0 * (1 - w) + a1 * y2 + t0, ny = a3 * (1 - w) + a4 * y2 + t1;
    for (int64_t x = 0; x < w; ++x, nx += 2 * a0, ny += 2 * a3) {
      const int64_t x0 = (nx >> 17) - (NT == 4), y0 = (ny >> 17) - (NT == 4);
      const int32_t* wx = tab + ((nx >> 6) & 2047) * NT;
      const int32_t* wy = tab + ((ny >> 6) & 2047) * NT;
      const int64_t o = y * w + x;
      if (x0 >= 0 && x0 + NT <= w && y0 >= 0 && y0 + NT <= h) {
        for (int c = 0; c < 3; ++c) {
          const uint8_t* q = in + c * n + y0 * w + x0;
          int32_t acc = 0;
          for (int j = 0; j < NT; ++j, q += w) {
            int32_t row = 0;
            for (int i = 0; i < NT; ++i) row += wx[i] * (int32_t)q[i];
            acc += wy[j] * row;
          }
          out[c * n + o] = M::interp_round(acc);
        }
        continue;
      }
      for (int c = 0; c < 3; ++c) {
        const uint8_t* src = in + c * n;
        int32_t acc = 0;
        for (int j = 0; j < NT; ++j) {
          const int64_t sy = y0 + j;
          int32_t row = 0;
          for (int i = 0; i < NT; ++i) {
            const int64_t sx = x0 + i;
            const int32_t v = sx >= 0 && sx < w && sy >= 0 && sy < h ? src[sy * w + sx] : fill[c];
            row += wx[i] * v;
          }
          acc += wy[j] * row;
        }
        out[c * n + o] = M::interp_round(acc);
      }
    }
  }
}

// Geometric ops: out(x, y) = in(sx, sy) or the fill, with sx, sy = affine_src(...) (replay_math.h)
// for interp 0 (nearest); bilinear / bicubic interpolation (interp 1, 2) in affine_interp.
// p = (a0, a1, t0, a3, a4, t1).
template <class VV = V>
void op_affine(const uint8_t* in, uint8_t* out, int64_t h, int64_t w, const int32_t* p, int interp,
               const int32_t* fill, Scratch& s) {
  if (interp == args::INTERP_BILINEAR) return affine_interp<2>(in, out, h, w, p, fill);
  if (interp == args::INTERP_BICUBIC) return affine_interp<4>(in, out, h, w, p, fill);
  const int64_t n = h * w;
  const int64_t a0 = p[0], a1 = p[1], t0 = p[2], a3 = p[3], a4 = p[4], t1 = p[5];
  if (a0 == M::Q16 && a3 == 0) {
    // (ShearX, TranslateX/Y) sy does not depend on x, and sx = x + sx(0) since a0 * 2x = 2^17 x:
    // each output row is a shifted source row.
    for (int64_t y = 0; y < h; ++y) {
      const int64_t y2 = 2 * y + 1 - h;
      const int64_t sy = M::affine_src(a3, a4, t1, 1 - w, y2);
      const int64_t dx = M::affine_src(a0, a1, t0, 1 - w, y2);
      for (int c = 0; c < 3; ++c) {
        if (sy >= 0 && sy < h) shifted_row(in + c * n + sy * w, out + c * n + y * w, w, dx, (uint8_t)fill[c]);
        else std::memset(out + c * n + y * w, fill[c], w);
      }
    }
    return;
  }
  if (a1 == 0 && a4 == M::Q16) {
    // (ShearY) the same with x and y swapped: sx does not depend on y, and sy = y + sy(x, y = 0).
    // On the transposed images each output column is a shifted source column.
    s.tbuf.resize(2 * 3 * n);
    uint8_t* tin = s.tbuf.data();
    uint8_t* tout = tin + 3 * n;
    for (int c = 0; c < 3; ++c) transpose_u8<VV>(in + c * n, w, h, w, tin + c * n, h);
    for (int64_t x = 0; x < w; ++x) {
      const int64_t x2 = 2 * x + 1 - w;
      const int64_t sx = M::affine_src(a0, a1, t0, x2, 1 - h);
      const int64_t dy = M::affine_src(a3, a4, t1, x2, 1 - h);
      for (int c = 0; c < 3; ++c) {
        if (sx >= 0 && sx < w) shifted_row(tin + c * n + sx * h, tout + c * n + x * h, h, dy, (uint8_t)fill[c]);
        else std::memset(tout + c * n + x * h, fill[c], h);
      }
    }
    for (int c = 0; c < 3; ++c) transpose_u8<VV>(tout + c * n, h, w, h, out + c * n, w);
    return;
  }
  // Numerators a*(2x+1-W) + b*(2y+1-H) + t + 2^16 are linear in x and y: if they fit int32 at the
  // four corners (and the per-pixel steps fit), every pixel's does, and int32 arithmetic is exact.
  bool fits = std::abs(a0) < (int64_t(1) << 29) && std::abs(a3) < (int64_t(1) << 29);
  for (int64_t cy = 0; cy < 2; ++cy)
    for (int64_t cx = 0; cx < 2; ++cx) {
      const int64_t x2 = cx ? w - 1 : 1 - w, y2 = cy ? h - 1 : 1 - h;
      const int64_t nx = a0 * x2 + a1 * y2 + t0 + M::Q16, ny = a3 * x2 + a4 * y2 + t1 + M::Q16;
      fits = fits && std::abs(nx) < (int64_t(1) << 31) - 1 && std::abs(ny) < (int64_t(1) << 31) - 1;
    }
  if (!fits) {
    for (int64_t y = 0; y < h; ++y) {
      const int64_t y2 = 2 * y + 1 - h;
      for (int64_t x = 0; x < w; ++x) {
        const int64_t x2 = 2 * x + 1 - w;
        const int64_t sx = M::affine_src(a0, a1, t0, x2, y2), sy = M::affine_src(a3, a4, t1, x2, y2);
        const bool inside = sx >= 0 && sx < w && sy >= 0 && sy < h;
        for (int c = 0; c < 3; ++c) out[c * n + y * w + x] = inside ? in[c * n + sy * w + sx] : (uint8_t)fill[c];
      }
    }
    return;
  }
  std::vector<int32_t> idx(w);
  const uint32_t stepx = (uint32_t)(2 * a0), stepy = (uint32_t)(2 * a3);
  const int32_t wi = (int32_t)w, hi = (int32_t)h;
  for (int64_t y = 0; y < h; ++y) {
    const int64_t y2 = 2 * y + 1 - h;
    // wrapping uint32 arithmetic gives the exact int32 value, which fits
    const uint32_t nx0 = (uint32_t)(a0 * (1 - w) + a1 * y2 + t0 + M::Q16);
    const uint32_t ny0 = (uint32_t)(a3 * (1 - w) + a4 * y2 + t1 + M::Q16);
    int32_t* ix = idx.data();
    for (int32_t x = 0; x < wi; ++x) {
      const int32_t sx = (int32_t)(nx0 + (uint32_t)x * stepx) >> 17;
      const int32_t sy = (int32_t)(ny0 + (uint32_t)x * stepy) >> 17;
      const bool inside = (uint32_t)sx < (uint32_t)wi && (uint32_t)sy < (uint32_t)hi;
      ix[x] = inside ? sy * wi + sx : -1;
    }
    int64_t x = 0;
    if constexpr (VV::kGather) x = VV::gather_row(in, n, ix, w, out + y * w, fill);
    for (int c = 0; c < 3; ++c) {
      const uint8_t* src = in + c * n;
      uint8_t* o = out + c * n + y * w;
      const uint8_t fc = (uint8_t)fill[c];
      for (int64_t xx = x; xx < w; ++xx) o[xx] = ix[xx] >= 0 ? src[ix[xx]] : fc;
    }
  }
}

// One RandAugment op on img [3, h, w]; may swap img and other (a second buffer of that size).
template <class VV = V>
void apply_op(uint8_t*& img, uint8_t*& other, int64_t h, int64_t w, const int32_t* op, const int32_t* fill,
              Scratch& s) {
  const int64_t n = h * w;
  const int64_t f = op[1];
  switch (op[0]) {
    case args::IDENTITY:
      return;
    case args::SHEAR_X: case args::SHEAR_Y: case args::TRANSLATE_X: case args::TRANSLATE_Y: case args::ROTATE:
      op_affine<VV>(img, other, h, w, op + 1, op[args::OP_INTERP], fill, s);
      std::swap(img, other);
      return;
    case args::BRIGHTNESS:
      op_brightness(img, 3 * n, f);
      return;
    case args::COLOR:
      op_color(img, n, f);
      return;
    case args::CONTRAST:
      op_contrast(img, n, f);
      return;
    case args::SHARPNESS:
      if (h <= 2 || w <= 2) return;
      s.colsum.resize(w);
      for (int c = 0; c < 3; ++c) op_sharpness_channel(img + c * n, other + c * n, h, w, f, s.colsum.data());
      std::swap(img, other);
      return;
    case args::POSTERIZE:
      op_posterize(img, 3 * n, f);
      return;
    case args::SOLARIZE:
      op_solarize(img, 3 * n, f);
      return;
    case args::AUTOCONTRAST:
      op_autocontrast(img, n);
      return;
    case args::INVERT:
      op_invert(img, 3 * n);
      return;
    case args::SOLARIZE_ADD:
      op_solarize_add(img, 3 * n, f, op[2]);
      return;
    case args::EQUALIZE:
      op_equalize(img, n);
      return;
    case args::HUE:
      op_hue(img, n, f);
      return;
    case args::GRAYSCALE:
      op_grayscale(img, n, f);
      return;
    case args::GAUSSIAN_BLUR:
      for (int c = 0; c < 3; ++c) op_blur_channel(img + c * n, other + c * n, h, w, op + 1, s);
      std::swap(img, other);
      return;
    default:
      TORCH_CHECK(false, "augment: unknown op id ", op[0]);  // unreachable: check_augment
  }
}

inline void erase(uint8_t* img, int64_t h, int64_t w, const int32_t* r) {
  const int64_t et = r[args::ERASE_TOP], el = r[args::ERASE_LEFT], eh = r[args::ERASE_H], ew = r[args::ERASE_W];
  if (eh <= 0 || ew <= 0) return;
  const uint32_t seed = (uint32_t)r[args::ERASE_SEED];
  for (int c = 0; c < 3; ++c)
    for (int64_t y = et; y < et + eh; ++y) {
      uint8_t* o = img + (c * h + y) * w;
      if (r[args::ERASE_VALUE] < 0) {
        for (int64_t x = el; x < el + ew; ++x) o[x] = M::erase_noise(seed, M::erase_key(c, y, x, h, w));
      } else {
        std::memset(o + el, r[args::ERASE_VALUE + c], ew);
      }
    }
}

// Whether apply_op writes this op's result to the other buffer (and swaps).
inline bool swaps_buffers(const int32_t* op, int64_t h, int64_t w) {
  switch (op[0]) {
    case args::SHEAR_X: case args::SHEAR_Y: case args::TRANSLATE_X: case args::TRANSLATE_Y: case args::ROTATE:
      return true;
    case args::SHARPNESS:
      return h > 2 && w > 2;
    case args::GAUSSIAN_BLUR:
      return true;
    default:
      return false;
  }
}

// The whole augment pipeline of one view into dst [3, oh, ow].
template <class VV = V>
void augment_view(const Source& src, const int32_t* r, int64_t oh, int64_t ow, uint8_t* dst, Scratch& s) {
  const int64_t size = 3 * oh * ow;
  s.buf.resize(size);
  // Start in the buffer that the ops' swaps bring back to dst, so no final copy is needed.
  int swaps = 0;
  for (int k = 0; k < r[args::NUM_OPS]; ++k) swaps += swaps_buffers(r + args::OPS + k * args::OP_STRIDE, oh, ow);
  uint8_t* img = swaps % 2 ? s.buf.data() : dst;
  uint8_t* other = swaps % 2 ? dst : s.buf.data();
  resize<VV>(src, r, oh, ow, img, s);
  for (int k = 0; k < r[args::NUM_OPS]; ++k)
    apply_op<VV>(img, other, oh, ow, r + args::OPS + k * args::OP_STRIDE, r + args::FILL, s);
  if (img != dst) std::memcpy(dst, img, size);  // not reached: the swaps end in dst
  erase(dst, oh, ow, r);
}

// MixUp / CutMix / both of one view (C channels of H x W).
inline void mix_view(const uint8_t* a, const uint8_t* b, uint8_t* out, int64_t C, int64_t H, int64_t W,
                     const int32_t* q) {
  const int64_t size = C * H * W;
  const int mode = q[args::MIX_MODE];
  if (mode == 1 || mode == 3) {  // MixUp (mode 3: then the CutMix box below)
    const uint32_t lam = (uint32_t)q[args::MIX_LAM];
    for (int64_t i = 0; i < size; ++i) out[i] = M::mixup(a[i], b[i], lam);
  } else {
    std::memcpy(out, a, size);
  }
  if (mode == 2 || mode == 3) {
    const int64_t t = q[args::MIX_BOX], l = q[args::MIX_BOX + 1], h = q[args::MIX_BOX + 2], w = q[args::MIX_BOX + 3];
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = t; y < t + h; ++y) std::memcpy(out + (c * H + y) * W + l, b + (c * H + y) * W + l, w);
  }
}

// The AugMix blend of one view: math::augmix_px's formula, chain by chain over a uint32 accumulator, in blocks
// that stay in the L1 cache (loops the compiler vectorises; the same sums in the same integer arithmetic, so
// the same bytes). acc holds kAugMixBlock values.
constexpr int64_t kAugMixBlock = 2048;
inline void augmix_view(const uint8_t* x, const uint8_t* a, uint8_t* out, int64_t n, const int32_t* r, uint32_t* acc) {
  const int mode = r[args::AM_MODE], K = r[args::AM_CHAINS];
  const uint32_t one = 1u << args::AUGMIX_BITS, o = (uint32_t)r[args::AM_ORIG];
  const int32_t* w = r + args::AM_WEIGHTS;
  constexpr int B = args::AUGMIX_BITS;
  const uint32_t start = mode == args::AUGMIX_TORCHVISION ? o : 0;
  for (int64_t e0 = 0; e0 < n; e0 += kAugMixBlock) {
    const int64_t m = std::min<int64_t>(kAugMixBlock, n - e0);
    const uint8_t* xb = x + e0;
    uint8_t* ob = out + e0;
    if (mode == args::AUGMIX_BLENDED) {
      for (int64_t e = 0; e < m; ++e) acc[e] = xb[e];
      for (int k = 0; k < K; ++k) {
        const uint32_t wk = (uint32_t)w[k], rest = one - wk;
        const uint8_t* ak = a + k * n + e0;
        for (int64_t e = 0; e < m; ++e) acc[e] = (rest * acc[e] + wk * ak[e]) >> B;
      }
      for (int64_t e = 0; e < m; ++e) ob[e] = (uint8_t)acc[e];
      continue;
    }
    for (int64_t e = 0; e < m; ++e) acc[e] = start * xb[e];
    for (int k = 0; k < K; ++k) {
      const uint32_t wk = (uint32_t)w[k];
      const uint8_t* ak = a + k * n + e0;
      for (int64_t e = 0; e < m; ++e) acc[e] += wk * ak[e];
    }
    if (mode == args::AUGMIX_TORCHVISION) {
      for (int64_t e = 0; e < m; ++e) ob[e] = (uint8_t)(acc[e] >> B);
    } else {  // timm: the chains' mix, truncated, then blended with the crop
      for (int64_t e = 0; e < m; ++e) ob[e] = (uint8_t)((o * xb[e] + (one - o) * (acc[e] >> B)) >> B);
    }
  }
}
