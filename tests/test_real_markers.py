"""The real marker and negative sentences of ../shared/repostbench/markers-dev.jsonl
(benchmarks/real_markers.py), where that corpus exists: a user's clone has
none, and skips this test."""

import pytest

from benchmarks.real_markers import DEFAULT_MARKERS, check, totals

pytestmark = pytest.mark.skipif(not DEFAULT_MARKERS.exists(), reason="../shared/repostbench is not here")


def test_every_real_marker_is_found_and_every_negative_sentence_kept():
    counts, misses = check(DEFAULT_MARKERS)
    summed = totals(counts)
    markers, negatives = summed["marker"], summed["negative"]
    assert markers["rows"] > 0 and negatives["rows"] > 0
    # found: by the rules or learned; kept: by the rules and in copies
    assert markers["ok"] == markers["rows"], misses
    assert negatives["ok"] == negatives["rows"], misses
