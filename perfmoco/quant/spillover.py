"""Partial volume with a blood pool: one extra regressor per curve in the Fermi fit.

A pixel on the wall's edge shares its volume with what lies next to it.  When
that is a blood pool, its signal adds a fraction ``v`` of the pool's own curve
to the tissue curve, undelayed: the LV cavity (the AIF itself) for pixels
touching the cavity, the RV cavity for septal pixels.  A Fermi response alone
can only absorb that into ``F`` or its delay (on noise-free phantoms,
endocardial pixels read 40-60 % high; septal pixels next to the RV, whose
bolus comes seconds before the LV's, scatter by +-14 %), so those pixels fit
``C = AIF * h + v B(t)``, ``B`` chosen per curve.

:func:`perfmoco.quant.fermi.fit_fermi` takes the choice as its ``spillover``
argument; this module turns it into per-curve regressors and gives the model,
its start values and the working-set compaction the batched solver needs.
"""

from __future__ import annotations

import numpy as np

from perfmoco.quant.aif import deepest_core

__all__ = [
    "VB_BOUNDS",
    "WithSpillover",
    "regressor_index",
    "pool_core",
    "pool_spill_curve",
    "start_spillover",
    "two_column_gain",
]

#: Bounds of the blood fraction ``v``.
VB_BOUNDS = (0.0, 0.6)


def regressor_index(spillover, lead: tuple, n_extra: int) -> np.ndarray:
    """Which regressor each curve may take: ``-1`` none, ``0`` the AIF, ``j`` extra curve ``j - 1``.

    Parameters
    ----------
    spillover : bool, ndarray of bool or ndarray of int
        ``True``/``False`` for all curves (the AIF), a bool array selecting
        curves (the AIF), or an int array of indices as returned.
    lead : tuple
        Leading shape of the curves.
    n_extra : int
        Number of extra regressor curves (``spill_curves``).

    Returns
    -------
    ndarray, shape (N,), int64
    """
    s = np.asarray(spillover)
    if s.dtype == bool:
        return np.where(np.broadcast_to(s, lead).ravel(), 0, -1).astype(np.int64)
    if s.dtype.kind not in "iu":
        raise ValueError(f"spillover must be bool or an int index array, got {s.dtype}")
    try:
        idx = np.broadcast_to(s, lead).ravel().astype(np.int64)
    except ValueError:
        raise ValueError(f"spillover {s.shape} does not fit curves {lead}") from None
    if idx.size and (idx.min() < -1 or idx.max() > n_extra):
        raise ValueError(f"spillover indices must lie in -1..{n_extra} (0 = the AIF, "
                         f"j = spill_curves[j - 1]), got {idx.min()}..{idx.max()}")
    return idx


class WithSpillover:
    """A Fermi model plus ``v * B_n(t)``: parameters ``(F, tau0, k, delay, v)``.

    Parameters
    ----------
    model : callable
        ``model(p (N, 4), grad=...) -> (curves (N, T), jacobian (4, N, T))``.
    regressors : ndarray, shape (N, T)
        Each curve's regressor (zeros where it has none).
    """

    def __init__(self, model, regressors: np.ndarray):
        self.model = model
        self.b = regressors

    @classmethod
    def build(cls, model, aif, extra, index, dtype):
        """The model with ``[aif, *extra][index]`` per curve (zeros for ``-1``)."""
        rows = [np.asarray(aif, dtype)[None]]
        if extra is not None and len(extra):
            rows.append(np.asarray(extra, dtype).reshape(len(extra), -1))
        table = np.concatenate(rows + [np.zeros_like(rows[0])])  # last row: none
        return cls(model, table[np.where(index < 0, table.shape[0] - 1, index)])

    def take(self, rows) -> WithSpillover:
        """The model of a subset of the curves (the solver's compacted working set)."""
        return WithSpillover(self.model, self.b[rows])

    def __call__(self, p, *, grad=False):
        out, jac = self.model(p[:, :4], grad=grad)
        out = out + p[:, 4:5] * self.b
        if grad:
            jac = np.concatenate([jac, self.b[None]])
        return out, jac


def start_spillover(model: WithSpillover, p, cw, w, on, lo, hi) -> None:
    """Start ``(F, v)`` of the curves in ``on`` by least squares on their start shapes."""
    if not on.any():
        return
    shape = np.column_stack([np.ones(int(on.sum()), p.dtype), p[on, 1:4]])
    wo = w if w.shape[0] == 1 else w[on]  # frame weights: (1, T) or per curve
    x = model.model(shape)[0] * wo  # unit-F curves
    b = model.b[on] * wo
    y = cw[on]
    sxx, sbb, sxb = (x * x).sum(1), (b * b).sum(1), (x * b).sum(1)
    sxy, sby = (x * y).sum(1), (b * y).sum(1)
    det = np.maximum(sxx * sbb - sxb * sxb, 1e-30)
    f = (sbb * sxy - sxb * sby) / det
    v = (sxx * sby - sxb * sxy) / det
    neg = v < 0  # no spillover: F alone
    f[neg] = sxy[neg] / np.maximum(sxx[neg], 1e-30)
    v[neg] = 0.0
    p[on, 0] = np.clip(f, lo[on, 0], hi[on, 0])
    p[on, 4] = np.clip(v, lo[on, 4], hi[on, 4])


def two_column_gain(atoms, cb, bb, cw, w, b, on):
    """Energy each (atom, regressor) pair explains, for the dictionary start.

    Parameters
    ----------
    atoms : ndarray, shape (M, T)
        Unit-``F`` Fermi curves.
    cb, bb : ndarray, shape (N, M), (1 or N, M)
        ``c . atom`` and ``|atom|^2`` (weighted).
    cw, w : ndarray, shape (N, T), (1 or N, T)
        Weighted curves and frame weights.
    b : ndarray, shape (N, T)
        Each curve's regressor.
    on : ndarray, shape (N,), bool
        Curves that may take their regressor.

    Returns
    -------
    ndarray, shape (N, M)
        The explained energy where both coefficients come out positive and
        the curve is ``on``; ``-inf`` elsewhere.
    """
    gain = np.full(cb.shape, -np.inf, cb.dtype)
    if not on.any():
        return gain
    wo = w if w.shape[0] == 1 else w[on]
    bo = b[on]
    sbb = (wo * bo * bo).sum(1)[:, None]
    sby = (cw[on] * bo).sum(1)[:, None]
    sxb = (wo * bo) @ atoms.T  # (n_on, M)
    cbo, bbo = cb[on], (bb if bb.shape[0] == 1 else bb[on])
    det = np.maximum(bbo * sbb - sxb * sxb, 1e-30)
    f2 = (sbb * cbo - sxb * sby) / det
    v2 = (bbo * sby - sxb * cbo) / det
    gain[on] = np.where((f2 > 0) & (v2 > 0), f2 * cbo + v2 * sby, -np.inf)
    return gain


def pool_core(mask, *, min_px: int = 4) -> np.ndarray | None:
    """The deepest core of a blood-pool mask (2, 1.5 or 1 px inside) with ``min_px`` pixels."""
    return deepest_core(mask, (2.0, 1.5, 1.0), min_px)


def pool_spill_curve(images, core, *, m0, myo_images, ts_s: float, relaxivity: float,
                     baseline: int) -> np.ndarray | None:
    """A blood pool's curve as an adjacent wall pixel's [Gd] conversion reads it.

    Partial volume mixes *signals*: a wall pixel holding a fraction ``v``
    of blood gains ``v dS_pool(t)``, which its conversion (made for
    myocardium) turns into about ``v dS_pool / (M0 Ts (1 - x0) r)`` mmol/l
    (the slope of the saturation-recovery inversion at the myocardial
    baseline ``x0 = S / M0``).  Using the slice's own pool signal, not the
    AIF, keeps the saturation of bright blood and the AIF slice's timing out
    of the regressor's shape, so ``v`` reads as a volume fraction and the
    tissue's own flow is ``F / (1 - v)``.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
        The (corrected) high-resolution dynamics.
    core : ndarray, shape (Y, X), bool, or None
        Pool pixels away from its edge (:func:`pool_core`).
    m0 : ndarray, shape (P,) or (T, P)
        M0 of the myocardial pixels (or per frame).
    myo_images : ndarray, shape (T, P)
        Their signal.
    ts_s, relaxivity : float, keyword-only
        Saturation time (s) and relaxivity (l/(mmol s)).
    baseline : int, keyword-only
        Pre-contrast frames.

    Returns
    -------
    ndarray, shape (T,), mmol/l, or None
        None without a core or without enhancement.
    """
    if core is None or not np.any(core):
        return None
    s = np.asarray(images, np.float64)[:, np.asarray(core, bool)].mean(axis=1)
    ds = s - s[:baseline].mean()
    m = np.asarray(m0, np.float64)
    if m.ndim == 2:  # per frame (M0 following the coils through the motion)
        m = m[:baseline].mean(axis=0)
    ok = np.isfinite(m) & (m > 0)
    if not ok.any() or not ds.max() > 0:
        return None
    m_ref = float(np.median(m[ok]))
    x0 = float(np.median(np.asarray(myo_images, np.float64)[:baseline, ok].mean(axis=0) / m[ok]))
    return ds / (m_ref * ts_s * (1.0 - min(max(x0, 0.0), 0.95)) * relaxivity)
