"""The docs say what the code does: defaults named in README / docstrings / results, and citations that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import peel.export.export
from peel.config import PeelConfig

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / ".." / "shared"
DEFAULT_BLOCKS = PeelConfig().device.blocks


def test_export_docs_name_the_default_blocks() -> None:
    readme = ROOT.joinpath("README.md").read_text()
    export_section = readme[readme.index("`peel export` writes"):readme.index("On the device")]
    assert f"`device.blocks={DEFAULT_BLOCKS}`" in export_section and "by default" in export_section
    assert f"``device.blocks``, by default ``{DEFAULT_BLOCKS}``" in peel.export.export.__doc__.replace("\n", " ")
    others = "|".join(b for b in ("transformed", "raw", "pretrained") if b != DEFAULT_BLOCKS)
    assert f"`device.blocks={others}`" in readme  # the evaluate section lists the non-defaults


def test_device_option_results_label_only_todays_defaults_as_default() -> None:
    text = ROOT.joinpath("benchmarks", "results", "pipeline_amazon-book-sub.md").read_text()
    rows = re.findall(r"^\| device\.(\w+) \| (\w+) \((.*?)\) \|", text, flags=re.M)
    assert rows
    for field, value, label in rows:
        if label == "default":
            assert getattr(PeelConfig().device, field) == value, (field, value)
    assert ("blocks", "transformed", "the default at the time of this run; now raw") in rows


@pytest.mark.parametrize("source", sorted(ROOT.joinpath("src", "peel").rglob("*.py")), ids=lambda p: p.name)
def test_cited_errata_and_methods_sections_exist(source: Path) -> None:
    text = source.read_text()
    errata = SHARED.joinpath("ERRATA.md").read_text()
    methods = SHARED.joinpath("methods.md").read_text()
    for number in re.findall(r"ERRATA issue (\d+)", text):
        assert f"## Issue {number} " in errata, f"{source.name} cites ERRATA issue {number}"
    for number in re.findall(r"methods\.md §(\d+)", text):
        assert re.search(rf"^{number}\. \*\*", methods, flags=re.M), f"{source.name} cites methods.md §{number}"
