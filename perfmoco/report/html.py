"""The QA report of one study: an HTML page with its images beside it.

The page uses no script, no style sheet or font from elsewhere and only
relative links, so it opens from disk (or a copied folder) with no network.
Every section says plainly when what it would show is missing (no
correction, no quantification, no AIF slice) and why.
"""

from __future__ import annotations

import datetime
import html
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from perfmoco import __version__
from perfmoco.report import figures
from perfmoco.report.bullseye import bullseye_figure, segment_values, uncertain_segments
from perfmoco.report.data import SliceView, slice_views
from perfmoco.report.qcsheet import qc_strip

if TYPE_CHECKING:
    from perfmoco.pipeline import StudyResult

__all__ = ["write_report"]

log = logging.getLogger(__name__)

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:1.5em 2em;color:#222}
h1{font-size:1.5em}
h2{font-size:1.15em;border-bottom:1px solid #ccc;padding-bottom:2px;margin-top:1.6em}
table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.ok{color:#2e7d32}.warn{color:#c62828}.missing{color:#777;font-style:italic}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#444;max-width:44em}img{max-width:100%}
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _img(src: str, alt: str, caption: str = "", *, width: int | None = None) -> str:
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    size = f' width="{int(width)}"' if width else ""
    return f'<figure><img src="{_e(src)}" alt="{_e(alt)}"{size}>{cap}</figure>'


def _missing(text: str) -> str:
    return f'<p class="missing">{_e(text)}</p>'


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num(v: object, fmt: str = ".2f") -> str:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "" if v is None else str(v)
    return format(f, fmt) if np.isfinite(f) else "n/a"


class _Assets:
    """Writes the page's images into one folder and returns their relative links."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def png(self, fig, name: str) -> str:
        figures.save_png(fig, self.folder / name)
        return f"{self.folder.name}/{name}"

    def path(self, name: str) -> tuple[Path, str]:
        return self.folder / name, f"{self.folder.name}/{name}"


def _slug(view: SliceView) -> str:
    return f"{view.series.role.value}{view.series.slice_index}"


def _section_problems(result: StudyResult, views: list[SliceView]) -> str:
    missing = []
    if all(v.corrected is None for v in views):
        missing.append("No slice was motion-corrected: the animations and TICs show the "
                       "originals only.")
    elif any(v.corrected is None for v in views):
        names = ", ".join(v.name for v in views if v.corrected is None)
        missing.append(f"Not corrected: {names} (originals shown).")
    if result.quant is None:
        missing.append("No quantification result: no MBF maps, bullseye or AIF in mmol/l.")
    items = [f'<li class="warn">{_e(m)}</li>' for m in result.messages]
    items += [f'<li class="missing">{_e(m)}</li>' for m in missing]
    if not items:
        return '<p class="ok">No problems reported.</p>'
    return "<ul>" + "".join(items) + "</ul>"


def _section_runtime(result: StudyResult) -> str:
    if not result.timings_s:
        return _missing("No timings recorded.")
    rows = [[k, _num(v)] for k, v in result.timings_s.items()]
    rows.append(["total (processing; a batch's cohort table adds reading and writing)",
                 _num(sum(result.timings_s.values()))])
    return _table(["stage", "wall time (s)"], rows)


def _section_protocol(result) -> str:
    """Each slice's protocol as read from the data: what a physicist checks on a site's
    first study (docs/deployment.md).
    """
    rows = []
    for s in result.study.slices:
        ts = (f"{1000 * s.saturation_time_s:.3g}" if s.saturation_time_s else "not in the data")
        rows.append([s.name, s.n_dynamics, _num(s.interval_s) if s.n_dynamics > 1 else "",
                     s.pd_images.shape[0], ts, s.saturation_time_source,
                     " x ".join(_num(v) for v in s.pixel_spacing_mm),
                     " x ".join(str(v) for v in s.shape)])
    field = result.study.field_strength_t
    note = (f"<p>Field strength {_num(field, 'g')} T (MRD header).</p>" if field else "")
    return note + _table(["slice", "dynamics", "interval (s)", "PD frames", "TS (ms)",
                          "TS from", "pixel (mm)", "matrix"], rows)


def _section_animations(views: list[SliceView], assets: _Assets) -> str:
    parts = []
    for v in views:
        path, link = assets.path(f"anim_{_slug(v)}.gif")
        try:
            figures.animation_gif(v, path)
        except (OSError, ValueError) as exc:
            parts.append(_missing(f"{v.name}: animation failed ({exc})"))
            continue
        after = "original | corrected" if v.corrected is not None else "original (not corrected)"
        n_qc = "unknown" if v.qc is None else str(int(v.qc.sum()))
        cap = (f"{v.name}: {v.series.n_dynamics} dynamics, {after}; QC-flagged: {n_qc} "
               "(red border)")
        with Image.open(path) as gif:  # shown at least 480 px wide, never below its size
            width = max(gif.width, min(480, 2 * gif.width))
        parts.append(_img(link, f"{v.name} animation", cap, width=width))
    return "".join(parts)


def _section_qc(views: list[SliceView], assets: _Assets) -> str:
    rows = []
    for v in views:
        if v.qc is None:
            rows.append([v.name, "unknown (slice not corrected or flags not stored)", ""])
        else:
            idx = (np.flatnonzero(v.qc) + 1).tolist()
            rows.append([v.name, str(len(idx)), ", ".join(map(str, idx)) or "none"])
    out = _table(["slice", "QC-flagged dynamics", "which (1-based)"], rows)
    path, link = assets.path("qc_frames.png")
    if qc_strip(views, path) is not None:
        out += _img(link, "QC-flagged frames",
                    "QC-flagged dynamics, cut to the heart: originals (above) and corrected "
                    "(below), the series' median frame first; red: the myocardium outline, "
                    "yellow: the LV centre. A wall off the outline is a misaligned frame.")
    return out


def _section_mbf(result: StudyResult, views: list[SliceView], assets: _Assets) -> str:
    quant = result.quant
    if quant is None:
        return _missing("MBF maps and bullseye not available: the quantification did not run "
                        "or failed (see Problems).")
    out = []
    fig = figures.maps_figure(views)
    if fig is None:
        out.append(_missing("The quantification result holds no MBF map."))
    else:
        counts = ", ".join(f"{v.name} {int(v.flagged.sum())}" for v in views
                           if v.mbf is not None and v.flagged is not None)
        out.append(_img(assets.png(fig, "mbf_maps.png"), "MBF maps",
                        "Pixel-wise MBF (ml/min/g) in the myocardium over the peak frame; grey: "
                        "pixels flagged unreliable by the quantification (not in the segments)"
                        + (f": {counts}." if counts else ".")))
    rows = list(getattr(quant, "segments", None) or [])
    if callable(getattr(quant, "ischemic_burden", None)):
        burden, n_px = quant.ischemic_burden()
        if n_px:
            out.append(f"<p>Ischaemic burden: <b>{100 * burden:.0f} %</b> of {n_px} fitted "
                       f"myocardial pixels below {_e(f'{quant.ischemia_mbf:g}')} ml/min/g "
                       "(the table's last column: each segment's share).</p>")
    eff = getattr(quant, "saturation_efficiency", None) or {}
    if eff:
        out.append("<p>Effective saturation efficiency, the pre-contrast signal against the "
                   "PD frames' M0: " + ", ".join(f"{_e(k)} {v:.3f}" for k, v in sorted(eff.items()))
                   + " (set <code>quant.saturation_efficiency_*</code> to these for this "
                   "protocol's studies without PD frames).</p>")
    values = segment_values(rows)
    if values:
        bull = bullseye_figure(values, title="median MBF per AHA segment (ml/min/g)",
                               uncertain=uncertain_segments(rows),
                               vmax=max(figures.mbf_vmax(views),  # the maps' scale
                                        *[v for v in values.values() if math.isfinite(v)]))
        out.append(_img(assets.png(bull, "bullseye.png"), "AHA bullseye",
                        "AHA 16-segment bullseye of median MBF, on the maps' colour scale; "
                        "grey = no data; grey, hatched, value marked ?: unreliable (the "
                        "median's standard error or the share of failed pixel fits too "
                        "large)."))
        out.append(_table(
            ["slice", "segment", "AHA name", "territory", "mean", "median", "SD",
             "SE of median", "pixels", "reliable", "share below ischaemia MBF (%)",
             "dark rim (fall, %)"],
            [[r.get("slice", ""), r.get("segment", ""), r.get("name", ""), r.get("territory", ""),
              _num(r.get("mean")), _num(r.get("median")), _num(r.get("sd")),
              _num(r.get("se")), "" if r.get("n") is None else r["n"],
              "" if "reliable" not in r else ("yes" if r["reliable"] else
                                              "NO" + (f": {r['reason']}" if r.get("reason")
                                                      else "")),
              "" if "below" not in r else _num(100 * float(r["below"]), ".0f"),
              _num(100 * float(r["dark_rim"]), ".0f") if r.get("dark_rim") else ""]
             for r in rows],
        ))
    else:
        out.append(_missing("No segment values: no bullseye."))
    return "".join(out)


#: What the page's terms mean, for a reader who is not a physicist.
_TERMS = _table(["term", "meaning"], [
    ["MBF", "myocardial blood flow at stress, ml of blood per minute per g of tissue; "
            "stress MBF below about 2 ml/min/g is taken as ischaemic here"],
    ["ischaemic burden", "share of the fitted myocardium whose MBF (each pixel with its "
                         "3 x 3 neighbours' median) lies below that threshold"],
    ["TS", "saturation time: from the saturation pulse to the readout's centre; the signal "
           "model converts signal to contrast agent with it (read from the images' meta or "
           "the MRD header's TI, else a default, said under Problems)"],
    ["interval", "time between dynamics (one per heartbeat, or per two): check it against "
                 "the heart rate; every MBF value scales with it"],
    ["SE of median", "standard error of a segment's median MBF, from the spread of its "
                     "pixels: the median is uncertain by about twice this either way"],
    ["unreliable", "a segment whose value should not be read: too uncertain (SE), too many "
                   "failed pixel fits, too few pixels, or its slice's curve looked like blood"],
    ["QC-flagged", "a dynamic the motion check found unlike its neighbours (a mistrigger, "
                   "a lost frame): left out of the MBF fits"],
    ["PD frames, M0", "the proton-density images acquired before the dynamics: they give "
                      "each pixel's fully relaxed signal (M0), which corrects the surface "
                      "coils' shading and converts signal to contrast concentration"],
    ["AIF", "arterial input function: the contrast concentration in the LV blood over "
            "time, from the low-resolution AIF slice; every MBF is fitted against it"],
    ["flagged pixels", "pixels whose fit failed or gave an implausible MBF: grey on the "
                       "maps, 0 on the quality map series, left out of the segments"],
])


#: The correction methods as the page names them.
_METHODS = {"dl": "deep learning (dl)", "iterative": "iterative, elastix (iterative)",
            "none": "none"}


def write_report(
    result: StudyResult,
    out_dir: str | Path,
    *,
    title: str | None = None,
    html_name: str = "report.html",
) -> Path:
    """Write the QA report of one study and return the page's path.

    Parameters
    ----------
    result : StudyResult
        Any result, including one whose correction or quantification failed
        (the page says what is missing).
    out_dir : str or Path
        Folder for the page (created); its images go to
        ``out_dir/<html_name stem>_files/``.
    title : str, keyword-only, optional
        Page title (default: the study id).
    html_name : str, keyword-only
        File name of the page.

    Returns
    -------
    Path
        The HTML page: before/after animations of every slice, myocardium
        TICs before/after, the AIF with its fit, MBF maps with a colour bar,
        the AHA bullseye, QC-flagged frames, runtime and problems.
    """
    out_dir = Path(out_dir)
    page = out_dir / html_name
    assets = _Assets(out_dir / f"{page.stem}_files")
    title = title or result.study.study_id
    views = slice_views(result)
    tic = figures.tic_figure(views)
    aif_fig, aif_caption = figures.aif_figure(result.quant, views)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [
        ("Problems", _section_problems(result, views)),
        ("Protocol", _section_protocol(result)),
        ("Before / after motion correction", _section_animations(views, assets)),
        ("Time-intensity curves", _img(
            assets.png(tic, "tics.png"), "TICs",
            "Mean signal in the myocardium (AIF slice: LV blood pool) per dynamic, before and "
            "after correction; a smooth curve means a well-aligned series.")),
        ("Arterial input function", _img(assets.png(aif_fig, "aif.png"), "AIF", aif_caption)),
        ("MBF", _section_mbf(result, views, assets)),
        ("QC-flagged frames", _section_qc(views, assets)),
        ("Runtime", _section_runtime(result)),
        ("Terms", _TERMS),
    ]
    body = "".join(f"<h2>{_e(name)}</h2>{content}" for name, content in sections)
    n_hr = len(result.study.highres)
    state = ("<span class=ok>no problems</span>" if result.ok
             else "<span class=warn>problems reported</span>")
    doc = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_e(title)} - perfmoco QA</title><style>{_CSS}</style></head><body>"
        f"<h1>perfmoco QA report: {_e(title)}</h1>"
        f"<p>Study <b>{_e(result.study.study_id)}</b>: {n_hr} high-resolution slices"
        f"{' + AIF slice' if result.study.aif is not None else ', no AIF slice'}; motion "
        f"correction <b>{_e(_METHODS.get(result.method.value, result.method.value))}</b>"
        f"{f' (weights {_e(result.weights)})' if result.weights else ''}; "
        f"{state}. perfmoco {_e(__version__)}, {_e(stamp)}.</p>{body}</body></html>"
    )
    tmp = page.with_name(page.name + ".part")
    tmp.write_text(doc, encoding="utf-8")
    os.replace(tmp, page)
    log.info("wrote %s", page)
    return page
