"""Shared helpers of the phantom tests (the fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from perfmoco.phantom import LABELS
from perfmoco.study import SliceRole

PREFIXES = ("s0", "s1", "s2", "aif")
MYO, LV = LABELS["lv_myocardium"], LABELS["lv_blood"]


def pull_back(images, disp):
    """Independent pull-back warp with linear interpolation, frame by frame."""
    out = np.empty_like(images)
    ny, nx = images.shape[1:]
    iy, ix = np.mgrid[0:ny, 0:nx].astype(np.float64)
    for t in range(images.shape[0]):
        out[t] = ndimage.map_coordinates(images[t], [iy + disp[t, 0], ix + disp[t, 1]],
                                         order=1, mode="nearest")
    return out


def prefix(s):
    return "aif" if s.role is SliceRole.AIF else f"s{s.slice_index}"
