"""Recommenders other than PEEL's own pipeline, each trained into a run directory that ``peel evaluate`` reads.

A registry (``METHODS``) names every method with how it trains; for now PEEL and the fixed-size baselines
fitted to a budget (PMF, LightGCN). Scoring, byte counting, save/load and export still dispatch on the run
directory (``method.json``) rather than through one protocol object: issue 15 is not finished.
"""

from peel.methods.fixed import (
    FIXED_METHODS,
    device_bytes,
    evaluate_fixed,
    fitted_config,
    fitted_dimension,
    read_method,
    train_fixed,
)
from peel.methods.registry import METHODS, Method, get_method

__all__ = ["FIXED_METHODS", "METHODS", "Method", "device_bytes", "evaluate_fixed", "fitted_config", "fitted_dimension",
           "get_method", "read_method", "train_fixed"]
