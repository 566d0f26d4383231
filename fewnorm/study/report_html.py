"""The study report as one self-contained HTML file: tables and inline SVG figures, no scripts,
no stylesheets or fonts fetched: it opens offline."""

from __future__ import annotations

from html import escape

from fewnorm.study.analysis import CellReport, Report
from fewnorm.study.svg import colors_for, interval_chart, scatter
from fewnorm.study.tables import (
    Table,
    cell_title,
    exposure_table,
    predictiveness_table,
    properties_table,
    reproduce_table,
    results_table,
)

_STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
caption { text-align: left; font-style: italic; padding-bottom: 0.3em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
th:nth-child(-n+2), td:nth-child(-n+2) { text-align: left; }
td.wrap { text-align: left; word-break: break-all; max-width: 800px; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; }
"""


def html_table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.headers)
    body = (
        "".join(
            "<tr>"
            + "".join(
                f'<td class="wrap">{escape(c)}</td>' if len(c) > 60 else f"<td>{escape(c)}</td>" for c in row
            )
            + "</tr>"
            for row in table.rows
        )
        or f'<tr><td colspan="{len(table.headers)}">(none)</td></tr>'
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in table.notes)
    return (
        f"<table><caption>{escape(table.caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>" + (f"<ul>{notes}</ul>" if notes else "")
    )


def _figures(cell: CellReport) -> str:
    chance = 1 / cell.ways
    colors = colors_for([r.label for r in cell.rows])
    ok = [r for r in cell.rows if r.accuracy is not None]
    charts = [
        interval_chart(
            [(r.label, 100 * r.accuracy.mean, 100 * r.accuracy.ci95) for r in ok if r.accuracy is not None],
            f"{cell_title(cell)}: test accuracy",
            "accuracy % (95% interval)",
            reference=100 * chance,
            colors=colors,
        )
    ]
    if cell.exposure:
        rows = [(e.label, 100 * e.change.mean, 100 * e.change.ci95) for e in cell.exposure]
        charts.append(
            interval_chart(
                rows,
                f"{cell_title(cell)}: one query at a time minus together",
                "change in accuracy, pp (95% interval)",
                reference=0.0,
                colors=colors,
            )
        )
    for p in cell.predictiveness:
        if p.points:
            c = p.correlation
            title = f"{p.prop}: ρ = {c.rho:+.2f}" if c.n > 1 else p.prop
            log_x = p.prop in ("variance growth", "gradient growth") and all(x > 0 for _, x, _ in p.points)
            charts.append(scatter(p.points, title, p.prop, "test accuracy %", log_x=log_x, colors=colors))
    return '<div class="figures">' + "\n".join(charts) + "</div>"


def report_html(report: Report) -> str:
    """The whole report as an HTML document."""
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        f"<title>fewnorm study</title><style>{_STYLE}</style></head><body>",
        "<h1>fewnorm study</h1>",
        "<p>Which normalizer, for which method, and do the &ldquo;Beyond BatchNorm&rdquo; properties at "
        "initialization (Lubana, Dick and Tanaka, NeurIPS 2021) predict it.</p>",
    ]
    for cell in report.cells:
        parts.append(f"<h2>{escape(cell_title(cell))}</h2>")
        parts.append(html_table(results_table(cell)))
        parts.append(_figures(cell))
        parts.append("<h3>Transductive exposure</h3>" + html_table(exposure_table(cell)))
        parts.append("<h3>Do properties at initialization predict accuracy?</h3>")
        parts.append(html_table(predictiveness_table(cell)) + html_table(properties_table(cell)))
    parts.append("<h2>Reproduce</h2>" + html_table(reproduce_table(report)))
    parts.append("</body></html>\n")
    return "\n".join(parts)
