"""NUTS chains on every free core (issue 18).

`each_chain(chain, num_chains, procs)` runs a function once per chain: in forked processes,
one thread each, where `processes_for` says the chains fit on the machine's free cores (CPU
tensors, 2+ chains, no more chains than cores, cores free by their idle time, not inside a
daemonic worker), else one after the other. `run_chains(make_kernel, z0, seeds, ...)` runs
one `pyro.infer.MCMC` per chain so; `inference.nutpie_engine` one nutpie run per chain.
Each chain draws from its own seed (`seeds[c]`), so the same fit seed gives the same draws
either way; the warnings a chain raises are recorded in its process and raised again here, in
chain order, and each chain's statistics (the kernel's `statistics()`) come back with its
draws.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch
from pyro.infer import MCMC

_JOB: dict = {}  # what forked chain processes read (inherited at fork, never pickled)


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def free_cores(window: float = 0.05) -> float:
    """Cores not busy with other work: the machine's idle time over the next `window` seconds
    (Linux's /proc/stat) in cores, this process's own core counted as free (it sleeps
    meanwhile); elsewhere the cores less the 1-minute load average. That average lags by
    minutes: a run of two busy threads ending 30 s before left it at 1.6, so a quiet machine
    read as one with a single free core and the chains ran in turn."""
    try:
        before = _cpu_times()
        time.sleep(window)
        after = _cpu_times()
        busy, total = (a - b for a, b in zip(after, before, strict=True))
        return cores() * (1.0 - busy / total) if total > 0 else float(cores())
    except (OSError, ValueError):
        pass
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return cores() - max(0.0, load - 1.0)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat
    (user nice system idle iowait irq softirq steal ...; idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def processes_for(num_chains: int, device: torch.device) -> int:
    """How many processes run the chains: one per chain where each has a free core and the
    tensors live on the CPU (a CUDA context does not survive a fork), else 1."""
    if num_chains < 2 or device.type != "cpu" or num_chains > cores():
        return 1
    if free_cores() < num_chains - 0.5:  # a busy machine: processes would only compete
        return 1
    if (
        multiprocessing.current_process().daemon
        or "fork" not in multiprocessing.get_all_start_methods()
    ):
        return 1
    return num_chains


def run_chains(
    make_kernel,
    z0: torch.Tensor,
    seeds: list[int],
    num_samples: int,
    warmup_steps: int,
    progress_bar: bool,
    procs: int | None = None,
):
    """[(draws of z (num_samples, dim), the kernel's statistics)] per chain of Pyro's MCMC,
    from starts z0 (chains, dim), in `procs` processes (default: `processes_for`)."""
    procs = processes_for(len(z0), z0.device) if procs is None else procs
    show = progress_bar and procs == 1

    def chain(c: int):
        kernel = make_kernel()
        mcmc = MCMC(
            kernel,
            num_samples=num_samples,
            warmup_steps=warmup_steps,
            initial_params={"z": z0[c]},
            disable_progbar=not show,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds[c])
            mcmc.run()
        stats = kernel.statistics() if hasattr(kernel, "statistics") else {}
        return mcmc.get_samples()["z"], stats

    return each_chain(chain, len(z0), procs)


def each_chain(chain, num_chains: int, procs: int) -> list:
    """[chain(c) for each chain c]: in `procs` forked processes (one thread each; the
    function is inherited at the fork, never pickled, its results are), else one after the
    other; the warnings a chain raises are recorded where it runs and raised again here, in
    chain order."""
    _JOB["chain"] = chain
    try:
        if procs > 1:  # an executor, not a Pool: a worker that dies (killed, out of memory)
            # breaks it, where a Pool would wait for its result forever
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(procs, mp_context=context) as pool:
                results = list(pool.map(_chain, range(num_chains)))
        else:
            results = [_chain(c) for c in range(num_chains)]
    except BrokenProcessPool:
        raise RuntimeError(
            "a chain's process ended without its draws (killed: out of memory?); "
            "run the chains in turn with fewer at once, or free memory"
        ) from None
    finally:
        _JOB.clear()
    out = []
    for result, caught in results:
        for message, category in caught:
            warnings.warn(message, category, stacklevel=3)
        out.append(result)
    return out


def _chain(c: int):
    child = multiprocessing.parent_process() is not None
    if child:
        torch.set_num_threads(1)  # one thread per chain process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = _JOB["chain"](c)
        except BaseException as e:  # a panic of nutpie's Rust core is not an Exception: in a
            if not child or isinstance(e, Exception):  # worker it would end the process
                raise
            raise RuntimeError(f"chain {c} failed: {type(e).__name__}: {e}") from None
    return result, [(str(w.message), w.category) for w in caught]


__all__ = ["cores", "each_chain", "free_cores", "processes_for", "run_chains"]
