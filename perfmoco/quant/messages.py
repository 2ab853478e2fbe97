"""Problems that still allow maps: kept for the study's messages, warned and logged."""

from __future__ import annotations

import logging
import warnings

__all__ = ["warn"]

log = logging.getLogger("perfmoco.quant")


def warn(msgs: list[str], text: str) -> None:
    """Append ``text`` to ``msgs``, issue it as a ``UserWarning`` and log it."""
    msgs.append(text)
    warnings.warn(text, stacklevel=3)
    log.warning(text)
