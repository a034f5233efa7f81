"""Validation at the API boundary: every error names the problem and the fix.

Data enters through `fit`, `log_prob`, `forward(x=...)` and the dataset loaders; each calls
one of the functions here once, so models and inference work on clean tensors only.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch


def as_tensor(x, *, name: str = "x", dtype: torch.dtype | None = None) -> torch.Tensor:
    """`x` as a tensor, or a ValueError saying why it cannot be one."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            a = np.asarray(x)
        except Exception as e:  # ragged lists and the like
            raise ValueError(
                f"{name} could not be read as an array ({e}); pass a tensor or "
                "a rectangular numpy array of numbers"
            ) from None
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(
                f"{name} must be numeric, got an array of dtype {a.dtype}; "
                "convert it with np.asarray(x, dtype=float) first"
            )
        a = np.ascontiguousarray(a)
        if not a.flags.writeable:  # a pandas Series, a read-only memmap: never written here,
            with warnings.catch_warnings():  # so torch's warning would only alarm
                warnings.filterwarnings("ignore", message=".*not writable.*")
                t = torch.from_numpy(a)
        else:
            t = torch.from_numpy(a)
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    if t.is_complex():
        raise ValueError(f"{name} is complex; pass real numbers")
    return t if dtype is None else t.to(dtype)


def where(t: torch.Tensor, bad: torch.Tensor, name: str = "x") -> str:
    """'x[3, 5] = 0.5' for the first entry where `bad` holds."""
    idx = tuple(int(i) for i in torch.nonzero(bad)[0])
    count = int(bad.sum())
    more = f" (and {count - 1} more)" if count > 1 else ""
    pos = ", ".join(map(str, idx))
    return f"{name}[{pos}] = {t[idx].item():g}{more}"


def check_shape(
    t: torch.Tensor,
    *,
    ndim: int,
    num_dims: int | None = None,
    name: str = "x",
    what: str = "this model",
) -> torch.Tensor:
    if ndim == 2:
        if t.dim() == 1 and num_dims is not None and t.numel() == num_dims:
            raise ValueError(
                f"{name} has shape {tuple(t.shape)}: {what} expects a batch of shape "
                f"(N, {num_dims}); for one datum pass x[None] or x.reshape(1, -1)"
            )
        if t.dim() != 2:
            raise ValueError(
                f"{name} must have shape (N, D) (one row per datum), got shape "
                f"{tuple(t.shape)}; reshape it with x.reshape(len(x), -1)"
            )
        if num_dims is not None and t.shape[1] != num_dims:
            raise ValueError(
                f"{name} has {t.shape[1]} dimensions per datum but {what} was built "
                f"for num_dims={num_dims}; build the model with "
                f"num_dims={t.shape[1]} or pass data of shape (N, {num_dims})"
            )
    elif ndim == 1:
        if t.dim() != 1:
            raise ValueError(
                f"{name} must be a 1-D series of shape (T,), got shape "
                f"{tuple(t.shape)}; fit one series at a time (x.reshape(-1) if it "
                "is a single column)"
            )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one datum")
    return t


def check_finite(t: torch.Tensor, name: str = "x") -> torch.Tensor:
    if t.is_floating_point():
        bad = ~torch.isfinite(t)
        if bad.any():
            kind = "NaN" if torch.isnan(t).any() else "inf"
            raise ValueError(
                f"{name} contains {kind}: {where(t, bad)}; remove or impute missing "
                "values before fitting"
            )
    return t


def categories(
    x,
    num_categories: int,
    *,
    num_dims: int | None = None,
    name: str = "x",
    what: str = "this model",
) -> torch.Tensor:
    """Integer category codes 0..K-1 of shape (N, D), as int64."""
    t = check_finite(
        check_shape(as_tensor(x, name=name), ndim=2, num_dims=num_dims, name=name, what=what), name
    )
    if t.is_floating_point():
        frac = t != torch.round(t)
        if frac.any():
            raise ValueError(
                f"{name} holds float values where integers are required: "
                f"{where(t, frac)}; {what} needs integer category codes "
                f"0..{num_categories - 1}"
            )
    bad = (t < 0) | (t >= num_categories)
    if bad.any():
        fix = "raise it, or recode the data"
        if num_categories == 2 and bool((t >= 0).all()) and bool((t <= 255).all()):
            fix = (
                "these look like 0-255 pixel intensities: binarise them (e.g. x > 127), or "
                "raise num_categories"
            )
        raise ValueError(
            f"{name} has values outside 0..{num_categories - 1}: {where(t, bad)}; "
            f"{what} has num_categories={num_categories} ({fix})"
        )
    return t.to(torch.int64)


def binary(
    x,
    *,
    num_dims: int | None = None,
    name: str = "x",
    what: str = "this model",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """0/1 data of shape (N, D) for a Bernoulli model, as floats."""
    t = check_finite(
        check_shape(as_tensor(x, name=name), ndim=2, num_dims=num_dims, name=name, what=what), name
    )
    bad = (t != 0) & (t != 1)
    if bad.any():
        raise ValueError(
            f"{name} is not binary: {where(t, bad)}; {what} is a Bernoulli model "
            "and needs values in {0, 1}: binarise the data (e.g. x > threshold) or "
            "use a categorical model"
        )
    return t.to(dtype)


def real(
    x,
    *,
    ndim: int = 2,
    num_dims: int | None = None,
    name: str = "x",
    what: str = "this model",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Finite real data, (N, D) or a (T,) series, as floats."""
    t = as_tensor(x, name=name)
    t = check_finite(check_shape(t, ndim=ndim, num_dims=num_dims, name=name, what=what), name)
    return t.to(dtype)


def any_data(x, *, name: str = "x", missing_ok: bool = False) -> torch.Tensor:
    """Finite numeric data of shape (N, ...) or (T,), not empty; integers and booleans become
    float64 (Pyro's convention: Bernoulli and Categorical both take float values). With
    `missing_ok`, NaN marks a missing value (a program that masks it; inf is still refused)."""
    t = as_tensor(x, name=name)
    if t.dim() == 0:
        raise ValueError(
            f"{name} is a single number; pass data of shape (N, ...) (one row per "
            "datum) or a series of shape (T,)"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one datum")
    check_finite(torch.nan_to_num(t, nan=0.0) if missing_ok and t.is_floating_point() else t, name)
    return t if t.is_floating_point() else t.to(torch.float64)


def as_device(device) -> torch.device | None:
    """A `torch.device` from "cpu", "cuda", "cuda:1", a torch.device or None (None: the
    data's); a ValueError naming what is missing when the device is not on this machine."""
    if device is None:
        return None
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {device!r}"
        ) from None
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={str(device)!r}, but this machine has no CUDA GPU "
                "(torch.cuda.is_available() is False, or this torch is a CPU "
                "build); use device='cpu'"
            )
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={str(device)!r}, but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s): use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}"
            )
    elif d.type not in ("cpu", "mps"):
        raise ValueError(f"device {str(device)!r} is not supported; use 'cpu' or 'cuda'")
    return d


DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
}


def as_dtype(dtype) -> torch.dtype | None:
    """torch.float32 / torch.float64 from a dtype or its name; None stays None."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = DTYPES.get(dtype.removeprefix("torch."), dtype)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def no_zero_scale(scale: torch.Tensor, what: str, which: str) -> None:
    """A ValueError naming the dims whose fitted Gaussian scale is 0 (density infinite there)."""
    zero = (scale <= 0).nonzero().flatten().tolist()
    if zero:
        shown = ", ".join(map(str, zero[:12])) + (
            f", ... ({len(zero)} in all)" if len(zero) > 12 else ""
        )
        raise ValueError(
            f"{what}: dims {shown} have {which} 0 in the data, so the maximum-likelihood "
            "Gaussian there has scale 0 and an infinite density (a prior on the scale does not "
            "help: the likelihood still wins as the scale goes to 0); drop them (x[:, keep]) "
            "or add a little noise (x + 1e-3 * torch.randn_like(x))"
        )


def positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def one_of(value, options, name: str) -> str:
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def series(
    x,
    *,
    min_length: int = 1,
    name: str = "x",
    what: str = "this model",
    why: str = "",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """One finite real series of shape (T,) with at least `min_length` values (`why`: the
    reason, for the message), as floats."""
    t = as_tensor(x, name=name)
    if t.dim() != 1:
        column = " (a single column: x.reshape(-1))" if t.dim() == 2 and 1 in t.shape[1:] else ""
        raise ValueError(
            f"{name} must be one series of shape (T,), got shape {tuple(t.shape)}: "
            f"{what} models a single series; fit each series separately "
            f"(e.g. x[:, k] for column k){column}"
        )
    check_finite(t, name)
    if t.shape[0] < min_length:
        raise ValueError(
            f"{name} has {t.shape[0]} values but {what} needs at least "
            f"{min_length}{f' ({why})' if why else ''}; pass a longer series or "
            "lower the order"
        )
    return t.to(dtype)


def probability(value, name: str) -> float:
    """A number strictly between 0 and 1 (an interval's coverage, say)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a probability strictly between 0 and 1, got {value!r}")
    return float(value)
