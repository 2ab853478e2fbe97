"""The QA report's contact sheet of QC-flagged dynamics, drawn to be read at a glance.

Per slice with flagged dynamics: a row of the originals above a row of the corrected
frames, each tile cut to the heart (:data:`CROP_MM` square around the LV) and enlarged,
the fitted (or outlined) myocardium drawn on every tile in red and the LV centre marked:
where a frame's wall leaves the outline, the frame is misaligned; the first column is
the series' median frame, what an aligned frame looks like.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from perfmoco.report.data import SliceView

__all__ = ["CROP_MM", "qc_strip"]

#: Side of the square cut around the LV for each tile, mm.
CROP_MM = 110.0


def _crop_box(view: SliceView) -> tuple[int, int, int]:
    """(top, left, side) of the square around the LV, pixels (may leave the image)."""
    spacing = float(min(view.series.pixel_spacing_mm))
    side = int(round(CROP_MM / spacing))
    side = min(side, *view.series.shape) if side > min(view.series.shape) else side
    cy, cx = view.lv_centre
    return int(round(cy - side / 2)), int(round(cx - side / 2)), side


def _cut(frame: np.ndarray, box: tuple[int, int, int]) -> np.ndarray:
    """``frame`` cut to ``box``, zero where the box leaves it."""
    top, left, side = box
    out = np.zeros((side, side), np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + side, frame.shape[0]), min(left + side, frame.shape[1])
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = frame[y0:y1, x0:x1]
    return out


def _tile(frame, box, lo, hi, outline, panel_px) -> Image.Image:
    crop = _cut(frame, box)
    grey = (np.clip((crop - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    tile = Image.fromarray(grey, mode="L").resize((panel_px, panel_px),
                                                  Image.Resampling.BICUBIC).convert("RGB")
    draw = ImageDraw.Draw(tile)
    scale = panel_px / box[2]
    for y, x in outline:
        draw.point(((x + 0.5) * scale, (y + 0.5) * scale), fill=(255, 40, 40))
    c = panel_px / 2
    draw.line((c - 5, c, c + 5, c), fill=(255, 220, 0))
    draw.line((c, c - 5, c, c + 5), fill=(255, 220, 0))
    return tile


def qc_strip(views: list[SliceView], path: Path, *, per_slice: int = 6,
             panel_px: int = 160) -> Path | None:
    """PNG of the QC-flagged dynamics (see the module docstring); ``None`` (nothing
    written) when no frame is flagged.
    """
    flagged = [(v, np.flatnonzero(v.qc)[:per_slice]) for v in views
               if v.qc is not None and v.qc.any()]
    if not flagged:
        return None
    cols = 1 + max(len(idx) for _, idx in flagged)
    gap, label = 6, 14
    cell_w, cell_h = panel_px + gap, panel_px + label + gap
    sheet = Image.new("RGB", (cols * cell_w + gap, 2 * len(flagged) * cell_h + gap), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (v, idx) in enumerate(flagged):
        box = _crop_box(v)
        lo, hi = np.percentile(_cut(np.median(v.series.images, axis=0), box), [1.0, 99.5])
        hi = hi if hi > lo else lo + 1.0
        myo = _cut(v.myocardium.astype(np.float32), box) > 0.5
        outline = np.argwhere(myo & ~ndimage.binary_erosion(myo))
        name = v.name.split(" (")[0]
        for k, (stack, kind) in enumerate(((v.series.images, "original"),
                                           (v.corrected, "corrected"))):
            if stack is None:
                continue
            y0 = (2 * r + k) * cell_h + gap
            tiles = [(np.median(stack, axis=0), f"{name} median, {kind}")]
            tiles += [(stack[t], f"{name} dyn {t + 1}, {kind}") for t in idx]
            for c, (frame, text) in enumerate(tiles):
                x0 = c * cell_w + gap
                sheet.paste(_tile(frame, box, lo, hi, outline, panel_px), (x0, y0 + label))
                draw.text((x0, y0), text, fill=(0, 0, 0))
    sheet.save(path, format="PNG")
    return path
