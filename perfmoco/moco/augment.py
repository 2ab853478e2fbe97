"""Training augmentations of the paper (vectorised over a batch, torch).

Intensity (always): Gaussian noise (sd 0.01), scale ``1 + U(-0.3, 0.3)``,
shift ``U(-0.2, 0.2)``.  Geometry (affine models only): a random rotation
about the crop centre plus a translation (model 1: +-20 px, +-0.8 rad,
p = 1; model 2: +-10 px, +-0.4 rad, p = 0.5).

Not in the paper: :func:`random_fov_cut`, the edge of a tight field of view
(the same cut in the moving and the fixed crop, as the image's edge stays
put while the heart moves), so that the networks learn to ignore it.
"""

from __future__ import annotations

import torch

from perfmoco.moco.transforms import identity_grid, sample

__all__ = ["apply_affine", "intensity_augment", "random_affine", "random_fov_cut"]


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


def random_fov_cut(
    batch: int,
    size: int,
    *,
    p: float,
    min_px: float,
    generator: torch.Generator,
    device=None,
) -> torch.Tensor:
    """Random field-of-view edges: masks that zero a crop beyond 1-4 straight edges.

    A site with a tight field of view stores the heart near the image's edge,
    and the crops about the LV then run out of the image (zeros).  Each
    sample is cut with probability ``p``: every side independently with
    probability 1/2 (at least one), at a distance drawn uniformly from
    ``[min_px, size / 2 - 1]`` from the crop centre.

    Parameters
    ----------
    batch, size : int
    p : float, keyword-only
    min_px : float, keyword-only
        Closest edge to the crop centre (the LV), pixels: keep the heart whole.
    generator : torch.Generator, keyword-only
        CPU generator (fixed seeds).
    device : torch.device, keyword-only, optional

    Returns
    -------
    Tensor, shape (B, 1, size, size), float32
        1 inside the field of view, 0 beyond its edges.
    """
    half = size / 2.0
    cut = torch.rand(batch, generator=generator) < p
    sides = torch.rand(batch, 4, generator=generator) < 0.5
    none = ~sides.any(dim=1)
    pick = torch.randint(4, (batch,), generator=generator)
    sides[none, pick[none]] = True
    sides &= cut[:, None]
    # at most half - 1 from the centre: a chosen side loses at least one row or column
    dist = min_px + torch.rand(batch, 4, generator=generator) * max(half - 1.0 - min_px, 0.0)
    dist = torch.where(sides, dist, torch.full_like(dist, float("inf")))
    c = (size - 1) / 2.0
    r = torch.arange(size, dtype=torch.float32) - c  # (n,)
    ok_y = (r[None] >= -dist[:, 0:1]) & (r[None] <= dist[:, 1:2])  # top, bottom
    ok_x = (r[None] >= -dist[:, 2:3]) & (r[None] <= dist[:, 3:4])  # left, right
    mask = (ok_y[:, :, None] & ok_x[:, None, :]).float()[:, None]
    return mask.to(device) if device is not None else mask
