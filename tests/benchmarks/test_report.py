"""BENCHMARKS.md and BENCHMARKS_HISTORY.md are exactly what `python -m benchmarks.report` writes from the
committed JSON records (nothing hand-written, nothing stale)."""
import pytest

from benchmarks.common import BENCHMARKS_MD, HISTORY_MD, README_MD
from benchmarks.report import render_benchmarks, render_readme


def test_benchmarks_md_is_regenerated_identically_from_the_json():
    benchmarks, history = render_benchmarks()
    assert BENCHMARKS_MD.read_text() == benchmarks, "BENCHMARKS.md is stale: run python -m benchmarks.report"
    assert HISTORY_MD.read_text() == history, "BENCHMARKS_HISTORY.md is stale: run python -m benchmarks.report"
    assert "(issue " not in benchmarks
    assert README_MD.read_text() == render_readme(), "README.md's headline is stale: run python -m benchmarks.report"


def test_check_refuses_records_of_other_code(monkeypatch):
    """A record holds when measured here with the working tree's fingerprint (same definition), or, from another
    CPU (whose kernels round differently) or another definition, when it was measured by the command line on a
    clean tree with today's configs and its commit's code gives that fingerprint on this machine."""
    import benchmarks.fingerprint as fingerprint
    import benchmarks.report as report
    from benchmarks.accuracy import key
    from evolq_pl.models.reference import reference_model

    here, definition = fingerprint.platform_id(), fingerprint.DEFINITION
    code_here = {"c1": "aaaa", "c3": "aaaa", "c5": "aaaa", "c0": "bbbb", "c4": "cccc", "c2": None}  # faked
    monkeypatch.setattr(fingerprint, "fingerprint_of", code_here.get)
    monkeypatch.setattr(fingerprint, "_configs", lambda commit: {"deit.yaml": commit == "c5" or None})

    def rec(suite: str, seed: int, fp: str | None, commit: str, where: str | None = here, cli: bool = True,
            dirty: bool = False, what: str = definition) -> dict:
        spec = dict(suite=suite, ref="deit_fmnist", w_bits=3, a_bits=8, seed=seed)
        return {"spec": spec, "key": key(spec), "checkpoint_sha256": reference_model("deit_fmnist")["sha256"],
                "machine": {"commit": commit, "dirty": dirty}, "fingerprint": fp, "platform": where,
                "definition": what, "command": "evolq-pl fit ..." if cli else None}

    records = [rec("main", 0, "aaaa", "c1"), rec("main", 1, "zzzz", "c3", "another CPU"),
               rec("main", 3, "yyyy", "c3", what="older definition")]
    monkeypatch.setattr(report, "load", lambda name: {"records": {r["key"]: r for r in records}})
    assert report.stale_records("aaaa") is None
    records += [rec("main", 2, "bbbb", "c1"),  # measured here by other code (its commit is not what decides)
                rec("main", 4, "zzzz", "c4", "another CPU"), rec("preset-test", 7, "zzzz", "c2", None),
                rec("main", 5, None, "c3", None, cli=False),  # before records stored their command
                rec("main", 6, "zzzz", "c3", "another CPU", dirty=True),  # code not in its commit
                rec("main", 7, "zzzz", "c5", "another CPU")]  # its configs differ from today's
    problem = report.stale_records("aaaa")
    assert problem.startswith("6 cited accuracy records were measured by code that computes other bits")
    assert "main (measured at c1, c3, c4, c5); preset-test (measured at c2)" in problem


def test_a_section_no_one_renders_is_refused_before_anything_is_written(monkeypatch):
    import benchmarks.report as report
    before = {p: p.read_text() for p in (BENCHMARKS_MD, HISTORY_MD, README_MD)}
    monkeypatch.setattr("sys.argv", ["report", "--section", "no_such_section"])
    with pytest.raises(SystemExit, match="--section='no_such_section': not among the sections of BENCHMARKS.md"):
        report.main()
    assert {p: p.read_text() for p in before} == before
