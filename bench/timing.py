"""Side-by-side timing shared by the benchmarks: each candidate run ``repeat`` times, in alternating order
(forward, then reversed), so that every candidate meets the same moments of load on the machine; the
best of each is the least disturbed by other work."""

from __future__ import annotations

import time
from collections.abc import Callable


def alternate(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, list[float]]:
    """Seconds of each run of each candidate, in the order of ``runs``."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(repeat):
        order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
        for name in order:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    return times
