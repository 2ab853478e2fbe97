"""The report's pictures: animations, TICs, the AIF, MBF maps, QC-flagged frames.

Figures are built on matplotlib's object API (``Figure`` + Agg canvas), never
pyplot, so nothing depends on a display or on global state; animations are
written with Pillow (a matplotlib dependency) as looping GIFs.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from perfmoco.report.data import SliceView

__all__ = [
    "aif_figure",
    "animation_gif",
    "draw_map",
    "fit_gamma_variate",
    "heart_box",
    "maps_figure",
    "mbf_vmax",
    "save_png",
    "tic_figure",
]

log = logging.getLogger(__name__)

#: Upper end of the MBF colour scale, ml/min/g (raised when a map goes higher).
MBF_VMAX = 4.0
_N_GREY = 253  #: palette indices 0..252 are grey levels
_RED, _WHITE, _LIGHT = 253, 254, 255
_PALETTE = [v for i in range(_N_GREY) for v in (i * 255 // (_N_GREY - 1),) * 3] + [
    220, 30, 30, 255, 255, 255, 200, 200, 200]


def save_png(fig: Figure, path: Path, *, dpi: int = 100) -> Path:
    """Render ``fig`` with the Agg canvas to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi, format="png", pil_kwargs={"compress_level": 3})
    return path


def _window(images: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(images, [1.0, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _to_uint8(frame: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return (np.clip((frame - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def animation_gif(view: SliceView, path: Path, *, panel_px: int = 200, fps: float = 6.0) -> Path:
    """Looping GIF of a slice: original (left) and corrected (right) side by side.

    Both halves share one intensity window (from the original dynamics), so
    a change in brightness is a change in the data.  QC-flagged dynamics get a
    red border; every frame carries its dynamic number and time.

    Parameters
    ----------
    view : SliceView
    path : Path
        Output ``.gif``.
    panel_px : int, keyword-only
        Approximate height of each half in pixels (integer upscaling).
    fps : float, keyword-only
        Frames per second.
    """
    s = view.series
    lo, hi = _window(s.images)
    stacks = [("original", s.images)]
    if view.corrected is not None:
        stacks.append(("corrected", view.corrected))
    scale = max(1, round(panel_px / max(s.shape)))
    h, w = s.shape[0] * scale, s.shape[1] * scale
    gap, top = 4, 14
    times = s.times_s - s.times_s[0]
    frames = []
    for t in range(s.n_dynamics):
        # one fixed palette (grey levels + red + white + light grey): no per-frame quantising
        canvas = Image.new("P", (len(stacks) * (w + gap) + gap, h + top + 2 * gap), 0)
        canvas.putpalette(_PALETTE)
        flagged = view.qc is not None and t < view.qc.size and bool(view.qc[t])
        draw = ImageDraw.Draw(canvas)
        for i, (label, stack) in enumerate(stacks):
            grey = (_to_uint8(stack[t], lo, hi).astype(np.uint16) * _N_GREY // 256).astype(np.uint8)
            panel = Image.fromarray(grey, mode="L").resize((w, h), Image.Resampling.NEAREST)
            x0 = gap + i * (w + gap)
            canvas.paste(panel, (x0, top + gap))
            draw.text((x0 + 2, 1), label, fill=_WHITE)
            if flagged:
                draw.rectangle([x0 - 2, top + gap - 2, x0 + w + 1, top + gap + h + 1],
                               outline=_RED, width=2)
        note = f"{t + 1}/{s.n_dynamics}  {times[t]:.1f} s" + ("  QC" if flagged else "")
        draw.text((canvas.width - 6 * len(note) - 4, 1), note, fill=_RED if flagged else _LIGHT)
        frames.append(canvas)
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0,
                   duration=int(1000 / fps), optimize=False)
    return path


def _rel_times(view: SliceView) -> np.ndarray:
    return view.series.times_s - view.series.times_s[0]


def tic_figure(views: list[SliceView]) -> Figure:
    """Mean myocardial signal per dynamic before / after correction, one panel per slice."""
    n = len(views)
    cols = min(n, 2)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(5.2 * cols, 3.0 * rows))
    height = 3.0 * rows  # margins in inches, as fractions of the figure
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.5 / height, top=1 - 0.3 / height,
                        wspace=0.25, hspace=0.55)
    for i, v in enumerate(views):
        ax = fig.add_subplot(rows, cols, i + 1)
        t = _rel_times(v)
        ax.plot(t, v.tic_before, "-o", ms=2.5, lw=1, color="#888", label="original")
        if v.tic_after is not None:
            ax.plot(t, v.tic_after, "-o", ms=2.5, lw=1.3, color="#1565c0", label="corrected")
        if v.qc is not None and v.qc.any():
            q = np.flatnonzero(v.qc[: t.size])
            ref = v.tic_after if v.tic_after is not None else v.tic_before
            ax.plot(t[q], ref[q], "x", color="red", ms=7, mew=2, label="QC-flagged")
        aif = v.series.role.value == "aif"
        ax.set_title(f"{v.name}: " + (v.myo_source if aif else f"myocardium ({v.myo_source})"),
                     fontsize=8)
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("mean signal (a.u.)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7, loc="best")
    return fig


def _gamma(t, a, t0, alpha, beta):
    x = np.clip(t - t0, 0.0, None)
    return a * x**alpha * np.exp(-x / beta)


def fit_gamma_variate(times_s, curve) -> np.ndarray | None:
    """Gamma-variate fit of the first pass of a bolus curve (a visual guide).

    Parameters
    ----------
    times_s : ndarray, shape (T,), float, s
    curve : ndarray, shape (T,), float
        Baseline-subtracted concentration (or signal).

    Returns
    -------
    ndarray, shape (T,), float64, or None
        The fitted curve on ``times_s``; ``None`` when the fit fails.
    """
    from scipy.optimize import curve_fit

    t = np.asarray(times_s, np.float64)
    c = np.asarray(curve, np.float64)
    if t.size < 6 or not np.isfinite(c).all() or c.max() <= 0:
        return None
    p = int(np.argmax(c))
    end = p + 1
    while end < c.size and c[end] > 0.4 * c[p] and c[end] <= c[end - 1] * 1.05:
        end += 1  # first pass: up to 40 % of the peak on the way down
    above = np.flatnonzero(c[: p + 1] < 0.1 * c[p])
    t0 = t[above[-1]] if above.size else t[0]
    try:
        with warnings.catch_warnings():  # OptimizeWarning on a poor fit: it is only a guide
            warnings.simplefilter("ignore")
            p0 = (c[p], t0, 2.0, max(t[p] - t0, 1.0) / 2)
            bounds = ([0, t[0] - 5, 0.1, 0.1], [np.inf, t[p], 20, 60])
            popt, _ = curve_fit(_gamma, t[:end], c[:end], p0=p0, bounds=bounds, maxfev=4000)
    except (RuntimeError, ValueError):
        return None
    return _gamma(t, *popt)


def aif_figure(quant: Any, views: list[SliceView]) -> tuple[Figure, str]:
    """The AIF curve with its fit, and a one-line caption.

    With a quantification result: its AIF in mmol/l (``aif_gd``,
    ``aif_times_s``) and its fit (``aif_fit`` when it provides one, else a
    gamma-variate fit of the first pass drawn here as a guide).  Without: the
    blood-pool signal of the AIF slice before / after correction.
    """
    fig = Figure(figsize=(6.0, 3.2))
    fig.subplots_adjust(left=0.11, right=0.98, bottom=0.15, top=0.95)
    ax = fig.add_subplot()
    gd = getattr(quant, "aif_gd", None)
    ts = getattr(quant, "aif_times_s", None)
    if gd is not None and ts is not None and np.size(gd) == np.size(ts) and np.size(gd) > 2:
        t = np.asarray(ts, np.float64) - float(np.asarray(ts)[0])
        gd = np.asarray(gd, np.float64)
        ax.plot(t, gd, "o", ms=3, color="#c62828", label="AIF [Gd]")
        fit = getattr(quant, "aif_fit", None)
        label = "fit"
        if fit is None or np.size(fit) != gd.size:
            fit, label = fit_gamma_variate(t, gd), "gamma-variate fit (first pass)"
        if fit is not None:
            ax.plot(t, np.asarray(fit, np.float64), "-", color="#333", lw=1.2, label=label)
        ax.set_ylabel("[Gd] (mmol/l)", fontsize=8)
        caption = (f"AIF from the quantification; peak {np.nanmax(gd):.2f} mmol/l"
                   + ("; the line is a gamma-variate fit of the first pass, a guide to the "
                      "eye (the MBF fits use the measured points)." if label != "fit" else "."))
    else:
        aif = [v for v in views if v.series.role.value == "aif"]
        if not aif:
            ax.text(0.5, 0.5, "no AIF slice in this study", ha="center", va="center")
            ax.axis("off")
            return fig, "No AIF slice: no AIF curve."
        v = aif[0]
        t = _rel_times(v)
        base = float(np.median(v.tic_before[: max(2, v.tic_before.size // 10)]))
        curve = v.tic_after if v.tic_after is not None else v.tic_before
        ax.plot(t, v.tic_before - base, "o", ms=3, color="#888", label="original")
        if v.tic_after is not None:
            ax.plot(t, v.tic_after - base, "o", ms=3, color="#c62828", label="corrected")
        fit = fit_gamma_variate(t, curve - base)
        if fit is not None:
            ax.plot(t, fit, "-", color="#333", lw=1.2, label="gamma-variate fit (first pass)")
        ax.set_ylabel("blood-pool enhancement (a.u.)", fontsize=8)
        caption = ("AIF slice blood-pool signal (no [Gd] curve: the quantification did not "
                   "run or failed); the line is a gamma-variate fit of the first pass, a guide "
                   "to the eye.")
    ax.set_xlabel("time (s)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
    return fig, caption


def heart_box(mask: np.ndarray, *, margin: float = 0.8, min_px: int = 24) -> tuple[slice, slice]:
    """A square crop around ``mask`` (``margin`` x its extent added on each side).

    Returns the whole image when the mask is empty.
    """
    if not mask.any():
        return slice(None), slice(None)
    yy, xx = np.nonzero(mask)
    cy, cx = (yy.min() + yy.max()) / 2.0, (xx.min() + xx.max()) / 2.0
    half = max(int(np.ptp(yy)), int(np.ptp(xx)), min_px) * (0.5 + margin)
    y0, x0 = max(0, int(cy - half)), max(0, int(cx - half))
    return slice(y0, int(cy + half) + 1), slice(x0, int(cx + half) + 1)


def draw_map(ax, view: SliceView, *, vmax: float):
    """MBF of one slice over its peak frame, cropped to the heart; flagged pixels grey.

    Returns the colour-mapped image (for a colour bar).
    """
    from matplotlib.colors import ListedColormap

    base = view.corrected if view.corrected is not None else view.series.images
    peak = base[int(np.argmax(base.reshape(base.shape[0], -1).mean(axis=1)))]
    myo = (view.aha > 0) if view.aha is not None else (view.mbf > 0)
    crop = heart_box(myo)
    lo, hi = _window(peak[crop])
    ax.imshow(peak[crop], cmap="gray", vmin=lo, vmax=hi)
    good = view.mbf_mask() & np.isfinite(view.mbf)
    im = ax.imshow(np.ma.masked_where(~good[crop], view.mbf[crop]), cmap="jet", vmin=0.0,
                   vmax=vmax)
    bad = (myo & ~good)[crop]
    if bad.any():
        ax.imshow(np.ma.masked_where(~bad, bad), cmap=ListedColormap(["#c8c8c8"]))
    ax.axis("off")
    return im


def mbf_vmax(views: list[SliceView]) -> float:
    """The top of a study's MBF colour scale (ml/min/g), shared by its maps and bullseye:
    :data:`MBF_VMAX`, or the fitted pixels' 99th percentile where that is higher.
    """
    parts = [v.mbf[v.mbf_mask() & np.isfinite(v.mbf)] for v in views
             if v.mbf is not None and v.mbf.shape == v.series.shape]
    finite = np.concatenate(parts) if parts else np.zeros(0)
    return max(MBF_VMAX, float(np.ceil(np.percentile(finite, 99)))) if finite.size else MBF_VMAX


def maps_figure(views: list[SliceView]) -> Figure | None:
    """MBF maps of the high-resolution slices, with a colour bar (flagged pixels grey)."""
    with_map = [v for v in views if v.mbf is not None and v.mbf.shape == v.series.shape]
    if not with_map:
        return None
    vmax = mbf_vmax(with_map)
    fig = Figure(figsize=(3.0 * len(with_map) + 0.8, 3.2), layout="constrained")
    axes = fig.subplots(1, len(with_map), squeeze=False)[0]
    im = None
    for ax, v in zip(axes, with_map):
        im = draw_map(ax, v, vmax=vmax)
        ax.set_title(v.name, fontsize=8)
    fig.colorbar(im, ax=list(axes), label="MBF (ml/min/g)", shrink=0.9)
    return fig
