"""Paired per-user significance: is one model's metric better than another's on the same users?"""

from __future__ import annotations

from typing import Any

import numpy as np

from peel.errors import PeelError


def paired_test(a: dict[str, Any], b: dict[str, Any], metric: str = "ndcg@50") -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test of ``metric`` between two evaluations of the same users.

    ``a`` and ``b`` are ``per_user`` results of :func:`peel.evaluation.evaluate` (``per_user=True``): the
    user ids and one array per metric. Users where both score the same (mostly both 0) carry no sign and are
    dropped by the test (zero_method="wilcox"), but are counted as ties. Returns both means, the difference
    a - b (absolute and relative to b), wins / losses / ties of a, and the p-value.
    """
    from scipy.stats import wilcoxon

    if not np.array_equal(a["user"], b["user"]):
        raise PeelError("a paired test needs the same users in the same order in both evaluations")
    x, y = np.asarray(a[metric], dtype=np.float64), np.asarray(b[metric], dtype=np.float64)
    diff = x - y
    nonzero = diff != 0
    p_value = float(wilcoxon(x[nonzero], y[nonzero]).pvalue) if nonzero.sum() > 0 else 1.0
    mean_a, mean_b = float(x.mean()), float(y.mean())
    return {"metric": metric, "users": int(len(x)), "mean_a": mean_a, "mean_b": mean_b,
            "difference": mean_a - mean_b, "relative": (mean_a - mean_b) / mean_b if mean_b else float("nan"),
            "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum()), "ties": int((~nonzero).sum()),
            "p_value": p_value}
