// Tensors -> GEMM problems: layouts, broadcasting, output handling and the thread split.
// Shared by the ATen overrides (gemm.cpp) and the fused recurrent layers (recurrent.h).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <xmmintrin.h>

#include <optional>
#include <vector>

#include "kernels.h"
#include "pool.h"

namespace rnnlab_gemm {

using at::Scalar;
using at::Tensor;

// A 1-D, 2-D or 3-D tensor seen as batch x rows x cols (1-D: a column vector); strides in elements.
struct Layout {
  int64_t batch = 1, rows = 1, cols = 1;
  int64_t bs = 0, rs = 0, cs = 0;
};

inline Layout layout_from(at::IntArrayRef sizes, at::IntArrayRef strides) {
  switch (sizes.size()) {
    case 1:
      return {1, sizes[0], 1, 0, strides[0], 0};
    case 2:
      return {1, sizes[0], sizes[1], 0, strides[0], strides[1]};
    default:
      return {sizes[0], sizes[1], sizes[2], strides[0], strides[1], strides[2]};
  }
}

inline Layout layout_of(const Tensor& t) { return layout_from(t.sizes(), t.strides()); }

// Strides of `self` broadcast to `shape` (numpy rules: aligned right, size 1 -> stride 0), or
// nothing when it does not broadcast.
inline std::optional<std::vector<int64_t>> broadcast_strides(const Tensor& self, at::IntArrayRef shape) {
  const int64_t offset = static_cast<int64_t>(shape.size()) - self.dim();
  if (offset < 0) return std::nullopt;
  std::vector<int64_t> strides(shape.size(), 0);
  for (int64_t d = 0; d < self.dim(); ++d) {
    if (self.size(d) != 1 && self.size(d) != shape[offset + d]) return std::nullopt;
    strides[offset + d] = self.size(d) == 1 ? 0 : self.stride(d);
  }
  return strides;
}

inline bool is_gemm_dtype(const Tensor& t) {
  return t.layout() == at::kStrided && t.device().is_cpu() &&
         (t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble);
}

inline bool same_dtype(const Tensor& a, const Tensor& b) { return a.scalar_type() == b.scalar_type(); }

// Sets the caller's MXCSR (flush-to-zero, denormals-are-zero, rounding) on a worker thread for the
// duration of its chunk: OpenMP workers created before torch.set_flush_denormal(True) keep another
// mode, and the bits of a tile must not depend on which thread computed it.
class CsrGuard {
 public:
  explicit CsrGuard(unsigned csr) : saved_(_mm_getcsr()) { _mm_setcsr(csr); }
  ~CsrGuard() { _mm_setcsr(saved_); }
  CsrGuard(const CsrGuard&) = delete;
  CsrGuard& operator=(const CsrGuard&) = delete;

 private:
  unsigned saved_;
};

template <typename K, typename T = typename K::Scalar>
void run_plan(const std::vector<Problem<T>>& problems) {
  const Plan<K> plan(problems.data(), static_cast<int64_t>(problems.size()), at::get_num_threads());
  if (!plan.parallel()) {
    for (int64_t item = 0; item < plan.items(); ++item) plan.run(item);
    return;
  }
  const unsigned csr = _mm_getcsr();
  at::parallel_for(0, plan.items(), 1, [&](int64_t begin, int64_t end) {
    const CsrGuard guard(csr);
    for (int64_t item = begin; item < end; ++item) plan.run(item);
  });
}

// The problems on the tiles in use (avx512.h). Either family gives the same bits, so this is about
// speed only: a product narrower than an AVX-512 tile (the order task's 4-unit LSTM: 16 gate
// columns) would run each tile as a half-empty edge tile, and takes the AVX2 tiles.
template <typename T>
void run_problems(const std::vector<Problem<T>>& problems) {
  const bool wide = isa_in_use().load(std::memory_order_relaxed) == Isa::kAvx512f;
  if (wide && problems[0].n >= Avx512Tiles<T>::kNR) {
    run_plan<Avx512Tiles<T>>(problems);
  } else {
    run_plan<Avx2Tiles<T>>(problems);
  }
}

// out = alpha * a @ b + beta * self per batch, into a sized `out` with a unit-stride dimension that
// no input overlaps. `self` is the broadcast layout of self (beta != 0 only). A column-major `out`
// is filled as out^T = b^T a^T: the same chains, so the same bits.
template <typename T>
void multiply_into(const Tensor& out, const Tensor& a, const Tensor& b, const T* self_data, const Layout& self,
                   T alpha, T beta) {
  Layout lc = layout_of(out);
  const Layout la = layout_of(a), lb = layout_of(b);
  if (lc.cols == 1) lc.cs = 1;  // the stride of a size-1 dimension is arbitrary
  if (lc.rows == 1) lc.rs = 1;
  const bool transpose = lc.cs != 1;
  std::vector<Problem<T>> problems(lc.batch);
  for (int64_t i = 0; i < lc.batch; ++i) {
    const Operand<T> oa{a.const_data_ptr<T>() + i * la.bs, la.rs, la.cs};
    const Operand<T> ob{b.const_data_ptr<T>() + i * lb.bs, lb.rs, lb.cs};
    Epilogue<T> e{alpha, beta, {}};
    if (beta != T(0)) e.self = {self_data + i * self.bs, self.rs, self.cs};
    T* c = out.data_ptr<T>() + i * lc.bs;
    problems[i] = transpose ? Problem<T>{lc.cols, lc.rows, la.cols, ob.transposed(), oa.transposed(), c, lc.cs, e.transposed()}
                            : Problem<T>{lc.rows, lc.cols, la.cols, oa, ob, c, lc.rs, e};
  }
  run_problems(problems);
}

// Whether `out` can be written in place: a unit-stride dimension, and no input shares its memory
// (partial k-chains are stored in `out` between K blocks).
inline bool writable_in_place(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor* self) {
  const Layout l = layout_of(out);
  const bool unit = l.cs == 1 || l.rs == 1 || l.cols == 1 || l.rows == 1;
  const auto apart = [&](const Tensor& t) { return at::get_overlap_status(out, t) == at::MemOverlapStatus::No; };
  return unit && apart(a) && apart(b) && (self == nullptr || apart(*self));
}

// The product into an already sized `out`, through a contiguous temporary when not in place.
// self == nullptr: a plain product (beta = 0).
inline void product(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor* self, const Scalar& beta_s,
                    const Scalar& alpha_s) {
  if (out.numel() == 0) return;
  const Tensor target = writable_in_place(out, a, b, self) ? out : at::empty(out.sizes(), out.options());
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "rnnlab_gemm", [&] {
    const auto alpha = alpha_s.to<scalar_t>();
    const auto beta = self == nullptr ? scalar_t(0) : beta_s.to<scalar_t>();
    Layout self_layout;
    const scalar_t* self_data = nullptr;
    if (beta != scalar_t(0)) {
      self_layout = layout_from(out.sizes(), *broadcast_strides(*self, out.sizes()));
      self_data = self->const_data_ptr<scalar_t>();
    }
    multiply_into<scalar_t>(target, a, b, self_data, self_layout, alpha, beta);
  });
  if (!target.is_same(out)) out.copy_(target);
}

// x (n x i) @ w^T + b (b may be undefined): nn.Linear's product, as ATen's linear computes it.
// Both products below return pooled tensors (pool.h): the recurrent layers' sequence-sized results.
inline Tensor linear_product(const Tensor& x, const Tensor& w, const Tensor& b) {
  Tensor out = pooled_empty({x.size(0), w.size(0)}, x.options());
  product(out, x, w.t(), b.defined() ? &b : nullptr, 1, 1);
  return out;
}

inline Tensor matrix_product(const Tensor& a, const Tensor& b) {
  Tensor out = pooled_empty({a.size(0), b.size(1)}, a.options());
  product(out, a, b, nullptr, 0, 1);
  return out;
}

}  // namespace rnnlab_gemm
