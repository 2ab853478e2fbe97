"""The AIF slice's pre-contrast frames moved with the breathing the tissue slices saw.

The low-resolution AIF slice is acquired in the same heartbeats as the
high-resolution slices, a few hundred milliseconds apart, so its heart moves
with the same breathing.  Its own images cannot say where its pre-contrast
frames lie: the short saturation time leaves them nearly noise, the PCA
references align them only with each other, and the block alignment
(:mod:`perfmoco.moco.baseline`) trusts a move only where even and odd frames
agree.  On 17 fresh breathing phantoms (12170-12186) that block sat
0.5-4.6 mm (mean 1.8 mm) off the reference frame after the correction, against
0.3-0.8 mm for the AIF slice's later frames, and its myocardial Dice was
0.68-0.97.

Here each pre-contrast frame of the AIF slice is moved to where a tissue
slice's correction says the heart was in that heartbeat: the corrections'
mean displacement about the LV (patient space, mm) per frame, the AIF
slice's minus the tissue slice's, is constant over the late frames when both
are right and the two slices move together; that constant carries the tissue
slice's track over to the AIF slice.  The tissue slice whose track agrees
best over the late frames is used, and only where it agrees within
``moco.aif_follow_spread_mm`` (median distance): a slice that breathes
otherwise (another part of the heart, an AIF slice at another angle) is not
followed.  Same phantoms: that block's residual 1.82 -> 0.83 mm (mean).

The moved frames' QC flags are then the tissue slice's for the same heartbeats: the
AIF slice's own flags on them judged the placing that following replaces, and the
surface-coil measurement of the AIF (:mod:`perfmoco.quant.coils`) leaves flagged
pre-contrast frames out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from perfmoco.anatomy.stack import has_directions
from perfmoco.moco.precontrast import MIN_LATE, baseline_length, block_length
from perfmoco.moco.result import MocoResult
from perfmoco.moco.transforms import identity_grid, sample
from perfmoco.study import SliceGeometry, SliceSeries

__all__ = ["follow_tissue", "follow_tissue_study", "heart_track_mm"]

log = logging.getLogger(__name__)


def _disc(shape, centre_yx, spacing_mm, radius_mm: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    dy = (yy - centre_yx[0]) * spacing_mm[0]
    dx = (xx - centre_yx[1]) * spacing_mm[1]
    return dy * dy + dx * dx <= radius_mm * radius_mm


def _axes(series: SliceSeries) -> np.ndarray:
    """Patient-space unit vectors of the image's y (phase) and x (read) axes, ``(2, 3)``.

    The default geometry's where the series has none or its header's are zeros
    (:func:`perfmoco.anatomy.stack.has_directions`): such slices share one grid.
    """
    g = series.geometry if has_directions(series.geometry) else SliceGeometry()
    return np.array([g.phase_dir, g.read_dir], np.float64)


def heart_track_mm(series: SliceSeries, displacement, centre_yx, *, radius_mm: float) -> np.ndarray:
    """Each frame's correction about the LV as a patient-space vector, ``(T, 3)`` mm.

    The median of the pull-back displacement over a disc of ``radius_mm`` on
    the LV centre (full-FOV pixels ``centre_yx``), in mm along the image axes,
    turned into patient space with the slice's geometry (the default geometry's
    axes where the series has none).
    """
    d = np.asarray(displacement, np.float64)
    disc = _disc(d.shape[2:], centre_yx, series.pixel_spacing_mm, radius_mm)
    if not disc.any():
        raise ValueError(f"{series.name}: LV centre {tuple(centre_yx)} outside the image")
    px = np.median(d[:, :, disc], axis=2)  # (T, 2): y, x
    mm = px * np.asarray(series.pixel_spacing_mm, np.float64)[None]
    return mm @ _axes(series)


def _late(t: int) -> slice:
    return slice(t - max(MIN_LATE, t // 2), t)


def follow_tissue(aif: SliceSeries, result: MocoResult, centre_yx,
                  tissue: Sequence[tuple[SliceSeries, MocoResult, tuple[float, float]]], *,
                  radius_mm: float, spread_mm: float, block_radius_mm: float,
                  resample: str = "bicubic") -> MocoResult:
    """The AIF slice's correction with its pre-contrast frames on a tissue slice's track.

    Parameters
    ----------
    aif : SliceSeries
        The low-resolution AIF slice as acquired.
    result : MocoResult
        Its correction.
    centre_yx : tuple of 2 float
        Its LV centre, full-FOV pixels.
    tissue : sequence of (SliceSeries, MocoResult, centre_yx)
        The high-resolution slices, their corrections and LV centres; series
        with another number of dynamics are passed over.
    radius_mm : float, keyword-only
        Disc on the LV over which the corrections are read (``moco.baseline_radius_mm``).
    spread_mm : float, keyword-only
        Largest median distance over the late frames between the AIF slice's
        track and a tissue slice's (less their constant offset) still followed
        (``moco.aif_follow_spread_mm``).
    block_radius_mm : float, keyword-only
        Disc on the AIF slice's LV whose first enhancement ends the pre-contrast
        block (``moco.baseline_radius_aif_mm``; :func:`.precontrast.baseline_length`).
    resample : {"bicubic", "bilinear"}, keyword-only
        How the moved frames are resampled from the originals (``moco.resample``).

    Returns
    -------
    MocoResult
        ``result`` itself where nothing is followed; otherwise with the
        pre-contrast frames' displacement and corrected images replaced, and their
        QC flags kept only where the followed slice's are set too.
    """
    t = result.corrected.shape[0]
    corrected = torch.from_numpy(np.ascontiguousarray(result.corrected, np.float32))
    disc = torch.from_numpy(_disc(corrected.shape[1:], centre_yx, aif.pixel_spacing_mm,
                                  block_radius_mm))
    n = block_length(baseline_length(corrected, disc))
    if n == 0 or t < n + 2 * MIN_LATE:
        return result
    own = heart_track_mm(aif, result.displacement, centre_yx, radius_mm=radius_mm)
    best = None
    for s, r, c in tissue:
        if r is None or r.displacement.shape[0] != t:
            continue
        track = heart_track_mm(s, r.displacement, c, radius_mm=radius_mm)
        offset = np.median((own - track)[_late(t)], axis=0)
        spread = float(np.median(np.linalg.norm((own - track - offset)[_late(t)], axis=1)))
        if best is None or spread < best[0]:
            best = (spread, s.name, track + offset, r.qc)
    if best is None or best[0] > spread_mm:
        if best is not None:
            log.info("%s: pre-contrast frames not moved with %s (their late frames' tracks "
                     "differ by %.1f mm)", aif.name, best[1], best[0])
        return result
    spread, name, target, tissue_qc = best
    shift_px = ((target - own)[:n] @ _axes(aif).T) / np.asarray(aif.pixel_spacing_mm)[None]
    shift = torch.from_numpy(shift_px.astype(np.float32))[:, :, None, None]  # (n, 2, 1, 1)
    d = torch.from_numpy(np.ascontiguousarray(result.displacement[:n], np.float32))
    grid = identity_grid(tuple(d.shape[2:]))[None]
    moved = sample(d, grid + shift, padding="border") + shift  # d'(p) = s + d(p + s)
    images = torch.from_numpy(np.ascontiguousarray(aif.images[:n], np.float32))
    frames = sample(images, grid + moved, padding="border", mode=resample)
    if resample == "bicubic":  # no overshoot below zero (magnitude images) or below
        frames = frames.clamp_min(min(0.0, float(images.min())))  # a signed series' least
    disp = result.displacement.copy()
    disp[:n] = moved.numpy()
    out = result.corrected.copy()
    out[:n] = frames.numpy()
    mm = np.linalg.norm(shift_px * np.asarray(aif.pixel_spacing_mm)[None], axis=1)
    log.info("%s: pre-contrast dynamics 0-%d moved by %.1f-%.1f mm with %s's breathing (their "
             "late frames' tracks agree within %.1f mm)", aif.name, n - 1, mm.min(), mm.max(),
             name, spread)
    qc = _followed_qc(result.qc, tissue_qc, n)
    if qc is not result.qc:
        log.info("%s: QC flags of pre-contrast dynamics %s cleared: they now sit where %s's "
                 "(unflagged) correction puts the heart", aif.name,
                 np.flatnonzero(result.qc[:n] & ~qc[:n]).tolist(), name)
    return result._replace(corrected=out, displacement=disp, qc=qc)


def _followed_qc(qc, tissue_qc, n: int):
    """The AIF slice's QC flags once its first ``n`` frames follow a tissue slice.

    The flags of those frames judged the AIF slice's own alignment of them, which
    following replaces (dark pre-contrast frames that its correction could not place:
    12998 a, cut to a tight field of view, frames 0, 1, 4-6 flagged, 2-4 mm off before
    and 0.1-0.8 mm after).  A frame stays flagged where the tissue slice's is flagged
    too (a mistriggered heartbeat, the same for every slice); ``qc`` itself where
    nothing changes.
    """
    if qc is None or tissue_qc is None or np.shape(tissue_qc) != np.shape(qc):
        return qc
    out = np.asarray(qc, bool).copy()
    out[:n] &= np.asarray(tissue_qc, bool)[:n]
    return qc if np.array_equal(out, qc) else out


def follow_tissue_study(slices: Sequence[SliceSeries], results: Sequence[MocoResult | None],
                        centres: Sequence | None = None, *, config) -> list[MocoResult | None]:
    """:func:`follow_tissue` for every AIF slice of a study, with its high-resolution slices.

    Parameters
    ----------
    slices : sequence of SliceSeries
        The study's slices as acquired.
    results : sequence of MocoResult or None
        Their corrections, in the same order (None: failed, passed over).
    centres : sequence, optional
        Each slice's LV (an ``LvLocation`` or a ``(y, x)`` pair in full-FOV
        pixels, or None: found here, :func:`perfmoco.moco.preprocess.locate_lv`).
    config : MocoConfig, keyword-only
        ``aif_follow_tissue``, ``aif_follow_spread_mm``, ``baseline_radius_mm``,
        ``baseline_radius_aif_mm``, ``resample``.

    Returns
    -------
    list of MocoResult or None
    """
    from perfmoco.moco.preprocess import locate_lv
    from perfmoco.study import SliceRole

    out = list(results)
    aifs = [i for i, s in enumerate(slices) if s.role is SliceRole.AIF and out[i] is not None]
    high = [i for i, s in enumerate(slices) if s.role is not SliceRole.AIF and out[i] is not None]
    if not config.aif_follow_tissue or not aifs or not high:
        return out
    cs = list(centres) if centres is not None else [None] * len(slices)

    def centre(i):
        c = cs[i] if cs[i] is not None else locate_lv(slices[i])
        return tuple(getattr(c, "centre_yx", c))

    tissue = [(slices[i], out[i], centre(i)) for i in high]
    for i in aifs:
        out[i] = follow_tissue(slices[i], out[i], centre(i), tissue,
                               radius_mm=config.baseline_radius_mm,
                               spread_mm=config.aif_follow_spread_mm,
                               block_radius_mm=config.baseline_radius_aif_mm,
                               resample=config.resample)
    return out
