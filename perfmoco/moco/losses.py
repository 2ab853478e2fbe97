"""Unsupervised registration losses of the three stages (``monai.losses``).

All images are ``(B, 1, n, n)`` in ``[0, 1]``; ``ddf`` is the pull-back
displacement ``(B, 2, n, n)`` in crop pixels that the network predicts.
"""

from __future__ import annotations

import torch
from monai.losses import (
    BendingEnergyLoss,
    GlobalMutualInformationLoss,
    LocalNormalizedCrossCorrelationLoss,
)
from monai.networks.blocks import Warp

__all__ = ["global_ncc_loss", "stage_loss"]

_WARP = Warp(mode="bilinear", padding_mode="zeros")
_MI = GlobalMutualInformationLoss(num_bins=23, sigma_ratio=0.5)
_BENDING = BendingEnergyLoss()
_LNCC: dict[int, LocalNormalizedCrossCorrelationLoss] = {}


def global_ncc_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Negative global normalised cross-correlation, mean over the batch.

    Parameters
    ----------
    a, b : Tensor, shape (B, C, H, W)

    Returns
    -------
    Tensor, scalar, in [-1, 1]
    """
    a = a.flatten(1)
    b = b.flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    ncc = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + 1e-6)
    return -ncc.mean()


def _mi_pixels(shape, n: int, device):
    """Take the same random ``n`` pixels of each (B, 1, H, W) -> (B, 1, n, 1)."""
    total = shape[-1] * shape[-2]
    if n <= 0 or n >= total:
        return lambda x: x
    idx = torch.randperm(total, device=device)[:n]
    return lambda x: x.flatten(2)[:, :, idx, None]


def stage_loss(
    stage: str,
    ddf: torch.Tensor,
    *,
    moving: torch.Tensor,
    fixed: torch.Tensor,
    low_moving: torch.Tensor | None = None,
    low_fixed: torch.Tensor | None = None,
    lncc_kernel: int = 19,
    bending_weight: float = 10.0,
    mi_samples: int = 4096,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The paper's loss of one stage.

    Parameters
    ----------
    stage : {"affine1", "affine2", "dense"}
    ddf : Tensor, shape (B, 2, n, n), crop pixels
    moving, fixed : Tensor, shape (B, 1, n, n), [0, 1]
    low_moving, low_fixed : Tensor, shape (B, 1, n, n), keyword-only
        RPCA low-rank frames (``affine1`` only).
    lncc_kernel : int, keyword-only
        LNCC window (``dense``), odd.
    bending_weight : float, keyword-only
        Weight of the bending energy against the -LNCC term (``dense``).
    mi_samples : int, keyword-only
        Random pixels per image for the MI terms (``affine1``); 0 = all.
    mask : Tensor, shape (B, 1, n, n), keyword-only, optional
        1 inside the field of view of both crops, 0 beyond its edge
        (:func:`perfmoco.moco.augment.random_fov_cut`).  Only pixels inside
        both the fixed crop's and the warped moving crop's field of view are
        compared, so that aligning the edges themselves earns nothing.

    Returns
    -------
    Tensor, scalar
    """
    # the pixels both crops hold (no gradient through the mask); all without a mask
    both = None if mask is None else (mask * _WARP(mask, ddf)).detach()

    def keep(x):
        return x if both is None else x * both
    if stage == "affine1":
        if low_moving is None or low_fixed is None:
            raise ValueError("stage affine1 needs the RPCA low-rank frames")
        wl, wi = keep(_WARP(low_moving, ddf)), keep(_WARP(moving, ddf))
        low_fixed, fixed = keep(low_fixed), keep(fixed)
        # MI on a random subset of pixels (as elastix samples for MI): the
        # Parzen-window histograms of MONAI's loss cost O(B * pixels * bins)
        pick = _mi_pixels(wl.shape, mi_samples, moving.device)
        return (
            0.5 * global_ncc_loss(low_fixed, wl)
            + 0.25 * _MI(pick(wi), pick(low_fixed))
            + 0.25 * _MI(pick(wl), pick(fixed))
        )
    if stage == "affine2":
        return global_ncc_loss(keep(fixed), keep(_WARP(moving, ddf)))
    if stage == "dense":
        if lncc_kernel % 2 != 1:
            raise ValueError(f"lncc_kernel must be odd, got {lncc_kernel}")
        if lncc_kernel not in _LNCC:
            _LNCC[lncc_kernel] = LocalNormalizedCrossCorrelationLoss(
                spatial_dims=2, kernel_size=lncc_kernel
            )
        lncc = _LNCC[lncc_kernel]
        return lncc(keep(_WARP(moving, ddf)), keep(fixed)) + bending_weight * _BENDING(ddf)
    raise ValueError(f"stage must be affine1, affine2 or dense, got {stage!r}")
