"""A rewrite of a traced potential's aten graph (`inference.graph_rewrites` runs it last): an
elementwise expression of the data and of a few varying values, summed over the data, is
evaluated once for each distinct combination the data hold and weighted by how often each
occurs.

A program with discrete data scores each datum by the same few numbers: the built-in Markov
chain reads its table of conditional log-probabilities at every datum's context and value
(``table[rows(x), x].sum()``, an ``aten.index`` at constant indices), the independence model
chooses log p or log(1 - p) by each pixel (``where(x, log p, log1p(-p)).sum()``), and a Pyro
program's ``Bernoulli(probs).to_event(1)`` observing 0/1 pixels computes
``binary_cross_entropy_with_logits(logits.expand(N, D), x)`` and, in its backward pass,
``(sigmoid(logits.expand(N, D)) - x).sum(0)``. Each touches every datum at every gradient,
though its sum depends only on how many data meet each combination of (the entries read, the
data's values) - 2 x 64 combinations for 1,297 digits of 64 binary pixels - which the data fix.

The rule: where a sum (``sum``, ``sum.dim_IntList``, one after the other, each read only by the
next) reduces over a region of pointwise operations (`POINTWISE`, backward ones included)
whose inputs are constants (the data), varying values broadcast to the region's shape
(an ``expand``, or broadcasting itself) and tables read at constant indices, the distinct
combinations are found once here (each input's column of keys - the entry a varying input
gives each value, a constant's value there - coded by its distinct values, the codes combined
into one integer a row); the region is rebuilt on those rows (each varying input read at its
entries by one ``index``), multiplied by the counts and summed into the sum's shape (an
``index_add`` where the sum keeps dims). A node of the region that something else reads too
stays for it. Entries no datum reads are never computed (a log-probability of -inf there
gives no -inf * 0). Left alone where the combinations are more than SHARED of the region
(real-valued data: nothing to share), or the region holds more than MAX_VALUES values.

A value and gradient of NUTS's potential on the 1,297 training digits, one thread, TorchScript's
Static Runtime, this rewrite on / off in one run (`benchmarks/bench_discrete.py --threads 1`,
1-minute load 0.71-1.47): Independent(64) 68.8 / 327.5 us, Markov(64) 90.9 / 550.9 us, the
same Bernoulli model written as a Pyro program (`ppl_models.example_programs.independent`)
88.8 / 1,007.4 us; by hand, the shared-transition chain (`shared_markov`, 64 sites) 3.4-4.3 ->
2.5-2.9 ms.
The sums come out in another order, so the value agrees up to rounding; the caller checks it
against the program as it checks any traced graph (`inference.tracing`).
"""

from __future__ import annotations

import math

import torch
from torch import fx

aten = torch.ops.aten
SUMS = (aten.sum.default, aten.sum.dim_IntList)
MAX_VALUES = 1 << 22  # a region larger than this is left as it is
SHARED = 0.25  # rewritten where the distinct combinations are at most this share of it


def _ops(names: str) -> set:
    return {getattr(getattr(aten, n.split(".")[0]), n.split(".")[1]) for n in names.split()}


# elementwise: each output value depends on the inputs' values at its own position only
POINTWISE = _ops(
    "neg.default exp.default log.default log1p.default expm1.default sigmoid.default "
    "tanh.default abs.default sqrt.default rsqrt.default reciprocal.default lgamma.default "
    "digamma.default logical_not.default softplus.default add.Tensor add.Scalar sub.Tensor "
    "sub.Scalar rsub.Scalar rsub.Tensor mul.Tensor mul.Scalar div.Tensor div.Scalar "
    "pow.Tensor_Scalar pow.Tensor_Tensor where.self xlogy.Tensor clamp.default "
    "clamp_min.default clamp_max.default maximum.default minimum.default logical_and.default "
    "logical_or.default eq.Scalar eq.Tensor ne.Scalar ge.Scalar ge.Tensor le.Scalar "
    "le.Tensor gt.Scalar gt.Tensor lt.Scalar lt.Tensor "
    "binary_cross_entropy_with_logits.default sigmoid_backward.default tanh_backward.default "
    "softplus_backward.default"
)


def gathers_summed(module: fx.GraphModule, meta: dict) -> int:
    """Every sum over a region of pointwise operations on the data that the data's distinct
    combinations can evaluate (see the module's docstring) rewritten so; `meta`: node ->
    shape and dtype, as `inference.graph_rewrites.node_values` gives; `module` is changed.
    How many were."""
    graph, done = module.graph, 0
    for end in list(graph.nodes):
        if end.target not in SUMS or end not in meta or _summed_further(end):
            continue
        chain = [end]  # the sums, last first
        while _sum_of_a_sum(chain[-1]):
            chain.append(chain[-1].args[0])
        root = chain[-1].args[0]
        if not isinstance(root, fx.Node) or root not in meta:
            continue
        shape = meta[root]["shape"]
        kept = _kept(chain[::-1], len(shape))
        if kept is None or not meta[root]["dtype"].is_floating_point:
            continue
        region = _region(module, root, meta, shape)
        if region is None:
            continue
        inside, leaves = region
        keys = [_key(module, leaf, how, meta, shape) for leaf, how in leaves.items()]
        grid = [n if k else 1 for n, k in zip(shape, kept)]
        keys.append(torch.arange(math.prod(grid)).reshape(grid).expand(shape).reshape(-1))
        combined = _distinct(keys, SHARED * math.prod(shape))
        if combined is None:
            continue
        rows, counts = combined
        with graph.inserting_before(end):
            total = _rebuilt(module, graph, root, inside, leaves, rows, counts, meta)
            if math.prod(grid) > 1:
                like = {"dtype": meta[root]["dtype"], "device": meta[root]["device"]}
                zeros = _stored(module, graph, torch.zeros(math.prod(grid), **like))
                where = _stored(module, graph, rows[-1].to(like["device"]))
                total = graph.call_function(aten.index_add.default, (zeros, 0, where, total))
            else:
                total = graph.call_function(aten.sum.default, (total,))
            total = graph.call_function(aten.reshape.default, (total, list(meta[end]["shape"])))
        end.replace_all_uses_with(total)
        done += 1
    if done:
        graph.eliminate_dead_code()
        graph.lint()
    return done


def _distinct(keys: list[torch.Tensor], most: float):
    """(the distinct rows of the columns `keys`, each column's values in its own dtype; how
    often each occurs), or None where there are more than `most`. Each column is coded by
    its distinct values and the codes combined into one integer a row (a few vectors, no
    sort of rows)."""
    code, values, sizes = torch.zeros_like(keys[0], dtype=torch.int64), [], []
    for key in keys:
        distinct, inverse = torch.unique(key, return_inverse=True)
        if len(distinct) > most or math.prod(sizes) * len(distinct) >= 2**62:
            return None
        code = code * len(distinct) + inverse
        values.append(distinct)
        sizes.append(len(distinct))
    codes, counts = torch.unique(code, return_counts=True)
    if len(codes) > most:
        return None
    rows = []
    for distinct, size in zip(reversed(values), reversed(sizes)):
        rows.append(distinct[codes % size])
        codes = codes // size
    return rows[::-1], counts


def _sum_of_a_sum(node: fx.Node) -> bool:
    """The node sums a sum that nothing else reads."""
    inner = node.args[0]
    return (
        isinstance(inner, fx.Node)
        and inner.target in SUMS
        and not inner.kwargs
        and len(inner.users) == 1
    )


def _summed_further(node: fx.Node) -> bool:
    """A sum reads the node (a sum) and nothing else does."""
    user = next(iter(node.users)) if len(node.users) == 1 else None
    return user is not None and user.target in SUMS and _sum_of_a_sum(user)


def _kept(sums: list[fx.Node], rank: int) -> list[bool] | None:
    """Which of the region's dims the `sums` (in the order they run) keep (None: a sum this
    cannot follow, with a dtype or no dims)."""
    dims = list(range(rank))  # the region's dims still there, in order (None: kept as size 1)
    kept = [True] * rank
    for s in sums:
        if s.kwargs and set(s.kwargs) - {"keepdim"}:
            return None
        if s.target is aten.sum.default:
            dims = []
            kept = [False] * rank
            continue
        axes = s.args[1] if len(s.args) > 1 else None
        keepdim = s.args[2] if len(s.args) > 2 else s.kwargs.get("keepdim", False)
        if not axes:
            return None
        gone = {a % len(dims) for a in axes}
        for a in gone:
            if dims[a] is not None:
                kept[dims[a]] = False
        dims = [None if i in gone else d for i, d in enumerate(dims) if keepdim or i not in gone]
    return kept


def _region(module, root: fx.Node, meta: dict, shape: tuple):
    """(the pointwise nodes of the region summed, in graph order; its inputs: node -> how it
    is read: "constant", "broadcast" (a varying value, or an expand's input) or "index" (a
    table at constant indices)), else None: a varying value of the region's size that is not
    pointwise, a region too large. A node of the region that something else reads too (the
    forward pass's sigmoid, read by the backward pass) stays for it: rewritten there too
    (another region), it goes."""
    if not 16 <= math.prod(shape) <= MAX_VALUES:
        return None
    inside, leaves, work = set(), {}, [root]
    while work:
        node = work.pop()
        if node in inside or node in leaves:
            continue
        how = _leaf(module, node, meta, shape)
        if how is not None:
            leaves[node] = how
            continue
        if node.target not in POINTWISE or meta.get(node, {}).get("shape") != shape:
            return None
        inside.add(node)
        for arg in node.all_input_nodes:
            work.append(arg)
    if any(_writes(u) for n in [*leaves, *inside] for u in n.users):
        return None  # written in place: the region, moved to the sum, could read it later
    order = [n for n in root.graph.nodes if n in inside]
    return order, leaves


def _writes(node: fx.Node) -> bool:
    """An in-place operation (``copy_``, ``masked_fill_``)."""
    return bool(getattr(getattr(node.target, "_schema", None), "is_mutable", False))


def _leaf(module, node: fx.Node, meta: dict, shape: tuple) -> str | None:
    """How the region reads `node` as an input, or None (a node of the region, or not one)."""
    if node.op == "get_attr":
        return "constant"
    if node not in meta:
        return None
    if node.target is aten.expand.default and meta[node]["shape"] == shape:
        return "broadcast"
    if node.target is aten.index.Tensor and meta[node]["shape"] == shape:
        return "index" if _indices(module, node, meta) is not None else None
    return "broadcast" if meta[node]["shape"] != shape else None


def _source(leaf: fx.Node, how: str) -> fx.Node:
    """The varying node whose entries the region reads through `leaf`."""
    return leaf.args[0] if leaf.target is aten.expand.default or how == "index" else leaf


def _key(module, leaf: fx.Node, how: str, meta: dict, shape: tuple) -> torch.Tensor:
    """For each value of the region (flattened): the entry of the leaf's source it reads (a
    varying leaf), or the leaf's value there (a constant)."""
    if how == "constant":
        return getattr(module, leaf.target).cpu().expand(shape).reshape(-1)
    if how == "index":
        table = meta[leaf.args[0]]["shape"]
        flat = torch.zeros((), dtype=torch.int64)
        for index, size in zip(torch.broadcast_tensors(*_indices(module, leaf, meta)), table):
            flat = flat * size + index.to(torch.int64).cpu() % size
        return flat.expand(shape).reshape(-1)
    small = meta[_source(leaf, how)]["shape"]
    return torch.arange(math.prod(small)).reshape(small).expand(shape).reshape(-1)


def _indices(module, node: fx.Node, meta: dict) -> list[torch.Tensor] | None:
    """The constant integer indices of ``table[i_1, ..., i_k]``, one for each of the table's
    dims, else None."""
    table, indices = node.args
    if not isinstance(indices, (list, tuple)) or table not in meta:
        return None
    if not indices or len(indices) != len(meta[table]["shape"]):  # rows, not entries
        return None
    if not all(isinstance(i, fx.Node) and i.op == "get_attr" for i in indices):
        return None
    tensors = [getattr(module, i.target) for i in indices]
    return tensors if all(t.dtype in (torch.int64, torch.int32) for t in tensors) else None


def _rebuilt(module, graph, root, inside, leaves, rows, counts, meta) -> fx.Node:
    """The region on the distinct rows, each value times its count: a node of (rows,)."""
    new = {}
    for column, (leaf, how) in enumerate(leaves.items()):
        values = rows[column]
        if how == "constant":
            constant = getattr(module, leaf.target)
            if constant.dim() == 0:
                new[leaf] = leaf
                continue
            new[leaf] = _stored(module, graph, values.to(constant.device))
        else:
            flat = graph.call_function(aten.reshape.default, (_source(leaf, how), [-1]))
            entries = _stored(module, graph, values.to(torch.int64).to(meta[root]["device"]))
            new[leaf] = graph.call_function(aten.index.Tensor, (flat, [entries]))
    for node in inside:
        args = fx.node.map_arg(node.args, lambda a: new[a])
        kwargs = fx.node.map_arg(node.kwargs, lambda a: new[a])
        new[node] = graph.call_function(node.target, args, kwargs)
    weights = _stored(module, graph, counts.to(meta[root]["dtype"]).to(meta[root]["device"]))
    return graph.call_function(aten.mul.Tensor, (new[root], weights))


def _stored(module, graph: fx.Graph, value: torch.Tensor) -> fx.Node:
    """A new constant of the graph holding `value`."""
    number = 0
    while hasattr(module, f"_gathered{number}"):
        number += 1
    module.register_buffer(f"_gathered{number}", value)
    return graph.get_attr(f"_gathered{number}")


__all__ = ["gathers_summed"]
