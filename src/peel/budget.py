"""Memory budgets: parsing, display and the paper-equivalent scaling of ../shared/data/README.md.

One budget type serves every method. 1 MB = 10**6 bytes, as in the paper; 4 bytes per float.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

from peel.errors import BudgetError
from peel.units import unit_size

BYTES_PER_FLOAT = 4

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9,
    "kib": 2**10, "mib": 2**20, "gib": 2**30,
}
_PATTERN = re.compile(r"^\s*(?P<number>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[a-zA-Z]*|%)\s*(?P<eq>-eq)?\s*$")

ACCEPTED_FORMS = (
    "'5MB' (10^6 bytes, the paper's unit), '500KB', '1GB', '5MiB' (2^20 bytes), '5000000' or '5000000B' "
    "(bytes), '20%' (of the full item table), '5MB-eq' (a paper budget scaled to this dataset)"
)

# Item counts of the paper's datasets: the paper's budgets were set for these (data/README.md).
PAPER_ITEM_COUNTS = {"amazon-book": 91_599, "yelp2020": 105_843}
# Which paper dataset a shipped dataset stands in for.
DATASET_REFERENCES = {"amazon-book-sub": "amazon-book", "yelp2018-sub": "yelp2020"}


@dataclass(frozen=True, order=True)
class Budget:
    """A memory budget in bytes, with the text it was given as (for tables)."""

    bytes: int
    label: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.bytes < 0:
            raise BudgetError(f"a budget cannot be negative, got {self.bytes} bytes")

    @property
    def megabytes(self) -> float:
        return self.bytes / 10**6

    @property
    def floats(self) -> int:
        """How many fp32 values fit."""
        return self.bytes // BYTES_PER_FLOAT

    def __str__(self) -> str:
        size = format_bytes(self.bytes)
        return f"{self.label} ({size})" if self.label and self.label != size else size


def format_bytes(n: int) -> str:
    """'3.017 MB' style, in the paper's decimal units."""
    if n >= 10**6:
        return f"{n / 10**6:.3f} MB"
    if n >= 10**3:
        return f"{n / 10**3:.3f} KB"
    return f"{n} B"


def parse_budget(
    text: str | int | Budget,
    *,
    full_table_bytes: int | None = None,
    n_items: int | None = None,
    reference: str | None = None,
) -> Budget:
    """Parse one budget.

    ``full_table_bytes`` is needed for a percentage; ``n_items`` and ``reference`` (a key of
    PAPER_ITEM_COUNTS or a dataset name of DATASET_REFERENCES) for the '-eq' form.
    """
    if isinstance(text, Budget):
        return text
    if isinstance(text, int) and not isinstance(text, bool):
        return Budget(text, label=str(text))
    if not isinstance(text, str):
        raise BudgetError(
            f"budget must be a string or an integer, got {type(text).__name__}; accepted: {ACCEPTED_FORMS}"
        )
    match = _PATTERN.match(text)
    if match is None:
        raise BudgetError(f"cannot read budget {text!r}; accepted forms: {ACCEPTED_FORMS}")
    number, unit, eq = float(match["number"]), match["unit"].lower(), match["eq"]
    exact = Fraction(match["number"])  # exact decimal: float('4.1') * 10**6 floors to 4099999
    label = text.strip()
    if unit == "%":
        if eq:
            raise BudgetError(f"budget {text!r}: a percentage cannot be paper-equivalent; accepted: {ACCEPTED_FORMS}")
        if full_table_bytes is None:
            raise BudgetError(f"budget {text!r} is a percentage of the full item table, which is not known here; "
                              "give an absolute budget such as '5MB'")
        if not 0 < number <= 100:
            raise BudgetError(f"budget {text!r}: a percentage must lie in (0, 100]")
        return Budget(math.floor(full_table_bytes * exact / 100), label=label)
    if unit not in _UNITS:
        raise BudgetError(f"budget {text!r}: unknown unit {match['unit']!r}; accepted forms: {ACCEPTED_FORMS}")
    size = exact * _UNITS[unit]
    if unit in ("", "b") and not number.is_integer():
        raise BudgetError(f"budget {text!r}: a byte count must be a whole number")
    budget = Budget(math.floor(size), label=label)
    if eq:
        if n_items is None or reference is None:
            raise BudgetError(f"budget {text!r} is paper-equivalent, which needs the dataset's item count "
                              "and the paper dataset it stands in for (amazon-book or yelp2020)")
        return paper_equivalent(budget, n_items=n_items, reference=reference)
    return budget


def parse_budgets(text: str, **kwargs: object) -> list[Budget]:
    """Parse a comma-separated list such as '5MB,10MB,25MB'."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise BudgetError(f"no budget in {text!r}; accepted forms: {ACCEPTED_FORMS}")
    return [parse_budget(p, **kwargs) for p in parts]  # type: ignore[arg-type]


def reference_dataset(name: str) -> str:
    """Map a dataset (or paper dataset) name to the paper dataset whose budgets it scales."""
    key = name.lower()
    if key in PAPER_ITEM_COUNTS:
        return key
    if key in DATASET_REFERENCES:
        return DATASET_REFERENCES[key]
    known = sorted(PAPER_ITEM_COUNTS) + sorted(DATASET_REFERENCES)
    raise BudgetError(f"no paper reference for dataset {name!r}; known: {', '.join(known)}")


def paper_equivalent(budget: Budget, *, n_items: int, reference: str) -> Budget:
    """Scale a paper budget to a dataset with ``n_items`` items: budget * n_items / paper items.

    Keeps the paper's bytes-per-item regime, e.g. amazon-book-sub (55,268 items) 5 MB -> 3.017 MB.
    """
    paper_items = PAPER_ITEM_COUNTS[reference_dataset(reference)]
    if n_items <= 0:
        raise BudgetError(f"n_items must be positive, got {n_items}")
    scaled = math.floor(budget.bytes * n_items / paper_items)
    base = budget.label.removesuffix("-eq") if budget.label else format_bytes(budget.bytes)
    return Budget(scaled, label=f"{base}-eq")


def full_table_bytes(n_items: int, dim: int) -> int:
    """Bytes of a full fp32 item table of ``n_items`` x ``dim``."""
    return n_items * dim * BYTES_PER_FLOAT


def device_bytes(n_items: int, dim: int, unit_dtype: str = "f32") -> int:
    """Bytes a device holds to rank all items for one user with a fixed-size model of ``dim`` dims: the
    item table + the user's vector, fp32 (methods.md, Baselines); with ``unit_dtype`` "q8" the table is
    stored as one q8 unit of d = ``dim`` (n_items * dim int8 + a float32 scale)."""
    return int(unit_size(n_items, dim, unit_dtype)) + dim * BYTES_PER_FLOAT
