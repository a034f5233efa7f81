"""NADE and RNADE: exact normalisation (enumeration, numerical integration), the autoregressive
property, the vectorised density equal to the per-site Pyro program, and fits on real data
checked against the training data and simpler models."""

import itertools
import math

import pytest
import torch
from pyro import poutine

import inference
from ppl_models import NADE, LinearGaussian, datasets


def shaken(model, x, scale=0.5, seed=1):
    """`model` initialised on `x`, every parameter then moved by N(0, scale^2) noise, so the
    checks do not rest on the (small) initial weights."""
    m = model.init_from_data(x)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m


def program_log_prob(model, x) -> torch.Tensor:
    """(N, D) log-probability of each `pyro.sample` site of the program, column d for x_d."""
    trace = poutine.trace(model).get_trace(x)
    trace.compute_log_prob()
    return torch.stack([trace.nodes[f"x_{d}"]["log_prob"] for d in range(model.num_dims)], -1)


# -- exact normalisation ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_binary_nade_sums_to_one_over_all_configurations(dtype):
    D = 10
    x = torch.tensor(list(itertools.product([0, 1], repeat=D)), dtype=dtype)  # all 1,024
    order = torch.randperm(D, generator=torch.Generator().manual_seed(3)).tolist()
    m = shaken(NADE(D, 7, order=order, dtype=dtype), x[::7], scale=1.0)
    with torch.no_grad():
        total = torch.logsumexp(m.log_prob(x).double(), 0).exp()
    assert abs(float(total) - 1) < 1e-5


def test_samples_follow_the_exact_marginals():
    """Ancestral sampling through the program: 200,000 samples' pixel means against the exact
    marginals by enumeration (sd of each mean <= 0.0012)."""
    D, f64 = 10, torch.float64
    x = torch.tensor(list(itertools.product([0, 1], repeat=D)), dtype=f64)
    m = shaken(NADE(D, 7, order=[3, 1, 4, 0, 9, 2, 8, 5, 7, 6], dtype=f64), x[::7], scale=1.0)
    with torch.no_grad():
        exact = (m.log_prob(x).exp()[:, None] * x).sum(0)
        samples = m(num_samples=200_000)
    assert float((samples.mean(0) - exact).abs().max()) < 0.006


def test_mog_nade_integrates_to_one_on_a_grid():
    """D = 2 on the user's scale (shift 1, scale 3), so the log-Jacobian of the internal
    standardisation is part of what integrates to 1."""
    f64 = torch.float64
    data = 1.0 + 3.0 * torch.randn(500, 2, dtype=f64)
    m = shaken(NADE(2, 5, "mog", components=3, order=[1, 0], dtype=f64), data, scale=0.3)
    # here every component sd is in (0.99, 3.2) and every mean in (-5, 5): the grid covers
    # +-8 sd at a tenth of an sd, where the trapezoid rule is exact to ~1e-15
    grid = torch.arange(-30.0, 32.0, 0.1, dtype=f64)
    x1, x2 = torch.meshgrid(grid, grid, indexing="ij")
    with torch.no_grad():
        p = m.log_prob(torch.stack([x1.reshape(-1), x2.reshape(-1)], -1)).exp()
    p = p.reshape(x1.shape)
    total = torch.trapezoid(torch.trapezoid(p, grid), grid)
    assert abs(float(total) - 1) < 1e-3


# -- the autoregressive property and the program ----------------------------------------------
@pytest.mark.parametrize("output", ["bernoulli", "mog"])
def test_changing_x_j_leaves_earlier_conditionals_unchanged(output):
    D, order = 12, [3, 0, 11, 5, 1, 7, 2, 10, 4, 9, 6, 8]
    kind = {"output": output, "components": 4 if output == "mog" else None}
    x = torch.randint(0, 2, (50, D)).float() if output == "bernoulli" else torch.randn(50, D)
    m = shaken(NADE(D, 16, order=order, **kind), x)
    before = m.conditional_log_prob(x)
    torch.testing.assert_close(before.sum(-1), m.log_prob(x))
    for j in range(D):  # change the dim visited j-th
        y = x.clone()
        y[:, order[j]] = 1 - y[:, order[j]] if output == "bernoulli" else y[:, order[j]] + 1.5
        after = m.conditional_log_prob(y)
        earlier, later = order[:j], order[j + 1 :]
        assert torch.equal(after[:, earlier], before[:, earlier])  # exactly
        if later:  # ... and the later ones do see x_j
            assert (after[:, later] != before[:, later]).any()


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("output", ["bernoulli", "mog"])
def test_vectorised_density_equals_the_pyro_program(output, dtype, tol):
    D = 9
    kind = {"output": output, "components": 3 if output == "mog" else None}
    x = (torch.randint(0, 2, (64, D)) if output == "bernoulli" else 2 + 5 * torch.randn(64, D)).to(
        dtype
    )
    m = shaken(NADE(D, 11, order=[4, 2, 0, 8, 6, 1, 3, 5, 7], dtype=dtype, **kind), x)
    sites = program_log_prob(m, x)  # one pyro.sample site per dim
    torch.testing.assert_close(m.conditional_log_prob(x), sites, rtol=tol, atol=tol)
    torch.testing.assert_close(m.log_prob(x), sites.sum(-1), rtol=tol, atol=tol)
    assert m.log_prob(x).dtype == dtype


@pytest.mark.parametrize("output", ["bernoulli", "mog"])
def test_the_gradient_equals_autograd_through_the_pyro_program(output):
    """The hand-derived O(DH) gradient (bernoulli) and the running-sum path (mog) give the
    gradient of the per-site program's log-likelihood, in float64 to 1e-10; evaluation in
    blocks gives the same densities."""
    from ppl_models.models import nade_gradient

    D = 7
    kind = {"output": output, "components": 2 if output == "mog" else None}
    x = torch.randint(0, 2, (50, D)).double() if output == "bernoulli" else torch.randn(50, D)
    m = shaken(NADE(D, 5, order=[3, 1, 6, 0, 2, 5, 4], dtype=torch.float64, **kind), x.double())
    x = x.double()
    params = [p for _, p in sorted(m.named_parameters())]
    ours = torch.autograd.grad(m._log_prob(x).sum(), params)
    ref = torch.autograd.grad(program_log_prob(m, x).sum(), params)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    rows, keep = nade_gradient.ROWS, nade_gradient.KEEP
    nade_gradient.ROWS, nade_gradient.KEEP = 3, 0  # blocks of 3 data, nothing kept
    try:
        with torch.no_grad():
            blocks = m._log_prob(x)
        recomputed = torch.autograd.grad(m._log_prob(x).sum(), params)
    finally:
        nade_gradient.ROWS, nade_gradient.KEEP = rows, keep
    torch.testing.assert_close(blocks, program_log_prob(m, x).sum(-1), rtol=1e-10, atol=1e-10)
    if output == "bernoulli":  # the backward pass recomputing the hidden units block by block
        for a, b in zip(recomputed, ref, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_the_hand_derived_gradient_has_a_hessian():
    """Written in differentiable operations: second derivatives (the Laplace approximation of a
    small NADE) pass torch's gradgradcheck."""
    from ppl_models.models.nade_gradient import log_conditionals

    g = torch.Generator().manual_seed(0)
    D, H = 5, 3
    x = torch.randint(0, 2, (6, D), generator=g).double()
    W, c, V, b = (
        torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
        for s in ((H, D - 1), (H,), (D, H), (D,))
    )
    assert torch.autograd.gradgradcheck(lambda *p: log_conditionals(x, *p), (W, c, V, b))


@pytest.mark.parametrize("output", ["bernoulli", "mog"])
def test_num_parameters_counts_every_weight(output):
    kind = {"output": output, "components": 5 if output == "mog" else None}
    m = NADE(13, 7, **kind)
    assert m.num_parameters == sum(p.numel() for p in m.parameters())
    assert m.num_parameters == (
        13 * (2 * 7 + 1) if output == "bernoulli" else 13 * (7 + 1) * (3 * 5 + 1)
    )
    assert set(m.default_priors()) == set(m.param_names)  # MAP and Bayesian copies need all


# -- fits on real data ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_fit():
    split = datasets.load("digits")
    f = inference.fit(
        NADE(64, 100),
        split.train,
        "map",
        valid=split.valid,
        lr=1e-2,
        lr_decay=0.99,
        batch_size=100,
        patience=20,
        max_epochs=250,
        seed=0,
    )
    return split, f


@pytest.mark.slow
def test_nade_on_digits_beats_16_9_nats(digits_fit):
    split, f = digits_fit
    r = f.report(split.test)
    assert r.nats <= 16.9, f"NADE H=100: {r.nats:.3f} test nats after {f.info['epochs']} epochs"
    assert f.info["valid_nats"] == min(f.info["valid_curve"])  # the best parameters were kept
    assert float(-f.log_density(split.valid).mean()) == pytest.approx(
        f.info["valid_nats"], abs=1e-4
    )


@pytest.mark.slow
def test_nade_samples_match_the_training_pixel_means(digits_fit):
    split, f = digits_fit
    x = f.sample(5000, seed=0)
    assert x.shape == (5000, 64) and set(x.unique().tolist()) <= {0.0, 1.0}
    gap = (x.mean(0) - split.train.float().mean(0)).abs().max()
    assert float(gap) < 0.05


@pytest.mark.slow
def test_rnade_beats_the_full_covariance_gaussian_after_two_epochs():
    """Patches: two epochs of a small RNADE already beat the full-covariance Gaussian (closed
    form, the best Gaussian: 88.8 nats per patch) on held-out data by more than 50 nats."""
    split = datasets.load("patches")
    gauss = inference.fit(LinearGaussian(63), split.train)
    f = inference.fit(
        NADE(63, 30, "mog", components=5),
        split.train,
        valid=split.valid,
        lr=1e-2,
        batch_size=100,
        max_epochs=2,
        seed=0,
    )
    gauss_ll = float(gauss.log_density(split.valid).mean())
    rnade_ll = float(f.log_density(split.valid).mean())
    assert rnade_ll > gauss_ll + 50, (rnade_ll, gauss_ll)


def test_rnade_stops_on_nan_and_keeps_the_best_parameters():
    """A step size of 1 makes a small RNADE diverge until the loss is NaN: training stops with
    a warning and the parameters of the best validation epoch come back."""
    split = datasets.load("patches")
    train, valid = split.train[:3000], split.valid[:500]
    with pytest.warns(RuntimeWarning, match="loss became nan"):
        f = inference.fit(
            NADE(63, 10, "mog", components=3),
            train,
            valid=valid,
            lr=1.0,
            max_epochs=60,
            patience=60,
            seed=0,
        )
    curve = f.info["valid_curve"]
    assert "kept the best parameters" in f.info["stop"] and len(curve) < 60
    assert all(torch.isfinite(v).all() for v in f.params.values())
    assert float(-f.log_density(valid).mean()) == pytest.approx(min(curve), abs=1e-3)


def test_rnade_reports_nats_on_the_users_scale():
    """The same patches in other units (x 10, shifted): standardisation inside the model makes
    the fit the same, and the log-density moves by exactly the log-Jacobian -D log 10."""
    x = datasets.load("patches").train[:1000].double()
    fit = {}
    for name, data in {"raw": x, "scaled": 10 * x + 3}.items():
        fit[name] = inference.fit(
            NADE(63, 8, "mog", components=2, dtype=torch.float64),
            data,
            solver="adam",
            lr=1e-2,
            max_epochs=2,
            seed=0,
        )
    raw = fit["raw"].log_density(x)
    scaled = fit["scaled"].log_density(10 * x + 3)
    torch.testing.assert_close(scaled, raw - 63 * math.log(10), rtol=0, atol=1e-6)


def test_samples_run_the_chain_in_order_and_survive_save_and_load(tmp_path):
    x = datasets.load("patches").train[:500]
    f = inference.fit(
        NADE(63, 6, "mog", components=2, order=list(range(62, -1, -1))),
        x,
        solver="adam",
        max_epochs=1,
        seed=0,
    )
    s = f.sample(7, seed=1)
    assert s.shape == (7, 63) and torch.isfinite(s).all()
    torch.testing.assert_close(f.sample(7, seed=1), s)
    f.save(tmp_path / "rnade.pt")
    g = inference.load(tmp_path / "rnade.pt")
    torch.testing.assert_close(g.log_density(x), f.log_density(x))
    torch.testing.assert_close(g.sample(7, seed=1), s)


def test_a_fitted_nade_keeps_its_weights_when_fitted_again(digits):
    first = inference.fit(NADE(64, 5), digits.train, max_epochs=2, seed=0)
    assert first.info["solver"] == "adam"  # a network trains by minibatches by default
    again = inference.fit(first.model, digits.train, solver="adam", max_epochs=1, lr=1e-9)
    torch.testing.assert_close(again.params["W"], first.params["W"], rtol=0, atol=1e-6)
