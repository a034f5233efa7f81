"""Posteriors by SVI (Pyro autoguides) and NUTS (`pyro.infer.MCMC`).

Both run the model's log joint with its vectorised likelihood (`Model._log_prob`, tested equal
to the log joint of `forward`) and its priors (the random attributes), and both start at the
MAP estimate moved into the interior of the support: the default init of autoguides (prior
medians) can leave SVI far from the posterior with no warning. Both run in coordinates whitened
by the Laplace approximation at the mode (`inference.laplace`), so that a badly scaled,
correlated posterior (raw data) looks like a standard normal to NUTS's unit mass matrix and to
Adam's steps; draws are mapped back to the model's parameters. The delta guide (a MAP by SVI)
runs on the model's own sites.
"""

from __future__ import annotations

import contextlib

import torch
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal, init_to_value
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from inference.laplace import Whitened
from inference.optimize import point_fit, show_progress
from inference.result import Fit
from ppl_models.base import local_params
from ppl_models.checks import positive_int

SMALL = 1_000_000  # data entries up to which sampling runs on one thread (`few_threads`)
GUIDES = {"normal": AutoNormal, "multivariate_normal": AutoMultivariateNormal,
          "mvn": AutoMultivariateNormal, "delta": AutoDelta}


class Program:
    """The model's likelihood of fixed data as a Pyro program with no arguments (picklable,
    so MCMC can run chains in other processes)."""

    def __init__(self, bayes_model, x):
        self.model, self.x = bayes_model, x

    def __call__(self):
        self.model.log_likelihood_factor(self.x)


def initial_values(model, x) -> dict[str, torch.Tensor]:
    """MAP estimate (closed form, or L-BFGS) with boundary values pulled inside the support."""
    point = point_fit(model, x, "map", progress_bar=False).model
    priors = model.priors()
    values = {}
    for name, value in point.get_params().items():
        t = biject_to(priors[name].support)
        u = torch.nan_to_num(t.inv(value), posinf=10.0, neginf=-10.0).clamp(-10.0, 10.0)
        values[name] = t(u).detach()
    return values


def _resolve_guide(guide):
    if isinstance(guide, str):
        if guide not in GUIDES:
            raise ValueError(f"unknown guide {guide!r}; choose one of {', '.join(GUIDES)} or pass "
                             "an autoguide class such as AutoLowRankMultivariateNormal")
        return GUIDES[guide]
    if callable(guide):
        return guide
    raise ValueError(f"guide must be a name ({', '.join(GUIDES)}) or an autoguide class, "
                     f"got {guide!r}")


@contextlib.contextmanager
def few_threads(x: torch.Tensor):
    """One intra-op thread while sampling a small problem (at most SMALL data entries): its
    tensor ops are tiny, gain nothing from threads and, on a busy machine, lose much to their
    synchronisation (measured on 2 busy cores: NUTS on AR(2) sunspots 27 s with one thread,
    133 s with two)."""
    before = torch.get_num_threads()
    if x.numel() <= SMALL:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def svi(model, x, **options) -> Fit:
    with few_threads(x), local_params():  # the guide's parameters live in the guide
        return _svi(model, x, **options)


def _svi(model, x, *, guide, steps, lr, num_samples, num_particles, progress_bar) -> Fit:
    make_guide = _resolve_guide(guide)
    steps = positive_int(steps, "steps")
    num_samples = positive_int(num_samples, "num_samples")
    init = initial_values(model, x)
    if make_guide is AutoDelta:  # a point mass on the model's own sites: the MAP, as in Pyro
        w, target, values = None, Program(model.bayesian(), x), init
    else:  # the guide lives in whitened coordinates, centred at the mode
        w = Whitened(model, x, init)
        target, values = w, {"z": torch.zeros(w.dim, dtype=w.mu.dtype)}
    g = make_guide(target, init_loc_fn=init_to_value(values=values))
    # The ELBO as a module with a torch optimizer, the module-local way: `pyro.infer.SVI`
    # collects parameters from the global param store, which AutoMultivariateNormal's plain
    # nn.Parameter (and a model switching to module-local mode inside the ELBO) defeat.
    elbo = Trace_ELBO(num_particles=num_particles)(target, g)
    elbo()  # creates the guide's parameters
    # Adam whose step size decays to a tenth over the run: the last steps average out noise.
    optim = ClippedAdam(elbo.parameters(), lr=lr, lrd=0.1 ** (1 / steps))
    n, losses = len(x), []
    bar = tqdm(range(steps), desc=f"svi {type(model).__name__}",
               disable=not show_progress(progress_bar), leave=False)
    for _ in bar:
        optim.zero_grad()
        loss = elbo()
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()) / n)
        if len(losses) % 100 == 0:
            bar.set_postfix(elbo_nats=f"{sum(losses[-100:]) / 100:.4f}")
    with torch.no_grad():
        samples = [g() for _ in range(num_samples)]
    if w is None:
        draws = {k: torch.stack([s[k] for s in samples])[None].detach() for k in init}
    else:
        draws = {k: v[None] for k, v in w.constrained(torch.stack([s["z"] for s in samples]))
                 .items()}
    guide_name = guide if isinstance(guide, str) else getattr(guide, "__name__", str(guide))
    return _posterior_fit(model, "svi", x, draws, losses=losses,
                          info={"guide": guide_name, "steps": steps,
                                "init": "MAP" if w is None else _whitened_info(w)})


def _posterior_fit(model, method, x, draws, **fields) -> Fit:
    """A Fit from (chain, draw, ...) posterior draws; its model holds the posterior means."""
    point = model.point().set_params({k: v.mean((0, 1)) for k, v in draws.items()})
    return Fit(model=point, method=method, data=x, draws=draws, **fields)


def _whitened_info(w) -> str:
    return ("MAP; run in coordinates whitened by the Laplace approximation" if w.dense else
            "MAP; run in the unconstrained space (too many parameters to whiten)")


def nuts(model, x, **options) -> Fit:
    with few_threads(x):
        return _nuts(model, x, **options)


def _nuts(model, x, *, num_samples, warmup_steps, num_chains, jit_compile, target_accept_prob,
          max_tree_depth, progress_bar) -> Fit:
    num_samples = positive_int(num_samples, "num_samples")
    warmup_steps = positive_int(num_samples if warmup_steps is None else warmup_steps,
                                "warmup_steps", 0)
    num_chains = positive_int(num_chains, "num_chains")
    init = initial_values(model, x)
    w = Whitened(model, x, init, jit_compile=jit_compile)
    # Chains start at draws from the Laplace approximation (spread, so that r_hat means
    # something), or at the MAP jittered by 0.1 where the posterior is not whitened.
    z0 = torch.randn(num_chains, w.dim, dtype=w.mu.dtype) * (1.0 if w.dense else 0.1)
    # Whitened, the Laplace covariance already is the (dense) mass matrix: warm-up only tunes
    # the step size (measured on AR(2) sunspots: 3.5 instead of 4.8 gradients per draw).
    kernel = NUTS(potential_fn=w.potential, target_accept_prob=target_accept_prob,
                  max_tree_depth=max_tree_depth, adapt_mass_matrix=not w.dense)
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                num_chains=num_chains, initial_params={"z": z0 if num_chains > 1 else z0[0]},
                disable_progbar=not show_progress(progress_bar))
    mcmc.run()
    draws = w.constrained(mcmc.get_samples(group_by_chain=True)["z"])
    diverging = torch.zeros(num_chains, num_samples, dtype=torch.bool)
    for c, idx in enumerate(mcmc.diagnostics().get("divergences", {}).values()):
        diverging[c, list(idx)] = True
    return _posterior_fit(model, "nuts", x, draws, sample_stats={"diverging": diverging},
                          info={"num_chains": num_chains, "warmup_steps": warmup_steps,
                                "divergences": int(diverging.sum()),
                                "init": _whitened_info(w)})
