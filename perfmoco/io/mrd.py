"""MRD images <-> :class:`~perfmoco.study.PerfusionStudy`.

This module reads: with :mod:`perfmoco.io.mrd_write` (the writing side, whose names it
re-exports) it is what knows MRD's ``[cha, z, y, x]`` pixel layout and reads image meta
(which ismrmrd-python returns as strings).  Images may arrive in
any order and with slices interleaved in any way: they are grouped by
(role, slice) and sorted by repetition, then acquisition time.
"""

from __future__ import annotations

import copy
import logging
from collections import defaultdict
from collections.abc import Iterable

import ismrmrd
import numpy as np

from perfmoco.config import MrdConfig
from perfmoco.io.mrd_header import (
    header_acquired_spacing_mm,
    header_recon_spacing_mm,
    header_saturation_times_s,
    parse_header,
    strip_nul,
)
from perfmoco.io.mrd_meta import meta_float, meta_roles
from perfmoco.io.mrd_write import (  # the writing side, re-exported
    FrameInfo,
    MrdSource,
    group_by_series,
    make_image,
    series_to_images,
    sort_key,
    study_header,
    study_to_images,
)
from perfmoco.io.protocol import (
    field_strength_t,
    midnight_wrap,
    protocol_notes,
    saturation_time,
)
from perfmoco.study import PerfusionStudy, SliceGeometry, SliceRole, SliceSeries, StudyError

__all__ = [
    "FrameInfo",
    "MrdSource",
    "group_by_series",
    "images_to_study",
    "make_image",
    "meta_roles",
    "series_to_images",
    "sort_key",
    "study_header",
    "study_to_images",
]

log = logging.getLogger(__name__)

#: Leading frames brighter than this multiple of the median of the following
#: frames are taken as PD frames when no ``GADGETRON_DataRole=PD`` tag is set (and
#: ``mrd.pd_frames`` is -1).  On the phantom PD frames read 2.8-3.3x (high-resolution
#: slices, whole image) and 5.7-7.4x (AIF slice) the pre-contrast dynamics, which stay
#: within 5 % of each other; real images, with fat brighter after the saturation,
#: read lower.  1.8 still finds PD frames read out at 0.65 of the dynamics' M0.
PD_BRIGHTNESS_RATIO = 1.8
MAX_PD_FRAMES = 5


def _pixels(image: ismrmrd.Image, index: int) -> np.ndarray:
    """The (Y, X) float32 pixels of a single-channel 2-D image."""
    data = np.asarray(image.data)  # MRD layout: [cha, z, y, x]
    if data.ndim != 4 or data.shape[0] != 1 or data.shape[1] != 1:
        raise StudyError(
            f"image {index}: expected one channel and one partition, got [cha, z, y, x] = "
            f"{list(data.shape)}; send coil-combined 2-D images"
        )
    pix = data[0, 0]
    if np.iscomplexobj(pix):
        pix = np.abs(pix)
    return pix.astype(np.float32, copy=False)


def _is_aif(info: FrameInfo, config: MrdConfig) -> bool | None:
    """True/False when the image says whether it is the AIF slice, None if unknown."""
    if config.aif_series_index >= 0:
        return int(info.header.image_series_index) == config.aif_series_index
    if "AIF" in meta_roles(info.meta):
        return True
    enc = meta_float(info.meta, "encoding")
    if enc is not None:
        return enc > 0
    return None


def _finite_mean(pixels: np.ndarray) -> float:
    finite = pixels[np.isfinite(pixels)]
    return float(finite.mean()) if finite.size else 0.0


def _split_pd(frames: list[tuple[FrameInfo, np.ndarray]]) -> int:
    """Number of untagged leading PD frames, detected by their brightness."""
    if len(frames) < 8:
        return 0
    means = np.array([_finite_mean(p) for _, p in frames])  # NaN pixels: another's mask
    rest = np.median(means[MAX_PD_FRAMES : MAX_PD_FRAMES + 10])
    n = 0
    while n < MAX_PD_FRAMES and rest > 0 and means[n] > PD_BRIGHTNESS_RATIO * rest:
        n += 1
    return n


def images_to_study(
    images: Iterable[ismrmrd.Image],
    header: str | bytes | None = None,
    *,
    config: MrdConfig | None = None,
    study_id: str = "study",
) -> PerfusionStudy:
    """Sort received MRD images into a validated perfusion study.

    Parameters
    ----------
    images : iterable of ismrmrd.Image
        Reconstructed 2-D magnitude (or complex) frames in any order.
    header : str or bytes, optional
        The MRD XML header of the session; used for saturation times.
    config : MrdConfig, keyword-only
        How the AIF slice is recognised and how time stamps are scaled.
    study_id : str, keyword-only
        Identifier kept on the study (logs, reports).

    Returns
    -------
    PerfusionStudy
        One :class:`SliceSeries` per high-resolution slice plus the AIF slice.

    Raises
    ------
    StudyError
        For images that cannot form a study: mixed matrix sizes within a
        slice, duplicate repetitions, too few dynamics, non-finite pixels,
        missing timing, a header that is not MRD XML.
    """
    config = config or MrdConfig()
    hdr = parse_header(header)
    ts_by_encoding = header_saturation_times_s(hdr)
    acquired_by_encoding = header_acquired_spacing_mm(hdr)
    received = []
    for i, img in enumerate(images):
        info = FrameInfo(copy.deepcopy(img.getHead()), dict(img.meta))
        received.append((info, _pixels(img, i)))
    if not received:
        raise StudyError("no images were received")

    aif_flags = [_is_aif(info, config) for info, _ in received]
    if not any(f is True for f in aif_flags) and config.aif_series_index < 0:
        aif_flags = _aif_by_matrix(received)
    groups: dict[tuple[bool, int], list[tuple[FrameInfo, np.ndarray]]] = defaultdict(list)
    for (info, pix), is_aif in zip(received, aif_flags):
        groups[(bool(is_aif), int(info.header.slice))].append((info, pix))
    if sum(1 for is_aif, _ in groups if is_aif) > 1:
        slices = sorted(s for a, s in groups if a)
        raise StudyError(f"AIF images arrived for several slices {slices}; expected one")

    recon_by_encoding = header_recon_spacing_mm(hdr)
    notes: list[str] = []
    day = midnight_wrap([int(i.header.acquisition_time_stamp) for i, _ in received],
                        config.time_stamp_tick_s, notes)
    slices = _unique_indices([
        _make_series(frames, is_aif, sl, config, ts_by_encoding, acquired_by_encoding,
                     recon_by_encoding, notes, day)
        for (is_aif, sl), frames in sorted(groups.items())
    ])
    study = PerfusionStudy(slices=slices, mrd_header=strip_nul(header), study_id=study_id,
                           field_strength_t=field_strength_t(hdr))
    study.notes.extend(notes + protocol_notes(study, config))
    study = study.with_finite_pixels()
    study.validate(min_dynamics=config.min_dynamics)
    return study


def _aif_by_matrix(received: list[tuple[FrameInfo, np.ndarray]]) -> list[bool | None]:
    """Without tags: the series whose matrix is smaller than the others' is the AIF; where
    all images share one series index, the slice whose matrix is.
    """
    for field in ("image_series_index", "slice"):
        keys = [int(getattr(info.header, field)) for info, _ in received]
        sizes: dict[int, set] = {}
        for key, (_, pix) in zip(keys, received):
            sizes.setdefault(key, set()).add(pix.size)
        if len(sizes) < 2:
            continue
        largest = max(max(v) for v in sizes.values())
        small = [k for k, v in sizes.items() if max(v) < largest]
        return [k == small[0] for k in keys] if len(small) == 1 else [False] * len(received)
    return [False] * len(received)


def _spacing(fov, matrix, recon, name: str) -> tuple[float, float]:
    """``(dy, dx)`` in mm: the images' field of view over their matrix, else the MRD
    header's recon space (``recon``), else 1 mm with a warning.
    """
    if min(fov[:2]) > 0:
        return fov[1] / matrix[1], fov[0] / matrix[0]
    if recon is not None:
        log.info("%s: no field of view in the image headers; pixel size %.3g x %.3g mm from "
                 "the MRD header's recon space", name, *recon)
        return recon
    log.warning("%s: no field of view in the image headers or the MRD header; pixels taken "
                "as 1 mm (distances, the heart's size and the maps' geometry are off)", name)
    return 1.0, 1.0


def _unique_indices(slices: list[SliceSeries]) -> list[SliceSeries]:
    """The AIF slice numbered apart from the high-resolution slices (its own encoding may
    count its slices from 0 as theirs does).
    """
    taken = {s.slice_index for s in slices if s.role is SliceRole.HIGHRES}
    out = []
    for s in slices:
        if s.role is SliceRole.AIF and s.slice_index in taken:
            new = max(taken) + 1
            log.info("AIF slice numbered %d as a high-resolution slice is: %d here",
                     s.slice_index, new)
            s = s.replace(slice_index=new)
        out.append(s)
    return out


def _make_series(frames, is_aif, sl, config, ts_by_encoding,
                 acquired_by_encoding, recon_by_encoding=(), notes=None,
                 day: int = 0) -> SliceSeries:
    role = SliceRole.AIF if is_aif else SliceRole.HIGHRES
    name = f"slice {sl} ({role.value})"
    notes = [] if notes is None else notes
    shapes = sorted({p.shape for _, p in frames})
    if len(shapes) > 1:
        raise StudyError(f"{name}: images of different matrix sizes {shapes} in one slice")
    tick = config.time_stamp_tick_s

    def stamp(info) -> int:  # after midnight (``day``): a day on
        t = int(info.header.acquisition_time_stamp)
        return t + day if day and t < day // 2 else t

    frames = sorted(frames, key=lambda f: (int(f[0].header.repetition), stamp(f[0])))
    tagged = [f for f in frames if "PD" in meta_roles(f[0].meta)]
    dyn = [f for f in frames if "PD" not in meta_roles(f[0].meta)]
    if not tagged:
        n_pd = _split_pd(dyn) if config.pd_frames < 0 else config.pd_frames
        if config.pd_frames >= 0 and n_pd > len(dyn) - config.min_dynamics:
            raise StudyError(f"{name}: {len(dyn)} frames cannot hold {n_pd} PD frames "
                             f"(mrd.pd_frames) and {config.min_dynamics} dynamics")
        tagged, dyn = dyn[:n_pd], dyn[n_pd:]
        if n_pd:
            how = "by brightness" if config.pd_frames < 0 else "as mrd.pd_frames says"
            log.info("%s: %d untagged leading PD frames, %s", name, n_pd, how)
    reps = [int(f[0].header.repetition) for f in dyn]
    stamps = {stamp(f[0]) for f in dyn}
    if len(set(reps)) != len(reps) and len(stamps) != len(dyn):
        dup = sorted({r for r in reps if reps.count(r) > 1})[:5]
        raise StudyError(f"{name}: repetitions {dup} arrived more than once")
    h0 = frames[0][0].header
    fov = [float(v) for v in h0.field_of_view]
    mat = [int(v) for v in h0.matrix_size]
    enc = 1 if is_aif else 0
    spacing = _spacing(fov, mat, recon_by_encoding[enc] if enc < len(recon_by_encoding)
                       else None, name)
    ts_s, ts_source = saturation_time(  # PD frames may lack the meta
        name, meta_float((dyn or frames)[0][0].meta, "SaturationTime_ms"),
        ts_by_encoding[enc] if enc < len(ts_by_encoding) else None, notes)
    acquired = acquired_by_encoding[enc] if enc < len(acquired_by_encoding) else None
    geometry = SliceGeometry(
        position=tuple(float(v) for v in h0.position),
        read_dir=tuple(float(v) for v in h0.read_dir),
        phase_dir=tuple(float(v) for v in h0.phase_dir),
        slice_dir=tuple(float(v) for v in h0.slice_dir),
        field_of_view_mm=tuple(fov),
    )

    def stack(items):
        if not items:
            return np.zeros((0, *shapes[0]), np.float32), np.zeros(0)
        return (
            np.stack([p for _, p in items]),
            np.array([stamp(i) * tick for i, _ in items]),
        )

    images, times = stack(dyn)
    pd, pd_times = stack(tagged)
    return SliceSeries(
        images=images,
        times_s=times,
        pixel_spacing_mm=spacing,
        role=role,
        slice_index=sl,
        pd_images=pd,
        pd_times_s=pd_times,
        saturation_time_s=ts_s,
        saturation_time_source=ts_source,
        geometry=geometry,
        acquired_spacing_mm=acquired,
        source=MrdSource([i for i, _ in dyn], [i for i, _ in tagged]),
    )
