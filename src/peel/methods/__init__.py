"""Every recommender behind one protocol (:mod:`peel.methods.protocol`): a registered :class:`Method`
trains into a run directory, and :func:`load_run` gives the :class:`TrainedModel` that ``peel
evaluate`` and ``peel export`` use, whatever the method. For now PEEL and the fixed-size baselines fitted
to a budget (PMF, LightGCN, DLRM-CE, LightRec)."""

from peel.budget import device_bytes
from peel.methods.fixed import FIXED_METHODS, fitted_config, fitted_size
from peel.methods.protocol import Method, TrainedModel
from peel.methods.registry import METHODS, export_run, get_method, load_run

__all__ = ["FIXED_METHODS", "METHODS", "Method", "TrainedModel", "device_bytes", "fitted_config", "fitted_size",
           "export_run", "get_method", "load_run"]
