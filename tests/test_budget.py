"""Memory budgets: parsing, refusals, paper-equivalent scaling (../shared/data/README.md) and ordering."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peel.budget import (
    ACCEPTED_FORMS,
    Budget,
    format_bytes,
    full_table_bytes,
    paper_equivalent,
    parse_budget,
    parse_budgets,
    reference_dataset,
)
from peel.errors import BudgetError

AMAZON_SUB_ITEMS = 55_268
YELP_SUB_ITEMS = 27_788


# ------------------------------------------------------------------ accepted forms
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5MB", 5_000_000),
        ("5MiB", 5 * 2**20),
        ("5000000", 5_000_000),
        ("5000000B", 5_000_000),
        ("1.5MB", 1_500_000),
        ("500KB", 500_000),
        ("500KiB", 512_000),
        ("1GB", 1_000_000_000),
        ("2GiB", 2 * 2**30),
        ("5mb", 5_000_000),
        (" 5 MB ", 5_000_000),
        (".5MB", 500_000),
        ("0.25kB", 250),
        # decimal fractions that float arithmetic floors one byte short (4.1 * 10**6 = 4099999.9999999995)
        ("4.1MB", 4_100_000),
        ("8.2MB", 8_200_000),
        ("1.005KB", 1_005),
    ],
)
def test_absolute_budgets(text, expected):
    budget = parse_budget(text)
    assert budget.bytes == expected
    assert isinstance(budget.bytes, int)
    assert budget.label == text.strip()


def test_fractional_bytes_are_floored():
    assert parse_budget("1.0005KB").bytes == 1_000


def test_percent_of_the_full_item_table():
    table = full_table_bytes(1_000, 64)
    assert table == 256_000  # 1000 items x 64 dims x 4 bytes
    assert parse_budget("20%", full_table_bytes=table).bytes == 51_200
    assert parse_budget("100%", full_table_bytes=table).bytes == table
    assert parse_budget("0.57%", full_table_bytes=10_000).bytes == 57  # not 56 (float floor)
    assert parse_budget("33%", full_table_bytes=100).bytes == 33


def test_integer_and_budget_inputs():
    assert parse_budget(123).bytes == 123
    budget = Budget(7, label="x")
    assert parse_budget(budget) is budget


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**7))
def test_decimal_megabytes_are_exact(thousandths):
    # "a.bcdMB" is exactly thousandths * 1000 bytes
    text = f"{thousandths // 1000}.{thousandths % 1000:03d}MB"
    assert parse_budget(text).bytes == thousandths * 1_000


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([("B", 1), ("KB", 10**3), ("MB", 10**6), ("GB", 10**9),
                                              ("KiB", 2**10), ("MiB", 2**20), ("GiB", 2**30)]))
def test_whole_numbers_in_every_unit(n, unit):
    suffix, factor = unit
    assert parse_budget(f"{n}{suffix}").bytes == n * factor


# ------------------------------------------------------------------ paper-equivalent budgets
@pytest.mark.parametrize("reference", ["amazon-book-sub", "amazon-book", "Amazon-Book"])
@pytest.mark.parametrize(
    ("paper", "megabytes", "exact"),
    [("5MB", 3.017, 3_016_845), ("10MB", 6.034, 6_033_690), ("25MB", 15.084, 15_084_225)],
)
def test_amazon_book_sub_paper_equivalents(reference, paper, megabytes, exact):
    budget = parse_budget(f"{paper}-eq", n_items=AMAZON_SUB_ITEMS, reference=reference)
    assert round(budget.bytes / 1e6, 3) == megabytes
    assert budget.bytes == exact  # floor(paper bytes x 55,268 / 91,599)
    assert budget.label == f"{paper}-eq"
    assert str(budget) == f"{paper}-eq ({megabytes:.3f} MB)"


@pytest.mark.parametrize("reference", ["yelp2018-sub", "yelp2020"])
@pytest.mark.parametrize(
    ("paper", "megabytes", "exact"),
    [("5MB", 1.313, 1_312_698), ("10MB", 2.625, 2_625_397), ("25MB", 6.563, 6_563_494)],
)
def test_yelp2018_sub_paper_equivalents(reference, paper, megabytes, exact):
    budget = parse_budget(f"{paper}-eq", n_items=YELP_SUB_ITEMS, reference=reference)
    assert round(budget.bytes / 1e6, 3) == megabytes  # paper MB x 27,788 / 105,843
    assert budget.bytes == exact


def test_paper_equivalent_of_the_paper_dataset_is_the_paper_budget():
    assert parse_budget("5MB-eq", n_items=91_599, reference="amazon-book").bytes == 5_000_000
    assert parse_budget("25MB-eq", n_items=105_843, reference="yelp2020").bytes == 25_000_000


def test_paper_equivalent_function_and_references():
    scaled = paper_equivalent(Budget(10_000_000, label="10MB"), n_items=AMAZON_SUB_ITEMS, reference="amazon-book-sub")
    assert scaled.bytes == 6_033_690
    assert scaled.label == "10MB-eq"
    assert reference_dataset("amazon-book-sub") == "amazon-book"
    assert reference_dataset("yelp2018-sub") == "yelp2020"
    assert reference_dataset("YELP2020") == "yelp2020"
    with pytest.raises(BudgetError, match="ml-100k"):
        reference_dataset("ml-100k")
    with pytest.raises(BudgetError, match="positive"):
        paper_equivalent(Budget(10), n_items=0, reference="amazon-book")


@pytest.mark.parametrize("kwargs", [{}, {"n_items": AMAZON_SUB_ITEMS}, {"reference": "amazon-book"}])
def test_paper_equivalent_needs_items_and_reference(kwargs):
    with pytest.raises(BudgetError, match="item count"):
        parse_budget("5MB-eq", **kwargs)


def test_paper_equivalent_with_an_unknown_reference_is_refused():
    with pytest.raises(BudgetError, match="no paper reference"):
        parse_budget("5MB-eq", n_items=1_000, reference="netflix")


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize("text", ["5XB", "abc", "-5MB", "", "   ", "5 MB MB", "5e6", "1,5MB", "MB", "5MB-eq-eq"])
def test_unreadable_budgets_list_the_accepted_forms(text):
    with pytest.raises(BudgetError) as info:
        parse_budget(text)
    message = str(info.value)
    assert ACCEPTED_FORMS in message
    assert repr(text) in message
    for form in ("'5MB'", "'5MiB'", "'20%'", "'5MB-eq'", "'5000000'"):
        assert form in message


@pytest.mark.parametrize(
    ("text", "kwargs", "reason"),
    [
        ("20%", {}, "percentage of the full item table"),
        ("150%", {"full_table_bytes": 1_000}, r"\(0, 100\]"),
        ("0%", {"full_table_bytes": 1_000}, r"\(0, 100\]"),
        ("20%-eq", {"full_table_bytes": 1_000}, "cannot be paper-equivalent"),
        ("1.5", {}, "whole number"),
        ("1.5B", {}, "whole number"),
    ],
)
def test_budgets_that_make_no_sense_are_refused(text, kwargs, reason):
    with pytest.raises(BudgetError, match=reason) as info:
        parse_budget(text, **kwargs)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [5.0, None, True, b"5MB"])
def test_non_text_budgets_are_refused(value):
    with pytest.raises(BudgetError, match="string or an integer"):
        parse_budget(value)


def test_negative_byte_counts_are_refused():
    with pytest.raises(BudgetError, match="negative"):
        parse_budget(-1)
    with pytest.raises(BudgetError, match="negative"):
        Budget(-5)


def test_budget_errors_are_value_errors():
    with pytest.raises(ValueError):
        parse_budget("abc")


# ------------------------------------------------------------------ lists, ordering, display
def test_parse_budgets():
    budgets = parse_budgets("5MB,10MB")
    assert [b.bytes for b in budgets] == [5_000_000, 10_000_000]
    assert [b.label for b in budgets] == ["5MB", "10MB"]
    assert [b.bytes for b in parse_budgets(" 5MB, 10MB ,25MB,")] == [5_000_000, 10_000_000, 25_000_000]


def test_parse_budgets_passes_context_on():
    budgets = parse_budgets("5MB-eq,10MB-eq,25MB-eq", n_items=AMAZON_SUB_ITEMS, reference="amazon-book-sub")
    assert [round(b.megabytes, 3) for b in budgets] == [3.017, 6.034, 15.084]
    assert [b.bytes for b in parse_budgets("10%,50%", full_table_bytes=2_000)] == [200, 1_000]


@pytest.mark.parametrize("text", ["", ",", " , "])
def test_empty_budget_list_is_refused(text):
    with pytest.raises(BudgetError, match="no budget"):
        parse_budgets(text)


def test_one_bad_entry_refuses_the_list():
    with pytest.raises(BudgetError, match="'abc'"):
        parse_budgets("5MB,abc")


def test_budget_ordering():
    small, middle, large = parse_budget("500KB"), parse_budget("5MB"), parse_budget("5MiB")
    assert small < middle < large
    assert large > middle >= middle
    assert sorted([large, small, middle]) == [small, middle, large]
    assert max(parse_budgets("25MB,5MB,10MB")).label == "25MB"
    # the label does not take part in comparisons
    assert Budget(5_000_000, label="5MB") == Budget(5_000_000, label="5000000")
    assert not Budget(5_000_000, label="a") < Budget(5_000_000, label="b")
    assert Budget(4) != Budget(5)


def test_budget_properties():
    budget = parse_budget("5MB")
    assert budget.megabytes == 5.0
    assert budget.floats == 1_250_000
    assert Budget(11).floats == 2  # whole fp32 values only
    assert str(budget) == "5MB (5.000 MB)"
    assert str(Budget(1_500)) == "1.500 KB"
    assert str(Budget(999)) == "999 B"


@pytest.mark.parametrize(
    ("n", "text"),
    [(0, "0 B"), (999, "999 B"), (1_000, "1.000 KB"), (3_016_845, "3.017 MB"), (15_084_225, "15.084 MB")],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text
