"""Geometry of the motion correction: warping, affine maps, composition, crops.

Every function here is plain maths on arrays.  One convention everywhere
(DESIGN.md): a displacement has shape ``(T, 2, Y, X)``, float32, in pixels of
the array it applies to, ``[:, 0]`` is y and ``[:, 1]`` is x, and it is a
*pull-back*::

    corrected[t](p) = original[t](p + d[t](p))        (linear interpolation)

An affine map is a ``(T, 2, 3)`` matrix ``M`` acting on pixel coordinates
``(y, x, 1)``: the sampling position of output pixel ``p`` is ``M @ (p, 1)``,
so its displacement is ``M @ (p, 1) - p``.  This is the parametrisation of
MONAI's ``GlobalNet`` affine head (pixel indices, origin at pixel ``(0, 0)``).

A crop (:class:`CropGeometry`) is a square grid of ``size`` pixels whose
centre sits at ``centre_yx`` (full-FOV pixels) and whose pixels are
``scale_yx`` full-FOV pixels apart; it maps crop pixel ``q`` to full-FOV pixel
``p = centre + scale * (q - (size - 1) / 2)``.  With a fixed physical crop
pixel size the scale is ``crop_spacing_mm / pixel_spacing_mm``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CropGeometry",
    "ANCHOR_RADIUS_MM",
    "anchor_reference",
    "anchor_to_frame",
    "affine_crop_to_full",
    "affine_to_displacement",
    "compose_affine",
    "compose_displacements",
    "dense_crop_to_full",
    "identity_grid",
    "map_points",
    "sample",
    "translate_frames",
    "warp",
]


def identity_grid(shape: tuple[int, int], *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel coordinates of a ``(Y, X)`` grid.

    Returns
    -------
    Tensor, shape (2, Y, X)
        ``[0]`` is the row (y) index, ``[1]`` the column (x) index, in pixels.
    """
    ys = torch.arange(shape[0], device=device, dtype=dtype)
    xs = torch.arange(shape[1], device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"))


def sample(images: torch.Tensor, coords: torch.Tensor, *, padding: str = "border",
           mode: str = "bilinear") -> torch.Tensor:
    """Sample images at pixel coordinates with bilinear (or bicubic) interpolation.

    Parameters
    ----------
    images : Tensor, shape (T, Y, X) or (T, C, Y, X), float
        Images to sample.
    coords : Tensor, shape (T, 2, H, W) or (1, 2, H, W), float, pixels of ``images``
        Where to sample; ``[:, 0]`` is y, ``[:, 1]`` is x.
    padding : {"border", "zeros"}, keyword-only
        Value outside the image: nearest edge pixel or 0.
    mode : {"bilinear", "bicubic"}, keyword-only
        Interpolation (``torch.nn.functional.grid_sample``); bicubic blurs
        less but can overshoot at edges.

    Returns
    -------
    Tensor, shape (T, H, W) or (T, C, H, W)
    """
    squeeze = images.dim() == 3
    img = images[:, None] if squeeze else images
    ny, nx = img.shape[-2:]
    if coords.shape[0] != img.shape[0]:
        coords = coords.expand(img.shape[0], *coords.shape[1:])
    gy = coords[:, 0] * (2.0 / max(ny - 1, 1)) - 1.0
    gx = coords[:, 1] * (2.0 / max(nx - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)  # grid_sample wants (x, y) last
    out = F.grid_sample(
        img, grid.to(img.dtype), mode=mode, padding_mode=padding, align_corners=True
    )
    return out[:, 0] if squeeze else out


def _as_tensor(a) -> tuple[torch.Tensor, bool]:
    if isinstance(a, torch.Tensor):
        return a, False
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)), True


def warp(images, displacement, *, padding: str = "border"):
    """Resample a series with a pull-back displacement (DESIGN.md convention).

    Parameters
    ----------
    images : ndarray or Tensor, shape (T, Y, X), float32
        Frames to resample.
    displacement : ndarray or Tensor, shape (T, 2, Y, X), float32, pixels
        ``corrected[t](p) = images[t](p + displacement[t](p))``; ``[:, 0]`` is y.
    padding : {"border", "zeros"}, keyword-only
        Value sampled outside the field of view.

    Returns
    -------
    ndarray or Tensor, shape (T, Y, X), float32
        Same kind (numpy or torch) as ``images``.
    """
    img, was_np = _as_tensor(images)
    disp, _ = _as_tensor(displacement)
    if img.dim() != 3 or disp.dim() != 4 or disp.shape[1] != 2:
        raise ValueError(
            f"warp needs images (T, Y, X) and displacement (T, 2, Y, X), got "
            f"{tuple(img.shape)} and {tuple(disp.shape)}"
        )
    if disp.shape[0] != img.shape[0] or tuple(disp.shape[2:]) != tuple(img.shape[1:]):
        raise ValueError(
            f"displacement {tuple(disp.shape)} does not match images {tuple(img.shape)}"
        )
    grid = identity_grid(tuple(img.shape[1:]), device=img.device)[None] + disp.to(img.device)
    out = sample(img.float(), grid, padding=padding)
    return out.numpy() if was_np else out


def affine_to_displacement(matrix, shape: tuple[int, int]):
    """Dense displacement of affine maps.

    Parameters
    ----------
    matrix : ndarray or Tensor, shape (T, 2, 3), float
        Pixel-coordinate affine maps: sampling position ``M @ (y, x, 1)``.
    shape : tuple of 2 int
        ``(Y, X)`` of the grid.

    Returns
    -------
    ndarray or Tensor, shape (T, 2, Y, X), float32, pixels
    """
    m, was_np = _as_tensor(matrix)
    grid = identity_grid(shape, device=m.device, dtype=m.dtype)
    hom = torch.cat([grid, torch.ones_like(grid[:1])])  # (3, Y, X)
    out = torch.einsum("tpq,qyx->tpyx", m, hom) - grid[None]
    return out.numpy() if was_np else out


def compose_displacements(first, second, *, padding: str = "border"):
    """Displacement of "apply ``first``, then ``second``" as one resampling.

    ``warp(warp(I, first), second) ≈ warp(I, compose_displacements(first, second))``,
    exactly ``d(p) = second(p) + first(p + second(p))``.

    Parameters
    ----------
    first, second : ndarray or Tensor, shape (T, 2, Y, X), float32, pixels

    Returns
    -------
    ndarray or Tensor, shape (T, 2, Y, X), float32, pixels
    """
    a, was_np = _as_tensor(first)
    b, _ = _as_tensor(second)
    grid = identity_grid(tuple(b.shape[2:]), device=b.device)[None] + b
    out = b + sample(a, grid, padding=padding)
    return out.numpy() if was_np else out


@dataclasses.dataclass(frozen=True)
class CropGeometry:
    """A square crop of a full-FOV image at its own pixel size.

    Attributes
    ----------
    centre_yx : tuple of 2 float
        Full-FOV pixel coordinates of the crop centre.
    size : int
        Crop matrix (pixels along y and x).
    scale_yx : tuple of 2 float
        Full-FOV pixels per crop pixel along y and x
        (``crop_spacing_mm / pixel_spacing_mm``).
    """

    centre_yx: tuple[float, float]
    size: int
    scale_yx: tuple[float, float] = (1.0, 1.0)

    @classmethod
    def from_spacing(
        cls,
        centre_yx,
        size: int,
        *,
        crop_spacing_mm: float,
        pixel_spacing_mm: tuple[float, float],
    ) -> CropGeometry:
        """Crop of ``size`` pixels of ``crop_spacing_mm`` mm around ``centre_yx``."""
        return cls(
            (float(centre_yx[0]), float(centre_yx[1])),
            int(size),
            (
                float(crop_spacing_mm) / float(pixel_spacing_mm[0]),
                float(crop_spacing_mm) / float(pixel_spacing_mm[1]),
            ),
        )

    def homogeneous(self) -> torch.Tensor:
        """3x3 float64 matrix ``H`` with ``(p, 1) = H @ (q, 1)`` (crop q -> full p)."""
        q0 = (self.size - 1) / 2.0
        sy, sx = self.scale_yx
        cy, cx = self.centre_yx
        return torch.tensor(
            [[sy, 0.0, cy - sy * q0], [0.0, sx, cx - sx * q0], [0.0, 0.0, 1.0]],
            dtype=torch.float64,
        )

    def grid(self, *, device=None) -> torch.Tensor:
        """Full-FOV pixel coordinates of the crop pixels, shape (2, size, size), float32."""
        q = identity_grid((self.size, self.size), device=device, dtype=torch.float64)
        h = self.homogeneous().to(device)
        out = torch.einsum("pq,qyx->pyx", h[:2, :2], q) + h[:2, 2, None, None]
        return out.float()

    def to_crop(self, points: torch.Tensor) -> torch.Tensor:
        """Map full-FOV pixel coordinates (2, ...) to crop pixel coordinates (2, ...)."""
        q0 = (self.size - 1) / 2.0
        c = torch.tensor(self.centre_yx, dtype=points.dtype, device=points.device)
        s = torch.tensor(self.scale_yx, dtype=points.dtype, device=points.device)
        shape = (2,) + (1,) * (points.dim() - 1)
        return (points - c.view(shape)) / s.view(shape) + q0


def _hom(matrix: torch.Tensor) -> torch.Tensor:
    """(T, 2, 3) -> (T, 3, 3) homogeneous, float64."""
    m = matrix.double()
    bottom = torch.zeros(m.shape[0], 1, 3, dtype=m.dtype, device=m.device)
    bottom[:, 0, 2] = 1.0
    return torch.cat([m, bottom], dim=1)


def affine_crop_to_full(matrix, geometry: CropGeometry):
    """Express affine maps found in crop pixels in full-FOV pixels (exact).

    Parameters
    ----------
    matrix : ndarray or Tensor, shape (T, 2, 3)
        Affine maps in crop pixel coordinates (as predicted on the crop).
    geometry : CropGeometry
        The crop the maps were predicted on.

    Returns
    -------
    ndarray or Tensor, shape (T, 2, 3), float64
        ``H @ M @ H^-1`` where ``H`` maps crop to full-FOV pixels.
    """
    m, was_np = _as_tensor(matrix)
    h = geometry.homogeneous().to(m.device)
    out = (h @ _hom(m) @ torch.linalg.inv(h))[:, :2]
    return out.numpy() if was_np else out


def map_points(matrix: torch.Tensor, point_yx) -> torch.Tensor:
    """Where pull-back affine maps ``(T, 2, 3)`` take the point ``(y, x)``: ``(T, 2)``, float64."""
    c = torch.tensor([point_yx[0], point_yx[1], 1.0], dtype=torch.float64,
                     device=matrix.device)
    return matrix.double() @ c


def compose_affine(first, second):
    """Affine map of "apply ``first``, then ``second``": ``first @ second``.

    Parameters
    ----------
    first, second : Tensor, shape (T, 2, 3)

    Returns
    -------
    Tensor, shape (T, 2, 3), float64
    """
    return (_hom(first) @ _hom(second))[:, :2]


def translate_frames(matrix: torch.Tensor, frames, d: torch.Tensor,
                     geometry: CropGeometry) -> torch.Tensor:
    """Full-FOV maps ``(T, 2, 3)`` with ``frames`` (an index) moved by ``d``, crop pixels.

    The pre-contrast block and the first pass's frames (:mod:`.baseline`,
    :mod:`.firstpass_align`) are moved by one translation found on a crop; each of
    their maps is composed with it, expressed in full-FOV pixels.  Returns a float64 copy.
    """
    shift = torch.eye(2, 3, dtype=torch.float64, device=matrix.device)[None].clone()
    shift[0, :, 2] = d.to(matrix.device)
    out = matrix.double().clone()
    picked = out[frames]
    out[frames] = compose_affine(picked, affine_crop_to_full(shift, geometry)
                                 .expand(picked.shape[0], -1, -1))
    return out


def dense_crop_to_full(
    displacement: torch.Tensor,
    geometry: CropGeometry,
    full_shape: tuple[int, int],
    *,
    taper_px: int = 8,
) -> torch.Tensor:
    """Express a dense displacement found on a crop on the full-FOV grid.

    Inside the crop ``d_full(p) = scale * d_crop(q(p))`` (exact up to the
    bilinear interpolation of ``d_crop``); the field fades to zero over the
    outer ``taper_px`` crop pixels (cosine window) and is zero outside the
    crop, so the full-FOV field has no step at the crop border.

    Parameters
    ----------
    displacement : Tensor, shape (T, 2, n, n), float32, crop pixels
    geometry : CropGeometry
        The crop (``size == n``).
    full_shape : tuple of 2 int
        ``(Y, X)`` of the full-FOV images.
    taper_px : int, keyword-only
        Width of the fade-out band, crop pixels (0 = none).

    Returns
    -------
    Tensor, shape (T, 2, Y, X), float32, full-FOV pixels
    """
    n = geometry.size
    d = displacement.float()
    if taper_px > 0:
        r = torch.arange(n, dtype=torch.float32, device=d.device)
        edge = torch.minimum(r, n - 1 - r)
        w = torch.clamp(edge / float(taper_px), 0.0, 1.0)
        w = 0.5 - 0.5 * torch.cos(torch.pi * w)
        d = d * (w[:, None] * w[None, :])
    q = geometry.to_crop(identity_grid(full_shape, device=d.device))
    out = sample(d, q[None], padding="zeros")
    s = torch.tensor(geometry.scale_yx, dtype=out.dtype, device=out.device).view(1, 2, 1, 1)
    return out * s


def anchor_to_frame(phi: torch.Tensor, index: int, *, centre_yx, radius_px: float) -> torch.Tensor:
    """Compose sampling maps so that frame ``index`` keeps its acquired geometry.

    Registering to synthetic (PCA) references, and networks that are not
    exactly the identity on a pair of equal images, can move, turn and scale
    the whole series alike, which the alignment of the frames cannot see.  The
    affine map ``A(q) = L q + c`` that best fits frame ``index``'s map in a
    disc around ``centre_yx`` (least squares) is undone in every frame:
    ``phi'(q) = phi(A^-1(q))``, so the corrected series lies where the reference
    frame was acquired, in position, rotation and scale.  If the fitted linear
    part is implausible (singular values outside 0.5..2), only the mean
    translation is removed.

    Parameters
    ----------
    phi : Tensor, shape (T, 2, Y, X), float, pixels
        Sampling maps (identity + pull-back displacement); ``[:, 0]`` is y.
    index : int
        The frame to anchor.
    centre_yx : tuple of 2 float
        Centre of the disc (pixels), e.g. the LV centre.
    radius_px : float, keyword-only
        Radius of the disc, pixels.

    Returns
    -------
    Tensor, shape (T, 2, Y, X)
    """
    ny, nx = phi.shape[-2:]
    ident = identity_grid((ny, nx), device=phi.device, dtype=phi.dtype)
    cy, cx = float(centre_yx[0]), float(centre_yx[1])
    dist2 = (ident[0] - cy) ** 2 + (ident[1] - cx) ** 2
    disc = dist2 <= float(radius_px) ** 2
    if not bool(disc.any()):
        return phi
    # least-squares affine fit of the reference frame's map on the disc, about its centre
    rel = torch.stack([torch.ones_like(ident[0][disc]), ident[0][disc] - cy,
                       ident[1][disc] - cx], dim=1).double()  # (N, 3)
    coef = torch.linalg.lstsq(rel, phi[index][:, disc].double().T).solution  # (3, 2)
    lin = coef[1:].T  # (2, 2): phi_ref(q) ~ centre + b + L (q - centre)
    sv = torch.linalg.svdvals(lin)
    centre = torch.tensor([cy, cx], dtype=torch.float64, device=phi.device)
    if not bool(torch.isfinite(lin).all()) or float(sv.min()) < 0.5 or float(sv.max()) > 2.0:
        lin = torch.eye(2, dtype=torch.float64, device=phi.device)
        coef[0] = centre + (phi[index][:, disc].double() - ident[:, disc].double()).mean(dim=1)
    off = coef[0] - centre  # where the disc centre is sampled from, minus the centre
    # A^-1(q) = centre + L^-1 (q - centre - off)
    inv = torch.linalg.inv(lin)
    q = (ident.double() - (centre + off)[:, None, None])
    coords = (centre[:, None, None] + torch.einsum("ij,jyx->iyx", inv, q)).to(phi.dtype)
    disp = phi - ident[None]
    t = phi.shape[0]
    # resample the displacement (not the coordinates): it extends smoothly past the edges
    moved = sample(disp.reshape(t * 2, ny, nx), coords[None], padding="border").reshape(
        t, 2, ny, nx)
    return coords[None] + moved


#: Radius (mm) around the LV centre over which the reference frame is held in place.
ANCHOR_RADIUS_MM = 40.0


def anchor_reference(phi: torch.Tensor, index: int, *, centre_yx,
                     spacing_mm: tuple[float, float]) -> torch.Tensor:
    """:func:`anchor_to_frame` on the ``ANCHOR_RADIUS_MM`` disc about the LV centre.

    The one anchoring of both correction methods (``moco.anchor_reference``).
    """
    return anchor_to_frame(phi, index, centre_yx=centre_yx,
                           radius_px=ANCHOR_RADIUS_MM / min(spacing_mm))

