"""Shared inference: `fit` any ppl_models model by MLE, MAP, exact posterior, SVI or NUTS, and
report log-density the same way for every model (nats per datum, bits per dimension)."""

from inference.fitting import METHODS, fit
from inference.result import Fit, Report, load
from inference.timeseries import LFO, OrderSelection, lfo, select_order

__all__ = ["LFO", "METHODS", "Fit", "OrderSelection", "Report", "fit", "lfo", "load",
           "select_order"]
