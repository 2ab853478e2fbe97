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
import threading
import time

__all__ = ["free_cores", "auto_threads"]

#: The window over which the other processes' load is measured, s (``/proc/stat``
#: counts in 10 ms ticks per core).
WINDOW_S = 0.05
#: A measurement is reused for this long, s (a study's slices share it).
REUSE_S = 10.0

_last = threading.local()  # per thread (a server's studies run side by side): .value


def _stat_lines(cpus: set[int], path: str = "/proc/stat") -> list[tuple[int, int]]:
    """(all ticks, idle + iowait ticks) of each of ``cpus``."""
    out = []
    with open(path) as f:  # "cpuN user nice system idle iowait irq softirq steal ..."
        for line in f:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                ticks = [int(v) for v in values[:8]]
                out.append((sum(ticks), ticks[3] + ticks[4]))
    return out


def free_cores(window_s: float = WINDOW_S, *, stat=_stat_lines,
               own=time.process_time) -> float | None:
    """Cores of this process's CPU set that other processes left free over the next
    ``window_s`` seconds (``None`` where ``/proc/stat`` cannot be read: not Linux).

    Measured on those cores alone (a process pinned to idle cores of a busy host has
    them free); this process's own use of them in the window counts as free (its
    threads still spinning after their last work; another study's correction here
    waits for this one's lock, :class:`perfmoco.moco.pipeline.MotionCorrector`).
    """
    try:
        cpus = os.sched_getaffinity(0)
        before, own0, t0 = stat(cpus), own(), time.monotonic()
        time.sleep(window_s)
        after, own1, t1 = stat(cpus), own(), time.monotonic()
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    if not before or len(before) != len(after):
        return None
    free = 0.0
    for (total0, idle0), (total1, idle1) in zip(before, after):
        if total1 <= total0:
            return None
        free += (idle1 - idle0) / (total1 - total0)
    mine = (own1 - own0) / (t1 - t0) if t1 > t0 else 0.0
    return min(float(len(before)), free + max(0.0, mine))


def auto_threads(*, now: float | None = None, measure=free_cores) -> int:
    """Torch threads for a correction starting now: the free cores, rounded, at least
    1 (all of this process's cores where they cannot be measured); measured at most
    every :data:`REUSE_S` seconds by each thread (a study's slices share it; a study
    started beside it on another thread measures again).
    """
    now = time.monotonic() if now is None else now
    last = getattr(_last, "value", None)
    if last is not None and now - last[0] < REUSE_S:
        return last[1]
    free = measure()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    threads = cores if free is None else max(1, min(cores, round(free)))
    _last.value = (now, threads)
    return threads
