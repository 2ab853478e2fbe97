"""What the QA report and the batch summary show of one study, as plain arrays.

:func:`slice_views` turns a :class:`~perfmoco.pipeline.StudyResult` into one
:class:`SliceView` per slice: the original and corrected dynamics, QC flags,
a myocardium mask (from the quantification when there is one, else found
automatically with :mod:`perfmoco.anatomy`, else a ring around the image
centre), the myocardial time-intensity curves before and after correction,
and the MBF / AHA maps.  Nothing here draws or writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from perfmoco.quant.segments import SEGMENT_NAMES
from perfmoco.study import SliceRole, SliceSeries, StudyError

if TYPE_CHECKING:
    from perfmoco.pipeline import StudyResult

__all__ = ["SliceView", "mbf_stats", "myocardium_roi", "slice_metrics", "slice_views"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SliceView:
    """One slice of a study as the report shows it.

    Attributes
    ----------
    series : SliceSeries
        The slice as received.
    corrected : ndarray, shape (T, Y, X), float32, or None
        Motion-corrected dynamics; ``None`` when the slice was not corrected.
    qc : ndarray, shape (T,), bool, or None
        QC-flagged dynamics; ``None`` when unknown.
    myocardium : ndarray, shape (Y, X), bool
        Mask the TICs are averaged over (may be empty).
    myo_source : str
        Where ``myocardium`` came from, for the page.
    lv_centre : tuple of 2 float
        ``(y, x)`` in pixels.
    tic_before, tic_after : ndarray, shape (T,), float64
        Mean myocardial signal per dynamic before / after correction
        (``tic_after`` is ``None`` when the slice was not corrected).
    mbf : ndarray, shape (Y, X), float, ml/min/g, or None
    aha : ndarray, shape (Y, X), int, or None
        AHA segment labels, 0 outside the myocardium.
    flagged : ndarray, shape (Y, X), bool, or None
        Pixels whose MBF the quantification marked unreliable.
    """

    series: SliceSeries
    corrected: np.ndarray | None
    qc: np.ndarray | None
    myocardium: np.ndarray
    myo_source: str
    lv_centre: tuple[float, float]
    tic_before: np.ndarray
    tic_after: np.ndarray | None
    mbf: np.ndarray | None = None
    aha: np.ndarray | None = None
    flagged: np.ndarray | None = None
    level: str = ""

    def mbf_mask(self) -> np.ndarray:
        """Pixels whose MBF counts: the AHA myocardium (else the TIC mask), not flagged."""
        mask = self.aha > 0 if self.aha is not None else self.myocardium.copy()
        if self.flagged is not None and self.flagged.shape == mask.shape:
            mask &= ~self.flagged.astype(bool)
        return mask

    @property
    def name(self) -> str:
        """The slice's display name, e.g. ``'slice 2 (highres)'``, with its level where the
        segment table gives one (``'slice 2 (highres), apical'``).
        """
        return self.series.name + (f", {self.level}" if self.level else "")


def _get_map(container: Any, key: int) -> np.ndarray | None:
    if container is None:
        return None
    try:
        value = container.get(key) if hasattr(container, "get") else container[key]
    except (KeyError, IndexError, TypeError):
        return None
    return None if value is None else np.asarray(value)


def _ring(shape: tuple[int, int], centre, r_in: float, r_out: float) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    rho = np.hypot(yy - centre[0], xx - centre[1])
    return (rho > r_in) & (rho <= r_out)


def myocardium_roi(
    series: SliceSeries, *, quant: Any = None
) -> tuple[np.ndarray, tuple[float, float], str]:
    """A myocardium mask for the TICs of one slice.

    Parameters
    ----------
    series : SliceSeries
        The slice (its original dynamics are used to find the LV).
    quant : QuantResult, keyword-only, optional
        When it holds ``myocardium[slice_index]``, that mask is used.

    Returns
    -------
    mask : ndarray, shape (Y, X), bool
    centre : tuple of 2 float
        LV centre ``(y, x)``, pixels.
    source : str
        ``'quantification'``, ``'automatic (blood pools)'``, ``'ring around the LV'``
        or ``'ring around the image centre'``.
    """
    shape = series.shape
    if series.role is SliceRole.HIGHRES and quant is not None:
        myo = _get_map(getattr(quant, "myocardium", None), series.slice_index)
        if myo is not None and myo.shape == shape and myo.any():
            yy, xx = np.nonzero(myo)
            return myo.astype(bool), (float(yy.mean()), float(xx.mean())), "quantification"
    from perfmoco.anatomy import find_blood_pools, segment_myocardium
    from perfmoco.anatomy.shading import flattened

    images = flattened(series)  # the coils' shading taken out (PD frames' profile)
    try:
        pools = find_blood_pools(images, times_s=series.times_s,
                                 spacing_mm=series.pixel_spacing_mm)
    except (StudyError, ValueError) as exc:
        log.info("%s: no LV found (%s); ring around the image centre", series.name, exc)
        centre = ((shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0)
        r = min(shape) / 8.0
        return _ring(shape, centre, r, 1.6 * r), centre, "ring around the image centre"
    if series.role is SliceRole.AIF:  # the AIF slice: the LV blood pool itself
        return pools.lv_mask, pools.lv_centre, "LV blood pool (automatic)"
    try:
        myo = segment_myocardium(images, pools, spacing_mm=series.pixel_spacing_mm)
        if myo.any():
            return myo, pools.lv_centre, "automatic (blood pools)"
    except (StudyError, ValueError) as exc:
        log.info("%s: myocardium not segmented (%s)", series.name, exc)
    r = math.sqrt(pools.lv_mask.sum() / math.pi)
    return _ring(shape, pools.lv_centre, r, r + 8.0 / min(series.pixel_spacing_mm)), (
        pools.lv_centre
    ), "ring around the LV"


def _tic(images: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if not mask.any():
        return np.full(images.shape[0], np.nan)
    return images[:, mask].astype(np.float64).mean(axis=1)


def _levels(rows) -> dict[int, str]:
    """Each slice's level (basal, mid, apical) by the AHA segments its table rows name."""
    out: dict[int, str] = {}
    for r in rows:
        try:  # the AHA name's first word: "basal anterior"
            out.setdefault(int(r["slice"]), SEGMENT_NAMES[int(r["segment"])].split()[0])
        except (KeyError, TypeError, ValueError):
            continue
    return out


def slice_views(result: StudyResult) -> list[SliceView]:
    """One :class:`SliceView` per slice of the study (high-res by index, then AIF).

    Parameters
    ----------
    result : StudyResult
        Any result, including one whose correction or quantification failed.

    Returns
    -------
    list of SliceView
    """
    quant = result.quant
    moco = list(result.moco) + [None] * (len(result.study.slices) - len(result.moco))
    pairs = sorted(
        zip(result.study.slices, moco), key=lambda p: (p[0].role is SliceRole.AIF, p[0].slice_index)
    )
    levels = _levels(getattr(quant, "segments", None) or [])
    views = []
    for s, m in pairs:
        mask, centre, source = myocardium_roi(s, quant=quant)
        corrected = None if m is None else np.asarray(m.corrected, np.float32)
        if corrected is not None and corrected.shape != s.images.shape:
            corrected = None
        qc = None if m is None or m.qc is None else np.asarray(m.qc, bool)
        hi = s.role is SliceRole.HIGHRES
        views.append(
            SliceView(
                series=s,
                corrected=corrected,
                qc=qc,
                myocardium=mask,
                myo_source=source,
                lv_centre=centre,
                tic_before=_tic(s.images, mask),
                tic_after=None if corrected is None else _tic(corrected, mask),
                mbf=_get_map(getattr(quant, "mbf_maps", None), s.slice_index) if hi else None,
                aha=_get_map(getattr(quant, "aha", None), s.slice_index) if hi else None,
                flagged=_get_map(getattr(quant, "flagged", None), s.slice_index) if hi else None,
                level=levels.get(s.slice_index, "") if hi else "",
            )
        )
    return views


def _smoothness(images: np.ndarray, mask: np.ndarray, centre) -> float:
    from perfmoco.metrics import roi_from_mask, tic_smoothness

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flat ROIs give NaN; the table shows it
        try:
            c, radius = roi_from_mask(mask) if mask.any() else (centre, 20.0)
            return tic_smoothness(images, centre=c, radius_px=radius)
        except ValueError:
            return float("nan")


def slice_metrics(view: SliceView) -> dict[str, Any]:
    """Per-slice numbers for the summary: QC counts, TIC smoothness, MBF.

    Returns
    -------
    dict
        ``slice``, ``role``, ``n_dynamics``, ``n_pd``, ``corrected``,
        ``qc_flagged`` (list of dynamics), ``tic_smoothness_before`` /
        ``_after`` (paper metric, lower is smoother; NaN when unknown) and
        ``mbf_mean`` / ``mbf_median`` / ``mbf_sd`` (ml/min/g, NaN without a map),
        ``interval_s`` (the dynamics' median interval), ``saturation_time_ms`` (NaN:
        not known) and ``saturation_time_source``.
    """
    s = view.series
    out: dict[str, Any] = {
        "slice": s.slice_index,
        "role": s.role.value,
        "n_dynamics": s.n_dynamics,
        "n_pd": int(s.pd_images.shape[0]),
        "interval_s": s.interval_s,
        "saturation_time_ms": 1000.0 * s.saturation_time_s if s.saturation_time_s
        else float("nan"),
        "saturation_time_source": s.saturation_time_source,
        "corrected": view.corrected is not None,
        "qc_flagged": [] if view.qc is None else np.flatnonzero(view.qc).tolist(),
        "myocardium": view.myo_source,
        "tic_smoothness_before": _smoothness(s.images, view.myocardium, view.lv_centre),
        "tic_smoothness_after": float("nan")
        if view.corrected is None
        else _smoothness(view.corrected, view.myocardium, view.lv_centre),
    }
    out.update(mbf_stats(view.mbf, view.mbf_mask()))
    return out


def mbf_stats(mbf: np.ndarray | None, mask: np.ndarray | None) -> dict[str, float]:
    """Mean, median and SD of the finite MBF values in ``mask``, ml/min/g (NaN if none)."""
    nan = float("nan")
    if mbf is None or mask is None or mbf.shape != mask.shape:
        return {"mbf_mean": nan, "mbf_median": nan, "mbf_sd": nan, "mbf_n": 0}
    v = mbf[mask.astype(bool) & np.isfinite(mbf)]
    if v.size == 0:
        return {"mbf_mean": nan, "mbf_median": nan, "mbf_sd": nan, "mbf_n": 0}
    return {
        "mbf_mean": float(v.mean()),
        "mbf_median": float(np.median(v)),
        "mbf_sd": float(v.std()),
        "mbf_n": int(v.size),
    }
