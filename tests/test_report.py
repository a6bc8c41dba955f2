"""The HTML report: self-contained, escaped, and rendered by a real headless Chromium."""

import html.parser
import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from tensorflow_metadata.proto.v0 import statistics_pb2

from beam_jobs import options, report, statistics, validate
from tests.conftest import REPO, TAXI

TAXI_SCHEMA = REPO / "schemas" / "taxi" / "schema.pbtxt"
_CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars"]
ANOMALY_RGB = (255, 227, 224)  # #ffe3e0, the background of an anomaly row


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("headless Chromium is needed to check the HTML report: `apt-get install -y chromium` "
                "(.ci/run installs it)")


def _run_chromium(page, tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    profile.mkdir()
    return subprocess.run([_chromium(), *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()],
                          capture_output=True, timeout=120, check=True)


class _Rows(html.parser.HTMLParser):
    """Collects data-feature of the rows with each class, from the DOM Chromium dumps."""

    def __init__(self):
        super().__init__()
        self.rows = {}
        self.svgs = 0
        self.external = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-feature" in attrs:
            for css in attrs.get("class", "").split():
                self.rows.setdefault(css, []).append(attrs["data-feature"])
        if tag == "svg":
            self.svgs += 1
        for key in ("src", "href"):
            if key in attrs and not attrs[key].startswith("data:"):
                self.external.append(attrs[key])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)


def _parse(page_html: str) -> _Rows:
    parser = _Rows()
    parser.feed(page_html)
    return parser


def _stats(features: dict, num_examples: int) -> statistics_pb2.DatasetFeatureStatisticsList:
    stats = statistics_pb2.DatasetFeatureStatisticsList()
    dataset = stats.datasets.add(num_examples=num_examples)
    for name, values in features.items():
        feature = dataset.features.add()
        feature.path.step.append(name)
        if isinstance(values[0], str):
            feature.type = statistics_pb2.FeatureNameStatistics.STRING
            feature.string_stats.common_stats.num_non_missing = len(values)
            for value in sorted(set(values)):
                feature.string_stats.top_values.add(value=value, frequency=values.count(value))
        else:
            feature.type = statistics_pb2.FeatureNameStatistics.INT
            feature.num_stats.common_stats.num_non_missing = len(values)
            feature.num_stats.mean = float(np.mean(values))
            histogram = feature.num_stats.histograms.add(type=statistics_pb2.Histogram.STANDARD)
            histogram.buckets.add(low_value=min(values), high_value=max(values), sample_count=len(values))
    return stats


def test_render_escapes_and_stays_offline():
    stats = _stats({"<b>name": ["x", "<script>"], "n": [1, 2, 3]}, 3)
    page = report.render(report.ReportInput(
        title="t", statistics={"all": stats},
        anomalies=[{"split": "all", "feature": "<b>name", "severity": "ERROR", "short_description": "s",
                    "description": "<img src=x>"}]))
    parsed = _parse(page)
    assert parsed.rows == {"feature-row": ["<b>name", "n"], "has-anomaly": ["<b>name"], "anomaly": ["<b>name"]}
    assert "<img src=x>" not in page and "&lt;img src=x&gt;" in page
    assert parsed.external == [] and parsed.svgs == 2


@pytest.fixture(scope="module")
def drift_report(shared_data, tmp_path_factory):
    """validate data2.csv against the curated schema with data.csv as the previous span."""
    root = tmp_path_factory.mktemp("report")
    statistics.run([f"--input={TAXI / 'data.csv'}", f"--schema={TAXI_SCHEMA}", f"--output_dir={root / 'span1'}"])
    with pytest.raises(SystemExit):
        options.run_main(lambda: validate.main([
            f"--input={TAXI / 'data2.csv'}", f"--schema={TAXI_SCHEMA}", f"--baseline_statistics={root / 'span1'}",
            f"--output_dir={root / 'span2'}", f"--report={root / 'report.html'}"]))
    return root


def test_chromium_renders_feature_anomaly_and_drift_rows(drift_report, tmp_path):
    page = drift_report / "report.html"
    anomalies = json.loads((drift_report / "span2" / "anomalies.json").read_text())
    drift = json.loads((drift_report / "span2" / "drift_skew.json").read_text())
    header = (TAXI / "data2.csv").read_text().splitlines()[0].split(",")

    dom = _run_chromium(page, tmp_path, "--dump-dom").stdout.decode("utf-8")
    parsed = _parse(dom)
    assert sorted(parsed.rows["feature-row"]) == sorted(header)
    assert parsed.rows["anomaly"] == [r["feature"] for r in anomalies]
    assert sorted(parsed.rows["has-anomaly"]) == sorted(r["feature"] for r in anomalies)
    assert sorted(parsed.rows["exceeded"]) == sorted(r["feature"] for r in drift
                                                     if r["drift"][0]["value"] > r["drift"][0]["threshold"])
    assert len(parsed.rows["drift-skew"]) == len(drift)
    assert parsed.svgs == len(header) and parsed.external == []
    assert 'id="verdict">anomalies found<' in dom

    shot = tmp_path / "report.png"
    _run_chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1400,1600")
    image = cv2.imread(str(shot))[:, :, ::-1]
    assert image.shape[:2] == (1600, 1400)
    # The anomaly rows really painted: their background colour covers a visible area.
    painted = np.all(image == ANOMALY_RGB, axis=-1).sum()
    assert painted > 20_000, painted
