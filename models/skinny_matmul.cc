// y[N, F] = x[N, D] @ W for few rows N, W pre-packed as panels [P, D, 16] (P = ceil(F / 16),
// columns past F zero): an XLA:CPU FFI kernel that reads each weight from memory once.
//
// Why: at N >= 2 XLA:CPU leaves its matrix-vector kernel for Eigen's GEMM, which packs the weight
// panels on every call, so a speculative verify over 2-16 tokens cost 1.5-3 times a 1-token
// forward on a 2-core CPU although the bytes read are the same. Here each 16-column panel is read
// in blocks of KB rows that stay in L1 while every row of x is multiplied against them, so the
// weights stream from memory once whatever N is. Built with AVX2 + FMA (models/skinny_matmul.py
// compiles it on first use); the work is split by panels over XLA's own intra-op thread pool.

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kPanel = 16;   // columns per panel: two 8-float AVX registers
constexpr int kBlock = 128;  // weight rows per L1-resident block of a panel (8 KB)
constexpr int kMaxRows = 6;  // rows of x per register tile: 12 accumulators + 2 weights + 1 x

// acc[i, :] += x[i, k0:k1] @ w[k0:k1, :] for the R rows of one tile (R a compile-time constant so
// the accumulators live in registers). With `ahead`, step k also prefetches ahead[(k - k0) *
// stride]: while the tiles after the first read their block from L1, memory stays busy.
template <int R>
void Tile(const float* x, int64_t D, const float* w, float* acc, int64_t k0, int64_t k1,
          const float* ahead, int64_t stride) {
  __m256 a[R][2];
  for (int i = 0; i < R; ++i) {
    a[i][0] = _mm256_loadu_ps(acc + kPanel * i);
    a[i][1] = _mm256_loadu_ps(acc + kPanel * i + 8);
  }
  for (int64_t k = k0; k < k1; ++k) {
    if (ahead != nullptr) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + (k - k0) * stride), _MM_HINT_T0);
    }
    const __m256 w0 = _mm256_loadu_ps(w + k * kPanel);
    const __m256 w1 = _mm256_loadu_ps(w + k * kPanel + 8);
    for (int i = 0; i < R; ++i) {
      const __m256 b = _mm256_broadcast_ss(x + i * D + k);
      a[i][0] = _mm256_fmadd_ps(b, w0, a[i][0]);
      a[i][1] = _mm256_fmadd_ps(b, w1, a[i][1]);
    }
  }
  for (int i = 0; i < R; ++i) {
    _mm256_storeu_ps(acc + kPanel * i, a[i][0]);
    _mm256_storeu_ps(acc + kPanel * i + 8, a[i][1]);
  }
}

void TileRows(int rows, const float* x, int64_t D, const float* w, float* acc, int64_t k0,
              int64_t k1, const float* ahead, int64_t stride) {
  switch (rows) {
    case 1: return Tile<1>(x, D, w, acc, k0, k1, ahead, stride);
    case 2: return Tile<2>(x, D, w, acc, k0, k1, ahead, stride);
    case 3: return Tile<3>(x, D, w, acc, k0, k1, ahead, stride);
    case 4: return Tile<4>(x, D, w, acc, k0, k1, ahead, stride);
    case 5: return Tile<5>(x, D, w, acc, k0, k1, ahead, stride);
    default: return Tile<6>(x, D, w, acc, k0, k1, ahead, stride);
  }
}

// Columns [16p, 16p + 16) of y for every row; acc is scratch of N * 16 floats.
void Panel(const float* x, int64_t N, int64_t D, const float* w_p, float* y, int64_t F, int64_t p,
           float* acc) {
  std::memset(acc, 0, sizeof(float) * kPanel * N);
  // Rows in tiles of near-equal size (7 rows as 4 + 3, not 6 + 1).
  const int64_t tiles = (N + kMaxRows - 1) / kMaxRows;
  const int64_t tile = (N + tiles - 1) / tiles;
  const int64_t stride = std::max<int64_t>(1, kPanel / tiles);  // floats between prefetches
  for (int64_t k0 = 0; k0 < D; k0 += kBlock) {
    const int64_t k1 = std::min(k0 + kBlock, D);
    for (int64_t r0 = 0; r0 < N; r0 += tile) {
      const int rows = static_cast<int>(std::min(tile, N - r0));
      // With several tiles, each fetches its share of the next block (the panel's next block, or
      // the start of the next panel: panels are contiguous, and a prefetch past the weights' end
      // is harmless), so memory streams while the tiles compute from L1.
      const int64_t t = r0 / tile;
      const float* ahead =
          tiles > 1 ? w_p + k1 * kPanel + t * (kBlock / tiles) * kPanel : nullptr;
      TileRows(rows, x + r0 * D, D, w_p, acc + kPanel * r0, k0, k1, ahead, stride);
    }
  }
  const int64_t col0 = p * kPanel;
  const int64_t cols = std::min<int64_t>(kPanel, F - col0);
  for (int64_t r = 0; r < N; ++r) {
    std::memcpy(y + r * F + col0, acc + kPanel * r, sizeof(float) * cols);
  }
}

// Panels handed out in chunks from a shared counter: the calling thread and the pool's tasks take
// chunks until none are left, so the call finishes even when no pool thread is free, and a task
// that starts late finds nothing to do (it holds the state, never the call's buffers).
struct Work {
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
};

ffi::Error SkinnyMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w,
                        ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions();
  const auto wd = w.dimensions();
  const auto yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 3 || yd.size() != 2 || wd[2] != kPanel || wd[1] != xd[1] ||
      yd[0] != xd[0] || (yd[1] + kPanel - 1) / kPanel != wd[0]) {
    return ffi::Error::InvalidArgument("skinny_matmul: shapes do not match x[N,D], w[P,D,16]");
  }
  const int64_t N = xd[0], D = xd[1], P = wd[0], F = yd[1];
  const float* xp = x.typed_data();
  const float* wp = w.typed_data();
  float* yp = y->typed_data();
  if (N == 0 || F == 0) return ffi::Error::Success();

  const int64_t chunk = std::max<int64_t>(1, P / 16);  // ~16 chunks: balance without overhead
  const int64_t chunks = (P + chunk - 1) / chunk;
  auto work = std::make_shared<Work>();
  auto run = [=](Work* wk) {
    std::vector<float> acc(kPanel * N);
    for (int64_t c; (c = wk->next.fetch_add(1)) < chunks;) {
      const int64_t end = std::min(P, (c + 1) * chunk);
      for (int64_t p = c * chunk; p < end; ++p) {
        Panel(xp, N, D, wp + p * D * kPanel, yp, F, p, acc.data());
      }
      wk->done.fetch_add(1, std::memory_order_release);
    }
  };
  const int64_t helpers =
      std::min<int64_t>({pool.num_threads(), static_cast<int64_t>(std::thread::hardware_concurrency()),
                         chunks}) - 1;
  for (int64_t i = 0; i < helpers; ++i) {
    pool.Schedule([work, run] { run(work.get()); });
  }
  run(work.get());
  while (work->done.load(std::memory_order_acquire) < chunks) {
    _mm_pause();
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SpecjaxSkinnyMatmul, SkinnyMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
