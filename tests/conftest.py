import os
import warnings

import pytest
import torch
from threadpoolctl import threadpool_limits

import inference.tracing
from inference import chains

warnings.filterwarnings("ignore", message="ArviZ is undergoing")


@pytest.fixture(scope="session")
def digits():
    from ppl_models import datasets

    return datasets.load("digits")


@pytest.fixture(scope="session")
def pixels():
    from ppl_models import datasets

    return datasets.load("pixels")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _chains_in_turn(request, monkeypatch):
    """Under pytest-xdist the other worker keeps the second core busy between its idle
    moments, so NUTS chains forked into processes when a core looked free only compete with
    it: tests/test_nutpie.py and tests/test_programs.py with -n 2 took 156 and 157 s so, 140
    and 130 s with the chains in turn (the same draws either way). tests/test_chains.py
    tests the processes themselves."""
    if os.environ.get("PYTEST_XDIST_WORKER") and request.module.__name__ != "test_chains":
        monkeypatch.setattr(chains, "free_cores", lambda window=0.0: chains.cores() - 1.0)


# Small tensors and a 2-core machine: one intra-op thread is several times faster than two
# competing ones (measured 1.4 ms vs 17 ms per NUTS gradient under load), and one BLAS thread
# keeps statsmodels' references quick (ARIMA(9,0,0): 0.4 s vs 12 s under load).
torch.set_num_threads(1)
threadpool_limits(1)

# Compiling a potential (TorchInductor) costs seconds a test where the rule finds a run long
# enough; the tests that compile ask for it (jit_compile="inductor", tests/test_tracing.py,
# the eight-schools fixture) and one checks the rule is wired (AUTO_COMPILE on there).
inference.tracing.AUTO_COMPILE = False
