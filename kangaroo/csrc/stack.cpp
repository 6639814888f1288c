// A stack of Llama decoder layers for a few rows (one decode token, a drafted block to verify), for one sequence
// or several in one call (each with its own KV cache and start): the weights are read once for all rows.
//
// Batch invariance, the property losslessness rests on: every value is computed by the same float operations
// whatever the number of rows, the row's place in the call, the other sequences of the call and the thread count
// (matmul.h: one FMA chain per output; attention for a query walks its keys in order; RMSNorm sums in order).
// So verifying n tokens in one pass gives bit for bit the logits of n one-token greedy steps.
//
// A sequence's rows may be nodes of a token tree (kangaroo/token_tree.py): node i sits at cache slot root + i and
// sees the keys before the root and its own ancestors only (itself included); the caller gives each row the RoPE
// of its depth. Masked keys are skipped, never summed as e^-inf: the keys a node walks, in order, are the very keys
// its root-to-node path would have at consecutive slots, so it gets the logits of one-token steps along that path,
// bit for bit (each value of the score row is the same float, exp is lane-wise, sums run in the same order).
#include <ATen/Parallel.h>

#include <optional>
#include <vector>

#include "dot.h"
#include "matmul.h"
#include "module.h"
#include "vmath.h"
#include "weight.h"

namespace kangaroo {
namespace {

// y [n, d] = x * rsqrt(mean(x^2) + eps) * w, row by row (as Hugging Face's LlamaRMSNorm in float32). The
// squares are summed in order, each rounded before it is added, but those of the d % 8 tail are fused (fma), as
// the engine has always computed them.
void rmsnorm_into(const float* x, int64_t n, int64_t d, const float* w, float eps, float* y) {
  const int64_t d8 = d & ~int64_t(7);
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float ss = 0.f;
    for (int64_t t = 0; t < d8; ++t) ss += xi[t] * xi[t];
    for (int64_t t = d8; t < d; ++t) ss = std::fma(xi[t], xi[t], ss);
    const float r = 1.f / std::sqrt(ss / float(d) + eps);
    for (int64_t t = 0; t < d; ++t) y[i * d + t] = w[t] * (xi[t] * r);
  }
}

// x [H, D] of one row, rotated in place: x * cos + rotate_half(x) * sin (Hugging Face's convention), as
// fma(x, cos, rotate_half(x) * sin).
void rope_row(float* x, int64_t H, int64_t D, const float* cos, const float* sin, float* tmp) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < H; ++h) {
    float* xh = x + h * D;
    for (int64_t t = 0; t < D; ++t) {
      const float rot = t < half ? -xh[t + half] : xh[t - half];
      tmp[t] = std::fma(xh[t], cos[t], rot * sin[t]);
    }
    std::copy(tmp, tmp + D, xh);
  }
}

void add_into(float* h, const float* x, int64_t m) {
  for (int64_t t = 0; t < m; ++t) h[t] += x[t];
}

// One sequence of a call: its rows [off, off + n) of the call's rows, its cache layer pointers and positions.
struct Seq {
  float *k, *v;  // cache [layers, 1, Hkv, max_len, D]
  int64_t start, max_len, n, off;
  const float *cos, *sin;  // [n, D]
  // a token tree: row i's key slots (0 .. keys_from - 1 are all seen, then keys[key_off[i] .. key_off[i + 1]));
  // empty: causal, row i sees 0 .. start + i
  int64_t keys_from = 0;
  std::vector<int64_t> keys, key_off;
};

// The key slots of each row of a tree pass: ``tree`` = [root, parent of node 0 (-1), parent of node 1, ...] covers
// every node up to the pass's last row (row i is node start - root + i); a row sees the slots before the root,
// then its ancestors' slots root + a in ascending order, itself last.
void tree_keys(Seq& s, const torch::Tensor& tree) {
  TORCH_CHECK(tree.dim() == 1 && tree.scalar_type() == torch::kInt64 && tree.numel() >= 2,
              "tree must be int64 [root, parents of the nodes...]");
  auto t = tree.contiguous();
  const int64_t* p = t.data_ptr<int64_t>();
  const int64_t root = p[0], nodes = t.numel() - 1, first = s.start - root;
  TORCH_CHECK(root >= 0 && first >= 0 && first + s.n <= nodes, "tree: the pass's rows must be nodes of the tree");
  TORCH_CHECK(p[1] == -1, "tree: node 0 is the root (parent -1)");
  for (int64_t i = 1; i < nodes; ++i) TORCH_CHECK(p[1 + i] >= 0 && p[1 + i] < i, "tree: each parent before its node");
  s.keys_from = root;
  s.key_off.assign(1, 0);
  std::vector<int64_t> path;
  for (int64_t i = 0; i < s.n; ++i) {
    path.clear();
    for (int64_t a = first + i; a >= 0; a = p[1 + a]) path.push_back(root + a);
    s.keys.insert(s.keys.end(), path.rbegin(), path.rend());
    s.key_off.push_back(int64_t(s.keys.size()));
  }
}

struct Layer {
  torch::Tensor in_norm, post_norm;
  const Weight *qkv, *o, *gate_up, *down;
};

class Stack {
 public:
  Stack(std::vector<torch::Tensor> norms, std::vector<Weight> mats, int64_t heads, int64_t kv_heads,
        int64_t head_dim, double eps, double scale)
      : mats_(std::move(mats)), H_(heads), Hkv_(kv_heads), D_(head_dim), eps_(float(eps)), scale_(float(scale)) {
    TORCH_CHECK(!norms.empty() && norms.size() % 2 == 0 && mats_.size() == norms.size() * 2,
                "expected 2 norms and 4 matrices per layer");
    d_ = norms[0].size(0);
    inter_ = mats_[3].cols();
    const int64_t qkv_rows = (H_ + 2 * Hkv_) * D_;
    for (size_t l = 0; l < norms.size() / 2; ++l) {
      const Weight *qkv = &mats_[4 * l], *o = &mats_[4 * l + 1], *gu = &mats_[4 * l + 2], *dn = &mats_[4 * l + 3];
      for (size_t j = 2 * l; j < 2 * l + 2; ++j)
        TORCH_CHECK(norms[j].is_contiguous() && norms[j].scalar_type() == torch::kFloat32 && norms[j].numel() == d_,
                    "norm weights must be contiguous float32 [d]");
      TORCH_CHECK(qkv->rows() == qkv_rows && qkv->cols() == d_ && o->rows() == d_ && o->cols() == H_ * D_ &&
                      gu->rows() == 2 * inter_ && gu->cols() == d_ && dn->rows() == d_ && dn->cols() == inter_,
                  "layer ", l, ": weight shapes do not fit the heads and sizes given");
      layers_.push_back({norms[2 * l], norms[2 * l + 1], qkv, o, gu, dn});
    }
  }

  int64_t num_layers() const { return int64_t(layers_.size()); }

  // h [n, d] after ``start`` cached positions -> h [n, d] after the stack. cos/sin [n, D]. ``tree`` (optional,
  // ``tree_keys``): the rows are nodes of a token tree.
  torch::Tensor forward(torch::Tensor h, torch::Tensor kc, torch::Tensor vc, int64_t start, torch::Tensor cos,
                        torch::Tensor sin, std::optional<torch::Tensor> tree) {
    std::vector<torch::Tensor> trees;
    if (tree.has_value()) trees.push_back(*tree);
    return forward_batch({h}, {kc}, {vc}, {start}, {cos}, {sin}, trees)[0];
  }

  // Several sequences in one call: hs[s] [n_s, d] after starts[s] positions of cache ks[s]/vs[s]; each output
  // equals ``forward`` of that sequence alone, bit for bit. ``trees``: none, or one per sequence (undefined or
  // empty: causal).
  std::vector<torch::Tensor> forward_batch(std::vector<torch::Tensor> hs, std::vector<torch::Tensor> ks,
                                           std::vector<torch::Tensor> vs, std::vector<int64_t> starts,
                                           std::vector<torch::Tensor> coss, std::vector<torch::Tensor> sins,
                                           std::vector<torch::Tensor> trees) {
    const size_t S = hs.size();
    TORCH_CHECK(S > 0 && ks.size() == S && vs.size() == S && starts.size() == S && coss.size() == S &&
                    sins.size() == S && (trees.empty() || trees.size() == S),
                "forward_batch: one cache, start and cos/sin (and tree, if any) per sequence");
    std::vector<Seq> seqs;
    int64_t rows = 0;
    for (size_t s = 0; s < S; ++s) {
      check_seq(hs[s], ks[s], vs[s], starts[s], coss[s], sins[s]);
      coss[s] = coss[s].contiguous();
      sins[s] = sins[s].contiguous();
      seqs.push_back({ks[s].data_ptr<float>(), vs[s].data_ptr<float>(), starts[s], ks[s].size(3), hs[s].size(0),
                      rows, coss[s].data_ptr<float>(), sins[s].data_ptr<float>()});
      if (!trees.empty() && trees[s].defined() && trees[s].numel() > 0) tree_keys(seqs.back(), trees[s]);
      rows += hs[s].size(0);
    }
    torch::Tensor h = torch::cat(hs, 0).contiguous();  // a new tensor: the inputs are never written
    if (S == 1 && h.data_ptr() == hs[0].data_ptr()) h = h.clone();
    run(h.data_ptr<float>(), rows, seqs);
    std::vector<torch::Tensor> out;
    for (const Seq& s : seqs) out.push_back(h.narrow(0, s.off, s.n));
    return out;
  }

 private:
  void check_seq(const torch::Tensor& h, const torch::Tensor& kc, const torch::Tensor& vc, int64_t start,
                 const torch::Tensor& cos, const torch::Tensor& sin) const {
    TORCH_CHECK(h.dim() == 2 && h.size(1) == d_ && h.scalar_type() == torch::kFloat32, "h must be [n, d] float32");
    TORCH_CHECK(kc.dim() == 5 && kc.sizes() == vc.sizes() && kc.is_contiguous() && vc.is_contiguous() &&
                    kc.scalar_type() == torch::kFloat32 && vc.scalar_type() == torch::kFloat32 &&
                    kc.size(0) >= num_layers() && kc.size(1) == 1 && kc.size(2) == Hkv_ && kc.size(4) == D_,
                "bad cache: need contiguous float32 k/v [>= layers, 1, kv_heads, max_len, head_dim]");
    TORCH_CHECK(start >= 0 && start + h.size(0) <= kc.size(3), "KV cache overflow");
    TORCH_CHECK(cos.sizes() == sin.sizes() && cos.dim() == 2 && cos.size(0) == h.size(0) && cos.size(1) == D_ &&
                    cos.scalar_type() == torch::kFloat32 && sin.scalar_type() == torch::kFloat32,
                "cos/sin must be float32 [n, head_dim]");
  }

  void run(float* hp, int64_t n, const std::vector<Seq>& seqs) {
    const int64_t qd = H_ * D_, qkv_w = qd + 2 * kvd();
    std::vector<float> xn(n * d_), qkv(n * qkv_w), att(n * qd), proj(n * d_), gu(n * 2 * inter_), act(n * inter_);
    for (int64_t l = 0; l < num_layers(); ++l) {
      const Layer& L = layers_[l];
      rmsnorm_into(hp, n, d_, L.in_norm.data_ptr<float>(), eps_, xn.data());
      matmul(xn.data(), n, d_, L.qkv->mat, qkv.data(), qkv_w);
      for (const Seq& s : seqs) write_kv(qkv.data() + s.off * qkv_w, s, l);
      attend(qkv.data(), n, seqs, l, att.data());
      matmul(att.data(), n, qd, L.o->mat, proj.data(), d_);
      add_into(hp, proj.data(), n * d_);
      rmsnorm_into(hp, n, d_, L.post_norm.data_ptr<float>(), eps_, xn.data());
      matmul(xn.data(), n, d_, L.gate_up->mat, gu.data(), 2 * inter_);
      silu_mul(gu.data(), n, act.data());
      matmul(act.data(), n, inter_, L.down->mat, proj.data(), d_);
      add_into(hp, proj.data(), n * d_);
    }
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

  float* cache_layer(float* c, const Seq& s, int64_t l) const { return c + l * Hkv_ * s.max_len * D_; }

  // RoPE on q and k of each row of s (in place in qkv), then k and v into its cache at start + i.
  void write_kv(float* qkv, const Seq& s, int64_t l) const {
    const int64_t qd = H_ * D_;
    float *kl = cache_layer(s.k, s, l), *vl = cache_layer(s.v, s, l);
    std::vector<float> tmp(D_);
    for (int64_t i = 0; i < s.n; ++i) {
      float* q = qkv + i * (qd + 2 * kvd());
      float* k = q + qd;
      const float* v = k + kvd();
      rope_row(q, H_, D_, s.cos + i * D_, s.sin + i * D_, tmp.data());
      rope_row(k, Hkv_, D_, s.cos + i * D_, s.sin + i * D_, tmp.data());
      for (int64_t g = 0; g < Hkv_; ++g) {
        std::copy(k + g * D_, k + (g + 1) * D_, kl + (g * s.max_len + s.start + i) * D_);
        std::copy(v + g * D_, v + (g + 1) * D_, vl + (g * s.max_len + s.start + i) * D_);
      }
    }
  }

  // Causal attention: row i of sequence s (position start + i) over its keys 0 .. start + i, or a tree row over
  // the slots ``tree_keys`` gave it. (row, head) pairs are split over threads.
  void attend(const float* qkv, int64_t n, const std::vector<Seq>& seqs, int64_t l, float* out) const {
    const int64_t qd = H_ * D_, row = qd + 2 * kvd(), group = H_ / Hkv_;
    std::vector<int> seq_of(n);
    int64_t most = 0;
    for (size_t s = 0; s < seqs.size(); ++s) {
      std::fill(seq_of.begin() + seqs[s].off, seq_of.begin() + seqs[s].off + seqs[s].n, int(s));
      most = std::max(most, seqs[s].start + seqs[s].n);
    }
    at::parallel_for(0, n * H_, 1, [&](int64_t a0, int64_t a1) {
      std::vector<float> sc(most);
      for (int64_t a = a0; a < a1; ++a) {
        const int64_t r = a / H_, hh = a % H_, g = hh / group;
        const Seq& s = seqs[seq_of[r]];
        const int64_t i = r - s.off;
        const float* K = cache_layer(s.k, s, l) + g * s.max_len * D_;
        const float* V = cache_layer(s.v, s, l) + g * s.max_len * D_;
        float* o = out + r * qd + hh * D_;
        if (s.key_off.empty()) {
          attend_one(qkv + r * row + hh * D_, K, V, s.start + i + 1, nullptr, 0, sc.data(), o);
        } else {
          const int64_t* tail = s.keys.data() + s.key_off[i];
          attend_one(qkv + r * row + hh * D_, K, V, s.keys_from, tail, s.key_off[i + 1] - s.key_off[i], sc.data(), o);
        }
      }
    });
  }

  // softmax(q . K[j] * scale) over the keys j < keys_from, then the slots tail[0 .. tails) (a tree row's
  // ancestors), then the weighted sum of their V rows in the same order, into o [D].
  void attend_one(const float* q, const float* K, const float* V, int64_t keys_from, const int64_t* tail,
                  int64_t tails, float* s, float* o) const {
    const int64_t keys = keys_from + tails;
    auto slot = [&](int64_t j) { return j < keys_from ? j : tail[j - keys_from]; };
    float m = -INFINITY;
    for (int64_t j = 0; j < keys; ++j) {
      s[j] = dot_f32(q, K + slot(j) * D_, D_) * scale_;
      m = std::max(m, s[j]);
    }
    const __m256 mv = _mm256_set1_ps(m);
    map8(s, s, keys, [&](__m256 v) { return exp8(_mm256_sub_ps(v, mv)); });
    float sum = 0.f;
    for (int64_t j = 0; j < keys; ++j) sum += s[j];
    std::fill(o, o + D_, 0.f);
    for (int64_t j = 0; j < keys; ++j) axpy(s[j], V + slot(j) * D_, o, D_);
    const float inv = 1.f / sum;
    for (int64_t t = 0; t < D_; ++t) o[t] *= inv;
  }

  int64_t kvd() const { return Hkv_ * D_; }

  std::vector<Weight> mats_;
  std::vector<Layer> layers_;
  int64_t H_, Hkv_, D_, d_ = 0, inter_ = 0;
  float eps_, scale_;
};

torch::Tensor rmsnorm(torch::Tensor x, torch::Tensor w, double eps) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kFloat32, "float32 only");
  TORCH_CHECK(w.numel() == x.size(-1), "norm weight of ", w.numel(), " values for rows of ", x.size(-1));
  auto x2 = x.reshape({-1, x.size(-1)}).contiguous();
  auto wc = w.contiguous();
  auto y = torch::empty_like(x2);
  rmsnorm_into(x2.data_ptr<float>(), x2.size(0), x2.size(1), wc.data_ptr<float>(), float(eps), y.data_ptr<float>());
  return y.view(x.sizes());
}

void bind(pybind11::module_& m) {
  m.def("rmsnorm", &rmsnorm, "row-wise RMSNorm (float32)");
  pybind11::class_<Stack>(m, "Stack")
      .def(pybind11::init<std::vector<torch::Tensor>, std::vector<Weight>, int64_t, int64_t, int64_t, double, double>())
      .def("forward", &Stack::forward, pybind11::arg("h"), pybind11::arg("k"), pybind11::arg("v"),
           pybind11::arg("start"), pybind11::arg("cos"), pybind11::arg("sin"), pybind11::arg("tree") = pybind11::none(),
           pybind11::call_guard<pybind11::gil_scoped_release>())  // other Python threads run meanwhile
      .def("forward_batch", &Stack::forward_batch, pybind11::arg("hs"), pybind11::arg("ks"), pybind11::arg("vs"),
           pybind11::arg("starts"), pybind11::arg("coss"), pybind11::arg("sins"),
           pybind11::arg("trees") = std::vector<torch::Tensor>(), pybind11::call_guard<pybind11::gil_scoped_release>())
      .def_property_readonly("num_layers", &Stack::num_layers);
}
Bind bind_once(bind);

}  // namespace
}  // namespace kangaroo
