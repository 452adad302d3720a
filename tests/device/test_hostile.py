"""Hostile but well-formed files (valid CRCs): every refusal is a BundleError, raised before any allocation
that the file's size does not justify, and the runtime's memory is bounded by what it loaded."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_format import rewrite, split

import peel.device.directory as directory_module
from peel.device import Bundle, BundleError, ExportIndex, Users, write_users_file
from peel.device.format import MAX_INT


def crafted(made: Any, tmp_path: Path, edit: Any) -> Path:
    """``made``'s bundle with its header edited by ``edit(header)`` and re-signed."""
    header, data = split(made.path)
    header = copy.deepcopy(header)
    edit(header)
    out = tmp_path / "crafted.peelb"
    rewrite(out, header, data)
    return out


@pytest.mark.parametrize("entries", [3, 600, 5000])
def test_a_shape_with_many_huge_entries_is_refused(made: Any, tmp_path: Path, entries: int) -> None:
    path = crafted(made, tmp_path, lambda h: h["tensors"][0].__setitem__("shape", [MAX_INT - 1] * entries))
    with pytest.raises(BundleError, match=r"tensors\[0\]\.shape"):
        Bundle.open(path)


def test_a_shape_that_is_not_a_list_of_integers_is_refused(made: Any, tmp_path: Path) -> None:
    path = crafted(made, tmp_path, lambda h: h["tensors"][1].__setitem__("shape", [30, [1]]))
    with pytest.raises(BundleError, match=r"tensors\[1\]\.shape"):
        Bundle.open(path)


# A device test needs the whole runtime under a memory cap, so it runs in a child process whose address
# space is capped at what it has after the imports + 600 MB: an allocation of gigabytes fails there at once
# (MemoryError) instead of swapping the machine. The child prints its tracemalloc peak.
CHILD = textwrap.dedent("""
    import json, resource, sys, tracemalloc
    import numpy as np
    from peel.device import Bundle
    status = open("/proc/self/status").read().split("VmSize:")[1].split()[0]
    resource.setrlimit(resource.RLIMIT_AS, (int(status) * 1024 + 600 * 2**20, resource.RLIM_INFINITY))
    vector = np.ones(int(sys.argv[2]), dtype=np.float32)
    Bundle.open(sys.argv[1]).for_user(vector).recommend(5)  # warm-up: lazy imports are not working memory
    tracemalloc.start()
    bundle = Bundle.open(sys.argv[1])
    open_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    items, scores = bundle.for_user(vector).recommend(5)
    peak = tracemalloc.get_traced_memory()[1] - before
    print(json.dumps({"open_peak": open_peak, "peak": peak, "loaded": bundle.bytes_loaded,
                      "n_items": bundle.n_items, "items": items.tolist()}))
""")


def run_capped(path: Path, dim: int) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(dim)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize(("g_v", "n_blocks", "d"), [(4000, 2**20, 1), (20_000, 1, 2**16)])
def test_many_empty_item_groups_keep_for_user_small(tmp_path: Path, g_v: int, n_blocks: int, d: int) -> None:
    """One item and thousands of empty item groups in a file of ~1 MB: G_v = 4000 with N = 2^20 must not make
    for_user allocate a G_v x N mask (3.9 GiB), nor 20,000 groups with d = 2^16 one query each (5 GiB)."""
    from peel.device import write_items_bundle

    path = tmp_path / "wide.peelb"
    write_items_bundle(path, blocks=np.ones((1, n_blocks, d), dtype=np.float32), item_group=np.array([0]),
                       unit_order=[(g, 0) for g in range(g_v)], n_item_groups=g_v)
    assert path.stat().st_size < 2_000_000
    result = run_capped(path, n_blocks * d)
    assert result["items"] == [0], result
    # opening: the header's Python objects (about 10x its JSON) and the loaded bytes
    assert result["open_peak"] <= 16 * path.stat().st_size + result["loaded"], result
    # for_user + recommend: the loaded bytes (units + one user vector: the vector's copy), one score array
    # over items, a few words per item group (bounds, |S_g|, scale, query slot) and slack
    assert result["peak"] <= result["loaded"] + 4 * result["n_items"] + 128 * g_v + 2**20, result


def users_file(tmp_path: Path) -> Path:
    path = tmp_path / "users.peelb"
    write_users_file(path, user_vectors=np.ones((4, 6)), user_group=[0, 1, 0, 1], n_items=9,
                     user_ids=["a", "b", "c", "d"], history=([0, 1, 1, 3, 3], [2, 5, 8]))
    return path


ITEMSIZE = {"F32": 4, "I64": 8, "U8": 1}


def retile(header: dict) -> None:
    """Recompute every tensor's data_offsets from its shape, back to back from 0."""
    position = 0
    for t in header["tensors"]:
        size = int(np.prod(t["shape"], dtype=object)) * ITEMSIZE[t["dtype"]]
        t["data_offsets"] = [position, position + size]
        position += size


@pytest.mark.parametrize(("n_users", "dim"), [(2**40, 6), (4, 2**45), (2**20, 2**20)])
def test_users_file_with_absurd_dims_is_refused_before_allocation(tmp_path: Path, n_users: int, dim: int) -> None:
    path = users_file(tmp_path)
    header, data = split(path)
    header["dims"].update(n_users=n_users, embedding_dim=dim)
    per_user = {"user_vectors": [n_users, dim], "user_group": [n_users], "user_ids_offsets": [n_users + 1],
                "history_indptr": [n_users + 1]}
    for t in header["tensors"]:
        t["shape"] = per_user.get(t["name"], t["shape"])
    retile(header)
    rewrite(path, header, data)
    with pytest.raises(BundleError, match="truncated"):
        Users.open(path)


def test_users_file_shape_with_many_entries_is_refused(tmp_path: Path) -> None:
    path = users_file(tmp_path)
    header, data = split(path)
    header["tensors"][1]["shape"] = [MAX_INT - 1] * 700
    rewrite(path, header, data)
    with pytest.raises(BundleError, match=r"tensors\[1\]\.shape"):
        Users.open(path)


def export_dir(tmp_path: Path, index_text: str | bytes) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "index.json").write_bytes(index_text if isinstance(index_text, bytes) else index_text.encode())
    return folder


def test_index_nested_too_deep_is_a_bundle_error(tmp_path: Path) -> None:
    folder = export_dir(tmp_path, "[" * 200_000 + "]" * 200_000)
    with pytest.raises(BundleError, match="index"):
        ExportIndex.open(folder)


def test_index_larger_than_the_cap_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(directory_module, "MAX_INDEX_BYTES", 1000)
    folder = export_dir(tmp_path, json.dumps({"format": "peel-bundle-index", "pad": "x" * 2000}))
    with pytest.raises(BundleError, match="exceeds the cap"):
        ExportIndex.open(folder)


@pytest.mark.parametrize("text", [b"\xff\xfe{}", b'{"format": NaN}', b'{"format": 1, "format": 2}',
                                  b'{"format": "peel-bundle-index", "version": 1, "users": {"file": "u.peelb"}, '
                                  b'"groups": [{"user_group": 0, "file": "g.peelb"}, 7]}'])
def test_index_malformed_json_is_a_bundle_error(tmp_path: Path, text: bytes) -> None:
    with pytest.raises(BundleError):
        ExportIndex.open(export_dir(tmp_path, text))


def test_index_json_that_is_a_directory(tmp_path: Path) -> None:
    folder = tmp_path / "export"
    (folder / "index.json").mkdir(parents=True)
    with pytest.raises(BundleError, match="index"):
        ExportIndex.open(folder)


def test_recommend_json_with_nan_scores_is_strict_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A bundle whose unit holds NaN (valid CRC) scores NaN; `peel recommend --json` still prints valid JSON."""
    import zlib

    from peel.cli import main
    from peel.device import write_items_bundle

    folder = tmp_path / "export"
    folder.mkdir()
    group = folder / "group_0.peelb"
    write_items_bundle(group, blocks=np.ones((3, 1, 2)), item_group=np.zeros(3, dtype=np.int64), unit_order=[(0, 0)])
    header, data = split(group)
    unit = header["units"][0]
    begin, end = unit["data_offsets"]
    payload = np.full((end - begin) // 4, np.nan, dtype="<f4").tobytes()
    unit["crc32"] = zlib.crc32(payload)
    rewrite(group, header, data[:begin] + payload)
    write_users_file(folder / "users.peelb", user_vectors=np.ones((1, 2)), user_group=[0], n_items=3,
                     user_ids=["u1"])
    (folder / "index.json").write_text(json.dumps({"format": "peel-bundle-index", "version": 1,
                                                   "users": {"file": "users.peelb"},
                                                   "groups": [{"user_group": 0, "file": "group_0.peelb"}]}))
    monkeypatch.setattr(sys, "argv", ["peel", "recommend", str(folder), "--user", "u1", "-k", "2", "--json"])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 0

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    result = json.loads(capsys.readouterr().out, parse_constant=refuse)
    assert result["scores"] == [None, None] and len(result["items"]) == 2
