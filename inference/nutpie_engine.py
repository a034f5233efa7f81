"""NUTS by nutpie (PyMC's sampler, written in Rust; ``pip install nutpie``): the engine
`inference.nuts` uses wherever nutpie is installed.

nutpie samples any density it can call back into: here the same whitened potential the Pyro
engine runs (unconstrained, whitened by the Laplace approximation where that holds, jit-traced
where proven equal, discrete latents summed out), through `nutpie.compiled_pyfunc.from_pyfunc`:
one callback per gradient (a flat float64 vector in; log density and gradient out). nutpie
brings its own warm-up (a diagonal mass matrix adapted from draws and gradients; low rank on
request) and builds its trees in Rust; each chain is a nutpie run of its own, in a forked
process where a core is free for it (`inference.chains`), unless ``cores`` asks for nutpie's
threads. What comes back is
put in the Pyro engine's form: draws of z per chain and the same sample statistics under
ArviZ's names.
"""

from __future__ import annotations

import importlib.util
import math
import threading

import numpy as np
import torch

from inference.chains import each_chain

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


def choose(engine: str | None, low_rank: bool, cores: int | None, warmup_steps: int = 1) -> str:
    """The engine a NUTS fit runs on: nutpie where it is installed (``engine=None``), else
    Pyro's, and Pyro's for a run with no warm-up (nutpie adapts its step size in warm-up and
    cannot start without one: its Rust core panics); a ValueError for an unknown engine,
    nutpie asked for but missing or asked for with no warm-up, or nutpie's own options
    (``low_rank``, ``cores``) given to the Pyro engine."""
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
    nutpie_options = low_rank or cores is not None
    if warmup_steps == 0 and (engine == "nutpie" or (engine is None and nutpie_options)):
        raise ValueError(
            "warmup_steps=0: nutpie adapts its step size and mass matrix during warm-up and "
            "cannot sample without one; give warmup_steps >= 1, or engine='pyro' (NUTS at "
            "its initial step size, in coordinates whitened by the Laplace approximation)"
        )
    automatic = DEFAULT or ("nutpie" if installed() and warmup_steps else "pyro")
    chosen = engine or ("pyro" if warmup_steps == 0 else automatic)
    if chosen == "pyro" and nutpie_options:
        raise ValueError(
            "low_rank and cores are options of the nutpie engine (its low-rank "
            "mass matrix, its chains in threads); the pyro engine has neither"
        )
    return chosen


def sample_chains(
    w,
    starts,
    seeds: list[int],
    num_samples: int,
    warmup_steps: int,
    target_accept_prob: float,
    max_tree_depth: int,
    progress_bar: bool,
    low_rank: bool = False,
    cores: int | None = None,
    procs: int = 1,
):
    """(draws of z (chains, num_samples, dim), statistics name -> (chains, num_samples)) of
    the whitened potential `w` (`inference.laplace.Whitened`) by nutpie. `starts(seed)` gives
    a chain's first z (a numpy vector) from the seed nutpie hands to that chain.

    Each chain is a nutpie run of its own from its own seed (`seeds[c]`), in `procs` forked
    processes (`inference.chains`) or one after the other: the same draws either way. With
    ``cores``, one nutpie run samples all the chains in nutpie's threads, `seeds[0]` its
    seed: evaluations then take turns where the potential runs Python (`EVALUATING`), and a
    traced one holds Python's lock in TorchScript's Static Runtime; processes share neither
    (HMM model_1, 2 x (500 + 500), seed 0: sampling 11.8 s in two processes, 29.5 s in
    turn)."""
    options = dict(
        num_samples=num_samples,
        warmup_steps=warmup_steps,
        target_accept_prob=target_accept_prob,
        max_tree_depth=max_tree_depth,
        low_rank=low_rank,
    )
    if cores is not None:
        zs, stats = _sample(w, starts, seeds[0], starts.num_chains, cores, progress_bar, options)
    else:
        show = progress_bar and procs == 1
        done = each_chain(
            lambda c: _sample(w, starts, seeds[c], 1, 1, show, options), starts.num_chains, procs
        )
        zs = torch.cat([z for z, _ in done])
        stats = {k: torch.cat([st[k] for _, st in done]) for k in done[0][1]}
    return zs.to(device=w.mu.device, dtype=w.mu.dtype), stats


def _sample(w, starts, seed: int, chains: int, cores: int, progress_bar: bool, options: dict):
    """One nutpie run of `chains` chains in `cores` threads: (draws of z (chains, draws,
    dim), statistics (chains, draws)), on the CPU in float64."""
    import pyarrow
    from nutpie import sample
    from nutpie.compiled_pyfunc import from_pyfunc

    dim = w.dim
    # A thread of nutpie's starts with torch's default intra-op threads: set to the caller's
    # (one, for small data: a logistic regression on 2,000 rows took 790 us a gradient on
    # two, 165 us); evaluations one at a time (`EVALUATING`)
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
    trace = sample(
        model,
        draws=options["num_samples"],
        tune=options["warmup_steps"],
        chains=chains,
        cores=cores,
        seed=seed % 2**32,
        progress_bar=progress_bar,
        return_raw_trace=True,
        target_accept=options["target_accept_prob"],
        maxdepth=options["max_tree_depth"],
        low_rank_modified_mass_matrix=options["low_rank"],
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
    return torch.stack(zs), out


def _chain(stats) -> int:
    column = stats.column("chain")
    return int(column[0].as_py()) if len(column) else 0


# One evaluation of a program at a time in a process, a chain's start included: an eager
# potential runs Python that is not thread-safe (Pyro's handler stack is global; a built-in
# model reads its values from one attribute), and two at once left a model holding another
# thread's values. nutpie's threads (``cores``) then take turns; processes do not.
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
