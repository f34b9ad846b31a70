// Vector traits `struct V` of the AVX2 CPU build, with the AVX2-only kernels (the
// horizontal resize pass straight from the source rows, LUT and affine gathers), read by
// replay_cpu_kernels.h. Included by replay_cpu.cpp inside namespace k_avx2, under
// `#pragma GCC target("avx2")`, before replay_cpu_kernels.h; no include guard on purpose.
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
