"""Failures logged as one line; their traceback only in the detailed log.

The command line shows warnings and errors (``-v``: everything); a failure
that the product survives (a slice passed back uncorrected, a study of a
batch left out) is reported to the user by its message, so its traceback,
which only a developer reads, goes to the INFO level: the servers' and
``-v`` logs keep it, the console does not print it.
"""

from __future__ import annotations

import contextlib
import logging
import sys

__all__ = ["log_failure", "quiet"]


def log_failure(logger: logging.Logger, msg: str, *args) -> None:
    """Log ``msg % args`` with the exception being handled, as one ERROR line;
    its traceback at INFO.
    """
    exc = sys.exc_info()[1]
    detail = "" if exc is None else f" ({type(exc).__name__}: {exc})"
    logger.error("%s%s", msg % args if args else msg, detail)
    if exc is not None:
        logger.info("traceback of the failure above", exc_info=True)


@contextlib.contextmanager
def quiet(name: str, level: int = logging.ERROR):
    """Logger ``name`` at ``level`` or above for the block (a library's start/stop chatter,
    such as a Dask cluster's).
    """
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(max(before, level))
    try:
        yield
    finally:
        logger.setLevel(before)
