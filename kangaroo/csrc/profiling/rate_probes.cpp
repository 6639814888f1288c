// What one core can do, measured by the engine's own kind of code (for the profiler, scripts/profile/limits.py):
// the rate it streams bytes from memory (loads with the matmul's prefetch, nothing computed) and the rate it runs
// the FMAs a dot product chains (independent accumulators, so throughput, not latency, bounds it).
//
// A small extension of its own, not part of the engine's: kangaroo/cpu_engine.py's rate_probes() builds it on
// first use, with the engine's flags; decoding never loads it.
#include <torch/extension.h>

#include <array>
#include <chrono>

#include "isa.h"

namespace kangaroo {
namespace {

// Reads every 64-byte line of ``bytes`` in order (one stream, left to the hardware prefetcher: on Zen 4 the
// fastest way one core reads memory, faster than software prefetch or several streams); returns the seconds.
double stream_read(torch::Tensor bytes) {
  TORCH_CHECK(bytes.is_contiguous() && bytes.device().is_cpu(), "stream_read: a contiguous CPU tensor");
  const auto* p = static_cast<const uint8_t*>(bytes.data_ptr());
  const int64_t lines = int64_t(bytes.nbytes()) / 64;
  const auto t0 = std::chrono::steady_clock::now();
  __m256i acc = _mm256_setzero_si256();
  for (int64_t l = 0; l < lines; ++l) {
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + l * 64)));
    acc = _mm256_xor_si256(acc, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + l * 64 + 32)));
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  volatile int sink = _mm256_extract_epi32(acc, 0);
  (void)sink;
  return s;
}

// Runs ``n`` rounds of 12 independent Vec FMA chains; returns float32 FMAs (lanes) per second.
double fma_rate(int64_t n) {
  Vec a[12];
  const Vec m = xload(std::array<float, 8>{0.999f, 0.999f, 0.999f, 0.999f, 0.999f, 0.999f, 0.999f, 0.999f}.data());
  for (int i = 0; i < 12; ++i) a[i] = vzero();
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < n; ++r)
    for (int i = 0; i < 12; ++i) a[i] = vfma(a[i], m, m);  // in registers (no barrier: one kept them in memory)
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (int i = 1; i < 12; ++i) a[0] = vfma(a[0], m, a[i]);  // every chain is used, so none is left out
  float out[8 * kRowsPerVec];
  vstore(out, a[0]);
  volatile float sink = out[0];
  (void)sink;
  return double(n) * 12 * 8 * kRowsPerVec / s;
}

}  // namespace
}  // namespace kangaroo

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("stream_read", &kangaroo::stream_read, "seconds to stream every byte of a tensor (the engine's weight reads)");
  m.def("fma_rate", &kangaroo::fma_rate, "float32 FMAs per second one thread chains (the engine's vector width)");
  m.attr("isa") = kangaroo::kIsaName;
}
