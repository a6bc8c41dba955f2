"""The generated taxi spans and the demo chain over them."""

import csv
import json

from beam_jobs import synthetic_taxi, taxi_demo
from tests import taxi_runs


def test_generated_spans_look_like_the_taxi_sample(tmp_path):
    span1, span2 = synthetic_taxi.write_spans(str(tmp_path), rows=900, seed=3)
    with open(span1, newline="") as handle:
        rows1 = list(csv.reader(handle))
    with open(span2, newline="") as handle:
        rows2 = list(csv.reader(handle))
    assert rows1[0] == rows2[0] == synthetic_taxi.HEADER
    assert len(rows1) == 1 + 900 + len(synthetic_taxi.BAD_ROWS) and len(rows2) == 1 + 300
    company = rows1[0].index("company")
    good = [row for row in rows1[1:] if len(row) == len(synthetic_taxi.HEADER)]
    empty = sum(1 for row in good if row[company] == "") / len(good)
    assert 0.2 < empty < 0.45
    assert any("," in row[company] for row in good)  # a quoted comma
    assert all(row[rows2[0].index("trip_start_hour")].endswith(".0") for row in rows2[1:])
    assert synthetic_taxi.write_spans(str(tmp_path / "again"), rows=900, seed=3) and \
        open(tmp_path / "again" / "span1.csv").read() == open(span1).read()


def test_demo_chain_dead_letters_and_span2_through_the_same_transform_fn(tmp_path):
    summaries = taxi_demo.run_taxi_demo(str(tmp_path), rows=600)
    assert summaries["ingest"]["rejected"] == {"not_a_number": 1, "not_an_integer": 1, "wrong_column_count": 1}
    assert sum(summaries["ingest"]["written"].values()) == 600
    assert summaries["transform_span2"]["written"] == summaries["ingest_span2"]["written"]
    letters = [json.loads(line) for line in open(tmp_path / "examples" / "dead_letter" / "dead_letter-00000-of-00001.jsonl")]
    assert [letter["record"] for letter in letters] == list(synthetic_taxi.BAD_ROWS)
    vocab = open(tmp_path / "transformed" / "transform_fn" / "assets" / "payment_type_vocab", "rb").read().split()
    mobile = [taxi_runs.features_of(xf)["payment_type_xf"]
              for split in ("train", "eval", "test")
              for raw, xf in taxi_runs.raw_and_transformed(str(tmp_path / "examples_span2"),
                                                           str(tmp_path / "transformed_span2"), split)
              if taxi_runs.features_of(raw)["payment_type"] == b"Mobile"]
    assert mobile and b"Mobile" not in vocab
    assert all(index >= len(open(tmp_path / "transformed" / "transform_fn" / "assets" / "payment_type_vocab",
                                 "rb").read().splitlines()) for index in mobile)
