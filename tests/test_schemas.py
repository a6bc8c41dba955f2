"""The curated schemas in schemas/: they hold on the real data and agree with transforms/."""

import csv
import json

import pandas as pd
import pytest
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from beam_jobs import options, validate
from tests.conftest import QUICKDRAW, REPO, TAXI
from transforms.quickdraw import features as quickdraw_features

TAXI_SCHEMA = REPO / "schemas" / "taxi" / "schema.pbtxt"
QUICKDRAW_SCHEMA = REPO / "schemas" / "quickdraw" / "schema.pbtxt"


def _exit_status(argv) -> int:
    with pytest.raises(SystemExit) as raised:
        options.run_main(lambda: validate.main(argv))
    return raised.value.code


def _features(schema):
    return {f.name: f for f in schema.feature}


@pytest.fixture(scope="module")
def taxi_schema():
    return tfdv.load_schema_text(str(TAXI_SCHEMA))


def _cell_kind(cell: str) -> str:
    for kind, parse in (("INT", int), ("FLOAT", float)):
        try:
            parse(cell)
            return kind
        except ValueError:
            pass
    return "BYTES"


def test_taxi_types_are_the_types_of_data_csv(taxi_schema):
    """Each column's widest cell kind in data.csv, read with the csv module (as TFDV infers it)."""
    order = ("INT", "FLOAT", "BYTES")
    with open(TAXI / "data.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        expected = {name: "INT" for name in reader.fieldnames}
        for row in reader:
            for name, cell in row.items():
                if cell:
                    expected[name] = max(expected[name], _cell_kind(cell), key=order.index)
    types = {name: schema_pb2.FeatureType.Name(f.type) for name, f in _features(taxi_schema).items()}
    assert types == expected


def test_taxi_domains_cover_the_real_data(taxi_schema):
    frames = [pd.read_csv(TAXI / name) for name in ("data.csv", "data2.csv")]
    features = _features(taxi_schema)
    for name in ("trip_start_hour", "trip_start_day", "trip_start_month", "pickup_community_area",
                 "dropoff_community_area"):
        domain = features[name].int_domain
        for frame in frames:
            assert domain.min <= frame[name].min() and frame[name].max() <= domain.max, name
    payment = next(d for d in taxi_schema.string_domain if d.name == features["payment_type"].domain)
    assert set(payment.value) == set(frames[0].payment_type) | set(frames[1].payment_type)
    assert not features["company"].HasField("domain") and not features["company"].HasField("string_domain")
    for name, feature in features.items():
        if feature.presence.min_fraction:
            for frame in frames:
                assert frame[name].notna().mean() >= feature.presence.min_fraction, name


@pytest.mark.parametrize("data", ["data.csv", "data2.csv"])
def test_real_taxi_data_validates_clean_in_training(data, tmp_path):
    assert _exit_status([f"--input={TAXI / data}", f"--schema={TAXI_SCHEMA}", "--environment=TRAINING",
                         f"--output_dir={tmp_path}"]) == 0


@pytest.fixture(scope="module")
def serving_csv(shared_data, tmp_path_factory):
    """data2.csv without the label, cell text untouched."""
    frame = pd.read_csv(TAXI / "data2.csv", dtype=str, keep_default_na=False)
    path = tmp_path_factory.mktemp("serving") / "serving.csv"
    frame.drop(columns=["tips"]).to_csv(path, index=False)
    return path


def test_serving_environment_accepts_data_without_the_label(serving_csv, tmp_path):
    assert _exit_status([f"--input={serving_csv}", f"--schema={TAXI_SCHEMA}", "--environment=SERVING",
                         f"--output_dir={tmp_path}"]) == 0


def test_training_environment_reports_the_missing_label(serving_csv, tmp_path):
    assert _exit_status([f"--input={serving_csv}", f"--schema={TAXI_SCHEMA}", "--environment=TRAINING",
                         f"--output_dir={tmp_path}"]) == 1
    rows = json.loads((tmp_path / "anomalies.json").read_text())
    assert [(r["feature"], r["short_description"], r["kinds"]) for r in rows] == [
        ("tips", "Column dropped", ["SCHEMA_MISSING_COLUMN"])]


def test_unknown_environment_is_a_usage_error(serving_csv, tmp_path):
    assert _exit_status([f"--input={serving_csv}", f"--schema={TAXI_SCHEMA}", "--environment=PRODUCTION",
                         f"--output_dir={tmp_path}"]) == 2


def test_taxi_schema_agrees_with_transforms(taxi_schema):
    from transforms.taxi import features

    types = {f.name: f.type for f in taxi_schema.feature}
    for key in features.DENSE_FLOAT_FEATURE_KEYS:
        assert types[key] in (schema_pb2.FLOAT, schema_pb2.INT), key
    for key in features.BUCKET_FEATURES:
        assert types[key] == schema_pb2.FLOAT, key
    for key in features.VOCAB_FEATURES:
        assert types[key] == schema_pb2.BYTES, key
    for key in features.CATEGORICAL_INT_FEATURE_KEYS:
        assert types[key] == schema_pb2.INT, key
    assert types[features.FARE_KEY] == types[features.TIPS_KEY] == schema_pb2.FLOAT
    by_name = _features(taxi_schema)
    # The label is derived from tips, which serving data does not have.
    assert list(by_name[features.TIPS_KEY].not_in_environment) == ["SERVING"]
    hour, day = by_name[features.HOUR_KEY].int_domain, by_name[features.DAY_KEY].int_domain
    assert (day.max - day.min + 1) * (hour.max - hour.min + 1) == features.HOURS_PER_WEEK
    used = (set(features.DENSE_FLOAT_FEATURE_KEYS) | set(features.BUCKET_FEATURES) | set(features.VOCAB_FEATURES)
            | set(features.CATEGORICAL_INT_FEATURE_KEYS) | {features.FARE_KEY, features.TIPS_KEY})
    assert used <= set(types)


def test_taxi_drift_comparators_by_kind(taxi_schema):
    for feature in taxi_schema.feature:
        if feature.name == "pickup_census_tract":  # almost always empty: nothing to compare
            assert not feature.HasField("drift_comparator")
            continue
        kind = "infinity_norm" if feature.type == schema_pb2.BYTES else "jensen_shannon_divergence"
        for comparator in (feature.drift_comparator, feature.skew_comparator):
            assert getattr(comparator, kind).threshold > 0, feature.name


def _quickdraw_classes():
    return sorted(path.name[: -len(".ndjson")] for path in (QUICKDRAW / "simplified").glob("*.ndjson"))


def test_quickdraw_schema_agrees_with_feature_spec():
    schema = tfdv.load_schema_text(str(QUICKDRAW_SCHEMA))
    assert schema_utils.schema_as_feature_spec(schema).feature_spec == quickdraw_features.feature_spec(64)


def test_quickdraw_domains_match_the_real_categories(shared_data):
    schema = tfdv.load_schema_text(str(QUICKDRAW_SCHEMA))
    features = _features(schema)
    classes = _quickdraw_classes()
    assert (features["label"].int_domain.min, features["label"].int_domain.max) == (0, len(classes) - 1)
    words = next(d for d in schema.string_domain if d.name == features["word"].domain)
    assert sorted(words.value) == classes
    pixels = features[quickdraw_features.image_key(64)]
    assert (pixels.int_domain.min, pixels.int_domain.max) == (0, 255)
    assert [d.size for d in pixels.shape.dim] == [64 * 64]
