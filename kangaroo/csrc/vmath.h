// Vector math, 8 floats at a time: e^x, a function mapped over an array, o += p v, and softmax's denominator.
#pragma once
#include "isa.h"

namespace kangaroo {

// e^x for 8 floats (Cephes' polynomial, as in avx_mathfun; ~1 ulp over the clamped range [-88.4, 88.4]): the
// engine's exp (SiLU, attention, top1's probability).
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

// e^x for 8 floats by 2^(x log2 e), split into an integer power (built in the exponent bits) and 2^f, f in
// [-0.5, 0.5], by a degree-6 polynomial (rel. error ~2e-7); inputs under -87 give 0. The packed head's softmax
// (top_k.cpp's top-k probabilities). Not exp8's bits (the last bit differs for about 1 input in 20), so the head
// keeps its own: switching it to exp8 would change its probabilities.
inline __m256 exp8_pow2(__m256 x) {
  const __m256 t = _mm256_mul_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(1.4426950408889634f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 p = _mm256_set1_ps(1.5403530393381606e-4f);
  for (float c : {1.3333558146428443e-3f, 9.6181291076284772e-3f, 5.5504108664821580e-2f, 2.4022650695910071e-1f,
                  6.9314718055994531e-1f, 1.f})
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// sum_j e^(y[j] - m) over j < N, softmax's denominator: Exp over 8 lanes accumulated in order, a fixed horizontal
// sum, then the N % 8 tail by std::exp.
template <__m256 (*Exp)(__m256)>
inline float sum_exp(const float* y, int64_t N, float m) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= N; j += 8) acc = _mm256_add_ps(acc, Exp(_mm256_sub_ps(_mm256_loadu_ps(y + j), mv)));
  float s = hsum8(acc);
  for (; j < N; ++j) s += std::exp(y[j] - m);
  return s;
}

}  // namespace kangaroo
