"""Which frames come before the bolus: the pre-contrast block's length and its disc.

Shared by the block alignment (:mod:`perfmoco.moco.baseline`), the AIF slice's following
of a tissue slice (:mod:`perfmoco.moco.companion`) and the steps that leave the
pre-contrast frames alone (:mod:`perfmoco.moco.steps`).
"""

from __future__ import annotations

import torch

from perfmoco.moco.refine import REFINE_CROP, REFINE_SPACING_MM
from perfmoco.moco.transforms import identity_grid

__all__ = ["MIN_FRAMES", "MIN_LATE", "MIN_SHORT_FRAMES", "baseline_length", "block_length",
           "heart_disc"]

#: Fewest pre-contrast frames worth aligning as a block (each half needs 2).
MIN_FRAMES = 4
#: A shorter block, of at least this many frames (and its margin frame, :func:`block_length`),
#: is moved only where both similarities place it alike (``baseline._short_block``; a
#: scan started shortly before the bolus).
MIN_SHORT_FRAMES = 1
#: Late block: the last quarter of the dynamics, at least this many frames.
MIN_LATE = 8
#: The bolus starts the first run of enhanced frames: at least this many less one of the
#: next this many (:func:`baseline_length`).
RUN = 5


def heart_disc(radius_mm: float, *, device=None, size: int = REFINE_CROP,
               spacing_mm: float = REFINE_SPACING_MM) -> torch.Tensor:
    """The disc of ``radius_mm`` about the centre of a crop (default the refinement's), bool."""
    g = identity_grid((size, size), device=device)
    r = (((g[0] - (size - 1) / 2) ** 2 + (g[1] - (size - 1) / 2) ** 2).sqrt()) * spacing_mm
    return r <= radius_mm


def baseline_length(crop: torch.Tensor, disc: torch.Tensor, *, cnr: float = 6.0,
                    fraction: float = 0.1) -> int:
    """Number of frames before the first contrast enhancement in the disc.

    Parameters
    ----------
    crop : Tensor, shape (T, H, W)
        Aligned crop series.
    disc : Tensor, shape (H, W), bool
        Pixels that count (the heart).
    cnr, fraction : float, keyword-only
        A frame is enhanced when the 99th percentile of its difference to the
        baseline (median of the first three frames), less the magnitude of its
        1st percentile, exceeds ``cnr`` noise SDs (from the first four frames'
        successive differences) and ``fraction`` of the largest such value over
        the series.  A frame left a few mm off the first ones differs from them
        at the edges in both directions alike; contrast arrival adds signal
        only (the 99th percentile alone had read a deep breather's pre-contrast
        frames 4-12, sitting 3.5 mm from frames 0-3, as enhanced: 11699 b).
        Contrast, once it has come, stays: the first enhanced frame is the first
        that starts a run of them (at least ``RUN - 1`` of ``RUN`` frames), not
        one of a few beats that a deep breath brought nearer the surface coils
        (11725 b's basal slice: frames 4-6 and 11-13 up to 10 % brighter, and
        the block had ended at frame 3).

    Returns
    -------
    int
        The pre-contrast block is frames ``[0, n)``: the frames up to one
        before the first enhanced one (a margin for the bolus foot).
    """
    x = crop[:, disc].double()
    if x.shape[0] < 6:
        return 0
    base = x[:3].median(dim=0).values
    diff = x[1:4] - x[:3]
    noise = (diff.abs().median() / 0.6745 / 2**0.5).item()
    q = torch.quantile(x - base, torch.tensor([0.01, 0.99], dtype=x.dtype), dim=1)
    enh = q[1] + q[0]  # the positive tail beyond the negative one's size
    above = enh > max(cnr * noise, fraction * enh.max().item())
    # contrast stays: the first frame that starts a run of enhanced ones
    run = min(RUN, above.numel())
    held = above & (torch.nn.functional.pad(above.double(), (0, run - 1))
                    .unfold(0, run, 1).sum(dim=1) >= run - 1)
    if not held.any():
        return 0
    return max(int(torch.nonzero(held)[0, 0]) - 1, 0)


def block_length(n: int) -> int:
    """Frames moved as the pre-contrast block, from :func:`baseline_length`'s ``n``.

    ``n`` itself for a block of :data:`MIN_FRAMES` or more; a shorter one (at least
    :data:`MIN_SHORT_FRAMES`) takes its margin frame too, the last before the first
    enhanced one.  On fresh breathing phantoms cut to start five dynamics before the AIF's
    bolus (13089-13092 a/b, 24 high-resolution slices) frames 0 and 1 sat 2.7 mm off on
    average after the steps before; moving the margin frame with its block left frames 0-4
    0.96 mm off (1.61 mm unmoved, the block alone 1.30 mm; docs/motion-correction.md).
    0: no block.
    """
    if n >= MIN_FRAMES:
        return n
    return n + 1 if n >= MIN_SHORT_FRAMES else 0
