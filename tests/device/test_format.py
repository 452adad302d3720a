"""The container: exact bytes, round trips for any G_v, N, d, and refusal of bad files."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peel.device import Bundle, BundleError, write_items_bundle
from peel.device.format import MAX_HEADER_BYTES
from peel.device.writer import encode_header


def split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8: 8 + n]), raw[8 + n:]


def rewrite(path: Path, header: dict, data: bytes) -> None:
    """Write ``header`` (its checksum recomputed) and ``data``: a well-formed container with edited JSON."""
    fields = {k: v for k, v in header.items() if k != "header_crc32"}
    encoded = encode_header(fields)
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)


def assert_same_as_written(bundle: Bundle, made: Any) -> None:
    np.testing.assert_array_equal(bundle.item_order, made.item_order)
    np.testing.assert_array_equal(bundle.item_ids.at(np.arange(bundle.n_items)), made.item_ids[made.item_order])
    np.testing.assert_array_equal(bundle.unit_order[: bundle.n_units_loaded], made.order[: bundle.n_units_loaded])
    for i in range(bundle.n_units_loaded):
        np.testing.assert_array_equal(bundle.unit(i), made.expected_unit(i))


# ---------------------------------------------------------------------- known answer
def test_exact_bytes_of_a_one_unit_bundle(tmp_path: Path) -> None:
    path = tmp_path / "pmf.peelb"
    blocks = np.array([[[1.5, -2.0]], [[0.25, 4.0]]], dtype=np.float32)  # 2 items, N = 1, d = 2
    size = write_items_bundle(path, blocks=blocks, item_group=np.zeros(2, dtype=np.int64), unit_order=[[0, 0]],
                              item_ids=np.array([7, 3]), metadata={"created": "2024-01-01T00:00:00+00:00"})
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert size == len(raw) == 8 + n + 16 + 16 + 16 and (8 + n) % 8 == 0
    assert raw[8:25] == b'{"header_crc32":"' and int(raw[25:33], 16) == zlib.crc32(raw[35: 8 + n])
    data = raw[8 + n:]
    assert data[:16] == np.array([0, 1], "<i8").tobytes()          # item_order
    assert data[16:32] == np.array([7, 3], "<i8").tobytes()        # raw ids by position
    assert data[32:] == np.array([1.5, -2.0, 0.25, 4.0], "<f4").tobytes()  # the unit, row-major
    header = json.loads(raw[8: 8 + n])
    assert header["units"] == [{"item_group": 0, "block": 0, "data_offsets": [32, 48],
                                "crc32": zlib.crc32(data[32:])}]
    assert header["dims"] == {"n_items": 2, "n_item_groups": 1, "n_blocks": 1, "block_dim": 2, "embedding_dim": 2}


def test_exact_bytes_of_a_q8_unit(tmp_path: Path) -> None:
    """q8: the unit is |V_g| x d int8 values, row-major, then its float32 scale (absmax / 127)."""
    path = tmp_path / "q8.peelb"
    blocks = np.array([[[1.5, -2.0]], [[0.25, 4.0]]], dtype=np.float32)
    size = write_items_bundle(path, blocks=blocks, item_group=np.zeros(2, dtype=np.int64), unit_order=[[0, 0]],
                              item_ids=np.array([7, 3]), unit_dtype="q8")
    header, data = split(path)
    assert header["unit_dtype"] == "q8" and size == path.stat().st_size and len(data) == 16 + 16 + 4 + 4
    scale = np.float32(4.0) / np.float32(127)
    values = np.array([48, -64, 8, 127], dtype=np.int8)  # 1.5, -2, 0.25, 4 over 4/127, half to even (-63.5)
    assert data[32:] == values.tobytes() + np.array([scale], "<f4").tobytes()
    bundle = Bundle.open(path)
    assert bundle.unit_dtype == "q8" and bundle.item_group_matrices[0].dtype == np.int8
    np.testing.assert_array_equal(bundle.item_group_scales[0], [scale])
    np.testing.assert_array_equal(bundle.unit(0), values.reshape(2, 2).astype(np.float32) * scale)
    assert bundle.bytes_loaded == 4 + 4 + 2 * 4  # the unit as stored + the float32 user vector
    write_items_bundle(tmp_path / "f32.peelb", blocks=blocks, item_group=np.zeros(2, dtype=np.int64),
                       unit_order=[[0, 0]])
    assert b"unit_dtype" not in (tmp_path / "f32.peelb").read_bytes()  # f32 files stay as before q8 existed


def test_unit_dtype_refusals(tmp_path: Path, make: Any) -> None:
    made = make(tmp_path / "b.peelb", unit_dtype="f32")
    header, data = split(made.path)
    rewrite(made.path, {**header, "unit_dtype": "q8"}, data)  # float32 payloads declared as q8
    with pytest.raises(BundleError, match=r"units\[0\] spans 80 bytes, a q8 unit of 10 items x 2 dims is 24"):
        Bundle.open(made.path)
    q8 = make(tmp_path / "q8.peelb", unit_dtype="q8")
    header, data = split(q8.path)
    unit = header["units"][0]
    begin, end = unit["data_offsets"]
    for bad in (np.nan, -1.0, np.inf):  # a scale must be finite and >= 0, even under a valid checksum
        payload = data[begin: end - 4] + np.array([bad], "<f4").tobytes()
        units = [{**unit, "crc32": zlib.crc32(payload)}, *header["units"][1:]]
        rewrite(q8.path, {**header, "units": units}, data[:begin] + payload + data[end:])
        with pytest.raises(BundleError, match=r"unit 0 \(item group \d+, block \d+\) has scale"):
            Bundle.open(q8.path)
    rewrite(made.path, {**header, "unit_dtype": "q4"}, data)
    with pytest.raises(BundleError, match="unit_dtype must be one of"):
        Bundle.open(made.path)
    with pytest.raises(BundleError, match="unit_dtype must be one of"):
        write_items_bundle(tmp_path / "x.peelb", blocks=np.ones((2, 1, 2)), item_group=np.zeros(2, dtype=np.int64),
                           unit_order=[[0, 0]], unit_dtype="int8")
    assert not (tmp_path / "x.peelb").exists()


def test_fixed_size_case_g1_n1_ranks_by_dot_product(tmp_path: Path, make: Any, same_top_k: Any) -> None:
    made = make(tmp_path / "b.peelb", n_items=50, g_v=1, n_blocks=1, d=6, seed=2)
    bundle = Bundle.open(made.path)
    user = np.random.default_rng(1).standard_normal(6).astype(np.float32)
    ids, scores = bundle.for_user(user, history=made.item_ids[:3]).recommend(k=10)
    full = made.blocks[:, 0, :] @ user
    full[:3] = -np.inf
    assert len(ids) == 10
    # the runtime's matmul and this one are two computations: the same ranking up to float32 rounding
    same_top_k(bundle.item_order[bundle.positions_of(ids)], scores, full, 1e-5 * np.abs(scores).max())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n_items=st.integers(1, 40), g_v=st.integers(1, 5), n_blocks=st.integers(1, 5), d=st.integers(1, 4),
       seed=st.integers(0, 100), string_ids=st.booleans(), data=st.data())
def test_round_trip_any_shape(tmp_path: Path, make: Any, n_items: int, g_v: int, n_blocks: int, d: int, seed: int,
                              string_ids: bool, data: st.DataObject) -> None:
    g_v = min(g_v, n_items)
    prefix = data.draw(st.integers(g_v, g_v * n_blocks))
    made = make(tmp_path / f"r{seed}.peelb", n_items=n_items, g_v=g_v, n_blocks=n_blocks, d=d, seed=seed,
                       string_ids=string_ids, prefix=prefix)
    bundle = Bundle.open(made.path)
    assert bundle.n_units_loaded == prefix == bundle.n_units_stored
    assert_same_as_written(bundle, made)
    assert bundle.bytes_read == made.path.stat().st_size == bundle.file_bytes


def test_string_ids_and_history_by_raw_id(tmp_path: Path, make: Any) -> None:
    made = make(tmp_path / "s.peelb", string_ids=True)
    bundle = Bundle.open(made.path)
    rec = bundle.for_user(np.ones(8), history=["item-0-é", "item-5-é"])
    ids, _ = rec.recommend(k=100)
    assert len(ids) == 28 and "item-0-é" not in ids.tolist() and all(isinstance(i, str) for i in ids)
    with pytest.raises(BundleError, match="unknown item"):
        bundle.for_user(np.ones(8), history=["no-such-item"])


# ---------------------------------------------------------------------- bad input
def test_truncated_inside_the_header(made: Any) -> None:
    raw = made.path.read_bytes()
    made.path.write_bytes(raw[:100])
    with pytest.raises(BundleError, match="truncated inside the header"):
        Bundle.open(made.path)
    made.path.write_bytes(raw[:5])
    with pytest.raises(BundleError, match="shorter than the 8-byte"):
        Bundle.open(made.path)


def test_header_checksum_mismatch(made: Any) -> None:
    raw = bytearray(made.path.read_bytes())
    at = raw.index(b'"n_items":') + 10
    raw[at] = ord("9") if raw[at] != ord("9") else ord("8")
    made.path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="header checksum mismatch"):
        Bundle.open(made.path)


def test_unit_and_tensor_checksum_mismatch(made: Any) -> None:
    raw = bytearray(made.path.read_bytes())
    raw[-1] ^= 0x10  # last unit
    made.path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match=r"checksum mismatch in unit 11 \(item group"):
        Bundle.open(made.path)
    assert Bundle.open(made.path, budget=made.layout.minimum_bytes(made.order)).n_units_loaded == 3  # tail unread
    header, _ = split(made.path)
    raw = bytearray(made.path.read_bytes())
    raw[len(raw) - len(_) + 3] ^= 1  # inside item_order
    made.path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum mismatch in tensor 'item_order'"):
        Bundle.open(made.path, budget="1KB")


def test_unknown_version_format_and_kind(made: Any) -> None:
    header, data = split(made.path)
    rewrite(made.path, {**header, "version": 2}, data)
    with pytest.raises(BundleError, match="unknown bundle version 2; this reader supports version 1"):
        Bundle.open(made.path)
    rewrite(made.path, {**header, "version": True}, data)
    with pytest.raises(BundleError, match="unknown bundle version True"):
        Bundle.open(made.path)
    rewrite(made.path, {**header, "format": "safetensors"}, data)
    with pytest.raises(BundleError, match="format must be 'peel-bundle'"):
        Bundle.open(made.path)
    rewrite(made.path, {**header, "kind": "pickles"}, data)
    with pytest.raises(BundleError, match="kind must be one of"):
        Bundle.open(made.path)


def test_header_too_large_and_not_a_bundle(made: Any) -> None:
    raw = made.path.read_bytes()
    made.path.write_bytes((MAX_HEADER_BYTES + 1).to_bytes(8, "little") + raw[8:])
    with pytest.raises(BundleError, match="exceeds the cap"):
        Bundle.open(made.path)
    made.path.write_bytes((2**64 - 1).to_bytes(8, "little") + raw[8:])
    with pytest.raises(BundleError, match="exceeds the cap"):
        Bundle.open(made.path)
    made.path.write_bytes(b"PK\x03\x04" + raw[4:])  # a zip, say
    with pytest.raises(BundleError):
        Bundle.open(made.path)
    body = json.dumps({"format": "peel-bundle", "version": 1, "kind": "items"}).encode()
    made.path.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(BundleError, match="not a peel bundle"):
        Bundle.open(made.path)


def test_bad_offsets(made: Any) -> None:
    header, data = split(made.path)

    def with_unit(i: int, **change: object) -> dict:
        units = [dict(u) for u in header["units"]]
        units[i].update(change)
        return {**header, "units": units}

    first = header["units"][0]["data_offsets"]
    cases = {
        "must be an integer in": with_unit(0, data_offsets=[-8, first[1]]),
        "expected": with_unit(1, data_offsets=[first[0], first[0] + header["units"][1]["data_offsets"][1]
                                               - header["units"][1]["data_offsets"][0]]),  # overlaps unit 0
        "end before they begin": with_unit(0, data_offsets=[first[1], first[0]]),
        "spans": with_unit(0, data_offsets=[first[0], first[1] + 4]),
        "repeats": with_unit(5, item_group=header["units"][0]["item_group"], block=header["units"][0]["block"]),
        "outside": with_unit(4, block=99),
    }
    for message, edited in cases.items():
        rewrite(made.path, edited, data)
        with pytest.raises(BundleError, match=message):
            Bundle.open(made.path)
    tensors = [dict(t) for t in header["tensors"]]
    tensors[0]["shape"] = [31]
    rewrite(made.path, {**header, "tensors": tensors}, data)
    with pytest.raises(BundleError, match="needs 248 bytes, its offsets span 240"):
        Bundle.open(made.path)


def test_strict_json(made: Any) -> None:
    header, data = split(made.path)
    rewrite(made.path, {**header, "extra": 1}, data)
    with pytest.raises(BundleError, match=r"unknown key\(s\) \['extra'\]"):
        Bundle.open(made.path)
    rewrite(made.path, {k: v for k, v in header.items() if k != "dims"}, data)
    with pytest.raises(BundleError, match=r"lacks required key\(s\) \['dims'\]"):
        Bundle.open(made.path)
    rewrite(made.path, {**header, "dims": {**header["dims"], "n_blocks": 4.0}}, data)
    with pytest.raises(BundleError, match="dims.n_blocks must be an integer"):
        Bundle.open(made.path)
    rewrite(made.path, {**header, "dims": {**header["dims"], "embedding_dim": 9}}, data)
    with pytest.raises(BundleError, match="embedding_dim 9 != n_blocks 4 x block_dim 2"):
        Bundle.open(made.path)
    fields = {k: v for k, v in header.items() if k != "header_crc32"}
    text = json.dumps(fields)[1:].replace('"kind": "items"', '"kind": "items", "kind": "items"').encode()
    encoded = b'{"header_crc32":"' + f"{zlib.crc32(text):08x}".encode() + b'",' + text
    made.path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    with pytest.raises(BundleError, match="duplicate key 'kind'"):
        Bundle.open(made.path)


def test_trailing_bytes_and_wrong_permutation(made: Any) -> None:
    raw = made.path.read_bytes()
    made.path.write_bytes(raw + b"\0")
    with pytest.raises(BundleError, match="1 trailing bytes"):
        Bundle.open(made.path)
    header, data = split(made.path)
    data = data[:-1]
    order = np.zeros(30, dtype="<i8").tobytes()  # crc-valid but not a permutation
    tensors = [dict(t) for t in header["tensors"]]
    tensors[0]["crc32"] = zlib.crc32(order)
    rewrite(made.path, {**header, "tensors": tensors}, order + data[240:])
    with pytest.raises(BundleError, match="permutation"):
        Bundle.open(made.path)


def test_missing_file_and_users_file_as_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cannot open bundle"):
        Bundle.open(tmp_path / "nope.peelb")
    from peel.device import write_users_file

    write_users_file(tmp_path / "u.peelb", user_vectors=np.ones((2, 4)), user_group=np.array([0, 1]), n_items=3)
    with pytest.raises(BundleError, match="users file, not an item bundle"):
        Bundle.open(tmp_path / "u.peelb")


def test_writer_refuses_bad_arrays(tmp_path: Path) -> None:
    blocks = np.ones((4, 2, 2), dtype=np.float32)
    ok = {"blocks": blocks, "item_group": np.array([0, 0, 1, 1]), "unit_order": [[0, 0], [1, 1]]}
    with pytest.raises(BundleError, match="non-finite"):
        write_items_bundle(tmp_path / "x", **{**ok, "blocks": blocks * np.nan})
    with pytest.raises(BundleError, match="first 2 units must hold one block of every item group"):
        write_items_bundle(tmp_path / "x", **{**ok, "unit_order": [[0, 0], [0, 1]]})
    with pytest.raises(BundleError, match="ids repeat"):
        write_items_bundle(tmp_path / "x", **ok, item_ids=[1, 1, 2, 3])
    assert not (tmp_path / "x").exists()
