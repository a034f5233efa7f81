"""A table read at the data and summed (`inference.gather_sums`): summed by counts taken once,
with the numbers of the function traced, the data no longer read at each gradient."""

import pytest
import torch
from test_graph_rewrites import assert_same_numbers, operations, value_and_grad

import inference
from inference.laplace import Whitened
from inference.start import initial_values
from inference.tracing import aten_graph
from ppl_models import Independent, Markov, datasets

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
    [Markov(16), Independent(16), Independent(16, "categorical", 3)],
    ids=["markov", "bernoulli", "categorical"],
)
def test_a_builtin_potential_no_longer_reads_the_data(model):
    """The whitened potential of the Markov chain (an indexed table), the Bernoulli (a where)
    and the categorical (an indexed table) independence models on 1,297 digits x 16 pixels:
    no operation of the rewritten graph makes as many values as the data hold, and the
    value and gradient are autograd's on the eager program at points up to 3 sd out (1e-10)."""
    x = datasets.load("digits").train[:, 24:40]
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
    their counts: entry 0 of an indexed table read 3 times, entry 2 once; a where choosing a
    (a[0] 3 times, a[1] once) or b (b[1] twice, b[0], -inf, never)."""
    idx = torch.tensor([0, 2, 0, 0])
    mask = torch.tensor([[True, False], [True, True], [True, False]])
    b = torch.tensor([0.0, 0.5], dtype=f64).log()

    def fn(z):
        table = torch.cat([z.log_softmax(0), torch.tensor([-torch.inf], dtype=f64)])
        return table[idx].sum() + torch.where(mask, z[:2], b).sum()

    z = torch.tensor([0.3, -1.0, 2.0], dtype=f64)
    graph = aten_graph(fn, z)
    assert "aten.where.self" not in operations(graph)
    grad, value = graph(z)
    v, gr = value_and_grad(fn, z)
    ls = z.log_softmax(0)
    expected = 3 * ls[0] + ls[2] + 3 * z[0] + z[1] + 2 * b[1]
    torch.testing.assert_close(value, expected)
    torch.testing.assert_close(value, v)
    torch.testing.assert_close(grad, gr)


def test_a_read_kept_per_datum_is_left_as_it_is():
    """Log-probabilities read at the data and returned per datum (not summed to one number)
    are not rewritten: the graph still reads the table at every datum."""
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
