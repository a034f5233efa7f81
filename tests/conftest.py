import warnings

import pytest
import torch
from threadpoolctl import threadpool_limits

import inference.tracing

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


# Small tensors and a 2-core machine: one intra-op thread is several times faster than two
# competing ones (measured 1.4 ms vs 17 ms per NUTS gradient under load), and one BLAS thread
# keeps statsmodels' references quick (ARIMA(9,0,0): 0.4 s vs 12 s under load).
torch.set_num_threads(1)
threadpool_limits(1)

# Compiling a potential (TorchInductor) costs seconds a test where the rule finds a run long
# enough; the tests that compile ask for it (jit_compile="inductor", tests/test_tracing.py,
# the eight-schools fixture) and one checks the rule is wired (AUTO_COMPILE on there).
inference.tracing.AUTO_COMPILE = False
