"""The paired per-user test used by the comparison benchmarks."""

import numpy as np
import pytest

from peel.errors import PeelError
from peel.evaluation.significance import paired_test


def _per_user(values, users=None):
    values = np.asarray(values, dtype=float)
    return {"user": np.arange(len(values)) if users is None else users, "ndcg@50": values}


def test_a_consistent_gain_is_significant_and_signed():
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 0.5, 400)
    better = base + rng.uniform(0.0, 0.05, 400)
    result = paired_test(_per_user(better), _per_user(base))
    assert result["p_value"] < 1e-6 and result["difference"] > 0 and result["wins"] > 350
    assert paired_test(_per_user(base), _per_user(better))["difference"] < 0


def test_noise_is_not_significant_and_ties_are_counted():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 300), rng.uniform(0, 1, 300)
    a[:100] = b[:100] = 0.0  # users both miss: no sign, counted as ties
    result = paired_test(_per_user(a), _per_user(b))
    assert result["p_value"] > 0.01 and result["ties"] == 100 and result["users"] == 300
    same = paired_test(_per_user(a), _per_user(a))
    assert same["p_value"] == 1.0 and same["difference"] == 0.0


def test_refuses_different_users():
    with pytest.raises(PeelError, match="same users"):
        paired_test(_per_user([0.1, 0.2]), _per_user([0.1, 0.2], users=np.array([0, 2])))
