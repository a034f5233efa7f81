"""`fit(model, data, method=...)`: the one entry point that fits any model."""

from __future__ import annotations

import math
import time

import pyro
import torch

from inference import nuts, optimize, svi
from inference.result import Fit, index_of
from ppl_models.checks import positive_int
from ppl_models.programs.program import as_program
from ppl_models.runtime import seeded

METHODS = ("mle", "map", "exact", "svi", "nuts")

COMMON = {"seed": 0, "device": None, "dtype": None}
GRADIENT = {
    "solver": None,
    "valid": None,
    "batch_size": None,
    "max_epochs": None,
    "patience": None,
    "lr": None,
    "lr_decay": None,
    "restarts": None,
    "progress_bar": None,
}
OPTIONS = {
    "mle": GRADIENT,
    "map": GRADIENT,
    "exact": {"num_samples": 1000},
    "svi": {
        "guide": "normal",
        "steps": 2000,
        "lr": 0.01,
        "num_samples": 1000,
        "num_particles": 1,
        "init": None,
        "batch_size": None,
        "jit_compile": None,
        "progress_bar": None,
    },
    "nuts": {
        "num_samples": 1000,
        "warmup_steps": None,
        "num_chains": 2,
        "jit_compile": None,
        "target_accept_prob": 0.8,
        "max_tree_depth": 10,
        "init": None,
        "progress_bar": None,
        "engine": None,
        "low_rank": False,
        "cores": None,
    },
}


# how each numeric option is checked: (kind, lower bound); kinds: int (>= bound), real
# (finite, > bound), unit (in (0, 1)), decay (in (0, 1]), bool, jit (a bool or "inductor")
RULES = {
    "steps": ("int", 1),
    "num_samples": ("int", 1),
    "warmup_steps": ("int", 0),
    "num_chains": ("int", 1),
    "num_particles": ("int", 1),
    "max_epochs": ("int", 1),
    "patience": ("int", 1),
    "batch_size": ("int", 1),
    "max_tree_depth": ("int", 1),
    "cores": ("int", 1),
    "restarts": ("int", 1),
    "lr": ("real", 0.0),
    "lr_decay": ("decay", None),
    "target_accept_prob": ("unit", None),
    "jit_compile": ("jit", None),
    "progress_bar": ("bool", None),
    "low_rank": ("bool", None),
}


def _fits_rule(v, kind: str, bound) -> bool:
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool) and v >= bound
    if kind == "real":
        return number and math.isfinite(v) and v > bound
    if kind == "unit":
        return number and 0 < v < 1
    if kind == "decay":
        return number and 0 < v <= 1
    if kind == "jit":
        return isinstance(v, bool) or v == "inductor"
    return isinstance(v, bool)


def _requirement(kind: str, bound) -> str:
    if kind == "int":
        return f"an integer >= {bound}"
    if kind == "real":
        return f"a finite number > {bound:g}"
    return {
        "unit": "a number strictly between 0 and 1",
        "decay": "in (0, 1] (the factor applied to the step size after each epoch)",
        "bool": "True or False",
        "jit": "True, False or 'inductor' (or None: automatic)",
    }[kind]


def check_options(method: str, options: dict) -> dict:
    """The options of `method` with defaults, every one checked: a ValueError names the
    option, the value and what it must be, before anything is fitted."""
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    method = method.lower()
    allowed = {**COMMON, **OPTIONS[method]}
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"option(s) {', '.join(unknown)} do not apply to method={method!r}; "
            f"its options are {', '.join(sorted(allowed))}"
        )
    for name, value in options.items():
        if value is None or name not in RULES:
            continue
        kind, bound = RULES[name]
        ok = _fits_rule(value, kind, bound)
        if not ok:
            need = _requirement(kind, bound)
            raise ValueError(f"{name} must be {need}, got {value!r}")
    seed = options.get("seed", 0)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(
            f"seed must be an integer (or None: draw from the global RNG), got {seed!r}"
        )
    return {**allowed, **options}


def fit(
    model,
    data,
    method: str = "mle",
    *,
    data_plate: str | None = "data",
    given: dict | None = None,
    data_arg: str = "x",
    **options,
) -> Fit:
    """Fit `model` to `data` and return a `Fit`.

    `model` is any Pyro program: a function ``model(x=None, num_samples=None)`` with
    ``pyro.param`` / ``pyro.sample`` sites, a `PyroModule` with `PyroParam` / `PyroSample`
    attributes, or a ppl_models model. Roles come from a trace (`ppl_models.programs.roles`): point
    parameters, global random parameters (their site distribution is the prior), discrete
    latents (summed out by enumeration), continuous local latents (sampled by NUTS, covered by
    SVI's guide), observed sites. `data_plate` names the `pyro.plate` over the data,
    vectorised or sequential (None, or no such plate: the program models one series).

    Program arguments (`ppl_models.programs.arguments`): `data_arg` names the argument that receives
    the data ("y" for Pyro's ``model(X, y=None)``); `given` is a dict of keyword arguments
    passed on every call (covariates, design constants, lengths): e.g.
    ``fit(model, y, "nuts", given={"J": 8, "sigma": sigma}, data_arg="y", data_plate="J")``.
    Per-datum covariates (first dim = number of data) are sliced with the data for
    minibatches. A program mixing float32 and float64 runs in the widest (or `dtype`).

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
        an autoguide class) started at the MAP estimate (at the prior medians where the
        posterior is far from Gaussian there), or a guide function you wrote over the
        program's own sites; ``steps`` of Adam at ``lr``; the guide checked against the
        posterior (Pareto k in ``info["pareto_k"]``, a warning above 0.7); ``jit_compile``
        as for NUTS.
      - ``"nuts"``: NUTS on ``engine="nutpie"`` (PyMC's sampler in Rust, the default where
        it is installed; each chain a nutpie run in its own process where a core is free for
        it, else in turn; its options ``low_rank`` (a low-rank mass matrix) and ``cores``
        (one run of all the chains in nutpie's threads instead: they wait on each other, as
        the density is evaluated one call at a time) or ``engine="pyro"`` (`pyro.infer.MCMC`,
        chains in processes the same way; the default for ``warmup_steps=0``, which nutpie
        cannot run), ``num_samples``, ``warmup_steps``, ``num_chains``,
        ``target_accept_prob``, ``max_tree_depth``, started at the MAP estimate (the potential
        whitened by its Laplace approximation where that holds); ``jit_compile`` (default None:
        the potential and its gradient are traced as one graph (`inference.tracing`), or the
        potential alone, where the traced one gives the eager numbers, unless one eager
        evaluation takes over 0.25 s, else run eagerly; on the CPU the graph is compiled by
        TorchInductor where the run is long enough to pay for the seconds that takes, judged
        from the graph's size and num_chains x (warmup_steps + num_samples) alone; False:
        always eager; True: traced and checked whatever it costs; ``"inductor"``: compiled
        however short the run).

    ``seed`` (default 0) makes every method reproducible without touching the global RNG;
    ``seed=None`` draws from the global RNG (a new fit each call). ``device`` ("cpu", "cuda",
    a `torch.device`; default: the data's) and ``dtype`` (torch.float32 / float64; default:
    the model's) say where and in what precision the fit runs. Every option is checked
    before anything runs. The user's model is not modified: `Fit.model` is a fitted copy.
    """
    opts = check_options(method, options)
    method = method.lower()
    program = as_program(model, data_plate, given, data_arg)
    if program is model:  # a Program passed in: work on a copy
        program = program.with_values({})
    device, dtype = opts.pop("device"), opts.pop("dtype")
    index = index_of(data)
    program, data = placement(program, data, device, dtype)
    x = program.validate(data)
    seed = opts.pop("seed")
    # a fresh param store scope: guides never collide with each other or with the user's params
    with seeded(seed), pyro.get_param_store().scope(), program.placed():
        start = time.perf_counter()
        program = program.init_from_data(x)  # data-dependent initial values, under the seed
        if program.accelerator("_log_prob") is None:
            program.discover(x)  # roles from a trace; a program's errors surface here
            x = program.validate(x)  # in the program's dtype, where it mixed two
        # (a model with its own vectorised path and closed forms needs no trace: the paths
        # that do (gradient fits, svi, nuts) read the roles when they start)
        result = _RUN[method](
            program, x, **({"seed": seed} if method in ("mle", "map") else {}), **opts
        )
        result.fit_seconds = time.perf_counter() - start
    result.info.setdefault("seed", seed)
    result.index = index
    return result


def placement(program, data, device, dtype):
    """(the program moved to `device` / `dtype`, the data there too): default device where
    the data are, default dtype the model's. A clear ValueError for a device that is not
    there."""
    from ppl_models.checks import as_device, as_dtype

    device = as_device(device)
    dtype = as_dtype(dtype)
    if device is None:
        device = data.device if torch.is_tensor(data) else torch.device("cpu")
    if torch.is_tensor(data) and data.device != device:
        data = data.to(device)
    return program.to(device, dtype), data


def _mle(program, x, **opts):
    """The MLE; a program of yours whose parameters have priors is searched from its MAP
    (on the whole data, where the solver is chosen here): the prior keeps the search away from
    flat directions where the likelihood is not resolved. Measured on a Student-t AR(2) of
    sunspots from a prior draw: nu ran to 2.6e16, where StudentT.log_prob loses its digits
    and the "likelihood" is a rounding artefact; from the MAP (nu 5.01), scipy's optimum to
    1e-12 (-1288.167, nu 4.80)."""
    if (
        not program.ours
        and opts.get("solver") is None
        and opts.get("valid") is None
        and opts.get("batch_size") is None
    ):
        program.discover(x)
        if program.random and not program.roles.local:
            start = optimize.point_fit(program, x, "map", **{**opts, "progress_bar": False})
            fit = optimize.point_fit(start.program, x, "mle", **opts)
            fit.info["start"] = "the MAP"
            return fit
    return optimize.point_fit(program, x, "mle", **opts)


def _map(program, x, **opts):
    return optimize.point_fit(program, x, "map", **opts)


def _exact(program, x, num_samples):
    posterior_of = program.accelerator("posterior")
    if posterior_of is None:
        raise ValueError(
            f"{program.label} has no conjugate form, so method='exact' is not "
            "available; use method='nuts' or 'svi' for a posterior"
        )
    posterior = posterior_of(x)
    predictive = getattr(posterior, "predictive", None)
    fitted = (
        program.with_model(predictive)
        if predictive is not None
        else program.with_values(posterior.mean())
    )
    # draws are exact and cheap to redo: Fit draws them on first use, with this seed
    return Fit(
        fitted,
        "exact",
        x,
        posterior=posterior,
        info={"num_samples": positive_int(num_samples, "num_samples")},
    )


_RUN = {"mle": _mle, "map": _map, "exact": _exact, "svi": svi.svi, "nuts": nuts.nuts}
