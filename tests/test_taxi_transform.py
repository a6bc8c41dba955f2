"""analyze_and_transform / transform on the real taxi sample, checked against numpy and pandas.

Expectations are computed from the raw train Examples with numpy/pandas, not with TFT.
"""

import collections
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from beam_jobs import analyze_and_transform, taxi_csv_to_tfrecord, transform
from tests import taxi_runs
from transforms.taxi import features


@pytest.fixture(scope="module")
def dirs(shared_data):
    return taxi_runs.chain()


@pytest.fixture(scope="module")
def train_pairs(dirs):
    """(raw features, transformed features) of every train row."""
    return [(taxi_runs.features_of(raw), taxi_runs.features_of(xf))
            for raw, xf in taxi_runs.raw_and_transformed(dirs["examples"], dirs["transformed"], "train")]


def column(rows, key, default=np.nan, dtype=np.float64):
    return np.array([row.get(key, default) for row in rows], dtype=dtype)


def test_summary_counts_reconcile(dirs):
    summary = dirs["summary"]
    ingest = json.load(open(os.path.join(dirs["examples"], "run_summary.json")))
    assert summary["read"] == summary["written"] == ingest["written"]
    assert sum(summary["written"].values()) == 15002
    assert dirs["summary2"]["written"] == json.load(open(os.path.join(dirs["examples2"], "run_summary.json")))["written"]
    assert not [name for name in os.listdir(dirs["transformed"]) if name.startswith(".incomplete")]


def test_z_scores_use_train_mean_and_std(train_pairs):
    raw = [r for r, _ in train_pairs]
    xf = [x for _, x in train_pairs]
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        values = column(raw, key, default=0.0).astype(np.float32).astype(np.float64)
        expected = (values - values.mean()) / values.std()
        got = column(xf, features.transformed_name(key))
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        assert abs(got.mean()) < 1e-4 and abs(got.std() - 1) < 1e-3


def test_buckets_follow_train_quantiles_and_missing_gets_its_own(train_pairs):
    raw = [r for r, _ in train_pairs]
    xf = [x for _, x in train_pairs]
    for key, num_buckets in features.BUCKET_FEATURES.items():
        values = column(raw, key)
        buckets = column(xf, features.transformed_name(key), dtype=np.int64)
        missing = np.isnan(values)
        assert missing.any() and np.all(buckets[missing] == num_buckets)
        present, got = values[~missing], buckets[~missing]
        assert got.min() >= 0 and got.max() < num_buckets
        # Buckets never decrease as the value grows.
        order = np.argsort(present, kind="stable")
        assert np.all(np.diff(got[order]) >= 0)
        # TFT's quantiles are approximate: nearly every row lands where numpy's exact
        # quantile boundaries put it.
        boundaries = np.quantile(present.astype(np.float32), np.arange(1, num_buckets) / num_buckets)
        expected = np.searchsorted(np.unique(boundaries), present.astype(np.float32), side="right")
        agree = np.mean(_rank_buckets(got) == _rank_buckets(expected))
        assert agree > 0.97, (key, agree)


def _rank_buckets(buckets):
    """Bucket ids renumbered 0.. in order (TFT drops duplicate boundaries as numpy's unique does)."""
    return np.searchsorted(np.unique(buckets), buckets)


def test_vocabulary_files_hold_train_values_by_frequency(dirs, train_pairs):
    raw = [r for r, _ in train_pairs]
    assets = os.path.join(dirs["transformed"], "transform_fn", "assets")
    for key in features.VOCAB_FEATURES:
        counts = collections.Counter(row.get(key, features.MISSING_TOKEN.encode()) for row in raw)
        vocab = open(os.path.join(assets, features.vocabulary_name(key)), "rb").read().splitlines()
        assert sorted(vocab) == sorted(counts)
        assert [counts[v] for v in vocab] == sorted(counts.values(), reverse=True)
    payment = open(os.path.join(assets, features.vocabulary_name("payment_type")), "rb").read().splitlines()
    assert payment[:2] == [b"Cash", b"Credit Card"]
    # A missing company is a vocabulary entry of its own, counted like any other value.
    company = open(os.path.join(assets, features.vocabulary_name("company")), "rb").read().splitlines()
    assert company.index(features.MISSING_TOKEN.encode()) < 3


def test_values_unseen_in_train_map_to_oov_buckets(dirs, train_pairs, tmp_path):
    """Rows of data.csv whose payment type is replaced by one the train split never had."""
    train_payment = {r["payment_type"] for r, _ in train_pairs}
    assert b"Bitcoin" not in train_payment
    with open(taxi_runs.TAXI / "data.csv", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = [next(reader) for _ in range(40)]
    column_index = header.index("payment_type")
    for row in rows:
        row[column_index] = "Bitcoin"
    source = tmp_path / "unseen.csv"
    with open(source, "w", newline="") as handle:
        csv.writer(handle).writerows([header] + rows)
    taxi_csv_to_tfrecord.run(["--input", str(source), "--output_dir", str(tmp_path / "examples")])
    transform.run(["--transform_dir", dirs["transformed"], "--examples_dir", str(tmp_path / "examples"),
                   "--output_dir", str(tmp_path / "transformed")])
    indices = [taxi_runs.features_of(r)["payment_type_xf"]
               for split in ("train", "eval", "test") for r in taxi_runs.records(str(tmp_path / "transformed"), split)]
    assert len(indices) == 40
    vocab_size = len(train_payment)
    assert all(vocab_size <= index < vocab_size + features.VOCAB_FEATURES["payment_type"][1] for index in indices)


def test_label_is_big_tipper(train_pairs):
    for raw, xf in train_pairs:
        fare, tips = np.float32(raw["fare"]), np.float32(raw["tips"])
        assert xf[features.LABEL_KEY] == int(tips > fare * np.float32(0.2))


def test_hour_of_week_cross(train_pairs):
    got = {(raw["trip_start_day"], raw["trip_start_hour"], xf["hour_of_week_xf"]) for raw, xf in train_pairs}
    assert all(week == (day - 1) * 24 + hour for day, hour, week in got)
    assert {week for _, _, week in got} <= set(range(168))


def test_transform_gives_the_same_bytes_as_analyze_and_transform(dirs):
    """data2.csv rows that are also in data.csv: transform's output equals analyze_and_transform's."""
    first = {}
    for split in ("train", "eval", "test"):
        first.update(taxi_runs.raw_and_transformed(dirs["examples"], dirs["transformed"], split))
    second = {}
    for split in ("train", "eval", "test"):
        second.update(taxi_runs.raw_and_transformed(dirs["examples2"], dirs["transformed2"], split))
    common = set(first) & set(second)
    assert len(common) > 2000
    assert all(first[raw] == second[raw] for raw in common)


def test_transform_fn_loads_in_a_fresh_process(dirs):
    code = ("import sys, tensorflow_transform as tft; o = tft.TFTransformOutput(sys.argv[1]); "
            "print(sorted(o.transformed_feature_spec())); print(sorted(o.raw_feature_spec())); "
            "print(o.vocabulary_size_by_name('payment_type_vocab'))")
    out = subprocess.run([sys.executable, "-c", code, dirs["transformed"]], check=True, capture_output=True,
                         text=True).stdout.splitlines()
    expected_outputs = sorted(
        [features.transformed_name(k) for k in (*features.DENSE_FLOAT_FEATURE_KEYS, *features.BUCKET_FEATURES,
                                                *features.VOCAB_FEATURES, *features.CATEGORICAL_INT_FEATURE_KEYS,
                                                features.HOUR_OF_WEEK_KEY)] + [features.LABEL_KEY])
    assert out[0] == str(expected_outputs)
    assert "company" in out[1] and "tips" in out[1]
    payment = open(os.path.join(dirs["transformed"], "transform_fn", "assets", "payment_type_vocab")).read().splitlines()
    assert int(out[2]) == len(payment)


def broken_preprocessing_fn(inputs):
    """A user preprocessing_fn with a bug: the run must fail and publish nothing."""
    return {"fare_xf": inputs["no_such_feature"]}


def test_failed_run_leaves_nothing_that_looks_complete(dirs, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyError):
        analyze_and_transform.run(["--dataset", "taxi", "--examples_dir", dirs["examples"], "--output_dir", str(out),
                                   "--preprocessing_fn", f"{__name__}:broken_preprocessing_fn"])
    assert os.listdir(out) == []


def test_bad_preprocessing_fn_flag_is_a_usage_error(dirs, tmp_path):
    with pytest.raises(analyze_and_transform.options.UsageError, match="module:function"):
        analyze_and_transform.run(["--dataset", "taxi", "--examples_dir", dirs["examples"],
                                   "--output_dir", str(tmp_path / "out"), "--preprocessing_fn", "nocolon"])
