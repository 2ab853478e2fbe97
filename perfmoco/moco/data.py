"""Training / validation series for :mod:`perfmoco.moco.train`.

Sources: phantom studies generated from seeds (in parallel, cached as
pickles), a folder of MRD ``.h5`` / NIfTI / ``.npy`` series (a site's own
data; no truth), or the small synthetic series of :mod:`.synthetic`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing as mp
import os
import pickle
from pathlib import Path

import numpy as np

from perfmoco.phantom.params import LABELS
from perfmoco.study import SliceRole, SliceSeries

__all__ = ["load_series", "phantom_series", "slice_truth"]

log = logging.getLogger(__name__)

Item = tuple[SliceSeries, "dict | None"]


def slice_truth(truth, s: SliceSeries) -> dict | None:
    """What :func:`perfmoco.moco.evaluate.truth_metrics` needs of a phantom's truth, for one slice.

    The true masks, the motion-free myocardium and the true motion (so the
    masks are rendered once in the corrected frame) and the peak-LV dynamic;
    None where the truth has no masks for this slice.
    """
    keys = [f"s{s.slice_index}"] if s.role is SliceRole.HIGHRES else ["aif", "saif", "s_aif"]
    for k in keys:
        if f"{k}_myo_masks" in truth:
            out = {"myo_masks": np.asarray(truth[f"{k}_myo_masks"], bool)}
            if f"{k}_labels" in truth and f"{k}_displacement" in truth:
                myo = LABELS["lv_myocardium"]
                out["motion_free_mask"] = np.asarray(truth[f"{k}_labels"]) == myo
                out["displacement"] = np.asarray(truth[f"{k}_displacement"])
            if "lv_peak_dynamic" in truth:  # 1-based in the phantom's truth
                out["peak_index"] = int(truth["lv_peak_dynamic"]) - 1
            return out
    return None


def phantom_series(
    seed: int, *, vendor: str = "a", motion: str = "breathing", cache_dir: str | None = None
) -> list[Item]:
    """All slices (high-res + AIF) of one phantom study with their true masks.

    Parameters
    ----------
    seed : int
    vendor : {"a", "b"}, keyword-only
    motion : str, keyword-only
        ``generate_phantom``'s motion model.
    cache_dir : str, keyword-only, optional
        Folder of pickled studies (generated once per seed/vendor/motion).

    Returns
    -------
    list of (SliceSeries, dict or None)
    """
    path = Path(cache_dir) / f"phantom_{motion}_{vendor}_{seed}.pkl" if cache_dir else None
    if path is not None and path.is_file():
        with open(path, "rb") as fh:
            return pickle.load(fh)
    from perfmoco.phantom import generate_phantom

    ph = generate_phantom(seed=seed, motion=motion, vendor=vendor)
    items = []
    for s in ph.study.slices:
        items.append((s.replace(source=None), slice_truth(ph.truth, s)))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            pickle.dump(items, fh)
        tmp.replace(path)
    return items


def _phantom_job(args) -> list[Item]:
    seed, vendor, motion, cache = args
    return phantom_series(seed, vendor=vendor, motion=motion, cache_dir=cache)


def _phantoms(seeds, d: dict) -> list[Item]:
    vendors = list(d["vendors"]) or ["a"]
    jobs = [(s, vendors[s % len(vendors)], d["motion"], d["cache_dir"] or None) for s in seeds]
    workers = int(d["workers"]) or os.cpu_count() or 1
    if workers <= 1 or len(jobs) <= 1:
        results = [_phantom_job(j) for j in jobs]
    else:
        with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp.get_context("fork")) as ex:
            results = list(ex.map(_phantom_job, jobs))
    return [item for study in results for item in study]


def _synthetic(seeds) -> list[Item]:
    from perfmoco.moco.synthetic import synthetic_series

    out = []
    for s in seeds:
        rng = np.random.default_rng(s)
        t = np.arange(50)
        amp = rng.uniform(2, 8)
        shift = np.stack(
            [
                amp * np.sin(2 * np.pi * t / rng.uniform(3, 6)),
                0.4 * amp * np.cos(2 * np.pi * t / 5.0),
            ],
            1,
        )
        series, _, masks = synthetic_series(n_dynamics=50, shape=(144, 144), shift_px=shift, seed=s)
        out.append((series, {"myo_masks": masks}))
    return out


def _folder(d: dict) -> tuple[list[Item], list[Item]]:
    """A site's series: every study / series file of ``data.folder`` (not its subfolders);
    the first ``val_fraction`` of them by name (at least one) held out for validation.
    """
    from perfmoco.io.files import MRD_SUFFIXES, SERIES_SUFFIXES, read_study
    from perfmoco.study import StudyError

    if not d["folder"]:
        raise ValueError("data.folder is not set (the folder of the site's studies)")
    folder = Path(d["folder"])
    if not folder.is_dir():
        raise FileNotFoundError(f"data.folder {folder}: no such folder")
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.name.lower().endswith(MRD_SUFFIXES + SERIES_SUFFIXES))
    if len(files) < 2:
        raise ValueError(f"data.folder {folder}: {len(files)} study / series file(s) "
                         f"({', '.join(MRD_SUFFIXES + SERIES_SUFFIXES)}); training needs at "
                         "least 2, one of them held out for validation")
    n_val = min(max(1, int(round(len(files) * float(d["val_fraction"])))), len(files) - 1)
    spacing = float(d["pixel_spacing_mm"]) or None
    log.info("validation on %d held-out file(s): %s", n_val,
             ", ".join(p.name for p in files[:n_val]))

    def read(paths):
        out = []
        for p in paths:  # spacing for bare .npy series only: the others carry theirs
            try:
                study = read_study(p, pixel_spacing_mm=spacing
                                   if p.name.lower().endswith(".npy") else None)
            except StudyError as exc:
                msg = str(exc)
                raise StudyError(msg if str(p.name) in msg else f"{p.name}: {msg}") from None
            out += [(s, None) for s in study.slices]
        return out

    return read(files[n_val:]), read(files[:n_val])


def load_series(d: dict) -> tuple[list[Item], list[Item]]:
    """Training and validation series of a training config's ``data`` block.

    Returns
    -------
    train, val : list of (SliceSeries, dict or None)
        The dict holds the true ``myo_masks`` (phantom / synthetic only).
    """
    src = d["source"]
    if src == "phantom":
        return _phantoms(range(*d["train_seeds"]), d), _phantoms(range(*d["val_seeds"]), d)
    if src == "synthetic":
        return _synthetic(range(*d["train_seeds"])), _synthetic(range(*d["val_seeds"]))
    if src == "folder":
        return _folder(d)
    raise ValueError(f"data.source must be phantom, folder or synthetic, got {src!r}")
