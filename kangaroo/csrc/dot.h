// The dot products, in one place: the engine's float32 dot of two vectors, rows of float32 dots (the packed
// head's LoRA delta), and the packed drafter head's rows (formats.h) against an input row in their format. The
// matmul's dots (matmul.cpp) are its tiles: Vec FMA chains over the rows an Expand of formats.h gives.
//
// The packed head's dots come one struct per (format, ISA), as tinyBLAS writes its kernels (isa.h): what a
// weight and a row's raw dot are (W, Out), how many values of k a step takes (kStep), how to load a step of the
// input (load_x), multiply-accumulate a step of one weight row (madd) and sum an accumulator into the row's raw
// dot (sum: int32 for int8, float for bf16). The head's tile (packed_head.cpp) is a template over them;
// ``with_int8_dot`` / ``with_bf16_dot`` hand it the best one compiled in, or the AVX2 one when asked (``isa`` 1):
//
//   int8  AVX512-VNNI vpdpbusd on u8 = xq + 128 (the 128 * rowsum_j it adds is subtracted);
//         AVX2 vpmaddubsw on |xq| and sign(w, xq) (|pair sums| <= 2 * 127 * 127: no saturation) + vpmaddwd.
//         The integer dot is exact, so both give the same bits.
//   bf16  AVX512-BF16 vdpbf16ps; AVX2 widens bf16 to float32 and chains FMAs (each its own order of the sum).
#pragma once
#include "formats.h"

namespace kangaroo {

// ------------------------------------------------------------------------------------------ float32
// a . b: one 8-wide FMA chain over k, a fixed horizontal sum, then fma over the D % 8 tail (the rule every engine
// output follows, matmul.h). The attention's q . k.
inline float dot_f32(const float* a, const float* b, int64_t D) {
  __m256 acc = _mm256_setzero_ps();
  const int64_t D8 = D & ~int64_t(7);
  for (int64_t t = 0; t < D8; t += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + t), _mm256_loadu_ps(b + t), acc);
  float s = hsum8(acc);
  for (int64_t t = D8; t < D; ++t) s = std::fma(a[t], b[t], s);
  return s;
}

// y[j] += s * (M_j . v) for the R rows j0 .. j0 + R - 1 of M [*, n]: one 8-wide FMA chain a row, a fixed
// horizontal sum, then the n % 8 tail's products added one by one (each rounded, not fma). The packed head's
// LoRA delta (M = B, v = A x) and A x itself (M = A, v = x, s = 1).
template <int R>
inline void add_dots_f32(const float* M, const float* v, int64_t n, float s, int64_t j0, float* y) {
  __m256 acc[R];
  for (int t = 0; t < R; ++t) acc[t] = _mm256_setzero_ps();
  const int64_t n8 = n & ~int64_t(7);
  for (int64_t q = 0; q < n8; q += 8) {
    const __m256 vv = _mm256_loadu_ps(v + q);
    for (int t = 0; t < R; ++t) acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(M + (j0 + t) * n + q), vv, acc[t]);
  }
  for (int t = 0; t < R; ++t) {
    float dot = hsum8(acc[t]);
    for (int64_t q = n8; q < n; ++q) dot += M[(j0 + t) * n + q] * v[q];
    y[j0 + t] += s * dot;
  }
}

// ------------------------------------------------------------------------------------------ the packed head's rows
template <typename W_, typename Out_, int64_t Step>
struct DotTypes {
  using W = W_;        // a weight
  using Out = Out_;    // a row's raw dot (the accumulator type ``Acc`` is each ISA's own)
  static constexpr int64_t kStep = Step;  // values of k a step takes
};

// int8, AVX2: |xq| (u8) times sign(w, xq) (s8) by vpmaddubsw (|pair sums| <= 2 * 127 * 127: no saturation).
struct Int8Avx2 : DotTypes<int8_t, int32_t, 32> {
  using Acc = __m256i;
  struct X { __m256i abs, sign; };
  const uint8_t* ax;   // |xq|
  const int8_t* sx;    // xq (its sign)
  Acc zero() const { return _mm256_setzero_si256(); }
  X load_x(int64_t k) const {
    return {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ax + k)),
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sx + k))};
  }
  Acc madd(Acc acc, const X& x, const W* w) const {
    const __m256i p16 = _mm256_maddubs_epi16(x.abs, _mm256_sign_epi8(_mm256_loadu_si256(
                                                          reinterpret_cast<const __m256i*>(w)), x.sign));
    return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
  }
  Out sum(Acc acc, int64_t) const { return hsum_epi32(acc); }
};

#ifdef KANGAROO_VNNI512
// int8, AVX512-VNNI: u8 = xq + 128 times w by vpdpbusd; the 128 * rowsum_j it adds is subtracted at the end.
struct Int8Vnni : DotTypes<int8_t, int32_t, 64> {
  using Acc = __m512i;
  const uint8_t* xu;
  const int32_t* rowsum;  // [N]
  Acc zero() const { return _mm512_setzero_si512(); }
  __m512i load_x(int64_t k) const { return _mm512_loadu_si512(xu + k); }
  Acc madd(Acc acc, __m512i x, const W* w) const { return _mm512_dpbusd_epi32(acc, x, _mm512_loadu_si512(w)); }
  Out sum(Acc acc, int64_t j) const { return _mm512_reduce_add_epi32(acc) - 128 * rowsum[j]; }
};
#endif

// bf16, AVX2: the weights widened to float32 (a shift into the high half), FMA with bf16(x) widened likewise.
struct Bf16Avx2 : DotTypes<uint16_t, float, 8> {
  using Acc = __m256;
  const float* xf;
  Acc zero() const { return _mm256_setzero_ps(); }
  __m256 load_x(int64_t k) const { return _mm256_loadu_ps(xf + k); }
  Acc madd(Acc acc, __m256 x, const W* w) const {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    return _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)), x, acc);
  }
  Out sum(Acc acc, int64_t) const { return hsum8(acc); }
};

#ifdef KANGAROO_BF16_512
// bf16, AVX512-BF16: vdpbf16ps, pairs of bf16 products accumulated in float32.
struct Bf16Avx512 : DotTypes<uint16_t, float, 32> {
  using Acc = __m512;
  const uint16_t* xb;
  Acc zero() const { return _mm512_setzero_ps(); }
  __m512bh load_x(int64_t k) const { return (__m512bh)_mm512_loadu_si512(xb + k); }
  Acc madd(Acc acc, __m512bh x, const W* w) const { return _mm512_dpbf16_ps(acc, x, (__m512bh)_mm512_loadu_si512(w)); }
  Out sum(Acc acc, int64_t) const { return _mm512_reduce_add_ps(acc); }
};
#endif

// fn(dot) with the int8 dot of x: VNNI where it is compiled in and ``isa`` is 0 (the best), else AVX2.
template <typename Fn>
inline void with_int8_dot(int64_t isa, const Int8Row& x, const int32_t* rowsum, Fn&& fn) {
#ifdef KANGAROO_VNNI512
  if (isa == 0) return fn(Int8Vnni{{}, x.biased.data(), rowsum});
#endif
  (void)rowsum;
  fn(Int8Avx2{{}, x.abs.data(), x.q.data()});
}

// fn(dot) with the bf16 dot of x (``xb``: bf16(x), ``xf``: the same values as floats): AVX512-BF16 where it is
// compiled in and ``isa`` is 0, else AVX2.
template <typename Fn>
inline void with_bf16_dot(int64_t isa, const uint16_t* xb, const float* xf, Fn&& fn) {
#ifdef KANGAROO_BF16_512
  if (isa == 0) return fn(Bf16Avx512{{}, xb});
#endif
  (void)xb;
  fn(Bf16Avx2{{}, xf});
}

}  // namespace kangaroo
