"""Iterative (optimisation-based) motion correction: the paper's baseline.

After Scannell et al., IEEE TMI 2019, with itk-elastix as the engine:

1. RPCA of the series; each low-rank frame is registered (affine) to the
   low-rank reference frame (the frame ``reference_from_end`` before the end).
2. A synthetic motion-reduced reference series is built by PCA of the step-1
   result; each frame is registered (affine) to its own synthetic frame.
3. The same with a new PCA reference of the step-2 result and a B-spline
   transform.

The registrations run on a crop around the LV (``MocoConfig.affine_crop`` /
``nonrigid_crop`` pixels) whose origin is set to its full-FOV offset, so that
elastix's transforms are expressed in full-FOV pixel coordinates (spacing 1).
The three transforms are composed exactly (affine matrices, then the
B-spline field evaluated by transformix over the full FOV) into ONE
displacement per frame, and the originals are resampled once.

elastix maps a point ``x`` of the fixed image to ``T(x)`` in the moving image
and its result is ``moving(T(x))``: with spacing 1 and origin in pixels that
is exactly our pull-back, ``d(p) = T(p) - p``, only in (x, y) order, which is
swapped to (y, x) here.

Parameter maps: ``config/iterative/*.txt`` (elastix text format); the choice
and its measurement are written at the top of each file.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import yaml

from perfmoco.config import MocoConfig
from perfmoco.logs import log_failure
from perfmoco.moco.decompose import pca_reference, rpca
from perfmoco.moco.preprocess import locate_lv
from perfmoco.moco.result import MocoResult
from perfmoco.moco.transforms import anchor_reference, identity_grid, warp
from perfmoco.study import SliceSeries, StudyError

__all__ = [
    "INSTALL_HINT",
    "PARAMETER_DIR",
    "IterativeUnavailableError",
    "correct_iterative",
    "is_available",
]

log = logging.getLogger(__name__)

#: Folder of the elastix parameter maps (packaged; ``config/iterative`` links to it).
PARAMETER_DIR = Path(__file__).resolve().parents[1] / "data" / "iterative"
INSTALL_HINT = "install the iterative extra: pip install perfmoco[iterative]"
#: One parameter file per stage.
STAGE_FILES = {
    "lowrank": "affine_lowrank.txt",
    "affine": "affine_pca.txt",
    "bspline": "bspline_pca.txt",
    "pd": "affine_pd.txt",
}
#: Settings of the method other than elastix's (``config/iterative/pipeline.yaml``).
SETTINGS_FILE = "pipeline.yaml"
DEFAULT_SETTINGS = {"rpca_lambda_scale": 6.0, "rpca_max_iter": 50, "pca_components": 2}
#: Pixels added on each side of the affine crop for the RPCA (moving) frames.
RPCA_MARGIN = 16


class IterativeUnavailableError(ImportError):
    """itk-elastix (the ``iterative`` extra) is not installed."""


def _itk():
    try:
        with warnings.catch_warnings():  # its SWIG bindings' import-time deprecation notes
            warnings.simplefilter("ignore", DeprecationWarning)
            import itk

            itk.ElastixRegistrationMethod  # noqa: B018  (the elastix module is lazy-loaded)
        # ... and the one Python gives for them at exit ("sys:1: DeprecationWarning: builtin
        # type swigvarlink has no __module__ attribute"), after every iterative run
        warnings.filterwarnings("ignore", message=r"builtin type swig\w* has no __module__",
                                category=DeprecationWarning)
    except (ImportError, AttributeError) as exc:
        raise IterativeUnavailableError(
            f"the iterative method needs itk-elastix, which is not installed: {INSTALL_HINT}"
        ) from exc
    return itk


def is_available() -> bool:
    """True when itk-elastix can be imported."""
    try:
        _itk()
    except IterativeUnavailableError:
        return False
    return True


# ------------------------------------------------------------------ elastix glue
def _image(itk, array: np.ndarray, origin_yx=(0.0, 0.0)):
    """Convert a (Y, X) array to an itk image: spacing 1, origin in full-FOV pixels (x, y order)."""
    img = itk.image_from_array(np.ascontiguousarray(array, dtype=np.float32))  # a copy
    img.SetOrigin((float(origin_yx[1]), float(origin_yx[0])))  # itk points are (x, y)
    return img


def load_parameter_maps(parameter_dir: str | Path | None = None) -> dict[str, dict]:
    """Read the stage parameter files into plain dicts ``{key: tuple of str}``.

    The returned dict also holds ``"settings"``: the method's own settings
    from ``pipeline.yaml``: RPCA sparsity ``rpca_lambda_scale`` (a multiple of
    ``1 / sqrt(max(pixels, frames))``), ``rpca_max_iter``, and
    ``pca_components`` of the synthetic references (the iterative method's
    own: ``MocoConfig.pca_components`` is the deep-learning path's).

    Parameters
    ----------
    parameter_dir : str or Path, optional
        Folder with ``affine_lowrank.txt``, ``affine_pca.txt``,
        ``bspline_pca.txt`` and ``affine_pd.txt``; default :data:`PARAMETER_DIR`.

    Raises
    ------
    FileNotFoundError
        Naming the missing file.
    """
    itk = _itk()
    folder = Path(parameter_dir) if parameter_dir is not None else PARAMETER_DIR
    maps = {}
    for stage, name in STAGE_FILES.items():
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(f"elastix parameter file missing: {path}")
        po = itk.ParameterObject.New()
        po.ReadParameterFile(str(path))
        maps[stage] = dict(po.GetParameterMap(0))
    settings = dict(DEFAULT_SETTINGS)
    path = folder / SETTINGS_FILE
    if path.is_file():
        loaded = yaml.safe_load(path.read_text()) or {}
        unknown = sorted(set(loaded) - set(DEFAULT_SETTINGS))
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(settings)}")
        settings.update({k: type(DEFAULT_SETTINGS[k])(v) for k, v in loaded.items()})
    maps["settings"] = settings
    return maps


def _register(itk, fixed, moving, pmap: dict):
    """One elastix registration; returns the finished registration object."""
    po = itk.ParameterObject.New()
    po.AddParameterMap(pmap)
    reg = itk.ElastixRegistrationMethod.New(
        fixed, moving, parameter_object=po, log_to_console=False
    )
    reg.UpdateLargestPossibleRegion()
    return reg


def _affine_matrix(reg) -> np.ndarray:
    """Convert elastix AffineTransform parameters to a 3x3 homogeneous matrix in (y, x).

    elastix: ``T(x) = A (x - c) + c + t`` with ``x = (x, y)``, parameters
    ``(a11, a12, a21, a22, tx, ty)`` and ``c`` the CenterOfRotationPoint.
    """
    m = reg.GetTransformParameterObject().GetParameterMap(0)
    if m["Transform"][0] != "AffineTransform":
        raise ValueError(f"expected an AffineTransform, got {m['Transform'][0]}")
    p = np.array([float(v) for v in m["TransformParameters"]])
    c = np.array([float(v) for v in m["CenterOfRotationPoint"]])
    a_xy = p[:4].reshape(2, 2)
    off_xy = c + p[4:6] - a_xy @ c
    swap = np.array([[0.0, 1.0], [1.0, 0.0]])  # (x, y) <-> (y, x)
    h = np.eye(3)
    h[:2, :2] = swap @ a_xy @ swap
    h[:2, 2] = swap @ off_xy
    return h


def _field(itk, reg, shape: tuple[int, int]) -> np.ndarray:
    """Displacement ``T(p) - p`` of a registration over the full FOV, (2, Y, X) in (y, x).

    Evaluated in memory by ITK (transformix would write ``deformationField``
    files into the working directory).
    """
    field_type = itk.Image[itk.Vector[itk.F, 2], 2]
    flt = itk.TransformToDisplacementFieldFilter[field_type, itk.D].New()
    flt.SetTransform(reg.GetCombinationTransform())
    ref = _image(itk, np.zeros(shape, np.float32))
    flt.SetReferenceImage(ref)
    flt.SetUseReferenceImage(True)
    flt.Update()
    f = np.asarray(flt.GetOutput())  # (Y, X, 2), vectors in (x, y) order
    return np.stack([f[..., 1], f[..., 0]]).astype(np.float64)


def _affine_field(h: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Displacement ``H (p, 1) - p`` of (y, x) homogeneous matrices ``(T, 3, 3)``."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    pts = np.stack([yy, xx])
    out = np.einsum("tij,jyx->tiyx", h[:, :2, :2], pts) + h[:, :2, 2, None, None]
    return out - pts[None]


# ------------------------------------------------------------------ the method
def _crop_box(centre_yx, size: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """A ``size`` x ``size`` box around ``centre_yx`` kept inside the image."""
    out = []
    for c, n in zip(centre_yx, shape):
        s = min(size, n)
        start = int(np.clip(round(c - s / 2), 0, n - s))
        out.append(slice(start, start + s))
    return out[0], out[1]


def _unit(images: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(images, [1.0, 99.5])
    return np.clip((images - lo) / max(hi - lo, 1e-6), 0.0, 1.5).astype(np.float32)


def _ncc(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1) - a.reshape(a.shape[0], -1).mean(1, keepdims=True)
    b = b.reshape(b.shape[0], -1) - b.reshape(b.shape[0], -1).mean(1, keepdims=True)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-8)


def _qc(ncc: np.ndarray, threshold: float, robust_z: float = 6.0) -> np.ndarray:
    """Flag frames whose residual ``1 - NCC`` is large (as the DL path does)."""
    r = 1.0 - ncc
    med = float(np.median(r))
    mad = max(float(np.median(np.abs(r - med))) * 1.4826, 0.005)
    return (r > threshold) | ((r - med) / mad > robust_z)


def correct_iterative(
    series: SliceSeries,
    *,
    config: MocoConfig | None = None,
    parameter_dir: str | Path | None = None,
    threads: int | None = None,
    lv=None,
) -> MocoResult:
    """Correct one slice series with the iterative RPCA/PCA + elastix method.

    Parameters
    ----------
    series : SliceSeries
        Dynamics ``(T, Y, X)`` (T >= 10), optional PD frames, spacing in mm.
    config : MocoConfig, keyword-only, optional
        Default ``MocoConfig()``.  Uses ``affine_crop``, ``nonrigid_crop``
        (pixels), ``reference_from_end`` and ``qc_threshold``; the rank of the
        PCA references comes from ``pipeline.yaml`` in ``parameter_dir``.
    parameter_dir : str or Path, keyword-only, optional
        Folder of the elastix parameter maps (default ``config/iterative``).
    threads : int, keyword-only, optional
        ITK's global thread count (set globally: passing a thread count to
        the B-spline registration crashes elastix); default: leave as is.
    lv : LvLocation, keyword-only, optional
        The series' LV, when already found (see
        :meth:`perfmoco.moco.pipeline.MotionCorrector.correct`); found here otherwise.

    Returns
    -------
    MocoResult
        ``displacement`` ``(T, 2, Y, X)`` float32 in full-FOV pixels, pull-back,
        ``[:, 0]`` = y; ``corrected`` the originals resampled once with it;
        the same for the PD frames (affine to the corrected first dynamic).

    Raises
    ------
    IterativeUnavailableError
        When itk-elastix is not installed (the message says how to install it).
    StudyError
        Bad input, or elastix failing, with a message naming the slice.
    """
    from perfmoco.moco.pipeline import check_series  # late: pipeline imports the nets

    itk = _itk()
    check_series(series)
    maps = load_parameter_maps(parameter_dir)
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(int(threads))
    t0 = time.perf_counter()
    try:
        result = _correct(itk, series, config or MocoConfig(), maps, lv)
    except RuntimeError as exc:  # elastix reports every failure as RuntimeError
        log_failure(log, "%s: elastix failed", series.name)
        raise StudyError(f"{series.name}: iterative motion correction failed ({exc})") from exc
    log.info("%s: iterative correction in %.1f s", series.name, time.perf_counter() - t0)
    return result


def _anchored(disp, pd_disp, ref, centre, spacing_mm):
    """Dynamics' and PD frames' fields composed so that frame ``ref`` keeps its geometry."""
    t = disp.shape[0]
    ident = identity_grid(disp.shape[-2:])[None]
    phi = ident + torch.from_numpy(np.concatenate([disp, pd_disp]))
    phi = anchor_reference(phi, ref, centre_yx=centre, spacing_mm=spacing_mm)
    out = (phi - ident).numpy().astype(np.float32)
    return out[:t], out[t:]


def _correct(itk, series: SliceSeries, cfg: MocoConfig, maps: dict, lv=None) -> MocoResult:
    settings = maps["settings"]
    images = series.images.astype(np.float32)
    t_dyn, ny, nx = images.shape
    shape = (ny, nx)
    ref = int(np.clip(t_dyn - cfg.reference_from_end, 0, t_dyn - 1))
    k = int(min(settings["pca_components"], t_dyn - 1))
    centre = (locate_lv(series) if lv is None else lv).centre_yx
    box_a = _crop_box(centre, cfg.affine_crop, shape)
    box_n = _crop_box(centre, cfg.nonrigid_crop, shape)
    org_a = (box_a[0].start, box_a[1].start)
    org_n = (box_n[0].start, box_n[1].start)
    unit = _unit(images)

    # step 1: affine, low-rank frames to the low-rank reference frame.  RPCA runs on
    # the crop plus a margin (the moving images), the fixed image is the crop.
    box_r = _crop_box(centre, cfg.affine_crop + 2 * RPCA_MARGIN, shape)
    org_r = (box_r[0].start, box_r[1].start)
    sub = unit[:, box_r[0], box_r[1]]
    lam = settings["rpca_lambda_scale"] / np.sqrt(max(sub[0].size, t_dyn))
    low = rpca(torch.from_numpy(sub), lam=lam, max_iter=settings["rpca_max_iter"])[0].numpy()
    ia = (slice(org_a[0] - org_r[0], org_a[0] - org_r[0] + box_a[0].stop - box_a[0].start),
          slice(org_a[1] - org_r[1], org_a[1] - org_r[1] + box_a[1].stop - box_a[1].start))
    h = np.repeat(np.eye(3)[None], t_dyn, axis=0)
    fixed = _image(itk, low[ref][ia], org_a)
    for t in range(t_dyn):
        if t != ref:
            moving = _image(itk, low[t], org_r)
            h[t] = _affine_matrix(_register(itk, fixed, moving, maps["lowrank"]))

    # step 2: affine, each frame to its frame of a PCA reference of the step-1 result
    cur = warp(unit, _affine_field(h, shape))
    synth = pca_reference(torch.from_numpy(cur[:, box_a[0], box_a[1]]), components=k).numpy()
    for t in range(t_dyn):
        reg = _register(itk, _image(itk, synth[t], org_a), _image(itk, cur[t]), maps["affine"])
        h[t] = h[t] @ _affine_matrix(reg)  # corrected(p) = cur(A2 p) = orig(A1 A2 p)

    # step 3: B-spline, each frame to a PCA reference of the step-2 result (smaller crop)
    aff = _affine_field(h, shape)
    cur = warp(unit, aff)
    synth = pca_reference(torch.from_numpy(cur[:, box_n[0], box_n[1]]), components=k).numpy()
    disp = np.empty((t_dyn, 2, ny, nx), np.float64)
    yy, xx = np.mgrid[0:ny, 0:nx].astype(np.float64)
    for t in range(t_dyn):
        reg = _register(itk, _image(itk, synth[t], org_n), _image(itk, cur[t]), maps["bspline"])
        d3 = _field(itk, reg, shape)
        # total(p) = H (p + d3(p)) - p: the affine part composed exactly
        qy, qx = yy + d3[0], xx + d3[1]
        disp[t, 0] = h[t, 0, 0] * qy + h[t, 0, 1] * qx + h[t, 0, 2] - yy
        disp[t, 1] = h[t, 1, 0] * qy + h[t, 1, 1] * qx + h[t, 1, 2] - xx
    disp = disp.astype(np.float32)

    # QC: residual misalignment of the corrected crop to its PCA reference
    cn = warp(unit, disp)[:, box_n[0], box_n[1]]
    qc = _qc(_ncc(cn, pca_reference(torch.from_numpy(cn), components=k).numpy()),
             cfg.qc_threshold)

    # PD frames: affine (mutual information) to the corrected first dynamic
    pd = series.pd_images.astype(np.float32).reshape(-1, ny, nx)
    pd_disp = np.zeros((pd.shape[0], 2, ny, nx), np.float32)
    if pd.shape[0]:
        fixed = _image(itk, cn[0], org_n)
        pd_unit = _unit(pd)
        hp = np.stack([
            _affine_matrix(_register(itk, fixed, _image(itk, f), maps["pd"])) for f in pd_unit
        ])
        pd_disp = _affine_field(hp, shape).astype(np.float32)
    if cfg.anchor_reference:  # the PCA steps move the reference frame too: as the DL path
        disp, pd_disp = _anchored(disp, pd_disp, ref, centre, series.pixel_spacing_mm)
    corrected = warp(images, disp)
    pd_corr = warp(pd, pd_disp) if pd.shape[0] else pd.copy()
    return MocoResult(
        corrected=corrected.astype(np.float32),
        displacement=disp,
        reference_index=ref,
        qc=np.asarray(qc, bool),
        pd_corrected=pd_corr.astype(np.float32),
        pd_displacement=pd_disp,
    )

