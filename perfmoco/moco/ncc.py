"""Windowed normalised cross-correlation and its Gauss-Newton pieces, on crop series.

Shared by the affine refinement (:mod:`.refine`) and the heart dilation
(:mod:`.dilation`): a Gaussian window about the crop centre, frames
normalised to zero mean and unit SD under it, their residual against a
normalised reference with the image gradients on the same scale.
"""

from __future__ import annotations

import torch

__all__ = [
    "gaussian_window",
    "image_gradients",
    "ncc_residual",
    "normalise_windowed",
    "windowed_ncc",
]


def normalise_windowed(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit SD under the window ``w`` (sums to 1), per frame."""
    mean = (x * w).sum((1, 2), keepdim=True)
    xc = x - mean
    sd = ((xc * xc * w).sum((1, 2), keepdim=True)).sqrt().clamp_min(1e-6)
    return xc / sd


def gaussian_window(h: int, w: int, sigma_px: float, *, device=None,
                    dtype=torch.float32) -> torch.Tensor:
    """Gaussian of SD ``sigma_px`` about the centre of an (h, w) crop, summing to 1."""
    yy = torch.arange(h, dtype=dtype, device=device)[:, None] - (h - 1) / 2.0
    xx = torch.arange(w, dtype=dtype, device=device)[None, :] - (w - 1) / 2.0
    win = torch.exp(-(yy**2 + xx**2) / (2.0 * sigma_px**2))
    return win / win.sum()


def windowed_ncc(a: torch.Tensor, b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """NCC of each frame pair under a window ``w`` (H, W) that sums to 1: (T,)."""
    return (normalise_windowed(a, w) * normalise_windowed(b, w) * w).sum((1, 2))


def ncc_residual(cur: torch.Tensor, ref_normalised: torch.Tensor, w: torch.Tensor):
    """Residual of each normalised frame against its normalised reference.

    ``cur`` is ``(T, 3, H, W)`` (image, d/dy, d/dx); the gradients come back on
    the normalised frame's scale.
    """
    img, iy, ix = cur[:, 0], cur[:, 1], cur[:, 2]
    mean = (img * w).sum((1, 2), keepdim=True)
    sd = (((img - mean) ** 2 * w).sum((1, 2), keepdim=True)).sqrt().clamp_min(1e-6)
    return (img - mean) / sd - ref_normalised, iy / sd, ix / sd


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference image gradients (d/dy, d/dx), one-sided at the edges."""
    gy = torch.zeros_like(x)
    gx = torch.zeros_like(x)
    gy[:, 1:-1] = 0.5 * (x[:, 2:] - x[:, :-2])
    gy[:, 0], gy[:, -1] = x[:, 1] - x[:, 0], x[:, -1] - x[:, -2]
    gx[:, :, 1:-1] = 0.5 * (x[:, :, 2:] - x[:, :, :-2])
    gx[:, :, 0], gx[:, :, -1] = x[:, :, 1] - x[:, :, 0], x[:, :, -1] - x[:, :, -2]
    return gy, gx
