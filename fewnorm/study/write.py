"""Writing a study's reports next to its raw results."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fewnorm.runs import atomic_write_text
from fewnorm.study.analysis import Report, analyse
from fewnorm.study.report_html import report_html
from fewnorm.study.report_md import report_markdown

MARKDOWN = "report.md"
HTML = "report.html"


def write_reports(raw: Mapping[str, Any], folder: Path) -> Report:
    """``report.md`` and ``report.html`` of ``raw`` (``study.json``'s content) in ``folder``, atomically."""
    report = analyse(raw)
    atomic_write_text(folder / MARKDOWN, report_markdown(report))
    atomic_write_text(folder / HTML, report_html(report))
    return report
