"""The lecture's own example at its own size: 28x28 binary Fashion-MNIST (n = 784), from Debian's
dataset-fashion-mnist (`make test` installs it where it can; without it these tests skip and say
how). Every number is checked against a reference computed here in numpy from the raw IDX
files, and against the figures of issue 23."""

import gzip
import math

import numpy as np
import pytest
import torch

import inference
from ppl_models import NADE, FullJoint, Independent, Markov, datasets

FOLDER = datasets.FASHION_FOLDER
pytestmark = pytest.mark.skipif(
    not (FOLDER / datasets.FASHION_FILES[0]).is_file(),
    reason="no Fashion-MNIST: apt-get install dataset-fashion-mnist (make test does, as root)",
)


def raw(name) -> np.ndarray:
    with gzip.open(FOLDER / name) as f:
        return np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(-1, 784)


@pytest.fixture(scope="module")
def fashion():
    return datasets.load("fashion")


@pytest.fixture(scope="module")
def arrays():
    train = (raw("train-images-idx3-ubyte.gz") > 127).astype(np.int64)
    test = (raw("t10k-images-idx3-ubyte.gz") > 127).astype(np.int64)
    return train[:50_000], train[50_000:], test


def test_the_split_is_as_documented(fashion, arrays):
    assert [tuple(t.shape) for t in fashion] == [(50_000, 784), (10_000, 784), (10_000, 784)]
    assert all(t.dtype == torch.int64 for t in fashion)
    assert [int(t.sum()) for t in fashion] == [12_306_743, 2_494_760, 2_471_969]
    for ours, ref in zip(fashion, arrays, strict=True):
        assert np.array_equal(ours.numpy(), ref)


def test_a_folder_of_your_own_and_the_environment_variable(tmp_path, monkeypatch):
    for name in datasets.FASHION_FILES:
        (tmp_path / name).symlink_to(FOLDER / name)
    assert int(datasets.load("fashion", folder=tmp_path).test.sum()) == 2_471_969
    monkeypatch.setenv("PPL_MODELS_FASHION", str(tmp_path))
    assert int(datasets.load("fashion").valid.sum()) == 2_494_760


def test_missing_files_say_how_to_install_them(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"apt-get install dataset-fashion-mnist.*folder=") as e:
        datasets.load("fashion", folder=tmp_path)
    assert "train-images-idx3-ubyte.gz" in str(e.value)
    monkeypatch.setenv("PPL_MODELS_FASHION", str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="the folder you named"):
        datasets.load("fashion")
    with pytest.raises(ValueError, match="folder applies to fashion"):
        datasets.load("digits", folder=tmp_path)


def markov_reference(train, test, order) -> float:
    """Test nats per image of the Beta(1, 1) posterior predictive of the raster Markov chain of
    `order`: per pixel and context, (count + 1) / (context count + 2)."""
    D = train.shape[1]
    total = np.zeros(len(test))
    for d in range(D):
        k = min(d, order)
        code_tr = sum(train[:, d - j] << (j - 1) for j in range(1, k + 1)) if k else 0
        code_te = sum(test[:, d - j] << (j - 1) for j in range(1, k + 1)) if k else 0
        ones = np.bincount(np.broadcast_to(code_tr, len(train)), train[:, d], minlength=2**k)
        seen = np.bincount(np.broadcast_to(code_tr, len(train)), minlength=2**k)
        p1 = (ones[code_te] + 1) / (seen[code_te] + 2)
        total += np.where(test[:, d] == 1, np.log(p1), np.log1p(-p1))
    return float(-total.mean())


@pytest.mark.slow
def test_markov_chains_in_raster_order_match_numpy(fashion, arrays):
    train, _, test = arrays
    issue = {1: 218.325, 2: 212.417, 4: 202.812, 8: 194.417}
    for order, figure in issue.items():
        f = inference.fit(Markov(784, order=order), fashion.train, "exact")
        r = f.report(fashion.test)
        assert r.nats == pytest.approx(markov_reference(train, test, order), abs=1e-6)
        assert r.nats == pytest.approx(figure, abs=1e-3)
    assert r.num_parameters == 198_911 == sum(2 ** min(d, 8) for d in range(784))


def test_independence_exact_and_its_mle_zero(fashion, arrays):
    train, _, test = arrays
    p1 = (train.sum(0) + 1) / (len(train) + 2)
    ref = -np.where(test == 1, np.log(p1), np.log1p(-p1)).sum(1).mean()
    r = inference.fit(Independent(784), fashion.train, "exact").report(fashion.test)
    assert r.nats == pytest.approx(ref, abs=1e-8) and r.nats == pytest.approx(383.131, abs=1e-3)
    assert r.num_parameters == 784
    mle = inference.fit(Independent(784), fashion.train, "mle").report(fashion.test)
    never_on = train.sum(0) == 0
    zero = int((test[:, never_on] == 1).any(1).sum())
    assert int(never_on.sum()) == 5 and zero == 1
    assert mle.nats == math.inf and mle.num_zero_prob == zero


def test_the_full_joint_at_784_dims(fashion, arrays):
    train, _, test = arrays
    keys = {}
    for row in train:
        keys[row.tobytes()] = keys.get(row.tobytes(), 0) + 1
    counts = np.array([keys.get(row.tobytes(), 0) for row in test], dtype=float)
    log_norm = 784 * math.log(2) + math.log1p(len(train) / 2.0**784)  # log(2^784 + N)
    ref = -(np.log(counts + 1) - log_norm).mean()
    model = FullJoint(784, sparse=True)
    assert model.num_parameters == 2**784 - 1 and isinstance(model.num_parameters, int)
    r = inference.fit(model, fashion.train, "exact").report(fashion.test)
    assert r.nats == pytest.approx(ref, abs=1e-8) and r.nats == pytest.approx(543.427, abs=1e-3)
    assert int((counts > 0).sum()) == 3
    mle = inference.fit(FullJoint(784, sparse=True), fashion.train, "mle").report(fashion.test)
    assert mle.nats == math.inf and mle.num_zero_prob == 9_997


def test_bad_input_at_784_dims(fashion):
    raw_images = torch.from_numpy(raw("t10k-images-idx3-ubyte.gz")[:5].astype(np.int64))
    for model in (NADE(784, 10), Independent(784), Markov(784), FullJoint(784, sparse=True)):
        with pytest.raises(ValueError, match="binarise"):
            model.log_prob(raw_images)
    with pytest.raises(ValueError, match="built for num_dims=64"):
        NADE(64, 10).log_prob(fashion.test[:3])
    with pytest.raises(ValueError, match="784 dimensions per datum"):
        inference.fit(Markov(64), fashion.train[:10], "exact")


def test_nade_scores_784_dims_in_bounded_memory_and_equals_its_program(fashion):
    """The O(DH) path gives the per-site program's density at 784 dims (float64), in blocks."""
    from pyro import poutine

    m = NADE(784, 20, dtype=torch.float64).init_from_data(fashion.train[:500].double())
    x = fashion.test[:7].double()
    tr = poutine.trace(m).get_trace(x)
    tr.compute_log_prob()
    sites = sum(tr.nodes[f"x_{d}"]["log_prob"] for d in range(784))
    torch.testing.assert_close(m.log_prob(x), sites, rtol=1e-10, atol=1e-8)


def test_completion_picture_from_the_suite(fashion, tmp_path):
    from ppl_models.app import suites

    fits = {
        "Markov order 2": inference.fit(Markov(784, order=2), fashion.train, "exact"),
        "FullJoint": inference.fit(FullJoint(784, sparse=True), fashion.train, "mle"),
        "Independent": inference.fit(Independent(784), fashion.train, "exact"),
    }
    written = suites.completion_picture(fashion, fits, tmp_path, seed=0, n=4)
    assert written == ["completion.png"] and (tmp_path / "completion.png").stat().st_size > 5000
    done = fits["Markov order 2"].complete(fashion.test[:4, :392], seed=0)
    assert torch.equal(done[:, :392], fashion.test[:4, :392])


def test_the_cli_lists_fashion(capsys):
    from ppl_models.app import cli

    cli.main(["datasets"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("fashion"))
    assert "(N, 784) int64" in line and "50,000 train" in line


@pytest.mark.slow
def test_a_mixture_program_of_yours_at_784_dims(fashion):
    """A plain Pyro program with an enumerated component, fitted by the library at this scale
    (the user-program path): a few epochs already beat every Markov chain and independence
    (order 8: 194.417 nats); `benchmarks/bench_fashion.py --part train` runs the suite's 40
    epochs (179.11, the EM reference 178.27)."""
    from ppl_models.example_programs import bernoulli_mixture

    f = inference.fit(
        bernoulli_mixture,
        fashion.train,
        "map",
        given={"K": 50, "D": 784},
        valid=fashion.valid,
        batch_size=1000,
        max_epochs=6,
        lr=0.05,
        seed=0,
        progress_bar=False,
    )
    r = f.report(fashion.test)
    assert r.num_parameters == 50 * 785 - 1 and r.nats < 190.0
    assert f.sample(3, seed=0).shape == (3, 784)
    with pytest.raises(ValueError, match="cannot condition on given dims"):
        f.complete(fashion.test[:2, :392])
