"""The in-memory study model: plain numpy, no I/O.

A :class:`PerfusionStudy` holds one dual-sequence stress perfusion study as
:class:`SliceSeries` objects, one per slice: the high-resolution short-axis
slices and the low-resolution AIF slice.  Every stage of perfmoco (motion
correction, quantification, reports) works on these objects; only
``perfmoco.io`` converts them to and from MRD / NIfTI / npy.

Conventions (see DESIGN.md): images are ``(T, Y, X)`` float32, times are in
seconds, pixel spacing in mm as ``(dy, dx)``.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "ABSURD_RATIO",
    "MIN_DYNAMICS",
    "apex_depths_mm",
    "PerfusionStudy",
    "SliceGeometry",
    "SliceRole",
    "SliceSeries",
    "StudyError",
]

#: Fewest dynamics a slice series must have to be corrected / quantified.
MIN_DYNAMICS = 10
#: A dynamic's pixel this many times the series' bright level (its 99.9th percentile) is
#: not an MR signal (an overflow, corrupt data); bright fat or blood stand ~2-10x.
ABSURD_RATIO = 1e3


class StudyError(ValueError):
    """Input data that cannot form a valid perfusion study.

    The message always names the slice and the offending value, so the CLI,
    the server and the gadgets can show it to a user as it is.
    """


class SliceRole(str, enum.Enum):
    """What a slice series is used for."""

    HIGHRES = "highres"  #: high-resolution short-axis slice (tissue curves)
    AIF = "aif"  #: low-resolution, short-saturation-time slice (arterial input)


@dataclasses.dataclass(frozen=True)
class SliceGeometry:
    """Patient-space geometry of a slice, as in the MRD image header.

    Attributes
    ----------
    position : tuple of 3 float
        Centre of the slice in patient coordinates, mm.
    read_dir, phase_dir, slice_dir : tuple of 3 float
        Unit vectors of the x (read), y (phase) and slice axes.
    field_of_view_mm : tuple of 3 float
        Field of view (x, y, slice thickness) in mm.
    """

    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    read_dir: tuple[float, float, float] = (1.0, 0.0, 0.0)
    phase_dir: tuple[float, float, float] = (0.0, 1.0, 0.0)
    slice_dir: tuple[float, float, float] = (0.0, 0.0, 1.0)
    field_of_view_mm: tuple[float, float, float] = (360.0, 360.0, 8.0)


@dataclasses.dataclass
class SliceSeries:
    """One slice of a perfusion study over time.

    Attributes
    ----------
    images : ndarray, shape (T, Y, X), float32
        Saturation-prepared dynamics, one per heartbeat, in acquisition order.
    times_s : ndarray, shape (T,), float64
        Acquisition time of each dynamic in seconds (any origin, increasing).
    pixel_spacing_mm : tuple of 2 float
        Pixel size ``(dy, dx)`` in mm.
    role : SliceRole
        High-resolution tissue slice or low-resolution AIF slice.
    slice_index : int
        MRD ``slice`` index of the series (0 = first acquired).
    pd_images : ndarray, shape (P, Y, X), float32
        Proton-density weighted frames (no saturation), possibly ``P = 0``.
    pd_times_s : ndarray, shape (P,), float64
        Acquisition times of the PD frames, s.
    saturation_time_s : float or None
        Saturation (recovery) time TS of the dynamics, s, when known.
    saturation_time_source : str
        Where it was read (e.g. ``"header TI"``; "" where not said).
    geometry : SliceGeometry or None
        Patient-space geometry, when known.
    acquired_spacing_mm : tuple of 2 float or None
        Pixel size ``(dy, dx)`` of the acquired (encoded) matrix, when known
        (MRD header); larger than ``pixel_spacing_mm`` for images zero-filled
        to a finer matrix (:mod:`perfmoco.quant.resolution`).
    source : Any
        Opaque per-frame MRD provenance kept by ``perfmoco.io.mrd`` so that
        results can be written back with the scanner's own headers
        (``None`` for series that came from npy / NIfTI / the phantom).
    """

    images: np.ndarray
    times_s: np.ndarray
    pixel_spacing_mm: tuple[float, float] = (1.0, 1.0)
    role: SliceRole = SliceRole.HIGHRES
    slice_index: int = 0
    pd_images: np.ndarray = dataclasses.field(
        default_factory=lambda: np.zeros((0, 1, 1), np.float32)
    )
    pd_times_s: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    saturation_time_s: float | None = None
    saturation_time_source: str = ""
    geometry: SliceGeometry | None = None
    acquired_spacing_mm: tuple[float, float] | None = None
    source: Any = None

    def __post_init__(self) -> None:
        self.images = np.asarray(self.images, dtype=np.float32)
        self.times_s = np.asarray(self.times_s, dtype=np.float64)
        self.pd_images = np.asarray(self.pd_images, dtype=np.float32)
        self.pd_times_s = np.asarray(self.pd_times_s, dtype=np.float64)
        if self.pd_images.shape[0] == 0 and self.images.ndim == 3:
            self.pd_images = np.zeros((0, *self.images.shape[1:]), np.float32)
        self.role = SliceRole(self.role)
        self.pixel_spacing_mm = (float(self.pixel_spacing_mm[0]), float(self.pixel_spacing_mm[1]))
        if self.acquired_spacing_mm is not None:
            a = tuple(float(v) for v in self.acquired_spacing_mm)
            self.acquired_spacing_mm = a if len(a) == 2 and min(a) > 0 else None

    @property
    def name(self) -> str:
        """Human-readable name used in messages, e.g. ``'slice 2 (highres)'``."""
        return f"slice {self.slice_index} ({self.role.value})"

    @property
    def interval_s(self) -> float:
        """The dynamics' median interval, s (NaN with fewer than 2 dynamics)."""
        dt = np.diff(self.times_s)
        return float(np.median(dt)) if dt.size else float("nan")

    @property
    def n_dynamics(self) -> int:
        return int(self.images.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """In-plane matrix ``(Y, X)``."""
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def replace(self, **changes: Any) -> SliceSeries:
        """Copy with some fields replaced (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def with_finite_pixels(self) -> tuple[SliceSeries, str | None]:
        """The series with its NaN / Inf pixels filled
        (:func:`perfmoco.frames.fill_non_finite`), and a note naming them (``None``
        and the series itself where there are none).
        """
        from perfmoco.frames import fill_non_finite

        images, n = fill_non_finite(self.images)
        pd_lost = ~np.isfinite(self.pd_images).any(axis=(1, 2))  # no M0 in them: left out
        pd, n_pd = fill_non_finite(self.pd_images[~pd_lost])
        if not (n.any() or n_pd.any() or pd_lost.any()):
            return self, None
        said = []
        if n.any():
            frames = np.flatnonzero(n)
            more = f" and {frames.size - 10} more" if frames.size > 10 else ""
            where = ("in every dynamic" if frames.size == n.size
                     else f"in dynamics {frames[:10].tolist()}{more}")
            said.append(f"{int(n.sum())} {where}: filled from the same pixel's nearest "
                        "dynamics (0 where none has a value; a dynamic without any is a lost "
                        "frame)")
        if n_pd.any():
            said.append(f"{int(n_pd.sum())} in the PD frames: filled from the same pixel's "
                        "other PD frames (0 where none has a value)")
        if pd_lost.any():
            said.append(f"PD frames {np.flatnonzero(pd_lost).tolist()} without any: left out")
        note = (f"{self.name}: non-finite pixels (NaN/Inf), {'; '.join(said)}; the outputs "
                "hold the filled values")
        return self.replace(images=images, pd_images=pd,
                            pd_times_s=self.pd_times_s[~pd_lost]
                            if self.pd_times_s.shape == pd_lost.shape else self.pd_times_s), note

    def validate(self, *, min_dynamics: int = MIN_DYNAMICS) -> None:
        """Check the series can be processed; raise :class:`StudyError` if not.

        Parameters
        ----------
        min_dynamics : int, keyword-only
            Fewest dynamics accepted.
        """
        im = self.images
        if im.ndim != 3:
            raise StudyError(f"{self.name}: images must be (T, Y, X), got shape {im.shape}")
        if im.shape[0] < min_dynamics:
            raise StudyError(
                f"{self.name}: {im.shape[0]} dynamics, at least {min_dynamics} are needed"
            )
        if min(im.shape[1:]) < 16:
            raise StudyError(f"{self.name}: matrix {im.shape[1:]} is too small (min 16x16)")
        bad = ~np.isfinite(im)
        if bad.any():
            frames = np.flatnonzero(bad.any(axis=(1, 2)))
            raise StudyError(
                f"{self.name}: non-finite pixels (NaN/Inf) in dynamics {frames[:10].tolist()}"
            )
        level = float(np.percentile(np.abs(im[:, ::4, ::4]), 99.9))  # the series' bright level
        top = np.maximum(im.max(axis=(1, 2)), -im.min(axis=(1, 2)))  # |im| per frame, no copy
        wild = np.flatnonzero(top > ABSURD_RATIO * level) if level else []
        if len(wild):  # one such pixel would rule every scale and fit after it
            raise StudyError(
                f"{self.name}: implausible pixel values (over {ABSURD_RATIO:g} x the series' "
                f"bright level, {level:.3g}) in dynamics {wild[:10].tolist()}: corrupt data?"
            )
        if self.pd_images.size and self.pd_images.shape[1:] != im.shape[1:]:
            raise StudyError(
                f"{self.name}: PD frames are {self.pd_images.shape[1:]}, "
                f"dynamics are {im.shape[1:]}"
            )
        if self.pd_images.size and not np.isfinite(self.pd_images).all():
            raise StudyError(f"{self.name}: non-finite pixels (NaN/Inf) in the PD frames")
        t = self.times_s
        if t.shape != (im.shape[0],):
            raise StudyError(
                f"{self.name}: {t.shape[0] if t.ndim else 0} time stamps for {im.shape[0]} dynamics"
            )
        if not np.isfinite(t).all():
            raise StudyError(f"{self.name}: missing or non-finite acquisition times")
        dt = np.diff(t)
        if (dt <= 0).any():
            i = int(np.flatnonzero(dt <= 0)[0])
            raise StudyError(
                f"{self.name}: acquisition times do not increase (dynamic {i + 1}: "
                f"{t[i + 1]:.3f} s after {t[i]:.3f} s); timing is missing or corrupt"
            )
        if not all(s > 0 and np.isfinite(s) for s in self.pixel_spacing_mm):
            raise StudyError(f"{self.name}: invalid pixel spacing {self.pixel_spacing_mm} mm")


def apex_depths_mm(geometries: Sequence[SliceGeometry | None]) -> list[float] | None:
    """Each slice's position towards the apex (mm), or None where the geometry cannot say.

    The slices must be parallel, across the LV's long axis (their normal within
    ~70 degrees of the usual base-to-apex direction,
    :data:`perfmoco.orientation.APEX_DIRECTION_LPS`) and at distinct positions.
    """
    from perfmoco.orientation import APEX_DIRECTION_LPS

    if len(geometries) < 2 or any(g is None for g in geometries):
        return None
    normals = np.array([g.slice_dir for g in geometries], np.float64)
    pos = np.array([g.position for g in geometries], np.float64)
    if not (np.isfinite(normals).all() and np.isfinite(pos).all()):
        return None
    length = np.linalg.norm(normals, axis=1)
    if (length < 1e-6).any():
        return None
    normals /= length[:, None]
    if (np.abs(normals @ normals[0]) < 0.99).any():  # not one parallel stack
        return None
    apex = np.asarray(APEX_DIRECTION_LPS, np.float64)
    along = float(normals[0] @ apex / np.linalg.norm(apex))
    if abs(along) < 0.35:
        return None
    depth = pos @ (normals[0] * np.sign(along))
    if np.min(np.diff(np.sort(depth))) < 1.0:  # a default header: one position for all
        return None
    return [float(d) for d in depth]


@dataclasses.dataclass
class PerfusionStudy:
    """A dual-sequence perfusion study: high-resolution slices + AIF slice.

    Attributes
    ----------
    slices : list of SliceSeries
        High-resolution slices (basal to apical, by ``slice_index``) and at
        most one AIF slice.
    mrd_header : str or None
        The MRD XML header the study arrived with (used to write results).
    study_id : str
        Free-text identifier used in logs and reports.
    notes : list of str
        What was done to the data as received (e.g. non-finite pixels filled) or found
        doubtful in it, for the study's messages.
    field_strength_t : float or None
        The scanner's field strength, T, where the header gives it.
    """

    slices: list[SliceSeries]
    mrd_header: str | None = None
    study_id: str = "study"
    notes: list[str] = dataclasses.field(default_factory=list)
    field_strength_t: float | None = None

    @property
    def highres(self) -> list[SliceSeries]:
        """High-resolution slices, most basal first.

        By their positions along the LV's long axis where every slice's geometry
        gives one (parallel slices across it, at distinct positions: a site may
        number its slices apex first), else by ``slice_index``.
        """
        ordered = sorted(
            (s for s in self.slices if s.role is SliceRole.HIGHRES), key=lambda s: s.slice_index
        )
        depth = apex_depths_mm([s.geometry for s in ordered])
        if depth is None:
            return ordered
        return [s for _, s in sorted(zip(depth, ordered), key=lambda pair: pair[0])]

    @property
    def aif(self) -> SliceSeries | None:
        """The low-resolution AIF slice, or ``None`` when the study has none."""
        found = [s for s in self.slices if s.role is SliceRole.AIF]
        return found[0] if found else None

    def validate(self, *, min_dynamics: int = MIN_DYNAMICS, require_aif: bool = False) -> None:
        """Validate every slice; raise :class:`StudyError` naming the first problem."""
        if not self.slices:
            raise StudyError("the study has no image series")
        if len([s for s in self.slices if s.role is SliceRole.AIF]) > 1:
            raise StudyError("the study has more than one AIF slice")
        if not self.highres:
            raise StudyError("the study has no high-resolution slice")
        if require_aif and self.aif is None:
            raise StudyError("the study has no low-resolution AIF slice (needed for MBF)")
        for s in self.slices:
            s.validate(min_dynamics=min_dynamics)

    def with_finite_pixels(self) -> PerfusionStudy:
        """The study with every slice's NaN / Inf pixels filled
        (:meth:`SliceSeries.with_finite_pixels`) and a note for each such slice (the
        study itself where there are none).
        """
        done = [s.with_finite_pixels() for s in self.slices]
        notes = [note for _, note in done if note]
        if not notes:
            return self
        return dataclasses.replace(self, slices=[s for s, _ in done],
                                   notes=[*self.notes, *notes])

    def replace_slices(self, slices: Sequence[SliceSeries]) -> PerfusionStudy:
        """Copy of the study with other slice series (same header and id)."""
        return dataclasses.replace(self, slices=list(slices))
