// The top of rows of logits, in one place: the softmax's denominator (vmath.h's sum_exp) under both.
//
// top1            as the decode loops need it: torch.argmax's index (the first maximum; the first NaN where there
//                 is one) and the softmax probability of that token, 1 / sum_j exp(l_j - max) (the drafter's
//                 confidence; it equals torch.softmax(...).max() up to the order of the sum's float additions).
// softmax_top_k   the k largest and their softmax probabilities exp(l - max - log sum_j exp(l_j - max)): the
//                 packed drafter head's proposals (top_k_probs) and the probe gate's verifier probability.
#include "top_k.h"

#include "module.h"
#include "vmath.h"

namespace kangaroo {
namespace {

// The first j < V with l[j] == v (v NaN: the first NaN), or -1.
int64_t find_first(const float* l, int64_t V, float v) {
  const bool nan = v != v;
  const __m256 vv = _mm256_set1_ps(v);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) {
    const __m256 x = _mm256_loadu_ps(l + j);
    const int mask = _mm256_movemask_ps(nan ? _mm256_cmp_ps(x, x, _CMP_UNORD_Q) : _mm256_cmp_ps(x, vv, _CMP_EQ_OQ));
    if (mask) return j + __builtin_ctz(unsigned(mask));
  }
  for (; j < V; ++j)
    if (nan ? l[j] != l[j] : l[j] == v) return j;
  return -1;
}

int64_t first_max(const float* l, int64_t V, float* out_max) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(l + j));
  float best = -INFINITY;
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  for (float v : lanes) best = std::max(best, v);
  for (; j < V; ++j) best = std::max(best, l[j]);
  *out_max = best;
  return std::max<int64_t>(0, find_first(l, V, best));
}

std::pair<std::vector<int64_t>, std::vector<double>> top1(torch::Tensor logits, bool with_prob) {
  TORCH_CHECK(logits.scalar_type() == torch::kFloat32 && logits.dim() >= 1, "top1: float32 logits [..., V]");
  auto l = logits.reshape({-1, logits.size(-1)}).contiguous();
  const int64_t n = l.size(0), V = l.size(1);
  TORCH_CHECK(V > 0, "top1: empty rows");
  std::vector<int64_t> idx(n);
  std::vector<double> prob(with_prob ? n : 0);
  for (int64_t i = 0; i < n; ++i) {
    const float* row = l.data_ptr<float>() + i * V;
    float mx;
    const int64_t nan = find_first(row, V, NAN);
    idx[i] = nan >= 0 ? nan : first_max(row, V, &mx);
    if (with_prob) prob[i] = nan >= 0 ? double(NAN) : double(1.f / sum_exp<exp8>(row, V, mx));
  }
  return {idx, prob};
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
  *lse = std::log(sum_exp<exp8_pow2>(y, N, best.front().first));
  for (int64_t t = 0; t < k; ++t) {
    idx[t] = best[t].second;
    val[t] = best[t].first;
  }
}

// The top-k and their probabilities of logits rows y [n, N] (e.g. the verifier's row of a committed token).
std::vector<torch::Tensor> softmax_top_k(torch::Tensor y, int64_t k) {
  TORCH_CHECK(y.dim() == 2 && y.scalar_type() == torch::kFloat32, "y must be [n, N] float32");
  TORCH_CHECK(k >= 1 && k <= std::min<int64_t>(y.size(1), 64), "k must lie in 1..min(N, 64)");
  return top_k_probs(y.contiguous(), k);
}

void bind(pybind11::module_& m) {
  m.def("top1", &top1, "per row of float32 logits: (torch.argmax index, softmax probability there)",
        pybind11::arg("logits"), pybind11::arg("with_prob") = true);
  m.def("softmax_top_k", &softmax_top_k, "top-k ids and softmax probabilities of logits rows");
}
Bind bind_once(bind);

}  // namespace

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

}  // namespace kangaroo
