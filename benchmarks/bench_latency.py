"""Latency and memory of the MRD server on a clinical-size study, over loopback.

Starts ``perfmoco serve`` in a subprocess on 127.0.0.1 (free port), waits for
its warm-up, then streams a 4-slice x 71-dynamic phantom study (3 high-res
slices + AIF slice, PD frames included) like a scanner would and measures

- latency: last image written by the client -> last output message (CLOSE)
  received, s (target < 5 s on 2 cores);
- per-connection memory: the server's RSS peak during the session minus its
  RSS before it (psutil, sampled every 10 ms), MiB, next to the study's size.

Usage::

    .venv/bin/python benchmarks/bench_latency.py [--method dl|none|iterative]
        [--dynamics 71] [--repeat 3] [--connections 1] [--config-name perfmoco]
        [--random-weights]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from perfmoco.io.mrd import study_header, study_to_images
from perfmoco.io.stream import MessageId, MessageReader, MessageWriter
from perfmoco.phantom import generate_phantom

LOOPBACK = "127.0.0.1"
MIB = 1024 * 1024


def random_weights(folder: Path) -> Path:
    """Untrained checkpoints of the three stages: same compute as trained ones (timing only)."""
    import torch

    from perfmoco.moco import networks

    torch.manual_seed(0)
    for stage in networks.STAGES:
        networks.save(folder / f"{stage}.pt", networks.RegNet(networks.default_spec(stage)),
                      stage=stage)
    return folder


def start_server(method: str, workers: int, weights_dir: str = "", extra=None):
    overrides = {"server.method": method, "server.workers": workers, **(extra or {})}
    if weights_dir:
        overrides["moco.weights_dir"] = weights_dir
    code = (
        "from perfmoco.server import serve; from perfmoco.config import load_config; "
        f"serve(host='{LOOPBACK}', port=0, config=load_config(overrides={overrides!r}))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    port, warm, deadline = None, False, time.monotonic() + 300
    while not (port and warm) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("server exited during start-up")
        if m := re.search(r"event=listening host=\S+ port=(\d+)", line):
            port = int(m.group(1))
        warm = warm or "event=warm_up" in line
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, port


def session(port: int, header: str, images, config_name: str) -> dict:
    import socket

    times: dict[str, float] = {}
    counts = {"images": 0, "texts": 0}
    texts: list[str] = []
    with socket.create_connection((LOOPBACK, port), timeout=600) as sock:
        reader = MessageReader(sock.makefile("rb"), max_message_bytes=1 << 30)

        def receive():
            for msg in reader:
                times["last_message"] = time.perf_counter()
                if msg.id is MessageId.IMAGE:
                    counts["images"] += 1
                elif msg.id is MessageId.TEXT:
                    counts["texts"] += 1
                    texts.append(msg.payload)

        rx = threading.Thread(target=receive, daemon=True)
        rx.start()
        w = MessageWriter(sock.makefile("wb"))
        w.config_file(config_name)
        w.header(header)
        for img in images:
            w.image(img)
        w.flush()
        times["last_image_sent"] = time.perf_counter()
        w.close()
        rx.join(600)
    stages = [ln.strip() for t in texts for ln in t.splitlines() if ln.strip().startswith("time ")]
    return {"latency_s": times["last_message"] - times["last_image_sent"],
            "closed": reader.closed_cleanly, "stages": stages, **counts}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="dl", choices=["dl", "none", "iterative"])
    p.add_argument("--dynamics", type=int, default=71)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--connections", type=int, default=1, help="simultaneous sessions")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--config-name", default="perfmoco")
    p.add_argument("--random-weights", action="store_true",
                   help="time the dl method with untrained checkpoints (when none are shipped)")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="server setting, e.g. moco.compile=true (compiled at its warm-up)")
    args = p.parse_args(argv)

    study = generate_phantom(seed=7, n_dynamics=args.dynamics, motion="breathing").study
    header, images = study_header(study), study_to_images(study)
    study_mib = sum(im.data.nbytes for im in images) / MIB
    print(f"study: {len(study.slices)} slices x {args.dynamics} dynamics, {len(images)} images, "
          f"{study_mib:.1f} MiB of pixels; method {args.method}, {args.connections} connection(s)")
    weights = ""
    if args.random_weights:
        import tempfile

        weights = str(random_weights(Path(tempfile.mkdtemp(prefix="perfmoco-bench-"))))
        print(f"untrained checkpoints in {weights} (timing only, corrections are meaningless)")
    proc, port = start_server(args.method, args.workers, weights,
                              dict(kv.split("=", 1) for kv in args.set))
    server = psutil.Process(proc.pid)
    results = []
    try:
        for run in range(args.repeat):
            base = server.memory_info().rss
            peak = [base]
            stop = threading.Event()

            def sample(stop=stop, peak=peak):
                while not stop.wait(0.01):
                    peak[0] = max(peak[0], server.memory_info().rss)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            out: list[dict] = [{}] * args.connections

            def client(k, out=out):
                out[k] = session(port, header, images, args.config_name)

            clients = [threading.Thread(target=client, args=(k,)) for k in range(args.connections)]
            for c in clients:
                c.start()
            for c in clients:
                c.join(900)
            stop.set()
            sampler.join()
            per_conn = (peak[0] - base) / MIB / args.connections
            for r in out:
                r.update(run=run, rss_delta_mib_per_connection=per_conn)
                results.append(r)
                print(f"run {run}: latency {r['latency_s']:.2f} s, {r['images']} images + "
                      f"{r['texts']} texts back, closed={r['closed']}, "
                      f"server RSS +{per_conn:.0f} MiB per connection; "
                      + "; ".join(r["stages"]))
    finally:
        proc.terminate()
        proc.wait(30)
        proc.stderr.close()
    lat = [r["latency_s"] for r in results]
    summary = {"method": args.method, "random_weights": args.random_weights,
               "dynamics": args.dynamics, "connections": args.connections,
               "latency_median_s": statistics.median(lat), "latency_max_s": max(lat),
               "rss_delta_mib_per_connection_max": max(r["rss_delta_mib_per_connection"]
                                                       for r in results),
               "study_pixels_mib": study_mib, "cpu_count": os.cpu_count()}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
