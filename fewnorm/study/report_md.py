"""The study report as markdown: the HTML report's tables (its figures' points included), no images."""

from __future__ import annotations

from fewnorm.study.analysis import Report
from fewnorm.study.tables import (
    Table,
    cell_title,
    exposure_table,
    predictiveness_table,
    properties_table,
    reproduce_table,
    results_table,
)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(table: Table) -> str:
    lines = [f"*{_cell(table.caption)}*", "", "| " + " | ".join(_cell(h) for h in table.headers) + " |"]
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if not table.rows:
        lines.append("| " + " | ".join(["(none)"] + [""] * (len(table.headers) - 1)) + " |")
    lines += [""] + [f"- {_cell(note)}" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def report_markdown(report: Report) -> str:
    """The whole report: per cell the results, the transductive exposure and the predictiveness test."""
    parts = [
        "# fewnorm study\n",
        'Which normalizer, for which method, and do the "Beyond BatchNorm" properties at '
        "initialization (Lubana, Dick and Tanaka, NeurIPS 2021) predict it.\n",
    ]
    for cell in report.cells:
        parts.append(f"## {cell_title(cell)}\n")
        parts.append(markdown_table(results_table(cell)))
        parts.append("### Transductive exposure\n")
        parts.append(markdown_table(exposure_table(cell)))
        parts.append("### Do properties at initialization predict accuracy?\n")
        parts.append(markdown_table(predictiveness_table(cell)))
        parts.append(markdown_table(properties_table(cell)))
    parts.append("## Reproduce\n")
    parts.append(markdown_table(reproduce_table(report)))
    return "\n".join(parts)
