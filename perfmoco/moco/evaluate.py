"""Ground-truth and image metrics of a motion correction (validation, benchmark).

Thin wrappers around :mod:`perfmoco.metrics` that score one
:class:`MocoResult` against the phantom's true myocardium masks.
"""

from __future__ import annotations

import numpy as np

from perfmoco.metrics._common import TIC_MARGIN_PX, roi_from_mask, warp_series
from perfmoco.metrics.paper import dice_around_peak, tic_smoothness
from perfmoco.metrics.truth import (
    dice_all_dynamics,
    lv_centroid_residual_mm,
    true_masks_corrected,
)
from perfmoco.moco.result import MocoResult
from perfmoco.study import SliceSeries

__all__ = ["corrected_true_masks", "truth_metrics"]


def corrected_true_masks(truth: dict, displacement) -> tuple[np.ndarray, np.ndarray | None]:
    """Each frame's true myocardium in the corrected frame: ``(binary, soft)``.

    With ``motion_free_mask`` and ``displacement`` in ``truth`` (:func:`.data.slice_truth`)
    the masks are rendered once from the motion-free anatomy
    (:func:`perfmoco.metrics.true_masks_corrected`; ``soft`` their 0..1 values);
    otherwise the binary per-frame ``myo_masks`` are warped (``soft`` None).
    """
    if truth.get("motion_free_mask") is not None and truth.get("displacement") is not None:
        soft = true_masks_corrected(truth["motion_free_mask"], displacement,
                                    truth["displacement"])
        return soft > 0.5, soft
    masks = np.asarray(truth["myo_masks"], np.float32)
    return warp_series(masks, displacement) >= 0.5, None


def truth_metrics(result: MocoResult, truth: dict, series: SliceSeries, *,
                  tic_margin_px: float = TIC_MARGIN_PX) -> dict[str, float]:
    """Score a correction against the true myocardium masks.

    Parameters
    ----------
    result : MocoResult
    truth : dict
        ``myo_masks`` ``(T, Y, X)`` bool (myocardium as moved); optionally
        ``motion_free_mask`` ``(Y, X)`` bool with ``displacement``
        ``(T, 2, Y, X)`` (the true motion; then each frame's mask is rendered
        once in the corrected frame, :func:`perfmoco.metrics.true_masks_corrected`)
        and ``peak_index`` (peak-LV dynamic; default the frame of maximum mean
        signal inside the LV ROI); optionally ``noise_free`` ``(T, Y, X)``, the
        phantom's frames without image noise (as moved).
    series : SliceSeries
        The uncorrected series (for the TIC smoothness and the spacing).
    tic_margin_px : float, keyword-only
        Pixels of this series added to the myocardium's extent for the TIC
        ROI (the paper: 10 pixels of its ~2.3 mm high-resolution images).  On a
        low-resolution AIF slice, 10 of its own ~4.5 mm pixels reach far into
        the liver and chest wall; pass the same distance in mm instead.

    Returns
    -------
    dict of str to float
        ``dice`` / ``dice_none``: mean Dice over all dynamics of each frame's
        true mask after correction against the reference frame's;
        ``centroid_mm`` / ``centroid_mm_none``: median LV-centroid residual in
        mm; ``dice_peak`` / ``dice_peak_none``: pairwise Dice over the 5 frames
        around peak LV; ``tic`` / ``tic_none``: TIC smoothness (paper metric,
        lower is better) in the ROI of the reference mask; with ``noise_free``
        frames also ``tic_noise_free`` / ``tic_noise_free_none``: the same on
        those frames resampled with the correction's displacement (bilinear),
        i.e. the motion's share without the image noise's floor.  With the
        motion-free mask, also ``dice_raster`` and ``dice_peak_raster``: the
        same Dice with the binary per-frame masks warped instead (a second
        resampling of a binary raster, which caps even a perfect correction
        at 0.90-0.95 on thin rings).
    """
    masks = np.asarray(truth["myo_masks"], bool)
    ref = int(result.reference_index)
    disp = result.displacement
    warped, soft = corrected_true_masks(truth, disp)
    sp = series.pixel_spacing_mm
    out = {
        "dice": dice_all_dynamics(warped, reference_mask=warped[ref]),
        "dice_none": dice_all_dynamics(masks, None, reference_mask=masks[ref]),
        "centroid_mm": float(np.nanmedian(lv_centroid_residual_mm(
            masks if soft is None else soft, disp if soft is None else None,
            spacing_mm=sp, reference_index=ref))),
        "centroid_mm_none": float(
            np.nanmedian(lv_centroid_residual_mm(masks, None, spacing_mm=sp, reference_index=ref))
        ),
    }
    centre, radius = roi_from_mask(warped[ref], margin_px=tic_margin_px)
    if "peak_index" in truth:
        peak = int(truth["peak_index"])
    else:
        yy, xx = np.mgrid[: masks.shape[1], : masks.shape[2]]
        inner = 0.5 * (radius - tic_margin_px)  # half the myocardium's extent
        disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= inner**2
        peak = int(np.argmax(result.corrected[:, disc].mean(axis=1))) if disc.any() else ref
    out["dice_peak"] = dice_around_peak(warped, peak_index=peak)
    out["dice_peak_none"] = dice_around_peak(masks, peak_index=peak)
    if soft is not None:
        raster = warp_series(masks.astype(np.float32), disp) >= 0.5
        out["dice_raster"] = dice_all_dynamics(raster, reference_mask=raster[ref])
        out["dice_peak_raster"] = dice_around_peak(raster, peak_index=peak)
    out["tic"] = tic_smoothness(result.corrected, centre=centre, radius_px=radius)
    out["tic_none"] = tic_smoothness(series.images, centre=centre, radius_px=radius)
    clean = truth.get("noise_free")
    if clean is not None:  # motion alone: the same fields on the phantom's noise-free frames
        clean = np.asarray(clean, np.float32)
        out["tic_noise_free"] = tic_smoothness(warp_series(clean, disp), centre=centre,
                                               radius_px=radius)
        out["tic_noise_free_none"] = tic_smoothness(clean, centre=centre, radius_px=radius)
    return out
