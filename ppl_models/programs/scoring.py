"""A program's densities: the priors of its random parameters, log p(x | theta) per datum
with discrete latents summed out, log p(x, theta), pointwise log-likelihoods over draws, and
marginal densities over continuous local latents (`montecarlo`). Mixed into `Program`, whose
values, roles, arguments and traces it reads."""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from ppl_models.programs.densities import bernoulli_log_probs, pointwise
from ppl_models.programs.roles import ProgramError, skip
from ppl_models.pyro_internals import observed_unexpanded


class Scoring:
    """The density methods of `Program` (see the module docstring)."""

    # -- parameters with a prior ------------------------------------------------------------------
    @property
    def random(self) -> list[str]:
        """The parameters with a prior: a Model's parameters (each has a documented default
        prior) and every global random site."""
        if self._roles is None and self._model_priors():  # a Model: its parameters, no trace
            return [k for k in self.model.prior_specs() if k in self.values]
        names = set(self.roles.named("global"))
        if self._model_priors():
            names |= set(self.model.prior_specs()) & set(self.roles.free)
        return [k for k in self.roles.free if k in names]

    @property
    def local(self) -> list[str]:
        """Continuous latent variables inside the data plate."""
        return self.roles.local if self._roles is not None else []

    @property
    def sampled(self) -> list[str]:
        """What NUTS samples and SVI's guide covers: the random parameters and the continuous
        local latents."""
        return self.random + self.local

    def supports(self, values=None) -> dict:
        """name -> support of every sampled site at `values` (a conditional prior's support
        may depend on its parents)."""
        out = {k: p.support for k, p in self.priors(values).items()}
        out.update({k: self.roles.sites[k].constraint for k in self.local})
        return out

    def priors(self, values=None) -> dict:
        """name -> prior of every random parameter, at `values` (a conditional prior depends
        on the values of its parents)."""
        values = self.values if values is None else values
        out = self._hooked_priors(values)
        rest = (
            [] if self._roles is None else [k for k in self.roles.named("global") if k not in out]
        )
        if rest:  # conditional priors: the program run once at `values` (which may be extreme)
            globals_ = {k: v for k, v in values.items() if k not in set(self.local)}
            part, args = self.discovery_data()
            x = self.validate(part)
            with poutine.block(), pyro.validation_enabled(False):
                tr = self.trace(x=x, values=globals_, enumerate_=False, args=args)
            out.update({k: tr.nodes[k]["fn"] for k in rest})
        return {k: out[k] for k in self.random if k in out}

    def _model_priors(self) -> bool:
        return isinstance(self.model, torch.nn.Module) and callable(
            getattr(self.model, "priors", None)
        )

    def _hooked_priors(self, values) -> dict:
        """A Model's effective priors (no trace needed), of the parameters in the trace once
        roles are known."""
        if not self._model_priors():
            return {}
        with self.model.using(values):
            out = self.model.priors()
        if self._roles is not None:
            free = set(self._roles.free)
            out = {k: v for k, v in out.items() if k in free}
        return out

    def _zero(self) -> torch.Tensor:
        """0 where sums of log-densities start: the program's dtype (a float32 model's
        potential stays float32) and device."""
        return torch.zeros((), dtype=self.dtype or torch.get_default_dtype(), device=self.device)

    def log_prior(self, values=None) -> torch.Tensor:
        """log p(theta) of the random parameters at `values`."""
        values = self.values if values is None else values
        return sum(
            (p.log_prob(values[k]).sum() for k, p in self.priors(values).items()), self._zero()
        )

    @torch.no_grad()
    def log_prior_terms(self, x, values) -> dict[str, torch.Tensor]:
        """name -> log density of each random parameter and continuous local latent at
        `values`, elementwise over its batch shape (what ArviZ's ``log_prior`` group holds):
        a Model's documented priors, else the program's own sample sites run on validated `x`
        (conditional priors and local latents given the values they depend on)."""
        fns = {k: p for k, p in self._hooked_priors(values).items() if k in set(self.random)}
        rest = [k for k in self.sampled if k not in fns]
        if rest:
            with poutine.block(), pyro.validation_enabled(False):
                tr = self.trace(x=x, values=values, enumerate_=False)
            fns.update({k: tr.nodes[k]["fn"] for k in rest})
        return {k: _elementwise(fns[k]).log_prob(values[k]) for k in self.sampled}

    # -- densities ------------------------------------------------------------------------------
    def log_prob(self, x: torch.Tensor, values=None) -> torch.Tensor:
        """Per-datum log-likelihood of validated `x` (N,), discrete latents summed out; one
        entry per observed value for a series. Continuous local latents must be among
        `values` (conditional on them); `marginal_log_prob` integrates them out."""
        return self.log_joint_terms(x, values, prior=False)[0]

    def log_joint_terms(self, x, values=None, prior: bool = True, args=None):
        """(pointwise log-likelihood (N,), log prior) at `values`: a Model's vectorised path,
        else one trace of the program on `x` (discrete latents enumerated). The log prior
        includes the continuous local latents' densities when `values` holds them."""
        values = self.values if values is None else values
        hooked = self._hooked_priors(values) if prior else {}
        lp = sum((p.log_prob(values[k]).sum() for k, p in hooked.items()), self._zero())
        fast = self.accelerator("_log_prob")
        if fast is not None and args is None:
            with self.model.using(values):
                return fast(x), lp
        roles = self.roles
        missing = [k for k in roles.local if k not in values]
        if missing:
            raise ValueError(
                f"site(s) {', '.join(map(repr, missing))} are continuous latent variables "
                f"inside the data plate {roles.data_plate!r}: they have no exact marginal "
                "likelihood, so mle and map are not available for this program. Use "
                "method='nuts' (samples them with the parameters) or 'svi' (a guide covers "
                "them); their held-out densities integrate them by Monte Carlo"
            )
        # distribution checks ran in the discovery trace; here they would only cost time
        with poutine.block(), pyro.validation_enabled(False), observed_unexpanded():
            tr = self.trace(x=x, values=values, args=args)
            bernoulli_log_probs(tr)
            tr.compute_log_prob()
        if prior:
            for k in roles.named("global", "local"):
                if k not in hooked and k in tr.nodes:
                    lp = lp + tr.nodes[k]["log_prob_sum"]
        for k in self.joint_terms:  # pyro.factor and observations outside the data plate
            lp = lp + tr.nodes[k]["log_prob_sum"]
        return self.trace_pointwise(tr, values), lp

    def each_draw(self, draws: dict) -> tuple[torch.Size, list[dict]]:
        """The (chain, draw) shape of `draws` (name -> (chain, draw, ...)) and the program's
        values at each draw, in order (parameters not drawn at their values)."""
        lead = next(iter(draws.values())).shape[:2]
        flat = {k: v.reshape(-1, *v.shape[2:]) for k, v in draws.items()}
        return lead, [
            {**self.values, **{k: v[s] for k, v in flat.items()}} for s in range(lead.numel())
        ]

    @property
    def joint_terms(self) -> list[str]:
        """Observed sites outside the data plate (``pyro.factor`` soft constraints, an
        observation of the parameters themselves): terms of the joint density, with no datum
        of their own, so neither in the per-datum log-likelihood nor in held-out densities."""
        roles = self.roles
        if roles.data_plate is None:
            return []
        return [k for k in roles.named("observed") if not roles.sites[k].in_data]

    def log_joint(self, x, values=None, args=None) -> torch.Tensor:
        """log p(x, theta) at `values` (a scalar): the summed `log_joint_terms`, or (no
        enumerated latents, no vectorised accelerator) one trace's log-probability sum, as
        Pyro's own potential takes it, without the per-datum reduction."""
        values = self.values if values is None else values
        if (
            self.accelerator("_log_prob") is not None
            or self.roles.enumerated
            or any(k not in values for k in self.roles.local)
        ):
            ll, lp = self.log_joint_terms(x, values, prior=True, args=args)
            return ll.sum() + lp
        hooked = self._hooked_priors(values)
        lp = sum((p.log_prob(values[k]).sum() for k, p in hooked.items()), self._zero())
        with poutine.block(), pyro.validation_enabled(False), observed_unexpanded():
            tr = self.trace(x=x, values=values, args=args)
        return lp + tr.log_prob_sum(lambda name, site: name not in hooked and not skip(site))

    def trace_pointwise(self, tr, values, particles: bool = False) -> torch.Tensor:
        """Per-datum log-likelihood of a trace whose log-probs are computed, the sites at
        `values` conditioned (`densities.pointwise`)."""
        roles = self.roles
        conditioned = {k for k in values if self._role(k) != "param"} | set(self.joint_terms)
        out = pointwise(tr, conditioned, roles.data_plate, roles.sequential, particles)
        if roles.local and not particles:
            _check_no_enumerated_parents(tr, roles)
        return out

    def log_likelihood(self, x: torch.Tensor, draws: dict, prior: bool = False, args=None):
        """(chain, draw, N) pointwise log-likelihood of validated `x` under each draw (draws:
        name -> (chain, draw, ...); continuous local latents among them are conditioned on);
        parameters not drawn keep their values. With `prior`, also the log prior of each draw
        (chain, draw), from the same traces."""
        fast = self.accelerator("log_likelihood")
        if not draws:
            ll, lp = self.log_joint_terms(x, self.values, prior=prior, args=args)
            return (ll[None, None], lp.reshape(1, 1)) if prior else ll[None, None]
        lead, at = self.each_draw(draws)
        if fast is not None and args is None:
            with self.model.using(self.values):
                ll = fast(x, draws)
            if not prior:
                return ll
            return ll, torch.stack([self.log_prior(v) for v in at]).reshape(lead)
        terms = [self.log_joint_terms(x, v, prior=prior, args=args) for v in at]
        ll = torch.stack([t[0] for t in terms]).reshape(*lead, -1)
        if not prior:
            return ll
        return ll, torch.stack([torch.as_tensor(t[1]) for t in terms]).reshape(lead)

    @torch.no_grad()
    def marginal_log_prob(
        self, x: torch.Tensor, draws: dict | None = None, particles: int | None = None, args=None
    ):
        """(log p(x_i) (N,), its Monte Carlo standard error (N,), particles per datum): the
        continuous local latents integrated from their prior (`ppl_models.programs.montecarlo`)."""
        from ppl_models.programs.montecarlo import marginal_log_prob

        return marginal_log_prob(self, x, draws, particles, args)

    def discovery_data(self):
        """(the data the program was discovered on, its arguments for them): a few rows, or all
        where the program needs all."""
        part, n = self._probe
        return part, self.args.rows(slice(0, len(part)), n) if len(part) < n else self.args

    @property
    def imputed(self) -> list[str]:
        """The latents that impute missing values of the data the program was discovered on
        (`ppl_models.programs.imputation`)."""
        if getattr(self, "_imputed", None) is None:
            from ppl_models.programs.imputation import imputed_latents

            found = not self.ours and self.roles.named("global")
            self._imputed = imputed_latents(self) if found else []
        return self._imputed

    @torch.no_grad()
    def integrated_log_prob(self, x, draws=None, particles=None, args=None):
        """(log p(x_i) (N observed values,), its standard error, importance draws per datum)
        with the imputed missing values integrated, or None when the program imputes none in
        `x` (`ppl_models.programs.imputation`)."""
        if self.ours or not self.roles.named("global") and not self.missing:
            return None
        from ppl_models.programs.imputation import marginal_log_prob

        return marginal_log_prob(self, x, draws, particles, args)

    def integrated_point(self, x, prior: bool) -> dict | None:
        """The MLE (MAP with `prior`) of the parameters with the imputed missing values of `x`
        integrated, the imputed values at their conditional mode there; None when the program
        imputes none (`ppl_models.programs.imputation.marginal_point`)."""
        if self.ours or not self.roles.named("global"):
            return None
        from ppl_models.programs.imputation import marginal_point

        return marginal_point(self, x, prior)

    def pointwise_of(self, x, values, args=None, particles: int | None = None):
        """Per-datum log-likelihood of one trace at `values` (no gradient checks); with
        `particles`, (particles, N) under an outer particle plate."""
        with poutine.block(), pyro.validation_enabled(False):
            tr = self.trace(x=x, values=values, args=args, particles=particles)
            tr.compute_log_prob()
        return self.trace_pointwise(tr, values, particles=particles is not None)


def _elementwise(d):
    """A prior of independent components (``.to_event``, Pyro's masked and expanded wrappers
    of them) as the distribution of each component, so that its log density is elementwise."""
    while isinstance(d, torch.distributions.Independent):
        d = d.base_dist
    return d


def _check_no_enumerated_parents(tr, roles) -> None:
    """A continuous local latent whose density depends on an enumerated discrete latent has
    no per-datum likelihood conditional on it that enumeration gives; say so."""
    for k in roles.local:
        site = tr.nodes.get(k)
        if site is None or "log_prob" not in site:
            continue
        if (
            site["log_prob"].dim() > roles.max_plate_nesting
            and site["log_prob"].shape[: -roles.max_plate_nesting or None].numel() > 1
        ):
            raise ProgramError(
                f"the continuous latent {k!r} depends on an enumerated discrete latent; this "
                "is not supported: make the discrete latent a global parameter's function, or "
                "the continuous one independent of it"
            )
