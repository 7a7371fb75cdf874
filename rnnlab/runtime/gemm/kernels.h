// Deterministic AVX2+FMA GEMM kernels: C = A*B where every element C(i, j) is ONE sequential
// chain acc = fma(A(i, k), B(k, j), acc) for k = 0..K-1, starting from acc = 0.
//
// Why the bits are then fixed: each step is an exactly rounded fused multiply-add, so the chain's
// result depends only on the order of k, never on how M and N are tiled, on the vector width, or
// on which thread computes a tile. Blocking over K continues the same chain (the float accumulator
// is stored in C and reloaded, which is exact). Nothing here splits K into partial sums.
//
// Layout: BLIS-style. A is packed into MR-row slivers (k-major), B into NR-column slivers
// (k-major); an MR x NR micro-kernel keeps the C tile in vector registers. Packing only copies.
// Two micro-kernel families, the same bits by the argument above: AVX2 (6 x 16 floats in 12 ymm,
// here) and AVX-512F (avx512.h: 10 x 32 floats in 20 zmm), chosen at load (select_isa, gemm.cpp)
// and by the product's width (run_problems, products.h).
// Compile with -mavx2 -mfma -ffp-contract=off and no fast-math: the compiler must neither fuse the
// epilogue's separate multiply and add nor reassociate anything.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <type_traits>

namespace rnnlab_gemm {

template <typename T>
struct Simd;

template <>
struct Simd<float> {
  using V = __m256;
  static constexpr int kLanes = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_load_ps(p); }
  static V loadu(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_store_ps(p, v); }
  static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
};

template <>
struct Simd<double> {
  using V = __m256d;
  static constexpr int kLanes = 4;
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const double* p) { return _mm256_load_pd(p); }
  static V loadu(const double* p) { return _mm256_loadu_pd(p); }
  static void store(double* p, V v) { _mm256_store_pd(p, v); }
  static void storeu(double* p, V v) { _mm256_storeu_pd(p, v); }
  static V broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
};

// A strided matrix view: element (i, j) at data[i * rs + j * cs]. Any strides, including 0.
template <typename T>
struct Operand {
  const T* data = nullptr;
  int64_t rs = 0;
  int64_t cs = 0;
  const T& at(int64_t i, int64_t j) const { return data[i * rs + j * cs]; }
  Operand transposed() const { return {data, cs, rs}; }
};

// What happens after the k-chains: C = alpha * acc + beta * self, each product and the sum rounded
// separately (a fixed formula, so fast paths with alpha == 1 or beta == 1 give the same bits).
// As in BLAS and torch, beta == 0 ignores self and alpha == 0 the product, NaN or inf included.
template <typename T>
struct Epilogue {
  T alpha = 1;
  T beta = 0;
  Operand<T> self;  // (i, j) of the broadcast self; unused when beta == 0
  bool is_identity() const { return alpha == T(1) && beta == T(0); }
  Epilogue transposed() const { return {alpha, beta, self.transposed()}; }
};

// One product C (m x n, row stride ldc, column stride 1) = epilogue(A (m x k) * B (k x n)).
template <typename T>
struct Problem {
  int64_t m = 0;
  int64_t n = 0;
  int64_t k = 0;
  Operand<T> a;
  Operand<T> b;
  T* c = nullptr;
  int64_t ldc = 0;
  Epilogue<T> epilogue;
};

// ---------------------------------------------------------------------------------------------
// The epilogue formula (tiles.h has it on vectors: the same bits, both round the product and the sum).

template <typename T>
inline T combine(T acc, T self, const Epilogue<T>& e) {
  const T scaled = e.alpha == T(1) ? acc : e.alpha == T(0) ? T(0) : e.alpha * acc;
  if (e.beta == T(0)) return scaled;
  return scaled + (e.beta == T(1) ? self : e.beta * self);
}

// ---------------------------------------------------------------------------------------------
// Micro-kernel (tiles.h): a tile of C kept in vector registers while the k-chains run.

template <typename T>
struct FusedEpilogue {
  const Epilogue<T>* e = nullptr;
  int64_t i = 0;
  int64_t j = 0;
};

namespace avx2 {
constexpr int kRows = 6;
#include "tiles.h"
}  // namespace avx2

// Register blocking: an MR x NR tile of C is 6 rows x 2 vectors = 12 accumulators, leaving 4 of the
// 16 ymm registers for the two B vectors and the A broadcast. 12 independent chains cover the
// FMA latency (4 cycles) on two FMA ports. KC: an A sliver (MR x KC) plus a B sliver (KC x NR)
// fit L1 (6 KB + 16 KB for float); MC: a packed MC x KC block of A stays in L2 (~150 KB).
template <typename T>
struct Avx2Tiles {
  using Scalar = T;
  static constexpr int64_t kMR = avx2::kRows;
  static constexpr int64_t kNR = 2 * Simd<T>::kLanes;
  static constexpr int64_t kKC = 256;
  static constexpr int64_t kMC = 144 * 4 / static_cast<int64_t>(sizeof(T));
  static void multiply(int64_t kc, const T* ap, const T* bp, T* c, int64_t ldc, bool accumulate,
                       const FusedEpilogue<T>& fused = {}) {
    avx2::micro_kernel<T>(kc, ap, bp, c, ldc, accumulate, fused);
  }
};

}  // namespace rnnlab_gemm

#include "avx512.h"

namespace rnnlab_gemm {

// A tile cut by the edge of C (mv < MR rows or nv < NR columns): run the full micro-kernel on a
// local tile and copy the valid part in and out. Padding rows/columns are zeros in the packed
// panels, so they never touch a stored element.
template <typename K, typename T = typename K::Scalar>
void edge_kernel(int64_t kc, const T* ap, const T* bp, T* c, int64_t ldc, int64_t mv, int64_t nv, bool accumulate) {
  alignas(64) T tile[K::kMR * K::kNR] = {};
  for (int64_t i = 0; i < mv && accumulate; ++i) {
    for (int64_t j = 0; j < nv; ++j) tile[i * K::kNR + j] = c[i * ldc + j];
  }
  K::multiply(kc, ap, bp, tile, K::kNR, accumulate);
  for (int64_t i = 0; i < mv; ++i) {
    for (int64_t j = 0; j < nv; ++j) c[i * ldc + j] = tile[i * K::kNR + j];
  }
}

// The epilogue on a finished mv x nv tile of C (hot in L1), for tiles the micro-kernel didn't fuse.
template <typename T>
void apply_epilogue(const Problem<T>& g, int64_t i0, int64_t j0, int64_t mv, int64_t nv) {
  using S = Simd<T>;
  constexpr int64_t kL = S::kLanes;
  const Epilogue<T>& e = g.epilogue;
  for (int64_t i = i0; i < i0 + mv; ++i) {
    T* row = g.c + i * g.ldc;
    int64_t j = j0;
    if (e.beta == T(0) || e.self.cs <= 1) {  // self row contiguous or broadcast along the row
      for (; j + kL <= j0 + nv; j += kL) {
        typename S::V self = S::zero();
        if (e.beta != T(0)) self = e.self.cs == 1 ? S::loadu(&e.self.at(i, j)) : S::set1(e.self.at(i, j));
        S::storeu(row + j, avx2::combine<T>(S::loadu(row + j), self, e));
      }
    }
    for (; j < j0 + nv; ++j) row[j] = combine<T>(row[j], e.beta == T(0) ? T(0) : e.self.at(i, j), e);
  }
}

// ---------------------------------------------------------------------------------------------
// Packing (copies only). 8x8 float transposes for the transposed layouts that backward passes
// produce (B = W^T of nn.Linear: k contiguous; A = G^T of a gradient: m contiguous).

inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Bp[p * NR + j] = B(k0 + p, j0 + j) for j < nv, 0 for nv <= j < NR.
template <typename K, typename T = typename K::Scalar>
void pack_b_generic(const Operand<T>& b, int64_t k0, int64_t kc, int64_t j0, int64_t nv, T* out) {
  constexpr int64_t kNR = K::kNR;
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t j = 0; j < nv; ++j) out[p * kNR + j] = b.at(k0 + p, j0 + j);
    std::fill(out + p * kNR + nv, out + (p + 1) * kNR, T(0));
  }
}

template <typename K, typename T = typename K::Scalar>
void pack_b(const Operand<T>& b, int64_t k0, int64_t kc, int64_t j0, int64_t nv, T* out) {
  using S = Simd<T>;
  constexpr int64_t kNR = K::kNR;
  if (nv == kNR && b.cs == 1) {  // rows of B contiguous: NR / lanes vector copies per k
    const T* src = &b.at(k0, j0);
    for (int64_t p = 0; p < kc; ++p, src += b.rs) {
#pragma GCC unroll 4
      for (int64_t v = 0; v < kNR; v += S::kLanes) S::store(out + p * kNR + v, S::loadu(src + v));
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (nv == kNR && b.rs == 1) {  // columns of B contiguous (B = W^T): transpose 8 k x 8 j blocks
      int64_t p = 0;
      for (; p + 8 <= kc; p += 8) {
        for (int64_t block = 0; block < kNR; block += 8) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j) r[j] = _mm256_loadu_ps(&b.at(k0 + p, j0 + block + j));
          transpose8x8(r);
          for (int q = 0; q < 8; ++q) _mm256_store_ps(out + (p + q) * kNR + block, r[q]);
        }
      }
      pack_b_generic<K>(b, k0 + p, kc - p, j0, nv, out + p * kNR);
      return;
    }
  }
  pack_b_generic<K>(b, k0, kc, j0, nv, out);
}

// Ap[p * MR + i] = A(i0 + i, k0 + p) for i < mv, 0 for mv <= i < MR.
template <typename K, typename T = typename K::Scalar>
void pack_a_generic(const Operand<T>& a, int64_t i0, int64_t mv, int64_t k0, int64_t kc, T* out) {
  constexpr int64_t kMR = K::kMR;
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < mv; ++i) out[p * kMR + i] = a.at(i0 + i, k0 + p);
    std::fill(out + p * kMR + mv, out + (p + 1) * kMR, T(0));
  }
}

// The first `count` (< 8) lanes of v, in 4-, 2- and 1-float pieces: a full store would run into
// the next k's rows (or past the buffer at the last k), and masked stores are slow on AMD.
inline void store_lanes(float* dst, __m256 v, int count) {
  __m128 part = _mm256_castps256_ps128(v);
  if (count >= 4) {
    _mm_storeu_ps(dst, part);
    part = _mm256_extractf128_ps(v, 1);
    dst += 4, count -= 4;
  }
  if (count >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), part);
    part = _mm_movehl_ps(part, part);
    dst += 2, count -= 2;
  }
  if (count == 1) _mm_store_ss(dst, part);
}

// Rows [g, g + rows) of an MR-row float sliver from rows of A that are contiguous in k: rows
// (zero-padded to 8) x 8 k transposes, each k's first `rows` lanes stored.
inline void pack_a_rows(const Operand<float>& a, int64_t i0, int64_t g, int rows, int64_t k0, int64_t kc,
                        int64_t mr, float* out) {
  for (int64_t p = 0; p + 8 <= kc; p += 8) {
    __m256 r[8];
    for (int i = 0; i < 8; ++i) r[i] = i < rows ? _mm256_loadu_ps(&a.at(i0 + g + i, k0 + p)) : _mm256_setzero_ps();
    transpose8x8(r);
    for (int q = 0; q < 8; ++q) {
      float* dst = out + (p + q) * mr + g;
      if (rows == 8) {
        _mm256_storeu_ps(dst, r[q]);
      } else {
        store_lanes(dst, r[q], rows);
      }
    }
  }
}

template <typename K, typename T = typename K::Scalar>
void pack_a(const Operand<T>& a, int64_t i0, int64_t mv, int64_t k0, int64_t kc, T* out) {
  constexpr int64_t kMR = K::kMR;
  if (mv == kMR && a.rs == 1) {  // columns of A contiguous (A = G^T): MR contiguous values per k
    const T* src = &a.at(i0, k0);
    for (int64_t p = 0; p < kc; ++p, src += a.cs) {
#pragma GCC unroll 16
      for (int64_t i = 0; i < kMR; ++i) out[p * kMR + i] = src[i];  // inline moves, not a memmove call
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (mv == kMR && a.cs == 1) {  // rows of A contiguous: transposes of up to 8 rows x 8 k
      for (int64_t g = 0; g < kMR; g += 8) {
        pack_a_rows(a, i0, g, static_cast<int>(std::min<int64_t>(8, kMR - g)), k0, kc, kMR, out);
      }
      const int64_t p = kc / 8 * 8;
      pack_a_generic<K>(a, i0, mv, k0 + p, kc - p, out + p * kMR);
      return;
    }
  }
  pack_a_generic<K>(a, i0, mv, k0, kc, out);
}

// ---------------------------------------------------------------------------------------------
// Per-thread packing buffers, grown on demand and kept: no allocation per call once warm.

template <typename T>
class Scratch {
 public:
  T* get(int64_t elements) {
    if (elements > capacity_) {
      const size_t bytes = (static_cast<size_t>(elements) * sizeof(T) + 63) / 64 * 64;
      data_.reset(static_cast<T*>(std::aligned_alloc(64, bytes)));
      if (!data_) throw std::bad_alloc();
      capacity_ = elements;
    }
    return data_.get();
  }

 private:
  struct Free {
    void operator()(T* p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  int64_t capacity_ = 0;
};

template <typename T>
Scratch<T>& scratch_a() {
  static thread_local Scratch<T> s;
  return s;
}

template <typename T>
Scratch<T>& scratch_b() {
  static thread_local Scratch<T> s;
  return s;
}

// ---------------------------------------------------------------------------------------------
// Rows [i0, i1) x columns [j0, j1) of one problem, over all of K: the unit of thread work.
// Loop order as BLIS: per K block and MC rows pack A once; then each B sliver stays in L1 while
// the micro-kernel walks down the packed A block.

struct KBlock {
  int64_t p0;  // first k of the block
  int64_t kc;  // its depth
  bool accumulate() const { return p0 > 0; }  // continue the chains stored in C
};

// The micro-kernels of one packed B sliver (columns [j, j + nv)) down packed A rows [ic, ic + mc).
template <typename K, typename T = typename K::Scalar>
void multiply_sliver(const Problem<T>& g, const KBlock& kb, const T* ap, int64_t ic, int64_t mc, const T* bp,
                     int64_t j, int64_t nv) {
  const Epilogue<T>& e = g.epilogue;
  const bool epilogue = kb.p0 + kb.kc == g.k && !e.is_identity();
  const bool fusable = e.beta == T(0) || e.self.cs <= 1;
  for (int64_t i = ic; i < ic + mc; i += K::kMR, ap += kb.kc * K::kMR) {
    const int64_t mv = std::min(K::kMR, ic + mc - i);
    T* c = g.c + i * g.ldc + j;
    if (mv == K::kMR && nv == K::kNR) {
      const FusedEpilogue<T> fused{epilogue && fusable ? &e : nullptr, i, j};
      K::multiply(kb.kc, ap, bp, c, g.ldc, kb.accumulate(), fused);
      if (epilogue && !fusable) apply_epilogue(g, i, j, mv, nv);
    } else {
      edge_kernel<K>(kb.kc, ap, bp, c, g.ldc, mv, nv, kb.accumulate());
      if (epilogue) apply_epilogue(g, i, j, mv, nv);
    }
  }
}

template <typename K, typename T = typename K::Scalar>
void compute_block(const Problem<T>& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  if (g.k == 0) {  // empty chains: acc = 0, then the epilogue
    for (int64_t i = i0; i < i1; ++i) std::fill(g.c + i * g.ldc + j0, g.c + i * g.ldc + j1, T(0));
    apply_epilogue(g, i0, j0, i1 - i0, j1 - j0);
    return;
  }
  const int64_t col_slivers = (j1 - j0 + K::kNR - 1) / K::kNR;
  // One A block (e.g. a recurrent step: 100 x 256 by 256 x 1024): each B sliver is used once, so
  // pack it right before its use into an L1-sized buffer rather than the whole panel through L3.
  const bool pack_per_sliver = i1 - i0 <= K::kMC;
  for (int64_t p0 = 0; p0 < g.k; p0 += K::kKC) {
    const KBlock kb{p0, std::min(K::kKC, g.k - p0)};
    const int64_t sliver_size = kb.kc * K::kNR;
    T* bp = scratch_b<T>().get(pack_per_sliver ? sliver_size : col_slivers * sliver_size);
    if (!pack_per_sliver) {
      for (int64_t s = 0; s < col_slivers; ++s) {
        const int64_t j = j0 + s * K::kNR;
        pack_b<K>(g.b, p0, kb.kc, j, std::min(K::kNR, j1 - j), bp + s * sliver_size);
      }
    }
    for (int64_t ic = i0; ic < i1; ic += K::kMC) {
      const int64_t mc = std::min(K::kMC, i1 - ic);
      T* ap = scratch_a<T>().get((mc + K::kMR - 1) / K::kMR * kb.kc * K::kMR);
      for (int64_t i = ic; i < ic + mc; i += K::kMR) {
        pack_a<K>(g.a, i, std::min(K::kMR, ic + mc - i), p0, kb.kc, ap + (i - ic) * kb.kc);
      }
      for (int64_t s = 0; s < col_slivers; ++s) {
        const int64_t j = j0 + s * K::kNR;
        const int64_t nv = std::min(K::kNR, j1 - j);
        if (pack_per_sliver) pack_b<K>(g.b, p0, kb.kc, j, nv, bp);
        multiply_sliver<K>(g, kb, ap, ic, mc, pack_per_sliver ? bp : bp + s * sliver_size, j, nv);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Splitting the output among threads. Any split gives the same bits; this one only decides speed.

struct Split {
  int64_t row_parts = 1;
  int64_t col_parts = 1;
};

// Below this many multiply-adds a product runs on the calling thread: forking costs more.
constexpr int64_t kParallelMacs = int64_t{1} << 18;

// `parts` output blocks (row_parts x col_parts) for one m x n x k product, choosing the shape that
// packs the least: B is packed once per row part, A once per column part.
template <typename K>
Split choose_split(int64_t m, int64_t n, int64_t k, int64_t parts) {
  const int64_t row_slivers = (m + K::kMR - 1) / K::kMR;
  const int64_t col_slivers = (n + K::kNR - 1) / K::kNR;
  for (; parts > 1; --parts) {
    Split best;
    int64_t best_cost = -1;
    for (int64_t rows = 1; rows <= parts; ++rows) {
      if (parts % rows != 0 || rows > row_slivers || parts / rows > col_slivers) continue;
      const int64_t cost = rows * n * k + (parts / rows) * m * k;
      if (best_cost < 0 || cost < best_cost) best = {rows, parts / rows}, best_cost = cost;
    }
    if (best_cost >= 0) return best;
  }
  return {};
}

// [begin, end) of part q when the extent, in slivers of `width`, is dealt to `parts` parts.
inline void part_range(int64_t q, int64_t parts, int64_t extent, int64_t width, int64_t* begin, int64_t* end) {
  const int64_t slivers = (extent + width - 1) / width;
  *begin = std::min(extent, q * slivers / parts * width);
  *end = std::min(extent, (q + 1) * slivers / parts * width);
}

// A batch of equally shaped problems as work items (problem, row part, column part), on the
// micro-kernels K.
template <typename K, typename T = typename K::Scalar>
class Plan {
 public:
  Plan(const Problem<T>* problems, int64_t count, int64_t threads) : problems_(problems), count_(count) {
    const Problem<T>& g = problems[0];
    macs_ = count * g.m * g.n * g.k;
    const int64_t per_problem = macs_ < kParallelMacs ? 1 : (threads + count - 1) / count;
    split_ = choose_split<K>(g.m, g.n, g.k, per_problem);
  }

  int64_t items() const { return count_ * split_.row_parts * split_.col_parts; }
  bool parallel() const { return items() > 1 && macs_ >= kParallelMacs; }

  void run(int64_t item) const {
    const int64_t per_problem = split_.row_parts * split_.col_parts;
    const Problem<T>& g = problems_[item / per_problem];
    const int64_t part = item % per_problem;
    int64_t i0, i1, j0, j1;
    part_range(part / split_.col_parts, split_.row_parts, g.m, K::kMR, &i0, &i1);
    part_range(part % split_.col_parts, split_.col_parts, g.n, K::kNR, &j0, &j1);
    if (i0 < i1 && j0 < j1) compute_block<K>(g, i0, i1, j0, j1);
  }

 private:
  const Problem<T>* problems_;
  int64_t count_;
  int64_t macs_ = 0;
  Split split_;
};

}  // namespace rnnlab_gemm
