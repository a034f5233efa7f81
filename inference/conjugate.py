"""Local latents integrated out of NUTS where their prior is conjugate to the one likelihood
that reads them, and drawn afterwards from their exact conditional (collapsed, or
Rao-Blackwellised, sampling).

A continuous local latent L (one per datum, inside the data plate) qualifies where the program's
density reads it in exactly one place besides its own prior, an observation O of the data plate,
as that observation's parameter itself:

- L ~ Beta(a, b) and O ~ Binomial(n, probs=L) or Bernoulli(probs=L): O ~ BetaBinomial(a, b, n)
  once L is integrated out, and L given O = k is Beta(a + k, b + n - k);
- L ~ Gamma(a, b) and O ~ Poisson(rate=L): O ~ GammaPoisson(a, b), L given O = k is
  Gamma(a + k, b + 1);
- L ~ Normal(m, s) and O ~ Normal(loc=L, scale=sigma), sigma not depending on L: O ~ Normal(m,
  sqrt(s^2 + sigma^2)), L given O = y is Normal with precision 1/s^2 + 1/sigma^2 and mean
  (m/s^2 + y/sigma^2) / precision (a centred random effect).

a and b may depend on the global parameters (the baseball example's m kappa and (1 - m) kappa),
which NUTS then samples from their exact marginal posterior: the funnel between kappa and the 18
batting averages is gone, two dimensions are left. Both facts are checked on the program at the
start of the fit, never assumed from names: by autograd, no other site's density depends on L;
O's parameter equals L's value at two values of L; neither site is masked or scaled (a
subsampled plate), nothing is enumerated. Anything else is sampled as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from inference.laplace import Whitened
from ppl_models.programs.roles import skip
from ppl_models.pyro_internals import observed_unexpanded

# the latent's prior, the observation's distribution and the name of its parameter
FAMILIES = {
    "beta-binomial": (dist.Beta, (dist.Binomial, dist.Bernoulli), "probs"),
    "gamma-poisson": (dist.Gamma, (dist.Poisson,), "rate"),
    "normal-normal": (dist.Normal, (dist.Normal,), "loc"),
}
# the observation's other arguments, which must not depend on the latent
OTHERS = {"beta-binomial": ("total_count",), "gamma-poisson": (), "normal-normal": ("scale",)}


@dataclass(frozen=True)
class Pair:
    """A local latent integrated out, the observation that reads it, and how."""

    latent: str
    observed: str
    family: str

    def describe(self) -> str:
        prior, likelihood = self.family.split("-")
        return (
            f"{self.latent} (a {prior.capitalize()} prior, {likelihood.capitalize()} "
            f"{self.observed!r}) integrated out and drawn from its conditional at each draw"
        )


def find(program, x, values: dict) -> list[Pair]:
    """The local latents of `program` on validated `x` that `values` (its constrained values,
    the MAP) show to be conjugate to their one reader (see the module docstring)."""
    if program.ours or program.roles.enumerated or not program.local or program.imputed:
        return []
    pairs = [_pair(program, x, values, name) for name in program.local]
    return [p for p in pairs if p is not None]


def _trace(program, x, values):
    with poutine.block(), pyro.validation_enabled(False), observed_unexpanded():
        tr = program.trace(x=x, values=values, enumerate_=False)
    return tr


def _pair(program, x, values: dict, name: str) -> Pair | None:
    try:
        tr = _trace(program, x, values)
        site = tr.nodes[name]
        family = next(
            (f for f, (prior, _, _) in FAMILIES.items() if type(site["fn"]) is prior), None
        )
        if family is None or not _plain(site):
            return None
        second = site["fn"].mean.detach()  # a second value of L, for the equality check
        reader = None
        for value in (values[name], second):
            leaf = value.detach().clone().requires_grad_(True)
            tr = _trace(program, x, {**values, name: leaf})
            readers = [k for k, s in tr.nodes.items() if k != name and _reads(s, leaf)]
            if len(readers) != 1 or reader not in (None, readers[0]):
                return None
            reader = readers[0]
            if not _reads_as_parameter(tr.nodes[reader], leaf, family):
                return None
        return Pair(name, reader, family)
    except Exception:  # a program this check cannot run: sampled as before
        return None


def _plain(site) -> bool:
    """Neither masked nor scaled (a subsampled plate scales its sites)."""
    return site["mask"] is None and float(site["scale"]) == 1.0


def _reads(site, leaf: torch.Tensor) -> bool:
    """Whether the site's density depends on `leaf` (autograd's graph)."""
    if skip(site):
        return False
    lp = site["fn"].log_prob(site["value"])
    return lp.requires_grad and _depends(lp, leaf)


def _reads_as_parameter(site, leaf: torch.Tensor, family: str) -> bool:
    """An observation of the data plate whose distribution is the family's likelihood with
    the latent's value itself as its parameter (no other argument depending on it)."""
    _, likelihoods, parameter = FAMILIES[family]
    fn = site["fn"]
    if not site["is_observed"] or type(fn) not in likelihoods or not _plain(site):
        return False
    if parameter not in vars(fn):  # Bernoulli(logits=...): not the latent itself
        return False
    value = getattr(fn, parameter)
    if fn.event_shape != () or value.shape != leaf.shape:
        return False
    for other in OTHERS[family]:
        arg = getattr(fn, other, None)
        if arg is not None and arg.requires_grad and _depends(arg, leaf):
            return False
    return torch.equal(value.detach(), leaf.detach())


def _depends(value: torch.Tensor, leaf: torch.Tensor) -> bool:
    (grad,) = torch.autograd.grad(value.sum(), leaf, allow_unused=True, retain_graph=True)
    return grad is not None


class Collapsed(Whitened):
    """`inference.laplace.Whitened` over everything but the pairs' latents, whose log joint
    integrates them out (`log_joint`)."""

    def __init__(self, program, x, init: dict, pairs: list[Pair], jit_compile=False):
        self.pairs = pairs  # before the Laplace approximation, which evaluates the potential
        gone = {p.latent for p in pairs}
        names = [k for k in program.sampled if k not in gone]
        super().__init__(program, x, init, jit_compile=jit_compile, names=names)

    def log_joint(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        return log_joint(self.program, self.x, {**self.fixed, **theta}, self.pairs)


def compound(family: str, prior, likelihood):
    """The observation's distribution with the latent integrated out."""
    if family == "beta-binomial":
        n = getattr(likelihood, "total_count", None)
        n = torch.ones_like(prior.concentration1) if n is None else n
        return dist.BetaBinomial(prior.concentration1, prior.concentration0, n)
    if family == "gamma-poisson":
        return dist.GammaPoisson(prior.concentration, prior.rate)
    return dist.Normal(prior.loc, (prior.scale**2 + likelihood.scale**2).sqrt())


def conditional(family: str, prior, likelihood, observed: torch.Tensor):
    """The latent's distribution given its observation."""
    if family == "beta-binomial":
        n = getattr(likelihood, "total_count", None)
        n = torch.ones_like(observed) if n is None else n
        return dist.Beta(prior.concentration1 + observed, prior.concentration0 + n - observed)
    if family == "gamma-poisson":
        return dist.Gamma(prior.concentration + observed, prior.rate + 1)
    a, b = prior.scale**-2, likelihood.scale**-2
    return dist.Normal((prior.loc * a + observed * b) / (a + b), (a + b) ** -0.5)


def log_joint(program, x, values: dict, pairs: list[Pair]) -> torch.Tensor:
    """log p(x, theta) with the pairs' latents integrated out: one trace (at any value of the
    latents, as `values` holds them), every other site's density, each pair's compound one."""
    tr = _trace(program, x, values)
    gone = {p.latent for p in pairs} | {p.observed for p in pairs}
    total = tr.log_prob_sum(lambda k, site: k not in gone and not skip(site))
    for p in pairs:
        obs = tr.nodes[p.observed]
        total = total + compound(p.family, tr.nodes[p.latent]["fn"], obs["fn"]).log_prob(
            obs["value"]
        ).sum().to(total.dtype)
    return total


@torch.no_grad()
def draw_latents(program, x, values: dict, draws: dict, pairs: list[Pair]) -> dict:
    """The pairs' latents at each posterior draw (draws: name -> (chain, draw, ...)), one draw
    from their conditional given that draw of the rest (the fit's seed gives the same ones)."""
    lead, at = program.each_draw(draws)
    out = {p.latent: [] for p in pairs}
    for point in at:
        tr = _trace(program, x, {**values, **point})
        for p in pairs:
            obs = tr.nodes[p.observed]
            given = conditional(p.family, tr.nodes[p.latent]["fn"], obs["fn"], obs["value"])
            out[p.latent].append(given.sample())
    return {k: torch.stack(v).reshape(*lead, *v[0].shape) for k, v in out.items()}


__all__ = [
    "FAMILIES",
    "Collapsed",
    "Pair",
    "compound",
    "conditional",
    "draw_latents",
    "find",
    "log_joint",
]
