"""The protocol inference relies on: every hook `inference` and the program reader call on a
built-in model, and nothing more (`tests/test_architecture.py` reads the calls from the source
and fails on one that is not listed here).

Any Pyro program is fitted through `ppl_models.programs.Program`, which reads what it needs
from traces. A `Model` (`is_builtin`) also answers these hooks; the ones marked *accelerator*
are used only while the class that defines them also defines the `forward` being run
(`base.accelerator`), so a subclass that rewrites `forward` alone is fitted through its new
`forward`.
"""

from __future__ import annotations

import contextlib
from typing import Protocol, runtime_checkable

import torch

from ppl_models.models.base import Model

# Hooks looked up by name with `accelerator(model, name)`: optional, each replaces a generic path.
ACCELERATORS = (
    "_log_prob",
    "log_likelihood",
    "_sample",
    "replicate",
    "simulate",
    "forecast",
    "complete",
    "fit_closed_form",
    "posterior",
    "num_parameters",
    "factorization",
)


@runtime_checkable
class BuiltinModel(Protocol):
    """What inference calls on a built-in model (a `Model` subclass)."""

    # -- description --------------------------------------------------------------------------
    num_dims: int  # values per datum (1 for a series): the unit of bits per dimension
    factorization: str  # accelerator: the one-line formula
    num_parameters: int  # accelerator: free parameters, an exact Python int
    exchangeable: bool  # rows independent given the parameters (False: one series)
    gradient_solver: str  # "lbfgs" or "adam" where neither solver, valid nor batch_size says
    param_dims: dict  # ArviZ dims of each parameter
    data_dims: tuple  # ArviZ dims of a datum after the first
    device: torch.device
    config: dict  # constructor arguments: type(model)(**config) is an unfitted twin
    param_names: list[str]

    # -- data and densities ------------------------------------------------------------------
    def validate(self, x) -> torch.Tensor: ...
    def _log_prob(self, x: torch.Tensor) -> torch.Tensor: ...  # accelerator: (N,)
    def log_prob(self, x) -> torch.Tensor: ...
    def log_likelihood(self, x: torch.Tensor, draws: dict) -> torch.Tensor: ...  # accelerator

    # -- values ------------------------------------------------------------------------------
    def using(self, values: dict) -> contextlib.AbstractContextManager: ...
    def get_params(self) -> dict: ...
    def set_params(self, values: dict) -> Model: ...
    def init_from_data(self, x: torch.Tensor) -> Model: ...
    def fit_closed_form(self, x: torch.Tensor, prior: bool) -> bool: ...  # accelerator
    def posterior(self, x: torch.Tensor): ...  # accelerator: a conjugate.Posterior

    # -- priors ------------------------------------------------------------------------------
    def point(self) -> Model: ...
    def bayesian(self) -> Model: ...
    def priors(self) -> dict: ...
    def prior_specs(self) -> dict: ...
    def assigned_priors(self) -> dict: ...
    def assign_prior(self, name: str, prior) -> None: ...

    # -- generation (accelerators) -----------------------------------------------------------
    def _sample(self, n: int) -> torch.Tensor: ...
    def replicate(self, x: torch.Tensor, draws: dict) -> torch.Tensor: ...
    def simulate(self, x: torch.Tensor, draws: dict) -> torch.Tensor: ...
    def forecast(self, x, steps: int, prob: float = 0.9, draws: dict | None = None): ...
    def complete(self, prefix: torch.Tensor) -> torch.Tensor: ...  # the rest, given dims 0..k-1

    # -- saving (torch.nn.Module's) ------------------------------------------------------------
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict): ...
    def to(self, *args, **kwargs): ...


# Members only some models have (each an accelerator that a generic path replaces).
OPTIONAL = ("_sample", "replicate", "simulate", "forecast", "complete")


def is_builtin(model) -> bool:
    """A ppl_models model (a `Model` subclass): it answers `BuiltinModel`'s hooks, and its own
    ValueErrors are already clear."""
    return isinstance(model, Model)
