"""The AHA 16-segment bullseye of segmental MBF.

Layout (Cerqueira et al. 2002, as displayed): basal segments 1-6 on the outer
ring, mid 7-12 in the middle ring, apical 13-16 inside; segment 1 (anterior)
at the top, the septum (2, 3 / 8, 9 / 14) on the left, going
counter-clockwise on screen, which is the order
:mod:`perfmoco.quant.segments` and the phantom number them in.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Wedge

__all__ = ["bullseye_figure", "draw_bullseye", "segment_angles", "segment_values",
           "uncertain_segments"]

#: Ring radii (inner, outer) of the apical, mid and basal rings.
_RINGS = {"apical": (0.25, 0.55), "mid": (0.55, 0.8), "basal": (0.8, 1.05)}


def segment_angles(segment: int) -> tuple[str, float, float]:
    """Ring and display angles of an AHA segment.

    Parameters
    ----------
    segment : int
        1..16.

    Returns
    -------
    ring : str
        ``'basal'``, ``'mid'`` or ``'apical'``.
    start_deg, end_deg : float
        Counter-clockwise display angles from the +x axis (3 o'clock).
    """
    if not 1 <= segment <= 16:
        raise ValueError(f"segment must be 1..16, got {segment}")
    if segment <= 12:
        ring = "basal" if segment <= 6 else "mid"
        i = (segment - 1) % 6
        centre = 90.0 + 60.0 * i  # 1 / 7 anterior at the top, then into the septum
        return ring, centre - 30.0, centre + 30.0
    centre = 90.0 + 90.0 * (segment - 13)  # 13 anterior, 14 septal, 15 inferior, 16 lateral
    return "apical", centre - 45.0, centre + 45.0


def segment_values(rows: Iterable[Mapping], *, key: str = "median") -> dict[int, float]:
    """One value per AHA segment from segment table rows.

    Parameters
    ----------
    rows : iterable of mapping
        Rows with ``segment`` (1..16), ``key``, optionally ``n`` (pixels) and
        ``reliable``; a segment met in several rows (several slices) gets their
        pixel-weighted mean, over its reliable rows where it has any.
    key : str, keyword-only
        The value to show, e.g. ``'median'`` or ``'mean'`` MBF.

    Returns
    -------
    dict of int to float
        Finite values only.
    """
    rows = list(rows)
    trusted = _trusted(rows)
    sums: dict[int, list[float]] = {}
    for r in rows:
        seg = _segment(r)
        try:
            v = float(r[key])
        except (KeyError, TypeError, ValueError):
            continue
        if seg in trusted and not r.get("reliable", True):
            continue
        n = r.get("n")
        w = float(n) if isinstance(n, (int, float)) and math.isfinite(n) and n > 0 else 1.0
        if seg is not None and 1 <= seg <= 16 and math.isfinite(v):
            acc = sums.setdefault(seg, [0.0, 0.0])
            acc[0] += w * v
            acc[1] += w
    return {s: a / w for s, (a, w) in sums.items() if w > 0}


def uncertain_segments(rows: Iterable[Mapping]) -> set[int]:
    """Segments whose every row is marked ``reliable=False`` (shown hatched)."""
    rows = list(rows)
    trusted = _trusted(rows)
    return {s for s in (_segment(r) for r in rows) if s is not None and s not in trusted}


def _trusted(rows: list[Mapping]) -> set[int | None]:
    """Segments with at least one row not marked ``reliable=False``."""
    return {_segment(r) for r in rows if r.get("reliable", True)}


def _segment(row: Mapping) -> int | None:
    try:
        return int(row["segment"])
    except (KeyError, TypeError, ValueError):
        return None


def draw_bullseye(
    ax: Axes,
    values: Mapping[int, float],
    *,
    cmap: str | Colormap = "jet",
    vmin: float = 0.0,
    vmax: float = 4.0,
    unit: str = "ml/min/g",
    colorbar: bool = True,
    text_colour: str = "black",
    uncertain: Collection[int] = (),
) -> None:
    """Draw the 16-segment bullseye on ``ax``; segments without a value are grey.

    Parameters
    ----------
    ax : matplotlib Axes
        Ordinary (not polar) axes; their limits and aspect are set here.
    values : mapping of int to float
        Value per segment 1..16 (e.g. MBF in ml/min/g); missing = no data.
    cmap, vmin, vmax : keyword-only
        Colour scale.
    unit : str, keyword-only
        Colour bar label.
    colorbar : bool, keyword-only
    text_colour : str, keyword-only
        Label colour on light segments (labels on dark ones are white).
    uncertain : collection of int, keyword-only
        Segments whose value is unreliable: grey (not coloured by it), hatched, the value
        marked "?".
    """
    import matplotlib

    cm = matplotlib.colormaps[cmap] if isinstance(cmap, str) else cmap
    norm = Normalize(vmin=vmin, vmax=vmax)
    for seg in range(1, 17):
        ring, a0, a1 = segment_angles(seg)
        r0, r1 = _RINGS[ring]
        v = values.get(seg)
        # no value, or one not to be trusted: grey, not a colour that reads as flow
        face = (cm(norm(v)) if v is not None and math.isfinite(v) and seg not in uncertain
                else (0.82, 0.82, 0.82, 1.0))
        ax.add_patch(Wedge((0, 0), r1, a0, a1, width=r1 - r0, facecolor=face,
                           edgecolor="white", linewidth=1.5,
                           hatch="///" if seg in uncertain else None))
        mid = math.radians(0.5 * (a0 + a1))
        rm = 0.5 * (r0 + r1)
        label = f"{seg}\n{v:.2f}" if v is not None and math.isfinite(v) else f"{seg}\nn/a"
        label += "?" if seg in uncertain and v is not None and math.isfinite(v) else ""
        r, g, b = face[:3]
        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.45
        ax.text(rm * math.cos(mid), rm * math.sin(mid), label, ha="center", va="center",
                fontsize=7, color="white" if dark else text_colour)
    ax.add_patch(Wedge((0, 0), _RINGS["apical"][0], 0, 360, facecolor="white",
                       edgecolor="#999", linewidth=0.8))
    ax.text(0, 0, "apex\n(17)", ha="center", va="center", fontsize=6, color="#777")
    ax.text(0, 1.12, "anterior", ha="center", va="bottom", fontsize=7)
    ax.text(-1.12, 0, "septal", ha="right", va="center", fontsize=7, rotation=90)
    ax.text(0, -1.12, "inferior", ha="center", va="top", fontsize=7)
    ax.text(1.12, 0, "lateral", ha="left", va="center", fontsize=7, rotation=-90)
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.3, 1.3)
    ax.set_aspect("equal")
    ax.axis("off")
    if colorbar:
        from matplotlib.cm import ScalarMappable

        sm = ScalarMappable(norm=norm, cmap=cm)
        ax.figure.colorbar(sm, ax=ax, fraction=0.046, pad=0.04, label=unit)


def bullseye_figure(values: Mapping[int, float], *, title: str = "", size_in: float = 4.0,
                    vmax: float | None = None, uncertain: Collection[int] = ()) -> Figure:
    """A figure holding only the bullseye (with colour bar), for PNGs and MRD images.

    ``vmax`` defaults to ``max(4, largest value)`` ml/min/g; ``uncertain``
    segments are hatched (:func:`draw_bullseye`).
    """
    finite = [v for v in values.values() if math.isfinite(v)]
    top = vmax if vmax is not None else max(4.0, float(np.ceil(max(finite, default=0.0))))
    fig = Figure(figsize=(size_in * 1.2, size_in), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    draw_bullseye(ax, values, vmax=top, uncertain=uncertain)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
