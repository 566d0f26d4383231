"""The analysis and both reports on a constructed study: numbers, exclusions, self-containment."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from fewnorm.study.analysis import PROPERTIES, analyse, properties
from fewnorm.study.report_html import report_html
from fewnorm.study.report_md import report_markdown
from fewnorm.study.stats import paired_t
from fewnorm.study.write import write_reports
from tests.study.raw import NORMS, layers, make_raw


def test_rows_are_sorted_and_the_collapse_is_neither_ranked_nor_correlated() -> None:
    (cell,) = analyse(make_raw()).cells
    order = ["swbn", "groupnorm", "layernorm", "batchnorm", "rmsnorm", "instancenorm", "none"]
    assert [r.label for r in cell.rows] == order
    collapsed = cell.rows[-1]
    assert collapsed.status == "collapsed" and collapsed.rank is None and collapsed.message
    assert [r.rank.rank for r in cell.rows[:6] if r.rank] == [1, 2, 3, 4, 5, 6]
    for p in cell.predictiveness:
        assert "none" not in [label for label, _, _ in p.points] and p.correlation.n == 6


def test_difference_is_paired_by_seed_and_episode() -> None:
    raw = make_raw()
    (cell,) = analyse(raw).cells
    runs = raw["cells"][0]["runs"]

    def keyed(label: str) -> dict[tuple[int, int], float]:
        return {
            (r["seed"], i): a for r in runs if r["label"] == label for i, a in enumerate(r["test_accuracies"])
        }

    row = next(r for r in cell.rows if r.label == "swbn")
    assert row.difference == paired_t(keyed("swbn"), keyed("batchnorm"))
    assert row.difference is not None and row.difference.mean == pytest.approx(0.10, abs=0.01)
    assert row.difference.ci95 < 0.01  # the shared difficulty cancels
    assert next(r for r in cell.rows if r.label == "batchnorm").difference is None
    assert row.memory_mib == pytest.approx(4.0)


def test_transductive_exposure() -> None:
    (cell,) = analyse(make_raw()).cells
    change = {e.label: e.change.mean for e in cell.exposure}
    assert change["groupnorm"] == pytest.approx(0.0)
    assert change["batchnorm"] < -0.3 and change["swbn"] < -0.3


def test_properties_of_a_probe() -> None:
    p = properties(layers(2.0))
    assert p == pytest.approx({"variance growth": 7.0, "cosine similarity": 0.2, "stable rank": 3.0,
                               "gradient growth": 8.0})  # fmt: skip


def test_correlation_follows_the_constructed_ordering() -> None:
    """Every property grows with the scale, and accuracy orders swbn > gn > bn > in as scale does."""
    (cell,) = analyse(make_raw()).cells
    by_prop = {p.prop: p.correlation for p in cell.predictiveness}
    assert set(by_prop) == set(PROPERTIES)
    for prop in PROPERTIES:
        assert by_prop[prop].rho == pytest.approx(1.0) and by_prop[prop].low == pytest.approx(1.0)

    scales = {k: v[4] for k, v in NORMS.items()}
    assert scales["swbn"] > scales["groupnorm"] > scales["batchnorm"] > scales["instancenorm"]


def test_markdown_holds_every_table() -> None:
    text = report_markdown(analyse(make_raw()))
    for heading in ("## protonet, 5-way 1-shot", "### Transductive exposure", "## Reproduce"):
        assert heading in text
    for label in NORMS:
        assert f"| {label} |" in text
    assert (
        "fewnorm study runs/s/spec.yaml --algos protonet --settings 5w1s --out runs/s-protonet-5w1s" in text
    )
    assert "none: accuracy at chance" in text


def test_html_is_self_contained(tmp_path: Path) -> None:
    report = write_reports(make_raw(), tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert html == report_html(report) and (tmp_path / "report.md").is_file()
    # accuracy, exposure and one scatter plot per property
    assert html.count("<svg") == 2 + len(PROPERTIES)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert html.count("<table") == 5


def test_a_cell_without_probes_or_exposure_still_reports() -> None:
    raw = make_raw()
    raw["probes"] = []
    for run in raw["cells"][0]["runs"]:
        run["one_at_a_time"] = None
    (cell,) = analyse(raw).cells
    assert cell.exposure == () and all(p.points == () for p in cell.predictiveness)
    assert "(none)" in report_markdown(analyse(raw)) and np.isnan(cell.predictiveness[0].correlation.rho)
