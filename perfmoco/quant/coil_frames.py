"""The surface coil's profile measured from a high-resolution slice's slow frames.

Why: :func:`perfmoco.quant.signal.coil_motion_factors` moves each corrected pixel's
``M0`` with the coil profile through the breathing, and MBF is sensitive to that
profile: a factor 1 % off in the first pass's frames is 2-7 % of the enhancement
on the upslope.  The profile fitted to the PD frames' ``log PD`` (a quadratic
over 100 mm) is off by 20-50 % of its change at the heart (fitting the phantom's
true coil alike: the profile is not quadratic that far; the tissues' PD contrast
adds to it).  With the exact correction and the phantom's true coil factors,
fresh 13011, 13026-13028 a/b, noisy: segment error 0.238 -> 0.158 ml/min/g.

What the slice's own frames tell: where the tissue's contrast changes slowly
(before the bolus and after the myocardium's peak), ``log S_t(q)`` is a smooth
function of time per pixel plus the profile's log at ``q + d_t(q)``, where
``d_t`` is the correction's displacement.  The smooth part is projected out per
pixel (a constant over the pre-contrast frames, Legendre polynomials up to
:data:`TAIL_DEGREE` over the late ones); what remains is linear in the profile's
coefficients.  Residual misregistration modulates the same frames through the
image's edges (high contrast between blood and wall in the late frames), so each
frame's translation along the mean late image's log-gradient is a nuisance
fitted alongside: without it, the apical slices of fresh 13011 a/b read their
residual motion as coil (segment error 0.29 / 0.32 -> 0.53 / 0.73).

Measured (segment error, median over the study's segments, then over the studies;
ml/min/g), PD fit -> these frames: the exact correction, fresh 13011, 13026-13028 a/b
0.238 -> 0.168 (the true factors 0.158; split 124 -> 126 of 126).  After the DL
correction, quantified alone: those 8 studies 0.296 -> 0.239 (mean 0.273 -> 0.238,
none worse by more than 0.03); 12982-12990 a/b 0.165 -> 0.149 (mean 0.195 -> 0.184, 2
of 18 worse); held out of every choice here, fresh 13029-13034 a/b 0.248 -> 0.271 but
mean 0.317 -> 0.253 (13031 a 0.85 -> 0.17 and 13034 a 0.64 -> 0.36; 4 of 12 worse by
more than 0.03, 13033 b 0.19 -> 0.31, whose coil changes its signal by 0.5 % only, and
13029 a, whose apical slice's measurement is 2.6 % off).  All 38: 0.238 -> 0.221, mean
0.250 -> 0.217, worst 0.85 -> 0.40; 10 better and 6 worse by more than 0.03.  Near the
image's edge the pre-contrast frames of :func:`perfmoco.quant.coils.tissue_baseline`
stay: these frames there, 12998-12999 and 13011-13015 a/b cut to a corner, 0.174 ->
0.195 (the true factors worse too: the correction's fields are what is off there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from perfmoco.quant.coils import MIN_BASELINE_FRAMES, measured_rows, posterior, unflagged
from perfmoco.quant.resolution import half_up

__all__ = ["MIN_TAIL_FRAMES", "TAIL_DEGREE", "TAIL_LAG_FRAMES", "SlowFrames", "slow_frames"]

#: Degree of the Legendre polynomials the late frames' contrast is taken as, per pixel.
TAIL_DEGREE = 5
#: Late frames start this many frames after the myocardium's mean peak.
TAIL_LAG_FRAMES = 2
#: Late frames needed (fewer: the pre-contrast frames alone).
MIN_TAIL_FRAMES = 12
#: Groups of frames left out in turn for the measurement's spread (jackknife).
JACKKNIFE_GROUPS = 10


@dataclass(frozen=True)
class SlowFrames:
    """A slice's frames whose contrast changes slowly, for the coil's measurement.

    ``frames (n, Y, X)``, their pull-back ``displacement (n, 2, Y, X)`` (pixels),
    the ``region (Y, X)`` measured (the myocardium off its borders) and the
    ``basis (n, k)`` of each pixel's smooth contrast in time.
    """

    frames: np.ndarray
    displacement: np.ndarray
    region: np.ndarray
    basis: np.ndarray

    def coefficients(self, *, terms, prior):
        """Log-profile coefficients (as :func:`perfmoco.quant.coils.baseline_coefficients`).

        ``terms(y, x)`` -> ``(..., K)`` polynomial terms (constant first) of positions
        in pixels; ``prior (K,)``: the PD-frame fit's coefficients, combined with the
        measurement as a posterior (:data:`~perfmoco.quant.coils.PRIOR_SD`).  None
        where too few pixels or too little motion.
        """
        f = np.asarray(self.frames, np.float64)
        m = np.asarray(self.region, bool)
        rows = measured_rows(f, np.asarray(self.displacement, np.float64), m, terms)
        if rows is None:
            return None
        y, t, w, ok = rows
        g = _edge_regressors(f, self.basis, m)[:, ok] * w[:, None]
        # the noise's scale from the frames themselves (groups of frames left out)
        groups = np.arange(y.shape[0]) % min(y.shape[0], JACKKNIFE_GROUPS)
        try:
            ata, atb = _normal_equations(y, t, w, g, self.basis)
            jack = []
            for i in range(groups.max() + 1):
                keep = groups != i
                a_i, b_i = _normal_equations(y[keep], t[keep], w, g[keep], self.basis[keep])
                jack.append(np.linalg.solve(a_i + 1e-9 * np.trace(a_i) * np.eye(len(a_i)), b_i))
            return posterior(ata, atb, np.array(jack), prior)
        except np.linalg.LinAlgError:
            return None


def _edge_regressors(frames, basis, region):
    """Per frame and pixel, the log-gradient ``(y, x)`` of the mean of the frame's block
    (pre-contrast or late; their edges differ): a frame's residual translation moves
    its signal along it.  ``(n, N, 2)``.
    """
    late = basis[:, 0] == 0  # the pre-contrast block's column is the first
    out = np.zeros((frames.shape[0], int(region.sum()), 2))
    for block in (late, ~late):
        if block.any():
            mean = frames[block].mean(axis=0)
            log_mean = np.log(np.maximum(ndimage.gaussian_filter(mean, 1.0),
                                         1e-6 * max(float(mean.max()), 1e-300)))
            gy, gx = np.gradient(log_mean)
            out[block] = np.stack([gy[region], gx[region]], -1)
    return out


def _normal_equations(y, t, w, g, basis):
    """``A'A``, ``A'b`` of ``log S`` ``(n, N)`` on the terms ``(n, N, K)`` once each pixel's
    smooth contrast (``basis (n, k)``) and each frame's translation along its weighted
    edge regressors ``g (n, N, 2)`` are projected out; pixel rows scaled by ``w (N,)``.
    """
    proj = np.eye(len(basis)) - basis @ np.linalg.pinv(basis)
    yp = (proj @ y) * w
    tp = np.einsum("ij,jnk->ink", proj, t) * w[:, None]
    # the translations' columns, projected in time like the data: frame j's is
    # proj[:, j] times g_j; their normal equations need only frame j's own data
    # (proj is symmetric and idempotent)
    uu = proj[:, None, :, None] * np.einsum("inc,jnd->icjd", g, g)  # (n, 2, n, 2)
    uu = uu.reshape(2 * len(basis), -1)
    ut = np.einsum("jnc,jnk->jck", g, tp).reshape(2 * len(basis), -1)
    uy = np.einsum("jnc,jn->jc", g, yp).reshape(-1)
    a = tp.reshape(-1, tp.shape[-1])
    inv = np.linalg.pinv(uu)
    return a.T @ a - ut.T @ inv @ ut, a.T @ yp.reshape(-1) - ut.T @ inv @ uy


def slow_frames(images, displacement, *, myo, n_frames: int, times_s=None,
                scale: float = 1.0, qc=None) -> SlowFrames | None:
    """A high-resolution slice's :class:`SlowFrames` (``baseline`` of
    :func:`perfmoco.quant.signal.coil_motion_factors` away from the image's edge).

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
        The corrected dynamics.
    displacement : ndarray, shape (T, 2, Y, X)
        Their pull-back displacement, pixels.
    myo : ndarray, shape (Y, X), bool, keyword-only
        The slice's myocardium (eroded by one acquired pixel: its borders).
    n_frames : int, keyword-only
        Frames before the LV's bolus.
    times_s : ndarray, shape (T,), keyword-only, optional
        Acquisition times (default: the frames' indices).
    scale : float, keyword-only
        Display pixels per acquired pixel (zero-filled images: 2).
    qc : ndarray, shape (T,), bool, keyword-only, optional
        Frames flagged by motion QC: left out.

    Returns
    -------
    SlowFrames or None
        The unflagged pre-contrast frames (at least
        :data:`~perfmoco.quant.coils.MIN_BASELINE_FRAMES`) and those from
        :data:`TAIL_LAG_FRAMES` after the myocardium's mean peak (at least
        :data:`MIN_TAIL_FRAMES`); None where neither is enough.
    """
    im = np.asarray(images, np.float64)
    n_t = im.shape[0]
    myo = np.asarray(myo, bool)
    region = ndimage.binary_erosion(myo, iterations=max(1, half_up(scale)))
    if not myo.any() or not region.any():
        return None
    pre = unflagged(n_frames, qc, n_t)
    if pre.size < MIN_BASELINE_FRAMES:
        pre = pre[:0]
    peak = int(np.argmax(ndimage.uniform_filter1d(im[:, myo].mean(axis=1), 3)))
    late = np.arange(max(peak + TAIL_LAG_FRAMES, int(n_frames)), n_t)
    if qc is not None and np.shape(qc) == (n_t,):
        late = late[~np.asarray(qc, bool)[late]]
    if late.size < MIN_TAIL_FRAMES:
        late = late[:0]
    if pre.size + late.size == 0:
        return None
    times = np.arange(n_t, dtype=np.float64) if times_s is None else np.asarray(times_s, float)
    basis = np.zeros((pre.size + late.size, 1 + (TAIL_DEGREE + 1 if late.size else 0)))
    basis[: pre.size, 0] = 1.0
    if late.size:
        tt = times[late]
        x = 2.0 * (tt - tt.min()) / max(float(np.ptp(tt)), 1e-9) - 1.0
        basis[pre.size :, 1:] = np.polynomial.legendre.legvander(x, TAIL_DEGREE)
    keep = np.r_[pre, late]
    return SlowFrames(im[keep], np.asarray(displacement)[keep], region, basis)
