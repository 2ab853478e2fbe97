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
           "output_folder", "suffix_of"]

#: Pixel sizes accepted for files that do not carry one (mm): MR images of the heart
#: are acquired at about 1-4 mm; outside this range a value is a unit slip (m, um).
PIXEL_SPACING_RANGE_MM = (0.1, 20.0)


def suffix_of(path: Path) -> str:
    """The file name's extension, lower case (``.nii.gz`` as one)."""
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


def output_file(path: str | Path, suffixes: tuple[str, ...], *, what: str = "output",
                inputs: tuple = ()) -> Path:
    """``path`` checked as a file to write: a known extension, not a folder, not one of
    the command's ``inputs`` (it would be overwritten), a writable folder (created if
    missing).

    Parameters
    ----------
    path : str or Path
    suffixes : tuple of str
        Accepted extensions, lower case with the dot (``".nii.gz"`` as one).
    what : str, keyword-only
        What the file is, for the message (e.g. ``"--displacement"``).
    inputs : tuple of str or Path, keyword-only
        The files the command reads.
    """
    path = Path(path)
    if any(path.resolve() == Path(p).resolve() for p in inputs if p):
        raise StudyError(f"{what} {path}: is the input; give another file name (it would "
                         "be overwritten)")
    if suffix_of(path) not in suffixes:
        raise StudyError(f"{what} {path}: expected a {' / '.join(suffixes)} file name")
    if path.is_dir():
        raise StudyError(f"{what} {path}: is a folder; give a file name")
    _writable(path.parent, f"{what} {path}")
    return path


def output_folder(path: str | Path, *, what: str = "output folder") -> Path:
    """``path`` checked as a folder to write results in (created if missing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StudyError(f"{what} {path}: is a file; give a folder")
    _writable(path, f"{what} {path}")
    return path


def _writable(folder: Path, label: str) -> None:
    """Make ``folder`` and write a scratch file in it, or a :class:`StudyError` naming
    ``label``: permissions alone do not say (root, read-only mounts, /proc).
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise StudyError(f"{label}: cannot write in {folder} ({exc.strerror})") from None


def check_pixel_spacing(value: float | None) -> float | None:
    """A pixel size given by the user (mm), or a :class:`StudyError` for a slip."""
    lo, hi = PIXEL_SPACING_RANGE_MM
    if value is None:
        return None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise StudyError(f"pixel spacing {value!r} mm: expected {lo}-{hi} mm (the size of one "
                         f"image pixel; MR images of the heart are about 1-4 mm)")
    return float(value)
