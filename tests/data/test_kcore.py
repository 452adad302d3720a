"""Iterative k-core filter: known answers, the k-core property, maximality and the report."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.data import Interactions
from peel.errors import DataError


def reference_k_core(pairs: set[tuple[int, int]], k: int) -> set[tuple[int, int]]:
    """Plain-Python iterative k-core: drop one under-k user or item at a time until none is left."""
    pairs = set(pairs)
    while True:
        users: dict[int, int] = {}
        items: dict[int, int] = {}
        for u, i in pairs:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        weak_user = next((u for u, d in users.items() if d < k), None)
        if weak_user is not None:
            pairs = {p for p in pairs if p[0] != weak_user}
            continue
        weak_item = next((i for i, d in items.items() if d < k), None)
        if weak_item is None:
            return pairs
        pairs = {p for p in pairs if p[1] != weak_item}


def raw_pair_set(data) -> set[tuple[object, object]]:
    return set(zip(data.user_ids[data.user].tolist(), data.item_ids[data.item].tolist(), strict=True))


def cascade() -> Interactions:
    # k = 2: u3 has one interaction -> goes; then i2 has one (from u2) -> goes; then u2 has one -> goes.
    pairs = [("u0", "i0"), ("u0", "i1"), ("u1", "i0"), ("u1", "i1"), ("u2", "i1"), ("u2", "i2"), ("u3", "i2")]
    users, items = zip(*pairs, strict=True)
    return Interactions.from_raw(np.array(users), np.array(items), name="cascade")


def test_k_core_cascade_known_answer() -> None:
    data = cascade()
    core = data.k_core(2)
    assert raw_pair_set(core) == {("u0", "i0"), ("u0", "i1"), ("u1", "i0"), ("u1", "i1")}
    assert core.user_ids.tolist() == ["u0", "u1"]
    assert core.item_ids.tolist() == ["i0", "i1"]
    assert (core.n_users, core.n_items, len(core)) == (2, 2, 4)
    np.testing.assert_array_equal(core.csr().toarray(), np.ones((2, 2)))
    steps = [e for e in core.report if e["step"] == "2-core"]
    removed = {key: sum(e.get(key, 0) for e in steps) for key in ("removed_interactions", "removed_users",
                                                                  "removed_items")}
    assert removed == {"removed_interactions": 3, "removed_users": 2, "removed_items": 1}
    assert steps[0]["rounds"] == 4  # three removal rounds, then a round that finds nothing to remove
    assert len(data) == 7 and data.n_users == 4  # the input is unchanged


def test_k_core_item_side_cascade() -> None:
    # k = 2: items 7 and 9 are seen once -> go; then users 2 and 3 have one interaction each -> go;
    # then item 6 has none left -> goes
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    items = np.array([1, 5, 1, 5, 6, 9, 6, 7])
    core = Interactions.from_raw(users, items).k_core(2)
    assert raw_pair_set(core) == {(0, 1), (0, 5), (1, 1), (1, 5)}
    assert core.user_ids.tolist() == [0, 1] and core.item_ids.tolist() == [1, 5]
    steps = [e for e in core.report if e["step"] == "2-core"]
    assert steps == [{"step": "2-core", "removed_interactions": 4, "rounds": 3},
                     {"step": "2-core", "removed_users": 2, "removed_items": 3}]


def test_k_core_one_keeps_everything() -> None:
    data = cascade()
    core = data.k_core(1)
    assert raw_pair_set(core) == raw_pair_set(data)
    assert core.report[-1] == {"step": "1-core", "removed_interactions": 0, "rounds": 1}


def test_k_core_empty_and_invalid_k() -> None:
    with pytest.raises(DataError, match="3-core is empty"):
        cascade().k_core(3)
    with pytest.raises(DataError, match="k >= 1"):
        cascade().k_core(0)


@settings(max_examples=60, deadline=None)
@given(
    pairs=st.sets(st.tuples(st.integers(0, 12), st.integers(0, 9)), min_size=1, max_size=80),
    k=st.integers(1, 4),
)
def test_k_core_matches_reference(pairs: set[tuple[int, int]], k: int) -> None:
    users, items = (np.array(x) for x in zip(*sorted(pairs), strict=True))
    data = Interactions.from_raw(users, items)
    expected = reference_k_core(pairs, k)
    if not expected:
        with pytest.raises(DataError, match="empty"):
            data.k_core(k)
        return
    core = data.k_core(k)
    assert raw_pair_set(core) == expected
    assert core.user_degree().min() >= k and core.popularity().min() >= k
    assert core.n_users == len({u for u, _ in expected}) and core.n_items == len({i for _, i in expected})


def test_k_core_on_udata_is_a_k_core(ml100k_raw) -> None:
    core = ml100k_raw.k_core(30)
    assert core.user_degree().min() >= 30
    assert core.popularity().min() >= 30
    assert len(core) < len(ml100k_raw)
    step = [e for e in core.report if e["step"] == "30-core"]
    assert sum(e.get("removed_interactions", 0) for e in step) == len(ml100k_raw) - len(core)
    assert sum(e.get("removed_users", 0) for e in step) == ml100k_raw.n_users - core.n_users
    assert sum(e.get("removed_items", 0) for e in step) == ml100k_raw.n_items - core.n_items
    # maximal: every pair among the kept users and items is kept
    kept_users = set(core.user_ids.tolist())
    kept_items = set(core.item_ids.tolist())
    original = raw_pair_set(ml100k_raw)
    inside = {(u, i) for u, i in original if u in kept_users and i in kept_items}
    assert raw_pair_set(core) == inside


def test_k_core_keeps_split_labels(ml100k) -> None:
    core = ml100k.k_core(10)
    assert core.is_split
    before = {(u, i): s for u, i, s in zip(ml100k.user_ids[ml100k.user].tolist(),
                                           ml100k.item_ids[ml100k.item].tolist(), ml100k.split.tolist(), strict=True)}
    after = zip(core.user_ids[core.user].tolist(), core.item_ids[core.item].tolist(), core.split.tolist(), strict=True)
    assert all(before[(u, i)] == s for u, i, s in after)
