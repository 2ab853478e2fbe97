"""The report's bullseye and MBF maps as MRD secondary-capture images.

Each picture is rendered at a fixed size (all images of an MRD series need one
matrix size) and sent as a float32 grey image of its luminance (0..255), in
its own series ``MrdConfig.report_series_index``, tagged
``GADGETRON_DataRole = SecondaryCapture``.  Scanners show it as any other
image; the colours become grey levels, the numbers stay readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import ismrmrd
import numpy as np
from matplotlib.figure import Figure

from perfmoco.config import Config, MrdConfig
from perfmoco.io.mrd import make_image
from perfmoco.report.bullseye import draw_bullseye, segment_values, uncertain_segments
from perfmoco.report.data import slice_views
from perfmoco.report.figures import draw_map, mbf_vmax

if TYPE_CHECKING:
    from perfmoco.pipeline import StudyResult

__all__ = ["CAPTURE_PX", "render_luminance", "report_images"]

#: Matrix size of every secondary-capture image (square).
CAPTURE_PX = 512


def render_luminance(fig: Figure) -> np.ndarray:
    """Render ``fig`` with Agg and return its luminance.

    Returns
    -------
    ndarray, shape (H, W), float32
        ``0.299 R + 0.587 G + 0.114 B`` in 0..255, row 0 at the top.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba(), dtype=np.float32)
    return rgba[..., 0] * 0.299 + rgba[..., 1] * 0.587 + rgba[..., 2] * 0.114


def _square_figure() -> Figure:
    return Figure(figsize=(CAPTURE_PX / 100, CAPTURE_PX / 100), dpi=100, layout="constrained")


def _pictures(result: StudyResult) -> list[tuple[str, Figure]]:
    quant = result.quant
    if quant is None:
        return []
    out = []
    rows = getattr(quant, "segments", None) or []
    values = segment_values(rows)
    views = slice_views(result)
    finite = [v for v in values.values() if np.isfinite(v)]
    vmax = max(mbf_vmax(views), float(np.ceil(max(finite, default=0.0))))  # one scale for all
    if values:
        fig = _square_figure()
        ax = fig.add_subplot()
        draw_bullseye(ax, values, vmax=vmax, uncertain=uncertain_segments(rows))
        ax.set_title(f"{result.study.study_id}: median MBF per AHA segment (ml/min/g; "
                     f"hatched, grey: unreliable)", fontsize=8)
        out.append(("BULLSEYE", fig))
    for v in views:
        if v.mbf is None or v.mbf.shape != v.series.shape:
            continue
        fig = _square_figure()
        ax = fig.add_subplot()
        im = draw_map(ax, v, vmax=vmax)
        ax.set_title(f"{v.name}: MBF (ml/min/g)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="ml/min/g")
        out.append((f"MAP_SLICE{v.series.slice_index}", fig))
    return out


def report_images(
    result: StudyResult, *, config: Config | MrdConfig | None = None
) -> list[ismrmrd.Image]:
    """The bullseye and one MBF map per slice as secondary-capture MRD images.

    Parameters
    ----------
    result : StudyResult
    config : Config or MrdConfig, keyword-only
        ``report_series_index`` gives the series (default 120).

    Returns
    -------
    list of ismrmrd.Image
        ``CAPTURE_PX`` square float32 images (empty when there is no
        quantification result to show).
    """
    mrd = config.mrd if isinstance(config, Config) else (config or MrdConfig())
    hr = result.study.highres
    geometry = hr[0].geometry if hr else None
    out = []
    for n, (what, fig) in enumerate(_pictures(result)):
        pixels = render_luminance(fig)
        meta = {
            "GADGETRON_DataRole": ["SecondaryCapture"],
            "GADGETRON_ImageComment": ["PERFMOCO_QA", what],
            "GADGETRON_SeqDescription": f"_QA_{what}",
            "GADGETRON_WindowCenter": "128",
            "GADGETRON_WindowWidth": "256",
            "GADGETRON_ImageProcessingHistory": ["PERFMOCO", "QA_REPORT"],
        }
        fields = {
            "image_series_index": mrd.report_series_index,
            "image_index": n + 1,
            "field_of_view": (float(pixels.shape[1]), float(pixels.shape[0]), 1.0),
        }
        if geometry is not None:
            fields.update(position=geometry.position, read_dir=geometry.read_dir,
                          phase_dir=geometry.phase_dir, slice_dir=geometry.slice_dir)
        out.append(make_image(pixels, meta=meta, **fields))
    return out
