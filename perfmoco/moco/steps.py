"""The steps of one slice's correction, in the order :class:`.MotionCorrector` runs them.

Each step takes the series' :class:`.crops.SeriesCrops` (its frames, the reference
frame, the LV-centred crop geometries and the 0..1 intensity scaling) and the
full-FOV affine maps found so far:

1. :func:`affine_step1`: GlobalNet, every frame to the reference frame;
   :func:`.reference.middle_reference` may then move the reference to a late
   dynamic nearer the median breathing position (the maps moved onto it by
   :func:`.reference.rebase`).
2. :func:`affine_step2`: GlobalNet, every frame to a PCA synthetic reference.
   :func:`refine_dynamics`: the test-time affine refinement and the
   pre-contrast block alignment (:mod:`.refine`, :mod:`.baseline`);
   :func:`heart_dilation`: one radial dilation of the heart per frame
   (:mod:`.dilation`).
3. :func:`dense_step3`: LocalNet, every frame to a PCA reference.

:func:`compose_and_resample` turns the maps, the dilations and the dense field into one
full-FOV displacement per frame and resamples the originals once;
:func:`frame_qc` flags frames that still look misaligned.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable

import numpy as np
import torch

from perfmoco.moco.baseline import MIN_LATE, align_baseline_full_fov, baseline_length, heart_disc
from perfmoco.moco.checks import affine_coords, ncc_per_frame, plausible_affine, qc_flags
from perfmoco.moco.coarse import agrees, centre_moves, centre_shift_mm, coarse_translations
from perfmoco.moco.crops import SeriesCrops
from perfmoco.moco.decompose import pca_reference
from perfmoco.moco.dilation import fit_dilation
from perfmoco.moco.firstpass_align import align_first_pass_full_fov
from perfmoco.moco.pdalign import align_pd_full_fov
from perfmoco.moco.preprocess import (
    histogram_equalise,
)
from perfmoco.moco.qc import temporal_outliers
from perfmoco.moco.refine import (
    refine_crop,
    refine_full_fov,
    remove_affine_part,
)
from perfmoco.moco.transforms import (
    affine_crop_to_full,
    anchor_reference,
    compose_affine,
    dense_crop_to_full,
    identity_grid,
    sample,
)
from perfmoco.study import SliceRole

#: Pixels of the crop the heart dilation is fitted on (``moco.dilation_crop_mm`` across).
DILATION_CROP = 64

__all__ = [
    "SeriesCrops",
    "affine_step1",
    "affine_step2",
    "compose_and_resample",
    "dense_step3",
    "frame_qc",
    "heart_dilation",
    "refine_dynamics",
]

log = logging.getLogger(__name__)

#: A network call: ``(stage, moving, fixed) -> (output, affine or None)``.
RunNet = Callable[[str, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


def affine_step1(sc: SeriesCrops, run_net: RunNet, net) -> tuple[torch.Tensor, torch.Tensor]:
    """GlobalNet, every frame to the reference frame (``affine1_passes`` times).

    Returns the full-FOV maps ``(T + P, 2, 3)`` and the frames whose network
    transform was implausible (replaced by the identity).
    """
    cfg, ref = sc.config, sc.ref
    x0 = histogram_equalise(sc.norm(sc.crop0))
    _, a1 = run_net("affine1", x0, x0[ref : ref + 1].expand_as(x0))
    a1, bad = plausible_affine(a1, net.crop, net.crop_spacing_mm, cfg.max_motion_mm)
    m_full = affine_crop_to_full(a1, sc.geo_a)
    for _ in range(cfg.affine1_passes - 1):  # the residual, from re-cropped originals
        x1 = histogram_equalise(sc.crops(m_full, sc.grid_a))
        _, a1 = run_net("affine1", x1, x1[ref : ref + 1].expand_as(x1))
        a1, b = plausible_affine(a1, net.crop, net.crop_spacing_mm, 0.5 * cfg.max_motion_mm)
        bad = bad | b
        m_full = compose_affine(m_full, affine_crop_to_full(a1, sc.geo_a))
    if cfg.coarse_align_mm > 0:
        m_full = _coarse_restart(sc, run_net, net, m_full, bad)
    return m_full, bad


def _coarse_restart(sc: SeriesCrops, run_net: RunNet, net, m_full: torch.Tensor,
                    bad: torch.Tensor) -> torch.Tensor:
    """Frames step 1 moved far: an exhaustive MI translation, then the network (:mod:`.coarse`)."""
    cfg, ref, t_dyn = sc.config, sc.ref, sc.t_dyn
    shift = centre_shift_mm(m_full[:t_dyn], ref, sc.centre_yx, sc.series.pixel_spacing_mm)
    if float(shift.median()) <= cfg.coarse_align_mm:
        # not deep breathing: the later steps close the network's shortfall, and
        # restarting a few frames only splits the series into two groups
        return m_full
    far = (shift > cfg.coarse_align_mm) & ~bad[:t_dyn].to(shift.device)
    far[ref] = False
    idx = torch.nonzero(far).flatten()
    if idx.numel() == 0:
        return m_full
    start, found = coarse_translations(sc.imgs[:t_dyn], idx, ref, sc.centre_yx,
                                       sc.series.pixel_spacing_mm, (sc.lo, sc.hi),
                                       max_mm=cfg.coarse_max_mm,
                                       radius_mm=sc.disc_radius_mm)
    moves = centre_moves(m_full[:t_dyn], ref, sc.centre_yx)[idx]
    found &= agrees(moves.cpu(), start[:, :, 2].cpu())
    found = found.to(idx.device)
    idx, start = idx[found], start[found.to(start.device)]
    if idx.numel() == 0:
        return m_full
    # the search's translations hold between the original frames; the maps so far
    # also carry what the network does to the reference frame itself (a turn and a
    # scale, undone at the end by the anchoring), so the restarts carry it too
    start = compose_affine(start.to(m_full), m_full[ref : ref + 1].expand(len(idx), -1, -1))
    trial = m_full.clone()
    trial[idx] = start
    x = histogram_equalise(sc.crops(trial, sc.grid_a))
    _, a1 = run_net("affine1", x[idx], x[ref : ref + 1].expand(len(idx), -1, -1))
    a1, b = plausible_affine(a1, net.crop, net.crop_spacing_mm, 0.5 * cfg.max_motion_mm)
    moved = compose_affine(start, affine_crop_to_full(a1, sc.geo_a))
    moved[b] = start[b]  # an implausible second look keeps the search's translation
    out = m_full.clone()
    out[idx] = moved.to(out)
    log.info("%s: %d of %d dynamics moved > %.0f mm by step 1 restarted from an exhaustive "
             "translation search", sc.series.name, idx.numel(), t_dyn, cfg.coarse_align_mm)
    return out


def affine_step2(sc: SeriesCrops, run_net: RunNet, net, m_full: torch.Tensor,
                 bad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GlobalNet, every frame to the PCA reference of the result so far.

    Each of the ``affine2_passes`` re-crops the originals and rebuilds the reference.
    """
    cfg = sc.config
    k = min(cfg.pca_components, sc.t_dyn - 1)
    for _ in range(cfg.affine2_passes):
        n1 = sc.crops(m_full, sc.grid_a)
        ref2 = sc.refs(pca_reference(n1[: sc.t_dyn], components=k))
        _, a2 = run_net("affine2", histogram_equalise(n1), histogram_equalise(ref2))
        a2, b = plausible_affine(a2, net.crop, net.crop_spacing_mm, 0.5 * cfg.max_motion_mm)
        bad = bad | b
        m_full = compose_affine(m_full, affine_crop_to_full(a2, sc.geo_a))
    return m_full, bad


def shape_window_mm(sc: SeriesCrops) -> float:
    """SD (mm) of the window of the refinement's shape round; 0 where it is skipped.

    ``moco.refine_shape_window`` LV blood-pool radii, at least
    ``moco.refine_shape_min_mm``; skipped on the AIF slice (the heart spans a few
    of its pixels), where the radius is unknown, and where the window would not
    be smaller than the refinement's own.
    """
    cfg = sc.config
    if (cfg.refine_shape_window <= 0 or sc.series.role is SliceRole.AIF
            or not np.isfinite(sc.lv_radius_mm)):
        return 0.0
    w = max(cfg.refine_shape_window * sc.lv_radius_mm, cfg.refine_shape_min_mm)
    return w if w < cfg.refine_window_mm else 0.0


def refine_dynamics(sc: SeriesCrops, m_full: torch.Tensor) -> torch.Tensor:
    """Test-time affine refinement of the dynamics, then the pre-contrast block.

    The refinement (Gauss-Newton to a PCA reference) removes the networks'
    per-frame noise; the block alignment moves the frames before the bolus onto
    the late frames, and the refinement runs again (fewer rounds: it starts
    close) so that the bolus frames between them follow, the moved block held
    (``moco.baseline_hold``).  A last round fits the heart's shape alone under
    a window sized to the heart (:func:`shape_window_mm`).  Last, each PD frame's
    translation onto the corrected late dynamics is searched (``moco.pd_align``,
    :mod:`.pdalign`; without it they keep step 2's maps).
    """
    cfg, t_dyn, series = sc.config, sc.t_dyn, sc.series
    images = sc.imgs[:t_dyn]
    coarse = cfg.refine_coarse_rounds
    if series.role is SliceRole.AIF and not cfg.refine_coarse_aif:
        coarse = 0
    neighbour = cfg.refine_neighbour_mm
    if series.role is SliceRole.AIF and not cfg.refine_neighbour_aif:
        neighbour = 0.0
    basis_share = cfg.refine_basis_share
    if series.role is SliceRole.AIF and not cfg.refine_basis_aif:
        basis_share = 0.0

    def refine(m_dyn: torch.Tensor, rounds: int, hold: torch.Tensor | None = None, *,
               window_mm: float = cfg.refine_window_mm, translate: bool = True):
        if cfg.refine_iterations > 0 and t_dyn > 2 and rounds > 0:
            return refine_full_fov(images, m_dyn, sc.centre_yx, series.pixel_spacing_mm,
                                   (sc.lo, sc.hi), dataclasses.replace(
                                       cfg, refine_rounds=rounds, refine_window_mm=window_mm,
                                       refine_coarse_rounds=coarse if translate else 0,
                                       refine_neighbour_mm=neighbour,
                                       refine_basis_share=basis_share),
                                   name=series.name, hold=hold,
                                   isotropic_scale=not sc.dilates, translate=translate)
        return m_dyn

    m_dyn = refine(m_full[:t_dyn], cfg.refine_rounds)
    if cfg.baseline_align and t_dyn >= 2 * MIN_LATE:
        m_dyn, found = align_baseline_full_fov(images, m_dyn, sc.centre_yx,
                                               series.pixel_spacing_mm, (sc.lo, sc.hi), cfg,
                                               name=series.name,
                                               aif=series.role is SliceRole.AIF)
        if found.applied:
            hold = None
            if cfg.baseline_hold:
                hold = torch.zeros(t_dyn, dtype=torch.bool, device=images.device)
                hold[: found.n_frames] = True
            m_dyn = refine(m_dyn, cfg.baseline_refine_rounds, hold)
    if cfg.first_pass_align and series.role is not SliceRole.AIF and t_dyn >= 2 * MIN_LATE:
        m_dyn, _ = align_first_pass_full_fov(images, m_dyn, sc.centre_yx,
                                             series.pixel_spacing_mm, (sc.lo, sc.hi), cfg,
                                             name=series.name)
    shape_window = shape_window_mm(sc)
    if shape_window > 0:
        m_dyn = refine(m_dyn, 1, window_mm=shape_window, translate=False)
    m_pd = m_full[t_dyn:]
    if cfg.pd_align and sc.n_pd:
        m_pd = align_pd_full_fov(images, sc.imgs[t_dyn:], m_dyn, m_pd, sc.centre_yx,
                                 series.pixel_spacing_mm, (sc.lo, sc.hi), (sc.lo_pd, sc.hi_pd),
                                 max_mm=cfg.pd_align_max_mm, radius_mm=sc.disc_radius_mm,
                                 name=series.name)
    return torch.cat([m_dyn, m_pd.to(m_dyn)])


def heart_dilation(sc: SeriesCrops, m_full: torch.Tensor) -> torch.Tensor | None:
    """One radial dilation of the heart per frame, after the affine maps (``(T + P,)``).

    Fitted on a crop of ``moco.dilation_crop_mm`` about the LV against a PCA reference
    (:func:`.dilation.fit_dilation`); the reference frame keeps none, PD frames
    none.  None (no dilation) with ``moco.dilation_step`` off, and on the AIF
    slice unless ``moco.dilation_aif``.
    """
    cfg, t_dyn = sc.config, sc.t_dyn
    if not sc.dilates or t_dyn < 3:
        return None
    scale = torch.zeros(m_full.shape[0], device=m_full.device)
    # its own crop, about the heart: on the refinement's 160 mm crop a known dilation of a
    # phantom apex was recovered to 3.5 % rms of 4.7 % (80 mm: 0.8 %), likely because the
    # PCA reference there follows the surroundings (docs/motion-correction.md)
    spacing = cfg.dilation_crop_mm / DILATION_CROP
    _, crop = refine_crop(sc.imgs[:t_dyn], m_full[:t_dyn], sc.centre_yx,
                          sc.series.pixel_spacing_mm, (sc.lo, sc.hi), size=DILATION_CROP,
                          spacing_mm=spacing)
    hold = None
    if cfg.dilation_skip_precontrast:  # little heart contrast: biased fits (model card)
        # the bolus found as everywhere else: on the refinement's crop, with its disc
        _, rcrop = refine_crop(sc.imgs[:t_dyn], m_full[:t_dyn], sc.centre_yx,
                               sc.series.pixel_spacing_mm, (sc.lo, sc.hi))
        n_pre = baseline_length(rcrop, heart_disc(cfg.baseline_radius_mm, device=crop.device))
        hold = torch.arange(t_dyn, device=crop.device) < n_pre
    scale[:t_dyn] = fit_dilation(
        crop,
        window_sigma_px=cfg.refine_window_mm / spacing,
        radius_px=cfg.dilation_radius_mm / spacing,
        components=cfg.refine_components,
        max_scale=cfg.dilation_max,
        reference_index=sc.ref,
        hold=hold,
    )
    return scale


def dense_step3(sc: SeriesCrops, run_net: RunNet, net, m_full: torch.Tensor,
                scale: torch.Tensor | None = None):
    """LocalNet, every frame to the PCA reference of the affine result (and dilations).

    Returns the dense field ``(T + P, 2, n, n)`` in crop pixels (its affine
    part removed with ``moco.dense_nonrigid_only``; zero with
    ``moco.dense_step`` off) and the crops it was computed from.
    """
    cfg = sc.config
    k = min(cfg.pca_components, sc.t_dyn - 1)
    n2 = sc.crops(m_full, sc.grid_n, scale)
    if not cfg.dense_step:
        return torch.zeros(n2.shape[0], 2, *n2.shape[1:], device=n2.device), n2
    ref3 = sc.refs(pca_reference(n2[: sc.t_dyn], components=k))
    d3, _ = run_net("dense", histogram_equalise(n2), histogram_equalise(ref3))
    if cfg.dense_nonrigid_only:
        d3 = remove_affine_part(d3, window_sigma_px=cfg.refine_window_mm / net.crop_spacing_mm)
    return d3, n2


def compose_and_resample(sc: SeriesCrops, m_full: torch.Tensor, d3: torch.Tensor,
                         scale: torch.Tensor | None = None):
    """One full-FOV pull-back displacement per frame, and the originals resampled once.

    ``phi = phi_affine o phi_dilation o phi_dense`` in full-FOV pixels; with
    ``moco.anchor_reference`` the reference frame stays where it was acquired.
    Returns ``(displacement (T + P, 2, Y, X), corrected (T + P, Y, X))``.
    """
    cfg = sc.config
    ny, nx = sc.imgs.shape[-2:]
    dev = sc.imgs.device
    d3_full = dense_crop_to_full(d3, sc.geo_n, (ny, nx))
    pts = identity_grid((ny, nx), device=dev)[None] + d3_full
    if scale is not None:
        pts = pts + sc.dilation(scale, pts)
    phi = affine_coords(m_full, pts)
    if cfg.anchor_reference:
        phi = anchor_reference(phi, sc.ref, centre_yx=sc.centre_yx,
                               spacing_mm=sc.series.pixel_spacing_mm)
    disp = phi - identity_grid((ny, nx), device=dev)[None]
    corrected = sample(sc.imgs, phi, padding="border", mode=cfg.resample)
    if cfg.resample == "bicubic":  # no overshoot below zero (magnitude images) or below
        corrected = corrected.clamp_min(min(0.0, float(sc.imgs.min())))  # a signed series' least
    return disp, corrected


def frame_qc(sc: SeriesCrops, n2: torch.Tensor, d3: torch.Tensor, bad: torch.Tensor,
             dense_crop: int, dense_spacing_mm: float) -> np.ndarray:
    """QC flags of the dynamics ``(T,)``: residual misalignment, outliers, bad transforms.

    The residual is measured on the corrected dense crop against its PCA
    reference; ``moco.qc_outlier_ratio`` adds frames unlike both neighbours
    (mistriggers); frames whose network transform was implausible are flagged too.
    """
    cfg, t_dyn, series = sc.config, sc.t_dyn, sc.series
    k = min(cfg.pca_components, t_dyn - 1)
    grid3 = identity_grid((dense_crop, dense_crop), device=n2.device)[None] + d3
    n3 = sample(n2[:t_dyn], grid3[:t_dyn], padding="border")
    ncc = ncc_per_frame(n3, pca_reference(n3, components=k))
    qc = qc_flags(ncc, threshold=cfg.qc_threshold, robust_z=cfg.qc_robust_z)
    if cfg.qc_outlier_ratio > 0:
        odd, _ = temporal_outliers(n3, window_sigma_px=cfg.qc_window_mm / dense_spacing_mm,
                                   ratio=cfg.qc_outlier_ratio)
        if odd.any():
            log.info("%s: dynamics %s look unlike both neighbours (mistriggered?); QC-flagged",
                     series.name, np.flatnonzero(odd).tolist())
        qc = qc | odd
    bad_np = bad.cpu().numpy()
    if bad_np[:t_dyn].any():
        log.warning(
            "%s: implausible network transforms (> %.0f mm or |scale - 1| > 0.2) replaced by "
            "the identity in %d of %d dynamics; these are QC-flagged (is the LV centre %s "
            "right?)",
            series.name, cfg.max_motion_mm, int(bad_np[:t_dyn].sum()), t_dyn,
            tuple(round(v, 1) for v in sc.centre_yx),
        )
    return qc | bad_np[:t_dyn]
