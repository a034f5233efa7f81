"""Sums over the data of pointwise expressions (`inference.gather_sums`): evaluated once per
distinct combination the data hold, weighted by its count, with the numbers of the function
traced; the data no longer read at each gradient."""

import pytest
import torch
from test_graph_rewrites import assert_same_numbers, operations, value_and_grad

import inference
from inference.laplace import Whitened
from inference.start import initial_values
from inference.tracing import aten_graph
from ppl_models import Independent, Markov, datasets
from ppl_models.example_programs import independent

f64 = torch.float64


def largest_value(module, z) -> int:
    """The most values any operation of the graph makes at z (its constants aside)."""
    sizes = []

    class Sizes(torch.fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if n.op == "call_function" and isinstance(out, torch.Tensor):
                sizes.append(out.numel())
            return out

    Sizes(module).run(z)
    return max(sizes)


@pytest.mark.parametrize(
    "model",
    [Markov(16), Independent(16), Independent(16, "categorical", 3), independent],
    ids=["markov", "bernoulli", "categorical", "pyro-program"],
)
def test_a_potential_no_longer_reads_the_data(model):
    """The whitened potential of the Markov chain (an indexed table), the Bernoulli (a where)
    and categorical (an indexed table) independence models, and the Bernoulli model written
    as a Pyro program (torch's binary_cross_entropy_with_logits of the expanded logits, and
    in the backward pass (sigmoid - x) summed over the data into 64 values) on 1,297 digits:
    no operation of the rewritten graph makes as many values as the data hold, and the value
    and gradient are autograd's on the eager program at points up to 3 sd out (1e-10)."""
    x = datasets.load("digits").train
    x = x if model is independent else x[:, 24:40]
    x = x.clamp(max=2) if getattr(model, "family", "") == "categorical" else x
    p = inference.as_program(model)
    x = p.validate(x)
    p.discover(x)
    w = Whitened(p, x, initial_values(p, x)[0], jit_compile=False)
    z0 = torch.zeros(w.dim, dtype=f64)
    graph = aten_graph(w._potential_z, z0)
    assert largest_value(graph, z0) < x.numel(), operations(graph)
    assert_same_numbers(graph, w._potential_z, w.dim, 1e-10)


def test_an_entry_no_datum_reads_may_be_minus_infinity():
    """log 0 in table entries that no datum reads (zero probabilities the data never meet):
    the sum stays finite, as the program's (no -inf * 0), and is the entries read weighted by
    their counts: entry 0 of an indexed table read 30 times, entry 2 ten times; a where
    choosing a (a[0] 30 times, a[1] 10) or b (b[1] 20 times, b[0], -inf, never); neither
    region (40, 60 values) is computed at its size."""
    idx = torch.tensor([0, 2, 0, 0]).repeat(10)
    mask = torch.tensor([[True, False], [True, True], [True, False]]).repeat(10, 1)
    b = torch.tensor([0.0, 0.5], dtype=f64).log()

    def fn(z):
        table = torch.cat([z.log_softmax(0), torch.tensor([-torch.inf], dtype=f64)])
        return table[idx].sum() + torch.where(mask, z[:2], b).sum()

    z = torch.tensor([0.3, -1.0, 2.0], dtype=f64)
    graph = aten_graph(fn, z)
    assert largest_value(graph, z) < 40, operations(graph)
    grad, value = graph(z)
    v, gr = value_and_grad(fn, z)
    ls = z.log_softmax(0)
    expected = 30 * ls[0] + 10 * ls[2] + 30 * z[0] + 10 * z[1] + 20 * b[1]
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(value, v)
    torch.testing.assert_close(grad, gr)


def test_real_valued_data_are_left_as_they_are():
    """Log-probabilities read at 12 data and weighted by 12 different numbers (real-valued
    data: every combination distinct, nothing to share) are not rewritten: the graph still
    reads the table at every datum."""
    idx = torch.arange(12) % 3

    def fn(z):
        per_datum = z.log_softmax(0)[idx]
        return (per_datum * torch.linspace(0.0, 1.0, 12, dtype=f64)).sum()

    z = torch.tensor([0.3, -1.0, 2.0], dtype=f64)
    graph = aten_graph(fn, z)
    assert "aten.index.Tensor" in operations(graph)
    grad, value = graph(z)
    v, gr = value_and_grad(fn, z)
    torch.testing.assert_close(value, v)
    torch.testing.assert_close(grad, gr)


def test_a_sum_that_keeps_dims_adds_each_combination_into_its_place():
    """(sigmoid(l) - x) over 400 data of 5 binary values, summed over the data into 5 values
    (keepdim, as a backward pass does), and a sum over dims 0 and 2 of a (40, 3, 10) region:
    the counts added into each output's place (``index_add``), the data no longer read, the
    numbers of the function (1e-12)."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(400, 5, generator=g) < 0.3).to(f64)
    y = (torch.rand(40, 3, 10, generator=g) < 0.5).to(f64)

    def fn(z):
        a = (torch.sigmoid(z.expand(400, 5)) - x).sum(0, keepdim=True)
        b = torch.where(y > 0, z[:3, None], -(z[2:5, None] ** 2)).sum([0, 2])
        return (a.reshape(5) * torch.arange(5.0, dtype=f64)).sum() + (b**2).sum()

    z = torch.tensor([0.3, -1.0, 2.0, 0.1, -0.4], dtype=f64)
    graph = aten_graph(fn, z)
    assert "aten.index_add.default" in operations(graph)
    assert largest_value(graph, z) < 400, operations(graph)
    assert_same_numbers(graph, fn, 5, 1e-12)
