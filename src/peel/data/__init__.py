"""Interaction data: one `Interactions` type, loaders for common formats, split, k-core, synthetic data."""

from peel.data.interactions import SPLITS, Interactions
from peel.data.loaders import (
    FORMATS,
    detect_format,
    load,
    load_adjacency,
    load_movielens,
    load_presplit,
    load_recbole,
    load_table,
    read_adjacency,
    save_presplit,
)
from peel.data.synthetic import SyntheticConfig, generate, synthetic_dataset

__all__ = [
    "SPLITS", "FORMATS", "Interactions", "SyntheticConfig", "detect_format", "generate", "load",
    "load_adjacency", "load_movielens", "load_presplit", "load_recbole", "load_table", "read_adjacency",
    "save_presplit", "synthetic_dataset",
]
