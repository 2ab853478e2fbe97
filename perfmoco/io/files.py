"""Readers and writers: MRD HDF5 studies, NIfTI and ``.npy`` series.

MRD HDF5 files keep one ``image_N`` group per ``image_series_index`` (one
matrix size per group), as the MRD client tools write them; a series that holds
images of another matrix size or data type puts them in ``image_N_1``, ... .  NIfTI and npy
hold one bare slice series ``(T, Y, X)`` for offline research use (:mod:`perfmoco.io.series`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import ismrmrd

from perfmoco.config import MrdConfig
from perfmoco.io.mrd import group_by_series, images_to_study, study_header, study_to_images
from perfmoco.io.mrd_header import strip_nul
from perfmoco.io.paths import check_pixel_spacing, input_file, suffix_of
from perfmoco.io.series import load_npy, read_series, write_series
from perfmoco.study import PerfusionStudy, SliceRole, StudyError

__all__ = [
    "MRD_SUFFIXES",
    "SERIES_SUFFIXES",
    "load_npy",
    "read_mrd_images",
    "read_series",
    "read_study",
    "write_mrd_images",
    "write_series",
    "write_study",
]

log = logging.getLogger(__name__)

SERIES_SUFFIXES = (".npy", ".nii", ".nii.gz")
MRD_SUFFIXES = (".h5", ".hdf5", ".mrd")


def _image_names(path: Path, group: str | None) -> tuple[str, list[str]]:
    """The dataset group to read (``group``, else ``dataset`` or the file's only group)
    and its ``image_*`` group names, each checked (:func:`_image_group_problem`).

    One opening of the file with h5py, before ismrmrd reads it: ismrmrd would fail on
    a damaged group with a message about its own internals, or misplace images.
    """
    try:
        with h5py.File(path, "r") as f:
            groups = [k for k in f if isinstance(f[k], h5py.Group)]
            if not groups:
                raise StudyError(f"{path}: the file holds no MRD dataset (no groups)")
            if group is None:
                group = ("dataset" if "dataset" in groups
                         else groups[0] if len(groups) == 1 else None)
                if group is None:
                    raise StudyError(f"{path}: several groups {groups}; say which one to read")
            if group not in groups:
                raise StudyError(f"{path}: no group {group!r} (groups: {groups})")
            names = sorted(n for n in f[group] if n.startswith("image"))
            for name in names:
                problem = _image_group_problem(f[group][name])
                if problem:
                    raise StudyError(f"{path}: {group}/{name} {problem}")
    except OSError as exc:
        raise StudyError(f"{path}: not a readable HDF5 file ({exc})") from None
    return group, names


def _image_group_problem(node) -> str | None:
    """What makes an MRD ``image_*`` node unreadable as images, in words (None: nothing).

    ismrmrd reads each image's header and attributes by index and copies its data with
    numpy broadcasting: a ``data`` of other rows than ``header`` would drop or misplace
    images, and one of another shape than the header's matrix would be spread over it.
    """
    if not isinstance(node, h5py.Group):
        return "is not a group of header, data and attributes"
    missing = [k for k in ("header", "data") if k not in node]
    if missing:
        return f"has no {' or '.join(missing)}"
    header, data = node["header"], node["data"]
    rows = {"header": header.shape[:1], "data": data.shape[:1]}
    if "attributes" in node:
        rows["attributes"] = node["attributes"].shape[:1]
    if len(set(rows.values())) > 1:
        return "holds " + ", ".join(f"{r[0] if r else 0} {k}" for k, r in rows.items()) + (
            " rows: they must match, one per image")
    try:
        h = header[()]
        shapes = {(int(c), *map(int, m[::-1]))
                  for c, m in zip(h["channels"], h["matrix_size"])}
    except (KeyError, ValueError, TypeError):
        return "has a header that is not MRD's image header"
    if shapes != {tuple(data.shape[1:])}:
        return (f"holds data of shape {tuple(data.shape[1:])} per image where its headers say "
                f"(channels, z, y, x) {sorted(shapes)}")
    return None


def read_mrd_images(
    path: str | Path, *, group: str | None = None
) -> tuple[str | None, list[ismrmrd.Image]]:
    """Every image of an MRD HDF5 file, with its XML header.

    Parameters
    ----------
    path : str or Path
        The ``.h5`` file.
    group : str, keyword-only, optional
        The dataset group; default ``dataset`` or the file's only group.

    Returns
    -------
    header : str or None
        The MRD XML header, ``None`` if the file has none.
    images : list of ismrmrd.Image
        All images of all ``image_*`` groups, in file order.
    """
    path = input_file(path)
    group, names = _image_names(path, group)
    with ismrmrd.Dataset(str(path), group, create_if_needed=False, mode="r") as dset:
        try:
            header = strip_nul(dset.read_xml_header())
        except (KeyError, LookupError):
            header = None
        images = []
        for name in names:
            for i in range(dset.number_of_images(name)):
                try:
                    images.append(dset.read_image(name, i))
                except Exception as exc:  # ismrmrd raises what its XML / HDF5 parts raise
                    raise StudyError(f"{path}: image {i} of {name} cannot be read "
                                     f"({type(exc).__name__}: {exc})") from None
    if not images:
        raise StudyError(f"{path}: the file holds no images (group {group!r})")
    return header, images


def write_mrd_images(
    path: str | Path, header: str | None, images: Sequence[ismrmrd.Image], *, group: str = "dataset"
) -> None:
    """Write images to an MRD HDF5 file, one ``image_N`` group per series index.

    An existing file is replaced, so a re-run never mixes old and new results.
    """
    path = Path(path)
    if path.is_dir():
        raise StudyError(f"{path}: is a folder; give a file name for the MRD output")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        with ismrmrd.Dataset(str(tmp), group, create_if_needed=True) as dset:
            if header:
                dset.write_xml_header(header)
            for index, imgs in group_by_series(images).items():
                kinds: dict[tuple, str] = {}  # an HDF5 dataset holds one matrix size and type
                for img in imgs:
                    kind = (tuple(img.data.shape), img.data.dtype.str)
                    name = kinds.setdefault(kind, f"image_{index}" + (f"_{len(kinds)}" if kinds
                                                                       else ""))
                    dset.append_image(name, img)
        tmp.replace(path)
    finally:  # a failed write leaves nothing half-written behind
        tmp.unlink(missing_ok=True)


def write_study(study: PerfusionStudy, path: str | Path) -> None:
    """Write a study's original frames (PD, dynamics, AIF) as MRD HDF5."""
    write_mrd_images(path, study_header(study), study_to_images(study))


def _override_spacing(study: PerfusionStudy, mm: float) -> None:
    """``--pixel-spacing`` on an MRD study: the high-resolution slices' spacing, the
    others' (the AIF slice's coarser matrix) scaled with it, as the file has them.
    """
    ref = study.highres[0].pixel_spacing_mm if study.highres else None
    for s in study.slices:
        if ref and all(v > 0 for v in ref) and s.role is not SliceRole.HIGHRES:
            s.pixel_spacing_mm = tuple(mm * v / r for v, r in zip(s.pixel_spacing_mm, ref))
        else:
            s.pixel_spacing_mm = (mm, mm)
    if study.aif is not None:
        study.notes.append(
            f"pixel spacing {mm:g} mm set on the high-resolution slices (--pixel-spacing); "
            f"the AIF slice's scaled with it to {study.aif.pixel_spacing_mm[0]:.3g} mm")


def read_study(
    path: str | Path,
    *,
    config: MrdConfig | None = None,
    pixel_spacing_mm: float | None = None,
) -> PerfusionStudy:
    """A study from an MRD file, or a one-slice study from a bare npy / NIfTI series."""
    path = Path(path)
    suffix = suffix_of(path)
    if suffix in MRD_SUFFIXES:
        header, images = read_mrd_images(path)
        study = images_to_study(images, header, config=config, study_id=path.stem)
        if check_pixel_spacing(pixel_spacing_mm):
            _override_spacing(study, float(pixel_spacing_mm))
        return study
    notes: list[str] = []  # an assumed pixel spacing
    series = read_series(path, pixel_spacing_mm=pixel_spacing_mm, notes=notes)
    study = PerfusionStudy(slices=[series], study_id=path.name.split(".")[0],
                           notes=notes).with_finite_pixels()
    study.validate(min_dynamics=(config or MrdConfig()).min_dynamics)
    return study
