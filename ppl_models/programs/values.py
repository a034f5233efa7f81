"""Values of a program's parameters: where a global random parameter starts, copies of a
program holding other values, another model, device or dtype (the `Values` methods of
`Program`)."""

from __future__ import annotations

import contextlib
import copy
import functools

import pyro
import torch
from pyro import poutine

from ppl_models.models.base import placed
from ppl_models.models.protocol import is_builtin
from ppl_models.programs.arguments import Arguments, placed_given
from ppl_models.programs.roles import transform_of


def widest(*groups) -> torch.dtype | None:
    """The widest floating dtype among the groups of dtypes (None if there is none)."""
    found = [d for g in groups for d in g]
    return functools.reduce(torch.promote_types, found) if found else None


def moved(v, device, dtype):
    """`v` on `device` and, if floating, in `dtype` (either None: unchanged)."""
    if device is not None:
        v = v.to(device)
    if dtype is not None and v.is_floating_point():
        v = v.to(dtype)
    return v


def initial_value(fn, value) -> torch.Tensor:
    """Start of a global random parameter (under the caller's seed): halfway between one prior
    draw and the prior's centre (its mean, or the median of 15 draws where the mean is not
    finite), the centre alone where halfway leaves the support. Measured on a mixture of 10
    Bernoullis over digits (MAP, six seeds): from this start Adam reaches 19.40-19.64 test nats;
    from prior medians (Pyro's init_to_median) 19.40-19.92, where components start too alike;
    from single prior draws 19.60-20.74."""
    try:
        draw = fn.sample()
        try:
            centre = fn.mean
            usable = bool(torch.isfinite(centre).all() and fn.support.check(centre).all())
        except (NotImplementedError, RuntimeError, ValueError):
            usable = False
        if not usable:
            centre = fn.sample((15,)).median(0).values
        value = 0.5 * draw + 0.5 * centre
        if not bool(fn.support.check(value).all()):
            value = centre
    except (NotImplementedError, RuntimeError, ValueError):
        pass
    t = transform_of(fn.support)
    u = torch.nan_to_num(t.inv(value.detach()), nan=0.0, posinf=5.0, neginf=-5.0)
    return t(u).detach()


class Values:
    """The methods of `Program` that make copies with other values, model, device or dtype."""

    # -- values ---------------------------------------------------------------------------------
    def with_values(self, values: dict) -> Values:
        """A copy holding `values` (synced into a Model's own parameters, for `Fit.model`)."""
        p = copy.copy(self)
        p.values = {**self.values, **{k: v.detach() for k, v in values.items()}}
        if isinstance(self.model, torch.nn.Module) and hasattr(self.model, "set_params"):
            p.model = copy.deepcopy(self.model)
            known = set(p.model.param_names) if is_builtin(p.model) else set()
            p.model.set_params({k: v for k, v in p.values.items() if k in known})
        return p

    def with_model(self, model) -> Values:
        """A copy running `model` (a fitted Model copy), its values read from it."""
        p = copy.copy(self)
        p.model = model
        p.values = dict(model.get_params()) if hasattr(model, "get_params") else dict(self.values)
        return p

    def init_from_data(self, x: torch.Tensor) -> Values:
        hook = getattr(self.model, "init_from_data", None)
        if not callable(hook):
            return self
        model = hook(x)
        return self if model is self.model else self.with_model(model)

    # -- device and dtype -------------------------------------------------------------------
    def to(self, device=None, dtype=None) -> Values:
        """A copy on `device` and, where given, in floating `dtype`: a Model is moved with its
        parameters and buffers, the values and given tensors follow. A program of yours builds
        its own tensors: inside `placed()` (every fit runs there) torch's factories default to
        this device."""
        p = copy.copy(self)
        if device is not None:
            p.device = torch.device(device)
        if isinstance(self.model, torch.nn.Module) and (device is not None or dtype is not None):
            p.model = copy.deepcopy(self.model)
            if device is not None:
                p.model.to(device)
            if dtype is not None:
                p.model.to(dtype)
        p.values = {k: moved(v, device, dtype) for k, v in self.values.items()}
        if dtype is not None:
            p.dtype = dtype
        p.args = Arguments(
            self.args.data_arg,
            placed_given(self.args.given, device, dtype),
            self.args.takes_num_samples,
        )
        return p

    @contextlib.contextmanager
    def placed(self):
        """torch's tensor factories default to the program's device within."""
        with placed(self.device):
            yield

    def fresh_starts(self, x=None) -> dict[str, torch.Tensor]:
        """New start values of the global random parameters (as at discovery, redrawn) and,
        given the data `x`, of the local latents (from their prior given those globals)."""
        out = {
            k: moved(initial_value(fn, v), None, self.dtype) for k, (fn, v) in self._starts.items()
        }
        if x is not None and self.local:
            params = {k: v for k, v in self.values.items() if self._role(k) == "param"}
            with poutine.block(), pyro.validation_enabled(False):
                tr = self.trace(x=x, values={**params, **out}, enumerate_=False)
            out.update(
                {
                    k: moved(
                        initial_value(tr.nodes[k]["fn"], tr.nodes[k]["value"]), None, self.dtype
                    )
                    for k in self.local
                }
            )
        return out

    def fresh(self):
        """An unfitted twin of the source (for refits: leave-future-out, order selection)."""
        config = getattr(self.model, "config", None)
        if isinstance(config, dict) and isinstance(self.model, torch.nn.Module):
            return type(self.model)(**config)
        return self.source
