"""The three-step deep-learning motion correction of one slice series.

Step 1: GlobalNet affine, every frame to the reference frame (``T - 10``);
``moco.affine1_passes`` > 1 repeats it on the re-cropped originals.  After
step 2, a test-time affine refinement (:mod:`perfmoco.moco.refine`) removes
the networks' per-frame prediction noise.
Step 2: GlobalNet affine, every frame to the matching frame of a PCA
synthetic reference series of the step-1 result.  Step 3: LocalNet dense,
every frame to a PCA reference of the step-2 result.  The crops are always
resampled from the ORIGINAL frames with the transform found so far; the
three results are composed into one full-FOV pull-back displacement per
frame and the originals are resampled once (:func:`correct_series`).

Crops are taken at a fixed physical pixel size (the checkpoint's
``crop_spacing_mm``, 1.8 mm for the shipped weights) so that series of any
matrix and spacing (1.5-3 mm, or the ~4 mm AIF slice) reach the networks at
the size they were trained on; the LV is found by its blood-pool signature
and the crop is zero-padded where it leaves the FOV.

PD frames are corrected with the same models: step 1 to the reference frame,
steps 2-3 to the first frame of the synthetic reference (series start).

Failure policy: images are never lost.  Bad input (fewer than 10 dynamics,
NaN/Inf, a blank frame) and any failure inside the correction raise
:class:`perfmoco.study.StudyError` with a message naming the slice; the
caller passes the original frames through (``method="none"``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from perfmoco.config import MocoConfig
from perfmoco.moco import networks
from perfmoco.moco.baseline import MIN_LATE, align_baseline_full_fov
from perfmoco.moco.checks import (
    affine_coords,
    check_series,
    identity_result,
    ncc_per_frame,
    plausible_affine,
    qc_flags,
    torch_device,
)
from perfmoco.moco.decompose import pca_reference
from perfmoco.moco.preprocess import (
    histogram_equalise,
    locate_lv,
    robust_range,
    scale_to_unit,
)
from perfmoco.moco.qc import temporal_outliers
from perfmoco.moco.refine import refine_full_fov, remove_affine_part
from perfmoco.moco.result import MocoResult
from perfmoco.moco.transforms import (
    CropGeometry,
    affine_crop_to_full,
    anchor_to_frame,
    compose_affine,
    dense_crop_to_full,
    identity_grid,
    sample,
)
from perfmoco.orientation import Orientation, canonical_orientation
from perfmoco.study import SliceSeries, StudyError

__all__ = ["MotionCorrector", "check_series", "correct_series", "identity_result"]

log = logging.getLogger(__name__)

#: Radius (mm) around the LV centre over which the reference frame is held in place.
_ANCHOR_RADIUS_MM = 40.0

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_DEFAULT_CONFIG = MocoConfig()


class MotionCorrector:
    """The three trained networks, ready to correct series.

    Parameters
    ----------
    models : dict of str to RegNet
        ``"affine1"``, ``"affine2"`` and ``"dense"`` (see :mod:`.networks`).
    device : str or torch.device, keyword-only
    config : MocoConfig, keyword-only
    meta : dict, keyword-only, optional
        Checkpoint metadata per stage (version, training info).
    """

    def __init__(
        self,
        models: dict[str, networks.RegNet],
        *,
        device: str | torch.device = "cpu",
        config: MocoConfig = _DEFAULT_CONFIG,
        meta: dict | None = None,
    ) -> None:
        missing = [s for s in networks.STAGES if s not in models]
        if missing:
            raise ValueError(f"models for stages {missing} are missing")
        self.device = torch.device(device)
        self.models = {k: m.to(self.device).eval() for k, m in models.items()}
        self.config = config
        self.meta = meta or {}
        self._lock = threading.Lock()  # the nets keep per-call state (last_affine)
        crops = (self.models["affine1"].crop, self.models["dense"].crop)
        if (config.affine_crop, config.nonrigid_crop) != crops:
            log.warning(
                "moco.affine_crop/nonrigid_crop %s differ from the networks' %s; "
                "the crop sizes of the checkpoints are used",
                (config.affine_crop, config.nonrigid_crop),
                crops,
            )

    @classmethod
    def load(
        cls,
        weights_dir: str | Path | None = None,
        *,
        device: str = "cpu",
        config: MocoConfig = _DEFAULT_CONFIG,
    ) -> MotionCorrector:
        """Load the three checkpoints (``affine1.pt``, ``affine2.pt``, ``dense.pt``).

        Parameters
        ----------
        weights_dir : str or Path, optional
            Folder with the checkpoints; ``None`` uses ``config.weights_dir``
            or, when that is empty, the weights shipped in the package.
        device : {"cpu", "cuda", "auto"}, keyword-only
        config : MocoConfig, keyword-only

        Raises
        ------
        FileNotFoundError
            When a checkpoint is missing (the message says how to train one).
        """
        folder = Path(weights_dir or config.weights_dir or WEIGHTS_DIR)
        dev = torch_device(device)
        models, meta = {}, {}
        for stage in networks.STAGES:
            path = folder / f"{stage}.pt"
            if not path.is_file():
                raise FileNotFoundError(
                    f"motion-correction weights missing: {path} (train them with "
                    f"`perfmoco train --config config/train/{stage}.yaml`, or set moco.weights_dir)"
                )
            models[stage], meta[stage] = networks.load(path, device=dev)
        return cls(models, device=dev, config=config, meta=meta)

    # ------------------------------------------------------------------ helpers
    def _run_net(self, stage: str, moving: torch.Tensor, fixed: torch.Tensor, chunk: int = 128):
        net = self.models[stage]
        outs, affs = [], []
        for i in range(0, moving.shape[0], chunk):
            d = net(moving[i : i + chunk, None], fixed[i : i + chunk, None])
            outs.append(d)
            if net.kind == "global":
                affs.append(net.last_affine)
        return torch.cat(outs), (torch.cat(affs).double() if affs else None)

    def correct(self, series: SliceSeries) -> MocoResult:
        """Correct one slice series (dynamics and PD frames).

        Parameters
        ----------
        series : SliceSeries
            Any intensity scale, matrix, spacing; at least 10 dynamics.
            On CPU this switches on ``torch.set_flush_denormal(True)``
            (process-wide; denormal activations are otherwise ~7x slower).

        Returns
        -------
        MocoResult
            ``displacement`` ``(T, 2, Y, X)`` float32 in full-FOV pixels
            (pull-back, ``[:, 0]`` = y), ``corrected`` the originals resampled
            once with it; the same for the PD frames.

        Raises
        ------
        StudyError
            Bad input (see :func:`check_series`) or any failure inside the
            correction (the message names the slice; images are never lost:
            the caller keeps the originals).
        """
        check_series(series)
        cfg = self.config
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        if self.device.type == "cpu":
            # trained networks produce denormal activations, ~7x slower on CPU;
            # flushing them to zero is process-wide and left on
            torch.set_flush_denormal(True)
        orient = (canonical_orientation(series.geometry) if cfg.canonical_orientation
                  else Orientation())
        try:
            with self._lock, torch.inference_mode():
                if orient.identity:
                    return self._correct(series)
                log.info("%s: networks run on the standard short-axis display (%s)",
                         series.name, orient)
                return orient.undo_result(self._correct(orient.apply_series(series)))
        except StudyError:
            raise
        except Exception as exc:  # never lose images: the caller keeps the originals
            log.exception("%s: deep-learning motion correction failed", series.name)
            raise StudyError(
                f"{series.name}: deep-learning motion correction failed "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def stage_inputs(self, series: SliceSeries, stage: str) -> dict[str, torch.Tensor | int]:
        """The normalised crops a stage's network sees (training data), dynamics only.

        Parameters
        ----------
        series : SliceSeries
        stage : {"affine1", "affine2", "dense"}
            The earlier stages are applied with this corrector's networks.

        Returns
        -------
        dict
            ``moving`` ``(T, n, n)`` float32 in [0, 1] (before hist-eq);
            ``fixed`` the same (``affine1``: the reference frame repeated);
            ``reference_index`` int.
        """
        if stage not in networks.STAGES:
            raise ValueError(f"stage must be one of {networks.STAGES}, got {stage!r}")
        check_series(series)
        with self._lock, torch.inference_mode():
            return self._correct(series.replace(pd_images=np.zeros((0, *series.shape))), stop=stage)

    def _correct(self, series: SliceSeries, stop: str | None = None):
        cfg = self.config
        dev = self.device
        t_dyn, ny, nx = series.images.shape
        n_pd = series.pd_images.shape[0]
        ref = int(np.clip(t_dyn - cfg.reference_from_end, 0, t_dyn - 1))
        loc = locate_lv(series)
        imgs = torch.from_numpy(
            np.concatenate([series.images, series.pd_images.reshape(n_pd, ny, nx)])
        ).to(dev, torch.float32)

        m1, m3 = self.models["affine1"], self.models["dense"]
        geo_a = CropGeometry.from_spacing(
            loc.centre_yx,
            m1.crop,
            crop_spacing_mm=m1.crop_spacing_mm,
            pixel_spacing_mm=series.pixel_spacing_mm,
        )
        geo_n = CropGeometry.from_spacing(
            loc.centre_yx,
            m3.crop,
            crop_spacing_mm=m3.crop_spacing_mm,
            pixel_spacing_mm=series.pixel_spacing_mm,
        )
        grid_a = geo_a.grid(device=dev)
        grid_n = geo_n.grid(device=dev)

        crop0 = sample(imgs, grid_a[None], padding="zeros")
        lo, hi = robust_range(crop0[:t_dyn])
        lo_pd, hi_pd = robust_range(crop0[t_dyn:]) if n_pd else (lo, hi)

        def norm(c: torch.Tensor) -> torch.Tensor:
            return torch.cat(
                [scale_to_unit(c[:t_dyn], lo, hi), scale_to_unit(c[t_dyn:], lo_pd, hi_pd)]
            )

        def refs(series_ref: torch.Tensor) -> torch.Tensor:
            # dynamics -> their own frame; PD frames -> the start of the series
            return torch.cat([series_ref, series_ref[:1].expand(n_pd, -1, -1)])

        # step 1: affine, every frame to the reference frame
        if stop == "affine1":
            n0 = norm(crop0)[:t_dyn]
            return {
                "moving": n0,
                "fixed": n0[ref : ref + 1].expand_as(n0).clone(),
                "reference_index": ref,
            }
        x0 = histogram_equalise(norm(crop0))
        _, a1 = self._run_net("affine1", x0, x0[ref : ref + 1].expand_as(x0))
        a1, bad1 = plausible_affine(a1, m1.crop, m1.crop_spacing_mm, cfg.max_motion_mm)
        m_full = affine_crop_to_full(a1, geo_a)
        for _ in range(cfg.affine1_passes - 1):  # the residual, from re-cropped originals
            x1 = histogram_equalise(norm(sample(imgs, affine_coords(m_full, grid_a),
                                                padding="zeros")))
            _, a1 = self._run_net("affine1", x1, x1[ref : ref + 1].expand_as(x1))
            a1, bad = plausible_affine(a1, m1.crop, m1.crop_spacing_mm, 0.5 * cfg.max_motion_mm)
            bad1 = bad1 | bad
            m_full = compose_affine(m_full, affine_crop_to_full(a1, geo_a))

        # step 2: affine, every frame to the PCA reference of the step-1 result
        # (optionally repeated: each pass re-crops the originals and rebuilds the reference)
        k = min(cfg.pca_components, t_dyn - 1)
        if stop == "affine2":
            n1 = norm(sample(imgs, affine_coords(m_full, grid_a), padding="zeros"))
            ref2 = pca_reference(n1[:t_dyn], components=k)
            return {"moving": n1[:t_dyn], "fixed": ref2, "reference_index": ref}
        for _ in range(cfg.affine2_passes):
            n1 = norm(sample(imgs, affine_coords(m_full, grid_a), padding="zeros"))
            ref2 = refs(pca_reference(n1[:t_dyn], components=k))
            _, a2 = self._run_net("affine2", histogram_equalise(n1), histogram_equalise(ref2))
            a2, bad2 = plausible_affine(a2, m1.crop, m1.crop_spacing_mm, 0.5 * cfg.max_motion_mm)
            bad1 = bad1 | bad2
            m_full = compose_affine(m_full, affine_crop_to_full(a2, geo_a))

        # test-time refinement of the dynamics' affine result (Gauss-Newton to a PCA reference)
        def refine(m_dyn: torch.Tensor, rounds: int = cfg.refine_rounds,
                   hold: torch.Tensor | None = None) -> torch.Tensor:
            if cfg.refine_iterations > 0 and t_dyn > 2 and rounds > 0:
                return refine_full_fov(imgs[:t_dyn], m_dyn, loc.centre_yx,
                                       series.pixel_spacing_mm, (lo, hi),
                                       dataclasses.replace(cfg, refine_rounds=rounds),
                                       name=series.name, hold=hold)
            return m_dyn

        m_dyn = refine(m_full[:t_dyn])
        # the pre-contrast block onto the late frames (mutual information of their means),
        # then the refinement again so that the bolus frames between them follow
        if cfg.baseline_align and t_dyn >= 2 * MIN_LATE:
            m_dyn, found = align_baseline_full_fov(imgs[:t_dyn], m_dyn, loc.centre_yx,
                                                   series.pixel_spacing_mm, (lo, hi), cfg,
                                                   name=series.name)
            if found.applied:  # it starts close: fewer rounds
                hold = None
                if cfg.baseline_hold:
                    hold = torch.zeros(t_dyn, dtype=torch.bool, device=dev)
                    hold[: found.n_frames] = True
                m_dyn = refine(m_dyn, cfg.baseline_refine_rounds, hold)
        m_full = torch.cat([m_dyn, m_full[t_dyn:]])

        # step 3: dense, every frame to the PCA reference of the step-2 result
        n2 = norm(sample(imgs, affine_coords(m_full, grid_n), padding="zeros"))
        ref3 = refs(pca_reference(n2[:t_dyn], components=k))
        if stop == "dense":
            return {"moving": n2[:t_dyn], "fixed": ref3[:t_dyn], "reference_index": ref}
        if cfg.dense_step:
            d3, _ = self._run_net("dense", histogram_equalise(n2), histogram_equalise(ref3))
            if cfg.dense_nonrigid_only:
                d3 = remove_affine_part(
                    d3, window_sigma_px=cfg.refine_window_mm / m3.crop_spacing_mm
                )
        else:
            d3 = torch.zeros(n2.shape[0], 2, *n2.shape[1:], device=dev)


        # compose: phi = phi_affine o phi_dense, in full-FOV pixels
        d3_full = dense_crop_to_full(d3, geo_n, (ny, nx))
        pts = identity_grid((ny, nx), device=dev)[None] + d3_full
        mf = m_full.float()
        phi = torch.einsum("tpq,tqyx->tpyx", mf[:, :, :2], pts) + mf[:, :, 2, None, None]
        if cfg.anchor_reference:  # keep the reference frame where it was acquired
            radius = _ANCHOR_RADIUS_MM / min(series.pixel_spacing_mm)
            phi = anchor_to_frame(phi, ref, centre_yx=loc.centre_yx, radius_px=radius)
        disp = phi - identity_grid((ny, nx), device=dev)[None]
        corrected = sample(imgs, phi, padding="border", mode=cfg.resample)
        if cfg.resample == "bicubic":  # no overshoot below zero (magnitude images)
            corrected = corrected.clamp_min(0.0)

        # QC: residual misalignment to the PCA reference of the corrected crop
        grid3 = identity_grid((m3.crop, m3.crop), device=dev)[None] + d3
        n3 = sample(n2[:t_dyn], grid3[:t_dyn], padding="border")
        ncc = ncc_per_frame(n3, pca_reference(n3, components=k))
        qc = qc_flags(ncc, threshold=cfg.qc_threshold, robust_z=cfg.qc_robust_z)
        if cfg.qc_outlier_ratio > 0:
            odd, _ = temporal_outliers(n3, window_sigma_px=cfg.qc_window_mm / m3.crop_spacing_mm,
                                       ratio=cfg.qc_outlier_ratio)
            if odd.any():
                log.info("%s: dynamics %s look unlike both neighbours (mistriggered?); QC-flagged",
                         series.name, np.flatnonzero(odd).tolist())
            qc = qc | odd
        bad = bad1.cpu().numpy()
        if bad[:t_dyn].any():
            log.warning(
                "%s: implausible network transforms (> %.0f mm or |scale - 1| > 0.2) replaced by "
                "the identity in %d of %d dynamics; these are QC-flagged (is the LV centre %s "
                "right?)",
                series.name,
                cfg.max_motion_mm,
                int(bad[:t_dyn].sum()),
                t_dyn,
                tuple(round(v, 1) for v in loc.centre_yx),
            )
        qc = qc | bad[:t_dyn]

        disp_np = disp.cpu().numpy().astype(np.float32)
        corr_np = corrected.cpu().numpy().astype(np.float32)
        return MocoResult(
            corrected=corr_np[:t_dyn],
            displacement=disp_np[:t_dyn],
            reference_index=ref,
            qc=qc,
            pd_corrected=corr_np[t_dyn:],
            pd_displacement=disp_np[t_dyn:],
        )


_CACHE: dict[tuple, MotionCorrector] = {}
_CACHE_LOCK = threading.Lock()


def _default_corrector(config: MocoConfig) -> MotionCorrector:
    key = (config.weights_dir, config.device, config)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = MotionCorrector.load(None, device=config.device, config=config)
        return _CACHE[key]


def correct_series(
    series: SliceSeries,
    *,
    method: Literal["dl", "none"] = "dl",
    config: MocoConfig = _DEFAULT_CONFIG,
    corrector: MotionCorrector | None = None,
) -> MocoResult:
    """Motion-correct one slice series.

    Parameters
    ----------
    series : SliceSeries
        Dynamics ``(T, Y, X)`` (T >= 10), optional PD frames, spacing in mm.
    method : {"dl", "none"}, keyword-only
        ``"none"`` returns the originals with zero displacement and no QC flags.
    config : MocoConfig, keyword-only
    corrector : MotionCorrector, keyword-only, optional
        Loaded networks; default: the packaged (or ``config.weights_dir``)
        weights, loaded once and cached.

    Returns
    -------
    MocoResult

    Raises
    ------
    StudyError
        Bad input, missing weights or any failure of the correction, with a
        message naming the slice.  Images are never lost: the caller keeps
        the originals (``correct_series(series, method="none")``).
    """
    if method == "none":
        ref = max(0, series.n_dynamics - config.reference_from_end)
        return identity_result(series, reference_index=ref)
    if method != "dl":
        raise ValueError(f"method must be 'dl' or 'none', got {method!r}")
    check_series(series)
    try:
        mc = corrector if corrector is not None else _default_corrector(config)
        return mc.correct(series)
    except StudyError:
        raise
    except Exception as exc:
        log.exception("%s: deep-learning motion correction failed", series.name)
        raise StudyError(
            f"{series.name}: deep-learning motion correction failed ({type(exc).__name__}: {exc})"
        ) from exc

