"""The HTML report in a real browser: headless Chromium loads it offline and every table and
figure renders, with nothing in the console.

Needs a Chromium binary (``chromium-headless-shell``, ``chromium`` ...; Debian:
``apt-get install chromium-headless-shell``) or ``$FEWNORM_CHROMIUM``; skipped otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fewnorm.study.write import write_reports
from tests.study.raw import make_raw

pytestmark = pytest.mark.browser
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "headless_shell")
#: Run after load: measures every table and figure and writes the verdict into the DOM.
CHECK = """<script>
window.addEventListener("load", () => {
  const tables = [...document.querySelectorAll("table")];
  const figures = [...document.querySelectorAll("svg, img")];
  const bad = [];
  tables.forEach((t, i) => {
    const box = t.getBoundingClientRect();
    if (box.width < 50 || box.height < 20 || t.rows.length < 2) bad.push("table " + i);
  });
  figures.forEach((f, i) => {
    const box = f.getBoundingClientRect();
    if (box.width < 50 || box.height < 50) bad.push("figure " + i + " has no size");
    if (f.tagName === "IMG" && !(f.complete && f.naturalWidth > 0)) bad.push("image " + i + " did not load");
    const empty = f.tagName === "svg" && f.querySelectorAll("circle").length === 0;
    if (empty) bad.push("figure " + i + " draws nothing");
  });
  const verdict = {tables: tables.length, figures: figures.length, bad};
  document.body.setAttribute("data-check", JSON.stringify(verdict));
});
</script>"""


def chromium() -> str:
    found = os.environ.get("FEWNORM_CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        pytest.skip("no headless Chromium: apt-get install chromium-headless-shell (or set FEWNORM_CHROMIUM)")
    return found


def load(browser: str, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``page`` in headless Chromium offline (every host unresolvable), console messages on stderr."""
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=3000", "--window-size=1200,2400",
            *extra, page.as_uri()]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_every_table_and_figure_renders_without_console_errors(tmp_path: Path) -> None:
    browser = chromium()
    report = write_reports(make_raw(), tmp_path)
    html = (tmp_path / "report.html").read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(html.replace("</body>", CHECK + "</body>"))
    result = load(browser, checked, "--dump-dom")
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    match = re.search(r'data-check="([^"]*)"', result.stdout)
    assert match, result.stderr[-2000:]
    verdict = json.loads(match[1].replace("&quot;", '"'))
    assert verdict["bad"] == []
    assert verdict["tables"] == html.count("<table") == 5 * len(report.cells)
    assert verdict["figures"] == html.count("<svg") > 0


def test_console_errors_would_be_seen(tmp_path: Path) -> None:
    """The check can fail: a page that logs an error shows it on the browser's stderr."""
    browser = chromium()
    page = tmp_path / "bad.html"
    page.write_text(
        '<html><body><img src="https://example.invalid/x.png"><script>nope();</script></body></html>'
    )
    result = load(browser, page, "--dump-dom")
    assert any(":CONSOLE" in line and "nope" in line for line in result.stderr.splitlines())


def test_screenshot(tmp_path: Path) -> None:
    browser = chromium()
    write_reports(make_raw(), tmp_path)
    shot = tmp_path / "report.png"
    load(browser, tmp_path / "report.html", f"--screenshot={shot}")
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
