"""Local latents integrated out of NUTS where their prior is conjugate to the one likelihood
that reads them, and drawn afterwards from their exact conditional (collapsed, or
Rao-Blackwellised, sampling).

A continuous local latent L (one per datum, inside the data plate) qualifies where the program's
density reads it in exactly one place besides its own prior, an observation O of the data plate,
as that observation's parameter itself (a Normal's loc: affine in it):

- L ~ Beta(a, b) and O ~ Binomial(n, probs=L) or Bernoulli(probs=L): O ~ BetaBinomial(a, b, n)
  once L is integrated out, and L given O = k is Beta(a + k, b + n - k);
- L ~ Gamma(a, b) and O ~ Poisson(rate=L): O ~ GammaPoisson(a, b), L given O = k is
  Gamma(a + k, b + 1);
- L_1..L_K ~ Normal(m_k, s_k), of one shape, and O ~ Normal(loc=alpha + sum_k B_k L_k,
  scale=sigma) (inside any `.to_event`), alpha, B_k and sigma not depending on them, each
  element of the latents reading its own block of O's values: per block O ~ N(alpha + B m,
  diag(sigma^2) + B diag(s^2) B^T), and the latents given O are jointly Normal
  (`inference.compound.GaussianBlock`). A centred random effect (loc = L), a non-centred one
  (loc = mu + tau L: the eight schools as Pyro and ArviZ write them), and the intercept and
  slope of a series' regression (loc = c_s + phi_s y_(s,t-1), c_s = mu_c + tau_c z_s, ...: a
  hierarchical AR(1), 99 values a block).

a and b (m and s) may depend on the global parameters (the baseball example's m kappa and (1 -
m) kappa), which NUTS then samples from their exact marginal posterior: the funnel between
kappa and the 18 batting averages is gone, two dimensions are left. Both facts are checked on
the program at the start of the fit, never assumed from names: by autograd, no other site's
density depends on L; O's parameter equals L's value at two values of L (a Normal's loc is
jointly affine in its latents at a point where every element differs, `_affine`); neither site
is masked or scaled (a subsampled plate), nothing is enumerated. Anything else is sampled as
before.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from inference.compound import (
    GaussianBlock,
    compound_log_prob,
    conditional,
    draw,
    layout,
)
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
    pairs = []
    for name in program.local:
        pair = _pair(program, x, values, name)
        if pair is None:
            continue
        group = [p.latent for p in pairs if p.observed == pair.observed] + [name]
        if pair.family != "normal-normal":
            if len(group) == 1:  # one Beta or Gamma latent per observation
                pairs.append(pair)
        elif len(group) <= MAX_LOC_LATENTS and _affine(program, x, values, group, pair.observed):
            pairs.append(pair)
    return pairs if pairs and _same_joint(program, x, values, pairs) else []


# Normal latents integrated out of one loc at most: Lambda's Cholesky factor is unrolled
# into about K^3 / 6 elementwise operations of the potential's graph
MAX_LOC_LATENTS = 8


def _same_joint(program, x, values: dict, pairs: list[Pair]) -> bool:
    """Whether the densities `log_joint` keeps, at `values`, are the program's own log joint
    less each pair's prior and observation: whatever else the program's density holds (a
    Model's own priors, factors, observations outside the data plate) is then kept too."""
    try:
        with torch.no_grad():
            tr = _trace(program, x, values)
            want = program.log_joint(x, values)
            for g in _groups(pairs):
                obs = tr.nodes[g[0].observed]
                want = want - obs["fn"].log_prob(obs["value"]).sum()
                for p in g:
                    want = want - tr.nodes[p.latent]["fn"].log_prob(values[p.latent]).sum()
            got = _rest(tr, pairs)
        tol = max(1e-9, 100 * torch.finfo(got.dtype).eps)
        return bool(torch.isclose(got, want.to(got.dtype), rtol=tol, atol=tol))
    except Exception:  # a program this check cannot run: sampled as before
        return False


def _rest(tr, pairs: list[Pair]) -> torch.Tensor:
    """The trace's log density less the pairs' latents and observations."""
    gone = {p.latent for p in pairs} | {p.observed for p in pairs}
    return tr.log_prob_sum(lambda k, site: k not in gone and not skip(site))


def _trace(program, x, values):
    with poutine.block(), pyro.validation_enabled(False), observed_unexpanded():
        tr = program.trace(x=x, values=values, enumerate_=False)
    return tr


def _base(fn):
    """The distribution inside `.to_event` (its event dims reinterpreted batch dims)."""
    while isinstance(fn, dist.Independent):
        fn = fn.base_dist
    return fn


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
    """An observation of the data plate whose distribution (inside any `.to_event`) is the
    family's likelihood with the latent's value itself as its parameter, elementwise (a
    Normal's loc: each latent element reading its own block of values, `compound.layout`;
    affine in it, `_affine`), no other argument depending on it."""
    _, likelihoods, parameter = FAMILIES[family]
    fn = _base(site["fn"])
    if not site["is_observed"] or type(fn) not in likelihoods or not _plain(site):
        return False
    if parameter not in vars(fn):  # Bernoulli(logits=...): not the latent itself
        return False
    for other in OTHERS[family]:
        arg = getattr(fn, other, None)
        if arg is not None and arg.requires_grad and _depends(arg, leaf):
            return False
    if family == "normal-normal":
        outer = site["fn"]
        return layout(leaf.shape, outer.batch_shape, outer.event_shape) is not None
    value = getattr(fn, parameter)
    return value.shape == leaf.shape and torch.equal(value.detach(), leaf.detach())


@torch.no_grad()
def _affine(program, x, values: dict, names: list[str], reader: str) -> bool:
    """Whether the reader's loc is alpha + sum_k B_k L_k for the latents `names` (of one
    shape): exact at a point where every element of every latent differs (in (0.3, 1)),
    alpha and B_k as `_traces` takes them (all at 0; L_k at 1)."""
    shape = values[names[0]].shape
    if any(values[n].shape != shape for n in names):
        return False
    tr, slopes = _traces(program, x, values, [Pair(n, reader, "normal-normal") for n in names])
    fn = tr.nodes[reader]["fn"]
    alpha, event = _base(fn).loc, (1,) * len(fn.event_shape)
    v = values[names[0]]
    index = torch.arange(len(names) * v.numel(), dtype=v.dtype, device=v.device)
    spread = (0.3 + 0.7 * torch.frac(index * 0.6180339887)).reshape(len(names), *shape)
    want = alpha + sum(slopes[n] * s.reshape(*shape, *event) for n, s in zip(names, spread))
    got = _base(_trace(program, x, {**values, **dict(zip(names, spread))}).nodes[reader]["fn"])
    tol = max(1e-9, 100 * torch.finfo(v.dtype).eps)
    size = float((alpha.abs() + sum(b.abs() for b in slopes.values())).max())
    return bool(torch.allclose(got.loc, want, rtol=tol, atol=tol * size))


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


def _groups(pairs: list[Pair]) -> list[list[Pair]]:
    """The pairs by observation, in order: a Beta or Gamma latent alone, or the Normal latents
    of one loc."""
    out: dict[str, list[Pair]] = {}
    for p in pairs:
        out.setdefault(p.observed, []).append(p)
    return list(out.values())


def _traces(program, x, values: dict, pairs: list[Pair]):
    """(a trace with every Normal latent at 0, each Normal latent's slope B_k: its reader's loc
    with it at 1 less that trace's): the k-th latent of each loc at 1 in the k-th further
    trace."""
    normal = [g for g in _groups(pairs) if g[0].family == "normal-normal"]
    zeros = {p.latent: torch.zeros_like(values[p.latent]) for g in normal for p in g}
    tr = _trace(program, x, {**values, **zeros})
    slopes = {}
    for k in range(max((len(g) for g in normal), default=0)):
        ones = {g[k].latent: torch.ones_like(values[g[k].latent]) for g in normal if k < len(g)}
        shifted = _trace(program, x, {**values, **zeros, **ones})
        for g in normal:
            if k < len(g):
                at_one, at_zero = (_base(t.nodes[g[k].observed]["fn"]) for t in (shifted, tr))
                slopes[g[k].latent] = at_one.loc - at_zero.loc
    return tr, slopes


def _block(tr, group: list[Pair], slopes: dict) -> GaussianBlock:
    obs = tr.nodes[group[0].observed]
    fn = obs["fn"]
    priors = [tr.nodes[p.latent]["fn"] for p in group]
    order = layout(priors[0].batch_shape, fn.batch_shape, fn.event_shape)
    return GaussianBlock(priors, _base(fn), [slopes[p.latent] for p in group], obs["value"], order)


def log_joint(program, x, values: dict, pairs: list[Pair]) -> torch.Tensor:
    """log p(x, theta) with the pairs' latents integrated out: a trace (and one more per
    latent of the largest loc, for the slopes), every other site's density, each
    observation's compound one."""
    tr, slopes = _traces(program, x, values, pairs)
    total = _rest(tr, pairs)
    for g in _groups(pairs):
        obs = tr.nodes[g[0].observed]
        if g[0].family == "normal-normal":
            lp = _block(tr, g, slopes).log_prob
        else:
            prior = tr.nodes[g[0].latent]["fn"]
            lp = compound_log_prob(g[0].family, prior, _base(obs["fn"]), obs["value"])
        total = total + lp.sum().to(total.dtype)
    return total


# the conditional distribution of a Beta or Gamma latent and the names of its arguments
CONDITIONALS = {
    "beta-binomial": (dist.Beta, ("concentration1", "concentration0")),
    "gamma-poisson": (dist.Gamma, ("concentration", "rate")),
}


@torch.no_grad()
def draw_latents(program, x, values: dict, draws: dict, pairs: list[Pair]) -> dict:
    """The pairs' latents at each posterior draw (draws: name -> (chain, draw, ...)), one draw
    from their conditional given that draw of the rest (the fit's seed gives the same ones;
    the Normal latents of one loc jointly, `compound.draw`). The conditionals' arguments come
    from one trace of the program per draw, by a `torch.jit.trace` of it where that gives the
    program's numbers at the middle and last draws (baseball, 1,000 draws: 0.39 ms a draw
    through Pyro's handlers, 0.07 ms traced, the tracing included)."""
    lead, at = program.each_draw(draws)
    names, groups = list(draws), _groups(pairs)

    def arguments(*tensors):
        tr, slopes = _traces(program, x, {**values, **dict(zip(names, tensors))}, pairs)
        out = []
        for g in groups:
            if g[0].family == "normal-normal":
                out.extend(_block(tr, g, slopes).arguments())
                continue
            obs = tr.nodes[g[0].observed]
            prior = tr.nodes[g[0].latent]["fn"]
            given = conditional(g[0].family, prior, _base(obs["fn"]), obs["value"])
            out.extend(getattr(given, a) for a in CONDITIONALS[g[0].family][1])
        return tuple(out)

    points = [tuple(point[k] for k in names) for point in at]
    run = _traced(arguments, points[0], [points[len(points) // 2], points[-1]])
    columns = [torch.stack(c) for c in zip(*(run(*point) for point in points))]
    out, i = {}, 0
    for g in groups:
        if g[0].family == "normal-normal":
            value = draw(*columns[i : i + 3])  # (draws, elements, latents)
            i += 3
            for k, p in enumerate(g):
                out[p.latent] = value[..., k].reshape(*lead, *values[p.latent].shape)
            continue
        kind, args = CONDITIONALS[g[0].family]
        value = kind(*columns[i : i + len(args)]).sample()
        i += len(args)
        out[g[0].latent] = value.reshape(*lead, *value.shape[1:])
    return out


def _traced(fn, first: tuple, checks: list[tuple]):
    """fn traced at `first` where the trace gives fn's numbers at each of `checks`, else fn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            traced = torch.jit.trace(fn, first, check_trace=False)
            ok = all(
                torch.allclose(a, b, rtol=1e-12, atol=0.0)
                for point in checks
                for a, b in zip(traced(*point), fn(*point))
            )
        except Exception:  # a program that cannot be traced: one Pyro trace a draw
            ok = False
    return traced if ok else fn


__all__ = [
    "FAMILIES",
    "CONDITIONALS",
    "Collapsed",
    "Pair",
    "draw_latents",
    "find",
    "log_joint",
]
