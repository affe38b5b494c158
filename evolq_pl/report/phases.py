"""Where a run's seconds go, by phase, so that a slow run says why."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from evolq_pl.errors import EvolQError

PHASES = ("setup", "data", "calibration", "teacher", "search", "checkpoints", "evaluation")


class PhaseTimes:
    """Wall seconds per phase of this process (a resumed run counts its own process only).

    Args:
        sync: waits for queued device work (``torch.cuda.synchronize`` on a GPU) so that a phase is charged
            for the kernels it launched, not the next phase.
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.sync = sync or (lambda: None)

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if phase not in self.seconds:
            raise EvolQError(f"phase={phase!r}; accepted: {', '.join(PHASES)}")
        self.sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self.sync()
            self.seconds[phase] += time.perf_counter() - start
