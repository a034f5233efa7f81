"""Fused graphs compiled to C (`inference.c_graph`): the value and gradient of autograd on the
eager function, for the benchmark's programs (HMM model_1 in float32 among them) and for one
function that reads every kind of operation the backend writes out; what it cannot write out
runs as before (TorchScript's Static Runtime), the reason in the note."""

import math

import numpy as np
import pytest
import torch

import inference
from inference import c_library, tracing
from inference.c_formulas import MOVES, POINTWISE, REDUCTIONS, SPLIT_LINES
from inference.c_graph import c_compiled, c_source
from inference.c_library import Unsupported
from inference.laplace import Whitened
from inference.start import initial_values
from inference.tracing import STATIC, aten_graph, c_pays, fused_trace
from ppl_models.example_programs import (
    EIGHT_SIGMA,
    EIGHT_Y,
    ar1_panel,
    eight_schools,
    gmm,
    hierarchical_ar1,
    hmm_model_1,
    hmm_songs,
)

f64 = torch.float64
pytestmark = pytest.mark.skipif(c_library.compiler() is None, reason="no C compiler")
G = torch.Generator().manual_seed(0)
A = torch.randn(3, 4, generator=G, dtype=f64)
IDX = torch.tensor([2, 0, 2, 1])
MASK = torch.tensor([True, False, True, False])
B = torch.randn(2, 5, 4, generator=G, dtype=f64)
C = torch.randn(4, 9, generator=G, dtype=f64)  # 9 columns: a product along its rows
BITS = (torch.rand(64, 4, generator=G) < 0.3).to(f64)  # summed by its 8 distinct rows


def many(z):
    """Every kind of operation `inference.c_graph` writes out, forward and backward."""
    x = z.view(3, 4)
    e = x.expand(2, 3, 4)
    moved = (
        x.permute(1, 0)[:, 1:3].sum() * 0.3
        + x[1].pow(2).sum()
        + (x[:, IDX] * A).sum()
        + torch.nn.functional.pad(x, (1, 2), value=0.5).exp().sum()
        + torch.stack([x, A], 0).sin().sum()
        + torch.cat([x, A], 1).cos().sum()
        + (x.flip(0) * A).sum()
        + (x.roll(1, 1) * A).sum()
        + (x.index_select(1, IDX) ** 3).sum()
        + (x.gather(1, IDX.expand(3, 4)) * A).sum()
        + (x.reshape(4, 3).t() * A.T[:, :3].T).sum()
        + x.unsqueeze(0).squeeze(0).unsqueeze(1).squeeze(1).pow(2).sum()
        + x.unsqueeze(0).squeeze().exp().sum()
        + x.unsqueeze(0).unsqueeze(2).squeeze((0, 2)).sin().sum()
        + x.diagonal().exp().sum()
        + (x.repeat(2, 1) * 0.5).sin().sum()
        + torch.matmul(e, A.T).pow(2).sum() * 0.1
        + (B @ x.T).pow(2).sum() * 0.1
        + z[1:5].pow(3).sum()
    )
    positive = x > 0
    compared = (
        torch.special.erfc(x)
        + torch.clamp_min(x, -0.3)
        + torch.clamp_max(x, 0.4)
        + (x == 0.5).double() * x
        + (x >= A).double() * x
        + (x > 0.1).double() * x
        + (x <= A).double() * x
        + (x < 0.2).double() * x
        + (x != 0.1).double() * x
        + (x != A).double() * x
        + torch.logical_not(positive).double() * x
        + torch.logical_or(positive, MASK).double() * x
        + (~positive).double() * x.exp()
        + x.masked_fill(x > 0.2, torch.tensor(0.3, dtype=f64))
        + torch.pow(x.exp(), x)
        + (1.5 - x).pow(2)
        + torch.where(MASK, x, 0.5)
        + torch.where(MASK, 0.5, x)
        + torch.xlogy(x.exp(), 2.0)
        + torch.log(x.exp() + 1)
    )
    s = torch.sigmoid(x)
    pointwise = (
        s
        + torch.tanh(x) * torch.exp(-x.abs())
        + torch.log1p(x * x)
        + torch.nn.functional.softplus(x)
        + torch.nn.functional.logsigmoid(x)
        + torch.clamp(x, -0.5, 0.7)
        + torch.where(MASK, x, A)
        + torch.xlogy(A.abs(), x.exp())
        + torch.xlogy(torch.where(MASK, 0.0, 1.0), torch.where(MASK, 0.0, x.exp()))
        + x * torch.tensor(0.3)  # float32 constants, cast to float64 by torch
        + torch.nn.functional.binary_cross_entropy_with_logits(
            x, (A > 0).double(), reduction="none"
        )
        + torch.sqrt(x * x + 1)
        + torch.erf(x)
        + torch.lgamma(x.exp() + 1)
        + torch.maximum(x, A)
        + torch.minimum(x, -A)
        + torch.rsqrt(x * x + 1)
        + (x > A).double() * x
        + x.masked_fill(MASK, 2.0)
        + torch.expm1(x)
        + torch.sign(x) * torch.digamma(x.exp() + 0.5)
        + 1 / (x * x + 1)
        + (x * x + 1).pow(-2)
        + (x * x + 1).pow(-0.5)
        + (x * x + 1).pow(-1.5)
    )
    reduced = (
        pointwise.mean()
        + pointwise.sum(0).pow(2).sum()
        + pointwise.amax(1).sum()
        + pointwise.amin(0).sum()
        + pointwise.mean(1).sum()
        + torch.logsumexp(pointwise, 1).sum()
        + torch.cumsum(x, 0).pow(2).sum()
        + pointwise.expand(2, 3, 4).sum(1).pow(2).sum()  # a middle dim: through a table
        + pointwise.expand(2, 3, 4).amax(1).sum()
    )
    products = (
        (x @ A.T).pow(2).sum()
        + (x @ A[0]).pow(2).sum()
        + torch.bmm(e, e.transpose(1, 2)).sum() * 0.1
        + torch.dot(x[0], A[1])
        + torch.addmm(A[:, :3], x, A.T).pow(2).sum()
        + (A @ x[0]).pow(2).sum()  # a constant on the left, one column: kept transposed
        + (x @ C).pow(2).sum() * 0.1  # along the rows of C
        + torch.addmm(C[0], x, C, beta=0.5, alpha=2.0).pow(2).sum() * 0.1
        + torch.bmm(e, C.expand(2, 4, 9)).pow(2).sum() * 0.01
    )
    scattered = (
        torch.zeros(5, dtype=f64).index_put((IDX,), x[0], accumulate=True).pow(2).sum()
        + torch.zeros(3, 5, dtype=f64).index_add(1, IDX, x).pow(2).sum()
    )
    F = torch.nn.functional
    counted = (BITS * F.logsigmoid(x[0]) + (1 - BITS) * F.logsigmoid(-x[0])).sum(0) @ x[1]
    return moved + pointwise.sum() + compared.sum() + reduced + products + scattered + counted


def eager(fn, z):
    a = z.clone().requires_grad_(True)
    value = fn(a)
    (grad,) = torch.autograd.grad(value, a)
    return value.detach(), grad


def assert_eager(fn, graph, z0, tol):
    """graph (a `CGraph`) gives fn's value and gradient by autograd at points 0.1-3 sd around
    z0, called with a tensor and by its numpy path, twice at each (its buffers reused)."""
    g = torch.Generator().manual_seed(1)
    for scale in (0.1, 1.0, 3.0):
        z = z0 + scale * torch.randn(z0.shape, generator=g, dtype=z0.dtype)
        value, grad = eager(fn, z)
        for _ in range(2):
            gc, vc = graph(z)
            torch.testing.assert_close(vc, value, rtol=tol, atol=tol)
            torch.testing.assert_close(gc, grad, rtol=tol, atol=tol)
            vn, gn = graph.numpy_value_and_grad(z.double().numpy())
            assert vn == float(vc) and gn.dtype == np.float64
            np.testing.assert_array_equal(gn, gc.double().numpy())


@pytest.mark.parametrize("vector_math", [True, False])
def test_every_operation_it_writes_out_gives_autograds_numbers(vector_math, monkeypatch):
    """`many` (moves, some thirty pointwise formulas, reductions, products, scatters) compiled
    to C, every entry of the backend's tables read: its value and gradient are autograd's at
    three points (1e-12), call after call; with glibc's vector math and this CPU's vector
    instructions where they are there, and without (libm's exp, log, ... one at a time)."""
    if not vector_math:
        monkeypatch.setattr(c_library, "vector_math", lambda: ())
    z = 0.5 * torch.randn(12, generator=torch.Generator().manual_seed(2), dtype=f64)
    module = aten_graph(many, z)
    read = {str(n.target).removeprefix("aten.") for n in module.graph.nodes}
    assert set(POINTWISE) | MOVES | set(REDUCTIONS) <= read  # every formula is checked here
    source = c_source(module, z)
    loops = {  # and every loop order of a reduction and of a product
        "the last dims": "for (int i = 0; i < 3; i++) { T s = ",
        "the first dims": "for (int j = 0; j < 3; j++) { _Pragma",
        "a middle dim": "j]] += W[",
        "a constant kept transposed": "T b = ",
        "along a row of the right factor": "T a = ",
        "along the inner dim": 'reduction(+:s)") for (int l',
    }
    assert [k for k, text in loops.items() if text not in source] == []
    assert source.count("\n") > 2 * SPLIT_LINES  # compiled in parts, side by side
    graph = c_compiled(module, z)
    assert_eager(many, graph, z, 1e-12)


def whitened(program, data, **options):
    p = inference.as_program(program, **options)
    x = p.validate(data)
    p.discover(x)
    return Whitened(p, x, initial_values(p, x)[0], jit_compile=None)


def programs():
    """name -> (program, data, fit options) of the benchmark's programs checked here."""
    import argparse

    songs, lengths = hmm_songs()
    sigma = torch.tensor(EIGHT_SIGMA, dtype=f64)
    data = torch.cat([torch.randn(30, generator=G) - 2, torch.randn(30, generator=G) + 2])
    args = argparse.Namespace(hidden_dim=2, jit=False)
    return {
        "hierarchical AR(1)": (
            hierarchical_ar1,
            ar1_panel(),
            {"data_arg": "y", "data_plate": "series"},
        ),
        "eight schools": (
            eight_schools,
            torch.tensor(EIGHT_Y, dtype=f64),
            {"data_arg": "y", "given": {"J": 8, "sigma": sigma}},
        ),
        "GMM": (gmm, data.double(), {"data_arg": "data"}),
        "HMM model_1 (float32)": (
            hmm_model_1,
            songs,
            {
                "data_arg": "sequences",
                "given": {"lengths": lengths, "args": args},
            },
        ),
    }


@pytest.mark.parametrize(
    "name", ["eight schools", "GMM", "hierarchical AR(1)", "HMM model_1 (float32)"]
)
def test_the_benchmarks_programs_compile_to_their_eager_numbers(name):
    """A program's potential, traced at its mode (TorchScript's graph), compiled to C once a
    sampler says it will ask for 20,000 gradients (`Whitened.expect`): the fit's note says so
    and the value and gradient are autograd's on the eager program (1e-10; float32: 100 eps),
    through the sampler's numpy path too."""
    program, data, options = programs()[name]
    w = whitened(program, data, **options)
    nodes = len(w._jitted.module.graph.nodes)
    w.expect(20_000)
    assert w.jit_note == f"potential and gradient compiled to C ({nodes} nodes)"
    u = w.mu.to(w._jitted.dtype)
    tol = 1e-10 if u.dtype == f64 else 100 * torch.finfo(torch.float32).eps
    assert_eager(w.potential_u, w._jitted.graph, u, tol)  # the CGraph the fit runs
    z = 0.5 * torch.ones(w.dim, dtype=f64)
    value, grad = eager(w._potential_z, z)
    v, g = w.numpy_value_and_grad(z.numpy())
    assert v == pytest.approx(float(value), rel=tol, abs=tol)
    np.testing.assert_allclose(g, grad.numpy(), rtol=tol, atol=tol)


def test_compiling_to_c_is_chosen_by_the_graphs_size_and_the_runs_length():
    """The rule reads no clock: eight schools' graph (95 nodes) for 2 x (500 + 500) draws at 8
    gradients a draw (0.76 s saved, 0.19 s to compile) is compiled, for 2 x 50 draws it is not;
    never on a GPU."""
    cpu = torch.device("cpu")
    assert c_pays(95, 2 * 1000 * 8, cpu) and not c_pays(95, 2 * 50 * 8, cpu)
    assert not c_pays(709, math.inf, torch.device("cuda"))


def test_data_above_c_values_stay_with_atens_kernels(monkeypatch):
    """Data of up to C_VALUES values (a logistic regression's 2,000 x 10) are compiled to C;
    larger ones are left to ATen's kernels (threads, BLAS), which the note says."""
    monkeypatch.setattr(tracing, "AUTO_COMPILE", False)
    z = torch.linspace(-1.0, 1.0, 4, dtype=f64)
    for rows, in_c in [(tracing.C_VALUES // 4, True), (tracing.C_VALUES // 4 + 1, False)]:
        X = torch.randn(rows, 4, generator=torch.Generator().manual_seed(0), dtype=f64)

        def logistic(z, X=X):
            return torch.nn.functional.softplus(X @ z).sum() + (z * z).sum()

        fused, note = fused_trace(logistic, z, gradients=1e9)
        assert ("compiled to C" in note) == in_c, note
        value, grad = eager(logistic, z)
        v, g = fused.value_and_grad(z)
        torch.testing.assert_close(v, value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, grad, rtol=1e-12, atol=1e-12)


def test_what_it_cannot_write_out_runs_as_before_and_the_note_says_why(monkeypatch):
    """An operation it does not write out (i0e), a compiler that fails, no C compiler, or a
    fault of the backend itself: TorchScript's Static Runtime runs the graph, the note says
    why, and the numbers are the eager function's."""
    z = torch.linspace(-1.0, 1.0, 5, dtype=f64)

    def bessel(z):
        return torch.special.i0e(z).sum() + (z * z).sum()

    def plain(z):
        return (z * z).sum() + z.exp().sum()

    monkeypatch.setattr(tracing, "AUTO_COMPILE", False)
    fused, note = fused_trace(bessel, z, gradients=1e9)
    assert note == (
        f"jit-compiled potential and gradient, fused, {STATIC} "
        "(not compiled to C: special_i0e.default)"
    )
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    with pytest.raises(Unsupported, match="the C compiler failed"):
        c_compiled(aten_graph(plain, z), z)
    monkeypatch.delenv("CC")
    monkeypatch.setattr(c_library, "compiler", lambda: None)
    with pytest.raises(Unsupported, match="no C compiler"):
        c_compiled(aten_graph(plain, z), z)
    fused, note = fused_trace(plain, z, gradients=1e9)
    assert note.endswith("(not compiled to C: no C compiler (cc, gcc or $CC))")

    def broken(module, z):
        raise RuntimeError("a fault of the backend itself")

    monkeypatch.setattr(tracing, "c_compiled", broken)
    again, note = fused_trace(plain, z, gradients=1e9)
    assert note.endswith("(not compiled to C: RuntimeError while writing it out)")
    value, grad = eager(plain, z)
    for graph in (fused, again):
        v, g = graph.value_and_grad(z)
        torch.testing.assert_close(v, value, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g, grad, rtol=1e-12, atol=1e-12)
