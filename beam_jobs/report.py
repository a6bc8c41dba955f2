"""A self-contained HTML report of statistics, anomalies, drift and skew: opens anywhere, offline.

TFDV's Facets view needs a notebook and a CDN. This page has no script and no external
resource: per-feature tables, inline SVG histograms and top-value charts, anomalies
highlighted with TFDV's descriptions, drift/skew figures against their thresholds, and
for an image dataset (an examples directory with `samples.png`) the sample grid as a
data: URI. The same inputs give the same bytes.
"""

import base64
import html
import math
from typing import Any, Dict, List, NamedTuple, Optional

from apache_beam.io.filesystems import FileSystems
from tensorflow_metadata.proto.v0 import statistics_pb2

from beam_jobs import stats_io

_CHART_W, _CHART_H = 280, 70
_LABEL_W = 134  # room for a top value's name left of its bar
_TOP_VALUES = 8
_TYPES = {v: k for k, v in statistics_pb2.FeatureNameStatistics.Type.items()}
_SAMPLES_FILE = "samples.png"

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2433}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de}
.meta{color:#57606a;margin-bottom:12px}
table{border-collapse:collapse;width:100%;margin:6px 0 14px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.has-anomaly td{background:#fff1f0}tr.anomaly td{background:#ffe3e0}
tr.exceeded td{background:#ffe3e0;font-weight:600}
.sev{display:inline-block;padding:0 6px;border-radius:8px;background:#cf222e;color:#fff;font-size:12px}
.sev.WARNING{background:#bf8700}.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
.verdict{font-size:16px;margin:8px 0}svg text{font:10px system-ui,sans-serif;fill:#57606a}
img.samples{max-width:100%;border:1px solid #d0d7de}
"""


class ReportInput(NamedTuple):
    title: str
    statistics: Dict[str, statistics_pb2.DatasetFeatureStatisticsList]  # split -> statistics
    examples_dir: Optional[str] = None
    anomalies: List[dict] = []  # rows of validate.anomaly_rows
    drift_skew: List[dict] = []  # rows of validate.drift_skew_rows
    schema: Any = None  # schema_pb2.Schema the data was validated against, if any
    verdict: Optional[str] = None


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) >= 1e-3 else f"{value:.3e}"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def histogram_svg(stats: statistics_pb2.FeatureNameStatistics) -> str:
    """Bars of the standard histogram (numbers) or of the top values (strings)."""
    if stats.HasField("num_stats"):
        histogram = next((h for h in stats.num_stats.histograms
                          if h.type == statistics_pb2.Histogram.STANDARD), None)
        if histogram is None or not histogram.buckets:
            return ""
        counts = [b.sample_count for b in histogram.buckets]
        top = max(counts) or 1.0
        width = _CHART_W / len(counts)
        bars = "".join(
            f'<rect x="{i * width + 0.5:.1f}" y="{_CHART_H - 14 - c / top * (_CHART_H - 16):.1f}" '
            f'width="{max(width - 1, 0.5):.1f}" height="{c / top * (_CHART_H - 16):.1f}" fill="#4c78a8">'
            f"<title>{_fmt(b.low_value)} .. {_fmt(b.high_value)}: {_fmt(c)}</title></rect>"
            for i, (b, c) in enumerate(zip(histogram.buckets, counts)))
        axis = (f'<text x="0" y="{_CHART_H - 2}">{_esc(_fmt(histogram.buckets[0].low_value))}</text>'
                f'<text x="{_CHART_W}" y="{_CHART_H - 2}" text-anchor="end">'
                f"{_esc(_fmt(histogram.buckets[-1].high_value))}</text>")
        return (f'<svg class="chart histogram" width="{_CHART_W}" height="{_CHART_H}" '
                f'viewBox="0 0 {_CHART_W} {_CHART_H}" role="img">{bars}{axis}</svg>')
    if stats.HasField("string_stats") and stats.string_stats.top_values:
        values = list(stats.string_stats.top_values)[:_TOP_VALUES]
        top = max(v.frequency for v in values) or 1.0
        row = 13
        height = row * len(values) + 2
        bars = "".join(
            f'<rect x="{_LABEL_W}" y="{i * row + 1}" width="{v.frequency / top * (_CHART_W - _LABEL_W - 50):.1f}" '
            f'height="{row - 3}" fill="#f58518"></rect><text x="{_LABEL_W - 4}" y="{i * row + 10}" text-anchor="end">'
            f"{_esc(v.value[:19] + ('…' if len(v.value) > 19 else ''))}</text>"
            f'<text x="{_LABEL_W + 4 + v.frequency / top * (_CHART_W - _LABEL_W - 50):.1f}" y="{i * row + 10}">'
            f"{_esc(_fmt(v.frequency))}</text>"
            for i, v in enumerate(values))
        return (f'<svg class="chart top-values" width="{_CHART_W}" height="{height}" '
                f'viewBox="0 0 {_CHART_W} {height}" role="img">{bars}</svg>')
    return ""


def _common(stats: statistics_pb2.FeatureNameStatistics):
    for field in ("num_stats", "string_stats", "bytes_stats", "struct_stats"):
        if stats.HasField(field):
            return getattr(stats, field).common_stats
    return statistics_pb2.CommonStatistics()


def feature_rows(dataset: statistics_pb2.DatasetFeatureStatistics, anomalous: set) -> str:
    rows = []
    for stats in sorted(dataset.features, key=lambda f: ".".join(f.path.step) or f.name):
        name = ".".join(stats.path.step) or stats.name
        common = _common(stats)
        total = dataset.num_examples or 1
        missing = 100.0 * common.num_missing / total
        if stats.HasField("num_stats"):
            n = stats.num_stats
            figures = f"mean {_fmt(n.mean)} · std {_fmt(n.std_dev)}<br>min {_fmt(n.min)} · median " \
                      f"{_fmt(n.median)} · max {_fmt(n.max)}<br>zeros {_fmt(n.num_zeros)}"
        elif stats.HasField("string_stats"):
            s = stats.string_stats
            figures = f"unique {_fmt(s.unique)}<br>avg length {_fmt(s.avg_length)}"
        else:
            figures = ""
        values = (f"{_fmt(common.min_num_values)}" if common.min_num_values == common.max_num_values
                  else f"{_fmt(common.min_num_values)}..{_fmt(common.max_num_values)}")
        css = ' class="feature-row has-anomaly"' if name in anomalous else ' class="feature-row"'
        rows.append(
            f'<tr{css} data-feature="{_esc(name)}"><td><b>{_esc(name)}</b></td>'
            f"<td>{_esc(_TYPES.get(stats.type, ''))}</td><td class=\"num\">{_fmt(common.num_non_missing)}</td>"
            f'<td class="num">{missing:.1f}%</td><td class="num">{values}</td><td>{figures}</td>'
            f"<td>{histogram_svg(stats)}</td></tr>")
    return "".join(rows)


def _anomaly_table(rows: List[dict]) -> str:
    if not rows:
        return '<p class="ok">No anomalies.</p>'
    body = "".join(
        f'<tr class="anomaly" data-feature="{_esc(r["feature"])}"><td>{_esc(r["split"])}</td>'
        f'<td><b>{_esc(r["feature"])}</b></td><td><span class="sev {_esc(r["severity"])}">'
        f'{_esc(r["severity"])}</span></td><td>{_esc(r["short_description"])}</td>'
        f'<td>{_esc(r["description"])}</td></tr>' for r in rows)
    return ("<table><tr><th>split</th><th>feature</th><th>severity</th><th>anomaly</th>"
            f"<th>description</th></tr>{body}</table>")


def _drift_skew_table(rows: List[dict]) -> str:
    figures = [(r, kind, m) for r in rows for kind in ("drift", "skew") for m in r[kind]]
    if not figures:
        return ""
    body = "".join(
        f'<tr class="drift-skew{" exceeded" if m["value"] > m["threshold"] else ""}" '
        f'data-feature="{_esc(r["feature"])}"><td>{_esc(r["split"])}</td><td><b>{_esc(r["feature"])}</b></td>'
        f'<td>{kind}</td><td>{_esc(m["type"])}</td><td class="num">{m["value"]:.4f}</td>'
        f'<td class="num">{m["threshold"]:.4f}</td>'
        f'<td>{"exceeded" if m["value"] > m["threshold"] else "within"}</td></tr>'
        for r, kind, m in figures)
    return ("<h2>Drift and skew</h2><table><tr><th>split</th><th>feature</th><th>check</th><th>measure</th>"
            f"<th>value</th><th>threshold</th><th></th></tr>{body}</table>")


def _samples(examples_dir: Optional[str]) -> str:
    if not examples_dir:
        return ""
    path = FileSystems.join(examples_dir, _SAMPLES_FILE)
    if not FileSystems.exists(path):
        return ""
    with FileSystems.open(path) as handle:
        data = base64.b64encode(handle.read()).decode("ascii")
    return (f'<h2>Sample images</h2><img class="samples" alt="sample images per class" '
            f'src="data:image/png;base64,{data}">')


def render(data: ReportInput) -> str:
    anomalous = {r["feature"] for r in data.anomalies}
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(data.title)}</title>"
             f"<style>{_CSS}</style></head><body><h1>{_esc(data.title)}</h1>"]
    counts = ", ".join(f"{split}: {_fmt(stats_io.default_split(s).datasets[0].num_examples)} examples"
                       for split, s in sorted(data.statistics.items()) if s.datasets)
    parts.append(f'<div class="meta">{_esc(counts)}</div>')
    if data.verdict is not None or data.anomalies or data.schema is not None:
        verdict = data.verdict or ("anomalies found" if data.anomalies else "no anomalies")
        css = "bad" if data.anomalies else "ok"
        parts.append(f'<div class="verdict">Verdict: <span class="{css}" id="verdict">{_esc(verdict)}</span> '
                     f"({len(data.anomalies)} anomalies)</div><h2>Anomalies</h2>{_anomaly_table(data.anomalies)}")
    parts.append(_drift_skew_table(data.drift_skew))
    parts.append(_samples(data.examples_dir))
    for split, stats in sorted(data.statistics.items()):
        for dataset in stats.datasets:
            parts.append(
                f'<h2>Features — {_esc(split)}{" / " + _esc(dataset.name) if len(stats.datasets) > 1 else ""} '
                f"({_fmt(dataset.num_examples)} examples)</h2>"
                f'<table class="features" data-split="{_esc(split)}"><tr><th>feature</th><th>type</th>'
                "<th>count</th><th>missing</th><th>values per example</th><th>statistics</th>"
                f"<th>distribution</th></tr>{feature_rows(dataset, anomalous)}</table>")
    parts.append("</body></html>\n")
    return "".join(parts)


def write_report(path: str, data: ReportInput) -> None:
    stats_io.write_atomically(path, render(data).encode("utf-8"))
