"""Input checks, the identity result and small helpers of the pipeline."""

from __future__ import annotations

import logging

import numpy as np
import torch

from perfmoco.frames import blank_frames, interpolate_frames
from perfmoco.moco.result import MocoResult
from perfmoco.study import MIN_DYNAMICS, SliceSeries, StudyError

__all__ = [
    "affine_coords",
    "check_series",
    "fill_blank_dynamics",
    "identity_result",
    "ncc_per_frame",
    "plausible_affine",
    "qc_flags",
    "restore_blank_dynamics",
    "torch_device",
]

log = logging.getLogger(__name__)


#: The largest share of a series' dynamics that may be blank (lost frames, sent as zeros)
#: for the deep-learning correction to fill them from their neighbours.
MAX_BLANK_SHARE = 0.2


def check_series(series: SliceSeries, *, blank_ok: bool = False) -> None:
    """Refuse series the correction cannot handle, with a clear message.

    ``blank_ok``: blank dynamics are allowed, up to :data:`MAX_BLANK_SHARE` of them
    (the deep-learning correction fills them from their neighbours and QC-flags them).

    Raises
    ------
    StudyError
        Fewer than 10 dynamics, wrong shape, non-finite pixels, or a blank
        (constant) frame among the dynamics (too many of them, with ``blank_ok``)
        or PD frames.
    """
    im = np.asarray(series.images)
    if im.ndim != 3:
        raise StudyError(f"{series.name}: images must be (T, Y, X), got shape {im.shape}")
    if im.shape[0] < MIN_DYNAMICS:
        raise StudyError(
            f"{series.name}: {im.shape[0]} dynamics, motion correction needs at least "
            f"{MIN_DYNAMICS} (a lower mrd.min_dynamics lets such series through uncorrected)"
        )
    if min(im.shape[1:]) < 16:
        raise StudyError(f"{series.name}: matrix {im.shape[1:]} is too small (min 16x16)")
    bad = ~np.isfinite(im).all(axis=(1, 2))
    if bad.any():
        raise StudyError(
            f"{series.name}: non-finite pixels (NaN/Inf) in dynamics "
            f"{np.flatnonzero(bad)[:10].tolist()}"
        )
    flat = blank_frames(im)
    if flat.any() and not (blank_ok and flat.mean() <= MAX_BLANK_SHARE
                           and (~flat).sum() >= MIN_DYNAMICS):
        raise StudyError(
            f"{series.name}: blank (constant) frames at dynamics "
            f"{np.flatnonzero(flat)[:10].tolist()}"
        )
    pd = np.asarray(series.pd_images)
    if pd.size:
        if pd.shape[1:] != im.shape[1:]:
            raise StudyError(
                f"{series.name}: PD frames are {pd.shape[1:]}, dynamics {im.shape[1:]}"
            )
        if not np.isfinite(pd).all():
            raise StudyError(f"{series.name}: non-finite pixels (NaN/Inf) in the PD frames")
        if (pd.max(axis=(1, 2)) <= pd.min(axis=(1, 2))).any():
            raise StudyError(f"{series.name}: a PD frame is blank (constant)")
    if not all(s > 0 and np.isfinite(s) for s in series.pixel_spacing_mm):
        raise StudyError(f"{series.name}: invalid pixel spacing {series.pixel_spacing_mm} mm")


def fill_blank_dynamics(series: SliceSeries) -> tuple[SliceSeries, np.ndarray]:
    """``series`` with its blank dynamics (lost frames) filled from their neighbours in
    time, and which they were (``(T,)`` bool; the series itself where none is blank).
    """
    blank = blank_frames(series.images)
    if not blank.any():
        return series, blank
    log.warning("%s: blank (constant) dynamics %s: corrected with their neighbours' motion "
                "and QC-flagged (left out of the fits)", series.name,
                np.flatnonzero(blank).tolist())
    return series.replace(images=interpolate_frames(series.images, blank)), blank


def restore_blank_dynamics(result: MocoResult, series: SliceSeries,
                           blank: np.ndarray) -> MocoResult:
    """The correction of a series filled by :func:`fill_blank_dynamics`: its blank
    dynamics as received (nothing made up is sent) and QC-flagged.
    """
    result.corrected[blank] = np.asarray(series.images, np.float32)[blank]
    result.qc[blank] = True
    return result


def identity_result(series: SliceSeries, *, reference_index: int | None = None) -> MocoResult:
    """The "no correction" result: originals, zero displacement, no QC flags."""
    t, ny, nx = series.images.shape
    p = series.pd_images.shape[0]
    ref = max(0, t - 10) if reference_index is None else reference_index
    return MocoResult(
        corrected=np.array(series.images, dtype=np.float32, copy=True),
        displacement=np.zeros((t, 2, ny, nx), np.float32),
        reference_index=int(ref),
        qc=np.zeros(t, bool),
        pd_corrected=np.array(series.pd_images, dtype=np.float32, copy=True).reshape(p, ny, nx),
        pd_displacement=np.zeros((p, 2, ny, nx), np.float32),
    )


def affine_coords(matrix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Sampling positions ``M @ (g, 1)``: (T, 2, 3) x (2, n, n) -> (T, 2, n, n).

    ``grid`` may also hold one grid per frame, ``(T, 2, n, n)``.
    """
    m = matrix.float()
    eq = "tpq,tqyx->tpyx" if grid.dim() == 4 else "tpq,qyx->tpyx"
    return torch.einsum(eq, m[:, :, :2], grid) + m[:, :, 2, None, None]


def plausible_affine(
    matrix: torch.Tensor, crop: int, spacing_mm: float, max_mm: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace implausible affine predictions by the identity.

    A prediction is implausible when it moves the crop centre by more than
    ``max_mm`` or its linear part has a singular value outside [0.8, 1.25]
    (breathing is a near-rigid motion).

    Parameters
    ----------
    matrix : Tensor, shape (T, 2, 3), crop pixels
    crop : int
    spacing_mm : float
        Crop pixel size, mm.
    max_mm : float

    Returns
    -------
    matrix : Tensor, shape (T, 2, 3), float64
    bad : Tensor, shape (T,), bool
    """
    m = matrix.double()
    c = torch.full((2,), (crop - 1) / 2.0, dtype=m.dtype, device=m.device)
    shift = (m[:, :, :2] @ c + m[:, :, 2] - c).norm(dim=1) * spacing_mm
    sv = torch.linalg.svdvals(m[:, :, :2])
    bad = (shift > max_mm) | (sv.max(dim=1).values > 1.25) | (sv.min(dim=1).values < 0.8)
    bad = bad | ~torch.isfinite(m).all(dim=(1, 2))
    ident = torch.zeros_like(m)
    ident[:, 0, 0] = ident[:, 1, 1] = 1.0
    return torch.where(bad[:, None, None], ident, m), bad


def ncc_per_frame(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Global normalised cross-correlation of each frame pair, (T, H, W) -> (T,)."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-8)


def qc_flags(ncc: torch.Tensor, *, threshold: float, robust_z: float) -> np.ndarray:
    """Flag frames whose residual ``1 - NCC`` (to the PCA reference) is large.

    Parameters
    ----------
    ncc : Tensor, shape (T,)
    threshold : float, keyword-only
        A residual above this is flagged.
    robust_z : float, keyword-only
        ... as is one more than this many robust SDs (1.4826 MAD, at least
        0.005) above the series median.

    Returns
    -------
    ndarray, shape (T,), bool
    """
    r = (1.0 - ncc).double().cpu().numpy()
    med = float(np.median(r))
    mad = max(float(np.median(np.abs(r - med))) * 1.4826, 0.005)
    return (r > threshold) | ((r - med) / mad > robust_z)


def torch_device(name: str) -> torch.device:
    """``auto`` / ``cpu`` / ``cuda[:n]`` -> torch.device (auto: cuda when present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    if name != "cpu" and not torch.cuda.is_available():
        build = "CPU only" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise ValueError(f"device {name!r}: torch finds no CUDA GPU here (its build: {build}); "
                         "use 'auto' or 'cpu'")
    return torch.device(name)
