"""The study files of a batch's input folder and their output folders' names."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from perfmoco.study import StudyError

__all__ = ["INPUT_SUFFIXES", "find_inputs", "study_names"]

log = logging.getLogger(__name__)

#: Study files picked up from the input folder (lower-case name endings).
INPUT_SUFFIXES = (".h5", ".hdf5", ".mrd", ".npy", ".nii", ".nii.gz")


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in INPUT_SUFFIXES if name.endswith(s)), None)


def find_inputs(in_dir: str | Path) -> list[Path]:
    """The study files of a folder (top level only), sorted by name.

    Raises
    ------
    StudyError
        When ``in_dir`` is not a folder or holds no study file.
    """
    in_dir = Path(in_dir)
    if in_dir.is_file():
        raise StudyError(f"input folder {in_dir}: is a file; give the folder that holds the "
                         "studies")
    if not in_dir.is_dir():
        raise StudyError(f"input folder not found: {in_dir}")
    found = sorted(
        p for p in in_dir.iterdir()
        if p.is_file() and not p.name.startswith(".") and _suffix(p)
        and not p.name.lower().endswith((".truth.npz", ".part"))
    )
    if not found:
        raise StudyError(f"{in_dir}: no study files (MRD .h5 / .hdf5 / .mrd, .npy, .nii, "
                         f".nii.gz) in the folder (subfolders are not searched)")
    nested = sorted(p.relative_to(in_dir) for d in in_dir.iterdir()
                    if d.is_dir() and not d.name.startswith(".") for p in d.rglob("*")
                    if p.is_file() and _suffix(p) and not p.name.lower().endswith(
                        (".truth.npz", ".part")))
    if nested:
        log.warning("%s: %d study file(s) in subfolders left out (only the folder's own "
                    "files are processed): %s", in_dir, len(nested),
                    ", ".join(map(str, nested[:5])) + (" ..." if len(nested) > 5 else ""))
    return found


def study_names(paths: Sequence[Path]) -> list[str]:
    """Unique output folder names (also where case does not count, as on macOS and
    Windows): the file name without its suffix, then with it, then numbered.
    """
    stems = [p.name[: -len(_suffix(p) or "")] or p.name for p in paths]
    low = [s.lower() for s in stems]
    names = [stem if low.count(stem.lower()) == 1 else stem + (_suffix(p) or "").replace(".", "_")
             for stem, p in zip(stems, paths)]
    taken: set[str] = set()
    out = []
    for name in names:
        unique, k = name, 1
        while unique.lower() in taken:
            k += 1
            unique = f"{name}_{k}"
        taken.add(unique.lower())
        out.append(unique)
    return out
