"""What every model shares: point parameters, default priors, and the protocol inference calls.

A model is a `PyroModule` whose `forward(x=None, num_samples=None)` is the generative program.
Its parameters are `PyroParam`s (point estimates) until a prior turns them into random
attributes (`PyroSample`), the standard Pyro way:

    model = Markov(64, order=2)
    model.probs = PyroSample(dist.Dirichlet(torch.full((2,), 0.5)).expand([251]).to_event(1))

`inference.fit` uses the effective priors (the ones you assigned, the documented defaults
otherwise) for MAP, SVI and NUTS. What inference relies on, and nothing more:

- `validate(x)`: the data as a clean tensor, or a ValueError naming the problem and the fix;
- `_log_prob(x)`: per-datum log-density of validated data, vectorised (tested equal to the
  log-likelihood of the `forward` program);
- `init_from_data(x)`: a copy with data-dependent initial values (default: the model itself);
- `fit_closed_form(x, prior)`: set the MLE (or MAP) in closed form; False when there is none;
- `posterior(x)`: the exact conjugate posterior (a `conjugate.Posterior`), or a ValueError;
- `num_parameters`, `factorization`, `num_dims`, `config` (constructor arguments).

Every model runs with module-local parameters, so two models with the same parameter names
never share values through Pyro's global param store.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam, PyroSample

from ppl_models import pyro_internals


def local_params():
    """Pyro's module-local parameter mode, as a context manager."""
    return pyro.settings.context(module_local_params=True)


@contextlib.contextmanager
def placed(device: torch.device):
    """torch's tensor factories default to `device` within (a GPU model's intermediate
    tensors are made there); nothing changes on the CPU."""
    if device.type == "cpu":
        yield
    else:
        with device:
            yield


@contextlib.contextmanager
def running(module):
    """Module-local parameters while `module` runs, entering its Pyro context first (in the
    caller's mode): Pyro then never swaps the global param store in and out, which would break
    a user's `pyro.infer.SVI` loop around the model (its guide's parameters lose their
    `unconstrained` link when the store is swapped). On a GPU, torch's tensor factories
    default to the model's device within."""
    device = module.device if isinstance(module, Model) else torch.device("cpu")
    with pyro_internals.context(module), local_params(), placed(device):
        yield


def model_method(fn):
    """Like `pyro.nn.pyro_method`, with module-local parameters: inside, each random attribute
    is one cached sample site, and parameters never touch the global param store."""

    @functools.wraps(fn)
    def wrapped(self, *args, **kwargs):
        with running(self):
            return fn(self, *args, **kwargs)

    return wrapped


def owner(obj, name: str):
    """The class in `type(obj)`'s MRO that defines attribute `name`, or None."""
    return next((c for c in type(obj).__mro__ if name in c.__dict__), None)


def accelerator(obj, name: str):
    """`obj.name` if it belongs to the `forward` being run: the class that defines it also
    defines (or inherits unchanged) `type(obj).forward`; None otherwise. The placeholders of
    the `Model` base class never qualify: it defines no `forward`."""
    cls = owner(obj, name)
    if cls is None:
        return None
    forward = getattr(type(obj), "forward", None)
    if forward is None or getattr(cls, "forward", None) is not forward:
        return None
    return getattr(obj, name)


# How `Model.log_prob` scores a class that has no vectorised `_log_prob` for its `forward`:
# the program reader one layer up (`ppl_models.programs`) registers it on import, since models
# never import that layer.
_SCORERS: list = []


def score_forwards_with(fn) -> None:
    """Register `fn(model, x) -> (N,)`, the generic path of `Model.log_prob`."""
    _SCORERS[:] = [fn]


class Model(PyroModule):
    """Base class of every generative program in ppl_models (see the module docstring)."""

    factorization: str = ""
    # True: the data are rows, independent given the parameters (`Fit.sample` may draw each
    # from another posterior draw); False for a model of one series (AutoRegressive)
    exchangeable: bool = True
    # the gradient solver of MLE/MAP when neither `solver`, `valid` nor `batch_size` says:
    # "lbfgs" (full batch) for a few parameters, "adam" (minibatches) for a network
    gradient_solver: str = "lbfgs"

    def __init__(self):
        with local_params():
            super().__init__()
        self._inits: dict = {}  # name -> (initial value, constraint, event_dim)
        self._prior_overrides: dict = {}  # priors a user assigned, kept by point() copies

    def __call__(self, *args, **kwargs):
        with running(self):
            return super().__call__(*args, **kwargs)

    def __getattr__(self, name):
        using = self.__dict__.get("_using")
        if using is not None and name in using:
            return using[name]
        return super().__getattr__(name)

    @contextlib.contextmanager
    def using(self, values: dict[str, torch.Tensor]):
        """Within, each named parameter reads as the given tensor (gradients flow to it): how
        inference evaluates the vectorised paths at values it holds, with no Pyro messages."""
        before = self.__dict__.get("_using")
        self.__dict__["_using"] = values if before is None else {**before, **values}
        try:
            yield self
        finally:
            self.__dict__["_using"] = before

    # -- parameters -------------------------------------------------------------------------
    def _param(self, name: str, value: torch.Tensor, constraint, event_dim=None) -> None:
        """Declare a point parameter and remember its initial value and constraint."""
        self._inits[name] = (value.detach().clone(), constraint, event_dim)
        setattr(self, name, PyroParam(value, constraint, event_dim))

    def global_values(self) -> dict[str, torch.Tensor]:
        """Every parameter's value, read once. In `forward`, call it before the data plate
        where parameters are first used inside it: a Bayesian copy's random attributes are
        then drawn as global sites (each is one cached site per call)."""
        return {name: getattr(self, name) for name in self._inits}

    @property
    def param_names(self) -> list[str]:
        return list(self._inits)

    def default_priors(self) -> dict:
        """The documented default prior of every parameter: a distribution or, as `PyroSample`
        allows, a function of the model returning one (a prior conditional on other
        parameters, e.g. a coefficient's scale proportional to the noise scale)."""
        return {}

    def assigned_priors(self) -> dict:
        """The priors a user assigned (a `PyroSample` now, or one a `point()` copy kept)."""
        return {**self._prior_overrides, **pyro_internals.module_samples(self)}

    def assign_prior(self, name: str, prior) -> None:
        """Keep `prior` as the assigned prior of parameter `name` (a point copy's way)."""
        self._prior_overrides[name] = prior

    def start_at(self, values: dict[str, torch.Tensor]) -> Model:
        """Make `values` the initial and the current values of the named parameters."""
        for name, value in values.items():
            _, constraint, event_dim = self._inits[name]
            self._inits[name] = (value.clone(), constraint, event_dim)
        params = pyro_internals.module_params(self)
        return self.set_params({k: v for k, v in values.items() if k in params})

    def prior_specs(self) -> dict:
        """Effective priors as given: a `PyroSample` you assigned, else the default; each a
        distribution or a function of the model."""
        return {**self.default_priors(), **self.assigned_priors()}

    def priors(self) -> dict[str, dist.Distribution]:
        """Effective priors as distributions; a conditional prior is evaluated at the current
        values of the parameters it depends on."""
        with local_params():
            return {
                name: prior if hasattr(prior, "log_prob") else prior(self)
                for name, prior in self.prior_specs().items()
            }

    def log_prior(self) -> torch.Tensor:
        """log p(theta) at the current point values (the objective of MAP adds it)."""
        with local_params():
            return sum(
                prior.log_prob(getattr(self, name)).sum() for name, prior in self.priors().items()
            )

    @torch.no_grad()
    def get_params(self) -> dict[str, torch.Tensor]:
        """Current point values (constrained), detached: exactly as last set by `set_params`
        while the parameter has not changed since (a PyroParam stores its value through the
        constraint's transform, so a probability of exactly 0 would come back as 2.2e-308)."""
        exact = self.__dict__.get("_exact", {})
        out = {}
        for name in pyro_internals.module_params(self):
            current = getattr(self, name).detach()
            kept = exact.get(name)
            same = (
                kept is not None
                and kept[0].device == current.device
                and kept[0].dtype == current.dtype
                and torch.equal(kept[0], current)
            )
            out[name] = kept[1].clone() if same else current.clone()
        return out

    def _apply(self, fn, *args, **kwargs):
        """`.to`, `.cuda`, `.float`, ...: the exact values kept beside the parameters move too."""
        exact = self.__dict__.get("_exact")
        kept = (
            {
                k: v
                for k, v in self.get_params().items()
                if exact and k in exact and torch.equal(v, exact[k][1])
            }
            if exact
            else {}
        )
        out = super()._apply(fn, *args, **kwargs)
        if exact:  # stored again beside the converted parameters
            self.__dict__["_exact"] = {
                k: (getattr(self, k).detach().clone(), fn(v)) for k, v in kept.items()
            }
        return out

    @torch.no_grad()
    def set_params(self, values: dict[str, torch.Tensor]) -> Model:
        """Set point values, in each parameter's current dtype and device (`model.float()`
        stays float32 whatever precision a closed form computed in)."""
        for name, value in values.items():
            if name not in self._inits:
                raise ValueError(
                    f"{type(self).__name__} has no parameter {name!r}; its "
                    f"parameters are {self.param_names}"
                )
            current = (
                getattr(self, name)
                if name in pyro_internals.module_params(self)
                else self._inits[name][0]
            )
            value = (value if torch.is_tensor(value) else torch.as_tensor(value)).to(
                dtype=current.dtype, device=current.device
            )
            setattr(self, name, value)
            if name in pyro_internals.module_params(
                self
            ):  # remember the exact value beside its storage
                self.__dict__.setdefault("_exact", {})[name] = (
                    getattr(self, name).detach().clone(),
                    value.detach().clone(),
                )
        return self

    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the parameters (float64 unless converted: `model.float()`)."""
        for p in self.parameters():
            if p.is_floating_point():
                return p.dtype
        return self.__dict__.get("_dtype", torch.float64)

    @property
    def device(self) -> torch.device:
        """Where the parameters and buffers are (the CPU for a model that holds none)."""
        first = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if first is None else first.device

    def point(self) -> Model:
        """A copy whose parameters are all point parameters (random ones restart at init)."""
        m = copy.deepcopy(self)
        m._prior_overrides = self.assigned_priors()
        for name, (value, constraint, event_dim) in self._inits.items():
            if name in pyro_internals.module_samples(m):
                setattr(m, name, PyroParam(value.clone(), constraint, event_dim))
        return m

    def bayesian(self) -> Model:
        """A copy whose parameters are all random attributes with the effective priors."""
        priors = self.prior_specs()  # functions of the model stay functions: Pyro calls them
        m = copy.deepcopy(self)
        for name in self._inits:
            setattr(m, name, PyroSample(priors[name]))
        return m

    # -- densities --------------------------------------------------------------------------
    def validate(self, x) -> torch.Tensor:
        """The data as a clean tensor, or a ValueError naming the problem and the fix. This
        default takes any finite numeric array (integers become float64); override it with
        the checks of your model."""
        from ppl_models.checks import any_data

        return any_data(x)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Accelerator: per-datum log-density of validated `x` at the current values,
        vectorised. A subclass that writes `forward` may leave it out: `log_prob` then runs
        `forward` (the generic path, `ppl_models.programs.program`)."""
        raise NotImplementedError

    def log_prob(self, x) -> torch.Tensor:
        """Per-datum log-density in nats under the current parameters, shape (N,): the
        vectorised path where it belongs to this class's `forward`, else `forward` itself."""
        x = self.validate(x)
        holder = next(itertools.chain(self.parameters(), self.buffers()), None)
        if holder is not None and x.device != holder.device:  # the data go to the model
            x = x.to(holder.device)
        fast = accelerator(self, "_log_prob")
        if fast is not None:
            exact = {
                k: v
                for k, v in self.get_params().items()
                if k not in pyro_internals.module_samples(self)
            }
            with running(self), self.using(exact):  # running() places tensors on the device
                return fast(x)
        with placed(self.device):
            return _SCORERS[0](self, x)

    @torch.no_grad()
    def log_likelihood(self, x: torch.Tensor, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Pointwise log-likelihood of validated `x` under each parameter draw.

        `draws` maps parameter names to tensors with two leading sample dims (chain, draw);
        returns (chain, draw, N). Parameters not drawn keep their current values."""
        if not draws:  # nothing random: one 'draw', the model itself
            return self._log_prob(x)[None, None]
        lead = next(iter(draws.values())).shape[:2]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
        out = []
        for s in range(lead.numel()):
            with self.using({k: v[s] for k, v in flat.items()}):
                out.append(self._log_prob(x))
        return torch.stack(out).reshape(*lead, -1)

    # -- hooks with defaults ----------------------------------------------------------------
    def init_from_data(self, x: torch.Tensor) -> Model:
        """A copy with data-dependent initial values (scales, biases, random weights), or the
        model itself when it has none. `inference.fit` calls it on validated training data,
        under the fit's seed, before any method runs."""
        return self

    def fit_closed_form(self, x: torch.Tensor, prior: bool) -> bool:
        """Set the MLE (prior=False) or MAP (prior=True) in closed form; False if there is none."""
        return False

    def posterior(self, x: torch.Tensor):
        raise ValueError(
            f"{type(self).__name__} has no conjugate form, so method='exact' is not "
            "available; use method='nuts' or 'svi' for a posterior"
        )

    @property
    def num_parameters(self) -> int:
        """Accelerator: the number of free parameters. Without it, a fit reports the dimension
        of the unconstrained parameter space read from a trace (`Fit.report`)."""
        raise ValueError(
            f"{type(self).__name__} does not state num_parameters; fit it and read "
            "Fit.report(x).num_parameters (counted from a trace), or define the "
            "property"
        )

    @property
    def config(self) -> dict:
        """Constructor arguments: `type(model)(**model.config)` builds an unfitted twin."""
        return {}

    # names of each parameter's dims (ArviZ's dims) and of a datum's dims after the first
    param_dims: dict = {}
    data_dims: tuple = ("dim",)

    def extra_repr(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        try:
            return f"{args}; {self.factorization}; {self.num_parameters:,} free parameters"
        except ValueError:
            return args

    # -- helpers for forward ----------------------------------------------------------------
    def _data_or_size(self, x, num_samples) -> tuple[torch.Tensor | None, int]:
        """(validated x, N) when observing, (None, num_samples) when generating."""
        if x is not None:
            if num_samples is not None:
                raise ValueError(
                    "pass either x (to observe data) or num_samples (to generate), not both"
                )
            x = self.validate(x)
            return x, x.shape[0]
        if num_samples is None:
            raise ValueError(
                "forward needs x (data to observe) or num_samples (how many to generate)"
            )
        from ppl_models.checks import positive_int

        return None, positive_int(num_samples, "num_samples")


def dirichlet_concentration(prior: dist.Distribution, shape: torch.Size) -> torch.Tensor | None:
    """Concentration of a Beta or Dirichlet prior as a (..., K) tensor broadcast to `shape`
    (Beta(a, b) -> [a, b], the probability of the first outcome being the parameter), or None
    for any other prior."""
    d = prior
    while isinstance(d, torch.distributions.Independent):
        d = d.base_dist
    if isinstance(d, torch.distributions.Beta):
        c = torch.stack([d.concentration1, d.concentration0], -1)
    elif isinstance(d, torch.distributions.Dirichlet):
        c = d.concentration
    else:
        return None
    return c.to(torch.float64).expand(shape)


NO_INTERIOR_MAP = (
    "MAP does not exist in the interior for a Dirichlet/Beta concentration below "
    "1 on a cell with no data; use method='exact' (the posterior) or a "
    "concentration >= 1"
)


def normalise_counts(counts: torch.Tensor, extra: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Rows of `counts + extra` normalised over the last dim; all-zero rows become uniform."""
    c = counts + extra
    if (c < 0).any():
        raise ValueError(NO_INTERIOR_MAP)
    total = c.sum(-1, keepdim=True)
    uniform = torch.full_like(c, 1.0 / c.shape[-1])
    return torch.where(total > 0, c / total.clamp_min(1e-300), uniform)
