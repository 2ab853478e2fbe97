"""Fermi-constrained deconvolution (Jerosch-Herold 1998), vectorised over all curves.

Every tissue curve is modelled as ``C(t) = AIF (*) h(t - delay)`` with the
Fermi impulse response of :func:`perfmoco.quant.model.fermi_impulse`
(``h(0) = F``, MBF = ``F * 60 / density``), discretised by
:class:`perfmoco.quant.conv.FermiConvolution`.  All curves are fitted at
once, in numpy:

1. a dictionary start: for a grid of delays and Fermi shapes (``tau0, k``)
   the best amplitude ``F`` of every curve is a closed-form least-squares
   projection (one matrix product), and each curve starts from its best atom;
2. batched, bounded Levenberg-Marquardt on ``(F, tau0, k, delay)`` with a
   damping per curve; converged curves leave the working set.

Curves on a non-uniform time grid (beat-to-beat RR variation) are first
resampled with :func:`perfmoco.quant.timegrid.resample_uniform` (re-exported here).
For noisy pixel curves use :func:`perfmoco.quant.grouped.fit_fermi_grouped`.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from perfmoco.quant.conv import FermiConvolution
from perfmoco.quant.model import flow_to_mbf
from perfmoco.quant.spillover import (
    VB_BOUNDS,
    SignalMix,
    WithSpillover,
    regressor_index,
    two_column_gain,
)
from perfmoco.quant.timegrid import resample_uniform

__all__ = ["F_BOUNDS", "MIN_DELAY_S", "FermiFit", "fit_fermi", "resample_uniform"]

log = logging.getLogger(__name__)

#: Bounds of the fitted parameters: F (1/s), tau0 (s), k (1/s).
F_BOUNDS = (0.0, 0.35)
TAU_BOUNDS = (0.0, 60.0)
K_BOUNDS = (0.02, 20.0)
#: The earliest delay of the default delay grid (s): the tissue at most this far ahead of
#: the AIF (two sequences acquired at different moments of the heartbeat).
MIN_DELAY_S = -0.5


@dataclasses.dataclass(frozen=True)
class FermiFit:
    """Pixel-wise Fermi fits; every array has the leading shape of the curves.

    Attributes
    ----------
    mbf : ndarray, float32, ml/min/g
        ``F * 60 / density`` (NaN where the fit failed outright).
    flow : ndarray, float32, 1/s
        Impulse-response amplitude ``F = h(0)``.
    tau0 : ndarray, float32, s
    k : ndarray, float32, 1/s
    delay : ndarray, float32, s
        Tissue delay relative to the AIF (fitted, within the delay grid range).
    vb : ndarray, float32
        Blood-pool spillover fraction (0 unless fitted with ``spillover``).
    rmse : ndarray, float32, mmol/l
        Root mean square residual over the frames used.
    r2 : ndarray, float32
        Coefficient of determination over the frames used.
    ok : ndarray, bool
        Fit converged inside the bounds with ``r2 >= r2_min``.
    """

    mbf: np.ndarray
    flow: np.ndarray
    tau0: np.ndarray
    k: np.ndarray
    delay: np.ndarray
    rmse: np.ndarray
    r2: np.ndarray
    ok: np.ndarray
    vb: np.ndarray | None = None


def fit_fermi(
    curves,
    aif,
    *,
    dt_s: float,
    frame_mask=None,
    delays_s=None,
    density: float = 1.05,
    max_iter: int = 40,
    tol: float = 1e-4,
    polish_iter: int = 6,
    oversample: int = 2,
    init=None,
    fix_delay: bool = False,
    shape_range: float | None = None,
    delay_window_s: float | None = None,
    r2_min: float = 0.5,
    spillover=False,
    spill_curves=None,
    spill_signal=None,
    measured=None,
    dtype=np.float32,
) -> FermiFit:
    """Fit Fermi-constrained deconvolution to many tissue curves at once.

    Parameters
    ----------
    curves : ndarray, shape (..., T), float, mmol/l
        Tissue [Gd] curves on a uniform grid of step ``dt_s`` that starts at
        the AIF's first sample (any leading shape, e.g. ``(N,)`` or ``(Y, X)``).
    aif : ndarray, shape (T,), float, mmol/l
        Arterial input function on the same grid (plasma or blood, as wanted).
    dt_s : float, keyword-only
        Grid step in s.
    frame_mask : ndarray, shape (T,) or (..., T), bool, keyword-only, optional
        True for frames to use (e.g. ``~qc``); default all frames.
    delays_s : ndarray, shape (D,), float, keyword-only, optional
        Delay grid in s; default ``-0.5 .. 3 s`` in steps of ``dt_s / 4``.
    density : float, keyword-only
        Tissue density, g/ml.
    max_iter : int, keyword-only
        Most Levenberg-Marquardt iterations.
    tol : float, keyword-only
        A curve stops iterating when an accepted step lowers its residual
        sum of squares by less than this fraction.
    polish_iter : int, keyword-only
        With ``oversample > 1`` the fit first converges with one quadrature
        point per step (half the cost), then takes at most this many
        iterations with the accurate model (0: accurate model throughout).
    oversample : int, keyword-only
        Quadrature points per grid step of the convolution
        (:class:`perfmoco.quant.conv.FermiConvolution`): 2 (default) or 3
        for accuracy, 1 for speed.
    init : ndarray, shape (..., 4), keyword-only, optional
        Start values ``(F [1/s], tau0 [s], k [1/s], delay [s])`` per curve
        instead of the dictionary start (see :func:`fit_fermi_grouped`).
    fix_delay : bool, keyword-only
        Keep each curve's delay at its start value (needs ``init``).
    shape_range : float, keyword-only, optional
        With ``init``: bound ``tau0`` and ``k`` of each curve to
        ``[start / shape_range, start * shape_range]``; this keeps noisy
        pixels from collapsing into a narrow spike with a huge ``F``.
    delay_window_s : float, keyword-only, optional
        With ``init``: bound each delay to its start value +- this (s).
    r2_min : float, keyword-only
        Smallest ``r2`` of a fit flagged ``ok``.
    spillover : bool or ndarray of bool, shape (...), keyword-only
        Also fit a blood-pool fraction ``vb`` (``C += vb * AIF``, within
        ``VB_BOUNDS``, starting at 0) so that partial volume with the LV
        cavity does not read as flow; ``FermiFit.vb`` holds it.  A bool array
        selects the curves that may have one (e.g. pixels next to the LV
        cavity); the others keep ``vb = 0``.  An int array chooses each
        curve's regressor: ``-1`` none, ``0`` the AIF, ``j`` the curve
        ``spill_curves[j - 1]`` (e.g. the RV cavity's, for septal pixels;
        :mod:`perfmoco.quant.spillover`).
    spill_curves : ndarray, shape (K, T), keyword-only, optional
        Further regressor curves for an int ``spillover``, on the AIF's grid,
        in the units of the curves.
    spill_signal : tuple, keyword-only, optional
        ``(pool_baseline (K,), q, a)``: the partial volume is mixed in the
        signal and converted exactly (:class:`perfmoco.quant.spillover.SignalMix`).
        ``spill_curves`` then hold the pools' ``S / M0`` (``pool_baseline``
        at their baseline), ``q`` (scalar or per curve) is ``1 - S / M0`` of
        each curve's baseline and ``a`` (scalar or per curve) ``TS * r``;
        ``spillover`` must be an int array (``0``, the AIF, is not allowed)
        and ``vb`` is the pool's signal fraction ``w``: ``F`` is then the
        myocardium's own, per its own volume.
    measured : ndarray, shape like ``curves``, keyword-only, optional
        Curves that ``r2`` and ``rmse`` (and so ``ok``) are scored against,
        when ``curves`` are a processed version of them (e.g. denoised,
        :mod:`perfmoco.quant.denoise`); default ``curves`` themselves.
    dtype : numpy dtype, keyword-only
        Working precision (float32, the default, is about twice as fast as
        float64 and gives the same MBF to well below 0.1 %).

    Returns
    -------
    FermiFit
        Arrays of shape ``curves.shape[:-1]``.

    Raises
    ------
    ValueError
        For mismatched shapes, non-finite values or a non-positive ``dt_s``.
    """
    c, a = _checked(curves, aif, dt_s)
    lead, t_n = c.shape[:-1], a.size
    c = c.reshape(-1, t_n).astype(dtype)
    n = c.shape[0]
    w = _frame_weights(frame_mask, lead, t_n, dtype)
    if delays_s is None:
        delays_s = np.arange(MIN_DELAY_S, 3.0 + 1e-9, dt_s / 4.0)
    delays = np.asarray(delays_s, dtype=np.float64).ravel()
    d_lo, d_hi = float(delays.min()), float(delays.max())
    if init is not None:
        p0 = np.asarray(init, np.float64).reshape(-1, 4)
        if p0.shape[0] != n or not np.isfinite(p0).all():
            raise ValueError(f"init must be finite with shape {(*lead, 4)}, got {np.shape(init)}")
        d_lo, d_hi = min(d_lo, float(p0[:, 3].min())), max(d_hi, float(p0[:, 3].max()))
    elif fix_delay:
        raise ValueError("fix_delay needs init (the delays to keep)")
    model = FermiConvolution(a, dt_s=dt_s, oversample=oversample, min_delay_s=d_lo,
                             dtype=dtype)

    extra = None if spill_curves is None else np.asarray(spill_curves, np.float64)
    if extra is not None and (extra.ndim != 2 or extra.shape[1] != t_n
                              or not np.isfinite(extra).all()):
        raise ValueError(f"spill_curves must be finite with shape (K, {t_n}), got "
                         f"{np.shape(spill_curves)}")
    reg = regressor_index(spillover, lead, 0 if extra is None else extra.shape[0])
    vb_on = reg >= 0
    spillover = bool(vb_on.any())
    cw = c * w
    if spillover:
        with_b = _spill_model(model, a, extra, reg, spill_signal, dtype)
    if init is not None:
        p = np.clip(p0, [F_BOUNDS[0], TAU_BOUNDS[0], K_BOUNDS[0], d_lo],
                    [F_BOUNDS[1], TAU_BOUNDS[1], K_BOUNDS[1], d_hi]).astype(dtype)
    else:
        p = _dictionary_start(model, c, cw, w, delays, b=with_b.b if spillover else None,
                              on=vb_on)
    lo = np.tile(np.array([F_BOUNDS[0], TAU_BOUNDS[0], K_BOUNDS[0], d_lo], dtype), (n, 1))
    hi = np.tile(np.array([F_BOUNDS[1], TAU_BOUNDS[1], K_BOUNDS[1], d_hi], dtype), (n, 1))
    if spillover:
        p = np.column_stack([p, np.zeros(n, dtype)])
        lo = np.column_stack([lo, np.full(n, VB_BOUNDS[0], dtype)])
        hi = np.column_stack([hi, np.where(vb_on, VB_BOUNDS[1], VB_BOUNDS[0]).astype(dtype)])
        model = with_b
        model.start(p, cw, w, vb_on, lo, hi)
    if init is not None:
        _narrow_to_start(p, lo, hi, shape_range, delay_window_s)
    energy = np.einsum("nt,nt->n", cw, cw)
    if oversample > 1 and polish_iter > 0:  # converge on the cheap 1-point model, polish
        coarse = FermiConvolution(a, dt_s=dt_s, oversample=1, min_delay_s=d_lo, dtype=dtype)
        if spillover:
            coarse = with_b.over(coarse)
        _fit_lm(coarse, p, c, w, energy, lo=lo, hi=hi, max_iter=max_iter, tol=tol,
                fix_delay=fix_delay)
    sse = _fit_lm(model, p, c, w, energy, lo=lo, hi=hi,
                  max_iter=max_iter if oversample == 1 or polish_iter <= 0 else polish_iter,
                  tol=tol,
                  fix_delay=fix_delay)
    if measured is not None:  # score the fit against the measured curves
        meas = np.asarray(measured, np.float64)
        if meas.shape != (*lead, t_n) or not np.isfinite(meas).all():
            raise ValueError(f"measured must be finite with shape {(*lead, t_n)}, "
                             f"got {meas.shape}")
        c = meas.reshape(-1, t_n).astype(dtype)
        r = (model(p)[0] - c) * w
        sse = np.einsum("nt,nt->n", r, r)
    return _scored(p, c, w, sse, lead=lead, r2_min=r2_min, density=density,
                   spillover=spillover)


def _checked(curves, aif, dt_s):
    """``curves`` and ``aif`` as float64 arrays, or a ValueError saying what is wrong."""
    c = np.asarray(curves, dtype=np.float64)
    a = np.asarray(aif, dtype=np.float64)
    if a.ndim != 1 or c.ndim < 1 or c.shape[-1] != a.size:
        raise ValueError(f"curves (..., T) and aif (T,) must share T, got {c.shape}, {a.shape}")
    if a.size < 5:
        raise ValueError(f"at least 5 time points are needed, got {a.size}")
    if not (np.isfinite(dt_s) and dt_s > 0):
        raise ValueError(f"dt_s must be a positive number, got {dt_s!r}")
    if not (np.isfinite(c).all() and np.isfinite(a).all()):
        raise ValueError("curves and aif must be finite (no NaN/Inf)")
    return c, a


def _frame_weights(frame_mask, lead: tuple, t_n: int, dtype) -> np.ndarray:
    """0/1 weight per frame, shape ``(1, T)`` (one mask for all) or ``(N, T)``."""
    if frame_mask is None:
        return np.ones((1, t_n), dtype)
    fm = np.asarray(frame_mask, dtype=bool)
    try:
        w = np.broadcast_to(fm, (*lead, t_n)).reshape(-1, t_n).astype(dtype)
    except ValueError:
        raise ValueError(f"frame_mask {fm.shape} does not fit curves {(*lead, t_n)}") from None
    if (w.sum(axis=1) < 5).any():
        raise ValueError("frame_mask leaves fewer than 5 frames for some curves")
    return w[:1] if fm.ndim == 1 else w


def _spill_model(model, aif, extra, reg, spill_signal, dtype):
    """The Fermi model with each curve's blood-pool term (signal mix or [Gd] sum)."""
    if spill_signal is None:
        return WithSpillover.build(model, aif, extra, reg, dtype)
    if extra is None or (reg == 0).any():
        raise ValueError("spill_signal needs spill_curves and a pool (index >= 1) per "
                         "curve with spillover (the AIF, index 0, is in mmol/l)")
    base, q, a_ts = spill_signal
    return SignalMix.build(model, (extra, base), reg, q=np.ravel(q), a=np.ravel(a_ts),
                           dtype=dtype)


def _narrow_to_start(p, lo, hi, shape_range, delay_window_s) -> None:
    """Bound ``tau0``, ``k`` and the delay about their start values (in place)."""
    if shape_range is not None:
        if not shape_range >= 1.0:
            raise ValueError(f"shape_range must be >= 1, got {shape_range!r}")
        lo[:, 1:3] = np.maximum(lo[:, 1:3], p[:, 1:3] / shape_range)
        hi[:, 1:3] = np.minimum(hi[:, 1:3], p[:, 1:3] * shape_range)
    if delay_window_s is not None:
        lo[:, 3] = np.maximum(lo[:, 3], p[:, 3] - delay_window_s)
        hi[:, 3] = np.minimum(hi[:, 3], p[:, 3] + delay_window_s)


def _scored(p, c, w, sse, *, lead, r2_min, density, spillover) -> FermiFit:
    """The fitted parameters ``p`` with each curve's ``r2``, ``rmse`` and ``ok``."""
    used = np.broadcast_to(w, c.shape)
    n_used = used.sum(axis=1)
    mean = (c * used).sum(axis=1) / n_used
    dev = (c - mean[:, None]) * used
    r2 = 1.0 - sse / np.maximum(np.einsum("nt,nt->n", dev, dev), 1e-30)
    rmse = np.sqrt(sse / n_used)
    at_bound = (p[:, 0] >= F_BOUNDS[1] * 0.999) | (p[:, 0] <= 0)
    ok = np.isfinite(p).all(axis=1) & (r2 >= r2_min) & ~at_bound

    def out(x, dt=np.float32):
        return np.asarray(x, dtype=dt).reshape(lead)

    return FermiFit(
        mbf=out(flow_to_mbf(p[:, 0], density=density)), flow=out(p[:, 0]), tau0=out(p[:, 1]),
        k=out(p[:, 2]), delay=out(p[:, 3]), rmse=out(rmse), r2=out(r2), ok=out(ok, bool),
        vb=out(p[:, 4] if spillover else np.zeros(p.shape[0])),
    )


def _dictionary_start(model, c, cw, w, delays, b=None, on=None):
    """Start values from the best (delay, tau0, k) atom of every curve; ``F`` by projection.

    With ``b`` (each curve's regressor, (N, T)), curves in ``on`` may also take
    ``vb * b`` when choosing their atom.
    """
    dtype = c.dtype
    n = c.shape[0]
    taus = np.array([1.0, 2.0, 3.5, 5.0, 7.5, 10.0, 15.0, 25.0])
    ks = np.array([0.2, 0.4, 0.8, 1.5, 3.0, 6.0])
    grid = np.stack([g.ravel() for g in np.meshgrid(delays, taus, ks, indexing="ij")], 1)
    atom_p = np.column_stack([np.ones(len(grid)), grid[:, 1], grid[:, 2], grid[:, 0]])
    atoms, _ = model(atom_p.astype(dtype))
    cb = cw @ atoms.T  # (N, M)
    bb = w @ (atoms * atoms).T  # (1 or N, M)
    gain = np.where(cb > 0, cb * cb / np.maximum(bb, 1e-30), -np.inf)
    if b is not None:  # two columns (atom, regressor): a pixel may also hold blood
        gain = np.maximum(gain, two_column_gain(atoms, cb, bb, cw, w, b, on))
    best = np.argmax(gain, axis=1)
    rows = np.arange(n)
    f0 = np.clip(cb[rows, best] / np.maximum(bb[rows % bb.shape[0], best], 1e-30), *F_BOUNDS)
    return np.column_stack([f0, grid[best, 1], grid[best, 2], grid[best, 0]]).astype(dtype)


def _fit_lm(model, p, c, w, energy, *, lo, hi, max_iter, tol, fix_delay):
    """Batched, bounded Levenberg-Marquardt on ``(F, tau0, k, delay[, vb])``, in place on ``p``.

    Every curve has its own damping; converged curves leave the working set,
    which is compacted as it shrinks.  Returns the residual sums of squares.
    """
    dtype = c.dtype
    n, t_n = c.shape
    n_p = p.shape[1]

    def sse_of(pred):  # residual sum of squares per curve
        r = (pred - c) * w
        return np.einsum("nt,nt->n", r, r)

    pairs = [(a_, b_) for a_ in range(n_p) for b_ in range(a_, n_p)]
    pred, jac = model(p, grad=True)
    sse = sse_of(pred)
    ws = np.arange(n)  # working set: indices into the full arrays
    wp, wsse, wpred, wjac, wc = p.copy(), sse.copy(), pred, jac, c
    wenergy = energy
    fixed = np.zeros((n_p, n_p), dtype)
    fixed[3, 3] = 1.0 if fix_delay else 0.0
    ww = w if w.shape[0] == 1 else w.copy()
    lam = np.full(n, 1e-2, dtype)
    active = np.ones(n, bool)
    for _ in range(max_iter):
        if active.mean() < 0.7:  # compact the working set
            p[ws], sse[ws] = wp, wsse
            keep = np.flatnonzero(active)
            ws, wp, wsse, lam, active = ws[keep], wp[keep], wsse[keep], lam[keep], active[keep]
            lo, hi = lo[keep], hi[keep]
            if hasattr(model, "take"):  # per-curve regressors follow the working set
                model = model.take(keep)
            wpred, wjac, wc, wenergy = wpred[keep], wjac[:, keep], wc[keep], wenergy[keep]
            if ww.shape[0] > 1:
                ww = ww[keep]
        if ws.size == 0:
            break
        if fix_delay:
            wjac[3] = 0.0
        jw = wjac * ww[None]
        resid = (wc - wpred) * ww
        jtj = np.empty((ws.size, n_p, n_p), dtype)
        for a_, b_ in pairs:
            jtj[:, a_, b_] = jtj[:, b_, a_] = np.einsum("nt,nt->n", jw[a_], jw[b_])
        g = np.einsum("pnt,nt->np", jw, resid)
        # vb stays put where it cannot move (no spillover) or where it sits at a
        # bound and the gradient pushes it out (a clipped step would spoil the others)
        free = np.ones_like(hi, bool)
        free[:, 4:] = ((hi[:, 4:] > lo[:, 4:]) & ~((wp[:, 4:] <= lo[:, 4:]) & (g[:, 4:] < 0))
                       & ~((wp[:, 4:] >= hi[:, 4:]) & (g[:, 4:] > 0)))
        if not free.all():
            jtj *= free[:, :, None] & free[:, None, :]
            g *= free
            jtj += np.eye(n_p, dtype=dtype) * ~free[:, None, :]
        diag = np.einsum("npp->np", jtj)
        lhs = jtj + (lam[:, None] * (diag + 1e-12))[:, :, None] * np.eye(n_p, dtype=dtype) + fixed
        step = np.linalg.solve(lhs, g[:, :, None])[:, :, 0]
        trial = np.clip(wp + step, lo, hi)
        tpred, tjac = model(trial, grad=True)
        r = (tpred - wc) * ww
        tsse = np.einsum("nt,nt->n", r, r)
        better = (tsse < wsse) & active
        rel = (wsse - tsse) / np.maximum(wsse, 1e-30)
        lam = np.where(better, lam / 3.0, lam * 4.0).clip(1e-7, 1e7)
        small = (np.abs(trial - wp) <= 1e-7 * (hi - lo)).all(axis=1)
        tiny = tsse <= 1e-14 * wenergy
        wp[better], wsse[better], wpred[better] = trial[better], tsse[better], tpred[better]
        wjac[:, better] = tjac[:, better]
        active &= ~((better & ((rel < tol) | tiny | small)) | (lam >= 1e7))
    p[ws], sse[ws] = wp, wsse
    return sse
