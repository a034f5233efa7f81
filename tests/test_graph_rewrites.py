"""Rewrites of traced aten graphs (`inference.graph_rewrites`): fewer operations, the same numbers
as the function traced, at every point and on every call."""

import torch
from test_tracing import eight_schools_whitened
from torch.fx.experimental.proxy_tensor import make_fx

from inference.tracing import aten_graph

f64 = torch.float64


def operations(module) -> list[str]:
    return [str(n.target) for n in module.graph.nodes if n.op == "call_function"]


def value_and_grad(fn, z):
    a = z.clone().requires_grad_(True)
    value = fn(a)
    (grad,) = torch.autograd.grad(value, a)
    return value.detach(), grad


def test_eight_schools_keeps_its_numbers_with_half_the_operations():
    """Non-centred eight schools' potential: the rewritten graph (what `aten_graph` returns) has
    at most 60% of the operations make_fx records (the data's normalising constants, zero log
    Jacobians, x * 1 and x + 0 folded away) and gives autograd's value and gradient on the
    eager program at points up to 3 sd out (1e-12), its generated code that of the rewritten
    graph."""
    w = eight_schools_whitened()
    z0 = torch.zeros(w.dim, dtype=f64)
    rewritten = operations(aten_graph(w._potential_z, z0))

    def both(z):
        with torch.enable_grad():
            value, grad = value_and_grad(w._potential_z, z)
        return grad, value

    recorded = make_fx(both)(z0)  # as recorded, with nothing rewritten
    full = [op for op in operations(recorded) if "local_scalar_dense" not in op]
    assert len(rewritten) <= 0.6 * len(full), (len(rewritten), len(full))
    graph = aten_graph(w._potential_z, z0)
    # what runs is the rewritten graph: its Python generated after the last rewrite
    assert graph.code == graph.graph.python_code("self").src
    assert_same_numbers(graph, w._potential_z, w.dim, 1e-12)


def assert_same_numbers(graph, fn, dim: int, tol: float):
    """The graph gives autograd's value and gradient of fn at points up to 3 sd out."""
    g = torch.Generator().manual_seed(0)
    for scale in (0.1, 1.0, 3.0):
        z = scale * torch.randn(dim, generator=g, dtype=f64)
        grad, value = graph(z)
        v, gr = value_and_grad(fn, z)
        torch.testing.assert_close(value, v, rtol=tol, atol=tol)
        torch.testing.assert_close(grad, gr, rtol=tol, atol=tol)


def test_identities_constants_and_repeats_are_computed_once():
    """((z * 1 + 0) ** 1 - log(c) * 2) summed twice: one product by a folded constant and the
    sum remain of the value; the gradient is a constant of z's shape."""
    c = torch.tensor([1.0, 2.0, 3.0], dtype=f64)

    def fn(z):
        a = ((z * 1 + 0) ** 1 - torch.log(c) * 2).sum()
        b = ((z * 1 + 0) ** 1 - torch.log(c) * 2).sum()
        return a + b

    z = torch.tensor([0.5, -1.0, 2.0], dtype=f64)
    graph = aten_graph(fn, z)
    ops = operations(graph)
    assert "aten.log.default" not in ops and ops.count("aten.sum.default") == 1, ops
    grad, value = graph(z)
    v, gr = value_and_grad(fn, z)
    torch.testing.assert_close(value, v)
    torch.testing.assert_close(grad, gr)


def test_a_tensor_written_in_place_is_left_alone():
    """A copy of a constant that the function then writes in place (as Pyro writes -inf
    outside a support) is made afresh on every call: two calls at different points give each
    point's own numbers, whichever was first."""
    c = torch.tensor([1.0, 2.0, 3.0], dtype=f64)

    def fn(z):
        t = c.clone() * 1.0
        t.masked_fill_(z < 0, 0.0)
        return (t * z).sum() + (z**2).sum()

    z1 = torch.tensor([0.5, -1.0, 2.0], dtype=f64)
    z2 = torch.tensor([-0.5, 1.0, 2.0], dtype=f64)
    graph = aten_graph(fn, z1)
    for z in (z1, z2, z1):
        grad, value = graph(z)
        v, gr = value_and_grad(fn, z)
        torch.testing.assert_close(value, v)
        torch.testing.assert_close(grad, gr)


def test_operations_with_several_results_fold_and_run():
    """max over a dimension gives (values, indices): of a constant it is folded, of z it
    runs; the numbers are the function's at two points."""
    c = torch.tensor([[1.0, 5.0, 3.0], [4.0, 2.0, 6.0]], dtype=f64)

    def fn(z):
        top = c.max(dim=0).values
        mixed = torch.stack([z, z * 2.0]).max(dim=0).values
        return (top * z).sum() + (mixed**2).sum()

    z1 = torch.tensor([0.5, -1.0, 2.0], dtype=f64)
    graph = aten_graph(fn, z1)
    assert operations(graph).count("aten.max.dim") == 1, operations(graph)
    for z in (z1, -z1):
        grad, value = graph(z)
        v, gr = value_and_grad(fn, z)
        torch.testing.assert_close(value, v)
        torch.testing.assert_close(grad, gr)


def test_an_in_place_operation_on_a_fresh_tensor_is_merged():
    """`(z >= a).logical_and_(z <= b)` (a clamp's backward writes this) twice: the in-place
    operation on a fresh tensor becomes its out-of-place form, and the two are computed once;
    the numbers are the function's at three points."""

    def fn(z):
        a = (z >= 0.1).logical_and_(z <= 2.0)
        b = (z >= 0.1).logical_and_(z <= 2.0)
        return (torch.where(a, z**2, 0.0) + torch.where(b, z**3, 0.0)).sum()

    z1 = torch.tensor([0.5, -1.0, 2.5], dtype=f64)
    graph = aten_graph(fn, z1)
    ops = operations(graph)
    assert ops.count("aten.logical_and.default") == 1, ops
    assert "aten.logical_and_.default" not in ops, ops
    for z in (z1, torch.tensor([1.5, 0.2, 0.05], dtype=f64), z1):
        grad, value = graph(z)
        v, gr = value_and_grad(fn, z)
        torch.testing.assert_close(value, v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, gr, rtol=1e-12, atol=1e-12)


def test_sums_of_like_terms_are_factored():
    """Six steps each read one of two index patterns of z (as an unrolled chain's steps read a
    transition row): the backward pass scatters each step's masked, scaled gradient into z on
    its own (six ``index_put``) and adds them; factored, one scatter per pattern remains (two),
    and the value and gradient are autograd's on the function (1e-12) at two points."""
    g = torch.Generator().manual_seed(0)
    patterns = [torch.tensor([0, 1, 1, 0]), torch.tensor([1, 1, 0, 0])]
    data = [torch.rand(4, generator=g, dtype=f64) for _ in range(6)]
    masks = [torch.rand(4, generator=g) < 0.7 for _ in range(6)]

    def fn(z):
        total = z.new_zeros(())
        for k in range(6):
            picked = z[patterns[k % 2]]
            total = total + torch.where(masks[k], picked.log() * data[k], 0.0).sum()
        return total

    z1 = torch.tensor([0.5, 1.7], dtype=f64)
    graph = aten_graph(fn, z1)
    assert operations(graph).count("aten.index_put.default") == 2, operations(graph)
    for z in (z1, torch.tensor([2.5, 0.3], dtype=f64)):
        grad, value = graph(z)
        v, gr = value_and_grad(fn, z)
        torch.testing.assert_close(value, v, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, gr, rtol=1e-12, atol=1e-12)
