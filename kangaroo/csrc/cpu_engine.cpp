// The lean CPU engine: a Llama decoder stack for a few rows (one decode token, a drafted block to verify),
// float32, AVX2 + FMA. Built on first use by kangaroo/cpu_engine.py (torch.utils.cpp_extension).
//
// Why: on a CPU a decode step is bound by reading the weights once. A BLAS gemm for 2..16 rows against a big
// weight costs 1.3-4x its 1-row gemv, and 30 layers x ~25 eager ops of Python dispatch add milliseconds. Here
// every weight row is read once per call and dotted with all n rows while it sits in L1, and a whole stack of
// layers runs in one call.
//
// Batch invariance, the property losslessness rests on: every output value is computed by the same sequence
// of float operations whatever the number of rows n, the row's place in the call and the thread count
// (a dot product is one 8-wide FMA chain over k, then a fixed horizontal sum; attention for a query walks its
// keys in order). So verifying n tokens in one pass gives bit-for-bit the logits of n one-token greedy steps.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <array>
#include <cmath>
#include <utility>
#include <vector>

namespace {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#ifndef KANGAROO_PF_BLOCKS
#define KANGAROO_PF_BLOCKS 4
#endif
#ifndef KANGAROO_ROWS_X
#define KANGAROO_ROWS_X 2
#define KANGAROO_ROWS_W 8
#endif

// out[i * ldo + j] = dot(x[i], w[j]) for i < NX rows of x and j < NW rows of w, each over K values.
// ``pf`` (or null): weight rows to prefetch meanwhile, one cache line per row every 16 values of k, so that
// memory streams the next weights while the FMAs work on these (without it the two costs add up).
template <int NX, int NW>
void tile(const float* x, int64_t K, const float* w, float* out, int64_t ldo, const float* pf) {
  __m256 acc[NX][NW];
  for (int i = 0; i < NX; ++i)
    for (int j = 0; j < NW; ++j) acc[i][j] = _mm256_setzero_ps();
  const int64_t K8 = K & ~int64_t(7);
  for (int64_t k = 0; k < K8; k += 8) {
    if (pf && (k & 15) == 0)
      for (int j = 0; j < NW; ++j) _mm_prefetch(reinterpret_cast<const char*>(pf + j * K + k), _MM_HINT_T0);
    __m256 wv[NW];
    for (int j = 0; j < NW; ++j) {
      wv[j] = _mm256_loadu_ps(w + j * K + k);
      asm("" : "+x"(wv[j]));  // keep the weight vector in a register: read once, used by every row
    }
    for (int i = 0; i < NX; ++i) {
      const __m256 xv = _mm256_loadu_ps(x + i * K + k);
      for (int j = 0; j < NW; ++j) acc[i][j] = _mm256_fmadd_ps(wv[j], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < NX; ++i)
    for (int j = 0; j < NW; ++j) {
      float s = hsum8(acc[i][j]);
      for (int64_t k = K8; k < K; ++k) s += x[i * K + k] * w[j * K + k];
      out[i * ldo + j] = s;
    }
}

using TileFn = void (*)(const float*, int64_t, const float*, float*, int64_t, const float*);
// Tile shape (rows of x x rows of w): accumulators + weight vectors + one row vector must fit the registers.
// AVX2 has 16: 2 x 4 (a 3 x 4 tile spills and runs 2.5x slower). Built with -march=native where AVX-512 gives
// 32: 2 x 8, whose longer runs of contiguous weights stream better.
#ifdef __AVX512VL__
constexpr int kRowsX = KANGAROO_ROWS_X, kRowsW = KANGAROO_ROWS_W;
#else
constexpr int kRowsX = 2, kRowsW = 4;
#endif
template <int NX, size_t... J>
constexpr std::array<TileFn, kRowsW> tiles_for(std::index_sequence<J...>) { return {tile<NX, J + 1>...}; }
template <size_t... I>
constexpr std::array<std::array<TileFn, kRowsW>, kRowsX> tile_table(std::index_sequence<I...>) {
  return {tiles_for<I + 1>(std::make_index_sequence<kRowsW>{})...};
}
const auto kTiles = tile_table(std::make_index_sequence<kRowsX>{});

// y [n, N] = x [n, K] @ w [N, K]^T; raw pointers, all contiguous. Threads split the rows of w.
void linear_into(const float* x, int64_t n, int64_t K, const float* w, int64_t N, float* y) {
  if (n == 1) {  // one row: 8 weight rows a tile, so 8 independent FMA chains hide the FMA latency
    at::parallel_for(0, (N + 7) / 8, 32, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t j0 = b * 8, jp = j0 + KANGAROO_PF_BLOCKS * 4;
        const float* pf = jp + 8 <= N ? w + jp * K : nullptr;
        if (j0 + 8 <= N) {
          tile<1, 8>(x, K, w + j0 * K, y + j0, N, pf);
        } else {
          for (int64_t j = j0; j < N; j += kRowsW)
            kTiles[0][std::min<int64_t>(kRowsW, N - j) - 1](x, K, w + j * K, y + j, N, nullptr);
        }
      }
    });
    return;
  }
  const int64_t blocks = (N + kRowsW - 1) / kRowsW;
  at::parallel_for(0, blocks, 64, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t j0 = b * kRowsW, nw = std::min<int64_t>(kRowsW, N - j0);
      const int64_t jp = j0 + KANGAROO_PF_BLOCKS * kRowsW;
      const float* pf = jp + kRowsW <= N ? w + jp * K : nullptr;
      for (int64_t i0 = 0; i0 < n; i0 += kRowsX) {
        const int64_t nx = std::min<int64_t>(kRowsX, n - i0);
        kTiles[nx - 1][nw - 1](x + i0 * K, K, w + j0 * K, y + i0 * N + j0, N, pf);
      }
    }
  });
}

// y [n, d] = x * rsqrt(mean(x^2) + eps) * w, row by row (as Hugging Face's LlamaRMSNorm in float32).
void rmsnorm_into(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float ss = 0.f;
    for (int64_t t = 0; t < d; ++t) ss += xi[t] * xi[t];
    const float r = 1.f / std::sqrt(ss / float(d) + eps);
    for (int64_t t = 0; t < d; ++t) y[i * d + t] = w[t] * (xi[t] * r);
  }
}

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

// x [H, D] of one row, rotated in place: x * cos + rotate_half(x) * sin (Hugging Face's convention).
void rope_row(float* x, int64_t H, int64_t D, const float* cos, const float* sin, float* tmp) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < H; ++h) {
    float* xh = x + h * D;
    for (int64_t t = 0; t < D; ++t) {
      const float rot = t < half ? -xh[t + half] : xh[t - half];
      tmp[t] = xh[t] * cos[t] + rot * sin[t];
    }
    std::copy(tmp, tmp + D, xh);
  }
}

float dot(const float* a, const float* b, int64_t D) {
  __m256 acc = _mm256_setzero_ps();
  const int64_t D8 = D & ~int64_t(7);
  for (int64_t t = 0; t < D8; t += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + t), _mm256_loadu_ps(b + t), acc);
  float s = hsum8(acc);
  for (int64_t t = D8; t < D; ++t) s += a[t] * b[t];
  return s;
}

struct Layer {
  torch::Tensor in_norm, qkv, o, post_norm, gate_up, down;
};

// A stack of Llama decoder layers (no biases, SiLU MLP) that writes its keys/values into a KVCache's tensors
// k, v [layers, 1, Hkv, max_len, D] (layer i of the stack = cache layer i) at positions [start, start + n).
class Stack {
 public:
  Stack(std::vector<torch::Tensor> weights, int64_t heads, int64_t kv_heads, int64_t head_dim, double eps,
        double scale)
      : H_(heads), Hkv_(kv_heads), D_(head_dim), eps_(float(eps)), scale_(float(scale)) {
    TORCH_CHECK(weights.size() % 6 == 0, "expected 6 tensors per layer");
    for (size_t i = 0; i < weights.size(); i += 6) {
      for (size_t j = i; j < i + 6; ++j)
        TORCH_CHECK(weights[j].is_contiguous() && weights[j].scalar_type() == torch::kFloat32,
                    "engine weights must be contiguous float32");
      layers_.push_back({weights[i], weights[i + 1], weights[i + 2], weights[i + 3], weights[i + 4], weights[i + 5]});
    }
    d_ = layers_.at(0).in_norm.size(0);
    inter_ = layers_.at(0).down.size(1);
  }

  int64_t num_layers() const { return int64_t(layers_.size()); }

  // h [n, d] after ``start`` cached positions -> h [n, d] after the stack. cos/sin [n, D].
  torch::Tensor forward(torch::Tensor h, torch::Tensor kc, torch::Tensor vc, int64_t start, torch::Tensor cos,
                        torch::Tensor sin) {
    TORCH_CHECK(h.dim() == 2 && h.size(1) == d_ && h.scalar_type() == torch::kFloat32, "h must be [n, d] float32");
    TORCH_CHECK(kc.is_contiguous() && vc.is_contiguous() && kc.size(0) >= num_layers(), "bad cache");
    const int64_t n = h.size(0), max_len = kc.size(3);
    TORCH_CHECK(start + n <= max_len, "KV cache overflow");
    h = h.contiguous().clone();
    cos = cos.contiguous();
    sin = sin.contiguous();
    const int64_t qd = H_ * D_, kvd = Hkv_ * D_, qkv_w = qd + 2 * kvd;
    auto opt = h.options();
    auto xn = torch::empty({n, d_}, opt), qkv = torch::empty({n, qkv_w}, opt), att = torch::empty({n, qd}, opt);
    auto proj = torch::empty({n, d_}, opt), gu = torch::empty({n, 2 * inter_}, opt), act = torch::empty({n, inter_}, opt);
    float* hp = h.data_ptr<float>();
    for (int64_t l = 0; l < num_layers(); ++l) {
      const Layer& L = layers_[l];
      float* kl = kc.data_ptr<float>() + l * Hkv_ * max_len * D_;
      float* vl = vc.data_ptr<float>() + l * Hkv_ * max_len * D_;
      rmsnorm_into(hp, n, d_, L.in_norm.data_ptr<float>(), eps_, xn.data_ptr<float>());
      linear_into(xn.data_ptr<float>(), n, d_, L.qkv.data_ptr<float>(), qkv_w, qkv.data_ptr<float>());
      write_kv(qkv.data_ptr<float>(), n, kl, vl, start, max_len, cos.data_ptr<float>(), sin.data_ptr<float>());
      attend(qkv.data_ptr<float>(), n, kl, vl, start, max_len, att.data_ptr<float>());
      linear_into(att.data_ptr<float>(), n, qd, L.o.data_ptr<float>(), d_, proj.data_ptr<float>());
      add_into(hp, proj.data_ptr<float>(), n * d_);
      rmsnorm_into(hp, n, d_, L.post_norm.data_ptr<float>(), eps_, xn.data_ptr<float>());
      linear_into(xn.data_ptr<float>(), n, d_, L.gate_up.data_ptr<float>(), 2 * inter_, gu.data_ptr<float>());
      silu_mul(gu.data_ptr<float>(), n, act.data_ptr<float>());
      linear_into(act.data_ptr<float>(), n, inter_, L.down.data_ptr<float>(), d_, proj.data_ptr<float>());
      add_into(hp, proj.data_ptr<float>(), n * d_);
    }
    return h;
  }

 private:
  static void add_into(float* h, const float* x, int64_t m) {
    for (int64_t t = 0; t < m; ++t) h[t] += x[t];
  }

  void silu_mul(const float* gu, int64_t n, float* act) const {
    for (int64_t i = 0; i < n; ++i) {
      const float* g = gu + i * 2 * inter_;
      const float* u = g + inter_;
      float* a = act + i * inter_;
      map8(g, a, inter_, [](__m256 v) {  // silu(g) = g / (1 + e^-g)
        return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), v))));
      });
      for (int64_t t = 0; t < inter_; ++t) a[t] *= u[t];
    }
  }

  // RoPE on q and k of each row (in place in qkv), then k and v into the cache at start + i.
  void write_kv(float* qkv, int64_t n, float* kl, float* vl, int64_t start, int64_t max_len, const float* cos,
                const float* sin) const {
    const int64_t qd = H_ * D_, kvd = Hkv_ * D_;
    std::vector<float> tmp(D_);
    for (int64_t i = 0; i < n; ++i) {
      float* q = qkv + i * (qd + 2 * kvd);
      float* k = q + qd;
      const float* v = k + kvd;
      rope_row(q, H_, D_, cos + i * D_, sin + i * D_, tmp.data());
      rope_row(k, Hkv_, D_, cos + i * D_, sin + i * D_, tmp.data());
      for (int64_t g = 0; g < Hkv_; ++g) {
        std::copy(k + g * D_, k + (g + 1) * D_, kl + (g * max_len + start + i) * D_);
        std::copy(v + g * D_, v + (g + 1) * D_, vl + (g * max_len + start + i) * D_);
      }
    }
  }

  // Causal attention: query i (position start + i) over keys 0 .. start + i. Heads are split over threads.
  void attend(const float* qkv, int64_t n, const float* kl, const float* vl, int64_t start, int64_t max_len,
              float* out) const {
    const int64_t qd = H_ * D_, row = qd + 2 * kvd(), group = H_ / Hkv_;
    at::parallel_for(0, n * H_, 1, [&](int64_t a0, int64_t a1) {
      std::vector<float> s(start + n);
      for (int64_t a = a0; a < a1; ++a) {
        const int64_t i = a / H_, hh = a % H_, g = hh / group, keys = start + i + 1;
        const float* q = qkv + i * row + hh * D_;
        const float* K = kl + g * max_len * D_;
        const float* V = vl + g * max_len * D_;
        float m = -INFINITY;
        for (int64_t j = 0; j < keys; ++j) {
          s[j] = dot(q, K + j * D_, D_) * scale_;
          m = std::max(m, s[j]);
        }
        const __m256 mv = _mm256_set1_ps(m);
        map8(s.data(), s.data(), keys, [&](__m256 v) { return exp8(_mm256_sub_ps(v, mv)); });
        float sum = 0.f;
        for (int64_t j = 0; j < keys; ++j) sum += s[j];
        float* o = out + i * qd + hh * D_;
        std::fill(o, o + D_, 0.f);
        for (int64_t j = 0; j < keys; ++j) {
          const float p = s[j];
          const float* vj = V + j * D_;
          for (int64_t t = 0; t < D_; ++t) o[t] += p * vj[t];
        }
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < D_; ++t) o[t] *= inv;
      }
    });
  }

  int64_t kvd() const { return Hkv_ * D_; }

  std::vector<Layer> layers_;
  int64_t H_, Hkv_, D_, d_ = 0, inter_ = 0;
  float eps_, scale_;
};

torch::Tensor linear(torch::Tensor x, torch::Tensor w) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32, "float32 only");
  TORCH_CHECK(w.dim() == 2 && x.size(-1) == w.size(1), "shape mismatch");
  auto x2 = x.reshape({-1, x.size(-1)}).contiguous();
  auto wc = w.contiguous();
  auto y = torch::empty({x2.size(0), w.size(0)}, x.options());
  linear_into(x2.data_ptr<float>(), x2.size(0), x2.size(1), wc.data_ptr<float>(), wc.size(0), y.data_ptr<float>());
  auto shape = x.sizes().vec();
  shape.back() = w.size(0);
  return y.view(shape);
}

torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32, "float32 only");
  auto x2 = x.reshape({-1, x.size(-1)}).contiguous();
  auto wc = w.contiguous();
  auto y = torch::empty_like(x2);
  rmsnorm_into(x2.data_ptr<float>(), x2.size(0), x2.size(1), wc.data_ptr<float>(), float(eps), y.data_ptr<float>());
  return y.view(x.sizes());
}

}  // namespace

void register_draft_head(pybind11::module_& m);  // kangaroo/csrc/draft_head.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_draft_head(m);
  m.def("linear", &linear, "x [..., K] @ w [N, K]^T, batch-invariant (float32)");
  m.def("rmsnorm", &rmsnorm, "row-wise RMSNorm (float32)");
  pybind11::class_<Stack>(m, "Stack")
      .def(pybind11::init<std::vector<torch::Tensor>, int64_t, int64_t, int64_t, double, double>())
      .def("forward", &Stack::forward)
      .def_property_readonly("num_layers", &Stack::num_layers);
}
