"""Evaluation metrics: the paper's four, plus ground-truth metrics.

Plain functions on numpy arrays.  The paper's metrics (Schueler et al.,
``paper-notes.md``) need no ground truth:

- :func:`tic_smoothness` - mean SD of the second temporal derivative of the
  normalised pixel time-intensity curves (TICs) in a circular ROI;
- :func:`dice_around_peak` - Dice of myocardium masks over the 5 consecutive
  frames around peak LV;
- :func:`pd_sd` - SD of proton-density pixels in the peak-LV myocardium mask;
- :func:`segment_mbf_sd` - SD of pixel MBF within each AHA segment;
- :func:`median_mbf`.

The phantom knows what the paper could not, so there are also
:func:`dice_all_dynamics`, :func:`lv_centroid_residual_mm`,
:func:`displacement_error_mm` and :func:`mbf_error`; :func:`true_masks_corrected`
renders each frame's true mask in the corrected frame from the motion-free anatomy.

Conventions (DESIGN.md): series ``(T, Y, X)``; displacements ``(T, 2, Y, X)``
in pixels, ``[:, 0]`` = y, pull-back
``corrected[t](p) = original[t](p + d[t](p))``; pixel spacing ``(dy, dx)`` mm.
"""

from perfmoco.metrics._common import compose_displacement, dice, roi_from_mask, warp_series
from perfmoco.metrics.paper import (
    dice_around_peak,
    median_mbf,
    pd_sd,
    segment_mbf_sd,
    tic_smoothness,
)
from perfmoco.metrics.truth import (
    MbfError,
    dice_all_dynamics,
    displacement_error_mm,
    lv_centroid_residual_mm,
    mbf_error,
    pd_residual_mm,
    true_masks_corrected,
)

__all__ = [
    "MbfError",
    "compose_displacement",
    "dice",
    "dice_all_dynamics",
    "dice_around_peak",
    "displacement_error_mm",
    "lv_centroid_residual_mm",
    "mbf_error",
    "median_mbf",
    "pd_residual_mm",
    "pd_sd",
    "roi_from_mask",
    "segment_mbf_sd",
    "tic_smoothness",
    "true_masks_corrected",
    "warp_series",
]


