"""Test-time affine refinement: a few Gauss-Newton steps against the PCA reference.

The two GlobalNet steps leave a residual of ~1-1.5 crop pixels per frame that
is mostly uncorrelated prediction noise (measured on held-out phantoms: the
residual LV motion after step 2 hardly correlates with the true motion).  An
iterative registration of every frame to its own PCA synthetic frame removes
that noise, as the iterative baseline of the paper (elastix) does, but here it
starts from the networks' answer, so a handful of steps suffice: a batched
Lucas-Kanade (forward-additive Gauss-Newton) on all frames at once, weighted
by a Gaussian window on the heart so that the chest wall and liver, which
move differently, do not pull the estimate.

Intensities are matched after per-frame normalisation (zero mean, unit SD
under the window), so the contrast passage does not enter the residual; the
PCA reference already carries each frame's contrast.  Steps are damped
(Levenberg-Marquardt), bounded, and a frame keeps its update only where the
windowed NCC to its reference does not fall.

The PCA reference's components are learned from the frames near the series'
usual breathing position (:func:`breathing_basis`, ``moco.refine_basis_share``):
near the apex the heart's cross-section changes with the breathing, and
components learned from every frame carried that change into each frame's
reference, so that the refinement kept the frames of deep breaths 10-15 %
larger than the reference frame (see docs/motion-correction.md).
"""

from __future__ import annotations

import functools
import logging
import math

import torch

from perfmoco.moco.basis import breathing_basis
from perfmoco.moco.checks import affine_coords
from perfmoco.moco.decompose import pca_reference
from perfmoco.moco.ncc import (
    gaussian_window,
    image_gradients,
    ncc_residual,
    normalise_windowed,
    windowed_ncc,
)
from perfmoco.moco.normal_equations import coordinate_pairs, normal_equations
from perfmoco.moco.preprocess import scale_to_unit
from perfmoco.moco.transforms import (
    CropGeometry,
    affine_crop_to_full,
    compose_affine,
    identity_grid,
    sample,
)

__all__ = [
    "crop_validity",
    "refine_affine",
    "refine_crop",
    "refine_full_fov",
    "remove_affine_part",
]

log = logging.getLogger(__name__)

#: Crop of the refinement: 64 px of 2.5 mm (160 mm) about the LV centre, enough
#: for its 30 mm Gaussian window and 4x cheaper than the 128 px step-1 crop.
REFINE_CROP = 64
REFINE_SPACING_MM = 2.5


def refine_affine(
    moving: torch.Tensor,
    *,
    window_sigma_px: float,
    components: int = 4,
    rounds: int = 2,
    extra_rounds: int = 0,
    settle_px: float = 0.2,
    iterations: int = 6,
    max_step_px: float = 1.5,
    max_total_px: float = float("inf"),
    fixed: torch.Tensor | None = None,
    hold: torch.Tensor | None = None,
    isotropic_scale: bool = True,
    coarse_rounds: int = 0,
    translate: bool = True,
    neighbour_sigma_px: float = 0.0,
    valid: torch.Tensor | None = None,
    basis: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Refine each frame's alignment by a crop-space affine map.

    Parameters
    ----------
    moving : Tensor, shape (T, H, W), float
        The (already roughly aligned) crop series, centred on the heart.
    window_sigma_px : float, keyword-only
        SD of the Gaussian weighting window about the crop centre, pixels.
    components : int, keyword-only
        PCA components of the synthetic reference (rebuilt every round).
    rounds, iterations : int, keyword-only
        Reference rebuilds, and Gauss-Newton steps per rebuild.
    extra_rounds, settle_px : keyword-only
        Up to this many more rounds while the frames still move: while the last
        round moved a tenth of them more than ``settle_px`` pixels (a deep breather's
        frames reach the reference over more rounds than the usual ones need).
    max_step_px : float, keyword-only
        Largest change of a frame's window-centre position per step, pixels.
    max_total_px : float, keyword-only
        A frame whose refinement moves its window centre further than this keeps
        the identity (a refinement only removes small residuals; larger moves
        mean the reference misled it).  Steps that would scale or shear a frame
        by more than :data:`MAX_LINEAR` are clamped to it.
    fixed : Tensor, shape (T, H, W), optional, keyword-only
        A fixed reference series instead of the PCA one (tests).
    hold : Tensor, shape (T,), bool, optional, keyword-only
        Frames that keep the identity: they still shape the PCA reference of
        the others but are not moved themselves.
    isotropic_scale : bool, keyword-only
        ``False`` keeps the trace of each update of the linear part at zero
        (rotation and shear only): a window on the heart also holds tissue that
        does not scale with it, so its scale is left to :mod:`.dilation`.
    coarse_rounds : int, keyword-only
        The first rounds build their reference from one component only: a
        residual shared by many frames (the far end of deep breathing, which
        the networks under-correct) becomes a component of its own in a richer
        reference, which then follows it instead of removing it.  They fit
        translation alone (that one component misses the enhancing myocardium,
        which a linear part reads as scale) and without the neighbours'
        residuals (before them a deep breather's neighbours are still
        misaligned, and their residuals carry edges, not contrast).
    translate : bool, keyword-only
        ``False`` fits the linear part only (rotation, scale, shear about the
        crop centre, which stays where it is): the heart's shape under a
        window on the heart, its position left to a wider window.
    neighbour_sigma_px : float, keyword-only
        The PCA reference of the rounds after the coarse ones also carries its
        temporal neighbours' residuals, smoothed by this SD
        (:func:`.decompose.pca_reference`); 0: not.
    valid : Tensor, shape (T, H, W), optional, keyword-only
        1 where a frame's crop pixel lies inside its image, 0 where the crop
        left the field of view (:func:`crop_validity`).  Each round then
        weights only the pixels that every frame holds, a margin inside their
        edge: the edge of the field of view stays where the image was acquired
        while the heart moves, so within the window it would pull every frame
        back towards its acquired position (a heart near the image's edge).
        None: every pixel is inside.
    basis : Tensor, shape (T,), bool, optional, keyword-only
        The frames whose principal components make the PCA reference of the
        rounds after the coarse ones (:func:`.decompose.pca_reference`,
        :func:`breathing_basis`); None: all frames.

    Returns
    -------
    matrix : Tensor, shape (T, 2, 3), float64
        Pull-back affine map of crop pixels ``(y, x, 1)`` per frame, to be
        composed after the transform that produced ``moving``.
    rejected : Tensor, shape (T,), bool
        Frames that kept the identity because of ``max_total_px``.
    """
    t, h, w_ = moving.shape
    dev = moving.device
    x = moving.float()
    g = identity_grid((h, w_), device=dev)
    c = torch.tensor([(h - 1) / 2.0, (w_ - 1) / 2.0], dtype=torch.float32, device=dev)
    yy, xx = g[0] - c[0], g[1] - c[1]
    win0 = gaussian_window(h, w_, window_sigma_px, device=dev)
    # affine about the crop centre: q = c + L (p - c) + s, with params (L00 L01 s0 L10 L11 s1)
    lin = torch.eye(2, dtype=torch.float32, device=dev).repeat(t, 1, 1)
    shift = torch.zeros(t, 2, dtype=torch.float32, device=dev)
    gy_img, gx_img = image_gradients(x)
    chans = [x, gy_img, gx_img] + ([valid.to(x)] if valid is not None else [])
    stack = torch.stack(chans, dim=1)  # (T, 3 or 4, H, W), sampled together
    margin = int(math.ceil(max_step_px))  # one step's largest move
    rel = torch.stack([yy, xx])  # (2, H, W)
    inv_sigma = 1.0 / window_sigma_px  # the linear part's columns scaled for conditioning
    basis_pairs = coordinate_pairs(yy * inv_sigma, xx * inv_sigma)

    def warped(lin_, shift_, sel=None):
        # L (p - c) per frame: (T, 2, H, W); elementwise is ~3x faster than einsum here
        lp = lin_[..., 0, None, None] * rel[0] + lin_[..., 1, None, None] * rel[1]
        coords = lp + (c + shift_)[:, :, None, None]
        return sample(stack if sel is None else stack[sel], coords, padding="border")

    linear = torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0, 0.0], device=dev)  # (L00 L01 s0 L10 L11 s1)
    moved = float("inf")  # the last round's 90th-percentile move, pixels
    for r_ in range(rounds + extra_rounds):
        if r_ >= rounds and moved < settle_px:  # settled: no extra round
            break
        before = shift.clone()
        # the parameters this round moves: shape only keeps the crop centre where it is;
        # the coarse rounds fit translation alone
        free = linear if not translate else torch.ones_like(linear)
        if r_ < coarse_rounds:
            free = free * (1.0 - linear)
        if r_ == 0:  # later rounds: ``cur`` is already warped(lin, shift), frame by frame
            cur = warped(lin, shift)
        k_ = 1 if r_ < coarse_rounds else components
        win, held = _common_window(win0, cur[:, 3] if valid is not None else None, margin)
        frames = cur[:, 0] if held is None else cur[:, 0] * held  # nothing moves outside
        ref = fixed.float() if fixed is not None else pca_reference(
            frames.float(), components=min(k_, t - 1),
            neighbour_sigma_px=neighbour_sigma_px if r_ >= coarse_rounds else 0.0,
            basis=basis if r_ >= coarse_rounds else None)
        rn = normalise_windowed(ref, win)
        best = windowed_ncc(cur[:, 0], ref, win)
        # a frame whose step was refused would compute the same step again (same frame,
        # reference and parameters): on the CPU it rests for the round (on a GPU picking
        # the others would wait for the device each step); held frames never move
        active = torch.ones(t, dtype=torch.bool, device=dev) if hold is None else ~hold
        for _ in range(iterations):
            sel = active.nonzero()[:, 0] if dev.type == "cpu" else None
            if sel is not None and sel.numel() == 0:
                break
            if sel is not None and sel.numel() == t:
                sel = None
            pick = functools.partial(_rows, sel=sel)
            r, iy, ix = ncc_residual(pick(cur), pick(rn), win)
            hess, grad = normal_equations(iy, ix, r, win, basis_pairs)
            damp = 1e-3 * hess.diagonal(dim1=1, dim2=2).mean(1)[:, None, None]
            step = -torch.linalg.solve(hess + damp * torch.eye(6, dtype=hess.dtype, device=dev),
                                       grad[..., None])[..., 0]
            step = step * free
            ds = step[:, [2, 5]]
            big = ds.norm(dim=1, keepdim=True)
            f = (max_step_px / big.clamp_min(1e-12)).clamp(max=1.0)
            step = step * f
            dl = torch.stack([step[:, :2], step[:, 3:5]], dim=1) * inv_sigma
            if not isotropic_scale:  # the heart's own scale is left to the dilation step
                tr = 0.5 * (dl[:, 0, 0] + dl[:, 1, 1])
                dl = dl - tr[:, None, None] * torch.eye(2, device=dev)
            lin_a, shift_a = pick(lin), pick(shift)
            new_lin = _bounded(lin_a + dl)
            new_shift = shift_a + step[:, [2, 5]]
            trial = warped(new_lin, new_shift, sel)
            ncc = windowed_ncc(trial[:, 0], pick(ref), win)
            best_a = pick(best)
            ok = (ncc >= best_a) & pick(active)
            upd = (torch.where(ok[:, None, None], new_lin, lin_a),
                   torch.where(ok[:, None], new_shift, shift_a), torch.where(ok, ncc, best_a),
                   torch.where(ok[:, None, None, None], trial, pick(cur)))  # the next frames
            if sel is None:
                lin, shift, best, cur = upd
                active = active & ok
            else:
                lin[sel], shift[sel], best[sel], cur[sel] = upd
                active[sel] = ok
        moved = float(torch.quantile((shift - before).norm(dim=1).float(), 0.9))
    lin, shift, c = lin.double(), shift.double(), c.double()
    sv = torch.linalg.svdvals(lin)
    over = ((sv - 1.0).abs() > MAX_LINEAR + 1e-4).any(dim=1)  # (clamped each step)
    rejected = (shift.norm(dim=1) > max_total_px) | over
    rejected = rejected | ~torch.isfinite(lin).all(dim=(1, 2)) | ~torch.isfinite(shift).all(dim=1)
    eye = torch.eye(2, dtype=lin.dtype, device=dev).expand_as(lin)
    lin = torch.where(rejected[:, None, None], eye, lin)
    shift = torch.where(rejected[:, None], torch.zeros_like(shift), shift)
    out = torch.zeros(t, 2, 3, dtype=torch.float64, device=dev)
    out[:, :, :2] = lin
    out[:, :, 2] = c + shift - torch.einsum("tpq,q->tp", lin, c)
    return out, rejected


#: Largest scale / shear of a frame's refinement (singular values of its linear part
#: within 1 +- this).  Each step's linear part is clamped to it, so that a frame whose
#: heart would need more (a deep breath at the apex) keeps what it gained up to it, its
#: shift included; a bound checked only at the end dropped that frame's refinement.
MAX_LINEAR = 0.1

def _bounded(lin: torch.Tensor) -> torch.Tensor:
    """Linear parts ``(T, 2, 2)`` with their singular values clamped to 1 +- :data:`MAX_LINEAR`."""
    u, sv, vh = torch.linalg.svd(lin)
    if bool(((sv - 1.0).abs() <= MAX_LINEAR).all()):
        return lin
    return u @ torch.diag_embed(sv.clamp(1.0 - MAX_LINEAR, 1.0 + MAX_LINEAR)) @ vh


def _rows(v: torch.Tensor, sel: torch.Tensor | None) -> torch.Tensor:
    """The frames ``sel`` of ``v`` (all: None)."""
    return v if sel is None else v[sel]


def _common_window(win: torch.Tensor, valid: torch.Tensor | None, margin: int):
    """``(window, held)``: the Gaussian window on the pixels every frame holds.

    ``valid`` ``(T, H, W)``: the frames' in-image share of each pixel (None:
    all inside).  ``held`` ``(H, W)`` is 1 where every frame is inside, eroded
    by ``margin`` pixels (None when nothing is cut); the window is zero
    elsewhere and sums to 1.  Where less than a fifth of the window's weight
    is left, the plain window is kept (nothing better is known).
    """
    if valid is None:
        return win, None
    inside = (valid >= 0.999).all(dim=0)
    if inside.all():
        return win, None
    if margin > 0:  # erosion: a pixel is held when its whole neighbourhood is
        k = 2 * margin + 1
        out = torch.nn.functional.max_pool2d((~inside).float()[None, None], k, 1, margin)
        inside = out[0, 0] == 0
    held = inside.to(win.dtype)
    w = win * held
    if float(w.sum()) < 0.2:
        return win, None
    return w / w.sum(), held


def crop_validity(matrix, geo: CropGeometry, image_shape) -> torch.Tensor:
    """``(T, size, size)`` float: 1 where a frame's crop pixel lies inside its image, else 0.

    ``matrix`` ``(T, 2, 3)``: the frames' full-FOV pull-back affine maps;
    ``geo``: the crop; ``image_shape``: ``(Y, X)`` of the frames.
    """
    c = affine_coords(matrix, geo.grid(device=matrix.device))
    ny, nx = image_shape
    ok = (c[:, 0] >= 0) & (c[:, 0] <= ny - 1) & (c[:, 1] >= 0) & (c[:, 1] <= nx - 1)
    return ok.float()


def remove_affine_part(displacement: torch.Tensor, *, window_sigma_px: float) -> torch.Tensor:
    """Subtract from each dense field its affine part under a Gaussian window.

    Parameters
    ----------
    displacement : Tensor, shape (T, 2, H, W), crop pixels
    window_sigma_px : float, keyword-only
        SD of the Gaussian window about the crop centre, pixels.

    Returns
    -------
    Tensor, shape (T, 2, H, W)
        The field minus its weighted least-squares fit ``A (p - c) + b``: what
        is left is the non-rigid part (zero-mean, no linear trend, under the window).
    """
    t, _, h, w_ = displacement.shape
    dev = displacement.device
    g = identity_grid((h, w_), device=dev)
    yy = (g[0] - (h - 1) / 2.0) / window_sigma_px
    xx = (g[1] - (w_ - 1) / 2.0) / window_sigma_px
    win = torch.exp(-0.5 * (yy**2 + xx**2))
    basis = torch.stack([torch.ones_like(yy), yy, xx])  # (3, H, W)
    gram = torch.einsum("iyx,jyx->ij", basis * win, basis).double()
    rhs = torch.einsum("iyx,tcyx->tci", basis * win, displacement).double()
    coef = torch.linalg.solve(gram, rhs.reshape(-1, 3).T).T.reshape(t, 2, 3)
    return displacement - torch.einsum("tci,iyx->tcyx", coef.float(), basis)


def refine_crop(images, matrix, centre_yx, pixel_spacing_mm, intensity_range, *,
                size: int = REFINE_CROP, spacing_mm: float = REFINE_SPACING_MM):
    """The refinement's crop (64 px of 2.5 mm about the LV) of a series through its maps.

    Parameters
    ----------
    images : Tensor, shape (T, Y, X)
    matrix : Tensor, shape (T, 2, 3)
        Full-FOV pull-back affine maps of the frames.
    centre_yx : tuple of 2 float
    pixel_spacing_mm : tuple of 2 float
    intensity_range : tuple of 2 float
        ``(lo, hi)`` for the 0..1 scaling.
    size, spacing_mm : int, float, keyword-only
        Another crop (pixels, mm per pixel), e.g. the heart dilation's.

    Returns
    -------
    geometry : CropGeometry
    crop : Tensor, shape (T, size, size), scaled to 0..1
    """
    geo = CropGeometry.from_spacing(centre_yx, size, crop_spacing_mm=spacing_mm,
                                    pixel_spacing_mm=pixel_spacing_mm)
    crop = sample(images, affine_coords(matrix, geo.grid(device=images.device)), padding="zeros")
    return geo, scale_to_unit(crop, *intensity_range)


def refine_full_fov(images, matrix, centre_yx, pixel_spacing_mm, intensity_range, config, *,
                    name: str = "series", hold: torch.Tensor | None = None,
                    isotropic_scale: bool = True, translate: bool = True) -> torch.Tensor:
    """Refine full-FOV affine maps of a series (the pipeline's step after step 2).

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
        ``(lo, hi)`` of the series, for the 0..1 scaling.
    config : MocoConfig
        ``refine_*`` settings.
    name : str, keyword-only
        Series name for the log.
    hold : Tensor, shape (T,), bool, optional, keyword-only
        Frames kept where they are (see :func:`refine_affine`).
    isotropic_scale : bool, keyword-only
        Let the affine maps scale isotropically (off when the heart's own
        dilation is fitted afterwards, :mod:`.dilation`).
    translate : bool, keyword-only
        ``False``: the linear part only (see :func:`refine_affine`).

    Returns
    -------
    Tensor, shape (T, 2, 3), float64
        ``matrix`` composed with the refinement.
    """
    geo, crop = refine_crop(images, matrix, centre_yx, pixel_spacing_mm, intensity_range)
    t = images.shape[0]
    valid = crop_validity(matrix, geo, images.shape[-2:])
    components = min(config.refine_components, t - 1)
    ar, rejected = refine_affine(
        crop,
        window_sigma_px=config.refine_window_mm / REFINE_SPACING_MM,
        components=components,
        rounds=config.refine_rounds,
        extra_rounds=config.refine_extra_rounds,
        iterations=config.refine_iterations,
        max_total_px=config.refine_max_mm / REFINE_SPACING_MM,
        hold=hold,
        isotropic_scale=isotropic_scale,
        coarse_rounds=config.refine_coarse_rounds,
        translate=translate,
        neighbour_sigma_px=config.refine_neighbour_mm / REFINE_SPACING_MM,
        valid=None if bool((valid > 0).all()) else valid,
        basis=breathing_basis(matrix, centre_yx, pixel_spacing_mm, config.refine_basis_share,
                              config.refine_basis_mm, minimum=2 * components + 2),
    )
    if rejected.any():
        log.info("%s: affine refinement kept the networks' result in %d of %d dynamics "
                 "(it moved them > %.0f mm)", name,
                 int(rejected.sum()), t, config.refine_max_mm)
    return compose_affine(matrix, affine_crop_to_full(ar, geo))
