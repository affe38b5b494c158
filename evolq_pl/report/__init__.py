"""What a run reports (no Lightning): phase times, metrics, paired statistics, plots, the results schema and
writer (explicit values in, files out) and the seeds summary. Lightning and the CLI call it."""
from evolq_pl.report.phases import PHASES, PhaseTimes
from evolq_pl.report.seeds import SeedsError, summarise

__all__ = ["PHASES", "PhaseTimes", "SeedsError", "summarise"]
