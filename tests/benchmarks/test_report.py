"""BENCHMARKS.md and BENCHMARKS_HISTORY.md are exactly what `python -m benchmarks.report` writes from the
committed JSON records (nothing hand-written, nothing stale)."""
from benchmarks.report import BENCHMARKS_MD, HISTORY_MD, README_MD, render_benchmarks, render_readme


def test_benchmarks_md_is_regenerated_identically_from_the_json():
    benchmarks, history = render_benchmarks()
    assert BENCHMARKS_MD.read_text() == benchmarks, "BENCHMARKS.md is stale: run python -m benchmarks.report"
    assert HISTORY_MD.read_text() == history, "BENCHMARKS_HISTORY.md is stale: run python -m benchmarks.report"
    assert "(issue " not in benchmarks
    assert README_MD.read_text() == render_readme(), "README.md's headline is stale: run python -m benchmarks.report"


def test_check_refuses_records_of_other_code(monkeypatch):
    import benchmarks.report as report
    from benchmarks.accuracy import key
    from evolq_pl.models.reference import reference_model

    def rec(suite: str, seed: int, fp: str | None, commit: str) -> dict:
        spec = dict(suite=suite, ref="deit_fmnist", w_bits=3, a_bits=8, seed=seed)
        return {"spec": spec, "key": key(spec), "checkpoint_sha256": reference_model("deit_fmnist")["sha256"],
                "machine": {"commit": commit}, **({"fingerprint": fp} if fp else {})}

    records = [rec("main", 0, "aaaa", "c1"), rec("main", 1, "aaaa", "c1")]
    monkeypatch.setattr(report, "_load", lambda name: {"records": {r["key"]: r for r in records}})
    assert report.stale_records("aaaa") is None  # every cited record measured by this code
    records += [rec("main", 2, "bbbb", "c0"), rec("preset-test", 7, None, "c2")]
    problem = report.stale_records("aaaa")
    assert problem.startswith("2 cited accuracy records were measured by code whose fingerprint differs")
    assert "main (measured at c0); preset-test (measured at c2)" in problem
