"""The preset choice and its test comparison, on records made by hand."""
import pytest

from benchmarks.accuracy import MODELS, PRESET_CANDIDATES, chosen_preset, key, preset_comparison, specs, to_run
from evolq_pl.models.reference import reference_model


def record(suite: str, ref: str, seed: int, top1: float, variant: str | None = None, w_bits: int = 3) -> dict:
    spec = dict(suite=suite, ref=ref, w_bits=w_bits, a_bits=8, seed=seed, variant=variant)
    return {"spec": spec, "key": key(spec), "top1_init": 80.0, "top1_evolq": top1,
            "checkpoint_sha256": reference_model(ref)["sha256"]}


def by_key(*records: dict) -> dict:
    return {r["key"]: r for r in records}


def test_the_choice_is_the_largest_mean_gain_over_the_paper_on_validation():
    # paper 90 everywhere; candidate i gains i/10 on every model and seed, except "kl" which gains 5 on one pair
    rows = [record("preset-val", m, s, 90.0) for m in MODELS for s in (0, 1)]
    for i, v in enumerate(PRESET_CANDIDATES):
        rows += [record("preset-val", m, s, 90.0 + i / 10, v) for m in MODELS for s in (0, 1)]
    rows = [r if (r["spec"]["variant"], r["spec"]["ref"], r["spec"]["seed"]) != ("kl", MODELS[0], 0)
            else record("preset-val", MODELS[0], 0, 95.0, "kl") for r in rows]
    choice = chosen_preset(by_key(*rows))
    # kl: (0.4·3 + 5) / 4 = 1.55 beats the last candidate's 0.6
    assert choice["preset"] == "kl" and choice["val_delta_mean"]["kl"]["delta_mean"] == pytest.approx(1.55)
    with pytest.raises(ValueError, match="preset-val suite complete for every candidate"):
        chosen_preset(by_key(*rows[:-1]))  # one run missing: candidates no longer compare alike


def test_the_test_comparison_pairs_the_preset_with_the_paper_arm_of_its_own_suite():
    # the main suite's paper search (another command, maybe another commit) must not be the comparison
    rows = [record("main", MODELS[0], s, 50.0) for s in (7, 8, 9)]
    rows += [record("preset-test", MODELS[0], s, 89.0 + s) for s in (7, 8, 9)]
    rows += [record("preset-test", MODELS[0], s, 89.5 + s + s / 10, "embed") for s in (7, 8, 9, 10)]  # 10: unpaired
    out = preset_comparison(by_key(*rows), "embed")
    assert list(out) == [MODELS[0]] and out[MODELS[0]]["seeds"] == [7, 8, 9]
    assert out[MODELS[0]]["delta_mean"] == pytest.approx(1.3)  # +1.2, +1.3, +1.4


def test_stale_reruns_recorded_settings_only():
    """``--stale`` reran every setting its suites list, recorded or not: the command ``report --check`` printed
    would have added preset-val seed 2 (16 runs no table cites). Now it reruns records only; a plain run adds."""
    from benchmarks.fingerprint import DEFINITION, platform_id
    wanted = specs(["hard"], [0])  # one setting per reference model
    deit, levit = (next(s for s in wanted if s["ref"] == m) for m in ("deit_fmnist", "levit_fmnist"))
    record = lambda spec, fp: {"spec": spec, "checkpoint_sha256": reference_model(spec["ref"])["sha256"],  # noqa: E731
                               "platform": platform_id(), "definition": DEFINITION, "fingerprint": fp}
    measured = {key(deit): record(deit, "old")}
    assert to_run(wanted, measured, now="new") == [deit]  # stale, and levit has no record: not added
    assert to_run(wanted, measured, now="old") == []  # holds
    assert to_run(wanted, measured) == [levit]  # a plain run adds what has no record
    assert to_run(wanted, measured, force=True) == wanted
    other = {key(deit): {**record(deit, "old"), "platform": "another CPU", "command": "evolq-pl fit …"}}
    assert to_run(wanted, other, now="old", here=True) == [deit]  # --here: measured elsewhere, rerun here
