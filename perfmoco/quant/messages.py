"""Problems that still allow maps: kept for the study's messages, warned and logged."""

from __future__ import annotations

import logging
import warnings

import numpy as np

__all__ = ["MIN_TAU0_S", "coil_not_followed", "implausible_shape", "warn"]

log = logging.getLogger("perfmoco.quant")


def warn(msgs: list[str], text: str) -> None:
    """Append ``text`` to ``msgs``, issue it as a ``UserWarning`` and log it."""
    msgs.append(text)
    warnings.warn(text, stacklevel=3)
    log.warning(text)


def coil_not_followed(msgs: list[str], name: str, reason: str, *, aif: bool = False) -> None:
    """Warn that M0 of ``name`` does not follow the surface coil through the motion.

    ``reason`` as :func:`perfmoco.quant.signal.coil_motion_factors` gives it.
    """
    whose, what = ("the AIF's M0", "[Gd]") if aif else ("M0", "MBF")
    warn(msgs, f"{name}: {whose} does not follow the surface-coil sensitivity through the "
               f"breathing motion ({reason}): {what} may be biased by the coil's change over "
               "the heart's excursion")


#: A delay fit whose Fermi shape ``tau0`` (s) lies below this is near-exponential: the
#: myocardium's mean curve looks like blood.  Over 16 studies after the DL correction
#: (11886-11889 a / b, 11908-11915) the study's fit read 2.8-6.6 s, except 0.65 s on
#: 11912 b, whose apical LV pool took a third of the wall (the ring lay off it); a
#: tenth of blood in a clean curve takes it from 4.0 to 3.4 s, a fifth to 0.9 s.
MIN_TAU0_S = 1.0


def implausible_shape(msgs: list[str], delay_fits, names: dict) -> None:
    """Warn where a fit that set the delays is not a myocardial curve's.

    A near-exponential shape, or a curve ahead of the AIF by the delay grid's
    whole reach (:func:`perfmoco.quant.grouped.not_myocardium`).  ``delay_fits`` as
    :func:`perfmoco.quant.grouped.fit_fermi_grouped` fills it; ``names`` maps its
    delay-group labels (slice indices) to slice names.
    """
    # here, not above: the fit modules import this one's neighbours (aif -> spillover)
    from perfmoco.quant.fermi import MIN_DELAY_S
    from perfmoco.quant.grouped import not_myocardium

    for labels, fit in delay_fits:
        for j in np.flatnonzero(not_myocardium(fit, MIN_TAU0_S)):
            where = ("the myocardium's mean curve (all slices)" if labels is None else
                     f"{names.get(int(labels[j]), labels[j])}: the myocardium's mean curve")
            tau0 = float(fit.tau0[j])
            what = (f"fits a near-exponential response (Fermi tau0 {tau0:.2f} s, under "
                    f"{MIN_TAU0_S:g} s), as blood does" if tau0 < MIN_TAU0_S else
                    f"rises {-MIN_DELAY_S:g} s or more before the AIF, as the RV's blood does")
            effect = "overestimated" if tau0 < MIN_TAU0_S else "wrong"
            warn(msgs, f"{where} {what}: the myocardial mask may hold blood (a ring off the "
                       f"wall, residual motion); MBF may be {effect}")
