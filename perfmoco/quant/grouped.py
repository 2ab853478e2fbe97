"""Hierarchical Fermi fits: group mean curves first, then their pixels.

See :func:`fit_fermi_grouped`.  Why: the fitted delay trades off strongly
against ``F`` (0.03 s moves MBF by several %), so free per-pixel delays turn
noise, and even slight partial-volume contamination of the curve's foot,
into MBF bias and scatter.  Measured on five motion-free phantoms (segment
median MBF, median absolute error): delay fixed per slice 0.30 ml/min/g
(noisy); pixel delays within +-0.3 s of the slice delay 0.20 (noisy) and
0.13 (noise-free); with segment statistics from pixels >= 2 px from the
blood pools (six phantoms) 0.19 (noisy) and 0.07 (noise-free).  The slices'
delays come from the mean curve of all of them (``delay_group_window_s``): a
thin apical wall's own mean curve is too noisy and too mixed for one (DL
correction, 10330-10337: segment error 0.31 -> 0.30 ml/min/g, defect/healthy
split 115 -> 117 of 121).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from perfmoco.quant.conv import FermiConvolution
from perfmoco.quant.denoise import pca_denoise
from perfmoco.quant.fermi import F_BOUNDS, MIN_DELAY_S, FermiFit, fit_fermi

__all__ = ["ahead_of_aif", "fit_fermi_grouped", "not_myocardium"]

log = logging.getLogger(__name__)

#: Levenberg-Marquardt iterations of the pixel fits (they start from their group's
#: solution; more iterations only fit more noise: on four phantoms 4 instead of 8
#: gave the same segment errors and a lower SD within segments, 0.49 vs 0.58).
PIXEL_ITER = 4

#: A segment keeps the shape it fits on its own over one within ``group_shape_range``
#: of the study's only where its own fits its mean curve clearly better: the drop in
#: the squared residual, over the noise variance that fit leaves, at least this (the
#: 95 % point of chi-square with 2 degrees of freedom: the two shape parameters).
SHAPE_TEST_CHI2 = 5.99


def _group_means(c, inv, n_groups, use, fm):
    means = np.empty((n_groups, c.shape[1]))
    gmask = None if fm is None or fm.ndim == 1 else np.empty((n_groups, c.shape[1]), bool)
    for j in range(n_groups):
        sel = inv == j
        pick = sel & use if (sel & use).any() else sel
        means[j] = c[pick].mean(axis=0)
        if gmask is not None:
            gmask[j] = fm[pick].all(axis=0)
    return means, (fm if gmask is None else gmask)


def _params(fit: FermiFit) -> np.ndarray:
    """``(F, tau0, k, delay)`` of every curve of a fit, ``(N, 4)`` float64."""
    return np.column_stack([fit.flow, fit.tau0, fit.k, fit.delay]).astype(np.float64)


def _start_from(curves, fm, aif, params, index, *, dt_s, oversample):
    """Start values: ``params[index]`` (N, 4) with ``F`` projected onto each curve."""
    model = FermiConvolution(aif, dt_s=dt_s, min_delay_s=min(0.0, float(params[:, 3].min())),
                             oversample=oversample, dtype=np.float64)
    sh = model(np.column_stack([np.ones(len(params)), params[:, 1:]]))[0][index]
    wts = np.ones_like(curves) if fm is None else np.broadcast_to(fm, curves.shape)
    f0 = (curves * sh * wts).sum(axis=1) / np.maximum((sh * sh * wts).sum(axis=1), 1e-30)
    return np.column_stack([np.clip(f0, *F_BOUNDS), params[index, 1:]])


def not_myocardium(fit: FermiFit, min_tau0_s: float) -> np.ndarray:
    """Delay fits that no myocardium gives: a near-exponential shape (``tau0 <
    min_tau0_s``, as blood gives) or the curve ahead of the AIF (:func:`ahead_of_aif`).
    """
    return (np.asarray(fit.tau0) < min_tau0_s) | ahead_of_aif(fit)


def ahead_of_aif(fit: FermiFit) -> np.ndarray:
    """Delay fits on the delay grid's earliest value
    (:data:`~perfmoco.quant.fermi.MIN_DELAY_S`): the curve rises that far before the
    AIF or more, as the RV's blood does (seconds before the LV's), and no myocardium.
    """
    return np.asarray(fit.delay) <= MIN_DELAY_S + 1e-3


def _study_delay_fit(pc, aif, dmeans, dfm, d_ids, d_inv, use, fm, delay_fits, *, min_tau0_s,
                     dt_s, **kwargs):
    """The one delay fit of the mean of all (core) curves.

    The delay groups are also fitted on their own.  Those ahead of the AIF
    (:func:`ahead_of_aif`) are left out of it when others are not; where the
    fit of all of them is no myocardium's (:func:`not_myocardium`: blood in a
    mask), so are those whose own fit is none either.  The groups' own fits,
    where any was left out or the fit of all is no myocardium's, are appended to
    ``delay_fits`` (when given).
    """
    n = d_inv.size
    amean, afm = _group_means(pc, np.zeros(n, int), 1, use, fm)
    fit = fit_fermi(amean, aif, dt_s=dt_s, frame_mask=afm, **kwargs)
    if min_tau0_s is None or dmeans.shape[0] < 2:
        return fit
    own = fit_fermi(dmeans, aif, dt_s=dt_s, frame_mask=dfm, **kwargs)
    study_bad = bool(not_myocardium(fit, min_tau0_s)[0])
    ok = ~(not_myocardium(own, min_tau0_s) if study_bad else ahead_of_aif(own))
    left_out = bool(ok.any() and not ok.all())
    if left_out:
        log.info("delay fit: %d of %d delay groups left out (not a myocardial curve)",
                 int((~ok).sum()), ok.size)
        amean, afm = _group_means(pc, np.zeros(n, int), 1, use & ok[d_inv], fm)
        fit = fit_fermi(amean, aif, dt_s=dt_s, frame_mask=afm, **kwargs)
    if delay_fits is not None and (study_bad or left_out):
        delay_fits.append((d_ids, own))
    return fit


def _delay_params(pc, aif, dg, duse, fm, *, dt_s, window_s, delay_fits, min_tau0_s,
                  shape_range, **kwargs):
    """Each delay group's Fermi parameters ``(D, 4)`` from its mean (core) curve, and each
    curve's delay group index.

    With ``window_s`` None (or one group) each group's own fit; otherwise one fit for
    all first (:func:`_study_delay_fit`) and, where ``window_s`` > 0, each group's own
    within +-``window_s`` of it, except a group with no curve in ``duse`` (a slice whose
    M0 is off has none), which keeps the study's.  The fits are appended to
    ``delay_fits`` (when given).
    """
    over = kwargs.get("oversample", 2)
    d_ids, d_inv = np.unique(dg, return_inverse=True)
    dmeans, dfm = _group_means(pc, d_inv, d_ids.size, duse, fm)
    study = None  # the study's parameters per group, where the groups' own are windowed
    if window_s is None or d_ids.size == 1:
        dfit, d_labels = fit_fermi(dmeans, aif, dt_s=dt_s, frame_mask=dfm, **kwargs), d_ids
    else:  # one delay for all first: the groups' own stay near it
        dfit = _study_delay_fit(pc, aif, dmeans, dfm, d_ids, d_inv, duse, fm, delay_fits,
                                min_tau0_s=min_tau0_s, dt_s=dt_s, **kwargs)
        d_labels = None
        if window_s > 0:
            study = np.repeat(_params(dfit), d_ids.size, 0)
            init = _start_from(dmeans, dfm, aif, study, np.arange(d_ids.size), dt_s=dt_s,
                               oversample=over)
            dfit, d_labels = fit_fermi(dmeans, aif, dt_s=dt_s, frame_mask=dfm, init=init,
                                       shape_range=shape_range, delay_window_s=window_s,
                                       **kwargs), d_ids
    dp = _params(dfit)
    if d_labels is None:
        dp = np.repeat(dp, d_ids.size, axis=0)
    elif study is not None:  # groups without a delay-core curve: the study's ([Gd] off)
        none = np.bincount(d_inv, weights=np.asarray(duse, float), minlength=d_ids.size) == 0
        dp[none] = study[none]
    if delay_fits is not None:
        delay_fits.append((d_labels, dfit))
    return dp, d_inv


def _replace_where(fit: FermiFit, other: FermiFit, take: np.ndarray) -> FermiFit:
    """``fit`` with the curves marked in ``take`` (``(G,)`` bool) taken from ``other``."""
    out = {}
    for f in dataclasses.fields(fit):
        a, b = getattr(fit, f.name), getattr(other, f.name)
        if isinstance(a, np.ndarray) and a.shape[:1] == take.shape:
            out[f.name] = np.where(take.reshape((-1,) + (1,) * (a.ndim - 1)), b, a)
    return dataclasses.replace(fit, **out)


def _shape_tested(free: FermiFit, means, gfm, aif, init, *, shape_range: float, dt_s,
                  min_tau0_s: float | None = None, **gkw):
    """Group fits whose shape stays within ``shape_range`` of their start (``init``,
    the study's shape) unless their free fit (``free``) is clearly better
    (:data:`SHAPE_TEST_CHI2`) and, with ``min_tau0_s``, not near-exponential.
    """
    bound = fit_fermi(means, aif, dt_s=dt_s, frame_mask=gfm, init=init, fix_delay=True,
                      shape_range=shape_range, **gkw)
    n_t = (np.full(means.shape[0], means.shape[1]) if gfm is None
           else np.broadcast_to(gfm, means.shape).sum(axis=1))
    sse_free = free.rmse.astype(np.float64) ** 2 * n_t
    sse_bound = bound.rmse.astype(np.float64) ** 2 * n_t
    n_par = 3 + int(bool(gkw.get("spillover")))  # F, tau0, k (+ vb); the delay is kept
    noise = sse_free / np.maximum(n_t - n_par, 1)
    keep_free = sse_bound - sse_free >= SHAPE_TEST_CHI2 * np.maximum(noise, 1e-30)
    if min_tau0_s is not None:  # a near-exponential segment response is blood's, not its own
        keep_free &= np.asarray(free.tau0) >= min_tau0_s
    if (~keep_free).any():
        log.debug("segment shapes: %d of %d within %.3g of the study's", int((~keep_free).sum()),
                  keep_free.size, shape_range)
    return _replace_where(free, bound, ~keep_free)


def fit_fermi_grouped(
    curves, aif, *, groups, dt_s: float, delay_groups=None, frame_mask=None, core=None,
    shape_range: float = 2.0, delay_window_s: float = 0.3, fixed_delay_s: float | None = None,
    fast_pixels: bool = False, spillover=False, denoise: bool = False,
    group_blood: bool = False, delay_group_window_s: float | None = None,
    delay_fits: list | None = None, min_tau0_s: float | None = None,
    group_shape_range: float | None = None, delay_core=None, **kwargs,
) -> tuple[FermiFit, FermiFit, np.ndarray]:
    """Hierarchical fit: delays on coarse mean curves, then groups, then pixels.

    The delay trades off strongly against ``F`` (a 0.03 s shift moves MBF by
    several %), so a free per-pixel delay turns noise into MBF scatter and
    bias.  Here the delay is fitted on the mean curve of each delay group
    (e.g. a slice); each group (e.g. an AHA segment) is then fitted on its
    mean curve with that delay kept, and its pixels start from the group's
    parameters (``F`` scaled by a least-squares projection onto the group's
    model curve) and keep the same delay.

    Parameters
    ----------
    curves : ndarray, shape (N, T), mmol/l
    aif : ndarray, shape (T,), mmol/l
    groups : ndarray, shape (N,), int, keyword-only
        Group label of every curve (any integers).
    dt_s : float, keyword-only
    delay_groups : ndarray, shape (N,), int, keyword-only, optional
        Coarser labels that share one delay; groups must nest in them.
        Default: each group fits its own delay.
    frame_mask : ndarray, shape (T,) or (N, T), bool, keyword-only, optional
        As in :func:`fit_fermi`.
    core : ndarray, shape (N,), bool, keyword-only, optional
        Curves used for the means (e.g. away from partial-volume borders);
        default all.  A group without core curves uses all its curves.
    shape_range : float, keyword-only
        Pixel ``tau0`` and ``k`` stay within this factor of their group's.
    delay_window_s : float, keyword-only
        Pixel delays may move this far (s) from their group's (0 = fixed).
    fixed_delay_s : float, keyword-only, optional
        Use this delay everywhere instead of fitting it.
    fast_pixels : bool, keyword-only
        Fit the pixels with one quadrature point per step and correct their
        ``F`` by the group's ratio of accurate to 1-point ``F``: 30 % less
        CPU time; on six noise-free phantoms the median pixel error rose from
        5.3 to 5.7 % (groups and delays always use the accurate model).
    spillover : bool or ndarray, shape (N,), bool, keyword-only
        Pixels (all, or those marked) also fit a blood-pool fraction
        (``fit_fermi(spillover=...)``); groups and delays come from core
        curves and do without it.
    denoise : bool, keyword-only
        Fit the curves projected onto the temporal components that stand out
        of the noise (:func:`perfmoco.quant.denoise.pca_denoise`): the delay,
        group and pixel fits; the pixels' ``r2`` is still scored against the
        measured curves.  The components come from the frames every curve's fit
        uses (``frame_mask``): on 7 fresh studies with an RF spike's three
        QC-flagged dynamics the segment error fell 0.25 -> 0.18 ml/min/g (mean),
        on 4 with mistriggered beats 0.19 -> 0.17.
    group_blood : bool, keyword-only
        The group fits (after the delay fits; not with ``delay_groups=None``)
        also fit a blood volume ``vb * AIF`` (``fit_fermi(spillover=True)``):
        even core pixels hold some blood where a wall is thin or was left a
        pixel off by the motion correction, and the groups' shapes bound their
        pixels'.  The delay fits do without it (with it the delay trades off
        against ``vb``: on 10330-10337 after the DL correction the segment
        error rose 0.31 -> 0.53 ml/min/g).  Group ``F`` is then the tissue's own.
    delay_group_window_s : float, keyword-only, optional
        With ``delay_groups``: their delays come from one fit of the mean
        curve of all (core) curves, each delay group's within +- this (s) of
        it and its shape within ``shape_range`` of it; 0: that one delay for
        all.  Default: each delay group fits its own, unbounded.
    delay_fits : list, keyword-only, optional
        The fits that set the delays are appended to it as ``(labels, FermiFit)``:
        the delay groups' labels and their fits, or ``(None, fit)`` for the one
        fit of all curves (``delay_group_window_s=0``); nothing without
        ``delay_groups`` or with ``fixed_delay_s``.  Where ``min_tau0_s`` had the
        delay groups fitted on their own, their fits come first.
    min_tau0_s : float, keyword-only, optional
        With ``delay_group_window_s``: the delay groups are also fitted on their
        own; those ahead of the AIF (:func:`ahead_of_aif`) are left out of the
        fit of all curves, and where that fit has a Fermi ``tau0`` below this (a
        near-exponential response, as blood gives) or is ahead of the AIF itself,
        so are those near-exponential (unless all would be).  On 11912 b after the
        DL correction (its apical myocardial mask a third blood) the segment error
        fell 1.01 -> 0.89 ml/min/g; on fresh 12294 a and 12280 a (an apical ring
        holding the RV's blood) 0.81 -> 0.32 and 0.62 -> 0.35.
    delay_core : ndarray, shape (N,), bool, keyword-only, optional
        The curves whose means set the delays (within ``core``; default all of
        ``core``): :func:`perfmoco.quant.pixels.delay_core` keeps the septum's
        pixels near the RV's early blood out.
    group_shape_range : float, keyword-only, optional
        With ``delay_groups``: each group is also fitted with its shape (``tau0``,
        ``k``) within this factor of its delay group's (the study's, with
        ``delay_group_window_s=0``), and that fit is kept unless the group's free
        fit is clearly better (:data:`SHAPE_TEST_CHI2`) and, with ``min_tau0_s``,
        not itself near-exponential (below it: blood's response, which the group's
        pixels would inherit: 12998 a motion-free, an apical segment without core
        pixels, tau0 0.0 s, its pixels 4.1 against a true 2.9 ml/min/g); none of this
        where the delay group's shape is near-exponential.  Shape, delay and ``F``
        trade off along a flat valley, so a noisy or mixed mean curve (a thin apical
        wall, the liver or blood in its mask) moves a free shape far and ``F`` with
        it, while a segment whose curve truly differs keeps its own.
    **kwargs
        Further options of :func:`fit_fermi`.

    Returns
    -------
    pixel_fit : FermiFit
        Shape ``(N,)``.
    group_fit : FermiFit
        Shape ``(G,)``, one per label of ``group_ids``.
    group_ids : ndarray, shape (G,), int
        The sorted distinct group labels.
    """
    c = np.asarray(curves, np.float64)
    g = np.asarray(groups).ravel()
    if c.ndim != 2 or g.shape != (c.shape[0],):
        raise ValueError(f"curves (N, T) and groups (N,) do not match: {c.shape}, {g.shape}")
    dg = g if delay_groups is None else np.asarray(delay_groups).ravel()
    if dg.shape != g.shape:
        raise ValueError(f"delay_groups must have shape {g.shape}, got {dg.shape}")
    use = np.ones(g.size, bool) if core is None else np.asarray(core, bool).ravel()
    fm = None if frame_mask is None else np.asarray(frame_mask, bool)
    over = kwargs.get("oversample", 2)
    pc = c  # the curves fitted; c stays the measured ones (r2)
    if denoise:
        used = None if fm is None else (fm if fm.ndim == 1 else fm.all(axis=0))
        pc, rank = pca_denoise(c, used)
        n_used = c.shape[1] if used is None else int(used.sum())
        if rank < n_used:
            log.info("curves denoised: %d of %d temporal components kept", rank, n_used)
    ids, inv = np.unique(g, return_inverse=True)
    means, gfm = _group_means(pc, inv, ids.size, use, fm)
    # group fits with a known delay: the AIF as blood regressor, not the pixels' pools
    gkw = {k: v for k, v in kwargs.items() if k not in ("spill_curves", "spill_signal")}
    gkw["spillover"] = bool(group_blood)
    if fixed_delay_s is not None:
        start = fit_fermi(means, aif, dt_s=dt_s, frame_mask=gfm, **kwargs)
        sp = np.column_stack([start.flow, start.tau0, start.k,
                              np.full(ids.size, float(fixed_delay_s))]).astype(np.float64)
        gfit = fit_fermi(means, aif, dt_s=dt_s, frame_mask=gfm, init=sp, fix_delay=True,
                         **gkw)
    elif delay_groups is None:
        gfit = fit_fermi(means, aif, dt_s=dt_s, frame_mask=gfm, **kwargs)
    else:  # the delay of each delay group comes from its mean curve
        dp, d_inv = _delay_params(pc, aif, dg, use if delay_core is None else
                                  use & np.asarray(delay_core, bool).ravel(), fm, dt_s=dt_s,
                                  window_s=delay_group_window_s, delay_fits=delay_fits,
                                  min_tau0_s=min_tau0_s, shape_range=shape_range, **kwargs)
        first = np.array([np.flatnonzero(inv == j)[0] for j in range(ids.size)])
        init = _start_from(means, gfm, aif, dp, d_inv[first], dt_s=dt_s, oversample=over)
        gfit = fit_fermi(means, aif, dt_s=dt_s, frame_mask=gfm, init=init, fix_delay=True,
                         **gkw)
        if group_shape_range is not None and not (
                min_tau0_s is not None and float(dp[:, 1].min()) < min_tau0_s):
            gfit = _shape_tested(gfit, means, gfm, aif, init, shape_range=group_shape_range,
                                 min_tau0_s=min_tau0_s,
                                 dt_s=dt_s, **gkw)
    pfit = _pixel_fit(pc, c, aif, fm, gfit, means, gfm, inv, dt_s=dt_s, shape_range=shape_range,
                      delay_window_s=delay_window_s, spillover=spillover,
                      fast_pixels=fast_pixels, gkw=gkw, **kwargs)
    return pfit, gfit, ids


def _pixel_fit(pc, c, aif, fm, gfit, means, gfm, inv, *, dt_s, shape_range, delay_window_s,
               spillover, fast_pixels, gkw, **kwargs) -> FermiFit:
    """Every pixel from its group's fit, delay within ``delay_window_s``, shape within
    ``shape_range`` (:func:`fit_fermi_grouped`'s last step); ``c``: the measured curves.
    """
    over = kwargs.get("oversample", 2)
    gp = _params(gfit)
    init = _start_from(pc, fm, aif, gp, inv, dt_s=dt_s, oversample=over)
    pkw = {"max_iter": PIXEL_ITER, "polish_iter": 0, **kwargs}  # pixels start near the solution
    if pc is not c:
        pkw["measured"] = c
    if fast_pixels and over > 1:
        # pixels with the 1-point model (half the cost); its discretisation bias is
        # taken out per group: the ratio of the group's F with both models
        pkw["oversample"] = 1
        g1 = fit_fermi(means, aif, dt_s=dt_s, frame_mask=gfm, init=gp, fix_delay=True,
                       **{**gkw, "oversample": 1, "polish_iter": 0})
        ratio = np.where(g1.flow > 0, gfit.flow / np.maximum(g1.flow, 1e-12), 1.0)
    pfit = fit_fermi(pc, aif, dt_s=dt_s, frame_mask=fm, init=init, fix_delay=delay_window_s <= 0,
                     shape_range=shape_range, delay_window_s=max(delay_window_s, 0.0),
                     spillover=spillover, **pkw)
    if fast_pixels and over > 1:
        scale = np.clip(ratio, 0.5, 2.0)[inv].astype(np.float32)
        pfit = dataclasses.replace(pfit, mbf=pfit.mbf * scale, flow=pfit.flow * scale)
    return pfit
