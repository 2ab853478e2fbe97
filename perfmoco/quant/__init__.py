"""Quantification: PD surface-coil correction, dual-sequence AIF, Fermi MBF maps, AHA segments.

:func:`quantify_study` turns a motion-corrected :class:`~perfmoco.study.PerfusionStudy`
into pixel-wise stress MBF maps (ml/min/g) and a 16-segment table
(:mod:`perfmoco.quant.study`); :func:`quantify_curves` fits curves already converted to
[Gd] (research CLI, :mod:`perfmoco.quant.curves`).
"""

from __future__ import annotations

from perfmoco.quant.aif import AifResult
from perfmoco.quant.curves import quantify_curves
from perfmoco.quant.fermi import FermiFit, fit_fermi
from perfmoco.quant.pixels import core_pixels
from perfmoco.quant.result import QuantResult
from perfmoco.quant.segments import MIN_CORE_ARC, segment_pixels
from perfmoco.quant.study import quantify_study

__all__ = [
    "AifResult",
    "FermiFit",
    "MIN_CORE_ARC",
    "QuantResult",
    "core_pixels",
    "fit_fermi",
    "quantify_curves",
    "quantify_study",
    "segment_pixels",
]
