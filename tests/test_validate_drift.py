"""Drift and skew on the real taxi spans, checked against an independent numpy/pandas computation.

How TFDV measures (tensorflow_data_validation/anomalies/metrics.cc):
- L-infinity (strings): max over values of |p_a(v) - p_b(v)|, each side's value counts
  normalised over its present values.
- Jensen-Shannon (numbers): each side's STANDARD histogram (10 equal-width buckets from its
  own min to max), both re-bucketed onto the union of their boundaries assuming values are
  uniform inside a bucket, normalised, then (KL(P||M) + KL(Q||M)) / 2 with log2, M = (P+Q)/2.
  TFDV fills its bucket counts from a quantiles sketch, so from the raw values the figure is
  close, not equal; from TFDV's own buckets it is equal.
"""

import json

import numpy as np
import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2, statistics_pb2

from beam_jobs import options, statistics, stats_io, validate
from tests.conftest import REPO, TAXI

TAXI_SCHEMA = REPO / "schemas" / "taxi" / "schema.pbtxt"
# TFDV's bucket counts come from a quantiles sketch; on these files its JS and the one from
# exact bucket counts differ by at most 0.001 (dropoff_longitude), well under every threshold.
RAW_JS_TOLERANCE = 0.002


def _exit_status(argv) -> int:
    with pytest.raises(SystemExit) as raised:
        options.run_main(lambda: validate.main(argv))
    return raised.value.code


def l_infinity(a: pd.Series, b: pd.Series) -> float:
    p, q = a.value_counts(normalize=True), b.value_counts(normalize=True)
    return float(p.sub(q, fill_value=0).abs().max())


def _rebucket(lows, highs, counts, boundaries) -> np.ndarray:
    """Mass of a piecewise-uniform histogram inside each [b_i, b_i+1)."""
    mass = np.zeros(len(boundaries) - 1)
    for low, high, count in zip(lows, highs, counts):
        if high == low:
            mass[min(np.searchsorted(boundaries, low), len(mass) - 1)] += count
            continue
        overlap = np.clip(np.minimum(boundaries[1:], high) - np.maximum(boundaries[:-1], low), 0, None)
        mass += count * overlap / (high - low)
    return mass


def jensen_shannon(h1, h2) -> float:
    """h = (lows, highs, counts) of equal-width buckets."""
    boundaries = np.unique(np.concatenate([h1[0], h1[1], h2[0], h2[1]]))
    p = _rebucket(*h1, boundaries)
    q = _rebucket(*h2, boundaries)
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(x):
        keep = (x > 0) & (m > 0)
        return float(np.sum(x[keep] * np.log2(x[keep] / m[keep])))

    return (kl(p) + kl(q)) / 2


def raw_histogram(values: np.ndarray, buckets: int = 10):
    counts, edges = np.histogram(values, bins=buckets, range=(values.min(), values.max()))
    return edges[:-1], edges[1:], counts.astype(float)


def tfdv_histogram(stats, name):
    feature = next(f for f in stats.datasets[0].features if f.path.step[-1] == name)
    histogram = next(h for h in feature.num_stats.histograms if h.type == statistics_pb2.Histogram.STANDARD)
    return (np.array([b.low_value for b in histogram.buckets]), np.array([b.high_value for b in histogram.buckets]),
            np.array([b.sample_count for b in histogram.buckets]))


@pytest.fixture(scope="module")
def drift_run(shared_data, tmp_path_factory):
    """data.csv is the previous span, data2.csv the new one; the curated schema decides."""
    root = tmp_path_factory.mktemp("drift")
    statistics.run([f"--input={TAXI / 'data.csv'}", f"--schema={TAXI_SCHEMA}", f"--output_dir={root / 'span1'}"])
    status = _exit_status([f"--input={TAXI / 'data2.csv'}", f"--schema={TAXI_SCHEMA}",
                           f"--baseline_statistics={root / 'span1'}", f"--output_dir={root / 'span2'}",
                           f"--report={root / 'report.html'}"])
    measured = {row["feature"]: row["drift"][0] for row in json.loads((root / "span2" / "drift_skew.json").read_text())}
    return root, status, measured


def _frames():
    return pd.read_csv(TAXI / "data.csv"), pd.read_csv(TAXI / "data2.csv")


def test_l_infinity_matches_pandas(drift_run):
    _, _, measured = drift_run
    old, new = _frames()
    for name in ("payment_type", "company"):
        assert measured[name]["type"] == "L_INFTY"
        assert measured[name]["value"] == pytest.approx(l_infinity(old[name].dropna(), new[name].dropna()), abs=1e-9)


def test_jensen_shannon_matches_numpy(drift_run):
    root, _, measured = drift_run
    old_stats, _ = stats_io.load_statistics(str(root / "span1"))
    new_stats, _ = stats_io.load_statistics(str(root / "span2"))
    old, new = _frames()
    schema = tfdv.load_schema_text(str(TAXI_SCHEMA))
    numeric = [f.name for f in schema.feature if f.drift_comparator.HasField("jensen_shannon_divergence")]
    assert set(numeric) <= set(measured) and len(numeric) == 15
    for name in numeric:
        assert measured[name]["type"] == "JENSEN_SHANNON_DIVERGENCE"
        # TFDV's arithmetic, re-done in numpy on TFDV's own buckets: equal.
        from_buckets = jensen_shannon(tfdv_histogram(new_stats, name), tfdv_histogram(old_stats, name))
        assert measured[name]["value"] == pytest.approx(from_buckets, abs=1e-6), name
        # From the raw values (float columns as float32, as TFDV reads them): close.
        dtype = np.float32 if schema_pb2.FeatureType.Name(
            next(f.type for f in schema.feature if f.name == name)) == "FLOAT" else np.float64
        raw = jensen_shannon(raw_histogram(new[name].dropna().to_numpy(dtype).astype(float)),
                             raw_histogram(old[name].dropna().to_numpy(dtype).astype(float)))
        assert abs(measured[name]["value"] - raw) < RAW_JS_TOLERANCE, (name, measured[name]["value"], raw)
        assert (raw > measured[name]["threshold"]) == (measured[name]["value"] > measured[name]["threshold"]), name


def test_drift_crosses_the_thresholds_where_the_spans_differ(drift_run):
    root, status, measured = drift_run
    old, new = _frames()
    # Independently: data2.csv has no O'Hare pickups (community area 76), data.csv has 6%.
    assert (old.pickup_community_area == 76).mean() > 0.05 and (new.pickup_community_area == 76).sum() == 0
    exceeded = {name for name, m in measured.items() if m["value"] > m["threshold"]}
    assert exceeded == {"payment_type", "pickup_community_area", "pickup_longitude"}
    assert status == 1
    rows = json.loads((root / "span2" / "anomalies.json").read_text())
    assert {r["feature"]: r["kinds"] for r in rows} == {
        "payment_type": ["COMPARATOR_L_INFTY_HIGH"],
        "pickup_community_area": ["COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"],
        "pickup_longitude": ["COMPARATOR_JENSEN_SHANNON_DIVERGENCE_HIGH"],
    }


def test_skew_against_serving_data(drift_run, tmp_path):
    root, _, _ = drift_run
    old, new = _frames()
    serving = tmp_path / "serving.csv"
    pd.read_csv(TAXI / "data2.csv", dtype=str, keep_default_na=False).drop(columns=["tips"]).to_csv(serving, index=False)
    statistics.run([f"--input={serving}", f"--schema={TAXI_SCHEMA}", f"--output_dir={tmp_path / 'serving'}"])
    # Training data (data.csv) checked for skew against what serving saw.
    _exit_status([f"--input={TAXI / 'data.csv'}", f"--schema={TAXI_SCHEMA}", "--environment=TRAINING",
                  f"--serving_statistics={tmp_path / 'serving'}", f"--output_dir={tmp_path / 'v'}"])
    skew = {r["feature"]: r["skew"][0] for r in json.loads((tmp_path / "v" / "drift_skew.json").read_text())
            if r["skew"]}
    assert "tips" not in skew
    assert skew["payment_type"]["value"] == pytest.approx(l_infinity(new.payment_type, old.payment_type), abs=1e-9)
    assert skew["payment_type"]["value"] > skew["payment_type"]["threshold"]
