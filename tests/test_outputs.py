"""Shared output pieces: TFRecord framing, staged publication, hash splits."""

import hashlib
import os

import pytest
import tensorflow as tf

from beam_jobs import outputs, runs, splits

RECORDS = [b"", b"x", bytes(range(256)) * 40, "é".encode() * 3000]  # over outputs.LONG_RECORD_BYTES on average


def chunks(records, size=1024):
    """Records as binary arrays of up to `size`, as a job hands them to write_tfrecords."""
    import pyarrow as pa

    return [pa.array(records[start:start + size], pa.binary()) for start in range(0, len(records), size)]


@pytest.mark.parametrize("records", [
    RECORDS,
    [bytes([i % 251]) * (i % 97) for i in range(10_000)],  # several chunks of 1,024 records, in order
], ids=["odd_records", "many_chunks"])
def test_tfrecords_are_the_bytes_tensorflow_writes(tmp_path, records):
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "tf.tfrecord")
    outputs.write_tfrecords(ours, chunks(records), "none")
    with tf.io.TFRecordWriter(theirs) as writer:
        for record in records:
            writer.write(record)
    assert open(ours, "rb").read() == open(theirs, "rb").read()


@pytest.mark.parametrize("records", [RECORDS, [bytes([i % 251]) * (i % 97) for i in range(3_000)]],
                         ids=["long_records", "short_records"])  # both sides of outputs.LONG_RECORD_BYTES
def test_suffixed_records_are_framed_as_the_joined_records(tmp_path, records):
    import pyarrow as pa

    suffixes = [bytes([i % 7]) * (i % 3) for i in range(len(records))]
    ours, theirs = str(tmp_path / "ours.tfrecord"), str(tmp_path / "tf.tfrecord")
    outputs.write_tfrecords(ours, [outputs.Suffixed(pa.array(records, pa.binary()), pa.array(suffixes))], "none")
    with tf.io.TFRecordWriter(theirs) as writer:
        for record, suffix in zip(records, suffixes):
            writer.write(record + suffix)
    assert open(ours, "rb").read() == open(theirs, "rb").read()


def test_gzip_tfrecords_read_back_with_tf_data(tmp_path):
    path = str(tmp_path / "ours.tfrecord.gz")
    outputs.write_tfrecords(path, chunks(RECORDS, 3), "gzip")
    assert [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")] == RECORDS
    again = str(tmp_path / "again.tfrecord.gz")
    outputs.write_tfrecords(again, chunks(RECORDS, 3), "gzip")
    assert open(path, "rb").read() == open(again, "rb").read()


def test_publish_replaces_only_the_jobs_own_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train-00000-of-00001.tfrecord").write_bytes(b"old")
    (out / "notes.txt").write_text("the user's")
    with outputs.StagedOutput(str(out), ["train-*-of-*.tfrecord"]) as staged:
        with open(staged.staged_path("train-00000-of-00002.tfrecord"), "wb") as handle:
            handle.write(b"new")
        with open(os.path.join(staged.temp_dir, "scratch"), "wb") as handle:
            handle.write(b"never published")
        staged.publish({"read": 1})
    assert sorted(os.listdir(out)) == ["notes.txt", "run_summary.json", "train-00000-of-00002.tfrecord"]


def test_a_failure_inside_the_stage_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with outputs.StagedOutput(str(out), ["*.tfrecord"]) as staged:
            with open(staged.staged_path("train-00000-of-00001.tfrecord"), "wb") as handle:
                handle.write(b"half")
            raise RuntimeError("pipeline failed")
    assert os.listdir(out) == []


def test_split_ratios_and_the_documented_hash_rule():
    assert splits.parse_ratios("80,10,10") == (0.8, 0.1, 0.1)
    assert splits.parse_ratios("1,1,0") == (0.5, 0.5, 0.0)
    for bad in ("80,20", "a,b,c", "-1,1,1", "0,0,0"):
        with pytest.raises(ValueError):
            splits.parse_ratios(bad)
    keys = [f"key{i}".encode() for i in range(2000)]
    expected, expected_shards = [], []
    for key in keys:
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key).digest()[:8], "big") % 10_000
        expected.append(0 if bucket < 8000 else 1 if bucket < 9000 else 2)
        expected_shards.append(int.from_bytes(hashlib.sha256(b"shard:" + key).digest()[:8], "big") % 7)
    assert splits.split_indices(keys, (0.8, 0.1, 0.1)).tolist() == expected
    assert splits.shard_indices(keys, 7).tolist() == expected_shards
    assert set(splits.split_indices(keys, (0.5, 0.5, 0.0)).tolist()) == {0, 1}
    assert set(splits.split_indices(keys, (0.0, 0.0, 1.0)).tolist()) == {2}


def test_a_bare_file_name_is_written_in_the_working_directory(tmp_path, monkeypatch):
    from beam_jobs import stats_io

    monkeypatch.chdir(tmp_path)
    stats_io.write_atomically("schema.pbtxt", b"feature {}")
    assert (tmp_path / "schema.pbtxt").read_bytes() == b"feature {}"
    assert os.listdir(tmp_path) == ["schema.pbtxt"]


def _lines(path, records):
    outputs.write_lines(path, (record for array in records for record in array.to_pylist()))


@pytest.mark.parametrize("range_bits", [0, 3])
def test_spilled_runs_merge_into_sorted_shards_and_empty_shards_exist(tmp_path, range_bits):
    import apache_beam as beam
    import numpy as np
    import pyarrow as pa
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    runs_dir, out_dir = tmp_path / "runs", tmp_path / "out"
    runs_dir.mkdir(), out_dir.mkdir()
    # Keys spread over the whole 64-bit range (so over every key range), some repeated with
    # other records (the record bytes then decide), added in batches of 7 in scrambled order.
    keys = [(key * 7919 % 1000) * (2**64 // 1000) for key in range(300)]
    rows = [(key, i % 3, f"r{i}".encode()) for i, key in enumerate(keys)] + [(keys[5], 0, b"another")]
    buffer = runs.SpillBuffer(str(runs_dir), range_bits, limit_bytes=2000)
    shard_keys, paths = [("a", 0), ("a", 1)], []
    for start in range(0, len(rows), 7):
        chunk = rows[start:start + 7]
        batch = runs.rows(np.array([r[0] for r in chunk], np.uint64), np.array([r[1] for r in chunk], np.uint64),
                          pa.array([r[2] for r in chunk]))
        buffer.add(batch, shard_keys, np.array([r[0] // 2**63 for r in chunk]))  # shard by the top bit
        if buffer.full:
            paths.extend(buffer.spill())
    paths.extend(buffer.spill())
    assert len(paths) > 4 and not list(buffer.spill())
    names = {("a", 0): "a0.txt", ("a", 1): "a1.txt", ("b", 0): "b0.txt"}
    expected = {shard: [record for key, lo, record in sorted(rows) if key // 2**63 == shard] for shard in (0, 1)}
    with TestPipeline() as pipeline:
        written = (pipeline | beam.Create(paths) | runs.WriteSpilledShards(str(out_dir), names, _lines))
        assert_that(written, equal_to([(("a", 0), len(expected[0])), (("a", 1), len(expected[1])), (("b", 0), 0)]))
    for shard, name in ((0, "a0.txt"), (1, "a1.txt")):
        assert (out_dir / name).read_bytes().split(b"\n")[:-1] == expected[shard]
    assert (out_dir / "b0.txt").read_bytes() == b""


def test_a_killed_runs_staging_is_reported_not_deleted(tmp_path, caplog):
    out = tmp_path / "out"
    killed = outputs.StagedOutput(str(out), ["*.tfrecord"])
    killed.__enter__()  # and never left: as if the process had been killed
    with outputs.StagedOutput(str(out), ["*.tfrecord"]) as staged:
        staged.publish({"read": 0})
    assert os.path.isdir(killed.staging_dir)
    assert sorted(os.listdir(out)) == [os.path.basename(killed.staging_dir), "run_summary.json"]
    assert any(killed.staging_dir in r.getMessage() and "did not finish" in r.getMessage() for r in caplog.records)


def test_more_runs_than_the_merge_opens_at_once_still_merge_in_order(tmp_path, monkeypatch):
    import numpy as np
    import pyarrow as pa

    monkeypatch.setattr(runs, "_MAX_OPEN_RUNS", 8)
    rows = [((key * 7919 % 10_000) * (2**64 // 10_000), 0, f"r{key}".encode()) for key in range(3_000)]
    buffer = runs.SpillBuffer(str(tmp_path), range_bits=2)
    paths = []
    for run in range(30):
        part = rows[run::30]
        buffer.add(runs.rows(np.array([r[0] for r in part], np.uint64), np.zeros(len(part), np.uint64),
                             pa.array([r[2] for r in part])), [("all",)], np.zeros(len(part), np.int64))
        paths.extend(path for _, path in buffer.spill())
    merged = [record for table in runs.sorted_ranges(paths) for record in table.column(runs.RECORD).to_pylist()]
    assert merged == [record for _, _, record in sorted(rows)]


def test_a_null_record_is_refused_not_dropped(tmp_path):
    import pyarrow as pa

    with pytest.raises(ValueError, match="1 of 3 records are null"):
        outputs.write_tfrecords(str(tmp_path / "x.tfrecord"), [pa.array([b"a", None, b"b"])], "none")


def test_a_run_file_holds_only_its_nonempty_key_ranges(tmp_path):
    import numpy as np
    import pyarrow as pa

    buffer = runs.SpillBuffer(str(tmp_path), range_bits=12)
    keys = np.array([5, 2**63 + 9, 5], np.uint64)  # key ranges 0 and 2048 of 4096
    buffer.add(runs.rows(keys, np.array([2, 1, 0], np.uint64), pa.array([b"c", b"z", b"a"])), [("all",)],
               np.zeros(3, np.int64))
    [(_, path)] = list(buffer.spill())
    with pa.ipc.open_file(path) as reader:
        assert reader.num_record_batches == 2
    assert [t.column(runs.RECORD).to_pylist() for t in runs.sorted_ranges([path])] == [[b"a", b"c"], [b"z"]]


def test_split_boundaries_are_the_step_by_step_rounded_sums():
    keys = [f"key{i}".encode() for i in range(5000)]
    ratios = splits.parse_ratios("1,2,19997")
    bounds, total = [], 0.0
    for ratio in ratios:
        total += ratio * 10_000
        bounds.append(round(total))
    expected = []
    for key in keys:
        bucket = int.from_bytes(hashlib.sha256(b"split:" + key).digest()[:8], "big") % 10_000
        expected.append(next(i for i, bound in enumerate(bounds) if bucket < bound))
    assert splits.split_indices(keys, ratios).tolist() == expected


def test_long_records_merge_in_the_same_order_as_short_ones(tmp_path):
    """Runs of records over outputs.LONG_RECORD_BYTES are reordered by their own gather: the
    merge gives Python's sorted() order of (key_hi, key_lo, record), across runs and duplicates."""
    import random

    import numpy as np
    import pyarrow as pa

    generator = random.Random(7)
    rows = [(generator.randrange(4) << 62 | generator.randrange(50), generator.randrange(3),
             bytes([generator.randrange(256)]) * generator.randrange(900, 3000)) for _ in range(400)]
    rows += rows[:25]  # exact duplicates stay, side by side
    buffer = runs.SpillBuffer(str(tmp_path), range_bits=1)
    paths = []
    for run in range(5):
        part = rows[run::5]
        buffer.add(runs.rows(np.array([r[0] for r in part], np.uint64), np.array([r[1] for r in part], np.uint64),
                             pa.array([r[2] for r in part])), [("all",)], np.zeros(len(part), np.int64))
        paths.extend(path for _, path in buffer.spill())
    tables = list(runs.sorted_ranges(paths))
    assert all(t.column(runs.RECORD).nbytes > outputs.LONG_RECORD_BYTES * t.num_rows for t in tables)
    merged = [(hi, lo, record) for t in tables for hi, lo, record in zip(
        *(t.column(name).to_pylist() for name in (runs.KEY_HI, runs.KEY_LO, runs.RECORD)))]
    assert merged == sorted(rows)


def test_num_shards_auto_is_the_count_for_the_largest_split():
    import argparse

    def never_called():
        raise AssertionError("the estimate is only needed for auto")

    assert outputs.resolve_num_shards(argparse.Namespace(num_shards=5), "job", never_called) == 5
    for expected_bytes, count in [(0, 1), (1, 1), (outputs.SHARD_BYTES, 1), (outputs.SHARD_BYTES + 1, 2),
                                  (9 * outputs.SHARD_BYTES - 1, 9)]:
        args = argparse.Namespace(num_shards=None)
        assert outputs.resolve_num_shards(args, "job", lambda: expected_bytes) == count
        assert args.num_shards == count  # what the run summary records
    assert outputs.largest_split_bytes(1000, (0.1, 0.8, 0.1)) == 800  # the largest share, whichever split


@pytest.mark.parametrize("text, message", [("0", "at least 1"), ("-2", "at least 1"), ("many", "whole number or 'auto'")])
def test_num_shards_flag_accepts_a_count_or_auto_only(text, message):
    import argparse

    from beam_jobs import options

    assert options.shard_count("auto") is None and options.shard_count("12") == 12
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        options.shard_count(text)


@pytest.mark.parametrize("given, expected", [([], "cloudpickle"), (["--pickle_library=dill"], "dill"),
                                             (["--pickle_library", "default"], "default"), (["--pickle_lib=dill"], "dill")])
def test_pipeline_options_pickle_with_cloudpickle_unless_told_otherwise(given, expected):
    import argparse

    from apache_beam.options.pipeline_options import SetupOptions

    from beam_jobs import options

    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir")
    args, pipeline_options = options.parse(parser, ["--output_dir=out", *given])
    assert args.output_dir == "out"
    assert pipeline_options.view_as(SetupOptions).pickle_library == expected
    assert pipeline_options.view_as(SetupOptions).save_main_session is False


def test_job_pipeline_options_views_are_built_once_and_read_and_write_the_same_values():
    import pickle

    from apache_beam.options.pipeline_options import (
        DebugOptions, DirectOptions, GoogleCloudOptions, PipelineOptions, StandardOptions)

    from beam_jobs import options

    flags = ["--runner=DirectRunner", "--direct_num_workers=2", "--experiments=a",
             "--impersonate_service_account=someone@example.com"]
    job, beams = options.JobPipelineOptions(flags), PipelineOptions(flags)
    for cls in (StandardOptions, DirectOptions, DebugOptions, GoogleCloudOptions):
        assert job.view_as(cls) is job.view_as(cls)
        assert job.view_as(cls).get_all_options() == beams.view_as(cls).get_all_options()
    job.view_as(DebugOptions).experiments = ["a", "beam_fn_api"]  # as Beam's runners do
    assert job.view_as(DebugOptions).experiments == ["a", "beam_fn_api"]
    assert job.get_all_options()["experiments"] == ["a", "beam_fn_api"]
    # Pickled as Beam pickles options (without the impersonation), views not included.
    copy = pickle.loads(pickle.dumps(job))
    assert "_views" not in copy.__dict__
    assert copy.view_as(GoogleCloudOptions).impersonate_service_account is None
    assert copy.view_as(DirectOptions).direct_num_workers == 2
    assert job.view_as(GoogleCloudOptions).impersonate_service_account == "someone@example.com"
