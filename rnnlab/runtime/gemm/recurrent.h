// Fused recurrent layers: one layer, one direction of nn.RNN (tanh, relu), nn.LSTM or nn.GRU over a
// whole time-major sequence, forward and backward through time, on the deterministic GEMM.
//
// Why: ATen's own loop (oneDNN off) runs ~10 small ops per step and, in backward, one weight
// gradient product per step plus an add into the gradient; here backward runs one product per step
// (the gradient to the previous state) and the weight gradients as one product each over all
// T x B rows, with the bias gradients as column sums.
//
// Forward gives the same bits as ATen's loop with our kernels (gemm.enable()): the same products
// and epilogues (x W_ih^T + b_ih once, h W_hh^T + b_hh per step), the same separately rounded adds
// and multiplies, and tanh/sigmoid by the kernels that replace ATen's (elementwise.h), whose bits
// don't depend on layout; relu by ATen's (exact).
// Backward is its own deterministic formula: fixed-order IEEE arithmetic (no transcendental
// functions: they are recomputed from saved activations) and GEMM chains over (t, b) in time order.
//
// Shapes: input (T, B, I), h0/c0 (B, H), w_ih (G*H, I), w_hh (G*H, H), biases (G*H) or undefined,
// output (T, B, H); G = 1 (RNN), 4 (LSTM: i f g o), 3 (GRU: r z n), as torch's parameters.
#pragma once

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <string>
#include <vector>

#include "elementwise.h"
#include "pool.h"
#include "products.h"

namespace rnnlab_gemm {

enum class Cell { kRnnTanh, kRnnRelu, kLstm, kGru };

inline Cell cell_named(const std::string& name) {
  if (name == "RNN_TANH") return Cell::kRnnTanh;
  if (name == "RNN_RELU") return Cell::kRnnRelu;
  if (name == "LSTM") return Cell::kLstm;
  TORCH_CHECK(name == "GRU", "rnnlab_gemm: unknown recurrent cell ", name, " (RNN_TANH, RNN_RELU, LSTM, GRU)");
  return Cell::kGru;
}

// Sizes of one layer-direction and where step t sits in time-major buffers.
struct Sequence {
  int64_t steps, batch, hidden, gate_width;  // gate_width = G * H
  bool reverse;
  int64_t at(int64_t s) const { return reverse ? steps - 1 - s : s; }  // time index of the s-th step taken
};

// C (B x n, row stride n) = A (B x k, row stride lda) @ B, then + self rows (optional): one GEMM.
template <typename T>
void step_product(int64_t batch, int64_t n, int64_t k, const T* a, int64_t lda, const Operand<T>& b, T* c,
                  const Epilogue<T>& epilogue = {}) {
  run_problems(std::vector<Problem<T>>{{batch, n, k, {a, lda, 1}, b, c, n, epilogue}});
}

// The weight as the B operand of x @ w^T (k x n: element (k, n) = w[n][k]) and of g @ w.
template <typename T>
Operand<T> transposed_weight(const Tensor& w) {
  return {w.const_data_ptr<T>(), w.stride(1), w.stride(0)};
}

template <typename T>
Operand<T> weight(const Tensor& w) {
  return {w.const_data_ptr<T>(), w.stride(0), w.stride(1)};
}

// Broadcast bias rows for the epilogue (C + bias), or the identity epilogue without a bias.
template <typename T>
Epilogue<T> plus_bias(const Tensor& bias) {
  if (!bias.defined()) return {};
  return {T(1), T(1), {bias.const_data_ptr<T>(), 0, bias.stride(0)}};
}

// ---------------------------------------------------------------------------------------------
// Forward. x W_ih^T + b_ih for all steps is one product into `xp` (T, B, G*H); step t overwrites
// its rows with what backward needs. Saved: LSTM [gates i f g o (in xp), cells c, tanh(c)];
// GRU [xp holding r z (n part unused), new gates n, hn = (h W_hh^T + b_hh)_n].

template <typename T>
struct ForwardState {
  Sequence seq;
  T* xp;      // (T, B, G*H)
  T* output;  // (T, B, H)
  T* hg;      // h W_hh^T + b_hh of the current step, (B, G*H)
  T* gathered;  // scratch for activate(), (B, G*H); null when every span is whole vectors
  std::vector<Tensor> saved;
  at::TensorOptions options;

  T* out_row(int64_t t) const { return output + t * seq.batch * seq.hidden; }
  T* xp_row(int64_t t) const { return xp + t * seq.batch * seq.gate_width; }
  T* saved_row(size_t i, int64_t t) const { return saved[i].data_ptr<T>() + t * seq.batch * saved[i].size(2); }
};

// Op over columns [begin, begin + count) of every row of a (B, G*H) gate block, in place. Rows
// whose span is not whole vectors (the order task's 4-unit cells: spans of 4 or 8 floats) are
// gathered into one contiguous span first, so the vector function runs on full vectors, not once
// per row on a padded tail: the same bits (elementwise.h: no bit depends on position), ~half the
// calls.
template <typename Op, typename T>
void activate(const ForwardState<T>& f, T* gates, int64_t begin, int64_t count) {
  const int64_t batch = f.seq.batch, width = f.seq.gate_width;
  if (count % Simd<T>::kLanes == 0 || batch == 1) {
    for (int64_t b = 0; b < batch; ++b) {
      T* row = gates + b * width + begin;
      map_span<Op>(row, row, count);
    }
    return;
  }
  T* span = f.gathered;
  for (int64_t b = 0; b < batch; ++b) std::copy_n(gates + b * width + begin, count, span + b * count);
  map_span<Op>(span, span, batch * count);
  for (int64_t b = 0; b < batch; ++b) std::copy_n(span + b * count, count, gates + b * width + begin);
}

// Step t of RNN: h = act(hg + xp_t).
template <typename T>
void rnn_step(ForwardState<T>& f, int64_t t, bool relu) {
  const int64_t n = f.seq.batch * f.seq.hidden;
  T* h = f.out_row(t);
  const T* xp = f.xp_row(t);
  for (int64_t e = 0; e < n; ++e) h[e] = f.hg[e] + xp[e];
  if (relu) {
    at::from_blob(h, {n}, f.options).relu_();
  } else {
    map_span<Tanh>(h, h, n);
  }
}

template <typename T>
void lstm_step(ForwardState<T>& f, int64_t t, const T* c_prev) {
  const int64_t batch = f.seq.batch, hidden = f.seq.hidden, width = f.seq.gate_width;
  T* gates = f.xp_row(t);
  for (int64_t e = 0; e < batch * width; ++e) gates[e] = f.hg[e] + gates[e];
  activate<Sigmoid>(f, gates, 0, 2 * hidden);  // i f
  activate<Tanh>(f, gates, 2 * hidden, hidden);  // g
  activate<Sigmoid>(f, gates, 3 * hidden, hidden);  // o
  T* c = f.saved_row(1, t);
  T* tanh_c = f.saved_row(2, t);
  T* h = f.out_row(t);
  for (int64_t b = 0; b < batch; ++b) {
    const T* row = gates + b * width;
    for (int64_t j = 0; j < hidden; ++j) {
      const T kept = row[hidden + j] * c_prev[b * hidden + j];  // (forgetgate * cx).add_(ingate * cellgate)
      const T added = row[j] * row[2 * hidden + j];
      c[b * hidden + j] = kept + added;
    }
  }
  map_span<Tanh>(c, tanh_c, batch * hidden);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < hidden; ++j) h[b * hidden + j] = gates[b * width + 3 * hidden + j] * tanh_c[b * hidden + j];
  }
}

template <typename T>
void gru_step(ForwardState<T>& f, int64_t t, const T* h_prev) {
  const int64_t batch = f.seq.batch, hidden = f.seq.hidden, width = f.seq.gate_width;
  T* gates = f.xp_row(t);  // r z n parts of x W_ih^T + b_ih; r z become the gates
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < 2 * hidden; ++j) gates[b * width + j] = f.hg[b * width + j] + gates[b * width + j];
  }
  activate<Sigmoid>(f, gates, 0, 2 * hidden);  // r z
  T* n = f.saved_row(1, t);
  T* hn = f.saved_row(2, t);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = b * hidden + j;
      hn[e] = f.hg[b * width + 2 * hidden + j];
      const T gated = hn[e] * gates[b * width + j];  // in + hn * r
      n[e] = gates[b * width + 2 * hidden + j] + gated;
    }
  }
  map_span<Tanh>(n, n, batch * hidden);
  T* h = f.out_row(t);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = b * hidden + j;
      const T difference = h_prev[e] - n[e];  // (hidden - new_gate).mul_(input_gate).add_(new_gate)
      const T scaled = difference * gates[b * width + hidden + j];
      h[e] = scaled + n[e];
    }
  }
}

template <typename T>
std::vector<Tensor> forward(Cell cell, const Tensor& input, const Tensor& h0_in, const Tensor& c0_in,
                            const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh,
                            bool reverse) {
  const Sequence seq{input.size(0), input.size(1), w_hh.size(1), w_hh.size(0), reverse};
  const Tensor h0 = h0_in.contiguous();
  const Tensor c0 = cell == Cell::kLstm ? c0_in.contiguous() : Tensor();
  const auto options = input.options();
  const Tensor sequence_input = pooled_contiguous(input);
  const Tensor x = sequence_input.view({seq.steps * seq.batch, input.size(2)});
  Tensor xp = linear_product(x, w_ih, b_ih);
  Tensor output = pooled_empty({seq.steps, seq.batch, seq.hidden}, options);
  Tensor hg = at::empty({seq.batch, seq.gate_width}, options);
  // activate() gathers only spans that are not whole vectors: cells whose hidden size is not a multiple of one.
  Tensor gathered = seq.hidden % Simd<T>::kLanes == 0 ? Tensor() : at::empty({seq.batch, seq.gate_width}, options);
  ForwardState<T> f{seq, xp.data_ptr<T>(), output.data_ptr<T>(), hg.data_ptr<T>(),
                    gathered.defined() ? gathered.data_ptr<T>() : nullptr, {}, options};
  const Tensor gates = xp.view({seq.steps, seq.batch, seq.gate_width});
  const auto sequence = [&] { return pooled_empty({seq.steps, seq.batch, seq.hidden}, options); };
  if (cell == Cell::kLstm || cell == Cell::kGru) f.saved = {gates, sequence(), sequence()};
  const Operand<T> w = transposed_weight<T>(w_hh);
  const Epilogue<T> bias = plus_bias<T>(b_hh);
  for (int64_t s = 0; s < seq.steps; ++s) {
    const int64_t t = seq.at(s);
    const T* h_prev = s == 0 ? h0.const_data_ptr<T>() : f.out_row(seq.at(s - 1));
    step_product<T>(seq.batch, seq.gate_width, seq.hidden, h_prev, seq.hidden, w, f.hg, bias);
    switch (cell) {
      case Cell::kRnnTanh:
      case Cell::kRnnRelu:
        rnn_step(f, t, cell == Cell::kRnnRelu);
        break;
      case Cell::kLstm:
        lstm_step(f, t, s == 0 ? c0.const_data_ptr<T>() : f.saved_row(1, seq.at(s - 1)));
        break;
      case Cell::kGru:
        gru_step(f, t, h_prev);
        break;
    }
  }
  const int64_t last = seq.at(seq.steps - 1);
  // The time-major copy of a batch-first input goes back too, for backward to reuse (undefined when
  // the input was contiguous already: backward reads the input itself).
  std::vector<Tensor> results = {output, output[last].clone(), cell == Cell::kLstm ? f.saved[1][last].clone() : Tensor(),
                                 sequence_input.is_same(input) ? Tensor() : sequence_input};
  results.insert(results.end(), f.saved.begin(), f.saved.end());
  return results;
}

// ---------------------------------------------------------------------------------------------
// Backward through time. Per step: the gate gradients (pointwise, from saved activations) and
// the gradient to the previous state (one GEMM). Then the weight gradients as single products
// over all T x B rows, the bias gradients as column sums in row order, the input gradient.

// sigmoid'(y) and tanh'(y) from the activation y, as ATen's sigmoid_backward / tanh_backward.
template <typename T>
inline T through_sigmoid(T grad, T y) {
  return grad * (T(1) - y) * y;
}

template <typename T>
inline T through_tanh(T grad, T y) {
  return grad * (T(1) - y * y);
}

template <typename T>
struct BackwardState {
  Sequence seq;
  const T* output;     // (T, B, H)
  const T* h0;         // (B, H)
  T* dh;               // gradient reaching the current step's h, (B, H)
  T* grad_in;          // gate gradients w.r.t. x W_ih^T, (T, B, G*H)
  T* grad_hidden;      // w.r.t. h W_hh^T (differs from grad_in for GRU only)
  std::vector<const T*> saved;
  std::vector<int64_t> saved_width;

  const T* h_prev(int64_t s) const { return s == 0 ? h0 : output + seq.at(s - 1) * seq.batch * seq.hidden; }
  const T* saved_row(size_t i, int64_t t) const { return saved[i] + t * seq.batch * saved_width[i]; }
  T* grad_row(T* base, int64_t t) const { return base + t * seq.batch * seq.gate_width; }
};

template <typename T>
void rnn_backward_step(BackwardState<T>& g, int64_t t, bool relu) {
  const T* h = g.output + t * g.seq.batch * g.seq.hidden;
  T* grad = g.grad_row(g.grad_in, t);
  for (int64_t e = 0; e < g.seq.batch * g.seq.hidden; ++e) {
    grad[e] = relu ? (h[e] > T(0) ? g.dh[e] : T(0)) : through_tanh(g.dh[e], h[e]);
  }
}

template <typename T>
void lstm_backward_step(BackwardState<T>& g, int64_t s, T* dc, const T* c0) {
  const int64_t t = g.seq.at(s), batch = g.seq.batch, hidden = g.seq.hidden, width = g.seq.gate_width;
  const T* gates = g.saved_row(0, t);
  const T* tanh_c = g.saved_row(2, t);
  const T* c_prev = s == 0 ? c0 : g.saved_row(1, g.seq.at(s - 1));
  T* grad = g.grad_row(g.grad_in, t);
  for (int64_t b = 0; b < batch; ++b) {
    const T* y = gates + b * width;  // i f g o
    T* d = grad + b * width;
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = b * hidden + j;
      const T dcell = through_tanh(g.dh[e] * y[3 * hidden + j], tanh_c[e]) + dc[e];
      d[j] = through_sigmoid(dcell * y[2 * hidden + j], y[j]);
      d[hidden + j] = through_sigmoid(dcell * c_prev[e], y[hidden + j]);
      d[2 * hidden + j] = through_tanh(dcell * y[j], y[2 * hidden + j]);
      d[3 * hidden + j] = through_sigmoid(g.dh[e] * tanh_c[e], y[3 * hidden + j]);
      dc[e] = dcell * y[hidden + j];
    }
  }
}

// GRU: fills both gate gradients and returns the direct part dh * z in `direct` (B, H).
template <typename T>
void gru_backward_step(BackwardState<T>& g, int64_t s, T* direct) {
  const int64_t t = g.seq.at(s), batch = g.seq.batch, hidden = g.seq.hidden, width = g.seq.gate_width;
  const T* gates = g.saved_row(0, t);  // r z in the first 2H columns of (B, 3H)
  const T* n = g.saved_row(1, t);
  const T* hn = g.saved_row(2, t);
  const T* h_prev = g.h_prev(s);
  T* grad_in = g.grad_row(g.grad_in, t);
  T* grad_hidden = g.grad_row(g.grad_hidden, t);
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t j = 0; j < hidden; ++j) {
      const int64_t e = b * hidden + j;
      const T r = gates[b * width + j], z = gates[b * width + hidden + j];
      const T dn = through_tanh(g.dh[e] * (T(1) - z), n[e]);
      const T dr = through_sigmoid(dn * hn[e], r);
      const T dz = through_sigmoid(g.dh[e] * (h_prev[e] - n[e]), z);
      direct[e] = g.dh[e] * z;
      grad_in[b * width + j] = grad_hidden[b * width + j] = dr;
      grad_in[b * width + hidden + j] = grad_hidden[b * width + hidden + j] = dz;
      grad_in[b * width + 2 * hidden + j] = dn;
      grad_hidden[b * width + 2 * hidden + j] = dn * r;
    }
  }
}

// (R, C) contiguous -> (C): each column summed row by row, in row order. `__restrict` lets the
// compiler add a row's columns as vectors (each column's sum is still its own chain in row order).
template <typename T>
void add_rows(T* __restrict out, const T* __restrict rows, int64_t count, int64_t columns) {
  for (int64_t r = 0; r < count; ++r, rows += columns) {
    for (int64_t j = 0; j < columns; ++j) out[j] += rows[j];
  }
}

template <typename T>
Tensor column_sums(const Tensor& rows) {
  Tensor sums = at::zeros({rows.size(1)}, rows.options());
  add_rows<T>(sums.data_ptr<T>(), rows.const_data_ptr<T>(), rows.size(0), rows.size(1));
  return sums;
}

// The states each step started from, in time order: (T, B, H).
inline Tensor previous_states(const Tensor& output, const Tensor& h0, bool reverse) {
  const int64_t steps = output.size(0);
  Tensor previous = pooled_empty(output.sizes(), output.options());
  previous[reverse ? steps - 1 : 0].copy_(h0);
  if (steps > 1) previous.narrow(0, reverse ? 0 : 1, steps - 1).copy_(output.narrow(0, reverse ? 1 : 0, steps - 1));
  return previous;
}

template <typename T>
std::vector<Tensor> backward(Cell cell, const Tensor& grad_output_in, const Tensor& grad_hn, const Tensor& grad_cn,
                             const Tensor& input, const Tensor& h0_in, const Tensor& c0_in, const Tensor& w_ih,
                             const Tensor& w_hh, bool has_bias, bool reverse, const Tensor& output,
                             const std::vector<Tensor>& saved_in, bool input_grad) {
  const Sequence seq{input.size(0), input.size(1), w_hh.size(1), w_hh.size(0), reverse};
  const auto options = input.options();
  const Tensor h0 = h0_in.contiguous();
  std::vector<Tensor> saved;
  for (const Tensor& t : saved_in) saved.push_back(t.contiguous());
  Tensor dh = grad_hn.contiguous().clone();
  Tensor dc = cell == Cell::kLstm ? grad_cn.contiguous().clone() : Tensor();
  const Tensor c0 = cell == Cell::kLstm ? c0_in.contiguous() : Tensor();
  Tensor grad_in = pooled_empty({seq.steps * seq.batch, seq.gate_width}, options);
  Tensor grad_hidden = cell == Cell::kGru ? pooled_empty(grad_in.sizes(), options) : grad_in;
  Tensor direct = cell == Cell::kGru ? at::empty_like(dh) : Tensor();
  BackwardState<T> g{seq, output.const_data_ptr<T>(), h0.const_data_ptr<T>(), dh.data_ptr<T>(),
                     grad_in.data_ptr<T>(), grad_hidden.data_ptr<T>(), {}, {}};
  for (const Tensor& t : saved) {
    g.saved.push_back(t.const_data_ptr<T>());
    g.saved_width.push_back(t.size(2));
  }
  const Operand<T> w = weight<T>(w_hh);
  // grad_output read through its strides: a batch-first model hands back a (B, T, H) gradient seen
  // as (T, B, H), and a copy to time-major would cost a pass over the sequence.
  const T* grad_out = grad_output_in.const_data_ptr<T>();
  const int64_t stride_t = grad_output_in.stride(0), stride_b = grad_output_in.stride(1),
                stride_h = grad_output_in.stride(2);
  for (int64_t s = seq.steps - 1; s >= 0; --s) {
    const int64_t t = seq.at(s);
    for (int64_t b = 0; b < seq.batch; ++b) {
      const T* from_output = grad_out + t * stride_t + b * stride_b;
      T* dh_row = g.dh + b * seq.hidden;
      for (int64_t j = 0; j < seq.hidden; ++j) dh_row[j] += from_output[j * stride_h];
    }
    Epilogue<T> plus_direct;
    switch (cell) {
      case Cell::kRnnTanh:
      case Cell::kRnnRelu:
        rnn_backward_step(g, t, cell == Cell::kRnnRelu);
        break;
      case Cell::kLstm:
        lstm_backward_step(g, s, dc.data_ptr<T>(), c0.const_data_ptr<T>());
        break;
      case Cell::kGru:
        gru_backward_step(g, s, direct.data_ptr<T>());
        plus_direct = {T(1), T(1), {direct.const_data_ptr<T>(), seq.hidden, 1}};
        break;
    }
    step_product<T>(seq.batch, seq.hidden, seq.gate_width, g.grad_row(g.grad_hidden, t), seq.gate_width, w, g.dh,
                    plus_direct);
  }
  const Tensor x = pooled_contiguous(input).view({seq.steps * seq.batch, input.size(2)});
  const Tensor previous = previous_states(output, h0, reverse).view({seq.steps * seq.batch, seq.hidden});
  std::vector<Tensor> grads = {
      input_grad ? matrix_product(grad_in, w_ih).view(input.sizes()) : Tensor(),  // not for one-hot inputs
      dh,
      cell == Cell::kLstm ? dc : Tensor(),
      matrix_product(grad_in.t(), x),
      matrix_product(grad_hidden.t(), previous),
  };
  if (has_bias) {
    grads.push_back(column_sums<T>(grad_in));
    grads.push_back(cell == Cell::kGru ? column_sums<T>(grad_hidden) : grads.back().clone());
  }
  return grads;
}

// ---------------------------------------------------------------------------------------------
// Op entry points (schemas in gemm.cpp).

inline std::vector<Tensor> recurrent_forward(const std::string& cell, const Tensor& input, const Tensor& h0,
                                             const std::optional<Tensor>& c0, const Tensor& w_ih, const Tensor& w_hh,
                                             const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh,
                                             bool reverse) {
  TORCH_CHECK(input.dim() == 3 && input.size(0) > 0 && is_gemm_dtype(input),
              "recurrent_forward: a (T > 0, B, I) float32 or float64 CPU sequence");
  std::vector<Tensor> results;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "recurrent_forward", [&] {
    results = forward<scalar_t>(cell_named(cell), input, h0, c0.value_or(Tensor()), w_ih, w_hh,
                                b_ih.value_or(Tensor()), b_hh.value_or(Tensor()), reverse);
  });
  return results;
}

inline std::vector<Tensor> recurrent_backward(const std::string& cell, const Tensor& grad_output,
                                              const Tensor& grad_hn, const std::optional<Tensor>& grad_cn,
                                              const Tensor& input, const Tensor& h0, const std::optional<Tensor>& c0,
                                              const Tensor& w_ih, const Tensor& w_hh, bool has_bias, bool reverse,
                                              const Tensor& output, at::TensorList saved, bool input_grad) {
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.sizes() == output.sizes() && grad_output.scalar_type() == output.scalar_type(),
              "recurrent_backward: grad_output must be sized and typed as the output");
  std::vector<Tensor> grads;
  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "recurrent_backward", [&] {
    grads = backward<scalar_t>(cell_named(cell), grad_output, grad_hn, grad_cn.value_or(Tensor()), input, h0,
                               c0.value_or(Tensor()), w_ih, w_hh, has_bias, reverse, output, saved.vec(), input_grad);
  });
  return grads;
}

}  // namespace rnnlab_gemm
