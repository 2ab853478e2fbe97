"""One study of an evaluation: correct with each method, quantify, measure.

:func:`evaluate_study` runs in a Dask worker; it takes and returns only small
picklable things (a seed or a path in, rows of numbers out).
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from perfmoco import metrics
from perfmoco.config import Config
from perfmoco.moco.data import slice_truth
from perfmoco.moco.evaluate import corrected_true_masks
from perfmoco.moco.result import MocoResult
from perfmoco.study import PerfusionStudy, SliceRole, SliceSeries

__all__ = ["BUILTIN_METHODS", "SLICE_NAMES", "evaluate_study"]

log = logging.getLogger(__name__)

BUILTIN_METHODS = ("none", "dl", "iterative")
#: Slice position of high-resolution ``slice_index`` 0, 1, 2.
SLICE_NAMES = {0: "basal", 1: "mid", 2: "apical"}


def _builtin(name: str, config: Config) -> Callable[..., MocoResult]:
    """``correct(series, lv=None)`` of a built-in method, as the product runs it.

    The user's ``moco`` settings (one thread: one worker is one core), and for ``dl``
    the corrector :func:`perfmoco.pipeline.process_study` loads.
    """
    if name == "iterative":
        from perfmoco.moco.iterative import correct_iterative

        return functools.partial(correct_iterative, config=config.moco, threads=1)
    if name == "dl":
        from perfmoco.pipeline import load_corrector

        return load_corrector(config).correct
    from perfmoco.moco.pipeline import correct_series

    return lambda s, lv=None: correct_series(s, method=name, config=config.moco)


def _correct_study(name: str, study: PerfusionStudy, custom, config: Config, locations):
    """Every slice's correction by method ``name``.

    A custom ``fn(series)`` slice by slice; a built-in method as the product runs it
    (:func:`perfmoco.moco.whole_study.correct_slices`): with the LV stack's locations
    and, after the DL correction, the AIF slice's pre-contrast frames moved with the
    tissue slices.
    """
    fn = custom.get(name)
    if fn is not None:
        return [fn(s) for s in study.slices]
    from perfmoco.moco.whole_study import correct_slices

    return correct_slices(study, _builtin(name, config), locations or None, config=config.moco,
                          follow_tissue=name == "dl")


def _load(spec: Mapping, *, motion: str, n_dynamics: int | None,
          ) -> tuple[str, PerfusionStudy, dict]:
    if "path" in spec:
        from perfmoco.io.files import read_study
        from perfmoco.phantom.files import truth_path

        study = read_study(spec["path"])
        with np.load(truth_path(spec["path"])) as z:
            truth = {k: z[k] for k in z.files}
        return study.study_id, study, truth
    from perfmoco.phantom import generate_phantom

    ph = generate_phantom(seed=int(spec["seed"]), motion=motion, n_dynamics=n_dynamics)
    # the frames without image noise (as moved): TIC smoothness of the motion alone
    extra = {f"{k}_noise_free": v for k, v in ph.noise_free.items() if not k.endswith("_pd")}
    return ph.study.study_id, ph.study, {**ph.truth, **extra}


def _peak_index(truth: dict, n_dyn: int) -> int:
    """0-based peak-LV dynamic: the phantom stores it 1-based; else the true AIF peak."""
    if "lv_peak_dynamic" in truth:
        return int(np.clip(int(truth["lv_peak_dynamic"]) - 1, 0, n_dyn - 1))
    return int(np.clip(np.argmax(truth["aif_gd"]), 0, n_dyn - 1))


def _nan_metrics() -> dict:
    keys = ("tic_smoothness", "dice_peak", "pd_sd", "mbf_sd", "median_mbf", "dice_all",
            "centroid_mm", "displacement_error_mm", "tic_noise_free", "mbf_mae", "mbf_bias")
    return dict.fromkeys(keys, float("nan"))


def _slice_metrics(series: SliceSeries, res: MocoResult, truth: dict, quant) -> tuple[dict, list]:
    """Paper and ground-truth metrics of one corrected high-res slice."""
    k = series.slice_index
    masks = truth[f"s{k}_myo_masks"].astype(bool)
    true_disp = truth[f"s{k}_displacement"]
    spacing = series.pixel_spacing_mm
    ref = int(res.reference_index)
    peak = _peak_index(truth, series.n_dynamics)
    # true myocardium in the corrected frame (rendered once where the truth allows)
    warped, soft = corrected_true_masks(slice_truth(truth, series) or {"myo_masks": masks},
                                        res.displacement)
    out = _nan_metrics()
    if warped[peak].any():
        centre, radius = metrics.roi_from_mask(warped[peak])
        out["tic_smoothness"] = metrics.tic_smoothness(res.corrected, centre=centre,
                                                       radius_px=radius)
        clean = truth.get(f"s{k}_noise_free")
        if clean is not None:  # the same field on the noise-free frames: no noise floor
            out["tic_noise_free"] = metrics.tic_smoothness(
                metrics.warp_series(np.asarray(clean, np.float32), res.displacement),
                centre=centre, radius_px=radius)
        if res.pd_corrected.shape[0]:
            out["pd_sd"] = metrics.pd_sd(res.pd_corrected, warped[peak])
    out["dice_peak"] = metrics.dice_around_peak(warped, peak_index=peak)
    out["dice_all"] = metrics.dice_all_dynamics(warped, reference_mask=warped[ref])
    cen = metrics.lv_centroid_residual_mm(
        masks if soft is None else soft, res.displacement if soft is None else None,
        spacing_mm=spacing, reference_index=ref)
    out["centroid_mm"] = float(np.nanmean(cen))
    out["displacement_error_mm"] = metrics.displacement_error_mm(
        res.displacement, true_disp, warped[ref], spacing_mm=spacing, reference_index=ref)
    out["qc_frames"] = int(np.sum(res.qc))
    segs: list[dict] = []
    if quant is not None and k in getattr(quant, "mbf_maps", {}):
        mbf = np.asarray(quant.mbf_maps[k], dtype=np.float64)
        aha = np.asarray(quant.aha[k])
        flagged = np.asarray(quant.flagged.get(k, np.zeros(aha.shape, bool)), bool)
        mbf = np.where(flagged, np.nan, mbf)  # as the segment table: flagged pixels left out
        sd = metrics.segment_mbf_sd(mbf, aha)
        for s in range(16):
            if np.isfinite(sd[s]):
                vals = mbf[(aha == s + 1) & np.isfinite(mbf)]
                segs.append({"segment": s + 1, "mbf_sd": float(sd[s]),
                             "mbf_mean": float(vals.mean()), "n": int(vals.size)})
        out["mbf_sd"] = float(np.nanmedian(sd)) if np.isfinite(sd).any() else float("nan")
        out["median_mbf"] = metrics.median_mbf(mbf, aha)
        # the true map moved into the corrected frame: r_ref(p) = d_est + d_true o (id + d_est)
        r_ref = metrics.compose_displacement(res.displacement[[ref]], true_disp[[ref]])
        true_mbf = metrics.warp_series(truth[f"s{k}_mbf"][None], r_ref, order=0)[0]
        true_myo = metrics.warp_series((truth[f"s{k}_aha"] > 0)[None], r_ref, order=0)[0] > 0.5
        err = metrics.mbf_error(mbf, true_mbf, true_myo & (aha > 0))
        out["mbf_mae"], out["mbf_bias"] = err.mean_abs, err.bias
    return out, segs


def evaluate_study(
    spec: Mapping,
    methods: Sequence[str],
    custom: Mapping[str, Callable[[SliceSeries], MocoResult]],
    config: Config,
    *,
    motion: str = "breathing",
    n_dynamics: int | None = None,
    quantify: bool = True,
) -> dict:
    """Correct, quantify and measure one study with every method.

    Parameters
    ----------
    spec : mapping
        ``{"seed": int}`` to generate a phantom, or ``{"path": str}`` to read
        an MRD file with its ``.truth.npz``.
    methods : sequence of str
        Method names, in order.
    custom : mapping of str to callable
        ``fn(series) -> MocoResult`` for names that are not (or override)
        built-in methods.
    config : Config
    motion, n_dynamics : keyword-only
        Passed to :func:`perfmoco.phantom.generate_phantom`.
    quantify : bool, keyword-only

    Returns
    -------
    dict
        ``"slices"``: one row per high-res slice and method; ``"segments"``:
        one row per AHA segment, slice and method; ``"studies"``: one row per
        method with runtimes (s) and any error.
    """
    import torch

    from perfmoco.pipeline import stack_locations

    torch.set_num_threads(1)  # one worker = one core
    config = config.with_overrides({"moco.threads": 1})
    study_id, study, truth = _load(spec, motion=motion, n_dynamics=n_dynamics)
    slices, segments, studies = [], [], []
    # once, for every method that takes them: the built-in corrections and the quantification
    corrects = any(n in ("dl", "iterative") and custom.get(n) is None for n in methods)
    locations = stack_locations(study, config) if quantify or corrects else []
    for name in methods:
        row = {"study": study_id, "method": name, "moco_s": float("nan"),
               "quant_s": float("nan"), "error": ""}
        results, quant = None, None
        t0 = time.perf_counter()
        try:
            results = _correct_study(name, study, custom, config, locations)
            row["moco_s"] = time.perf_counter() - t0
        except Exception as exc:  # one failing method must not lose the others
            log.warning("%s: %s failed: %s", study_id, name, exc)
            row["error"] = f"correction failed: {type(exc).__name__}: {exc}"
        if results is not None and quantify:
            quant, row["quant_s"], err = _quantify(study, results, config, locations)
            row["error"] = err
        studies.append(row)
        for i, s in enumerate(study.slices):
            if s.role is not SliceRole.HIGHRES:
                continue
            base = {"study": study_id, "method": name, "slice_index": s.slice_index,
                    "slice": SLICE_NAMES.get(s.slice_index, str(s.slice_index))}
            if results is None:
                slices.append({**base, **_nan_metrics(), "qc_frames": 0})
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # empty masks -> NaN, counted
                vals, segs = _slice_metrics(s, results[i], truth, quant)
            slices.append({**base, **vals})
            segments.extend({**base, **seg} for seg in segs)
    return {"slices": slices, "segments": segments, "studies": studies}


def _quantify(study: PerfusionStudy, results: Sequence[MocoResult], config: Config,
              locations: list):
    from perfmoco.pipeline import StudyResult
    from perfmoco.quant import quantify_study

    corrected = study.replace_slices([
        s.replace(images=r.corrected, pd_images=r.pd_corrected if r.pd_corrected.shape[0]
                  else s.pd_images)
        for s, r in zip(study.slices, results)
    ])
    qc = {s.slice_index: r.qc for s, r in zip(study.slices, results)}
    # the LV as the pipeline's correction locates it (process_study), outside the timing
    hints = StudyResult(study, list(results), lv_locations=locations).lv_hints()
    t0 = time.perf_counter()
    try:  # called as perfmoco.pipeline.process_study calls it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant = quantify_study(
                corrected, config=config.quant, qc=qc,
                displacements={s.slice_index: r.displacement
                               for s, r in zip(study.slices, results)},
                pd_displacements={s.slice_index: r.pd_displacement
                                  for s, r in zip(study.slices, results)},
                lv_hints=hints,
            )
    except Exception as exc:
        log.warning("%s: quantification failed: %s\n%s", study.study_id, exc,
                    traceback.format_exc())
        return None, time.perf_counter() - t0, f"quantification failed: {exc}"
    return quant, time.perf_counter() - t0, ""
