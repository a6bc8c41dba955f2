"""example_bytes: the same bytes as tfx_bsl's encoder one column at a time, and the values right."""

import math

import numpy as np
import pyarrow as pa
import pytest
import tensorflow as tf
from tfx_bsl.coders import example_coder

from beam_jobs import csv_rows, example_bytes, taxi_csv_to_tfrecord
from tests.conftest import TAXI


def tfx_bsl_by_column(record_batch: pa.RecordBatch):
    """The reference: tfx_bsl's encoder on each column alone, pieces concatenated; a null row
    contributes nothing."""
    encoder = example_coder.RecordBatchToExamplesEncoder()
    pieces = []
    for name, column in zip(record_batch.schema.names, record_batch.columns):
        encoded = encoder.encode(pa.RecordBatch.from_arrays([column], [name]))
        nulls = column.is_null().to_pylist()
        pieces.append([b"" if null else piece for piece, null in zip(encoded, nulls)])
    return [b"".join(parts) for parts in zip(*pieces)]


def edge_batch() -> pa.RecordBatch:
    ints = pa.array([[0], [], None, [1, -1, 2**63 - 1, -2**63, 127, 128, 300, 16384], [5] * 3],
                    pa.list_(pa.int64()))
    image = pa.array([list(range(256)) * 2, None, [], [200] * 40, [0] * 17], pa.list_(pa.int64()))  # long lists
    floats = pa.array([[0.5], None, [], [float("nan"), float("inf"), -0.0, -1e-30], [1.0] * 100],
                      pa.list_(pa.float32()))
    strings = pa.array([[b"a"], [b""], None, [b"x" * 300, b"yy"], []], pa.list_(pa.binary()))
    large = pa.array([["é".encode()], [], [b"z" * 200], None, [b"a", b"b"]], pa.large_list(pa.large_binary()))
    names = ["i", "img", "f", "a key of more than 127 bytes " * 5, "large"]
    return pa.RecordBatch.from_arrays([ints, image, floats, strings, large], names)


def test_edge_cases_and_every_slice_match_tfx_bsl():
    batch = edge_batch()
    for offset in range(batch.num_rows):
        for length in range(batch.num_rows - offset + 1):
            part = batch.slice(offset, length)
            assert example_bytes.encode_by_column(part).to_pylist() == tfx_bsl_by_column(part), (offset, length)


def test_values_parse_back_as_the_rows():
    batch = edge_batch()
    for row, serialized in enumerate(example_bytes.encode_by_column(batch).to_pylist()):
        feature = tf.train.Example.FromString(serialized).features.feature
        for name, column in zip(batch.schema.names, batch.columns):
            values = column[row].as_py()
            if values is None:
                assert name not in feature
                continue
            kind = feature[name].WhichOneof("kind")
            parsed = list(getattr(feature[name], kind).value) if kind else []
            if pa.types.is_floating(column.type.value_type):
                expected = [float(np.float32(v)) for v in values]
                assert [(math.isnan(a), a if not math.isnan(a) else 0) for a in parsed] == \
                       [(math.isnan(b), b if not math.isnan(b) else 0) for b in expected]
            else:
                assert parsed == values


def test_real_taxi_rows_match_tfx_bsl():
    schema = taxi_csv_to_tfrecord.load_schema(taxi_csv_to_tfrecord.DEFAULT_SCHEMA)
    types = taxi_csv_to_tfrecord.column_types(schema)
    path = str(TAXI / "data.csv")
    checked = 0
    for batch in csv_rows.typed_batches(path, csv_rows.read_header(path), types, True, 4096):
        names = [name for name in types if name in batch.values]
        record_batch = pa.RecordBatch.from_arrays(
            [taxi_csv_to_tfrecord._list_array(batch.values[name]) for name in names], names)
        assert any(column.null_count for column in record_batch.columns)  # empty cells are in the sample
        assert example_bytes.encode_by_column(record_batch).to_pylist() == tfx_bsl_by_column(record_batch)
        checked += record_batch.num_rows
    assert checked > 10_000


@pytest.mark.parametrize("column", [
    pa.array([[1]], pa.list_(pa.int32())),
    pa.array([[1.0]], pa.list_(pa.float64())),
    pa.array([["a"]], pa.list_(pa.string())),
    pa.array([1], pa.int64()),
])
def test_types_an_example_cannot_hold_are_refused_by_name(column):
    with pytest.raises(ValueError, match="feature 'odd'"):
        example_bytes.encode_by_column(pa.RecordBatch.from_arrays([column], ["odd"]))
