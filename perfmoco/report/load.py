"""Rebuild a :class:`~perfmoco.pipeline.StudyResult` from a result ``.h5``.

Result files (``perfmoco batch`` / ``replay`` / ``demo``) hold the originals
as received, the corrected series (``MrdConfig.moco_series_index``,
``moco_pd_series_index``, ``moco_aif_series_index``), the MBF maps
(``map_series_index``, pixels = MBF x ``GADGETRON_ScaleRatio``) with the
segment table in their meta, their fit quality (``quality_series_index``: the
pixels the fit flagged), and perhaps the report's own secondary captures
(``report_series_index``, ignored).  Displacement fields are not stored, so the
rebuilt result has zero displacements; QC flags, problems and timings come from a
``summary.json`` beside the file
(batch output) when there is one; without it, from the images' meta (the corrected
series' QC flags, the maps' messages, AIF, segment table and ischaemic burden).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from perfmoco.config import Config, MrdConfig
from perfmoco.io.files import read_mrd_images
from perfmoco.io.mrd import MrdSource, images_to_study
from perfmoco.io.mrd_meta import meta_list
from perfmoco.moco.result import MocoResult
from perfmoco.pipeline import Method, StudyResult
from perfmoco.study import StudyError

__all__ = ["LoadedQuant", "load_result"]

log = logging.getLogger(__name__)

_NUM = r"([-+0-9.eEnaNinf]+)"
#: ``slice S seg G: mean M ml/min/g[, median D, se E][, n N][, below B][, dark rim R][,
#: unreliable[ (REASON)]][; NAME, TERRITORY]`` (older files: fewer of them).
_SEGMENT_RE = re.compile(rf"slice\s+(\d+)\s+seg\s+(\d+):\s+mean\s+{_NUM}(?:\s*ml/min/g)?"
                         rf"(?:,\s*median\s+{_NUM},\s*se\s+{_NUM})?"
                         rf"(?:,\s*n\s+(\d+))?(?:,\s*below\s+{_NUM})?"
                         rf"(?:,\s*dark rim\s+(?P<rim>{_NUM}))?"
                         rf"(,\s*unreliable(?:\s*\((.*)\))?)?"
                         rf"(?:;\s*(.*),\s*(\w+))?\s*$")
#: ``perfmoco_IschemicBurden``: ``SHARE of N pixels below T ml/min/g``.
_BURDEN_RE = re.compile(rf"{_NUM}\s+of\s+(\d+)\s+pixels\s+below\s+{_NUM}")


def _segment_row(m: re.Match) -> dict[str, Any]:
    mean = float(m[3])
    return {"slice": int(m[1]), "segment": int(m[2]), "mean": mean,
            "median": float(m[4]) if m[4] else mean,
            "se": float(m[5]) if m[5] else float("nan"),
            "n": int(m[6]) if m[6] else None,
            "below": float(m[7]) if m[7] else float("nan"),
            "dark_rim": float(m["rim"]) if m["rim"] else 0.0,
            "reliable": not m[10], "reason": m[11] or "",
            "name": (m[12] or "").strip(), "territory": m[13] or "", "sd": float("nan")}


@dataclasses.dataclass
class LoadedQuant:
    """The part of a quantification result that a result file keeps.

    Attributes
    ----------
    mbf_maps : dict of int to ndarray, shape (Y, X), float32, ml/min/g
        Per high-resolution ``slice_index``.
    segments : list of dict
        The segment table's rows as the maps' meta keep them (``sd`` NaN), or a batch's
        ``summary.json`` beside the file (whole rows).
    myocardium : dict of int to ndarray, shape (Y, X), bool
        The fitted myocardium: the pixels with a value on the MBF or the quality map.
    flagged : dict of int to ndarray, shape (Y, X), bool
        Pixels the fit flagged (0 on the quality map, not on the MBF map); only
        for slices whose quality map the file holds.
    """

    mbf_maps: dict[int, np.ndarray]
    segments: list[dict[str, Any]]
    aha: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    myocardium: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    aif_gd: np.ndarray | None = None
    aif_times_s: np.ndarray | None = None
    warnings: list[str] = dataclasses.field(default_factory=list)
    saturation_efficiency: dict[str, float] = dataclasses.field(default_factory=dict)
    flagged: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)
    burden: tuple[float, int] | None = None
    ischemia_mbf: float = 2.0

    def ischemic_burden(self) -> tuple[float, int]:
        """The study's ischaemic burden as the maps' meta gave it (``(nan, 0)``: none)."""
        return self.burden or (float("nan"), 0)

    def summary_text(self) -> str:
        """One line per slice with its median map value."""
        lines = []
        for k, m in sorted(self.mbf_maps.items()):
            v = m[np.isfinite(m) & (m > 0)]
            med = f"{np.median(v):.2f}" if v.size else "n/a"
            lines.append(f"  slice {k}: median MBF {med} ml/min/g (from the stored map)")
        return "\n".join(lines)


def _floats(meta, key: str) -> np.ndarray | None:
    try:
        values = np.array([float(v) for v in meta_list(meta, key)])
    except ValueError:
        return None
    return values if values.size else None


def _aif(meta) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The AIF a map was fitted with, on the acquisition clock (older files: already)."""
    gd, t = _floats(meta, "perfmoco_AIF_mmol_l"), _floats(meta, "perfmoco_AIF_times_s")
    if gd is None or t is None or gd.size != t.size:
        return None, None
    origin = _floats(meta, "perfmoco_AIF_time_origin_s")
    return gd, t + (origin[0] if origin is not None else 0.0)


def _maps(images, mrd: MrdConfig, quality_images=()) -> LoadedQuant | None:
    from perfmoco.io.outputs import MBF_SCALE

    maps, segments, eff = {}, [], {}
    out = LoadedQuant(mbf_maps=maps, segments=segments, saturation_efficiency=eff)
    for img in images:
        meta = img.meta
        for text in meta_list(meta, "perfmoco_SaturationEfficiency"):
            key, _, value = text.partition(" ")
            try:
                eff[key] = float(value)
            except ValueError:
                continue
        try:
            scale = float(meta_list(meta, "GADGETRON_ScaleRatio")[0])
        except (IndexError, ValueError):
            scale = MBF_SCALE
        k = int(img.getHead().slice)
        maps[k] = np.asarray(img.data, np.float32)[0, 0] / (scale or 1.0)  # [cha, z, y, x]
        segments += [_segment_row(m) for text in meta_list(meta, "perfmoco_Segments")
                     if (m := _SEGMENT_RE.search(text))]
        burden = _BURDEN_RE.search(" ".join(meta_list(meta, "perfmoco_IschemicBurden")))
        if burden:
            out.burden = (float(burden[1]), int(burden[2]))
            out.ischemia_mbf = float(burden[3])
        if out.aif_gd is None:
            out.aif_gd, out.aif_times_s = _aif(meta)
        out.warnings += [w for w in meta_list(meta, "perfmoco_Messages")
                         if w not in out.warnings]
    if not maps:
        return None
    quality = {int(q.getHead().slice): np.asarray(q.data, np.float32)[0, 0]
               for q in quality_images}
    for k, m in maps.items():
        q = quality.get(k)
        if q is None or q.shape != m.shape:
            out.myocardium[k] = m != 0
            continue
        out.flagged[k] = (q <= 0) & (m != 0)  # valued on the MBF map, 0 on its quality map
        out.myocardium[k] = (m != 0) | (q > 0)  # what the fit covered: a value on either
    return out


#: The processing steps perfmoco adds to its outputs' ``GADGETRON_ImageProcessingHistory``.
_OUR_STEPS = {"PERFMOCO", "PERFMOCO_FLOW_MAP", "PERFMOCO_QUALITY_MAP", "QA_REPORT"}


def _steps(img) -> set[str]:
    return set(meta_list(img.meta, "GADGETRON_ImageProcessingHistory"))


def _kind(img, steps: set[str], mrd: MrdConfig, tagged: bool) -> str:
    """``orig``, ``moco``, ``map``, ``quality`` or ``report``: by the processing step perfmoco added
    to the image's history where the file's outputs carry one (``tagged``; their series
    may have moved: ``io.outputs.output_config``), else by the configured series indices.
    """
    if tagged:
        return ("report" if "QA_REPORT" in steps else "map" if "PERFMOCO_FLOW_MAP" in steps
                else "quality" if "PERFMOCO_QUALITY_MAP" in steps
                else "moco" if "PERFMOCO" in steps else "orig")
    idx = int(img.getHead().image_series_index)
    if idx == mrd.report_series_index:
        return "report"
    if idx in (mrd.moco_series_index, mrd.moco_pd_series_index, mrd.moco_aif_series_index):
        return "moco"
    if idx == mrd.quality_series_index:
        return "quality"
    return "map" if idx == mrd.map_series_index else "orig"


def _method(images) -> Method:
    for img in images:
        for step in meta_list(img.meta, "GADGETRON_ImageProcessingHistory"):
            if step.upper().startswith("MOCO_"):
                try:
                    return Method(step[5:].lower())
                except ValueError:
                    break
    return Method.NONE


def _summary(path: Path) -> dict[str, Any]:
    near = path.with_name("summary.json")
    try:
        return json.loads(near.read_text()) if near.is_file() else {}
    except (OSError, ValueError):
        return {}


def _from_json(row: dict[str, Any]) -> dict[str, Any]:
    """A segment row from ``summary.json`` (where NaN was written as null)."""
    return {k: (float("nan") if v is None and k not in ("n", "reason", "name") else v)
            for k, v in row.items()}


def load_result(path: str | Path, *, config: Config | MrdConfig | None = None) -> StudyResult:
    """A study result rebuilt from a result ``.h5`` (see the module notes).

    Parameters
    ----------
    path : str or Path
        Result file written by ``perfmoco batch`` / ``replay`` / ``demo``.
    config : Config or MrdConfig, keyword-only
        Series indices of the outputs (default: the packaged defaults).

    Returns
    -------
    StudyResult
        Originals, corrected series (zero displacements), the stored maps.

    Raises
    ------
    StudyError
        When the file cannot be read or holds no original study.
    """
    path = Path(path)
    mrd = config.mrd if isinstance(config, Config) else (config or MrdConfig())
    header, images = read_mrd_images(path)
    groups: dict[str, list] = {"orig": [], "moco": [], "map": [], "quality": []}
    steps = [_steps(img) for img in images]  # each image's meta parsed once
    tagged = any(st & _OUR_STEPS for st in steps)
    for img, st in zip(images, steps):
        kind = _kind(img, st, mrd, tagged)
        if kind != "report":
            groups[kind].append(img)
    if not groups["orig"]:
        raise StudyError(f"{path}: no original images (only output series) in the file")
    summary = _summary(path)
    named = (n for img in groups["moco"][:1] + groups["map"][:1]
             for n in meta_list(img.meta, "perfmoco_Study"))  # the name it was processed as
    study_id = (summary.get("study") or next(named, "")
                or (path.parent.name if path.stem == "result" else path.stem))
    study = images_to_study(groups["orig"], header, config=mrd, study_id=str(study_id))
    qc_by_slice = {int(s["slice"]): s.get("qc_flagged") for s in summary.get("slices", [])}
    moco: list[MocoResult | None] = [None] * len(study.slices)
    messages = list(summary.get("messages", []))
    if groups["moco"]:
        try:
            corrected = images_to_study(groups["moco"], header, config=mrd)
        except StudyError as exc:
            messages.append(f"the corrected series in {path.name} cannot be read ({exc})")
            corrected = None
        found = {(s.role, s.slice_index): s for s in corrected.slices} if corrected else {}
        for i, s in enumerate(study.slices):
            c = found.get((s.role, s.slice_index))
            if c is None or c.images.shape != s.images.shape:
                continue
            flagged = qc_by_slice.get(s.slice_index)
            if flagged is None and isinstance(c.source, MrdSource) and c.source.frames:
                flagged = [int(v) for v in meta_list(c.source.frames[0].meta,
                                                    "perfmoco_QCFlaggedDynamics") if v.isdigit()]
            qc = None
            if flagged is not None:
                qc = np.zeros(s.n_dynamics, bool)
                qc[[f for f in flagged if 0 <= f < s.n_dynamics]] = True
            t, (y, x) = s.n_dynamics, s.shape
            moco[i] = MocoResult(
                corrected=c.images,
                displacement=np.broadcast_to(np.zeros((1, 1, 1, 1), np.float32), (t, 2, y, x)),
                reference_index=-1,
                qc=qc,  # None: not stored in the file
                pd_corrected=c.pd_images,
                pd_displacement=np.zeros((0, 2, y, x), np.float32),
            )
    quant = _maps(groups["map"], mrd, groups["quality"])
    if quant is not None and summary.get("segments"):  # a batch's: whole rows
        quant.segments = [_from_json(r) for r in summary["segments"]]
    if not summary and quant is not None:  # the maps carry the messages that concern them
        messages += [w for w in quant.warnings if w not in messages]
    return StudyResult(
        study=study,
        moco=moco,
        quant=quant,
        method=Method(summary["method"]) if summary.get("method") else _method(groups["moco"]),
        weights=summary.get("weights") or next(
            (w for img in groups["moco"][:1] for w in meta_list(img.meta, "perfmoco_Weights")), ""),
        messages=messages,
        timings_s=dict(summary.get("timings_s", {})),
    )
