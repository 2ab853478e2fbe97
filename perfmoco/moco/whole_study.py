"""Every slice of a study corrected the way the product does it.

One place for the two steps that :func:`perfmoco.pipeline.process_study` and
the benchmarks run: each slice corrected with its LV as the stack check found
it (:func:`perfmoco.pipeline.stack_locations`), then the AIF slice's
pre-contrast frames moved with a tissue slice's breathing
(:mod:`perfmoco.moco.companion`, after the deep-learning correction only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from perfmoco.moco.result import MocoResult
from perfmoco.study import PerfusionStudy, SliceSeries, StudyError

__all__ = ["correct_slices"]

log = logging.getLogger(__name__)

#: What a slice's correction raises for a problem with its data (not a bug).
DATA_ERRORS = (StudyError, ValueError, RuntimeError)


def correct_slices(
    study: PerfusionStudy,
    correct: Callable[..., MocoResult],
    locations: Sequence | None = None,
    *,
    config,
    follow_tissue: bool = True,
    failed: Callable[[SliceSeries, Exception], None] | None = None,
    step: Callable[[str], None] | None = None,
) -> list[MocoResult | None]:
    """Correct every slice of ``study``; the AIF slice then follows the tissue slices.

    Parameters
    ----------
    study : PerfusionStudy
    correct : callable
        ``correct(series, lv=...) -> MocoResult`` (e.g. ``MotionCorrector.correct``
        or :func:`perfmoco.moco.iterative.correct_iterative`).
    locations : sequence, optional
        Each slice's LV (``LvLocation`` or None: found per slice), as
        :func:`perfmoco.pipeline.stack_locations` returns them.
    config : MocoConfig, keyword-only
        For :func:`perfmoco.moco.companion.follow_tissue_study`.
    follow_tissue : bool, keyword-only
        Run that step (the product does after the deep-learning correction).
    failed : callable, keyword-only, optional
        Called with the slice and the error when a slice's correction fails
        for its data; that slice's entry is then None, and a failing AIF step
        is logged and the slices' own corrections kept.  None: both raise.
    step : callable, keyword-only, optional
        Called with a short text after each slice.

    Returns
    -------
    list of MocoResult or None
        One per entry of ``study.slices``.
    """
    slices = list(study.slices)
    locs = list(locations) if locations is not None else [None] * len(slices)
    out: list[MocoResult | None] = []
    for s, lv in zip(slices, locs):
        try:
            out.append(correct(s, lv=lv))
        except DATA_ERRORS as exc:
            if failed is None:
                raise
            failed(s, exc)
            out.append(None)
        if step is not None:
            step(f"corrected {s.name}")
    if not follow_tissue:
        return out
    from perfmoco.moco.companion import follow_tissue_study

    try:
        return follow_tissue_study(slices, out, locs, config=config)
    except DATA_ERRORS as exc:  # the slices' own corrections stand
        if failed is None:
            raise
        log.warning("AIF slice's pre-contrast dynamics not moved with the tissue slices: %s", exc)
        return out
