"""What a run reports (no Lightning): phase times, and — as the top half is moved here — metrics, statistics,
plots and the results writer."""
from evolq_pl.report.phases import PHASES, PhaseTimes
from evolq_pl.report.seeds import SeedsError, summarise

__all__ = ["PHASES", "PhaseTimes", "SeedsError", "summarise"]
