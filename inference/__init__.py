"""Shared inference: `fit` any Pyro program (ours or yours) by MLE, MAP, exact posterior, SVI or
NUTS, and report log-density the same way for every one (nats per datum, bits per dimension)."""

from inference.compare import compare
from inference.fitting import METHODS, fit
from inference.persist import load
from inference.result import Fit, Report
from inference.timeseries import LFO, OrderSelection, lfo, select_order
from ppl_models.program import Program, as_program

__all__ = ["LFO", "METHODS", "Fit", "OrderSelection", "Program", "Report", "as_program",
           "compare", "fit", "lfo", "load", "select_order"]
