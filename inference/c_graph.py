"""A fused graph (`inference.tracing.aten_graph`: the aten operations of a potential's value and
gradient) written out as one C function and compiled by the system's C compiler (``cc -O1``).

TorchScript's Static Runtime spends 0.7-1 us an operation whatever its size (HMM model_1: 709
operations, ~0.65 ms); TorchInductor takes 12-14 s to compile that graph, more than the NUTS
run. Here each operation is a plain loop, every shape known at trace time:

- every value has a row-major buffer of its own; an operation that only moves values (a view,
  permutation, expansion, slice, selection, padding, stack, an index at constant indices, and
  the backward passes of those) is a copy through a table of source positions, found by
  running the operation on the positions themselves (and again shifted, which tells a moved
  value from a constant fill); a view that keeps the order is no copy at all;
- pointwise operations (broadcast through the same tables), sums and maxima over dims, matrix
  products, cumulative sums and products and scatters at constant indices are written out
  with torch's formulas (`inference.c_formulas`); a loop whose steps write apart is marked
  ``omp simd`` (vectorised, glibc's vector exp, log, ... where it has them), a sum over a row
  or a column kept in a register, a matrix product's inner loop on consecutive values;
- anything else (an operation not listed, an index computed at run time, two float dtypes)
  raises `Unsupported`, and TorchScript or TorchInductor runs the graph as before; the caller
  (`inference.tracing`) keeps the C only where it gives the eager program's numbers.
"""

from __future__ import annotations

import math
import operator

import numpy as np
import torch
from torch import fx

from inference.c_formulas import INDEX_ARGS, MOVES, POINTWISE, REDUCTIONS, c_files, literal
from inference.c_library import CGraph, Unsupported, built
from inference.graph_rewrites import OP, node_values
from ppl_models.pyro_internals import bound_arguments, call_bound

MAX_VALUES = 1 << 22  # buffers of all the graph's values together, at most (32 MB in float64)
SIMD = '_Pragma("omp simd") '  # a loop whose steps write apart: vectorised


class _Writer:
    """The C source of one graph, its constants (K) and index tables (I)."""

    def __init__(self, module: fx.GraphModule, z: torch.Tensor):
        self.module, self.dtype = module, z.dtype
        self.meta = node_values(module, z)
        self.lines: list[str] = []
        self.where: dict = {}  # node -> (array, offset) of its buffer
        self.size = 0  # values in W
        self.constants: list[np.ndarray] = []
        self.kept = 0  # values in K
        self.tables: list[np.ndarray] = []
        self.table_at: dict = {}
        self.ints = 0  # entries in I
        self.unused: set = set()  # log_sigmoid_forward's backward buffer (read by no formula)

    def buffer(self, n: int) -> tuple[str, int]:
        at, self.size = self.size, self.size + max(n, 1)
        if self.size > MAX_VALUES:
            raise Unsupported(f"more than {MAX_VALUES} values")
        return ("W", at)

    def table(self, values) -> int:
        t = np.ascontiguousarray(np.asarray(values, dtype=np.int64).reshape(-1))
        if t.size and (t.min() < 0 or t.max() >= 2**31):
            raise Unsupported("an index table out of range")
        key = t.tobytes()
        if key not in self.table_at:
            self.table_at[key] = self.ints
            self.tables.append(t.astype(np.int32))
            self.ints += t.size
        return self.table_at[key]

    def tensor(self, node) -> torch.Tensor:
        """The value of a node as traced (a constant's own value)."""
        if node.op == "get_attr":
            return getattr(self.module, str(node.target))
        if node not in self.meta:
            raise Unsupported(f"{node.name} has no tensor value")
        return self.meta[node]["value"]

    def constant(self, node) -> torch.Tensor:
        """An index's value, which must be a constant of the graph (one computed from z would
        be baked in at its traced value)."""
        if node.op != "get_attr":
            raise Unsupported(f"an index computed at run time ({node.name})")
        return self.tensor(node)

    def place(self, node) -> tuple[str, int]:
        """(array, offset) of a node's row-major values: z, a constant in K, a buffer in W."""
        if node in self.where:
            return self.where[node]
        if node.op == "get_attr":
            value = self.tensor(node).detach().to("cpu")  # any real dtype: torch casts it
            if value.dtype.is_complex:  # to the operation's (T where the result is T)
                raise Unsupported(f"{node.name} is complex")
            self.where[node] = ("K", self.stored(value))
            return self.where[node]
        raise Unsupported(f"{node.name} is read before it is computed")

    def stored(self, value: torch.Tensor) -> int:
        """The offset in K of `value`'s row-major values, added to the constants."""
        flat = value.reshape(-1).to("cpu", torch.float64).numpy() if value.numel() else np.zeros(1)
        at, self.kept = self.kept, self.kept + flat.size
        self.constants.append(flat)
        return at

    def _data_dtype(self, dtype, node):
        if dtype.is_complex or (dtype.is_floating_point and dtype != self.dtype):
            raise Unsupported(f"{node.name} is {dtype}, the graph {self.dtype}")

    def ref(self, node, shape, var: str = "i") -> str:
        """C expression of `node`'s value at flat position `var` of a result of `shape`,
        broadcast as torch does."""
        array, at = self.place(node)
        src = self.tensor(node)
        n, total = src.numel(), math.prod(shape)
        if n == total:
            return f"{array}[{at} + {var}]"
        if n == 1:
            return f"{array}[{at}]"
        codes = torch.arange(n).view(src.shape).broadcast_to(shape)
        return f"{array}[{at} + I[{self.table(codes)} + {var}]]"

    def index_expr(self, array, at, positions, var: str) -> str:
        """C expression of `array[at + positions[var]]`, the table left out where positions
        run on by one."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        if positions.size and np.array_equal(positions, np.arange(positions.size) + positions[0]):
            return f"{array}[{at + int(positions[0])} + {var}]"
        return f"{array}[{at} + I[{self.table(positions)} + {var}]]"

    def emit(self, node):
        name = str(node.target).removeprefix("aten.")
        if node.target is operator.getitem:
            source, k = node.args
            if str(source.target) != "aten.log_sigmoid_forward.default":
                raise Unsupported(f"an item of {source.target}")
            if k == 0:
                self.where[node] = self.where[source]
            else:
                self.unused.add(node)
            return  # the backward buffer: log_sigmoid_backward reads its input instead
        if node.op != "call_function" or not isinstance(node.target, OP):
            raise Unsupported(f"{node.op} {node.target}")
        if (
            node.kwargs.get("dtype") not in (None, self.dtype, torch.bool)
            and name != "_to_copy.default"
        ):
            raise Unsupported(f"{name} to {node.kwargs['dtype']}")
        try:
            bound = bound_arguments(node)
        except ValueError as e:
            raise Unsupported(str(e)) from None
        values = list(bound.values())
        if name == "log_sigmoid_forward.default":
            out = self.meta[next(iter(node.users))]["value"] if node.users else None
        else:
            out = self.tensor(node)  # integers (counts) are exact in T's buffers
            self._data_dtype(out.dtype, node)
        shape = tuple(out.shape) if out is not None else ()
        if name == "_to_copy.default":
            to = bound["dtype"] or out.dtype
            keep = "(T)({x} != 0)" if to == torch.bool else "{x}"
            keep = "(T)(long long)({x})" if not (to.is_floating_point or to == torch.bool) else keep
            return self.pointwise(node, shape, lambda a, v: keep.format(x=a[0]), values[:1])
        if name in POINTWISE:
            return self.pointwise(node, shape, POINTWISE[name], values)
        if name in MOVES:
            return self.moved(node, name, bound)
        if name in REDUCTIONS or name == "logsumexp.default":
            return self.reduced(node, name, bound, shape)
        if name in ("mm.default", "mv.default", "bmm.default", "dot.default", "addmm.default"):
            return self.product(node, name, bound, shape)
        if name in ("cumprod.default", "cumsum.default"):
            return self.cumulative(node, name, bound, shape)
        if name in ("index_put.default", "index_add.default", "scatter_add.default"):
            return self.scattered(node, name, bound, shape)
        if name == "binary_cross_entropy_with_logits.default":
            if bound["weight"] is not None or bound["pos_weight"] is not None or bound["reduction"]:
                raise Unsupported("binary_cross_entropy_with_logits with weights or a reduction")
            return self.pointwise(node, shape, lambda a, v: f"bce({a[0]}, {a[1]})", values)
        raise Unsupported(name)

    def pointwise(self, node, shape, formula, values):
        n = math.prod(shape)
        exprs = []
        for v in values:
            if isinstance(v, fx.Node):
                if v in self.unused and formula is not POINTWISE["log_sigmoid_backward.default"]:
                    raise Unsupported(f"{node.target} reads log_sigmoid_forward's buffer")
                exprs.append("0.0" if v in self.unused else self.ref(v, shape))
            elif isinstance(v, (bool, int, float)) or v is None:
                exprs.append(None if v is None else literal(v))
            elif isinstance(v, torch.dtype):
                exprs.append(None)
            else:
                raise Unsupported(f"an argument {type(v).__name__} of {node.target}")
        array, at = self.where[node] = self.buffer(n)
        try:
            expr = formula(exprs, values)
        except ValueError as e:
            raise Unsupported(str(e)) from None
        self.lines.append(f"{SIMD}for (int i = 0; i < {n}; i++) {array}[{at} + i] = {expr};")

    def moved(self, node, name, bound):
        """A copy through a table of positions: the operation run on the positions of its
        inputs' values (1, 2, ...) and again on them shifted, a moved value's position changes
        and a constant fill does not."""
        index_key = INDEX_ARGS.get(name)
        inputs, offsets, total = [], [], 0

        def collect(v):
            nonlocal total
            if isinstance(v, fx.Node) and v not in inputs:
                inputs.append(v)
                offsets.append(total)
                total += self.tensor(v).numel()
            elif isinstance(v, (list, tuple)):
                for x in v:
                    collect(x)

        def coded(v, shift):
            if isinstance(v, fx.Node):
                t, k = self.tensor(v), inputs.index(v)
                return (torch.arange(t.numel(), dtype=torch.float64) + offsets[k] + 1 + shift).view(
                    t.shape
                )
            if isinstance(v, (list, tuple)):
                return type(v)(coded(x, shift) for x in v)
            return v

        def real(v):
            if isinstance(v, (list, tuple)):
                return [real(x) for x in v]
            return self.constant(v) if isinstance(v, fx.Node) else v

        for key, v in bound.items():
            if key != index_key:
                collect(v)

        def run(shift):
            args = {k: real(v) if k == index_key else coded(v, shift) for k, v in bound.items()}
            with torch.no_grad():
                return call_bound(node.target, args).reshape(-1)

        first, second = run(0.0), run(float(total + 1))
        moved = second - first == total + 1
        if not bool((moved | (second == first)).all()):
            raise Unsupported(f"{name} is not a move")
        source = (first[moved] - 1).round().long().numpy()
        out_n = first.numel()
        if len(inputs) == 1 and out_n == total and np.array_equal(source, np.arange(total)):
            self.where[node] = self.place(inputs[0])  # the same values in the same order
            return
        array, at = self.where[node] = self.buffer(out_n)
        positions = np.nonzero(moved.numpy())[0]
        for k, v in enumerate(inputs):
            start, stop = offsets[k], offsets[k] + self.tensor(v).numel()
            mine = (source >= start) & (source < stop)
            if not mine.any():
                continue
            src_array, src_at = self.place(v)
            count = int(mine.sum())
            target = self.index_expr(array, at, positions[mine], "j")
            value = self.index_expr(src_array, src_at, source[mine] - start, "j")
            self.lines.append(f"for (int j = 0; j < {count}; j++) {target} = {value};")
        fills = first[~moved].numpy()
        for fill in np.unique(fills):
            where = np.nonzero(~moved.numpy())[0][fills == fill]
            target = self.index_expr(array, at, where, "j")
            self.lines.append(f"for (int j = 0; j < {where.size}; j++) {target} = {literal(fill)};")

    def reduced(self, node, name, bound, shape):
        x, dims = bound["self"], bound.get("dim")
        src = self.tensor(x)
        dims = [dims] if isinstance(dims, int) else list(dims or [])
        dims = [d % max(src.dim(), 1) for d in dims] or list(range(src.dim()))
        kept = [1 if d in dims else s for d, s in enumerate(src.shape)]
        n, m = math.prod(shape), src.numel()
        if math.prod(kept) != n:
            raise Unsupported(f"{name}: a shape it does not keep")
        groups = torch.arange(n).view(kept).broadcast_to(src.shape)
        array, at = self.where[node] = self.buffer(n)
        xs = self.ref(x, src.shape, "j")
        into = self.index_expr(array, at, groups, "j")
        if name == "logsumexp.default":
            _, top = self.buffer(n)
            most = self.index_expr("W", top, groups, "j")
            self.lines += [
                f"for (int i = 0; i < {n}; i++) W[{top} + i] = -INFINITY;",
                f"for (int j = 0; j < {m}; j++) {most} = bigger({xs}, {most});",
                f"for (int i = 0; i < {n}; i++) {{ {array}[{at} + i] = 0.0; "
                f"if (isinf(W[{top} + i])) W[{top} + i] = 0.0; }}",
                f"for (int j = 0; j < {m}; j++) {into} += exp({xs} - {most});",
                f"for (int i = 0; i < {n}; i++) {array}[{at} + i] = "
                f"log({array}[{at} + i]) + W[{top} + i];",
            ]
            return
        start, step = REDUCTIONS[name]
        flat, b = groups.reshape(-1), m // max(n, 1)
        if torch.equal(flat, torch.arange(n).repeat_interleave(b)):  # the last dims, in a row
            xs = self.ref(x, src.shape, f"(i * {b} + j)")
            simd = '_Pragma("omp simd reduction(+:s)") ' if step.startswith("{a} +=") else ""
            self.lines.append(
                f"for (int i = 0; i < {n}; i++) {{ T s = {start}; {simd}for (int j = 0; j < {b}; "
                f"j++) {step.format(a='s', x=xs)} {array}[{at} + i] = s; }}"
            )
        elif torch.equal(flat, torch.arange(n).repeat(b)):  # the first dims: each i in turn
            xs, into = self.ref(x, src.shape, f"(j * {n} + i)"), f"{array}[{at} + i]"
            self.lines.append(f"for (int i = 0; i < {n}; i++) {into} = {start};")
            self.lines.append(
                f"for (int j = 0; j < {b}; j++) {{ {SIMD}for (int i = 0; i < {n}; i++) "
                f"{step.format(a=into, x=xs)} }}"
            )
        else:
            self.lines.append(f"for (int i = 0; i < {n}; i++) {array}[{at} + i] = {start};")
            self.lines.append(f"for (int j = 0; j < {m}; j++) {step.format(a=into, x=xs)}")
        if name.startswith("mean"):
            self.lines.append(
                f"for (int i = 0; i < {n}; i++) {array}[{at} + i] *= {literal(n / m)};"
            )

    def product(self, node, name, bound, shape):
        """mm, mv, bmm, dot, addmm: a sum over the inner dim for each value of the result, in
        the loop order that vectorises: along a row of the right factor (8 columns or more),
        along the rows of a constant left factor kept transposed (one column, a short inner
        dim: X @ beta), else along the inner dim."""
        pair = (bound["mat1"], bound["mat2"]) if name == "addmm.default" else list(bound.values())
        ta, tb = self.tensor(pair[0]), self.tensor(pair[1])
        batch, rows, k = ([1, 1] + list(ta.shape))[-3:]
        cols = tb.shape[-1] if tb.dim() > 1 else 1
        pb, ob = self.place(pair[1])
        array, at = self.where[node] = self.buffer(math.prod(shape))
        out = f"{array}[{at} + (q * {rows} + r) * {cols} + c]"
        right = f"{pb}[{ob} + (q * {k} + l) * {cols} + c]"
        loops = f"for (int q = 0; q < {batch}; q++) for (int r = 0; r < {rows}; r++)"
        if cols == 1 and k <= 64 and pair[0].op == "get_attr":
            at_t = self.stored(ta.detach().reshape(batch, rows, k).transpose(1, 2))
            left = f"K[{at_t} + (q * {k} + l) * {rows} + r]"
            self.lines.append(f"{loops} {{ int c = 0; {out} = 0.0; }}")
            self.lines.append(
                f"for (int q = 0; q < {batch}; q++) for (int l = 0; l < {k}; l++) {{ int c = 0; "
                f"T b = {right}; {SIMD}for (int r = 0; r < {rows}; r++) {out} += {left} * b; }}"
            )
        else:
            pa, oa = self.place(pair[0])
            left = f"{pa}[{oa} + (q * {rows} + r) * {k} + l]"
            if cols >= 8:
                self.lines.append(
                    f"{loops} {{ for (int c = 0; c < {cols}; c++) {out} = 0.0; for (int l = 0; "
                    f"l < {k}; l++) {{ T a = {left}; {SIMD}for (int c = 0; c < {cols}; c++) "
                    f"{out} += a * {right}; }} }}"
                )
            else:
                self.lines.append(
                    f"{loops} for (int c = 0; c < {cols}; c++) {{ T s = 0.0; "
                    f'_Pragma("omp simd reduction(+:s)") for (int l = 0; l < {k}; l++) '
                    f"s += {left} * {right}; {out} = s; }}"
                )
        if name == "addmm.default":
            bias = self.ref(bound["self"], shape, f"(r * {cols} + c)")
            scaled = f"{literal(bound['beta'])} * {bias} + {literal(bound['alpha'])} * {out}"
            self.lines.append(f"{loops} for (int c = 0; c < {cols}; c++) {out} = {scaled};")

    def cumulative(self, node, name, bound, shape):
        x = bound["self"]
        n = math.prod(shape)
        codes = torch.arange(n).view(shape)
        dim = bound["dim"] % max(len(shape), 1)
        before = codes.roll(1, dim)
        first = torch.zeros(shape, dtype=torch.bool)
        first.select(dim, 0).fill_(True)
        array, at = self.where[node] = self.buffer(n)
        prev = self.index_expr(array, at, torch.where(first, codes, before), "i")
        flags = self.table(first.long())
        op, unit = ("*", "1.0") if name == "cumprod.default" else ("+", "0.0")
        self.lines.append(
            f"for (int i = 0; i < {n}; i++) {array}[{at} + i] = {self.ref(x, shape)} {op} "
            f"(I[{flags} + i] ? {unit} : {prev});"
        )

    def scattered(self, node, name, bound, shape):
        """index_put, index_add, scatter_add: the buffer copied, then values written (or
        added) at the positions the constant indices pick."""
        base = bound["self"]
        n = math.prod(shape)
        codes = torch.arange(n).view(shape)
        if name == "index_put.default":
            indices = [None if i is None else self.constant(i) for i in bound["indices"]]
            targets = torch.ops.aten.index.Tensor(codes, indices)
            values, add, scale = bound["values"], bound["accumulate"], "1.0"
        elif name == "index_add.default":
            targets = codes.index_select(bound["dim"], self.constant(bound["index"]))
            values, add, scale = bound["source"], True, literal(bound["alpha"])
        else:  # scatter_add, where the index has the source's shape
            targets = codes.gather(bound["dim"], self.constant(bound["index"]))
            values, add, scale = bound["src"], True, "1.0"
            if targets.shape != self.tensor(values).shape:
                raise Unsupported("scatter_add of part of its source")
        array, at = self.where[node] = self.buffer(n)
        self.lines.append(
            f"for (int i = 0; i < {n}; i++) {array}[{at} + i] = {self.ref(base, shape)};"
        )
        m = targets.numel()
        into = self.index_expr(array, at, targets, "j")
        value = self.ref(values, targets.shape, "j")
        self.lines.append(
            f"for (int j = 0; j < {m}; j++) {into} {'+=' if add else '='} {scale} * {value};"
        )

    def write(self):
        """Every operation of the graph written out (`lines`), once."""
        outputs = None
        for node in self.module.graph.nodes:
            if node.op == "placeholder":
                self.where[node] = ("z", 0)
            elif node.op == "get_attr":
                continue  # placed where it is read
            elif node.op == "output":
                outputs = node.args[0]
            else:
                self.emit(node)
        grad, value = outputs
        d = math.prod(self.tensor(grad).shape) if isinstance(grad, fx.Node) else 0
        self.lines.append(f"for (int i = 0; i < {d}; i++) G[i] = {self.ref(grad, (d,))};")
        self.lines.append(f"V[0] = {self.ref(value, (), '0')};")
        return self


def c_compiled(module: fx.GraphModule, z: torch.Tensor) -> CGraph:
    """`module` (from `inference.tracing.aten_graph`) at z's shape and dtype as a `CGraph`;
    raises `Unsupported` (why) where it cannot be written out or compiled."""
    if z.device.type != "cpu" or z.dtype not in (torch.float32, torch.float64):
        raise Unsupported("z must be a float tensor on the CPU")
    writer = _Writer(module, z.detach()).write()
    library = built(c_files(writer.lines, _kind(z.dtype)))
    return CGraph(library, writer.constants, writer.tables, writer.size, z.numel(), z.dtype)


def c_source(module: fx.GraphModule, z: torch.Tensor) -> str:
    """The C text `c_compiled` compiles for `module` at z (to read), in one file."""
    return c_files(_Writer(module, z.detach()).write().lines, _kind(z.dtype), math.inf)[0]


def _kind(dtype) -> str:
    return "double" if dtype == torch.float64 else "float"


__all__ = ["MAX_VALUES", "c_compiled", "c_source"]
