"""The NUTS engines a test runs on: nutpie (skipped where it is not installed) and Pyro's."""

import pytest

from inference import nutpie_engine

ENGINES = ["nutpie", "pyro"]


def engine_or_skip(engine: str) -> str:
    if engine == "nutpie" and not nutpie_engine.installed():
        pytest.skip("nutpie is not installed (pip install nutpie)")
    return engine
