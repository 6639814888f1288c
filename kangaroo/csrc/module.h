// One Python extension from every kangaroo/csrc/*.cpp: a source adds its bindings with
//
//     static void bind_mine(pybind11::module_& m) { m.def("mine", &mine); }
//     static kangaroo::Bind bind_mine_once(bind_mine);
//
// and module.cpp's PYBIND11_MODULE runs every such binder.
#pragma once
#include <torch/extension.h>

#include <vector>

namespace kangaroo {

using Binder = void (*)(pybind11::module_&);
std::vector<Binder>& binders();
struct Bind {
  explicit Bind(Binder b) { binders().push_back(b); }
};

}  // namespace kangaroo
