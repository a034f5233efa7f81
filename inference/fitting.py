"""`fit(model, data, method=...)`: the one entry point that fits any model."""

from __future__ import annotations

import time

import pyro
import torch

from inference import bayes, optimize
from inference.result import Fit
from ppl_models.checks import positive_int
from ppl_models.program import as_program

METHODS = ("mle", "map", "exact", "svi", "nuts")

COMMON = {"seed": 0}
GRADIENT = {"solver": None, "valid": None, "batch_size": None, "max_epochs": None,
            "patience": None, "lr": None, "lr_decay": None, "restarts": None,
            "progress_bar": None}
OPTIONS = {
    "mle": GRADIENT,
    "map": GRADIENT,
    "exact": {"num_samples": 1000},
    "svi": {"guide": "normal", "steps": 2000, "lr": 0.01, "num_samples": 1000,
            "num_particles": 1, "progress_bar": None},
    "nuts": {"num_samples": 1000, "warmup_steps": None, "num_chains": 1, "jit_compile": False,
             "target_accept_prob": 0.8, "max_tree_depth": 10, "progress_bar": None},
}


def fit(model, data, method: str = "mle", *, data_plate: str | None = "data",
        **options) -> Fit:
    """Fit `model` to `data` and return a `Fit`.

    `model` is any Pyro program: a function ``model(x=None, num_samples=None)`` with
    ``pyro.param`` / ``pyro.sample`` sites, a `PyroModule` with `PyroParam` / `PyroSample`
    attributes, or a ppl_models model. Roles come from a trace (`ppl_models.program`): point
    parameters, global random parameters (their site distribution is the prior), discrete
    latents (summed out by enumeration), observed sites. `data_plate` names the
    `pyro.plate` over the data (None, or no such plate: the program models one series).

    Methods:
      - ``"mle"`` / ``"map"``: maximise the exact log-likelihood (plus the log prior for MAP, in
        the constrained space); global random parameters are free parameters for MLE. Closed
        form where the model has one; otherwise gradient ascent: ``solver="lbfgs"`` (full
        batch; the default unless the model's ``gradient_solver`` says ``"adam"``, as NADE's
        does, or the program has discrete latents, where Adam with larger steps works and
        L-BFGS stalls) or ``"adam"`` (minibatches of ``batch_size``, step size ``lr`` times
        ``lr_decay`` per epoch, early stopping on ``valid`` with ``patience``, best parameters
        kept). ``solver="lbfgs"`` forces the gradient path even where a closed form exists.
      - ``"exact"``: the exact conjugate posterior; ``num_samples`` exact draws are kept.
      - ``"svi"``: a Pyro autoguide (``guide="normal" | "multivariate_normal" | "delta"`` or
        an autoguide class) started at the MAP estimate, or a guide function you wrote over
        the program's own sites; ``steps`` of Adam at ``lr``.
      - ``"nuts"``: `pyro.infer.MCMC` with NUTS, ``num_samples``, ``warmup_steps``,
        ``num_chains``, started at the MAP estimate.

    ``seed`` (default 0) makes every method reproducible without touching the global RNG.
    The user's model is not modified: `Fit.model` is a fitted copy.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    allowed = {**COMMON, **OPTIONS[method]}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not apply to method={method!r}; "
                         f"its options are {', '.join(sorted(allowed))}")
    opts = {**allowed, **options}
    program = as_program(model, data_plate)
    if program is model:  # a Program passed in: work on a copy
        program = program.with_values({})
    x = program.validate(data)
    # a fresh param store scope: guides never collide with each other or with the user's params
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope():
        seed = opts.pop("seed")
        torch.manual_seed(seed)
        start = time.perf_counter()
        program = program.init_from_data(x)  # data-dependent initial values, under the seed
        if method not in ("exact",):
            program.discover(x)  # roles from a trace; the program's errors surface here
        result = _RUN[method](program, x, **opts)
        result.fit_seconds = time.perf_counter() - start
    result.info.setdefault("seed", seed)
    return result


def _mle(program, x, **opts):
    return optimize.point_fit(program, x, "mle", **opts)


def _map(program, x, **opts):
    return optimize.point_fit(program, x, "map", **opts)


def _exact(program, x, num_samples):
    posterior_of = program.accelerator("posterior")
    if posterior_of is None:
        raise ValueError(f"{program.label} has no conjugate form, so method='exact' is not "
                         "available; use method='nuts' or 'svi' for a posterior")
    posterior = posterior_of(x)
    predictive = getattr(posterior, "predictive", None)
    fitted = program.with_model(predictive) if predictive is not None else \
        program.with_values(posterior.mean())
    # draws are exact and cheap to redo: Fit draws them on first use, with this seed
    return Fit(fitted, "exact", x, posterior=posterior,
               info={"num_samples": positive_int(num_samples, "num_samples")})


_RUN = {"mle": _mle, "map": _map, "exact": _exact, "svi": bayes.svi, "nuts": bayes.nuts}
