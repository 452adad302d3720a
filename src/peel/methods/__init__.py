"""Recommenders other than PEEL's own pipeline, each trained into a run directory that ``peel evaluate`` reads.

For now the fixed-size baselines fitted to a budget (PMF, LightGCN). The one method protocol that PEEL,
RULE and every baseline implement (issue 15) is not built yet.
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

__all__ = ["FIXED_METHODS", "device_bytes", "evaluate_fixed", "fitted_config", "fitted_dimension", "read_method",
           "train_fixed"]
