// Deterministic float32/float64 CPU math behind ATen's kernels: the same bits on every x86-64 CPU
// with AVX2+FMA, for any thread count. Products (mm, addmm, bmm, baddbmm, addmv): kernels.h says
// why their bits are fixed (on AVX2 or AVX-512 tiles alike: avx512.h), products.h maps tensors to
// them. tanh, sigmoid, exp, log, sqrt: elementwise.h. The fused recurrent layers: recurrent.h. This
// file: the ATen overrides (installed at run time by rnnlab_gemm::set_enabled) and the rnnlab_gemm
// ops.
#include <ATen/MemoryOverlap.h>
#include <ATen/core/Tensor.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/addmv_cpu_dispatch.h>
#include <ATen/ops/baddbmm_cpu_dispatch.h>
#include <ATen/ops/bmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/exp_cpu_dispatch.h>
#include <ATen/ops/log_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <ATen/ops/sigmoid_cpu_dispatch.h>
#include <ATen/ops/sqrt_cpu_dispatch.h>
#include <ATen/ops/tanh_cpu_dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <memory>
#include <optional>
#include <vector>

#include "elementwise.h"
#include "products.h"
#include "recurrent.h"

namespace rnnlab_gemm {
namespace {

// Bump when the numerics change (tile formula, epilogue): results of another version differ.
constexpr const char* kVersion = "rnnlab-gemm 1";

// ---------------------------------------------------------------------------------------------
// Argument checks: a call we don't take (other dtypes, malformed shapes) goes to ATen's own CPU
// kernel, called directly (the dispatcher slot is ours), which also raises torch's usual errors.

bool real_scalars(const Scalar& beta, const Scalar& alpha) { return !beta.isComplex() && !alpha.isComplex(); }

bool matrices_fit(const Tensor& a, const Tensor& b) {
  return a.dim() == 2 && b.dim() == 2 && is_gemm_dtype(a) && same_dtype(a, b) && a.size(1) == b.size(0);
}

bool batches_fit(const Tensor& a, const Tensor& b) {
  return a.dim() == 3 && b.dim() == 3 && is_gemm_dtype(a) && same_dtype(a, b) && a.size(0) == b.size(0) &&
         a.size(2) == b.size(1);
}

bool matrix_vector_fit(const Tensor& a, const Tensor& v) {
  return a.dim() == 2 && v.dim() == 1 && is_gemm_dtype(a) && same_dtype(a, v) && a.size(1) == v.size(0);
}

bool self_fits(const Tensor& self, const Tensor& like, const std::vector<int64_t>& shape) {
  return is_gemm_dtype(self) && same_dtype(self, like) && broadcast_strides(self, shape).has_value();
}

bool out_fits(const Tensor& out, const Tensor& like) {
  return is_gemm_dtype(out) && same_dtype(out, like) && at::has_internal_overlap(out) != at::MemOverlap::Yes;
}

std::vector<int64_t> mm_shape(const Tensor& a, const Tensor& b) { return {a.size(0), b.size(1)}; }
std::vector<int64_t> bmm_shape(const Tensor& a, const Tensor& b) { return {a.size(0), a.size(1), b.size(2)}; }
std::vector<int64_t> mv_shape(const Tensor& a, const Tensor&) { return {a.size(0)}; }

// ---------------------------------------------------------------------------------------------
// The ATen kernels we replace. `fits` / `shape` / `fallback` differ per op family.

Tensor mm(const Tensor& a, const Tensor& b) {
  if (!matrices_fit(a, b)) return at::cpu::mm(a, b);
  Tensor out = at::empty(mm_shape(a, b), a.options());
  product(out, a, b, nullptr, 0, 1);
  return out;
}

Tensor& mm_out(const Tensor& a, const Tensor& b, Tensor& out) {
  if (!matrices_fit(a, b) || !out_fits(out, a)) return at::cpu::mm_out(out, a, b);
  at::native::resize_output(out, mm_shape(a, b));
  product(out, a, b, nullptr, 0, 1);
  return out;
}

bool addmm_fits(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  return matrices_fit(a, b) && self_fits(self, a, mm_shape(a, b)) && real_scalars(beta, alpha);
}

Tensor addmm(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  if (!addmm_fits(self, a, b, beta, alpha)) return at::cpu::addmm(self, a, b, beta, alpha);
  Tensor out = at::empty(mm_shape(a, b), a.options());
  product(out, a, b, &self, beta, alpha);
  return out;
}

Tensor& addmm_out(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha,
                  Tensor& out) {
  if (!addmm_fits(self, a, b, beta, alpha) || !out_fits(out, a)) return at::cpu::addmm_out(out, self, a, b, beta, alpha);
  at::native::resize_output(out, mm_shape(a, b));
  product(out, a, b, &self, beta, alpha);
  return out;
}

Tensor& addmm_(Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  if (!addmm_fits(self, a, b, beta, alpha) || !out_fits(self, a) || self.sizes() != at::IntArrayRef(mm_shape(a, b))) {
    return at::cpu::addmm_(self, a, b, beta, alpha);
  }
  product(self, a, b, &self, beta, alpha);
  return self;
}

Tensor bmm(const Tensor& a, const Tensor& b) {
  if (!batches_fit(a, b)) return at::cpu::bmm(a, b);
  Tensor out = at::empty(bmm_shape(a, b), a.options());
  product(out, a, b, nullptr, 0, 1);
  return out;
}

Tensor& bmm_out(const Tensor& a, const Tensor& b, Tensor& out) {
  if (!batches_fit(a, b) || !out_fits(out, a)) return at::cpu::bmm_out(out, a, b);
  at::native::resize_output(out, bmm_shape(a, b));
  product(out, a, b, nullptr, 0, 1);
  return out;
}

bool baddbmm_fits(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  return batches_fit(a, b) && self_fits(self, a, bmm_shape(a, b)) && real_scalars(beta, alpha);
}

Tensor baddbmm(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  if (!baddbmm_fits(self, a, b, beta, alpha)) return at::cpu::baddbmm(self, a, b, beta, alpha);
  Tensor out = at::empty(bmm_shape(a, b), a.options());
  product(out, a, b, &self, beta, alpha);
  return out;
}

Tensor& baddbmm_out(const Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha,
                    Tensor& out) {
  if (!baddbmm_fits(self, a, b, beta, alpha) || !out_fits(out, a)) {
    return at::cpu::baddbmm_out(out, self, a, b, beta, alpha);
  }
  at::native::resize_output(out, bmm_shape(a, b));
  product(out, a, b, &self, beta, alpha);
  return out;
}

Tensor& baddbmm_(Tensor& self, const Tensor& a, const Tensor& b, const Scalar& beta, const Scalar& alpha) {
  if (!baddbmm_fits(self, a, b, beta, alpha) || !out_fits(self, a) ||
      self.sizes() != at::IntArrayRef(bmm_shape(a, b))) {
    return at::cpu::baddbmm_(self, a, b, beta, alpha);
  }
  product(self, a, b, &self, beta, alpha);
  return self;
}

bool addmv_fits(const Tensor& self, const Tensor& a, const Tensor& v, const Scalar& beta, const Scalar& alpha) {
  return matrix_vector_fit(a, v) && self_fits(self, a, mv_shape(a, v)) && real_scalars(beta, alpha);
}

Tensor addmv(const Tensor& self, const Tensor& a, const Tensor& v, const Scalar& beta, const Scalar& alpha) {
  if (!addmv_fits(self, a, v, beta, alpha)) return at::cpu::addmv(self, a, v, beta, alpha);
  Tensor out = at::empty(mv_shape(a, v), a.options());
  product(out, a, v, &self, beta, alpha);
  return out;
}

Tensor& addmv_out(const Tensor& self, const Tensor& a, const Tensor& v, const Scalar& beta, const Scalar& alpha,
                  Tensor& out) {
  if (!addmv_fits(self, a, v, beta, alpha) || !out_fits(out, a)) return at::cpu::addmv_out(out, self, a, v, beta, alpha);
  at::native::resize_output(out, mv_shape(a, v));
  product(out, a, v, &self, beta, alpha);
  return out;
}

Tensor& addmv_(Tensor& self, const Tensor& a, const Tensor& v, const Scalar& beta, const Scalar& alpha) {
  if (!addmv_fits(self, a, v, beta, alpha) || !out_fits(self, a) || self.sizes() != at::IntArrayRef(mv_shape(a, v))) {
    return at::cpu::addmv_(self, a, v, beta, alpha);
  }
  product(self, a, v, &self, beta, alpha);
  return self;
}

// tanh, sigmoid, exp, log, sqrt (elementwise.h): functional, out= and in-place forms.

template <typename Op, Tensor (*kAten)(const Tensor&)>
Tensor unary(const Tensor& self) {
  if (!is_gemm_dtype(self)) return kAten(self);
  Tensor out = at::empty_like(self);
  map_into<Op>(out, self);
  return out;
}

template <typename Op, Tensor& (*kAten)(const Tensor&, Tensor&)>
Tensor& unary_out(const Tensor& self, Tensor& out) {
  if (!is_gemm_dtype(self) || !out_fits(out, self)) return kAten(self, out);
  at::native::resize_output(out, self.sizes());
  map_into<Op>(out, self);
  return out;
}

template <typename Op, Tensor& (*kAten)(Tensor&)>
Tensor& unary_(Tensor& self) {
  if (!is_gemm_dtype(self) || !out_fits(self, self)) return kAten(self);
  map_into<Op>(self, self);
  return self;
}

// ---------------------------------------------------------------------------------------------
// The executable specification: C(i, j) = fma chain over k = 0..K-1 from 0, one element at a time.

Tensor reference_mm(const Tensor& a_in, const Tensor& b_in) {
  TORCH_CHECK(matrices_fit(a_in, b_in), "reference_mm: two float32 or float64 matrices (m x k) and (k x n)");
  const Tensor a = a_in.contiguous(), b = b_in.contiguous();
  const int64_t m = a.size(0), k = a.size(1), n = b.size(1);
  Tensor out = at::empty({m, n}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "reference_mm", [&] {
    const scalar_t* pa = a.const_data_ptr<scalar_t>();
    const scalar_t* pb = b.const_data_ptr<scalar_t>();
    scalar_t* pc = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < m; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        scalar_t acc = 0;
        for (int64_t p = 0; p < k; ++p) acc = std::fma(pa[i * k + p], pb[p * n + j], acc);
        pc[i * n + j] = acc;
      }
    }
  });
  return out;
}

std::string version() { return kVersion; }

// The micro-kernels products run on from now: "auto" (AVX-512F where the CPU has it, else AVX2),
// "avx2" or "avx512f". Returns the one chosen. Speed only: both give the same bits (avx512.h).
std::string select_isa(const std::string& requested) {
  TORCH_CHECK(requested == "auto" || requested == "avx2" || requested == "avx512f", "unknown ISA '", requested,
              "' (auto, avx2, avx512f)");
  const bool wide = requested == "avx512f" || (requested == "auto" && cpu_has_avx512f());
  TORCH_CHECK(!wide || cpu_has_avx512f(), "the CPU lacks AVX-512F");
  isa_in_use().store(wide ? Isa::kAvx512f : Isa::kAvx2, std::memory_order_relaxed);
  return wide ? "avx512f" : "avx2";
}

// The aten overrides live in a Library made at run time, so loading this file changes nothing
// until set_enabled(true), and set_enabled(false) gives ATen's kernels back (the dispatcher keeps
// the kernel we replaced and restores it when ours is deregistered). Never destroyed at exit.
std::unique_ptr<torch::Library>& aten_overrides() {
  static auto* library = new std::unique_ptr<torch::Library>();
  return *library;
}

void register_overrides(torch::Library& m) {
  m.impl("mm", TORCH_FN(mm));
  m.impl("mm.out", TORCH_FN(mm_out));
  m.impl("addmm", TORCH_FN(addmm));
  m.impl("addmm.out", TORCH_FN(addmm_out));
  m.impl("addmm_", TORCH_FN(addmm_));
  m.impl("bmm", TORCH_FN(bmm));
  m.impl("bmm.out", TORCH_FN(bmm_out));
  m.impl("baddbmm", TORCH_FN(baddbmm));
  m.impl("baddbmm.out", TORCH_FN(baddbmm_out));
  m.impl("baddbmm_", TORCH_FN(baddbmm_));
  m.impl("addmv", TORCH_FN(addmv));
  m.impl("addmv.out", TORCH_FN(addmv_out));
  m.impl("addmv_", TORCH_FN(addmv_));
  m.impl("tanh", TORCH_FN((unary<Tanh, at::cpu::tanh>)));
  m.impl("tanh.out", TORCH_FN((unary_out<Tanh, at::cpu::tanh_outf>)));
  m.impl("tanh_", TORCH_FN((unary_<Tanh, at::cpu::tanh_>)));
  m.impl("sigmoid", TORCH_FN((unary<Sigmoid, at::cpu::sigmoid>)));
  m.impl("sigmoid.out", TORCH_FN((unary_out<Sigmoid, at::cpu::sigmoid_outf>)));
  m.impl("sigmoid_", TORCH_FN((unary_<Sigmoid, at::cpu::sigmoid_>)));
  m.impl("exp", TORCH_FN((unary<Exp, at::cpu::exp>)));
  m.impl("exp.out", TORCH_FN((unary_out<Exp, at::cpu::exp_outf>)));
  m.impl("exp_", TORCH_FN((unary_<Exp, at::cpu::exp_>)));
  m.impl("log", TORCH_FN((unary<Log, at::cpu::log>)));
  m.impl("log.out", TORCH_FN((unary_out<Log, at::cpu::log_outf>)));
  m.impl("log_", TORCH_FN((unary_<Log, at::cpu::log_>)));
  m.impl("sqrt", TORCH_FN((unary<Sqrt, at::cpu::sqrt>)));
  m.impl("sqrt.out", TORCH_FN((unary_out<Sqrt, at::cpu::sqrt_outf>)));
  m.impl("sqrt_", TORCH_FN((unary_<Sqrt, at::cpu::sqrt_>)));
}

// Passes every warning on except the dispatcher's "Overriding a previously registered kernel"
// (printed straight to stderr by C++, so Python's warning filters can't catch it): we override on
// purpose, and the user should not see it.
class QuietOverrides : public c10::WarningHandler {
 public:
  explicit QuietOverrides(c10::WarningHandler* next) : next_(next) {}
  void process(const c10::Warning& warning) override {
    if (warning.msg().find("Overriding a previously registered kernel") == std::string::npos) next_->process(warning);
  }

 private:
  c10::WarningHandler* next_;
};

// Returns whether the overrides were installed before the call.
bool set_enabled(bool enabled) {
  std::unique_ptr<torch::Library>& library = aten_overrides();
  const bool was = library != nullptr;
  if (enabled && !was) {
    QuietOverrides quiet(c10::WarningUtils::get_warning_handler());
    const c10::WarningUtils::WarningHandlerGuard guard(&quiet);
    auto fresh = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", c10::DispatchKey::CPU, __FILE__, __LINE__);
    register_overrides(*fresh);
    library = std::move(fresh);
  } else if (!enabled && was) {
    library.reset();
  }
  return was;
}

}  // namespace
}  // namespace rnnlab_gemm

TORCH_LIBRARY(rnnlab_gemm, m) {
  m.def("reference_mm(Tensor a, Tensor b) -> Tensor", TORCH_FN(rnnlab_gemm::reference_mm));
  m.def("version() -> str", TORCH_FN(rnnlab_gemm::version));
  m.def("select_isa(str requested) -> str", TORCH_FN(rnnlab_gemm::select_isa));
  m.def("set_enabled(bool enabled) -> bool", TORCH_FN(rnnlab_gemm::set_enabled));
  m.def(
      "recurrent_forward(str cell, Tensor input, Tensor h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, "
      "Tensor? b_hh, bool reverse) -> Tensor[]",
      TORCH_FN(rnnlab_gemm::recurrent_forward));
  m.def(
      "recurrent_backward(str cell, Tensor grad_output, Tensor grad_hn, Tensor? grad_cn, Tensor input, Tensor h0, "
      "Tensor? c0, Tensor w_ih, Tensor w_hh, bool has_bias, bool reverse, Tensor output, Tensor[] saved, "
      "bool input_grad) -> Tensor[]",
      TORCH_FN(rnnlab_gemm::recurrent_backward));
}
