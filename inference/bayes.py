"""Posteriors by SVI (Pyro autoguides) and NUTS (`pyro.infer.MCMC`).

Both run the model's likelihood as one vectorised factor (`Model.log_likelihood_factor`, tested
equal to the log joint of `forward`), with the model's random attributes (its priors) as latent
sites, and both start at the MAP estimate moved into the interior of the support: the default
init of autoguides (prior medians) can leave SVI far from the posterior with no warning.
"""

from __future__ import annotations

import torch
from pyro.distributions.transforms import biject_to
from pyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDelta, AutoMultivariateNormal, AutoNormal, init_to_value
from pyro.optim import ClippedAdam
from tqdm.auto import tqdm

from inference.optimize import point_fit, show_progress
from inference.result import Fit
from ppl_models.checks import positive_int

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


def svi(model, x, *, guide, steps, lr, num_samples, num_particles, progress_bar) -> Fit:
    make_guide = _resolve_guide(guide)
    steps = positive_int(steps, "steps")
    num_samples = positive_int(num_samples, "num_samples")
    bayes = model.bayesian()
    program = Program(bayes, x)
    init = initial_values(model, x)
    g = make_guide(program, init_loc_fn=init_to_value(values=init))
    # Adam whose step size decays to a tenth over the run: the last steps average out noise.
    optim = ClippedAdam({"lr": lr, "lrd": 0.1 ** (1 / steps)})
    engine = SVI(program, g, optim, Trace_ELBO(num_particles=num_particles))
    n, losses = len(x), []
    bar = tqdm(range(steps), desc=f"svi {type(model).__name__}",
               disable=not show_progress(progress_bar), leave=False)
    for _ in bar:
        losses.append(engine.step() / n)
        if len(losses) % 100 == 0:
            bar.set_postfix(elbo_nats=f"{sum(losses[-100:]) / 100:.4f}")
    with torch.no_grad():
        samples = [g() for _ in range(num_samples)]
    draws = {k: torch.stack([s[k] for s in samples])[None].detach() for k in init}
    point = model.point().set_params({k: v.mean((0, 1)) for k, v in draws.items()})
    guide_name = guide if isinstance(guide, str) else getattr(guide, "__name__", str(guide))
    return Fit(model=point, method="svi", data=x, draws=draws, losses=losses,
               info={"guide": guide_name, "steps": steps, "init": "MAP"})


def nuts(model, x, *, num_samples, warmup_steps, num_chains, jit_compile, target_accept_prob,
         max_tree_depth, progress_bar) -> Fit:
    num_samples = positive_int(num_samples, "num_samples")
    warmup_steps = positive_int(num_samples if warmup_steps is None else warmup_steps,
                                "warmup_steps", 0)
    num_chains = positive_int(num_chains, "num_chains")
    bayes = model.bayesian()
    priors = model.priors()
    init = initial_values(model, x)
    # Chains start at the MAP, jittered in the unconstrained space so that r_hat means something.
    initial_params = {}
    for name, value in init.items():
        u = biject_to(priors[name].support).inv(value)
        jitter = 0.1 * torch.randn((num_chains, *u.shape), dtype=u.dtype)
        initial_params[name] = (u + jitter) if num_chains > 1 else u
    kernel = NUTS(Program(bayes, x), jit_compile=jit_compile, ignore_jit_warnings=True,
                  target_accept_prob=target_accept_prob, max_tree_depth=max_tree_depth,
                  init_strategy=init_to_value(values=init))
    mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=warmup_steps,
                num_chains=num_chains, initial_params=initial_params,
                disable_progbar=not show_progress(progress_bar))
    mcmc.run()
    draws = {k: v.detach() for k, v in mcmc.get_samples(group_by_chain=True).items()}
    diverging = torch.zeros(num_chains, num_samples, dtype=torch.bool)
    for c, idx in enumerate(mcmc.diagnostics().get("divergences", {}).values()):
        diverging[c, list(idx)] = True
    point = model.point().set_params({k: v.mean((0, 1)) for k, v in draws.items()})
    return Fit(model=point, method="nuts", data=x, draws=draws,
               sample_stats={"diverging": diverging},
               info={"num_chains": num_chains, "warmup_steps": warmup_steps,
                     "divergences": int(diverging.sum()), "init": "MAP, jittered per chain"})
