"""Every example in examples/ runs end to end in its quick mode and writes its pictures
(issue 8: the gallery the README shows)."""

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PICTURES = {
    "parameter_counts": ["parameter_counts.png"],
    "discrete_digits": ["digits_samples.png", "digits_forest.png"],
    "rgb_pixel": ["rgb_alpha.png", "rgb_samples.png"],
    "sunspots_ar": ["sunspots_forest.png", "sunspots_ppc.png", "sunspots_forecast.png"],
    "nade_digits": ["nade_curve.png", "nade_samples.png", "nade_density.png"],
    "rnade_patches": ["rnade_patches.png", "rnade_tradeoff.png"],
    "your_own_variant": ["own_variant_samples.png", "own_variant_compare.png"],
}


def load(name):
    if str(EXAMPLES) not in sys.path:  # as when the script runs: its folder first on the path
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_every_example_is_listed():
    assert {p.stem for p in EXAMPLES.glob("*.py")} - {"preamble"} == set(PICTURES)


USE_ARVIZ = {"discrete_digits", "sunspots_ar", "your_own_variant"}  # also under ArviZ 1.x


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.arviz) if n in USE_ARVIZ else n for n in PICTURES]
)
def test_example_runs_in_quick_mode(name, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", [name])
    load(name).main(["--quick", "--out", str(tmp_path)])
    assert "wrote" in capsys.readouterr().out
    for picture in PICTURES[name]:
        assert (tmp_path / picture).stat().st_size > 5000, picture
