"""The frames acquired near a series' usual breathing position.

The refinement builds its PCA reference from them (``moco.refine_basis_share``,
:func:`perfmoco.moco.refine.refine_affine`'s ``basis``).
"""

from __future__ import annotations

import math

import torch

from perfmoco.moco.transforms import map_points

__all__ = ["BASIS_BLOCK", "breathing_basis"]

#: Consecutive dynamics from each of which :func:`breathing_basis` takes its share
#: (about a breath, or a third of the first pass, at one dynamic per heartbeat).
BASIS_BLOCK = 8


def breathing_basis(matrix: torch.Tensor, centre_yx, pixel_spacing_mm, share: float,
                    within_mm: float, *, minimum: int = 1) -> torch.Tensor | None:
    """The frames nearest the series' usual breathing position, ``(T,)`` bool.

    In every block of :data:`BASIS_BLOCK` consecutive frames, the ``share``
    whose full-FOV maps ``(T, 2, 3)`` move the LV centre least from where the
    maps move it on median; and every frame they move it less than
    ``within_mm`` from there; at least ``minimum`` frames.  The maps so far
    follow the breathing, so these frames were acquired near one breathing
    position, and every phase of the contrast passage has some of them
    (chosen from the whole series, a gasp that shifted the breathing for a
    while left the pre-contrast frames out, and their references were poor).
    None when that is every frame (shallow breathing) or ``share`` is 0 or 1.
    """
    t = matrix.shape[0]
    if not 0.0 < share < 1.0:
        return None
    at = map_points(matrix, centre_yx)  # (T, 2) where each map takes the LV centre
    sp = torch.tensor(pixel_spacing_mm, dtype=torch.float64, device=matrix.device)
    dist = ((at - at.median(dim=0).values) * sp).norm(dim=1)
    out = dist <= within_mm
    for a in range(0, t, BASIS_BLOCK):
        block = dist[a : a + BASIS_BLOCK]
        out[a + torch.argsort(block, stable=True)[: math.ceil(share * len(block))]] = True
    if int(out.sum()) < minimum:
        out[torch.argsort(dist, stable=True)[:minimum]] = True
    return None if bool(out.all()) else out
