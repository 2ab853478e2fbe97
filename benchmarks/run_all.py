"""Run every benchmark with its defaults, one after another, and print their figures.

Usage: ``make bench`` (or ``.venv/bin/python benchmarks/run_all.py [NAME ...]``).
Benchmarks print figures; none of them fails on a slow machine.  Timings on a
shared machine are inflated: compare ratios measured within one run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ["bench_fermi", "bench_moco", "bench_latency", "bench_dl_vs_iterative",
           "bench_robustness"]


def main(argv: list[str]) -> int:
    names = argv or BENCHES
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; choose from {BENCHES}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        print(f"\n===== {name} =====", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py")])
        print(f"----- {name}: exit {rc}, {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print(f"benchmarks that did not finish: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
