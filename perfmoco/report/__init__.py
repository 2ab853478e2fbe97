"""Visual QA reports of processed studies.

- :func:`write_report` - a self-contained HTML page (images beside it) per study;
- :func:`report_images` - the bullseye and MBF maps as MRD secondary-capture images;
- :func:`load_result` - rebuild a study result from a result ``.h5`` written by
  ``perfmoco batch`` / ``replay`` / ``demo``.

Figures are drawn with matplotlib's Agg canvas (no display, no pyplot state).
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_result", "report_images", "write_report"]


def __getattr__(name: str) -> Any:
    # Lazy: importing perfmoco.report must not import matplotlib.
    if name == "write_report":
        from perfmoco.report.html import write_report

        return write_report
    if name == "report_images":
        from perfmoco.report.capture import report_images

        return report_images
    if name == "load_result":
        from perfmoco.report.load import load_result

        return load_result
    raise AttributeError(f"module 'perfmoco.report' has no attribute {name!r}")
