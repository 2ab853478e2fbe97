"""Respiratory and cardiac motion: breathing traces, displacement fields, warping.

Displacements follow DESIGN.md: ``(T, 2, Y, X)`` float32 in pixels of the
grid they apply to, component 0 = y, 1 = x, pull-back:
``moved[t](p) = motion_free[t](p + d[t](p))`` with linear interpolation.

The physical motion (mm) is defined once per study and evaluated on every
slice's grid, so the low-resolution AIF slice moves exactly as the basal
slice does.  Per frame it is, in the heart's neighbourhood, a rigid
translation along the in-plane projection of the head-foot axis (plus a
smaller perpendicular, lagging component) and a rotation about the LV centre,
plus a smooth non-rigid field proportional to the breathing depth.  A
smooth per-tissue *mobility* map (heart 1, liver 1.05, lungs 0.7, chest wall
and fat 0.2, spine 0.05) scales it, so the chest wall slides less than the
heart and liver.  Cardiac-phase changes (trigger jitter, mistriggers) add a
radial contraction about the LV centre, and the heart sliding through the
slice along its long axis shows as a radial scaling that grows toward the apex.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from perfmoco.phantom.params import LABELS

__all__ = [
    "MotionModel",
    "bilinear",
    "breathing_trace",
    "draw_motion",
    "invert_displacement",
    "slice_displacement",
    "warp",
]

#: Mobility of each tissue relative to the heart (breathing).
MOBILITY: dict[int, float] = {
    LABELS["air"]: 0.2,
    LABELS["fat"]: 0.2,
    LABELS["chest_wall"]: 0.2,
    LABELS["lung"]: 0.7,
    LABELS["liver"]: 1.05,
    LABELS["spine"]: 0.05,
    LABELS["spinal_canal"]: 0.05,
    LABELS["aorta"]: 0.35,
    LABELS["soft_tissue"]: 0.9,
    LABELS["lung_vessel"]: 0.7,
}
_BLEND_SIGMA_MM = 14.0


@dataclasses.dataclass(frozen=True)
class MotionModel:
    """Study-wide motion parameters.

    Attributes
    ----------
    t_s : ndarray, shape (N,)
        Fine time grid, s from the first beat.
    trace_mm : ndarray, shape (N,)
        In-plane breathing excursion of the heart along ``direction``, mm.
    lag_mm : ndarray, shape (N,)
        Perpendicular (lagging) component, mm.
    direction : ndarray, shape (2,)
        Unit in-plane direction ``(y, x)`` of inspiration (feet-ward).
    rot_deg_per_mm : float
        Rotation about the LV centre per mm of breathing, degrees.
    nonrigid : ndarray, shape (K, 5)
        Radial basis ``(cy, cx, width, vy, vx)`` of the non-rigid field, mm, relative
        to the LV centre; displacement per 10 mm of breathing.
    beat_scale : ndarray, shape (B,)
        Radial cardiac contraction per beat (0 = reference phase).
    mistriggered : ndarray, shape (B,), bool
        Beats acquired at a wrong cardiac phase.
    """

    t_s: np.ndarray
    trace_mm: np.ndarray
    lag_mm: np.ndarray
    direction: np.ndarray
    rot_deg_per_mm: float
    nonrigid: np.ndarray
    beat_scale: np.ndarray
    mistriggered: np.ndarray

    @property
    def still(self) -> bool:
        """True when the model produces no motion at all."""
        return not (np.any(self.trace_mm) or np.any(self.lag_mm) or np.any(self.beat_scale))


def breathing_trace(rng, t_s, *, depth_mm: float, gasp_at_s: float | None = None):
    """Irregular free-breathing trace (mm, 0 = end expiration) on ``t_s``.

    Periods vary 3-6 s and depths vary breath to breath (log-normal around
    ``depth_mm``) with a slow drift of the end-expiratory level.  With
    ``gasp_at_s`` the patient holds the breath (slow drift only) until then,
    takes one deep gasp (1.8-2.6 x depth, at least 14-24 mm, at most 28 mm) and
    then breathes faster and deeper for a few breaths.
    """
    t = np.asarray(t_s, np.float64)
    out = np.zeros_like(t)
    cur = t[0] - rng.uniform(0.0, 6.0)
    boost = []  # depth factors of the breaths after a gasp
    if gasp_at_s is not None:
        hold = t < gasp_at_s
        out[hold] = rng.uniform(0.2, 0.5) * depth_mm + np.linspace(0, rng.uniform(-1.5, 1.5),
                                                                     int(hold.sum()))
        gasp_mm = min(max(rng.uniform(1.8, 2.6) * depth_mm, rng.uniform(14.0, 24.0)), 28.0)
        boost = [gasp_mm / depth_mm] + list(rng.uniform(1.1, 1.5, int(rng.integers(1, 4))))
        cur = gasp_at_s
    first = True
    while cur < t[-1]:
        factor = boost.pop(0) if boost else 1.0
        period = rng.uniform(3.0, 6.0) * (0.8 if factor > 1 else 1.0)
        depth = min(depth_mm * factor * (1.0 if first and gasp_at_s is not None
                                         else rng.lognormal(0.0, 0.3)), 28.0)
        base = rng.normal(0.0, 0.08 * depth_mm)
        m = (t >= cur) & (t < cur + period)
        ph = (t[m] - cur) / period
        # inspiration shorter than expiration; rest at end expiration
        wave = np.where(ph < 0.4, np.sin(np.pi * ph / 0.8) ** 2,
                        np.cos(np.pi * (ph - 0.4) / 1.2) ** 2)
        wave = np.where(ph > 0.85, 0.0, wave)
        if first and gasp_at_s is not None:  # the gasp starts from the held position
            out[m] = out[m] * (1 - wave) + depth * wave
        else:
            out[m] = base + depth * wave
        cur += period
        first = False
    drift = ndimage.gaussian_filter1d(np.cumsum(rng.normal(0, 0.05, t.size)), 40)
    return ndimage.gaussian_filter1d(out, 3) + drift


def draw_motion(rng, kind: str, t_s, *, n_beats: int, n_pd: int, direction,
                lv_peak_s: float, first_dyn_s: float) -> MotionModel:
    """Draw the study's motion for one of :data:`MOTION_KINDS`.

    Parameters
    ----------
    rng : numpy.random.Generator
        Seeded generator.
    kind : str
        ``"none"``, ``"breathing"``, ``"breathing+gasp"`` or ``"mistrigger"``.
    t_s : ndarray, shape (N,)
        Fine time grid, s.
    n_beats, n_pd : int
        Total beats and PD beats (mistriggers hit dynamics only).
    direction : ndarray, shape (2,)
        Unit in-plane inspiration direction ``(y, x)``.
    lv_peak_s, first_dyn_s : float
        LV peak time and first dynamic's time, s (gasp placement).
    """
    depth = float(np.clip(rng.lognormal(np.log(10.0), 0.55), 3.0, 22.0))
    gasp = None
    if kind == "breathing+gasp":
        gasp = float(np.clip(lv_peak_s + rng.uniform(-5.0, 1.0), first_dyn_s + 2.0, None))
    trace = breathing_trace(rng, t_s, depth_mm=depth, gasp_at_s=gasp)
    lag_steps = int(rng.uniform(0.3, 0.8) / (t_s[1] - t_s[0]))
    lag = rng.uniform(0.1, 0.3) * rng.choice([-1.0, 1.0]) * np.roll(trace, lag_steps)
    k = 6
    nonrigid = np.column_stack([
        rng.uniform(-60, 60, k), rng.uniform(-60, 60, k), rng.uniform(25, 45, k),
        rng.normal(0, 1.0, k), rng.normal(0, 1.0, k),
    ])
    beat_scale = rng.normal(0.0, 0.012, n_beats)
    mis = np.zeros(n_beats, bool)
    if kind == "mistrigger":
        n_mis = int(rng.integers(2, 6))
        idx = rng.choice(np.arange(n_pd, n_beats), n_mis, replace=False)
        mis[idx] = True
        beat_scale[idx] = rng.uniform(0.18, 0.32, n_mis)
    if kind == "none":
        trace, lag, beat_scale = np.zeros_like(trace), np.zeros_like(trace), beat_scale * 0.0
    return MotionModel(
        t_s=np.asarray(t_s), trace_mm=trace, lag_mm=lag, direction=np.asarray(direction, float),
        rot_deg_per_mm=float(rng.uniform(-0.25, 0.25)), nonrigid=nonrigid,
        beat_scale=beat_scale, mistriggered=mis,
    )


def _interp(field, yy, xx):
    """Bilinear sample of a 2D field at fractional pixel coordinates (edge clamped)."""
    return ndimage.map_coordinates(field, [yy, xx], order=1, mode="nearest")


def slice_displacement(model: MotionModel, labels, spacing_mm, lv_centre_mm, *, times_s,
                       beats, through_plane: float = 0.0):
    """Pull-back displacement of one slice at given acquisition times.

    Parameters
    ----------
    model : MotionModel
        Study motion.
    labels : ndarray, shape (Y, X)
        Motion-free tissue labels (mobility map).
    spacing_mm : tuple of 2 float
        Pixel size ``(dy, dx)``, mm.
    lv_centre_mm : tuple of 2 float
        LV centre ``(y, x)`` in mm from the image centre (rotation centre).
    times_s : ndarray, shape (T,)
        Acquisition times, s (same origin as ``model.t_s``).
    beats : ndarray, shape (T,), int
        Heartbeat index of each frame (cardiac phase).
    through_plane : float, keyword-only
        Radial growth of the heart's cross-section per mm of breathing (1/mm):
        the heart moving along its long axis through a fixed plane, shown as
        an in-plane radial scaling (strongest at the apex, where the LV tapers).

    Returns
    -------
    ndarray, shape (T, 2, Y, X), float32
        Displacement in pixels, ``[:, 0]`` = y, ``[:, 1]`` = x.
    """
    ny, nx = labels.shape
    n_t = len(times_s)
    sp = np.asarray(spacing_mm, np.float64)
    if model.still:
        return np.zeros((n_t, 2, ny, nx), np.float32)
    lut = np.array([MOBILITY.get(i, 1.0) for i in range(256)])
    mob = ndimage.gaussian_filter(lut[labels], _BLEND_SIGMA_MM / sp, mode="nearest")
    iy, ix = np.mgrid[0:ny, 0:nx].astype(np.float64)
    y = (iy - (ny - 1) / 2.0) * sp[0] - lv_centre_mm[0]  # mm relative to the LV centre
    x = (ix - (nx - 1) / 2.0) * sp[1] - lv_centre_mm[1]
    r_t = np.interp(times_s, model.t_s, model.trace_mm)
    l_t = np.interp(times_s, model.t_s, model.lag_mm)
    uy, ux = model.direction
    # non-rigid basis field, mm per 10 mm of breathing
    nr_y = np.zeros_like(y)
    nr_x = np.zeros_like(x)
    for cy, cx, w, vy, vx in model.nonrigid:
        g = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * w**2))
        nr_y += vy * g
        nr_x += vx * g
    out = np.empty((n_t, 2, ny, nx), np.float32)
    r_card = 40.0
    for t in range(n_t):
        ty = r_t[t] * uy - l_t[t] * ux  # object translation, mm
        tx = r_t[t] * ux + l_t[t] * uy
        th = np.deg2rad(model.rot_deg_per_mm * r_t[t])
        c, s = np.cos(th), np.sin(th)
        # rigid pull-back: q = R(-th) (p - T)  (about the LV centre)
        qy, qx = y - ty, x - tx
        dy = (c * qy - s * qx) - y - nr_y * r_t[t] / 10.0
        dx = (s * qy + c * qx) - x - nr_x * r_t[t] / 10.0
        # mobility evaluated where the tissue came from (fixed point, 2 steps)
        m = mob
        for _ in range(2):
            m = _interp(mob, iy + m * dy / sp[0], ix + m * dx / sp[1])
        by, bx = m * dy, m * dx
        # cardiac phase: radial contraction about the (moved) LV centre
        sc = model.beat_scale[beats[t]] - through_plane * r_t[t]
        py, px = y + by, x + bx
        g = sc * np.exp(-(py**2 + px**2) / r_card**2)
        out[t, 0] = (by + g * py) / sp[0]
        out[t, 1] = (bx + g * px) / sp[1]
    return out


def bilinear(fields, yy, xx):
    """Bilinear samples of per-frame fields at fractional pixel positions.

    Identical to ``scipy.ndimage.map_coordinates(order=1, mode="nearest")``
    frame by frame (positions are clamped to the grid), but all frames and
    channels at once.

    Parameters
    ----------
    fields : ndarray, shape (T, C, Y, X)
        Fields to sample.
    yy, xx : ndarray, shape (T, H, W)
        Positions in pixels of ``fields``' grid.

    Returns
    -------
    ndarray, shape (T, C, H, W), float32
    """
    n_t, n_c, ny, nx = fields.shape
    # Frames and channels stacked into one tall 2D image (rows t, c, y): 2D linear
    # interpolation is half the work of 3D; rows are clamped inside their own frame.
    tall = np.ascontiguousarray(fields, np.float32).reshape(n_t * n_c * ny, nx)
    y = np.clip(np.asarray(yy, np.float64), 0.0, ny - 1.0)
    x = np.asarray(xx, np.float64)
    out = np.empty((n_t, n_c, *np.shape(yy)[1:]), np.float32)
    for c in range(n_c):
        off = ((np.arange(n_t) * n_c + c) * ny).astype(np.float64)[:, None, None]
        out[:, c] = ndimage.map_coordinates(tall, [y + off, x], order=1, mode="nearest")
    return out


def _upsample_matrix(n: int, grid: np.ndarray) -> np.ndarray:
    """Linear-interpolation matrix from samples at ``grid`` to ``0..n-1``, shape (n, len(grid))."""
    pos = np.interp(np.arange(n), grid, np.arange(len(grid)))
    i0 = np.minimum(np.floor(pos).astype(int), len(grid) - 2)
    f = pos - i0
    m = np.zeros((n, len(grid)), np.float32)
    m[np.arange(n), i0] = 1 - f
    m[np.arange(n), i0 + 1] += f
    return m


def invert_displacement(disp, *, iterations: int = 8, step: int = 2):
    """Inverse of a pull-back field by fixed-point iteration on a coarse grid.

    Parameters
    ----------
    disp : ndarray, shape (T, 2, Y, X)
        Pull-back displacement, pixels.
    iterations : int
        Fixed-point iterations ``inv(p) = -d(p + inv(p))``.
    step : int
        Sub-sampling of the grid the iteration runs on (the field is smooth);
        the result is linearly interpolated back to full resolution.

    Returns
    -------
    ndarray, shape (T, 2, Y, X), float32
        ``inv`` with ``motion_free[t](p) ~ moved[t](p + inv[t](p))``.
    """
    n_t, _, ny, nx = disp.shape
    if not np.any(disp):
        return np.zeros(disp.shape, np.float32)
    gy = np.arange(0, ny, step)
    gx = np.arange(0, nx, step)
    if gy[-1] != ny - 1:
        gy = np.append(gy, ny - 1)
    if gx[-1] != nx - 1:
        gx = np.append(gx, nx - 1)
    yy, xx = np.meshgrid(gy.astype(np.float32), gx.astype(np.float32), indexing="ij")
    d = np.asarray(disp, np.float32)
    inv = -d[:, :, gy][:, :, :, gx]
    for _ in range(iterations):
        inv = -bilinear(d, yy[None] + inv[:, 0], xx[None] + inv[:, 1])
    # back to full resolution: separable linear interpolation
    my, mx = _upsample_matrix(ny, gy), _upsample_matrix(nx, gx)
    return np.einsum("yi,tcij,xj->tcyx", my, inv, mx, optimize=True).astype(np.float32)


def warp(images, disp, *, order: int = 1):
    """Pull-back warp: ``out[t](p) = images[t](p + disp[t](p))``.

    Parameters
    ----------
    images : ndarray, shape (T, Y, X)
        Frames to warp.
    disp : ndarray, shape (T, 2, Y, X)
        Displacement, pixels (``[:, 0]`` = y).
    order : int
        Interpolation order (1 = linear, 0 = nearest).

    Returns
    -------
    ndarray, shape (T, Y, X), float32
        Outside the image the nearest edge value is used.
    """
    n_t, ny, nx = images.shape
    if order == 1:
        iy, ix = np.mgrid[0:ny, 0:nx].astype(np.float32)
        return bilinear(np.asarray(images, np.float32)[:, None], iy[None] + disp[:, 0],
                        ix[None] + disp[:, 1])[:, 0]
    iy, ix = np.mgrid[0:ny, 0:nx].astype(np.float32)
    tt = np.broadcast_to(np.arange(n_t, dtype=np.float32)[:, None, None], (n_t, ny, nx))
    coords = [tt, iy[None] + disp[:, 0], ix[None] + disp[:, 1]]
    return ndimage.map_coordinates(np.asarray(images, np.float32), coords, order=order,
                                   mode="nearest").astype(np.float32)
