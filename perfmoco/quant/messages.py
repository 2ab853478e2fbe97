"""Problems that still allow maps: kept for the study's messages, warned and logged."""

from __future__ import annotations

import logging
import warnings

import numpy as np

__all__ = ["MIN_TAU0_S", "ODD_M0", "PLAUSIBLE_EFFICIENCY", "SLICE_EFFICIENCY_SPREAD",
           "coil_not_followed", "implausible_efficiency", "odd_slice_efficiency",
           "implausible_shape", "suspect_segments", "unmeasured_scales", "warn"]

log = logging.getLogger("perfmoco.quant")


def warn(msgs: list[str], text: str) -> None:
    """Append ``text`` to ``msgs``, issue it as a ``UserWarning`` and log it."""
    msgs.append(text)
    warnings.warn(text, stacklevel=3)
    log.warning(text)


#: Effective saturation efficiencies a saturation pulse gives, with some margin (the phantom
#: draws 0.76-0.86, scanners' sequences up to ~1; above 1 / exp(-TS / T1) no signal model
#: fits).  Outside it, the PD frames are not the dynamics' M0.
PLAUSIBLE_EFFICIENCY = (0.6, 1.1)


def implausible_efficiency(msgs: list[str], measured: dict[str, float], *,
                           pd_scale: float) -> bool:
    """Warn where the measured saturation efficiency says the PD frames are not ``M0``.

    ``measured``: per sequence (``"highres"``, ``"aif"``), the efficiency that the
    pre-contrast signal against the PD frames' ``M0`` gives
    (:func:`perfmoco.quant.signal.saturation_efficiency`).  PD frames read out with
    another flip angle than the dynamics (a low-angle PD readout is common) are
    darker than the dynamics' ``M0`` by a factor ``c``; the efficiency then reads
    ``(1 - (1 - eta E) / c) / E`` (``E = exp(-TS / T1)``), e.g. 0.45 instead of 0.76
    at ``c`` 0.5, and every [Gd] is wrong (MBF off by 0.4 ml/min/g at ``c`` 0.7, most
    pixels saturated at 0.5, on phantom 12335 a).  Only gross mismatches are told
    apart from a sequence's own efficiency: ``c`` under about 0.55 where ``eta`` is
    0.8.  Returns whether it warned.
    """
    lo, hi = PLAUSIBLE_EFFICIENCY
    odd = {k: v for k, v in measured.items() if np.isfinite(v) and not lo <= v <= hi}
    if odd:
        vals = ", ".join(f"{v:.2f} ({'AIF' if k == 'aif' else 'high-resolution'} slices)"
                         for k, v in odd.items())
        warn(msgs, f"the PD frames do not read as the dynamics' M0: the pre-contrast signal "
                   f"against them gives a saturation efficiency of {vals}, where a saturation "
                   f"pulse gives {lo:g}-{hi:g}. PD frames read out with another flip angle? "
                   f"Set quant.pd_scale (M0 / PD signal, now {pd_scale:g}) for this protocol; "
                   "until then [Gd] and MBF are wrong")
    return bool(odd)


def coil_not_followed(msgs: list[str], name: str, reason: str, *, aif: bool = False) -> None:
    """Warn that M0 of ``name`` does not follow the surface coil through the motion.

    ``reason`` as :func:`perfmoco.quant.signal.coil_motion_factors` gives it.
    """
    whose, what = ("the AIF's M0", "[Gd]") if aif else ("M0", "MBF")
    warn(msgs, f"{name}: {whose} does not follow the surface-coil sensitivity through the "
               f"breathing motion ({reason}): {what} may be biased by the coil's change over "
               "the heart's excursion")


#: The slices of one sequence share its saturation pulse, so their measured efficiencies
#: agree (on phantoms within 0.005); a slice this far from the others' median has an M0 off
#: (a PD frame off the heart, its own PD scaling): 0.05 is an M0 ~13 % low, which reads
#: MBF ~1 ml/min/g high on phantoms (20 %: +1.3, 30 %: +2.5-2.9), until now silently.
SLICE_EFFICIENCY_SPREAD = 0.05


def odd_slice_efficiency(msgs: list[str], per_slice: dict[int, tuple[str, float]]) -> set[int]:
    """Warn of the slices whose saturation efficiency is not their sequence's.

    ``per_slice``: ``slice_index -> (name, measured efficiency)`` of the high-resolution
    slices.  With at least three measured (slices with PD frames), the one furthest from
    the median of the others is named where that is more than
    :data:`SLICE_EFFICIENCY_SPREAD` and the others agree within half of it (three evenly
    spread values have no majority to go by: none is named).  Returns the slices named
    (at most one).
    """
    vals = {k: v for k, (_, v) in per_slice.items() if np.isfinite(v)}
    out: set[int] = set()
    if len(vals) < 3:
        return out

    def gap(k):
        return abs(vals[k] - float(np.median([w for j, w in vals.items() if j != k])))

    k = max(vals, key=gap)
    v = vals[k]
    others = np.array([w for j, w in vals.items() if j != k])
    mid = float(np.median(others))
    if (abs(v - mid) > SLICE_EFFICIENCY_SPREAD
            and np.abs(others - mid).max() <= SLICE_EFFICIENCY_SPREAD / 2):
        out.add(k)
        warn(msgs, f"{per_slice[k][0]}: its pre-contrast signal against its PD frames gives "
                   f"a saturation efficiency of {v:.3f}, the other slices' {mid:.3f}: its "
                   f"M0 is {'low' if v < mid else 'high'} (a PD frame off the heart, PD "
                   "frames of another scaling?), so its MBF reads "
                   f"{'high' if v < mid else 'low'}; left out of the study's delay fit, "
                   "its segments marked unreliable")
    return out


#: Why :func:`odd_slice_efficiency`'s slices' segments are not to be trusted.
ODD_M0 = "its slice's M0 (PD frames) does not match the other slices'"


#: A delay fit whose Fermi shape ``tau0`` (s) lies below this is near-exponential: the
#: myocardium's mean curve looks like blood.  Over 16 studies after the DL correction
#: (11886-11889 a / b, 11908-11915) the study's fit read 2.8-6.6 s, except 0.65 s on
#: 11912 b, whose apical LV pool took a third of the wall (the ring lay off it); a
#: tenth of blood in a clean curve takes it from 4.0 to 3.4 s, a fifth to 0.9 s.
MIN_TAU0_S = 1.0


def implausible_shape(msgs: list[str], delay_fits, names: dict) -> set[int]:
    """Warn where a fit that set the delays is not a myocardial curve's.

    A near-exponential shape, or a curve ahead of the AIF by the delay grid's
    whole reach (:func:`perfmoco.quant.grouped.not_myocardium`).  ``delay_fits`` as
    :func:`perfmoco.quant.grouped.fit_fermi_grouped` fills it; ``names`` maps its
    delay-group labels (slice indices) to slice names.  Returns the slices whose
    MBF the warnings concern: those named, or all of ``names`` where the study's
    fit (all slices) is the one.
    """
    # here, not above: the fit modules import this one's neighbours (aif -> spillover)
    from perfmoco.quant.fermi import MIN_DELAY_S
    from perfmoco.quant.grouped import not_myocardium

    suspect: set[int] = set()
    for labels, fit in delay_fits:
        for j in np.flatnonzero(not_myocardium(fit, MIN_TAU0_S)):
            suspect |= set(names) if labels is None else {int(labels[j])}
            where = ("the myocardium's mean curve (all slices)" if labels is None else
                     f"{names.get(int(labels[j]), labels[j])}: the myocardium's mean curve")
            tau0 = float(fit.tau0[j])
            what = (f"fits a near-exponential response (Fermi tau0 {tau0:.2f} s, under "
                    f"{MIN_TAU0_S:g} s), as blood does" if tau0 < MIN_TAU0_S else
                    f"rises {-MIN_DELAY_S:g} s or more before the AIF, as the RV's blood does")
            effect = "overestimated" if tau0 < MIN_TAU0_S else "wrong"
            warn(msgs, f"{where} {what}: the myocardial mask may hold blood (a ring off the "
                       f"wall, residual motion); MBF may be {effect}")
    return suspect


#: Why :func:`implausible_shape`'s slices' segments are not to be trusted.
BLOOD_LIKE = "its slice's mean curve looks like blood (residual motion, a ring off the wall)"


def suspect_segments(rows: list[dict], slices=None, why: str = BLOOD_LIKE) -> None:
    """Mark the segment rows of ``slices`` (None: all) unreliable for ``why``, in place: a
    problem the study warned of makes their values doubtful even where their own spread is small
    (:func:`implausible_shape`'s slices: fresh 12490 a after the DL correction, its two
    such slices' segments read +0.76 and +1.04 ml/min/g on average, the third +0.56).
    """
    for r in rows:
        if slices is None or int(r["slice"]) in slices:
            r["reason"] = "; ".join(x for x in (r.get("reason"), why) if x)
            r["reliable"] = False


def unmeasured_scales(aif_series, highres, config, *,
                      aif_calibrated: bool = False) -> list[tuple[str, set | None]]:
    """``(why, slices)`` for :func:`suspect_segments` where a series without PD frames takes
    its ``M0`` from its baseline and a saturation efficiency left at its default.

    ``M0 = S_pre / (1 - eta exp(-TS / T1))``: at the AIF's short TS an efficiency off by a
    tenth moves ``M0`` several-fold (12928 a noise-free, PD frames on the high-resolution
    slices only: the AIF 0.35 mmol/l at its peak against 3.52, every pixel at the cap), at
    the high-resolution slices' TS about two-fold (``bench_robustness.py`` ``nopd``: segment
    error 3.18).  A site that sets ``quant.saturation_efficiency_*`` from its studies with PD
    frames (their summary prints it) is not named, nor an AIF whose ``M0`` was calibrated on
    the high-resolution slices' blood (``aif_calibrated``, :mod:`perfmoco.quant.calibrate`).
    ``aif_series``: the series the AIF came from (all segments: None); ``highres``: the
    slices (their own segments).
    """
    out: list[tuple[str, set | None]] = []
    is_aif = aif_series.role.value == "aif"
    if aif_series.pd_images.shape[0] == 0 and not aif_calibrated \
            and not config.no_pd_efficiency_set(aif=is_aif):
        key = config.no_pd_efficiency(aif=is_aif)[0]
        out.append((f"{aif_series.name} has no PD frames and {key} is not set for this "
                    "protocol: the AIF's [Gd] scale, and every MBF, is not known", None))
    bare = {s.slice_index for s in highres if s.pd_images.shape[0] == 0}
    if bare and not config.no_pd_efficiency_set(aif=False):
        out.append((f"no PD frames and {config.no_pd_efficiency(aif=False)[0]} not set for "
                    "this protocol: the slice's [Gd] scale is not known", bare))
    return out
