"""Completion: given the first k dims of each datum (the top half of an image in raster
order), the other dims drawn from the fitted model's conditional p(x_(k+1..D) | x_(1..k)).

Exact wherever the model's own order visits the given dims first: the Markov chain, NADE in
raster order, independence, and the full joint's counts (sparse). A point fit (mle, map)
conditions the fitted model; an exact fit its posterior predictive (for the conjugate
built-ins, the model at the posterior mean, which is that predictive). What cannot condition
says so: a model without the hook, a NADE whose order does not start with the given dims, SVI
and NUTS fits (the conditional would weigh each draw by the likelihood of the given dims),
a prefix that the model gives probability zero.
"""

from __future__ import annotations

import torch

from ppl_models.runtime import seeded


def complete(fit, prefix, seed: int | None = None) -> torch.Tensor:
    """(N, D): `prefix` (N, k) followed by draws of the remaining D - k dims."""
    program = fit.program
    hook = program.accelerator("complete")
    if hook is None:
        raise ValueError(
            f"{program.label} cannot condition on given dims: completion needs a model whose "
            "order visits them first (Markov, NADE, Independent, a sparse FullJoint); a "
            "program of yours would need the posterior of its latent variables given them"
        )
    if fit.method in ("svi", "nuts"):
        raise ValueError(
            f"complete() conditions a point estimate or an exact posterior predictive; this "
            f"{fit.method} fit holds draws (the conditional would weigh each by the likelihood "
            "of the given dims): refit by 'map' or 'exact' to complete"
        )
    D = program.num_dims
    x = torch.as_tensor(prefix)
    if x.dim() != 2 or not 0 < x.shape[1] < D:
        raise ValueError(
            f"prefix must be (N, k) with 0 < k < {D} (the first k of the {D} dims of each "
            f"datum), got shape {tuple(x.shape)}"
        )
    # the model's own checks (binary, categories), dtype and device, on the given dims
    padded = program.validate(torch.cat([x, x.new_zeros(len(x), D - x.shape[1])], 1))
    with seeded(seed), program.placed(), program.model.using(program.values):
        return hook(padded[:, : x.shape[1]])
