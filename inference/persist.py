"""Saved fits are data, never code.

`Fit.save(path)` writes one torch file of tensors, numbers and strings; `load(path)`
(`inference.restore`) reads it with ``weights_only=True`` and then constructs only what the
library knows:

- a built-in model, looked up by name in the explicit registry `ppl_models.MODELS` (nothing
  is imported or called by a name read from the file), its constructor arguments checked
  against the constructor's parameters and plain types, its state checked key by key and shape
  by shape against the constructed model;
- a program of yours only when you pass it: ``load(path, model=my_program)``.

Anything else is a ValueError raised before any constructor runs. Saving is atomic: the file
is written next to its destination under a temporary name, flushed, fsynced and moved into
place with `os.replace`, so an interrupted save leaves the previous file as it was.

Custom priors of a built-in model are saved as data when they are standard Pyro distributions
with tensor arguments (`PRIORS`); otherwise the file says which were not saved, and the loaded
fit evaluates and samples from its draws only (`load` warns once).
"""

from __future__ import annotations

import os
import platform
import tempfile
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

FORMAT = "ppl-models fit"
VERSION = 2  # 1: the first format (class path and config, no versions); read through MODELS
PLAIN = (int, float, str, bool, type(None))
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# distributions a saved prior may be: class -> its constructor arguments (tensors)
PRIORS = {
    "Normal": ("loc", "scale"),
    "LogNormal": ("loc", "scale"),
    "HalfNormal": ("scale",),
    "Cauchy": ("loc", "scale"),
    "HalfCauchy": ("scale",),
    "Laplace": ("loc", "scale"),
    "StudentT": ("df", "loc", "scale"),
    "Beta": ("concentration1", "concentration0"),
    "Gamma": ("concentration", "rate"),
    "InverseGamma": ("concentration", "rate"),
    "Exponential": ("rate",),
    "Uniform": ("low", "high"),
    "Dirichlet": ("concentration",),
    "MultivariateNormal": ("loc", "scale_tril"),
}


def _versions() -> dict:
    import ppl_models

    return {
        "ppl_models": ppl_models.__version__,
        "torch": str(torch.__version__),
        "pyro": str(pyro.__version__),
        "python": platform.python_version(),
    }


# -- saving -------------------------------------------------------------------------------------
def save(fit, path) -> None:
    from inference import distributed

    path = destination(path)
    if not distributed.is_writer():  # data-parallel fits: every rank holds it, rank 0 writes
        return
    program = fit.program
    model = program.model
    builtin = _builtin_name(model)
    blob = {
        "format": FORMAT,
        "version": VERSION,
        "written_by": _versions(),
        "model": (
            {"kind": "builtin", "class": builtin, "config": _plain_config(model.config)}
            if builtin
            else {"kind": "program", "name": program.label}
        ),
        "data_plate": program.data_plate,
        "data_arg": program.args.data_arg,
        "state": model.state_dict() if builtin else {},
        "values": dict(program.values),
        "method": fit.method,
        "data": fit.data,
        "draws": fit.draws,
        "sample_stats": fit.sample_stats,
        "losses": list(fit.losses),
        "info": _plain(fit.info),
        "fit_seconds": float(fit.fit_seconds),
    }
    blob["priors"], blob["priors_not_saved"] = _priors(model) if builtin else ({}, [])
    blob["given"], blob["given_not_saved"] = _given(program.given)
    if fit.index is not None:  # the data's labels (dates of a series), as plain strings
        blob["index"] = [str(v) for v in fit.index]
        blob["index_dates"] = type(fit.index).__name__ == "DatetimeIndex"
    _write_atomic(blob, path)


def destination(path) -> Path:
    if not isinstance(path, str | os.PathLike):
        raise ValueError(f"save needs a file path, got {path!r}")
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a folder; save to a file in it, e.g. {p / 'fit.pt'}")
    if not p.parent.is_dir():
        raise ValueError(
            f"cannot save to {p}: the folder {p.parent} does not exist; create it "
            "first (mkdir -p) or save elsewhere"
        )
    return p


def _write_atomic(blob, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(blob, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with _quiet():
            os.unlink(tmp)
        raise


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], OSError)


def _builtin_name(model) -> str | None:
    from ppl_models import MODELS

    name = type(model).__name__
    return name if MODELS.get(name) is type(model) else None


def _plain_config(config: dict) -> dict:
    out = {}
    for k, v in config.items():
        if isinstance(v, torch.dtype):
            v = str(v).removeprefix("torch.")
        out[k] = list(v) if isinstance(v, tuple) else v
    return out


def _plain(info: dict) -> dict:
    """Keep what torch.load(weights_only=True) can read back."""
    return {
        k: v
        for k, v in info.items()
        if isinstance(v, PLAIN) or (isinstance(v, list) and all(isinstance(i, PLAIN) for i in v))
    }


def _given(given: dict) -> tuple[dict, list[str]]:
    """The program's given arguments that are data (tensors, numbers, strings, lists of
    them), and the names of the others (an argparse namespace, a function): `load` needs
    those back from the caller."""
    saved, lost = {}, []
    for k, v in given.items():
        if (
            torch.is_tensor(v)
            or isinstance(v, PLAIN)
            or (isinstance(v, list) and all(isinstance(i, PLAIN) for i in v))
        ):
            saved[k] = v
        else:
            lost.append(k)
    return saved, lost


def _priors(model) -> tuple[dict, list[str]]:
    """Custom priors of a built-in model as data, and the names of those that cannot be."""
    custom = model.assigned_priors()
    saved, lost = {}, []
    for name, prior in custom.items():
        spec = _prior_spec(prior)
        if spec is None:
            lost.append(name)
        else:
            saved[name] = spec
    return saved, lost


def _prior_spec(prior) -> dict | None:
    if not isinstance(prior, torch.distributions.Distribution):
        return None
    event = 0
    while isinstance(prior, torch.distributions.Independent):
        event += prior.reinterpreted_batch_ndims
        prior = prior.base_dist
    name = type(prior).__name__
    args = PRIORS.get(name)
    if args is None or getattr(dist, name, None) is not type(prior):
        return None
    return {
        "class": name,
        "args": {a: getattr(prior, a).detach() for a in args},
        "event_dims": event,
    }
