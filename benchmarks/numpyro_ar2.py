"""NumPyro's AR(2) with the priors of ppl_models' AutoRegressive(2), for benchmarks/bench_ar.py
(`--numpyro PYTHON`). Runs in any interpreter that has numpyro and jax; imports nothing of this
project. Make one outside the repository:

    python3 -m venv ../numpyro-venv && ../numpyro-venv/bin/pip install numpyro jax

    PYTHON numpyro_ar2.py Y.npy OUT.npz --samples 500 --warmup 500 --chains 2 [--dense]
                                        [--vectorized]

writes the draws (chain, draw, ...) and the wall seconds of `MCMC.run` (compilation
included, as a NumPyro user waits for it) to OUT.npz.
"""

import argparse
import time

import numpy as np


def main():
    p = argparse.ArgumentParser()
    p.add_argument("y")
    p.add_argument("out")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--chains", type=int, default=2)
    p.add_argument("--dense", action="store_true")
    p.add_argument("--vectorized", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platform_name", "cpu")
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    y = jnp.asarray(np.load(a.y))
    m, s = float(y.mean()), float(y.std(ddof=1))

    def model(y):
        sigma2 = dist.InverseGamma(0.5, s**2 / 2)
        sigma = numpyro.sample(
            "sigma", dist.TransformedDistribution(sigma2, [dist.transforms.PowerTransform(0.5)])
        )
        phi = numpyro.sample("phi", dist.Normal(jnp.zeros(2), 5 * sigma / s).to_event(1))
        const = numpyro.sample("const", dist.Normal(m * (1 - phi.sum()), 5 * sigma))
        mean = const + phi[0] * y[1:-1] + phi[1] * y[:-2]
        numpyro.sample("y", dist.Normal(mean, sigma).to_event(1), obs=y[2:])

    mcmc = MCMC(
        NUTS(model, dense_mass=a.dense),
        num_warmup=a.warmup,
        num_samples=a.samples,
        num_chains=a.chains,
        progress_bar=False,
        chain_method="vectorized" if a.vectorized else "sequential",
    )
    t = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(a.seed), y)
    jax.block_until_ready(mcmc.get_samples())
    seconds = time.perf_counter() - t
    draws = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    np.savez(a.out, seconds=seconds, **draws)


if __name__ == "__main__":
    main()
