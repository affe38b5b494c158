"""Shared fixtures: tiny quantized models with realistic random weights, calibrated on random images."""
import pytest


@pytest.fixture(scope="session")
def fashion_mnist_available() -> bool:
    from evolq_pl.lightning.fashion_mnist import DEBIAN_DIR
    return (DEBIAN_DIR / "train-images-idx3-ubyte.gz").exists()
