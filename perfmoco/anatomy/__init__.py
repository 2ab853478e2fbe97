"""Automatic localisation of the heart from the temporal signature of a perfusion series.

Nothing here depends on the intensity scale, the matrix size or the in-plane
orientation of the series: the blood pools are found from *enhancement*
(signal minus the pre-contrast baseline) and from *timing* (the right
ventricle enhances a few beats before the left), with size priors in mm.  The
receive coils' shading, which scales enhancement, is taken out first by the callers
that have PD frames (:mod:`perfmoco.anatomy.shading`).

Angles and the RV insertion points follow the convention of
:mod:`perfmoco.quant.segments` (see there).
"""

from perfmoco.anatomy.myocardium import rv_insertion_points, segment_myocardium
from perfmoco.anatomy.pools import BloodPools, find_blood_pools

__all__ = [
    "BloodPools",
    "find_blood_pools",
    "rv_insertion_points",
    "segment_myocardium",
]
