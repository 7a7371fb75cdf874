// Deterministic tanh, sigmoid, exp, log and sqrt for float32/float64 CPU tensors.
//
// Why: ATen sends these four (and acos, asin, atan, cos, erf, erfc, erfinv, log10, log2, sin, tan,
// trunc) to MKL's vector math library (VML, HA mode) when torch is built with MKL. VML picks its
// code path by CPU like MKL's GEMM, its results are not correctly rounded (measured: its sqrt is
// 1 ulp off for ~17% of float32 inputs), and MKL_VERBOSE does not list VML calls. A training step
// calls tanh (nn.RNN/LSTM/GRU cells, nn.Tanh) and sqrt (Adam, RMSprop); exp and log come with
// logsumexp (an ensemble's averaged probabilities).
//
// sigmoid is ATen's own code, but its vector loop leaves a tensor's last n % 16 elements (and those
// before each thread's chunk boundary) to a scalar formula on glibc's expf, which differs in the
// last bit for ~4% of inputs (measured): its bits depend on the shape and, above 32768 elements, on
// the thread count.
//
// Here: sqrt by the IEEE instruction (correctly rounded: any correct implementation agrees);
// tanh, exp, log by SLEEF's AVX2 u10 functions (1-ulp, pure FMA/IEEE arithmetic; the functions
// ATen's own Vectorized<float> uses, exported by libtorch_cpu); sigmoid by ATen's vector formula
// 1 / (1 + exp(0 - x)) on SLEEF's exp. Every element takes the same vector code, a tail through a
// padded vector, so no bit depends on position, layout or thread split.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <immintrin.h>

#include <algorithm>

#include "products.h"

extern "C" {
__m256 Sleef_tanhf8_u10avx2(__m256);
__m256d Sleef_tanhd4_u10avx2(__m256d);
__m256 Sleef_expf8_u10avx2(__m256);
__m256d Sleef_expd4_u10avx2(__m256d);
__m256 Sleef_logf8_u10avx2(__m256);
__m256d Sleef_logd4_u10avx2(__m256d);
}

namespace rnnlab_gemm {

struct Tanh {
  static __m256 apply(__m256 x) { return Sleef_tanhf8_u10avx2(x); }
  static __m256d apply(__m256d x) { return Sleef_tanhd4_u10avx2(x); }
};

struct Exp {
  static __m256 apply(__m256 x) { return Sleef_expf8_u10avx2(x); }
  static __m256d apply(__m256d x) { return Sleef_expd4_u10avx2(x); }
};

struct Log {
  static __m256 apply(__m256 x) { return Sleef_logf8_u10avx2(x); }
  static __m256d apply(__m256d x) { return Sleef_logd4_u10avx2(x); }
};

struct Sigmoid {
  static __m256 apply(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_add_ps(Sleef_expf8_u10avx2(_mm256_sub_ps(_mm256_setzero_ps(), x)), one));
  }
  static __m256d apply(__m256d x) {
    const __m256d one = _mm256_set1_pd(1.0);
    return _mm256_div_pd(one, _mm256_add_pd(Sleef_expd4_u10avx2(_mm256_sub_pd(_mm256_setzero_pd(), x)), one));
  }
};

struct Sqrt {
  static __m256 apply(__m256 x) { return _mm256_sqrt_ps(x); }
  static __m256d apply(__m256d x) { return _mm256_sqrt_pd(x); }
};

// y[i] = Op(x[i]) for i < n (x == y allowed).
template <typename Op, typename T>
void map_span(const T* x, T* y, int64_t n) {
  using S = Simd<T>;
  int64_t i = 0;
  for (; i + S::kLanes <= n; i += S::kLanes) S::storeu(y + i, Op::apply(S::loadu(x + i)));
  if (i < n) {
    alignas(32) T lane[S::kLanes] = {};
    std::copy(x + i, x + n, lane);
    S::store(lane, Op::apply(S::load(lane)));
    std::copy(lane, lane + (n - i), y + i);
  }
}

// Threads take element ranges; each sets the caller's MXCSR (denormal flushing changes results).
template <typename Op, typename T>
void map_parallel(const T* x, T* y, int64_t n) {
  constexpr int64_t kGrain = 32768;
  if (n < 2 * kGrain) {
    map_span<Op>(x, y, n);
    return;
  }
  const unsigned csr = _mm_getcsr();
  at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
    const CsrGuard guard(csr);
    map_span<Op>(x + begin, y + begin, end - begin);
  });
}

inline bool same_dense_layout(const Tensor& a, const Tensor& b) {
  return a.is_non_overlapping_and_dense() && b.is_non_overlapping_and_dense() && a.strides() == b.strides();
}

// out (sized as self) = Op(self): over the memory block when both are dense alike, else via copies.
template <typename Op>
void map_into(const Tensor& out, const Tensor& self) {
  if (out.numel() == 0) return;
  const bool direct = same_dense_layout(out, self);
  const Tensor source = direct ? self : self.contiguous();
  const Tensor target = direct ? out : at::empty_like(source);
  AT_DISPATCH_FLOATING_TYPES(self.scalar_type(), "rnnlab_gemm_map", [&] {
    map_parallel<Op>(source.const_data_ptr<scalar_t>(), target.data_ptr<scalar_t>(), source.numel());
  });
  if (!direct) out.copy_(target);
}

}  // namespace rnnlab_gemm
