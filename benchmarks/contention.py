"""How busy the rest of the machine was during a benchmark: timings on 2 shared cores are only
meaningful when nothing else competed for them. Shared by the bench_*.py scripts."""

from __future__ import annotations

import os
import time
from pathlib import Path


def cpu_used() -> tuple[float, float]:
    """(CPU seconds used by the whole machine, by this process) so far; Linux /proc/stat, else zeros."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK"), sum(os.times()[:2])


class ContentionMeter:
    """Started at the beginning of a run; `others()` is the average number of cores other
    processes kept busy since then."""

    def __init__(self) -> None:
        self.cpu0, self.t0 = cpu_used(), time.time()

    def others(self) -> float:
        (all1, mine1), wall = cpu_used(), time.time() - self.t0
        (all0, mine0) = self.cpu0
        return max(0.0, (all1 - all0) - (mine1 - mine0)) / wall

    @staticmethod
    def warn(others: float) -> None:
        if others > 0.2:
            print(f"warning: other processes kept {others:.1f} of {os.cpu_count()} cores busy during this run; "
                  "with threads oversubscribed, timings can be several times off (rerun when idle, or --threads 1)")
