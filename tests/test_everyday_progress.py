"""Progress bars (issue 11): on by default wherever tqdm can draw (tqdm.auto: terminals,
notebooks, log files), off with progress_bar=False or in CI."""

import pytest

import inference
from ppl_models import NADE
from ppl_models.runtime import show_progress

CASES = [  # (environment, progress_bar, shown)
    ({}, None, True),
    ({"CI": "true"}, None, False),
    ({"CI": "true"}, True, True),
    ({}, False, False),
    ({"PPL_MODELS_PROGRESS": "0"}, None, False),
]


@pytest.mark.parametrize("env, option, shown", CASES)
def test_when_bars_show(env, option, shown, monkeypatch):
    for key in ("CI", "PPL_MODELS_PROGRESS"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert show_progress(option) is shown


def test_a_bar_is_drawn_without_a_terminal(digits, capsys, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PPL_MODELS_PROGRESS", raising=False)
    inference.fit(NADE(64, 3), digits.train[:200], "mle", max_epochs=2)
    assert "mle NADE" in capsys.readouterr().err  # stderr is captured: not a terminal
    inference.fit(NADE(64, 3), digits.train[:200], "mle", max_epochs=2, progress_bar=False)
    assert "mle NADE" not in capsys.readouterr().err


def test_progress_bar_must_be_a_bool(digits):
    with pytest.raises(ValueError, match="progress_bar must be True or False"):
        inference.fit(NADE(64, 3), digits.train, "mle", progress_bar="yes")
