"""Evaluating fits: ArviZ conversion for both generations, PSIS and LOO, compare, time series,
plots."""
