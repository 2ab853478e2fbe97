"""Benchmark of the deep-learning motion correction on held-out phantom studies.

Prints, per slice (3 high-res + AIF) and vendor, the ground-truth metrics
against no correction (mean Dice of the true myocardium over all dynamics,
median LV-centroid residual, Dice over the 5 frames around peak LV, TIC
smoothness, PD myocardium SD), then the wall time of one whole study
(4 slices, all three steps and the full-FOV resampling) on the CPU threads
given, and the networks' FLOPs.  The TIC ROI is the paper's: the myocardium's
extent plus 10 pixels of the high-resolution slices, the same distance in mm on
the low-resolution AIF slice (whose row also shows 10 of its own pixels).

Usage::

    .venv/bin/python benchmarks/bench_moco.py [--seeds 9100 9101] [--threads 2] [--busy N]
        [--weights DIR] [--device cpu|cuda] [--json OUT.json] [--set moco.KEY=VALUE ...]
        [--fov full|corner|corner-bl] [--fov-margin-mm 10] [--heart-scale 1.0]

``--fov corner`` stores every slice as a site with a tight field of view would:
cut ``--fov-margin-mm`` above and to the right of the heart's myocardium over
all frames (the heart in the image's top-right corner; the geometry and the
truth cut alike), so the crops of the correction leave the image;
``--fov corner-bl`` cuts below and to the left instead.  ``--heart-scale 1.35``
makes every phantom's heart larger (cavity, wall and RV scaled alike).

``--busy 1`` times the study beside another process that keeps a core busy (a host
shared with other work); ``--threads 0`` lets the correction pick its threads from
the cores left free (``moco.threads: 0``, the product's default).

The speed part times the study uncompiled and, in the same run, with the
networks compiled (``moco.compile``, as the server and the gadget run them
after their warm-up; ``--no-compile`` skips that).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import multiprocessing
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from perfmoco.config import load_config
from perfmoco.metrics import pd_residual_mm
from perfmoco.metrics._common import TIC_MARGIN_PX
from perfmoco.metrics.paper import pd_sd
from perfmoco.moco.data import slice_truth
from perfmoco.moco.evaluate import truth_metrics
from perfmoco.moco.pipeline import MotionCorrector, check_series
from perfmoco.moco.whole_study import correct_slices
from perfmoco.phantom import generate_phantom
from perfmoco.phantom.fov import fov_corner
from perfmoco.pipeline import stack_locations
from perfmoco.study import SliceRole

#: The issue's targets (mean Dice, median LV centroid, mean Dice at peak).
DICE_MIN, CENTROID_MAX_MM, DICE_PEAK_MIN = 0.90, 1.0, 0.92

KEYS = ("dice", "centroid_mm", "dice_peak", "tic", "tic_noise_free", "pd_sd", "pd_mm",
        "dice_raster", "dice_peak_raster")


def model_flops(mc: MotionCorrector) -> dict[str, float]:
    """GFLOP of one forward (one frame pair) of each network."""
    out = {}
    for name, net in mc.models.items():
        x = torch.rand(1, 1, net.crop, net.crop, device=mc.device)
        fc = FlopCounterMode(display=False)
        with fc, torch.inference_mode():
            net(x, x)
        out[name] = fc.get_total_flops() / 1e9
    return out


def time_study(mc, study, config, repeat: int, locs=None) -> tuple[float, float]:
    """Median wall and CPU seconds of correcting every slice (after one warm-up slice).

    ``locs``: the stack's LV locations computed beforehand and then not timed (as
    ``bench_gpu.py`` times what runs on the device); by default they are timed.
    """
    slices = study.slices
    mc.correct(slices[0])
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        # returns numpy: work on a GPU has finished
        correct_study(mc, study, stack_locations(study, config) if locs is None else locs)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return float(np.median(walls)), float(np.median(cpus))


def _spin(stop) -> None:
    while not stop.is_set():
        pass


@contextlib.contextmanager
def busy_processes(n: int):
    """``n`` other processes, each keeping a core busy, while the block runs."""
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True)
             for _ in range(n)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        stop.set()
        for proc in procs:
            proc.join(5)


def correct_study(mc, study, locs):
    """Every slice corrected as ``process_study`` does (the AIF slice's pre-contrast
    frames then follow a tissue slice: :mod:`perfmoco.moco.companion`)."""
    return correct_slices(study, mc.correct, locs, config=mc.config)


def slice_metrics(res, s, truth_all, prefix, noise_free=None, tic_margin_px=TIC_MARGIN_PX):
    """Scores of one slice's correction ``res``; ``tic_margin_px``: the TIC ROI's margin
    (see main)."""
    from perfmoco.metrics._common import warp_series

    truth = slice_truth(truth_all, s)
    if noise_free is not None:  # the phantom's frames without image noise
        truth["noise_free"] = noise_free
    m = truth_metrics(res, truth, s, tic_margin_px=tic_margin_px)
    for k in ("dice", "dice_peak"):  # the old scoring (binary masks warped): same "none"
        if f"{k}_raster" in m:
            m[f"{k}_raster_none"] = m[f"{k}_none"]
    masks = truth["myo_masks"]
    ref = res.reference_index
    if s.pd_images.shape[0]:
        warped_ref = (
            warp_series(masks[ref : ref + 1].astype(np.float32), res.displacement[ref : ref + 1])[0]
            >= 0.5
        )
        m["pd_sd"] = pd_sd(res.pd_corrected, warped_ref)
        m["pd_sd_none"] = pd_sd(s.pd_images, masks[ref])
        true_pd = truth_all.get(f"{prefix}_pd_displacement")
        if true_pd is not None:
            # PD frames' distance from the reference frame at the LV (centroid of its mask)
            true_ref = truth_all[f"{prefix}_displacement"][ref]
            at = np.argwhere(warped_ref).mean(axis=0)
            for key, field in (("pd_mm", res.pd_displacement),
                               ("pd_mm_none", np.zeros_like(res.pd_displacement))):
                m[key] = float(np.median(pd_residual_mm(
                    field, true_pd, res.displacement[ref], true_ref, at,
                    spacing_mm=s.pixel_spacing_mm)))
    inv = truth_all.get(f"{prefix}_inverse_displacement")
    if inv is not None:  # the phantom's exact correction: the best these metrics can be
        from perfmoco.moco.result import MocoResult
        from perfmoco.moco.transforms import warp

        exact = MocoResult(warp(s.images, inv), inv, res.reference_index, res.qc,
                           s.pd_images, np.zeros((0, 2, *s.shape), np.float32))
        mo = truth_metrics(exact, truth, s, tic_margin_px=tic_margin_px)
        m.update({f"{k}_oracle": mo[k] for k in ("dice", "centroid_mm", "dice_peak", "tic",
                                                 "tic_noise_free") if k in mo})
        if tic_margin_px != TIC_MARGIN_PX and "tic_noise_free" in m:  # also 10 of its own pixels
            t10 = truth_metrics(res, truth, s)  # "none" in the correction's ROI, as above
            m["tic_noise_free_px10"] = t10["tic_noise_free"]
            m["tic_noise_free_px10_none"] = t10["tic_noise_free_none"]
            m["tic_noise_free_px10_oracle"] = truth_metrics(exact, truth, s)["tic_noise_free"]
        # the old scoring's ceiling: a perfect correction to the reference frame
        # (frame -> motion-free -> reference), whose warped binary masks still lose
        # boundary layers to the second resampling
        d_ref = np.broadcast_to(truth_all[f"{prefix}_displacement"][ref], inv.shape)
        ideal = d_ref + np.stack([warp_series(inv[:, c], d_ref) for c in range(2)], axis=1)
        mi = truth_metrics(MocoResult(warp(s.images, ideal.astype(np.float32)),
                                      ideal.astype(np.float32), ref, res.qc, s.pd_images,
                                      np.zeros((0, 2, *s.shape), np.float32)), truth, s)
        m.update({f"{k}_oracle": mi[k] for k in ("dice_raster", "dice_peak_raster") if k in mi})
    m["qc_flagged"] = int(res.qc.sum())
    if "mistriggered" in truth_all and np.ndim(truth_all["mistriggered"]) == 1:
        mis = np.asarray(truth_all["mistriggered"], bool)
        if mis.shape == res.qc.shape:
            m["qc_true_pos"] = int((mis & res.qc).sum())
            m["mistriggered"] = int(mis.sum())
    return m


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[9100, 9101])
    p.add_argument("--motion", default="breathing")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (moco.threads); 0: the cores other processes leave free")
    p.add_argument("--busy", type=int, default=0, metavar="N",
                   help="time the study with N other processes keeping a core busy each "
                        "(a shared host: compare --threads 2 with --threads 0)")
    p.add_argument("--weights", default=None)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    p.add_argument("--json", default=None)
    p.add_argument("--speed-only", action="store_true", help="skip the accuracy part")
    p.add_argument("--accuracy-only", action="store_true", help="skip the speed part")
    p.add_argument("--repeat", type=int, default=3, help="timed passes over the study (median)")
    p.add_argument("--no-compile", action="store_true",
                   help="time the uncompiled networks only (no torch.compile)")
    p.add_argument("--fov", default="full", choices=("full", "corner", "corner-bl"),
                   help="corner: each slice cut close to its heart (see above)")
    p.add_argument("--fov-margin-mm", type=float, default=10.0)
    p.add_argument("--heart-scale", type=float, default=1.0,
                   help="the phantoms' heart size against the usual one (0.7-1.5)")
    p.add_argument("--set", action="append", default=[], metavar="moco.KEY=VALUE",
                   help="settings as in the CLI, e.g. --set moco.refine_iterations=0")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = load_config(overrides={"moco.threads": a.threads,
                                 **dict(kv.split("=", 1) for kv in a.set)})
    mc = MotionCorrector.load(a.weights, device=a.device, config=cfg.moco)
    rows = []
    for i, seed in enumerate([] if a.speed_only else a.seeds):
        vendor = "ab"[i % 2]
        ph = generate_phantom(seed=seed, motion=a.motion, vendor=vendor,
                              heart_scale=a.heart_scale)
        if a.fov in ("corner", "corner-bl"):
            ph = fov_corner(ph, a.fov_margin_mm,
                            "top-right" if a.fov == "corner" else "bottom-left")
        locs = stack_locations(ph.study, cfg)
        # the TIC ROI's margin: the paper's 10 pixels of the high-resolution slices, in mm
        # on the AIF slice too (10 of its own ~4.5 mm pixels reach into liver and chest wall)
        high = [s.pixel_spacing_mm[0] for s in ph.study.slices if s.role is not SliceRole.AIF]
        for s, res in zip(ph.study.slices, correct_study(mc, ph.study, locs)):
            prefix = "aif" if s.role is SliceRole.AIF else f"s{s.slice_index}"
            margin = TIC_MARGIN_PX * (high[0] / s.pixel_spacing_mm[0] if high else 1.0)
            m = slice_metrics(res, s, ph.truth, prefix, ph.noise_free.get(prefix),
                              tic_margin_px=margin)
            m.update(seed=seed, vendor=vendor, slice=prefix)
            rows.append(m)
            print(
                f"seed {seed} vendor {vendor} {prefix:4s} | "
                + " | ".join(f"{k} {m[k + '_none']:.3f} -> {m[k]:.3f}" for k in KEYS if k in m)
                + f" | qc {m['qc_flagged']}"
                + (
                    f" ({m['qc_true_pos']}/{m['mistriggered']} mistriggers)"
                    if "mistriggered" in m and m["mistriggered"]
                    else ""
                ),
                flush=True,
            )
    print(f"\nmean over slices (none -> dl [exact correction]); targets: dice >= {DICE_MIN:.2f},")
    print(f"centroid <= {CENTROID_MAX_MM:g} mm, dice_peak >= {DICE_PEAK_MIN:.2f}, tic improved >= "
          "3x, pd_sd reduced; pd_mm: PD")
    print("frames' distance from the reference frame at the LV, mm. dice / dice_peak: each")
    print("frame's true myocardium rendered once in the corrected frame; *_raster: the binary")
    print("per-frame masks warped (a second resampling; bracket: its ceiling, a perfect")
    print("correction to the reference frame)")
    summary = {}
    for k in KEYS:
        vals = [(r[k + "_none"], r[k]) for r in rows if k in r]
        if vals:
            none, dl = np.mean(vals, axis=0)
            summary[k] = {"none": float(none), "dl": float(dl)}
            orc = [r[k + "_oracle"] for r in rows if k + "_oracle" in r]
            if orc:
                summary[k]["oracle"] = float(np.mean(orc))
            extra = f"  [{summary[k]['oracle']:.3f}]" if "oracle" in summary[k] else ""
            print(f"  {k:12s} {none:.3f} -> {dl:.3f}{extra}")
    if "tic" in summary:
        t = summary["tic"]
        print(f"  tic improvement factor: {t['none'] / t['dl']:.2f}x"
              + (f" (exact correction: {t['none'] / t['oracle']:.2f}x; the rest is image noise)"
                 if "oracle" in t else ""))
    if "tic_noise_free" in summary:  # the same fields on the noise-free frames: motion alone
        t = summary["tic_noise_free"]
        print(f"  tic improvement factor on the noise-free frames (same fields, bilinear): "
              f"{t['none'] / t['dl']:.2f}x"
              + (f" (exact correction: {t['none'] / t['oracle']:.2f}x)" if "oracle" in t else ""))
    if rows:
        print(f"  worst-slice dice: {min(r['dice'] for r in rows):.3f}")
        n_mis = sum(r.get("mistriggered", 0) for r in rows)
        tp = sum(r.get("qc_true_pos", 0) for r in rows)
        false = sum(r["qc_flagged"] - r.get("qc_true_pos", 0) for r in rows)
        print(f"  QC: {tp}/{n_mis} mistriggered frames flagged, {false} other frames flagged")
        print("  by slice position and by vendor (the targets are to hold for each):")
        groups = [(g, "slice") for g in dict.fromkeys(r["slice"] for r in rows)]
        groups += [(v, "vendor") for v in dict.fromkeys(r["vendor"] for r in rows)]
        for pos, field in groups:
            sel = [r for r in rows if r[field] == pos]
            dice = np.mean([r["dice"] for r in sel])
            cen = np.median([r["centroid_mm"] for r in sel])
            peak = np.mean([r["dice_peak"] for r in sel])
            misses = [name for name, bad in (("dice", dice < DICE_MIN),
                                             ("centroid", cen > CENTROID_MAX_MM),
                                             ("dice_peak", peak < DICE_PEAK_MIN)) if bad]
            tic = _factor(sel, "tic")
            if all("tic_noise_free_oracle" in r for r in sel):
                tic += (f" (noise-free {_factor(sel, 'tic_noise_free')}, exact "
                        f"{_factor(sel, 'tic_noise_free', 'oracle')})")
            if all("tic_noise_free_px10_oracle" in r for r in sel):
                tic += (f" [ROI margin 10 of its own pixels: noise-free "
                        f"{_factor(sel, 'tic_noise_free_px10')}, exact "
                        f"{_factor(sel, 'tic_noise_free_px10', 'oracle')}]")
            print(f"    {pos:4s} dice {dice:.3f} | centroid_mm {cen:.2f} (median) | dice_peak "
                  f"{peak:.3f} | tic {tic} | raster "
                  f"{np.mean([r.get('dice_raster', np.nan) for r in sel]):.3f} / "
                  f"{np.mean([r.get('dice_peak_raster', np.nan) for r in sel]):.3f} | n {len(sel)}"
                  f" | {'MISSES ' + ', '.join(misses) if misses else 'targets met'}")

    if a.accuracy_only:
        _write_json(a.json, {"rows": rows, "summary": summary})
        return 0
    # speed: one whole study, after a warm-up; uncompiled and compiled in the same run
    ph = generate_phantom(seed=a.seeds[0], motion=a.motion)
    slices = ph.study.slices
    for s in slices:
        check_series(s)
    with busy_processes(a.busy):
        wall, cpu = time_study(mc, ph.study, cfg, a.repeat)
    threads = a.threads or f"{torch.get_num_threads()} (auto)"
    compiled = None
    if not a.no_compile and not mc.config.compile:
        mcc = MotionCorrector(mc.models, device=mc.device,
                              config=dataclasses.replace(mc.config, compile=True))
        print(f"\ncompiling the networks (moco.compile): {mcc.compile_networks():.1f} s")
        with busy_processes(a.busy):
            compiled = time_study(mcc, ph.study, cfg, a.repeat)
    frames = sum(s.n_dynamics + s.pd_images.shape[0] for s in slices)
    flops = model_flops(mc)
    passes = {"affine1": cfg.moco.affine1_passes, "affine2": cfg.moco.affine2_passes,
              "dense": int(cfg.moco.dense_step)}
    total = sum(v * passes.get(k, 1) for k, v in flops.items()) * frames
    print(
        f"\nspeed: {len(slices)} slices x ~{slices[0].n_dynamics} dynamics (+PD), "
        f"{threads} threads, {mc.device}"
        + (f", {a.busy} other busy processes" if a.busy else "")
        + f": {wall:.2f} s wall (target < 4 s), {cpu:.2f} s CPU"
        + (" (moco.compile)" if mc.config.compile else " (uncompiled)")
    )
    if compiled is not None:
        print(f"       compiled networks (moco.compile, as the server runs them): "
              f"{compiled[0]:.2f} s wall, {compiled[1]:.2f} s CPU; "
              f"{wall / compiled[0]:.2f}x the uncompiled speed (same run)")
    print(
        "model GFLOP per frame pair: "
        + ", ".join(f"{k} {v:.3f}" for k, v in flops.items())
        + f"; whole study {total:.1f} GFLOP ({total / wall:.1f} GFLOP/s achieved)"
    )
    _write_json(a.json, {"rows": rows, "summary": summary, "wall_s": wall, "gflop": flops,
                         "compiled_wall_s": None if compiled is None else compiled[0]})
    return 0


def _factor(rows, key, by="") -> str:
    """Mean uncorrected over mean corrected value of a lower-is-better metric, as 'N.NNx'
    (``by="oracle"``: over the exact correction's)."""
    after = np.mean([r[f"{key}_{by}" if by else key] for r in rows])
    return f"{np.mean([r[key + '_none'] for r in rows]) / after:.2f}x"


def _write_json(path, data) -> None:
    if path:
        with open(path, "w") as fh:
            json.dump(data, fh, indent=1, default=float)


if __name__ == "__main__":
    raise SystemExit(main())
