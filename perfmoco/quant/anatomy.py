"""Anatomy of the corrected slices for the MBF step: pools, myocardium, AHA labels.

The blood pools are found again on the corrected series, checked against the
other slices of the stack (:mod:`perfmoco.anatomy.stack`); slices without an RV
insertion take the anterior angle of the nearest slice that has one.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perfmoco.anatomy import find_blood_pools, rv_insertion_points, segment_myocardium
from perfmoco.anatomy.shading import flattened
from perfmoco.anatomy.stack import accept, has_directions, stack_outliers
from perfmoco.config import QuantConfig
from perfmoco.orientation import is_mirrored
from perfmoco.quant.aif import blood_pool_core
from perfmoco.quant.messages import warn
from perfmoco.quant.resolution import series_interpolation
from perfmoco.quant.segments import aha_segments, display_angle, septum_direction
from perfmoco.study import SliceSeries, StudyError

__all__ = ["DEFAULT_ANTERIOR_DEG", "INSERTION_TOLERANCE_DEG", "SliceWork", "aha_labels",
           "insertion_outliers", "slice_anatomy", "stack_pools"]

#: Display angle of the anterior RV insertion assumed when no slice shows the RV.
DEFAULT_ANTERIOR_DEG = 120.0
#: A slice whose RV direction (its insertions' midpoint) lies further than this from the
#: other slices' does not use its own insertions.
INSERTION_TOLERANCE_DEG = 20.0


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
    #: the slice's pixel spacing ``(dy, dx)``, mm: its angles are the patient's
    spacing_mm: tuple[float, float] = (1.0, 1.0)


def stack_pools(highres, config: QuantConfig, msgs: list[str], hints=None) -> dict:
    """Blood pools of every slice; an LV far from the other slices' searched again near them,
    and one far from where the motion correction found it (``hints``, see
    :func:`slice_anatomy`) searched again there.
    """
    found = {}
    for s in highres:
        try:
            found[s.slice_index] = find_blood_pools(s.images, times_s=s.times_s,
                                                    spacing_mm=s.pixel_spacing_mm)
        except StudyError as exc:
            warn(msgs, f"{s.name}: {exc}; no MBF map for this slice")
    for s in highres:  # first each slice against its own, independent finding
        _near_hint(s, found, (hints or {}).get(s.slice_index), config, msgs)
    centres = [found[s.slice_index].lv_centre if s.slice_index in found else None
               for s in highres]
    far = stack_outliers(highres, centres, tolerance_mm=config.stack_lv_tolerance_mm)
    for i, (near, dist) in far.items():
        s = highres[i]
        _search_near(s, found, near, dist, config, msgs,
                     f"{s.name}: the LV found on its own lay {dist:.0f} mm from the other "
                     "slices' LV; the pool near theirs was taken")
    return found


def _search_near(s, found: dict, near, dist: float, config: QuantConfig, msgs: list[str],
                 text: str, what: str = "the other slices' LV") -> None:
    """``s``'s LV searched again within the stack tolerance of ``near`` (pixels), taken
    where clearly nearer than the one found (``dist`` mm off), and ``text`` said.
    """
    try:
        again = find_blood_pools(s.images, times_s=s.times_s, spacing_mm=s.pixel_spacing_mm,
                                 near_yx=near, near_mm=config.stack_lv_tolerance_mm)
    except StudyError:
        return
    if accept(s, again.lv_centre, near, dist, what=what):
        found[s.slice_index] = again
        warn(msgs, text)


def _near_hint(s, found: dict, hint, config: QuantConfig, msgs: list[str]) -> None:
    """Search ``s``'s LV again near ``hint`` where the one found lies further than the
    stack tolerance from it (the corrected series' chest wall, sliding with deep breaths
    against the aligned heart, can read as a bolus: 12642 a, two of three slices).
    """
    own = found.get(s.slice_index)
    tol = config.stack_lv_tolerance_mm
    if hint is None or own is None or tol <= 0:
        return
    sy, sx = s.pixel_spacing_mm
    dist = float(np.hypot((own.lv_centre[0] - hint[0]) * sy, (own.lv_centre[1] - hint[1]) * sx))
    if dist > tol:
        _search_near(s, found, hint, dist, config, msgs,
                     f"{s.name}: the LV found on the corrected series lay {dist:.0f} mm from "
                     "where the motion correction found it; the pool near that was taken",
                     what="where the motion correction found it")


def slice_anatomy(highres: list[SliceSeries], config: QuantConfig,
                  msgs: list[str], hints: dict | None = None) -> dict[int, SliceWork]:
    """Pools, myocardium and RV insertion of every high-resolution slice that has them.

    ``hints``: per ``slice_index``, where the motion correction found the LV (pixels of
    the corrected series), or None.
    """
    work: dict[int, SliceWork] = {}
    # found on the dynamics with the coils' shading taken out (their PD frames' profile)
    highres = [s.replace(images=flattened(s)) for s in highres]
    found = stack_pools(highres, config, msgs, hints)
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
                                      mirrored=bool(mirrored), lv_mask=pools.lv_mask)
        except StudyError:
            ins = None
        work[s.slice_index] = SliceWork(s.slice_index, myo, pools.lv_centre, ins,
                                         blood_pool_core(s.images, pools.lv_mask,
                                                         pools.peak_lv_index, scale=scale),
                                         pools.peak_lv_index, pools.lv_mask | pools.rv_mask,
                                         mirrored, pools.rv_mask, scale,
                                         tuple(s.pixel_spacing_mm))
    if not work:
        raise StudyError("no high-resolution slice with a detectable LV and myocardium")
    return work


def _angle_diff(a: float, b: float) -> float:
    """Circular distance of two angles, degrees (0..180)."""
    return abs((a - b + 180.0) % 360.0 - 180.0)


def _same_orientation(slices: list[SliceSeries]) -> bool:
    """Whether the slices share their in-plane axes (one stack, displayed alike)."""
    geo = [s.geometry if has_directions(s.geometry) else None for s in slices]
    if all(g is None for g in geo):
        return True  # bare arrays of one stack (no header, or its directions zeroed)
    if any(g is None for g in geo):
        return False
    cos_max = np.cos(np.radians(10.0))
    return all(float(np.dot(g.read_dir, geo[0].read_dir)) >= cos_max
               and float(np.dot(g.phase_dir, geo[0].phase_dir)) >= cos_max for g in geo[1:])


def insertion_outliers(highres: list[SliceSeries], work: dict[int, SliceWork]) -> dict:
    """Slices whose RV insertions disagree with the rest of the stack.

    ``{slice_index: (its RV direction, the others')}``, display degrees: a slice
    whose RV direction (the midpoint of the septal arc between its two insertions,
    :func:`_rv_direction`) lies more than :data:`INSERTION_TOLERANCE_DEG` from that of
    at least two other slices that agree with each other within it.  The direction,
    not the anterior insertion alone: toward the apex the arc the RV covers widens or
    narrows about it (phantom 12990: anterior 143 -> 110 degrees from mid to apex, the
    RV's direction 205 -> 196), while a slice whose RV was found only in part (its
    thin, dim tip near the apex left out: 11392, anterior 139-148 degrees against
    96-100) moves one end and the direction half as far.  Only for slices displayed
    alike (same in-plane axes and mirroring).
    """
    with_ins = [s for s in highres if s.slice_index in work
                and work[s.slice_index].insertion is not None]
    if len(with_ins) < 3 or not _same_orientation(with_ins) or len(
            {work[s.slice_index].mirrored for s in with_ins}) > 1:
        return {}
    ang = {s.slice_index: _rv_direction(work[s.slice_index]) for s in with_ins}
    out = {}
    for k, a in ang.items():
        others = [b for j, b in ang.items() if j != k]
        if max(_angle_diff(b, c) for b in others for c in others) > INSERTION_TOLERANCE_DEG:
            continue  # the others disagree among themselves: nothing to go by
        mean = float(np.degrees(np.arctan2(np.mean(np.sin(np.radians(others))),
                                           np.mean(np.cos(np.radians(others))))) % 360.0)
        if _angle_diff(a, mean) > INSERTION_TOLERANCE_DEG:
            out[k] = (a, mean)
    return out if len(out) < len(ang) / 2 else {}


def _rv_direction(w: SliceWork) -> float:
    """Display angle (degrees) of the midpoint of the septal arc from a slice's anterior
    to its inferior RV insertion, the way :func:`aha_segments` runs (clockwise where
    the slice is mirrored).
    """
    ant, inf = (float(a) for a in display_angle(np.asarray(w.insertion, np.float64), w.centre,
                                                 w.spacing_mm))
    sense = septum_direction(ant, inf, w.mirrored)
    return (ant + sense * ((sense * (inf - ant)) % 360.0) / 2.0) % 360.0


def _anterior_angle(w: SliceWork) -> float:
    """Display angle (degrees) of a slice's anterior RV insertion about its LV centre."""
    return float(display_angle(w.insertion[0], w.centre, w.spacing_mm))


def aha_labels(highres: list[SliceSeries], work: dict[int, SliceWork], levels: list[str],
               msgs: list[str]) -> tuple[dict, dict]:
    """AHA segment maps and RV insertion points (NaN where assumed) per ``slice_index``.

    A slice whose insertion disagrees with the stack's (:func:`insertion_outliers`)
    takes the anterior angle of the nearest slice that agrees, as one without an
    RV does.
    """
    outliers = insertion_outliers(highres, work)
    for s in highres:
        if s.slice_index in outliers:
            own, theirs = outliers[s.slice_index]
            warn(msgs, f"{s.name}: RV found in the direction {own:.0f} deg (display angle, "
                       f"its insertions' midpoint), {_angle_diff(own, theirs):.0f} deg from the "
                       f"other slices' ({theirs:.0f} deg); the nearest slice's anterior "
                       "insertion is used for the AHA segments")
    # the insertions used: each slice's own, where it has one that agrees with the stack
    used = {k: w.insertion for k, w in work.items()
            if w.insertion is not None and k not in outliers}
    angles = {k: _anterior_angle(work[k]) for k in used}
    aha_maps, ins_out = {}, {}
    for lvl, s in zip(levels, highres):
        w = work.get(s.slice_index)
        if w is None:
            continue
        if s.slice_index in used:
            ins_arg, ins_out[s.slice_index] = w.insertion, w.insertion
        else:
            near = min(angles, key=lambda k: abs(k - s.slice_index)) if angles else None
            ins_arg = angles[near] if near is not None else DEFAULT_ANTERIOR_DEG
            ins_out[s.slice_index] = np.full((2, 2), np.nan)
            if s.slice_index not in outliers:
                warn(msgs, f"{s.name}: no RV insertion found; anterior insertion at "
                            f"{ins_arg:.0f} deg (display angle) assumed for the AHA segments")
        aha_maps[s.slice_index] = aha_segments(w.myo, w.centre, ins_arg, level=lvl,
                                               mirrored=w.mirrored, spacing_mm=w.spacing_mm)
    return aha_maps, ins_out
