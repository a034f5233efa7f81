"""`fit(model, data, method=...)`: the one entry point that fits any model."""

from __future__ import annotations

import time

import pyro
import torch

from inference import bayes, optimize
from inference.result import Fit
from ppl_models.checks import positive_int

METHODS = ("mle", "map", "exact", "svi", "nuts")

COMMON = {"seed": 0}
GRADIENT = {"solver": None, "valid": None, "batch_size": None, "max_epochs": None,
            "patience": None, "lr": None, "lr_decay": None, "progress_bar": None}
OPTIONS = {
    "mle": GRADIENT,
    "map": GRADIENT,
    "exact": {"num_samples": 1000},
    "svi": {"guide": "normal", "steps": 2000, "lr": 0.01, "num_samples": 1000,
            "num_particles": 1, "progress_bar": None},
    "nuts": {"num_samples": 1000, "warmup_steps": None, "num_chains": 1, "jit_compile": False,
             "target_accept_prob": 0.8, "max_tree_depth": 10, "progress_bar": None},
}


def fit(model, data, method: str = "mle", **options) -> Fit:
    """Fit `model` to `data` and return a `Fit`.

    Methods:
      - ``"mle"`` / ``"map"``: maximise the exact log-likelihood (plus the log prior for MAP, in
        the constrained space). Closed form where the model has one; otherwise gradient ascent:
        ``solver="lbfgs"`` (full batch; without ``valid``/``batch_size`` the default unless
        the model's ``gradient_solver`` says ``"adam"``, as NADE's does) or
        ``"adam"`` (minibatches of ``batch_size``, step size ``lr`` times ``lr_decay`` per
        epoch, early stopping on ``valid`` with ``patience``, best parameters kept).
        ``solver="lbfgs"`` forces the gradient path even where a closed form exists.
      - ``"exact"``: the exact conjugate posterior; ``num_samples`` exact draws are kept.
      - ``"svi"``: a Pyro autoguide (``guide="normal" | "multivariate_normal" | "delta"`` or
        an autoguide class), ``steps`` of Adam at ``lr``, started at the MAP estimate.
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
    x = model.validate(data)
    # a fresh param store scope: guides never collide with each other or with the user's params
    with torch.random.fork_rng(devices=[]), pyro.get_param_store().scope():
        seed = opts.pop("seed")
        torch.manual_seed(seed)
        start = time.perf_counter()
        model = model.init_from_data(x)  # data-dependent initial values, under the seed
        result = _RUN[method](model, x, **opts)
        result.fit_seconds = time.perf_counter() - start
    result.info.setdefault("seed", seed)
    return result


def _mle(model, x, **opts):
    return optimize.point_fit(model, x, "mle", **opts)


def _map(model, x, **opts):
    return optimize.point_fit(model, x, "map", **opts)


def _exact(model, x, num_samples):
    posterior = model.posterior(x)
    point = getattr(posterior, "predictive", None)
    if point is None:
        point = model.point().set_params(posterior.mean())
    # draws are exact and cheap to redo: Fit draws them on first use, with this seed
    return Fit(model=point, method="exact", data=x, posterior=posterior,
               info={"num_samples": positive_int(num_samples, "num_samples")})


_RUN = {"mle": _mle, "map": _map, "exact": _exact, "svi": bayes.svi, "nuts": bayes.nuts}
