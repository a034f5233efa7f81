"""Missing values: data with NaN where the program masks them.

A program may read its mask off the data (``obs_mask=~torch.isnan(y)``) and let Pyro impute the
missing values as latents; `MaskedMissing` keeps the NaN out of every density and gradient,
and `unmasked_missing` says when a NaN reaches the likelihood.
"""

from __future__ import annotations

import pyro
import torch

from ppl_models import checks, pyro_internals


class MaskedMissing(pyro.poutine.messenger.Messenger):
    """An observed value that is NaN where the site's mask leaves it out (``obs_mask=~isnan``,
    ``poutine.mask``, a ``.mask()``ed distribution) is given a draw of the site there: the
    entry is no observation, and a NaN in it would make every gradient NaN (the masked
    log-density is multiplied by 0, and 0 * NaN is NaN). A NaN the mask keeps stays NaN (the
    program then observes a missing value: `Program.discover` says so). It runs only for a
    program discovered on data with NaN (`Program.missing`); the latents the run conditions
    (`latents`: a draw's values, NaN in a probe) are left as they are."""

    def __init__(self, latents=()):
        super().__init__()
        self.latents = set(latents)

    def _pyro_sample(self, msg):
        value = msg["value"]
        if not msg["is_observed"] or not torch.is_tensor(value) or not value.is_floating_point():
            return
        if msg["name"] in self.latents:
            return
        nan = torch.isnan(value)
        if not nan.any():
            return
        fn, mask = msg["fn"], msg["mask"]
        while isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        if isinstance(fn, pyro.distributions.MaskedDistribution):
            inner = pyro_internals.mask_of(fn)
            mask = inner if mask is None else mask & inner
            fn = fn.base_dist
        if mask is None or mask is True:
            return
        if fn.event_shape:  # a vector-valued observation: the mask is over its batch
            mask = torch.as_tensor(mask).reshape(mask.shape + (1,) * len(fn.event_shape))
        off = nan & ~torch.as_tensor(mask, device=value.device)
        with torch.no_grad():
            fill = fn.sample().to(value.dtype).expand_as(value)
        msg["value"] = torch.where(off, fill, value)


def unmasked_missing(program, x) -> str | None:
    """Data with NaN are accepted where the program masks them (`MaskedMissing`); for a NaN
    that reaches the likelihood, the error that says how to mask it (else None)."""
    with torch.no_grad():
        ll = program.log_joint_terms(program.validate(x), prior=False)[0]
    if not torch.isnan(ll).any():
        return None
    name = program.args.data_arg
    return (
        f"{name} contains NaN ({checks.where(x, torch.isnan(x), name)}) that the program "
        f"observes: a missing value needs a mask, e.g. pyro.sample(..., obs={name}, "
        f"obs_mask=~torch.isnan({name})) (Pyro then imputes it as a latent), or "
        "poutine.mask(mask=...) around the observation; or remove the missing values"
    )


__all__ = ["MaskedMissing", "unmasked_missing"]
