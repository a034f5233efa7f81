"""Traced potentials: a log density and its gradient run as TorchScript graphs (or compiled by
TorchInductor), kept only where they give the eager program's numbers.

Two ways, the first that works. **Fused**: `torch.fx`'s `make_fx` records the aten operations of
the value and its gradient together (autograd's backward pass written out as forward
operations), and `torch.jit.trace` + `torch.jit.freeze` run that graph with no
autograd bookkeeping, by TorchScript's Static Runtime where it gives the same numbers
(`_static_runtime`: 1.2-1.9x TorchScript's own interpreter); a gradient is then one call of
one graph. Measured on non-centred eight
schools (2 cores, one thread): 83 us a value and gradient against 254 us for the traced
potential and autograd's backward pass (`benchmarks/bench_programs.py` has the effect on
NUTS). **Traced**: `torch.jit.trace` of the value alone, its gradient by autograd. Either is
checked against the eager function (value and gradient to 1e-9; float32: 100 eps) at the point
given and a second one: a program whose Python depends on the parameter values (a branch on a
value, a size read from it) is traced as one path and fails the check; it runs eagerly.

Before either, the graph is rewritten (`inference.graph_rewrites`: constants folded,
identities removed, repeats merged; eight schools 152 -> 88 nodes).

**Compiled**: where a run is long enough to pay for it and the data are small, the same aten
graph is written out as one C function and compiled by the system's C compiler
(`inference.c_graph`; `c_pays`: the gradients the caller expects against a compile time of
0.1-1 s estimated from the graph's size), checked the same way; where that backend cannot
write the graph out (`compile_pays`) it is compiled by TorchInductor into C++ loops
(`compile_fx`, CPU only), checked the same way, else TorchScript runs it. TorchScript's
interpreter costs about 0.7-0.9 us an operation whatever the tensors' size, which is most of a
small model's gradient; a value and gradient (one thread), TorchScript -> C: eight schools
59 -> 6 us, a GMM 125 -> 6 us, the hierarchical AR(1) over 8 x 100 values 240 -> 52 us, HMM
model_1 on 8 songs 630 -> 17 us (TorchInductor: 1,258 -> 152 us after 12-21 s of compiling,
C 0.9-1.2 s), a logistic regression on 2,000 x 10 56 -> 23 us. The decision reads the graph's
size and the run's length, never a clock, so a seed gives the same draws every time.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from inference.c_graph import c_compiled
from inference.c_library import CGraph, Unsupported
from inference.graph_rewrites import simplified
from ppl_models.pyro_internals import static_runtime

UNOPTIMIZED_NODES = 2_000  # a traced graph larger than this runs unoptimized (`_unoptimized`)
# the largest fused graph built: AR(1) with obs_mask over 120 steps, 12,700 nodes, builds in 13 s
# (then 5.5 ms a gradient against 26 ms traced); HMM model_1 on 8 songs: 2.3 s, 1.3 ms
# against 5.1 ms. The fused graph has no autograd, so TorchScript's optimizer stays quick
FUSED_NODES = 20_000
# TorchInductor (CPU): what a compiled graph saves a gradient, per node of the (rewritten)
# fused graph, against TorchScript (eight schools 88 nodes 75 -> 16 us, the hierarchical AR(1)
# 195 nodes 160 -> 26 us, a GMM 208 nodes 204 -> 31 us, HMM model_1 1,432 nodes 1,258 -> 152
# us: 0.67-0.83 us), and its compile time in seconds from empty caches in a process that has
# compiled before, about COMPILE_BASE + COMPILE_PER_NODE a node (1.5, 2.4, 4.8 and 21 s); none
# above COMPILE_NODES nodes, nor where the data hold more than COMPILE_VALUES values: there
# the time goes into operations on many values, which ATen's kernels (BLAS for a matrix-vector
# product) already run well, and the compiled loops ran slower (a logistic regression on 2,000
# x 10: 72 -> 127 us). A new process's first compile also probes the CPU (about 9 s, cached
# on disk for the next process).
SAVED_PER_NODE = 0.65e-6
COMPILE_BASE, COMPILE_PER_NODE = 1.2, 0.013
COMPILE_NODES = 5_000
COMPILE_VALUES = 4_096
# compiled to C (`inference.c_graph`, -O1): what it saves a gradient per node against
# TorchScript's Static Runtime (a value and gradient, one thread: eight schools 95 nodes 59 -> 6
# us, a GMM 171 nodes 125 -> 6 us, the hierarchical AR(1) 321 nodes 240 -> 89 us, HMM model_1
# 709 nodes 630 -> 30 us; vectorised since, 52 and 17 us), and its compile time, about C_BASE +
# C_PER_NODE a node (0.1, 0.18, 0.35, 1.0 s; vectorised and in parts, HMM model_1 0.9-1.2 s);
# where the data hold at most C_VALUES values (a logistic regression on 2,000 x 10: 56 -> 23
# us on one thread, 66 -> 23 us on two; on 20,000 x 10 and two threads ATen's kernels are as
# fast, 285 against 292 us, and on 100,000 x 20 faster)
C_SAVED_PER_NODE = 0.5e-6
C_BASE, C_PER_NODE = 0.05, 1.5e-3
C_VALUES = 1 << 16
AUTO_C = True  # compile to C where `c_pays` (before TorchInductor's rule is asked)
AUTO_COMPILE = True  # compile where `compile_pays`; the test suite turns it off (seconds a test)
STATIC = "by TorchScript's Static Runtime"  # what a fit's note says where that runs the graph


class Fused:
    """A function of a flat z whose value and gradient come from one traced graph: calling it
    gives the value, differentiable in z (the gradient computed with it is handed to
    autograd); `value_and_grad(z)` gives both without autograd. z is cast to the dtype the
    graph was traced in (a float32 program under a float64 sampler) and the gradient back."""

    def __init__(self, graph, dtype: torch.dtype, module=None):
        # module: the aten graph it runs, for `compiled` to compile later
        self.graph, self.dtype, self.module = graph, dtype, module

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return _FromGraph.apply(z, self)

    @torch.no_grad()
    def value_and_grad(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grad, value = self.graph(z.to(self.dtype).contiguous())
        return value, grad.to(z.dtype)

    @torch.no_grad()
    def numpy_value_and_grad(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """`value_and_grad` of a float64 numpy x for a graph on the CPU, as (float, a new
        float64 array): the fewest conversions a sampler's callback can make (nutpie's)."""
        if isinstance(self.graph, CGraph):
            return self.graph.numpy_value_and_grad(x)
        grad, value = self.graph(torch.from_numpy(x).to(self.dtype).contiguous())
        # a copy: the gradient may be one of the graph's constants (a potential linear in z)
        return float(value), grad.numpy().astype(np.float64)


class _FromGraph(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, fused):
        value, grad = fused.value_and_grad(z.detach())
        # the Static Runtime's outputs are inference tensors, which autograd cannot keep
        ctx.save_for_backward(grad.clone())
        return value.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, upstream):
        (grad,) = ctx.saved_tensors
        return upstream.to(grad.dtype) * grad, None


def fused_trace(fn, z: torch.Tensor, what: str = "potential", gradients: float = 0):
    """(`Fused` for fn at z, how), or (None, why) where the fused graph cannot be built, is
    larger than FUSED_NODES or differs from fn. `gradients`: how many evaluations the caller
    expects; where `compile_pays` for them (``math.inf``: always), the graph is compiled by
    TorchInductor, else (or where that fails) run by TorchScript, and `compiled` can compile
    it once the caller knows how many it expects."""
    z = z.detach()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        try:
            module = aten_graph(fn, z)
            if len(module.graph.nodes) > FUSED_NODES:
                return None, f"the fused {what} graph has more than {FUSED_NODES} nodes"
            out, why = _compiled(module, fn, z, gradients, what)
            if out is not None:
                return out, why
            graph = torch.jit.freeze(torch.jit.trace(module, (z,), check_trace=False).eval())
            runtime = _static_runtime(graph, z)
            static = None if runtime is None else Fused(runtime, z.dtype, module)
            if static is not None and _checked(fn, static, z, again=True):
                return static, f"jit-compiled {what} and gradient, fused, {STATIC}{why}"
            out = Fused(graph, z.dtype, module)
            if not all(_same(fn, out, probe) for probe in _probes(z)):
                return None, f"the fused {what} differs from the program"
        except Exception as e:  # any failure to build it means: the next way
            return None, f"the fused {what} cannot be built: {type(e).__name__}"
    return out, f"jit-compiled {what} and gradient, fused{why}"


def compiled(fused, fn, z: torch.Tensor, gradients: float, what: str = "potential"):
    """`fused` (from `fused_trace`, run by TorchScript) compiled by TorchInductor where
    `compile_pays` for `gradients` evaluations and the result gives fn's numbers at z:
    (`Fused`, how); else (None, "") where it does not pay, (None, " (why)") where the compile
    failed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        return _compiled(fused.module, fn, z.detach().to(fused.dtype), gradients, what)


def _compiled(module, fn, z: torch.Tensor, gradients: float, what: str):
    """(`Fused` compiled to C, how) where `c_pays` for `gradients` and the data are small, else
    (`Fused` compiled by TorchInductor, how) where that was asked (``gradients=math.inf``:
    jit_compile="inductor") or `compile_pays` for them, the result checked either way; else
    (None, "") or (None, " (why it failed)")."""
    nodes = len(module.graph.nodes)
    asked = gradients == math.inf
    data = _largest_constant(module)
    not_c = ""  # why it was not compiled to C, where that was tried
    c_data = data <= C_VALUES
    if not asked and AUTO_C and gradients > 0 and c_data and c_pays(nodes, gradients, z.device):
        out, reason = _in_c(module, z)
        if out is not None and _checked(fn, out, z, again=True):
            return out, f"{what} and gradient compiled to C ({nodes} nodes)"
        not_c = f" (not compiled to C: {reason or 'it differs from the program'})"
    automatic = AUTO_COMPILE and gradients > 0 and data <= COMPILE_VALUES
    if not ((asked or automatic) and compile_pays(nodes, gradients, z.device)):
        return None, not_c
    out, why = _inductor(module, z)
    if out is not None and _checked(fn, out, z):
        return out, f"{what} and gradient compiled by TorchInductor ({nodes} nodes)"
    return None, f" ({why or 'the compiled graph differs from the program'})"


def _in_c(module, z: torch.Tensor):
    """(`Fused` running `module` compiled to C by `inference.c_graph`, "") or (None, why)."""
    try:
        return Fused(c_compiled(module, z), z.dtype, module), ""
    except Unsupported as e:
        return None, str(e)
    except Exception as e:  # a failure of the backend itself: the graph runs as before
        return None, f"{type(e).__name__} while writing it out"


def c_pays(nodes: int, gradients: float, device: torch.device) -> bool:
    """Whether compiling a fused graph of `nodes` nodes to C (`inference.c_graph`) saves more
    time over `gradients` evaluations than it costs, both from the size alone: C_SAVED_PER_NODE
    a gradient, C_BASE + C_PER_NODE a node to compile; only on the CPU."""
    if device.type != "cpu":
        return False
    return gradients * C_SAVED_PER_NODE * nodes > C_BASE + C_PER_NODE * nodes


def _static_runtime(graph, z: torch.Tensor):
    """The frozen TorchScript `graph` run by TorchScript's Static Runtime (a CPU interpreter
    for graphs without autograd: memory planned once, each operation's output written in
    place), or None where it cannot run it (another device, a torch without it, an operation
    it refuses). The same aten operations; measured against TorchScript's own interpreter, a
    value and gradient (one thread, this machine): eight schools 140 -> 94 us, a logistic
    regression on 2,000 x 10 121 -> 91 us, a GMM 205-257 -> 136-141 us, HMM model_1
    1,150-1,360 -> 810-1,000 us. Kept only where it gives the program's numbers at the
    probes, a second call at the first probe included (memory reused between calls)."""
    if z.device.type != "cpu":
        return None
    try:
        runtime = static_runtime(graph)
        runtime(z)  # the first call plans the memory
    except Exception:
        return None
    return runtime


def compile_pays(nodes: int, gradients: float, device: torch.device) -> bool:
    """Whether compiling a fused graph of `nodes` nodes saves more time over `gradients`
    evaluations than it costs (both estimated from the size alone: SAVED_PER_NODE,
    COMPILE_BASE, COMPILE_PER_NODE); only on the CPU and up to COMPILE_NODES nodes."""
    if device.type != "cpu" or nodes > COMPILE_NODES:
        return False
    return gradients * SAVED_PER_NODE * nodes > COMPILE_BASE + COMPILE_PER_NODE * nodes


def aten_graph(fn, z: torch.Tensor):
    """The `torch.fx` graph of aten operations computing (gradient, value) of fn at z, with
    no dead code (a value read into Python and never used, such as the maximum Pyro's
    enumeration reads, would stop a compiler)."""
    from torch._guards import TracingContext, tracing
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    # a value read into Python (a length, a constant) is baked in, as jit.trace does; the
    # check of the result catches one that depends on z. make_fx describes each operation's
    # output by a fake tensor, made in a fresh FakeTensorMode per operation unless a tracing
    # context holds one (each mode's set-up records a stack trace): one mode for the whole
    # recording, the same graph, HMM model_1's 1,651 operations recorded in 1.4 s, not 2.5 s
    def recorded():
        with tracing(TracingContext(FakeTensorMode(allow_fallback_kernels=True))):
            module = make_fx(_grad_and_value(fn), _error_on_data_dependent_ops=False)(z)
        for node in list(module.graph.nodes):
            if str(node.target) == "aten._local_scalar_dense.default" and not node.users:
                module.graph.erase_node(node)  # a .item() whose value went into Python
        module.graph.eliminate_dead_code()
        return module  # its code regenerated by `simplified`, or below

    try:
        return simplified(recorded(), z)
    except Exception:  # an operation the rewrites do not know: the graph as recorded
        module = recorded()
        module.recompile()
        return module


def _largest_constant(module) -> int:
    """The number of values in the graph's largest constant (the data, mostly)."""
    sizes = [
        getattr(module, str(n.target)).numel() for n in module.graph.nodes if n.op == "get_attr"
    ]
    return max(sizes, default=0)


def _checked(fn, compiled, z: torch.Tensor, again: bool = False) -> bool:
    """The compiled graph gives fn's numbers at the probes (an error there: it does not);
    `again`: at the first probe once more after the second."""
    probes = _probes(z)
    try:
        return all(_same(fn, compiled, probe) for probe in probes + probes[:1] * again)
    except Exception:
        return False


def _inductor(module, z: torch.Tensor):
    """(`Fused` running `module` compiled by TorchInductor, "") or (None, why it failed): no
    C++ compiler, an operation it cannot lower. Compiled in this process, one thread."""
    try:
        import torch._inductor.config as config
        from torch._inductor.compile_fx import compile_fx

        # size_asserts off: each call checked the shape and strides of every input (the graph's
        # constants too), 6.6 of 15.6 us a gradient on eight schools; z is always contiguous
        with config.patch(compile_threads=1, size_asserts=False), torch.no_grad():
            runner = compile_fx(module, [z])
            runner(z)
    except Exception as e:
        return None, f"TorchInductor could not compile it: {type(e).__name__}"
    return Fused(runner, z.dtype, module), ""


def _grad_and_value(fn):
    """z -> (gradient, value) of fn by autograd: traced by make_fx, its backward pass is
    recorded as operations too (custom autograd Functions included, such as those of Pyro's
    enumeration, which torch.func's transforms refuse)."""

    def both(z):
        with torch.enable_grad():
            leaf = z.detach().requires_grad_(True)
            value = fn(leaf)
            (grad,) = torch.autograd.grad(value, leaf)
        return grad, value.detach()

    return both


def checked_trace(fn, z: torch.Tensor, what: str = "function"):
    """(fn traced by `torch.jit.trace` at z, "jit-compiled {what}"), kept only where it gives
    fn's value and gradient (to 1e-9; float32: 100 eps) at z and at a second point; else
    (None, why): a program whose Python depends on the parameter values, or that cannot be
    traced, runs eagerly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        try:
            traced = torch.jit.trace(fn, (z.detach().requires_grad_(),), check_trace=False)
            if len(list(traced.graph.nodes())) > UNOPTIMIZED_NODES:
                traced = _unoptimized(traced)
            if not all(_same(fn, traced, probe) for probe in _probes(z)):
                return None, f"eager (the traced {what} differs from the program)"
        except Exception as e:  # any failure to trace means: run eagerly
            return None, f"eager (the program cannot be traced: {type(e).__name__})"
    return traced, f"jit-compiled {what}"


def _unoptimized(traced):
    """A large traced graph run without TorchScript's graph optimizer: its first run
    optimizes for a time that grows faster than the graph (an AR(1) over 120 steps with obs_mask,
    11,000 nodes: 181 s; unoptimized 0.1 s, then 26 ms a gradient against 60 ms eager)."""

    def run(z):
        with torch.jit.optimized_execution(False):
            return traced(z)

    return run


def _same(eager, traced, z) -> bool:
    """Equal potential and gradient of the eager and traced potentials at z (finite)."""
    a, b = z.clone().requires_grad_(True), z.clone().requires_grad_(True)
    pa, pb = eager(a), traced(b)
    (ga,) = torch.autograd.grad(pa, a)
    (gb,) = torch.autograd.grad(pb, b)
    if not (torch.isfinite(pa) and torch.isfinite(ga).all()):
        return True  # outside the support: nothing to compare here
    # 1e-9 in float64; a float32 program (HMM model_1 on float32 sequences) is held to its own
    # precision, 100 eps (its traced gradient differs from the eager one by 1.5e-7 relative)
    tol = max(1e-9, 100 * torch.finfo(pa.dtype).eps)
    return bool(torch.isclose(pa, pb, rtol=tol, atol=tol)) and bool(
        torch.allclose(ga, gb, rtol=tol, atol=tol)
    )


def _probes(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """z and a second point 0.3 standard-normal steps away (a fixed draw)."""
    g = torch.Generator(device="cpu").manual_seed(1)
    step = torch.randn(z.shape, generator=g, dtype=z.dtype).to(z.device)
    return z.detach(), z.detach() + 0.3 * step


__all__ = [
    "COMPILE_NODES",
    "COMPILE_VALUES",
    "C_VALUES",
    "FUSED_NODES",
    "STATIC",
    "UNOPTIMIZED_NODES",
    "Fused",
    "aten_graph",
    "checked_trace",
    "compile_pays",
    "compiled",
    "fused_trace",
]
