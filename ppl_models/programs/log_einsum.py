"""A log-space einsum backend for Pyro's contractions (`pyro_internals.LeanLogRing`): Pyro's
`pyro.ops.einsum.torch_log`, except where the equation sums no dim out. There the result is
the operands' sum (a product in probability space), each moved to the output's dims, where
Pyro's takes every operand through a max shift and exp, multiplies, takes the log and adds
the shifts back: the same number in exact arithmetic, 6-12 operations forward and as many
backward each time. The graph of HMM model_1's potential (8 sequences x 12 steps) fell from
1,433 operations to 1,155 (its fit 76.5 -> 65.9 s)."""

from __future__ import annotations

from pyro.ops.einsum import torch_log
from pyro.ops.einsum.util import Tensordot


def transpose(a, axes):
    return a.permute(axes)


def einsum(equation: str, *operands):
    inputs, output = equation.split("->")
    inputs = inputs.split(",")
    if any(d not in output for d in "".join(inputs)) or any(
        len(set(dims)) < len(dims)
        for dims in inputs  # a diagonal
    ):
        return torch_log.einsum(equation, *operands)
    if len(operands) == 1 and inputs[0] == output:
        return operands[0].clone()  # a new object, as Pyro's (its issue 3068)
    return sum(_aligned(dims, x, output) for dims, x in zip(inputs, operands))


def _aligned(dims: str, x, output: str):
    """x (dims `dims`) permuted to the order of `output`, with size-1 dims where it has none."""
    x = x.permute([dims.index(d) for d in output if d in dims])
    shape = iter(x.shape)
    return x.reshape([next(shape) if d in dims else 1 for d in output])


tensordot = Tensordot(einsum)

__all__ = ["einsum", "tensordot", "transpose"]
