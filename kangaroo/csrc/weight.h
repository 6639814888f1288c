// A weight matrix as the engine holds it: the stored bytes (a tensor kept alive) and their ``Mat`` view.
#pragma once
#include <torch/extension.h>

#include "formats.h"

namespace kangaroo {

struct Weight {
  torch::Tensor data;
  Mat mat;

  // ``data``: contiguous CPU bytes of [rows, cols] in format ``fmt`` (any dtype; its bytes are what count).
  Weight(torch::Tensor data_, int64_t fmt, int64_t rows, int64_t cols) : data(std::move(data_)) {
    TORCH_CHECK(fmt >= 0 && fmt <= int64_t(Format::Q4_1), "unknown weight format ", fmt);
    TORCH_CHECK(rows > 0 && cols > 0, "a weight needs rows and cols, got ", rows, " x ", cols);
    const int64_t stride = row_bytes(Format(fmt), cols);
    TORCH_CHECK(stride > 0, "format ", fmt, " stores blocks of 32 weights: cols must be a multiple of 32, got ", cols);
    TORCH_CHECK(data.device().is_cpu() && data.is_contiguous(), "weight bytes must be a contiguous CPU tensor");
    TORCH_CHECK(int64_t(data.nbytes()) == rows * stride, "weight of ", rows, " x ", cols, " in format ", fmt,
                " takes ", rows * stride, " bytes, got ", data.nbytes());
    mat = Mat{Format(fmt), static_cast<const uint8_t*>(data.data_ptr()), rows, cols, stride};
  }

  int64_t rows() const { return mat.rows; }
  int64_t cols() const { return mat.cols; }
  int64_t fmt() const { return int64_t(mat.fmt); }
  int64_t nbytes() const { return mat.rows * mat.stride; }
};

}  // namespace kangaroo
