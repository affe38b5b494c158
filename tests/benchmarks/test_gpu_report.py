"""The GPU report merges runs without losing or inventing a measurement; the check's CPU smoke test runs."""
import json
import subprocess
import sys

import pytest

from benchmarks.gpu_report import benchmarks_md, merge, user_path_md, user_path_record
from benchmarks.common import ROOT


def run(models: dict, sections: dict | None = None) -> dict:
    env = {"device": "NVIDIA H200", "memory_gb": 140.0, "torch": "2.11", "cuda": "13.0", "timm": "1.0.31"}
    return {"environment": env, "images": 1000, "batch": 100, "w_bits": 4, "a_bits": 8,
            "deit_small_search_seconds": None, "sections": {"models": models, **(sections or {})}}


ROW = {"units": 12, "calibration_s": 5.0, "full_eval_s": 0.3, "projected_search_s": 70.0, "calibration_peak_gb": 4.0}


def test_merge_fills_only_what_the_first_run_lacks():
    first = run({"a": ROW, "b": {"skipped": "time limit"}}, {"compiled": {"error": "boom"}})
    second = run({"a": {**ROW, "calibration_s": 99.0}, "b": {**ROW, "calibration_s": 7.0}},
                 {"compiled": {"search": {}}, "extra": {"x": 1}})
    merged = merge([first, second])
    rows = merged["sections"]["models"]
    assert rows["a"] == ROW  # measured in run 1: kept, not overwritten
    assert rows["b"] == {**ROW, "calibration_s": 7.0, "run": 2}  # skipped in run 1: filled and labelled
    assert merged["sections"]["compiled"] == {"search": {}, "run": 2}  # failed in run 1: filled
    assert merged["sections"]["extra"] == {"x": 1, "run": 2}
    assert [r["run"] for r in merged["runs"]] == [1, 2]
    assert first["sections"]["models"]["b"] == {"skipped": "time limit"}  # inputs untouched


def test_report_marks_unmeasured_rows():
    md = benchmarks_md(merge([run({"a": ROW, "b": {"skipped": "time limit"}, "section_s": 3.0})]), "abc", "2026-11-27")
    assert "| a | 12 | 5.0 | 0.300 | 70 | 4.0 |" in md
    assert "| b | not measured (run's time limit) |" in md
    assert "section_s" not in md


def test_gpu_check_quick_runs_the_paper_search(tmp_path):
    """In the default run (the whole-script check below is slow): the search section every GPU session starts with,
    through the same driver the Lightning module uses, so a driver change cannot break a scarce GPU run unseen."""
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--quick", "--reserve-s", "0", "--sections",
                    "deit_small", "--out", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    section = json.loads(out.read_text())["sections"]["deit_small"]
    assert "error" not in section, section.get("traceback")
    assert section["search"]["evaluations"] > 0 and section["search"]["final_fitness"] <= section["search"]["init_fitness"]


@pytest.mark.slow
def test_gpu_check_quick_runs_every_section(tmp_path):
    out = tmp_path / "gpu_check.json"
    subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--quick", "--reserve-s", "0", "--out", str(out)],
                   cwd=ROOT, check=True, capture_output=True, timeout=600)
    res = json.loads(out.read_text())
    for name, part in res["sections"].items():
        assert "error" not in part and "skipped" not in part, (name, part)
    assert res["deit_small_search_seconds"] > 0
    assert res["sections"]["compiled"]["same_final_scales_as_eager"]["quantizers"] > 0


def test_user_path_record_and_report_come_from_the_run():
    fit = lambda wall, backend: {  # noqa: E731
        "command": "evolq-pl fit …", "wall_seconds": wall, "checkpoint_bytes": 1000,
        "results": {"phase_seconds": {k: 1.0 for k in ("setup", "data", "calibration", "teacher", "search",
                                                       "checkpoints", "evaluation")} | {"search": 60.0},
                    "search_seconds": 50.0, "compile_backend": backend, "compile_seconds": 5.0,
                    "compile_decision": {"compile_s": 5.0}, "fitness_init": 2.0, "fitness_final": 1.5}}
    raw = {"device": "NVIDIA H200", "torch": "2.11", "fit_default": fit(100.0, "inductor"), "fit_eager": fit(150.0, None),
           "float_floor": {"floor_s": 40.0, "full_evaluation_s": 0.25},
           "compiled_vs_eager": {"default": {"options": {}, "rows": {"stage0": {"equal": False, "differing": 3, "max_abs": 0.5},
                                                                     "stage1": {"equal": True}}},
                                 "exact": {"options": {"a": True}, "rows": {"stage0": {"equal": True}}}},
           "user_path": {"wall_seconds": 100.0, "search_over_float_floor": 1.5, "compiled_scales_equal": True,
                         "scales_differing": 0, "scales": 10}}
    up = user_path_record(raw, None, "abc", "2026-12-04")
    assert up["wall_seconds"] == 100.0 and up["compiled_scales_equal"] and list(up["fits"]) == ["default", "eager"]
    assert up["compiled_vs_eager"]["default"]["differing"] == {"stage0": {"equal": False, "differing": 3, "max_abs": 0.5}}
    md = user_path_md(up)
    assert "| default | inductor | 100.0 | 60.0 | 1.50 | 5.0 |" in md and "| eager | eager | 150.0 |" in md
    assert "stage0 (3 values, ≤ 0.5)" in md and "**not met** (100 s, 1.50×)" in md
