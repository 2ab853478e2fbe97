"""The figures paper-notes gives for real stress series, measured on a phantom.

Real adenosine-stress series (basal and mid slices; median, 10th-90th
percentile): LV blood / myocardium before contrast 1.15 (0.93-1.36), LV blood
peak / myocardium before contrast 3.9 (2.7-5.3), myocardium peak / myocardium
before contrast 2.2 (1.8-2.9), LV peak at dynamic 25 (19-33), first-pass LV
myocardium centroid excursion 10.9 mm (90th percentile 21.5, max 27.5),
myocardium area about 1,900 mm^2.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from perfmoco.phantom.generate import Phantom
from perfmoco.phantom.motion import warp
from perfmoco.phantom.params import LABELS

__all__ = ["REAL_FIGURES", "realism_figures"]

#: Real-series figures: name -> (median, 10th percentile, 90th percentile).
REAL_FIGURES: dict[str, tuple[float, float, float]] = {
    "lv_pre_over_myo_pre": (1.15, 0.93, 1.36),
    "lv_peak_over_myo_pre": (3.9, 2.7, 5.3),
    "myo_peak_over_myo_pre": (2.2, 1.8, 2.9),
    "lv_peak_dynamic": (25.0, 19.0, 33.0),
    "excursion_mm": (10.9, float("nan"), 21.5),
    "myo_area_mm2": (1900.0, float("nan"), float("nan")),
}


def realism_figures(phantom: Phantom, *, slice_index: int = 1) -> dict[str, float]:
    """Measure the paper-notes figures on one high-resolution slice of a phantom.

    Intensities are means over the true (moved) LV blood pool, eroded by two
    pixels, and the true moved myocardium, on the noisy magnitude images,
    without PD normalisation; "before contrast" is the mean of the first five
    dynamics.  The excursion is the largest distance between myocardium
    centroids over the 15 dynamics around the LV peak.

    Parameters
    ----------
    phantom : Phantom
        A generated phantom.
    slice_index : int, keyword-only
        High-resolution slice (0 basal, 1 mid, 2 apical).

    Returns
    -------
    dict of str to float
        Keys of :data:`REAL_FIGURES`.
    """
    if slice_index not in (0, 1, 2):
        raise ValueError(f"slice_index must be 0, 1 or 2, got {slice_index!r}")
    s = phantom.study.highres[slice_index]
    tr = phantom.truth
    p = f"s{slice_index}"
    lab = tr[f"{p}_labels"]
    d = tr[f"{p}_displacement"]
    lv0 = ndimage.binary_erosion(lab == LABELS["lv_blood"], iterations=2).astype(np.float32)
    lv = warp(np.broadcast_to(lv0, s.images.shape), d) > 0.5
    myo = tr[f"{p}_myo_masks"]
    lv_curve = np.array([s.images[t][lv[t]].mean() for t in range(s.n_dynamics)])
    myo_curve = np.array([s.images[t][myo[t]].mean() for t in range(s.n_dynamics)])
    myo_pre = float(myo_curve[:5].mean())
    peak = int(np.argmax(lv_curve))
    win = myo[max(peak - 7, 0): peak + 8]
    yy, xx = np.mgrid[0: lab.shape[0], 0: lab.shape[1]]
    n = np.maximum(win.sum((1, 2)), 1)
    cen = np.stack([(win * yy).sum((1, 2)) / n, (win * xx).sum((1, 2)) / n], 1)
    cen = cen * np.asarray(s.pixel_spacing_mm)
    exc = float(np.max(np.linalg.norm(cen[:, None] - cen[None], axis=-1)))
    return {
        "lv_pre_over_myo_pre": float(lv_curve[:5].mean()) / myo_pre,
        "lv_peak_over_myo_pre": float(lv_curve.max()) / myo_pre,
        "myo_peak_over_myo_pre": float(myo_curve.max()) / myo_pre,
        "lv_peak_dynamic": float(peak + 1),
        "excursion_mm": exc,
        "myo_area_mm2": float((lab == LABELS["lv_myocardium"]).sum()
                              * np.prod(s.pixel_spacing_mm)),
    }
