"""Generated data read off a trace of a program run without data.

A program returns whatever it likes (a regression returns its mean), so one observed site of
n rows is the data as it is. With several observed sites (one per dimension, one per time
step) the program's return value is used where it has n rows (the program knows their order:
NADE samples its pixels in a permuted order and returns them in place), else the sites are
assembled: side by side, (n, D); a series of one site per time step, in program order.
"""

from __future__ import annotations

import functools

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ppl_models.programs.roles import ProgramError, Roles, enumerate_discrete, is_factor, skip


def generated(tr, roles: Roles | None, n: int | None, label: str) -> torch.Tensor:
    """The data a generating trace produced: n rows (None: as many as the run made). Without
    roles (a built-in model not yet traced) the program's return value."""
    names = _observed(tr, roles) if roles is not None else []
    parts = [tr.nodes[k]["value"].detach() for k in names]
    rows = n if n is not None else (_rows(parts, roles) if roles is not None else None)
    ret = tr.nodes["_RETURN"]["value"]
    returned = torch.is_tensor(ret) and ret.dim() >= 1 and (rows is None or ret.shape[0] == rows)
    if len(parts) == 1 and parts[0].dim() >= 1 and (rows is None or parts[0].shape[0] == rows):
        return parts[0]
    if returned:
        return ret.detach()
    out = _assemble(parts, roles, rows)
    if out is not None:
        return out
    raise ProgramError(
        f"could not assemble {rows if rows is not None else 'the'} generated data from the "
        f"program {label}: run without data it should sample its observed site(s) (pass the "
        "data argument as obs=, e.g. pyro.sample('y', ..., obs=y)), with one row per datum "
        "(num_samples rows, or the sizes of the given covariates)"
    )


def _observed(tr, roles: Roles) -> list[str]:
    """The sites that hold data: those observed at discovery, or (a sequential plate names
    its sites per datum) any sampled site outside the roles that is not a parameter."""
    known = {k for k, s in roles.sites.items() if s.role == "observed" and not s.factor}
    out = [k for k in known if k in tr.nodes]
    if roles.sequential:
        out += [
            k
            for k, s in tr.nodes.items()
            if s["type"] == "sample" and k not in roles.sites and not s["fn"].support.is_discrete
        ]
    order = list(tr.nodes)
    return sorted(out, key=order.index)


def _rows(parts, roles: Roles) -> int | None:
    if not parts:
        return None
    if roles.data_plate is None:
        return (
            sum(p.numel() for p in parts)
            if len(parts) > 1
            else (parts[0].shape[0] if parts[0].dim() else 1)
        )
    return parts[0].shape[0] if parts[0].dim() else None


def _assemble(parts, roles: Roles, n) -> torch.Tensor | None:
    if not parts or n is None:
        return None
    if len(parts) == 1 and parts[0].dim() >= 1 and parts[0].shape[0] == n:
        return parts[0]
    if all(p.dim() >= 1 and p.shape[0] == n for p in parts):
        if roles.data_plate is None:
            return torch.cat([p.reshape(n, -1) for p in parts], -1).reshape(-1)
        return torch.cat([p.reshape(n, -1) for p in parts], -1)
    if roles.data_plate is None and sum(p.numel() for p in parts) == n:
        return torch.cat([p.reshape(-1) for p in parts])  # one site per time step
    return None


def one_step(tr, conditioned, label: str) -> torch.Tensor:
    """A series' one-step replicates from a trace of the program on the observed series: each
    observed site's distribution (given the observed values before it) sampled once, in the
    order of the pointwise log-likelihood's entries."""
    out = []
    for name, site in tr.nodes.items():
        if skip(site) or name in conditioned or not site["is_observed"]:
            continue
        fn = site["fn"]
        if is_factor(site):
            raise ProgramError(
                f"the program {label} has a pyro.factor {name!r}: a factor has "
                "no distribution to replicate from"
            )
        while isinstance(fn, (dist.Independent, dist.MaskedDistribution)):
            fn = fn.base_dist
        out.append(fn.sample().reshape(-1))
        if out[-1].numel() != site["value"].numel():
            raise ProgramError(
                f"site {name!r} of the program {label} depends on latent "
                "variables drawn per value; no one-step replicate aligns with "
                "its log-likelihood"
            )
    return torch.cat(out)


__all__ = ["generated", "one_step"]


class Generating:
    """The generating methods of `Program`: new data, replicates and simulations per draw."""

    # -- generation -----------------------------------------------------------------------------
    def sample(self, n: int, values=None, args=None) -> torch.Tensor:
        """n new data from the program with `values` (a series of length n without a plate):
        the program run with num_samples=n, or a Model's fast sampler where it has one. A
        program that takes no num_samples gives n data sets (n, ...) of the sizes in its
        given arguments."""
        values = self.values if values is None else values
        fast = self.accelerator("_sample")
        if fast is not None and args is None:
            with self.model.using(values):
                return fast(n)
        if self.args.takes_num_samples:
            return self.generate(n, values, args)
        return torch.stack([self.generate(None, values, args) for _ in range(n)])

    def deterministic_draws(self, x, draws: dict) -> dict[str, torch.Tensor]:
        """name -> (chain, draw, ...) of every ``pyro.deterministic`` site at each draw (the
        program run on validated `x` with the draw's values); {} where it has none."""
        return self._site_draws(x, draws, list(self._roles.deterministic) if self._roles else [])

    def discrete_draws(self, x, draws: dict) -> dict[str, torch.Tensor]:
        """name -> (chain, draw, ...) of every enumerated discrete latent outside the data
        plate (a change point), one draw from its conditional posterior given each draw of the
        rest and the data (Pyro's `infer_discrete` at temperature 1: forward filtering,
        backward sampling), so that both together are draws from the joint posterior; {}
        where it has none. Per-datum assignments (mixtures, HMM states) are not drawn here."""
        roles = self._roles
        names = [] if roles is None else [k for k in roles.enumerated if not roles.sites[k].in_data]
        return self._site_draws(x, draws, names, discrete=True)

    @torch.no_grad()
    def _site_draws(self, x, draws: dict, names: list[str], discrete: bool = False) -> dict:
        """name -> (chain, draw, ...) of the sites `names` read off one run of the program on
        `x` at each draw; with `discrete`, its enumerated latents drawn by `infer_discrete`."""
        if not names or not draws:
            return {}
        lead, at = self.each_draw(draws)
        out = {k: [] for k in names}
        for values in at:
            run = functools.partial(self.run, x=x, values=values)
            if discrete:
                run = pyro.infer.infer_discrete(
                    poutine.infer_config(run, enumerate_discrete),
                    first_available_dim=-1 - self._roles.max_plate_nesting,
                    temperature=1,
                )
            with poutine.block(), pyro.validation_enabled(False):
                tr = poutine.trace(run).get_trace()
            for k in names:
                out[k].append(tr.nodes[k]["value"].detach())
        return {k: torch.stack(v).reshape(*lead, *v[0].shape) for k, v in out.items()}

    def resized(self, values: dict, args) -> set[str]:
        """The sampled sites whose shape follows the sizes in `args` (a latent path of T
        steps, sampled with new given sizes): their values in `values` do not fit a run with
        `args` and are drawn from their prior instead. One prior run with `args` says."""
        if args is None or not values:
            return set()
        params = {k: v for k, v in values.items() if self._role(k) == "param"}
        run = functools.partial(self.run, num_samples=None, values=params, args=args)
        with poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
            tr = poutine.trace(run).get_trace()
        return {
            k
            for k, v in values.items()
            if k in tr.nodes
            and tr.nodes[k]["type"] == "sample"
            and tuple(tr.nodes[k]["value"].shape) != tuple(v.shape)
        }

    def generate(self, n: int | None, values=None, args=None) -> torch.Tensor:
        """One run generating: n data (num_samples=n) where the program takes num_samples,
        else one data set of the sizes in `given` (n, if given, checked)."""
        values = self.values if values is None else values
        fast = self.accelerator("_sample")
        if fast is not None and args is None and n is not None:
            with self.model.using(values):
                return fast(n)
        num = n if self.args.takes_num_samples else None
        with poutine.block():
            tr = poutine.trace(
                functools.partial(self.run, num_samples=num, values=values, args=args)
            ).get_trace()
        return generated(tr, self._roles, n, self.label)

    @torch.no_grad()
    def replicates(self, x: torch.Tensor, draws: dict) -> torch.Tensor:
        """(chain, draw, entries): for a series, one replicate of each log-likelihood entry
        under each draw, drawn given the observed values before it: each observed site's
        distribution in a trace of the program on `x`, sampled (a model's vectorised
        ``replicate`` where it has one)."""
        fast = self.accelerator("replicate")
        if fast is not None:
            with self.model.using(self.values):
                return fast(x, draws)
        return self._per_draw(
            draws,
            lambda values: one_step(
                self.trace(x=x, values=values, enumerate_=False), values, self.label
            ),
        )

    @torch.no_grad()
    def simulations(self, x: torch.Tensor, draws: dict) -> torch.Tensor:
        """(chain, draw, steps): a series simulated freely under each draw (a model's
        vectorised ``simulate`` from the observed start where it has one; else the program
        generating a series as long as `x`)."""
        fast = self.accelerator("simulate")
        if fast is not None:
            with self.model.using(self.values):
                return fast(x, draws)
        n = len(x) if self.args.takes_num_samples else None
        return self._per_draw(draws, lambda values: self.generate(n, values).reshape(-1))

    def _per_draw(self, draws: dict, fn) -> torch.Tensor:
        lead, at = self.each_draw(draws)
        with poutine.block():
            rows = [fn(values) for values in at]
        return torch.stack(rows).reshape(*lead, -1)

    def generated(self, tr, n: int) -> torch.Tensor:
        """The data a generating trace `tr` of `n` data holds, in the data's shape."""
        return generated(tr, self._roles, n, self.label)
