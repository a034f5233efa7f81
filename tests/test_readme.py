"""Every Python code block of the README runs as copied (issue 11), each in a fresh namespace
and a temporary folder. Shell blocks are the command lines that tests/test_cli.py runs."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


ARVIZ = ("arviz", "to_arviz", "inference.compare", "plots.")  # blocks run under ArviZ 1.x too


@pytest.mark.slow
@pytest.mark.parametrize(
    "index",
    [
        pytest.param(i, marks=pytest.mark.arviz) if any(a in b for a in ARVIZ) else i
        for i, b in enumerate(BLOCKS)
    ],
)
def test_readme_block_runs_as_copied(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CI", "1")
    code = BLOCKS[index]
    exec(compile(code, f"README block {index + 1}", "exec"), {"__name__": "__main__"})
