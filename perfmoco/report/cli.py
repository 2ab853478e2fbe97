"""``perfmoco report``: QA pages for result files or a whole batch output folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from perfmoco.config import Config
from perfmoco.study import StudyError

__all__ = ["make_reports"]

log = logging.getLogger(__name__)


def _results_in(folder: Path) -> list[tuple[Path, Path, str, str]]:
    """(result file, report folder, page name, title) for each result in a folder."""
    found = [
        (p, p.parent / "report", "report.html", p.parent.name)
        for p in sorted(folder.glob("*/result.h5"))
    ]
    found += [
        (p, folder / f"{p.stem}_report", "report.html", p.stem) for p in sorted(folder.glob("*.h5"))
    ]
    return found


def make_reports(
    input_path: str | Path, *, output: str | Path | None = None, config: Config | None = None
) -> tuple[list[Path], list[str]]:
    """Write the QA report of a result ``.h5``, or of every study of a batch folder.

    Parameters
    ----------
    input_path : str or Path
        A result file (``perfmoco batch`` / ``replay`` / ``demo``) or a folder:
        every ``*/result.h5`` (batch layout: the page goes to
        ``<study>/report/report.html`` and ``index.html`` is refreshed) and
        every ``*.h5`` at its top level (page in ``<stem>_report/``).
    output : str or Path, keyword-only, optional
        The page for a single file (default ``<input stem>_report/report.html``
        beside it); not allowed with a folder.
    config : Config, keyword-only

    Returns
    -------
    pages : list of Path
        Pages written.
    errors : list of str
        One line per result that could not be reported (the others still are).

    Raises
    ------
    StudyError
        When the input does not exist or a folder holds no result file.
    """
    from perfmoco.report.html import write_report
    from perfmoco.report.load import load_result

    src = Path(input_path)
    if src.is_dir():
        if output is not None:
            raise StudyError("-o/--output names the page of one result file, not of a folder")
        jobs = _results_in(src)
        if not jobs:
            raise StudyError(f"{src}: no result files (*.h5 or */result.h5) in the folder")
    elif src.is_file():
        out = Path(output) if output else src.parent / f"{src.stem}_report" / "report.html"
        if out.suffix.lower() not in (".html", ".htm"):
            raise StudyError(f"-o/--output must name an .html page, got {out}")
        jobs = [(src, out.parent, out.name, src.stem)]
    else:
        raise StudyError(f"{src}: no such file or folder")
    pages, errors = [], []
    for path, folder, name, title in jobs:
        try:
            result = load_result(path, config=config)
            pages.append(write_report(result, folder, title=title, html_name=name))
        except (StudyError, OSError, ValueError) as exc:
            log.info("%s: no report", path, exc_info=True)
            text = str(exc)
            errors.append(text if text.startswith(str(path)) else f"{path}: {text}")
    if src.is_dir():
        _refresh_index(src)
    return pages, errors


def _refresh_index(folder: Path) -> None:
    """Rewrite a batch folder's ``index.html`` from its studies' summaries."""
    from perfmoco.report.cohort import write_cohort_index

    summaries = []
    for path in sorted(folder.glob("*/summary.json")):
        try:
            s = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (path.parent / "report" / "report.html").is_file():
            s["report"] = "report/report.html"
        summaries.append(s)
    if summaries:
        write_cohort_index(summaries, folder)
