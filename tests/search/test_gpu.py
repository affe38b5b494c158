"""GPU-only checks (run by benchmarks/gpu_check.sh): cached = full, compiled = eager on CUDA."""
import pytest
import torch

from evolq_pl.models import search_units
from evolq_pl.search import FitnessEvaluator, SearchConfig
from tests.search.helpers import tiny_model

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_cached_and_compiled_equal_full():
    model, batches = tiny_model("deit")
    model, batches = model.cuda(), [b.cuda() for b in batches]
    eager = FitnessEvaluator(model, batches)
    compiled = FitnessEvaluator(model, batches, SearchConfig(compile_backend="inductor"))
    full = eager()
    for unit in search_units(model):
        assert abs(eager(unit) - full) <= 1e-5 * abs(full)
        assert abs(compiled(unit) - full) <= 1e-5 * abs(full)
