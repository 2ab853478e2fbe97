"""PerfusionStudy -> MRD images: the writing side of :mod:`perfmoco.io.mrd`.

Results go back with the scanner's own headers and meta where the frames arrived as MRD
(:class:`MrdSource`), else with headers built from the series' geometry and times.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence

import ismrmrd
import numpy as np

from perfmoco.config import MrdConfig
from perfmoco.io.mrd_header import build_header
from perfmoco.io.mrd_meta import appended_meta, meta_roles
from perfmoco.study import PerfusionStudy, SliceGeometry, SliceRole, SliceSeries

__all__ = ["FrameInfo", "MrdSource", "group_by_series", "make_image", "series_to_images",
           "sort_key", "study_header", "study_to_images"]

_OUR_ROLES = ("PD", "AIF", "Image", "MOCO")


@dataclasses.dataclass
class FrameInfo:
    """Provenance of one received image: its header and parsed meta."""

    header: ismrmrd.ImageHeader
    meta: dict[str, str | list[str]]


@dataclasses.dataclass
class MrdSource:
    """What :func:`images_to_study` keeps to write results with the scanner's headers."""

    frames: list[FrameInfo]
    pd_frames: list[FrameInfo]


def make_image(
    pixels: np.ndarray,
    *,
    template: ismrmrd.ImageHeader | None = None,
    meta: dict | None = None,
    **fields,
) -> ismrmrd.Image:
    """One float32 MRD image from ``(Y, X)`` pixels, a header template and meta.

    ``fields`` set header attributes (e.g. ``image_series_index=100``);
    ``matrix_size`` and ``data_type`` always follow the pixels.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    img = ismrmrd.Image.from_array(pixels[None, None], transpose=False)  # [cha, z, y, x]
    head = img.getHead()
    if template is not None:
        for name, _ in ismrmrd.ImageHeader._fields_:
            if name not in ("data_type", "matrix_size", "channels", "attribute_string_len"):
                setattr(head, name, getattr(template, name))
    head.matrix_size[0], head.matrix_size[1], head.matrix_size[2] = (
        pixels.shape[1], pixels.shape[0], 1
    )
    head.image_type = ismrmrd.IMTYPE_MAGNITUDE
    for name, value in fields.items():
        if name in ("position", "read_dir", "phase_dir", "slice_dir", "field_of_view"):
            for k, v in enumerate(value):
                getattr(head, name)[k] = v
        else:
            setattr(head, name, value)
    img.setHead(head)
    if meta:
        m = ismrmrd.Meta()
        for k, v in meta.items():
            m[k] = v if isinstance(v, list) else str(v)
        img.attribute_string = m.serialize()
    return img


def _fresh_header(series: SliceSeries, time_s: float, tick_s: float) -> dict:
    g = series.geometry or SliceGeometry()
    dy, dx = series.pixel_spacing_mm
    fov = (series.shape[1] * dx, series.shape[0] * dy, g.field_of_view_mm[2])
    return dict(
        version=1,
        slice=series.slice_index,
        position=g.position,
        read_dir=g.read_dir,
        phase_dir=g.phase_dir,
        slice_dir=g.slice_dir,
        field_of_view=fov,
        acquisition_time_stamp=int(round(time_s / tick_s)),
    )


def series_to_images(
    series: SliceSeries,
    *,
    images: np.ndarray | None = None,
    pd_images: np.ndarray | None = None,
    series_index: int,
    pd_series_index: int | None = None,
    role: str = "Image",
    extra_meta: dict | None = None,
    append_meta: dict | None = None,
    tick_s: float = 0.0025,
) -> list[ismrmrd.Image]:
    """MRD images of a slice series: PD frames (tagged ``PD``, and ``role``) then dynamics.

    ``images`` / ``pd_images`` replace the pixels (e.g. motion-corrected ones)
    while headers come from the received frames (``series.source``) or, for
    series without MRD provenance, from the series' geometry and times.
    ``extra_meta`` replaces meta values; ``append_meta`` adds to the received ones
    (:func:`appended_meta`: a processing step to the history, a suffix to the
    sequence description, as Gadgetron's own outputs do).
    """
    images = series.images if images is None else images
    pd_images = series.pd_images if pd_images is None else pd_images
    src = series.source if isinstance(series.source, MrdSource) else None
    out = []
    kinds = [("PD", pd_images, series.pd_times_s, src.pd_frames if src else None)]
    kinds.append((role, images, series.times_s, src.frames if src else None))
    rep = 0
    for kind, stack, times, infos in kinds:
        for t in range(stack.shape[0]):
            meta = dict(infos[t].meta) if infos else {}
            # Keep the sender's other roles; ours describe what these pixels are now.
            roles = [r for r in meta_roles(meta) if r not in _OUR_ROLES] + [kind]
            if kind == "PD" and role != "Image":  # corrected PD frames: say so, as the dynamics
                roles.append(role)
            if series.role is SliceRole.AIF:
                roles.append("AIF")
            meta["GADGETRON_DataRole"] = roles
            if series.saturation_time_s and kind != "PD":
                meta.setdefault("SaturationTime_ms", f"{1000 * series.saturation_time_s:g}")
            meta.update(extra_meta or {})
            for key, value in (append_meta or {}).items():
                meta[key] = appended_meta(meta, key, value)
            fields = {} if infos else _fresh_header(series, float(times[t]), tick_s)
            idx = series_index if kind != "PD" or pd_series_index is None else pd_series_index
            fields.update(image_series_index=idx, image_index=rep + 1)
            if not infos:
                fields["repetition"] = rep
            template = infos[t].header if infos else None
            out.append(make_image(stack[t], template=template, meta=meta, **fields))
            rep += 1
    return out


def study_to_images(
    study: PerfusionStudy, *, config: MrdConfig | None = None
) -> list[ismrmrd.Image]:
    """The study's original frames as MRD images, as a scanner would send them.

    High-resolution slices share series 1 (PD frames tagged ``PD``), the AIF
    slice is series 2 tagged ``AIF`` (its matrix differs: MRD HDF5 needs one
    matrix size per series).  Received series keep their own indices.
    """
    config = config or MrdConfig()
    out: list[ismrmrd.Image] = []
    for s in sorted(study.slices, key=lambda s: (s.role is SliceRole.AIF, s.slice_index)):
        src = s.source if isinstance(s.source, MrdSource) else None
        idx = int(src.frames[0].header.image_series_index) if src and src.frames else (
            2 if s.role is SliceRole.AIF else 1
        )
        out.extend(series_to_images(s, series_index=idx, tick_s=config.time_stamp_tick_s))
    return out


def study_header(study: PerfusionStudy) -> str:
    """The study's MRD header, built from the study when it arrived without one."""
    return study.mrd_header or build_header(study)


def sort_key(image: ismrmrd.Image) -> tuple[int, int, int]:
    """Order of images within an output series (series, slice, repetition)."""
    h = image.getHead()
    return (int(h.image_series_index), int(h.slice), int(h.image_index))


def group_by_series(images: Sequence[ismrmrd.Image]) -> dict[int, list[ismrmrd.Image]]:
    """Images grouped by ``image_series_index`` (one MRD HDF5 group each)."""
    groups: dict[int, list[ismrmrd.Image]] = defaultdict(list)
    for img in sorted(images, key=sort_key):
        groups[int(img.getHead().image_series_index)].append(img)
    return dict(groups)
