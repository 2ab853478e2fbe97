"""Failures logged as one line; their traceback only in the detailed log.

The command line shows warnings and errors (``-v``: everything); a failure
that the product survives (a slice passed back uncorrected, a study of a
batch left out) is reported to the user by its message, so its traceback,
which only a developer reads, goes to the INFO level: the servers' and
``-v`` logs keep it, the console does not print it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys

__all__ = ["log_failure", "quiet", "shown", "study_named"]

#: The study whose work is being logged (``study_named``); None: none.
_STUDY: contextvars.ContextVar[str | None] = contextvars.ContextVar("perfmoco_study",
                                                                   default=None)


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


@contextlib.contextmanager
def shown(*names: str, level: int = logging.INFO):
    """Loggers ``names`` at ``level`` for the block (a command's progress lines, which the
    console otherwise leaves out), as they were after it.
    """
    loggers = [logging.getLogger(n) for n in names]
    before = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(level)
    try:
        yield
    finally:
        for lg, b in zip(loggers, before):
            lg.setLevel(b)


def _named_records(make):
    """A log record factory: records of perfmoco's loggers made while a study is named
    (``study_named``) start with its name.
    """
    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        study = _STUDY.get()
        if study and record.name.startswith("perfmoco") and isinstance(record.msg, str):
            prefix = study.replace("%", "%%") if record.args else study
            record.msg = f"{prefix}: {record.msg}"
        return record

    factory.perfmoco_named = True
    return factory


@contextlib.contextmanager
def study_named(name: str):
    """Log lines of perfmoco's loggers in the block start with ``name: `` (a batch's workers run
    several studies at once, and their lines reach one console).
    """
    if not getattr(logging.getLogRecordFactory(), "perfmoco_named", False):
        logging.setLogRecordFactory(_named_records(logging.getLogRecordFactory()))
    token = _STUDY.set(name)
    try:
        yield
    finally:
        _STUDY.reset(token)
