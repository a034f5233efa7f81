"""Our log-space einsum backend (`ppl_models.programs.log_einsum`) against Pyro's own
(`pyro.ops.einsum.torch_log`): the same values and gradients on every kind of equation Pyro's
contractions hand it, -inf entries included."""

import pytest
import torch
from pyro.ops.einsum import torch_log

from ppl_models.programs import log_einsum

EQUATIONS = [
    "ab->ab",  # the operand itself
    "ab->ba",  # a permutation
    "abc->cab",
    "ab,b->ab",  # products without a sum
    "a,b->ab",
    "ab,bc,c->abc",
    "ab,bc->ac",  # a contraction: Pyro's
    "ab->a",
]


@pytest.mark.parametrize("equation", EQUATIONS)
def test_values_and_gradients_equal_pyros(equation):
    g = torch.Generator().manual_seed(0)
    sizes = {"a": 3, "b": 2, "c": 4}
    inputs = equation.split("->")[0].split(",")
    operands = []
    for dims in inputs:
        x = torch.randn(*(sizes[d] for d in dims), generator=g, dtype=torch.float64)
        x.view(-1)[0] = -torch.inf  # a state of probability 0
        operands.append(x.requires_grad_(True))
    ours = log_einsum.einsum(equation, *operands)
    theirs = torch_log.einsum(equation, *operands)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    weights = torch.rand(theirs.shape, generator=g, dtype=torch.float64)
    finite = lambda t: torch.where(t.isfinite(), t, 0.0)  # noqa: E731
    got = torch.autograd.grad(finite(ours * weights).sum(), operands, allow_unused=True)
    want = torch.autograd.grad(finite(theirs * weights).sum(), operands, allow_unused=True)
    for a, b in zip(got, want):
        torch.testing.assert_close(finite(a), finite(b), rtol=1e-12, atol=1e-12)
    if equation == "ab->ab":
        assert ours is not operands[0]  # a new object, as Pyro's
