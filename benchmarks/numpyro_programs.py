"""NumPyro's versions of the everyday programs of benchmarks/bench_programs.py and the AR(2) of
bench_ar.py (the same priors and likelihoods, float64), for their `--numpyro PYTHON`. Runs in
any interpreter that has numpyro and jax; imports nothing of this project:

    PYTHON numpyro_programs.py PROGRAM DATA.npz OUT.npz --samples 500 --warmup 500 --chains 2
                               [--dense] [--vectorized | --parallel]

PROGRAM: ar2, eight_schools, baseball, regression, logistic, hierarchical_ar1, hmm. DATA.npz
holds the program's arrays; OUT.npz gets the draws (chain, draw, ...) of every latent and the
wall seconds of `MCMC.run` (compilation included, as a NumPyro user waits for it).
``--parallel``: a chain per XLA CPU device (``numpyro.set_host_device_count``), in parallel
threads, as our chains run in processes on the free cores.
"""

import argparse
import time

import numpy as np


def models(numpyro, dist, jnp):
    def eight_schools(sigma, y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("J", len(y)):
            eta = numpyro.sample("eta", dist.Normal(0.0, 1.0))
            numpyro.sample("obs", dist.Normal(mu + tau * eta, sigma), obs=y)

    def baseball(at_bats, hits):
        m = numpyro.sample("m", dist.Uniform(0.0, 1.0))
        kappa = numpyro.sample("kappa", dist.Pareto(1.0, 1.5))
        with numpyro.plate("num_players", len(hits)):
            phi = numpyro.sample("phi", dist.Beta(m * kappa, (1 - m) * kappa))
            numpyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)

    def regression(X, y):
        w = numpyro.sample("weight", dist.Normal(0.0, 1.0).expand([1, X.shape[1]]).to_event(2))
        b = numpyro.sample("bias", dist.Normal(0.0, 10.0).expand([1]).to_event(1))
        sigma = numpyro.sample("sigma", dist.Uniform(0.0, 10.0))
        with numpyro.plate("data", len(y)):
            numpyro.sample("obs", dist.Normal((X @ w.T + b)[:, 0], sigma), obs=y)

    def logistic(X, y):
        w = numpyro.sample("w", dist.Normal(jnp.zeros(X.shape[1]), 1.0).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 5.0))
        with numpyro.plate("data", len(y)):
            numpyro.sample("y", dist.Bernoulli(logits=X @ w + b), obs=y)

    def hierarchical_ar1(y):
        mu_c = numpyro.sample("mu_c", dist.Normal(0.0, 5.0))
        tau_c = numpyro.sample("tau_c", dist.HalfNormal(2.0))
        mu_phi = numpyro.sample("mu_phi", dist.Normal(0.0, 0.5))
        tau_phi = numpyro.sample("tau_phi", dist.HalfNormal(0.5))
        sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
        with numpyro.plate("series", y.shape[0]):
            c = mu_c + tau_c * numpyro.sample("z_c", dist.Normal(0.0, 1.0))
            phi = mu_phi + tau_phi * numpyro.sample("z_phi", dist.Normal(0.0, 1.0))
            loc = c[:, None] + phi[:, None] * y[:, :-1]
            numpyro.sample("obs", dist.Normal(loc, sigma).to_event(1), obs=y[:, 1:])

    def hmm(sequences, lengths, hidden=2):
        """Pyro's HMM model_1 (x_0 from state 0; a tone per Bernoulli; steps past a sequence's
        length unobserved), the hidden states summed out by the forward algorithm written in
        jax (lax.scan): NumPyro's enumeration needs funsor, and this is faster."""
        from jax import lax
        from jax.scipy.special import logsumexp, xlog1py, xlogy

        _, T, D = sequences.shape
        probs_x = numpyro.sample("probs_x", dist.Dirichlet(0.9 * jnp.eye(hidden) + 0.1).to_event(1))
        probs_y = numpyro.sample("probs_y", dist.Beta(0.1, 0.9).expand([hidden, D]).to_event(2))
        s = sequences[:, :, None, :]
        # Bernoulli log density, 0 log 0 = 0 (Beta(0.1, 0.9) draws reach 0 and 1 in float64)
        emit = (xlogy(s, probs_y) + xlog1py(1 - s, -probs_y)).sum(-1)  # (N, T, H)
        seen = jnp.arange(T)[None, :] < lengths[:, None]
        log_x = jnp.log(probs_x)

        def step(alpha, inputs):
            emit_t, seen_t = inputs
            new = logsumexp(alpha[:, :, None] + log_x[None], axis=1) + emit_t
            return jnp.where(seen_t[:, None], new, alpha), None

        alpha0 = log_x[0][None, :] + emit[:, 0]
        alpha, _ = lax.scan(step, alpha0, (jnp.swapaxes(emit[:, 1:], 0, 1), seen[:, 1:].T))
        numpyro.factor("obs", logsumexp(alpha, -1).sum())

    def ar2(y):
        """The priors of ppl_models' AutoRegressive(2), scaled by the series' mean and sd."""
        m, s = y.mean(), y.std(ddof=1)
        sigma2 = dist.InverseGamma(0.5, s**2 / 2)
        sigma = numpyro.sample(
            "sigma", dist.TransformedDistribution(sigma2, [dist.transforms.PowerTransform(0.5)])
        )
        phi = numpyro.sample("phi", dist.Normal(jnp.zeros(2), 5 * sigma / s).to_event(1))
        const = numpyro.sample("const", dist.Normal(m * (1 - phi.sum()), 5 * sigma))
        mean = const + phi[0] * y[1:-1] + phi[1] * y[:-2]
        numpyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=y[2:])

    return {
        "ar2": (ar2, ("y",)),
        "hierarchical_ar1": (hierarchical_ar1, ("y",)),
        "hmm": (hmm, ("sequences", "lengths")),
        "eight_schools": (eight_schools, ("sigma", "y")),
        "baseball": (baseball, ("at_bats", "hits")),
        "regression": (regression, ("X", "y")),
        "logistic": (logistic, ("X", "y")),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("program")
    p.add_argument("data")
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--dense", action="store_true")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--vectorized", action="store_true")
    group.add_argument("--parallel", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--warm", action="store_true", help="a short run of another model first")
    a = p.parse_args()
    if a.parallel:  # before jax starts: one CPU device per chain
        from numpyro.util import set_host_device_count

        set_host_device_count(a.chains)
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platform_name", "cpu")
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    if a.warm:  # what a process pays once (jax's runtime, first dispatches), as ours warms up

        def tiny(y):
            mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
            with numpyro.plate("data", len(y)):
                numpyro.sample("obs", dist.Normal(mu, 1.0), obs=y)

        warm = MCMC(NUTS(tiny), num_warmup=20, num_samples=20, progress_bar=False)
        warm.run(jax.random.PRNGKey(1), jnp.linspace(-1.0, 1.0, 5))
    model, names = models(numpyro, dist, jnp)[a.program]
    data = np.load(a.data)
    args = [jnp.asarray(data[k]) for k in names]
    mcmc = MCMC(
        NUTS(model, dense_mass=a.dense),
        num_warmup=a.warmup,
        num_samples=a.samples,
        num_chains=a.chains,
        chain_method="vectorized" if a.vectorized else "parallel" if a.parallel else "sequential",
        progress_bar=False,
    )
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(a.seed), *args)
    draws = mcmc.get_samples(group_by_chain=True)
    jax.block_until_ready(draws)
    seconds = time.perf_counter() - t
    np.savez(a.out, seconds=seconds, **{k: np.asarray(v) for k, v in draws.items()})


if __name__ == "__main__":
    main()
