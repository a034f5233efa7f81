"""Reading a saved fit: data, never code (the rules are in `inference.persist`).

`load(path)` reads the file with ``weights_only=True`` and constructs only a built-in model
named in the registry `ppl_models.MODELS`, or the program you pass (``model=``).
"""

from __future__ import annotations

import inspect
import os
import warnings
from pathlib import Path

import pyro.distributions as dist
import torch

from inference.persist import DTYPES, FORMAT, PLAIN, PRIORS, VERSION
from inference.result import Fit
from ppl_models import MODELS
from ppl_models.programs.program import Program


def load(path, model=None, map_location=None, given: dict | None = None):
    """Read a fit written by `Fit.save`. A fit of your own program needs it back:
    ``load(path, model=my_program)``; `map_location` as in `torch.load` (e.g. "cpu").
    The program's given arguments that are data come back from the file; `given` supplies
    (or replaces) the others, which a file never holds (an argparse namespace, say)."""
    blob = _read(path, map_location)
    version = blob.get("version", 1)
    spec = _model_spec(blob, path, version)
    if model is None and spec["kind"] == "program":
        raise ValueError(
            f"{path} holds a fit of your own program {spec['name']!r}; a saved fit "
            "never contains code, so pass the program: inference.load(path, "
            f"model={spec['name']})"
        )
    if model is None:
        with torch.device("cpu"):  # built where torch.load put nothing yet; moved below
            built = _construct(spec, path)
        _load_state(built, blob.get("state", {}), path)
        _restore_priors(built, blob.get("priors", {}), path)
        source = built
    else:
        source = model
        if spec["kind"] == "builtin" and hasattr(model, "load_state_dict"):
            _load_state(source, blob.get("state", {}), path)
    if blob.get("priors_not_saved"):
        warnings.warn(
            f"{path}: the custom prior(s) of {', '.join(blob['priors_not_saved'])} "
            "were not saved (not a standard distribution with tensor arguments); the "
            "loaded fit evaluates and samples from its draws only, and a refit uses "
            "the default priors",
            UserWarning,
            stacklevel=2,
        )
    saved = blob.get("given") or {}
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: the saved given arguments are not a dict")
    missing = [k for k in blob.get("given_not_saved") or [] if k not in (given or {})]
    if missing:
        raise ValueError(
            f"{path}: the program was fitted with given argument(s) "
            f"{', '.join(map(repr, missing))} that a saved file cannot hold (not "
            "tensors or plain values); pass them back: inference.load(path, "
            f"model=..., given={{{', '.join(repr(k) + ': ...' for k in missing)}}})"
        )
    program = Program(
        source,
        blob.get("data_plate", "data"),
        {**saved, **(given or {})},
        blob.get("data_arg", "x"),
    )
    data = _tensor(blob.get("data"), "data", path)
    if program.device != data.device:  # the fit lives where map_location put its tensors
        program = program.to(data.device)
    method = blob.get("method")
    if method not in ("mle", "map", "exact", "svi", "nuts"):
        raise ValueError(
            f"{path} names an unknown method {method!r}; it was not written by Fit.save"
        )
    program.validate(data)
    posterior = None
    if method == "exact":
        with program.placed():
            posterior = program.accelerator("posterior")(data)
        predictive = getattr(posterior, "predictive", None)
        program = (
            program.with_model(predictive)
            if predictive is not None
            else program.with_values(posterior.mean())
        )
    else:
        if spec["kind"] == "program":
            program.discover(data)
        if "values" in blob or spec["kind"] == "program":  # the first format: the state holds them
            values = blob.get("values", {})
            _check_values(program, values, path)
            program = program.with_values(values)
    draws = blob.get("draws") or None
    fit = Fit(
        program,
        method,
        data,
        draws=draws,
        posterior=posterior,
        sample_stats=blob.get("sample_stats") or {},
        losses=blob.get("losses") or [],
        info=blob.get("info") or {},
        fit_seconds=float(blob.get("fit_seconds", 0.0)),
    )
    labels = blob.get("index")
    if (
        isinstance(labels, list)
        and len(labels) == len(data)
        and all(isinstance(v, str) for v in labels)
    ):
        import pandas as pd

        fit.index = (
            pd.DatetimeIndex(labels, freq="infer" if len(labels) >= 3 else None)
            if blob.get("index_dates")
            else pd.Index(labels)
        )
    return fit


def _read(path, map_location) -> dict:
    p = Path(path) if isinstance(path, str | os.PathLike) else None
    if p is None or not p.is_file():
        raise ValueError(f"{path} is not a file; pass the path of a fit written by Fit.save")
    try:
        blob = torch.load(p, weights_only=True, map_location=map_location)
    except Exception as e:
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise ValueError(
            f"{path} is not a saved ppl-models fit: it could not be read as one "
            f"({reason}); was it truncated, or written by something else?"
        ) from None
    if not isinstance(blob, dict) or ("format" not in blob):
        raise ValueError(
            f"{path} is not a saved ppl-models fit (no format marker); write fits with Fit.save"
        )
    return blob


def _model_spec(blob, path, version) -> dict:
    if blob["format"] == 1 and version == 1:  # the first format: 'class' is a dotted path
        cls_path = blob.get("class", "")
        name = cls_path.rpartition(".")[2] if isinstance(cls_path, str) else ""
        # the dotted path format 1 wrote: the class's module before models/ held them
        known = {
            f"ppl_models.{c.__module__.rpartition('.')[2]}.{c.__qualname__}": n
            for n, c in MODELS.items()
        }
        if cls_path not in known:
            raise ValueError(_unknown_class(cls_path, path))
        return {
            "kind": "builtin",
            "class": known.get(cls_path, name),
            "config": blob.get("config", {}),
        }
    if blob["format"] != FORMAT:
        raise ValueError(f"{path} is not a saved ppl-models fit (format {blob['format']!r})")
    if not isinstance(version, int) or version > VERSION:
        by = (blob.get("written_by") or {}).get("ppl_models", "a newer version")
        raise ValueError(
            f"{path} was written by ppl-models {by} in file format {version}, "
            f"newer than this ppl-models reads (format {VERSION}); upgrade "
            "ppl-models to load it"
        )
    if version < 1:
        raise ValueError(f"{path} has file format {version}, which no ppl-models version wrote")
    spec = blob.get("model")
    if not isinstance(spec, dict) or spec.get("kind") not in ("builtin", "program"):
        raise ValueError(
            f"{path} does not say which model it holds; it was not written by Fit.save"
        )
    if spec["kind"] == "builtin" and spec.get("class") not in MODELS:
        raise ValueError(_unknown_class(spec.get("class"), path))
    return spec


def _unknown_class(name, path) -> str:
    return (
        f"{path} names the model class {name!r}, which is not a ppl-models model "
        f"({', '.join(MODELS)}); nothing was imported or run. A fit of your own program "
        "loads with inference.load(path, model=your_program)"
    )


def _construct(spec, path):
    cls = MODELS[spec["class"]]
    config = spec.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: the constructor arguments of {spec['class']} are not a dict")
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(config) - set(params) - {"self"})
    if unknown:
        raise ValueError(
            f"{path}: {spec['class']} takes no argument(s) {', '.join(unknown)} "
            f"(its arguments: {', '.join(k for k in params if k != 'self')}); the "
            "file was not written by this version's Fit.save"
        )
    kwargs = {}
    for k, v in config.items():
        if k == "dtype" and (v in DTYPES or v in DTYPES.values()):
            v = DTYPES.get(v, v)
        elif not (
            isinstance(v, PLAIN) or (isinstance(v, list) and all(isinstance(i, PLAIN) for i in v))
        ):
            raise ValueError(
                f"{path}: argument {k} of {spec['class']} is a "
                f"{type(v).__name__}, not a plain value (number, string, list)"
            )
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"{path}: {spec['class']}({kwargs}) is not a valid model: {e}") from None
    except TypeError as e:
        raise ValueError(f"{path}: {spec['class']} rejects the saved arguments ({e})") from None


def _load_state(model, state, path) -> None:
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the saved state is not a dict of tensors")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(
            f"{path}: the saved state does not fit {type(model).__name__}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}"
            f"{' (unexpected ' + ', '.join(extra) + ')' if extra else ''}"
        )
    for k, v in state.items():
        want = own[k]
        if torch.is_tensor(want) and (not torch.is_tensor(v) or v.shape != want.shape):
            got = tuple(v.shape) if torch.is_tensor(v) else type(v).__name__
            raise ValueError(
                f"{path}: state {k!r} has shape {got}, but "
                f"{type(model).__name__} with these arguments needs "
                f"{tuple(want.shape)}"
            )
    try:
        model.load_state_dict(state)
    except Exception as e:
        raise ValueError(
            f"{path}: the saved state does not load into {type(model).__name__} ({e})"
        ) from None


def _restore_priors(model, priors, path) -> None:
    for name, spec in (priors or {}).items():
        try:
            cls = getattr(dist, spec["class"]) if spec["class"] in PRIORS else None
            if cls is None:
                raise ValueError(f"unknown prior class {spec['class']!r}")
            args = {a: _tensor(spec["args"][a], a, path) for a in PRIORS[spec["class"]]}
            prior = cls(**args)
            if spec.get("event_dims"):
                prior = prior.to_event(int(spec["event_dims"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: the saved prior of {name!r} is not valid ({e})") from None
        model.assign_prior(name, prior)


def _check_values(program, values, path) -> None:
    if not isinstance(values, dict):
        raise ValueError(f"{path}: the saved parameter values are not a dict of tensors")
    known = program.values
    for k, v in values.items():
        _tensor(v, k, path)
        if k in known and known[k].shape != v.shape:
            raise ValueError(
                f"{path}: parameter {k!r} has shape {tuple(v.shape)}, but the "
                f"program's is {tuple(known[k].shape)}; load it with the program "
                "that was fitted"
            )
    missing = sorted(set(known) - set(values))
    if missing:
        raise ValueError(
            f"{path}: the file has no values for {', '.join(missing)}; load it "
            "with the program that was fitted"
        )


def _tensor(v, name, path):
    if not torch.is_tensor(v):
        raise ValueError(f"{path}: {name} is not a tensor")
    return v
