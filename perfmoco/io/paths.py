"""Input and output paths checked before any work, with one clear message each.

A long correction that fails only when it writes its result (a folder given as
the output, a misspelt extension, a read-only place) loses the user's time; a
path that names a folder is not "no such file".  The command line and the batch
runner check their paths here first.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from perfmoco.study import StudyError

__all__ = ["PIXEL_SPACING_RANGE_MM", "check_pixel_spacing", "input_file", "output_file",
           "output_folder"]

#: Pixel sizes accepted for files that do not carry one (mm): MR images of the heart
#: are acquired at about 1-4 mm; outside this range a value is a unit slip (m, um).
PIXEL_SPACING_RANGE_MM = (0.1, 20.0)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def input_file(path: str | Path) -> Path:
    """``path`` if it is a file to read, else a :class:`StudyError` saying what it is."""
    path = Path(path)
    if path.is_dir():
        raise StudyError(f"{path}: is a folder, not a file")
    if not path.is_file():
        raise StudyError(f"{path}: no such file")
    return path


def output_file(path: str | Path, suffixes: tuple[str, ...], *, what: str = "output") -> Path:
    """``path`` checked as a file to write: a known extension, not a folder, a
    writable folder (created if missing).

    Parameters
    ----------
    path : str or Path
    suffixes : tuple of str
        Accepted extensions, lower case with the dot (``".nii.gz"`` as one).
    what : str, keyword-only
        What the file is, for the message (e.g. ``"--displacement"``).
    """
    path = Path(path)
    if _suffix(path) not in suffixes:
        raise StudyError(f"{what} {path}: expected a {' / '.join(suffixes)} file name")
    if path.is_dir():
        raise StudyError(f"{what} {path}: is a folder; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StudyError(f"{what} {path}: cannot create its folder ({exc.strerror})") from None
    try:  # a real write: permissions alone do not say (root, read-only mounts, /proc)
        with tempfile.TemporaryFile(dir=path.parent):
            pass
    except OSError as exc:
        raise StudyError(f"{what} {path}: cannot write in {path.parent} ({exc.strerror})") from None
    return path


def output_folder(path: str | Path, *, what: str = "output folder") -> Path:
    """``path`` checked as a folder to write results in (created if missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StudyError(f"{what} {path}: is a file; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise StudyError(f"{what} {path}: cannot write there ({exc.strerror})") from None
    return path


def check_pixel_spacing(value: float | None) -> float | None:
    """A pixel size given by the user (mm), or a :class:`StudyError` for a slip."""
    lo, hi = PIXEL_SPACING_RANGE_MM
    if value is None:
        return None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise StudyError(f"pixel spacing {value!r} mm: expected {lo}-{hi} mm (the size of one "
                         f"image pixel; MR images of the heart are about 1-4 mm)")
    return float(value)
