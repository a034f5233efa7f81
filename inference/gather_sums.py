"""A rewrite of a traced potential's aten graph (`inference.graph_rewrites` runs it last): a
table read at the data and summed to one number becomes the table's entries weighted by how
often the data read each. Two forms of reading:

- ``table[rows(x), x].sum()``, an ``aten.index`` at constant indices (the data): the built-in
  Markov chain reads its table of conditional log-probabilities at every datum's context and
  value, a categorical independence model at every dim's value;
- ``torch.where(x, log p, log1p(-p)).sum()``, an ``aten.where`` choosing by a constant mask
  between values that broadcast over the data: the Bernoulli independence model.

Either touches every datum at every gradient, though its sum depends only on how many times
each entry is read, which the data fix. The counts are taken once, here, and the entries no
datum reads are left out (a log-probability of -inf there, log 0, gives no -inf * 0). The
backward pass needs no change: its scatter of ones into the table's shape is a constant that
constant folding has already computed. One process, one thread, a value and gradient by
TorchScript's Static Runtime on 1,297 digits: Markov(32) on 32 pixels (63 parameters) ~440 ->
~80 us, Independent(64) (Bernoulli) ~390 -> ~75 us; the conjugate tests' NUTS fits (2 x 1,500
draws) 14.5 -> 3.8 s and 9.6 -> 3.7-4.3 s.

The sum comes out in another order (each entry's terms summed before the entries), so the
value agrees up to rounding; the caller checks it against the program as it checks any traced
graph (`inference.tracing`).
"""

from __future__ import annotations

import math

import torch
from torch import fx

aten = torch.ops.aten
SUMS = (aten.sum.default, aten.sum.dim_IntList)


def gathers_summed(module: fx.GraphModule, meta: dict) -> int:
    """Every table read at the data (constant indices, or a constant mask choosing between
    two tables) and summed to one number rewritten as a weighted sum of the entries read
    (`meta`: node -> shape and dtype, as `inference.graph_rewrites.node_values` gives);
    `module` is changed. How many were."""
    graph, done = module.graph, 0
    for node in list(graph.nodes):
        if node not in meta or not meta[node]["dtype"].is_floating_point:
            continue
        if node.target is aten.index.Tensor:
            reads = _index_reads(module, node, meta)
        elif node.target is aten.where.self:
            reads = _where_reads(module, node, meta)
        else:
            continue
        end = _summed_to_a_number(node, meta)
        if end is None or not reads:
            continue
        with graph.inserting_before(end):
            terms = [_weighted(module, graph, t, c.to(meta[node]["dtype"])) for t, c in reads]
            total = terms[0]
            for term in terms[1:]:
                total = graph.call_function(aten.add.Tensor, (total, term))
        end.replace_all_uses_with(total)
        done += 1
    if done:
        graph.eliminate_dead_code()
        graph.lint()
    return done


def has_reads(graph: fx.Graph) -> bool:
    """Whether the graph reads a constant index or mask (`gathers_summed` may rewrite it)."""
    for node in graph.nodes:
        if node.target is aten.index.Tensor and isinstance(node.args[1], (list, tuple)):
            if all(isinstance(i, fx.Node) and i.op == "get_attr" for i in node.args[1]):
                return True
        if node.target is aten.where.self and node.args[0].op == "get_attr":
            return True
    return False


def _index_reads(module, node: fx.Node, meta: dict) -> list | None:
    """[(table, how often each of its entries is read)] for ``table[i_1, ..., i_k]`` with
    constant integer indices, one for each of the table's dims; else None."""
    table, indices = node.args
    if not isinstance(indices, (list, tuple)) or not indices or table not in meta:
        return None
    shape = meta[table]["shape"]
    if len(indices) != len(shape):  # a dim left whole: rows, not entries, are read
        return None
    tensors = [_constant(module, index) for index in indices]
    if any(t is None or t.dtype not in (torch.int64, torch.int32) for t in tensors):
        return None
    flat = torch.zeros((), dtype=torch.int64, device=tensors[0].device)
    for index, size in zip(torch.broadcast_tensors(*tensors), shape):
        flat = flat * size + index.to(torch.int64) % size
    counts = torch.bincount(flat.reshape(-1), minlength=math.prod(shape)).reshape(shape)
    return [(table, counts)] if counts.any() else None


def _where_reads(module, node: fx.Node, meta: dict) -> list | None:
    """[(a, how often each entry of a is chosen), (b, the same)] for ``where(mask, a, b)``
    with a constant mask, where a and b are smaller than the mask (they broadcast over the
    data) and of the result's dtype; else None."""
    mask, a, b = node.args
    mask = _constant(module, mask)
    if mask is None or mask.dtype != torch.bool or a not in meta or b not in meta:
        return None
    shape = tuple(mask.shape)
    if meta[node]["shape"] != shape or not mask.any():
        return None
    reads = []
    for table, chosen in ((a, mask), (b, ~mask)):
        small = meta[table]["shape"]
        if meta[table]["dtype"] != meta[node]["dtype"] or math.prod(small) >= math.prod(shape):
            return None
        reads.append((table, chosen.to(torch.int64).sum_to_size(small)))
    return reads


def _weighted(module, graph: fx.Graph, table: fx.Node, counts: torch.Tensor) -> fx.Node:
    """A node summing table's entries times `counts` (its shape), the unread ones left out."""
    read = counts.reshape(-1).nonzero().flatten()
    entries = graph.call_function(aten.reshape.default, (table, [-1]))
    if len(read) < counts.numel():
        entries = graph.call_function(aten.index.Tensor, (entries, [_stored(module, graph, read)]))
    weights = _stored(module, graph, counts.reshape(-1)[read])
    return graph.call_function(
        aten.sum.default, (graph.call_function(aten.mul.Tensor, (entries, weights)),)
    )


def _summed_to_a_number(node: fx.Node, meta: dict) -> fx.Node | None:
    """The last of the sums that alone read `node`, one after the other, where it gives one
    number (no dtype asked of a sum), else None."""
    end = node
    while len(end.users) == 1:
        user = next(iter(end.users))
        if user.target not in SUMS or user.args[0] is not end or user.kwargs or user not in meta:
            break
        end = user
    if end is node or meta[end]["shape"] != ():
        return None
    return end


def _constant(module, arg) -> torch.Tensor | None:
    """The tensor a graph constant holds, else None."""
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    return getattr(module, arg.target)


def _stored(module, graph: fx.Graph, value: torch.Tensor) -> fx.Node:
    """A new constant of the graph holding `value`."""
    number = 0
    while hasattr(module, f"_gathered{number}"):
        number += 1
    module.register_buffer(f"_gathered{number}", value)
    return graph.get_attr(f"_gathered{number}")


__all__ = ["gathers_summed", "has_reads"]
