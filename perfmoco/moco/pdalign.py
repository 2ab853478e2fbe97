"""PD frames: each one's translation to the corrected dynamics, by mutual information.

The proton-density frames open the series; their M0 divides every dynamic's
signal (surface-coil correction), so a PD frame left off the heart scales the
whole MBF map: blood (PD 1.2 against 1.0) or fat in a myocardial pixel's M0
reads as 10-20 % less flow.  The networks register a PD frame only through
the dynamics' references (the reference frame, then the first frame of a PCA
reference), images of another contrast that they were not trained to pair
with, and on breathing phantoms left PD frames 4-7 mm off where their move was
8-11 mm (the dynamics: 0.2-0.6 mm).

This step searches each PD frame's translation exhaustively by mutual
information (contrast-invariant: :func:`perfmoco.moco.baseline.block_offsets`,
coarse to fine, so no capture range to fall out of) in a disc on the LV
against the mean of the corrected late dynamics (the reference frame's
position, at the series' best SNR), twice: about where the networks put the
frame and about where it was acquired (on some phantoms the networks left PD
frames further off than uncorrected), keeping the result of higher mutual
information.  A frame whose optimum lies on the edge of both searches keeps
the networks' map.  Over 63 PD frames of 8 breathing phantoms: median 0.99 mm
from the reference frame at the LV (networks alone 1.9-2.6 mm, uncorrected
3.1 mm); 3 frames still beyond 3 mm.

An optimum that puts the PD frame's heart further than :data:`PD_REACH_MM` from where
every dynamic's heart was acquired is not taken (:func:`_within_reach`): the PD frames
are acquired in the heartbeats just before the dynamics, in the same breathing.
"""

from __future__ import annotations

import logging

import torch

from perfmoco.moco.baseline import MIN_LATE, block_offsets, heart_disc
from perfmoco.moco.refine import REFINE_SPACING_MM, refine_crop
from perfmoco.moco.similarity import mutual_information
from perfmoco.moco.transforms import affine_crop_to_full, compose_affine, map_points

__all__ = ["align_pd_full_fov"]

log = logging.getLogger(__name__)

#: Parzen bins (PD frames are bright and the late mean is smooth).
BINS = 32
#: Coarse-to-fine levels: steps of max_mm / 4, then / 16, / 64.
LEVELS = 3
#: A PD frame's heart must lie within this distance (mm) of where some dynamic's heart was
#: acquired: the PD frames are acquired in the heartbeats before the dynamics, in the same
#: free breathing (:func:`_within_reach`).
PD_REACH_MM = 4.5


def align_pd_full_fov(images, pd_images, matrix, pd_matrix, centre_yx, pixel_spacing_mm,
                      intensity_range, pd_range, *, max_mm: float, radius_mm: float,
                      name: str = "series") -> torch.Tensor:
    """Full-FOV maps of the PD frames, each moved onto the corrected late dynamics.

    Parameters
    ----------
    images : Tensor, shape (T, Y, X)
        The original dynamics.
    pd_images : Tensor, shape (P, Y, X)
        The original PD frames.
    matrix : Tensor, shape (T, 2, 3)
        The dynamics' full-FOV pull-back maps (final).
    pd_matrix : Tensor, shape (P, 2, 3)
        The PD frames' maps so far (the search starts there).
    centre_yx : tuple of 2 float
        LV centre, full-FOV pixels.
    pixel_spacing_mm : tuple of 2 float
    intensity_range, pd_range : tuple of 2 float
        ``(lo, hi)`` of the dynamics and of the PD frames, for the 0..1 scaling.
    max_mm : float, keyword-only
        Search range per axis about the start, mm.
    radius_mm : float, keyword-only
        Disc on the LV whose pixels enter the mutual information.
    name : str, keyword-only
        Series name for the log.

    Returns
    -------
    Tensor, shape (P, 2, 3), float64
    """
    p, t = pd_images.shape[0], images.shape[0]
    if p == 0 or t < 2:
        return pd_matrix
    n_late = min(t, max(MIN_LATE, t // 4))
    _, late = refine_crop(images[t - n_late:], matrix[t - n_late:], centre_yx,
                          pixel_spacing_mm, intensity_range)
    fixed = late.mean(0)
    disc = heart_disc(radius_mm, device=images.device)
    max_px = max_mm / REFINE_SPACING_MM
    eye = torch.eye(2, 3, dtype=torch.float64, device=pd_matrix.device).expand(p, -1, -1)
    out = pd_matrix.double()  # a frame no search finds inside its range keeps this
    best_mi = torch.full((p,), -torch.inf, dtype=torch.float64)
    found = torch.zeros(p, dtype=torch.bool)
    sp = torch.tensor(pixel_spacing_mm, dtype=torch.float64, device=out.device)
    track = map_points(matrix, centre_yx)  # where each dynamic's LV centre was acquired
    refused = []
    # two starts: where the networks put each frame, and where it was acquired (the
    # networks, trained on dynamics, can leave a PD frame further off than it came)
    for start in (pd_matrix.double(), eye):
        geo, crop = refine_crop(pd_images, start, centre_yx, pixel_spacing_mm, pd_range)
        d, ok = block_offsets(crop, fixed, disc, max_px=max_px, bins=BINS, levels=LEVELS)
        shift = eye.clone()
        shift[:, :, 2] = d.to(shift)
        moved = compose_affine(start, affine_crop_to_full(shift, geo))
        _, crop = refine_crop(pd_images, moved, centre_yx, pixel_spacing_mm, pd_range)
        mi = mutual_information(crop[:, disc], fixed[disc], BINS).cpu().double()
        near = _within_reach(map_points(moved, centre_yx), track, sp)
        refused += torch.nonzero(ok & ~near).flatten().tolist()
        ok = ok & near
        take = ok & (mi > best_mi)
        out = torch.where(take[:, None, None].to(out.device), moved, out)
        best_mi, found = torch.where(take, mi, best_mi), found | ok
    if refused:
        log.info("%s: PD frame(s) %s: an optimum found more than %.1f mm from every "
                 "dynamic's heart, not taken", name, sorted(set(refused)), PD_REACH_MM)
    mm = ((map_points(out, centre_yx) - map_points(pd_matrix, centre_yx)) * sp).norm(dim=1).cpu()
    log.info("%s: PD frames moved by %s mm onto the corrected dynamics%s", name,
             ", ".join(f"{float(v):.1f}" if k else "-" for v, k in zip(mm, found)),
             "" if bool(found.all()) else " (-: optimum at the edge of the search, kept)")
    return out


def _within_reach(points, track, spacing_mm) -> torch.Tensor:
    """Whether each PD frame's heart ``points`` ``(P, 2)`` lies within
    :data:`PD_REACH_MM` of one of the dynamics' ``track`` ``(T, 2)`` (pixels; spacing in mm).

    A search by mutual information can end on a false optimum far off: 13107 a, mid
    slice, a PD frame 14.3 mm from the reference frame's heart after the search (its M0 off
    the myocardium; the slice's efficiency read 0.711 against the others' 0.765, its
    segments marked unreliable, one 5.8 ml/min/g off), its heart 5.3 mm from every
    dynamic's; the search from where it was acquired found it 1.1 mm off.  Over the other
    PD frames of 54 breathing studies (13044-13053 a/b, 13110-13117 a/b, and 13044-13050,
    13108-13109 a/b with gasps; 528 frames) the correction put every PD frame's heart within
    3.6 mm of a dynamic's; the rule turned down one other optimum, which had not been taken
    (13113 b's AIF slice).
    """
    d = ((points[:, None, :] - track[None, :, :]) * spacing_mm).norm(dim=2)
    return (d.min(dim=1).values <= PD_REACH_MM).cpu()
