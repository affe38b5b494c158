"""Selectors keep the state the rule says (checked with scripted scores on a one-quantizer model)."""
import pytest
import torch
from torch import nn

from evolq_pl.search.selection import HoldoutSelector, TestSetSelector
from evolq_pl.quant import BitType, UniformQuantizer


def run(selector, steps):
    m = nn.Sequential(UniformQuantizer(BitType(8)))
    m[0].scale = torch.zeros(1)
    for value, (pass_idx, score) in enumerate(steps, start=1):
        m[0].set_scale(torch.full((1,), float(value)))
        selector.after_step(m, pass_idx, lambda: score)
    selector.finalize(m)
    return m[0].scale.item()


def test_test_oracle_rule_pass0_overwrites_then_strictly_higher():
    with pytest.warns(UserWarning):
        sel = TestSetSelector()
    # pass 0: scores 80, 70 → the last of pass 0 (state 2) is kept even though worse; pass 1: 75 > 70 → state 3;
    # 75 again is not strictly higher → stays state 3
    assert run(sel, [(0, 80.0), (0, 70.0), (1, 75.0), (1, 75.0)]) == 3


def test_holdout_keeps_lowest_fitness():
    assert run(HoldoutSelector(), [(0, 3.0), (0, 1.0), (1, 2.0)]) == 2
