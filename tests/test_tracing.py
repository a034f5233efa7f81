"""Traced potentials (`inference.tracing`): the value and gradient in one fused graph, or the
value traced alone, each kept only where it gives the eager function's numbers."""

import torch

import inference
from inference.laplace import Whitened
from inference.start import initial_values
from inference.tracing import Fused, checked_trace, fused_trace
from ppl_models.example_programs import EIGHT_SIGMA, EIGHT_Y, eight_schools

f64 = torch.float64


def eight_schools_whitened():
    sigma = torch.tensor(EIGHT_SIGMA, dtype=f64)
    p = inference.as_program(eight_schools, data_arg="y", given={"J": 8, "sigma": sigma})
    x = p.validate(torch.tensor(EIGHT_Y, dtype=f64))
    p.discover(x)
    return Whitened(p, x, initial_values(p, x)[0], jit_compile=None)


def test_the_fused_graph_gives_the_eager_value_and_gradient():
    """Eight schools' potential (10 values): the fused graph's value and gradient equal
    autograd's on the eager program (1e-12) at points up to 3 sd out, directly and through
    autograd (the value it returns carries the gradient)."""
    w = eight_schools_whitened()
    fused, note = fused_trace(w._potential_z, torch.zeros(w.dim, dtype=f64))
    assert isinstance(fused, Fused) and note == "jit-compiled potential and gradient, fused"
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 3.0):
        z = scale * torch.randn(w.dim, generator=g, dtype=f64)
        a = z.clone().requires_grad_(True)
        value = w._potential_z(a)
        (grad,) = torch.autograd.grad(value, a)
        v, gr = fused.value_and_grad(z)
        torch.testing.assert_close(v, value.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(gr, grad, rtol=1e-12, atol=1e-12)
        b = z.clone().requires_grad_(True)
        (through,) = torch.autograd.grad(3.0 * fused(b), b)
        torch.testing.assert_close(through, 3.0 * grad, rtol=1e-12, atol=1e-12)
    w.potential({"z": torch.zeros(w.dim, dtype=f64)})
    assert w.jit_note == note


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
