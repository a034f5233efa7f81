"""Roles of a program's sites, read off one trace.

- **point parameters**: ``pyro.param`` sites and `PyroParam` attributes (no prior);
- **global random parameters**: unobserved continuous ``pyro.sample`` sites outside the data
  plate; the site's distribution is the prior (it may depend on other globals);
- **enumerated latents**: unobserved discrete sites (a mixture's per-datum assignment, an HMM's
  states), summed out exactly by parallel enumeration wherever a density is needed;
- **continuous local latents**: unobserved continuous sites inside the data plate (eight
  schools' ``eta``, a player's batting average): NUTS samples them with the globals, SVI's
  guide covers them, held-out densities integrate them by Monte Carlo; MLE and MAP refuse them;
- **observed sites**: the likelihood.

The data plate is the `pyro.plate` named ``data_plate``, vectorised (``with pyro.plate(...)``)
or sequential (``for i in pyro.plate(...)``); its size must be the number of data. A program
with no data plate models one series: one entry per observed value.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass, field

import pyro.distributions as dist
import torch
from torch.distributions import biject_to, constraints, transform_to

from ppl_models import pyro_internals

ROLES = ("param", "global", "enumerated", "local", "observed")


class ProgramError(ValueError):
    """The user's program raised, or broke a rule of the protocol."""


@dataclass
class Site:
    """One site of the program and its role (see the module docstring)."""

    name: str
    role: str
    shape: torch.Size  # the value's shape in the discovery trace
    constraint: constraints.Constraint  # a param's constraint, a sample site's support
    event_dim: int
    dtype: torch.dtype
    plates: tuple = ()  # ((plate name, dim, size), ...) of the vectorised plates it sits in
    factor: bool = False  # a pyro.factor (an observed term with no data value)
    enumerable: bool = True  # a discrete latent with a finite support to sum over
    in_data: bool = False  # inside the data plate (vectorised or sequential)

    @property
    def free(self) -> bool:
        """A parameter: a point parameter or a global random one."""
        return self.role in ("param", "global")


@dataclass
class Roles:
    sites: OrderedDict  # name -> Site, in program order
    data_plate: str | None  # the data plate's name, None for one series
    max_plate_nesting: int
    observed_numel: int = 0
    plate_size: int | None = None  # the data plate's size in the discovery trace
    sequential: bool = False  # the data plate is iterated (for i in pyro.plate(...))
    # leading data values the likelihood conditions on (a plate over the last T - p values of
    # a series: an autoregression's conditional likelihood), 0 when the plate covers the data
    context: int = 0
    # pyro.deterministic sites (functions of the others, reported with the posterior)
    deterministic: dict = field(default_factory=dict)  # name -> Site
    _named: dict = field(default_factory=dict, repr=False, compare=False)

    def named(self, *roles) -> list[str]:
        """The sites with one of `roles`, in program order (kept: the sites are fixed once
        discovered, and AR(2)'s 307 are asked for on every gradient)."""
        if roles not in self._named:
            self._named[roles] = [k for k, s in self.sites.items() if s.role in roles]
        return list(self._named[roles])

    @property
    def free(self) -> list[str]:
        return self.named("param", "global")

    @property
    def enumerated(self) -> list[str]:
        return self.named("enumerated")

    @property
    def local(self) -> list[str]:
        return self.named("local")

    @property
    def discrete_data(self) -> bool:
        """Every observed value is discrete: a log-likelihood above 0 is impossible."""
        observed = [s for s in self.sites.values() if s.role == "observed" and not s.factor]
        return bool(observed) and all(s.constraint.is_discrete for s in observed)


def is_factor(site) -> bool:
    return site["infer"].get("is_auxiliary", False) and isinstance(site["fn"], dist.Unit)


def skip(site) -> bool:
    return (
        site["type"] != "sample"
        or pyro_internals.is_subsample(site["fn"])
        or site["infer"].get("_deterministic", False)
    )


def constraint_of(site) -> constraints.Constraint:
    if site["type"] == "param":
        c = site["kwargs"].get("constraint")
        if c is None:
            c = pyro_internals.param_constraint(site["name"])
        return c
    return site["fn"].support


def event_dim_of(site) -> int:
    if site["type"] == "param":
        e = site["kwargs"].get("event_dim")
        return int(e) if e is not None else site["value"].dim()
    return len(site["fn"].event_shape)


def transform_of(constraint):
    """Unconstrained space -> the support (a bijection where torch has one)."""
    try:
        return biject_to(constraint)
    except NotImplementedError:
        return transform_to(constraint)


def unconstrained_size(site: Site) -> int:
    """Free parameters of a site: the dimension of its unconstrained space (a K-simplex: K-1)."""
    t = transform_of(site.constraint)
    return int(t.inverse_shape(site.shape).numel())


def data_frame(site, plate: str | None):
    """The data plate's frame in a trace site's plate stack, or None."""
    if plate is None:
        return None
    return next((f for f in site["cond_indep_stack"] if f.name == plate), None)


def enumerate_discrete(msg) -> dict:
    """Parallel enumeration for every unobserved discrete site with a finite support."""
    if msg["type"] != "sample" or msg["is_observed"] or skip(msg):
        return {}
    fn = msg["fn"]
    if fn.support.is_discrete and getattr(fn, "has_enumerate_support", False):
        return {"enumerate": "parallel"}
    return {}


def read_roles(tr, data_plate: str | None) -> Roles:
    """Roles of every site of trace `tr` (run with nothing conditioned)."""
    frames = [
        f
        for s in tr.nodes.values()
        if s["type"] == "sample"
        for f in s["cond_indep_stack"]
        if f.name == data_plate
    ]
    plate = data_plate if frames else None
    sites = OrderedDict()
    for name, site in tr.nodes.items():
        if site["type"] == "param":
            v = site["value"]
            sites[name] = Site(
                name, "param", v.shape, constraint_of(site), event_dim_of(site), v.dtype
            )
        elif not skip(site) and not _imputes_nothing(tr, name):
            sites[name] = _sample_site(site, plate)
    nesting = max(
        [
            -f.dim
            for s in tr.nodes.values()
            if s["type"] == "sample"
            for f in s["cond_indep_stack"]
            if f.vectorized
        ]
        + [0]
    )
    observed = sum(
        int(tr.nodes[k]["value"].numel())
        for k, s in sites.items()
        if s.role == "observed" and not s.factor
    )
    return Roles(
        sites,
        plate,
        nesting,
        observed,
        plate_size=frames[0].size if frames else None,
        sequential=bool(frames) and not frames[0].vectorized,
        deterministic={
            k: _deterministic_site(site, plate)
            for k, site in tr.nodes.items()
            if site["type"] == "sample" and site["infer"].get("_deterministic", False)
        },
    )


def _imputes_nothing(tr, name) -> bool:
    """The latent Pyro adds beside an observation with ``obs_mask`` (``y_unobserved``, beside
    ``y_observed``) where the mask keeps every value: it imputes nothing and has no density
    (masked out), so it is no parameter; it runs as the program draws it."""
    site = tr.nodes[name]
    if not name.endswith("_unobserved") or name[: -len("unobserved")] + "observed" not in tr:
        return False
    mask = site["mask"]
    return mask is False or (torch.is_tensor(mask) and not bool(mask.any()))


def _sample_site(site, plate) -> Site:
    v, fn = site["value"], site["fn"]
    plates = tuple((f.name, f.dim, f.size) for f in site["cond_indep_stack"] if f.vectorized)
    in_data = data_frame(site, plate) is not None
    if site["is_observed"]:
        role = "observed"
    elif fn.support.is_discrete:
        role = "enumerated"
    else:
        role = "local" if in_data else "global"
    return Site(
        site["name"],
        role,
        v.shape,
        fn.support,
        len(fn.event_shape),
        v.dtype,
        plates,
        factor=is_factor(site),
        enumerable=bool(getattr(fn, "has_enumerate_support", False)),
        in_data=in_data,
    )


def _deterministic_site(site, plate) -> Site:
    """A pyro.deterministic site (a Delta whose event covers its whole value): its batch dims
    are those of the plates it sits in."""
    out = _sample_site(site, plate)
    depth = max([-d for _, d, _ in out.plates] + [0])
    return dataclasses.replace(out, role="deterministic", event_dim=max(0, len(out.shape) - depth))


def check_roles(
    roles: Roles,
    n: int,
    numel: int,
    label: str,
    data_plate: str | None,
    mismatched: list[str] = (),
    data_arg: str = "x",
) -> None:
    """ProgramErrors for programs that break the protocol on data of `n` rows (`numel`
    values); `mismatched`: given covariates whose length differs from the data."""
    observed = roles.named("observed")
    if not observed:
        latent = [k for k, s in roles.sites.items() if s.role in ("local", "enumerated")]
        hint = f" (it samples {', '.join(map(repr, latent))} without obs=)" if latent else ""
        raise ProgramError(
            f"the program {label} observes nothing: run with the data, it has no observed "
            f"pyro.sample site{hint}. Pass the data to the sample statement that generates "
            "them: pyro.sample('x', ..., obs=x)"
        )
    for name in roles.enumerated:
        if not roles.sites[name].enumerable:
            raise ProgramError(
                f"site {name!r} is a discrete latent variable without a finite support to "
                "enumerate (a to_event or an unbounded count), so it cannot be summed out; "
                "give it a finite support (a Categorical or a Bernoulli, without to_event) "
                "or make it continuous"
            )
    if data_plate not in ("data", None) and roles.data_plate is None:
        raise ProgramError(
            f"data_plate={data_plate!r}, but the program has no pyro.plate named "
            f"{data_plate!r}; name the plate over your data that way, or pass the name "
            "it has (data_plate=None for a program of one series)"
        )
    if roles.data_plate is not None:
        if roles.plate_size != n and mismatched:
            raise ProgramError(
                f"{'; '.join(mismatched)} but the data ({data_arg}) have {n} rows: per-datum "
                f"covariates need one row per datum (the data plate {roles.data_plate!r} has "
                f"size {roles.plate_size})"
            )
        per_row = numel // n  # values per datum
        if (
            roles.plate_size < n
            and not roles.sequential
            and roles.observed_numel == roles.plate_size * per_row
        ):
            # a plate over the last values: the first n - size are the context (set here)
            roles.context = n - roles.plate_size
        elif roles.plate_size != n:
            raise ProgramError(
                f"the data plate {roles.data_plate!r} has size {roles.plate_size} but the data "
                f"have {n} rows; build it as pyro.plate({roles.data_plate!r}, len({data_arg})) "
                "(and give covariates one row per datum)"
            )
    if roles.observed_numel > numel:
        raise ProgramError(
            f"the program observes {roles.observed_numel} values but the data hold {numel}; "
            "observe each value of the data once"
        )


__all__ = [
    "ROLES",
    "ProgramError",
    "Roles",
    "Site",
    "check_roles",
    "enumerate_discrete",
    "read_roles",
    "transform_of",
    "unconstrained_size",
]
