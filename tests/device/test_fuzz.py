"""Fuzzing: a truncated or corrupted file yields exactly the stored data or the project's error, nothing else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peel.device import BudgetError, Bundle, BundleError, Users, write_users_file
from peel.units import select

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def budgets(made: Any) -> st.SearchStrategy[int | None]:
    full = made.layout.full_bytes()
    return st.one_of(st.none(), st.integers(0, full + 64))


def open_and_check(path: Path, made: Any, budget: int | None) -> Bundle | None:
    """Open; on success the loaded prefix must be exactly what was written."""
    try:
        bundle = Bundle.open(path, budget=budget)
    except (BundleError, BudgetError):
        return None
    n_kept = len(made.order) if budget is None else select(made.order, made.layout, budget).n_kept
    assert bundle.n_units_loaded == n_kept
    np.testing.assert_array_equal(bundle.item_order, made.item_order)
    np.testing.assert_array_equal(bundle.item_ids.at(np.arange(bundle.n_items)), made.item_ids[made.item_order])
    np.testing.assert_array_equal(bundle.unit_order, made.order)
    for i in range(n_kept):
        np.testing.assert_array_equal(bundle.unit(i), made.expected_unit(i))
    assert bundle.eq10 == "masked" and bundle.metadata["dataset"] == "unit-test"
    return bundle


@FUZZ
@given(data=st.data())
def test_truncated_files(made_session: Any, tmp_path: Path, data: st.DataObject) -> None:
    raw = made_session.path.read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1), label="length")
    budget = data.draw(budgets(made_session), label="budget")
    path = tmp_path / "t.peelb"
    path.write_bytes(raw[:cut])
    bundle = open_and_check(path, made_session, budget)
    if bundle is not None:  # only a partial download that still holds everything this budget reads
        assert budget is not None and cut >= bundle.bytes_read


@FUZZ
@given(data=st.data())
def test_flipped_bytes(made_session: Any, tmp_path: Path, data: st.DataObject) -> None:
    raw = bytearray(made_session.path.read_bytes())
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    budget = data.draw(budgets(made_session), label="budget")
    path = tmp_path / "f.peelb"
    path.write_bytes(bytes(raw))
    open_and_check(path, made_session, budget)


@FUZZ
@given(data=st.data())
def test_string_id_bundles(make: Any, tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    made = _string_made(make, tmp_path_factory)
    raw = bytearray(made.path.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        at = data.draw(st.integers(0, len(raw) - 1), label="at")
        raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    path = made.path.with_name("fuzzed.peelb")
    path.write_bytes(bytes(raw))
    open_and_check(path, made, data.draw(budgets(made), label="budget"))


_STRING: dict[str, Any] = {}


def _string_made(make: Any, factory: pytest.TempPathFactory) -> Any:
    if "made" not in _STRING:
        _STRING["made"] = make(factory.mktemp("strings") / "s.peelb", n_items=12, g_v=2, n_blocks=2, d=3,
                               string_ids=True)
    return _STRING["made"]


@FUZZ
@given(data=st.data())
def test_users_files(tmp_path_factory: pytest.TempPathFactory, data: st.DataObject) -> None:
    original = _users_file(tmp_path_factory)
    raw = bytearray(original.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        for _ in range(data.draw(st.integers(1, 3), label="flips")):
            at = data.draw(st.integers(0, len(raw) - 1), label="at")
            raw[at] ^= data.draw(st.integers(1, 255), label="mask")
    path = original.with_name("fuzzed.peelb")
    path.write_bytes(bytes(raw))
    try:
        users = Users.open(path)
    except BundleError:
        return
    np.testing.assert_array_equal(users.user_vectors, _USERS["vectors"])
    np.testing.assert_array_equal(users.user_group, [0, 1, 1, 0])
    np.testing.assert_array_equal(users.history_items, [3, 1, 2])
    assert users.user("b").index == 1


_USERS: dict[str, Any] = {}


def _users_file(factory: pytest.TempPathFactory) -> Path:
    if "path" not in _USERS:
        path = factory.mktemp("users") / "users.peelb"
        _USERS["vectors"] = np.arange(12, dtype=np.float32).reshape(4, 3)
        write_users_file(path, user_vectors=_USERS["vectors"], user_group=np.array([0, 1, 1, 0]), n_items=5,
                         user_ids=np.array(["a", "b", "c", "d"], dtype=object),
                         history=(np.array([0, 1, 1, 3, 3]), np.array([3, 1, 2])))
        _USERS["path"] = path
    return _USERS["path"]


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=200), prefix=st.sampled_from([b"", b'{"header_crc32":"']))
def test_random_bytes(tmp_path_factory: pytest.TempPathFactory, blob: bytes, prefix: bytes) -> None:
    path = tmp_path_factory.getbasetemp() / "random.peelb"
    body = prefix + blob
    path.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(BundleError):
        Bundle.open(path)


JSON_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 2**70),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=5), st.lists(st.integers(-2, 600), max_size=3),
                        st.lists(st.integers(2**40, 2**53 - 1), min_size=200, max_size=800),  # huge shapes
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix] if prefix else []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, value in items:
        out += _paths(value, (*prefix, key))
    return out


@FUZZ
@given(data=st.data())
def test_crafted_headers_with_valid_checksums(made_session: Any, tmp_path: Path, data: st.DataObject) -> None:
    """Edit one JSON value (re-signing the header): a hostile but well-formed file is refused cleanly."""
    import json

    from peel.device.writer import encode_header

    raw = made_session.path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8: 8 + n])
    del header["header_crc32"]
    path = data.draw(st.sampled_from(_paths(header)), label="path")
    target = header
    for key in path[:-1]:
        target = target[key]
    if data.draw(st.booleans(), label="delete") and isinstance(target, dict):
        del target[path[-1]]
    else:
        target[path[-1]] = data.draw(JSON_VALUES, label="value")
    encoded = encode_header(header)
    out = tmp_path / "c.peelb"
    out.write_bytes(len(encoded).to_bytes(8, "little") + encoded + raw[8 + n:])
    try:
        bundle = Bundle.open(out, budget=data.draw(budgets(made_session), label="budget"))
        bundle.for_user(np.ones(bundle.embedding_dim)).recommend(k=5)
    except (BundleError, BudgetError):
        pass
