// AVX-512F micro-kernels: the AVX2 tiles' chains (kernels.h) on 10 x 32-float tiles in 20 zmm.
//
// Why: on Intel CPUs with AVX-512 one 512-bit FMA does the work of two 256-bit ones, and MKL uses
// them there; the AVX2 tiles alone left the mode 1.2-1.5x slower than torch's own kernels.
// The bits are those of the AVX2 tiles by construction: every C element is still one chain
// acc = fma(A(i, k), B(k, j), acc) over k in order from 0 (a lane of a zmm FMA rounds exactly like
// a lane of a ymm one, under the same MXCSR: rounding, flush-to-zero, denormals-are-zero), K blocks
// continue the chain from the stored float, and the epilogue is the same formula, each product and
// sum rounded on its own (-ffp-contract=off holds here too).
//
// Only the functions in the target("avx512f") region below contain AVX-512 instructions, and they
// are reached only through Avx512Tiles, which products.h runs only after the CPU check below.
// Everything else is compiled for AVX2, so the library loads and runs on AVX2-only CPUs.
#pragma once

#include <immintrin.h>

#include <atomic>
#include <cstdint>

namespace rnnlab_gemm {
namespace avx512 {

#pragma GCC push_options
#pragma GCC target("avx512f")

template <typename T>
struct Simd;

template <>
struct Simd<float> {
  using V = __m512;
  static constexpr int kLanes = 16;
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const float* p) { return _mm512_load_ps(p); }
  static V loadu(const float* p) { return _mm512_loadu_ps(p); }
  static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V broadcast(const float* p) { return _mm512_set1_ps(*p); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
};

template <>
struct Simd<double> {
  using V = __m512d;
  static constexpr int kLanes = 8;
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const double* p) { return _mm512_load_pd(p); }
  static V loadu(const double* p) { return _mm512_loadu_pd(p); }
  static void storeu(double* p, V v) { _mm512_storeu_pd(p, v); }
  static V broadcast(const double* p) { return _mm512_set1_pd(*p); }
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
};

// 10 rows x 2 vectors = 20 accumulators: 20 independent chains cover the FMA latency (4 cycles) on
// two 512-bit FMA ports. 32 zmm registers would allow 14 rows, but the pipeline's batch of 100 rows
// is whole 10-row tiles (an edge tile runs a full one): the LSTM step's products took 0.45 ms with
// 10 rows, 0.5-0.75 ms with 12 or 14 (one thread of a Xeon); 1024-row products ran alike.
constexpr int kRows = 10;

#include "tiles.h"  // combine, fuse_epilogue, micro_kernel on zmm vectors

#pragma GCC pop_options

}  // namespace avx512

// The AVX-512F tile family for kernels.h's generic blocking (see Avx2Tiles there). KC: a B sliver
// (KC x NR, 32 KB for float) stays in L1 while A slivers stream past it; MC: the packed A block
// (MC x KC, 120 KB) stays in L2.
template <typename T>
struct Avx512Tiles {
  using Scalar = T;
  static constexpr int64_t kMR = avx512::kRows;
  static constexpr int64_t kNR = 2 * avx512::Simd<T>::kLanes;
  static constexpr int64_t kKC = 256;
  static constexpr int64_t kMC = avx512::kRows * 12 * 4 / static_cast<int64_t>(sizeof(T));
  // Out of line (a call per tile: AVX2 code must not inline AVX-512 instructions).
  static void multiply(int64_t kc, const T* ap, const T* bp, T* c, int64_t ldc, bool accumulate,
                       const FusedEpilogue<T>& fused = {}) {
    avx512::micro_kernel<T>(kc, ap, bp, c, ldc, accumulate, fused);
  }
};

// ---------------------------------------------------------------------------------------------
// Which tiles run: AVX-512F where the CPU has it, unless select_isa (gemm.cpp, called at load
// with RNNLAB_GEMM_ISA) chose otherwise. Read by every product.

enum class Isa { kAvx2, kAvx512f };

inline bool cpu_has_avx512f() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f");  // also checks that the OS saves the zmm state
}

inline std::atomic<Isa>& isa_in_use() {
  static std::atomic<Isa> isa{cpu_has_avx512f() ? Isa::kAvx512f : Isa::kAvx2};
  return isa;
}

}  // namespace rnnlab_gemm
