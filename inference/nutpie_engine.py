"""NUTS by nutpie (PyMC's sampler, written in Rust; ``pip install nutpie``): the engine
`inference.nuts` uses wherever nutpie is installed.

nutpie samples any density it can call back into: here the same whitened potential the Pyro
engine runs (unconstrained, whitened by the Laplace approximation where that holds, jit-traced
where proven equal, discrete latents summed out), through `nutpie.compiled_pyfunc.from_pyfunc`:
one callback per gradient (a flat float64 vector in; log density and gradient out). nutpie
brings its own warm-up (a diagonal mass matrix adapted from draws and gradients; low rank on
request) and builds its trees in Rust; the chains run one after another in one thread unless
``cores`` says otherwise (the density is evaluated one call at a time). What comes back is
put in the Pyro engine's form: draws of z per chain and the same sample statistics under
ArviZ's names.
"""

from __future__ import annotations

import importlib.util
import math
import threading

import numpy as np
import torch

# nutpie's statistic -> ours (ArviZ's names, as the Pyro engine records them)
STATS = {
    "diverging": "diverging",
    "step_size": "step_size",
    "depth": "tree_depth",
    "n_steps": "n_steps",
    "energy": "energy",
    "mean_tree_accept": "acceptance_rate",
    "logp": "lp",
}


ENGINES = ("nutpie", "pyro")
DEFAULT: str | None = None  # engine=None means this, or nutpie where installed (tests set it)


def installed() -> bool:
    return importlib.util.find_spec("nutpie") is not None


def choose(engine: str | None, low_rank: bool, cores: int | None) -> str:
    """The engine a NUTS fit runs on: nutpie where it is installed (``engine=None``), else
    Pyro's; a ValueError for an unknown engine, nutpie asked for but missing, or nutpie's own
    options (``low_rank``, ``cores``) given to the Pyro engine."""
    if engine is not None and engine not in ENGINES:
        raise ValueError(
            f"engine must be one of {', '.join(map(repr, ENGINES))} (or None: nutpie "
            f"where it is installed, else pyro), got {engine!r}"
        )
    if engine == "nutpie" and not installed():
        raise ValueError(
            "engine='nutpie', but nutpie is not installed: pip install nutpie "
            "(or `pip install ppl-models[nutpie]`), or engine='pyro'"
        )
    chosen = engine or DEFAULT or ("nutpie" if installed() else "pyro")
    if chosen == "pyro" and (low_rank or cores is not None):
        raise ValueError(
            "low_rank and cores are options of the nutpie engine (its low-rank "
            "mass matrix, its chains in threads); the pyro engine has neither"
        )
    return chosen


def sample_chains(
    w,
    starts,
    seed: int,
    num_samples: int,
    warmup_steps: int,
    target_accept_prob: float,
    max_tree_depth: int,
    progress_bar: bool,
    low_rank: bool = False,
    cores: int | None = None,
):
    """(draws of z (chains, num_samples, dim), statistics name -> (chains, num_samples)) of
    the whitened potential `w` (`inference.laplace.Whitened`) by nutpie. `starts(seed)` gives
    a chain's first z (a numpy vector) from the seed nutpie hands to that chain."""
    import pyarrow
    from nutpie import sample
    from nutpie.compiled_pyfunc import from_pyfunc

    device, dim = w.mu.device, w.dim
    # One evaluation at a time: an eager potential runs Python that is not thread-safe (Pyro's
    # handler stack is global; a built-in model reads its values from one attribute), and two
    # at once left a model holding another thread's values. Chains in two threads then only
    # wait on each other, so one thread is the default (`cores`): 2 x (300 + 300) on 2 cores,
    # a hierarchical AR(1) 23 s against 41 s in two threads, Markov(64) on the digits 17.5 s
    # against 20.9 s, a logistic regression on 50,000 rows 12.4 s against 18.5 s. A thread of
    # nutpie's starts with torch's default intra-op threads: set to the caller's (one, for
    # small data: a logistic regression on 2,000 rows took 790 us a gradient on two, 165 us).
    threads, local = torch.get_num_threads(), threading.local()

    def make_logp():
        def logp(x):
            if not getattr(local, "threads", False):  # a thread of nutpie's: torch's default
                torch.set_num_threads(threads)
                local.threads = True
            with EVALUATING:
                pe, g = w.numpy_value_and_grad(x)
            if g is None:  # outside the support: nutpie calls it a divergence
                return -math.inf, np.zeros(dim)
            return -pe, np.negative(g, out=g)

        return logp

    def make_expand(seed1, seed2, chain):
        return lambda x: {"z": np.array(x, dtype=np.float64, copy=True)}

    model = from_pyfunc(
        dim,
        make_logp,
        make_expand,
        [np.dtype("float64")],
        [(dim,)],
        ["z"],
        make_initial_point_fn=starts,
    )
    num_chains = starts.num_chains
    trace = sample(
        model,
        draws=num_samples,
        tune=warmup_steps,
        chains=num_chains,
        cores=cores or 1,
        seed=seed,
        progress_bar=progress_bar,
        return_raw_trace=True,
        target_accept=target_accept_prob,
        maxdepth=max_tree_depth,
        low_rank_modified_mass_matrix=low_rank,
    )
    draw_batches, stat_batches = trace.get_arrow_trace()
    zs, stats = [], {k: [] for k in STATS.values()}
    for draws, st in sorted(zip(draw_batches, stat_batches), key=lambda b: _chain(b[1])):
        kept = ~pyarrow.array(st.column("tuning")).to_numpy(zero_copy_only=False)
        col = pyarrow.array(draws.column("z"))
        z = col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), dim)
        zs.append(torch.from_numpy(z[kept].copy()))
        for theirs, ours in STATS.items():
            v = pyarrow.array(st.column(theirs)).to_numpy(zero_copy_only=False)[kept]
            stats[ours].append(torch.from_numpy(np.ascontiguousarray(v)))
    out = {k: torch.stack(v) for k, v in stats.items()}
    out["n_steps"], out["tree_depth"] = out["n_steps"].long(), out["tree_depth"].long()
    return torch.stack(zs).to(device=device, dtype=w.mu.dtype), out


def _chain(stats) -> int:
    column = stats.column("chain")
    return int(column[0].as_py()) if len(column) else 0


# One evaluation of a program at a time (see `sample_chains`), a chain's start included.
EVALUATING = threading.Lock()


class Starts:
    """A chain's start from the seed nutpie gives it: a standard normal draw (times `scale`)
    in the whitened space, or (`draw`: a start drawn from the priors) `draw()` under that seed;
    the same seed always gives the same start, whichever thread asks first, and two chains
    their own (a row picked from a fixed set by the seed gave two chains the same start in
    half the fits)."""

    def __init__(self, num_chains: int, dim: int, scale: float, draw=None):
        self.num_chains, self.dim, self.scale, self.draw = num_chains, dim, scale, draw

    def __call__(self, seed) -> np.ndarray:
        if self.draw is None:
            return np.random.default_rng(int(seed)).standard_normal(self.dim) * self.scale
        with EVALUATING, torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) % 2**63)
            return self.draw().detach().cpu().double().numpy().copy()


__all__ = ["ENGINES", "EVALUATING", "STATS", "Starts", "choose", "installed", "sample_chains"]
