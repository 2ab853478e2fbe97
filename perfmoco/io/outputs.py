"""A :class:`~perfmoco.pipeline.StudyResult` as MRD images to send back.

Originals first (as received), then the corrected series (``MOCO``), then one
MBF map per high-resolution slice (``Flow_Map``) and one map of its fit quality
(``Quality_Map``: where the MBF map can be trusted).  Each output kind has its
own series index (``MrdConfig``) because MRD HDF5 needs one matrix size per
series; where the received images already use one of them (Gadgetron's image
reconstructions number their series from 100), all of ours move on by 1000s
(:func:`output_config`), so a console never shows corrected and uncorrected
frames as one series.  The outputs add to the received sequence description
and processing history, as Gadgetron's own do.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import TYPE_CHECKING

import ismrmrd
import numpy as np

from perfmoco.config import MrdConfig
from perfmoco.io.mrd import MrdSource, make_image, series_to_images, study_to_images
from perfmoco.io.mrd_meta import appended_meta, meta_list
from perfmoco.study import PerfusionStudy, SliceRole

if TYPE_CHECKING:
    from perfmoco.pipeline import StudyResult

__all__ = ["MBF_SCALE", "output_config", "result_to_images"]

log = logging.getLogger(__name__)

#: Map pixels are MBF x 100 (float32), as Gadgetron's perfusion maps are scaled.
MBF_SCALE = 100.0


#: The series indices of perfmoco's outputs (``MrdConfig``).
OUTPUT_SERIES = ("moco_series_index", "moco_pd_series_index", "moco_aif_series_index",
                 "map_series_index", "quality_series_index", "report_series_index")

#: Meta of a map's source frame that describes that frame, not the map.
_FRAME_META = ("SaturationTime_ms", "GADGETRON_DataRole", "perfmoco_QCFlaggedDynamics")

#: Quality map pixels are the fit's r2 x 100 (0: flagged or not myocardium).
QUALITY_SCALE = 100.0


def output_config(config: MrdConfig, study: PerfusionStudy,
                  received: list[ismrmrd.Image] | None = None) -> MrdConfig:
    """``config`` with its output series moved on by 1000s where the study's own images
    (``received``, else as :func:`perfmoco.io.mrd.study_to_images` numbers them) use one
    of them.
    """
    used = {int(img.image_series_index) for img in received or []}
    for s in study.slices:
        src = s.source if isinstance(s.source, MrdSource) else None
        if src is not None:
            used |= {int(f.header.image_series_index) for f in src.frames + src.pd_frames}
        elif not received:
            used.add(2 if s.role is SliceRole.AIF else 1)
    ours = {name: int(getattr(config, name)) for name in OUTPUT_SERIES
            if int(getattr(config, name)) >= 0}  # -1: not sent
    shift = 0
    while any(i + shift in used for i in ours.values()):
        shift += 1000
    if not shift:
        return config
    taken = ", ".join(map(str, sorted(used & set(ours.values()))))
    moved = ", ".join(str(i + shift) for i in ours.values())
    log.warning("the received images use series %s, which perfmoco's outputs use by default: "
                "its outputs go to series %s", taken, moved)
    return dataclasses.replace(config, **{k: v + shift for k, v in ours.items()})


def result_to_images(result: StudyResult, *, config: MrdConfig,
                     originals: list[ismrmrd.Image] | None = None) -> list[ismrmrd.Image]:
    """Originals, corrected series and MBF maps of one study as MRD images.

    ``originals``: the images as they were received, sent back untouched (their data
    type, indices and meta); default: rebuilt from the study (float32).
    """
    out = list(originals) if originals is not None else study_to_images(result.study,
                                                                         config=config)
    config = output_config(config, result.study, originals)
    corrected: list[ismrmrd.Image] = []
    for s, m in zip(result.study.slices, result.moco):
        if m is None:
            continue
        aif = s.role is SliceRole.AIF
        index = config.moco_aif_series_index if aif else config.moco_series_index
        corrected.extend(
            series_to_images(
                s,
                images=m.corrected,
                pd_images=m.pd_corrected if m.pd_corrected.shape[0] else s.pd_images,
                series_index=index,
                pd_series_index=index if aif else config.moco_pd_series_index,
                role="MOCO",
                extra_meta={
                    "perfmoco_QCFlaggedDynamics": [str(i) for i in np.flatnonzero(m.qc)] or "none",
                    "GADGETRON_ImageComment": "MOCO",
                    "perfmoco_Study": result.study.study_id,
                    **({"perfmoco_Weights": result.weights} if result.weights else {}),
                },
                append_meta={
                    "GADGETRON_ImageProcessingHistory": ["PERFMOCO", f"MOCO_{result.method.value}"],
                    "GADGETRON_SeqDescription": f"_MOCO_{result.method.value.upper()}"
                                                + ("_AIF" if aif else ""),
                },
                tick_s=config.time_stamp_tick_s,
            )
        )
    out.extend(_numbered(corrected))
    quant = result.quant
    if quant is not None:
        maps = _map_images(result, config)
        out.extend(maps)
        if config.quality_series_index >= 0:
            out.extend(_quality_images(result, maps, config))
    return out


def _numbered(images: list[ismrmrd.Image]) -> list[ismrmrd.Image]:
    """``images`` with ``image_index`` 1, 2, ... within each series, slice by slice in
    time order, as Gadgetron numbers a series (each slice's frames had counted from 1,
    and a series' dynamics from after its PD frames, which have their own series).
    """
    seen: dict[int, int] = {}
    for img in sorted(images, key=lambda i: (int(i.image_series_index), int(i.slice),
                                             int(i.image_index))):
        k = seen[int(img.image_series_index)] = seen.get(int(img.image_series_index), 0) + 1
        img.image_index = k
    return images


def _concerns(message: str, slice_index: int, aif_index: int | None) -> bool:
    """Whether a study's message concerns the map of slice ``slice_index``: it names no
    slice, this slice or the AIF slice (whose curve every map is fitted with).
    """
    head = re.match(r"(slice \d+\b[^:]*):", message)  # "slice 0 (highres), slice 1 ...:"
    named = [int(n) for n in re.findall(r"slice (\d+)\b", head.group(1))] if head else []
    return not named or bool({slice_index, aif_index} & set(named))


def _map_images(result: StudyResult, config: MrdConfig) -> list[ismrmrd.Image]:
    quant = result.quant
    table = [
        f"slice {r['slice']} seg {r['segment']}: mean {r['mean']:.2f} ml/min/g, "
        f"median {r.get('median', float('nan')):.2f}, se {r.get('se', float('nan')):.2f}"
        + (f", n {r['n']}" if r.get("n") is not None else "")
        + (f", below {r['below']:.3f}" if r.get("below") is not None else "")
        + (f", dark rim {r['dark_rim']:.3f}" if r.get("dark_rim") else "")
        + ("" if r.get("reliable", True) else ", unreliable"
           + (f" ({r['reason']})" if r.get("reason") else ""))
        + (f"; {r.get('name', '')}, {r['territory']}" if r.get("territory") else "")
        for r in getattr(quant, "segments", [])
    ]
    out = []
    # the study's ischaemic burden, on every map (a result read back from a file has none)
    burden = quant.ischemic_burden() if callable(getattr(quant, "ischemic_burden", None)) else None
    aif_index = result.study.aif.slice_index if result.study.aif is not None else None
    for n, s in enumerate(result.study.highres):
        mbf = quant.mbf_maps.get(s.slice_index)
        if mbf is None:
            continue
        src = s.source if isinstance(s.source, MrdSource) else None
        template = src.frames[-1].header if src and src.frames else None
        meta = dict(src.frames[-1].meta) if src and src.frames else {}
        for key in _FRAME_META:  # the frame's own (its saturation time, roles, QC)
            meta.pop(key, None)
        meta.update(
            GADGETRON_DataRole="Flow_Map",
            GADGETRON_ImageComment=["MBF", "ml/min/g", f"x{MBF_SCALE:g}"],
            GADGETRON_SeqDescription=appended_meta(meta, "GADGETRON_SeqDescription", "_Flow_Map"),
            GADGETRON_ImageProcessingHistory=appended_meta(
                meta, "GADGETRON_ImageProcessingHistory", "PERFMOCO_FLOW_MAP"),
            GADGETRON_ScaleRatio=f"{MBF_SCALE:g}",
            GADGETRON_WindowCenter=f"{2.0 * MBF_SCALE:g}",
            GADGETRON_WindowWidth=f"{4.0 * MBF_SCALE:g}",
            GADGETRON_ColorMap="Perfusion.pal",
            perfmoco_Unit="ml/min/g",
        )
        aif = getattr(quant, "aif_gd", None)
        if aif is not None and len(aif):
            meta["perfmoco_AIF_mmol_l"] = [f"{v:.4g}" for v in np.asarray(aif, float)]
            t = np.asarray(quant.aif_times_s, float)  # from its first sample; that sample's
            meta["perfmoco_AIF_times_s"] = [f"{v:.3f}" for v in t - t[0]]  # clock beside
            meta["perfmoco_AIF_time_origin_s"] = f"{t[0]:.4f}"
        meta["perfmoco_Study"] = result.study.study_id
        if result.weights:
            meta["perfmoco_Weights"] = result.weights
        eff = getattr(quant, "saturation_efficiency", None)
        if eff:
            meta["perfmoco_SaturationEfficiency"] = [f"{k} {v:.4f}" for k, v in sorted(eff.items())]
        if burden is not None and burden[1]:
            meta["perfmoco_IschemicBurden"] = (
                f"{burden[0]:.3f} of {burden[1]} pixels below {quant.ischemia_mbf:g} ml/min/g")
        if table:
            meta["perfmoco_Segments"] = [
                t for t in table if t.startswith(f"slice {s.slice_index} ")
            ]
        notes = [m for m in result.messages if _concerns(m, s.slice_index, aif_index)]
        if notes:  # on the map itself, where the console shows it, not only as TEXT
            meta["perfmoco_Messages"] = notes
            meta["GADGETRON_ImageComment"] = [*meta["GADGETRON_ImageComment"],
                                              f"{len(notes)} warning(s)"]
        pixels = np.nan_to_num(np.asarray(mbf, np.float32)) * MBF_SCALE
        fields = {"image_series_index": config.map_series_index, "image_index": n + 1}
        if template is None:
            g = s.geometry
            dy, dx = s.pixel_spacing_mm
            fields.update(slice=s.slice_index)
            if g is not None:
                fields.update(
                    position=g.position,
                    read_dir=g.read_dir,
                    phase_dir=g.phase_dir,
                    slice_dir=g.slice_dir,
                    field_of_view=(s.shape[1] * dx, s.shape[0] * dy, g.field_of_view_mm[2]),
                )
        out.append(make_image(pixels, template=template, meta=meta, **fields))
    return out


def _quality_images(result: StudyResult, maps: list[ismrmrd.Image],
                    config: MrdConfig) -> list[ismrmrd.Image]:
    """One ``Quality_Map`` per MBF map, on its geometry: the fit's r2 x 100 where the
    pixel's MBF counts, 0 where the fit flagged it (poor fit, fit at a bound, unphysical
    MBF, saturated signal) and outside the myocardium.  A result read back from a file
    has no fit quality of its own: none is sent.
    """
    quant = result.quant
    quality = getattr(quant, "fit_quality", None)
    flagged = getattr(quant, "flagged", None) or {}
    myo = getattr(quant, "myocardium", None) or {}
    if not quality:
        return []
    out = []
    for img in maps:
        k = int(img.getHead().slice)
        r2 = quality.get(k)
        if r2 is None or k not in myo:
            continue
        bad = np.asarray(myo[k], bool) & np.asarray(flagged.get(k, False), bool)
        good = np.asarray(myo[k], bool) & ~bad
        pixels = np.where(good, np.clip(np.nan_to_num(r2), 0.0, 1.0) * QUALITY_SCALE, 0.0)
        meta = {key: img.meta[key] for key in img.meta.keys()
                if key.startswith("GADGETRON_") or key == "perfmoco_Messages"}
        n_flag = int(bad.sum())
        meta.update(
            GADGETRON_DataRole="Quality_Map",
            GADGETRON_ImageComment=["MBF fit r2", f"x{QUALITY_SCALE:g}",
                                    f"{n_flag} flagged (0)"],
            GADGETRON_SeqDescription=str(meta.get("GADGETRON_SeqDescription", ""))
            .removesuffix("_Flow_Map") + "_Quality_Map",
            GADGETRON_ImageProcessingHistory=[
                "PERFMOCO_QUALITY_MAP" if h == "PERFMOCO_FLOW_MAP" else h
                for h in meta_list(meta, "GADGETRON_ImageProcessingHistory")],
            GADGETRON_ScaleRatio=f"{QUALITY_SCALE:g}",
            GADGETRON_WindowCenter=f"{0.5 * QUALITY_SCALE:g}",
            GADGETRON_WindowWidth=f"{QUALITY_SCALE:g}",
            perfmoco_FlaggedPixels=str(n_flag),
        )
        meta.pop("GADGETRON_ColorMap", None)
        out.append(make_image(pixels, template=img.getHead(), meta=meta,
                              image_series_index=config.quality_series_index))
    return out
