"""Problems that still allow maps: kept for the study's messages, warned and logged."""

from __future__ import annotations

import logging
import warnings

__all__ = ["coil_not_followed", "warn"]

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
