"""tft_pipeline's raw Example reader, checked against tfx_bsl's own Example decoder on real data."""

import hashlib

import apache_beam as beam
import pytest
import tensorflow as tf
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to
from tfx_bsl.coders import example_coder

from beam_jobs import analyze_and_transform, tft_pipeline
from tests import taxi_runs

BATCH = 1000


@pytest.fixture(scope="module")
def train(shared_data):
    """The data.csv train split the ingest job wrote: its files, records and raw schema."""
    files = tft_pipeline.split_files(taxi_runs.chain()["examples"])
    records = [r.numpy() for r in tf.data.TFRecordDataset(files["train"])]
    return files["train"], records, analyze_and_transform.raw_schema("taxi", None, files)


def rows_of(record_batch, skip=()):
    """Rows as sorted (column, values) tuples; a missing value (null or empty list) as ()."""
    columns = {name: values for name, values in record_batch.to_pydict().items() if name not in skip}
    return [tuple(sorted((name, tuple(values[i] or ())) for name, values in columns.items()))
            for i in range(record_batch.num_rows)]


def library_rows(records, schema):
    """What tfx_bsl's schema-driven decoder (the one TFExampleRecord uses) makes of the records."""
    decoder = example_coder.ExamplesToRecordBatchDecoder(schema.SerializeToString())
    return rows_of(decoder.DecodeBatch(records))


def record_hash(record: bytes) -> int:
    """The documented order: the first 8 bytes of the record's sha256, big-endian."""
    return int.from_bytes(hashlib.sha256(record).digest()[:8], "big")


def with_hashes(record_batch):
    hashes = record_batch.column(tft_pipeline.ORDER_COLUMN).flatten().to_pylist()
    return list(zip(hashes, rows_of(record_batch, skip={tft_pipeline.ORDER_COLUMN})))


def read(files, schema, temp_dir, check, with_order=True):
    """read_raw_splits over `files` in a TestPipeline; `check(record_batches)` adds assertions."""
    decoder = tft_pipeline.save_example_decoder(schema, str(temp_dir))
    with test_pipeline.TestPipeline() as pipeline:
        raw, config = tft_pipeline.read_raw_splits(pipeline, {"train": files}, decoder, BATCH, with_order=with_order)
        assert (tft_pipeline.ORDER_COLUMN in config.arrow_schema.names) == with_order
        check(raw["train"])


def test_rows_match_the_library_decoder_with_their_records_hashes(train, tmp_path):
    files, records, schema = train
    expected = list(zip(map(record_hash, records), library_rows(records, schema)))
    assert len(expected) > 10_000 and any(() in [values for _, values in row] for _, row in expected)

    def check(batches):
        assert_that(batches | beam.FlatMap(with_hashes), equal_to(expected))

    read(files, schema, tmp_path, check)


def test_batches_are_fixed_size_in_file_order(train, tmp_path):
    files, records, schema = train
    expected = [tuple(map(record_hash, records[i:i + BATCH])) for i in range(0, len(records), BATCH)]
    assert len(expected[-1]) < BATCH

    def check(batches):
        assert_that(batches | beam.Map(
            lambda rb: tuple(rb.column(tft_pipeline.ORDER_COLUMN).flatten().to_pylist())), equal_to(expected))

    read(files, schema, tmp_path, check)


def test_analysis_reading_leaves_the_order_column_out(train, tmp_path):
    files, records, schema = train

    def check(batches):
        assert_that(batches | beam.FlatMap(rows_of), equal_to(library_rows(records, schema)), label="Rows")
        assert_that(batches | beam.Map(lambda rb: tft_pipeline.ORDER_COLUMN in rb.schema.names)
                    | beam.Distinct(), equal_to([False]), label="NoOrderColumn")

    read(files, schema, tmp_path, check, with_order=False)


def test_gzip_files_are_read(train, tmp_path):
    files, records, schema = train
    path = str(tmp_path / "train-00000-of-00001.tfrecord.gz")
    with tf.io.TFRecordWriter(path, options="GZIP") as writer:
        for record in records[:2500]:
            writer.write(record)
    expected = list(zip(map(record_hash, records[:2500]), library_rows(records[:2500], schema)))

    def check(batches):
        assert_that(batches | beam.FlatMap(with_hashes), equal_to(expected))

    read([path], schema, tmp_path / "tmp", check)


def test_a_corrupt_file_fails_naming_it(train, tmp_path):
    files, records, schema = train
    path = str(tmp_path / "train-00000-of-00001.tfrecord")
    with open(files[0], "rb") as source, open(path, "wb") as target:
        target.write(source.read(10_000)[:-7])  # the last record cut short
    with pytest.raises(Exception, match="train-00000-of-00001.tfrecord: cannot read its Examples"):
        read([path], schema, tmp_path / "tmp", lambda batches: None)


def test_default_batch_size_follows_the_width_of_a_row(train):
    from tensorflow_transform.tf_metadata import schema_utils

    from beam_jobs import options
    from transforms.quickdraw import features

    assert tft_pipeline.batch_size_for(train[2], None) == 32768  # 18 one-value taxi columns
    quickdraw = schema_utils.schema_from_feature_spec(features.feature_spec(64))
    values = 64 * 64 + 6 + 1 + 2  # img_64, six scalars, ink (variable: counted once), ink_shape
    assert tft_pipeline.batch_size_for(quickdraw, None) == (1 << 22) // values == 1021
    assert tft_pipeline.batch_size_for(quickdraw, 500) == 500
    with pytest.raises(options.UsageError):
        tft_pipeline.batch_size_for(quickdraw, 0)
