import math

import pytest
import torch

from evolq_pl.report.metrics import evaluate, first_images, spearman


def test_spearman_by_hand():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks a = [1,2,3], b = [1,3,2]: d² = 0+1+1 → 1 − 6·2/(3·8) = 0.5
    assert spearman([1, 2, 3], [5, 9, 7]) == pytest.approx(0.5)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_evaluate_top1_top5():
    logits = torch.eye(10)[[0, 1, 2, 3]] * 5  # predicts 0, 1, 2, 3
    logits[2, 9] = 1.0  # sample 2: class 9 ranks second (inside the top 5)
    logits[3, 9] = -1.0  # sample 3: class 9 ranks last
    labels = torch.tensor([0, 1, 9, 9])
    out = evaluate(torch.nn.Identity(), [(logits, labels)], num_classes=10)
    assert out["top1"] == pytest.approx(50.0) and out["top5"] == pytest.approx(75.0)
    assert out["correct"] == "c" and out["images"] == 4  # images 0, 1 right: 1100


def test_first_images_stops_after_n():
    batches = [(torch.zeros(4, 1), torch.zeros(4)) for _ in range(5)]
    assert len(first_images(batches, 6)) == 2 and len(first_images(batches, 100)) == 5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_evaluate_refuses_nonfinite_images_naming_the_batch(bad):
    """(issue 28, defect 7: half a batch of NaN images scored 48 % top-1, each counted as class 0)"""
    x = torch.randn(8, 10)
    x[:4, 3] = bad
    y = torch.zeros(8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^evaluation batch 1 \(images \(8, 10\)\) contains NaN or inf values$"):
        evaluate(torch.nn.Identity(), [(torch.randn(8, 10), y), (x, y)], num_classes=10)
