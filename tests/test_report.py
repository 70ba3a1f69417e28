"""Report headline and seed comparison on hand-made metrics."""

from __future__ import annotations

from bonesoup.evaluate.metrics import summarize
from bonesoup.evaluate.report import headline, metrics_table, render_html
from bonesoup.evaluate.summary import compare, spreads_overlap


def _metrics(bone: list[float], rewarded: list[float] | None) -> dict:
    methods = {"bone-soup": {"hypervolume": summarize(bone), "front_size": summarize([3])}}
    if rewarded is not None:
        methods["rewarded-soup"] = {
            "hypervolume": summarize(rewarded),
            "front_size": summarize([3]),
        }
    metrics = {"methods": methods, "objectives": ["a", "b"]}
    metrics["comparison"] = compare(metrics, "bone-soup", "rewarded-soup")
    return metrics


def test_headline_one_seed():
    line = headline(_metrics([0.412], [0.350]))
    assert line.startswith(
        "Bone Soups hypervolume 0.412 vs Rewarded Soups 0.35 (1.18x) over 1 training seed;"
    )
    assert "no winner is called" in line


def test_headline_overlapping_seeds_calls_no_winner():
    metrics = _metrics([0.40, 0.45, 0.38], [0.37, 0.42, 0.36])
    assert metrics["comparison"]["winner"] is None
    line = headline(metrics)
    assert "over 3 training seeds" in line
    assert "±" in line
    assert "intervals overlap, so no winner is called" in line


def test_headline_separated_seeds_names_winner():
    metrics = _metrics([0.50, 0.52, 0.51], [0.30, 0.31, 0.32])
    assert metrics["comparison"]["winner"] == "bone-soup"
    assert headline(metrics).endswith("Bone Soups is higher beyond the mean ± std spread.")


def test_headline_without_rewarded_soup():
    line = headline(_metrics([0.5], None))
    assert line.startswith("Bone Soups hypervolume 0.5 over 1 training seed;")
    assert "Rewarded Soups was not evaluated" in line


def test_spreads_overlap():
    assert spreads_overlap({"mean": 1.0, "std": 0.2}, {"mean": 1.3, "std": 0.1})
    assert not spreads_overlap({"mean": 1.0, "std": 0.1}, {"mean": 1.3, "std": 0.1})


def test_metrics_table_and_html_escape():
    lines = metrics_table(_metrics([0.4, 0.5], [0.3, 0.35]))
    assert lines[0].startswith("| method | seeds | hypervolume")
    assert "0.45 ± 0.0707" in lines[2]
    page = render_html("# Title\n\n<script>alert(1)</script>\n", "t")
    assert "<script>" not in page
    assert "<h1>Title</h1>" in page
