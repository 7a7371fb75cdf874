// The micro-kernel of one tile family, written once and included twice on purpose (no include
// guard): by kernels.h inside namespace avx2 (AVX2 code) and by avx512.h inside namespace avx512,
// within its target("avx512f") region. A template defined outside that region could not inline the
// AVX-512 intrinsics, hence the text inclusion rather than one template over both families.
//
// Needs in scope: Simd<T> (the family's vectors: V, kLanes, zero, load, loadu, storeu, broadcast,
// set1, fma, mul, add), kRows (rows per tile), and rnnlab_gemm's Epilogue and FusedEpilogue.
//
// micro_kernel: C[0:kRows, 0:2 vectors] = (accumulate ? C : 0) + chain over k of Ap[k, :] x Bp[k, :].
// Ap is kc x kRows (k-major), Bp is kc x (2 vectors) (k-major, aligned to its vector size); C has
// row stride ldc. With `fused` (the last K block, self rows contiguous or broadcast) the epilogue is
// applied in registers before the one store; the tile's top-left element is (i, j) of the problem.

// The epilogue formula on vectors: kernels.h's scalar combine(), the same two separately rounded
// operations, so the same bits.
template <typename T>
inline typename Simd<T>::V combine(typename Simd<T>::V acc, typename Simd<T>::V self, const Epilogue<T>& e) {
  using S = Simd<T>;
  const typename S::V scaled = e.alpha == T(1) ? acc : e.alpha == T(0) ? S::zero() : S::mul(S::set1(e.alpha), acc);
  if (e.beta == T(0)) return scaled;
  return S::add(scaled, e.beta == T(1) ? self : S::mul(S::set1(e.beta), self));
}

template <typename T>
inline void fuse_epilogue(typename Simd<T>::V (&acc)[kRows][2], const FusedEpilogue<T>& f) {
  using S = Simd<T>;
  const Epilogue<T>& e = *f.e;
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    typename S::V s0 = S::zero(), s1 = S::zero();
    if (e.beta != T(0)) {
      const T* self = &e.self.at(f.i + r, f.j);
      s0 = e.self.cs == 1 ? S::loadu(self) : S::set1(*self);
      s1 = e.self.cs == 1 ? S::loadu(self + S::kLanes) : s0;
    }
    acc[r][0] = combine<T>(acc[r][0], s0, e);
    acc[r][1] = combine<T>(acc[r][1], s1, e);
  }
}

template <typename T>
void micro_kernel(int64_t kc, const T* __restrict ap, const T* __restrict bp, T* __restrict c, int64_t ldc,
                  bool accumulate, const FusedEpilogue<T>& fused) {
  using S = Simd<T>;
  constexpr int kL = S::kLanes;
  typename S::V acc[kRows][2];
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    acc[r][0] = accumulate ? S::loadu(c + r * ldc) : S::zero();
    acc[r][1] = accumulate ? S::loadu(c + r * ldc + kL) : S::zero();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const typename S::V b0 = S::load(bp);
    const typename S::V b1 = S::load(bp + kL);
#pragma GCC unroll 16
    for (int r = 0; r < kRows; ++r) {
      const typename S::V a = S::broadcast(ap + r);
      acc[r][0] = S::fma(a, b0, acc[r][0]);
      acc[r][1] = S::fma(a, b1, acc[r][1]);
    }
    ap += kRows;
    bp += 2 * kL;
  }
  if (fused.e != nullptr) fuse_epilogue<T>(acc, fused);
#pragma GCC unroll 16
  for (int r = 0; r < kRows; ++r) {
    S::storeu(c + r * ldc, acc[r][0]);
    S::storeu(c + r * ldc + kL, acc[r][1]);
  }
}
