"""A one-line factorization of any program, read from its trace.

`pyro.infer.inspect.get_dependencies` gives each sample site's parents (run while generating,
so that every value carries its provenance). Sites named ``stem_<i>`` (one per dimension or
time step) with the same relative parents collapse into one product:

    p(x) = p(p1) p(trans) prod_n [p(x_0 | p1) prod_(d=1..63) p(x_d | x_(d-1), trans)]
    p(x) = p(weights) p(means) prod_n [sum_z p(z | weights) p(x | z, means)]
"""

from __future__ import annotations

import functools
import re

from pyro import poutine
from pyro.infer.inspect import get_dependencies

INDEXED = re.compile(r"^(?P<stem>.*?)_?(?P<i>\d+)$")


def describe(program) -> str:
    roles = program.roles
    try:
        parents = _parents(program)
    except Exception:  # provenance tracking does not follow every op: say less, never fail
        parents = {k: set() for k, s in roles.sites.items() if s.role != "param"}
    plate = roles.data_plate
    outer, inner = [], []
    for name in parents:
        site = roles.sites.get(name)
        if site is None:
            continue
        in_plate = plate is not None and plate in [p[0] for p in site.plates]
        (inner if in_plate else outer).append(name)
    index = "d" if plate is not None else "t"
    head = _factors(outer, parents, index)
    body = _factors(inner, parents, "d")
    enumerated = [k for k in inner if roles.sites[k].role == "enumerated"]
    if body:
        sums = "".join(f"sum_{k} " for k in enumerated)
        head.append(f"prod_n [{sums}{' '.join(body)}]")
    lhs = "p(x)" if plate is not None or not enumerated else "p(x)"
    return f"{lhs} = {' '.join(head)}"


def _parents(program) -> dict[str, set[str]]:
    params = {
        k: v
        for k, v in program.values.items()
        if program.roles.sites.get(k) is not None and program.roles.sites[k].role == "param"
    }
    run = functools.partial(program.run, values=params)
    with poutine.block():
        deps = get_dependencies(
            lambda num_samples: run(num_samples=num_samples), (), {"num_samples": 2}
        )["prior_dependencies"]
    return {k: {p for p in v if p != k} for k, v in deps.items()}


def _factors(names: list[str], parents: dict, index: str) -> list[str]:
    """'p(a | b)' per site; families stem_0..stem_n with shared relative parents collapse."""
    families: dict[str, list[tuple[int, str]]] = {}
    for name in names:
        m = INDEXED.match(name)
        if m and m["stem"]:
            families.setdefault(m["stem"], []).append((int(m["i"]), name))
    out, done = [], set()
    for name in names:
        if name in done:
            continue
        m = INDEXED.match(name)
        family = families.get(m["stem"]) if m and m["stem"] else None
        if not family or len(family) < 3:
            out.append(_factor(name, parents[name]))
            done.add(name)
            continue
        out.extend(_family(m["stem"], sorted(family), parents, index))
        done.update(n for _, n in family)
    return out


def _factor(name: str, given) -> str:
    given = sorted(given, key=_order)
    return f"p({name} | {', '.join(given)})" if given else f"p({name})"


def _order(name: str):
    m = INDEXED.match(name)
    return (m["stem"], int(m["i"])) if m and m["stem"] else (name, -1)


def _family(stem: str, members: list[tuple[int, str]], parents: dict, index: str) -> list[str]:
    """Members before the pattern settles, then one product over the rest."""
    by_name = {n: i for i, n in members}

    def pattern(i, name):
        lags, others = set(), set()
        for p in parents[name]:
            if p in by_name:
                lags.add(i - by_name[p])
            else:
                others.add(p)
        return frozenset(lags), frozenset(others)

    patterns = [pattern(i, n) for i, n in members]
    start = len(members) - 1
    while start > 0 and patterns[start - 1] == patterns[-1]:
        start -= 1
    out = [_factor(n, parents[n]) for _, n in members[:start]]
    lags, others = patterns[-1]
    first, last = members[start][0], members[-1][0]
    given = [f"{stem}_({index}-{k})" for k in sorted(lags)] + sorted(others, key=_order)
    cond = f" | {', '.join(given)}" if given else ""
    out.append(f"prod_({index}={first}..{last}) p({stem}_{index}{cond})")
    return out
