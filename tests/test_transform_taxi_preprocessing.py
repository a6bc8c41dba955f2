"""transforms.taxi.preprocessing_fn through TFT's own test harness, on five hand-made rows.

Expected values are written out or computed with numpy from the same five rows.
"""

import numpy as np
from tensorflow_transform.beam import tft_unit
from tensorflow_transform.tf_metadata import dataset_metadata

from beam_jobs import taxi_csv_to_tfrecord, tft_pipeline
from transforms.taxi import features, preprocessing

# Columns not listed in a row are missing in it (as an empty CSV cell makes them).
ROWS = [
    dict(fare=10.0, tips=3.0, trip_miles=1.0, trip_seconds=60, trip_start_hour=0, trip_start_day=1, trip_start_month=1,
         payment_type="Cash", company="A", dropoff_census_tract=17031081000, pickup_community_area=8),
    dict(fare=20.0, tips=2.0, trip_miles=2.0, trip_seconds=120, trip_start_hour=23, trip_start_day=7,
         trip_start_month=12, payment_type="Credit Card", company="A"),
    dict(tips=5.0, trip_miles=3.0, trip_start_hour=5, trip_start_day=3, trip_start_month=6, payment_type="Cash"),
    dict(fare=30.0, tips=6.5, trip_miles=4.0, trip_seconds=600, trip_start_hour=12, trip_start_day=4,
         trip_start_month=7, payment_type="Credit Card"),
    dict(fare=40.0, tips=0.0, trip_miles=5.0, trip_seconds=30, trip_start_hour=7, trip_start_month=2,
         payment_type="Cash"),
]
BUCKET_KEYS = {features.transformed_name(k) for k in features.BUCKET_FEATURES}


def z_scores(values):
    values = np.array(values, dtype=np.float64)
    return (values - values.mean()) / values.std()


def without_buckets(inputs):
    """Bucket boundaries on five rows say little; the real-data test checks them."""
    return {k: v for k, v in preprocessing.preprocessing_fn(inputs).items() if k not in BUCKET_KEYS}


class PreprocessingFnTest(tft_unit.TransformTestCase):
    def test_fills_missing_values_scales_encodes_and_labels(self):
        schema = tft_pipeline.optional_single_values(
            taxi_csv_to_tfrecord.load_schema(taxi_csv_to_tfrecord.DEFAULT_SCHEMA))
        types = taxi_csv_to_tfrecord.column_types(schema)
        input_data = [{name: ([row[name]] if name in row else []) for name in types} for row in ROWS]
        for row in input_data:
            for name in ("payment_type", "company"):
                row[name] = [v.encode() for v in row[name]]
        fare = z_scores([r.get("fare", 0.0) for r in ROWS])
        miles = z_scores([r["trip_miles"] for r in ROWS])
        seconds = z_scores([r.get("trip_seconds", 0) for r in ROWS])
        expected = []
        for i, row in enumerate(ROWS):
            expected.append({
                "fare_xf": fare[i], "trip_miles_xf": miles[i], "trip_seconds_xf": seconds[i],
                "payment_type_xf": {"Cash": 0, "Credit Card": 1}[row["payment_type"]],
                "company_xf": {"A": 1, None: 0}[row.get("company")],  # 3 missing > 2 "A"
                "trip_start_hour_xf": row["trip_start_hour"], "trip_start_day_xf": row.get("trip_start_day", 0),
                "trip_start_month_xf": row["trip_start_month"],
                "pickup_census_tract_xf": 0, "dropoff_census_tract_xf": row.get("dropoff_census_tract", 0),
                "pickup_community_area_xf": row.get("pickup_community_area", 0), "dropoff_community_area_xf": 0,
                "hour_of_week_xf": (row["trip_start_day"] - 1) * 24 + row["trip_start_hour"]
                if "trip_start_day" in row else features.HOUR_OF_WEEK_UNKNOWN,
                features.LABEL_KEY: int("fare" in row and row["tips"] > 0.2 * row["fare"]),
            })
        # Written out: the labels are 1, 0, 0 (fare missing), 1, 0; hours of week 0, 167, 53, 84, 168.
        assert [e[features.LABEL_KEY] for e in expected] == [1, 0, 0, 1, 0]
        assert [e["hour_of_week_xf"] for e in expected] == [0, 167, 53, 84, 168]
        self.assertAnalyzeAndTransformResults(
            input_data, dataset_metadata.DatasetMetadata(schema), without_buckets, expected,
            expected_vocab_file_contents={
                features.vocabulary_name("payment_type"): [b"Cash", b"Credit Card"],
                features.vocabulary_name("company"): [features.MISSING_TOKEN.encode(), b"A"],
            })


if __name__ == "__main__":
    tft_unit.main()
