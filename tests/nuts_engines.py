"""The NUTS engines a test runs on: nutpie (skipped where it is not installed) and Pyro's;
"compiled": nutpie with the potential compiled by TorchInductor (skipped without a C++
compiler)."""

import shutil

import pytest

from inference import nutpie_engine

ENGINES = ["nutpie", "pyro"]


def engine_or_skip(engine: str) -> str:
    if engine in ("nutpie", "compiled") and not nutpie_engine.installed():
        pytest.skip("nutpie is not installed (pip install nutpie)")
    return engine


def compiler_or_skip() -> None:
    if not (shutil.which("g++") or shutil.which("c++")):
        pytest.skip("no C++ compiler: TorchInductor cannot compile here")


def engine_options(engine: str) -> dict:
    """fit's options for an engine of ENGINES or "compiled"."""
    engine_or_skip(engine)
    if engine == "compiled":
        compiler_or_skip()
        return {"engine": "nutpie", "jit_compile": "inductor"}
    return {"engine": engine}
