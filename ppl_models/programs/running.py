"""Running a user's program: values substituted and conditioned, dtypes unified, Pyro's
parameter modes respected, and anything it raises turned into an error that says what it was
doing."""

from __future__ import annotations

import contextlib

import pyro
import torch

from ppl_models import pyro_internals
from ppl_models.programs.roles import ProgramError


class Substitute(pyro.poutine.messenger.Messenger):
    """Replaces the value of every ``param`` site named in `values` (Pyro's `substitute`, but
    for PyroModule parameters in module-local mode too, and cheap)."""

    def __init__(self, values):
        super().__init__()
        self.values = values

    def _pyro_param(self, msg):
        value = self.values.get(msg["name"])
        if value is not None:
            msg["value"] = value
            msg["done"] = True


class Cast(pyro.poutine.messenger.Messenger):
    """Casts the floating values a program draws itself (unobserved sample sites, params) to
    `dtype`: a float32 prior beside float64 data then runs in float64 throughout, as the values
    inference conditions on do."""

    def __init__(self, dtype):
        super().__init__()
        self.dtype = dtype

    def _cast(self, msg):
        v = msg["value"]
        if torch.is_tensor(v) and v.is_floating_point() and v.dtype != self.dtype:
            msg["value"] = v.to(self.dtype)

    def _pyro_post_sample(self, msg):
        if not msg["is_observed"]:
            self._cast(msg)

    _pyro_post_param = _cast


@contextlib.contextmanager
def default_dtype(dtype):
    """torch's default dtype set to the program's while it runs: a prior written with Python
    numbers (``dist.HalfCauchy(5)``) then has parameters, and log densities, in the data's
    precision (float32 otherwise: HalfCauchy(5).log_prob of float64 values is float32, 4e-7
    off scipy's on eight schools)."""
    if dtype is None or not dtype.is_floating_point or dtype == torch.get_default_dtype():
        yield
        return
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@contextlib.contextmanager
def module_local(source):
    """Run a PyroModule with module-local parameters, its Pyro context entered first in the
    caller's mode (Pyro then never swaps the global param store in and out, which would break
    a user's `pyro.infer.SVI` loop around the program), except that a module built in global
    mode has no local param state to enter in local mode (our SVI runs in local mode)."""
    context = pyro_internals.context(source)
    if context is None:
        with pyro.settings.context(module_local_params=True):
            yield
        return
    mode = bool(pyro.settings.get("module_local_params")) and hasattr(context, "param_state")
    with pyro.settings.context(module_local_params=mode):
        context.__enter__()
    try:
        with pyro.settings.context(module_local_params=True):
            yield
    finally:
        with pyro.settings.context(module_local_params=mode):
            context.__exit__(None, None, None)


def run_module(module, **kwargs):
    with module_local(module):
        return module(**kwargs)


def run_function(fn, **kwargs):
    """A plain function runs in Pyro's default (global) parameter mode, the one it was written
    for, whatever mode the caller is in (a PyroModule it calls then finds its own state)."""
    with pyro.settings.context(module_local_params=False):
        return fn(**kwargs)


def call(fn, label: str, ours: bool, kwargs: dict):
    """Run the user's program; anything it raises becomes a ProgramError saying what it was
    doing (a Model's own ValueErrors, already clear, pass as they are)."""
    try:
        return fn(**kwargs)
    except ProgramError:
        raise
    except Exception as e:
        if ours and isinstance(e, ValueError):
            raise
        raise ProgramError(_raised(label, e, kwargs)) from e


def _describe(v) -> str:
    if torch.is_tensor(v):
        return f"tensor of shape {tuple(v.shape)}"
    text = repr(v)
    return text if len(text) <= 40 else f"a {type(v).__name__}"


def _raised(label, e, kwargs) -> str:
    what = ", ".join(f"{k}={_describe(v)}" for k, v in kwargs.items() if v is not None)
    return (
        f"the program {label} raised {type(e).__name__}: {e} (while running it with "
        f"{what}); call it directly with these arguments to debug it. The data go to the "
        "argument named by data_arg= (x by default), other arguments come from given="
    )


__all__ = [
    "Cast",
    "Substitute",
    "call",
    "default_dtype",
    "module_local",
    "run_function",
    "run_module",
]
