"""BENCHMARKS.md and BENCHMARKS_HISTORY.md are exactly what `python -m benchmarks.report` writes from the
committed JSON records (nothing hand-written, nothing stale)."""
from benchmarks.report import BENCHMARKS_MD, HISTORY_MD, render_benchmarks


def test_benchmarks_md_is_regenerated_identically_from_the_json():
    benchmarks, history = render_benchmarks()
    assert BENCHMARKS_MD.read_text() == benchmarks, "BENCHMARKS.md is stale: run python -m benchmarks.report"
    assert HISTORY_MD.read_text() == history, "BENCHMARKS_HISTORY.md is stale: run python -m benchmarks.report"
    assert "(issue " not in benchmarks


def test_summary_claims_a_gain_only_where_the_interval_excludes_zero():
    from benchmarks.accuracy import JSON, group_stats
    import json

    groups = group_stats(json.loads(JSON.read_text())["records"])
    for g in groups.values():
        low, high = g["delta_ci95"]
        assert g["gain"] == (low is not None and low > 0) and g["loss"] == (high is not None and high < 0)
