"""Cohort outputs of a batch run: ``cohort.csv``, ``cohort_segments.csv``, ``index.html``.

Built from the per-study summaries that :func:`perfmoco.batch.process_file`
writes (``summary.json``); NaN and missing values become empty cells.
"""

from __future__ import annotations

import csv
import html
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SEGMENT_COLUMNS",
    "STUDY_COLUMNS",
    "json_safe",
    "write_cohort_index",
    "write_cohort_tables",
]

STUDY_COLUMNS = [
    "study", "status", "error", "resumed", "method", "weights", "runtime_s", "n_slices",
    "n_dynamics",
    "corrected_slices", "qc_flagged_frames", "qc_flagged_by_slice", "mbf_mean", "mbf_median",
    "mbf_sd", "mbf_n", "ischemic_burden", "tic_smoothness_before", "tic_smoothness_after",
    "saturation_efficiency_highres", "saturation_efficiency_aif", "interval_s",
    "saturation_time_ms_highres", "saturation_time_ms_aif", "pd_frames", "field_strength_t",
    "messages", "input", "result",
]
SEGMENT_COLUMNS = ["study", "slice", "segment", "name", "territory", "mean", "median", "sd", "n",
                   "se", "reliable", "reason", "fit", "fit_vb", "below", "dark_rim"]


def json_safe(value: Any) -> Any:
    """NaN -> None (JSON has no NaN); numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _fmt(value: Any) -> Any:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return round(value, 4) if isinstance(value, float) else value


def _mean(values: list) -> float:
    v = [x for x in values if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(v) / len(v) if v else float("nan")


def _protocol(slices: list[dict[str, Any]]) -> dict[str, Any]:
    """The protocol as the study's slices read it: the high-resolution dynamics' median
    interval (s), each sequence's saturation time (ms; the first slice's) and the fewest
    PD frames of any slice.
    """
    high = [x for x in slices if x.get("role") != "aif"]
    aif = [x for x in slices if x.get("role") == "aif"]
    intervals = [x.get("interval_s") for x in high]
    ok = sorted(v for v in intervals if isinstance(v, (int, float)) and math.isfinite(v))
    return {
        "interval_s": ok[len(ok) // 2] if ok else None,
        "saturation_time_ms_highres": high[0].get("saturation_time_ms") if high else None,
        "saturation_time_ms_aif": aif[0].get("saturation_time_ms") if aif else None,
        "pd_frames": min((x.get("n_pd", 0) for x in slices), default=None),
    }


def _study_row(s: dict[str, Any]) -> dict[str, Any]:
    slices = s.get("slices") or []
    mbf = s.get("mbf") or {}
    eff = s.get("saturation_efficiency") or {}
    row = {
        "study": s["study"], "status": s["status"], "error": s.get("error", ""),
        "resumed": bool(s.get("resumed")), "method": s.get("method", ""),
        "weights": s.get("weights", ""),
        "runtime_s": s.get("runtime_s"), "n_slices": len(slices),
        "n_dynamics": max((x["n_dynamics"] for x in slices), default=""),
        "corrected_slices": sum(bool(x["corrected"]) for x in slices),
        "qc_flagged_frames": sum(len(x["qc_flagged"]) for x in slices),
        "qc_flagged_by_slice": ";".join(f"{x['slice']}:{len(x['qc_flagged'])}" for x in slices),
        "mbf_mean": mbf.get("mbf_mean"), "mbf_median": mbf.get("mbf_median"),
        "mbf_sd": mbf.get("mbf_sd"), "mbf_n": mbf.get("mbf_n", 0),
        "ischemic_burden": s.get("ischemic_burden"),
        "tic_smoothness_before": _mean([x.get("tic_smoothness_before") for x in slices]),
        "tic_smoothness_after": _mean([x.get("tic_smoothness_after") for x in slices]),
        "saturation_efficiency_highres": eff.get("highres"),
        "saturation_efficiency_aif": eff.get("aif"),
        **_protocol(slices), "field_strength_t": s.get("field_strength_t"),
        "messages": " | ".join(s.get("messages") or []), "input": s.get("input", ""),
        "result": s.get("result", ""),
    }
    return {k: _fmt(v) for k, v in row.items()}


def write_cohort_tables(
    summaries: Sequence[dict[str, Any]], out_dir: str | Path
) -> tuple[Path, Path]:
    """Write ``cohort.csv`` (per study) and ``cohort_segments.csv`` (per segment).

    Returns
    -------
    cohort_csv, segments_csv : Path
    """
    out_dir = Path(out_dir)
    paths = (out_dir / "cohort.csv", out_dir / "cohort_segments.csv")
    for path, columns, rows in (
        (paths[0], STUDY_COLUMNS, [_study_row(s) for s in summaries]),
        (
            paths[1],
            SEGMENT_COLUMNS,
            [
                {"study": s["study"], **{k: _fmt(r.get(k)) for k in SEGMENT_COLUMNS[1:]}}
                for s in summaries for r in s.get("segments") or []
            ],
        ),
    ):
        tmp = path.with_name(path.name + ".part")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    return paths


_STATUS_COLOUR = {"ok": "#2e7d32", "warnings": "#ef6c00", "no_mbf": "#c62828",
                  "failed": "#c62828"}


def _shown(value: Any, fmt: str) -> str:
    """A table cell: a number to ``fmt``, anything else as it is."""
    return format(value, fmt) if isinstance(value, (int, float)) else html.escape(str(value))


def write_cohort_index(summaries: Sequence[dict[str, Any]], out_dir: str | Path) -> Path:
    """``OUT_DIR/index.html``: one row per study with its status and a link to its report.

    Returns
    -------
    Path
        The page written.
    """
    out_dir = Path(out_dir)
    rows = []
    for s in summaries:
        r = _study_row(s)
        name = html.escape(str(s["study"]))
        link = s.get("report")
        cell = f'<a href="{name}/{html.escape(link)}">{name}</a>' if link else name
        colour = _STATUS_COLOUR.get(s["status"], "#333")
        problems = html.escape(str(r["error"] or r["messages"]))
        weak = sum(not g.get("reliable", True) for g in s.get("segments") or [])
        rows.append(
            f"<tr><td>{cell}</td><td style='color:{colour}'>{html.escape(s['status'])}</td>"
            f"<td>{_shown(r['runtime_s'], '.1f')}</td><td>{r['qc_flagged_frames']}</td>"
            f"<td>{_shown(r['mbf_median'], '.2f')}</td>"
            f"<td>{_shown(100 * r['ischemic_burden'] if r['ischemic_burden'] != '' else '', '.0f')}"
            f"</td><td>{weak if s.get('segments') else ''}</td><td>{problems}</td></tr>"
        )
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>perfmoco cohort</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head><body>"
        f"<h1>perfmoco cohort: {len(summaries)} studies</h1>"
        "<p>Tables: <a href='cohort.csv'>cohort.csv</a>, "
        "<a href='cohort_segments.csv'>cohort_segments.csv</a></p><table><tr><th>study</th>"
        "<th>status</th><th>runtime (s, with reading and writing)</th><th>QC-flagged frames</th>"
        "<th>median MBF (ml/min/g)</th><th>ischaemic burden (%)</th>"
        "<th>unreliable segments</th><th>problems</th></tr>"
        + "".join(rows)
        + "</table></body></html>"
    )
    path = out_dir / "index.html"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path
