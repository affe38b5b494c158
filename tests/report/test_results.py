"""What a finished search writes: results.json and history.json, atomically."""
import json

import pytest

from evolq_pl.io import WriteError
from evolq_pl.report.results import write_results
from tests.test_io import file_size_limit


def test_a_failed_write_keeps_the_earlier_results(tmp_path):
    (tmp_path / "results.json").write_text('{"top1_evolq": 81.5}')
    results = {"model": "m", "w_bits": 4, "a_bits": 8, "seed": 0, "evaluations": 1, "search_seconds": 1.0,
               "selection": "holdout", "note": "x" * 8192}  # larger than the limit below
    with file_size_limit(4096), pytest.raises(WriteError, match=f"^cannot write {tmp_path / 'results.json'}: "
                                                                 "File too large"):
        write_results(tmp_path, results, [], "title")
    assert json.loads((tmp_path / "results.json").read_text()) == {"top1_evolq": 81.5}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
