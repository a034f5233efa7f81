"""Shared inference: `fit` any Pyro program (ours or yours) by MLE, MAP, exact posterior, SVI or
NUTS, and report log-density the same way for every one (nats per datum, bits per dimension)."""

from inference.evaluation.compare import compare
from inference.evaluation.timeseries import LFO, OrderSelection, lfo, select_order
from inference.fitting import METHODS, fit
from inference.restore import load
from inference.result import Fit, Report
from ppl_models import moved
from ppl_models.programs.program import Program, as_program

__all__ = [
    "LFO",
    "METHODS",
    "Fit",
    "OrderSelection",
    "Program",
    "Report",
    "as_program",
    "compare",
    "fit",
    "lfo",
    "load",
    "select_order",
]

moved.install()
