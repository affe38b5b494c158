"""BENCHMARKS.md and BENCHMARKS_HISTORY.md are exactly what `python -m benchmarks.report` writes from the
committed JSON records (nothing hand-written, nothing stale)."""
from benchmarks.report import BENCHMARKS_MD, HISTORY_MD, README_MD, render_benchmarks, render_readme


def test_benchmarks_md_is_regenerated_identically_from_the_json():
    benchmarks, history = render_benchmarks()
    assert BENCHMARKS_MD.read_text() == benchmarks, "BENCHMARKS.md is stale: run python -m benchmarks.report"
    assert HISTORY_MD.read_text() == history, "BENCHMARKS_HISTORY.md is stale: run python -m benchmarks.report"
    assert "(issue " not in benchmarks
    assert README_MD.read_text() == render_readme(), "README.md's headline is stale: run python -m benchmarks.report"
