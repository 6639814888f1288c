// The packed drafter head's kernel: hk [n, d] -> the drafter's top-k tokens and their probabilities, in one call,
// with no [V] softmax going through Python. The Python side (packing, when to use it) is kangaroo/packed_head.py;
// the LoRA drafter head it packs is kangaroo/drafter_head.py.
//
// What is here: the head's tiling (eight weight rows a tile, each its own accumulator chain, prefetched four tiles
// ahead, tiles split over threads), the LoRA delta and the binding. What it is made of lives with its kind:
//   the rows' formats (int8 with a per-row scale, bf16; the input row quantized per call)   formats.h
//   their dot products, one per (format, ISA), and which one a build offers               dot.h, isa.h
//   the top-k and the softmax probabilities of the logits                                   top_k.cpp
//
//   int8   logit_j = float(sum_k xq_k w_jk) * (sx * scale_j)      the integer dot is exact, so every ISA path gives
//                                                                 the same bits (tested against a torch reference)
//   bf16   logit_j = sum_k bf16(x)_k bf16(W)_jk in float32        (the order of the float sum is the ISA's)
// plus an optional float32 LoRA delta s * B_j . (A x) (the drafter head while it learns online: A [r, d], B [N, r]).
// Then max, log-sum-exp and the top-k over the N logits (the logits come back too).
//
// ``isa`` = 0 takes the best compiled path, 1 forces AVX2 (tests compare the two); ``packed_head_isa()`` says
// which paths this build has.
#include <ATen/Parallel.h>

#include "dot.h"
#include "module.h"
#include "top_k.h"

namespace kangaroo {
namespace {

constexpr int kTileRows = 8;   // weight rows per tile: independent accumulator chains
constexpr int kAhead = 4;      // prefetch the weight rows this many tiles ahead

inline void prefetch_rows(const void* base, int64_t row_bytes, int64_t at) {
  for (int r = 0; r < kTileRows; ++r)
    _mm_prefetch(static_cast<const char*>(base) + r * row_bytes + at, _MM_HINT_T0);
}

// ------------------------------------------------------------------------------------------ the tile
// out[r] = the raw dot of x with weight rows j0 .. j0 + R - 1 (R <= kTileRows independent accumulator chains),
// prefetching the rows at ``pf`` (or none) one cache line per row as the loop crosses each line of k.
template <int R, typename Dot>
void tile(const Dot& dot, int64_t j0, const typename Dot::W* w, int64_t Kp, typename Dot::Out* out,
          const typename Dot::W* pf) {
  constexpr int64_t kLine = 64 / sizeof(typename Dot::W);
  typename Dot::Acc acc[R];
  for (int r = 0; r < R; ++r) acc[r] = dot.zero();
  for (int64_t k = 0; k < Kp; k += Dot::kStep) {
    if (pf && k % kLine == 0) prefetch_rows(pf, Kp * sizeof(typename Dot::W), k * sizeof(typename Dot::W));
    const auto x = dot.load_x(k);
    for (int r = 0; r < R; ++r) acc[r] = dot.madd(acc[r], x, w + r * Kp + k);
  }
  for (int r = 0; r < R; ++r) out[r] = dot.sum(acc[r], j0 + r);
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
    if (B) add_dots_f32<R>(B, u, r, s, j0, y);
  }
};

// y [N] for one input row: tiles of kTileRows weight rows, split over threads; the last rows one at a time.
template <typename Dot>
void logits_into(const Dot& dot, const typename Dot::W* w, int64_t N, int64_t Kp, const Finish& fin, float* y) {
  const int64_t tiles = (N + kTileRows - 1) / kTileRows;
  at::parallel_for(0, tiles, 16, [&](int64_t t0, int64_t t1) {
    typename Dot::Out dots[kTileRows];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j0 = t * kTileRows;
      const bool ahead = j0 + (kAhead + 1) * kTileRows <= N;
      if (j0 + kTileRows <= N) {
        tile<kTileRows>(dot, j0, w + j0 * Kp, Kp, dots, ahead ? w + (j0 + kAhead * kTileRows) * Kp : nullptr);
        fin.apply<kTileRows>(dots, j0, y);
        continue;
      }
      for (int64_t j = j0; j < N; ++j) {
        tile<1>(dot, j, w + j * Kp, Kp, dots, nullptr);
        fin.apply<1>(dots, j, y);
      }
    }
  });
}

// ------------------------------------------------------------------------------------------ the LoRA delta
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
  for (; q + kTileRows <= l.r; q += kTileRows) add_dots_f32<kTileRows>(a, x, d, 1.f, q, l.u.data());
  for (; q < l.r; ++q) add_dots_f32<1>(a, x, d, 1.f, q, l.u.data());
}

// ------------------------------------------------------------------------------------------ entry points
int64_t check_common(const torch::Tensor& x, const torch::Tensor& w, int64_t k, int64_t isa) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous(), "x must be [n, d] float32");
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), "packed weights must be a contiguous [N, Kp] matrix");
  const int64_t d = x.size(1), Kp = w.size(1);
  TORCH_CHECK(Kp % kHeadPad == 0 && Kp >= d && Kp < d + kHeadPad, "packed rows must be d padded to a multiple of 64");
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
  Int8Row xr(Kp);
  std::vector<float> f(N);
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x.data_ptr<float>() + i * d;
    xr.quantize(xi, d);
    for (int64_t j = 0; j < N; ++j) f[j] = xr.scale * scale.data_ptr<float>()[j];
    if (l.B) lora_u(l, A, xi, d);
    const Finish fin{f.data(), l.B, l.u.data(), l.r, l.s};
    float* yi = y.data_ptr<float>() + i * N;
    with_int8_dot(isa, xr, rowsum.data_ptr<int32_t>(),
                  [&](const auto& dot) { logits_into(dot, wq.data_ptr<int8_t>(), N, Kp, fin, yi); });
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
    with_bf16_dot(isa, reinterpret_cast<const uint16_t*>(xbp), xf.data(),
                  [&](const auto& dot) { logits_into(dot, w, N, Kp, fin, yi); });
  }
  return finish_call(y, k);
}

void bind(pybind11::module_& m) {
  m.def("packed_head_isa", &compiled_head_paths,
        "bit flags of the compiled packed-head paths: 1 AVX2, 2 VNNI-512, 4 BF16-512");
  m.def("head_int8", &head_int8, "int8 drafter head (+ float32 LoRA delta) -> top-k ids, probabilities, logits",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("head_bf16", &head_bf16, "bf16 drafter head (+ float32 LoRA delta) -> top-k ids, probabilities, logits",
        pybind11::call_guard<pybind11::gil_scoped_release>());
}
Bind bind_once(bind);

}  // namespace
}  // namespace kangaroo
