"""Traced potentials (`inference.tracing`): the value and gradient in one fused graph (compiled
by TorchInductor where the run pays for it), or the value traced alone, each kept only where it
gives the eager function's numbers."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from nuts_engines import compiler_or_skip

import inference
from inference import nutpie_engine
from inference.laplace import Whitened
from inference.start import initial_values
from inference.tracing import (
    COMPILE_NODES,
    STATIC,
    Fused,
    checked_trace,
    compile_pays,
    fused_trace,
)
from ppl_models.example_programs import EIGHT_SIGMA, EIGHT_Y, eight_schools

f64 = torch.float64


def eight_schools_whitened():
    sigma = torch.tensor(EIGHT_SIGMA, dtype=f64)
    p = inference.as_program(eight_schools, data_arg="y", given={"J": 8, "sigma": sigma})
    x = p.validate(torch.tensor(EIGHT_Y, dtype=f64))
    p.discover(x)
    return Whitened(p, x, initial_values(p, x)[0], jit_compile=None)


@pytest.mark.parametrize(
    "gradients, how, tol",
    [
        (0, f"jit-compiled potential and gradient, fused, {STATIC}", 1e-12),
        (math.inf, "potential and gradient compiled by TorchInductor", 1e-10),
    ],
    ids=["static-runtime", "inductor"],
)
def test_the_fused_graph_gives_the_eager_value_and_gradient(gradients, how, tol):
    """Eight schools' potential (10 values), run by TorchScript's Static Runtime (whose outputs
    are inference tensors, which autograd refuses to keep: copied) or compiled by TorchInductor
    (asked for whatever the run's length): its value and gradient equal autograd's on the
    eager program (1e-12; compiled 1e-10) at points up to 3 sd out, directly, through autograd
    (the value it returns carries the gradient) and by the numpy path of nutpie's callback."""
    if gradients:
        compiler_or_skip()
    w = eight_schools_whitened()
    fused, note = fused_trace(w._potential_z, torch.zeros(w.dim, dtype=f64), gradients=gradients)
    assert isinstance(fused, Fused) and note.startswith(how), note
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 3.0):
        z = scale * torch.randn(w.dim, generator=g, dtype=f64)
        a = z.clone().requires_grad_(True)
        value = w._potential_z(a)
        (grad,) = torch.autograd.grad(value, a)
        v, gr = fused.value_and_grad(z)
        torch.testing.assert_close(v, value.detach(), rtol=tol, atol=tol)
        torch.testing.assert_close(gr, grad, rtol=tol, atol=tol)
        b = z.clone().requires_grad_(True)
        (through,) = torch.autograd.grad(3.0 * fused(b), b)
        torch.testing.assert_close(through, 3.0 * grad, rtol=tol, atol=tol)
        v_np, g_np = fused.numpy_value_and_grad(z.numpy())
        assert v_np == float(v) and g_np.dtype == np.float64
        np.testing.assert_array_equal(g_np, gr.numpy())
    if not gradients:
        w.potential({"z": torch.zeros(w.dim, dtype=f64)})
        assert w.jit_note == note


def test_the_laplace_search_and_the_sampler_share_one_traced_graph(monkeypatch):
    """The potential is traced once, in the unconstrained u at the MAP, before the Laplace
    approximation: the search for the mode then calls the eager program only for Newton's
    Hessians (eight schools: 7 eager evaluations, 62 with jit_compile=False),
    and reaches the same mode and whitening (1e-9). A sampler's whitened potential (z -> u =
    mu + L z outside the graph) gives the eager program's value and gradient (1e-12) by
    autograd (the Pyro engine's path), `value_and_grad` and nutpie's numpy path, and follows a
    whitening changed later (`diagonal`)."""
    sigma = torch.tensor(EIGHT_SIGMA, dtype=f64)
    p = inference.as_program(eight_schools, data_arg="y", given={"J": 8, "sigma": sigma})
    x = p.validate(torch.tensor(EIGHT_Y, dtype=f64))
    p.discover(x)
    init = initial_values(p, x)[0]
    calls = []
    eager_potential = Whitened.potential_u

    def counted(self, u):
        calls.append(1)
        return eager_potential(self, u)

    monkeypatch.setattr(Whitened, "potential_u", counted)
    eager = Whitened(p, x, init, jit_compile=False)
    eager_calls, calls[:] = len(calls), []
    w = Whitened(p, x, init, jit_compile=None)
    assert isinstance(w._jitted, Fused) and w.dense
    assert len(calls) <= 10 < 30 <= eager_calls, (len(calls), eager_calls)
    torch.testing.assert_close(w.mu, eager.mu, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(w.L, eager.L, rtol=1e-9, atol=1e-9)
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 3.0):
        z = scale * torch.randn(w.dim, generator=g, dtype=f64)
        a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
        value = eager._potential_z(a)
        (grad,) = torch.autograd.grad(value, a)
        (through,) = torch.autograd.grad(w.potential({"z": b}), b)
        torch.testing.assert_close(through, grad, rtol=1e-12, atol=1e-12)
        v, gr = w.value_and_grad(z)
        torch.testing.assert_close(v, value.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gr, grad, rtol=1e-12, atol=1e-12)
        v_np, g_np = w.numpy_value_and_grad(z.numpy())
        assert v_np == pytest.approx(float(value.detach()), rel=1e-12)
        np.testing.assert_allclose(g_np, grad.numpy(), rtol=1e-12, atol=1e-12)
    w.diagonal()  # a new whitening after the numpy path has run: that path follows it
    a = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(w._potential_z(a), a)
    v_np, g_np = w.numpy_value_and_grad(z.numpy())
    assert v_np == pytest.approx(float(w._potential_z(z)), rel=1e-12)
    np.testing.assert_allclose(g_np, grad.numpy(), rtol=1e-12, atol=1e-12)


def test_without_the_static_runtime_torchscript_runs_the_fused_graph(monkeypatch):
    """Where the Static Runtime cannot run the graph (or gives other numbers), TorchScript's
    own interpreter runs it: the note says so, the numbers are the eager program's."""
    import inference.tracing

    monkeypatch.setattr(inference.tracing, "_static_runtime", lambda graph, z: None)
    w = eight_schools_whitened()
    z = torch.full((w.dim,), 0.3, dtype=f64)
    fused, note = fused_trace(w._potential_z, z)
    assert note == "jit-compiled potential and gradient, fused"
    a = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(w._potential_z(a), a)
    b = z.clone().requires_grad_(True)
    (through,) = torch.autograd.grad(fused(b), b)
    torch.testing.assert_close(through, grad, rtol=1e-12, atol=1e-12)


def test_a_potential_whose_python_reads_its_values_is_not_traced():
    """A branch on a value is traced as one path: both ways fail their check and say why."""

    def branching(z):
        return (z**2).sum() if float(z[0]) > 0 else (z**4).sum()

    z = torch.full((3,), -0.1, dtype=f64)  # the second probe (z[0] + 0.2) takes the other branch
    fused, why = fused_trace(branching, z)
    assert fused is None and why.startswith("the fused potential")
    traced, why = checked_trace(branching, z, "potential")
    assert traced is None and why.startswith("eager")


def test_a_float32_graph_takes_float64_points():
    """A float32 program under a sampler in float64 (nutpie, Pyro's momenta): z is cast to
    the graph's dtype, the gradient back to z's, through autograd as well."""
    a = torch.linspace(0.5, 2.0, 4)

    def potential(z):
        return 0.5 * ((z - a) ** 2 / a).sum() + torch.logsumexp(z, 0)

    fused, _ = fused_trace(potential, torch.zeros(4))
    z = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=f64)
    value, grad = fused.value_and_grad(z)
    b = z.float().requires_grad_(True)
    (expected,) = torch.autograd.grad(potential(b), b)
    assert value.dtype == torch.float32 and grad.dtype == f64
    torch.testing.assert_close(grad, expected.double(), rtol=1e-6, atol=1e-6)
    c = z.clone().requires_grad_(True)
    (through,) = torch.autograd.grad(fused(c), c)
    assert through.dtype == f64
    torch.testing.assert_close(through, expected.double(), rtol=1e-6, atol=1e-6)


# -- compiled by TorchInductor ---------------------------------------------------------------------
def test_compiling_is_chosen_by_the_graphs_size_and_the_runs_length():
    """The rule reads no clock: a graph of eight schools' size (88 nodes) is not compiled
    for 2 x (500 + 500) draws at 16 gradients a draw (estimated 1.8 s saved, 2.3 s to
    compile), a hierarchical AR(1)'s (195 nodes) is (4.1 s saved, 3.7 s); four times the
    draws compile both; never on a GPU or above COMPILE_NODES nodes."""
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    run = 2 * (500 + 500) * 16
    assert not compile_pays(88, run, cpu) and compile_pays(195, run, cpu)
    assert compile_pays(88, 4 * run, cpu)
    assert not compile_pays(335, math.inf, gpu)
    assert not compile_pays(COMPILE_NODES + 1, math.inf, cpu)
    assert not compile_pays(2_000, 0, cpu)


def test_a_graph_over_much_data_is_not_compiled(monkeypatch):
    """Where the data hold more than COMPILE_VALUES values (a logistic regression on 2,000 x
    10), ATen's kernels already run the operations well: however many gradients the run
    asks for, TorchInductor does not compile the graph and TorchScript runs it (unless
    jit_compile="inductor" asks; C's loops are bound by C_VALUES, tests/test_c_graph.py)."""
    import inference.tracing

    monkeypatch.setattr(inference.tracing, "AUTO_COMPILE", True)
    monkeypatch.setattr(inference.tracing, "AUTO_C", False)
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 10, generator=g, dtype=f64)
    y = (torch.rand(2000, generator=g, dtype=f64) < 0.5).to(f64)

    def potential(z):
        logits = X @ z
        return -(y * logits - torch.nn.functional.softplus(logits)).sum() + 0.5 * z @ z

    fused, note = fused_trace(potential, torch.zeros(10, dtype=f64), gradients=1e9)
    assert fused is not None and note == f"jit-compiled potential and gradient, fused, {STATIC}"


def test_a_compiled_potential_gives_the_same_draws_for_the_same_seed():
    """jit_compile="inductor" on nutpie: the same seed, the same draws (the second compile is
    read from TorchInductor's cache); nutpie's callback took the compiled numpy path."""
    compiler_or_skip()
    if not nutpie_engine.installed():
        pytest.skip("nutpie is not installed")
    sigma = torch.tensor(EIGHT_SIGMA, dtype=f64)
    options = {"num_samples": 100, "warmup_steps": 100, "seed": 3, "progress_bar": False}
    given = {"given": {"J": 8, "sigma": sigma}, "data_arg": "y", "data_plate": "J"}
    fits = [
        inference.fit(eight_schools, EIGHT_Y, "nuts", jit_compile="inductor", **options, **given)
        for _ in range(2)
    ]
    assert all("TorchInductor" in f.info["potential"] for f in fits)
    for k in fits[0].draws:
        torch.testing.assert_close(fits[0].draws[k], fits[1].draws[k], rtol=0, atol=0)


def test_where_torchinductor_cannot_compile_torchscript_runs_the_graph(monkeypatch):
    """No compiler, an operation it cannot lower: the same graph by TorchScript, the note
    says why, the numbers are still the eager program's."""
    import torch._inductor.compile_fx as inductor

    def refuse(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(inductor, "compile_fx", refuse)
    w = eight_schools_whitened()
    z = torch.full((w.dim,), 0.2, dtype=f64)
    fused, note = fused_trace(w._potential_z, z, gradients=math.inf)
    assert note == (
        f"jit-compiled potential and gradient, fused, {STATIC} "
        "(TorchInductor could not compile it: RuntimeError)"
    )
    a = z.clone().requires_grad_(True)
    value = w._potential_z(a)
    (grad,) = torch.autograd.grad(value, a)
    v, g = fused.value_and_grad(z)
    torch.testing.assert_close(v, value.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "condition, steps", [(None, 8), (1e4, 64)], ids=["eight-schools", "correlated"]
)
def test_nuts_tells_the_potential_how_many_gradients_to_expect(monkeypatch, condition, steps):
    """The automatic rules (C's and TorchInductor's) are asked with num_chains x (warmup_steps
    + num_samples) x 8 where a diagonal metric is adapted (eight schools: its Laplace
    correlation matrix's condition number is 15), x 64 where that number is above 100
    (correlations a diagonal metric cannot take out), and their answer taken: here, 2 x (30 +
    20) x 8 or x 64. eta is sampled (not integrated out as `inference.conjugate` would: the
    posterior of mu and tau alone is close enough to its Laplace approximation that no metric
    is adapted)."""
    import inference.conjugate
    import inference.tracing

    asked = []

    def rule(nodes, gradients, device):
        asked.append((nodes, gradients, device.type))
        return False

    monkeypatch.setattr(inference.tracing, "AUTO_COMPILE", True)
    monkeypatch.setattr(inference.tracing, "compile_pays", rule)
    monkeypatch.setattr(inference.tracing, "c_pays", rule)
    monkeypatch.setattr(inference.conjugate, "find", lambda program, x, values: [])
    if condition is not None:
        monkeypatch.setattr(Whitened, "correlation_condition", lambda self: condition)
    sigma = torch.tensor(EIGHT_SIGMA, dtype=f64)
    f = inference.fit(
        eight_schools,
        EIGHT_Y,
        "nuts",
        num_samples=20,
        warmup_steps=30,
        progress_bar=False,
        given={"J": 8, "sigma": sigma},
        data_arg="y",
        data_plate="J",
    )
    # both rules, compiling to C and by TorchInductor, asked the same
    assert len(asked) == 2 and asked[0] == asked[1]
    assert asked[0][1:] == (2 * (30 + 20) * steps, "cpu") and asked[0][0] > 50
    assert f.info["potential"] == f"jit-compiled potential and gradient, fused, {STATIC}"


def test_the_laplace_correlation_condition_number_is_numpys():
    """A straight line with known noise and wide normal priors, x far from 0: the posterior
    is Gaussian, so its Laplace covariance is exact, (X'X + I / 100^2)^-1; the condition
    number of its correlation matrix equals numpy's (1e-6 relative), and eight schools'
    (the benchmark's program) is below 100."""
    x = torch.linspace(9.0, 11.0, 20, dtype=f64)
    y = 1.0 + 0.5 * x + 0.1 * torch.sin(7 * x)

    def line(y=None):
        a = pyro.sample("a", dist.Normal(torch.tensor(0.0, dtype=f64), 100.0))
        b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=f64), 100.0))
        with pyro.plate("data", len(x)):
            pyro.sample("y", dist.Normal(a + b * x, 1.0), obs=y)

    p = inference.as_program(line, data_arg="y")
    data = p.validate(y)
    p.discover(data)
    w = Whitened(p, data, initial_values(p, data)[0])
    X = np.stack([np.ones(20), x.numpy()], 1)
    cov = np.linalg.inv(X.T @ X + np.eye(2) / 100**2)
    sd = np.sqrt(np.diag(cov))
    eig = np.linalg.eigvalsh(cov / np.outer(sd, sd))
    assert w.correlation_condition() == pytest.approx(eig[-1] / eig[0], rel=1e-6)
    assert w.correlation_condition() > 100
    assert eight_schools_whitened().correlation_condition() < 100
