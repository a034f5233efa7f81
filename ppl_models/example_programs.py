"""Example Pyro programs, written as a user would (plain Pyro, no ppl_models imports), that the
tests and the benchmarks fit exactly like the built-in models: a shared Markov chain, mixtures,
eight schools, baseball, regressions, an HMM. Each states its factorization."""

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample

f64 = torch.float64
D = 64


def shared_markov(x=None, num_samples=None):
    """p(x) = p(x_1) prod_(d>1) p(x_d | x_(d-1)): one 2x2 transition table for every position.
    first = P(x_1 = 1), trans[j] = P(x_d = 1 | x_(d-1) = j); Beta(1, 1) priors."""
    n = len(x) if x is not None else num_samples
    one = torch.ones((), dtype=f64)
    first = pyro.sample("first", dist.Beta(one, one))
    trans = pyro.sample(
        "trans", dist.Beta(torch.ones(2, dtype=f64), torch.ones(2, dtype=f64)).to_event(1)
    )
    with pyro.plate("data", n):
        prev = pyro.sample("x_0", dist.Bernoulli(first), obs=None if x is None else x[:, 0])
        xs = [prev]
        for d in pyro.markov(range(1, D)):
            prev = pyro.sample(
                f"x_{d}", dist.Bernoulli(trans[prev.long()]), obs=None if x is None else x[:, d]
            )
            xs.append(prev)
    return torch.stack(xs, -1)


class SharedMarkov(PyroModule):
    """The same chain as a PyroModule with PyroSample attributes."""

    def __init__(self):
        super().__init__()
        one = torch.ones((), dtype=f64)
        self.first = PyroSample(dist.Beta(one, one))
        self.trans = PyroSample(
            dist.Beta(torch.ones(2, dtype=f64), torch.ones(2, dtype=f64)).to_event(1)
        )

    def forward(self, x=None, num_samples=None):
        n = len(x) if x is not None else num_samples
        first, trans = self.first, self.trans
        with pyro.plate("data", n):
            prev = pyro.sample("x_0", dist.Bernoulli(first), obs=None if x is None else x[:, 0])
            xs = [prev]
            for d in range(1, D):
                prev = pyro.sample(
                    f"x_{d}", dist.Bernoulli(trans[prev.long()]), obs=None if x is None else x[:, d]
                )
                xs.append(prev)
        return torch.stack(xs, -1)


def independent(x=None, num_samples=None):
    """p(x) = prod_d Bernoulli(x_d | probs_d), Beta(1, 1) priors: Independent(64) by hand."""
    n = len(x) if x is not None else num_samples
    probs = pyro.sample(
        "probs", dist.Beta(torch.ones(D, dtype=f64), torch.ones(D, dtype=f64)).to_event(1)
    )
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x)


def independent_params(x=None, num_samples=None):
    """The same with a point parameter (pyro.param): no prior, fitted by MLE or MAP only."""
    n = len(x) if x is not None else num_samples
    probs = pyro.param(
        "probs", torch.full((D,), 0.5, dtype=f64), constraint=dist.constraints.unit_interval
    )
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x)


def bernoulli_mixture(x=None, num_samples=None, K=50, D=784):
    """p(x) = sum_k w_k prod_d Bernoulli(x_d | mu_kd) for images of D binary pixels, the
    component z enumerated (summed out); w ~ Dirichlet(1), mu_kd ~ Beta(1.1, 1.1). K (D + 1) - 1
    free parameters (50 components of 28x28: 39,249)."""
    n = len(x) if x is not None else num_samples
    w = pyro.sample("weights", dist.Dirichlet(torch.ones(K, dtype=f64)))
    with pyro.plate("components", K):
        mu = pyro.sample(
            "means",
            dist.Beta(torch.full((D,), 1.1, dtype=f64), torch.full((D,), 1.1, dtype=f64)).to_event(
                1
            ),
        )
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
        return pyro.sample("x", dist.Bernoulli(mu[z]).to_event(1), obs=x)


def mixture(x=None, num_samples=None, K=10):
    """The same mixture over the 8x8 digits (D = 64), K = 10 components by default."""
    return bernoulli_mixture(x, num_samples, K=K, D=D)


# -- Pyro's everyday programs (issue 15): bodies as in Pyro's examples, tutorials and ArviZ's
# docs; the data argument, covariates and sizes arrive through fit(..., data_arg=, given=) -----
EIGHT_Y = torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], dtype=f64)
EIGHT_SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], dtype=f64)


def eight_schools(J, sigma, y=None):
    """Non-centred eight schools with Stan's priors (ArviZ's Pyro example): mu ~ N(0, 5),
    tau ~ HalfCauchy(5), eta_j ~ N(0, 1), y_j ~ N(mu + tau eta_j, sigma_j)."""
    mu = pyro.sample("mu", dist.Normal(0, 5))
    tau = pyro.sample("tau", dist.HalfCauchy(5))
    with pyro.plate("J", J):
        eta = pyro.sample("eta", dist.Normal(0, 1))
        theta = mu + tau * eta
        return pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def eight_schools_pooled(J, sigma, y=None):
    """Complete pooling: y_j ~ N(mu, sigma_j), mu ~ N(0, 5)."""
    mu = pyro.sample("mu", dist.Normal(0, 5))
    with pyro.plate("J", J):
        return pyro.sample("obs", dist.Normal(mu, sigma), obs=y)


# Efron & Morris (1975): hits in the first 45 at-bats of the 1970 season, 18 players
BASEBALL_HITS = torch.tensor(
    [18, 17, 16, 15, 14, 14, 13, 12, 11, 11, 10, 10, 10, 10, 10, 9, 8, 7], dtype=f64
)
BASEBALL_AT_BATS = torch.full((18,), 45.0, dtype=f64)


def partially_pooled(at_bats, hits=None):
    """Pyro's baseball example: phi_i ~ Beta(m kappa, (1 - m) kappa), m ~ Uniform(0, 1),
    kappa ~ Pareto(1, 1.5), hits_i ~ Binomial(at_bats_i, phi_i)."""
    num_players = at_bats.shape[0]
    m = pyro.sample("m", dist.Uniform(at_bats.new_tensor(0), at_bats.new_tensor(1)))
    kappa = pyro.sample("kappa", dist.Pareto(at_bats.new_tensor(1), at_bats.new_tensor(1.5)))
    with pyro.plate("num_players", num_players):
        phi_prior = dist.Beta(m * kappa, (1 - m) * kappa)
        phi = pyro.sample("phi", phi_prior)
        return pyro.sample("obs", dist.Binomial(at_bats, probs=phi), obs=hits)


class BayesianRegression(PyroModule):
    """Pyro's Bayesian regression tutorial: y ~ N(X w + b, sigma), w ~ N(0, 1),
    b ~ N(0, 10), sigma ~ Uniform(0, 10)."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](in_features, out_features)
        self.linear.weight = PyroSample(
            dist.Normal(0.0, 1.0).expand([out_features, in_features]).to_event(2)
        )
        self.linear.bias = PyroSample(dist.Normal(0.0, 10.0).expand([out_features]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0.0, 10.0))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def known_noise_regression(X, y=None, sigma=0.5):
    """y ~ N(X w, sigma) with sigma known, w ~ N(0, 2^2 I): a Gaussian posterior in closed
    form."""
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 2.0).to_event(1))
    with pyro.plate("data", X.shape[0]):
        return pyro.sample("y", dist.Normal(X @ w, sigma), obs=y)


def logistic_regression(X, y=None):
    """y ~ Bernoulli(sigmoid(X w + b)), w ~ N(0, 1), b ~ N(0, 5)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(X.shape[1], dtype=X.dtype), 1.0).to_event(1))
    b = pyro.sample("b", dist.Normal(torch.zeros((), dtype=X.dtype), 5.0))
    with pyro.plate("data", X.shape[0]):
        return pyro.sample("y", dist.Bernoulli(logits=X @ w + b), obs=y)


def hierarchical_ar1(y):
    """AR(1) per series with partially pooled constants and coefficients (non-centred):
    y_(s,t) ~ N(c_s + phi_s y_(s,t-1), sigma) for t >= 1 given y_(s,0), c_s = mu_c + tau_c
    z_s, phi_s = mu_phi + tau_phi w_s, z_s, w_s ~ N(0, 1); mu_c ~ N(0, 5), tau_c ~
    HalfNormal(2), mu_phi ~ N(0, 0.5), tau_phi ~ HalfNormal(0.5), sigma ~ HalfNormal(2).
    A series per row of y; 5 + 2 S parameters (benchmarks/bench_programs.py fits it)."""
    zero = torch.zeros((), dtype=y.dtype)
    mu_c = pyro.sample("mu_c", dist.Normal(zero, 5.0))
    tau_c = pyro.sample("tau_c", dist.HalfNormal(zero + 2.0))
    mu_phi = pyro.sample("mu_phi", dist.Normal(zero, 0.5))
    tau_phi = pyro.sample("tau_phi", dist.HalfNormal(zero + 0.5))
    sigma = pyro.sample("sigma", dist.HalfNormal(zero + 2.0))
    with pyro.plate("series", len(y)):
        c = mu_c + tau_c * pyro.sample("z_c", dist.Normal(zero, 1.0))
        phi = mu_phi + tau_phi * pyro.sample("z_phi", dist.Normal(zero, 1.0))
        loc = c[:, None] + phi[:, None] * y[:, :-1]
        return pyro.sample("obs", dist.Normal(loc, sigma).to_event(1), obs=y[:, 1:])


def gmm(data):
    """Pyro's GMM tutorial (K = 2, shared scale), the assignment enumerated."""
    K = 2
    weights = pyro.sample("weights", dist.Dirichlet(0.5 * torch.ones(K, dtype=data.dtype)))
    scale = pyro.sample("scale", dist.LogNormal(data.new_tensor(0.0), 2.0))
    with pyro.plate("components", K):
        locs = pyro.sample("locs", dist.Normal(data.new_tensor(0.0), 10.0))
    with pyro.plate("data", len(data)):
        assignment = pyro.sample(
            "assignment", dist.Categorical(weights), infer={"enumerate": "parallel"}
        )
        pyro.sample("obs", dist.Normal(locs[assignment], scale), obs=data)


def hmm_model_0(sequences, lengths, args, batch_size=None, include_prior=True):
    """Pyro's examples/hmm.py model_0: a sequential plate over sequences, states enumerated."""
    assert not torch._C._get_tracing_state()
    num_sequences, max_length, data_dim = sequences.shape
    with pyro.poutine.mask(mask=include_prior):
        probs_x = pyro.sample(
            "probs_x", dist.Dirichlet(0.9 * torch.eye(args.hidden_dim) + 0.1).to_event(1)
        )
        probs_y = pyro.sample(
            "probs_y", dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2)
        )
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    for i in pyro.plate("sequences", len(sequences), batch_size):
        length = lengths[i]
        sequence = sequences[i, :length]
        x = 0
        for t in pyro.markov(range(length)):
            x = pyro.sample(
                f"x_{i}_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"}
            )
            with tones_plate:
                pyro.sample(f"y_{i}_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=sequence[t])


def ar1_panel(num_series: int = 8, length: int = 100) -> torch.Tensor:
    """Series of AR(1)s, c_s ~ N(2, 1), phi_s ~ N(0.5, 0.15), unit noise, each started at its
    stationary mean: (num_series, length)."""
    g = torch.Generator().manual_seed(0)
    c = 2.0 + torch.randn(num_series, generator=g, dtype=f64)
    phi = 0.5 + 0.15 * torch.randn(num_series, generator=g, dtype=f64)
    y = torch.zeros(num_series, length, dtype=f64)
    y[:, 0] = c / (1 - phi)
    for t in range(1, length):
        y[:, t] = c + phi * y[:, t - 1] + torch.randn(num_series, generator=g, dtype=f64)
    return y


def hmm_model_1(sequences, lengths, args, batch_size=None, include_prior=True):
    """Pyro's examples/hmm.py model_1: a vectorised plate over sequences, masked by length."""
    num_sequences, max_length, data_dim = map(int, sequences.shape)
    with pyro.poutine.mask(mask=include_prior):
        probs_x = pyro.sample(
            "probs_x", dist.Dirichlet(0.9 * torch.eye(args.hidden_dim) + 0.1).to_event(1)
        )
        probs_y = pyro.sample(
            "probs_y", dist.Beta(0.1, 0.9).expand([args.hidden_dim, data_dim]).to_event(2)
        )
    tones_plate = pyro.plate("tones", data_dim, dim=-1)
    with pyro.plate("sequences", num_sequences, batch_size, dim=-2) as batch:
        lengths = lengths[batch]
        x = 0
        for t in pyro.markov(range(max_length if args.jit else lengths.max())):
            with pyro.poutine.mask(mask=(t < lengths).unsqueeze(-1)):
                x = pyro.sample(
                    f"x_{t}", dist.Categorical(probs_x[x]), infer={"enumerate": "parallel"}
                )
                with tones_plate:
                    pyro.sample(
                        f"y_{t}", dist.Bernoulli(probs_y[x.squeeze(-1)]), obs=sequences[batch, t]
                    )


def hmm_songs(n: int = 8, length: int = 12):
    """Data for `hmm_model_1`: n binary sequences over 3 tones from a 2-state HMM, lengths
    from length/2 to length (float32 and the lengths, as Pyro's example has them)."""
    rng = np.random.default_rng(0)
    px, py = np.array([[0.8, 0.2], [0.3, 0.7]]), np.array([[0.9, 0.1, 0.2], [0.1, 0.8, 0.6]])
    lengths = rng.integers(length // 2, length + 1, n)
    seqs = np.zeros((n, length, 3))
    for i, m in enumerate(lengths):
        x = 0
        for t in range(m):
            x = rng.choice(2, p=px[x])
            seqs[i, t] = rng.random(3) < py[x]
    return torch.tensor(seqs, dtype=torch.float32), torch.tensor(lengths)  # as Pyro's example


def mixed_dtypes(x=None, num_samples=None):
    """p0 ~ Beta(1, 1) in float32 (Pyro's default) beside a float64 point parameter p1:
    x[:, 0] ~ Bernoulli(p0), x[:, 1] ~ Bernoulli(p1)."""
    n = len(x) if x is not None else num_samples
    p0 = pyro.sample("p0", dist.Beta(1.0, 1.0))
    p1 = pyro.param("p1", torch.tensor(0.5, dtype=f64), constraint=dist.constraints.unit_interval)
    with pyro.plate("data", n):
        a = pyro.sample("a", dist.Bernoulli(p0), obs=None if x is None else x[:, 0])
        b = pyro.sample("b", dist.Bernoulli(p1), obs=None if x is None else x[:, 1])
    return torch.stack([a, b], -1)
