"""Signal model: proton density, coil shading, saturation recovery, noise.

Dynamics follow ``S = M0 (1 - eta exp(-TS R1))`` with
``R1 = 1/T1 + r [Gd]`` (:func:`perfmoco.quant.model.gd_to_r1`), written as
``(1 - eta) M0 + saturation_recovery(R1, TS, eta M0)``
(:func:`perfmoco.quant.model.saturation_recovery`).  ``eta`` <= 1 is an
effective saturation efficiency: it lumps imperfect saturation and the
recovery during the readout before the k-space centre, which is what makes
real magnitude images less contrasted than ideal saturation recovery at
TS = 100 ms (paper-notes: LV blood peak / myocardium before contrast about 3.9).
An ideal-saturation inversion (:func:`perfmoco.quant.model.signal_to_r1`)
recovers ``R1 + ln(1/eta)/TS``: a constant offset that cancels exactly when the
pre-contrast baseline R1 is subtracted.  ``eta = 1`` gives ideal saturation.

PD frames are ``M0`` itself (no saturation).  ``M0`` is the tissue proton
density with a smooth texture, times a smooth surface-coil sensitivity that is
fixed in space (so it does not move with the anatomy), times the vendor's
intensity scale.  Magnitude images get Rician noise.
"""

from __future__ import annotations

import numpy as np

from perfmoco.phantom.anatomy import grid_mm, smooth_field
from perfmoco.phantom.params import TISSUES
from perfmoco.quant.model import gd_to_r1, saturation_recovery

__all__ = ["add_rician_noise", "coil_sensitivity", "draw_coils", "proton_density", "sr_signal"]


def draw_coils(rng: np.random.Generator, torso) -> np.ndarray:
    """Surface-coil elements ``(y, x, width)`` in mm around the torso.

    Anterior and posterior arrays, each a few elements; positions jitter
    per slice in :func:`coil_sensitivity`.
    """
    tcx, tcy, ta, tb = torso[:4]
    n_front, n_back = int(rng.integers(2, 4)), int(rng.integers(2, 4))
    xs_f = tcx + np.linspace(-0.5, 0.5, n_front) * ta + rng.normal(0, 10, n_front)
    xs_b = tcx + np.linspace(-0.5, 0.5, n_back) * ta + rng.normal(0, 10, n_back)
    ys_f = tcy - tb - rng.uniform(5, 25, n_front)
    ys_b = tcy + tb + rng.uniform(5, 25, n_back)
    widths = rng.uniform(50, 90, n_front + n_back)
    return np.column_stack([np.r_[ys_f, ys_b], np.r_[xs_f, xs_b], widths])


def coil_sensitivity(coils, y_mm, x_mm):
    """Root-sum-of-squares sensitivity of the coil elements at points (mm).

    Parameters
    ----------
    coils : ndarray, shape (C, 3)
        ``(y, x, width)`` of each element, mm.
    y_mm, x_mm : ndarray, any shape
        Positions, mm from the image centre.

    Returns
    -------
    ndarray, same shape as ``y_mm``
        Sensitivity (arbitrary scale).
    """
    acc = np.zeros(np.broadcast(y_mm, x_mm).shape)
    for cy, cx, w in coils:
        d2 = (y_mm - cy) ** 2 + (x_mm - cx) ** 2
        acc += 1.0 / (1.0 + d2 / w**2) ** 2
    return np.sqrt(acc)


def proton_density(rng: np.random.Generator, labels, spacing_mm) -> np.ndarray:
    """Relative M0 map (no coil shading) with smooth tissue texture.

    Returns
    -------
    ndarray, shape (Y, X), float64
        Proton density relative to myocardium; each tissue is modulated by a
        smooth random field (a few % SD, coarser in large organs).
    """
    pd_lut = np.array([TISSUES[i].pd if i in TISSUES else 0.0 for i in range(256)])
    pd = pd_lut[labels]
    sig = 3.0 / float(np.mean(spacing_mm))
    coarse = smooth_field(rng, labels.shape, 4.0 * sig)
    fine = smooth_field(rng, labels.shape, 0.8 * sig)
    return pd * (1.0 + 0.05 * coarse + 0.04 * fine)


def t1_map(rng: np.random.Generator, labels) -> np.ndarray:
    """Native T1 map (s) with 2 % smooth variation."""
    lut = np.array([TISSUES[i].t1_s if i in TISSUES else 1.0 for i in range(256)])
    return lut[labels] * (1.0 + 0.02 * smooth_field(rng, labels.shape, 5.0))


def sr_signal(gd, *, t1_s, m0, ts_s: float, efficiency: float, relaxivity: float):
    """Saturation-recovery magnitude signal.

    Parameters
    ----------
    gd : ndarray, shape (T, Y, X)
        [Gd], mmol/l.
    t1_s : ndarray, shape (Y, X)
        Native T1, s.
    m0 : ndarray, shape (T, Y, X) or (Y, X)
        Equilibrium magnetisation (PD image).
    ts_s : float
        Saturation time, s.
    efficiency : float
        Effective saturation efficiency ``eta`` in (0, 1].
    relaxivity : float
        l/(mmol s).

    Returns
    -------
    ndarray, shape (T, Y, X), float64
        ``(1 - eta) M0 + saturation_recovery(R1, TS, eta M0)``.
    """
    r1 = gd_to_r1(gd, t1_s=t1_s, relaxivity=relaxivity)
    return (1.0 - efficiency) * m0 + saturation_recovery(r1, ts_s=ts_s, m0=efficiency * m0)


def add_rician_noise(rng: np.random.Generator, images, sigma: float) -> np.ndarray:
    """Magnitude of the image plus complex Gaussian noise of SD ``sigma`` per channel."""
    sd = np.float32(sigma)
    re = images + sd * rng.standard_normal(images.shape, dtype=np.float32)
    im = sd * rng.standard_normal(images.shape, dtype=np.float32)
    return np.hypot(re, im).astype(np.float32)


def shading_at(coils, shape, spacing_mm, inv_disp=None):
    """Coil sensitivity seen by the motion-free frame.

    The coils stay put while the anatomy moves: the motion-free frame ``q``
    was observed at ``q + inv(q)``.

    Parameters
    ----------
    coils : ndarray, shape (C, 3)
        Coil elements.
    shape : tuple of 2 int
        Matrix ``(Y, X)``.
    spacing_mm : tuple of 2 float
        Pixel size ``(dy, dx)``, mm.
    inv_disp : ndarray, shape (T, 2, Y, X), optional
        Inverse displacement, pixels; ``None`` = no motion.

    Returns
    -------
    ndarray, shape (T, Y, X) or (Y, X)
        Sensitivity.
    """
    y, x = grid_mm(shape, spacing_mm)
    sens = coil_sensitivity(coils, y, x)
    if inv_disp is None:
        return sens
    from perfmoco.phantom.motion import bilinear  # the sensitivity is smooth: sample it

    iy, ix = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    n_t = inv_disp.shape[0]
    return bilinear(np.broadcast_to(sens.astype(np.float32), (n_t, 1, *shape)),
                    iy[None] + inv_disp[:, 0], ix[None] + inv_disp[:, 1])[:, 0]
