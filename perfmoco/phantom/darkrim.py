"""A dark-rim artefact: the transient subendocardial dark band of first-pass images.

Real first-pass perfusion series show, in many patients, a thin dark band along the
endocardium while the LV blood is at its brightest (Gibbs ringing at the bright
blood's edge, the blood's motion during the readout, its susceptibility): it comes
and goes with the LV bolus, darker than the myocardium's own pre-contrast signal at
its worst, and is read as a subendocardial perfusion defect by eye and by fits that
take it as tissue.  The phantom has none by itself; :func:`dark_rim` adds one to a
copy of a phantom for the benchmarks (``benchmarks/bench_darkrim.py``) and tests.

Model: in each high-resolution slice's motion-free frame the myocardium within
``width_mm`` of the LV blood pool loses ``depth`` times the rise of the edge's
contrast (the LV blood's mean signal less the myocardium's, less their pre-contrast
difference: a ringing scales with the step it rings at, so the rim fades as the
myocardium enhances), falling linearly from the endocardial border to ``width_mm``;
moved with the frame's displacement, added to the noisy and the noise-free images
(magnitudes kept >= 0).  The truth is unchanged: the tissue's true [Gd] and MBF are
what they were.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from perfmoco.phantom.motion import warp
from perfmoco.phantom.params import LABELS

__all__ = ["dark_rim", "rim_profile"]


def rim_profile(labels: np.ndarray, spacing_mm, width_mm: float) -> np.ndarray:
    """Weight 1 at the endocardial border falling to 0 at ``width_mm`` into the myocardium.

    ``labels``: a motion-free label map; 0 outside the LV myocardium (float32).
    """
    blood = (labels == LABELS["lv_blood"]) | (labels == LABELS["papillary"])
    myo = labels == LABELS["lv_myocardium"]
    # distance from each pixel centre to the nearest blood pixel centre, less half a
    # pixel: from the border between them
    d = ndimage.distance_transform_edt(~blood, sampling=spacing_mm)
    d = d - 0.5 * float(np.mean(spacing_mm))
    return np.where(myo, np.clip(1.0 - d / width_mm, 0.0, 1.0), 0.0).astype(np.float32)


def dark_rim(ph, depth: float = 0.2, width_mm: float = 4.0, *, baseline_dynamics: int = 5):
    """A copy of phantom ``ph`` with a dark rim in its high-resolution slices.

    Parameters
    ----------
    ph : Phantom
    depth : float
        The rim's darkening at the endocardial border, as a fraction of the rise of the
        blood-myocardium contrast at the same dynamic.
    width_mm : float
        How far into the myocardium the rim reaches.
    baseline_dynamics : int
        Dynamics whose mean is the pre-contrast contrast.

    Returns
    -------
    Phantom
        Images and noise-free frames of slices ``s0``..``s2`` darkened; the AIF slice,
        the PD frames and the truth as they were.
    """
    if not 0.0 <= depth < 1.0 or width_mm <= 0.0:
        raise ValueError(f"depth must be in [0, 1) and width_mm > 0, got {depth}, {width_mm}")
    tr, clean, slices = ph.truth, dict(ph.noise_free), []
    for s in ph.study.slices:
        p = "aif" if s.role.value == "aif" else f"s{s.slice_index}"
        if p == "aif":
            slices.append(s)
            continue
        labels, free = tr[f"{p}_labels"], tr[f"{p}_motion_free"]
        profile = rim_profile(labels, tuple(tr["spacing_mm"]), width_mm)
        edge = (free[:, labels == LABELS["lv_blood"]].mean(axis=1)
                - free[:, labels == LABELS["lv_myocardium"]].mean(axis=1))
        rise = np.clip(edge - edge[:baseline_dynamics].mean(), 0.0, None)
        moved = warp(np.broadcast_to(profile, free.shape).astype(np.float32),
                     tr[f"{p}_displacement"])
        dip = (depth * rise[:, None, None] * moved).astype(np.float32)
        clean[p] = np.clip(clean[p] - dip, 0.0, None)
        slices.append(s.replace(images=np.clip(s.images - dip, 0.0, None)))
    return dataclasses.replace(ph, study=ph.study.replace_slices(slices), noise_free=clean)
