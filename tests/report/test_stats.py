"""Paired statistics against values worked by hand (and published t tables)."""
import math

import pytest

from evolq_pl.report.stats import (compare_runs, holm, mcnemar_exact, pack_bits, paired_ci95, paired_comparison, t_quantile,
                            unpack_bits, verdict, with_holm)


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (29, 2.0452)])
def test_t_quantile_matches_the_published_table(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_paired_interval_by_hand():
    # deltas 1, 2, 3: mean 2, sample std 1, half-width t(0.975, 2)·1/√3 = 4.3027/1.7321 = 2.4842
    mean, low, high = paired_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and low == pytest.approx(2 - 2.48414, abs=1e-4) and high == pytest.approx(2 + 2.48414, abs=1e-4)
    assert all(math.isnan(v) for v in paired_ci95([0.5])[1:])


def test_mcnemar_exact_by_hand():
    # 3 vs 12 discordant: 2·(C(15,0)+C(15,1)+C(15,2)+C(15,3))/2^15 = 2·576/32768
    assert mcnemar_exact(3, 12) == pytest.approx(2 * 576 / 32768, rel=1e-12)
    assert mcnemar_exact(12, 3) == mcnemar_exact(3, 12)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0


def test_bits_round_trip_and_refuse_a_wrong_count():
    flags = [True, False, True, True, False, False, True]
    assert pack_bits(flags) == "b2"  # 1011 0010 (padded)
    assert unpack_bits("b2", 7) == flags
    with pytest.raises(ValueError, match="correct_init: 2 hex digits, but 9 images need 3"):
        unpack_bits("b2", 9, "correct_init")


def test_paired_comparison_claims_a_gain_only_when_the_interval_excludes_zero():
    base_correct = [[True, False, False, True], [True, True, False, False]]
    new_correct = [[True, True, False, True], [True, True, True, False]]  # 2 images only new, 0 only base
    out = paired_comparison([50.0, 50.0], [75.0, 75.5], base_correct, new_correct)
    assert out["n_seeds"] == 2 and out["delta_mean"] == pytest.approx(25.25) and out["gain"]
    assert (out["only_new"], out["only_base"]) == (2, 0) and out["mcnemar_p"] == pytest.approx(0.5)
    mixed = paired_comparison([50.0, 50.0, 50.0], [51.0, 49.0, 50.5])
    assert not mixed["gain"] and not mixed["loss"] and "mcnemar_p" not in mixed
    assert verdict(mixed) == "no claim (the interval holds 0)"
    same = paired_comparison([50.0, 60.0], [51.0, 61.0])  # identical deltas: a zero-width interval
    assert not same["gain"] and verdict(same) == "no claim (no spread over seeds)"
    assert verdict(paired_comparison([50.0], [60.0])) == "one seed: no interval, no claim"


def test_compare_runs_pairs_two_searches_by_seed():
    # a preset's Evol-Q against the paper search's Evol-Q on 4 images, two seeds, correctness in hex
    paper = [{"top1_evolq": 50.0, "correct_evolq": "c", "images_evolq": 4},   # 1100
             {"top1_evolq": 25.0, "correct_evolq": "8", "images_evolq": 4}]   # 1000
    preset = [{"top1_evolq": 75.0, "correct_evolq": "e", "images_evolq": 4},  # 1110: image 3 only preset
              {"top1_evolq": 50.0, "correct_evolq": "9", "images_evolq": 4}]  # 1001: image 4 only preset
    out = compare_runs(preset, paper, base="evolq", new="evolq")
    assert out["delta_mean"] == 25.0 and (out["only_new"], out["only_base"]) == (2, 0)
    assert out["mcnemar_p"] == pytest.approx(0.5) and not out["gain"]  # identical deltas: no spread
    assert compare_runs(preset, paper[:1], base="evolq") is None  # unpaired seeds compare nothing


def test_holm_adjusts_by_rank_and_stays_monotone():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3·0.01 = 0.03; 2·0.03 = 0.06; 1·0.04 = 0.04 → raised to 0.06 (monotone)
    out = holm([0.01, 0.04, 0.03, None])
    assert out[:3] == pytest.approx([0.03, 0.06, 0.06]) and out[3] is None
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_a_gain_needs_the_family_corrected_p_too():
    p = {"n_seeds": 5, "gain": True, "loss": False, "delta_ci95": [0.01, 0.18], "mcnemar_p": 0.039}
    assert verdict(p) == "gain"  # alone, no family
    family = with_holm({"a": dict(p), "b": {**p, "mcnemar_p": 0.01}, "c": {**p, "mcnemar_p": 0.5}})
    assert family["a"]["holm_p"] == pytest.approx(0.078) and verdict(family["a"]) == "no claim (Holm-corrected McNemar p = 0.078)"
    assert family["b"]["holm_p"] == pytest.approx(0.03) and verdict(family["b"]) == "gain"
