"""``evolq-pl landscape``: argument checks before the expensive work."""
import pytest

from evolq_pl.cli import landscape
from evolq_pl.search.landscape import SweepSpec
from tests.cli.test_trainer_cli import tiny_config


def test_unit_out_of_range_is_refused_before_data_and_calibration(tmp_path, monkeypatch):
    """(issue 28, defect 5: --unit 99 was refused only after building and calibrating, 104 s on the DeiT config)"""
    def never(*args, **kwargs):
        raise AssertionError("reached the data / calibration")

    monkeypatch.setattr("evolq_pl.search.run.calibrate", never)
    monkeypatch.setattr("evolq_pl.lightning.fashion_mnist.load_fashion_mnist", never)
    with pytest.raises(ValueError, match=r"^unit=99 out of range; valid: 0\.\.1$"):  # the tiny config: 2 blocks
        landscape.run([str(tiny_config(tmp_path))], SweepSpec(unit=99), tmp_path / "land")
