"""NUTS chains in parallel processes (issue 18): the same seed gives the same draws and
statistics whether the chains run in processes or one after the other, warnings raised inside a
chain's process reach the caller, and a fit says how its chains ran."""

import warnings

import pytest
import torch
from nuts_engines import ENGINES, engine_or_skip
from pyro.infer import NUTS

import inference
from inference import chains
from ppl_models import AutoRegressive, datasets

needs_two_cores = pytest.mark.skipif(chains.cores() < 2, reason="one core: chains run in turn")


@needs_two_cores
@pytest.mark.parametrize(
    "engine, threads",
    [(e, False) for e in ENGINES] + [("nutpie", True)],
    ids=[*ENGINES, "nutpie-threads"],
)
def test_the_same_seed_gives_the_same_draws_in_parallel_and_in_turn(monkeypatch, engine, threads):
    """Either engine: chains in processes or one after the other; nutpie's own threads
    (cores=2) or one at a time (cores=1). The same seed, the same draws and statistics."""
    engine_or_skip(engine)
    y = datasets.load("sunspots").train
    run = {}
    for how, n in (("processes", chains.cores()), ("in turn", 1)):
        monkeypatch.setattr(chains, "cores", lambda n=n: n)
        monkeypatch.setattr(chains, "free_cores", lambda n=n: n)  # as on a quiet machine
        run[how] = inference.fit(
            AutoRegressive(2),
            y,
            "nuts",
            num_samples=100,
            warmup_steps=100,
            seed=3,
            progress_bar=False,
            engine=engine,
            **({"cores": min(n, 2)} if threads else {}),
        )
    processes = 1 if threads else 2
    assert run["processes"].info["chain_processes"] == processes
    assert run["in turn"].info["chain_processes"] == 1
    for k, v in run["processes"].draws.items():
        assert torch.equal(v, run["in turn"].draws[k]), k
    for k, v in run["processes"].sample_stats.items():
        assert torch.equal(v, run["in turn"].sample_stats[k]), k
    # each chain draws from its own seed
    phi = run["processes"].draws["phi"]
    assert not torch.equal(phi[0], phi[1])


@needs_two_cores
def test_a_warning_inside_a_chain_process_reaches_the_caller(monkeypatch):
    def potential(params):
        warnings.warn("raised inside the chain", UserWarning, stacklevel=2)
        return 0.5 * (params["z"] ** 2).sum()

    def kernel():
        return NUTS(potential_fn=potential)

    monkeypatch.setattr(chains, "free_cores", lambda: 2.0)  # as on a quiet machine
    z0 = torch.zeros(2, 3, dtype=torch.float64)
    assert chains.processes_for(2, z0.device) == 2
    with pytest.warns(UserWarning, match="raised inside the chain"):
        out = chains.run_chains(
            kernel, z0, [0, 1], num_samples=5, warmup_steps=5, progress_bar=False
        )
    assert [z.shape for z, _ in out] == [(5, 3), (5, 3)]


class Panic(BaseException):
    """As nutpie's Rust core panics (pyo3's PanicException is not an Exception)."""


def test_a_chain_that_panics_or_dies_is_an_error_not_a_wait():
    """A chain process whose function panics (a BaseException, which would end a pool's
    worker and leave the pool waiting) or that is killed (out of memory) raises a
    RuntimeError in the caller, naming the chain or the cause, within seconds; in turn, the
    panic itself reaches the caller."""
    import os
    import signal

    def panics(c):
        if c == 1:
            raise Panic("assertion failed: early_end < num_tune")
        return c

    def killed(c):
        if c == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return c

    with pytest.raises(RuntimeError, match="chain 1 failed: Panic: assertion failed"):
        chains.each_chain(panics, 2, 2)
    with pytest.raises(RuntimeError, match="ended without its draws"):
        chains.each_chain(killed, 2, 2)
    with pytest.raises(Panic):
        chains.each_chain(panics, 2, 1)
    assert chains.each_chain(lambda c: c * 10, 3, 2) == [0, 10, 20]


def test_one_chain_more_chains_than_cores_or_a_busy_machine_run_in_turn(monkeypatch):
    cpu = torch.device("cpu")
    assert chains.processes_for(1, cpu) == 1
    assert chains.processes_for(chains.cores() + 1, cpu) == 1
    monkeypatch.setattr(chains, "cores", lambda: 2)
    monkeypatch.setattr(chains, "free_cores", lambda: 0.5)  # the other core busy
    assert chains.processes_for(2, cpu) == 1


def test_free_cores_are_the_idle_time_now_not_the_load_average(monkeypatch):
    """Half the machine's ticks busy over the window: half its cores free, whatever the
    1-minute load average (which lags by minutes) says; without /proc/stat, that average."""
    readings = iter([(100, 1000), (150, 1100)])
    monkeypatch.setattr(chains, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(chains, "cores", lambda: 4)
    monkeypatch.setattr(chains.os, "getloadavg", lambda: (3.9, 3.9, 3.9))
    assert chains.free_cores(window=0.0) == 2.0

    def missing():
        raise OSError("no /proc/stat")

    monkeypatch.setattr(chains, "_cpu_times", missing)
    assert chains.free_cores(window=0.0) == pytest.approx(4 - 2.9)
