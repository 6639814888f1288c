// The top of rows of logits (top_k.cpp), for the kernels that make logits (packed_head.cpp).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace kangaroo {

// idx [n, k] int64 and prob [n, k] float32 of logits rows y [n, N] float32 (contiguous): the k largest logits of
// each row (largest first, lower index first among equals) and their softmax probabilities.
std::vector<torch::Tensor> top_k_probs(const torch::Tensor& y, int64_t k);

}  // namespace kangaroo
