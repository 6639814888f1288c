// The engine's batch-invariant matmul: a tile of weight rows is expanded to float32 in registers once per group
// of k and dotted with every input row of the tile while it sits there; the weights a few tiles ahead are
// prefetched so memory streams while the FMAs work. Tile shapes are chosen at compile time per ISA (the
// registers must hold NX x NV accumulators, the expanded group and the expansion's temporaries); they only
// change which outputs are computed together, never a value.
#include "matmul.h"

#include <ATen/Parallel.h>

#include <array>
#include <utility>

namespace kangaroo {
namespace {

constexpr int R = kRowsPerVec;
#ifdef KANGAROO_AVX512
constexpr int kMaxNX = 8, kRegs = 32;
constexpr int nv_for(int nx) { return nx <= 2 || nx == 4 ? 4 : 3; }  // measured on Zen 4, Q4_1
constexpr int64_t kTileRows = 24;  // a multiple of every NV * R: threads split the rows in tiles of this many
#else
constexpr int kMaxNX = 4, kRegs = 16;
constexpr int nv_for(int nx) { return nx == 1 ? 4 : nx == 2 ? 2 : 1; }
constexpr int64_t kTileRows = 8;
#endif
// The weights this many bytes ahead are prefetched into L2 while a tile works (measured on Zen 4: into L1, or
// much further ahead, the lines are evicted before use and a decode step streams at 2/3 of the rate).
constexpr int64_t kPrefetchBytes = 16384;

// Rows j0 .. j0 + NV*R - 1 of w dotted with NX input rows; rows from ``jend`` on are not stored (past the
// last row of w the last row is read again). ``pf``: the first of NV*R rows to prefetch meanwhile (-1: none).
template <Format F, int NX, int NV>
void tile(const float* x, int64_t ldx, const Mat& w, int64_t j0, int64_t jend, float* y, int64_t ldy, int64_t pf) {
  using E = Expand<F>;
  constexpr int C = E::kChunks;
  constexpr int64_t GB = E::kGroupBytes, kPfEvery = GB >= 64 ? 1 : 64 / GB;
  const uint8_t* rows[NV][R];
  for (int v = 0; v < NV; ++v)
    for (int r = 0; r < R; ++r) rows[v][r] = w.row(std::min<int64_t>(j0 + v * R + r, w.rows - 1));
  const uint8_t* pf_row = pf >= 0 ? w.row(pf) : nullptr;
  const int pf_rows = pf >= 0 ? int(std::min<int64_t>(NV * R, w.rows - pf)) : 0;
  // the order of the loads and FMAs below changes nothing of any output's FMA chain, only the registers' reuse
  constexpr bool kExpandAll = NV * C <= kRegs / 2;
  auto group_rows = [&](int v, int64_t g) {
    std::array<const uint8_t*, R> rp;
    for (int r = 0; r < R; ++r) rp[r] = rows[v][r] + g * GB;
    return rp;
  };
  Vec acc[NX][NV];
  for (int i = 0; i < NX; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = vzero();
  const int64_t groups = w.cols / (8 * C);
  for (int64_t g = 0; g < groups; ++g) {
    if (pf_row && g % kPfEvery == 0)
      for (int t = 0; t < pf_rows; ++t) _mm_prefetch(reinterpret_cast<const char*>(pf_row + t * w.stride + g * GB), _MM_HINT_T1);
    if constexpr (kExpandAll) {  // all NV groups expanded, then each input chunk loaded once for the NV of them
      Vec wv[NV][C];
      for (int v = 0; v < NV; ++v) E::group(group_rows(v, g).data(), wv[v]);
      for (int c = 0; c < C; ++c)
        for (int i = 0; i < NX; ++i) {
          const Vec xv = xload(x + i * ldx + (g * C + c) * 8);
          for (int v = 0; v < NV; ++v) acc[i][v] = vfma(wv[v][c], xv, acc[i][v]);
        }
    } else {  // too few registers for that: one group at a time
      for (int v = 0; v < NV; ++v) {
        Vec wv[C];
        E::group(group_rows(v, g).data(), wv);
        for (int c = 0; c < C; ++c)
          for (int i = 0; i < NX; ++i) acc[i][v] = vfma(wv[c], xload(x + i * ldx + (g * C + c) * 8), acc[i][v]);
      }
    }
  }
  const int64_t k0 = groups * 8 * C;  // float formats: the k % 8 tail, one fma at a time
  for (int i = 0; i < NX; ++i)
    for (int v = 0; v < NV; ++v)
      for (int r = 0; r < R; ++r) {
        const int64_t j = j0 + v * R + r;
        if (j >= jend) continue;
        float s = vsum(acc[i][v], r);
        for (int64_t k = k0; k < w.cols; ++k) s = std::fma(x[i * ldx + k], E::value(rows[v][r], k), s);
        y[i * ldy + j] = s;
      }
}

using TileFn = void (*)(const float*, int64_t, const Mat&, int64_t, int64_t, float*, int64_t, int64_t);

template <Format F, size_t... I>
constexpr std::array<TileFn, kMaxNX> tiles_for(std::index_sequence<I...>) {
  return {tile<F, int(I) + 1, nv_for(int(I) + 1)>...};
}

template <Format F>
void matmul_as(const float* x, int64_t n, int64_t ldx, const Mat& w, float* y, int64_t ldy) {
  static constexpr auto kTiles = tiles_for<F>(std::make_index_sequence<kMaxNX>{});
  const int64_t tiles = (w.rows + kTileRows - 1) / kTileRows;
  at::parallel_for(0, tiles, 4, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t jend = std::min((t + 1) * kTileRows, w.rows);
      for (int64_t i0 = 0; i0 < n; i0 += kMaxNX) {
        const int nx = int(std::min<int64_t>(kMaxNX, n - i0));
        for (int64_t j = t * kTileRows; j < jend; j += nv_for(nx) * R) {
          const int64_t ahead = std::max<int64_t>(nv_for(nx) * R, (kPrefetchBytes / w.stride + R) / R * R);
          const int64_t pf = i0 == 0 && j + ahead < w.rows ? j + ahead : -1;
          kTiles[nx - 1](x + i0 * ldx, ldx, w, j, jend, y + i0 * ldy, ldy, pf);
        }
      }
    }
  });
}

template <Format F>
void expand_as(const Mat& w, float* out) {
  using E = Expand<F>;
  constexpr int C = E::kChunks;
  const int64_t groups = w.cols / (8 * C), k0 = groups * 8 * C;
  at::parallel_for(0, (w.rows + R - 1) / R, 64, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const uint8_t* rp[R];
      for (int r = 0; r < R; ++r) rp[r] = w.row(std::min<int64_t>(p * R + r, w.rows - 1));
      for (int64_t g = 0; g < groups; ++g) {
        const uint8_t* gp[R];
        for (int r = 0; r < R; ++r) gp[r] = rp[r] + g * E::kGroupBytes;
        Vec wv[C];
        E::group(gp, wv);
        for (int c = 0; c < C; ++c) {
          float lanes[8 * R];
          vstore(lanes, wv[c]);
          for (int r = 0; r < R && p * R + r < w.rows; ++r)
            std::copy(lanes + 8 * r, lanes + 8 * r + 8, out + (p * R + r) * w.cols + (g * C + c) * 8);
        }
      }
      for (int r = 0; r < R && p * R + r < w.rows; ++r)
        for (int64_t k = k0; k < w.cols; ++k) out[(p * R + r) * w.cols + k] = E::value(rp[r], k);
    }
  });
}

template <template <Format> class Fn, typename... A>
void by_format(Format f, A&&... a) {
  switch (f) {
    case Format::F32: return Fn<Format::F32>::run(a...);
    case Format::BF16: return Fn<Format::BF16>::run(a...);
    case Format::F16: return Fn<Format::F16>::run(a...);
    case Format::Q8_0: return Fn<Format::Q8_0>::run(a...);
    case Format::Q4_0: return Fn<Format::Q4_0>::run(a...);
    case Format::Q4_1: return Fn<Format::Q4_1>::run(a...);
  }
}
template <Format F>
struct MatmulFn {
  static void run(const float* x, int64_t n, int64_t ldx, const Mat& w, float* y, int64_t ldy) {
    matmul_as<F>(x, n, ldx, w, y, ldy);
  }
};
template <Format F>
struct ExpandFn {
  static void run(const Mat& w, float* out) { expand_as<F>(w, out); }
};

}  // namespace

void matmul(const float* x, int64_t n, int64_t ldx, const Mat& w, float* y, int64_t ldy) {
  by_format<MatmulFn>(w.fmt, x, n, ldx, w, y, ldy);
}

void expand_rows(const Mat& w, float* out) { by_format<ExpandFn>(w.fmt, w, out); }

}  // namespace kangaroo
