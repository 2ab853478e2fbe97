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
frame and the originals are resampled once (:func:`correct_series`).  The
steps themselves live in :mod:`perfmoco.moco.steps`; this module loads the
networks and runs them in order.

Crops are taken at a fixed physical pixel size (the checkpoint's
``crop_spacing_mm``, 1.8 mm for the shipped weights) so that series of any
matrix and spacing (1.5-3 mm, or the ~4 mm AIF slice) reach the networks at
the size they were trained on; the LV is found by its blood-pool signature
and the crop is zero-padded where it leaves the FOV.

PD frames are corrected with the same models: step 1 to the reference frame,
steps 2-3 to the first frame of the synthetic reference (series start).

Failure policy: images are never lost.  Bad input (fewer than 10 dynamics,
NaN/Inf: a study fills them first, :meth:`perfmoco.study.PerfusionStudy.with_finite_pixels`;
a blank frame) and any failure inside the correction raise
:class:`perfmoco.study.StudyError` with a message naming the slice; the
caller passes the original frames through (``method="none"``).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from perfmoco.anatomy import find_blood_pools
from perfmoco.anatomy.shading import flattened
from perfmoco.config import MocoConfig
from perfmoco.logs import log_failure
from perfmoco.moco import networks
from perfmoco.moco.checks import (
    check_series,
    fill_blank_dynamics,
    identity_result,
    restore_blank_dynamics,
    torch_device,
)
from perfmoco.moco.cpu import auto_threads
from perfmoco.moco.decompose import pca_reference
from perfmoco.moco.preprocess import LvLocation
from perfmoco.moco.reference import anchored_off_flags, middle_reference, rebase
from perfmoco.moco.result import MocoResult
from perfmoco.moco.steps import (
    SeriesCrops,
    affine_step1,
    affine_step2,
    compose_and_resample,
    dense_step3,
    frame_qc,
    heart_dilation,
    refine_dynamics,
)
from perfmoco.orientation import (
    Orientation,
    canonical_orientation,
    is_mirrored,
    orientation_from_anatomy,
)
from perfmoco.study import SliceSeries, StudyError

__all__ = ["MotionCorrector", "check_series", "correct_series", "identity_result"]

log = logging.getLogger(__name__)


WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_DEFAULT_CONFIG = MocoConfig()


#: Frames per call of a compiled network (``moco.compile``): every call has this
#: one shape, so each network is compiled once per process.
COMPILE_BATCH = 16
#: Frames per call of an uncompiled network on the CPU, whose weights are kept
#: channels-last there (not for ``moco.compile``, where that was slower): on 2 cores
#: the three networks ran over a 71-frame series in ~0.25 s against ~0.5 s in one
#: 71-frame call with the default layout (model card, "Why these sizes"; outputs within
#: 2e-5 px).  Other devices take up to 128 frames a call.
CPU_BATCH = 16
#: Without geometry, the pools that orient a series are searched within this distance
#: (mm) of its LV when that is known (the stack's check): the RV beside the right pool.
NEAR_LV_MM = 15.0


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
        if self.device.type == "cpu" and not config.compile:  # oneDNN's faster convolutions
            for m in self.models.values():
                m.to(memory_format=torch.channels_last)
        self.config = config
        self.meta = meta or {}
        self.weights_id = "networks given in memory"  # load(): the folder and its hash
        self._lock = threading.Lock()  # one correction at a time (the nets use all cores)
        self._compiled: dict = {}  # stage -> torch.compile'd RegNet.predict (moco.compile)
        self._compile_failed = False
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
            if meta[stage].get("stage", stage) != stage:  # a file copied under another name
                raise ValueError(f"{path} holds the {meta[stage]['stage']} stage's weights, "
                                 f"not {stage}'s")
            networks.fuse_batchnorm(models[stage])  # inference only: ~10 % faster
        mc = cls(models, device=dev, config=config, meta=meta)
        mc.weights_id = networks.weights_id(folder, WEIGHTS_DIR)
        return mc

    # ------------------------------------------------------------------ helpers
    def _run_net(self, stage: str, moving: torch.Tensor, fixed: torch.Tensor):
        """``(ddf, affine)`` of a network over all frames, compiled where ``moco.compile``."""
        if self.config.compile and not self._compile_failed:
            try:  # compiled in calls of one shape, so once per process
                fn = self._compiled.get(stage)
                if fn is None:  # inductor was slower with channels-last weights
                    net = self.models[stage].to(memory_format=torch.contiguous_format)
                    fn = self._compiled[stage] = torch.compile(net.predict, dynamic=False)
                return networks.in_chunks(fn, moving, fixed, COMPILE_BATCH, pad=True)
            except Exception as exc:  # no C++ compiler, unsupported backend, ...
                log.warning("torch.compile of the networks failed (%s: %s); running them "
                            "uncompiled", type(exc).__name__, exc)
                self._compile_failed = True
        chunk = CPU_BATCH if self.device.type == "cpu" else 128
        return networks.in_chunks(self.models[stage].predict, moving, fixed, chunk, pad=False)

    def compile_networks(self) -> float:
        """Compile the networks now (``moco.compile``), e.g. while a server waits; seconds."""
        t0 = time.perf_counter()
        if self.config.compile:
            with self._lock, torch.inference_mode():
                for stage, net in self.models.items():
                    x = torch.zeros(1, net.crop, net.crop, device=self.device)
                    self._run_net(stage, x, x)
        return time.perf_counter() - t0

    def _orientation(self, series: SliceSeries, lv: LvLocation | None = None) -> Orientation:
        """The re-ordering onto the standard display: from the geometry, else the anatomy.

        ``lv``: the series' LV when known (e.g. checked against the stack); the RV is
        then looked for beside that pool (beside the series' own pick where no pool
        is found there).
        """
        cfg = self.config
        if not cfg.canonical_orientation:
            return Orientation()
        orient = canonical_orientation(series.geometry)
        if not orient.identity or is_mirrored(series.geometry) is not None:
            return orient
        if not cfg.orientation_from_anatomy:
            return orient
        kw = {"times_s": series.times_s, "spacing_mm": series.pixel_spacing_mm}
        flat, pools = flattened(series), None  # the coils' shading taken out, once
        if lv is not None:
            try:
                pools = find_blood_pools(flat, near_yx=lv.centre_yx, near_mm=NEAR_LV_MM, **kw)
            except StudyError:  # no pool there: the series' own pick
                pass
        try:
            if pools is None:
                pools = find_blood_pools(flat, **kw)
        except Exception as exc:  # a heuristic failing must not stop the correction
            log.info("%s: no blood pools to orient the series by (%s); taken as stored",
                     series.name, exc)
            return orient
        if not pools.rv_mask.any():
            return orient
        rv = tuple(float(v) for v in np.argwhere(pools.rv_mask).mean(axis=0))
        orient = orientation_from_anatomy(pools.lv_centre, rv)
        if not orient.identity:
            log.info("%s: no usable geometry; turned so that the RV lies left of the LV (%s)",
                     series.name, orient)
        return orient

    def correct(self, series: SliceSeries, *, lv: LvLocation | None = None) -> MocoResult:
        """Correct one slice series (dynamics and PD frames).

        Parameters
        ----------
        series : SliceSeries
            Any intensity scale, matrix, spacing; at least 10 dynamics.
            On CPU denormals are flushed to zero while it runs (~7x faster) and
            not after it (LAPACK then returned NaN in the quantification).
        lv : LvLocation, keyword-only, optional
            The series' LV, when already found (e.g. checked against the
            other slices by :func:`perfmoco.moco.stack.locate_lv_stack`);
            found here otherwise.

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
        check_series(series, blank_ok=True)
        filled, blank = fill_blank_dynamics(series)
        if blank.any():  # lost frames: corrected with their neighbours' motion, QC-flagged
            return restore_blank_dynamics(self.correct(filled, lv=lv), series, blank)
        cfg = self.config
        threads = cfg.threads or auto_threads()  # 0: the cores other work leaves free
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        flush = self.device.type == "cpu"
        with self._lock:  # one at a time: another thread's end does not switch it off
            if flush:  # trained networks produce denormal activations, ~7x slower on CPU
                torch.set_flush_denormal(True)
            try:
                return self._oriented(series, lv)
            finally:
                if flush:  # what runs after (numpy, LAPACK) sees IEEE arithmetic again
                    torch.set_flush_denormal(False)

    def _oriented(self, series: SliceSeries, lv) -> MocoResult:
        """:meth:`correct` of a series without blank dynamics, on the standard display."""
        orient = self._orientation(series, lv)
        try:
            with torch.inference_mode():
                if orient.identity:
                    return self._correct(series, lv=lv)
                log.info("%s: networks run on the standard short-axis display (%s)",
                         series.name, orient)
                if lv is not None:
                    lv = lv._replace(centre_yx=orient.point(lv.centre_yx, series.shape))
                return orient.undo_result(self._correct(orient.apply_series(series), lv=lv))
        except StudyError:
            raise
        except Exception as exc:  # never lose images: the caller keeps the originals
            log_failure(log, "%s: deep-learning motion correction failed", series.name)
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

    def _correct(self, series: SliceSeries, stop: str | None = None,
                 lv: LvLocation | None = None):
        """The steps of :mod:`.steps` in order; ``stop`` returns a stage's inputs instead."""
        cfg = self.config
        m1, m3 = self.models["affine1"], self.models["dense"]
        sc = SeriesCrops.prepare(series, cfg, affine_net=m1, dense_net=m3, device=self.device,
                                 lv=lv)
        t_dyn, ref = sc.t_dyn, sc.ref
        k = min(cfg.pca_components, t_dyn - 1)
        if stop == "affine1":
            n0 = sc.norm(sc.crop0)[:t_dyn]
            return {"moving": n0, "fixed": n0[ref : ref + 1].expand_as(n0).clone(),
                    "reference_index": ref}
        m_full, bad = affine_step1(sc, self._run_net, m1)
        moved = middle_reference(sc, m_full, bad)
        if moved != ref:
            m_full, centre = rebase(m_full, moved, sc.centre_yx)
            log.info("%s: reference dynamic %d instead of %d (nearer the median breathing "
                     "position)", series.name, moved, ref)
            sc = sc.moved_to(moved, centre, affine_net=m1, dense_net=m3)
            ref = moved
        if stop == "affine2":
            n1 = sc.crops(m_full, sc.grid_a)[:t_dyn]
            return {"moving": n1, "fixed": pca_reference(n1, components=k),
                    "reference_index": ref}
        m_full, bad = affine_step2(sc, self._run_net, m1, m_full, bad)
        m_full = refine_dynamics(sc, m_full)
        scale = heart_dilation(sc, m_full)
        if stop == "dense":
            n2 = sc.crops(m_full, sc.grid_n, scale)[:t_dyn]
            return {"moving": n2, "fixed": pca_reference(n2, components=k),
                    "reference_index": ref}
        d3, n2 = dense_step3(sc, self._run_net, m3, m_full, scale)
        qc = frame_qc(sc, n2, d3, bad, m3.crop, m3.crop_spacing_mm)
        sc = anchored_off_flags(sc, qc)  # not a mistriggered frame
        disp, corrected = compose_and_resample(sc, m_full, d3, scale)
        disp_np = disp.cpu().numpy().astype(np.float32)
        corr_np = corrected.cpu().numpy().astype(np.float32)
        return MocoResult(
            corrected=corr_np[:t_dyn],
            displacement=disp_np[:t_dyn],
            reference_index=sc.ref,
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
    check_series(series, blank_ok=True)
    try:
        mc = corrector if corrector is not None else _default_corrector(config)
        return mc.correct(series)
    except StudyError:
        raise
    except Exception as exc:
        log_failure(log, "%s: deep-learning motion correction failed", series.name)
        raise StudyError(
            f"{series.name}: deep-learning motion correction failed ({type(exc).__name__}: {exc})"
        ) from exc

