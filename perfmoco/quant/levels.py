"""Level (basal, mid, apical) of each high-resolution slice, for the AHA segments.

Three slices, most basal first, are basal, mid and apical; one is mid; more are
split into thirds (:func:`perfmoco.quant.segments.slice_levels`).  Two slices are
either basal and mid or mid and apical (a site that leaves out the basal slice,
e.g. for the outflow tract): the LV cavity tells them apart.  Towards the apex the
cavity narrows fast: on the phantom (18 hearts, scales 0.75-1.35) the mid cavity is
0.74-0.91 of the basal one's area and the apical 0.37-0.48 of the mid one's.  A
site that knows its protocol names the levels (``quant.slice_levels``).
"""

from __future__ import annotations

import logging

import numpy as np

from perfmoco.config import parse_slice_levels
from perfmoco.quant.messages import warn
from perfmoco.quant.segments import slice_levels
from perfmoco.study import StudyError

__all__ = ["APICAL_CAVITY_RATIO", "study_levels"]

log = logging.getLogger(__name__)

#: Of two slices, the second (apex-ward) is taken as apical, the first as mid, where
#: its LV cavity's area is below this share of the first's.
APICAL_CAVITY_RATIO = 0.6


def study_levels(highres, work: dict, setting: str, msgs: list[str]) -> list[str]:
    """Level of each slice of ``highres`` (most basal first).

    ``work`` maps slice indices to :class:`perfmoco.quant.anatomy.SliceWork` (the
    slices whose LV was found); ``setting`` is ``quant.slice_levels``.

    Raises
    ------
    StudyError
        Where the setting names a different number of levels than there are slices.
    """
    order = [s.slice_index for s in highres]
    if order != sorted(order):  # PerfusionStudy.highres: by the slices' positions
        warn(msgs, f"high-resolution slices taken base to apex in the order of their "
                   f"positions in the image headers, slices {', '.join(map(str, order))}, not "
                   f"in the order of their numbers (set quant.slice_levels if that is wrong)")
    named = parse_slice_levels(setting)
    if named is not None:
        if len(named) != len(highres):
            raise StudyError(f"quant.slice_levels names {len(named)} level(s) "
                             f"({', '.join(named)}) but the study has {len(highres)} "
                             "high-resolution slice(s)")
        return list(named)
    levels = slice_levels(len(highres))
    if len(highres) != 2 or not all(s.slice_index in work for s in highres):
        return levels
    area = [float((work[s.slice_index].blood & ~work[s.slice_index].rv).sum()
                  * np.prod(s.pixel_spacing_mm)) for s in highres]
    ratio = area[1] / max(area[0], 1e-9)
    if ratio < APICAL_CAVITY_RATIO:
        warn(msgs, f"two high-resolution slices, taken as mid and apical: the second's LV "
                   f"cavity is {ratio:.0%} of the first's ({area[1]:.0f} against "
                   f"{area[0]:.0f} mm2), as an apical slice's is (set quant.slice_levels "
                   "to name them)")
        return ["mid", "apical"]
    log.info("two high-resolution slices, taken as basal and mid: the second's LV cavity is "
             "%.0f%% of the first's", 100 * ratio)
    return levels
