"""Small Chicago-taxi-like CSV the project makes itself for the demo (seeded, no download).

Same header as the TFX taxi sample; realistic ranges and correlations (fare from miles,
tips mostly on card payments, hour/day/month from the timestamp); empty cells where the real
data has them (company, census tracts, coordinates); a few malformed rows so the dead-letter
path shows. Span 2 is a later, shifted draw (higher fares, a payment type span 1 never has)
written the way `data2.csv` is: integer columns as floats (`8.0`).
"""

import csv
import datetime
import os
import random
from typing import List, Tuple

HEADER = [
    "pickup_community_area", "fare", "trip_start_month", "trip_start_hour", "trip_start_day",
    "trip_start_timestamp", "pickup_latitude", "pickup_longitude", "dropoff_latitude",
    "dropoff_longitude", "trip_miles", "pickup_census_tract", "dropoff_census_tract", "payment_type",
    "company", "trip_seconds", "dropoff_community_area", "tips",
]
COMPANIES = ("Taxi Affiliation Services", "Flash Cab", "Dispatch Taxi Affiliation", "Yellow Cab",
             "Blue Ribbon Taxi Association Inc.", "Choice Taxi Association", "Checker Taxi, Inc.")  # a quoted comma
# Community area -> (latitude, longitude) of its centroid, a handful of the real ones.
AREAS = {8: (41.899602, -87.633308), 32: (41.880994, -87.632746), 28: (41.874005, -87.663518),
         6: (41.944227, -87.655998), 7: (41.922686, -87.649488), 76: (41.980264, -87.913625),
         24: (41.901207, -87.676356), 33: (41.859350, -87.617358)}
BAD_ROWS = (
    "8,twelve,5,10,3,1400000000,,,,,1.0,,,Cash,,300,8,0",  # a word in a FLOAT column
    "8,7.25,5,7.5,3,1400000000,,,,,1.0,,,Cash,,300,8,0",  # 7.5 in an INT column
    "8,7.25,5,10,3",  # too few columns
)


def _row(rng: random.Random, start: datetime.datetime, days: int, fare_scale: float,
         payment_types: Tuple[str, ...], floats_for_ints: bool) -> List[str]:
    when = start + datetime.timedelta(seconds=rng.randrange(days * 86400) // 900 * 900)
    pickup, dropoff = rng.choice(list(AREAS)), rng.choice(list(AREAS))
    miles = round(rng.expovariate(1 / 3.0), 1)
    seconds = int(miles * rng.uniform(150, 400)) + 60
    fare = round((3.25 + 2.25 * miles + seconds / 36 * 0.2) * fare_scale, 2)
    payment = rng.choices(payment_types, weights=[50, 45, 3, 2] + [5] * (len(payment_types) - 4))[0]
    tips = round(fare * rng.uniform(0.1, 0.3), 2) if payment == "Credit Card" and rng.random() < 0.8 else 0.0
    def integer(value):
        return f"{value}.0" if floats_for_ints else str(value)
    def maybe(value, empty_fraction):
        return "" if rng.random() < empty_fraction else value
    has_coordinates = rng.random() > 0.003  # about as often as in the real sample
    return [
        maybe(integer(pickup), 0.003), f"{fare:.2f}", integer(when.month), integer(when.hour),
        integer(when.isoweekday() % 7 + 1), integer(int(when.replace(tzinfo=datetime.timezone.utc).timestamp())),
        f"{AREAS[pickup][0]:.6f}" if has_coordinates else "", f"{AREAS[pickup][1]:.6f}" if has_coordinates else "",
        f"{AREAS[dropoff][0]:.6f}" if has_coordinates else "", f"{AREAS[dropoff][1]:.6f}" if has_coordinates else "",
        f"{miles}", maybe(integer(17031000000 + pickup * 100 + rng.randrange(100)), 0.9),
        maybe(integer(17031000000 + dropoff * 100 + rng.randrange(100)), 0.3), payment,
        maybe(rng.choice(COMPANIES), 0.33), integer(seconds), maybe(integer(dropoff), 0.05), f"{tips:.2f}",
    ]


def write_span(path: str, rows: int, seed: int, span: int) -> str:
    """Writes one span's CSV; span 2 is shifted and writes integers as floats."""
    rng = random.Random(seed * 1000 + span)
    second = span == 2
    start = datetime.datetime(2015 if second else 2014, 1, 1)
    payment_types = ("Cash", "Credit Card", "No Charge", "Unknown") + (("Mobile",) if second else ())
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        bad_after = {} if second else {(i + 1) * rows // (len(BAD_ROWS) + 1): bad for i, bad in enumerate(BAD_ROWS)}
        for index in range(rows):
            writer.writerow(_row(rng, start, 365, 1.15 if second else 1.0, payment_types, second))
            if index in bad_after:
                handle.write(bad_after[index] + "\n")
    return path


def write_spans(directory: str, rows: int = 3000, seed: int = 0) -> Tuple[str, str]:
    """Span 1 (with BAD_ROWS among its rows) and span 2, as `span1.csv` and `span2.csv`."""
    os.makedirs(directory, exist_ok=True)
    return (write_span(os.path.join(directory, "span1.csv"), rows, seed, 1),
            write_span(os.path.join(directory, "span2.csv"), rows // 3, seed, 2))
