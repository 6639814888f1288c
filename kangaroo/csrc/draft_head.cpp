// The drafter head in a precision this CPU computes fast: x [n, d] -> the drafter's top-k tokens and their
// probabilities, in one call, with no [V] softmax going through Python. Built into the engine's extension by
// kangaroo/cpu_engine.py; the Python side (packing, when to use it) is kangaroo/packed_head.py.
//
// Weights (packed once, by Python): the head's rows [N, Kp], zero-padded from d to Kp = a multiple of 64, as
//   int8   w = round(W / scale_j), scale_j = max|W_j| / 127 (per row), with rowsum_j = sum_k w_jk
//   bf16   W rounded to bfloat16 (round to nearest even)
// Per call, x is quantized the same way (int8: one scale for the row, sx = max|x| / 127; bf16: rounded), so
//   int8   logit_j = float(sum_k xq_k w_jk) * (sx * scale_j)      the integer dot is exact, so every ISA path gives
//                                                                 the same bits (tested against a torch reference)
//   bf16   logit_j = sum_k bf16(x)_k bf16(W)_jk in float32        (the order of the float sum is the ISA's)
// plus an optional float32 LoRA delta s * B_j . (A x) (the drafter head while it learns online: A [r, d], B [N, r]).
// Then max, log-sum-exp and the top-k over the N logits (the logits come back too).
//
// ISA paths, chosen at compile time (-march=native), one kernel per (format, ISA), like tinyBLAS:
//   int8  AVX512-VNNI vpdpbusd on u8 = xq + 128 (the 128 * rowsum_j it adds is subtracted);
//         AVX2 vpmaddubsw on |xq| and sign(w, xq) (|products| <= 2 * 127 * 127, no saturation) + vpmaddwd
//   bf16  AVX512-BF16 vdpbf16ps; AVX2 widens bf16 to float32 and uses FMA
// ``isa`` = 0 takes the best compiled path, 1 forces AVX2 (tests compare the two). A path that is not compiled in
// raises; kangaroo/packed_head.py asks ``draft_head_isa()`` first and otherwise declines to the float32 head.
#include <torch/extension.h>
#include "module.h"
#include "isa.h"
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

constexpr int64_t kPad = 64;   // packed rows are padded to a multiple of this many values
constexpr int kTileRows = 8;   // weight rows per tile: independent accumulator chains
constexpr int kAhead = 4;      // prefetch the weight rows this many tiles ahead

using kangaroo::kAvx2;

inline void prefetch_rows(const void* base, int64_t row_bytes, int64_t at) {
  for (int r = 0; r < kTileRows; ++r)
    _mm_prefetch(static_cast<const char*>(base) + r * row_bytes + at, _MM_HINT_T0);
}

// ------------------------------------------------------------------------------------------ per-ISA helpers
// What a tile needs of a (format, ISA): the type of a weight (W) and of its accumulator (Acc), how many values of
// k one step takes, how to load a step of x, how to multiply-accumulate a step of one weight row, and how to sum
// an accumulator into the raw dot of row j (int32 for int8, float for bf16).

template <typename W_, typename Out_, int64_t Step>
struct Types {
  using W = W_;        // a weight
  using Out = Out_;    // a row's raw dot (the accumulator type ``Acc`` is each ISA's own)
  static constexpr int64_t kStep = Step;  // values of k a step takes
};

// int8, AVX2: |xq| (u8) times sign(w, xq) (s8) by vpmaddubsw (|pair sums| <= 2 * 127 * 127: no saturation).
struct Int8Avx2 : Types<int8_t, int32_t, 32> {
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
  Out sum(Acc acc, int64_t) const { return kangaroo::hsum_epi32(acc); }
};

#ifdef KANGAROO_VNNI512
// int8, AVX512-VNNI: u8 = xq + 128 times w by vpdpbusd; the 128 * rowsum_j it adds is subtracted at the end.
struct Int8Vnni : Types<int8_t, int32_t, 64> {
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
struct Bf16Avx2 : Types<uint16_t, float, 8> {
  using Acc = __m256;
  const float* xf;
  Acc zero() const { return _mm256_setzero_ps(); }
  __m256 load_x(int64_t k) const { return _mm256_loadu_ps(xf + k); }
  Acc madd(Acc acc, __m256 x, const W* w) const {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w));
    return _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)), x, acc);
  }
  Out sum(Acc acc, int64_t) const { return kangaroo::hsum8(acc); }
};

#ifdef KANGAROO_BF16_512
// bf16, AVX512-BF16: vdpbf16ps, pairs of bf16 products accumulated in float32.
struct Bf16Avx512 : Types<uint16_t, float, 32> {
  using Acc = __m512;
  const uint16_t* xb;
  Acc zero() const { return _mm512_setzero_ps(); }
  __m512bh load_x(int64_t k) const { return (__m512bh)_mm512_loadu_si512(xb + k); }
  Acc madd(Acc acc, __m512bh x, const W* w) const { return _mm512_dpbf16_ps(acc, x, (__m512bh)_mm512_loadu_si512(w)); }
  Out sum(Acc acc, int64_t) const { return _mm512_reduce_add_ps(acc); }
};
#endif

// ------------------------------------------------------------------------------------------ the tile
// out[r] = the raw dot of x with weight rows j0 .. j0 + R - 1 (R <= kTileRows independent accumulator chains),
// prefetching the rows at ``pf`` (or none) one cache line per row as the loop crosses each line of k.
template <int R, typename Ops>
void tile(const Ops& ops, int64_t j0, const typename Ops::W* w, int64_t Kp, typename Ops::Out* out,
          const typename Ops::W* pf) {
  constexpr int64_t kLine = 64 / sizeof(typename Ops::W);
  typename Ops::Acc acc[R];
  for (int r = 0; r < R; ++r) acc[r] = ops.zero();
  for (int64_t k = 0; k < Kp; k += Ops::kStep) {
    if (pf && k % kLine == 0) prefetch_rows(pf, Kp * sizeof(typename Ops::W), k * sizeof(typename Ops::W));
    const auto x = ops.load_x(k);
    for (int r = 0; r < R; ++r) acc[r] = ops.madd(acc[r], x, w + r * Kp + k);
  }
  for (int r = 0; r < R; ++r) out[r] = ops.sum(acc[r], j0 + r);
}

// y[j] += s * M_j . v for the R rows j0 .. j0 + R - 1 of M [*, n] (float32, one 8-wide FMA chain a row): the LoRA
// delta (M = B, v = A x) and A x itself (M = A, v = x).
template <int R>
void add_dots(const float* M, const float* v, int64_t n, float s, int64_t j0, float* y) {
  __m256 acc[R];
  for (int t = 0; t < R; ++t) acc[t] = _mm256_setzero_ps();
  const int64_t n8 = n & ~int64_t(7);
  for (int64_t q = 0; q < n8; q += 8) {
    const __m256 vv = _mm256_loadu_ps(v + q);
    for (int t = 0; t < R; ++t) acc[t] = _mm256_fmadd_ps(_mm256_loadu_ps(M + (j0 + t) * n + q), vv, acc[t]);
  }
  for (int t = 0; t < R; ++t) {
    float dot = kangaroo::hsum8(acc[t]);
    for (int64_t q = n8; q < n; ++q) dot += M[(j0 + t) * n + q] * v[q];
    y[j0 + t] += s * dot;
  }
}

// What turns a tile's raw dots into logits: the dequantizing factor per row, then the LoRA delta.
struct Finish {
  const float* scale;  // per-row factor (int8: sx * scale_j, made per call), or null (bf16)
  const float* B;      // [N, r] or null
  const float* u;      // A x [r]
  int64_t r;
  float s;

  template <int R, typename T>
  void apply(const T* dots, int64_t j0, float* y) const {
    for (int t = 0; t < R; ++t) y[j0 + t] = scale ? float(dots[t]) * scale[j0 + t] : float(dots[t]);
    if (B) add_dots<R>(B, u, r, s, j0, y);
  }
};

// y [N] for one input row: tiles of kTileRows weight rows, split over threads; the last rows one at a time.
template <typename Ops>
void logits_into(const Ops& ops, const typename Ops::W* w, int64_t N, int64_t Kp, const Finish& fin, float* y) {
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  at::parallel_for(0, tiles, 16, [&](int64_t t0, int64_t t1) {
    typename Ops::Out dots[kTileRows];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * kTileRows;
      const bool ahead = j0 + (kAhead + 1) * kTileRows <= N;
      if (j0 + kTileRows <= N) {
        tile<kTileRows>(ops, j0, w + j0 * Kp, Kp, dots, ahead ? w + (j0 + kAhead * kTileRows) * Kp : nullptr);
        fin.apply<kTileRows>(dots, j0, y);
        continue;
      }
      for (int64_t j = j0; j < N; ++j) {
        tile<1>(ops, j, w + j * Kp, Kp, dots, nullptr);
        fin.apply<1>(dots, j, y);
      }
    }
  });
}

// ------------------------------------------------------------------------------------------ softmax statistics
// e^x for 8 floats: 2^(x log2 e) split into an integer power (built in the exponent bits) and 2^f, f in
// [-0.5, 0.5], by a degree-6 polynomial (rel. error ~2e-7); inputs under -87 give 0.
inline __m256 exp_ps(__m256 x) {
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

// The top-k of y [N] (largest first, lower index first among equals) and log(sum_j e^(y_j - max)).
void top_k(const float* y, int64_t N, int64_t k, int64_t* idx, float* val, float* lse) {
  std::vector<std::pair<float, int64_t>> best;  // kept sorted, largest first
  best.reserve(k + 1);
  for (int64_t j = 0; j < N; ++j) {
    if (int64_t(best.size()) == k && !(y[j] > best.back().first)) continue;
    auto at = std::upper_bound(best.begin(), best.end(), y[j],
                               [](float v, const std::pair<float, int64_t>& b) { return v > b.first; });
    best.insert(at, {y[j], j});
    if (int64_t(best.size()) > k) best.pop_back();
  }
  const float m = best.front().first;
  const __m256 mv = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= N; j += 8) acc = _mm256_add_ps(acc, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(y + j), mv)));
  float sum = kangaroo::hsum8(acc);
  for (; j < N; ++j) sum += std::exp(y[j] - m);
  *lse = std::log(sum);
  for (int64_t t = 0; t < k; ++t) {
    idx[t] = best[t].second;
    val[t] = best[t].first;
  }
}

// idx [n, k] int64 and prob [n, k] float32 from logits y [n, N].
std::vector<torch::Tensor> top_k_probs(const torch::Tensor& y, int64_t k) {
  const int64_t n = y.size(0), N = y.size(1);
  auto idx = torch::empty({n, k}, y.options().dtype(torch::kInt64));
  auto prob = torch::empty({n, k}, y.options());
  for (int64_t i = 0; i < n; ++i) {
    float lse = 0.f;
    float* p = prob.data_ptr<float>() + i * k;
    top_k(y.data_ptr<float>() + i * N, N, k, idx.data_ptr<int64_t>() + i * k, p, &lse);
    const float m = p[0];
    for (int64_t t = 0; t < k; ++t) p[t] = std::exp(p[t] - m - lse);
  }
  return {idx, prob};
}

// ------------------------------------------------------------------------------------------ entry points
struct Lora {
  std::vector<float> u;  // A x of the current row
  const float* B = nullptr;
  int64_t r = 0;
  float s = 0.f;
};

Lora lora_of(const c10::optional<torch::Tensor>& A, const c10::optional<torch::Tensor>& B, double s, int64_t N,
             int64_t d) {
  Lora l;
  if (!A.has_value() || !B.has_value()) return l;
  TORCH_CHECK(A->scalar_type() == torch::kFloat32 && B->scalar_type() == torch::kFloat32 && A->is_contiguous() &&
                  B->is_contiguous(), "LoRA A and B must be contiguous float32");
  TORCH_CHECK(A->dim() == 2 && A->size(1) == d && B->dim() == 2 && B->size(0) == N && B->size(1) == A->size(0),
              "LoRA shapes: need A [r, d] and B [N, r]");
  l.r = A->size(0);
  l.B = B->data_ptr<float>();
  l.s = float(s);
  l.u.resize(l.r);
  return l;
}

void lora_u(Lora& l, const c10::optional<torch::Tensor>& A, const float* x, int64_t d) {
  std::fill(l.u.begin(), l.u.end(), 0.f);
  const float* a = A->data_ptr<float>();
  int64_t q = 0;
  for (; q + kTileRows <= l.r; q += kTileRows) add_dots<kTileRows>(a, x, d, 1.f, q, l.u.data());
  for (; q < l.r; ++q) add_dots<1>(a, x, d, 1.f, q, l.u.data());
}

int64_t check_common(const torch::Tensor& x, const torch::Tensor& w, int64_t k, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x must be [n, d] float32");
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), "packed weights must be a contiguous [N, Kp] matrix");
  const int64_t d = x.size(1), Kp = w.size(1);
  TORCH_CHECK(Kp % kPad == 0 && Kp >= d && Kp < d + kPad, "packed rows must be d padded to a multiple of 64");
  TORCH_CHECK(k >= 1 && k <= std::min<int64_t>(w.size(0), 64), "k must lie in 1..min(N, 64)");
  TORCH_CHECK(isa == 0 || isa == kAvx2, "isa: 0 (best compiled) or 1 (AVX2)");
  return Kp;
}

std::vector<torch::Tensor> finish_call(torch::Tensor y, int64_t k) {
  auto out = top_k_probs(y, k);
  out.push_back(y);
  return out;
}

// x [n, d] float32; wq [N, Kp] int8; scale [N] float32; rowsum [N] int32 -> idx [n, k], prob [n, k], logits [n, N]
std::vector<torch::Tensor> head_int8(torch::Tensor x, torch::Tensor wq, torch::Tensor scale, torch::Tensor rowsum,
                                     c10::optional<torch::Tensor> A, c10::optional<torch::Tensor> B, double s,
                                     int64_t k, int64_t isa) {
  const int64_t Kp = check_common(x, wq, k, isa), n = x.size(0), d = x.size(1), N = wq.size(0);
  TORCH_CHECK(wq.scalar_type() == torch::kInt8 && scale.scalar_type() == torch::kFloat32 &&
                  rowsum.scalar_type() == torch::kInt32 && scale.numel() == N && rowsum.numel() == N &&
                  scale.is_contiguous() && rowsum.is_contiguous(), "int8 head: wq int8 [N, Kp], scale float32 [N], "
                  "rowsum int32 [N]");
  Lora l = lora_of(A, B, s, N, d);
  auto y = torch::empty({n, N}, x.options());
  std::vector<int8_t> xq(Kp, 0);
  std::vector<uint8_t> xa(Kp, 0), xu(Kp, 128);
  std::vector<float> f(N);
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x.data_ptr<float>() + i * d;
    float amax = 0.f;
    for (int64_t t = 0; t < d; ++t) amax = std::max(amax, std::fabs(xi[t]));
    const float sx = amax > 0.f ? amax / 127.f : 1.f;
    for (int64_t t = 0; t < d; ++t) {
      const int v = int(std::nearbyint(xi[t] / sx));
      xq[t] = int8_t(v);
      xa[t] = uint8_t(std::abs(v));
      xu[t] = uint8_t(v + 128);
    }
    for (int64_t j = 0; j < N; ++j) f[j] = sx * scale.data_ptr<float>()[j];
    if (l.B) lora_u(l, A, xi, d);
    const Finish fin{f.data(), l.B, l.u.data(), l.r, l.s};
    float* yi = y.data_ptr<float>() + i * N;
    const int8_t* w = wq.data_ptr<int8_t>();
#ifdef KANGAROO_VNNI512
    if (isa == 0) {
      logits_into(Int8Vnni{{}, xu.data(), rowsum.data_ptr<int32_t>()}, w, N, Kp, fin, yi);
      continue;
    }
#endif
    logits_into(Int8Avx2{{}, xa.data(), xq.data()}, w, N, Kp, fin, yi);
  }
  return finish_call(y, k);
}

// x [n, d] float32; wb [N, Kp] bfloat16 -> idx [n, k], prob [n, k], logits [n, N]
std::vector<torch::Tensor> head_bf16(torch::Tensor x, torch::Tensor wb, c10::optional<torch::Tensor> A,
                                     c10::optional<torch::Tensor> B, double s, int64_t k, int64_t isa) {
  const int64_t Kp = check_common(x, wb, k, isa), n = x.size(0), d = x.size(1), N = wb.size(0);
  TORCH_CHECK(wb.scalar_type() == torch::kBFloat16, "bf16 head: wb must be bfloat16 [N, Kp]");
  Lora l = lora_of(A, B, s, N, d);
  auto y = torch::empty({n, N}, x.options());
  auto xb = torch::zeros({Kp}, x.options().dtype(torch::kBFloat16));
  const uint16_t* w = reinterpret_cast<const uint16_t*>(wb.data_ptr<at::BFloat16>());
  std::vector<float> xf(Kp, 0.f);
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x.data_ptr<float>() + i * d;
    xb.narrow(0, 0, d).copy_(x[i]);  // round to nearest even, as torch rounds the weights
    const at::BFloat16* xbp = xb.data_ptr<at::BFloat16>();
    for (int64_t t = 0; t < Kp; ++t) xf[t] = float(xbp[t]);
    if (l.B) lora_u(l, A, xi, d);
    const Finish fin{nullptr, l.B, l.u.data(), l.r, l.s};
    float* yi = y.data_ptr<float>() + i * N;
#ifdef KANGAROO_BF16_512
    if (isa == 0) {
      logits_into(Bf16Avx512{{}, reinterpret_cast<const uint16_t*>(xbp)}, w, N, Kp, fin, yi);
      continue;
    }
#endif
    logits_into(Bf16Avx2{{}, xf.data()}, w, N, Kp, fin, yi);
  }
  return finish_call(y, k);
}

// The top-k and their probabilities of logits rows y [n, N] (e.g. the verifier's row of a committed token).
std::vector<torch::Tensor> softmax_top_k(torch::Tensor y, int64_t k) {
  TORCH_CHECK(y.dim() == 2 && y.scalar_type() == torch::kFloat32, "y must be [n, N] float32");
  TORCH_CHECK(k >= 1 && k <= std::min<int64_t>(y.size(1), 64), "k must lie in 1..min(N, 64)");
  return top_k_probs(y.contiguous(), k);
}

}  // namespace

static void register_draft_head(pybind11::module_& m) {
  m.def("draft_head_isa", &kangaroo::compiled_head_paths, "bit flags of the compiled drafter-head paths: 1 AVX2, 2 VNNI-512, 4 BF16-512");
  m.def("head_int8", &head_int8, "int8 drafter head (+ float32 LoRA delta) -> top-k ids, probabilities, logits",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("head_bf16", &head_bf16, "bf16 drafter head (+ float32 LoRA delta) -> top-k ids, probabilities, logits",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("softmax_top_k", &softmax_top_k, "top-k ids and softmax probabilities of logits rows");
}
static kangaroo::Bind bind_draft_head_once(register_draft_head);
