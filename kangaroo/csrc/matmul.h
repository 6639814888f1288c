// The engine's batch-invariant matmul over a weight in any format of formats.h.
#pragma once
#include "formats.h"

namespace kangaroo {

// y[i * ldy + j] = dot(x[i * ldx ..], row j of w) for i < n, j < w.rows. Every output is one 8-lane FMA chain
// over k ascending, a fixed horizontal sum, then fma over the k % 8 tail: the same float operations whatever
// n, the row's place in the call, the tile, the ISA and the thread count. The weight is read once per call.
void matmul(const float* x, int64_t n, int64_t ldx, const Mat& w, float* y, int64_t ldy);

// The float32 values of w's rows (what matmul multiplies by), into out [w.rows, w.cols].
void expand_rows(const Mat& w, float* out);

}  // namespace kangaroo
