"""The LV of every slice of a study before the motion correction, checked against the stack.

See :mod:`perfmoco.anatomy.stack` for the check.
"""

from __future__ import annotations

from collections.abc import Sequence

from perfmoco.anatomy.stack import TOLERANCE_MM, accept, stack_outliers
from perfmoco.moco.preprocess import LvLocation, locate_lv
from perfmoco.study import SliceSeries

__all__ = ["locate_lv_stack"]


def locate_lv_stack(slices: Sequence[SliceSeries], *, tolerance_mm: float = TOLERANCE_MM,
                    locations: Sequence[LvLocation] | None = None) -> list[LvLocation]:
    """The LV of every slice (:func:`.preprocess.locate_lv`), outliers searched again.

    Parameters
    ----------
    slices : sequence of SliceSeries
        The slices of one study (high-resolution and AIF alike).
    tolerance_mm : float, keyword-only
        See :func:`stack_outliers`.
    locations : sequence of LvLocation, keyword-only, optional
        Each slice's own result, when already known.

    Returns
    -------
    list of LvLocation
        One per slice, in the slices' order and pixel layout.
    """
    locs = list(locations) if locations is not None else [locate_lv(s) for s in slices]
    far = stack_outliers(slices, [loc.centre_yx for loc in locs], tolerance_mm=tolerance_mm)
    for i, (near, dist) in far.items():
        again = locate_lv(slices[i], near_yx=near, near_mm=tolerance_mm)
        if accept(slices[i], again.centre_yx, near, dist):
            locs[i] = again
    return locs
