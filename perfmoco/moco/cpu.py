"""How many torch threads a correction should run on a host shared with other work.

Torch's CPU threads wait for each other at every operation; where another process
keeps a core busy, a thread on that core runs only in its time slices and the whole
correction waits for it.  Measured on 2 cores with one busy process beside it
(``benchmarks/bench_moco.py --busy 1``): 2 threads took 12-73 s for a study that one
thread corrected in 6.4 s (3.6-4.7 s on 2 threads with the host to itself).  So, by
default, a correction runs on the cores the other processes leave free, measured over
a short window (Linux ``/proc/stat``) when it starts.
"""

from __future__ import annotations

import os
import time

__all__ = ["free_cores", "auto_threads"]

#: The window over which the other processes' load is measured, s (``/proc/stat``
#: counts in 10 ms ticks per core).
WINDOW_S = 0.05
#: A measurement is reused for this long, s (a study's slices share it).
REUSE_S = 10.0

_last: tuple[float, int] | None = None  # (monotonic time, threads)


def _stat_line(path: str = "/proc/stat") -> tuple[int, int]:
    with open(path) as f:  # "cpu  user nice system idle iowait irq softirq steal ..."
        ticks = [int(v) for v in f.readline().split()[1:9]]
    return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait


def free_cores(window_s: float = WINDOW_S, *, stat=_stat_line) -> float | None:
    """Cores of this process's CPU set that were idle over the next ``window_s``
    seconds (``None`` where ``/proc/stat`` cannot be read: not Linux).

    Measured while the caller sleeps: its own busy threads (a server's other studies)
    count as load, as they should.
    """
    try:
        cores = len(os.sched_getaffinity(0))
        total0, idle0 = stat()
        time.sleep(window_s)
        total1, idle1 = stat()
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    if total1 <= total0:
        return None
    busy = (1.0 - (idle1 - idle0) / (total1 - total0)) * (os.cpu_count() or cores)
    return max(0.0, cores - busy)


def auto_threads(*, now: float | None = None, measure=free_cores) -> int:
    """Torch threads for a correction starting now: the free cores, rounded, at least
    1 (all of this process's cores where they cannot be measured); measured at most
    every :data:`REUSE_S` seconds.
    """
    global _last
    now = time.monotonic() if now is None else now
    if _last is not None and now - _last[0] < REUSE_S:
        return _last[1]
    free = measure()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    threads = cores if free is None else max(1, min(cores, round(free)))
    _last = (now, threads)
    return threads
