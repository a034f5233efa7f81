"""Devices, dtypes, bigger data and fast sampling, as far as a CPU shows them (issue 9; the
GPU checks are in test_gpu.py, the data-parallel ones in test_distributed.py)."""

import functools

import pytest
import torch
from pyro import poutine

import inference
from ppl_models import NADE, AutoRegressive, Independent, LinearGaussian, Markov, datasets

# -- dtypes ---------------------------------------------------------------------------------------
DTYPES = [
    ("Markov float32", lambda: Markov(64, order=2).float(), "bits", "mle", torch.float32),
    ("Markov float32 exact", lambda: Markov(64, order=2).float(), "bits", "exact", torch.float32),
    ("Independent float32", lambda: Independent(64).float(), "bits", "mle", torch.float32),
    ("AutoRegressive float32", lambda: AutoRegressive(2).float(), "series", "mle", torch.float32),
    ("LinearGaussian float32", lambda: LinearGaussian(4).float(), "real", "mle", torch.float32),
    ("NADE float64 by .double()", lambda: NADE(64, 10).double(), "bits", "mle", torch.float64),
    ("NADE float32", lambda: NADE(64, 10), "bits", "map", torch.float32),
]


def data(kind, digits):
    if kind == "series":
        return datasets.load("sunspots").train
    if kind == "real":
        return torch.randn(100, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return digits.train


@pytest.mark.parametrize("name, make, kind, method, dtype", DTYPES, ids=[d[0] for d in DTYPES])
def test_a_models_dtype_is_respected(name, make, kind, method, dtype, digits):
    options = {"max_epochs": 2} if "NADE" in name else {}
    f = inference.fit(make(), data(kind, digits), method, **options)
    for k, v in f.params.items():
        assert v.dtype == dtype, (k, v.dtype)
    assert f.model.dtype == dtype
    assert torch.isfinite(f.log_density(data(kind, digits))).all()


def test_a_dtype_option(digits):
    f = inference.fit(NADE(64, 10), digits.train, "mle", max_epochs=1, dtype=torch.float64)
    assert all(v.dtype == torch.float64 for v in f.params.values())
    g = inference.fit(Markov(64), digits.train, "mle", dtype="float32")
    assert g.params["probs"].dtype == torch.float32


@pytest.mark.filterwarnings("ignore:.*NUTS draws diverged")
def test_a_float32_posterior_is_sampled_in_float32(digits):
    # Pyro draws NUTS momenta in torch's default dtype (float64 here): the potential casts
    f = inference.fit(
        NADE(64, 4),
        digits.train[:200],
        "nuts",
        num_samples=3,
        warmup_steps=3,
        num_chains=1,
        max_tree_depth=3,
        init={},
    )
    assert all(v.dtype == torch.float32 for v in f.draws.values())
    assert torch.isfinite(f.log_density(digits.test[:20])).all()


def test_converting_a_fitted_model_keeps_its_exact_values(digits):
    # a never-seen pixel has probability exactly 0 (not 2.2e-308) after .float() too
    m = inference.fit(Independent(64), digits.train, "mle").model
    zero = m.get_params()["probs"] == 0
    assert zero.any()
    m32 = m.float()
    assert (m32.get_params()["probs"][zero] == 0).all()
    on = digits.test[:1].clone()
    on[0, zero.nonzero()[0, 0]] = 1
    assert torch.isneginf(m32.log_prob(on)).all()


# -- devices --------------------------------------------------------------------------------------
def test_the_cpu_device_and_the_datas_device(digits):
    f = inference.fit(Independent(64), digits.train, device="cpu")
    g = inference.fit(Independent(64), digits.train, device=torch.device("cpu"))
    assert torch.equal(f.params["probs"], g.params["probs"])
    assert f.program.device.type == "cpu"


@pytest.mark.parametrize(
    "device, words",
    [("tpu", ["device must be 'cpu', 'cuda'"]), (3.5, ["device must be"]), ("cuda:9", ["cuda"])],
)
def test_a_device_that_is_not_there(device, words, digits):
    with pytest.raises(ValueError) as err:
        inference.fit(Independent(64), digits.train, device=device)
    for w in words:
        assert w in str(err.value)


# -- bigger embedded data ----------------------------------------------------------------------
def test_more_patches_by_the_same_recipe():
    base = datasets.load("patches")
    more = datasets.load("patches", num_train=26_000)
    assert more.train.shape == (26_000, 63)
    assert torch.equal(more.train[:20_000], base.train)  # the default split stays as it is
    assert torch.equal(more.valid, base.valid) and torch.equal(more.test, base.test)
    assert not torch.equal(more.train[20_000:21_000], base.train[:1_000])
    fewer = datasets.load("patches", num_train=500)
    assert torch.equal(fewer.train, base.train[:500])


@pytest.mark.parametrize("value", [0, -3, 2.5, "many", True])
def test_num_train_must_be_a_positive_integer(value):
    with pytest.raises(ValueError, match="num_train must be a positive integer"):
        datasets.load("patches", num_train=value)


def test_num_train_is_for_patches():
    with pytest.raises(ValueError, match="num_train applies to patches"):
        datasets.load("digits", num_train=100)


# -- sampling at the speed of the math ------------------------------------------------------------
@pytest.mark.parametrize(
    "make, kind",
    [
        (lambda: NADE(64, 12), "bits"),
        (lambda: NADE(63, 8, "mog", components=3), "patches"),
        (lambda: NADE(64, 6, order=list(range(63, -1, -1))), "bits"),
    ],
    ids=["nade", "rnade", "nade-reversed"],
)
def test_the_fast_sampler_draws_what_the_program_draws(make, kind, digits):
    x = digits.train if kind == "bits" else datasets.load("patches").train[:2000]
    f = inference.fit(make(), x, "mle", max_epochs=2)
    p = f.program
    assert p.accelerator("_sample") is not None
    torch.manual_seed(7)
    fast = p.sample(300)
    torch.manual_seed(7)
    tr = poutine.trace(functools.partial(p.run, num_samples=300)).get_trace()
    assert torch.equal(fast, p.generated(tr, 300))
    assert torch.equal(f.sample(20, seed=1), f.sample(20, seed=1))


def test_a_sparse_full_joint_mle_has_no_draws_for_arviz(digits):
    from ppl_models import FullJoint

    f = inference.fit(FullJoint(64, sparse=True), digits.train, "mle")
    with pytest.raises(ValueError, match="no parameters to draw.*method='exact'"):
        f.to_arviz()


def test_minibatch_svi_in_one_process(digits):
    x = digits.train[:, 20:28]
    exact = inference.fit(Independent(8), x, "exact", num_samples=4000)
    f = inference.fit(Independent(8), x, "svi", batch_size=100, steps=800, num_samples=300)
    sd = exact.draws["probs"].flatten(0, 1).std(0)
    assert float(((f.params["probs"] - exact.params["probs"]).abs() / sd).max()) < 0.5
    with pytest.raises(ValueError, match="a series is fitted whole"):
        inference.fit(
            AutoRegressive(2), datasets.load("sunspots").train, "svi", batch_size=50, steps=10
        )
