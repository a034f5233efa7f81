"""Every Python code block of the README and the docs/ pages runs as copied (issue 11), each in
a fresh namespace and a temporary folder. Shell blocks are the command lines that
tests/test_cli.py runs."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    b for page in PAGES for b in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
]


def test_the_readme_has_python_blocks():
    readme = re.findall(r"```python\n(.*?)```", PAGES[0].read_text(), flags=re.S)
    assert len(readme) >= 3 and len(BLOCKS) >= 6


def test_the_readme_is_a_guide_linking_the_docs():
    text = PAGES[0].read_text()
    assert len(text.splitlines()) <= 320
    for page in ("results", "programs", "arviz", "gpus", "benchmarks", "architecture"):
        assert f"docs/{page}.md" in text and (ROOT / "docs" / f"{page}.md").is_file()


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
