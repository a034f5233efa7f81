"""Any Pyro program as the library sees it: a callable, its arguments, its roles, its values.

A program is a plain function, a `PyroModule`, or one of our `Model` subclasses. Given the
data (in the argument `data_arg`, ``x`` by default) it observes them; given ``num_samples``,
or with the data argument None, it generates. Other arguments come from ``given``
(`ppl_models.programs.arguments`): covariates, design constants, lengths. `Program(model,
...)` runs it once on a few data and reads every site's role from the trace
(`ppl_models.programs.roles`); densities come from traces (`ppl_models.programs.densities`).

Every parameter value lives in one dict (constrained values keyed by site name): ``param``
sites are substituted, global random sites (and, at a posterior draw, continuous local
latents) conditioned, so nothing touches Pyro's global param store and gradients flow to
whatever tensors the caller passes.

A `Model` may add accelerators (a vectorised ``_log_prob``, ``log_likelihood`` over draws,
``fit_closed_form``, ``posterior``, ``num_parameters``, ``factorization``, ``forecast``,
``_sample``). Each belongs to the `forward` it was written for: it is used only while the class
that defines it also defines the `forward` being run (`accelerator`). A subclass that
overrides `forward` alone is evaluated and fitted through its new `forward`.
"""

from __future__ import annotations

import contextlib
import copy
import functools

import pyro
import torch
from pyro import poutine

from ppl_models import checks, pyro_internals
from ppl_models.models import base
from ppl_models.models.base import accelerator, owner
from ppl_models.models.protocol import is_builtin
from ppl_models.programs.arguments import (
    Arguments,
    arguments,
    floating_dtypes,
    placed_given,
    with_given,
)
from ppl_models.programs.densities import PARTICLES
from ppl_models.programs.generation import Generating
from ppl_models.programs.missing import MaskedMissing, unmasked_missing
from ppl_models.programs.roles import (
    ProgramError,
    Roles,
    Site,
    check_roles,
    enumerate_discrete,
    read_roles,
    transform_of,
    unconstrained_size,
)
from ppl_models.programs.running import (
    Cast,
    Substitute,
    call,
    default_dtype,
    run_function,
    run_module,
)
from ppl_models.programs.scoring import Scoring
from ppl_models.programs.values import Values, initial_value, widest

DISCOVERY_ROWS = 16  # data rows the discovery trace runs on (the whole series without a plate)


class Program(Scoring, Generating, Values):
    """A Pyro program with its arguments and parameter values; what `inference` fits (see the
    module docstring). `Program(model)` leaves `model` untouched: a `Model` is copied (its
    point version), a plain function is used as it is.

    ``values``: constrained values of every free parameter, keyed by site name (the point
    estimate once fitted; after a Bayesian fit also the posterior means of continuous local
    latents). Densities, sampling and the trace all run with these values unless others are
    passed.
    """

    def __init__(
        self,
        source,
        data_plate: str | None = "data",
        given: dict | None = None,
        data_arg: str = "x",
    ):
        if isinstance(source, Program):
            source = source.source
        if not callable(source):
            raise ValueError(
                f"fit needs a Pyro program: a function model(x=None, "
                f"num_samples=None) (or with data_arg= and given= for other "
                f"arguments), a PyroModule, or a ppl_models model; got "
                f"{type(source).__name__}"
            )
        if data_plate is not None and not isinstance(data_plate, str):
            raise ValueError(
                f"data_plate must be the name of a pyro.plate (a string), got {data_plate!r}"
            )
        self.source = source
        self.data_plate = data_plate
        # a Model keeps its values in a point copy (what `Fit.model` shows); others run as given
        point = getattr(source, "point", None)
        self.model = point() if callable(point) and isinstance(source, torch.nn.Module) else source
        self.values: dict[str, torch.Tensor] = {}
        self._roles: Roles | None = None
        self._num_dims: int | None = None
        self._starts: dict = {}  # global site -> (its prior in the discovery trace, a value)
        self._particle_way: str | None = None  # how Monte Carlo particles run (found once)
        self._probe = (None, None)
        self.missing = False  # NaN in the data discovered on (`MaskedMissing` then runs)
        module = isinstance(self.model, torch.nn.Module)
        self.device = getattr(self.model, "device", None) if module else None
        self.device = self.device or torch.device("cpu")
        self.dtype: torch.dtype | None = None  # a dtype option, or the widest of a mixed program
        if isinstance(self.model, torch.nn.Module) and hasattr(self.model, "get_params"):
            self.values = dict(self.model.get_params())
        self.args: Arguments = arguments(self.model, self.label, data_arg, given)

    # -- identity -------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        config = getattr(self.model, "config", None)
        name = getattr(self.source, "__name__", None) or type(self.source).__name__
        if isinstance(config, dict):
            args = ", ".join(
                f"{k}={v!r}" for k, v in config.items() if k not in ("num_dims",) and v is not None
            )
            return f"{type(self.model).__name__}({args})"
        return name

    def __repr__(self):
        return f"Program({self.label})"

    @property
    def ours(self) -> bool:
        """A ppl_models model (its own ValueErrors are already clear)."""
        return is_builtin(self.model)

    @property
    def observed_name(self) -> str:
        """The name the data go by in ArviZ's groups: ``x`` for a built-in model; a program's
        own observed site (``obs``, ``y``) where it has one, else its data argument (a series
        written as one site per step)."""
        if self.ours or self._roles is None:
            return "x"
        sites = [k for k in self._roles.named("observed") if not self._roles.sites[k].factor]
        return sites[0] if len(sites) == 1 else self.args.data_arg

    def accelerator(self, name: str):
        return accelerator(self.model, name) if isinstance(self.model, torch.nn.Module) else None

    @property
    def num_dims(self) -> int:
        """Values per datum (1 for a series): the unit of bits per dimension."""
        n = getattr(self.model, "num_dims", None)
        if isinstance(n, int):
            return n
        if self._num_dims is None:
            raise ValueError("num_dims is known once the program has seen data (fit it first)")
        return self._num_dims

    @property
    def num_parameters(self) -> int:
        fast = self.accelerator("num_parameters")
        if fast is not None:
            return fast
        free = [k for k in self.roles.free if k not in self.imputed]  # imputed values: data
        return sum(unconstrained_size(self.roles.sites[k]) for k in free)

    @property
    def factorization(self) -> str:
        fast = self.accelerator("factorization")
        if fast is not None:
            return fast
        from ppl_models.programs.factorization import describe

        return describe(self)

    @property
    def exchangeable(self) -> bool:
        """True when the data are rows of a data plate (independent given the parameters)."""
        if self._roles is None:
            return getattr(self.model, "exchangeable", True)
        return self.roles.data_plate is not None and not self.roles.context

    # -- arguments and data -----------------------------------------------------------------------
    @property
    def given(self) -> dict:
        return self.args.given

    def with_given(self, given: dict | None) -> Program:
        """A copy passing `given` (new covariates); imputed latents read first on the fit's own."""
        if not given:
            return self
        self._imputed = self.imputed if self._roles is not None else None
        p = copy.copy(self)
        p.args = with_given(self.args, self.model, self.label, given, self.device, self.dtype)
        return p

    def validate(self, x) -> torch.Tensor:
        check = getattr(self.model, "validate", None)
        if callable(check):
            x = check(x)
        else:
            x = checks.any_data(x, name=self.args.data_arg, missing_ok=not self.ours)
        if torch.is_tensor(x):
            if x.device != self.device:
                x = x.to(self.device)
            if self.dtype is not None and x.is_floating_point() and x.dtype != self.dtype:
                x = x.to(self.dtype)
        if self._num_dims is None:
            self._num_dims = int(x[0].numel()) if x.dim() > 1 else 1
        return x

    # -- roles ----------------------------------------------------------------------------------
    @property
    def discovered(self) -> Roles | None:
        """The roles once read from a trace (`discover`), else None."""
        return self._roles

    @property
    def starts(self) -> dict:
        """Global random site -> (its prior in the discovery trace, a start value)."""
        return self._starts

    @property
    def roles(self) -> Roles:
        if self._roles is None:
            raise ValueError(
                "the program's roles are read from a trace on data: call "
                "program.discover(x) (inference.fit does) first"
            )
        return self._roles

    def discover(self, x: torch.Tensor) -> Roles:
        """Run the program on a few data and read every site's role (cached). Continuous
        local latents, a data plate of fixed size and one series need all the data."""
        if self._roles is not None:
            return self._roles
        n = len(x)
        # a user's program may size a latent by its data (a vector of its missing values)
        rows = DISCOVERY_ROWS if self.ours else n
        part, args = x[:rows], self.args.rows(slice(0, rows), n)
        option = self.dtype
        if option is None and not self.ours:  # the program's own draws follow the data's dtype
            self.dtype = widest(
                [x.dtype] if x.is_floating_point() else [], floating_dtypes(self.args.given)
            )
        values = dict(self.values)
        try:
            roles = self._discover(part, args, n)
            if roles.data_plate is None or roles.plate_size != len(part) or roles.local:
                part, args = x, self.args
                self.values, self._starts = dict(values), {}
                roles = self._discover(part, args, n)
        finally:
            self.dtype = option
        check_roles(
            roles,
            len(part),
            part.numel(),
            self.label,
            self.data_plate,
            self.args.mismatched(n),
            self.args.data_arg,
        )
        self._roles = roles
        self._probe = (part, n)  # data the program runs on to read conditional priors
        self._settle_dtype(x)
        self.missing = x.is_floating_point() and bool(torch.isnan(x).any())
        if self.missing and (unmasked := unmasked_missing(self, x)):
            self._roles = None  # a corrected call discovers them again
            raise ValueError(unmasked)
        return roles

    def _discover(self, x, args, n: int) -> Roles:
        with pyro.get_param_store().scope(), poutine.block():
            try:
                tr = self.trace(x=x, values={}, enumerate_=False, args=args)
            except ProgramError as e:
                mismatched = self.args.mismatched(n)
                if mismatched:
                    raise ProgramError(
                        f"{'; '.join(mismatched)} but the data ({self.args.data_arg}) have {n} "
                        f"rows: per-datum covariates need one row per datum. The program "
                        f"failed on them: {e}"
                    ) from e
                raise
            roles = read_roles(tr, self.data_plate)
            for name, site in roles.sites.items():
                node = tr.nodes[name]
                if site.role == "param":
                    self.values.setdefault(name, node["value"].detach().clone())
                elif site.role == "global":
                    self._starts[name] = (node["fn"], node["value"].detach())
                    if name not in self.values:
                        self.values[name] = initial_value(node["fn"], node["value"])
                elif site.role == "local":  # its shape follows the data: always redrawn
                    self.values[name] = initial_value(node["fn"], node["value"])
        return roles

    def _settle_dtype(self, x) -> None:
        """A program mixing float32 and float64 (a float32 prior beside float64 data), or all
        float64, runs in the widest of them: every value and given covariate is cast, the
        data follow in `validate`."""
        if self.dtype is not None:
            return
        found = {v.dtype for v in self.values.values() if v.is_floating_point()}
        found |= set(floating_dtypes(self.args.given))
        if torch.is_tensor(x) and x.is_floating_point():
            found.add(x.dtype)
        if not found or found == {torch.get_default_dtype()}:
            return
        # one dtype other than torch's default (float64 data) is kept as well: the program
        # then runs with it as the default (`running.default_dtype`)
        wide = widest(found)
        self.dtype = wide
        self.values = {
            k: (v.to(wide) if v.is_floating_point() else v) for k, v in self.values.items()
        }
        self._starts = {
            k: (fn, v.to(wide) if v.is_floating_point() else v)
            for k, (fn, v) in self._starts.items()
        }
        self.args = Arguments(
            self.args.data_arg,
            placed_given(self.args.given, None, wide),
            self.args.takes_num_samples,
        )

    # -- running --------------------------------------------------------------------------------
    def run(self, *, x=None, num_samples=None, values=None, args=None):
        """Run the program (observing x, or generating num_samples) with `values` (default
        `self.values`): params substituted, globals (and locals given) conditioned."""
        values = self.values if values is None else values
        args = self.args if args is None else args
        fn = self.model
        fn = functools.partial(run_module if isinstance(fn, torch.nn.Module) else run_function, fn)
        params = {k: v for k, v in values.items() if self._role(k) == "param"}
        conditioned = {k: v for k, v in values.items() if self._role(k) != "param"}
        cast = Cast(self.dtype) if self.dtype is not None else contextlib.nullcontext()
        with (
            Substitute(params),
            cast,
            default_dtype(self.dtype),
            pyro_internals.whole_plates(),
            MaskedMissing(conditioned) if self.missing else contextlib.nullcontext(),
        ):
            return call(
                poutine.condition(fn, data=conditioned),
                self.label,
                self.ours,
                args.call(x, num_samples),
            )

    def _role(self, name) -> str:
        if self._roles is not None and name in self._roles.sites:
            return self._roles.sites[name].role
        return "param" if name in self.values and self._roles is None else "global"

    def trace(
        self,
        *,
        x=None,
        num_samples=None,
        values=None,
        enumerate_=True,
        args=None,
        particles: int | None = None,
    ):
        """The trace of one run; with `enumerate_`, discrete latents enumerated in parallel;
        with `particles`, inside a plate of that many Monte Carlo particles (outermost)."""
        run = functools.partial(self.run, x=x, num_samples=num_samples, values=values, args=args)
        nesting = self._roles.max_plate_nesting if self._roles is not None else 0
        if particles is not None:
            inner = run

            def run():
                with pyro.plate(PARTICLES, particles, dim=-1 - nesting):
                    return inner()

            nesting += 1
        if enumerate_ and self._roles is not None and self._roles.enumerated:
            run = poutine.infer_config(run, enumerate_discrete)
            run = poutine.enum(run, first_available_dim=-1 - nesting)
        return poutine.trace(run).get_trace()

    def bayesian(self, fixed: dict | None = None):
        """The program with its random parameters as sample sites (their priors) and the point
        parameters at `fixed` (default: their values): what a guide is written against. A
        Model's own `bayesian()` copy where it has one; discrete latents marked for
        enumeration. Called as ``program(x=None, num_samples=None)``."""
        fixed = {
            k: v
            for k, v in (self.values if fixed is None else fixed).items()
            if k not in set(self.sampled)
        }
        hook = getattr(self.model, "bayesian", None)
        fn = hook() if callable(hook) and isinstance(self.model, torch.nn.Module) else self.model
        fn = functools.partial(run_module if isinstance(fn, torch.nn.Module) else run_function, fn)
        if self.roles.enumerated:
            fn = poutine.infer_config(fn, enumerate_discrete)
        label, ours, args = self.label, self.ours, self.args

        dtype = self.dtype

        def program(x=None, num_samples=None):
            with Substitute(fixed), default_dtype(dtype), pyro_internals.whole_plates():
                return call(fn, label, ours, args.call(x, num_samples))

        return program

    def __call__(self, x=None, num_samples=None):
        """The program with its current values: observe x or generate num_samples data."""
        return self.run(x=x, num_samples=num_samples)


def as_program(
    model, data_plate: str | None = "data", given: dict | None = None, data_arg: str = "x"
) -> Program:
    """The `Program` inference fits: `model` wrapped (a Program is returned with `given`
    applied)."""
    if isinstance(model, Program):
        return model.with_given(given) if given else model
    return Program(model, data_plate, given, data_arg)


def _score_forward(model, x: torch.Tensor) -> torch.Tensor:
    """Per-datum log-density of a `Model` whose class scores only through its `forward`."""
    program = Program(model)
    program.discover(x)
    return program.log_prob(x)


base.score_forwards_with(_score_forward)

__all__ = [
    "Program",
    "ProgramError",
    "Roles",
    "Site",
    "accelerator",
    "as_program",
    "owner",
    "transform_of",
    "unconstrained_size",
]
