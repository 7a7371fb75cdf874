"""Deterministic CPU math (rnnlab/runtime/gemm): right answers, one bit pattern, no MKL GEMM left.

- products agree with a float64 reference within the error bound of any summation order, and equal
  rnnlab_gemm::reference_mm (the sequential std::fma chain) bit for bit, over 1-4 threads too,
  with flush-denormal on (worker threads made before it was switched on);
- tanh/sigmoid/exp/log/sqrt: sqrt correctly rounded, the others 1-ulp and independent of an
  element's position, the layout and the thread count;
- the fused recurrent layers: forward equal to torch's own loop bit for bit, gradients within
  rounding, gradcheck in float64;
- identical trained weights under every MKL setting, in subprocesses; MKL_VERBOSE shows no GEMM;
- ATen's other kernels in a train step (embedding backward, loss, grad norm, Adam) don't depend
  on the thread count either.
Skipped when the library can't be built here (no g++, no AVX2/FMA).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.runtime import gemm

REPO = Path(__file__).resolve().parents[3]
DTYPES = (torch.float32, torch.float64)
SIZES = (0, 1, 2, 5, 6, 7, 13, 16, 17, 31, 33, 67)


@pytest.fixture(scope="module", autouse=True)
def enabled() -> Iterator[gemm.GemmStatus]:
    """Our kernels and fused layers for this module only: other test modules keep torch's own.

    oneDNN off, as in reproducible mode: otherwise torch's own nn.LSTM would run oneDNN's kernel.
    """
    status = gemm.enable()
    if not status.active:
        pytest.skip(f"rnnlab-gemm unavailable: {status.fallback_reason}")
    mkldnn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    yield status
    torch.backends.mkldnn.enabled = mkldnn
    torch.ops.rnnlab_gemm.set_enabled(False)
    gemm.install(False)


@pytest.fixture()
def threads() -> Iterator[None]:
    """Restores the thread count and the denormal mode a test changes."""
    count = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(count)


def random(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def bound(a: np.ndarray, b: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    """|error| of any order of k rounded multiply-adds: (k + 2) eps (|A| @ |B|), plus an underflow margin."""
    eps = torch.finfo(dtype).eps
    return (a.shape[-1] + 2) * eps * (np.abs(a) @ np.abs(b)) + torch.finfo(dtype).tiny


def assert_product(result: torch.Tensor, a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0, beta: float = 0.0,
                   self: torch.Tensor | None = None, context: object = None) -> None:
    """result == alpha * a @ b + beta * self within the rounding bound, against numpy in float64."""
    a64, b64 = a.double().numpy(), b.double().numpy()
    expected = alpha * (a64 @ b64)
    slack = abs(alpha) * bound(a64, b64, result.dtype)
    if beta != 0.0:
        self64 = np.broadcast_to(self.double().numpy(), expected.shape)
        expected = expected + beta * self64
        slack = slack + 2 * torch.finfo(result.dtype).eps * (np.abs(expected) + abs(beta) * np.abs(self64))
    assert result.dtype == a.dtype and tuple(result.shape) == expected.shape, context
    assert np.all(np.abs(result.double().numpy() - expected) <= slack), context


def layouts(m: int, k: int, n: int, dtype: torch.dtype, seed: int) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, a, b): contiguous, transposed views (as backward passes make them), strided slices."""
    a, b = random(m, k, dtype=dtype, seed=seed), random(k, n, dtype=dtype, seed=seed + 1)
    yield "contiguous", a, b
    yield "transposed", random(k, m, dtype=dtype, seed=seed).t(), random(n, k, dtype=dtype, seed=seed + 1).t()
    yield "strided", random(m, 2 * k, dtype=dtype, seed=seed)[:, ::2], random(2 * k, n + 3, dtype=dtype, seed=seed + 1)[::2, 1:-2]


# ------------------------------------------------------------------------------------------------
# Agreement


@pytest.mark.parametrize("dtype", DTYPES)
def test_mm_agrees_over_odd_shapes_and_layouts(dtype: torch.dtype) -> None:
    for seed, (m, k, n) in enumerate(itertools.product(SIZES, repeat=3)):
        if seed % 5 != 0 and 0 not in (m, k, n):  # every empty case, a fifth of the others
            continue
        for name, a, b in layouts(m, k, n, dtype, seed):
            assert_product(torch.mm(a, b), a, b, context=(name, m, k, n))


def test_large_products_cross_k_blocks_and_thread_parts() -> None:
    for m, k, n in ((100, 256, 1024), (100, 1024, 256), (300, 700, 50), (7, 1000, 3)):
        for name, a, b in layouts(m, k, n, torch.float32, m + k):
            assert_product(torch.mm(a, b), a, b, context=(name, m, k, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_addmm_alpha_beta_and_broadcast_self(dtype: torch.dtype) -> None:
    m, k, n = 13, 37, 19
    a, b = random(m, k, dtype=dtype), random(k, n, dtype=dtype, seed=1)
    selves = [random(*shape, dtype=dtype, seed=2) for shape in ((n,), (1, n), (m, 1), (m, n), ())]
    selves.append(random(n, m, dtype=dtype, seed=3).t())  # a column-major self
    for self, (alpha, beta) in itertools.product(selves, ((1, 1), (1, 0), (-2.5, 1), (1, 0.5), (0.25, -3))):
        result = torch.addmm(self, a, b, alpha=alpha, beta=beta)
        assert_product(result, a, b, alpha, beta, self, context=(tuple(self.shape), alpha, beta))
    with_nan = torch.full((m, n), float("nan"), dtype=dtype)
    assert_product(torch.addmm(with_nan, a, b, beta=0), a, b)  # beta = 0 ignores self, NaN included
    infinite = a.clone()
    infinite[0, 0] = float("inf")
    assert torch.equal(torch.addmm(selves[3], infinite, b, alpha=0, beta=0.5), 0.5 * selves[3])  # and alpha = 0 the product
    empty_k = torch.addmm(selves[0], a[:, :0], b[:0], alpha=2, beta=0.5)
    assert torch.equal(empty_k, (0.5 * selves[0]).expand(m, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_and_in_place_variants(dtype: torch.dtype) -> None:
    m, k, n = 17, 33, 7
    a, b, bias = random(m, k, dtype=dtype), random(k, n, dtype=dtype, seed=1), random(n, dtype=dtype, seed=2)
    out = torch.empty(0, dtype=dtype)
    assert torch.mm(a, b, out=out) is out
    assert_product(out, a, b)
    column_major = torch.empty(n, m, dtype=dtype).t()  # filled as out^T = b^T a^T
    torch.addmm(bias, a, b, out=column_major)
    assert_product(column_major, a, b, 1.0, 1.0, bias)
    strided = torch.empty(m, 2 * n, dtype=dtype)[:, ::2]  # no unit stride: through a temporary
    torch.mm(a, b, out=strided)
    assert_product(strided, a, b)
    accumulated = random(m, n, dtype=dtype, seed=3)
    before = accumulated.clone()
    accumulated.addmm_(a, b, beta=0.5, alpha=2)  # self is the output: through a temporary
    assert_product(accumulated, a, b, 2.0, 0.5, before)
    square = random(k, k, dtype=dtype, seed=4)
    expected = square.clone()
    torch.mm(square, square.clone(), out=square)  # out overlaps an input
    assert_product(square, expected, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bmm_baddbmm_addmv(dtype: torch.dtype) -> None:
    a, b = random(3, 9, 21, dtype=dtype), random(3, 21, 18, dtype=dtype, seed=1)
    for i, product in enumerate(torch.bmm(a, b)):
        assert_product(product, a[i], b[i])
    bias = random(18, dtype=dtype, seed=2)
    for i, product in enumerate(torch.baddbmm(bias, a.transpose(1, 2).contiguous().transpose(1, 2), b, alpha=2)):
        assert_product(product, a[i], b[i], 2.0, 1.0, bias)
    matrix, vector, self = random(40, 21, dtype=dtype), random(21, dtype=dtype, seed=3), random(40, dtype=dtype, seed=4)
    assert_product(torch.addmv(self, matrix, vector, beta=0.5).unsqueeze(1), matrix, vector.unsqueeze(1), 1.0, 0.5,
                   self.unsqueeze(1))
    assert_product(torch.mv(matrix.t().contiguous().t(), vector).unsqueeze(1), matrix, vector.unsqueeze(1))


def test_other_dtypes_and_bad_calls_keep_atens_behaviour() -> None:
    ints = torch.arange(12).reshape(3, 4)
    assert torch.equal(torch.mm(ints, ints.t()), torch.from_numpy(ints.numpy() @ ints.numpy().T))
    halves = random(5, 8).bfloat16()
    assert torch.mm(halves, halves.t()).dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        torch.mm(random(2, 3), random(4, 5))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.mm(random(2, 3), random(3, 2, dtype=torch.float64))


# ------------------------------------------------------------------------------------------------
# One bit pattern


@pytest.mark.parametrize("dtype", DTYPES)
def test_bits_equal_the_sequential_fma_chain(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(7)
    for trial in range(40):
        m, n = (int(x) for x in torch.randint(1, 80, (2,), generator=generator))
        k = int(torch.randint(0, 700, (1,), generator=generator))  # past one K block (256)
        for _name, a, b in layouts(m, k, n, dtype, trial):
            assert torch.equal(torch.mm(a, b), torch.ops.rnnlab_gemm.reference_mm(a, b))


def tiny_products() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Products whose partial sums pass through float32 denormals, where flush-to-zero changes bits."""
    a, b = random(100, 256) * 1e-19, random(256, 1024, seed=1) * 1e-19
    return [(a, b), (random(100, 1024, seed=2).t(), random(100, 256, seed=3) * 1e-38), (a[:, :77], b[:77, :300])]


def flush_denormals_after_workers_exist() -> None:
    torch.set_num_threads(4)
    torch.mm(random(300, 300), random(300, 300))  # OpenMP workers exist before the mode changes
    torch.set_flush_denormal(True)


def per_thread_count(compute: Callable[[], torch.Tensor]) -> list[torch.Tensor]:
    """compute() at 4, 3, 2, 1 threads: 4 first, while the workers from before the mode change live
    (libgomp makes new workers, which copy the caller's MXCSR, only when a team grows)."""
    results = []
    for count in (4, 3, 2, 1):
        torch.set_num_threads(count)
        results.append(compute())
    return results


def all_equal(results: list[torch.Tensor]) -> bool:
    return all(torch.equal(result, results[0]) for result in results)


def test_bits_do_not_depend_on_threads_with_flush_denormal(threads: None) -> None:
    products = tiny_products() + [(random(100, 256), random(1024, 256, seed=1).t())]
    batched = random(6, 50, 300) * 1e-19, random(6, 300, 70, seed=1) * 1e-19
    flush_denormals_after_workers_exist()
    for a, b in products:
        expected = torch.ops.rnnlab_gemm.reference_mm(a, b)  # this thread, flushing
        assert all(torch.equal(result, expected) for result in per_thread_count(partial(torch.mm, a, b)))
        bias = random(b.shape[1], seed=5) * 1e-37
        assert all_equal(per_thread_count(partial(torch.addmm, bias, a, b, beta=0.5, alpha=0.75)))
    assert all_equal(per_thread_count(lambda: torch.bmm(*batched)))


# ------------------------------------------------------------------------------------------------
# The AVX-512F tiles (avx512.h) give the AVX2 tiles' bits: the same chains, by construction; checked.

HAS_AVX512F = "avx512f" in gemm.cpu_flags()
needs_avx512f = pytest.mark.skipif(not HAS_AVX512F, reason="the CPU lacks AVX-512F: only the AVX2 tiles run here")
TILE_SIZES = (1, 5, 6, 7, 9, 10, 11, 29, 43)  # around the AVX2 tile's 6 rows and the AVX-512 tile's 10
DEPTHS = (0, 1, 7, 17, 300, 600)  # past one and two K blocks (256)
WIDTHS = (1, 7, 31, 32, 33, 70)  # around the AVX-512 tile's 32 float columns and the AVX2 tile's 16


def on_tiles(isa: str, compute: Callable[[], object]) -> object:
    """compute() on the micro-kernels `isa`, then back to those the library chose at load."""
    torch.ops.rnnlab_gemm.select_isa(isa)
    try:
        return compute()
    finally:
        torch.ops.rnnlab_gemm.select_isa(gemm.load().tiles)


def same_on_both_tiles(compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """compute()'s result on the AVX-512F tiles, asserted equal bit for bit to the AVX2 tiles' one."""
    wide, narrow = on_tiles("avx512f", compute), on_tiles("avx2", compute)
    assert torch.equal(wide, narrow)
    return wide


@needs_avx512f
@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_tiles_equal_avx2_tiles_and_the_chain_over_odd_shapes_and_layouts(dtype: torch.dtype) -> None:
    for seed, (m, k, n) in enumerate(itertools.product(TILE_SIZES, DEPTHS, WIDTHS)):
        for name, a, b in layouts(m, k, n, dtype, seed):
            result = same_on_both_tiles(partial(torch.mm, a, b))
            assert torch.equal(result, torch.ops.rnnlab_gemm.reference_mm(a, b)), (name, m, k, n)


@needs_avx512f
@pytest.mark.parametrize("dtype", DTYPES)
def test_avx512_tiles_equal_avx2_tiles_with_alpha_beta_broadcast_self_and_batches(dtype: torch.dtype) -> None:
    m, k, n = 29, 600, 70  # edge tiles both ways, three K blocks
    a, b = random(m, k, dtype=dtype), random(k, n, dtype=dtype, seed=1)
    selves = [random(*shape, dtype=dtype, seed=2) for shape in ((n,), (1, n), (m, 1), (m, n), ())]
    selves.append(random(n, m, dtype=dtype, seed=3).t())  # column-major: the epilogue after the tiles
    transposed = a.t().contiguous().t(), b.t().contiguous().t()

    def into_column_major(self: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
        """addmm into a fresh column-major output, filled as out^T = b^T a^T."""
        return torch.addmm(self, a, b, alpha=alpha, beta=beta, out=torch.empty(n, m, dtype=dtype).t())

    for self, (alpha, beta) in itertools.product(selves, ((1, 1), (1, 0), (-2.5, 1), (1, 0.5), (0.25, -3), (0, 1))):
        same_on_both_tiles(partial(torch.addmm, self, a, b, alpha=alpha, beta=beta))
        same_on_both_tiles(partial(torch.addmm, self, *transposed, alpha=alpha, beta=beta))
        same_on_both_tiles(partial(into_column_major, self, alpha, beta))
    batch_a, batch_b = random(3, 43, 300, dtype=dtype), random(3, 300, 45, dtype=dtype, seed=1)
    column_major_a = batch_a.transpose(1, 2).contiguous().transpose(1, 2)
    same_on_both_tiles(partial(torch.bmm, batch_a, batch_b))
    same_on_both_tiles(partial(torch.baddbmm, random(45, dtype=dtype), column_major_a, batch_b, alpha=2, beta=0.5))
    matrix, vector = random(70, 300, dtype=dtype), random(300, dtype=dtype, seed=3)
    same_on_both_tiles(partial(torch.addmv, random(70, dtype=dtype), matrix, vector, beta=0.5))


@needs_avx512f
def test_avx512_tiles_equal_avx2_tiles_and_the_chain_over_thread_counts(threads: None) -> None:
    # The LSTM's products at the pipeline's sizes: the step (h W_hh^T), its backward (G W_hh), the
    # weight gradients (G^T h): split among threads by rows or columns.
    products = [(random(100, 256), random(1024, 256, seed=1).t()), (random(100, 1024), random(1024, 256, seed=1)),
                (random(100, 1024, seed=2).t(), random(100, 256, seed=3)), (random(300, 700), random(700, 50, seed=4))]
    for a, b in products:
        expected = torch.ops.rnnlab_gemm.reference_mm(a, b)
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            assert torch.equal(same_on_both_tiles(partial(torch.mm, a, b)), expected), (tuple(a.shape), count)


@needs_avx512f
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_train_step_through_fused_layers_identical_on_both_tiles(cell: str, threads: None) -> None:
    for count in (1, 2):
        step = partial(train_step_bits, count, cell)
        assert on_tiles("avx512f", step) == on_tiles("avx2", step), (cell, count)


def test_rnnlab_gemm_isa_picks_the_tiles_not_the_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gemm.ISA_SWITCH, "avx2")
    try:
        forced = gemm.load.__wrapped__()  # afresh, not the process's cached load
    finally:
        torch.ops.rnnlab_gemm.select_isa(gemm.load().tiles)
    assert forced.active and forced.tiles == "avx2"
    assert (gemm.NAME, gemm.ISA) == ("rnnlab-gemm 1", "AVX2+FMA")  # the stamp's parts
    monkeypatch.setenv(gemm.ISA_SWITCH, "sse2")
    try:
        unknown = gemm.load.__wrapped__()  # afresh, not the process's cached load
    finally:
        torch.ops.rnnlab_gemm.select_isa(gemm.load().tiles)
    assert not unknown.active and unknown.fallback_reason.startswith(
        f"{gemm.ISA_SWITCH}=sse2: unknown ISA 'sse2' (auto, avx2, avx512f)")
    monkeypatch.delenv(gemm.ISA_SWITCH)
    assert torch.ops.rnnlab_gemm.select_isa("auto") == ("avx512f" if HAS_AVX512F else "avx2")
    torch.ops.rnnlab_gemm.select_isa(gemm.load().tiles)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "torch-loop"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_autograd_gradcheck_through_recurrent_layer_and_linear(cell: str, fused: bool) -> None:
    gemm.enable(fused_recurrent=fused)
    torch.manual_seed(0)
    layer = getattr(nn, cell.upper())(3, 4, batch_first=True).double()
    names = [name for name, _ in layer.named_parameters()]

    def logits(inputs: torch.Tensor, *parameters: torch.Tensor) -> torch.Tensor:
        outputs, _ = torch.func.functional_call(layer, dict(zip(names, parameters[:-2])), (inputs,))
        return nn.functional.linear(outputs[:, -1], parameters[-2], parameters[-1])  # nn.Linear's addmm

    head = nn.Linear(4, 2).double()
    parameters = [p.detach().clone().requires_grad_() for p in (*layer.parameters(), *head.parameters())]
    inputs = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    try:
        assert torch.autograd.gradcheck(logits, (inputs, *parameters))
    finally:
        gemm.enable()


# ------------------------------------------------------------------------------------------------
# tanh, sigmoid, exp, log, sqrt

UNARY = {"tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "exp": np.exp, "log": np.log, "sqrt": np.sqrt}


def unary_input(name: str, n: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    x = random(n, dtype=dtype, seed=seed) * 6
    return x.abs() + 1e-3 if name in ("log", "sqrt") else x


@pytest.mark.parametrize("dtype", DTYPES)
def test_sqrt_is_correctly_rounded(dtype: torch.dtype) -> None:
    if dtype == torch.float32:  # random bit patterns: every exponent, denormals included
        bits = torch.randint(0, 0x7F800000, (1 << 20,), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
        x = bits.view(torch.float32)
    else:
        x = random(1 << 18, dtype=dtype).abs() * 10.0 ** torch.randint(-300, 300, (1 << 18,)).double()
    assert np.array_equal(torch.sqrt(x).numpy(), np.sqrt(x.numpy()))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_accurate_and_independent_of_position_and_layout(name: str, dtype: torch.dtype) -> None:
    op = getattr(torch, name)
    x = unary_input(name, 1001, dtype)
    full = op(x)
    expected = UNARY[name](x.double().numpy())
    assert np.all(np.abs(full.double().numpy() - expected) <= 4 * torch.finfo(dtype).eps * np.abs(expected))
    pieces = torch.cat([op(x[start:start + 7]) for start in range(0, 1001, 7)])  # every element a tail
    assert torch.equal(pieces, full)
    grid = x[:1000].view(40, 25)
    assert torch.equal(op(grid.t()).t(), full[:1000].view(40, 25))  # transposed
    assert torch.equal(op(grid[:, ::3]), full[:1000].view(40, 25)[:, ::3])  # strided
    out = torch.empty(0, dtype=dtype)
    assert op(x, out=out) is out and torch.equal(out, full)
    in_place = x.clone()
    getattr(in_place, f"{name}_")()
    assert torch.equal(in_place, full)


def test_unary_special_values_and_other_dtypes() -> None:
    special = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), float("nan"), -1.0, 1.0])
    exact = {"tanh": [0, 0, 1, -1, np.nan, None, None], "sigmoid": [0.5, 0.5, 1, 0, np.nan, None, None],
             "exp": [1, 1, np.inf, 0, np.nan, None, None], "log": [-np.inf, -np.inf, np.inf, np.nan, np.nan, np.nan, 0],
             "sqrt": [0, -0.0, np.inf, np.nan, np.nan, np.nan, 1]}
    for name, values in exact.items():
        result = getattr(torch, name)(special).numpy()
        known = [i for i, value in enumerate(values) if value is not None]
        assert np.array_equal(result[known], np.array([values[i] for i in known], dtype=np.float32), equal_nan=True), name
    assert np.signbit(torch.sqrt(special)[1].item()) and np.signbit(torch.tanh(special)[1].item())  # -0.0 kept
    assert torch.sqrt(torch.tensor([4, 9])).tolist() == [2.0, 3.0]  # integers: ATen's kernel promotes
    assert torch.tanh(random(5).bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_bits_do_not_depend_on_threads(name: str, threads: None) -> None:
    x = unary_input(name, 300_001)  # above ATen's grain: split among threads at odd offsets
    x[::97] *= 1e-39  # denormal inputs (made before flushing): sqrt and log see zeros where flushed
    flush_denormals_after_workers_exist()
    assert all_equal(per_thread_count(lambda: getattr(torch, name)(x)))


# ------------------------------------------------------------------------------------------------
# Fused recurrent layers (FusedLayer) against torch's own loop on the same kernels

LAYERS = [
    (nn.RNN, {}), (nn.RNN, {"nonlinearity": "relu"}), (nn.LSTM, {}), (nn.GRU, {}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True}), (nn.GRU, {"bias": False, "batch_first": False}),
    (nn.RNN, {"bidirectional": True, "batch_first": False}), (nn.GRU, {"num_layers": 2, "dropout": 0.5}),
]


def run_layer(layer: nn.RNNBase, inputs: torch.Tensor, state: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(forward results, gradients) of a loss touching the outputs and every final state."""
    for parameter in layer.parameters():
        parameter.grad = None
    inputs.grad = None
    torch.manual_seed(3)  # the same inter-layer dropout masks in both runs
    output, final = layer(inputs, state)
    finals = list(final) if isinstance(final, tuple) else [final]
    (output.square().sum() + sum(f.sin().sum() for f in finals)).backward()
    return [output, *finals], [inputs.grad, *(p.grad for p in layer.parameters())]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", range(len(LAYERS)))
def test_fused_forward_equals_torchs_loop_and_gradients_agree(index: int, dtype: torch.dtype) -> None:
    cls, options = LAYERS[index]
    options = {"batch_first": True, **options}
    torch.manual_seed(0)
    layer = cls(7, 5, **options).to(dtype)  # hidden 5: rows end in vector tails
    inputs = random(3, 9, 7, dtype=dtype) if options["batch_first"] else random(9, 3, 7, dtype=dtype)
    inputs.requires_grad_()
    directions = layer.num_layers * (2 if layer.bidirectional else 1)
    h0 = random(directions, 3, 5, dtype=dtype, seed=1)
    state = (h0, random(directions, 3, 5, dtype=dtype, seed=2)) if cls is nn.LSTM else h0
    layer.train(not layer.dropout)  # the fused layers draw inter-layer dropout masks their own way (below)
    results = {}
    for fused in (True, False):
        gemm.enable(fused_recurrent=fused)
        results[fused] = run_layer(layer, inputs, state)
    gemm.enable()
    (fused_values, fused_grads), (loop_values, loop_grads) = results[True], results[False]
    assert all(torch.equal(a, b) for a, b in zip(fused_values, loop_values))
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert all(torch.allclose(a, b, rtol=tolerance, atol=tolerance) for a, b in zip(fused_grads, loop_grads))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fused_layer_skips_the_input_gradient_nobody_asked_for(cell: str) -> None:
    """A one-hot input (the order task) needs no gradient: backward skips that product, and the weights'
    gradients keep their bits. Hidden 4: the 4-unit gate spans take the gathered activation path."""
    torch.manual_seed(0)
    layer = getattr(nn, cell.upper())(9, 4, batch_first=True)
    inputs = nn.functional.one_hot(torch.randint(0, 9, (6, 11)), 9).float()
    gradients = {}
    for wanted in (True, False):
        inputs.requires_grad_(wanted)
        inputs.grad = None
        layer.zero_grad(set_to_none=True)
        layer(inputs)[0][:, -1].sin().sum().backward()  # batch-first: grad_output is a strided view
        gradients[wanted] = [p.grad for p in layer.parameters()]
        assert (inputs.grad is not None) == wanted
    assert all(torch.equal(a, b) for a, b in zip(gradients[True], gradients[False]))


def test_fused_inter_layer_dropout_masks_come_from_torch_rand(monkeypatch: pytest.MonkeyPatch) -> None:
    """F.dropout's bernoulli_ draws with MKL's generator on Intel CPUs: the fused layers never call it."""
    monkeypatch.setattr(torch.Tensor, "bernoulli_", lambda *args, **kwargs: pytest.fail("bernoulli_ used"))
    torch.manual_seed(0)
    layer = nn.GRU(7, 5, num_layers=2, dropout=0.5, batch_first=True).train()
    inputs = random(3, 9, 7)
    torch.manual_seed(3)
    first = layer(inputs)[0]
    torch.manual_seed(3)
    assert torch.equal(first, layer(inputs)[0])  # the same seed, the same masks
    assert not torch.equal(first, layer.eval()(inputs)[0])  # and they do drop


def test_fused_layer_leaves_other_calls_to_torch() -> None:
    torch.manual_seed(0)
    layer = nn.LSTM(4, 3)
    packed = nn.utils.rnn.pack_padded_sequence(random(5, 2, 4), torch.tensor([5, 3]))
    unbatched = random(5, 4)
    fused = layer(packed)[0].data, layer(unbatched)[0]
    gemm.enable(fused_recurrent=False)
    try:
        assert torch.equal(fused[0], layer(packed)[0].data) and torch.equal(fused[1], layer(unbatched)[0])
    finally:
        gemm.enable()


# ------------------------------------------------------------------------------------------------
# Training in subprocesses: every MKL setting gives the same weights, and MKL runs no GEMM.

TRAIN = textwrap.dedent("""
    import hashlib, os, sys
    import torch
    import torch.nn.functional as F
    from torch import nn
    from rnnlab.runtime import gemm

    def train(cell, dtype=torch.float32, steps=3):
        torch.manual_seed(0)
        embedding = nn.Embedding(50, 8)
        layer = getattr(nn, cell.upper())(8, 16, batch_first=True)
        head = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
        model = nn.ModuleList([embedding, layer, head]).to(dtype)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        data = torch.Generator().manual_seed(1)
        for _ in range(steps):
            tokens = torch.randint(0, 50, (6, 12), generator=data)
            labels = torch.randint(0, 2, (6,), generator=data)
            outputs, _ = layer(embedding(tokens))
            logits = head(outputs[:, -1])
            keep = (torch.rand(logits.shape, generator=data) >= 0.5).to(dtype) / 0.5  # vendor-neutral dropout
            loss = F.cross_entropy(logits * keep, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()

    torch.set_flush_denormal(True)
    torch.backends.mkldnn.enabled = False
    if "--before" in sys.argv:  # one MKL product first: proves MKL_VERBOSE would show one
        torch.mm(torch.ones(8, 8), torch.ones(8, 8))
        print("ENABLING", flush=True)
    for fused in (True, False):  # the fused recurrent layers, then torch's own loop on our kernels
        assert gemm.enable(fused_recurrent=fused).active
        print(*(train(cell) for cell in ("rnn", "lstm", "gru")), train("gru", torch.float64), end=" ")
    print(flush=True)
    os._exit(0)  # skips ~1.5 s of interpreter teardown (torch's atexit hooks)
""")
# "none" also logs MKL's calls: MKL_VERBOSE changes no result. The others run on the AVX-512F tiles
# where the CPU has them; "avx2 tiles" on the AVX2 ones (the same bits, avx512.h).
MKL_SETTINGS = {"none": {"MKL_VERBOSE": "1"}, "COMPATIBLE": {"MKL_CBWR": "COMPATIBLE"},
                **{isa: {"MKL_ENABLE_INSTRUCTIONS": isa} for isa in ("SSE4_2", "AVX2", "AVX512")},
                "avx2 tiles": {"RNNLAB_GEMM_ISA": "avx2"}}


# The eight trainings' weights (rnn, lstm, gru, gru float64; fused, then torch's loop), as printed on an
# Intel Xeon (family 6 model 167, AVX-512, 2 cores) on 2026-12-02. The sessions before ran on AMD EPYC
# (Zen 3/4): a machine of either vendor that prints other bits here breaks the promise of
# docs/reproducibility.md, whatever its MKL does.
RECORDED_WEIGHTS = [
    "f5787ad518f84f0d42f2e7dde76e3be994b806f3e9c3c0f10059e41250075491",
    "593ae76b6034590c878f964df13122c96ccba497a8223629d43dbc17cb3b0242",
    "b9a57db7acef900f05948177ad47773947b3d010ef3fbd86b08abf7ae1c4f627",
    "aa94678fe2ec43d6b65999047eea7268ffd1f044d515b2cbf69da6bbb0e3ed5b",
    "498fa05e6d5c644ec583a0103a156634724a70d18a0036174e326302285a2f83",
    "8d8b4238baa9854a23749641919c2de395c9d913cb6c3a634f152184bd3d42a8",
    "f76d6ea9eb9e78ebf7e458d60d294e559612312a91f9e9a662a51796cb947b33",
    "5452b2de58369727e197f3d50683957782a3d5da6c147840789c18dcb5623d00",
]


def start_training(extra: dict[str, str], *arguments: str) -> subprocess.Popen[str]:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith(("MKL_", "RNNLAB_GEMM"))} | extra
    # One thread each: six children share the CPU, and spinning OpenMP workers would slow them all.
    environment.update(ATEN_CPU_CAPABILITY="avx2", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-c", TRAIN, *arguments], env=environment, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> str:
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr
    assert "Overriding a previously registered kernel" not in stderr  # the dispatcher's warning stays quiet
    return stdout


def test_weights_identical_under_every_mkl_setting_and_vendor_and_no_mkl_gemm() -> None:
    processes = {name: start_training(extra, "--before") for name, extra in MKL_SETTINGS.items()}
    outputs = {name: finish(process).partition("ENABLING") for name, process in processes.items()}
    hashes = {name: after.strip().splitlines()[-1] for name, (_, _, after) in outputs.items()}
    assert len(set(hashes.values())) == 1, hashes
    before, _, after = outputs["none"]
    assert "SGEMM" in before  # MKL_VERBOSE works here: it shows MKL's product before enable()
    assert "GEMM" not in after, after  # rnn/lstm/gru float32 and gru float64: forward, backward, Adam
    assert len(set(hashes["none"].split())) == 8  # eight different trainings, all reproduced
    assert hashes["none"].split() == RECORDED_WEIGHTS  # and the same bits as on the other vendor's CPU


# ------------------------------------------------------------------------------------------------
# ATen's other kernels in a train step, at the pipeline's embedding size.


def train_step_bits(threads: int, cell: str) -> tuple[bytes, float, float]:
    """(weights, loss, grad norm) after two steps: Embedding(10002, 128) -> cell -> head, Adam.

    Hidden 96 at batch 100: the LSTM's (100, 384) gate tensors exceed ATen's grain (32768), so
    torch's own loop splits its elementwise ops among threads too.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    embedding, layer = nn.Embedding(10002, 128), getattr(nn, cell.upper())(128, 96, batch_first=True)
    head = nn.Sequential(nn.Linear(96, 96), nn.ReLU(), nn.Linear(96, 2))
    parameters = [*embedding.parameters(), *layer.parameters(), *head.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    data = torch.Generator().manual_seed(1)
    for _ in range(2):
        tokens = torch.randint(0, 10002, (100, 12), generator=data)
        labels = torch.randint(0, 2, (100,), generator=data)
        outputs, _ = layer(embedding(tokens))
        logits = head(outputs[:, -1])
        keep = (torch.rand(logits.shape, generator=data) >= 0.5).float() / 0.5
        loss = nn.functional.cross_entropy(logits * keep, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        optimizer.step()
    return b"".join(p.detach().numpy().tobytes() for p in parameters), loss.item(), norm.item()


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "torch-loop"])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_other_aten_kernels_in_a_step_ignore_the_thread_count(cell: str, fused: bool, threads: None) -> None:
    gemm.enable(fused_recurrent=fused)
    try:
        results = [train_step_bits(count, cell) for count in (1, 2, 3, 4)]
    finally:
        gemm.enable()
    assert all(result == results[0] for result in results)


def test_cached_build_loads_without_compiling(enabled: gemm.GemmStatus) -> None:
    library = gemm.build()
    built = library.stat().st_mtime_ns
    assert gemm.build() == library and library.stat().st_mtime_ns == built
    assert torch.ops.rnnlab_gemm.version() == gemm.NAME


def test_unusable_machine_gets_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RNNLAB_GEMM", "0")
    assert gemm.load.__wrapped__().fallback_reason == f"RNNLAB_GEMM=0 in the environment; {gemm.FALLBACK}"
    monkeypatch.delenv("RNNLAB_GEMM")
    monkeypatch.setattr(gemm, "cpu_flags", lambda: {"avx2"})
    status = gemm.load.__wrapped__()
    assert not status.active and status.fallback_reason == f"the CPU lacks FMA; {gemm.FALLBACK}"
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(gemm.BuildError, match=r"no g\+\+ on PATH \(install it: apt-get install g\+\+\)"):
        gemm.build()
