"""Numbers that ArviZ computes from a saved fit, in whichever ArviZ generation this interpreter
has (tests/test_arviz_generations.py runs it in both legs on the same files):

    python tests/arviz_numbers.py FIT.nc FIT.pt [SERIES.pt ...]

prints JSON: the generation, elpd_loo and p_loo (PSIS-LOO; importance-corrected where the
file's sample_stats hold log_p and log_q), the smallest bulk ESS and largest r_hat over the
posterior, the groups the netCDF file opens with, and the log-density of the saved fit
(`inference.load`) on its own data; with more saved fits of one series, `inference.compare`'s
table of them (PSIS-LOO on a common sample)."""

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import inference  # noqa: E402
from inference.evaluation import arviz_generations as gen  # noqa: E402


def numbers(nc: str, pt: str) -> dict:
    data = gen.read_netcdf(nc)
    groups = gen.groups(data)
    stats = groups.get("sample_stats")
    if stats is not None and "log_q" in stats:
        e = gen.loo_approximate(data, stats["log_p"].values, stats["log_q"].values)
    else:
        e = gen.loo(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ess = gen.az.ess(groups["posterior"], method="bulk")
        rhat = gen.az.rhat(groups["posterior"])
    fit = inference.load(pt)
    return {
        "generation": gen.GENERATION,
        "elpd_loo": float(gen.field(e, "elpd_loo")),
        "p_loo": float(gen.field(e, "p_loo")),
        "pareto_k": np.asarray(gen.field(e, "pareto_k"), dtype=float).tolist(),
        "ess_bulk": min(float(np.min(ess[v].values)) for v in ess.data_vars),
        "r_hat": max(float(np.max(rhat[v].values)) for v in rhat.data_vars),
        "groups": sorted(groups),
        "log_density": float(fit.log_density(fit.data).sum()),
    }


def compared(paths: list[str]) -> dict:
    fits = {Path(p).stem: inference.load(p) for p in paths}
    table = inference.compare(fits, criterion="loo")
    columns = ["rank", "elpd_loo", "p_loo", "elpd_diff", "weight", "se", "dse", "pareto_k_max"]
    return {k: [float(table.loc[k, c]) for c in columns] for k in table.index}


if __name__ == "__main__":
    out = numbers(*sys.argv[1:3])
    if len(sys.argv) > 3:
        out["compare"] = compared(sys.argv[3:])
    print(json.dumps(out))
