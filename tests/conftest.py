import warnings

import pytest
import torch

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
