"""User programs the tests (and the benchmark) fit exactly like built-in models, written as a
user would: plain Pyro, no ppl_models imports. Each states its factorization."""

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
    trans = pyro.sample("trans", dist.Beta(torch.ones(2, dtype=f64),
                                           torch.ones(2, dtype=f64)).to_event(1))
    with pyro.plate("data", n):
        prev = pyro.sample("x_0", dist.Bernoulli(first), obs=None if x is None else x[:, 0])
        xs = [prev]
        for d in pyro.markov(range(1, D)):
            prev = pyro.sample(f"x_{d}", dist.Bernoulli(trans[prev.long()]),
                               obs=None if x is None else x[:, d])
            xs.append(prev)
    return torch.stack(xs, -1)


class SharedMarkov(PyroModule):
    """The same chain as a PyroModule with PyroSample attributes."""

    def __init__(self):
        super().__init__()
        one = torch.ones((), dtype=f64)
        self.first = PyroSample(dist.Beta(one, one))
        self.trans = PyroSample(dist.Beta(torch.ones(2, dtype=f64),
                                          torch.ones(2, dtype=f64)).to_event(1))

    def forward(self, x=None, num_samples=None):
        n = len(x) if x is not None else num_samples
        first, trans = self.first, self.trans
        with pyro.plate("data", n):
            prev = pyro.sample("x_0", dist.Bernoulli(first), obs=None if x is None else x[:, 0])
            xs = [prev]
            for d in range(1, D):
                prev = pyro.sample(f"x_{d}", dist.Bernoulli(trans[prev.long()]),
                                   obs=None if x is None else x[:, d])
                xs.append(prev)
        return torch.stack(xs, -1)


def independent(x=None, num_samples=None):
    """p(x) = prod_d Bernoulli(x_d | probs_d), Beta(1, 1) priors: Independent(64) by hand."""
    n = len(x) if x is not None else num_samples
    probs = pyro.sample("probs", dist.Beta(torch.ones(D, dtype=f64),
                                           torch.ones(D, dtype=f64)).to_event(1))
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x)


def independent_params(x=None, num_samples=None):
    """The same with a point parameter (pyro.param): no prior, fitted by MLE or MAP only."""
    n = len(x) if x is not None else num_samples
    probs = pyro.param("probs", torch.full((D,), 0.5, dtype=f64),
                       constraint=dist.constraints.unit_interval)
    with pyro.plate("data", n):
        return pyro.sample("x", dist.Bernoulli(probs).to_event(1), obs=x)


def mixture(x=None, num_samples=None, K=10):
    """p(x) = sum_k w_k prod_d Bernoulli(x_d | mu_kd), the assignment z summed out;
    w ~ Dirichlet(1), mu_kd ~ Beta(1.1, 1.1)."""
    n = len(x) if x is not None else num_samples
    w = pyro.sample("weights", dist.Dirichlet(torch.ones(K, dtype=f64)))
    with pyro.plate("components", K):
        mu = pyro.sample("means", dist.Beta(torch.full((D,), 1.1, dtype=f64),
                                            torch.full((D,), 1.1, dtype=f64)).to_event(1))
    with pyro.plate("data", n):
        z = pyro.sample("z", dist.Categorical(w), infer={"enumerate": "parallel"})
        return pyro.sample("x", dist.Bernoulli(mu[z]).to_event(1), obs=x)
