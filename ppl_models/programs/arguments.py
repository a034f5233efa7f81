"""Program arguments: which argument receives the data, and what else every call passes.

Pyro's own programs rarely take ``x=None, num_samples=None``: a regression is
``model(X, y=None)``, eight schools ``model(J, sigma, y=None)``, an HMM
``model_0(sequences, lengths, args)``. `Arguments` says how to call such a program unchanged:

- ``data_arg``: the argument that receives the data (``"x"`` by default, ``"y"`` for
  ``model(X, y=None)``); ``None`` when generating;
- ``given``: keyword arguments passed on every call (covariates, design constants, lengths,
  an ``args`` namespace). Arrays become tensors on the fit's device, floating ones in its
  dtype;
- ``num_samples`` is passed only to a program that takes it; one that does not generates
  data of the sizes in ``given`` (a regression: one response per row of ``X``).

**Rows.** With a data plate, a given tensor whose first dimension equals the number of data
is a per-datum covariate (``X``, eight schools' ``sigma``, HMM ``lengths``): it is sliced
with the data wherever rows are taken (the discovery trace, minibatches). Anything else
(numbers, design matrices of another length, namespaces) passes whole.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass(frozen=True)
class Arguments:
    data_arg: str = "x"
    given: dict = field(default_factory=dict)
    takes_num_samples: bool = True

    def call(self, x, num_samples) -> dict:
        """The keyword arguments of one call (observing `x`, or generating)."""
        kwargs = {**self.given, self.data_arg: x}
        if self.takes_num_samples:
            kwargs["num_samples"] = num_samples
        return kwargs

    def with_given(self, given: dict | None) -> Arguments:
        """These arguments with `given` updating the fit's own (new covariates, say)."""
        if not given:
            return self
        return Arguments(self.data_arg, {**self.given, **given}, self.takes_num_samples)

    def rows(self, idx, n: int) -> Arguments:
        """The arguments for rows `idx` of `n` data: per-datum covariates sliced."""
        sliced = {k: (v[idx] if _per_datum(v, n) else v) for k, v in self.given.items()}
        return Arguments(self.data_arg, sliced, self.takes_num_samples)

    def per_datum(self, n: int) -> list[str]:
        return [k for k, v in self.given.items() if _per_datum(v, n)]

    def mismatched(self, n: int) -> list[str]:
        """Descriptions of the given tensors whose first dimension is not `n`."""
        return [
            f"given[{k!r}] has {v.shape[0]} rows"
            for k, v in self.given.items()
            if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] != n
        ]


def _per_datum(v, n: int) -> bool:
    return torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == n


def parameters_of(source) -> tuple[set[str], bool] | None:
    """(the names a program takes by keyword, whether it takes **kwargs); None where Python
    cannot tell (a builtin, a C function)."""
    fn = source.forward if isinstance(source, torch.nn.Module) else source
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    names, var_kw = set(), False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            names.add(p.name)
    return names, var_kw


def arguments(source, label: str, data_arg: str = "x", given=None) -> Arguments:
    """`Arguments` for `source`, every name checked against its signature: a ValueError names
    an unknown data argument or given key, and lists what the program takes."""
    if not isinstance(data_arg, str) or not data_arg.isidentifier():
        raise ValueError(
            f"data_arg must be the name of the program's data argument (a string "
            f"such as 'x' or 'y'), got {data_arg!r}"
        )
    if given is None:
        given = {}
    if not isinstance(given, dict) or not all(isinstance(k, str) for k in given):
        raise ValueError(
            f"given must be a dict of keyword arguments for the program (name -> "
            f"value, e.g. given={{'X': X}}), got {type(given).__name__}"
        )
    found = parameters_of(source)
    if found is None:
        return Arguments(data_arg, dict(given), True)
    names, var_kw = found
    takes = ", ".join(sorted(names)) or "no keyword arguments"
    if data_arg not in names and not var_kw:
        hint = ""
        if data_arg == "x":
            maybe = [n for n in ("y", "data", "obs", "sequences") if n in names]
            hint = f" (pass data_arg={maybe[0]!r}?)" if maybe else ""
        raise ValueError(
            f"the program {label} has no argument {data_arg!r} to receive the "
            f"data{hint}; it takes {takes}. Name the argument that receives the "
            "data with data_arg=..."
        )
    unknown = sorted(k for k in given if k not in names)
    if unknown and not var_kw:
        raise ValueError(
            f"given names {', '.join(map(repr, unknown))}, which the program "
            f"{label} does not take; it takes {takes}"
        )
    clash = [k for k in given if k in (data_arg, "num_samples")]
    if clash:
        raise ValueError(
            f"given must not name {clash[0]!r}: the data go to {data_arg!r} and "
            "num_samples is set when generating; pass the data as the fit's data"
        )
    return Arguments(data_arg, dict(given), "num_samples" in names)


def placed_given(given: dict, device, dtype) -> dict:
    """Given values as the program sees them: numpy arrays as tensors, tensors on `device`,
    floating ones in `dtype` (None: as they are); anything else untouched."""
    out = {}
    for k, v in given.items():
        if isinstance(v, np.ndarray) and v.dtype != object:
            v = torch.from_numpy(np.ascontiguousarray(v))
        if torch.is_tensor(v):
            if device is not None and v.device != torch.device(device):
                v = v.to(device)
            if dtype is not None and v.is_floating_point() and v.dtype != dtype:
                v = v.to(dtype)
        out[k] = v
    return out


def with_given(args: Arguments, source, label: str, given, device, dtype) -> Arguments:
    """`args` with `given` added (over its own), placed on the program's device and dtype."""
    if not isinstance(given, dict):
        raise ValueError(
            f"given must be a dict of keyword arguments for the program, got {type(given).__name__}"
        )
    new = arguments(source, label, args.data_arg, {**args.given, **given})
    return Arguments(new.data_arg, placed_given(new.given, device, dtype), new.takes_num_samples)


def floating_dtypes(given: dict) -> list[torch.dtype]:
    return [v.dtype for v in given.values() if torch.is_tensor(v) and v.is_floating_point()]


__all__ = ["Arguments", "arguments", "floating_dtypes", "parameters_of", "placed_given"]
