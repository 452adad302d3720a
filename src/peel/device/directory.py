"""An export directory (``peel export``): index.json, users.peelb and one group_<g>.peelb per user group."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peel.device.bundle import BudgetLike, Bundle
from peel.device.format import strict_json
from peel.device.users import Users
from peel.errors import BundleError

INDEX_FORMAT = "peel-bundle-index"
INDEX_VERSION = 1
INDEX_NAME = "index.json"
USERS_NAME = "users.peelb"
MAX_INDEX_BYTES = 16 * 2**20  # an index entry per user group is a few hundred bytes


def group_file(group: int) -> str:
    return f"group_{group}.peelb"


def _safe_name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value in (".", "..") \
            or not value.endswith(".peelb"):
        raise BundleError(f"{where}: bundle file names must be plain '*.peelb' names, got {value!r}")
    return value


def _read_index(path: Path) -> Any:
    """index.json parsed strictly (at most MAX_INDEX_BYTES, UTF-8, no duplicate keys or NaN); BundleError else."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_INDEX_BYTES:
                raise BundleError(f"{path}: {size:,} bytes exceeds the cap of {MAX_INDEX_BYTES:,} bytes for an index")
            text = fh.read(MAX_INDEX_BYTES + 1).decode("utf-8")
        return strict_json(text)
    except FileNotFoundError:
        raise BundleError(f"{path.parent} is not an export directory (no {INDEX_NAME}); make one with peel export") \
            from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read the index: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: the index is not valid UTF-8 JSON: {exc}") from None


@dataclass(frozen=True)
class ExportIndex:
    """The parsed index.json of an export directory."""

    directory: Path
    users_file: str
    group_files: dict[int, str]
    info: dict[str, Any]

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> ExportIndex:
        directory = Path(directory)
        path = directory / INDEX_NAME
        info = _read_index(path)
        if not isinstance(info, dict) or info.get("format") != INDEX_FORMAT:
            raise BundleError(f"{path}: format must be {INDEX_FORMAT!r}")
        if type(info.get("version")) is not int or info["version"] != INDEX_VERSION:
            raise BundleError(f"{path}: unknown index version {info.get('version')!r}; "
                              f"this reader supports version {INDEX_VERSION}")
        users, groups = info.get("users"), info.get("groups")
        if not isinstance(users, dict) or not isinstance(groups, list):
            raise BundleError(f"{path}: the index needs a 'users' object and a 'groups' array")
        files: dict[int, str] = {}
        for entry in groups:
            g = entry.get("user_group") if isinstance(entry, dict) else None
            if type(g) is not int or g < 0 or g in files:
                raise BundleError(f"{path}: every groups entry needs a distinct integer user_group, got {entry!r}")
            files[g] = _safe_name(entry.get("file"), str(path))
        return cls(directory, _safe_name(users.get("file"), str(path)), files, info)

    def users(self) -> Users:
        return Users.open(self.directory / self.users_file)

    def bundle(self, group: int, budget: BudgetLike | None = None) -> Bundle:
        if group not in self.group_files:
            raise BundleError(f"user group {group} was not exported to {self.directory} "
                              f"(exported groups: {sorted(self.group_files)})")
        return Bundle.open(self.directory / self.group_files[group], budget=budget)


def recommend_for_user(directory: str | os.PathLike[str], user: Any, *, budget: BudgetLike | None = None,
                       k: int = 50) -> dict[str, Any]:
    """Look ``user`` (a raw id) up in users.peelb, open their group's bundle at ``budget`` and rank,
    excluding their training items. Returns ids, scores and what the budget kept."""
    index = ExportIndex.open(directory)
    record = index.users().user(user)
    bundle = index.bundle(record.user_group, budget)
    rec = bundle.for_user(record.vector, internal_history=record.history)
    items, scores = rec.recommend(k)
    return {"user": record.raw_id, "user_group": record.user_group, "bundle": str(bundle.path),
            **rec.describe(), "bytes_read": bundle.bytes_read, "file_bytes": bundle.file_bytes,
            "history_excluded": 0 if record.history is None else len(rec.history),
            "items": items.tolist(), "scores": scores.tolist()}
