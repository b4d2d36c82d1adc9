"""The real marker and negative sentences of ../shared/repostbench/markers-dev.jsonl
(benchmarks/real_markers.py), where that corpus exists: a user's clone has
none, and skips this test."""

import pytest

from benchmarks.real_markers import DEFAULT_MARKERS, main

pytestmark = pytest.mark.skipif(not DEFAULT_MARKERS.exists(), reason="../shared/repostbench is not here")


def test_every_real_marker_is_found_and_every_negative_sentence_kept(capsys):
    status = main([str(DEFAULT_MARKERS), "--details"])
    table = capsys.readouterr().out
    totals = {line.split("|")[1].strip(): line.split("|")[3:7] for line in table.splitlines() if "| all |" in line}
    markers, negatives = totals["markers found"], totals["negatives kept"]
    # rows, by the rules, learned or in copies, found or kept
    assert int(markers[3]) == int(markers[0]), table
    assert int(negatives[3]) == int(negatives[0]), table
    assert status == 0
