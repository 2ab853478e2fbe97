"""Low-rank decompositions of a series: PCA references and RPCA (training only).

A series ``(T, H, W)`` is treated as the matrix ``(T, H*W)`` (one row per
frame).  Both decompositions are vectorised torch code (one SVD / eigh per
iteration), they run on the tensor's device.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from monai.networks.layers import GaussianFilter

__all__ = ["pca_reference", "rpca", "rpca_lowrank_cached"]

log = logging.getLogger(__name__)


def pca_reference(images: torch.Tensor, *, components: int = 4,
                  neighbour_sigma_px: float = 0.0,
                  basis: torch.Tensor | None = None) -> torch.Tensor:
    """Synthetic motion-reduced reference series from the leading temporal PCs.

    The temporal mean plus the projection on the ``components`` leading
    principal components keeps the contrast dynamics (bolus passage) and
    drops most of the breathing motion, which is spread over many small
    components (Scannell et al. 2019).

    A few components cannot hold every contrast phase: in the frames of
    myocardial enhancement the ring of myocardium is brighter than its
    low-rank frame, and an affine fit to that frame reads the difference as
    a 1-2 % scale change of the heart (measured from a perfect alignment).
    With ``neighbour_sigma_px`` each frame's reference also gets the mean of
    its two temporal neighbours' residuals from their low-rank frames,
    smoothed by a Gaussian of that SD: the neighbours carry the contrast
    the components miss (it changes slowly from one heartbeat to the next);
    their own misalignment, an edge-sized pattern of opposite signs, is
    averaged and smoothed away, and the frame's own is never used.

    With ``basis`` the mean and the components are those of some frames only,
    and every frame is projected onto them.  Where a frame's appearance changes
    with its breathing position (at the apex the heart's cross-section grows
    and shrinks as the heart slides through the slice), components learned from
    all frames hold that change, and each frame's reference follows its own
    heart size instead of removing it; components learned from frames near one
    breathing position do not hold it.

    Parameters
    ----------
    images : Tensor, shape (T, H, W), float
        A (partly) aligned series.
    components : int, keyword-only
        Principal components kept (``1 <= components < T``).
    neighbour_sigma_px : float, keyword-only
        SD of the smoothing of the neighbours' residuals, pixels; 0 (the
        default) leaves them out (needs ``T >= 3``).
    basis : Tensor, shape (T,), bool, optional, keyword-only
        The frames whose mean and principal components make the reference of
        every frame; None (the default), or no more than ``components`` frames:
        all frames.

    Returns
    -------
    Tensor, shape (T, H, W), float32
    """
    t = images.shape[0]
    if not 1 <= components < t:
        raise ValueError(f"components must be in [1, {t - 1}], got {components}")
    # single precision but for the (T, T) eigenproblem: 2x faster than double throughout,
    # and the leading components of 0..1 crops do not need more
    x = images.reshape(t, -1).float()
    if basis is not None and int(basis.sum()) > components:
        rec = _project_on_subset(x, basis.to(x.device), components)
    else:
        mean = x.mean(0, keepdim=True)
        xc = x - mean
        gram = xc @ xc.T  # (T, T): cheaper than an SVD of (T, N)
        _, vecs = torch.linalg.eigh(gram.double())
        u = vecs[:, -components:].float()  # leading eigenvectors (ascending order)
        rec = mean + u @ (u.T @ xc)
    rec = rec.reshape(images.shape)
    if neighbour_sigma_px > 0 and t >= 3:
        rec = rec + _neighbour_residual(images.float() - rec, neighbour_sigma_px)
    return rec


def _project_on_subset(x: torch.Tensor, subset: torch.Tensor, components: int) -> torch.Tensor:
    """Rows of ``x`` ``(T, N)`` projected onto the mean and leading components of ``x[subset]``."""
    fit = x[subset]
    mean = fit.mean(0, keepdim=True)
    fc = fit - mean
    vals, vecs = torch.linalg.eigh((fc @ fc.T).double())
    keep = vals[-components:] > 1e-6 * vals[-1].clamp_min(1e-300)  # none of zero variance
    v = fc.T @ vecs[:, -components:][:, keep].to(fc.dtype)  # spatial components (N, k)
    v = v / v.norm(dim=0, keepdim=True)
    return mean + ((x - mean) @ v) @ v.T


def _neighbour_residual(res: torch.Tensor, sigma_px: float) -> torch.Tensor:
    """Mean of frames ``t - 1`` and ``t + 1`` of ``res`` (an end: its one neighbour), smoothed."""
    prev = torch.cat([res[1:2], res[:-1]])
    nxt = torch.cat([res[1:], res[-2:-1]])
    # zero padding: the refinement's crops are zero-padded and windowed on the heart
    smooth = GaussianFilter(spatial_dims=2, sigma=float(sigma_px)).to(res.device)
    return smooth((0.5 * (prev + nxt))[:, None])[:, 0]


def rpca(
    images: torch.Tensor,
    *,
    lam: float | None = None,
    tol: float = 1e-6,
    max_iter: int = 300,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust PCA by the inexact augmented Lagrange multiplier method.

    Solves ``min ||L||_* + lam ||S||_1  s.t.  M = L + S`` (Lin, Chen & Ma 2010)
    with ``M`` the ``(H*W, T)`` Casorati matrix of the series.

    Parameters
    ----------
    images : Tensor, shape (T, H, W), float
    lam : float, keyword-only, optional
        Sparsity weight; default ``1 / sqrt(max(H*W, T))``.
    tol : float, keyword-only
        Stop when ``||M - L - S||_F / ||M||_F < tol``.
    max_iter : int, keyword-only

    Returns
    -------
    lowrank, sparse : Tensor, shape (T, H, W), float32
    """
    t = images.shape[0]
    m = images.reshape(t, -1).T.double()  # (N, T): one column per frame
    n_pix = m.shape[0]
    if lam is None:
        lam = 1.0 / float(np.sqrt(max(n_pix, t)))
    norm_fro = torch.linalg.norm(m)
    if norm_fro == 0:
        z = torch.zeros_like(images, dtype=torch.float32)
        return z, z.clone()
    norm_two = torch.linalg.matrix_norm(m, ord=2)
    norm_inf = m.abs().max() / lam
    y = m / max(float(norm_two), float(norm_inf))
    mu = 1.25 / float(norm_two)
    mu_bar = mu * 1e7
    rho = 1.5
    s = torch.zeros_like(m)
    low = torch.zeros_like(m)
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (logged below)
        x = m - s + y / mu
        # singular value thresholding through the (T, T) Gram matrix: X = U S V^T,
        # X^T X = V S^2 V^T, so SVT(X) = X V diag(max(S - 1/mu, 0) / S) V^T
        ev, v = torch.linalg.eigh(x.T @ x)
        sig = ev.clamp_min(0.0).sqrt()
        gain = torch.where(sig > 1.0 / mu, (sig - 1.0 / mu) / sig.clamp_min(1e-30), 0.0)
        r = int((gain > 0).sum())
        low = x @ ((v * gain) @ v.T)
        tmp = m - low + y / mu
        s = torch.sign(tmp) * (tmp.abs() - lam / mu).clamp_min(0.0)
        z = m - low - s
        y = y + mu * z
        mu = min(mu * rho, mu_bar)
        err = float(torch.linalg.norm(z) / norm_fro)
        if err < tol:
            break
    log.debug("rpca: %d iterations, residual %.2e, rank %d", n_iter, err, r)
    shape = images.shape
    return low.T.reshape(shape).float(), s.T.reshape(shape).float()


def rpca_lowrank_cached(
    images: torch.Tensor, *, cache_dir: str | Path | None = None, **kwargs
) -> torch.Tensor:
    """Low-rank RPCA frames, cached on disk by the content of ``images``.

    Parameters
    ----------
    images : Tensor, shape (T, H, W), float
    cache_dir : str or Path, keyword-only, optional
        Folder of ``.npy`` caches; ``None`` computes without caching.
    **kwargs
        Passed to :func:`rpca`.

    Returns
    -------
    Tensor, shape (T, H, W), float32, on the device of ``images``
    """
    if cache_dir is None:
        return rpca(images, **kwargs)[0]
    arr = images.detach().cpu().numpy().astype(np.float32)
    key = hashlib.sha1(arr.tobytes() + repr(sorted(kwargs.items())).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"rpca_{key}.npy"
    if path.is_file():
        return torch.from_numpy(np.load(path)).to(images.device)
    low = rpca(images, **kwargs)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, low.cpu().numpy())
    return low
