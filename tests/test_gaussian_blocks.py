"""Normal latents integrated out of a Normal observation's loc that is affine in them
(`inference.compound.GaussianBlock`, found by `inference.conjugate`). References: scipy's
multivariate normal density with the dense T x T covariance, numpy's dense conditional moments,
and the marginal posterior of a hierarchical regression by quadrature over its two globals."""

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from quadrature import assert_matches
from scipy.special import logsumexp
from scipy.stats import halfnorm, multivariate_normal, norm

import inference
from inference import compound, conjugate
from ppl_models.example_programs import hierarchical_ar1
from ppl_models.programs.program import Program

F64 = torch.float64


def random_block(k: int, n: int = 4, t: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    m, s = r(k, n), 0.5 + r(k, n).abs()
    alpha, slopes, sigma, y = r(n, t), r(k, n, t), 0.3 + r(n, t).abs(), r(n, t)
    return m, s, alpha, slopes, sigma, y


def dense(m, s, alpha, slopes, sigma, y, i):
    """Block i's marginal mean and covariance, and the latents' conditional moments, dense."""
    b = slopes[:, i].T.numpy()  # (t, k)
    prior_cov = np.diag(s[:, i].numpy() ** 2)
    mean = alpha[i].numpy() + b @ m[:, i].numpy()
    cov = np.diag(sigma[i].numpy() ** 2) + b @ prior_cov @ b.T
    gain = prior_cov @ b.T @ np.linalg.inv(cov)
    cmean = m[:, i].numpy() + gain @ (y[i].numpy() - mean)
    return mean, cov, cmean, prior_cov - gain @ b @ prior_cov


@pytest.mark.parametrize("t", [1, 6])
@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("nested", [False, True])
def test_block_density_and_conditional_equal_the_dense_normal(k, nested, t):
    """Per block, the density (Woodbury's; with one value a block, T = 1, the Normal of
    variance sigma^2 + sum_k B_k^2 s_k^2) equals scipy's multivariate normal with the T x T
    covariance diag(sigma^2) + B diag(s^2) B^T (1e-10), and (m, h, L) give numpy's conditional
    mean and covariance (1e-10); laid out as `.to_event(1)` (latents (n,), observation (n, t))
    or as a nested plate (latents (n, 1), observation batch (n, t))."""
    m, s, alpha, slopes, sigma, y = random_block(k, t=t)
    n, t = alpha.shape
    shape = (n, 1) if nested else (n,)
    priors = [dist.Normal(m[j].reshape(shape), s[j].reshape(shape)) for j in range(k)]
    base = dist.Normal(alpha, sigma)
    batch, event = ((n, t), ()) if nested else ((n,), (t,))
    order = compound.layout(torch.Size(shape), torch.Size(batch), torch.Size(event))
    block = compound.GaussianBlock(priors, base, list(slopes), y, order)
    mean_k, h, chol = block.arguments()
    for i in range(n):
        mean, cov, cmean, ccov = dense(m, s, alpha, slopes, sigma, y, i)
        want = multivariate_normal(mean, cov).logpdf(y[i].numpy())
        assert float(block.log_prob[i]) == pytest.approx(want, rel=1e-10)
        L = chol[i].numpy()
        got_mean = mean_k[i].numpy() + np.linalg.solve(L.T, h[i].numpy())
        np.testing.assert_allclose(got_mean, cmean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(np.linalg.inv(L @ L.T), ccov, rtol=1e-10, atol=1e-12)


def test_block_draws_have_the_conditional_moments():
    """`compound.draw` from (m, h, L): 200,000 draws of two latents have numpy's conditional
    mean (within 4 standard errors) and covariance (within 2%)."""
    m, s, alpha, slopes, sigma, y = random_block(2, n=1)
    priors = [dist.Normal(m[j], s[j]) for j in range(2)]
    block = compound.GaussianBlock(
        priors, dist.Normal(alpha, sigma), list(slopes), y, compound.layout((1,), (1,), (6,))
    )
    args = [a.expand(200_000, *a.shape) for a in block.arguments()]
    torch.manual_seed(0)
    u = compound.draw(*args)[:, 0].numpy()
    _, _, cmean, ccov = dense(m, s, alpha, slopes, sigma, y, 0)
    se = np.sqrt(np.diag(ccov) / len(u))
    assert np.all(np.abs(u.mean(0) - cmean) < 4 * se)
    np.testing.assert_allclose(np.cov(u.T), ccov, rtol=0.02)


def test_layout_puts_the_latents_dims_first():
    assert compound.layout(torch.Size([8]), torch.Size([8]), torch.Size([99])) == [0, 1]
    assert compound.layout(torch.Size([8, 1]), torch.Size([8, 5]), torch.Size([])) == [0, 1]
    assert compound.layout(torch.Size([5]), torch.Size([3, 5]), torch.Size([])) == [1, 0]
    assert compound.layout(torch.Size([4]), torch.Size([8]), torch.Size([])) is None
    assert compound.layout(torch.Size([2, 8]), torch.Size([8]), torch.Size([])) is None


SPREAD = torch.tensor([[1.0], [2.0], [-1.0], [0.5]], dtype=F64)
X = torch.linspace(-1.0, 1.0, 8, dtype=F64).repeat(4, 1) * SPREAD
Y = torch.tensor(
    [
        [0.9, 1.4, 0.6, 1.2, 1.8, 1.1, 1.9, 2.2],
        [-0.3, 0.2, 0.9, 0.4, 1.3, 1.1, 0.8, 1.6],
        [2.1, 1.6, 1.9, 1.2, 0.8, 1.3, 0.6, 0.9],
        [0.2, 0.8, 0.1, 0.7, 0.4, 1.1, 0.5, 0.9],
    ],
    dtype=F64,
)


def panel(x, y=None):
    """A regression per series, intercept and slope pooled through one scale: y_(s,t) ~
    N(mu + tau a_s + 0.5 tau b_s x_(s,t), 0.7), a_s, b_s ~ N(0, 1), mu ~ N(0, 2), tau ~
    HalfNormal(1)."""
    mu = pyro.sample("mu", dist.Normal(x.new_tensor(0.0), 2.0))
    tau = pyro.sample("tau", dist.HalfNormal(x.new_tensor(1.0)))
    with pyro.plate("series", len(x)):
        a = pyro.sample("a", dist.Normal(x.new_tensor(0.0), 1.0))
        b = pyro.sample("b", dist.Normal(x.new_tensor(0.0), 1.0))
        loc = mu + tau * a[:, None] + 0.5 * tau * b[:, None] * x
        return pyro.sample("obs", dist.Normal(loc, 0.7).to_event(1), obs=y)


@pytest.mark.slow
def test_hierarchical_regression_collapsed_matches_quadrature():
    """a and b integrated out of each series' loc jointly: mu, tau and every a_s, b_s against
    quadrature of p(mu, tau | y) = N(mu | 0, 2) HalfNormal(tau | 1) prod_s N(y_s | mu,
    0.49 I + tau^2 (1 1^T + 0.25 x_s x_s^T)) with the dense 8 x 8 covariance: means within
    0.15 sd, sds within 10%. 4 x 2000 draws: from 2 x 2000, mu's sd varied by about 4%
    from seed to seed (0.311-0.355 over seeds 0-9 against 0.318; 0.322 from 4 x 5000); from
    4 x 2000, 0.304-0.322 over seeds 0-5."""
    f = inference.fit(
        panel, Y, "nuts", num_samples=2000, warmup_steps=500, num_chains=4, seed=0,
        given={"x": X}, data_arg="y", data_plate="series",
    )  # fmt: skip
    for name in ("a", "b"):
        assert f"{name} (a Normal prior, Normal 'obs') integrated out" in f.info["init"]
    assert f.info["divergences"] <= 40  # 0.5%: tau's tail at 0, not a funnel
    mu = np.linspace(-3.0, 4.0, 141)[:, None]
    tau = np.linspace(1e-3, 3.5, 141)[None, :]
    logp = norm.logpdf(mu, 0.0, 2.0) + halfnorm.logpdf(tau, scale=1.0)
    mu_g, tau_g = np.broadcast_arrays(mu, tau)
    cond = {"a": [], "b": []}  # E and Var of a_s, b_s given mu, tau, y on the grid
    for s in range(4):
        x, y = X[s].numpy(), Y[s].numpy()
        b = np.stack([np.ones(8), 0.5 * x], 1)  # slopes of (a, b), times tau
        bt = tau_g[..., None, None] * b  # (grid, 8, 2)
        cov = 0.49 * np.eye(8) + bt @ bt.transpose(0, 1, 3, 2)
        r = y - mu_g[..., None]
        sol = np.linalg.solve(cov, r[..., None])[..., 0]
        _, logdet = np.linalg.slogdet(cov)
        logp = logp - 0.5 * ((r * sol).sum(-1) + logdet + 8 * np.log(2 * np.pi))
        gain = bt.transpose(0, 1, 3, 2) @ np.linalg.inv(cov)  # prior cov is I
        cm = (gain @ r[..., None])[..., 0]
        cv = np.eye(2) - gain @ bt
        for j, name in enumerate(("a", "b")):
            cond[name].append((cm[..., j], cv[..., j, j]))
    w = np.exp(logp - logsumexp(logp))
    d = {k: v.flatten(0, 1).numpy() for k, v in f.draws.items()}
    refs = [("mu", d["mu"], mu_g, 0), ("tau", d["tau"], tau_g, 0)]
    for name in ("a", "b"):
        refs += [(f"{name}{s}", d[name][:, s], *cond[name][s]) for s in range(4)]
    assert_matches(w, refs)


def _read(loc_of):
    def program(x, y=None):
        mu = pyro.sample("mu", dist.Normal(x.new_tensor(0.0), 2.0))
        tau = pyro.sample("tau", dist.HalfNormal(x.new_tensor(1.0)))
        with pyro.plate("series", len(x)):
            a = pyro.sample("a", dist.Normal(x.new_tensor(0.0), 1.0))
            b = pyro.sample("b", dist.Normal(x.new_tensor(0.0), 1.0))
            return pyro.sample("obs", dist.Normal(loc_of(mu, tau, a, b, x), 0.7).to_event(1), obs=y)

    p = Program(program, "series", {"x": X}, "y")
    x = p.validate(Y)
    p.discover(x)
    return [q.latent for q in conjugate.find(p, x, dict(p.values))]


def test_normal_latents_of_one_loc_are_integrated_jointly_where_it_is_affine_in_them():
    """Two latents in one loc: both where it is jointly affine (mu + tau a + b x), the first
    only where their product enters (a b x), the second only where the first enters squared
    (a^2 + b x); the benchmark's hierarchical AR(1): z_c and z_phi, its one observation."""
    col = lambda v: v[:, None]  # noqa: E731
    assert _read(lambda mu, tau, a, b, x: mu + tau * col(a) + col(b) * x) == ["a", "b"]
    assert _read(lambda mu, tau, a, b, x: mu + col(a) * col(b) * x) == ["a"]
    assert _read(lambda mu, tau, a, b, x: mu + col(a) ** 2 + col(b) * x) == ["b"]
    y = torch.randn(3, 20, dtype=F64, generator=torch.Generator().manual_seed(0))
    p = Program(hierarchical_ar1, "series", None, "y")
    x = p.validate(y)
    p.discover(x)
    pairs = conjugate.find(p, x, dict(p.values))
    assert [(q.latent, q.observed) for q in pairs] == [("z_c", "obs"), ("z_phi", "obs")]
