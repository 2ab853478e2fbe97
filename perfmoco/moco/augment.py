"""Training augmentations of the paper (vectorised over a batch, torch).

Intensity (always): Gaussian noise (sd 0.01), scale ``1 + U(-0.3, 0.3)``,
shift ``U(-0.2, 0.2)``.  Geometry (affine models only): a random rotation
about the crop centre plus a translation (model 1: +-20 px, +-0.8 rad,
p = 1; model 2: +-10 px, +-0.4 rad, p = 0.5).
"""

from __future__ import annotations

import torch

from perfmoco.moco.transforms import identity_grid, sample

__all__ = ["apply_affine", "intensity_augment", "random_affine"]


def _uniform(shape, bound: float, generator: torch.Generator, device) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device="cpu").to(device)
    return (2.0 * u - 1.0) * bound


def random_affine(
    batch: int,
    size: int,
    *,
    max_shift_px: float,
    max_rotation_rad: float,
    p: float = 1.0,
    generator: torch.Generator,
    device=None,
) -> torch.Tensor:
    """Random rigid maps about the crop centre, as pixel affine matrices.

    Parameters
    ----------
    batch : int
    size : int
        Crop size ``n`` (the centre is ``(n - 1) / 2``).
    max_shift_px, max_rotation_rad : float, keyword-only
        Uniform ranges ``[-max, max]`` of the translation (per axis, pixels)
        and rotation (radians).
    p : float, keyword-only
        Probability that a sample is transformed (others get the identity).
    generator : torch.Generator, keyword-only
        CPU generator (fixed seeds).
    device : torch.device, keyword-only, optional

    Returns
    -------
    Tensor, shape (B, 2, 3), float32
        Sampling matrices (pull-back): ``aug(p) = img(M @ (p, 1))``.
    """
    ang = _uniform((batch,), max_rotation_rad, generator, device)
    shift = _uniform((batch, 2), max_shift_px, generator, device)
    keep = (torch.rand(batch, generator=generator).to(device) < p).float()
    ang = ang * keep
    shift = shift * keep[:, None]
    c, s = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (B, 2, 2)
    centre = torch.full((2,), (size - 1) / 2.0, device=device)
    t = centre - rot @ centre + shift
    return torch.cat([rot, t[:, :, None]], dim=2)


def apply_affine(images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Warp ``(B, C, n, n)`` images by pixel affine maps ``(B, 2, 3)`` (zero padding)."""
    n = images.shape[-1]
    grid = identity_grid((n, n), device=images.device)
    coords = torch.einsum("bpq,qyx->bpyx", matrix[:, :, :2], grid) + matrix[:, :, 2, None, None]
    return sample(images, coords, padding="zeros")


def intensity_augment(
    images: torch.Tensor,
    *,
    noise_sd: float = 0.01,
    scale: float = 0.3,
    shift: float = 0.2,
    generator: torch.Generator,
) -> torch.Tensor:
    """Paper intensity augmentation of ``(B, C, H, W)`` images (one draw per image).

    Returns ``images * (1 + U(-scale, scale)) + U(-shift, shift) + N(0, noise_sd)``.
    """
    b = images.shape[0]
    dev = images.device
    a = 1.0 + _uniform((b, 1, 1, 1), scale, generator, dev)
    o = _uniform((b, 1, 1, 1), shift, generator, dev)
    noise = torch.randn(images.shape, generator=generator).to(dev) * noise_sd
    return images * a + o + noise
