"""The layers, read from the source (AST), not from a running import: no import cycles (imports
inside functions count), arrows pointing down only (app -> inference -> ppl_models.programs ->
ppl_models.models), no private name of one module used in another, and Pyro's private members
touched in `ppl_models.pyro_internals` alone."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ppl_models", "inference")
INTERNALS = "ppl_models.pyro_internals"
# programs written as users write them (Pyro's examples, bodies unchanged), not library code
EXAMPLES = "ppl_models.example_programs"
# The old flat paths (ppl_models.moved) and the public names: they import from every layer.
ANY_LAYER = {"ppl_models", "inference", "ppl_models.moved", "ppl_models.__main__"}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def imports(name: str) -> list[tuple[str, list[str], int]]:
    """(module, names imported from it, line) for every import of `name`, at any depth,
    relative imports resolved."""
    out = []
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def edges(name: str) -> set[str]:
    """Our modules that `name` imports: `from pkg import mod` counts as the submodule."""
    out = set()
    for module, names, _ in imports(name):
        subs = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES]
        out.update(subs)
        if module in MODULES and len(subs) < len(names) or module in MODULES and not names:
            out.add(module)
    out.discard(name)
    return out


def cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: edges(m) for m in MODULES}
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(name: str) -> int:
    """0: the floor (checks, runtime, datasets, Pyro's internals); 1 models; 2 programs;
    3 inference; 4 app."""
    for prefix, level in (
        ("ppl_models.app", 4),
        ("inference", 3),
        ("ppl_models.programs", 2),
        ("ppl_models.models", 1),
    ):
        if name == prefix or name.startswith(prefix + "."):
            return level
    return 0


def defined_privates(name: str) -> set[str]:
    """Private names a module defines: functions, classes, module globals, attributes it
    assigns (`self._x = ...`, `obj._x = ...`)."""
    out = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def private_uses() -> list[str]:
    """`from ours import _x`, `obj._x` where `_x` belongs to another of our modules, and
    `obj._x` where `_x` is no name of ours (a library's private member) outside
    `pyro_internals`. A class may use the members it inherits (`self._x`)."""
    ours = {m: defined_privates(m) for m in MODULES}
    every = set().union(*ours.values())
    bad = []
    for name in MODULES:
        if name == EXAMPLES:
            continue
        for module, names, line in imports(name):
            if module.split(".")[0] in PACKAGES:
                bad += [
                    f"{name}:{line} imports {n} from {module}"
                    for n in names
                    if n.startswith("_")
                    and not n.startswith("__")
                    and f"{module}.{n}" not in MODULES
                ]
            elif module.split(".")[0] == "pyro" and name != INTERNALS:
                bad += [
                    f"{name}:{line} imports Pyro's private {module}.{n}"
                    for n in names
                    if n.startswith("_")
                ]
        for node in ast.walk(TREES[name]):
            if not isinstance(node, ast.Attribute):
                continue
            attr = node.attr
            if not attr.startswith("_") or attr.startswith("__"):
                continue
            # a class's own members and those it inherits: self._x, cls._x
            inherited = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            mine = attr in ours[name] or inherited and attr in every
            if attr not in every and name != INTERNALS:
                bad.append(f"{name}:{node.lineno} uses a library's private member .{attr}")
            elif attr in every and not mine:
                owner = sorted(m for m, names in ours.items() if attr in names)
                bad.append(f"{name}:{node.lineno} uses .{attr} of {', '.join(owner)}")
    return bad


def test_no_import_cycles():
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_arrows_point_down():
    up = [
        f"{m} (layer {layer(m)}) imports {e} (layer {layer(e)})"
        for m in MODULES
        if m not in ANY_LAYER
        for e in sorted(edges(m))
        if e not in ANY_LAYER and layer(e) > layer(m)
    ]
    assert not up, "imports against the layers:\n" + "\n".join(up)


def test_no_private_names_across_modules():
    bad = private_uses()
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_every_module_is_read():
    assert {
        "ppl_models.models.base",
        "ppl_models.programs.program",
        "inference.fitting",
        "inference.evaluation.arviz_io",
        "ppl_models.app.cli",
    } <= set(MODULES)
    assert all(edges(m) <= set(MODULES) for m in MODULES)


def test_files_stay_small():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over 450 lines (split by concept): {long}"


if __name__ == "__main__":  # the report the closing note quotes
    print("cycles:", cycles() or "none")
    print("private names across modules:", private_uses() or "none")


def model_calls() -> dict[str, str]:
    """Every member the program reader, inference and the app use on a model: `X.model.NAME`,
    `getattr(X.model, "NAME")`, `accelerator("NAME")` -> where."""
    out = {}
    for name in MODULES:
        if layer(name) < 2:
            continue
        for node in ast.walk(TREES[name]):
            found = None
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "model"
            ):
                found = node.attr
            elif isinstance(node, ast.Call) and node.args:
                fn = node.func
                fname = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", "")
                first = node.args[0]
                on_model = isinstance(first, ast.Attribute) and first.attr == "model"
                arg = (
                    node.args[-1]
                    if fname == "accelerator"
                    else node.args[1]
                    if fname in ("getattr", "hasattr") and on_model
                    else None
                )
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found = arg.value
            if found is not None:
                out.setdefault(found, f"{name}:{node.lineno}")
    return out


def test_inference_calls_only_the_protocol():
    from ppl_models.models.protocol import ACCELERATORS, OPTIONAL, BuiltinModel

    listed = set(BuiltinModel.__annotations__) | {
        k for k, v in vars(BuiltinModel).items() if callable(v) and not k.startswith("__")
    }
    calls = model_calls()
    assert {"using", "validate", "bayesian"} <= set(calls)  # the reader sees the calls
    outside = {k: where for k, where in calls.items() if k not in listed}
    assert not outside, f"hooks called on a model but missing from BuiltinModel: {outside}"
    assert set(ACCELERATORS) <= listed and set(OPTIONAL) <= listed


def test_every_builtin_answers_the_protocol():
    from ppl_models import MODELS
    from ppl_models.models.protocol import OPTIONAL, BuiltinModel, is_builtin

    members = set(BuiltinModel.__annotations__) | {
        k for k, v in vars(BuiltinModel).items() if callable(v) and not k.startswith("__")
    }
    for cls in MODELS.values():
        missing = [
            m
            for m in members - set(OPTIONAL)
            if not hasattr(cls, m) and m not in ("num_dims", "device", "config", "param_names")
        ]
        assert not missing, f"{cls.__name__} lacks {missing}"
    assert not is_builtin(lambda x=None, num_samples=None: None)


def test_importing_the_library_chooses_no_plotting_backend():
    import os
    import subprocess
    import sys

    code = (
        "import matplotlib, inference, ppl_models, ppl_models.app.suites, "
        "inference.evaluation.plots; print(matplotlib.rcParams._get_backend_or_none())"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, check=True
    ).stdout.strip()
    assert out == "None", f"importing the library set the plotting backend to {out}"


def test_the_old_import_paths_keep_working():
    import importlib

    import inference
    import ppl_models
    from ppl_models.moved import MOVED

    for old, new in MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    import ppl_models.nade
    from inference.arviz_io import to_inference_data
    from inference.compare import table
    from ppl_models.cli import main

    assert ppl_models.nade.NADE is ppl_models.NADE
    assert callable(inference.compare) and callable(table) and callable(main)
    assert to_inference_data.__module__ == "inference.evaluation.arviz_io"
