"""Writing a phantom to disk: the study as MRD HDF5 plus its truth as ``.npz``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perfmoco.phantom.generate import Phantom

__all__ = ["truth_path", "write_phantom", "write_truth"]


def truth_path(path: str | Path) -> Path:
    """Truth file next to a study file: ``OUT.h5`` -> ``OUT.truth.npz``."""
    p = Path(path)
    return p.with_name(p.stem + ".truth.npz") if p.suffix else p.with_name(p.name + ".truth.npz")


def write_truth(phantom: Phantom, path: str | Path) -> Path:
    """Save ``phantom.truth`` with :func:`numpy.savez_compressed` next to ``path``.

    Parameters
    ----------
    phantom : Phantom
        A generated phantom.
    path : str or Path
        The study file (``OUT.h5``); the truth goes to ``OUT.truth.npz``.

    Returns
    -------
    Path
        The truth file written.
    """
    out = truth_path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as fh:  # a file object keeps numpy from renaming the file
        np.savez_compressed(fh, **phantom.truth)
    return out


def write_phantom(phantom: Phantom, path: str | Path) -> tuple[Path, Path]:
    """Write the study (:func:`perfmoco.io.files.write_study`) and its truth.

    Parameters
    ----------
    phantom : Phantom
        A generated phantom.
    path : str or Path
        Study file, e.g. ``OUT.h5`` (MRD HDF5); the truth goes to ``OUT.truth.npz``.

    Returns
    -------
    (Path, Path)
        The study file and the truth file.
    """
    from perfmoco.io.files import write_study  # the I/O layer sits above the phantom

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_study(phantom.study, p)
    return p, write_truth(phantom, p)
