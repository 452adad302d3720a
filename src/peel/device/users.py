"""The users file (kind "users"): user vectors, user -> user group, raw user ids, training histories."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from peel.device.bundle import RawIds, read_ids
from peel.device.format import check_file_size, open_file, read_header, read_tensors
from peel.errors import BundleError


@dataclass(frozen=True)
class UserRecord:
    """One user as a device needs them: vector, user group and training items (internal item ids)."""

    raw_id: Any
    index: int
    user_group: int
    vector: np.ndarray
    history: np.ndarray | None


class Users:
    """All users of an export, read and checked in full (a server-side or development convenience:
    a real device is handed its own vector)."""

    def __init__(self, path: Path, dims: dict[str, int], tensors: dict[str, np.ndarray], ids: RawIds,
                 metadata: dict[str, Any]) -> None:
        self.path = path
        self.n_users, self.n_user_groups = dims["n_users"], dims["n_user_groups"]
        self.embedding_dim, self.n_items = dims["embedding_dim"], dims["n_items"]
        self.user_vectors = tensors["user_vectors"]
        self.user_group = tensors["user_group"]
        self.history_indptr = tensors.get("history_indptr")
        self.history_items = tensors.get("history_items")
        self.ids = ids
        self.metadata = metadata

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Users:
        path = Path(path)
        where = str(path)
        fh, size = open_file(path)
        try:
            with fh:
                header = read_header(fh, size, where)
                if header.kind != "users":
                    raise BundleError(f"{where}: this is an {header.kind} bundle, not a users file")
                check_file_size(header, size, where)
                tensors = read_tensors(fh, header, size, where)
        except OSError as exc:
            raise BundleError(f"{where}: read failed: {exc.strerror or exc}") from None
        dims = header.dims
        _check_range(tensors["user_group"], dims["n_user_groups"], "user_group", where)
        if "history_indptr" in tensors:
            indptr, items = tensors["history_indptr"], tensors["history_items"]
            if indptr[0] != 0 or indptr[-1] != len(items) or (np.diff(indptr) < 0).any():
                raise BundleError(f"{where}: history_indptr must rise from 0 to {len(items)}")
            _check_range(items, dims["n_items"], "history_items", where)
        ids = read_ids(tensors, "user", dims["n_users"], where)
        return cls(path, dims, tensors, ids, header.metadata)

    def index_of(self, raw_id: Any) -> int:
        """Internal index of a raw user id; an unknown id raises BundleError naming it."""
        try:
            return int(self.ids.positions([raw_id], "user")[0])
        except BundleError:
            example = ", ".join(str(x) for x in self.ids.at(np.arange(min(3, self.n_users))).tolist())
            raise BundleError(f"unknown user {raw_id!r}: not among the {self.n_users:,} users of {self.path} "
                              f"(ids look like {example})") from None

    def user(self, raw_id: Any) -> UserRecord:
        i = self.index_of(raw_id)
        history = None
        if self.history_indptr is not None:
            history = self.history_items[self.history_indptr[i]: self.history_indptr[i + 1]]
        return UserRecord(raw_id=self.ids.at(np.array([i]))[0], index=i, user_group=int(self.user_group[i]),
                          vector=self.user_vectors[i], history=history)

    def __len__(self) -> int:
        return self.n_users


def _check_range(values: np.ndarray, n: int, name: str, where: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= n):
        raise BundleError(f"{where}: {name} must lie in [0, {n})")
