"""Evol-Q search (no Lightning): configuration, evolutionary step, fitness losses, cached evaluation, and the
one driver that runs a search."""
from evolq_pl.search.driver import SearchDriver, schedule
from evolq_pl.search.evaluator import FitnessEvaluator
from evolq_pl.search.evolution import EvolutionarySearch, SearchConfig
from evolq_pl.search.fitness import LOSSES, get_loss

__all__ = ["FitnessEvaluator", "EvolutionarySearch", "SearchConfig", "SearchDriver", "schedule", "LOSSES",
           "get_loss"]
