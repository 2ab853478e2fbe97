"""Deep-learning versus iterative motion correction on the same study, in one run.

Measures, on one phantom study of 4 slices x 71 dynamics (3 high-res + AIF):

- wall time of the deep-learning correction (network load, LV localisation,
  crops, three steps, full-FOV resampling) and of the iterative elastix
  baseline (RPCA, PCA references, affine + B-spline), and their ratio
  (the paper: 47.9 s versus 12 min 32 s, about 15x, on an 8-core laptop);
- the networks' FLOPs for the study (``torch.utils.flop_counter``) against
  the machine's measured convolution throughput (a large ``conv2d`` through
  torch's CPU backend), i.e. how close the DL path runs to the hardware.

Without trained weights the networks are built untrained (timing and FLOPs
do not depend on the weights; the output says so).

Usage::

    .venv/bin/python benchmarks/bench_dl_vs_iterative.py [--seed 0] [--dynamics 71]
        [--threads 2] [--weights DIR] [--skip-iterative] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.pipeline import MotionCorrector
from perfmoco.phantom import generate_phantom


def conv_throughput(*, batch=8, channels=64, size=128, repeats=5) -> float:
    """GFLOP/s of a large 3x3 conv2d on the CPU (best of ``repeats``)."""
    conv = torch.nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    x = torch.rand(batch, channels, size, size)
    flops = 2.0 * batch * channels * channels * 9 * size * size
    best = float("inf")
    with torch.inference_mode():
        conv(x)  # warm-up
        for _ in range(repeats):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    return flops / best / 1e9


def load_corrector(weights: str | None, config: MocoConfig) -> tuple[MotionCorrector, bool]:
    """The trained networks, or untrained ones of the same size when none exist."""
    try:
        return MotionCorrector.load(weights, device="cpu", config=config), True
    except FileNotFoundError:
        models = {s: networks.RegNet(networks.default_spec(s)) for s in networks.STAGES}
        return MotionCorrector(models, device="cpu", config=config), False


def study_flops(mc: MotionCorrector, study) -> float:
    """GFLOP counted by torch while correcting every slice (convolutions, matmuls)."""
    fc = FlopCounterMode(display=False)
    with fc:
        for s in study.slices:
            mc.correct(s)
    return fc.get_total_flops() / 1e9


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dynamics", type=int, default=71)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--weights", default=None, help="folder with affine1/affine2/dense.pt")
    ap.add_argument("--skip-iterative", action="store_true")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    ph = generate_phantom(seed=args.seed, motion="breathing", n_dynamics=args.dynamics)
    study = ph.study
    out = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
           "slices": len(study.slices), "dynamics": args.dynamics}

    cfg = MocoConfig(threads=args.threads, device="cpu")
    t0 = time.perf_counter()
    mc, trained = load_corrector(args.weights, cfg)
    for s in study.slices:
        mc.correct(s)
    out["dl_s"] = time.perf_counter() - t0
    out["dl_trained_weights"] = trained

    out["dl_gflop"] = study_flops(mc, study)
    out["conv_gflops_per_s"] = conv_throughput()
    out["dl_s_at_conv_throughput"] = out["dl_gflop"] / out["conv_gflops_per_s"]

    if not args.skip_iterative:
        from perfmoco.moco.iterative import correct_iterative

        t0 = time.perf_counter()
        for s in study.slices:
            correct_iterative(s, config=cfg, threads=args.threads)
        out["iterative_s"] = time.perf_counter() - t0
        out["ratio_iterative_to_dl"] = out["iterative_s"] / out["dl_s"]

    print(f"study: {out['slices']} slices x {args.dynamics} dynamics, "
          f"{args.threads} CPU threads ({out['machine']})")
    print(f"deep learning: {out['dl_s']:.1f} s"
          + ("" if trained else " (untrained networks of the same size: no weights found)"))
    if "iterative_s" in out:
        print(f"iterative:     {out['iterative_s']:.1f} s  -> {out['ratio_iterative_to_dl']:.1f}x "
              "slower (paper: 752 s / 47.9 s = 15.7x)")
    print(f"network FLOPs for the study: {out['dl_gflop']:.1f} GFLOP; conv2d throughput "
          f"{out['conv_gflops_per_s']:.1f} GFLOP/s -> {out['dl_s_at_conv_throughput']:.2f} s "
          f"if the networks ran at that rate ({out['dl_s_at_conv_throughput'] / out['dl_s']:.0%} "
          "of the measured DL time)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()
