// The extension's Python module (kangaroo/cpu_engine.py builds every kangaroo/csrc/*.cpp into it on first use,
// torch.utils.cpp_extension): the registry of the sources' binders (module.h), the engine's ``Weight`` (weight.h),
// ``linear`` and ``dequantize`` over the batch-invariant matmul (matmul.h), and the ISA it was built for (isa.h).
// The decoder stack (stack.cpp), the top of logits rows (top_k.cpp) and the packed drafter head (packed_head.cpp)
// bind themselves.
#include "matmul.h"
#include "module.h"
#include "weight.h"

namespace kangaroo {

std::vector<Binder>& binders() {
  static std::vector<Binder> all;
  return all;
}

namespace {

// y [..., N] = x [..., K] @ w^T (w [N, K] in any format), batch-invariant.
torch::Tensor linear(torch::Tensor x, const Weight& w) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "linear: x must be float32");
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == w.cols(), "linear: x has ", x.size(-1), " columns, the weight ", w.cols());
  auto x2 = x.reshape({-1, x.size(-1)}).contiguous();
  auto y = torch::empty({x2.size(0), w.rows()}, x.options());
  matmul(x2.data_ptr<float>(), x2.size(0), x2.size(1), w.mat, y.data_ptr<float>(), w.rows());
  auto shape = x.sizes().vec();
  shape.back() = w.rows();
  return y.view(shape);
}

// The float32 values the engine multiplies by, [rows, cols] (or only the rows ``ids``: an embedding lookup).
torch::Tensor dequantize(const Weight& w, std::optional<torch::Tensor> ids) {
  if (!ids) {
    auto out = torch::empty({w.rows(), w.cols()}, torch::kFloat32);
    expand_rows(w.mat, out.data_ptr<float>());
    return out;
  }
  auto idx = ids->to(torch::kLong).contiguous();
  auto out = torch::empty({idx.numel(), w.cols()}, torch::kFloat32);
  const int64_t* ip = idx.data_ptr<int64_t>();
  for (int64_t i = 0; i < idx.numel(); ++i) {
    TORCH_CHECK(ip[i] >= 0 && ip[i] < w.rows(), "row ", ip[i], " outside 0..", w.rows() - 1);
    Mat one = w.mat;
    one.data = w.mat.row(ip[i]);
    one.rows = 1;
    expand_rows(one, out.data_ptr<float>() + i * w.cols());
  }
  return out.view([&] { auto s = idx.sizes().vec(); s.push_back(w.cols()); return s; }());
}

}  // namespace
}  // namespace kangaroo

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using kangaroo::Weight;
  pybind11::class_<Weight>(m, "Weight")
      .def(pybind11::init<torch::Tensor, int64_t, int64_t, int64_t>())
      .def_property_readonly("rows", &Weight::rows)
      .def_property_readonly("cols", &Weight::cols)
      .def_property_readonly("fmt", &Weight::fmt)
      .def_property_readonly("nbytes", &Weight::nbytes)
      .def_readonly("data", &Weight::data)
      .def("__deepcopy__", [](const Weight& w, pybind11::dict) {  // a copied module gets its own bytes
        return Weight(w.data.clone(), w.fmt(), w.rows(), w.cols());
      });
  m.def("linear", &kangaroo::linear, "x [..., K] @ w^T for a weight in any format, batch-invariant",
        pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("dequantize", &kangaroo::dequantize, "the weight's float32 values (all rows, or the rows ids)",
        pybind11::arg("w"), pybind11::arg("ids") = pybind11::none());
  m.attr("isa") = kangaroo::kIsaName;
  for (auto bind : kangaroo::binders()) bind(m);
}
