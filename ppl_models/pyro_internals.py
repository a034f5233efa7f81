"""Every private member of Pyro the library touches, in this one module.

Pyro's public API does not say which attributes of a `PyroModule` are parameters and which are
random (`PyroSample`), nor how to enter a module's own context, nor the constraint the param
store holds for a `pyro.param` site, nor the step statistics of its NUTS kernel. Each is read
here, and `tests/test_pyro_internals.py` (the canary) fails loudly, naming the member, when a
Pyro release renames or removes one. The tested Pyro minor versions are pinned in
`pyproject.toml` (`TESTED_PYRO`). One member of torch's is read here too, for the same
reason: TorchScript's Static Runtime (`static_runtime`), which torch reaches only through
`torch._C`.
"""

from __future__ import annotations

import contextlib
import math

import pyro
import torch
from pyro.infer import NUTS
from pyro.infer.autoguide import AutoNormal
from pyro.nn import PyroModule
from pyro.ops.rings import LogRing
from pyro.poutine.broadcast_messenger import BroadcastMessenger
from pyro.poutine.subsample_messenger import SubsampleMessenger
from pyro.poutine.subsample_messenger import _Subsample as Subsample
from torch.distributions import constraints

TESTED_PYRO = ("1.9",)  # minor versions the canary and the suite ran under

# (owner, member) pairs this module relies on: the canary checks each one
MEMBERS = [
    (PyroModule, "_pyro_context"),
    (PyroModule, "_pyro_params"),
    (PyroModule, "_pyro_samples"),
    (AutoNormal, "_get_loc_and_scale"),
    (pyro.poutine.subsample_messenger, "_Subsample"),
    (NUTS, "_sample_r"),
    (NUTS, "_kinetic_energy"),
    (NUTS, "_build_basetree"),
    (NUTS, "_fetch_from_cache"),
    (BroadcastMessenger, "_pyro_sample"),
    (SubsampleMessenger, "_subsample"),
    (LogRing, "_backend"),
    (torch._C, "_jit_to_static_module"),
    (torch.ops.aten.add.Tensor, "_schema"),
]
# attributes a NUTS kernel sets when it runs (checked on a kernel that took a step)
NUTS_STATE = ("_divergences", "_mean_accept_prob", "_t", "_warmup_steps")


def static_runtime(module: torch.jit.ScriptModule):
    """A frozen ScriptModule run by TorchScript's Static Runtime (torch's private
    `_jit_to_static_module` given the module's C++ half, `_c`): called as the module is."""
    return torch._C._jit_to_static_module(module._c)


def bound_arguments(node) -> dict:
    """A `torch.fx` node's arguments by their names in its aten operation's schema (which torch
    keeps on the operation's private ``_schema``), defaults filled in; a ValueError where one
    is missing."""
    bound = {}
    for i, arg in enumerate(node.target._schema.arguments):
        if i < len(node.args) and not arg.kwarg_only:
            bound[arg.name] = node.args[i]
        elif arg.name in node.kwargs:
            bound[arg.name] = node.kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
        else:
            raise ValueError(f"{node.target} without {arg.name}")
    return bound


def call_bound(op, bound: dict):
    """An aten operation called with arguments bound by name (`bound_arguments`)."""
    arguments = op._schema.arguments
    args = [bound[a.name] for a in arguments if not a.kwarg_only]
    return op(*args, **{a.name: bound[a.name] for a in arguments if a.kwarg_only})


def context(module):
    """A PyroModule's own context manager (entered so that Pyro never swaps the global param
    store around it); a no-op context for anything else."""
    return getattr(module, "_pyro_context", None) if isinstance(module, PyroModule) else None


def module_params(module: PyroModule) -> dict:
    """Names of a PyroModule's `PyroParam` attributes (name -> (constraint, event_dim))."""
    return module._pyro_params


def module_samples(module: PyroModule) -> dict:
    """A PyroModule's random attributes: name -> the prior of its `PyroSample`."""
    return module._pyro_samples


def is_subsample(fn) -> bool:
    """The dummy distribution of a subsampled plate's index site."""
    return isinstance(fn, Subsample)


def param_constraint(name: str) -> constraints.Constraint:
    """The constraint the global param store holds for `pyro.param(name)` (real if none)."""
    return pyro.get_param_store()._constraints.get(name, constraints.real)


def normal_loc_and_scale(guide: AutoNormal, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """An `AutoNormal` guide's loc and scale of site `name`, with gradients."""
    return guide._get_loc_and_scale(name)


class RecordingNUTS(NUTS):
    """Pyro's NUTS, keeping after warm-up what ArviZ's sample_stats hold for each draw:
    diverging, step_size, tree_depth, n_steps (leapfrog steps), energy (the Hamiltonian at
    the start of the trajectory), acceptance_rate (the mean Metropolis acceptance probability
    over the trajectory), lp (minus the potential energy of the draw). It overrides three of
    NUTS's private methods and reads its step counters: all named in `MEMBERS`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows, self.kinetic, self.leaps = [], None, 0

    def _sample_r(self, name):
        self.kinetic = "next"  # the next kinetic energy computed is the trajectory's start
        return super()._sample_r(name)

    def _kinetic_energy(self, r_unscaled):
        energy = super()._kinetic_energy(r_unscaled)
        if self.kinetic == "next":
            self.kinetic = float(energy)
        return energy

    def _build_basetree(self, *args, **kwargs):
        self.leaps += 1
        return super()._build_basetree(*args, **kwargs)

    def sample(self, params):
        _, start_pe, _ = self._fetch_from_cache()
        divergences, mean = len(self._divergences), self._mean_accept_prob
        self.leaps = 0
        z = super().sample(params)
        if self._t > self._warmup_steps:
            n = self._t - self._warmup_steps
            pe = self._fetch_from_cache()[1]
            kinetic = self.kinetic if isinstance(self.kinetic, float) else math.nan
            start = float(start_pe) if start_pe is not None else math.nan
            self.rows.append(
                (
                    len(self._divergences) > divergences,
                    float(self.step_size),
                    self.leaps,
                    kinetic + start,
                    self._mean_accept_prob * n - mean * (n - 1)
                    if n > 1
                    else self._mean_accept_prob,
                    -float(pe) if pe is not None else math.nan,
                )
            )
        return z

    def statistics(self) -> dict[str, torch.Tensor]:
        rows = list(zip(*self.rows)) if self.rows else [[]] * 6
        steps = torch.tensor(rows[2], dtype=torch.int64)
        return {
            "diverging": torch.tensor(rows[0], dtype=torch.bool),
            "step_size": torch.tensor(rows[1], dtype=torch.float64),
            "tree_depth": torch.floor(torch.log2(steps.clamp_min(1).double())).long() + 1,
            "n_steps": steps,
            "energy": torch.tensor(rows[3], dtype=torch.float64),
            "acceptance_rate": torch.tensor(rows[4], dtype=torch.float64),
            "lp": torch.tensor(rows[5], dtype=torch.float64),
        }


@contextlib.contextmanager
def observed_unexpanded():
    """While a density is evaluated, plates leave observed sites' distributions unexpanded:
    log_prob broadcasts against the observed value all the same, while an expanded
    Bernoulli(probs) would compute its logits over the whole plate (measured: a hand-written
    Independent(64) on 100,000 images spends 1.4 of 3.0 s in probs_to_logits of the expanded
    probs). Sampled sites are expanded as usual."""
    original = BroadcastMessenger.__dict__["_pyro_sample"]
    expand = original.__func__

    def broadcast(msg):
        if (
            msg["type"] == "sample"
            and msg["is_observed"]
            and msg["value"] is not None
            and not msg["infer"].get("_deterministic", False)
        ):
            return
        expand(msg)

    BroadcastMessenger._pyro_sample = staticmethod(broadcast)
    try:
        yield
    finally:
        BroadcastMessenger._pyro_sample = original


def mask_of(fn):
    """The mask of Pyro's MaskedDistribution (`fn.mask(m)`; private `_mask`)."""
    return fn._mask


@contextlib.contextmanager
def whole_plates():
    """While the library runs a program, a plate written with ``subsample_size`` (Pyro's
    minibatching idiom) runs whole: full-data methods need every datum, and minibatch SVI
    (``batch_size=``) hands the program its batch itself. Pyro draws a plate's indices in
    `SubsampleMessenger._subsample` when the plate is built; here it is asked for none."""
    original = SubsampleMessenger.__dict__["_subsample"]
    draw = original.__func__

    def whole(name, size=None, subsample_size=None, subsample=None, *args, **kwargs):
        if subsample is None:
            subsample_size = None
        return draw(name, size, subsample_size, subsample, *args, **kwargs)

    SubsampleMessenger._subsample = staticmethod(whole)
    try:
        yield
    finally:
        SubsampleMessenger._subsample = original


class LeanLogRing(LogRing):
    """Pyro's log-space ring of sum-products with `ppl_models.programs.log_einsum` as its
    einsum backend (a reordering of one operand's dims taken as a permutation)."""

    _backend = "ppl_models.programs.log_einsum"
