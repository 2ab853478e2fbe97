"""Headless Chromium for tests: load a local page, count its loaded images, catch console errors.

Chromium comes from Debian's packages (``scripts/install_browser.sh``, run by
the test set-up); tests that need it skip with a clear reason when it is absent.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

__all__ = ["PageLoad", "find_chromium", "load_page", "screenshot"]

#: Appended to a copy of the page: after the load event the title becomes
#: "images LOADED/TOTAL", LOADED counting <img> elements that decoded (naturalWidth > 0).
_PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++; }
  document.title = 'images ' + ok + '/' + imgs.length;
});
</script>"""

_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
          "--disable-extensions", "--hide-scrollbars", "--enable-logging=stderr", "--v=0",
          "--virtual-time-budget=15000"]


@dataclasses.dataclass
class PageLoad:
    """What the browser made of a page."""

    images_loaded: int
    images_total: int
    console: list[str]  #: console messages (the report has no script: any is a problem)
    dom: str


def find_chromium() -> str | None:
    """Path of a chromium executable, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (run scripts/install_browser.sh)")
    return subprocess.run([exe, *_FLAGS, *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def load_page(page: Path, *, timeout: float = 90.0) -> PageLoad:
    """Open ``page`` from disk in headless Chromium, with an image-counting probe.

    The probe goes into a copy of the page in the same folder, so relative
    links resolve exactly as for the page itself.
    """
    page = Path(page).resolve()
    probe = page.with_name(page.stem + ".probe.html")
    text = page.read_text(encoding="utf-8")
    probe.write_text(text.replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    try:
        proc = _run(["--dump-dom", probe.as_uri()], timeout)
    finally:
        probe.unlink(missing_ok=True)
    m = re.search(r"<title>images (\d+)/(\d+)</title>", proc.stdout)
    console = [ln for ln in proc.stderr.splitlines() if ":CONSOLE" in ln or "Uncaught" in ln]
    return PageLoad(int(m[1]) if m else -1, int(m[2]) if m else -1, console, proc.stdout)


def screenshot(page: Path, out_png: Path, *, size: tuple[int, int] = (1300, 2400),
               timeout: float = 90.0) -> Path:
    """A PNG screenshot of ``page`` (width, height in CSS pixels)."""
    _run([f"--window-size={size[0]},{size[1]}", f"--screenshot={Path(out_png).resolve()}",
          Path(page).resolve().as_uri()], timeout)
    return Path(out_png)
