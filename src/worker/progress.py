"""Progress of a job, as the pipeline reports it to its caller (a terminal, a heartbeat).

Light on purpose: the CLI and the Temporal activity import it without importing MuJoCo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    phase: str
    sim_time_s: float
    fraction: float


ProgressFn = Callable[[Progress], None]
