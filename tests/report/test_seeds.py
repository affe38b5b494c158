"""A seed sweep's summary and settings records (no Lightning, no fit): values worked by hand."""
import json

import pytest

from evolq_pl.report.seeds import SeedsError, differences, flatten, refuse_other_settings, summarise, sweep_settings


def write_results(folder, seed, **results):
    (folder / f"seed{seed}").mkdir(parents=True, exist_ok=True)
    (folder / f"seed{seed}" / "results.json").write_text(json.dumps(results))


def test_summarise_by_hand(tmp_path):
    # 4 test images; per seed (init, Evol-Q) top-1 and correctness (hex, first image in the highest bit):
    # seed 0 75 → 100 (image 3 only Evol-Q), seed 1 25 → 75 (images 1, 2 only Evol-Q): deltas +25, +50
    for seed, init, top1, ci, ce in ((0, 75.0, 100.0, "e", "f"), (1, 25.0, 75.0, "8", "e")):
        write_results(tmp_path, seed, model="m", w_bits=4, a_bits=8, top1_init=init, top1_evolq=top1, fitness_init=2.0,
                      fitness_final=2.0 - 0.001 * (seed + 1), correct_init=ci, correct_evolq=ce, images_init=4,
                      images_evolq=4)
    summary = summarise(tmp_path, [0, 1])
    rows = {r["metric"]: r for r in summary["rows"]}
    assert rows["top1_evolq"]["mean"] == 87.5 and rows["top1_evolq"]["std"] == pytest.approx(12.5 * 2**0.5)
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# m W4A8, seeds 0, 1\n")
    assert "| top1_evolq | 87.50 ± 17.68 | 100.00 | 75.00 |" in text
    # (issue 27, 6: the fitness was shown as "25.74 ± 0.017" before and after the search) the digits that move,
    # and the gain itself: 0.001 and 0.002, mean 0.0015, sd 0.001/√2
    assert "| fitness_final | 1.998500 ± 0.000707 | 1.999000 | 1.998000 |" in text
    assert "| fitness_gain | 0.001500 ± 0.000707 | 0.001000 | 0.002000 |" in text
    # mean 37.5, sd 25/√2, half-width t(0.975, 1)·sd/√2 = 12.7062·12.5 = 158.83; 3 discordant images, all for
    # Evol-Q: exact McNemar p = 2·(1/2)³ = 0.25
    p = summary["paired"]
    assert p["mcnemar_p"] == pytest.approx(0.25) and (p["only_new"], p["only_base"]) == (3, 0)
    assert p["delta_ci95"] == pytest.approx([37.5 - 158.8275, 37.5 + 158.8275], abs=1e-3)
    assert "+37.50 [-121.33, +196.33], McNemar p = 0.25 (3 images only Evol-Q" in text
    assert "no claim (the interval holds 0)" in text
    # summary.csv: the rows unrounded, in METRICS order (fitness_gain = init − final per seed)
    csv_lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_lines[0] == "metric,mean,std,seed0,seed1"
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["top1_init", "top1_evolq", "fitness_init",
                                                              "fitness_final", "fitness_gain"]
    assert csv_lines[2] == f"top1_evolq,87.5,{12.5 * 2**0.5!r},100.0,75.0"


def test_summarise_refuses_runs_of_other_settings(tmp_path):
    for seed, bits in ((0, 4), (1, 3)):
        settings = {"model": "m", "quant": {"w_bits": bits}, "search": {"passes": 10, "seed": seed}}
        write_results(tmp_path, seed, model="m", w_bits=bits, a_bits=8, top1_evolq=80.0, settings=settings)
    with pytest.raises(SeedsError, match="seed 1 ran with other settings than seed 0 .*W3A8 vs m W4A8"):
        summarise(tmp_path, [0, 1])


def test_summarise_refuses_missing_and_partial_results(tmp_path):
    write_results(tmp_path, 0, missing={"init": "OSError: disk"})
    with pytest.raises(SeedsError, match=r"no results.json for seed\(s\) \[1\]"):
        summarise(tmp_path, [0, 1])
    with pytest.raises(SeedsError, match=r"seed\(s\) \[0\] lack measurements \{0: \{'init': 'OSError: disk'\}\}"):
        summarise(tmp_path, [0])


def test_sweep_settings_flatten_and_leave_out_what_differs_per_seed():
    config = {"seed_everything": 3, "run_dir": "/r/seed3", "trainer": {
        "max_steps": 5, "default_root_dir": "/r", "plugins": [],
        "logger": [{"class_path": "L", "init_args": {"save_dir": "/r", "name": "x"}}],
        "callbacks": [{"class_path": "C", "init_args": {"dirpath": "/r/ckpt", "save_last": True}}]},
        "model": {"init_args": {"output_dir": "/o", "search": {"seed": 3, "passes": 2}, "quant": {}}},
        "data": {"init_args": {"seed": 3, "calib_size": 100}}}
    assert sweep_settings(config) == {
        "trainer.max_steps": 5, "trainer.plugins": [], "trainer.logger.0.class_path": "L",
        "trainer.logger.0.init_args.name": "x", "trainer.callbacks.0.class_path": "C",
        "trainer.callbacks.0.init_args.save_last": True, "model.init_args.search.passes": 2,
        "model.init_args.quant": {}, "data.init_args.calib_size": 100}
    assert flatten({"a": [1, {"b": None}]}) == {"a.0": 1, "a.1.b": None}


def test_differences_name_each_setting_and_both_values():
    there, now = {"a": 4, "b": "x", "c": 1}, {"a": 3, "b": "x", "d": [1]}
    assert differences(there, now) == ["a=4 there, 3 now", "c=1 there, unset now", "d=unset there, [1] now"]
    assert differences(there, dict(there)) == []


def test_a_seed_folder_of_other_settings_is_refused_naming_the_settings(tmp_path):
    marker = tmp_path / "seed0" / "run.json"
    marker.parent.mkdir()
    marker.write_text(json.dumps({"settings": {f"k{i}": i for i in range(5)}}))
    refuse_other_settings(marker, tmp_path, [], [], {f"k{i}": i for i in range(5)})  # the same: accepted
    with pytest.raises(SeedsError) as info:
        refuse_other_settings(marker, tmp_path, [], [], {f"k{i}": i + 1 for i in range(5)})
    assert str(info.value) == (f"--out={str(tmp_path)!r}: {marker.parent} holds a run of other settings (k0=0 there, "
                               "1 now; k1=1 there, 2 now; k2=2 there, 3 now; 2 more); use another --out or delete "
                               "that folder")
    marker.write_text("[1]")
    with pytest.raises(SeedsError, match=f"^{marker} is damaged \\(a JSON list, not an object\\); delete {marker.parent} "
                                         "to rerun that seed$"):
        refuse_other_settings(marker, tmp_path, [], [], {})
