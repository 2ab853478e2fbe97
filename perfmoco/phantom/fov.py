"""Tight fields of view: a phantom cut close to its heart, as some sites store a series.

Sites with a reduced phase field of view or a small matrix put the heart near the
image's edge, where registration crops and surface-coil fits run out of image.
:func:`fov_corner` makes such a copy of a phantom, truth and noise-free frames cut
alike, for the benchmarks (``bench_moco.py --fov``, ``bench_robustness.py``) and tests.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from perfmoco.study import SliceRole

__all__ = ["fov_corner"]


def fov_corner(ph, margin_mm: float, corner: str = "top-right"):
    """A copy of a phantom whose slices are cut close to the heart.

    Parameters
    ----------
    ph : Phantom
    margin_mm : float
        Distance kept from the heart's myocardium (over all frames) to the new edges.
    corner : {"top-right", "bottom-left"}
        Cut above and to the right of the heart, or below and to the left.

    Returns
    -------
    Phantom
        Images, PD frames, the slices' geometry (position and field of view), the
        truth's and the noise-free frames' arrays all cut alike.
    """
    if corner not in ("top-right", "bottom-left"):
        raise ValueError(f"corner must be top-right or bottom-left, got {corner!r}")
    slices, truth, clean = [], dict(ph.truth), dict(ph.noise_free)
    for s in ph.study.slices:
        prefix = "aif" if s.role is SliceRole.AIF else f"s{s.slice_index}"
        ys, xs = np.nonzero(np.asarray(ph.truth[f"{prefix}_myo_masks"]).any(axis=0))
        ny, nx = s.shape
        m = int(round(margin_mm / s.pixel_spacing_mm[0]))
        y0, y1, x0, x1 = 0, ny, 0, nx
        if corner == "top-right":
            y0, x1 = max(0, int(ys.min()) - m), min(nx, int(xs.max()) + 1 + m)
        else:
            y1, x0 = min(ny, int(ys.max()) + 1 + m), max(0, int(xs.min()) - m)

        def cut(a, shape=(ny, nx), rows=slice(y0, y1), cols=slice(x0, x1)):  # slice's grid
            a = np.asarray(a)
            ok = a.ndim >= 2 and a.shape[-2:] == shape
            return np.ascontiguousarray(a[..., rows, cols]) if ok else a

        geo = s.geometry
        if geo is not None:  # the new matrix's centre, and its field of view
            dy = ((y0 + y1 - 1) / 2 - (ny - 1) / 2) * s.pixel_spacing_mm[0]
            dx = ((x0 + x1 - 1) / 2 - (nx - 1) / 2) * s.pixel_spacing_mm[1]
            pos = np.add(geo.position,
                         dy * np.asarray(geo.phase_dir) + dx * np.asarray(geo.read_dir))
            fov = (geo.field_of_view_mm[0] * (x1 - x0) / nx,
                   geo.field_of_view_mm[1] * (y1 - y0) / ny, geo.field_of_view_mm[2])
            geo = dataclasses.replace(geo, position=tuple(float(v) for v in pos),
                                      field_of_view_mm=fov)
        slices.append(s.replace(images=cut(s.images), pd_images=cut(s.pd_images), geometry=geo))
        for k in [k for k in truth if k.startswith(prefix + "_")]:
            truth[k] = cut(truth[k])
        for k in [k for k in clean if k == prefix or k.startswith(prefix + "_")]:
            clean[k] = cut(clean[k])
    return dataclasses.replace(ph, study=ph.study.replace_slices(slices), truth=truth,
                               noise_free=clean)
