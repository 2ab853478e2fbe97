"""The CUDA path of the motion correction and of training, against the CPU in the same run.

For a machine with an NVIDIA GPU (the CPU-only development machine cannot run it):

1. Inference: one phantom study (3 high-res slices + AIF slice) corrected on the
   CPU (``--threads`` cores, the product's default path) and on the GPU.  Prints
   how far the GPU's displacements lie from the CPU's (px; TF32 convolutions and
   other kernels make them differ a little), the ground-truth Dice and LV centroid
   residual of both, and the wall time of the whole study on each (the stack's LV
   location not counted), uncompiled and (GPU) compiled (``moco.compile``).
2. Training: every stage (``affine1``, ``affine2``, ``dense``) run for a fixed
   wall time on the GPU from the shipped configs (``config/train``) on a few
   phantom studies, and for a few steps on the CPU in the same run: seconds per
   Adam step on each and the ratio; the GPU run's checkpoints go to ``--out``.

Usage::

    python benchmarks/bench_gpu.py [--seed 11100] [--train-seconds 45] [--out runs/gpu]
        [--json OUT.json]

Every part reports its own error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import logging
import traceback
from pathlib import Path

import numpy as np
import torch
import yaml

from perfmoco.config import load_config
from perfmoco.moco.data import slice_truth
from perfmoco.moco.evaluate import truth_metrics
from perfmoco.moco.pipeline import WEIGHTS_DIR, MotionCorrector
from perfmoco.phantom import generate_phantom
from perfmoco.pipeline import stack_locations

ROOT = Path(__file__).resolve().parents[1]


def inference(seed: int, threads: int, repeat: int, report: dict, gpu: str = "cuda") -> None:
    """CPU vs GPU on one study: agreement, accuracy, wall time."""
    from bench_moco import time_study  # the stack's LV location not timed (``locs``)

    cfg = load_config(overrides={"moco.threads": threads})
    ph = generate_phantom(seed=seed, motion="breathing", vendor="ab"[seed % 2])
    locs = stack_locations(ph.study, cfg)
    torch.set_num_threads(threads)
    mcs = {dev: MotionCorrector.load(device=dev, config=cfg.moco) for dev in ("cpu", gpu)}
    rows = []
    for s, lv in zip(ph.study.slices, locs):
        prefix = "aif" if s.role.name == "AIF" else f"s{s.slice_index}"
        truth = slice_truth(ph.truth, s)
        res = {dev: mc.correct(s, lv=lv) for dev, mc in mcs.items()}
        diff = np.abs(res[gpu].displacement - res["cpu"].displacement)
        m = {dev: truth_metrics(r, truth, s) for dev, r in res.items()}
        row = {"slice": prefix, "max_disp_diff_px": float(diff.max()),
               "median_disp_diff_px": float(np.median(diff))}
        for dev, key in (("cpu", "cpu"), (gpu, "gpu")):
            row[f"dice_{key}"] = m[dev]["dice"]
            row[f"centroid_mm_{key}"] = m[dev]["centroid_mm"]
        row["dice_none"] = m["cpu"]["dice_none"]
        rows.append(row)
        print(f"  {prefix:4s} dice none {row['dice_none']:.3f} -> cpu {row['dice_cpu']:.3f} / "
              f"gpu {row['dice_gpu']:.3f} | centroid cpu {row['centroid_mm_cpu']:.2f} / gpu "
              f"{row['centroid_mm_gpu']:.2f} mm | displacement gpu - cpu: max "
              f"{row['max_disp_diff_px']:.3f} px, median {row['median_disp_diff_px']:.4f} px",
              flush=True)
    report["inference_rows"] = rows
    walls = {f"cpu_{threads}_threads": time_study(mcs["cpu"], ph.study, cfg, repeat, locs)[0],
             "gpu": time_study(mcs[gpu], ph.study, cfg, repeat, locs)[0]}
    print(f"  study wall (median of {repeat}): cpu ({threads} threads) "
          f"{walls[f'cpu_{threads}_threads']:.2f} s, gpu {walls['gpu']:.2f} s", flush=True)
    try:
        cfg_c = load_config(overrides={"moco.compile": "true"})
        mcc = MotionCorrector.load(device=gpu, config=cfg_c.moco)
        print(f"  compiling on the GPU: {mcc.compile_networks():.1f} s", flush=True)
        walls["gpu_compiled"] = time_study(mcc, ph.study, cfg, repeat, locs)[0]
        print(f"  study wall, gpu compiled: {walls['gpu_compiled']:.2f} s", flush=True)
    except Exception:
        traceback.print_exc()
    report["study_wall_s"] = walls


def _stage_config(stage: str, out: Path, device: str, seconds: float, steps: int) -> Path:
    """The shipped stage config on a small phantom set, earlier stages from the package."""
    cfg = yaml.safe_load((ROOT / "config" / "train" / f"{stage}.yaml").read_text())
    cfg.update(out_dir=str(out / device), previous_dir=str(WEIGHTS_DIR), device=device,
               steps=steps, time_limit_min=seconds / 60.0, val_every=10**9, ckpt_every=10**9)
    cfg["data"].update(train_seeds=[1000, 1004], val_seeds=[9000, 9001],
                       cache_dir=str(out / "cache"))
    path = out / f"{stage}_{device}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def training(out: Path, seconds: float, cpu_steps: int, threads: int, report: dict,
             gpu: str = "cuda") -> None:
    """Seconds per Adam step of each stage on the GPU and the CPU."""
    from perfmoco.moco.train import train_main

    report["training"] = {}
    for stage in ("affine1", "affine2", "dense"):
        r = {}
        for device, steps, limit in (("cpu", cpu_steps, 0.0), (gpu, 10**7, seconds)):
            try:
                torch.set_num_threads(threads)
                path = _stage_config(stage, out, device, limit, steps)
                ckpt = train_main(path)
                info = torch.load(ckpt, map_location="cpu", weights_only=False)["train_info"]
                r[device] = {"steps": info["step"],
                             "s_per_step": info["step_seconds"] / max(info["step"], 1),
                             "data_s": info["data_seconds"], "val": info["metrics"]}
                print(f"  {stage} on {device}: {info['step']} steps, "
                      f"{r[device]['s_per_step'] * 1e3:.1f} ms/step, "
                      f"data {info['data_seconds']:.0f} s, val {info['metrics']}", flush=True)
            except Exception:
                traceback.print_exc()
        if "cpu" in r and gpu in r:
            r["speedup"] = r["cpu"]["s_per_step"] / r[gpu]["s_per_step"]
            print(f"  {stage}: gpu {r['speedup']:.1f}x the cpu per step", flush=True)
        report["training"][stage] = r


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=11100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--train-seconds", type=float, default=45.0)
    p.add_argument("--cpu-steps", type=int, default=20)
    p.add_argument("--out", default="runs/gpu")
    p.add_argument("--json", default=None)
    p.add_argument("--device", default="cuda", help="the GPU (cpu: a dry run of this script)")
    p.add_argument("--skip", nargs="*", default=[], choices=["inference", "training"])
    a = p.parse_args(argv)
    if a.device != "cpu" and not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU")
        return 1
    logging.basicConfig(level=logging.WARNING)
    name = torch.cuda.get_device_name(0) if a.device != "cpu" else "cpu (dry run)"
    report = {"gpu": name, "torch": torch.__version__}
    print(f"{report['gpu']}, torch {report['torch']}", flush=True)
    parts = (("inference", lambda: inference(a.seed, a.threads, a.repeat, report, a.device)),
             ("training", lambda: training(Path(a.out), a.train_seconds, a.cpu_steps,
                                           a.threads, report, a.device)))
    for name, run in parts:
        if name in a.skip:
            continue
        print(f"\n{name}:", flush=True)
        try:
            run()
        except Exception:
            traceback.print_exc()
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
