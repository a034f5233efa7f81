"""NUTS on nutpie (issue 26): the engine choice, exact conjugate posteriors matched by nutpie's
draws, and nothing a NUTS fit had on Pyro's engine lost (sample statistics under ArviZ's names,
seeds, saved fits, ArviZ, compare). References: each model's exact posterior (20,000 exact
draws), scipy. The eight-schools checks run on both engines in tests/test_hierarchical.py."""

import warnings

import numpy as np
import pytest
import torch
from nuts_engines import engine_or_skip

import inference
from inference import nutpie_engine
from ppl_models import AutoRegressive, Independent, Markov, datasets

pytestmark = pytest.mark.skipif(not nutpie_engine.installed(), reason="nutpie is not installed")

STATS = {"diverging", "energy", "lp", "step_size", "tree_depth", "n_steps", "acceptance_rate"}


def test_the_engine_is_chosen_by_name_and_checked():
    assert nutpie_engine.choose(None, False, None) == "nutpie"  # installed: the default
    assert nutpie_engine.choose("pyro", False, None) == "pyro"
    with pytest.raises(ValueError, match="engine must be one of 'nutpie', 'pyro'"):
        nutpie_engine.choose("stan", False, None)
    with pytest.raises(ValueError, match="low_rank and cores are options of the nutpie engine"):
        inference.fit(Independent(4), torch.ones(5, 4), "nuts", engine="pyro", low_rank=True)
    with pytest.raises(ValueError, match="cores must be an integer >= 1"):
        inference.fit(Independent(4), torch.ones(5, 4), "nuts", cores=0)
    # no warm-up: nutpie's Rust core panics (it adapts in warm-up); the Pyro engine runs it
    assert nutpie_engine.choose(None, False, None, warmup_steps=0) == "pyro"
    for engine, options in (("nutpie", {}), (None, {"low_rank": True})):
        with pytest.raises(ValueError, match="warmup_steps=0: nutpie adapts its step size"):
            inference.fit(
                Independent(4), torch.ones(5, 4), "nuts", engine=engine, warmup_steps=0, **options
            )
    f = inference.fit(Independent(4), torch.ones(5, 4), "nuts", num_samples=20, warmup_steps=0)
    assert f.info["engine"] == "pyro" and f.draws["probs"].shape == (2, 20, 4)


def conjugate_cases():
    digits = datasets.load("digits").train
    sunspots = datasets.load("sunspots").train
    return [
        ("independent", Independent(64), digits),
        ("markov", Markov(32), digits[:, 16:48]),  # the middle rows: 63 parameters
        ("ar2", AutoRegressive(2), sunspots),
    ]


@pytest.mark.slow
@pytest.mark.parametrize("case", ["independent", "markov", "ar2"])
def test_nutpie_draws_match_the_exact_conjugate_posterior(case):
    """2 chains x (500 + 1,000) by nutpie: every posterior mean within 0.1 posterior sd of the
    exact posterior's (20,000 exact draws), every sd within 10%."""
    _, model, x = next(c for c in conjugate_cases() if c[0] == case)
    exact = inference.fit(model, x, "exact", num_samples=20_000, seed=1)
    f = inference.fit(model, x, "nuts", num_samples=1000, warmup_steps=500, seed=0)
    assert f.info["engine"] == "nutpie"
    for name, ref in exact.draws.items():
        ref = ref.flatten(0, 1)
        mean, sd = ref.mean(0), ref.std(0)
        drawn = f.draws[name].flatten(0, 1)
        assert float(((drawn.mean(0) - mean).abs() / sd).max()) < 0.1, name
        assert float((drawn.std(0) / sd - 1).abs().max()) < 0.1, name


@pytest.mark.arviz
def test_a_nutpie_fit_keeps_what_a_pyro_fit_has(tmp_path):
    """Sample statistics under ArviZ's names and shapes; the same seed, the same draws; a
    saved fit restored with its draws; ArviZ's sample_stats; compare beside a Pyro-engine fit."""
    x = datasets.load("digits").train[:300, 20:28]
    runs = [
        inference.fit(Independent(8), x, "nuts", num_samples=100, warmup_steps=200, seed=3)
        for _ in range(2)
    ]
    f = runs[0]
    assert torch.equal(f.draws["probs"], runs[1].draws["probs"])
    assert set(f.sample_stats) == STATS
    assert all(v.shape == (2, 100) for v in f.sample_stats.values())
    assert f.sample_stats["diverging"].dtype == torch.bool
    assert int(f.sample_stats["tree_depth"].min()) >= 1
    assert f.info["engine"] == "nutpie" and f.info["divergences"] == 0
    idata = f.to_arviz()
    assert STATS <= set(idata.sample_stats.data_vars)
    f.save(tmp_path / "fit.ppl")
    back = inference.load(tmp_path / "fit.ppl")
    assert torch.equal(back.draws["probs"], f.draws["probs"])
    assert back.info["engine"] == "nutpie"
    pyro_fit = inference.fit(
        Independent(8), x, "nuts", num_samples=100, warmup_steps=100, seed=3, engine="pyro"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = inference.compare({"nutpie": f, "pyro": pyro_fit}, x)
    assert set(table.index) == {"nutpie", "pyro"}
    assert np.allclose(table["elpd_loo"].values, table["elpd_loo"].values[0], rtol=0.01)


@pytest.mark.parametrize("engine", ["nutpie", "pyro"])
def test_options_reach_the_engine(engine):
    """max_tree_depth bounds every tree, num_chains and num_samples shape the draws, on both."""
    x = datasets.load("digits").train[:100, 20:24]
    f = inference.fit(
        Independent(4),
        x,
        "nuts",
        num_samples=30,
        warmup_steps=30,
        num_chains=3,
        max_tree_depth=2,
        engine=engine_or_skip(engine),
    )
    assert f.draws["probs"].shape == (3, 30, 4)
    assert int(f.sample_stats["tree_depth"].max()) <= 2
    assert int(f.sample_stats["n_steps"].max()) <= 3


def test_an_eager_potential_in_two_threads_gives_the_draws_of_one(digits):
    """nutpie's chains run in threads; a potential that is not traced runs Python there (a
    built-in model's values, Pyro's global handler stack). One evaluation at a time: two
    threads give exactly the draws of one, and the fit's model holds no thread's values (it
    used to keep a traced tensor, and copying the fit failed)."""
    x = digits.train[:200, 20:26]
    fits = [
        inference.fit(
            Independent(6),
            x,
            "nuts",
            engine="nutpie",
            jit_compile=False,
            cores=cores,
            num_samples=50,
            warmup_steps=50,
            seed=1,
            progress_bar=False,
        )
        for cores in (2, 1)
    ]
    assert fits[0].info["potential"] == "eager"
    torch.testing.assert_close(fits[0].draws["probs"], fits[1].draws["probs"], rtol=0, atol=0)
    assert fits[0].program.model.__dict__.get("_using") is None


def test_a_chains_start_from_the_priors_is_its_own_and_its_seeds():
    """Starts drawn from the priors under the seed nutpie hands a chain: the same seed, the
    same start; two seeds, two starts (a row picked by seed % chains gave two chains one start
    in half the fits); the caller's random stream untouched."""
    starts = nutpie_engine.Starts(2, 3, 1.0, draw=lambda: torch.randn(3, dtype=torch.float64))
    torch.manual_seed(0)
    before = torch.rand(())
    torch.manual_seed(0)
    one, two = 12753565033001870903, 3022218539228377471  # one fit's chains: the same row before
    a, b, again = starts(one), starts(two), starts(one)
    assert torch.rand(()) == before
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, b)
