// Per-ISA helpers shared by the engine's kernels (and any other kernel of the extension): horizontal sums,
// e^x, 16-bit float conversions, and ``Vec``, the vector a dot product accumulates in.
//
// ``Vec`` holds ``kRowsPerVec`` weight rows' 8-wide chunks side by side: with AVX-512 a zmm holds rows j and
// j+1 at the same k (lanes 0-7 and 8-15) against the input's chunk broadcast to both halves; with AVX2 a ymm
// holds one row. Either way each half is one 8-lane FMA chain over k ascending, so both ISAs compute every
// output with the very same float operations (the same bits).
//
// All kernels are compiled with -ffp-contract=off: a multiply and an add stay two roundings unless the code
// says fma (std::fma, _mm*_fmadd_ps).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define KANGAROO_AVX512 1
#endif

namespace kangaroo {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float f16_to_f32(const uint8_t* p) {  // IEEE half -> float: exact
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline float bf16_to_f32(const uint8_t* p) {  // bfloat16 -> float: exact (the high half of the float's bits)
  uint16_t b;
  std::memcpy(&b, p, 2);
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

#ifdef KANGAROO_AVX512
constexpr int kRowsPerVec = 2;
using Vec = __m512;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
// the input's 8 values at x, in both halves
inline Vec xload(const float* x) { return _mm512_broadcast_f32x8(_mm256_loadu_ps(x)); }
inline Vec vjoin(__m256 lo, __m256 hi) { return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1); }
// lane a of f in lanes 0-7 and lane b in lanes 8-15
inline Vec vspread(__m128 f, int a, int b) {
  return _mm512_permutexvar_ps(_mm512_set_epi32(b, b, b, b, b, b, b, b, a, a, a, a, a, a, a, a),
                               _mm512_castps128_ps512(f));
}
inline float vsum(Vec v, int half) {
  return hsum8(half ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v));
}
inline void vstore(float* out, Vec v) { _mm512_storeu_ps(out, v); }
#else
constexpr int kRowsPerVec = 1;
using Vec = __m256;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec xload(const float* x) { return _mm256_loadu_ps(x); }
inline Vec vspread(__m128 f, int a, int) { return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(f), _mm256_set1_epi32(a)); }
inline float vsum(Vec v, int) { return hsum8(v); }
inline void vstore(float* out, Vec v) { _mm256_storeu_ps(out, v); }
#endif

// e^x for 8 floats (Cephes' polynomial, as in avx_mathfun; ~1 ulp over the clamped range [-88.4, 88.4]).
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  for (float c : {1.3981999507E-3f, 8.3334519073E-3f, 4.1665795894E-2f, 1.6666665459E-1f, 5.0000001201E-1f})
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
  y = _mm256_add_ps(_mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x), _mm256_set1_ps(1.f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

// y[t] = f(x[t]) for t < m, 8 at a time (the tail through a padded copy, so every value takes the same path).
template <typename F>
inline void map8(const float* x, float* y, int64_t m, F f) {
  int64_t t = 0;
  for (; t + 8 <= m; t += 8) _mm256_storeu_ps(y + t, f(_mm256_loadu_ps(x + t)));
  if (t < m) {
    float buf[8] = {0.f};
    std::copy(x + t, x + m, buf);
    _mm256_storeu_ps(buf, f(_mm256_loadu_ps(buf)));
    std::copy(buf, buf + (m - t), y + t);
  }
}

// o[t] = fma(p, v[t], o[t]) for t < m (8 at a time, then one by one: the same value either way).
inline void axpy(float p, const float* v, float* o, int64_t m) {
  int64_t t = 0;
  const __m256 pv = _mm256_set1_ps(p);
  for (; t + 8 <= m; t += 8) _mm256_storeu_ps(o + t, _mm256_fmadd_ps(pv, _mm256_loadu_ps(v + t), _mm256_loadu_ps(o + t)));
  for (; t < m; ++t) o[t] = std::fma(p, v[t], o[t]);
}

}  // namespace kangaroo
