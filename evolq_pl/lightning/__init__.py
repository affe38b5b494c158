"""Lightning glue: modules, data modules (thin layers over evolq_pl.search / models / quant)."""
from evolq_pl.lightning.checkpoint import SearchCheckpoint
from evolq_pl.lightning.classifier import ClassifierModule
from evolq_pl.lightning.evolq import EvolQModule
from evolq_pl.lightning.fashion_mnist import FashionMNISTDataModule

__all__ = ["ClassifierModule", "EvolQModule", "FashionMNISTDataModule", "SearchCheckpoint"]
