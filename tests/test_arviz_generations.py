"""Both ArviZ generations (issue 17): every test here runs under ArviZ 0.23 (`make test`) and
under ArviZ 1.x (`make test-arviz1`, Python >= 3.12), through
`inference.evaluation.arviz_generations`.
The cross-generation test computes the same numbers from the same files in this leg and in the
other leg's interpreter (found beside this one: .venv and .venv-arviz1)."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import inference
from inference.evaluation import arviz_generations as gen
from inference.evaluation import plots
from ppl_models import AutoRegressive, Independent, datasets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arviz_numbers import compared, numbers  # noqa: E402

from ppl_models.example_programs import shared_markov  # noqa: E402

pytestmark = pytest.mark.arviz
ROOT = Path(__file__).resolve().parent.parent
LEGS = (".venv", ".venv-arviz1")


def other_python() -> str | None:
    """The other leg's interpreter: $PPL_MODELS_OTHER_PYTHON, else the other of .venv and
    .venv-arviz1 where it is installed."""
    if os.environ.get("PPL_MODELS_OTHER_PYTHON"):
        return os.environ["PPL_MODELS_OTHER_PYTHON"]
    here = Path(sys.prefix).resolve()
    for leg in LEGS:
        py = ROOT / leg / "bin" / "python"
        if (ROOT / leg).resolve() != here and py.exists():
            return str(py)
    return None


@pytest.fixture(scope="module")
def sunspots():
    return datasets.load("sunspots").train


@pytest.fixture(scope="module")
def ar_fits(sunspots):
    return {
        p: inference.fit(
            AutoRegressive(p),
            sunspots,
            "nuts",
            num_samples=250,
            warmup_steps=250,
            seed=p,
            progress_bar=False,
        )
        for p in (2, 3)
    }


def test_to_arviz_is_the_installed_generations_container(ar_fits):
    data = ar_fits[2].to_arviz(posterior_predictive=True)
    assert isinstance(data, xr.DataTree if gen.MODERN else gen.az.InferenceData)
    groups = gen.groups(data)
    assert {
        "posterior",
        "log_likelihood",
        "observed_data",
        "posterior_predictive",
        "sample_stats",
        "constant_data",
    } <= set(groups)
    assert groups["posterior"]["phi"].dims == ("chain", "draw", "lag")
    assert groups["log_likelihood"]["x"].shape == (2, 250, 307)
    assert groups["posterior_predictive"]["x"].dims == groups["log_likelihood"]["x"].dims
    assert groups["posterior"].attrs["method"] == "nuts"


def test_ar2_and_ar3_compared_on_the_common_sample(ar_fits):
    table = inference.compare({f"AR({p})": f for p, f in ar_fits.items()}, criterion="loo")
    assert list(table.columns[:9]) == gen.COLUMNS
    assert (table["n"] == 306).all()  # both score t >= 3
    records = {f"AR({p})": gen.loo(f.to_arviz(start=3)) for p, f in ar_fits.items()}
    for k, e in records.items():
        assert table.loc[k, "elpd_loo"] == pytest.approx(float(gen.field(e, "elpd_loo")), abs=1e-9)
    direct = gen.compare(records)
    assert set(direct.index) == set(records) and list(direct.columns[:9]) == gen.COLUMNS


def test_loo_pit_of_an_ar_fit(ar_fits):
    pit = gen.loo_pit(ar_fits[2].to_arviz(posterior_predictive=True))
    assert pit.shape == (307,) and ((pit >= 0) & (pit <= 1)).all()
    grid = np.sort(pit)
    ks = np.max(np.abs(grid - (np.arange(1, 308) - 0.5) / 307))
    assert ks < 0.15


def test_forest_ppc_energy_and_compare_draw(ar_fits, tmp_path):
    plots.forest(
        {f"AR({p})": f for p, f in ar_fits.items()}, tmp_path / "forest.png", var_names=["sigma"]
    )
    plots.ppc(ar_fits[2], tmp_path / "ppc.png", draws=20)
    plots.energy(ar_fits[2], tmp_path / "energy.png")
    table = inference.compare({f"AR({p})": f for p, f in ar_fits.items()}, criterion="loo")
    plots.compare(table, tmp_path / "compare.png")
    for name in ("forest", "ppc", "energy", "compare"):
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name


def test_a_users_program_compares_beside_a_builtin(digits):
    """The README's shared-transition chain (a plain function here) by SVI beside the built-in
    Independent(64) by exact: both convert, and inference.compare ranks them (one transition
    table for every pixel is a poor model of digits: 64 free probabilities win)."""
    x = digits.train[:300]
    fits = {
        "Independent (exact)": inference.fit(Independent(64), x, "exact", num_samples=400),
        "shared chain (yours, svi)": inference.fit(
            shared_markov, x, "svi", steps=300, num_samples=200, progress_bar=False
        ),
    }
    data = fits["shared chain (yours, svi)"].to_arviz()
    assert gen.groups(data)["posterior"]["trans"].shape[:2] == (2, 100)  # 2 chains of 100
    table = inference.compare(fits)
    assert list(table.index) == ["Independent (exact)", "shared chain (yours, svi)"]
    assert table.loc["shared chain (yours, svi)", "criterion"].startswith("psis-loo (")
    assert table.loc["Independent (exact)", "nats"] < table.loc["shared chain (yours, svi)", "nats"]


def map_fit(nuts_fit):
    return inference.fit(AutoRegressive(2), nuts_fit.data, "map")


@pytest.fixture(scope="module")
def saved(tmp_path_factory, ar_fits, digits):
    """The AR(2) NUTS fit and a digits SVI fit, each as a netCDF file and a saved fit."""
    out = tmp_path_factory.mktemp("generations")
    fits = {
        "ar2_nuts": ar_fits[2],
        "digits_svi": inference.fit(
            Independent(64), digits.train, "svi", steps=300, num_samples=400, progress_bar=False
        ),
    }
    files = {}
    for name, f in {"ar3_nuts": ar_fits[3], "ar2_map": map_fit(ar_fits[2])}.items():
        f.save(out / f"{name}.pt")  # for the compare table
    for name, f in fits.items():
        gen.write_netcdf(f.to_arviz(), out / f"{name}.nc")
        f.save(out / f"{name}.pt")
        files[name] = (str(out / f"{name}.nc"), str(out / f"{name}.pt"))
    return files


def test_the_same_files_give_the_same_numbers_in_both_generations(saved):
    """elpd_loo, p_loo, Pareto k, bulk ESS, r_hat and the log-density of `inference.load`ed
    fits agree to 1e-8, computed from the same saved AR(2) NUTS fit and digits SVI fit
    (importance-corrected: arviz-stats' loo_approximate_posterior under 1.x, the same formula
    with inference.evaluation.psis under 0.23) in this leg and the other."""
    other = other_python()
    if other is None:
        pytest.skip(
            "the other ArviZ leg is not installed here (make test-arviz1 builds "
            ".venv-arviz1; make test builds .venv)"
        )
    for name, (nc, pt) in saved.items():
        series = [pt] + [pt.replace("ar2_nuts", n) for n in ("ar3_nuts", "ar2_map")]
        series = series if name == "ar2_nuts" else []
        here = numbers(nc, pt)
        if series:
            here["compare"] = compared(series)
        run = subprocess.run(
            [other, str(ROOT / "tests" / "arviz_numbers.py"), nc, pt, *series],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        there = json.loads(run.stdout.strip().splitlines()[-1])
        assert here["generation"] != there["generation"]
        assert set(here["groups"]) == set(there["groups"]), name
        # the same PSIS in both (inference.evaluation.psis, arviz-stats'): LOO to 1e-8 as well
        for key in ("ess_bulk", "r_hat", "log_density", "elpd_loo", "p_loo", "pareto_k"):
            np.testing.assert_allclose(
                here[key], there[key], rtol=1e-8, atol=1e-8, err_msg=f"{name} {key}"
            )
        if series:  # one compare table in both generations: elpd_diff >= 0, the same se
            assert here["compare"].keys() == there["compare"].keys()
            for k, row in here["compare"].items():
                np.testing.assert_allclose(row, there["compare"][k], rtol=1e-8, atol=1e-8)
                assert row[3] >= 0, k
        print(name, {k: (here[k], there[k]) for k in ("elpd_loo", "p_loo", "ess_bulk", "r_hat")})


def test_psis_is_arviz_stats_psis():
    """inference.evaluation.psis against the installed ArviZ's PSIS on heavy-tailed log-likelihoods
    (Student-t, 3 dof, four scales; 100 to 4,000 draws; r_eff 1 and 0.7): under 1.x
    arviz-stats' psislw to 1e-10 (the same algorithm); under 0.23, whose psislw fits a tail
    one draw longer (ceil, not floor, of 3 sqrt(S / r_eff)), on the data both call reliable
    (k < 0.7): Pareto k within 0.1 and elpd within 0.01 nats per datum (equal below 225
    draws, where both take S / 5)."""
    from inference.evaluation.psis import logsumexp, psis

    rng = np.random.default_rng(0)
    reliable = 0
    for S in (100, 500, 4000):
        for scale in (0.3, 3.0):
            ll = rng.standard_t(3, size=(40, S)) * scale
            for r_eff in (1.0, 0.7):
                lw, k = psis(-ll, r_eff)
                assert np.allclose(logsumexp(lw), 0.0, atol=1e-12)
                if gen.MODERN:
                    from arviz_stats.base import array_stats

                    ref_lw, ref_k = array_stats.psislw(ll, r_eff=r_eff, axis=-1)
                    np.testing.assert_allclose(lw, ref_lw, atol=1e-10)
                    np.testing.assert_allclose(k, ref_k, atol=1e-10)
                else:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        ref_lw, ref_k = gen.az.psislw(-ll, reff=r_eff)
                    ok = (k < 0.7) & (ref_k < 0.7)
                    reliable += ok.sum()
                    assert np.all(np.abs(k - ref_k)[ok] < 0.1)
                    elpd, ref = logsumexp(lw + ll), logsumexp(ref_lw + ll)
                    assert np.all(np.abs(elpd - ref)[ok] < 0.01)
                    if S < 225:
                        np.testing.assert_allclose(k, ref_k, atol=1e-12)
    assert gen.MODERN or reliable > 50
