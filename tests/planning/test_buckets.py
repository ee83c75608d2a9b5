import pytest

from hilo_export.planning.buckets import (
    CAPACITY_ALIGN,
    DEFAULT_FRACTIONS,
    FULL,
    Bucket,
    BucketError,
    kept_range,
    parse_buckets,
)


def test_default_table_is_sorted_and_ends_with_full():
    table = parse_buckets("s,m,l")
    assert [b.name for b in table] == ["s", "m", "l", FULL]
    assert [b.fraction for b in table[:-1]] == [DEFAULT_FRACTIONS[n] for n in "sml"]


def test_order_of_names_does_not_matter_and_full_may_be_listed():
    assert parse_buckets("l,s,full") == parse_buckets("s,l")


def test_custom_fractions():
    table = parse_buckets("s=0.1,xl=0.8")
    assert [(b.name, b.fraction) for b in table] == [("s", 0.1), ("xl", 0.8), (FULL, 1.0)]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("q", "unknown bucket 'q'"),
        ("s=abc", "not a number"),
        ("s=1.5", "strictly between 0 and 1"),
        ("s=0", "strictly between 0 and 1"),
        ("s,s", "listed twice"),
        ("1x=0.2", "plain identifier"),
        ("full=0.5", "full always keeps every token"),
    ],
)
def test_bad_specs_name_the_fix(spec, message):
    with pytest.raises(BucketError, match=message):
        parse_buckets(spec)


def test_capacity_is_aligned_and_clamped():
    n = 4096
    assert Bucket("s", 0.25).capacity(n, 16) == 1024
    assert Bucket("m", 0.45).capacity(n, 16) % CAPACITY_ALIGN == 0
    assert Bucket("m", 0.45).capacity(n, 16) >= 0.45 * n
    assert Bucket("x", 0.99).capacity(100, 1) == 100  # never more than the grid
    assert Bucket("x", 0.01).capacity(100, 12) == 12  # never fewer than the low-frequency tokens
    assert parse_buckets("s")[-1].capacity(n, 16) == n


def test_exact_buckets_are_ranges_that_tile_the_lengths():
    # 64x64 grid, 16 low-frequency tokens: capacities 824, 1848, 3072 (multiples of 8), kept = capacity - 16
    table = parse_buckets("s,m,l")
    ranges = [kept_range(table, i, 4096, 16 if i < 3 else 0, "exact") for i in range(4)]
    assert [(r["min"], r["max"]) for r in ranges] == [(1, 808), (809, 1832), (1833, 3056), (4096, 4096)]
    for r in ranges[:3]:  # opt: the middle of the range, on the alignment grid
        assert r["min"] <= r["opt"] <= r["max"] and r["opt"] % CAPACITY_ALIGN == 0
        assert abs(r["opt"] - (r["min"] + r["max"]) / 2) < CAPACITY_ALIGN
    assert ranges[3]["opt"] == 4096


def test_padded_buckets_are_one_length():
    table = parse_buckets("s,m,l")
    assert kept_range(table, 1, 4096, 16, "padded") == {"min": 1832, "opt": 1832, "max": 1832}


def test_a_bucket_no_plan_reaches_keeps_a_valid_range():
    # on a 4-token grid both buckets round up to the whole grid: m is never chosen, its range is its size
    table = parse_buckets("s=0.5,m=0.6")
    assert table[0].kept(4, 0) == table[1].kept(4, 0) == 4
    assert kept_range(table, 1, 4, 0, "exact") == {"min": 4, "opt": 4, "max": 4}
