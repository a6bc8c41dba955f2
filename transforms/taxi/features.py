"""Taxi feature groups, in the TFX Chicago taxi example's grouping: one mapping per treatment.

Raw feature names and types come from `schemas/taxi/schema.pbtxt`; this module only says
what the preprocessing_fn does with each. Transformed features are named `<raw>_xf`.
"""

from typing import Dict

# tft.scale_to_z_score after filling a missing value with 0.
DENSE_FLOAT_FEATURE_KEYS = ("fare", "trip_miles", "trip_seconds")

# tft.bucketize into this many quantile buckets (boundaries from present values only);
# a missing value gets its own bucket, index BUCKET_COUNT.
BUCKET_FEATURES: Dict[str, int] = {
    "pickup_latitude": 10,
    "pickup_longitude": 10,
    "dropoff_latitude": 10,
    "dropoff_longitude": 10,
}

# tft.compute_and_apply_vocabulary: key -> (top_k, num_oov_buckets). A missing value is the
# MISSING_TOKEN, a vocabulary entry like any other, so "no company given" (a third of the
# rows) is a category of its own instead of sharing an OOV bucket with unseen companies.
VOCAB_FEATURES: Dict[str, tuple] = {
    "payment_type": (1000, 10),
    "company": (1000, 10),
}
MISSING_TOKEN = "__missing__"

# Categorical integers passed through, a missing value filled with 0 (no real community
# area or census tract is 0; hour, day and month are required by the schema).
CATEGORICAL_INT_FEATURE_KEYS = (
    "trip_start_hour",
    "trip_start_day",
    "trip_start_month",
    "pickup_census_tract",
    "dropoff_census_tract",
    "pickup_community_area",
    "dropoff_community_area",
)

# The hour-of-week cross: (trip_start_day - 1) * 24 + trip_start_hour, 0..167 for Sunday 0h
# to Saturday 23h; HOUR_OF_WEEK_UNKNOWN when the day or hour is missing or out of range.
HOUR_OF_WEEK_KEY = "hour_of_week"
DAY_KEY, HOUR_KEY = "trip_start_day", "trip_start_hour"
HOURS_PER_WEEK = 168
HOUR_OF_WEEK_UNKNOWN = HOURS_PER_WEEK

# The label: a "big tipper" trip, tips > 0.2 * fare, as int64 (0 when the fare is missing).
FARE_KEY, TIPS_KEY = "fare", "tips"
TIP_FRACTION = 0.2
LABEL_KEY = "big_tipper"


def transformed_name(key: str) -> str:
    return f"{key}_xf"


def vocabulary_name(key: str) -> str:
    """The vocabulary file written under transform_fn/assets/."""
    return f"{key}_vocab"
