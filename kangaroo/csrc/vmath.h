// Vector math, 8 floats at a time: e^x, a function mapped over an array, and o += p v.
#pragma once
#include "isa.h"

namespace kangaroo {

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
