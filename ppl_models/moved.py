"""The import paths of modules that moved into the layered folders keep working.

`import ppl_models.nade` or `from inference.arviz_io import loo` (paths from before the
models/, programs/, app/ and evaluation/ folders) give the module at its new place: the same
module object, not a copy. New code imports the new paths.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    **{
        f"ppl_models.{m}": f"ppl_models.models.{m}"
        for m in (
            "base",
            "full_joint",
            "independent",
            "markov",
            "linear_gaussian",
            "autoregressive",
            "nade",
            "conjugate",
            "stationary",
        )
    },
    **{
        f"ppl_models.{m}": f"ppl_models.programs.{m}"
        for m in (
            "program",
            "roles",
            "arguments",
            "running",
            "densities",
            "montecarlo",
            "generation",
            "factorization",
        )
    },
    **{f"ppl_models.{m}": f"ppl_models.app.{m}" for m in ("cli", "suites")},
    **{
        f"inference.{m}": f"inference.evaluation.{m}"
        for m in ("arviz_io", "arviz_generations", "psis", "compare", "timeseries", "plots")
    },
    "inference.progress": "ppl_models.runtime",
}


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path and loads it as the module at its new path."""

    def find_spec(self, name, path=None, target=None):
        if name not in MOVED:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        spec.loader_state = module.__spec__  # the import system overwrites it; put back below
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    """Add the finder once (`ppl_models` and `inference` do on import), and enter the old
    paths of modules already imported: `import inference.compare` then finds the module
    without rebinding `inference.compare`, the function of the same name."""
    if not any(isinstance(f, OldPaths) for f in sys.meta_path):
        sys.meta_path.append(OldPaths())
    for old, new in MOVED.items():
        if new in sys.modules:
            module = sys.modules.setdefault(old, sys.modules[new])
            parent, _, child = old.rpartition(".")
            if parent in sys.modules and not hasattr(sys.modules[parent], child):
                setattr(sys.modules[parent], child, module)
