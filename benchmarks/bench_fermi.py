"""Speed and accuracy of the vectorised Fermi fit (issue 4 targets).

Usage::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fermi.py [--n 10000] [--t 70]
        [--loop 200] [--phantoms 0] [--warp-order 1|3] [--heart-scale 1.0]

Speed: ``n`` synthetic myocardial curves of ``t`` dynamics (MBF 0.5-4
ml/min/g, random Fermi shapes and delays, noise 0.03 mmol/l) fitted by
:func:`perfmoco.quant.fermi.fit_fermi` (one vectorised solve) and by the
two-level :func:`perfmoco.quant.grouped.fit_fermi_grouped` used by
``quantify_study``; a plain ``scipy.optimize.curve_fit`` loop fits
``--loop`` of them and is extrapolated to ``n``.  ``--phantoms K`` also runs
``quantify_study`` on K phantoms (``--motion``; motion-free ones also
noise-free) without correction, with the ideal ("oracle") correction by
the true inverse displacement and/or with the product's correction ("dl",
``--corrections none,oracle,dl``), and prints the accuracy against the truth;
``--warp-order 3`` makes the phantoms move their frames by a cubic B-spline instead of
bilinearly (see ``generate_phantom``); ``--heart-scale 1.35`` gives them a larger heart.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from scipy.optimize import curve_fit

from perfmoco.quant.fermi import fit_fermi
from perfmoco.quant.grouped import fit_fermi_grouped
from perfmoco.quant.model import mbf_to_flow, tissue_curve

#: Issue 4's targets: noise-free motion-free median pixel error, segment error after
#: correction (ml/min/g), AHA label agreement, and the fit of ~10,000 curves (s).
PIXEL_ERR_MAX, SEGMENT_ERR_MAX, AHA_MIN, FIT_S_MAX = 0.03, 0.3, 0.90, 1.0


def _verdict(misses) -> str:
    return "MISSES " + ", ".join(misses) if misses else "met"


def synthetic(n: int, t_n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    dt = 0.6
    t = np.arange(t_n) * dt
    s = np.clip((t - 6.0) / 4.0, 0, None)
    aif = 5.0 * s**3 * np.exp(3.0 * (1.0 - s))
    mbf = rng.uniform(0.5, 4.0, n)
    curves = tissue_curve(aif, dt_s=dt, flow_per_s=mbf_to_flow(mbf),
                          tau0_s=rng.uniform(3.0, 8.0, n), k_per_s=rng.uniform(0.5, 2.0, n),
                          delay_s=rng.uniform(0.2, 1.2, n))
    return curves + rng.normal(0.0, 0.03, curves.shape), aif, mbf, dt


def scipy_loop(curves, aif, dt, n_loop):
    def f(_, flow, tau0, k, delay):
        return tissue_curve(aif, dt_s=dt, flow_per_s=flow, tau0_s=tau0, k_per_s=k,
                            delay_s=delay)
    out = []
    for c in curves[:n_loop]:
        try:
            p, _ = curve_fit(f, None, c, p0=[0.04, 4.0, 1.0, 0.5],
                             bounds=([0, 0, 0.02, -0.5], [0.35, 60, 20, 3]))
            out.append(p[0])
        except RuntimeError:
            out.append(np.nan)
    return np.asarray(out)


def bench_speed(n, t_n, n_loop):
    curves, aif, mbf, dt = synthetic(n, t_n)
    fit_fermi(curves[:200], aif, dt_s=dt)  # warm-up
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_fermi(curves, aif, dt_s=dt)
    t_vec, c_vec = time.perf_counter() - t0, time.process_time() - c0
    groups = np.arange(n) // 60  # segment-sized groups of 60 curves
    t0, c0 = time.perf_counter(), time.process_time()
    gfit, _, _ = fit_fermi_grouped(curves, aif, groups=groups, delay_groups=groups // 40,
                                   dt_s=dt)
    t_grp, c_grp = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    ffit, _, _ = fit_fermi_grouped(curves, aif, groups=groups, delay_groups=groups // 40,
                                   dt_s=dt, fast_pixels=True)
    t_fast, c_fast = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()  # as quantify_study runs it
    dfit, _, _ = fit_fermi_grouped(curves, aif, groups=groups, delay_groups=groups // 40,
                                   dt_s=dt, denoise=True)
    t_den, c_den = time.perf_counter() - t0, time.process_time() - c0
    t0 = time.perf_counter()
    loop = scipy_loop(curves, aif, dt, n_loop)
    t_loop = (time.perf_counter() - t0) * n / n_loop
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"{n} curves x {t_n} dynamics, OMP_NUM_THREADS={threads}, "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"  fit_fermi (vectorised LM):   {t_vec:6.2f} s wall, {c_vec:5.2f} s CPU   "
          f"median |MBF error| {np.median(np.abs(fit.mbf - mbf) / mbf):.1%}")
    print(f"  fit_fermi_grouped:           {t_grp:6.2f} s wall, {c_grp:5.2f} s CPU   "
          f"median |MBF error| {np.median(np.abs(gfit.mbf - mbf) / mbf):.1%}")
    print(f"  ... fast_pixels=True:        {t_fast:6.2f} s wall, {c_fast:5.2f} s CPU   "
          f"median |MBF error| {np.median(np.abs(ffit.mbf - mbf) / mbf):.1%}")
    print(f"  ... denoise=True (default):  {t_den:6.2f} s wall, {c_den:5.2f} s CPU   "
          f"median |MBF error| {np.median(np.abs(dfit.mbf - mbf) / mbf):.1%}")
    err = np.abs(loop * 60 / 1.05 - mbf[:n_loop]) / mbf[:n_loop]
    print(f"  scipy curve_fit loop:        {t_loop:6.2f} s   (extrapolated from {n_loop}; "
          f"median |MBF error| {np.nanmedian(err):.1%})")
    print(f"  speed-up vs curve_fit loop:  {t_loop / t_vec:6.0f}x (fit_fermi), "
          f"{t_loop / t_grp:.0f}x (grouped)")
    print(f"  target: the fit as quantify_study runs it under {FIT_S_MAX:.0f} s wall: "
          f"{_verdict(['speed'] if t_den >= FIT_S_MAX else [])}")


def _oracle(ph, study):
    """Ideal motion correction: the phantom's inverse displacement (PD frames: negated)."""
    from perfmoco.phantom import warp

    out = []
    for s in study.slices:
        p = _key(s)
        pd = s.pd_images
        if pd.shape[0]:
            pd = warp(pd, -ph.truth[f"{p}_pd_displacement"])
        out.append(s.replace(images=warp(s.images, ph.truth[f"{p}_inverse_displacement"]),
                             pd_images=pd))
    return study.replace_slices(out)


def bench_phantoms(k, motion, corrections, seed0=0, vendor="a", warp_order=1, heart_scale=1.0,
                   slice_delays=None, wall_scale=1.0):
    from scipy import ndimage

    from perfmoco.config import QuantConfig
    from perfmoco.phantom import generate_phantom
    from perfmoco.quant import quantify_study

    cases = [(True, "none")] if motion == "none" else []
    cases += [(False, c) for c in corrections]
    phs = [generate_phantom(seed=seed, motion=motion, vendor=vendor, warp_order=warp_order,
                            heart_scale=heart_scale, slice_delays_s=slice_delays,
                            wall_scale=wall_scale)
           for seed in range(seed0, seed0 + k)]
    for clean, corr in cases:
        seg_err, pix_all, pix_core, aha_ok, sd_seg, t_q, cls = [], [], [], [], [], [], []
        seg_bias, seg_ok, seg_pos = [], [], []
        for ph in phs:
            tr, st = ph.truth, ph.study
            if clean:
                st = st.replace_slices([
                    s.replace(images=ph.noise_free[_key(s)],
                              pd_images=ph.noise_free[_key(s) + "_pd"])
                    for s in st.slices])
            fields = {}
            refs = {}
            if corr == "dl":  # the product's correction, as process_study runs it
                st, fields, refs = _dl(st)
            if corr == "oracle":
                st = _oracle(ph, st)
                # as the pipeline passes the correction's fields (M0 follows the coils)
                keys = {s.slice_index: _key(s) for s in st.slices}
                fields = {"displacements": {i: tr[f"{p}_inverse_displacement"]
                                            for i, p in keys.items()},
                          "pd_displacements": {i: -tr[f"{p}_pd_displacement"]
                                               for i, p in keys.items()}}
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = quantify_study(st, config=QuantConfig(), **fields)
            t_q.append(time.perf_counter() - t0)
            for row in r.segments:
                truth = segment_truth(tr, row)
                seg_err.append(abs(row["median"] - truth))
                sd_seg.append(row["sd"])
                if abs(truth - 2.0) > 0.2:  # seeded defect (< 2) or healthy (> 2) segment
                    cls.append((truth < 2.0) == (row["median"] < 2.0))
                seg_bias.append(row["median"] - truth)
                seg_pos.append(_POSITION[(row["segment"] - 1) // 6])
                seg_ok.append(row["reliable"])
            for s, m in r.myocardium.items():
                labels, t_mbf, t_aha = (tr[f"s{s}_{k}"] for k in ("labels", "mbf", "aha"))
                if corr == "dl":  # the truth moved into the corrected frame (the reference's)
                    from perfmoco.metrics import compose_displacement

                    i = refs[s]
                    d = compose_displacement(fields["displacements"][s][i : i + 1],
                                             tr[f"s{s}_displacement"][i : i + 1])[0]
                    labels, t_mbf, t_aha = (_at(x, d) for x in (labels, t_mbf, t_aha))
                tm = labels == 8
                both = m & tm
                rel = np.abs(r.mbf_maps[s] - t_mbf) / np.maximum(t_mbf, 1e-6)
                pix_all += list(rel[both])
                pix_core += list(rel[both & ndimage.binary_erosion(tm)])
                aha_ok += list(r.aha[s][both] == t_aha[both])
        name = "noise-free" if clean else "noisy"
        print(f"{k} phantoms (vendor {vendor}), motion={motion}, {name}, correction={corr}: "
              f"quantify_study {np.mean(t_q):.1f} s/study")
        print(f"  median |pixel MBF error|: {np.median(pix_all):.1%} (all myocardial pixels), "
              f"{np.median(pix_core):.1%} (1 px off the borders)")
        n_nan = int(np.isnan(seg_err).sum())  # segments whose fits all failed
        none = f" ({n_nan} of {len(seg_err)} segments without a value)" if n_nan else ""
        print(f"  segment median MBF: median |error| {np.nanmedian(seg_err):.2f} ml/min/g, "
              f"max {np.nanmax(seg_err):.2f}, mean bias {np.nanmean(seg_bias):+.2f}{none}; "
              f"defect/healthy split at 2.0 right for "
              f"{np.sum(cls)}/{len(cls)} segments; AHA labels agree on {np.mean(aha_ok):.1%}")
        pos, err_b = np.array(seg_pos), np.array(seg_bias)
        print("  by slice position, median |error| (mean bias): " + ", ".join(
            f"{q} {np.nanmedian(np.abs(err_b[pos == q])):.2f} "
            f"({np.nanmean(err_b[pos == q]):+.2f})"
            for q in _POSITION if (pos == q).any()))
        print(f"  SD of pixel MBF within segments: median {np.nanmedian(sd_seg):.2f} ml/min/g")
        ok, err = np.array(seg_ok), np.array(seg_err)
        if ok.any():  # the table's own reliability marks (not part of the targets)
            print(f"  marked unreliable by the segment table: {(~ok).sum()} of {ok.size} "
                  f"segments (of those with |error| > 1 ml/min/g: {(~ok & (err > 1)).sum()} "
                  f"of {(err > 1).sum()}); the others: median |error| {np.nanmedian(err[ok]):.2f}, "
                  f"max {np.nanmax(err[ok]):.2f}")
        if clean:  # issue 4: motion-free, noise-free pixel error
            print(f"  target: pixel error <= {PIXEL_ERR_MAX:.0%}: "
                  f"{_verdict(['pixel error'] if np.median(pix_all) > PIXEL_ERR_MAX else [])}")
        elif motion != "none" and corr != "none":  # issue 4: after motion correction
            misses = [name for name, bad in (
                ("segment error", np.nanmedian(seg_err) > SEGMENT_ERR_MAX),
                ("segments without a value", n_nan > 0),
                ("defect/healthy split", not all(cls)),
                ("AHA labels", np.mean(aha_ok) < AHA_MIN)) if bad]
            print(f"  targets: segment error <= {SEGMENT_ERR_MAX}, every seeded segment on its "
                  f"side of 2.0, AHA labels >= {AHA_MIN:.0%}: {_verdict(misses)}")


#: AHA segments 1-6, 7-12, 13-16
_POSITION = ("basal", "mid", "apical")


def segment_truth(truth, row) -> float:
    """True MBF of a segment-table row: the median over the phantom's pixels of that segment."""
    sl = row["slice"]
    return float(np.median(truth[f"s{sl}_mbf"][truth[f"s{sl}_aha"] == row["segment"]]))


def _dl(study):
    """Correct every slice with the shipped networks; the fields and QC for quantify_study."""
    from perfmoco.config import Config
    from perfmoco.moco.pipeline import MotionCorrector
    from perfmoco.moco.whole_study import correct_slices
    from perfmoco.pipeline import StudyResult, stack_locations

    mc = MotionCorrector.load(device="cpu")
    out, fields, ref = [], {"displacements": {}, "pd_displacements": {}, "qc": {}}, {}
    locs = stack_locations(study, Config())
    results = correct_slices(study, mc.correct, locs, config=mc.config)
    fields["lv_hints"] = StudyResult(study, results, lv_locations=locs).lv_hints()
    for s, r in zip(study.slices, results):
        out.append(s.replace(images=r.corrected, pd_images=r.pd_corrected))
        fields["displacements"][s.slice_index] = r.displacement
        fields["pd_displacements"][s.slice_index] = r.pd_displacement
        fields["qc"][s.slice_index] = r.qc
        ref[s.slice_index] = r.reference_index
    return study.replace_slices(out), fields, ref


def _at(truth_map, d):
    """A motion-free truth map moved as a frame with pull-back field d (nearest neighbour)."""
    from scipy import ndimage

    yy, xx = np.mgrid[0:truth_map.shape[0], 0:truth_map.shape[1]].astype(np.float64)
    return ndimage.map_coordinates(truth_map, [yy + d[0], xx + d[1]], order=0, mode="nearest")


def _key(s):
    return "aif" if s.role.value == "aif" else f"s{s.slice_index}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--t", type=int, default=70)
    ap.add_argument("--loop", type=int, default=200)
    ap.add_argument("--phantoms", type=int, default=0)
    ap.add_argument("--seed0", type=int, default=0,
                    help="first phantom seed (default 0; held-out checks use seeds no test uses)")
    ap.add_argument("--vendor", default="a", choices=("a", "b"), help="phantom parameter set")
    ap.add_argument("--motion", default="none")
    ap.add_argument("--warp-order", type=int, default=1, choices=(1, 3),
                    help="how the phantom moves its frames: 1 bilinear (default, as every "
                         "published figure), 3 cubic B-spline (no frame-dependent blur)")
    ap.add_argument("--heart-scale", type=float, default=1.0,
                    help="the phantoms' heart size against the usual one (0.7-1.5)")
    ap.add_argument("--wall-scale", type=float, default=1.0,
                    help="the phantoms' LV wall thickness against the usual one (0.5-2.5; "
                         "2: hypertrophied)")
    ap.add_argument("--slice-delays", type=lambda v: tuple(float(x) for x in v.split(",")),
                    default=None, metavar="B,M,A",
                    help="add these delays (s) to the basal, mid and apical slices' bolus "
                         "(e.g. -0.25,0,0.25: slices whose delays truly differ)")
    ap.add_argument("--corrections", default="none,oracle",
                    help="none, oracle (the phantom's true inverse displacement) and/or dl "
                         "(the shipped networks + refinement)")
    ap.add_argument("--no-speed", action="store_true")
    a = ap.parse_args()
    if not a.no_speed:
        bench_speed(a.n, a.t, a.loop)
    if a.phantoms:
        bench_phantoms(a.phantoms, a.motion, a.corrections.split(","), a.seed0, a.vendor,
                       a.warp_order, a.heart_scale, a.slice_delays, a.wall_scale)


if __name__ == "__main__":
    main()
