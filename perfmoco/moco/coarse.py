"""Coarse translation search for frames the step-1 network moved far.

The step-1 GlobalNet registers each frame to the reference frame, but it
under-reaches on large moves: on a phantom breathing ~15 mm (9955) it
recovered about half of every frame's offset (true 8-10 px, found 4.9), and
no further pass closed the gap (two, three, four passes: mid-slice Dice 0.47
-> 0.60 / 0.60 / 0.57).  The PCA references of the later steps then share
the remaining offset of all those frames, so nothing after step 1 sees it:
the frames end up aligned with *each other*, ~7 mm away from the reference.

Where the network moved the median dynamic's LV centre by more than
``moco.coarse_align_mm`` relative to the reference frame (deep breathing; it
reports about half of the true move), each dynamic it moved that far has its
translation to the reference frame searched
exhaustively by mutual information (:func:`perfmoco.moco.baseline.block_offsets`:
9 x 9 coarse-to-fine grids, so there is no capture range to fall out of; all
frames at once) on the refinement's crop of the original frames, and the
network runs once more from there.  A frame whose optimum lies on the edge of
the search is searched again over twice the range at the same step (a reference
frame at one end of a deep breath, frames at the other 21-30 mm away: 11772 a's
apical slice, Dice 0.28 -> 0.90); frames still on the edge, or whose search
disagrees with the network's direction or reach (:func:`agrees`), keep the
network's result.

Why only with deep breathing: restarting the frames beyond 5 mm in every
series changed 22-27 slices of 16 studies each way (breathing 9600-9615:
mid slices 0.931 -> 0.923; a series split into restarted frames and the
rest is worse for the later steps than one consistent shortfall, which they
close).  Gated on the median frame it changed 2 slices of 9600-9615 (0.770
-> 0.741, one up) and fixed the two failed slices of 9955 (Dice 0.52 ->
0.88, 0.49 -> 0.79).

Tried and left out: the network does not map a pair of equal frames onto
each other with the identity (phantom 9610: 6-8 crop pixels at the LV), and
the second look could have its own offset on the reference frame taken off.
With that, restarting in every series fixed 9610 (breathing deeply, but its
median frame under the gate: apical 0.61 -> 0.79; set 9600-9615 0.905 ->
0.911) but broke 9955's apical slice (0.785 -> 0.460) and lowered the
mistrigger set (0.903 -> 0.900); gated as above it changed one slice.
"""

from __future__ import annotations

import torch

from perfmoco.moco.baseline import block_offsets, heart_disc
from perfmoco.moco.refine import REFINE_SPACING_MM, refine_crop
from perfmoco.moco.transforms import affine_crop_to_full, map_points

__all__ = ["agrees", "centre_moves", "centre_shift_mm", "coarse_translations"]

#: Parzen bins of the single-frame mutual information (fewer than for block means).
BINS = 16
#: Levels of the coarse-to-fine search: 2.5 mm then 0.6 mm steps over +-25 mm (the
#: network's second look does the fine alignment).
LEVELS = 2
#: A search result is used only where it points the way the network moved the frame
#: (cosine at least this) and goes 0.8-5 times as far (the network under-reaches, the
#: more the further: 11772 a's apical bolus-arrival frames, 25-30 mm off, 4.4 times;
#: with 3.5 they kept the network's result, 9-14 mm off, and the slice read Dice 0.847
#: instead of 0.898; 31 other fresh studies unchanged).
MIN_COSINE = 0.7
RATIO = (0.8, 5.0)


def agrees(network_move: torch.Tensor, search_move: torch.Tensor) -> torch.Tensor:
    """Whether searched moves ``(N, 2)`` extend the network's ``(N, 2)`` (same units).

    Single-frame mutual information can lock onto the body instead of the
    heart (on phantoms it made a few slices worse, e.g. the peak frames of one
    AIF slice); a frame whose search disagrees with the network's direction or
    reach keeps the network's result.
    """
    a, b = network_move.double(), search_move.double()
    na, nb = a.norm(dim=1), b.norm(dim=1)
    cos = (a * b).sum(dim=1) / (na * nb).clamp_min(1e-12)
    ratio = nb / na.clamp_min(1e-12)
    return (cos >= MIN_COSINE) & (ratio >= RATIO[0]) & (ratio <= RATIO[1])


def centre_moves(matrix: torch.Tensor, reference: int, centre_yx) -> torch.Tensor:
    """Where maps ``(T, 2, 3)`` put the LV centre, less where the reference frame's does.

    Returns ``(T, 2)`` full-FOV pixels ``(y, x)``; full-FOV pull-back maps.
    """
    at = map_points(matrix, centre_yx)
    return at - at[reference]


def centre_shift_mm(matrix: torch.Tensor, reference: int, centre_yx,
                    pixel_spacing_mm) -> torch.Tensor:
    """How far maps ``(T, 2, 3)`` put the LV centre from the reference frame's map, mm ``(T,)``."""
    sp = torch.tensor(pixel_spacing_mm, dtype=torch.float64, device=matrix.device)
    return (centre_moves(matrix, reference, centre_yx) * sp).norm(dim=1)


def coarse_translations(images: torch.Tensor, frames: torch.Tensor, reference: int,
                        centre_yx, pixel_spacing_mm, intensity_range, *,
                        max_mm: float, radius_mm: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-FOV translation maps of ``frames`` to the reference frame, by exhaustive MI.

    Parameters
    ----------
    images : Tensor, shape (T, Y, X)
        The original dynamics.
    frames : Tensor, shape (N,), int64
        Which dynamics to search.
    reference : int
        The reference dynamic.
    centre_yx : tuple of 2 float
        LV centre, full-FOV pixels.
    pixel_spacing_mm : tuple of 2 float
    intensity_range : tuple of 2 float
        ``(lo, hi)`` of the dynamics, for the 0..1 scaling.
    max_mm : float, keyword-only
        Search range per axis, mm.
    radius_mm : float, keyword-only
        Disc on the LV whose pixels enter the mutual information.

    Returns
    -------
    matrix : Tensor, shape (N, 2, 3), float64
        Full-FOV pull-back maps (pure translations).
    found : Tensor, shape (N,), bool
        False where the optimum lay on the edge of the search range.
    """
    pick = torch.cat([frames, torch.tensor([reference], device=frames.device)])
    eye = torch.eye(2, 3, dtype=torch.float64, device=images.device).expand(len(pick), -1, -1)
    geo, crop = refine_crop(images[pick], eye, centre_yx, pixel_spacing_mm, intensity_range)
    disc = heart_disc(radius_mm, device=images.device)
    shifts = torch.zeros(len(frames), 2, 3, dtype=torch.float64, device=images.device)
    shifts[:, 0, 0] = shifts[:, 1, 1] = 1.0
    d, found = block_offsets(crop[:-1], crop[-1], disc, max_px=max_mm / REFINE_SPACING_MM,
                             bins=BINS, levels=LEVELS, widen=True)
    shifts[:, :, 2] = d.to(shifts)
    return affine_crop_to_full(shifts, geo), found
