"""The canary: every private member of Pyro that `ppl_models.pyro_internals` relies on is still
there, named in the failure when a Pyro release changes one."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import MCMC

from ppl_models import pyro_internals


@pytest.mark.parametrize(
    "owner, member",
    pyro_internals.MEMBERS,
    ids=[f"{getattr(o, '__name__', o)}.{m}" for o, m in pyro_internals.MEMBERS],
)
def test_pyro_still_has_the_member(owner, member):
    probe = owner
    if owner is pyro.nn.PyroModule:
        probe = owner()  # the module's state lives on instances
    assert hasattr(probe, member), (
        f"Pyro {pyro.__version__} has no {getattr(owner, '__name__', owner)}.{member}; "
        "ppl_models.pyro_internals relies on it: adapt that module to this release"
    )


def test_the_tested_pyro_version():
    minor = ".".join(pyro.__version__.split(".")[:2])
    assert minor in pyro_internals.TESTED_PYRO, (
        f"Pyro {pyro.__version__} is not among the tested minor versions "
        f"{pyro_internals.TESTED_PYRO}: run this suite, then add it"
    )


def test_recording_nuts_reads_the_kernel_state():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    kernel = pyro_internals.RecordingNUTS(model)
    MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True).run()
    for member in pyro_internals.NUTS_STATE:
        assert hasattr(kernel, member), f"Pyro's NUTS no longer sets {member}"
    stats = kernel.statistics()
    assert stats["n_steps"].shape == (5,) and (stats["n_steps"] >= 1).all()
    assert torch.isfinite(stats["energy"]).all() and torch.isfinite(stats["lp"]).all()


def test_module_members_and_param_constraint():
    m = pyro.nn.PyroModule()
    m.a = pyro.nn.PyroParam(torch.ones(2), dist.constraints.positive)
    m.b = pyro.nn.PyroSample(dist.Normal(0.0, 1.0))
    assert set(pyro_internals.module_params(m)) == {"a"}
    assert set(pyro_internals.module_samples(m)) == {"b"}
    pyro.clear_param_store()
    pyro.param("p", torch.ones(1), constraint=dist.constraints.unit_interval)
    assert pyro_internals.param_constraint("p") is dist.constraints.unit_interval
    assert pyro_internals.param_constraint("never") is dist.constraints.real
    pyro.clear_param_store()


def test_static_runtime_runs_a_frozen_module():
    class Two(torch.nn.Module):  # two outputs, as a fused (gradient, value) graph has
        def forward(self, z):
            return 2 * z * torch.cos(z), (z**2 * torch.cos(z)).sum()

    z = torch.linspace(-1.0, 2.0, 5, dtype=torch.float64)
    frozen = torch.jit.freeze(torch.jit.trace(Two(), (z,)).eval())
    runtime = pyro_internals.static_runtime(frozen)
    for point in (z, 3 * z, z):  # its memory is reused between calls
        first, second = runtime(point)  # against the same formulas run eagerly
        assert torch.equal(first, 2 * point * torch.cos(point))
        assert torch.equal(second, (point**2 * torch.cos(point)).sum())
