"""Completion (`Fit.complete`): the draws of the missing dims follow the exact conditional
p(rest | given) computed by enumerating every completion with the model's own log_prob, for
each model that can condition; the others say why they cannot."""

import itertools

import pytest
import torch

import inference
from ppl_models import NADE, FullJoint, Independent, Markov
from ppl_models.example_programs import shared_markov

D, K_GIVEN, DRAWS = 6, 3, 20_000


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(300, D, dtype=torch.int64)
    x[:, 0] = torch.rand(300, generator=g) < 0.6
    for d in range(1, D):  # a chain with memory, so the given dims matter
        keep = torch.rand(300, generator=g) < 0.8
        x[:, d] = torch.where(keep, x[:, d - 1], 1 - x[:, d - 1])
    return x


def exact_conditional(fit, given: torch.Tensor) -> torch.Tensor:
    """p(rest | given) over the 2^(D-k) completions, from the fit's log-density."""
    rests = torch.tensor(list(itertools.product([0, 1], repeat=D - K_GIVEN)))
    full = torch.cat([given.expand(len(rests), -1), rests], 1)
    lp = fit.log_density(full)
    return torch.softmax(lp, 0)


def empirical(completions: torch.Tensor) -> torch.Tensor:
    rest = completions[:, K_GIVEN:].long()
    code = (rest * 2 ** torch.arange(D - K_GIVEN - 1, -1, -1)).sum(-1)
    return torch.bincount(code, minlength=2 ** (D - K_GIVEN)).double() / len(rest)


CASES = [
    ("markov order 2, exact", lambda: Markov(D, order=2), "exact", {}),
    ("markov order 1, mle", lambda: Markov(D), "mle", {}),
    ("independent, exact", lambda: Independent(D), "exact", {}),
    ("full joint, exact", lambda: FullJoint(D, sparse=True, alpha=0.5), "exact", {}),
    (
        "nade, map",
        lambda: NADE(D, 4, dtype=torch.float64),
        "map",
        {"max_epochs": 30, "progress_bar": False},
    ),
]


@pytest.mark.parametrize("label, make, method, options", CASES, ids=[c[0] for c in CASES])
def test_completions_follow_the_exact_conditional(label, make, method, options, data):
    fit = inference.fit(make(), data, method, seed=0, **options)
    for given in ([1, 0, 1], [0, 0, 0]):
        prefix = torch.tensor(given).expand(DRAWS, -1)
        out = fit.complete(prefix, seed=1)
        assert out.shape == (DRAWS, D) and (out[:, :K_GIVEN] == prefix).all()
        exact = exact_conditional(fit, torch.tensor([given]))
        tv = 0.5 * (empirical(out) - exact).abs().sum()
        assert tv < 0.02, f"{label}: total variation {tv:.4f} from the exact conditional"


def test_a_nade_visiting_other_dims_first_cannot_complete(data):
    fit = inference.fit(
        NADE(D, 3, order=[5, 4, 3, 2, 1, 0]), data, "map", max_epochs=1, progress_bar=False
    )
    with pytest.raises(ValueError, match="order whose first 3 are not dims 0..2"):
        fit.complete(data[:4, :3])


def test_what_cannot_condition_says_so(data):
    mle = inference.fit(FullJoint(D, sparse=True), data[:5], "mle")
    seen = {tuple(r) for r in data[:5, :3].tolist()}  # 5 rows: at least 3 of 8 prefixes unseen
    unseen = next(p for p in itertools.product([0, 1], repeat=3) if p not in seen)
    with pytest.raises(ValueError, match="probability zero under this full joint"):
        mle.complete(torch.tensor([unseen]))
    program = inference.fit(shared_markov, torch.zeros(8, 64, dtype=torch.int64), "map")
    with pytest.raises(ValueError, match="cannot condition on given dims"):
        program.complete(torch.zeros(2, 32, dtype=torch.int64))
    exact = inference.fit(Markov(D), data, "exact")
    with pytest.raises(ValueError, match=r"prefix must be \(N, k\) with 0 < k < 6"):
        exact.complete(data[:2])
    with pytest.raises(ValueError, match="binarise"):
        exact.complete(torch.full((2, 3), 200))
