// The ISA a build targets, and the per-ISA helpers the kernels are written with. In the style of llamafile's
// tinyBLAS, the kernels are templates over these helpers (load, multiply-add, horizontal sum), specialised at
// compile time (-march=native); a kernel path whose instructions were not compiled in is not offered, and its
// caller falls back (packed_head.cpp: to the AVX2 dot; kangaroo/packed_head.py: to the float32 head).
//
//   KANGAROO_AVX512     AVX-512 F/BW/VL/DQ: ``Vec`` is a zmm holding two weight rows' 8-wide chunks
//   KANGAROO_VNNI512    and AVX512-VNNI: the packed head's int8 dot by vpdpbusd
//   KANGAROO_BF16_512   and AVX512-BF16: the packed head's bf16 dot by vdpbf16ps
//   (none)              AVX2 + FMA + F16C, the least the engine runs on: ``Vec`` is a ymm holding one row
//
// KANGAROO_ENGINE_ISA=avx2 compiles with -mno-avx512f, which leaves all three undefined (the AVX2 build, on an
// AVX-512 CPU). Every #if on the ISA is here, but for the paths only one ISA has (dot.h's VNNI and BF16 dots)
// and the matmul's tile shapes (matmul.cpp).
//
// ``Vec`` holds ``kRowsPerVec`` weight rows' 8-wide chunks side by side: with AVX-512 rows j and j+1 at the
// same k (lanes 0-7 and 8-15) against the input's chunk broadcast to both halves; with AVX2 one row. Either way
// each half is one 8-lane FMA chain over k ascending, so both ISAs compute every output with the very same float
// operations (the same bits).
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
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define KANGAROO_VNNI512 1
#endif
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#define KANGAROO_BF16_512 1
#endif

namespace kangaroo {

#ifdef KANGAROO_AVX512
constexpr const char* kIsaName = "avx512";
#else
constexpr const char* kIsaName = "avx2";
#endif

// The packed head's dot paths compiled in, as bit flags (its binding ``packed_head_isa``).
enum HeadPath : int64_t { kAvx2 = 1, kVnni512 = 2, kBf16_512 = 4 };
inline int64_t compiled_head_paths() {
  int64_t f = 0;
#ifdef __AVX2__
  f |= kAvx2;
#endif
#ifdef KANGAROO_VNNI512
  f |= kVnni512;
#endif
#ifdef KANGAROO_BF16_512
  f |= kBf16_512;
#endif
  return f;
}

// ------------------------------------------------------------------------------------------ horizontal sums
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int32_t hsum_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// ------------------------------------------------------------------------------------------ Vec
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

// ------------------------------------------------------------------------------------------ loading rows into a Vec
// What the row formats (formats.h) expand with: 8 values of each of the ``kRowsPerVec`` rows r[0..] side by side.

inline __m128i load16(const uint8_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }

// 8 floats of each row
inline Vec vload_rows(const uint8_t* const* r) {
#ifdef KANGAROO_AVX512
  return vjoin(_mm256_loadu_ps(reinterpret_cast<const float*>(r[0])),
               _mm256_loadu_ps(reinterpret_cast<const float*>(r[1])));
#else
  return _mm256_loadu_ps(reinterpret_cast<const float*>(r[0]));
#endif
}

// 8 halves (bfloat16 when ``bf16``, else IEEE float16) of each row, as floats: exact conversions
template <bool bf16>
inline Vec vload_half_rows(const uint8_t* const* r) {
  const __m128i a = load16(r[0]);
#ifdef KANGAROO_AVX512
  const __m256i ab = _mm256_inserti128_si256(_mm256_castsi128_si256(a), load16(r[1]), 1);
  return bf16 ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(ab), 16)) : _mm512_cvtph_ps(ab);
#else
  return bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(a), 16)) : _mm256_cvtph_ps(a);
#endif
}

// int -> float of 8 quants per row (8 bytes of row r in bytes 8r..8r+7 of q), signed or unsigned
#ifdef KANGAROO_AVX512
inline Vec u8_to_vec(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q)); }
inline Vec i8_to_vec(__m128i q) { return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q)); }
// the low 8 bytes of a (row 0) and of b (row 1) side by side; the high 8 bytes likewise
inline __m128i lo8(__m128i a, __m128i b) { return _mm_unpacklo_epi64(a, b); }
inline __m128i hi8(__m128i a, __m128i b) { return _mm_unpackhi_epi64(a, b); }
#else
inline Vec u8_to_vec(__m128i q) { return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)); }
inline Vec i8_to_vec(__m128i q) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)); }
inline __m128i lo8(__m128i a, __m128i) { return a; }
inline __m128i hi8(__m128i a, __m128i) { return _mm_srli_si128(a, 8); }
#endif

}  // namespace kangaroo
