"""Composed item tables: item vectors computed from shared tables instead of stored one row per item.

DLRM-CE's quotient–remainder tables and LightRec's codebooks (methods.md, Baselines) store far fewer
floats than items x D. One description of each serves the server (its budget-fitting rule and the
tensors its export writes) and the device (reading, checking and scoring them), so what the server
charges is what a device holds. numpy only.

- ``quotient_remainder``: two tables Q (⌈|V|/m⌉ rows) and R (m rows); item j's vector is Q[j // m] op
  R[j mod m] with op ``mult`` (element-wise product), ``add`` or ``concat`` (each table then holds D/2
  dims). A device scores all items with one matrix product, never building the item vectors.
- ``codebooks``: B codebooks of W codewords of D dims; item j's vector is Σ_b C_b[c_b(j)], its B codes
  packed at their real bit width ⌈log2 W⌉. A device scores with B·W dot products and one gather per code.

Item j is the internal item id; an export's ``item_order`` maps it to stored positions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from peel.errors import BundleError
from peel.units import BYTES_PER_FLOAT

COMPOSITIONS = ("quotient_remainder", "codebooks")
QR_OPS = ("mult", "add", "concat")
MAX_CODEWORDS = 2**16


@dataclass(frozen=True)
class Composition:
    """How item vectors of ``dim`` dims are composed; ``buckets`` is m (quotient_remainder), ``codebooks``
    and ``codewords`` are B and W (codebooks)."""

    type: str
    dim: int
    op: str = "mult"
    buckets: int = 0
    codebooks: int = 0
    codewords: int = 0

    def __post_init__(self) -> None:
        if self.type not in COMPOSITIONS:
            raise ValueError(f"composition type must be one of {COMPOSITIONS}, got {self.type!r}")
        if self.dim < 1:
            raise ValueError(f"a composed item vector needs dim >= 1, got {self.dim}")
        if self.type == "quotient_remainder":
            if self.op not in QR_OPS:
                raise ValueError(f"quotient_remainder op must be one of {QR_OPS}, got {self.op!r}")
            if self.buckets < 1:
                raise ValueError(f"quotient_remainder needs buckets (m) >= 1, got {self.buckets}")
            if self.op == "concat" and self.dim % 2:
                raise ValueError(f"concat splits the dim between two tables: it must be even, got {self.dim}")
        elif not (self.codebooks >= 1 and 2 <= self.codewords <= MAX_CODEWORDS):
            raise ValueError(f"codebooks needs B >= 1 codebooks of 2 to {MAX_CODEWORDS} codewords, "
                             f"got B={self.codebooks}, W={self.codewords}")

    # ------------------------------------------------------------------ accounting
    @property
    def table_dim(self) -> int:
        """Dims of each quotient/remainder table row (D, or D/2 for concat)."""
        return self.dim // 2 if self.op == "concat" else self.dim

    @property
    def code_bits(self) -> int:
        """Bits of one code: ⌈log2 W⌉."""
        return max(1, math.ceil(math.log2(self.codewords)))

    def tensor_shapes(self, n_items: int) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, dtype, shape) of the tensors a bundle stores for this composition, in order."""
        if self.type == "quotient_remainder":
            return [("qr_quotient", "F32", (-(-n_items // self.buckets), self.table_dim)),
                    ("qr_remainder", "F32", (self.buckets, self.table_dim))]
        return [("codebooks", "F32", (self.codebooks * self.codewords, self.dim)),
                ("codes", "U8", (-(-n_items * self.codebooks * self.code_bits // 8),))]

    def item_bytes(self, n_items: int) -> int:
        """Bytes of everything that makes the item vectors (tables, codebooks, packed codes)."""
        itemsize = {"F32": BYTES_PER_FLOAT, "U8": 1}
        return sum(math.prod(shape) * itemsize[dtype] for _, dtype, shape in self.tensor_shapes(n_items))

    def device_bytes(self, n_items: int) -> int:
        """What a device holds to rank all items for one user: the item tensors + the user's vector."""
        return self.item_bytes(n_items) + self.dim * BYTES_PER_FLOAT

    def to_header(self) -> dict[str, Any]:
        if self.type == "quotient_remainder":
            return {"type": self.type, "op": self.op, "buckets": self.buckets}
        return {"type": self.type, "codebooks": self.codebooks, "codewords": self.codewords}

    @classmethod
    def from_header(cls, value: Any, dim: int, where: str) -> Composition:
        """The composition an item bundle's header declares (BundleError naming what is wrong)."""
        keys = {"quotient_remainder": {"type", "op", "buckets"}, "codebooks": {"type", "codebooks", "codewords"}}
        if not isinstance(value, dict) or value.get("type") not in keys:
            raise BundleError(f"{where}: composition must be an object whose type is one of {COMPOSITIONS}")
        if set(value) != keys[value["type"]]:
            raise BundleError(f"{where}: a {value['type']} composition has exactly the keys "
                              f"{sorted(keys[value['type']])}, got {sorted(value)}")
        ints = {k: v for k, v in value.items() if k not in ("type", "op")}
        if any(type(v) is not int or not 1 <= v < 2**53 for v in ints.values()):
            raise BundleError(f"{where}: composition {sorted(ints)} must be integers >= 1, got {ints}")
        try:
            return cls(dim=dim, **value)
        except ValueError as exc:
            raise BundleError(f"{where}: composition: {exc}") from None


# ---------------------------------------------------------------------- codes
def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """(items, B) codes < 2^bits as one bit stream, item-major, most significant bit first."""
    codes = np.asarray(codes, dtype=np.int64)
    shifts = np.arange(bits - 1, -1, -1)
    stream = ((codes.reshape(-1, 1) >> shifts) & 1).astype(np.uint8)
    return np.packbits(stream.reshape(-1))


def unpack_codes(packed: np.ndarray, n_items: int, codebooks: int, bits: int) -> np.ndarray:
    """The (items, B) codes of :func:`pack_codes` (uint16; the bits past the last code are ignored)."""
    count = n_items * codebooks
    stream = np.unpackbits(packed, count=count * bits).reshape(count, bits).astype(np.uint16)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (stream @ weights).astype(np.uint16).reshape(n_items, codebooks)


# ---------------------------------------------------------------------- scoring
def composed_scores(composition: Composition, tensors: dict[str, np.ndarray], user_vector: np.ndarray,
                    n_items: int, codes: np.ndarray | None = None) -> np.ndarray:
    """Scores of every item by internal id for one user vector, without building the item vectors.

    quotient_remainder: item j = q·m + r, so the scores form the (⌈|V|/m⌉, m) matrix (Q ⊙ u) Rᵀ (mult)
    or an outer sum (add, concat), read row by row. codebooks: the B·W codeword scores, gathered by the
    codes (``codes``: the unpacked (items, B) codes).
    """
    u = np.asarray(user_vector, dtype=np.float32)
    if composition.type == "quotient_remainder":
        quotient, remainder = tensors["qr_quotient"], tensors["qr_remainder"]
        if composition.op == "mult":
            grid = (quotient * u) @ remainder.T
        else:
            half = composition.table_dim
            u_q, u_r = (u, u) if composition.op == "add" else (u[:half], u[half:])
            grid = (quotient @ u_q)[:, None] + (remainder @ u_r)[None, :]
        return np.ascontiguousarray(grid, dtype=np.float32).reshape(-1)[:n_items]
    table = (tensors["codebooks"] @ u).reshape(composition.codebooks, composition.codewords)
    if codes is None:
        codes = unpack_codes(tensors["codes"], n_items, composition.codebooks, composition.code_bits)
    scores = np.zeros(n_items, dtype=np.float32)
    for b in range(composition.codebooks):  # B is a handful: one vectorized gather per codebook
        scores += table[b, codes[:, b]]
    return scores


def composed_vectors(composition: Composition, tensors: dict[str, np.ndarray], n_items: int) -> np.ndarray:
    """The (items, D) item vectors by internal id (server side and tests; a device never builds them)."""
    if composition.type == "quotient_remainder":
        j = np.arange(n_items)
        q, r = tensors["qr_quotient"][j // composition.buckets], tensors["qr_remainder"][j % composition.buckets]
        return {"mult": lambda: q * r, "add": lambda: q + r,
                "concat": lambda: np.concatenate([q, r], axis=1)}[composition.op]()
    codes = unpack_codes(tensors["codes"], n_items, composition.codebooks, composition.code_bits)
    books = tensors["codebooks"].reshape(composition.codebooks, composition.codewords, composition.dim)
    return sum(books[b][codes[:, b]] for b in range(composition.codebooks))
