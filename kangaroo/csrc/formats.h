// The row formats the engine reads, in one place. Two families:
//
// The engine's exact formats, read as stored and expanded in registers to float32, the exact values that
// dequantization gives (gguf-py's, which transformers uses to load a .gguf):
//
//   F32    4 bytes a weight
//   BF16   2 bytes; float = bits << 16                                       (exact)
//   F16    2 bytes; IEEE half -> float (F16C)                                 (exact)
//   Q8_0   blocks of 32: f16 d, int8 q[32];            w = d * q
//   Q4_0   blocks of 32: f16 d, uint8 qs[16];          w = d * (q - 8)
//   Q4_1   blocks of 32: f16 d, f16 m, uint8 qs[16];   w = (d * q) + m       (two roundings: the product first)
//          (Q4: q of weights 0..15 = low nibbles of qs[0..15], of weights 16..31 = their high nibbles)
//
// d has 11 significant bits and |q| <= 128, so d * q is exact in float32: the product's rounding is a no-op.
// Only the sign of a zero depends on the order (d * (q - 8) at q = 8 is -0 for d < 0; d*q - 8d would be +0),
// so each format is expanded in gguf-py's order.
//
// ``Expand<F>::group`` turns one group of stored bytes of ``kRowsPerVec`` rows (a Q block: 32 weights, 4 chunks
// of 8; a float format: one chunk of 8) into ``Vec``s, chunk c of row r in half r of out[c];
// ``Expand<F>::value`` is the same weight as a scalar (tails, tests).
//
// The packed drafter head's formats (the end of this file), which round: only the drafter may change precision.
#pragma once
#include <vector>

#include "isa.h"

namespace kangaroo {

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

// ------------------------------------------------------------------------------------------ the engine's formats
enum class Format : int { F32 = 0, BF16 = 1, F16 = 2, Q8_0 = 3, Q4_0 = 4, Q4_1 = 5 };

// Bytes a row of ``cols`` weights takes (0: not a whole number of blocks).
inline int64_t row_bytes(Format f, int64_t cols) {
  switch (f) {
    case Format::F32: return 4 * cols;
    case Format::BF16:
    case Format::F16: return 2 * cols;
    case Format::Q8_0: return cols % 32 ? 0 : cols / 32 * 34;
    case Format::Q4_0: return cols % 32 ? 0 : cols / 32 * 18;
    case Format::Q4_1: return cols % 32 ? 0 : cols / 32 * 20;
  }
  return 0;
}

// A weight matrix [rows, cols] as stored, row-major (rows of blocks for the Q formats).
struct Mat {
  Format fmt;
  const uint8_t* data;
  int64_t rows, cols, stride;  // stride: bytes per row
  const uint8_t* row(int64_t j) const { return data + j * stride; }
};

template <Format F>
struct Expand;

template <>
struct Expand<Format::F32> {
  static constexpr int kChunks = 1;
  static constexpr int64_t kGroupBytes = 32;
  static float value(const uint8_t* row, int64_t k) {
    float f;
    std::memcpy(&f, row + 4 * k, 4);
    return f;
  }
  static void group(const uint8_t* const* r, Vec* out) { out[0] = vload_rows(r); }
};

// bfloat16 (the float's high 16 bits) and float16 (F16C): 8 halves of each row, one exact conversion
template <Format F>
struct ExpandHalf {
  static constexpr int kChunks = 1;
  static constexpr int64_t kGroupBytes = 16;
  static float value(const uint8_t* row, int64_t k) {
    return F == Format::BF16 ? bf16_to_f32(row + 2 * k) : f16_to_f32(row + 2 * k);
  }
  static void group(const uint8_t* const* r, Vec* out) { out[0] = vload_half_rows<F == Format::BF16>(r); }
};
template <>
struct Expand<Format::BF16> : ExpandHalf<Format::BF16> {};
template <>
struct Expand<Format::F16> : ExpandHalf<Format::F16> {};

// The f16 scalars at the start of each row's block as floats: lanes 2r, 2r+1 = the first two halves of row r
// (Q4_1: d, m), or lane r = the first half of row r (``two`` false: d).
template <bool two>
inline __m128 block_scalars(const uint8_t* const* r) {
  int32_t a, b = 0;
  if (two) {
    std::memcpy(&a, r[0], 4);
    std::memcpy(&b, r[kRowsPerVec - 1], 4);
  } else {
    uint16_t a0, b0;
    std::memcpy(&a0, r[0], 2);
    std::memcpy(&b0, r[kRowsPerVec - 1], 2);
    a = int32_t(uint32_t(a0) | uint32_t(b0) << 16);
  }
  return _mm_cvtph_ps(_mm_insert_epi32(_mm_cvtsi32_si128(a), b, 1));
}

template <>
struct Expand<Format::Q8_0> {
  static constexpr int kChunks = 4;
  static constexpr int64_t kGroupBytes = 34;
  static float value(const uint8_t* row, int64_t k) {
    const uint8_t* b = row + k / 32 * kGroupBytes;
    return f16_to_f32(b) * float(int8_t(b[2 + k % 32]));
  }
  static void group(const uint8_t* const* r, Vec* out) {
    const Vec dv = vspread(block_scalars<false>(r), 0, 1);
    const uint8_t* r1 = r[kRowsPerVec - 1];
    for (int h = 0; h < 2; ++h) {  // weights 0..15, then 16..31
      const __m128i a = load16(r[0] + 2 + 16 * h), b = load16(r1 + 2 + 16 * h);
      out[2 * h] = vmul(dv, i8_to_vec(lo8(a, b)));
      out[2 * h + 1] = vmul(dv, i8_to_vec(hi8(a, b)));
    }
  }
};

// Q4_0: w = d * (q - 8) (q - 8 as an integer: q = 8 gives d * 0, whose sign is d's); Q4_1: w = d * q + m.
template <Format F>
struct ExpandQ4 {
  static constexpr int kChunks = 4;
  static constexpr int64_t kHeader = F == Format::Q4_1 ? 4 : 2;
  static constexpr int64_t kGroupBytes = kHeader + 16;
  static float value(const uint8_t* row, int64_t k) {
    const uint8_t* b = row + k / 32 * kGroupBytes;
    const int i = int(k % 32);
    const int q = i < 16 ? (b[kHeader + i] & 15) : (b[kHeader + i - 16] >> 4);
    const float d = f16_to_f32(b);
    if (F == Format::Q4_0) return d * float(q - 8);
    const float dq = d * float(q);
    return dq + f16_to_f32(b + 2);
  }
  static void group(const uint8_t* const* r, Vec* out) {
    const __m128 s = block_scalars<F == Format::Q4_1>(r);
    const Vec dv = F == Format::Q4_1 ? vspread(s, 0, 2) : vspread(s, 0, 1);
    const __m128i a = load16(r[0] + kHeader), b = load16(r[kRowsPerVec - 1] + kHeader);
    const __m128i lo = lo8(a, b), hi = hi8(a, b), nib = _mm_set1_epi8(15);
    const __m128i q[4] = {_mm_and_si128(lo, nib), _mm_and_si128(hi, nib), _mm_and_si128(_mm_srli_epi16(lo, 4), nib),
                          _mm_and_si128(_mm_srli_epi16(hi, 4), nib)};
    if (F == Format::Q4_0) {
      for (int c = 0; c < 4; ++c) out[c] = vmul(dv, i8_to_vec(_mm_sub_epi8(q[c], _mm_set1_epi8(8))));
      return;
    }
    // (d * q) + m as one fma: d * q is exact, so the fused result is the two-step one, bit for bit (zeros too:
    // an exact -0 product plus m rounds as the rounded -0 plus m does)
    const Vec mv = vspread(s, 1, 3);
    for (int c = 0; c < 4; ++c) out[c] = vfma(dv, u8_to_vec(q[c]), mv);
  }
};
template <>
struct Expand<Format::Q4_0> : ExpandQ4<Format::Q4_0> {};
template <>
struct Expand<Format::Q4_1> : ExpandQ4<Format::Q4_1> {};

// ------------------------------------------------------------------------------------------ the packed head's formats
// The drafter head's rows in a precision this CPU multiplies fast (kangaroo/packed_head.py packs them once,
// packed_head.cpp multiplies): [N, Kp], zero-padded from d to Kp = a multiple of kHeadPad values, as
//   int8   w = round(W / scale_j), scale_j = max|W_j| / 127 (per row), with rowsum_j = sum_k w_jk
//   bf16   W rounded to bfloat16 (round to nearest even)
// and each input row is put in the same format per call (int8: ``Int8Row``; bf16: rounded by torch, as the rows
// were). Their dots are dot.h's.
constexpr int64_t kHeadPad = 64;

// An input row x [d] in int8 with one scale, scale = max|x| / 127 (1 for x = 0), q = nearbyint(x / scale), in the
// three forms the int8 dots read: q, |q| and q + 128 (zero past d).
struct Int8Row {
  float scale = 1.f;
  std::vector<int8_t> q;
  std::vector<uint8_t> abs, biased;

  explicit Int8Row(int64_t Kp) : q(Kp, 0), abs(Kp, 0), biased(Kp, 128) {}

  void quantize(const float* x, int64_t d) {
    float amax = 0.f;
    for (int64_t t = 0; t < d; ++t) amax = std::max(amax, std::fabs(x[t]));
    scale = amax > 0.f ? amax / 127.f : 1.f;
    for (int64_t t = 0; t < d; ++t) {
      const int v = int(std::nearbyint(x[t] / scale));
      q[t] = int8_t(v);
      abs[t] = uint8_t(std::abs(v));
      biased[t] = uint8_t(v + 128);
    }
  }
};

}  // namespace kangaroo
