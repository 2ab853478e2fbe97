"""Anatomy of the corrected slices for the MBF step: pools, myocardium, AHA labels.

The blood pools are found again on the corrected series, checked against the
other slices of the stack (:mod:`perfmoco.anatomy.stack`); slices without an RV
insertion take the anterior angle of the nearest slice that has one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perfmoco.anatomy import find_blood_pools, rv_insertion_points, segment_myocardium
from perfmoco.anatomy.stack import accept, stack_outliers
from perfmoco.config import QuantConfig
from perfmoco.orientation import is_mirrored
from perfmoco.quant.aif import blood_pool_core
from perfmoco.quant.messages import warn
from perfmoco.quant.resolution import series_interpolation
from perfmoco.quant.segments import aha_segments, display_angle
from perfmoco.study import SliceSeries, StudyError

__all__ = ["DEFAULT_ANTERIOR_DEG", "SliceWork", "aha_labels", "slice_anatomy", "stack_pools"]

#: Display angle of the anterior RV insertion assumed when no slice shows the RV.
DEFAULT_ANTERIOR_DEG = 120.0


@dataclasses.dataclass
class SliceWork:
    """What the MBF step needs to know of one slice's anatomy."""

    index: int
    myo: np.ndarray
    centre: tuple[float, float]
    insertion: np.ndarray | None
    lv_core: np.ndarray
    peak_lv: int
    blood: np.ndarray
    mirrored: bool | None  #: from the geometry; None: unknown
    rv: np.ndarray
    #: display pixels per acquired pixel (:mod:`perfmoco.quant.resolution`)
    pixel_scale: float = 1.0


def stack_pools(highres, config: QuantConfig, msgs: list[str]) -> dict:
    """Blood pools of every slice; an LV far from the other slices' searched again near them."""
    found = {}
    for s in highres:
        try:
            found[s.slice_index] = find_blood_pools(s.images, times_s=s.times_s,
                                                    spacing_mm=s.pixel_spacing_mm)
        except StudyError as exc:
            warn(msgs, f"{s.name}: {exc}; no MBF map for this slice")
    centres = [found[s.slice_index].lv_centre if s.slice_index in found else None
               for s in highres]
    far = stack_outliers(highres, centres, tolerance_mm=config.stack_lv_tolerance_mm)
    for i, (near, dist) in far.items():
        s = highres[i]
        try:
            again = find_blood_pools(s.images, times_s=s.times_s, spacing_mm=s.pixel_spacing_mm,
                                     near_yx=near, near_mm=config.stack_lv_tolerance_mm)
        except StudyError:
            continue
        if accept(s, again.lv_centre, near, dist):
            found[s.slice_index] = again
            warn(msgs, f"{s.name}: the LV found on its own lay {dist:.0f} mm from the other "
                        "slices' LV; the pool near theirs was taken")
    return found


def slice_anatomy(highres: list[SliceSeries], config: QuantConfig,
                  msgs: list[str]) -> dict[int, SliceWork]:
    """Pools, myocardium and RV insertion of every high-resolution slice that has them."""
    work: dict[int, SliceWork] = {}
    found = stack_pools(highres, config, msgs)
    for s in highres:
        pools = found.get(s.slice_index)
        if pools is None:
            continue
        try:
            myo = segment_myocardium(s.images, pools, spacing_mm=s.pixel_spacing_mm)
        except StudyError as exc:
            warn(msgs, f"{s.name}: {exc}; no MBF map for this slice")
            continue
        mirrored = is_mirrored(s.geometry)
        scale = series_interpolation(s, config.interpolation)
        try:
            ins = rv_insertion_points(myo, pools.rv_mask, pools.lv_centre,
                                      mirrored=bool(mirrored))
        except StudyError:
            ins = None
        work[s.slice_index] = SliceWork(s.slice_index, myo, pools.lv_centre, ins,
                                         blood_pool_core(s.images, pools.lv_mask,
                                                         pools.peak_lv_index, scale=scale),
                                         pools.peak_lv_index, pools.lv_mask | pools.rv_mask,
                                         mirrored, pools.rv_mask, scale)
    if not work:
        raise StudyError("no high-resolution slice with a detectable LV and myocardium")
    return work


def aha_labels(highres: list[SliceSeries], work: dict[int, SliceWork], levels: list[str],
               msgs: list[str]) -> tuple[dict, dict]:
    """AHA segment maps and RV insertion points (NaN where assumed) per ``slice_index``."""
    angles = {k: display_angle(w.insertion[0], w.centre) for k, w in work.items()
              if w.insertion is not None}
    aha_maps, ins_out = {}, {}
    for lvl, s in zip(levels, highres):
        w = work.get(s.slice_index)
        if w is None:
            continue
        if w.insertion is not None:
            ins_arg, ins_out[s.slice_index] = w.insertion, w.insertion
        else:
            near = min(angles, key=lambda k: abs(k - s.slice_index)) if angles else None
            ins_arg = angles[near] if near is not None else DEFAULT_ANTERIOR_DEG
            ins_out[s.slice_index] = np.full((2, 2), np.nan)
            warn(msgs, f"{s.name}: no RV insertion found; anterior insertion at "
                        f"{ins_arg:.0f} deg (display angle) assumed for the AHA segments")
        aha_maps[s.slice_index] = aha_segments(w.myo, w.centre, ins_arg, level=lvl,
                                               mirrored=w.mirrored)
    return aha_maps, ins_out
