// The top-1 of rows of logits, as the decode loops need it: torch.argmax's index (the first maximum; the first
// NaN where there is one) and the softmax probability of that token, 1 / sum_j exp(l_j - max) (the drafter's
// confidence; it equals torch.softmax(...).max() up to the order of the sum's float additions).
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

float top_prob(const float* l, int64_t V, float mx) {
  const __m256 mv = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= V; j += 8) acc = _mm256_add_ps(acc, exp8(_mm256_sub_ps(_mm256_loadu_ps(l + j), mv)));
  float s = hsum8(acc);
  for (; j < V; ++j) s += std::exp(l[j] - mx);
  return 1.f / s;
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
    if (with_prob) prob[i] = nan >= 0 ? double(NAN) : double(top_prob(row, V, mx));
  }
  return {idx, prob};
}

void bind(pybind11::module_& m) {
  m.def("top1", &top1, "per row of float32 logits: (torch.argmax index, softmax probability there)",
        pybind11::arg("logits"), pybind11::arg("with_prob") = true);
}
Bind bind_once(bind);

}  // namespace
}  // namespace kangaroo
