"""SVI's fast path for the Gaussian autoguides (issue 18) computes what Pyro's Trace_ELBO
computes: their ELBO without traces (`inference.svi.gaussian_elbo`) equals Trace_ELBO's at the
same draw z. (A guide of yours: tests/test_programs.py; the delta guide at the MAP:
tests/test_everyday_map_by_svi.py.)"""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO
from pyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_value,
)

import inference
from inference.laplace import Whitened
from inference.svi import gaussian_elbo
from ppl_models import AutoRegressive, datasets
from ppl_models.programs.program import Program


@pytest.mark.parametrize(
    "guide", [AutoNormal, AutoMultivariateNormal, AutoLowRankMultivariateNormal]
)
def test_the_gaussian_elbo_is_trace_elbos_at_the_same_draw(guide):
    y = datasets.load("sunspots").train
    p = Program(AutoRegressive(2))
    x = p.validate(y)
    p.discover(x)
    init = inference.fit(AutoRegressive(2), y, "map").params
    with pyro.settings.context(module_local_params=True):
        w = Whitened(p, x, init, jit_compile=False)
        g = guide(
            w, init_loc_fn=init_to_value(values={"z": 0.1 * torch.ones(w.dim, dtype=w.mu.dtype)})
        )
        Trace_ELBO()(w, g)()  # creates the guide's parameters
        loss = gaussian_elbo(w, g, num_particles=1)
        for seed in range(3):
            torch.manual_seed(seed)
            ours = float(loss().detach())
            torch.manual_seed(seed)  # the same draw, as gaussian_elbo takes it
            q = (
                torch.distributions.Independent(
                    torch.distributions.Normal(*g._get_loc_and_scale("z")), 1
                )
                if isinstance(g, AutoNormal)
                else g.get_posterior()
            )
            z = q.rsample().detach()
            tr = poutine.trace(g).get_trace()
            for node in tr.nodes.values():  # the guide's latent and its site z, both at z
                if node["type"] == "sample" and node["value"].shape == z.shape:
                    node["value"] = z
            theirs = float(Trace_ELBO().loss(w, poutine.replay(g, trace=tr)))
            assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-9), seed
