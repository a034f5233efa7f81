"""Rewrites of a traced potential's aten graph (`inference.tracing.aten_graph`) that keep its
numbers and drop operations: what is the same at every z is computed once, and what does nothing
is removed.

A potential traced from a Pyro program carries much that a hand-written one would not: the
normalising constants of every distribution (log sigma, sigma squared for data), zero log
Jacobians of unconstrained sites summed and added, ``x * 1`` and ``x + 0.0`` from transforms,
broadcasts of a scalar to its own shape, the same expansion written out three times by the
backward pass. TorchScript runs each operation for about 0.7-0.9 us whatever its size, so these
are most of a small model's gradient: non-centred eight schools has 152 nodes, 88 rewritten
(75 us a gradient by TorchScript, was 103).

Four rewrites: three in one pass in the graph's order, then dead code removed, and a fourth
(factoring), followed by that pass again where it changed the graph; then sums over the data
are taken over the data's distinct combinations (`inference.gather_sums`):

- **constants folded**: a node whose inputs are all constants (the data, the Laplace
  approximation's mu and L, Python numbers), or whose value depends only on a shape
  (``zeros_like``), is evaluated once and stored;
- **identities removed**: ``x * 1``, ``x / 1``, ``x + 0``, ``x - 0``, ``x ** 1``,
  ``-(-x)``, and a view, permutation, squeeze, expansion, copy, cast or sum that returns x's
  own shape, dtype and strides, are replaced by x;
- **common subexpressions merged**: the same operation on the same inputs is computed once
  (an in-place operation on a fresh tensor read by nothing else, a clamp's backward
  ``logical_and_(x >= a, x <= b)``, first becomes its out-of-place form);
- **sums of like terms factored**: f(x_1, c) + f(x_2, c) + ... with f linear in x (a
  negation, a product or quotient by the same c, a mask, a sum over dims, a view, a scatter into
  zeros) is f(x_1 + x_2 + ..., c): a backward pass writes one such term per use of a value, and
  an unrolled chain reads its parameters at every step. HMM model_1's potential (8 songs x 12
  steps) 805 -> 715 nodes, its 21 scatters (``index_put``) 4.

A node that an in-place operation writes to (Pyro's ``masked_fill_`` for a support) is left as
it is, with everything that shares its memory. The graph is run at the traced point to read
each node's shape, dtype and strides; the caller checks the result (`inference.tracing`).
"""

from __future__ import annotations

import operator
from collections import deque
from functools import reduce

import torch
from torch import fx

from inference.gather_sums import gathers_summed

OP = type(torch.ops.aten.add.Tensor)  # an aten operation with its overload, as fx records it

# operations whose value depends on their input's shape only (not empty_like: uninitialised)
SHAPE_ONLY = {
    "aten.zeros_like.default",
    "aten.ones_like.default",
    "aten.full_like.default",
    "aten.new_zeros.default",
    "aten.new_ones.default",
    "aten.new_full.default",
}
# x op c == x where c is this number (for the commutative ones, on either side)
NEUTRAL = {
    "aten.mul.Tensor": 1,
    "aten.mul.Scalar": 1,
    "aten.div.Tensor": 1,
    "aten.div.Scalar": 1,
    "aten.add.Tensor": 0,
    "aten.add.Scalar": 0,
    "aten.sub.Tensor": 0,
    "aten.sub.Scalar": 0,
    "aten.pow.Tensor_Scalar": 1,
}
COMMUTATIVE = {"aten.mul.Tensor", "aten.mul.Scalar", "aten.add.Tensor", "aten.add.Scalar"}
# these return their input where shape, dtype and strides agree
PASS_THROUGH = {
    "aten.view.default",
    "aten.reshape.default",
    "aten.permute.default",
    "aten.transpose.int",
    "aten.squeeze.default",
    "aten.squeeze.dim",
    "aten.squeeze.dims",
    "aten._unsafe_view.default",
    "aten.expand.default",
    "aten.alias.default",
    "aten.detach.default",
    "aten.clone.default",
    "aten.lift_fresh_copy.default",
    "aten._to_copy.default",
    "aten.sum.default",
    "aten.sum.dim_IntList",
}

# operations linear in their first input, the others held (a sum's terms through them factor)
LINEAR_FIRST = {
    f"aten.{name}"
    for name in "neg.default div.Tensor mul.Scalar div.Scalar sum.dim_IntList unsqueeze.default "
    "view.default expand.default permute.default transpose.int squeeze.dim squeeze.default "
    "select.int slice.Tensor slice_backward.default".split()
}


def simplified(module: fx.GraphModule, z: torch.Tensor) -> fx.GraphModule:
    """`module` (an aten graph of one input, z) rewritten as the module's docstring says;
    `module` itself is changed and returned. The passes run the graph, not its generated code:
    that is made once, at the end (HMM model_1: five generations took 0.35 s, now two)."""
    _merged(module, z)
    if _factored(module, z):  # one round: it factors the sums it makes too (a second found
        _merged(module, z)  # nothing more on the benchmark programs, the AR(1) obs_mask)
    gathers_summed(module, node_values(module, z))  # sums over the data's combinations
    module.recompile()
    return module


def _merged(module: fx.GraphModule, z: torch.Tensor) -> None:
    graph = module.graph
    meta = node_values(module, z)
    _out_of_place(graph, meta)
    fixed = _written(graph)
    constant: set[fx.Node] = set()
    replaced: dict[fx.Node, fx.Node] = {}
    seen: dict = {}  # an operation on its inputs, or a constant's value -> the node computing it
    folded = 0
    for node in list(graph.nodes):
        if node.op not in ("get_attr", "call_function"):
            continue
        if node.op == "call_function":
            if node.target is operator.getitem:  # a part of an operation's tuple of results
                if node.args[0] in constant:
                    constant.add(node)
                continue
            if not isinstance(node.target, OP):
                continue
            node.args = fx.node.map_arg(node.args, lambda a: replaced.get(a, a))
            node.kwargs = fx.node.map_arg(node.kwargs, lambda a: replaced.get(a, a))
            if node in fixed or _impure(node.target):
                continue
        if node.op == "get_attr" or _constant(node, constant):
            constant.add(node)
            key = _value_key(meta.get(node))
        else:
            same = _identity(node, meta, constant)
            if same is not None and same not in fixed:
                replaced[node] = same
                continue
            key = _key(node.target, node.args, node.kwargs)
        if key is not None and node not in fixed:
            if key in seen:
                replaced[node] = seen[key]
                continue
            seen[key] = node
    # constants that a varying node (or the output) reads become attributes, computed once
    for node in list(graph.nodes):
        if node in replaced:
            node.replace_all_uses_with(replaced[node])
    for node in [n for n in graph.nodes if n in constant and n.op == "call_function"]:
        if node in meta and any(u not in constant for u in node.users):  # (a tensor)
            while hasattr(module, f"_folded{folded}"):  # names taken by an earlier round
                folded += 1
            name = f"_folded{folded}"
            module.register_buffer(name, meta[node]["value"])
            with graph.inserting_before(node):
                attr = graph.get_attr(name)
            node.replace_all_uses_with(attr)
    graph.eliminate_dead_code()
    graph.lint()


def _factored(module: fx.GraphModule, z: torch.Tensor) -> bool:
    """Sums of like terms factored: where a sum (a tree of additions, each read only by the
    next) adds terms f(x_1, c), f(x_2, c), ... of one operation f linear in x with the same
    other inputs c, and the x_i of one shape and dtype, the sum is f(x_1 + x_2 + ..., c) plus
    the other terms (the same number up to rounding). Whether any sum changed."""
    graph, meta = module.graph, node_values(module, z)
    fixed, constant = _written(graph), {n for n in graph.nodes if n.op == "get_attr"}
    changed, work, erased = False, deque(n for n in graph.nodes if _is_add(n, meta)), set()
    while work:  # the sums in the graph, then each new sum of x's (factored in turn)
        root = work.popleft()
        if root in erased:
            continue
        up = next(iter(root.users)) if len(root.users) == 1 else None
        if _is_add(up, meta) and up not in fixed and meta[up]["shape"] == meta[root]["shape"]:
            continue  # inside a larger sum
        leaves, stack = [], [root]
        while stack:
            n = stack.pop()
            for a in n.args:
                inner = _is_add(a, meta) and len(a.users) == 1 and a not in fixed
                if inner and meta[a]["shape"] == meta[root]["shape"]:
                    stack.append(a)
                else:
                    leaves.append(a)
        groups: dict = {}
        for leaf in leaves:
            key = _linear_key(leaf, meta, constant, fixed, meta[root])
            groups.setdefault(key, []).append(leaf)
        like = [(k, g) for k, g in groups.items() if k is not None and len(g) > 1]
        if not like:
            continue

        def add(a, b):  # a new node's shape and dtype: its inputs' (all alike)
            node = graph.call_function(torch.ops.aten.add.Tensor, (a, b))
            meta[node] = {k: meta[a][k] for k in ("shape", "dtype")}
            return node

        with graph.inserting_before(root):
            terms = [leaf for k, g in groups.items() if k is None or len(g) == 1 for leaf in g]
            for (target, position, _), group in like:
                total = reduce(add, [leaf.args[position] for leaf in group])
                args = list(group[0].args)
                args[position] = total
                terms.append(graph.call_function(target, tuple(args), dict(group[0].kwargs)))
                meta[terms[-1]] = meta[group[0]]
                work.append(total)
            root.replace_all_uses_with(reduce(add, terms))
        stack = [root]  # the old terms, now read by nothing: gone, so that each x is read once
        while stack:
            n = stack.pop()
            unused = n not in erased and not n.users and isinstance(n.target, OP)
            if unused and not _impure(n.target):
                stack += n.all_input_nodes
                graph.erase_node(n)
                erased.add(n)
        changed = True
    if changed:
        graph.eliminate_dead_code()
        graph.lint()
    return changed


def _is_add(node, meta: dict) -> bool:
    return (
        isinstance(node, fx.Node)
        and node.op == "call_function"
        and (str(node.target), len(node.args), node.kwargs) == ("aten.add.Tensor", 2, {})
        and all(isinstance(a, fx.Node) and a in meta for a in (node, *node.args))
    )


def _linear_key(leaf, meta: dict, constant: set, fixed: set, out: dict):
    """(operation, the position of the input it is linear in, the rest) for a term that is a
    linear operation of one input of its own (read by nothing else), with the sum's shape
    and dtype; None for any other term."""
    if not (
        isinstance(leaf, fx.Node)
        and leaf.op == "call_function"
        and isinstance(leaf.target, OP)
        and len(leaf.users) == 1
        and leaf in meta
        and leaf not in fixed
        and meta[leaf]["shape"] == out["shape"]
        and meta[leaf]["dtype"] == out["dtype"]
    ):
        return None
    target, args = str(leaf.target), leaf.args
    zero = lambda a: _equals(a, 0, meta, constant)  # noqa: E731
    if target in LINEAR_FIRST:
        position = 0
    elif target == "aten.mul.Tensor" and isinstance(args[0], fx.Node):
        position = 0 if isinstance(args[1], (int, float)) or args[1] in constant else 1
    elif target == "aten.where.self" and zero(args[2]):
        position = 1
    elif target == "aten.where.self" and zero(args[1]):
        position = 2
    elif target == "aten.index_put.default" and zero(args[0]) and args[3:] == (True,):
        position = 2
    else:
        return None
    x = args[position]
    if not isinstance(x, fx.Node) or x not in meta or x in fixed:
        return None
    rest = list(args)
    rest[position] = (meta[x]["shape"], meta[x]["dtype"])
    key = _key(leaf.target, tuple(rest), leaf.kwargs)
    return None if key is None else (leaf.target, position, key)


def _out_of_place(graph: fx.Graph, meta: dict) -> None:
    """An in-place operation on a fresh tensor nothing else reads (a clamp's backward,
    ``logical_and_(x >= a, x <= b)``) made out-of-place, where that form gives the same dtype
    and shape on the values recorded at z (it may promote): the repeats then merge."""
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, OP):
            continue
        name, overload = str(node.target).split(".")[1:]
        first = node.args[0] if node.args else None
        if not (name.endswith("_") and not name.endswith("__") and _writes(node.target)):
            continue
        if not (
            isinstance(first, fx.Node)
            and first.op == "call_function"
            and isinstance(first.target, OP)
            and not first.target.is_view
            and not _writes(first.target)
            and len(first.users) == 1
            and node in meta
        ):
            continue
        pure = getattr(getattr(torch.ops.aten, name[:-1], None), overload, None)
        if not isinstance(pure, OP) or _writes(pure) or node.kwargs:
            continue
        if any(a not in meta for a in node.all_input_nodes):
            continue
        args = fx.node.map_arg(node.args, lambda a: meta[a]["value"])
        try:
            with torch.no_grad():
                out = pure(*args)
        except Exception:  # noqa: BLE001 - the form does not take these inputs: leave it
            continue
        if out.dtype == meta[node]["dtype"] and tuple(out.shape) == meta[node]["shape"]:
            node.target = pure


def _constant(node: fx.Node, constant: set) -> bool:
    """The node's value is the same at every z: its inputs are constants, or it reads only
    their shape (``zeros_like``, ``x ** 0``)."""
    target = str(node.target)
    if target in SHAPE_ONLY or all(a in constant for a in node.all_input_nodes):
        return True
    return target == "aten.pow.Tensor_Scalar" and node.args[1] == 0


def _value_key(meta: dict | None):
    """A key equal for constants of equal shape, dtype, device and values (None: no tensor)."""
    if meta is None:
        return None
    value = meta["value"].cpu()
    if value.dtype in (torch.bfloat16, torch.float16):
        value = value.float()  # exactly: numpy has no bfloat16
    return ("constant", meta["shape"], meta["dtype"], meta["device"], value.numpy().tobytes())


def node_values(module: fx.GraphModule, z: torch.Tensor) -> dict:
    """node -> shape, dtype, strides (and the value, cloned as it was made) at z."""
    meta = {}

    class Recorder(fx.Interpreter):
        def run_node(self, n):
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                meta[n] = {
                    "shape": tuple(out.shape),
                    "dtype": out.dtype,
                    "stride": out.stride(),
                    "device": out.device,
                    "value": out.detach().clone(),
                }
            return out

    with torch.no_grad():
        Recorder(module).run(z)
    return meta


def _written(graph: fx.Graph) -> set[fx.Node]:
    """Nodes an in-place operation writes to, with every node sharing memory with one (views
    of it, what it is a view of)."""
    parent: dict[fx.Node, fx.Node] = {}

    def root(n):
        while parent.get(n, n) is not n:
            n = parent[n]
        return n

    written = []
    for node in graph.nodes:
        if node.op != "call_function" or not isinstance(node.target, OP):
            continue
        first = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
        if first is not None and (node.target.is_view or _writes(node.target)):
            parent[root(node)] = root(first)  # a view of it, or it written in place
            if _writes(node.target):
                written.append(first)
        out = node.kwargs.get("out")
        if isinstance(out, fx.Node):
            parent[root(node)] = root(out)
            written.append(out)
    groups = {root(n) for n in written}
    return {n for n in graph.nodes if root(n) in groups}


def _writes(target) -> bool:
    """An in-place aten operation (``masked_fill_``, ``copy_``): it writes its first input."""
    return torch.Tag.inplace in target.tags or str(target).split(".")[1].endswith("_")


def _impure(target) -> bool:
    return _writes(target) or torch.Tag.nondeterministic_seeded in target.tags


def _identity(node: fx.Node, meta: dict, constant: set) -> fx.Node | None:
    """The node's input where the node returns it unchanged, else None."""
    args, target = node.args, str(node.target)
    if not args or not isinstance(args[0], fx.Node) or node not in meta:
        return None
    out = meta[node]

    def same_as(x):
        m = meta.get(x)
        keep = ("shape", "dtype", "stride", "device")
        return x if m is not None and all(m[k] == out[k] for k in keep) else None

    if target in PASS_THROUGH:
        return same_as(args[0])
    if target == "aten.neg.default":
        inner = args[0]
        if inner.op == "call_function" and str(inner.target) == "aten.neg.default":
            return same_as(inner.args[0])
        return None
    if target in NEUTRAL and len(args) == 2 and not node.kwargs:
        unit = NEUTRAL[target]
        sides = [(args[0], args[1])]
        if target in COMMUTATIVE:
            sides.append((args[1], args[0]))
        for x, other in sides:
            if isinstance(x, fx.Node) and _equals(other, unit, meta, constant):
                kept = same_as(x)
                if kept is not None:
                    return kept
    return None


def _equals(arg, number, meta: dict, constant: set) -> bool:
    """The argument is `number` everywhere: a Python number, or a constant tensor."""
    if isinstance(arg, (int, float)) and not isinstance(arg, bool):
        return arg == number
    if isinstance(arg, fx.Node) and arg in constant and arg in meta:
        value = meta[arg]["value"]
        return bool((value == number).all())
    return False


def _key(target, args, kwargs):
    """A hashable key of an operation and its inputs (None where there is none)."""

    def freeze(a):
        if isinstance(a, (list, tuple)):
            return tuple(freeze(b) for b in a)
        if isinstance(a, dict):
            return tuple(sorted((k, freeze(v)) for k, v in a.items()))
        return a

    try:
        key = (target, freeze(args), freeze(kwargs))
        hash(key)
    except TypeError:
        return None
    return key


__all__ = ["OP", "node_values", "simplified"]
