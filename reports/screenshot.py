"""Render a report in headless Chromium: a PNG screenshot and the DOM after its scripts ran.

Usage: python -m reports.screenshot REPORT.html OUT.png [WIDTHxHEIGHT]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--hide-scrollbars", "--disable-dev-shm-usage")  # fmt: skip


def find_chromium() -> str | None:
    """The first Chromium/Chrome on PATH, or None."""
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


def _run(browser: str, args: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="pgdrill-chromium-") as profile:
        argv = [browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def screenshot(html: Path, png: Path, *, width: int = 1400, height: int = 1600, timeout: float = 90) -> Path:
    """Write a PNG of the page as Chromium draws it; raise RuntimeError saying why when it cannot."""
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium on PATH; install the Debian package 'chromium'")
    done = _run(browser, [f"--screenshot={png.resolve()}", f"--window-size={width},{height}",
                          html.resolve().as_uri()], timeout=timeout)  # fmt: skip
    if not png.exists() or png.stat().st_size == 0:
        raise RuntimeError(f"{browser} wrote no screenshot (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return png


def dump_dom(html: Path, *, timeout: float = 90) -> str:
    """The DOM as serialized after the page's scripts ran (pytest-html builds its tables in JavaScript)."""
    browser = find_chromium()
    if browser is None:
        raise RuntimeError("no Chromium on PATH; install the Debian package 'chromium'")
    done = _run(browser, ["--dump-dom", html.resolve().as_uri()], timeout=timeout)
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"{browser} --dump-dom failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def main(argv: list[str]) -> int:
    """Screenshot a report from the command line (used to refresh docs/report.png)."""
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    width, height = (int(v) for v in (argv[2] if len(argv) == 3 else "1400x1600").split("x"))
    print(screenshot(Path(argv[0]), Path(argv[1]), width=width, height=height))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
