"""Checks of :func:`perfmoco.quant.study.quantify_study`'s per-slice inputs: one clear
error naming the slice, before any work, where they do not fit the study.
"""

from __future__ import annotations

import numpy as np

__all__ = ["check_inputs"]


def check_inputs(by_index, qc, displacements, pd_displacements) -> None:
    """Raise ValueError where ``qc`` (``(T,)`` flags), ``displacements`` (``(T, 2, Y, X)``)
    or ``pd_displacements`` (``(P, 2, Y, X)``, where the slice has PD frames) name a slice
    the study lacks (``by_index``: its slices by ``slice_index``) or have another shape.
    """
    for key, flags in (qc or {}).items():
        if key not in by_index:
            raise ValueError(f"qc names slice {key!r}, the study has {sorted(by_index)}")
        if np.shape(flags) != (by_index[key].n_dynamics,):
            raise ValueError(f"qc flags of slice {key} must have shape "
                             f"({by_index[key].n_dynamics},), got {np.shape(flags)}")
    _check_fields(by_index, displacements, "displacements", pd=False)
    _check_fields(by_index, pd_displacements, "pd_displacements", pd=True)


def _check_fields(by_index, fields, name: str, *, pd: bool) -> None:
    """A clear error where a slice's motion field is not ``(frames, 2, Y, X)`` of its
    dynamics (``pd``: of its PD frames, where it has any).
    """
    for key, d in (fields or {}).items():
        if key not in by_index:
            raise ValueError(f"{name} names slice {key!r}, the study has {sorted(by_index)}")
        s = by_index[key]
        frames = s.pd_images.shape[0] if pd else s.n_dynamics
        if d is None or frames == 0:
            continue
        want = (frames, 2, *s.images.shape[1:])
        if np.shape(d) != want:
            raise ValueError(f"{name} of slice {key} must have shape {want} (frames, 2, Y, X), "
                             f"got {np.shape(d)}")
