"""The bolus's first-pass frames, as a group, onto the late frames.

Every step before this one registers a frame to a reference of its own contrast (the
networks' to the late reference frame or a PCA series, the refinement to a PCA
series).  In the frames where the RV and then the LV fill with contrast, a frame a
heartbeat away already looks different, and these frames carry the PCA components
that represent them almost alone: the references follow wherever they sit, and as
a group they stayed where the networks put them.  Measured on fresh DL-corrected
phantoms (13026-13034, 13036 a/b, 76 slices), the mean residual over the true
myocardium was 0.31 px from two frames before to four after the LV's bolus arrival
against 0.17 px elsewhere, and it reappears on motion-free studies (0.23 against
0.09): it is the contrast, not the breathing, and on 13036 a the myocardium read
5-9 % low in those frames, the delay fit moved later and every MBF up.

As the pre-contrast block (:mod:`perfmoco.moco.baseline`), these frames (those of
:func:`perfmoco.moco.firstpass.fast_contrast`, the refinement's window mean changing
fastest) are moved by one translation onto the mean of the late frames, found by
normalised gradient fields on the 1.25 mm crop: edges' directions agree whichever
side is brighter.  They share no contrast and so no mean image, but one offset's
score is the mean of each frame's alignment (:func:`perfmoco.moco.blocksearch.group_offset`).
Trusted only where the search's optimum lies inside its range and the even and odd
frames of the group give offsets within ``moco.first_pass_agreement_mm``.  The
high-resolution slices only (the AIF slice's ~4.5 mm pixels: see ``baseline``).

Off by default (``moco.first_pass_align``): against the phantoms' true motion it brought
motion-free studies' groups closer (12 slices, 0.47 -> 0.31 mm) but breathing ones further
off (69 slices, 0.39 -> 0.50 mm; docs/motion-correction.md, twenty-sixth session).
"""

from __future__ import annotations

import logging

import torch

from perfmoco.moco.baseline import (
    FINE_CROP,
    FINE_SPACING_MM,
    MIN_LATE,
    NGF_SMOOTH,
    heart_disc,
    smooth_frames,
)
from perfmoco.moco.blocksearch import group_offset
from perfmoco.moco.firstpass import fast_contrast
from perfmoco.moco.ncc import gaussian_window
from perfmoco.moco.refine import REFINE_SPACING_MM, refine_crop
from perfmoco.moco.transforms import translate_frames

__all__ = ["MIN_FRAMES", "align_first_pass_full_fov"]

log = logging.getLogger(__name__)

#: Fewest first-pass frames worth aligning as a group (each half needs 2).
MIN_FRAMES = 4


def align_first_pass_full_fov(images, matrix, centre_yx, pixel_spacing_mm, intensity_range,
                              config, *, name: str = "series") -> tuple[torch.Tensor, int]:
    """Move the first pass's frames, as a group, onto the late frames (see module doc).

    Parameters
    ----------
    images : Tensor, shape (T, Y, X)
        The original dynamics.
    matrix : Tensor, shape (T, 2, 3)
        Their full-FOV pull-back affine maps so far.
    centre_yx : tuple of 2 float
        LV centre, full-FOV pixels.
    pixel_spacing_mm : tuple of 2 float
    intensity_range : tuple of 2 float
        ``(lo, hi)`` of the dynamics, for the 0..1 scaling.
    config : MocoConfig
        ``first_pass_*`` and ``baseline_radius_mm``.
    name : str, keyword-only

    Returns
    -------
    matrix : Tensor, shape (T, 2, 3), float64
    moved : int
        How many frames moved (0: none).
    """
    t = images.shape[0]
    n_late = max(MIN_LATE, t // 4)
    _, crop = refine_crop(images, matrix, centre_yx, pixel_spacing_mm, intensity_range)
    window = gaussian_window(*crop.shape[-2:], config.refine_window_mm / REFINE_SPACING_MM,
                             device=crop.device)
    fast = fast_contrast(crop, window, config.first_pass_rate)
    if fast is None or t - n_late < 4:
        return matrix, 0
    fast[t - n_late:] = False
    idx = torch.nonzero(fast).flatten()
    if idx.numel() < MIN_FRAMES:
        return matrix, 0
    pick = torch.cat([idx, torch.arange(t - n_late, t, device=idx.device)])
    geo, fine = refine_crop(images[pick], matrix[pick], centre_yx, pixel_spacing_mm,
                            intensity_range, size=FINE_CROP, spacing_mm=FINE_SPACING_MM)
    fine = smooth_frames(fine, NGF_SMOOTH * min(pixel_spacing_mm) / FINE_SPACING_MM)
    disc = heart_disc(config.baseline_radius_mm, device=images.device, size=FINE_CROP,
                      spacing_mm=FINE_SPACING_MM)
    frames, late = fine[: idx.numel()], fine[idx.numel():]
    sd = float(late[:, disc].std(dim=0).median())  # one frame's noise SD, from the late ones'
    noise = (sd, sd / n_late ** 0.5)
    max_px = config.first_pass_max_mm / FINE_SPACING_MM
    d, inside = group_offset(frames, late.mean(0), disc, max_px=max_px, noise=noise)
    if not inside:
        log.info("%s: first-pass frames' offset at the edge of the search: not moved", name)
        return matrix, 0
    halves = [group_offset(frames[h::2], late.mean(0), disc, max_px=max_px / 2, noise=noise,
                           start=d, levels=2)[0] for h in (0, 1)]
    spread = float((halves[0] - halves[1]).norm()) * FINE_SPACING_MM
    mm = (d * FINE_SPACING_MM).tolist()
    if spread > config.first_pass_agreement_mm:
        log.info("%s: first-pass frames' offset (%.1f, %.1f) mm not applied: even and odd "
                 "frames disagree by %.1f mm", name, *mm, spread)
        return matrix, 0
    out = translate_frames(matrix, idx.to(matrix.device), d, geo)
    log.info("%s: first-pass dynamics %d-%d moved by (%.2f, %.2f) mm onto the late frames",
             name, int(idx[0]), int(idx[-1]), *mm)
    return out, idx.numel()
