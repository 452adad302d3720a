"""peel: Personalized Elastic Embedding Learning for on-device recommendation.

Server side (torch): data -> pretraining -> grouping -> group-level fine-tuning -> export.
Device side (numpy only): :mod:`peel.device` loads a bundle prefix that fits a memory budget.
"""

from peel.errors import BudgetError, ConfigError, DataError, PeelError

__version__ = "0.1.0"
__all__ = ["PeelError", "DataError", "BudgetError", "ConfigError", "__version__"]
