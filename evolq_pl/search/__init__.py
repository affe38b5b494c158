"""Evol-Q search (no Lightning): configuration, evolutionary loop, fitness losses, cached evaluation."""
from evolq_pl.search.evaluator import FitnessEvaluator
from evolq_pl.search.evolution import EvolutionarySearch, SearchConfig, schedule
from evolq_pl.search.fitness import LOSSES, get_loss

__all__ = ["FitnessEvaluator", "EvolutionarySearch", "SearchConfig", "schedule", "LOSSES", "get_loss"]
