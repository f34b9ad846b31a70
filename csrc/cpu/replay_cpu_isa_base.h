// Vector traits `struct V` of the baseline CPU build (SSE2 on x86-64; no intrinsics
// elsewhere: kSimd = false), read by replay_cpu_kernels.h. Included by replay_cpu.cpp inside
// namespace k_base, before replay_cpu_kernels.h; no include guard on purpose.
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
